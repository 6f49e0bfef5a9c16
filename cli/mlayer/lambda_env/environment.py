"""Run the real function on its layers in an isolated, Lambda-like execution environment.

One :class:`LambdaEnvironment` is one Lambda execution environment: a fresh Python
process whose ``sys.path`` is exactly Lambda's (the function's task dir, the layers'
``opt/python/lib/python3.X/site-packages`` and ``opt/python``, a private runtime dir with
boto3 and ``awslambdaric`` standing in for ``/var/runtime``, then the standard library),
whose environment carries Lambda's variables, and which stays warm across invocations.

Why the real runtime interface client behind a local Runtime API
(:mod:`mlayer.lambda_env.runtime_api`) rather than a hand-written loop over pipes: the handler is
imported, called, and its errors serialized by the same code as in Lambda's Python base
images, so ``context`` (``get_remaining_time_in_millis``, ``aws_request_id``), error shapes
(``Runtime.ImportModuleError``, ``errorType``/``stackTrace``) and log lines (``[ERROR]``)
are Lambda's, and a runtime upgrade is a pin change. Measured here (bench/stream_throughput.py
prints it too): about 1 ms of overhead per warm invocation, most of it two HTTP exchanges.

Limits are enforced as Lambda does, from outside the process:

- memory: a watchdog reads the process's peak resident set (``VmHWM`` in
  ``/proc/<pid>/status``, a kernel-kept high-water mark, so a spike between two polls is
  not missed) and kills the environment once it passes the memory size, answering
  ``Runtime.OutOfMemory``. ``RLIMIT_AS`` would be too blunt: after importing scikit-learn
  the address space here is 366 MB for a 119 MB resident set (OpenBLAS maps per-thread
  buffers it never touches), and it grows with the core count, so a 256 MB function would
  fail to import numpy on a large laptop while it runs fine in Lambda.
  Linux only (``/proc``): elsewhere memory is not enforced and Max Memory Used reads 0.
- timeout: the invocation is killed after ``timeout_s`` with Lambda's
  ``Task timed out after N.NN seconds``; the next invocation starts a new environment
  (a cold start), as in Lambda.

Each invocation is logged Lambda's way (``START``, the function's output, ``END``,
``REPORT`` with ``Init Duration`` on cold starts) to ``log_path``, which ``mlayer cost
--from-report`` reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from mlayer.errors import MlayerError
from mlayer.lambda_env.runtime_api import Outcome, RuntimeApiServer
from mlayer.lambda_env.runtime_dir import Interpreter, ensure_runtime_dir, inspect_interpreter
from mlayer.reports import Report, billed_ms, format_report

# Lambda's init phase may take 10 s; past that it is retried inside the first invocation
# under the function's timeout, so the effective limit is the larger of the two.
INIT_LIMIT_S = 10.0
_POLL_S = 0.01  # watchdog period while a phase runs: memory, exit, deadline
_DEFAULT_ACCOUNT = "123456789012"  # moto's account; only shows in the invoked function ARN
# Variables Lambda sets itself and a function's configuration cannot override.
_RESERVED = (
    "_HANDLER",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
)
# Interpreter variables that would change sys.path or startup behind our back.
_DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONSAFEPATH")
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# Runs in the child: sys.path exactly as in Lambda, then the real runtime interface client.
_BOOTSTRAP = """\
import sys
sys.path[:] = {paths!r}
from awslambdaric.__main__ import main
main(["awslambdaric", {handler!r}])
"""


@dataclass(frozen=True)
class InitResult:
    """The init phase (cold start) of one environment: process start to its first ``next``."""

    duration_ms: float
    stdout: str
    stderr: str
    error: dict[str, Any] | None = None  # Lambda's shape: errorType, errorMessage, stackTrace
    # SnapStart: the environment was restored from a snapshot (duration_ms is the Restore
    # Duration) and this much of it is billed (the runtime load and after-restore hooks).
    restored: bool = False
    billed_restore_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Invocation:
    """One invocation's outcome, as Lambda would report it."""

    request_id: str
    response: Any  # the decoded JSON response (None when ``error`` is set)
    error: dict[str, Any] | None  # errorType, errorMessage (stackTrace for function errors)
    report: Report
    logs: str  # the lines Lambda would log: START, the function's output, END, REPORT
    stdout: str = ""
    stderr: str = ""
    init: InitResult | None = None  # set on a cold start
    # The function version that ran (Lambda's ExecutedVersion: an alias's primary version or
    # its canary; the START line's ``Version:``).
    executed_version: str = "$LATEST"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cold_start(self) -> bool:
        return self.init is not None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType") or "")


