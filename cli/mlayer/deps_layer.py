"""The dependency layer: resolve wheels for the target, slim safely, add bytecode, verify, zip.

One build, whatever the method:

1. install: ``scripts/get-layer-package.sh install`` puts the pins' wheels for the runtime's
   ABI, CPU and glibc into ``python/`` (on the host with pip's cross-platform options for
   ``--method pip``, run by mlayer's own pinned pip, see :mod:`mlayer.build_pip`; inside a
   Lambda build image, with the image's pip, for ``--method docker``).
2. slim: rules remove what run time never needs (tests, sources, stubs, stale caches, console
   scripts), each reporting files and bytes; what run-time code imports from a ``tests``
   folder stays (numpy 2's ``numpy.testing`` imports ``numpy._core.tests._natype``), and
   ``*.dist-info`` and the vendored ``*.libs`` are never touched.
3. strip: ``strip --strip-unneeded`` on extension modules only, with a strip for the target
   CPU (stripping the vendored libraries breaks numpy, measured: "ELF load command ... not page-aligned").
4. bytecode + verify: with an interpreter of the target version (``--python``, the local one,
   ``python3.X`` on PATH, pyenv's, uv's, or the image's; it also runs pip in step 1), write unchecked-hash pycs for that
   version (by default *sourceless*: ``pkg/mod.pyc`` replaces ``pkg/mod.py``, see
   ``BYTECODE_MODES``), then import every top-level package with only the layer and the
   standard library on ``sys.path``: the layer is checked as it ships.
5. zip deterministically into ``layers/deps-<runtime>-<arch>.zip`` with its manifest, and
   check Lambda's size budget.

Identical inputs reuse a cached build (``~/.cache/mlayer``), so repeated builds are quick.
"""

from __future__ import annotations

import ast
import email.parser
import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from mlayer import __version__
from mlayer.archive import (
    Budget,
    BudgetPart,
    dir_size,
    iter_files,
    mb,
    upload_note,
    write_zip,
)
from mlayer.build_pip import PIP_VERSION, BuildPip, ensure_pip, reported_version
from mlayer.errors import BudgetError, BuildError, ConfigError, DockerError

Progress = Callable[[str], None]

SCRIPT_NAME = "get-layer-package.sh"
DEFAULT_IMAGE = "public.ecr.aws/sam/build-{runtime}:latest-{arch}"
METHODS = ("pip", "docker")
# sourceless (default): each module's .pyc replaces its .py; all: __pycache__ .pyc beside the
# sources; imports: __pycache__ .pyc only for the modules importing the packages loads.
BYTECODE_MODES = ("sourceless", "all", "imports", "none")

# Runtime -> (OS, newest glibc, deprecation date or None), as AWS lists them:
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
RUNTIME_INFO: dict[str, tuple[str, tuple[int, int], str | None]] = {
    "python3.14": ("Amazon Linux 2023", (2, 34), None),
    "python3.13": ("Amazon Linux 2023", (2, 34), None),
    "python3.12": ("Amazon Linux 2023", (2, 34), None),
    "python3.11": ("Amazon Linux 2", (2, 26), "2026-06-30"),
    "python3.10": ("Amazon Linux 2", (2, 26), "2026-06-30"),
}
# ELF e_machine values: how a .so says which CPU it is for.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
# What an interpreter without bytecode in the read-only /opt costs at each cold start, as
# measured for numpy + scipy + scikit-learn (bench/layer_size.py, README "Layers"): 2.9 s of
# imports instead of 0.9 s.
NO_BYTECODE_COST = "about 2 s more at every cold start (imports recompile scikit-learn each time)"


@dataclass(frozen=True)
class Target:
    """A Lambda runtime and architecture, and what wheels must match for it."""

    runtime: str
    arch: str

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_INFO:
            raise ConfigError(
                f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIME_INFO)}"
            )
        if self.arch not in ("x86_64", "arm64"):
            raise ConfigError(f"unknown arch {self.arch!r}; choose x86_64 or arm64")

    @property
    def python_version(self) -> str:
        return self.runtime.removeprefix("python")

    @property
    def minor(self) -> int:
        return int(self.python_version.split(".")[1])

    @property
    def abi(self) -> str:
        return f"cp3{self.minor}"

    @property
    def machine(self) -> str:
        return "aarch64" if self.arch == "arm64" else "x86_64"

    @property
    def glibc(self) -> tuple[int, int]:
        return RUNTIME_INFO[self.runtime][1]

    @property
    def glibc_text(self) -> str:
        return f"{self.glibc[0]}.{self.glibc[1]}"

    @property
    def os_name(self) -> str:
        return RUNTIME_INFO[self.runtime][0]

    @property
    def cache_tag(self) -> str:
        return f"cpython-3{self.minor}"

    @property
    def deprecated(self) -> str | None:
        return RUNTIME_INFO[self.runtime][2]

    @property
    def docker_platform(self) -> str:
        return "linux/arm64" if self.arch == "arm64" else "linux/amd64"

    def platforms(self) -> list[str]:
        """The manylinux tags the runtime accepts, oldest first (as the script prints them)."""
        tags: list[str] = []
        first = 17
        if self.machine == "x86_64":
            tags += ["manylinux1_x86_64", "manylinux2010_x86_64"]
            first = 5
        tags.append(f"manylinux2014_{self.machine}")
        tags += [f"manylinux_2_{i}_{self.machine}" for i in range(first, self.glibc[1] + 1)]
        return tags

    def pip_target_args(self) -> list[str]:
        args = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self.python_version,
            "--abi",
            self.abi,
        ]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args

    def describe(self) -> str:
        return (
            f"{self.runtime} {self.arch} ({self.abi}, manylinux up to glibc "
            f"{self.glibc[0]}.{self.glibc[1]}, {self.os_name})"
        )


