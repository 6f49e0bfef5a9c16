"""The shadow layer's zip (docs/CONTRACTS.md, "Shadow scoring"): built from a model build,
and a model build back from it; and finding builds in ``layers/`` by sha256 or content.

``layers/shadow-<name>-v<N>.zip`` holds the model build's files under ``shadow/`` instead of
``model/`` (Lambda unpacks it into ``/opt/shadow``), with a ``.json`` beside it as every
build has: the model's manifest keys, the shadow zip's own ``sha256`` and sizes, the model's
``identity`` and the ``model_sha256`` of the zip it was made from. Both directions are
deterministic (:func:`mlayer.archive.rerooted_zip`), so the local runner finds a published
shadow layer by its sha256 as it finds any build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlayer.archive import rerooted_zip, sha256_file
from mlayer.contracts import model_identity
from mlayer.errors import BuildError
from mlayer.layers import Build, load_build, model_build_with

ROOT = "shadow/"
# Keys of a build's manifest measured from its own file: not carried from model to shadow.
_MEASURED = ("kind", "package", "sha256", "zip_bytes", "unzipped_bytes", "identity", "model_sha256")


def build_shadow(model: Build, directory: Path | None = None) -> Build:
    """The shadow zip of model layer build ``model``: ``shadow-<name>-v<N>.zip`` with its
    ``.json`` in ``directory`` (default: beside the model build), the same files under
    ``shadow/``. Deterministic (:func:`mlayer.archive.rerooted_zip`); one already made from
    the same model zip is kept as it is.

    Raises:
        BuildError: ``model`` is not a model layer zip (a stored model needs no shadow zip).
    """
    if model.kind != "model" or model.package != "layer":
        raise BuildError(f"{model.zip_path} is not a model layer zip; build one with build-model")
    path = (directory or model.zip_path.parent) / f"shadow-{model.name}-v{model.version}.zip"
    sidecar = path.with_suffix(".json")
    recorded = _read_json(sidecar)
    if (
        recorded is not None
        and recorded.get("model_sha256") == model.sha256
        and path.is_file()
        and sha256_file(path) == recorded.get("sha256")
    ):
        return _shadow_build(path, recorded)
    result = rerooted_zip(model.zip_path, path, "model/", ROOT)
    manifest = {
        **{k: v for k, v in model.manifest.items() if k not in _MEASURED},
        "kind": "shadow",
        "sha256": result.sha256,
        "zip_bytes": result.zip_bytes,
        "unzipped_bytes": result.unzipped_bytes,
        "identity": model.identity,
        "model_sha256": model.sha256,
    }
    sidecar.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return _shadow_build(path, manifest)


def model_build_from_shadow(shadow: Build) -> Build:
    """The model layer zip rebuilt from shadow zip ``shadow``: ``model-<name>-v<N>.zip`` (and
    its ``.json``) beside it, the same files under ``model/``, byte for byte the model build
    the shadow was made from when that was written by build-model.

    Raises:
        BuildError: a different model build already has that name.
    """
    name, version = shadow.manifest.get("name"), shadow.manifest.get("version")
    path = shadow.zip_path.with_name(f"model-{name}-v{version}.zip")
    if path.exists():
        existing = load_build(path)
        if existing.identity == shadow.identity:
            return existing
        raise BuildError(
            f"{path} holds another model than the shadow {shadow.zip_path.name}; move it away "
            "so the shadow's model can be rebuilt there, or pass --layers-dir"
        )
    result = rerooted_zip(shadow.zip_path, path, ROOT, "model/")
    manifest = {
        **{k: v for k, v in shadow.manifest.items() if k not in _MEASURED},
        "kind": "model",
        "sha256": result.sha256,
        "zip_bytes": result.zip_bytes,
        "unzipped_bytes": result.unzipped_bytes,
    }
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return load_build(path)


def find_model_build(
    dirs: Iterable[Path], sha256: str | None, identity: str | None
) -> Build | None:
    """The model build (layer zip or store archive) in ``dirs`` whose sha256 is ``sha256``,
    else whose model identity is ``identity``; None when there is none."""
    dirs = list(dirs)
    for directory in dirs:
        found = model_build_with(directory, sha256)
        path = _build_file(found[0]) if found else None
        if path is not None:
            return load_build(path)
    if not identity:
        return None
    for directory in dirs:
        for sidecar in sorted(directory.glob("model-*-v*.json")) if directory.is_dir() else []:
            data = _read_json(sidecar)
            if data is None or not isinstance(data.get("files") or data.get("set"), dict):
                continue
            path = _build_file(sidecar)
            if path is not None and model_identity(data) == identity:
                build = load_build(path)
                if build.identity == identity:
                    return build
    return None


def find_shadow_build(
    dirs: Iterable[Path], sha256: str | None, identity: str | None
) -> Build | None:
    """The shadow zip in ``dirs`` whose sha256 is ``sha256`` or whose recorded identity is
    ``identity`` (and whose bytes still match its ``.json``); None when there is none."""
    for directory in dirs:
        for sidecar in sorted(directory.glob("shadow-*-v*.json")) if directory.is_dir() else []:
            data = _read_json(sidecar)
            if data is None or not (
                (sha256 and data.get("sha256") == sha256)
                or (identity and data.get("identity") == identity)
            ):
                continue
            path = sidecar.with_suffix(".zip")
            if path.is_file() and sha256_file(path) == data.get("sha256"):
                return _shadow_build(path, data)
    return None


def search_dirs(*dirs: Path | None) -> list[Path]:
    """``dirs`` without None and repeats, in order: where builds are looked for."""
    found: list[Path] = []
    for directory in dirs:
        if directory is not None and directory.resolve() not in [d.resolve() for d in found]:
            found.append(directory)
    return found


def _shadow_build(path: Path, manifest: dict[str, Any]) -> Build:
    return Build(
        kind="shadow",
        zip_path=path,
        sha256=str(manifest["sha256"]),
        zip_bytes=path.stat().st_size,
        unzipped_bytes=int(manifest["unzipped_bytes"]),
        manifest=manifest,
        identity=manifest.get("identity"),
    )


def _build_file(sidecar: Path) -> Path | None:
    for suffix in (".zip", ".tar"):
        if sidecar.with_suffix(suffix).is_file():
            return sidecar.with_suffix(suffix)
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_set(manifest: dict[str, Any]) -> bool:
    """Whether a build's manifest is a model set's (sets have no shadow)."""
    return isinstance(manifest.get("set"), dict)
