"""Model sets, CLI side: ``publish-model PATH --set NAME`` builds the next set.

A set (docs/CONTRACTS.md, "Model sets") is a model directory holding ``set.json`` and one
subdirectory per member, each an ordinary model directory. The next set is the live one
(read back from its layer build in ``layers/``, its layer's content, or its stored
archive) with member ``NAME`` added or replaced by a fresh, gated and smoke-tested build; it
is smoke-tested as a whole by the real function (every member scores its own records) and
packaged like any model: a layer when it fits, else an archive for the S3 model store.
Publishing it is an ordinary rollout, so rollback moves the whole set.

The set's ``manifest.json`` (beside ``set.json``) is what ``layers.load_build`` and the
rollout read: its name and version, every file's sha256, and ``set`` (members with their
identities, field, default), from which the set's identity is computed.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer.archive import ZipResult, sha256_file, write_model_tar, write_zip
from mlayer.contracts import model_identity
from mlayer.errors import ConfigError
from mlayer.inventory import ModelRef
from mlayer.layers import Build, load_build, model_build_with

SET_FILE = "set.json"

Progress = Callable[[str], None]


@dataclass
class SetChange:
    """What ``publish-model --set`` assembled."""

    build: Build
    members: list[str]
    member: str
    replaced: bool  # the member existed in the live set
    base: str  # where the live set was read from, or "a new set"
    notes: list[str] = field(default_factory=list)


def unpack_live(
    lam: Any, s3: Any | None, live: ModelRef | None, layers_dir: Path, dest: Path
) -> str | None:
    """Unpack the live model into ``dest``; where it came from (None: no live model).

    From a local build with the same sha256, else the stored archive (S3), else the layer
    version's content (the presigned URL Lambda gives).

    Raises:
        ConfigError: the live model's content cannot be read here.
    """
    if live is None:
        return None
    local = _local_build(layers_dir, live.sha256)
    if local is not None:
        _unpack(local, dest)
        return str(local)
    stored = live.stored
    if stored is not None:
        if s3 is None:
            raise ConfigError("reading the live model set from the store needs --bucket")
        with tempfile.TemporaryDirectory(prefix="mlayer-set-") as tmp:
            archive = Path(tmp) / "live.tar"
            s3.download_file(stored.bucket, stored.key, str(archive))
            if sha256_file(archive) != stored.sha256:
                raise ConfigError(
                    f"{stored.location} does not match its sha256 ({stored.sha256[:12]}…): "
                    "the live set was changed in S3; publish each member again"
                )
            _unpack(archive, dest)
        return stored.location
    version = lam.get_layer_version_by_arn(Arn=live.arn)
    location = (version.get("Content") or {}).get("Location", "")
    if not location.startswith("https://"):
        raise ConfigError(
            f"the live model ({live.label}) cannot be read here: no build with its sha256 in "
            f"{layers_dir}/ and the endpoint does not serve layer content; run from the "
            "directory that holds the set's builds (--layers-dir)"
        )
    with tempfile.TemporaryDirectory(prefix="mlayer-set-") as tmp:
        archive = Path(tmp) / "live.zip"
        with urllib.request.urlopen(location, timeout=60) as response:
            archive.write_bytes(response.read())
        _unpack(archive, dest)
    return f"layer {live.location}"


def _local_build(layers_dir: Path, sha256: str | None) -> Path | None:
    found = model_build_with(layers_dir, sha256)
    if found is None:
        return None
    for suffix in (".zip", ".tar"):
        path = found[0].with_suffix(suffix)
        if path.is_file():
            return path
    return None


def _unpack(archive: Path, dest: Path) -> None:
    """A model layer zip (``model/...``) or a store archive, as a model directory."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".tar":
        with tarfile.open(archive, "r:") as tar:
            tar.extractall(dest, filter="data")
        return
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith("model/"):
                continue
            target = dest / info.filename[len("model/") :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def assemble(
    base: Path | None,
    member_build: Build,
    member: str,
    out: Path,
    *,
    name: str,
    version: int,
    field_name: str | None,
    default: str | None,
) -> tuple[list[str], bool, list[str]]:
    """Write the next set into ``out``: ``base``'s members (when it is a set) with ``member``
    added or replaced by ``member_build``. Returns (members, replaced, notes).

    Raises:
        ConfigError: a new set without a field, or a default that is not a member.
    """
    notes: list[str] = []
    old: dict[str, Any] = {}
    members: list[str] = []
    if base is not None and (base / SET_FILE).is_file():
        old = json.loads((base / SET_FILE).read_text(encoding="utf-8"))
        members = [str(m) for m in old.get("models") or []]
        for kept in members:
            if kept != member:
                shutil.copytree(base / kept, out / kept)
    elif base is not None:
        notes.append(
            "the live model is a single model, not a set: the new set replaces it (publish "
            "it into the set with --set NAME to keep serving it)"
        )
    replaced = member in members
    if not replaced:
        members.append(member)
    _unpack(member_build.zip_path, out / member)
    chosen_field = field_name or old.get("field")
    if not chosen_field:
        raise ConfigError(
            "a new model set needs --set-field FIELD: the record field whose value names the "
            "model that scores it (e.g. tenant)"
        )
    chosen_default = default if default is not None else old.get("default")
    if chosen_default is not None and chosen_default not in members:
        raise ConfigError(
            f"--set-default {chosen_default} is not a member of the set ({', '.join(members)})"
        )
    members.sort()
    spec = {
        "name": name,
        "version": version,
        "models": members,
        "field": chosen_field,
        "default": chosen_default,
    }
    (out / SET_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    identities = {m: model_identity(_manifest(out / m)) for m in members}
    # Every file of the set (the members' files and manifests, set.json); manifest.json is
    # written after, from this.
    files = {
        path.relative_to(out).as_posix(): sha256_file(path)
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "name": name,
        "version": version,
        "kind": "set",
        "set": {"members": identities, "field": chosen_field, "default": chosen_default},
        "files": files,
        "stages": [],
        "input": None,
        "labels": None,
        "examples": _examples(out, members, chosen_field),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return members, replaced, notes


def _manifest(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return data


def _examples(out: Path, members: list[str], field_name: str) -> list[dict[str, Any]]:
    """Records for every member: its examples (JSON objects) with the field naming it."""
    from mlayer.model_layer import sample_records

    records: list[dict[str, Any]] = []
    for member in members:
        meta = _manifest(out / member)
        chosen = [r for r in sample_records(meta, None) if isinstance(r, dict)]
        if not chosen:
            chosen = [
                r for r in sample_records({"input": meta["input"]}, None) if isinstance(r, dict)
            ]
        records += [{**record, field_name: member} for record in chosen[:3]]
    return records


def package(directory: Path, out: Path, *, store: bool) -> ZipResult:
    """The set as a layer zip (``model/...``) or, with ``store``, a store archive."""
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    if store:
        sha256, size = write_model_tar(directory, files, out)
        unpacked = sum((directory / f).stat().st_size for f in files)
        return ZipResult(out, sha256, size, unpacked, len(files))
    return write_zip([(directory / f, f"model/{f}") for f in files], out)


def write_build(
    directory: Path,
    layers_dir: Path,
    name: str,
    version: int,
    *,
    store: bool,
    smoke: dict[str, Any],
) -> Build:
    """Package the assembled set into ``layers/model-<name>-v<N>.zip|.tar`` with its sidecar
    manifest, and read it back as a publishable build."""
    layers_dir.mkdir(parents=True, exist_ok=True)
    path = layers_dir / f"model-{name}-v{version}{'.tar' if store else '.zip'}"
    result = package(directory, path, store=store)
    inner = _manifest(directory)
    sidecar = {
        "kind": "model",
        "package": "store" if store else "layer",
        "name": name,
        "version": version,
        "set": inner["set"],
        "files": inner["files"],
        "examples": inner["examples"],
        "sha256": result.sha256,
        "zip_bytes": result.zip_bytes,
        "unzipped_bytes": result.unzipped_bytes,
        "smoke_test": smoke,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return load_build(path)


def build_set(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    layer_name: str,
    alias: str | None,
    member_dir: Path,
    member: str,
    layers_dir: Path,
    field_name: str | None = None,
    default: str | None = None,
    store: str = "auto",
    bucket: str | None = None,
    runtime: str | None = None,
    arch: str | None = None,
    progress: Progress | None = None,
) -> SetChange:
    """Build the next version of the function's model set with ``member`` added or replaced.

    The member is built from ``member_dir`` as any model (gate, smoke test), the live set
    (the alias's, else $LATEST's) is read back, the next set is assembled, smoke-tested by
    the real function on every member's records, and packaged: a layer when dependency
    layer + function + set fit 250 MiB (and ``store`` is not "s3"), else a store archive.

    Raises:
        ConfigError: bad member name or set settings, or the live set cannot be read.
        BudgetError: too big for a layer with ``store == "layer"``.
        plus what build-model raises for the member.
    """
    from mlayer.archive import UNZIPPED_LIMIT, mb
    from mlayer.deps_layer import function_size
    from mlayer.errors import BudgetError
    from mlayer.inventory import FunctionVersion, ModelIndex, model_of
    from mlayer.lambda_api import get_alias, get_configuration
    from mlayer.layers import published_model_versions
    from mlayer.model_files import Overrides
    from mlayer.model_layer import (
        ModelBuildOptions,
        build_model,
        default_function_dir,
        find_deps_manifest,
        next_version,
        smoke_test_directory,
    )
    from mlayer.model_store import stored_versions

    say = progress or (lambda message: None)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", member):
        raise ConfigError(
            f"--set {member!r}: a member name is 1-64 letters, digits, '-', '_', '.', not "
            "starting with '.' or '-'"
        )
    qualifier = None
    if alias:
        current = get_alias(lam, function, alias)
        qualifier = str(current["FunctionVersion"]) if current else None
    config = get_configuration(lam, function, qualifier)
    models = ModelIndex(lam, layer_name, s3, [bucket] if bucket else [])
    live = model_of(models, FunctionVersion.of(qualifier or "$LATEST", config, layer_name))

    def published() -> list[int]:
        found = published_model_versions(lam, layer_name)
        return found + (stored_versions(s3, bucket, layer_name) if s3 and bucket else [])

    set_name = live.name if live is not None and live.name else f"{layer_name}-set"
    version = next_version(layers_dir, set_name, published)
    say(f"building member {member} from {member_dir}")
    member_result = build_model(
        ModelBuildOptions(
            model_dir=member_dir,
            layers_dir=layers_dir,
            runtime=runtime,
            arch=arch,
            version=version,
            overrides=Overrides(name=member),
        ),
        progress,
    )
    member_build = load_build(member_result.zip_path)
    with tempfile.TemporaryDirectory(prefix="mlayer-set-") as tmp:
        base = Path(tmp) / "live"
        where = unpack_live(lam, s3, live, layers_dir, base)
        is_set = where is not None and (base / SET_FILE).is_file()
        if is_set:
            set_name = str(json.loads((base / SET_FILE).read_text()).get("name") or set_name)
        out = Path(tmp) / "next"
        out.mkdir()
        members, replaced, notes = assemble(
            base if where is not None else None, member_build, member, out,
            name=set_name, version=version, field_name=field_name, default=default,
        )  # fmt: skip
        records = _manifest(out)["examples"]
        say(f"smoke test: the function scores {len(records)} records of {len(members)} members")
        smoke = smoke_test_directory(
            out, layers_dir=layers_dir, records=records, version=version, runtime=runtime,
            arch=arch,
        )  # fmt: skip
        _, deps = find_deps_manifest(layers_dir, None, runtime, arch)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        total = deps.unzipped_bytes + function_size(default_function_dir()) + size
        fits = total <= UNZIPPED_LIMIT
        if store == "layer" and not fits:
            raise BudgetError(
                f"the set does not fit in a layer: dependency layer, function and set make "
                f"{mb(total)}, over Lambda's 250 MiB; publish it to the S3 model store "
                "(--store s3 --bucket BUCKET)"
            )
        to_store = store == "s3" or not fits
        if to_store and store == "auto":
            notes.append(
                f"the set ({mb(size)}) does not fit in a layer: packaged for the S3 model store"
            )
        build = write_build(out, layers_dir, set_name, version, store=to_store, smoke=smoke)
    base_text = (
        "a new set" if not is_set else f"{set_name} v{live.version if live else '?'} ({where})"
    )
    return SetChange(build, members, member, replaced, base_text, notes)
