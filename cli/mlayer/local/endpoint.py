"""A local AWS endpoint: ``moto_server`` on a free 127.0.0.1 port, always cleaned up.

Run as a child process (not moto's in-thread server) so that AWS calls are served by
another interpreter and never compete with the function runs for this one's GIL, and so
that stopping it is one kill of its process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlayer.errors import MlayerError

_START_ATTEMPTS = 3  # a free port can be taken between probing it and moto binding it


@dataclass
class LocalEndpoint:
    """A running moto_server."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_dir: Path | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait for it; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log_dir is not None:
            import shutil

            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def configure(self, config: dict[str, object]) -> None:
        """Set moto's runtime configuration (``/moto-api/config``)."""
        request = urllib.request.Request(
            f"{self.url}/moto-api/config",
            data=json.dumps(config).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_endpoint(*, port: int | None = None, timeout_s: float = 30.0) -> LocalEndpoint:
    """Start moto_server on 127.0.0.1 (a free port unless ``port``) and wait until it answers.

    Raises:
        MlayerError: moto[server] is not installed, or the server did not come up.
    """
    try:
        import flask  # noqa: F401 - moto's server mode needs it
        import moto  # noqa: F401
    except ImportError as exc:
        raise MlayerError(
            "the local endpoint needs moto[server]; install it with "
            "python3 -m pip install -e '.[local]' (or pip install 'moto[server]')"
        ) from exc
    log_dir = Path(tempfile.mkdtemp(prefix="mlayer-moto-"))
    log_path = log_dir / "moto_server.log"
    last_error = ""
    for _ in range(_START_ATTEMPTS):
        chosen = port or _free_port()
        url = f"http://127.0.0.1:{chosen}"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(chosen)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        endpoint = LocalEndpoint(url, chosen, process, log_path, log_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _answers(url):
                return endpoint
            time.sleep(0.1)
        last_error = log_path.read_text(errors="replace")[-2000:]
        endpoint._log_dir = None  # keep the log for the next attempt / the error
        endpoint.stop()
        if port is not None:
            break
    import shutil

    shutil.rmtree(log_dir, ignore_errors=True)
    raise MlayerError(
        f"moto_server did not start on 127.0.0.1 within {timeout_s:.0f} s; its output: "
        f"{last_error.strip() or '(none)'}"
    )


@contextlib.contextmanager
def local_endpoint(*, port: int | None = None) -> Iterator[LocalEndpoint]:
    """``start_endpoint`` as a context manager: the server is stopped however the block ends."""
    endpoint = start_endpoint(port=port)
    try:
        yield endpoint
    finally:
        endpoint.stop()
