"""A local Lambda Runtime API: the HTTP interface the runtime interface client polls.

Lambda's own Python runtime is ``awslambdaric``: it imports the handler, then loops on
``GET /2018-06-01/runtime/invocation/next`` and posts each result to
``/invocation/<id>/response`` or ``/invocation/<id>/error`` (an import failure goes to
``/init/error``). An environment restored from a SnapStart snapshot first asks
``/restore/next`` (answered at once: the restore is under way) and reports a failing
after-restore hook to ``/restore/error``. Serving that API on 127.0.0.1 lets the real client run the function, so
the context object, the error shapes and the log format are Lambda's own and not a copy.

One server drives one execution environment (Lambda runs one invocation per environment at
a time): :meth:`RuntimeApiServer.dispatch` hands over one event, ``next`` is answered only
when an event exists, and :meth:`RuntimeApiServer.wait` returns the outcome.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PREFIX = "/2018-06-01/runtime"


@dataclass
class Outcome:
    """What the runtime posted back for one invocation (or for init)."""

    request_id: str
    response: bytes | None = None
    error: dict[str, Any] | None = None
    error_type: str | None = None
    dispatched_at: float = 0.0  # time.perf_counter() when `next` handed the event over
    received_at: float = 0.0  # time.perf_counter() when the post arrived


@dataclass
class _Pending:
    request_id: str
    body: bytes
    deadline_ms: int
    function_arn: str
    dispatched_at: float = 0.0  # perf_counter() when `next` answered with this event


@dataclass
class _State:
    lock: threading.Condition = field(default_factory=threading.Condition)
    pending: _Pending | None = None
    in_flight: _Pending | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    init_error: Outcome | None = None
    restore_error: Outcome | None = None
    restore_next_at: float | None = None
    first_next_at: float | None = None
    closed: bool = False
    # Bumped for each new runtime process: a `next` call still parked by a process that
    # died (timeout, out of memory) must not swallow the event meant for its successor.
    generation: int = 0


class _Handler(BaseHTTPRequestHandler):
    # awslambdaric keeps one connection alive; without TCP_NODELAY every small response
    # waits for the peer's delayed ACK (about 40-90 ms an invoke, measured here).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's per-request stderr lines."""

    def _reply(
        self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        if self.path == f"{_PREFIX}/restore/next":
            with self.server.state.lock:
                self.server.state.restore_next_at = time.perf_counter()
                self.server.state.lock.notify_all()
            self._reply(HTTPStatus.OK)
            return
        if self.path != f"{_PREFIX}/invocation/next":
            self._reply(HTTPStatus.NOT_FOUND, b'{"errorMessage":"unknown path"}')
            return
        state = self.server.state
        with state.lock:
            generation = state.generation
            if state.first_next_at is None:
                # The init phase ends when the runtime first asks for work, as in Lambda.
                state.first_next_at = time.perf_counter()
                state.lock.notify_all()
            while state.pending is None and not state.closed and state.generation == generation:
                state.lock.wait()
            if state.closed or state.pending is None or state.generation != generation:
                self.close_connection = True
                return
            event = state.pending
            state.pending = None
            event.dispatched_at = time.perf_counter()
            state.in_flight = event
        self._reply(
            HTTPStatus.OK,
            event.body,
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": event.request_id,
                "Lambda-Runtime-Deadline-Ms": str(event.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": event.function_arn,
                "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{event.request_id.replace('-', '')[:24]};Sampled=0",
            },
        )

    def do_POST(self) -> None:
        body = self._body()
        state = self.server.state
        parts = self.path[len(_PREFIX) :].strip("/").split("/")
        now = time.perf_counter()
        if parts in (["init", "error"], ["restore", "error"]):
            outcome = Outcome(
                request_id="",
                error=_json_or_text(body),
                error_type=self.headers.get("Lambda-Runtime-Function-Error-Type"),
                received_at=now,
            )
            with state.lock:
                if parts[0] == "init":
                    state.init_error = outcome
                else:
                    state.restore_error = outcome
                state.lock.notify_all()
            self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
            return
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            request_id = parts[1]
            with state.lock:
                if state.in_flight is None or state.in_flight.request_id != request_id:
                    known = False
                else:
                    known = True
                    outcome = Outcome(
                        request_id=request_id,
                        dispatched_at=state.in_flight.dispatched_at,
                        received_at=now,
                    )
                    if parts[2] == "response":
                        outcome.response = body
                    else:
                        outcome.error = _json_or_text(body)
                        outcome.error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                    state.outcomes[request_id] = outcome
                    state.in_flight = None
                    state.lock.notify_all()
            if known:
                self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
            else:
                self._reply(
                    HTTPStatus.BAD_REQUEST,
                    b'{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}',
                )
            return
        self._reply(HTTPStatus.NOT_FOUND, b'{"errorMessage":"unknown path"}')


def _json_or_text(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {"errorMessage": body.decode("utf-8", "replace"), "errorType": "Runtime.Unknown"}
    return value if isinstance(value, dict) else {"errorMessage": str(value)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime killed mid-request (timeout, out of memory) is expected: stay quiet."""
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class RuntimeApiServer:
    """The Runtime API for one execution environment, on an ephemeral 127.0.0.1 port."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mlayer-runtime-api", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """``host:port`` for ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def state(self) -> _State:
        return self._server.state

    def reset(self) -> None:
        """Forget everything about the previous runtime process (before a new cold start)."""
        state = self.state
        with state.lock:
            state.pending = None
            state.in_flight = None
            state.outcomes.clear()
            state.init_error = None
            state.restore_error = None
            state.restore_next_at = None
            state.first_next_at = None
            state.generation += 1
            state.lock.notify_all()

    def dispatch(self, request_id: str, event: bytes, deadline_ms: int, function_arn: str) -> None:
        """Queue one event; the runtime's pending (or next) ``next`` call receives it."""
        state = self.state
        with state.lock:
            state.pending = _Pending(request_id, event, deadline_ms, function_arn)
            state.lock.notify_all()

    def dispatched_at(self, request_id: str) -> float | None:
        """When ``next`` handed the event over (perf_counter), None while still queued."""
        with self.state.lock:
            flight = self.state.in_flight
            if flight is not None and flight.request_id == request_id:
                return flight.dispatched_at
            return None

    def close(self) -> None:
        """Wake any waiting ``next`` call, stop serving and release the port."""
        state = self.state
        with state.lock:
            state.closed = True
            state.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
