"""The private runtime directory: what Lambda's ``/var/runtime`` holds for Python.

Lambda's Python runtime brings boto3 (with botocore) and the runtime interface client
(``awslambdaric``) in ``/var/runtime``, after the function and its layers on ``sys.path``.
The local execution environment gets the same from a directory filled once with
``pip install --target`` (per interpreter version and platform, pinned to the versions
mlayer itself runs with) and cached under ``~/.cache/mlayer``, so the function never sees
the packages of the interpreter that runs mlayer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from mlayer.errors import MlayerError

# What /var/runtime brings; botocore pinned too so boto3 and botocore stay a matched pair.
RUNTIME_PACKAGES = ("boto3", "botocore", "awslambdaric")


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs the function: its version and platform."""

    path: str
    version: str  # "3.11"
    platform: str  # sysconfig.get_platform(), e.g. "linux-x86_64"
    stdlib: tuple[str, ...]  # sys.path entries of the standard library (with -S)


def cache_root() -> Path:
    """mlayer's cache directory (``MLAYER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlayer``)."""
    explicit = os.environ.get("MLAYER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlayer"


@cache
def inspect_interpreter(python: str) -> Interpreter:
    """Ask ``python`` for its version, platform and standard-library path entries.

    Raises:
        MlayerError: ``python`` cannot be run.
    """
    probe = (
        "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2],"
        " 'platform': sysconfig.get_platform(), 'path': sys.path[1:]}))"
    )
    try:
        out = subprocess.run(
            [python, "-S", "-s", "-E", "-c", probe],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise MlayerError(
            f"cannot run the Python interpreter {python} ({exc}); pass an existing "
            "interpreter of the function's runtime version"
        ) from exc
    info = json.loads(out)
    return Interpreter(
        path=python, version=info["version"], platform=info["platform"], stdlib=tuple(info["path"])
    )


def _pins() -> list[str]:
    pins = []
    for name in RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def ensure_runtime_dir(interpreter: Interpreter) -> Path:
    """The cached runtime directory for ``interpreter``, installed on first use.

    Raises:
        MlayerError: pip could not install the runtime packages (offline, no wheel).
    """
    pins = _pins()
    key = hashlib.sha256(
        json.dumps([interpreter.version, interpreter.platform, pins]).encode()
    ).hexdigest()[:12]
    root = cache_root()
    target = root / f"runtime-py{interpreter.version}-{interpreter.platform}-{key}"
    if (target / ".complete").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Several mlayer processes (parallel tests, two terminals) may ask at once: one installs.
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=root))
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        cmd += ["--target", str(staging)]
        current = f"{sys.version_info.major}.{sys.version_info.minor}"
        if interpreter.version != current:
            # Wheels for the function's interpreter, fetched by this one's pip.
            cmd += ["--python-version", interpreter.version, "--only-binary=:all:"]
        cmd += pins
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise MlayerError(
                f"could not install the local Lambda runtime ({' '.join(pins)}) for Python "
                f"{interpreter.version}: {result.stderr.strip().splitlines()[-1:] or result.returncode}; "
                "check that PyPI is reachable (pip install works) and retry"
            )
        (staging / ".complete").write_text(json.dumps(pins) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target