@dataclass
class _Capture:
    """A regular file the child writes to; slices of it are read back by offset.

    A file rather than a pipe: nothing has to drain it while the function runs, and all the
    child wrote before posting its response is readable the moment the response arrives.
    """

    path: Path
    handle: BinaryIO = field(init=False)

    def __post_init__(self) -> None:
        self.handle = open(self.path, "ab")  # noqa: SIM115 - lives as long as the environment

    def offset(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def read_from(self, offset: int) -> str:
        with open(self.path, "rb") as f:
            f.seek(offset)
            # awslambdaric ends the lines of one multi-line message with \r so that
            # CloudWatch keeps it one event; a text log wants them as line breaks.
            return f.read().decode("utf-8", "replace").replace("\r", "\n")

    def close(self) -> None:
        self.handle.close()


class LambdaEnvironment:
    """One Lambda execution environment running the function in ``task_dir`` on ``opt_dir``.

    Use as a context manager. The first :meth:`invoke` (or an explicit :meth:`start`) is the
    cold start; later ones reuse the warm process until it times out, runs out of memory or
    crashes, after which the next invocation starts a fresh one.

    Args:
        task_dir: the function's code (Lambda's ``/var/task``); the working directory.
        opt_dir: the unzipped layers (Lambda's ``/opt``, see :func:`prepare_opt`).
        python: the interpreter that runs the function (its version picks the
            ``opt/python/lib/python3.X/site-packages`` entry and the runtime dir).
        env: the function's configured variables, plus anything the caller adds
            (``AWS_ENDPOINT_URL``, credentials, ``PYTHONWARNINGS=error``...). ``MODEL_DIR``
            defaults to ``opt_dir/model``. Lambda's reserved variables cannot be overridden.
        memory_mb, timeout_s: the function's memory size and timeout, enforced.
        log_path: where START / END / REPORT lines and the function's output are appended.
    """

    # Lambda's AWS_LAMBDA_INITIALIZATION_TYPE ("snap-start" in a SnapStart template).
    initialization_type = "on-demand"

    def __init__(
        self,
        *,
        task_dir: Path,
        opt_dir: Path,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        memory_mb: int = 512,
        timeout_s: float = 60.0,
        function_name: str = "mlayer-local",
        handler: str = "lambda_function.lambda_handler",
        log_path: Path | None = None,
        function_version: str = "$LATEST",
        function_arn: str | None = None,
    ) -> None:
        self.task_dir = Path(task_dir).resolve()
        self.opt_dir = Path(opt_dir).resolve()
        if not self.task_dir.is_dir():
            raise MlayerError(f"the function directory {task_dir} does not exist")
        if not self.opt_dir.is_dir():
            raise MlayerError(
                f"the layers directory {opt_dir} does not exist; unzip the layers with "
                "prepare_opt() first"
            )
        if not 128 <= memory_mb <= 10240:
            raise MlayerError(f"memory size {memory_mb} MB is outside Lambda's 128-10240 MB")
        if not 0 < timeout_s <= 900:
            raise MlayerError(f"timeout {timeout_s} s is outside Lambda's 1-900 s")
        self.python = python
        self.env = dict(env or {})
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.function_name = function_name
        self.handler = handler
        self.function_version = function_version
        self.log_path = Path(log_path) if log_path else None
        self._region = (
            self.env.get("AWS_REGION")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        self.function_arn = function_arn or (
            f"arn:aws:lambda:{self._region}:{_DEFAULT_ACCOUNT}:function:{function_name}"
        )
        self.init: InitResult | None = None  # the latest init phase
        self.cold_starts = 0
        self._interpreter: Interpreter | None = None
        self._runtime_dir: Path | None = None
        self._server: RuntimeApiServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="mlayer-env-"))
        self._stdout = _Capture(self._workdir / "stdout.log")
        self._stderr = _Capture(self._workdir / "stderr.log")
        self._pending_init: InitResult | None = None
        self._last_peak_mb = 0.0  # the latest peak RSS seen by the watchdog
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """True while a warm runtime process waits for work."""
        return (
            self._proc is not None
            and self._proc.poll() is None
            and bool(self.init and self.init.ok)
        )

    @property
    def sys_path(self) -> list[str]:
        """The child's ``sys.path``, in Lambda's order."""
        interp = self._interp()
        runtime = self._runtime_dir or ensure_runtime_dir(interp)
        return [
            str(self.task_dir),
            str(self.opt_dir / "python" / "lib" / f"python{interp.version}" / "site-packages"),
            str(self.opt_dir / "python"),
            str(runtime),
            *interp.stdlib,
        ]

    def start(self) -> None:
        """Run the init phase (a cold start) unless a warm process is already waiting.

        The result, with the init's own stdout / stderr and any init error, is in
        :attr:`init`; an init error does not raise (Lambda reports it on the invocation).
        """
        self._check_open()
        if self.alive:
            return
        self._kill()
        self._last_peak_mb = 0.0
        interp = self._interp()
        self._runtime_dir = ensure_runtime_dir(interp)
        if self._server is None:
            self._server = RuntimeApiServer()
        server = self._server
        server.reset()
        out_at, err_at = self._stdout.offset(), self._stderr.offset()
        code = _BOOTSTRAP.format(paths=self.sys_path, handler=self.handler)
        started = time.perf_counter()
        self._proc = subprocess.Popen(
            # -S: no site (so no site-packages); -s: no user site; -u: output reaches the
            # capture files before the response is posted, in order.
            [interp.path, "-S", "-s", "-u", "-c", code],
            cwd=self.task_dir,
            env=self._child_env(server.address),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout.handle,
            stderr=self._stderr.handle,
            start_new_session=True,  # its own process group: a kill takes its children too
        )
        self.cold_starts += 1
        limit = max(INIT_LIMIT_S, self.timeout_s)
        state = server.state
        status = self._watch(
            lambda: state.first_next_at is not None or state.init_error is not None, started + limit
        )
        ended, error = self._init_outcome(state, status, state.first_next_at, limit)
        if error is not None:
            self._kill()
        self.init = InitResult(
            duration_ms=(ended - started) * 1000.0,
            stdout=self._stdout.read_from(out_at),
            stderr=self._stderr.read_from(err_at),
            error=error,
        )
        self._pending_init = self.init
        self._log(
            f"INIT_START Runtime Version: python:{interp.version}.local"
            f"\tRuntime Version ARN: local:{interp.path}\n"
            + self.init.stdout
            + self.init.stderr
            + (_error_log(error) if error else "")
        )

    def invoke(self, event: Any) -> Invocation:
        """Run one invocation of ``event`` and return its outcome.

        ``event`` is any JSON value, or ``bytes`` already holding its JSON (the stream
        emulator encodes each record once, when read, and joins them: encoding a batch of
        1,000 records again per invocation took 5 ms here).

        Raises:
            MlayerError: the event cannot be serialized as JSON, or the environment is closed.
        """
        self._check_open()
        if isinstance(event, bytes | bytearray):
            body = bytes(event)
        else:
            try:
                body = json.dumps(event).encode()
            except (TypeError, ValueError) as exc:
                raise MlayerError(f"the event is not JSON-serializable: {exc}") from exc
        if not self.alive:
            self.start()
        init, self._pending_init = self._pending_init, None
        request_id = str(uuid.uuid4())
        assert self.init is not None
        if not self.init.ok or self._server is None or self._proc is None:
            # Lambda answers every invocation of an environment that failed to init with
            # the init error, and tries a fresh init on the next one.
            init_error = dict(self.init.error or {})
            report = self._report(request_id, 0.0, init)
            logs = self._log_invocation(request_id, _error_log(init_error), report)
            return Invocation(
                request_id,
                None,
                init_error,
                report,
                logs,
                init=init,
                executed_version=self.function_version,
            )

        server, proc = self._server, self._proc
        out_at, err_at = self._stdout.offset(), self._stderr.offset()
        deadline_ms = int((time.time() + self.timeout_s) * 1000)
        queued = time.perf_counter()
        server.dispatch(request_id, body, deadline_ms, self.function_arn)
        state = server.state
        status = self._watch(lambda: request_id in state.outcomes, queued + self.timeout_s)
        outcome: Outcome | None = state.outcomes.pop(request_id, None)
        response: Any = None
        error: dict[str, Any] | None = None
        extra_log = ""
        if outcome is not None:
            duration_ms = (outcome.received_at - outcome.dispatched_at) * 1000.0
            if outcome.error is not None:
                error = outcome.error
                error.setdefault("errorType", outcome.error_type or "Runtime.Unknown")
            else:
                response = _decode(outcome.response)
        else:
            dispatched = server.dispatched_at(request_id) or queued
            duration_ms = (time.perf_counter() - dispatched) * 1000.0
            if status == "timeout":
                # The deadline ran from before the dispatch; Lambda reports a timed-out
                # invocation as lasting its whole timeout, never less.
                duration_ms = max(duration_ms, self.timeout_s * 1000.0)
            error = self._failure(status, request_id, phase="invoke", limit=self.timeout_s)
            extra_log = _error_log(error, request_id=request_id)
        peak = self._peak_mb(proc.pid)
        if error is not None and outcome is None:
            self._kill()
        stdout = self._stdout.read_from(out_at)
        stderr = self._stderr.read_from(err_at)
        report = self._report(request_id, duration_ms, init, peak_mb=peak)
        logs = self._log_invocation(request_id, stdout + stderr + extra_log, report)
        return Invocation(
            request_id,
            response,
            error,
            report,
            logs,
            stdout,
            stderr,
            init,
            executed_version=self.function_version,
        )

    def close(self) -> None:
        """Stop the runtime process and the Runtime API, and delete the private files."""
        if self._closed:
            return
        self._closed = True
        self._kill()
        if self._server is not None:
            self._server.close()
            self._server = None
        self._stdout.close()
        self._stderr.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MlayerError("the execution environment is closed")

    def _interp(self) -> Interpreter:
        if self._interpreter is None:
            self._interpreter = inspect_interpreter(self.python)
        return self._interpreter

    def _child_env(self, api_address: str) -> dict[str, str]:
        interp = self._interp()
        opt, task = str(self.opt_dir), str(self.task_dir)
        tmp = self._workdir / "tmp"  # the function's private /tmp
        tmp.mkdir(exist_ok=True)
        env: dict[str, str] = {
            "PATH": os.pathsep.join(
                [f"{opt}/bin", str(Path(interp.path).parent), "/usr/local/bin", "/usr/bin", "/bin"]
            ),
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in [f"{opt}/lib", f"{task}/lib", os.environ.get("LD_LIBRARY_PATH", "")] if p
            ),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "TMPDIR": str(tmp),
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "MODEL_DIR": f"{opt}/model",
            # /var/task and /opt are read-only in Lambda: no __pycache__ is ever written there,
            # so a layer without bytecode pays for compiling at every cold start here too.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # Here /opt is ``opt``: a linked shadow layer unpacks to ``opt``/shadow. Set only when
        # it is there, as the function looks for /opt/shadow only when it exists (an explicit
        # SHADOW_DIR that is missing is reported as a shadow that failed to load).
        if os.path.isdir(f"{opt}/shadow"):
            env["SHADOW_DIR"] = f"{opt}/shadow"
        # Lambda hands the function its execution role's credentials; locally, the caller's.
        env.update({k: os.environ[k] for k in _CREDENTIALS if k in os.environ})
        env.update(self.env)
        for key in _DROPPED:
            env.pop(key, None)
        env.update(
            {
                "_HANDLER": self.handler,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_python{interp.version}",
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": self.function_version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/")
                + f"[{self.function_version}]{uuid.uuid4().hex}",
                "AWS_LAMBDA_RUNTIME_API": api_address,
                "AWS_LAMBDA_INITIALIZATION_TYPE": self.initialization_type,
                "LAMBDA_TASK_ROOT": task,
                "LAMBDA_RUNTIME_DIR": str(self._runtime_dir or ""),
            }
        )
        assert set(_RESERVED) <= set(env)
        if self.initialization_type == "snap-start":
            # Not set in SnapStart functions (one snapshot, many log streams).
            del env["AWS_LAMBDA_LOG_GROUP_NAME"], env["AWS_LAMBDA_LOG_STREAM_NAME"]
        return env

    def _watch(self, done: Any, deadline: float) -> str:
        """Wait until ``done()`` (under the server lock), or the process exits, outgrows its
        memory, or the deadline passes. Returns "done", "exited", "oom" or "timeout"."""
        assert self._server is not None and self._proc is not None
        state, proc = self._server.state, self._proc
        while True:
            with state.lock:
                if done():
                    return "done"
                state.lock.wait(timeout=_POLL_S)
                if done():
                    return "done"
            if proc.poll() is not None:
                return "exited"
            peak = self._peak_mb(proc.pid)
            if peak is not None and peak > self.memory_mb:
                return "oom"
            if time.perf_counter() >= deadline:
                return "timeout"

    def _init_outcome(
        self, state: Any, status: str, ready_at: float | None, limit: float
    ) -> tuple[float, dict[str, Any] | None]:
        """When the init ended, and its error (None when it reached ``ready_at`` in time):
        the runtime's /init/error, else the timeout or crash ``status`` names."""
        if state.init_error is not None:
            error = state.init_error.error or {"errorType": "Runtime.Unknown"}
            error.setdefault("errorType", state.init_error.error_type or "Runtime.Unknown")
            return state.init_error.received_at, error
        if status == "done" and ready_at is not None:
            return ready_at, None
        return time.perf_counter(), self._failure(status, "", phase="init", limit=limit)

    def _failure(self, status: str, request_id: str, *, phase: str, limit: float) -> dict[str, Any]:
        """Lambda's error for an environment that died or overran."""
        prefix = f"RequestId: {request_id} " if request_id else ""
        if status == "timeout":
            if phase == "init":
                return {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"{prefix}Error: init phase timed out after {limit:.2f} seconds",
                }
            return {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"{prefix}Error: Task timed out after {limit:.2f} seconds",
            }
        if status == "oom":
            return {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": f"{prefix}Error: Runtime exited with error: signal: killed "
                f"(out of memory: {self._last_peak_mb:.0f} MB used, memory size "
                f"{self.memory_mb} MB; raise the function's MemorySize)",
            }
        code = self._proc.poll() if self._proc is not None else None
        how = (
            f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
            if code is not None and code < 0
            else f"exit status {code}"
        )
        return {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"{prefix}Error: Runtime exited with error: {how}",
        }

    def _peak_mb(self, pid: int) -> float | None:
        """Peak resident memory of the runtime process (MB), None when unknown."""
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        self._last_peak_mb = int(line.split()[1]) / 1024.0
                        return self._last_peak_mb
        except (OSError, ValueError, IndexError):
            pass  # gone already (or not Linux): the watchdog's last reading stands
        return None

    def _report(
        self,
        request_id: str,
        duration_ms: float,
        init: InitResult | None,
        *,
        peak_mb: float | None = None,
    ) -> Report:
        peak = peak_mb if peak_mb is not None else self._last_peak_mb
        restored = init is not None and init.restored
        billed_restore = (init.billed_restore_ms or 0) if init is not None and restored else None
        return Report(
            request_id=request_id,
            duration_ms=round(duration_ms, 2),
            # Lambda bills a restored environment's first invocation for its duration plus
            # the billed restore, on the one Billed Duration figure.
            billed_duration_ms=billed_ms(duration_ms) + (billed_restore or 0),
            memory_size_mb=self.memory_mb,
            # Lambda's figure never exceeds the memory size: it is killed at the limit.
            max_memory_used_mb=min(self.memory_mb, math.ceil(peak or 0.0)),
            init_duration_ms=round(init.duration_ms, 2)
            if init is not None and not restored
            else None,
            restore_duration_ms=round(init.duration_ms, 2)
            if init is not None and restored
            else None,
            billed_restore_duration_ms=billed_restore,
        )

    def _log_invocation(self, request_id: str, output: str, report: Report) -> str:
        if output and not output.endswith("\n"):
            output += "\n"
        text = (
            f"START RequestId: {request_id} Version: {self.function_version}\n"
            f"{output}END RequestId: {request_id}\n{format_report(report)}\n"
        )
        self._log(text)
        return text

    def _log(self, text: str) -> None:
        if self.log_path is None or not text:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One O_APPEND write per block: environments sharing a log never interleave lines.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _decode(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _error_log(error: dict[str, Any] | None, request_id: str = "") -> str:
    """The log line Lambda writes for a platform-side failure."""
    if not error:
        return ""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    message = str(error.get("errorMessage", ""))
    if error.get("errorType") == "Sandbox.Timedout" and request_id:
        return f"{stamp}.000Z {request_id} {message.removeprefix(f'RequestId: {request_id} Error: ')}\n"
    return f"{message}\n{error.get('errorType', '')}\n"


def prepare_opt(layer_zips: list[Path], opt_dir: Path) -> None:
    """Unzip layers into ``opt_dir`` in order, as Lambda fills ``/opt`` (later ones win).

    Keeps file modes and symlinks; refuses entries that would land outside ``opt_dir``.
    ``opt_dir`` must be new or empty, or one this function filled before (it is then
    emptied), so no file of an earlier set of layers survives.

    Raises:
        MlayerError: a zip is missing or not a zip, an entry escapes, or ``opt_dir`` holds
            unrelated files.
    """
    import zipfile

    opt_dir = Path(opt_dir)
    marker = opt_dir / ".mlayer-opt"
    if opt_dir.exists() and any(opt_dir.iterdir()):
        if not marker.exists():
            raise MlayerError(
                f"{opt_dir} is not empty and was not made by mlayer; pass a new directory"
            )
        shutil.rmtree(opt_dir)
    opt_dir.mkdir(parents=True, exist_ok=True)
    root = opt_dir.resolve()
    for zip_path in layer_zips:
        try:
            archive = zipfile.ZipFile(zip_path)
        except FileNotFoundError as exc:
            raise MlayerError(f"layer zip {zip_path} does not exist") from exc
        except zipfile.BadZipFile as exc:
            raise MlayerError(f"{zip_path} is not a zip file: {exc}") from exc
        with archive:
            for info in archive.infolist():
                target = (root / info.filename).resolve()
                if target != root and root not in target.parents:
                    raise MlayerError(
                        f"{zip_path}: entry {info.filename!r} would extract outside /opt"
                    )
                mode = (info.external_attr >> 16) & 0o170777
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    target.unlink()  # a later layer replaces the file
                if mode & 0o170000 == 0o120000:  # a symlink entry: its target is the content
                    os.symlink(archive.read(info).decode(), target)
                    continue
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if mode & 0o777:
                    os.chmod(target, mode & 0o777)
    marker.write_text("\n".join(str(p) for p in layer_zips) + "\n")
