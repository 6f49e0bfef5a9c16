"""The Docker method: the build script's steps inside a Lambda build image.

``--method docker`` runs ``scripts/get-layer-package.sh`` in
``public.ecr.aws/sam/build-<runtime>:latest-<arch>`` with the work dir mounted, so pip, the
bytecode and the import check are the image's (the runtime's own Python).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from mlayer.build_pip import BuildPip, ensure_pip, reported_version
from mlayer.errors import BuildError, DockerError
from mlayer.layer_script import SCRIPT_NAME, output_tail, script_path
from mlayer.targets import Target
from mlayer.wheels import NO_MATCH, no_wheel_error

DEFAULT_IMAGE = "public.ecr.aws/sam/build-{runtime}:latest-{arch}"


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
            if NO_MATCH.search(output):
                try:  # only to name the runtimes that have a wheel: optional
                    pip = ensure_pip(self.pip_cache.parent, sys.executable)
                except BuildError:
                    pip = None
            error = no_wheel_error(output, self.target, self.requirements, pip)
            if error:
                raise error
            raise DockerError(
                f"the build in {self.image} failed (exit {proc.returncode}):\n{output_tail(output)}"
            )
        return reported_version(proc.stdout)
