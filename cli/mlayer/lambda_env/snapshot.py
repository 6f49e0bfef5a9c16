"""Lambda SnapStart, locally: one init, a snapshot, and every new environment restored from it.

A process cannot be snapshotted from outside, so it is forked from inside
(:mod:`mlayer.lambda_env.snapshot_child`): a :class:`SnapshotTemplate` runs the real
runtime with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``, which imports the handler and
runs the before-snapshot hooks; the template's own hook, run last, then reports the init
done and forks on request. Each fork is a :class:`RestoredEnvironment`: it runs the
after-restore hooks against its own Runtime API and serves invocations like any
:class:`~mlayer.lambda_env.environment.LambdaEnvironment` (same interface, same limits:
memory from the fork's ``VmHWM``, timeout, exit; a killed environment is replaced by a new
restore from the same template, never by a new init).

The log gets Lambda's SnapStart lines: ``INIT_START`` / the init's output / ``INIT_REPORT
Init Duration`` once per template (at "publish"), and for each restore ``RESTORE_START`` /
the after-restore hooks' output / ``RESTORE_REPORT Restore Duration`` before its first
``START``, whose ``REPORT`` carries ``Restore Duration`` (restore request to the fork's
first ``next``) and ``Billed Restore Duration`` (the fork's runtime load and after-restore
hooks, measured inside it and rounded up to the ms); its ``Billed Duration`` includes the
latter, as Lambda's does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from mlayer.errors import MlayerError
from mlayer.lambda_env.environment import InitResult, LambdaEnvironment, _error_log
from mlayer.lambda_env.runtime_api import RuntimeApiServer
from mlayer.lambda_env.runtime_dir import ensure_runtime_dir
from mlayer.reports import format_init_report, format_restore_report

# SnapStart's init may run 130 s or the function's timeout, whichever is higher (AWS docs,
# "Lambda execution environment lifecycle"); the restore, with its after-restore hooks, 10 s.
SNAPSTART_INIT_LIMIT_S = 130.0
RESTORE_LIMIT_S = 10.0
_CHILD_PROGRAM = Path(__file__).with_name("snapshot_child.py")


class SnapshotTemplate(LambdaEnvironment):
    """The initialised, snapshotted environment of one function version; never invoked.

    Takes :class:`LambdaEnvironment`'s arguments. :meth:`start` runs the init (once; again
    only after the template died); :meth:`environment` makes a new restored environment.
    Thread-safe: the lanes of a run restore from one template at once.
    """

    initialization_type = "snap-start"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()  # one init at a time
        self._cond = threading.Condition()
        self._control: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ready_at: float | None = None
        self._dead = True
        self._next_id = 0
        self._forked: dict[int, int] = {}  # request id -> pid
        self._exits: dict[int, int] = {}  # pid -> exit code
        self._children: set[int] = set()
        self._native_copy: Path | None = None

    def environment(self) -> RestoredEnvironment:
        """A new (not yet restored) environment of this template."""
        return RestoredEnvironment(self)

    @property
    def alive(self) -> bool:
        return not self._dead and super().alive

    def start(self) -> None:
        """Run the init phase and the before-snapshot hooks, unless the template is ready.

        The result is in :attr:`init`; an init error does not raise (each restore then
        reports it, and the next one tries a new init).
        """
        with self._lock:
            self._check_open()
            if self.alive:
                return
            self._start_template()

    def _start_template(self) -> None:
        self._kill()
        self._last_peak_mb = 0.0
        interp = self._interp()
        self._runtime_dir = ensure_runtime_dir(interp)
        native = next(self._runtime_dir.glob("runtime_client.*.so"), None)
        if native is None:
            raise MlayerError(
                f"the local runtime in {self._runtime_dir} has no runtime_client extension "
                "(awslambdaric's native client); delete that directory so that it is installed again"
            )
        # A path the template never loads: each fork dlopens it afresh (see snapshot_child).
        self._native_copy = self._workdir / native.name
        shutil.copyfile(native, self._native_copy)
        if self._server is None:
            self._server = RuntimeApiServer()
        server = self._server
        server.reset()
        parent_end, child_end = socket.socketpair()
        self._control = parent_end
        self._ready_at = None
        self._dead = False
        config = {
            "paths": self.sys_path,
            "handler": self.handler,
            "control_fd": child_end.fileno(),
            "native_copy": str(self._native_copy),
        }
        out_at, err_at = self._stdout.offset(), self._stderr.offset()
        started = time.perf_counter()
        self._proc = subprocess.Popen(
            [interp.path, "-S", "-s", "-u", "-c", _CHILD_PROGRAM.read_text(), json.dumps(config)],
            cwd=self.task_dir,
            env=self._child_env(server.address),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout.handle,
            stderr=self._stderr.handle,
            pass_fds=(child_end.fileno(),),
            start_new_session=True,
        )
        child_end.close()
        threading.Thread(
            target=self._read_control, args=(parent_end,), name="mlayer-snapshot", daemon=True
        ).start()
        self.cold_starts += 1
        limit = max(SNAPSTART_INIT_LIMIT_S, self.timeout_s)
        state = server.state
        status = self._watch(
            lambda: self._ready_at is not None or state.init_error is not None, started + limit
        )
        ended, error = self._init_outcome(state, status, self._ready_at, limit)
        if error is not None:
            self._kill()
        duration_ms = (ended - started) * 1000.0
        self.init = InitResult(
            duration_ms=duration_ms,
            stdout=self._stdout.read_from(out_at),
            stderr=self._stderr.read_from(err_at),
            error=error,
        )
        status_word = None if error is None else ("timeout" if status == "timeout" else "error")
        self._log(
            f"INIT_START Runtime Version: python:{interp.version}.local"
            f"\tRuntime Version ARN: local:{interp.path}\n"
            + self.init.stdout
            + self.init.stderr
            + (_error_log(error) if error else "")
            + format_init_report(
                duration_ms,
                phase="init" if error else None,
                status=status_word,
                error_type=str(error.get("errorType")) if error and status != "timeout" else None,
            )
            + "\n"
        )

    def _read_control(self, control: socket.socket) -> None:
        """The template's messages: ready, forked (a request's pid), exited (a fork's code)."""
        pending = b""
        while True:
            try:
                data = control.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    if self._control is control:
                        self._dead = True
                    self._cond.notify_all()
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                message = json.loads(line)
                with self._cond:
                    event = message.get("event")
                    if event == "ready":
                        self._ready_at = time.perf_counter()
                    elif event == "forked":
                        self._forked[int(message["id"])] = int(message["pid"])
                        self._children.add(int(message["pid"]))
                    elif event == "exited":
                        self._exits[int(message["pid"])] = int(message["code"])
                        self._children.discard(int(message["pid"]))
                    self._cond.notify_all()

    def fork(self, *, api: str, stdout: Path, stderr: Path, restore_file: Path, tmp: Path) -> int:
        """Restore one environment: fork the template; returns the fork's pid.

        Raises:
            MlayerError: the template is not ready (its init failed, or it died).
        """
        with self._cond:
            if self._dead or self._control is None:
                raise MlayerError("the SnapStart template is not running; restore again")
            self._next_id += 1
            request_id = self._next_id
            control = self._control
        request = {
            "id": request_id,
            "api": api,
            "stdout": str(stdout),
            "stderr": str(stderr),
            "restore_file": str(restore_file),
            "tmp": str(tmp),
        }
        with self._send_lock:
            control.sendall((json.dumps(request) + "\n").encode())
        with self._cond:
            self._cond.wait_for(lambda: request_id in self._forked or self._dead, timeout=10)
            pid = self._forked.pop(request_id, None)
        if pid is None:
            raise MlayerError("the SnapStart template did not fork (it died); restore again")
        return pid

    def exit_code(self, pid: int) -> int | None:
        """A fork's exit code (negative: the signal), None while it runs."""
        with self._cond:
            if pid in self._exits:
                return self._exits[pid]
            template_gone = self._dead
        if template_gone and not os.path.exists(f"/proc/{pid}"):
            return -signal.SIGKILL  # its reaper was the template, gone with its record
        return None

    def wait_exit(self, pid: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._dead, timeout=timeout)

    def _kill(self) -> None:
        with self._cond:
            control, self._control = self._control, None
            children = list(self._children)
            self._dead = True
            self._cond.notify_all()
        for pid in children:  # restored environments still open: their template is gone
            _kill_fork(pid)
        if control is not None:
            with contextlib.suppress(OSError):
                control.close()
        super()._kill()

    def invoke(self, event: Any) -> Any:
        raise MlayerError("a SnapStart template is never invoked: invoke its environment()")


class _Fork:
    """A restored environment's process, as :class:`LambdaEnvironment` watches one: its pid,
    ``poll()`` and ``wait()`` (the template, its parent, reaps it and reports the code)."""

    def __init__(self, template: SnapshotTemplate, pid: int) -> None:
        self.template = template
        self.pid = pid

    def poll(self) -> int | None:
        return self.template.exit_code(self.pid)

    def wait(self, timeout: float | None = None) -> int | None:
        self.template.wait_exit(self.pid, timeout if timeout is not None else 5.0)
        return self.poll()


def _kill_fork(pid: int) -> None:
    # The fork calls setsid() first thing; until then its group is the template's.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class RestoredEnvironment(LambdaEnvironment):
    """An execution environment restored from a :class:`SnapshotTemplate` (a fork of it).

    :meth:`start` restores (and runs the template's init first if it has not run); after a
    timeout, an out-of-memory kill or a crash the next invocation restores a fresh one.
    """

    initialization_type = "snap-start"

    def __init__(self, template: SnapshotTemplate) -> None:
        super().__init__(
            task_dir=template.task_dir,
            opt_dir=template.opt_dir,
            python=template.python,
            env=template.env,
            memory_mb=template.memory_mb,
            timeout_s=template.timeout_s,
            function_name=template.function_name,
            handler=template.handler,
            log_path=template.log_path,
            function_version=template.function_version,
            function_arn=template.function_arn,
        )
        self.template = template

    def start(self) -> None:
        """Restore from the template unless a warm environment is waiting.

        The restore's result (Restore Duration, billed restore, the after-restore hooks'
        output, an error) is in :attr:`init`, with ``restored`` set; a failure does not raise.
        """
        self._check_open()
        if self.alive:
            return
        self._kill()
        self._last_peak_mb = 0.0
        self.template.start()
        init = self.template.init
        if init is None or not init.ok:
            # The snapshot could not be made: every invocation reports the init's error.
            self.init = init
            self._pending_init = init
            return
        interp = self._interp()
        if self._server is None:
            self._server = RuntimeApiServer()
        server = self._server
        server.reset()
        restore_file = self._workdir / "restore.json"
        restore_file.unlink(missing_ok=True)
        tmp = self._workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        out_at, err_at = self._stdout.offset(), self._stderr.offset()
        started = time.perf_counter()
        try:
            pid = self.template.fork(
                api=server.address,
                stdout=self._stdout.path,
                stderr=self._stderr.path,
                restore_file=restore_file,
                tmp=tmp,
            )
        except MlayerError:
            self.template.start()  # it died: a new init, then one more try
            pid = self.template.fork(
                api=server.address,
                stdout=self._stdout.path,
                stderr=self._stderr.path,
                restore_file=restore_file,
                tmp=tmp,
            )
        self._proc = _Fork(self.template, pid)  # type: ignore[assignment]
        self.cold_starts += 1
        state = server.state
        status = self._watch(
            lambda: state.first_next_at is not None or state.restore_error is not None,
            started + RESTORE_LIMIT_S,
        )
        error: dict[str, Any] | None = None
        if state.restore_error is not None:
            # awslambdaric posts the hook's exception with the error type in a header
            # (Runtime.AfterRestoreError), then exits 65.
            error = dict(state.restore_error.error or {})
            error["errorType"] = (
                state.restore_error.error_type or error.get("errorType") or "Runtime.Unknown"
            )
            ended = state.restore_error.received_at
        elif status == "done" and state.first_next_at is not None:
            ended = state.first_next_at
        else:
            ended = time.perf_counter()
            error = self._failure(status, "", phase="init", limit=RESTORE_LIMIT_S)
            if status == "timeout":
                error["errorMessage"] = (
                    f"Error: restore phase timed out after {RESTORE_LIMIT_S:.2f} seconds "
                    "(the after-restore hooks must finish within it)"
                )
        if error is not None:
            self._kill()
        billed: int | None = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            billed = math.ceil(json.loads(restore_file.read_text())["restore_ms"])
        duration_ms = (ended - started) * 1000.0
        self.init = InitResult(
            duration_ms=duration_ms,
            stdout=self._stdout.read_from(out_at),
            stderr=self._stderr.read_from(err_at),
            error=error,
            restored=True,
            billed_restore_ms=billed if billed is not None else math.ceil(duration_ms),
        )
        self._pending_init = self.init
        status_word = None if error is None else ("timeout" if status == "timeout" else "error")
        self._log(
            f"RESTORE_START Runtime Version: python:{interp.version}.local"
            f"\tRuntime Version ARN: local:{interp.path}\n"
            + self.init.stdout
            + self.init.stderr
            + (_error_log(error) if error else "")
            + format_restore_report(
                duration_ms,
                status=status_word,
                error_type=str(error.get("errorType")) if error and status != "timeout" else None,
            )
            + "\n"
        )

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _kill_fork(proc.pid)
        proc.wait()
