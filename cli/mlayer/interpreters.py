"""Finding a CPython of the target's version: it writes the layer's bytecode and checks its imports.

Order: ``--python``, this interpreter, ``python3.X`` on PATH (each must run and report the
version: a pyenv shim for a version that is not active does not run), pyenv's versions
folder, then ``uv python find``. The search reports where it looked, so a build without one
can say what it tried.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from mlayer.errors import ConfigError
from mlayer.targets import Target

_PROBE = (
    "import sys, sysconfig; print('%d.%d' % sys.version_info[:2], sys.implementation.name, "
    "1 if sysconfig.get_config_var('Py_GIL_DISABLED') else 0)"
)


def interpreter_version(python: str) -> str | None:
    """'3.13' for a working CPython interpreter, None when it does not run.

    Another implementation or a free-threaded build answers with what it is (e.g.
    '3.13 (pypy)', '3.13t (free-threaded)'), which matches no runtime: their bytecode or
    extension modules are not CPython's.
    """
    try:
        proc = subprocess.run(
            [python, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    fields = proc.stdout.split()
    if len(fields) != 3:
        return None
    version, implementation, free_threaded = fields
    if implementation != "cpython":
        return f"{version} ({implementation})"
    return f"{version}t (free-threaded)" if free_threaded == "1" else version


@dataclass(frozen=True)
class InterpreterSearch:
    """Where an interpreter of one Python version was looked for, and what was found."""

    version: str
    path: str | None = None
    source: str | None = None  # "--python", "this interpreter", "PATH", "pyenv", "uv"
    tried: tuple[str, ...] = ()  # each place looked at, and why it did not serve

    def describe(self) -> str:
        if self.path:
            return f"Python {self.version} from {self.source} ({self.path})"
        return f"no Python {self.version} interpreter found (tried {'; '.join(self.tried)})"


def _pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _version_key(name: str) -> tuple[int, ...]:
    """Sort key for pyenv version folders ('3.13.10' after '3.13.9'); odd names sort first."""
    numbers = re.findall(r"\d+", name)
    return tuple(int(n) for n in numbers) if re.fullmatch(r"[\d.]+", name) else (-1,)


def _this_interpreter(version: str) -> str | None:
    """The running interpreter's path when it is a (GIL) CPython of ``version``."""
    if (
        f"{sys.version_info[0]}.{sys.version_info[1]}" == version
        and sys.implementation.name == "cpython"
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
    ):
        return sys.executable
    return None


def locate_interpreter(version: str, explicit: str | None = None) -> InterpreterSearch:
    """Find a working CPython of ``version`` ('3.13'), checking each candidate runs.

    Order: ``explicit`` (``--python``), this interpreter, every ``python3.X`` on PATH (a
    pyenv shim for a version that is not active does not run: it is skipped), pyenv's
    versions folder (``$PYENV_ROOT`` or ``~/.pyenv``, newest patch release first), then
    ``uv python find 3.X`` when uv is installed.

    Raises:
        ConfigError: ``explicit`` is not a CPython of ``version``.
    """
    if explicit:
        given = shutil.which(explicit) or explicit
        have = interpreter_version(given)
        if have != version:
            what = f"Python {have}" if have else "not a working Python interpreter"
            raise ConfigError(
                f"--python {explicit} is {what}; python{version} needs Python {version}"
            )
        return InterpreterSearch(version, given, "--python")
    running = _this_interpreter(version)
    if running:
        return InterpreterSearch(version, running, "this interpreter")
    tried: list[str] = []
    name = f"python{version}"

    def check(path: str, source: str) -> InterpreterSearch | None:
        have = interpreter_version(path)
        if have == version:
            return InterpreterSearch(version, path, source, tuple(tried))
        tried.append(f"{path}: {'is Python ' + have if have else 'does not run'}")
        return None

    seen: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            real = os.path.realpath(candidate)
            if real in seen:
                continue
            seen.add(real)
            if hit := check(candidate, "PATH"):
                return hit
    if not seen:
        tried.append(f"{name} on PATH: none")
    versions = _pyenv_root() / "versions"
    matches = sorted(
        (p for p in versions.glob(f"{version}*") if (p / "bin" / name).is_file()),
        key=lambda p: _version_key(p.name),
        reverse=True,
    )
    for match in matches:
        if hit := check(str(match / "bin" / name), "pyenv"):
            return hit
    if not matches:
        tried.append(f"pyenv: no {versions}/{version}*/bin/{name}")
    uv = shutil.which("uv")
    if uv is None:
        tried.append("uv: not installed")
    else:
        try:
            proc = subprocess.run(
                [uv, "python", "find", version],
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/",  # not a project's .venv of wherever mlayer runs
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"uv python find {version}: {exc}")
        else:
            path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            if proc.returncode == 0 and path:
                if hit := check(path, "uv"):
                    return hit
            else:
                tried.append(f"uv python find {version}: none")
    return InterpreterSearch(version, None, None, tuple(tried))


def find_interpreter(target: Target, explicit: str | None = None) -> str | None:
    """The path of an interpreter of the target's Python version, None when none is found
    (see :func:`locate_interpreter`).

    Raises:
        ConfigError: ``explicit`` is not an interpreter of the target version.
    """
    return locate_interpreter(target.python_version, explicit).path