@dataclass
class DepsBuildOptions:
    """Everything a dependency layer build depends on (all of it goes into the cache key)."""

    requirements: Path
    runtime: str | None = None
    arch: str = "x86_64"
    method: str = "pip"
    image: str | None = None
    python: str | None = None
    keep: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    strip: bool = True
    bytecode: str = "sourceless"
    keep_source: tuple[str, ...] = ()
    layers_dir: Path = Path("layers")
    cache_dir: Path | None = None
    use_cache: bool = True
    function_dir: Path | None = None


@dataclass
class DepsBuildResult:
    """What a build produced: the zip, its manifest, and a JSON-able report of each step."""

    zip_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    cached: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- paths, cache


def default_cache_dir() -> Path:
    """``$MLAYER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlayer``, else ``~/.cache/mlayer``."""
    if os.environ.get("MLAYER_CACHE_DIR"):
        return Path(os.environ["MLAYER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlayer"


def script_path() -> Path:
    """scripts/get-layer-package.sh of this checkout (the docker method mounts its folder)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / SCRIPT_NAME
    if not path.is_file():
        raise BuildError(
            f"{SCRIPT_NAME} not found at {path}; mlayer builds layers from a checkout of its "
            "repository (pip install -e .)"
        )
    return path


def _source_fingerprint() -> str:
    """Hash of the code that shapes a build, so a changed rule never reuses an old layer."""
    digest = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve()
    for path in (here, here.parent / "archive.py", here.parent / "build_pip.py", script_path()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _read_requirements(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(
            f"requirements file {path} not found; pass --requirements FILE with the pins "
            "(e.g. scikit-learn==1.7.2)"
        )
    return path.read_bytes()


# --------------------------------------------------------------------------- interpreters


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


def host_machine() -> str:
    machine = platform.machine().lower()
    return "aarch64" if machine in ("aarch64", "arm64") else machine


# --------------------------------------------------------------------------- install


_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)")
_FROM_VERSIONS = re.compile(
    r"Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)"
)


def _pip_tail(output: str, lines: int = 12) -> str:
    keep = [
        line
        for line in output.splitlines()
        if line.strip() and "is ignored: it is neither a file nor a directory" not in line
    ]
    return "\n".join(keep[-lines:])


def _run_script(
    steps: list[str], *, out: Path, target: Target, python: str, extra: Iterable[str] = ()
) -> subprocess.CompletedProcess[str]:
    command = [
        "bash",
        str(script_path()),
        *steps,
        "--out",
        str(out),
        "--runtime",
        target.runtime,
        "--arch",
        target.arch,
        "--glibc",
        target.glibc_text,
        "--python",
        python,
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True)


def _no_wheel_error(
    output: str, target: Target, requirements: Path, pip: BuildPip | None
) -> BuildError | None:
    """Turn pip's "no matching distribution" into an error that names the way out (``pip``
    asks which other runtimes have a wheel; None leaves that out)."""
    match = _NO_MATCH.search(output)
    if not match:
        return None
    requirement = match.group(1)
    name = re.split(r"[=<>!~\[]", requirement)[0]
    newest = None
    versions_match = _FROM_VERSIONS.search(output)
    if versions_match and versions_match.group(2).strip() != "none":
        from packaging.version import InvalidVersion, Version

        candidates = []
        for text in versions_match.group(2).split(","):
            try:
                version = Version(text.strip())
            except InvalidVersion:
                continue
            if not version.is_prerelease:
                candidates.append(version)
        if candidates:
            newest = str(max(candidates))
    pinned = _pinned_version(requirements, name)
    if pinned:
        requirement = f"{name}=={pinned}"
    others = _runtimes_with_wheel(name, pinned, target, pip) if pinned and pip else []
    fixes = []
    if newest:
        fixes.append(f"pin {name}=={newest} (the newest version with a wheel for this target)")
    else:
        fixes.append(f"no version of {name} has a wheel for this target")
    if others:
        fixes.append(f"or build for {', '.join(others)} (--runtime), which {requirement} supports")
    return BuildError(f"{requirement} has no wheel for {target.describe()}: {'; '.join(fixes)}")


def _pinned_version(requirements: Path, name: str) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement

    wanted = canonicalize_name(name)
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == wanted:
            specs = list(req.specifier)
            if len(specs) == 1 and specs[0].operator == "==":
                return specs[0].version
    return None


def _resolves(
    requirement_args: list[str], target: Target, workdir: Path, pip: BuildPip
) -> tuple[bool, str]:
    """Whether pip can resolve these requirements for ``target`` (a dry run, no install)."""
    command = [
        *pip.command(),
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--dry-run",
        "--ignore-installed",
        "--target",
        str(workdir / "dry-run"),
        *target.pip_target_args(),
        *requirement_args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr


def _runtimes_with_wheel(name: str, version: str, target: Target, pip: BuildPip) -> list[str]:
    found = []
    with tempfile.TemporaryDirectory(prefix="mlayer-probe-") as tmp:
        for runtime in RUNTIME_INFO:
            if runtime == target.runtime:
                continue
            ok, _ = _resolves(
                ["--no-deps", f"{name}=={version}"], Target(runtime, target.arch), Path(tmp), pip
            )
            if ok:
                found.append(runtime)
    return sorted(found, key=lambda r: int(r.split(".")[1]))


def default_runtime(
    requirements: Path,
    arch: str,
    cache_dir: Path,
    progress: Progress | None = None,
    python: str | None = None,
) -> str:
    """The newest Lambda runtime every pin has a wheel for (tried with mlayer's pip, run by
    ``python`` or this interpreter; the answer is cached per pip version).

    Raises:
        BuildError: no runtime resolves the pins, or mlayer's pip cannot be provisioned.
    """
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    # An answer from another pip may be wrong (pip < 24.2 refuses newer runtimes' pins).
    cache_file = cache_dir / "runtimes" / f"{digest}-pip{PIP_VERSION}-{arch}.json"
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text()).get("runtime")
        if cached in RUNTIME_INFO:
            return str(cached)
    pip = ensure_pip(cache_dir, python or sys.executable)
    tried = []
    with tempfile.TemporaryDirectory(prefix="mlayer-runtime-") as tmp:
        for runtime in sorted(RUNTIME_INFO, key=lambda r: -int(r.split(".")[1])):
            if progress:
                progress(f"checking that the pins resolve for {runtime} {arch}")
            ok, _ = _resolves(["-r", str(requirements)], Target(runtime, arch), Path(tmp), pip)
            if ok:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_text(json.dumps({"runtime": runtime}))
                return runtime
            tried.append(runtime)
    raise BuildError(
        f"the pins in {requirements} resolve for no Lambda runtime on {arch} "
        f"(tried {', '.join(tried)}); pass --runtime to see which package lacks a wheel"
    )


def _install_pip(requirements: Path, target: Target, work: Path, pip: BuildPip) -> str:
    """Install the pins for ``target`` into ``work/python`` with mlayer's pip; its version.

    Raises:
        BuildError: a pin has no wheel for the target, or pip failed otherwise.
    """
    proc = _run_script(
        ["install"],
        out=work,
        target=target,
        python=pip.python,
        extra=["--requirements", str(requirements.resolve()), "--pip", str(pip.home)],
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        error = _no_wheel_error(output, target, requirements, pip)
        if error:
            raise error
        raise BuildError(
            f"pip could not install {requirements} for {target.describe()}:\n{_pip_tail(output)}"
        )
    ran = reported_version(proc.stdout)
    if ran != pip.version:
        raise BuildError(f"expected pip {pip.version} to install the layer, pip {ran} ran")
    return ran


def _has_markers(requirements: Path) -> bool:
    """Whether a requirement line carries an environment marker (``; python_version < ...``)."""
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and ";" in line:
            return True
    return False


# --------------------------------------------------------------------------- docker


def ensure_docker() -> str:
    """The docker client's path, once ``docker info`` shows a running engine.

    Raises:
        DockerError: no docker client, or no engine behind it.
    """
    docker = shutil.which("docker")
    if docker is None:
        raise DockerError(
            "docker is not installed (not on PATH); use --method pip, which needs no Docker"
        )
    try:
        proc = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise DockerError("`docker info` did not answer in 60 s; use --method pip") from exc
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise DockerError(
            f"no Docker engine is running ({reason}); start Docker or use --method pip, "
            "which needs no Docker"
        )
    return docker


class DockerBuild:
    """Runs the script's steps inside the Lambda build image, with the work dir mounted."""

    SCRIPTS = "/mlayer/scripts"
    REQUIREMENTS = "/mlayer/requirements"
    WORK = "/mlayer/work"
    PIP_CACHE = "/mlayer/pip-cache"

    def __init__(
        self, docker: str, image: str, target: Target, work: Path, requirements: Path, cache: Path
    ) -> None:
        self.docker = docker
        self.image = image
        self.target = target
        self.work = work
        self.requirements = requirements.resolve()
        self.pip_cache = cache / "pip"
        self.pip_cache.mkdir(parents=True, exist_ok=True)

    def command(self, steps: list[str], extra: Iterable[str] = ()) -> list[str]:
        user: list[str] = []
        if hasattr(os, "getuid") and os.getuid() != 0:
            # Files written in the mounts stay the caller's, not root's.
            user = ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
        return [
            self.docker,
            "run",
            "--rm",
            "--platform",
            self.target.docker_platform,
            *user,
            "-e",
            f"PIP_CACHE_DIR={self.PIP_CACHE}",
            "-v",
            f"{script_path().parent}:{self.SCRIPTS}:ro",
            "-v",
            f"{self.requirements.parent}:{self.REQUIREMENTS}:ro",
            "-v",
            f"{self.work}:{self.WORK}",
            "-v",
            f"{self.pip_cache}:{self.PIP_CACHE}",
            self.image,
            "bash",
            f"{self.SCRIPTS}/{SCRIPT_NAME}",
            *steps,
            "--out",
            self.WORK,
            "--runtime",
            self.target.runtime,
            "--arch",
            self.target.arch,
            "--glibc",
            self.target.glibc_text,
            *extra,
        ]

    def run(self, steps: list[str], extra: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(steps, extra), capture_output=True, text=True)

    def install(self) -> str | None:
        """Install the pins in the image, with the image's own pip; that pip's version."""
        proc = self.run(
            ["install"], ["--requirements", f"{self.REQUIREMENTS}/{self.requirements.name}"]
        )
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            pip: BuildPip | None = None
            if _NO_MATCH.search(output):
                try:  # only to name the runtimes that have a wheel: optional
                    pip = ensure_pip(self.pip_cache.parent, sys.executable)
                except BuildError:
                    pip = None
            error = _no_wheel_error(output, self.target, self.requirements, pip)
            if error:
                raise error
            raise DockerError(
                f"the build in {self.image} failed (exit {proc.returncode}):\n{_pip_tail(output)}"
            )
        return reported_version(proc.stdout)


# --------------------------------------------------------------------------- slimming


@dataclass(frozen=True)
class SlimRule:
    """A removal rule: ``match`` gets a path relative to python/ (posix) and says remove."""

    name: str
    why: str
    match: Callable[[str], bool]
    guarded: bool = True  # built-in rules never touch dist-info, vendored libs, --keep paths


_SOURCE_SUFFIXES = (
    ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".pyx", ".pxd", ".pxi", ".tp",
    ".f", ".f90", ".for",
)  # fmt: skip


def _parts(rel: str) -> list[str]:
    return rel.split("/")


def _in_test_dir(rel: str) -> bool:
    parts = _parts(rel)
    return any(p in ("tests", "test") for p in parts[:-1]) or parts[-1] == "conftest.py"


BUILTIN_RULES: tuple[SlimRule, ...] = (
    SlimRule(
        "stale bytecode",
        "__pycache__ and .pyc from another interpreter; the target's are written later",
        lambda rel: "__pycache__" in _parts(rel) or rel.endswith((".pyc", ".pyo")),
    ),
    SlimRule(
        "tests and test data",
        "tests/ and test/ folders and conftest.py (what run-time code imports stays)",
        _in_test_dir,
    ),
    SlimRule(
        "C/C++/Cython/Fortran sources and headers",
        "only needed to compile extensions",
        lambda rel: rel.endswith(_SOURCE_SUFFIXES),
    ),
    SlimRule(
        "type stubs", ".pyi files, read by type checkers only", lambda rel: rel.endswith(".pyi")
    ),
    SlimRule(
        "static libraries",
        ".a archives, only needed to link extensions",
        lambda rel: rel.endswith(".a"),
    ),
    SlimRule(
        "console scripts",
        "bin/ (launchers pointing at the build machine's interpreter)",
        lambda rel: rel.startswith("bin/"),
    ),
)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    """A path matches a glob when it, or one of the folders it is in, matches."""
    parts = _parts(rel)
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def _protected(rel: str) -> bool:
    first = _parts(rel)[0]
    # dist-info: importlib.metadata (scikit-learn, joblib) reads METADATA; *.libs: vendored
    # shared libraries the extension modules load by exact name.
    return first.endswith(".dist-info") or first.endswith(".libs")


def _module_files(name: str) -> list[str]:
    base = name.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"]


def _imports_of(path: Path, rel: str) -> set[str]:
    """Absolute module names a source file imports (relative imports resolved)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=rel)
    except (SyntaxError, ValueError):
        return set()
    package_parts = _parts(rel)[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package_parts):
                    continue
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def slim(root: Path, keep: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Apply the slimming rules to ``root`` (the layer's python/), returning the report.

    The report has one entry per rule (files, bytes), the test modules kept because run-time
    code imports them, and what ``--keep`` saved.
    """
    keep, exclude = tuple(keep), tuple(exclude)
    rules = list(BUILTIN_RULES)
    if exclude:
        rules.append(
            SlimRule(
                "--exclude",
                "your patterns: " + ", ".join(exclude),
                lambda rel: _matches(rel, exclude),
                guarded=False,
            )
        )
    files = {path.relative_to(root).as_posix(): path for path in iter_files(root)}
    removal: dict[str, str] = {}
    kept_by_keep: list[str] = []
    for rel in files:
        for rule in rules:
            if rule.match(rel):
                if rule.guarded and (_protected(rel) or _matches(rel, keep)):
                    if _matches(rel, keep):
                        kept_by_keep.append(rel)
                    continue
                removal[rel] = rule.name
                break
    kept_for_imports = _keep_imported(files, removal)
    per_rule: dict[str, list[int]] = {rule.name: [0, 0] for rule in rules}
    for rel, rule_name in removal.items():
        size = files[rel].stat().st_size
        per_rule[rule_name][0] += 1
        per_rule[rule_name][1] += size
        files[rel].unlink()
    _prune_empty_dirs(root)
    records_before = _records_bytes(root)
    _drop_removed_from_records(root)
    return {
        "rules": [
            {
                "rule": rule.name,
                "why": rule.why,
                "files": per_rule[rule.name][0],
                "bytes": per_rule[rule.name][1],
            }
            for rule in rules
        ],
        "kept_for_imports": sorted(kept_for_imports),
        "kept_by_keep": len(kept_by_keep),
        "removed_files": sum(v[0] for v in per_rule.values()),
        "removed_bytes": sum(v[1] for v in per_rule.values()),
        # the RECORD rows of removed files, dropped
        "records_trimmed_bytes": records_before - _records_bytes(root),
    }


def _records_bytes(root: Path) -> int:
    return sum(record.stat().st_size for record in root.glob("*.dist-info/RECORD"))


def _keep_imported(files: dict[str, Path], removal: dict[str, str]) -> list[str]:
    """Take back from ``removal`` every module that kept code imports (to a fixed point)."""
    restored: list[str] = []
    queue = [rel for rel in files if rel.endswith(".py") and rel not in removal]
    seen: set[str] = set()
    while queue:
        rel = queue.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for name in _imports_of(files[rel], rel):
            parts = name.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            for i in range(1, len(parts) + 1):
                for candidate in _module_files(".".join(parts[:i])):
                    if candidate in removal and removal[candidate] != "--exclude":
                        del removal[candidate]
                        restored.append(candidate)
                        queue.append(candidate)
    return restored


def _drop_removed_from_records(root: Path) -> None:
    """Keep each RECORD true to the layer: drop the rows of files no longer in it.

    Besides honesty (importlib.metadata.files()), this matters for determinism: the rows
    of removed console scripts hash launchers that name the build machine's interpreter.
    """
    for record in sorted(root.glob("*.dist-info/RECORD")):
        text = record.read_text(encoding="utf-8", errors="surrogateescape")
        kept = []
        for line in text.splitlines(keepends=True):
            rel = line.split(",", 1)[0].strip('"')
            target = os.path.normpath(root / rel)
            inside = target.startswith(str(root) + os.sep)
            if rel and (not inside or not os.path.exists(target)):
                continue
            kept.append(line)
        record.write_text("".join(kept), encoding="utf-8", errors="surrogateescape")


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda t: -len(t[0])):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()


