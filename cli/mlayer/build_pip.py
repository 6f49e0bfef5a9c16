"""The pip that builds dependency layers: one known version, provisioned once into the cache.

A layer build must not depend on the pip the user happens to have. pip before 24.2 checks a
package's Requires-Python against the interpreter running pip even with ``--python-version``
(pip 23.2 to 24.1, measured: ``Package 'numpy' requires a different Python: 3.11.7 not in
'>=3.12'`` for a python3.13 target), so a user on Python 3.11 with a venv's pip 23.2 could not
build for python3.12+ with numpy 2.3 or newer. mlayer therefore downloads one pinned pip wheel
(with whatever pip is at hand: any version can download a wheel), checks its sha256, unpacks it
into ``<cache>/pip-<version>/`` and runs that pip as ``PYTHON <cache>/pip-<version>/pip``, with
``PYTHON`` the interpreter the build chose (``--python``). The user's pip configuration (index,
certificates, proxies in pip.conf or ``PIP_*``) applies to both pips, as pip reads it itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlayer.errors import BuildError

# The newest pip release when pinned (2026-11). Why this one: pip >= 24.2 checks Requires-Python
# against --python-version (23.2 to 24.1 check the running interpreter, measured); 25.3 fixed
# CVE-2025-8869; 26.3 runs on Python >= 3.10, so every Lambda runtime's interpreter (3.10-3.14)
# and mlayer's own (3.11+) can run it. The sha256 is PyPI's file: a mirror serving other bytes
# is refused. Raise it deliberately (new version + hash) and the cache key changes with it.
PIP_VERSION = "26.3"
PIP_WHEEL = f"pip-{PIP_VERSION}-py3-none-any.whl"
PIP_SHA256 = "f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"
# The oldest pip whose cross-platform installs check Requires-Python against the target.
PIP_MINIMUM = (24, 2)

_VERSION_LINE = re.compile(r"^pip (\S+) from ", re.M)


@dataclass(frozen=True)
class BuildPip:
    """A pip to run for layer builds: where it is unpacked and which interpreter runs it."""

    version: str
    home: Path  # holds pip/ and pip-<version>.dist-info/
    python: str

    def command(self) -> list[str]:
        """The command line that runs this pip (pip's ``__main__`` puts ``home`` on sys.path,
        so the interpreter's own pip, if any, is never imported)."""
        return [self.python, str(self.home / "pip")]

    def describe(self) -> str:
        return f"pip {self.version} ({self.home}) run by {self.python}"


def pip_home(cache_dir: Path) -> Path:
    return cache_dir / f"pip-{PIP_VERSION}"


def _complete(home: Path) -> bool:
    return (home / "pip" / "__main__.py").is_file() and (
        home / f"pip-{PIP_VERSION}.dist-info" / "RECORD"
    ).is_file()


def reported_version(output: str) -> str | None:
    """The version in pip's ``--version`` line (``pip 26.3 from ... (python 3.13)``)."""
    match = _VERSION_LINE.search(output)
    return match.group(1) if match else None


def ensure_pip(cache_dir: Path, python: str) -> BuildPip:
    """mlayer's pip (``PIP_VERSION``) in ``cache_dir``, provisioned on first use, run by ``python``.

    The wheel comes from ``<cache_dir>/pip-<version>-py3-none-any.whl`` when present (how to
    provision offline), else is downloaded with the ``pip`` of mlayer's interpreter or of
    ``python``. Concurrent builds provision once (a file lock); a partial copy is never used.

    Raises:
        BuildError: no pip to download with, the index unreachable, a wrong sha256, or the
            unpacked pip does not run with ``python``.
    """
    home = pip_home(cache_dir)
    if not _complete(home):
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / f"pip-{PIP_VERSION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _complete(home):
                _provision(cache_dir, home, python)
    return BuildPip(PIP_VERSION, home, python)


def _offline_fix(cache_dir: Path) -> str:
    return (
        f"run the build once where the package index is reachable, or download the wheel "
        f"elsewhere (python -m pip download --no-deps pip=={PIP_VERSION}) and copy "
        f"{PIP_WHEEL} into {cache_dir}"
    )


def _provision(cache_dir: Path, home: Path, python: str) -> None:
    with tempfile.TemporaryDirectory(prefix=f".pip-{PIP_VERSION}-", dir=cache_dir) as tmp:
        staging = Path(tmp)
        wheel = cache_dir / PIP_WHEEL
        if not wheel.is_file():
            wheel = _download(staging / "wheel", python, cache_dir)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != PIP_SHA256:
            raise BuildError(
                f"{wheel} has sha256 {digest}, not PyPI's {PIP_SHA256} for pip {PIP_VERSION}; "
                "delete it (or check the index that served it) and retry"
            )
        unpacked = staging / "home"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        # It must run with the interpreter that will run it (pip 26 needs Python >= 3.10).
        proc = subprocess.run(
            [python, str(unpacked / "pip"), "--version"], capture_output=True, text=True
        )
        if proc.returncode != 0 or reported_version(proc.stdout) != PIP_VERSION:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
            raise BuildError(
                f"pip {PIP_VERSION} does not run with {python} ({'; '.join(tail)}); pip "
                f"{PIP_VERSION} needs Python 3.10 or newer: pass --python PATH to one"
            )
        if home.exists():  # a copy left incomplete by a killed build
            shutil.rmtree(home)
        unpacked.rename(home)


def _download(dest: Path, python: str, cache_dir: Path) -> Path:
    """Download the pinned pip wheel with the first interpreter that has a working pip."""
    tried = []
    for downloader in dict.fromkeys([sys.executable, python]):
        has_pip = subprocess.run(
            [downloader, "-m", "pip", "--version"], capture_output=True, text=True
        )
        if has_pip.returncode != 0:
            tried.append(f"{downloader} has no pip")
            continue
        proc = subprocess.run(
            [downloader, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--no-input", "--dest", str(dest),
             f"pip=={PIP_VERSION}"],
            capture_output=True, text=True,
        )  # fmt: skip
        wheel = dest / PIP_WHEEL
        if proc.returncode == 0 and wheel.is_file():
            return wheel
        lines = [
            line.strip()
            for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and "is ignored: it is neither a file nor a directory" not in line
        ]
        raise BuildError(
            f"could not download pip {PIP_VERSION}, which mlayer runs for every build so that "
            f"the pip you have does not matter ({downloader} -m pip download: "
            f"{lines[-1] if lines else f'exit {proc.returncode}'}); {_offline_fix(cache_dir)}"
        )
    raise BuildError(
        f"cannot provision pip {PIP_VERSION} into {pip_home(cache_dir)}: {'; '.join(tried)} "
        f"to download it with; install pip for {sys.executable} (python -m ensurepip), or "
        f"{_offline_fix(cache_dir)}"
    )
