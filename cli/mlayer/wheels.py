"""The pins' wheels for a target: which runtime they resolve for, installing them, and the
error that names the way out when a pin has no wheel.

Installs run ``scripts/get-layer-package.sh install`` with mlayer's own pinned pip
(:mod:`mlayer.build_pip`) and pip's cross-platform options for the target's ABI, CPU and
glibc (:meth:`mlayer.targets.Target.pip_target_args`).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import canonicalize_name

from mlayer.build_pip import PIP_VERSION, BuildPip, ensure_pip, reported_version
from mlayer.errors import BuildError
from mlayer.layer_script import output_tail, run_script
from mlayer.targets import RUNTIME_INFO, Target

Progress = Callable[[str], None]

NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)")
_FROM_VERSIONS = re.compile(
    r"Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)"
)


def no_wheel_error(
    output: str, target: Target, requirements: Path, pip: BuildPip | None
) -> BuildError | None:
    """Turn pip's "no matching distribution" into an error that names the way out (``pip``
    asks which other runtimes have a wheel; None leaves that out)."""
    match = NO_MATCH.search(output)
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


def install_with_pip(requirements: Path, target: Target, work: Path, pip: BuildPip) -> str:
    """Install the pins for ``target`` into ``work/python`` with mlayer's pip; its version.

    Raises:
        BuildError: a pin has no wheel for the target, or pip failed otherwise.
    """
    proc = run_script(
        ["install"],
        out=work,
        target=target,
        python=pip.python,
        extra=["--requirements", str(requirements.resolve()), "--pip", str(pip.home)],
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        error = no_wheel_error(output, target, requirements, pip)
        if error:
            raise error
        raise BuildError(
            f"pip could not install {requirements} for {target.describe()}:\n{output_tail(output)}"
        )
    ran = reported_version(proc.stdout)
    if ran != pip.version:
        raise BuildError(f"expected pip {pip.version} to install the layer, pip {ran} ran")
    return ran


def has_markers(requirements: Path) -> bool:
    """Whether a requirement line carries an environment marker (``; python_version < ...``)."""
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and ";" in line:
            return True
    return False