# --------------------------------------------------------------------------- strip


def elf_machine(path: Path) -> int | None:
    """The ELF e_machine of a file (62 x86-64, 183 AArch64), None if not ELF."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    if header[5] == 1:
        return int.from_bytes(header[18:20], "little")
    return int.from_bytes(header[18:20], "big")


def extension_modules(root: Path) -> list[Path]:
    """Python extension modules (``*.cpython-*.so``, ``*.abi3.so``), vendored libs excluded."""
    found = []
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        if _protected(rel):
            continue
        if re.search(r"\.(cpython-[^/]+|abi3)\.so$", rel):
            found.append(path)
    return found


def find_strip(machine: str) -> str | None:
    """A strip that understands ``machine`` binaries: the host's own when the CPU matches,
    else a cross binutils (``aarch64-linux-gnu-strip``) or llvm-strip."""
    candidates = [f"{machine}-linux-gnu-strip"]
    if host_machine() == machine:
        candidates.insert(0, "strip")
    candidates.append("llvm-strip")
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def strip_extensions(root: Path, target: Target) -> dict[str, Any]:
    """``strip --strip-unneeded`` every extension module built for the target CPU."""
    modules = extension_modules(root)
    wrong = [
        p.relative_to(root).as_posix()
        for p in modules
        if elf_machine(p) not in (None, ELF_MACHINES[target.machine])
    ]
    report: dict[str, Any] = {
        "tool": None, "files": 0, "bytes_saved": 0, "skipped": None, "failed": [],
        "wrong_arch": wrong,
    }  # fmt: skip
    tool = find_strip(target.machine)
    if tool is None:
        package = "binutils-aarch64-linux-gnu" if target.machine == "aarch64" else "binutils"
        report["skipped"] = (
            f"no strip for {target.machine} binaries on this {host_machine()} machine "
            f"(install {package}, or llvm-strip); extension modules left unstripped "
            "(about 13 MB larger unzipped)"
        )
        return report
    report["tool"] = tool
    candidates = [p for p in modules if elf_machine(p) == ELF_MACHINES[target.machine]]
    before = sum(p.stat().st_size for p in candidates)
    for start in range(0, len(candidates), 64):
        batch = candidates[start : start + 64]
        proc = subprocess.run(
            [tool, "--strip-unneeded", *map(str, batch)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            # strip rewrites through a temporary file: a failed file keeps its bytes.
            for path in batch:
                one = subprocess.run(
                    [tool, "--strip-unneeded", str(path)], capture_output=True, text=True
                )
                if one.returncode != 0:
                    report["failed"].append(path.relative_to(root).as_posix())
    report["files"] = len(candidates) - len(report["failed"])
    report["bytes_saved"] = before - sum(p.stat().st_size for p in candidates)
    return report


# --------------------------------------------------------------------------- metadata


def installed_packages(root: Path) -> dict[str, str]:
    """{distribution name: version} from the layer's ``*.dist-info/METADATA``."""
    packages: dict[str, str] = {}
    parser = email.parser.HeaderParser()
    for metadata in sorted(root.glob("*.dist-info/METADATA")):
        headers = parser.parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
        if headers.get("Name") and headers.get("Version"):
            packages[str(canonicalize_name(headers["Name"]))] = headers["Version"]
    return packages


