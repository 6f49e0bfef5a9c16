"""The dependency layer (requirements.txt) and the training environment (Pipfile) agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = str(req.specifier)
    return pins


def _pipfile() -> dict[str, str]:
    data = tomllib.loads((ROOT / "Pipfile").read_text())
    return {canonicalize_name(name): spec for name, spec in data["packages"].items()}


def test_every_requirement_is_pinned_exactly() -> None:
    for name, spec in _requirements().items():
        assert spec.startswith("==") and "," not in spec, (
            f"{name} must be pinned with ==, got {spec!r}"
        )


def test_pipfile_matches_requirements() -> None:
    assert _pipfile() == _requirements()
