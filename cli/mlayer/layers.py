"""Layers: builds on disk (``layers/``), the size budget, and publishing layer versions.

A :class:`Build` is a layer zip checked before anything can reach AWS. Publishing reuses a
version already holding the same content (recorded in its Description, see
:mod:`mlayer.contracts`), and goes through S3 when the zip is too big for a direct upload.
The budget adds up the function's and its layers' unzipped sizes from those records.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlayer.archive import (
    REQUEST_LIMIT,
    Budget,
    BudgetPart,
    direct_request_bytes,
    mb,
    needs_s3,
    sha256_file,
    unsafe_entry,
)
from mlayer.arns import parse_layer_arn
from mlayer.contracts import (
    deps_description,
    function_unzipped_bytes,
    model_identity,
    parse_description,
)
from mlayer.errors import BudgetError, BuildError, ConfigError, NotFoundError
from mlayer.lambda_api import (
    get_layer_version,
    layer_arns,
    list_layer_versions,
)
from mlayer.model_store import check_bucket

MAX_LAYERS = 5


@dataclass(frozen=True)
class Build:
    """A built layer zip and its manifest; sha256 and sizes are measured from the zip."""

    kind: str
    zip_path: Path
    sha256: str
    zip_bytes: int
    unzipped_bytes: int
    manifest: dict[str, Any]
    identity: str | None = None  # a model's content (model_identity of its inner manifest)
    # "layer": a layer zip; "store": a model archive (.tar) for the S3 model store, whose
    # zip_path is the archive and zip_bytes its size.
    package: str = "layer"

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", ""))

    @property
    def version(self) -> int:
        return int(self.manifest.get("version", 0))

    @property
    def runtime(self) -> str | None:
        value = self.manifest.get("runtime")
        return str(value) if value else None

    @property
    def arch(self) -> str | None:
        value = self.manifest.get("arch")
        return str(value) if value else None


def load_build(zip_path: Path) -> Build:
    """Read a built layer: its zip and the manifest beside it (or model/manifest.json inside).

    Everything is checked before anything can reach AWS: every entry stays inside the zip's
    root (:func:`mlayer.archive.unsafe_entry`), a model layer's entries are all under
    ``model/`` and its ``model/manifest.json`` is valid (a name, a positive integer version,
    and ``files`` whose sha256s match the zip's entries).

    Raises:
        NotFoundError: the zip does not exist.
        BuildError: the zip is not a layer mlayer can publish, or does not match its manifest.
    """
    if not zip_path.is_file():
        raise NotFoundError(f"{zip_path} does not exist")
    if zip_path.suffix == ".tar":
        return load_archive(zip_path)
    sidecar = zip_path.with_suffix(".json")
    manifest: dict[str, Any] | None = None
    if sidecar.is_file():
        try:
            manifest = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BuildError(
                f"{sidecar} is not valid JSON ({exc}); rebuild the layer with mlayer "
                "build-deps or mlayer build-model, or delete the file to use the zip's own "
                "model/manifest.json"
            ) from exc
        if not isinstance(manifest, dict):
            raise BuildError(f"{sidecar} is not a JSON object; rebuild the layer")
    rebuild = "rebuild it with mlayer build-model (or mlayer build-deps)"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            names = {i.filename for i in infos}
            is_model = "model/manifest.json" in names or (manifest or {}).get("kind") == "model"
            rebuild = f"rebuild it with mlayer {'build-model' if is_model else 'build-deps'}"
            problem = unsafe_entry(infos)
            if problem:
                raise BuildError(
                    f"{zip_path} is not safe to publish: {problem}, and Lambda would unpack it "
                    f"into /opt as it is; {rebuild} (it writes regular files under one root "
                    "folder only)"
                )
            inner = _model_manifest(zip_path, zf, names) if is_model else None
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise BuildError(f"{zip_path} is not a zip file: {exc}; {rebuild}") from exc
    if manifest is None and inner is None:
        raise BuildError(
            f"{zip_path} has no manifest ({sidecar.name} beside it, or model/manifest.json "
            "inside); build it with mlayer build-deps or mlayer build-model"
        )
    if manifest is None:
        manifest = {"kind": "model", **(inner or {})}
    kind = "model" if inner is not None else (manifest.get("kind") or "deps")
    manifest["kind"] = kind
    root = "model/" if kind == "model" else "python/"
    if not any(n.startswith(root) for n in names):
        raise BuildError(
            f"{zip_path} has no {root} at its root, so Lambda would not find it under /opt"
        )
    identity = None
    if inner is not None:
        outside = sorted(n for n in names if not n.startswith("model/"))
        if outside:
            raise BuildError(
                f"{zip_path} is not safe to publish: entry {outside[0]!r} is outside model/, "
                "where a model layer keeps everything (anything else in /opt could shadow the "
                "dependency layer); rebuild it with mlayer build-model"
            )
        for key in ("name", "version"):
            if manifest.get(key, inner[key]) != inner[key]:
                raise BuildError(
                    f"{sidecar} says {key} {manifest.get(key)!r} but model/manifest.json in "
                    f"{zip_path} says {inner[key]!r}; rebuild it with mlayer build-model"
                )
        identity = model_identity(inner)
    sha = sha256_file(zip_path)
    recorded = manifest.get("sha256")
    if recorded and recorded != sha:
        raise BuildError(
            f"{zip_path} does not match its manifest (sha256 {sha[:12]}… on disk, "
            f"{str(recorded)[:12]}… recorded); rebuild it"
        )
    return Build(
        kind=kind,
        zip_path=zip_path,
        sha256=sha,
        zip_bytes=zip_path.stat().st_size,
        unzipped_bytes=sum(i.file_size for i in infos),
        manifest=manifest,
        identity=identity,
    )


def _model_manifest(zip_path: Path, zf: zipfile.ZipFile, names: set[str]) -> dict[str, Any]:
    """``model/manifest.json`` of a model layer zip, validated against the zip's entries."""
    where = f"model/manifest.json in {zip_path}"
    fix = "rebuild the layer with mlayer build-model"
    if "model/manifest.json" not in names:
        raise BuildError(f"{zip_path} has no model/manifest.json; {fix}")
    try:
        inner = json.loads(zf.read("model/manifest.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"{where} is not valid JSON ({exc}); {fix}") from exc
    if not isinstance(inner, dict):
        raise BuildError(f"{where} is not a JSON object; {fix}")
    name, version, files = inner.get("name"), inner.get("version"), inner.get("files")
    if not isinstance(name, str) or not re.fullmatch(r"\S+", name):
        raise BuildError(f"{where} has name {name!r}: it must be a word without spaces; {fix}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BuildError(
            f"{where} has version {version!r}: it must be a positive integer (the N of vN); {fix}"
        )
    if not isinstance(files, dict) or not files:
        raise BuildError(f'{where} has no "files" (file name -> sha256 of each model file); {fix}')
    for file_name, recorded in sorted(files.items()):
        entry = f"model/{file_name}"
        if entry not in names:
            raise BuildError(
                f"{where} lists {file_name!r}, which is not in the zip ({entry}); {fix}"
            )
        with zf.open(entry) as handle:
            _check_member(
                handle, recorded, f"{entry} in {zip_path}", "model/manifest.json", "zip", fix
            )
    return inner


def _check_member(
    handle: Any, recorded: Any, where: str, manifest: str, kind: str, fix: str
) -> None:
    """Raise when the member read from ``handle`` is not what the manifest recorded."""
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    if digest.hexdigest() != recorded:
        raise BuildError(
            f"{where} has sha256 {digest.hexdigest()[:12]}…, but {manifest} records "
            f"{str(recorded)[:12]}…: the {kind} was changed after it was built; {fix}"
        )


def load_archive(tar_path: Path) -> Build:
    """Read a model archive for the S3 model store (``build-model --store s3``) and check it
    as :func:`load_build` checks a model layer: regular files under one root, a valid
    ``manifest.json`` whose files' sha256s match, and the manifest beside it agreeing.

    Raises:
        BuildError: not an archive mlayer can publish, or changed since it was built.
    """
    import tarfile

    fix = "rebuild it with mlayer build-model --store s3"
    sidecar = tar_path.with_suffix(".json")
    outer: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            outer = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BuildError(f"{sidecar} is not valid JSON ({exc}); {fix}") from exc
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
            sizes: dict[str, int] = {}
            for member in members:
                name = member.name
                if (
                    name.startswith("/")
                    or ".." in Path(name).parts
                    or not (member.isfile() or member.isdir())
                ):
                    raise BuildError(
                        f"{tar_path} is not safe to publish: entry {name!r} is not a regular "
                        f"file under the archive's root; {fix}"
                    )
                if member.isfile():
                    sizes[name] = member.size
            if "manifest.json" not in sizes:
                raise BuildError(f"{tar_path} has no manifest.json at its root; {fix}")
            handle = tar.extractfile("manifest.json")
            assert handle is not None
            try:
                inner = json.loads(handle.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BuildError(
                    f"manifest.json in {tar_path} is not valid JSON ({exc}); {fix}"
                ) from exc
            files = inner.get("files") if isinstance(inner, dict) else None
            if not isinstance(files, dict) or not files:
                raise BuildError(f'manifest.json in {tar_path} has no "files"; {fix}')
            for file_name, recorded in sorted(files.items()):
                if file_name not in sizes:
                    raise BuildError(
                        f"manifest.json in {tar_path} lists {file_name!r}, which is not in the "
                        f"archive; {fix}"
                    )
                extracted = tar.extractfile(file_name)
                assert extracted is not None
                _check_member(
                    extracted,
                    recorded,
                    f"{file_name} in {tar_path}",
                    "manifest.json",
                    "archive",
                    fix,
                )
    except tarfile.TarError as exc:
        raise BuildError(f"{tar_path} is not a tar archive: {exc}; {fix}") from exc
    for key in ("name", "version"):
        if key in outer and outer[key] != inner.get(key):
            raise BuildError(
                f"{sidecar} says {key} {outer[key]!r} but manifest.json in {tar_path} says "
                f"{inner.get(key)!r}; {fix}"
            )
    sha = sha256_file(tar_path)
    if outer.get("sha256") and outer["sha256"] != sha:
        raise BuildError(
            f"{tar_path} does not match its manifest (sha256 {sha[:12]}… on disk, "
            f"{str(outer['sha256'])[:12]}… recorded); {fix}"
        )
    manifest = {**inner, **outer, "kind": "model"}
    return Build(
        kind="model",
        zip_path=tar_path,
        sha256=sha,
        zip_bytes=tar_path.stat().st_size,
        unzipped_bytes=sum(sizes.values()),
        manifest=manifest,
        identity=model_identity(inner),
        package="store",
    )


def model_build_with(layers_dir: Path, sha256: str | None) -> tuple[Path, dict[str, Any]] | None:
    """The model build in ``layers_dir`` whose zip or archive has ``sha256``: its sidecar
    manifest's path and content (None when there is none, or no sha256 to look for)."""
    if not sha256 or not layers_dir.is_dir():
        return None
    for sidecar in sorted(layers_dir.glob("model-*-v*.json")):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("sha256") == sha256:
            return sidecar, data
    return None


def find_deps_build(layers_dir: Path, runtime: str | None, arch: str) -> Build:
    """The dependency layer built for ``runtime`` / ``arch`` under ``layers_dir``.

    Without a runtime, the only deps build for the architecture.
    """
    if runtime:
        path = layers_dir / f"deps-{runtime}-{arch}.zip"
        if not path.exists():
            raise NotFoundError(
                f"no dependency layer build for {runtime} {arch} in {layers_dir}/ "
                f"({path.name}); run `mlayer build-deps --runtime {runtime} --arch {arch}`"
            )
        return load_build(path)
    found = sorted(layers_dir.glob(f"deps-*-{arch}.zip"))
    if not found:
        raise NotFoundError(
            f"no dependency layer build for {arch} in {layers_dir}/; run "
            f"`mlayer build-deps --arch {arch}` (add --runtime to choose the Python version)"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(
            f"several dependency layer builds in {layers_dir}/ ({names}); pass --runtime"
        )
    return load_build(found[0])


def model_builds(layers_dir: Path) -> list[Build]:
    """The model layers built under ``layers_dir``, newest version last."""
    paths = [*layers_dir.glob("model-*-v*.zip"), *layers_dir.glob("model-*-v*.tar")]
    builds = [load_build(p) for p in paths]
    return sorted(builds, key=lambda b: (b.version, b.zip_path.stat().st_mtime))


def find_published(
    lam: Any, layer_name: str, sha256: str, identity: str | None = None
) -> dict[str, Any] | None:
    """The newest version of ``layer_name`` whose recorded sha256 is ``sha256`` (the same
    zip) or, for a model, whose recorded identity is ``identity`` (the same model content
    under another build number: what a publish that failed half-way left behind)."""
    for version in list_layer_versions(lam, layer_name):
        record = parse_description(version.get("Description"))
        if record and (
            record.sha256 == sha256 or (identity is not None and record.identity == identity)
        ):
            return version
    return None


def _function_share(config: dict[str, Any]) -> tuple[BudgetPart, str | None]:
    name = f"function {config.get('FunctionName', '')}".strip()
    unzipped = function_unzipped_bytes(config.get("Description"))
    if unzipped is not None:
        return BudgetPart(name, unzipped), None
    return BudgetPart(f"{name} (at least)", int(config.get("CodeSize") or 0)), (
        f"{name}: not deployed by mlayer, so its zipped size counts as a lower bound"
    )


def layer_share(lam: Any, arn: str, code_size: int | None = None) -> tuple[BudgetPart, str | None]:
    """The unzipped size a linked layer version adds: recorded, or at least its zipped size.

    Returns the part and, for a lower bound, a note saying so.
    """
    parsed = parse_layer_arn(arn)
    label = f"layer {parsed.name}:{parsed.version}"
    version = get_layer_version(lam, arn)
    if version is not None:
        record = parse_description(version.get("Description"))
        if record:
            return BudgetPart(f"{label} ({record.kind})", record.unzipped_bytes), None
        code_size = int(version.get("Content", {}).get("CodeSize") or 0)
        why = "not published by mlayer"
    else:
        why = "deleted"
    return BudgetPart(f"{label} (at least)", int(code_size or 0)), (
        f"{label}: {why}, so its zipped size counts as a lower bound of its unzipped size"
    )


def measure_budget(
    lam: Any,
    config: dict[str, Any],
    arns: list[str],
    known: dict[str, BudgetPart] | None = None,
) -> Budget:
    """Function + ``arns``, unzipped, from the recorded sizes (``known`` for unpublished ones)."""
    sizes = {layer["Arn"]: layer.get("CodeSize") for layer in config.get("Layers") or []}
    known = known or {}
    part, note = _function_share(config)
    budget = Budget([part])
    for arn in arns:
        if arn in known:
            part, note2 = known[arn], None
        else:
            part, note2 = layer_share(lam, arn, sizes.get(arn))
        budget.parts.append(part)
        if note2:
            budget.notes.append(note2)
    if note:
        budget.notes.append(note)
    return budget


def check_budget(
    lam: Any,
    config: dict[str, Any],
    arns: list[str],
    known: dict[str, BudgetPart] | None = None,
) -> Budget:
    """Check the layer count and the unzipped budget of ``config`` relinked to ``arns``.

    Raises:
        BudgetError: more than 5 layers, or over 250 MB unzipped; names each part's share.
    """
    name = config.get("FunctionName", "the function")
    if len(arns) > MAX_LAYERS:
        listed = ", ".join(parse_layer_arn(a).name for a in arns)
        raise BudgetError(
            f"function {name} would have {len(arns)} layers ({listed}); Lambda allows "
            f"{MAX_LAYERS}: unlink one (aws lambda update-function-configuration --layers ...) "
            "or merge layers"
        )
    budget = measure_budget(lam, config, arns, known)
    if not budget.fits:
        biggest = max(budget.parts[1:] or budget.parts, key=lambda p: p.unzipped_bytes)
        notes = "".join(f" ({n})" for n in budget.notes)
        raise BudgetError(
            f"function {name} would be {mb(budget.total)} unzipped ({budget.total:,} bytes), "
            f"over Lambda's 250 MiB ({budget.limit:,} bytes) by {mb(budget.over_by)}: "
            f"{budget.describe()}{notes}. Slim the biggest part ({biggest.name}), e.g. "
            "rebuild it with mlayer build-deps --exclude PATTERN"
        )
    return budget


def check_budget_quietly(lam: Any, config: dict[str, Any]) -> Budget:
    """The function's current budget, even when it is over (status reports, never refuses)."""
    return measure_budget(lam, config, layer_arns(config))


@dataclass
class PublishedLayer:
    """A layer version published (or reused: identical content was already published)."""

    layer_name: str
    arn: str
    version: int
    reused: bool
    sha256: str
    zip_bytes: int
    unzipped_bytes: int
    description: str
    s3_uri: str | None = None
    created: str | None = None
    same_content: bool = False  # reused a version with the same model identity, another zip


def publish_layer(
    lam: Any,
    s3: Any | None,
    *,
    layer_name: str,
    build: Build,
    description: str,
    runtimes: list[str] | None = None,
    arches: list[str] | None = None,
    bucket: str | None = None,
    progress: Callable[[int], None] | None = None,
    identity: str | None = None,
) -> PublishedLayer:
    """Publish ``build`` as a new version of ``layer_name``, or reuse an identical one.

    Identical is the same zip (sha256) or, given a model's ``identity``, the same model
    content whatever its build number.

    Zips over the 50 MB direct-upload limit go to ``bucket`` first (content-addressed key,
    ``progress`` called with bytes sent) and are published from there.

    Raises:
        ConfigError: over 50 MB and no bucket given.
        NotFoundError: the bucket does not exist.
    """
    existing = find_published(lam, layer_name, build.sha256, identity)
    if existing is not None:
        return _published(layer_name, build, existing, existing.get("Description", ""), reused=True)
    kwargs: dict[str, Any] = {"LayerName": layer_name, "Description": description}
    if runtimes:
        kwargs["CompatibleRuntimes"] = runtimes
    if arches:
        kwargs["CompatibleArchitectures"] = arches
    s3_uri = None
    if needs_s3(build.zip_bytes, kwargs):
        request_bytes = direct_request_bytes(build.zip_bytes, kwargs)
        if not bucket:
            raise ConfigError(
                f"{build.zip_path} is {mb(build.zip_bytes)} zipped: uploaded directly, its "
                f"request would be {request_bytes:,} bytes, over the {REQUEST_LIMIT:,} Lambda "
                f"accepts (its 50 MiB direct-upload limit): pass --bucket NAME (an S3 bucket in "
                f"{lam.meta.region_name}) to upload it there first"
            )
        assert s3 is not None, "an S3 client is needed to upload over 50 MB"
        key = f"mlayer/{layer_name}/{build.sha256}.zip"
        upload_to_s3(s3, build.zip_path, bucket, key, progress)
        kwargs["Content"] = {"S3Bucket": bucket, "S3Key": key}
        s3_uri = f"s3://{bucket}/{key}"
    else:
        kwargs["Content"] = {"ZipFile": build.zip_path.read_bytes()}
    result = lam.publish_layer_version(**kwargs)
    return _published(layer_name, build, result, description, reused=False, s3_uri=s3_uri)


def _published(
    layer_name: str,
    build: Build,
    layer_version: dict[str, Any],
    description: str,
    *,
    reused: bool,
    s3_uri: str | None = None,
) -> PublishedLayer:
    """``build`` as the layer version Lambda returned (from publish or from a listing)."""
    record = parse_description(description)
    same_content = reused and record is not None and record.sha256 != build.sha256
    return PublishedLayer(
        layer_name=layer_name,
        arn=layer_version["LayerVersionArn"],
        version=int(layer_version["Version"]),
        reused=reused,
        sha256=record.sha256 if record and same_content else build.sha256,
        zip_bytes=build.zip_bytes,
        unzipped_bytes=record.unzipped_bytes if record and same_content else build.unzipped_bytes,
        description=description,
        s3_uri=s3_uri,
        created=layer_version.get("CreatedDate"),
        same_content=same_content,
    )


def upload_to_s3(
    s3: Any, path: Path, bucket: str, key: str, progress: Callable[[int], None] | None
) -> None:
    """Upload with s3transfer (multipart, parallel), after checking the bucket exists.

    Raises:
        NotFoundError: no such bucket.
        AwsError: the bucket exists but these credentials may not use it.
    """
    check_bucket(s3, bucket)
    s3.upload_file(str(path), bucket, key, Callback=progress)


def publish_deps(
    lam: Any,
    s3: Any | None,
    *,
    build: Build,
    layer_name: str,
    bucket: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> PublishedLayer:
    """Publish the dependency layer (compatible runtime and architecture from its manifest)."""
    if build.kind != "deps" or not build.runtime or not build.arch:
        raise BuildError(
            f"{build.zip_path} is not a dependency layer build (its manifest needs kind, "
            "runtime and arch); rebuild it with mlayer build-deps"
        )
    description = deps_description(build.sha256, build.unzipped_bytes, build.runtime, build.arch)
    return publish_layer(
        lam,
        s3,
        layer_name=layer_name,
        build=build,
        description=description,
        runtimes=[build.runtime],
        arches=[build.arch],
        bucket=bucket,
        progress=progress,
    )


def published_model_versions(lam: Any, layer_name: str) -> list[int]:
    """The model versions (vN) published in ``layer_name`` (not deleted)."""
    records = (
        parse_description(v.get("Description")) for v in list_layer_versions(lam, layer_name)
    )
    return sorted(r.version for r in records if r and r.kind == "model" and r.version is not None)


def build_model_for(
    lam: Any,
    model_dir: Path,
    *,
    layer_name: str,
    layers_dir: Path,
    runtime: str | None = None,
    arch: str | None = None,
    progress: Callable[[str], None] | None = None,
    store: str = "auto",
    stored_versions: Callable[[], list[int]] | None = None,
) -> Build:
    """Build ``model_dir`` with mlayer build-model (gate + smoke test) for publishing.

    Its version is one more than the newest built here, published in ``layer_name``, or
    stored in the model store (``stored_versions``), whatever the model's name: versions
    only go up within a layer, so "previous" stays meaningful for rollback. ``store`` is
    build-model's --store.
    """
    from mlayer.model_layer import ModelBuildOptions, build_model

    def published() -> list[int]:
        found = published_model_versions(lam, layer_name)
        return found + (stored_versions() if stored_versions else [])

    result = build_model(
        ModelBuildOptions(
            model_dir=model_dir,
            layers_dir=layers_dir,
            runtime=runtime,
            arch=arch,
            published_versions=published,
            store=store,
        ),
        progress,
    )
    return load_build(result.zip_path)