def package_sizes(root: Path) -> dict[str, int]:
    """Unzipped bytes per distribution, from each dist-info RECORD (vendored libs included)."""
    owner: dict[str, str] = {}
    parser = email.parser.HeaderParser()
    for info in sorted(root.glob("*.dist-info")):
        metadata = info / "METADATA"
        name = info.name.split("-")[0]
        if metadata.is_file():
            name = parser.parsestr(metadata.read_text(errors="replace")).get("Name") or name
        record = info / "RECORD"
        if record.is_file():
            for line in record.read_text(errors="replace").splitlines():
                rel = line.rsplit(",", 2)[0]
                owner[os.path.normpath(rel)] = str(canonicalize_name(name))
    sizes: dict[str, int] = {}
    for path in iter_files(root):
        rel = os.path.normpath(path.relative_to(root).as_posix())
        if rel in owner:
            name = owner[rel]
        else:
            # Bytecode written after install is not in RECORD: charge it to its source's owner.
            source = re.sub(r"__pycache__/([^/]+)\.cpython-\d+\.pyc$", r"\1.py", rel)
            name = owner.get(source, "(other)")
        sizes[name] = sizes.get(name, 0) + path.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- budget


def function_size(function_dir: Path | None) -> int:
    """Unzipped size of the function code as deploy-function zips it (no caches, no tests)."""
    if function_dir is None or not function_dir.is_dir():
        return 0
    total = 0
    for path in iter_files(function_dir):
        rel = path.relative_to(function_dir).as_posix()
        if "__pycache__" in rel or _in_test_dir(rel) or rel.endswith(".pyc"):
            continue
        total += path.stat().st_size
    return total


