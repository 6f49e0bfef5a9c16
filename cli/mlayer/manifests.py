"""The dependency layer's manifest: the one place it is written and read.

``mlayer build-deps`` writes ``layers/deps-<runtime>-<arch>.json`` beside the zip: what the
layer is for, what it holds and how it was built. :class:`DepsManifest` is that file as a
type; :meth:`DepsManifest.load` reads every manifest mlayer has written (those from before
``bytecode_mode`` and ``pip`` were recorded too) and keeps keys it does not know, so writing
it back loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# What a manifest cannot do without: the layer's target and its zip's identity and sizes.
_REQUIRED = ("runtime", "arch", "sha256", "zip_bytes", "unzipped_bytes")


class ManifestError(ValueError):
    """A file that is not a dependency layer manifest (not JSON, or a required key missing)."""


@dataclass(frozen=True)
class DepsManifest:
    """A dependency layer build's manifest (``layers/deps-<runtime>-<arch>.json``)."""

    runtime: str
    arch: str
    sha256: str  # of the zip
    zip_bytes: int
    unzipped_bytes: int
    files: int = 0
    packages: dict[str, str] = field(default_factory=dict)  # canonical name -> version
    bytecode: bool = False  # whether the layer ships bytecode
    bytecode_mode: str | None = None  # sourceless, all, imports, none; None before it was kept
    method: str | None = None  # pip or docker
    pip: str | None = None  # the version of pip that installed the wheels
    requirements_sha256: str | None = None
    created: str | None = None  # UTC, 2026-11-23T06:00:00Z
    image: str | None = None  # the build image (--method docker)
    python_version: str | None = None  # the runtime's, 3.13
    verified: bool = False  # every package imported from the layer as it ships
    mlayer_version: str | None = None
    kind: str = "deps"
    extra: dict[str, Any] = field(default_factory=dict)  # keys this mlayer does not know

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepsManifest:
        """The manifest in ``data`` (a parsed manifest file).

        Raises:
            ManifestError: a required key is missing, or ``kind`` is not ``deps``.
        """
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ManifestError(f"no {', '.join(missing)}")
        if data.get("kind", "deps") != "deps":
            raise ManifestError(f"kind is {data.get('kind')!r}, not 'deps'")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: value for key, value in data.items() if key in known}
        extra = {key: value for key, value in data.items() if key not in known}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as it is written: ``kind`` first, then every field, then unknown keys."""
        values = asdict(self)
        extra = values.pop("extra")
        return {"kind": values.pop("kind"), **values, **extra}

    @classmethod
    def load(cls, path: Path) -> DepsManifest:
        """Read the manifest at ``path``.

        Raises:
            OSError: it cannot be read.
            ManifestError: it is not JSON, or not a dependency layer manifest.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ManifestError(f"{path} is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{path} is not a JSON object")
        try:
            return cls.from_dict(data)
        except ManifestError as exc:
            raise ManifestError(f"{path} is not a dependency layer manifest: {exc}") from exc

    def write(self, path: Path) -> None:
        """Write the manifest to ``path`` (indented JSON, as every build has)."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_deps_manifest(path: Path) -> DepsManifest | None:
    """The dependency layer manifest at ``path``, None when it is unreadable or another kind."""
    try:
        return DepsManifest.load(path)
    except (OSError, ManifestError):
        return None


def recorded_sha256(path: Path) -> str | None:
    """The zip's sha256 a build's manifest (deps or model) records, None when it has none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("sha256"), str):
        return data["sha256"]
    return None
