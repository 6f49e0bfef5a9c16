"""``scripts/get-layer-package.sh``: the dependency layer build's steps as one shell script.

The script installs, compiles and verifies (``install``, ``compile``, ``verify``); mlayer runs
it on the host (here) or inside a Lambda build image (:mod:`mlayer.docker`), so both methods
do the same steps.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from mlayer.errors import BuildError
from mlayer.targets import Target

SCRIPT_NAME = "get-layer-package.sh"


def script_path() -> Path:
    """scripts/get-layer-package.sh of this checkout (the docker method mounts its folder)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / SCRIPT_NAME
    if not path.is_file():
        raise BuildError(
            f"{SCRIPT_NAME} not found at {path}; mlayer builds layers from a checkout of its "
            "repository (pip install -e .)"
        )
    return path


def output_tail(output: str, lines: int = 12) -> str:
    keep = [
        line
        for line in output.splitlines()
        if line.strip() and "is ignored: it is neither a file nor a directory" not in line
    ]
    return "\n".join(keep[-lines:])


def run_script(
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