def newest_model_manifest(layers_dir: Path) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for path in layers_dir.glob("model-*-v*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == "model" and (
            best is None or int(data.get("version", 0)) > int(best.get("version", 0))
        ):
            best = data
    return best


def deps_budget(unzipped: int, function_dir: Path | None, layers_dir: Path) -> Budget:
    parts = [BudgetPart("dependency layer", unzipped)]
    notes = []
    fn = function_size(function_dir)
    if fn:
        parts.append(BudgetPart("function", fn))
    model = newest_model_manifest(layers_dir)
    if model:
        parts.append(
            BudgetPart(
                f"model layer {model.get('name')} v{model.get('version')}",
                int(model.get("unzipped_bytes", 0)),
            )
        )
    else:
        notes.append("no model layer built yet: its size will count against the same 250 MB")
    return Budget(parts=parts, notes=notes)


def _budget_error(budget: Budget, sizes: dict[str, int]) -> BudgetError:
    biggest = ", ".join(f"{name} {mb(size)}" for name, size in list(sizes.items())[:5])
    return BudgetError(
        f"over Lambda's 250 MB unzipped limit by {mb(budget.over_by)}: {budget.describe()}. "
        f"Biggest packages in the layer: {biggest}. Drop packages from the requirements, "
        "or --exclude parts of them the function never imports"
    )


