"""ruff and mypy are part of the test command, and clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "ruff", "check", "."], [sys.executable, "-m", "mypy"]],
    ids=["ruff", "mypy"],
)
def test_clean(command: list[str]) -> None:
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
