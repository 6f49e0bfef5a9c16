"""The SnapStart template process: the real runtime's init, then a fork per restored environment.

Not imported by mlayer: :mod:`mlayer.lambda_env.snapshot` runs this file's text with the
function's interpreter (``python -S -s -u -c <this file> CONFIG_JSON``), with Lambda's
``sys.path`` and ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``. Standard library only.

awslambdaric (4.2.2) then imports the handler, runs the before-snapshot hooks in the reverse
order of their registration and asks ``/runtime/restore/next``. The hook registered here,
first and so run last (after the function's own), never returns in the template: it tells
mlayer the init is done and serves fork requests on the control socket. Each fork is a
restored environment: it points its stdout / stderr at the environment's files, takes the
environment's own Runtime API, and returns from the hook, so awslambdaric asks that API's
``restore/next``, runs the after-restore hooks and loops on ``next`` there.

The Runtime API address is read twice by awslambdaric: by its Python client
(``lambda_runtime_address``, for ``restore/next`` and error posts) and by its native client
``runtime_client``, which reads ``AWS_LAMBDA_RUNTIME_API`` once, when the extension module
is loaded (a static in ``runtime_client.cpp``; ``initialize_client`` does not read it
again, checked here). A fork therefore loads a private copy of the extension module (a
new path is a new ``dlopen``, so its statics are initialised again, from the fork's
environment), the copy never loaded by the template itself.
"""

import json
import os
import select
import socket
import sys
import tempfile
import time
import warnings
from typing import Any


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.sendall((json.dumps(message) + "\n").encode())


def _restored(started: float, restore_file: str) -> None:
    """The last after-restore hook: the runtime load and the function's after-restore hooks
    took from ``started`` (the fork's first instruction) to now."""
    with open(restore_file, "w") as f:
        json.dump({"restore_ms": (time.perf_counter() - started) * 1000.0}, f)


def _become_environment(
    request: dict[str, Any], clients: list[Any], native_copy: str, started: float
) -> None:
    """In the fork: the restored environment's output files, Runtime API and clients."""
    import importlib.machinery
    import importlib.util

    from awslambdaric import lambda_runtime_client
    from snapshot_restore_py import register_after_restore

    os.setsid()  # its own process group: killing the environment takes its children too
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ["AWS_LAMBDA_RUNTIME_API"] = request["api"]
    os.environ["TMPDIR"] = request["tmp"]  # each environment its own /tmp
    tempfile.tempdir = None
    loader = importlib.machinery.ExtensionFileLoader("runtime_client", native_copy)
    spec = importlib.util.spec_from_file_location("runtime_client", native_copy, loader=loader)
    assert spec is not None
    native = importlib.util.module_from_spec(spec)
    loader.exec_module(native)
    native.initialize_client(lambda_runtime_client._user_agent())
    sys.modules["runtime_client"] = native
    lambda_runtime_client.runtime_client = native
    for client in clients:
        client.lambda_runtime_address = request["api"]
    # Registered after the function's own after-restore hooks (at import), so it runs last.
    register_after_restore(_restored, started, request["restore_file"])


def _serve_forks(control_fd: int, clients: list[Any], native_copy: str) -> None:
    """The template's last before-snapshot hook: report ready, then fork on request."""
    control = socket.socket(fileno=control_fd)
    _send(control, {"event": "ready", "pid": os.getpid()})
    children: dict[int, int] = {}  # pidfd -> pid: readable once the child exits
    pending = b""
    while True:
        readable, _, _ = select.select([control.fileno(), *children], [], [])
        for ready in readable:
            if ready != control.fileno():
                pid = children.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                _send(control, {"event": "exited", "pid": pid, "code": code})
                continue
            data = control.recv(65536)
            if not data:  # mlayer closed the template
                os._exit(0)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                with warnings.catch_warnings():
                    # OpenBLAS's idle threads make Python 3.12+ warn about fork; OpenBLAS
                    # stops them around fork itself (pthread_atfork).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pid = os.fork()
                if pid == 0:
                    started = time.perf_counter()
                    control.close()
                    for fd in children:
                        os.close(fd)
                    _become_environment(request, clients, native_copy, started)
                    return  # awslambdaric goes on: restore/next, after-restore hooks, next
                children[os.pidfd_open(pid)] = pid
                _send(control, {"event": "forked", "id": request["id"], "pid": pid})


def main(config: dict[str, Any]) -> None:
    sys.path[:] = config["paths"]
    from awslambdaric import __main__ as ric_main
    from snapshot_restore_py import register_before_snapshot

    clients: list[Any] = []

    class _Client(ric_main.LambdaRuntimeClient):
        """awslambdaric's client, kept so that each fork can point it at its own API."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            clients.append(self)

    ric_main.LambdaRuntimeClient = _Client
    register_before_snapshot(_serve_forks, config["control_fd"], clients, config["native_copy"])
    ric_main.main(["awslambdaric", config["handler"]])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