# --------------------------------------------------------------------------- the build


def _cache_key(
    options: DepsBuildOptions,
    target: Target,
    requirements: bytes,
    python: str | None,
    image: str | None,
) -> str:
    parts = {
        "requirements_sha256": hashlib.sha256(requirements).hexdigest(),
        "runtime": target.runtime,
        "arch": target.arch,
        "method": options.method,
        "image": image,
        "keep": sorted(options.keep),
        "exclude": sorted(options.exclude),
        "strip": options.strip,
        "strip_tool": find_strip(target.machine) if options.strip else None,
        "bytecode": options.bytecode,
        "keep_source": sorted(options.keep_source),
        "python": interpreter_version(python) if python else None,
        # the docker method uses the image's pip, which the image name stands for
        "pip": PIP_VERSION if options.method == "pip" else None,
        "code": _source_fingerprint(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _layer_names(target: Target) -> str:
    return f"deps-{target.runtime}-{target.arch}"


def build_deps(options: DepsBuildOptions, progress: Progress | None = None) -> DepsBuildResult:
    """Build the dependency layer zip and manifest under ``options.layers_dir``.

    Raises:
        ConfigError: bad requirements path, runtime, ``--python``, pattern.
        BuildError: a pin has no wheel for the target, an import fails in the layer.
        DockerError: ``--method docker`` without a running Docker engine.
        BudgetError: the layer (with the function and model layer) is over 250 MB unzipped.
    """
    started = time.monotonic()
    say = progress or (lambda message: None)
    if options.method not in METHODS:
        raise ConfigError(f"unknown method {options.method!r}; choose pip or docker")
    if options.bytecode not in BYTECODE_MODES:
        raise ConfigError(
            f"unknown bytecode mode {options.bytecode!r}; choose {', '.join(BYTECODE_MODES)}"
        )
    if options.keep_source and options.bytecode != "sourceless":
        raise ConfigError(
            f"--keep-source only applies to --bytecode sourceless (with --bytecode "
            f"{options.bytecode} every .py is kept)"
        )
    requirements_bytes = _read_requirements(options.requirements)
    cache_dir = options.cache_dir or default_cache_dir()
    runtime = options.runtime or default_runtime(
        options.requirements, options.arch, cache_dir, progress, options.python
    )
    target = Target(runtime, options.arch)
    warnings_: list[str] = []
    if target.deprecated:
        warnings_.append(
            f"Lambda deprecated {target.runtime} on {target.deprecated} (Amazon Linux 2): "
            "it gets no more security patches, and Lambda later blocks creating and then "
            "updating functions on it; prefer python3.12 or newer"
        )
    image = None
    docker = None
    if options.method == "docker":
        docker = ensure_docker()
        image = options.image or DEFAULT_IMAGE.format(runtime=target.runtime, arch=target.arch)
        # the image's own interpreter is the target's
        search = InterpreterSearch(target.python_version, "python", f"the image {image}")
    else:
        if options.image:
            raise ConfigError("--image only applies to --method docker")
        search = locate_interpreter(target.python_version, options.python)
    python = search.path

    key = _cache_key(options, target, requirements_bytes, python if docker is None else None, image)
    cache_entry = cache_dir / "deps" / key
    layers_dir = options.layers_dir
    zip_path = layers_dir / f"{_layer_names(target)}.zip"
    manifest_path = layers_dir / f"{_layer_names(target)}.json"

    if options.use_cache and (cache_entry / "report.json").is_file():
        say("reusing the cached build (same requirements, target and options)")
        report = json.loads((cache_entry / "report.json").read_text())
        manifest = json.loads((cache_entry / "manifest.json").read_text())
        budget = deps_budget(manifest["unzipped_bytes"], options.function_dir, layers_dir)
        if not budget.fits:
            raise _budget_error(budget, report.get("package_sizes", {}))
        layers_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache_entry / "layer.zip", zip_path)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        report["budget"] = _budget_report(budget)
        return DepsBuildResult(
            zip_path,
            manifest_path,
            manifest,
            report,
            cached=True,
            seconds=time.monotonic() - started,
            warnings=warnings_ + report.get("warnings", []),
            notes=_notes(report, manifest, budget),
        )

    with tempfile.TemporaryDirectory(prefix="mlayer-deps-") as tmp:
        work = Path(tmp)
        layer = work / "python"
        docker_build = None
        pip_report: dict[str, Any]
        if docker is not None and image is not None:
            say(f"installing wheels for {target.describe()} (docker, the image's pip)")
            docker_build = DockerBuild(docker, image, target, work, options.requirements, cache_dir)
            pip_report = {"version": docker_build.install(), "source": f"the image {image}"}
        else:
            # The target's interpreter runs pip when there is one: pip evaluates environment
            # markers (python_version < "3.12") for the interpreter running it, whatever
            # --python-version says (pip 26.3, checked).
            runner = python or sys.executable
            pip = ensure_pip(cache_dir, runner)
            say(f"installing wheels for {target.describe()} with {pip.describe()}")
            version = _install_pip(options.requirements, target, work, pip)
            runner_version = interpreter_version(runner)
            pip_report = {
                "version": version,
                "source": "mlayer",
                "path": str(pip.home),
                "python": runner,
                "python_version": runner_version,
            }
            if runner_version != target.python_version and _has_markers(options.requirements):
                warnings_.append(
                    f"{options.requirements} has environment markers: pip evaluated them for "
                    f"Python {runner_version} (the interpreter running it), not "
                    f"{target.python_version}; pass --python PATH to a Python "
                    f"{target.python_version} to evaluate them for the target"
                )
        packages = installed_packages(layer)
        unslimmed, unslimmed_files = dir_size(layer)

        say("slimming")
        slim_report = slim(layer, options.keep, options.exclude)
        strip_report: dict[str, Any] = {"skipped": "--no-strip", "files": 0, "bytes_saved": 0}
        if options.strip:
            say("stripping extension modules")
            strip_report = strip_extensions(layer, target)
            if strip_report.get("skipped"):
                warnings_.append(strip_report["skipped"])
        if strip_report.get("wrong_arch"):
            raise BuildError(
                f"extension modules built for another CPU than {target.machine}: "
                f"{', '.join(strip_report['wrong_arch'][:5])}; a wheel for the wrong platform "
                "was installed (check the requirements for local paths or URLs)"
            )

        verify_report, bytecode_report = _verify_and_compile(
            options, target, search, layer, work, docker_build, say
        )
        if verify_report.get("skipped"):
            warnings_.append(f"imports not verified: {verify_report['skipped']}")
        if options.bytecode == "none":
            warnings_.append(
                f"the layer ships WITHOUT bytecode (--bytecode none): {NO_BYTECODE_COST}"
            )
        elif bytecode_report.get("skipped"):
            kept = " and with every .py source" if options.bytecode == "sourceless" else ""
            warnings_.append(
                f"the layer ships WITHOUT bytecode{kept} ({bytecode_report['skipped']}): "
                f"{NO_BYTECODE_COST}; pass --python PATH to a Python {target.python_version} "
                "(or install one with pyenv or uv), or use --method docker"
            )

        sizes = package_sizes(layer)
        unzipped, _files = dir_size(layer)
        budget = deps_budget(unzipped, options.function_dir, layers_dir)
        if not budget.fits:
            raise _budget_error(budget, sizes)

        say("writing the zip")
        staged = work / "layer.zip"
        result = write_zip(layer, staged, prefix="python")
        manifest = {
            "kind": "deps",
            "runtime": target.runtime,
            "arch": target.arch,
            "sha256": result.sha256,
            "zip_bytes": result.zip_bytes,
            "unzipped_bytes": result.unzipped_bytes,
            "files": result.files,
            "packages": packages,
            "bytecode": bool(bytecode_report.get("files")),
            "bytecode_mode": bytecode_report["mode"],
            "method": options.method,
            "pip": pip_report["version"],
            "requirements_sha256": hashlib.sha256(requirements_bytes).hexdigest(),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "image": image,
            "python_version": target.python_version,
            "verified": bool(verify_report.get("imported")) and not verify_report.get("failed"),
            "mlayer_version": __version__,
        }
        report = {
            "target": {
                "runtime": target.runtime,
                "arch": target.arch,
                "abi": target.abi,
                "glibc": target.glibc_text,
                "platforms": target.platforms(),
            },
            "method": options.method,
            "image": image,
            "pip": pip_report,
            "installed": {"bytes": unslimmed, "files": unslimmed_files},
            "slimming": slim_report,
            "strip": strip_report,
            "bytecode": bytecode_report,
            "verify": {k: v for k, v in verify_report.items() if k != "loaded"},
            "package_sizes": sizes,
            "warnings": [w for w in warnings_ if not w.startswith("Lambda deprecated")],
        }
        # --no-cache skips reusing a build, not remembering this one.
        cache_entry.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staged, cache_entry / "layer.zip")
        (cache_entry / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        # report.json last: its presence marks a complete entry
        (cache_entry / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        layers_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), zip_path)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    report["budget"] = _budget_report(budget)
    return DepsBuildResult(
        zip_path,
        manifest_path,
        manifest,
        report,
        cached=False,
        seconds=time.monotonic() - started,
        warnings=warnings_,
        notes=_notes(report, manifest, budget),
    )


def _budget_report(budget: Budget) -> dict[str, Any]:
    return {
        "limit": budget.limit,
        "total": budget.total,
        "parts": [{"name": n, "bytes": b, "percent": round(p, 1)} for n, b, p in budget.shares()],
        "notes": budget.notes,
    }


def _notes(report: dict[str, Any], manifest: dict[str, Any], budget: Budget) -> list[str]:
    notes = [budget.describe()]
    upload = upload_note(int(manifest["zip_bytes"]), "dependency layer")
    if upload:
        notes.append(upload)
    notes += budget.notes
    return notes


def _foreign(target: Target) -> str:
    return (
        f"this machine is {host_machine()}, the layer is for {target.machine}: its extension "
        "modules cannot load here"
    )


def _verify_and_compile(
    options: DepsBuildOptions,
    target: Target,
    search: InterpreterSearch,
    layer: Path,
    work: Path,
    docker_build: DockerBuild | None,
    say: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the target's bytecode and verify imports, in the order the mode needs.

    ``imports`` compiles what the import check loaded, so it verifies first; the other
    modes compile first, so the check imports the layer as it ships (a sourceless module
    that needed its source fails here, not in Lambda).
    """
    python = search.path
    can_import = docker_build is not None or host_machine() == target.machine
    if python is None:
        reason = search.describe()
        verify = {"skipped": _foreign(target) if not can_import else reason}
        return verify, {
            "skipped": reason,
            "files": 0,
            "mode": "none",
            "requested": options.bytecode,
        }
    if options.bytecode == "imports":
        verify = _verify(options, target, python, work, docker_build, can_import, say)
        if not verify.get("loaded"):
            raise ConfigError(
                "--bytecode imports needs the import check, which cannot run for this target "
                "here; use --bytecode sourceless or all"
            )
        listing = work / "compile.txt"
        listing.write_text("\n".join(r for r in verify["loaded"] if r.endswith(".py")) + "\n")
        where = str(listing) if docker_build is None else f"{DockerBuild.WORK}/compile.txt"
        bytecode = _compile(
            options, target, search, layer, work, docker_build, say, ["--compile-list", where]
        )
        return verify, bytecode
    if options.bytecode == "none":
        verify = _verify(options, target, python, work, docker_build, can_import, say)
        return verify, {"skipped": "--bytecode none", "files": 0, "mode": "none"}
    bytecode = _compile(options, target, search, layer, work, docker_build, say, [])
    verify = _verify(options, target, python, work, docker_build, can_import, say)
    return verify, bytecode


def _verify(
    options: DepsBuildOptions,
    target: Target,
    python: str,
    work: Path,
    docker_build: DockerBuild | None,
    can_import: bool,
    say: Progress,
) -> dict[str, Any]:
    """Import every top-level package with only the layer and the standard library."""
    if not can_import:
        return {"skipped": _foreign(target)}
    trace = work / "trace.json"
    say(f"verifying imports with Python {target.python_version}")
    if docker_build is not None:
        proc = docker_build.run(["verify"], ["--trace", f"{DockerBuild.WORK}/trace.json"])
    else:
        proc = _run_script(
            ["verify"], out=work, target=target, python=python, extra=["--trace", str(trace)]
        )
    if not trace.is_file():
        raise BuildError(f"the import check could not run:\n{_pip_tail(proc.stdout + proc.stderr)}")
    verify: dict[str, Any] = json.loads(trace.read_text())
    if verify["failed"]:
        lines = "; ".join(
            f"{name}: {error.splitlines()[-1]}" for name, error in verify["failed"].items()
        )
        fixes = "a wheel is for the wrong platform or a slimming rule removed something needed "
        fixes += "(--keep PATTERN keeps it)"
        if options.bytecode == "sourceless":
            fixes += (
                ", or a module needs its .py source (--keep-source PATTERN keeps it, "
                "--bytecode all keeps every source)"
            )
        raise BuildError(
            f"importing the layer's packages with only the layer and the standard library "
            f"on sys.path failed ({lines}); {fixes}"
        )
    return verify


def _compile(
    options: DepsBuildOptions,
    target: Target,
    search: InterpreterSearch,
    layer: Path,
    work: Path,
    docker_build: DockerBuild | None,
    say: Progress,
    extra: list[str],
) -> dict[str, Any]:
    """Run the script's compile step for the mode; report what it wrote and removed."""
    mode = options.bytecode
    script_mode = "sourceless" if mode == "sourceless" else "all"
    args = ["--bytecode", script_mode, *extra]
    for glob in options.keep_source:
        args += ["--keep-source", glob]
    sources = {p: p.stat().st_size for p in layer.rglob("*.py")} if mode == "sourceless" else {}
    records_before = _records_bytes(layer)
    say(f"compiling bytecode for {target.cache_tag} ({mode})")
    if docker_build is not None:
        proc = docker_build.run(["compile"], args)
    else:
        assert search.path is not None
        proc = _run_script(["compile"], out=work, target=target, python=search.path, extra=args)
    if proc.returncode != 0:
        raise BuildError(f"compiling bytecode failed:\n{_pip_tail(proc.stdout + proc.stderr)}")
    pycs = [p for p in layer.rglob("*.pyc")]
    removed = [p for p in sources if not p.exists()]
    return {
        "mode": mode,
        "cache_tag": target.cache_tag,
        "files": len(pycs),
        "bytes": sum(p.stat().st_size for p in pycs),
        "sources_removed": len(removed),
        "sources_removed_bytes": sum(sources[p] for p in removed),
        "sources_kept": len(sources) - len(removed),
        # RECORD rows of replaced sources name the .pyc, without hash and size
        "records_trimmed_bytes": records_before - _records_bytes(layer),
        "keep_source": list(options.keep_source),
        "interpreter": search.path,
        "interpreter_source": search.source,
        "interpreter_skipped": list(search.tried),
        "skipped": None,
    }
