"""Publish layers, relink the function, roll models out and back, history, prune.

Everything here takes a boto3 Lambda client (and an S3 client where it uploads) and returns
dataclasses; nothing prints, prompts or exits. What mlayer knows about a published layer
version lives in the version itself, in its Description (docs/CONTRACTS.md):

    mlayer deps sha256=<hex64> unzipped=<bytes> runtime=python3.13 arch=x86_64
    mlayer model <name> v<N> sha256=<hex64> unzipped=<bytes> identity=<hex64>

so dedupe, the size budget, status and history need no state outside AWS. A function version
published by a rollout records the model it carries in its own Description
(``mlayer model <name> v<N> sha256=<hex64> identity=<hex64>``), which still names the model
after its layer version has been deleted. ``identity`` (see :func:`model_identity`) is the
model's content, whatever its build number: rollouts compare models by it. Descriptions
written before it existed (no ``identity=``, or a bare ``mlayer model <name> v<N>``) still
parse; their identity is unknown and never equal to another.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer.archive import Budget, BudgetPart, mb, sha256_file, unsafe_entry
from mlayer.errors import AwsError, BudgetError, BuildError, ConfigError, NotFoundError

MAX_LAYERS = 5
# Lambda rejects a request body over this many bytes. A direct upload sends the zip
# base64-encoded inside the JSON body, so the largest zip that fits is a little under
# Lambda's "50 MB" (52,428,800 bytes, whose base64 alone is 69,905,068 bytes).
REQUEST_LIMIT = 69_905_067

_DEPS_RE = re.compile(
    r"^mlayer deps sha256=(?P<sha>[0-9a-f]{64}) unzipped=(?P<unzipped>\d+)"
    r"(?: runtime=(?P<runtime>\S+))?(?: arch=(?P<arch>\S+))?"
)
_MODEL_RE = re.compile(
    r"^mlayer model (?P<name>\S+) v(?P<version>\d+) sha256=(?P<sha>[0-9a-f]{64})"
    r" unzipped=(?P<unzipped>\d+)(?: identity=(?P<identity>[0-9a-f]{64}))?"
)
# The record a rollout leaves on the function version it publishes. A model layer's own
# Description matches it too (sha256= then unzipped=, no identity in the group below).
_VERSION_RE = re.compile(
    r"^mlayer model (?P<name>\S+) v(?P<version>\d+)\b"
    r"(?: sha256=(?P<sha>[0-9a-f]{64})(?= |$))?(?: identity=(?P<identity>[0-9a-f]{64}))?"
)
# Lambda's limit for layer and function version descriptions.
DESCRIPTION_LIMIT = 256
# Files of a model that are not its content: training writes a timestamp into metadata.json
# (so retraining identical pickles would look new), and manifest.json carries the build
# number. Everything the function predicts with is in the identity instead.
IDENTITY_EXCLUDED = ("metadata.json", "manifest.json")
_FUNCTION_RE = re.compile(
    r"^mlayer function sha256=(?P<sha>[0-9a-f]{64}) unzipped=(?P<unzipped>\d+)"
)
_LAYER_ARN_RE = re.compile(
    r"^(?P<layer_arn>arn:[^:]+:lambda:[^:]*:\d*:layer:(?P<name>[^:]+)):(?P<version>\d+)$"
)


# --------------------------------------------------------------------------------------
# Descriptions and ARNs


def model_identity(manifest: Mapping[str, Any]) -> str:
    """A model's identity: the sha256 of its content, whatever its build number.

    The content is what the function predicts with: the model files (name -> sha256, from
    the manifest's ``files``, without ``metadata.json`` and ``manifest.json``, see
    ``IDENTITY_EXCLUDED``), the input schema (``input``), and the order of the stages and
    the labels (both change the answers). Two builds of the same files get the same identity
    though their versions, zips and sha256s differ; that is how a rerun of a failed publish
    finds what it published, and how rollback tells an older model from a copy of the live one.

    Raises:
        KeyError / AttributeError: no ``files`` mapping (validate the manifest first).
    """
    files = {
        name: sha256 for name, sha256 in manifest["files"].items() if name not in IDENTITY_EXCLUDED
    }
    content = {
        "files": files,
        "input": manifest.get("input"),
        "stages": manifest.get("stages"),
        "labels": manifest.get("labels"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LayerRecord:
    """What an mlayer layer version's Description says about its content."""

    kind: str  # "deps" | "model"
    sha256: str
    unzipped_bytes: int
    name: str | None = None  # model name
    version: int | None = None  # model version
    runtime: str | None = None
    arch: str | None = None
    identity: str | None = None  # model content (None: recorded before identities existed)


def deps_description(sha256: str, unzipped_bytes: int, runtime: str, arch: str) -> str:
    """The Description of a published dependency layer version."""
    return f"mlayer deps sha256={sha256} unzipped={unzipped_bytes} runtime={runtime} arch={arch}"


def model_description(
    name: str, version: int, sha256: str, unzipped_bytes: int, identity: str | None = None
) -> str:
    """The Description of a published model layer version."""
    text = f"mlayer model {name} v{version} sha256={sha256} unzipped={unzipped_bytes}"
    if identity:
        text += f" identity={identity}"
    _check_name(name, text)
    return text


def _check_name(name: str, text: str) -> None:
    if len(text) > DESCRIPTION_LIMIT or not re.fullmatch(r"\S+", name):
        room = DESCRIPTION_LIMIT - (len(text) - len(name))
        raise ConfigError(
            f"model name {name!r} cannot be recorded in a description (no spaces, at most "
            f"{room} characters); rename it in metadata.json and rebuild"
        )


def function_description(sha256: str, unzipped_bytes: int) -> str:
    """The Description deploy-function gives $LATEST: its code's unzipped size for budgets."""
    return f"mlayer function sha256={sha256} unzipped={unzipped_bytes}"


def version_description(
    name: str, version: int, sha256: str | None = None, identity: str | None = None
) -> str:
    """The Description of a function version published by a rollout.

    With the model layer's ``sha256`` and ``identity``, which still name the model's zip and
    content after its layer version is deleted.
    """
    text = f"mlayer model {name} v{version}"
    if sha256:
        text += f" sha256={sha256}"
    if identity:
        text += f" identity={identity}"
    _check_name(name, text)
    return text


def parse_description(text: str | None) -> LayerRecord | None:
    """Parse an mlayer layer Description; None for layers mlayer did not publish."""
    text = text or ""
    if m := _DEPS_RE.match(text):
        return LayerRecord(
            kind="deps",
            sha256=m["sha"],
            unzipped_bytes=int(m["unzipped"]),
            runtime=m["runtime"],
            arch=m["arch"],
        )
    if m := _MODEL_RE.match(text):
        return LayerRecord(
            kind="model",
            sha256=m["sha"],
            unzipped_bytes=int(m["unzipped"]),
            name=m["name"],
            version=int(m["version"]),
            identity=m["identity"],
        )
    return None


@dataclass(frozen=True)
class VersionRecord:
    """What a function version's Description says about the model it carries."""

    name: str
    version: int
    sha256: str | None = None  # the model layer zip's (None in older descriptions)
    identity: str | None = None


def parse_version_record(text: str | None) -> VersionRecord | None:
    """The model a function version published by a rollout carries; None for others."""
    m = _VERSION_RE.match(text or "")
    if not m:
        return None
    return VersionRecord(m["name"], int(m["version"]), m["sha"], m["identity"])


def parse_version_description(text: str | None) -> tuple[str, int] | None:
    """(model name, model version) from a function version published by a rollout."""
    record = parse_version_record(text)
    return (record.name, record.version) if record else None


@dataclass(frozen=True)
class LayerArn:
    """A layer version ARN, split."""

    arn: str
    layer_arn: str
    name: str
    version: int


def parse_layer_arn(arn: str) -> LayerArn:
    """Split ``arn:aws:lambda:<region>:<account>:layer:<name>:<version>``."""
    m = _LAYER_ARN_RE.match(arn)
    if not m:
        raise ConfigError(f"{arn!r} is not a layer version ARN (…:layer:<name>:<version>)")
    return LayerArn(arn=arn, layer_arn=m["layer_arn"], name=m["name"], version=int(m["version"]))


def function_name(function: str) -> str:
    """The bare function name of a name, a partial ARN or a full ARN."""
    if function.startswith("arn:"):
        parts = function.split(":")
        return parts[6] if len(parts) > 6 else function
    return function.split(":")[0]


def default_layer_name(function: str, kind: str) -> str:
    """``<function>-deps`` / ``<function>-model``."""
    return f"{function_name(function)}-{kind}"


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


# --------------------------------------------------------------------------------------
# Builds on disk (layers/, docs/CONTRACTS.md "`layers/`: builds on disk")


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
        digest = hashlib.sha256()
        with zf.open(entry) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != recorded:
            raise BuildError(
                f"{entry} in {zip_path} has sha256 {digest.hexdigest()[:12]}…, but "
                f"model/manifest.json records {str(recorded)[:12]}…: the zip was changed after "
                f"it was built; {fix}"
            )
    return inner


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
    builds = [load_build(p) for p in layers_dir.glob("model-*-v*.zip")]
    return sorted(builds, key=lambda b: (b.version, b.zip_path.stat().st_mtime))


# --------------------------------------------------------------------------------------
# Waiting and updating without racing


@dataclass(frozen=True)
class Pace:
    """How long to wait for Lambda, and how to back off when an update is in progress."""

    waiter_delay: int = 1
    waiter_attempts: int = 300
    conflict_attempts: int = 6  # backoff 1+2+4+8+16 s = 31 s at most, between waits
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep


DEFAULT_PACE = Pace()


def wait_updated(lam: Any, function: str, pace: Pace) -> None:
    """Wait until the function's LastUpdateStatus is Successful (boto3's waiter).

    Raises:
        AwsError: the last update failed (with Lambda's reason).
    """
    _wait(lam, "function_updated_v2", function, pace)


def wait_active(lam: Any, function: str, pace: Pace, qualifier: str | None = None) -> None:
    """Wait until the function (or one of its versions) is Active."""
    _wait(lam, "function_active_v2", function, pace, qualifier)


def _wait(lam: Any, waiter: str, function: str, pace: Pace, qualifier: str | None = None) -> None:
    from botocore.exceptions import WaiterError

    kwargs: dict[str, Any] = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    try:
        lam.get_waiter(waiter).wait(
            **kwargs,
            WaiterConfig={"Delay": pace.waiter_delay, "MaxAttempts": pace.waiter_attempts},
        )
    except WaiterError as exc:
        config = (exc.last_response or {}).get("Configuration", {})
        if "ResourceNotFoundException" in str(exc):
            raise _unknown_function(lam, function) from exc
        reason = config.get("LastUpdateStatusReason") or config.get("StateReason")
        if reason:
            raise AwsError(
                f"function {function_name(function)} is in a failed state: {reason}; fix the cause "
                "and run the command again"
            ) from exc
        raise AwsError(
            f"gave up waiting for function {function_name(function)} to become ready "
            f"({pace.waiter_attempts} checks); check it in the Lambda console and run the "
            "command again"
        ) from exc


def call_with_backoff(call: Callable[[], Any], lam: Any, function: str, pace: Pace) -> Any:
    """Run an update, retrying ResourceConflictException ("an update is in progress").

    Waits for the function to settle between attempts, with exponential backoff, bounded by
    ``pace.conflict_attempts``; the last conflict propagates.
    """
    for attempt in range(pace.conflict_attempts):
        try:
            return call()
        except Exception as exc:
            if not (_is_client_error(exc) and _code(exc) == "ResourceConflictException"):
                raise
            if attempt == pace.conflict_attempts - 1:
                raise
            pace.sleep(min(pace.backoff_base * 2**attempt, pace.backoff_max))
            wait_updated(lam, function, pace)
    raise AssertionError("unreachable")  # pragma: no cover


def update_configuration(lam: Any, function: str, pace: Pace, **changes: Any) -> dict[str, Any]:
    """update_function_configuration, never racing another update: wait, update, wait."""
    wait_updated(lam, function, pace)
    result: dict[str, Any] = call_with_backoff(
        lambda: lam.update_function_configuration(FunctionName=function, **changes),
        lam,
        function,
        pace,
    )
    wait_updated(lam, function, pace)
    return result


# --------------------------------------------------------------------------------------
# Reading AWS state


def _unknown_function(lam: Any, function: str) -> NotFoundError:
    name = function_name(function)
    return NotFoundError(
        f"function {name} does not exist in {lam.meta.region_name}; create it with "
        f"`mlayer deploy-function --function {name} --role ARN`"
    )


def get_configuration(lam: Any, function: str, qualifier: str | None = None) -> dict[str, Any]:
    """The function's (or a version's) configuration.

    Raises:
        NotFoundError: no such function, with the command that creates it.
    """
    kwargs: dict[str, Any] = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    try:
        config: dict[str, Any] = lam.get_function_configuration(**kwargs)
    except Exception as exc:
        if _is_client_error(exc) and _code(exc) == "ResourceNotFoundException":
            if qualifier:
                raise NotFoundError(
                    f"function {function_name(function)} has no version or alias {qualifier}"
                ) from exc
            raise _unknown_function(lam, function) from exc
        raise
    return config


def list_layer_versions(lam: Any, layer_name: str) -> list[dict[str, Any]]:
    """Every version of a layer (paginated), newest first; [] when the layer does not exist."""
    versions: list[dict[str, Any]] = []
    try:
        for page in lam.get_paginator("list_layer_versions").paginate(LayerName=layer_name):
            versions.extend(page.get("LayerVersions", []))
    except Exception as exc:
        if _is_client_error(exc) and _code(exc) == "ResourceNotFoundException":
            return []
        raise
    return sorted(versions, key=lambda v: int(v["Version"]), reverse=True)


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


def get_layer_version(lam: Any, arn: str) -> dict[str, Any] | None:
    """A layer version by ARN; None when it was deleted (or never existed).

    moto does not implement GetLayerVersionByArn, and GetLayerVersion works on both, so the
    ARN is split and GetLayerVersion used.
    """
    parsed = parse_layer_arn(arn)
    try:
        result: dict[str, Any] = lam.get_layer_version(
            LayerName=parsed.layer_arn, VersionNumber=parsed.version
        )
    except Exception as exc:
        if _is_client_error(exc) and _code(exc) == "ResourceNotFoundException":
            return None
        raise
    return result


def list_function_versions(lam: Any, function: str) -> list[dict[str, Any]]:
    """Every version of the function ($LATEST first, then 1, 2, ...), paginated."""
    versions: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function):
        versions.extend(page.get("Versions", []))
    return sorted(versions, key=lambda v: -1 if v["Version"] == "$LATEST" else int(v["Version"]))


def list_aliases(lam: Any, function: str) -> list[dict[str, Any]]:
    """Every alias of the function, paginated."""
    aliases: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_aliases").paginate(FunctionName=function):
        aliases.extend(page.get("Aliases", []))
    return aliases


def get_alias(lam: Any, function: str, alias: str) -> dict[str, Any] | None:
    """The alias, or None when it does not exist."""
    try:
        result: dict[str, Any] = lam.get_alias(FunctionName=function, Name=alias)
    except Exception as exc:
        if _is_client_error(exc) and _code(exc) == "ResourceNotFoundException":
            return None
        raise
    return result


def alias_weights(alias: dict[str, Any]) -> dict[str, float]:
    """The alias's additional version weights ({} when it routes to one version)."""
    routing = alias.get("RoutingConfig") or {}
    return {str(k): float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}


def layer_arns(config: dict[str, Any]) -> list[str]:
    """The layer version ARNs linked to a function configuration, in order."""
    return [layer["Arn"] for layer in config.get("Layers") or []]


def find_layer(arns: list[str], layer_name: str) -> str | None:
    """The ARN among ``arns`` that is a version of ``layer_name``."""
    for arn in arns:
        if parse_layer_arn(arn).name == layer_name:
            return arn
    return None


def relinked(arns: list[str], new_arn: str) -> list[str]:
    """``arns`` with the same layer's version replaced by ``new_arn`` (or it appended).

    Every other layer keeps its place: layers later in the list override earlier ones in /opt.
    """
    name = parse_layer_arn(new_arn).name
    out = [new_arn if parse_layer_arn(a).name == name else a for a in arns]
    if new_arn not in out:
        out.append(new_arn)
    return out


# --------------------------------------------------------------------------------------
# Size budget


def _function_share(config: dict[str, Any]) -> tuple[BudgetPart, str | None]:
    name = f"function {config.get('FunctionName', '')}".strip()
    m = _FUNCTION_RE.match(config.get("Description") or "")
    if m:
        return BudgetPart(name, int(m["unzipped"])), None
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
            f"over Lambda's 250 MB ({budget.limit:,} bytes) by {mb(budget.over_by)}: "
            f"{budget.describe()}{notes}. Slim the biggest part ({biggest.name}), e.g. "
            "rebuild it with mlayer build-deps --exclude PATTERN"
        )
    return budget


# --------------------------------------------------------------------------------------
# Publishing layer versions


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
    request_bytes = direct_request_bytes(build.zip_bytes, kwargs)
    if request_bytes > REQUEST_LIMIT:
        if not bucket:
            raise ConfigError(
                f"{build.zip_path} is {mb(build.zip_bytes)} zipped: uploaded directly, its "
                f"request would be {request_bytes:,} bytes, over the {REQUEST_LIMIT:,} Lambda "
                f"accepts (its 50 MB direct-upload limit): pass --bucket NAME (an S3 bucket in "
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


def direct_request_bytes(zip_bytes: int, params: dict[str, Any]) -> int:
    """The size of a PublishLayerVersion request carrying a zip of ``zip_bytes`` inline."""
    envelope = json.dumps({**params, "Content": {"ZipFile": ""}}, separators=(",", ":"))
    return len(envelope.encode()) + 4 * -(-zip_bytes // 3)


def upload_to_s3(
    s3: Any, path: Path, bucket: str, key: str, progress: Callable[[int], None] | None
) -> None:
    """Upload with s3transfer (multipart, parallel), after checking the bucket exists.

    Raises:
        NotFoundError: no such bucket.
        AwsError: the bucket exists but these credentials may not use it.
    """
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if not _is_client_error(exc):
            raise
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise NotFoundError(
                f"bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket}) or pass "
                "--bucket with an existing one in the function's region"
            ) from exc
        if code in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(
                f"access to bucket {bucket} denied; grant s3:PutObject and s3:GetObject on it "
                "to these credentials (--profile) or pass another --bucket"
            ) from exc
        raise
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


# --------------------------------------------------------------------------------------
# Models: which version is where


@dataclass
class ModelRef:
    """A model layer version and the model it holds."""

    arn: str
    layer_version: int
    name: str | None
    version: int | None  # the model's version (vN), not the layer version
    sha256: str | None = None
    unzipped_bytes: int | None = None
    created: str | None = None
    deleted: bool = False
    identity: str | None = None

    @property
    def label(self) -> str:
        model = f"{self.name} v{self.version}" if self.version is not None else "unknown model"
        return f"{model} (layer version {self.layer_version}{', deleted' if self.deleted else ''})"


class _Models:
    """Looks up model layer versions by ARN once per command."""

    def __init__(self, lam: Any, layer_name: str) -> None:
        self.lam = lam
        self.layer_name = layer_name
        self._by_arn: dict[str, ModelRef] = {}
        self._listed: list[ModelRef] | None = None

    def listed(self) -> list[ModelRef]:
        """The model layer's live (not deleted) versions, newest first."""
        if self._listed is None:
            self._listed = []
            for v in list_layer_versions(self.lam, self.layer_name):
                ref = self._from_version(v)
                self._by_arn[ref.arn] = ref
                self._listed.append(ref)
        return self._listed

    def ref(self, arn: str, hint: VersionRecord | None = None) -> ModelRef:
        """The model at ``arn``; for a deleted version what a function version recorded
        about it (``hint``), if anything."""
        if arn not in self._by_arn:
            version = get_layer_version(self.lam, arn)
            if version is not None:
                self._by_arn[arn] = self._from_version(version)
            else:
                parsed = parse_layer_arn(arn)
                self._by_arn[arn] = ModelRef(
                    arn=arn, layer_version=parsed.version, name=None, version=None, deleted=True
                )
        ref = self._by_arn[arn]
        if ref.deleted and hint:
            ref.name = ref.name or hint.name
            ref.version = hint.version if ref.version is None else ref.version
            ref.sha256 = ref.sha256 or hint.sha256
            ref.identity = ref.identity or hint.identity
        return ref

    @staticmethod
    def _from_version(v: dict[str, Any]) -> ModelRef:
        record = parse_description(v.get("Description"))
        model = record if record and record.kind == "model" else None
        return ModelRef(
            arn=v["LayerVersionArn"],
            layer_version=int(v["Version"]),
            name=model.name if model else None,
            version=model.version if model else None,
            sha256=model.sha256 if model else None,
            unzipped_bytes=model.unzipped_bytes if model else None,
            created=v.get("CreatedDate"),
            identity=model.identity if model else None,
        )


@dataclass
class FunctionVersion:
    """A function version and the model layer version it links."""

    version: str
    model_arn: str | None
    description: str
    layers: list[str]


def function_versions(lam: Any, function: str, layer_name: str) -> list[FunctionVersion]:
    """$LATEST and every published version, each with its model layer ARN."""
    out = []
    for v in list_function_versions(lam, function):
        arns = layer_arns(v)
        out.append(
            FunctionVersion(
                version=v["Version"],
                model_arn=find_layer(arns, layer_name),
                description=v.get("Description") or "",
                layers=arns,
            )
        )
    return out


def _model_of(models: _Models, fv: FunctionVersion | None) -> ModelRef | None:
    if fv is None or fv.model_arn is None:
        return None
    return models.ref(fv.model_arn, parse_version_record(fv.description))


# --------------------------------------------------------------------------------------
# Rollout: publish-model and promote


@dataclass
class Rollout:
    """What publish-model did."""

    function: str
    layer: PublishedLayer
    old_model: ModelRef | None
    new_model: ModelRef
    layers: list[str]
    relinked: bool
    budget: Budget
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    canary_weight: float | None = None
    alias_created: bool = False
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False  # the live model already has this content: nothing was done


def publish_model(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    build: Build,
    layer_name: str,
    alias: str | None = None,
    canary: float | None = None,
    bucket: str | None = None,
    progress: Callable[[int], None] | None = None,
    pace: Pace = DEFAULT_PACE,
) -> Rollout:
    """Publish a model layer (or reuse an identical version) and roll it out.

    Relinks only the model layer of ``function`` (others keep their place), after checking
    the 5-layer limit and the 250 MB budget. With ``alias``: publishes a function version
    and moves the alias to it, or with ``canary`` (percent) routes that share of the alias's
    invocations to it while the alias stays on the version it had.

    Models are compared by content (:func:`model_identity`), not build number: when the
    live model (and $LATEST's) already has this content nothing is done
    (``Rollout.unchanged``); a layer version already holding it, e.g. left by a publish that
    failed half-way, is reused instead of publishing another.

    Raises:
        NotFoundError: no such function.
        BudgetError: too many layers or over 250 MB unzipped.
        ConfigError: a canary without an existing alias.
    """
    if build.kind != "model":
        raise BuildError(
            f"{build.zip_path} is not a model layer build; build one with mlayer build-model"
        )
    if canary is not None and not alias:
        raise ConfigError("--canary needs --alias: the canary is a share of the alias's traffic")
    config = get_configuration(lam, function)
    current = layer_arns(config)
    models = _Models(lam, layer_name)
    current_alias = get_alias(lam, function, alias) if alias else None
    if canary is not None and current_alias is None:
        raise ConfigError(
            f"alias {alias} does not exist yet, so there is no version to keep serving while a "
            "canary runs; publish without --canary first (that creates the alias)"
        )
    old_function_version = current_alias["FunctionVersion"] if current_alias else None
    if current_alias is not None:
        old_cfg = get_configuration(lam, function, old_function_version)
        old_fv = FunctionVersion(
            version=str(old_function_version),
            model_arn=find_layer(layer_arns(old_cfg), layer_name),
            description=old_cfg.get("Description") or "",
            layers=layer_arns(old_cfg),
        )
        old_model = _model_of(models, old_fv)
    else:
        old_fv = None
    latest_arn = find_layer(current, layer_name)
    latest_fv = FunctionVersion("$LATEST", latest_arn, config.get("Description") or "", current)
    latest_model = _model_of(models, latest_fv)
    if old_fv is None:
        old_model = latest_model
    if (
        build.identity is not None
        and old_model is not None
        and latest_model is not None
        and old_model.identity == build.identity == latest_model.identity
    ):
        return _unchanged(function, layer_name, build, old_model, current, config, lam, alias)

    # Refuse before publishing anything: the new version takes the model layer's slot (any
    # ARN of that layer marks it) and adds the build's unzipped size.
    slot = f"arn:aws:lambda:{lam.meta.region_name}:000000000000:layer:{layer_name}:0"
    share = BudgetPart(
        f"layer {layer_name} (model {build.name} v{build.version})", build.unzipped_bytes
    )
    budget = check_budget(lam, config, relinked(current, slot), {slot: share})

    description = model_description(
        build.name, build.version, build.sha256, build.unzipped_bytes, build.identity
    )
    layer = publish_layer(
        lam, s3, layer_name=layer_name, build=build, description=description,
        bucket=bucket, progress=progress, identity=build.identity,
    )  # fmt: skip
    new_layers = relinked(current, layer.arn)
    budget.parts = [
        BudgetPart(f"layer {layer_name}:{layer.version} (model)", p.unzipped_bytes)
        if p is share
        else p
        for p in budget.parts
    ]
    new_model = models.ref(layer.arn)
    rollout = Rollout(
        function=function_name(function),
        layer=layer,
        old_model=old_model,
        new_model=new_model,
        layers=new_layers,
        relinked=new_layers != current,
        budget=budget,
        alias=alias,
        old_function_version=old_function_version,
    )
    if layer.same_content:
        rollout.notes.append(
            f"{build.zip_path.name} holds the same model content as {new_model.label}, "
            f"published before (by a publish that did not finish, or an earlier build): "
            f"reused it instead of publishing {build.name} v{build.version}"
        )
    if rollout.relinked:
        update_configuration(lam, function, pace, Layers=new_layers)
    if alias:
        _roll_alias(lam, function, alias, current_alias, canary, rollout, pace)
    return rollout


def _unchanged(
    function: str,
    layer_name: str,
    build: Build,
    live: ModelRef,
    current: list[str],
    config: dict[str, Any],
    lam: Any,
    alias: str | None,
) -> Rollout:
    """The Rollout of a publish whose model content is already live: nothing changes."""
    layer = PublishedLayer(
        layer_name=layer_name,
        arn=live.arn,
        version=live.layer_version,
        reused=True,
        sha256=live.sha256 or build.sha256,
        zip_bytes=build.zip_bytes,
        unzipped_bytes=live.unzipped_bytes or build.unzipped_bytes,
        description="",
        created=live.created,
        same_content=live.sha256 != build.sha256,
    )
    return Rollout(
        function=function_name(function),
        layer=layer,
        old_model=live,
        new_model=live,
        layers=current,
        relinked=False,
        budget=check_budget_quietly(lam, config),
        alias=alias,
        unchanged=True,
    )


def carries(model: ModelRef) -> str:
    """The Description of a function version carrying ``model``: what rollback reads."""
    return version_description(str(model.name), model.version or 0, model.sha256, model.identity)


def publish_function_version(lam: Any, function: str, description: str, pace: Pace) -> str:
    """Publish $LATEST as a version (Lambda reuses the last one if nothing changed)."""
    wait_updated(lam, function, pace)
    result = call_with_backoff(
        lambda: lam.publish_version(FunctionName=function, Description=description),
        lam,
        function,
        pace,
    )
    version = str(result["Version"])
    wait_active(lam, function, pace, qualifier=version)
    return version


def _roll_alias(
    lam: Any,
    function: str,
    alias: str,
    current_alias: dict[str, Any] | None,
    canary: float | None,
    rollout: Rollout,
    pace: Pace,
) -> None:
    if current_alias is not None and not rollout.relinked:
        # Nothing changed on $LATEST's side: if the alias's version already is $LATEST (same
        # code, same layers), there is nothing to publish. (Lambda would hand back that
        # version anyway; moto would publish a duplicate.)
        serving = get_configuration(lam, function, str(current_alias["FunctionVersion"]))
        latest = get_configuration(lam, function)
        if serving.get("CodeSha256") == latest.get("CodeSha256") and layer_arns(
            serving
        ) == layer_arns(latest):
            rollout.new_function_version = str(current_alias["FunctionVersion"])
            rollout.notes.append(
                f"alias {alias} already serves function version "
                f"{rollout.new_function_version}, which carries this model"
            )
            if alias_weights(current_alias) and canary is None:
                rollout.notes.append(
                    "a canary is still routing part of the traffic elsewhere: "
                    "`mlayer promote` or `mlayer rollback` ends it"
                )
            return
    new_version = publish_function_version(lam, function, carries(rollout.new_model), pace)
    rollout.new_function_version = new_version
    if current_alias is None:
        lam.create_alias(FunctionName=function, Name=alias, FunctionVersion=new_version)
        rollout.alias_created = True
        return
    old_version = str(current_alias["FunctionVersion"])
    if new_version == old_version:
        rollout.notes.append(
            f"alias {alias} already serves function version {new_version}, which carries this model"
        )
        return
    if canary is None:
        lam.update_alias(
            FunctionName=function,
            Name=alias,
            FunctionVersion=new_version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        return
    weight = round(canary / 100, 5)
    lam.update_alias(
        FunctionName=function,
        Name=alias,
        FunctionVersion=old_version,
        RoutingConfig={"AdditionalVersionWeights": {new_version: weight}},
    )
    rollout.canary_weight = weight


@dataclass
class Promotion:
    """What promote did."""

    function: str
    alias: str
    old_function_version: str
    new_function_version: str
    weight: float
    old_model: ModelRef | None
    new_model: ModelRef | None


def promote(lam: Any, *, function: str, alias: str, layer_name: str) -> Promotion:
    """Move the alias fully to its canary version and clear the routing.

    Raises:
        NotFoundError: no such function or alias.
        ConfigError: the alias has no canary.
    """
    get_configuration(lam, function)
    current = get_alias(lam, function, alias)
    if current is None:
        raise NotFoundError(f"function {function_name(function)} has no alias {alias}")
    weights = alias_weights(current)
    if not weights:
        raise ConfigError(
            f"alias {alias} routes all traffic to function version {current['FunctionVersion']}: "
            "no canary to promote; start one with mlayer publish-model --alias "
            f"{alias} --canary PCT"
        )
    canary_version, weight = max(weights.items(), key=lambda kv: kv[1])
    lam.update_alias(
        FunctionName=function,
        Name=alias,
        FunctionVersion=canary_version,
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    models = _Models(lam, layer_name)
    versions = {fv.version: fv for fv in function_versions(lam, function, layer_name)}
    return Promotion(
        function=function_name(function),
        alias=alias,
        old_function_version=str(current["FunctionVersion"]),
        new_function_version=canary_version,
        weight=weight,
        old_model=_model_of(models, versions.get(str(current["FunctionVersion"]))),
        new_model=_model_of(models, versions.get(canary_version)),
    )


# --------------------------------------------------------------------------------------
# Rollback


@dataclass
class Rollback:
    """What rollback did."""

    function: str
    from_model: ModelRef | None
    to_model: ModelRef
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    canary_cancelled: bool = False
    layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rollback(
    lam: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    to: int | None = None,
    pace: Pace = DEFAULT_PACE,
) -> Rollback:
    """Go back to the previous model version (the newest one older than the live one), or ``to``.

    With ``alias``: moves the alias to the function version that carried that model (a
    canary in progress is cancelled instead when no ``to`` is given), and relinks $LATEST to
    match when the layer version still exists. Without: relinks $LATEST to the older model
    layer version.

    Raises:
        NotFoundError: nothing to roll back to, or the named version does not exist.
        ConfigError: the target layer version was deleted and no function version carries it.
    """
    config = get_configuration(lam, function)
    models = _Models(lam, layer_name)
    versions = function_versions(lam, function, layer_name)
    by_version = {fv.version: fv for fv in versions}
    latest = by_version["$LATEST"]
    name = function_name(function)

    current_alias = None
    if alias:
        current_alias = get_alias(lam, function, alias)
        if current_alias is None:
            raise NotFoundError(
                f"function {name} has no alias {alias}; roll back without --alias, or publish "
                f"with mlayer publish-model --alias {alias} first"
            )
        live_fv = by_version.get(str(current_alias["FunctionVersion"]))
    else:
        live_fv = latest
    live = _model_of(models, live_fv)
    if live is None:
        raise NotFoundError(
            f"function {name} has no version of layer {layer_name} linked, so there is nothing "
            "to roll back; publish a model with mlayer publish-model"
        )

    if current_alias is not None and alias_weights(current_alias) and to is None:
        assert live_fv is not None and alias is not None
        return _cancel_canary(
            lam, function, alias, current_alias, live, live_fv, models, by_version, config, pace
        )

    # Every model version we know of, with where it can be found.
    candidates: dict[int, list[ModelRef]] = {}
    for ref in models.listed():
        if ref.version is not None:
            candidates.setdefault(ref.version, []).append(ref)
    for fv in versions:
        carried = _model_of(models, fv)
        if (
            carried is not None
            and carried.version is not None
            and carried not in candidates.get(carried.version, [])
        ):
            candidates.setdefault(carried.version, []).append(carried)
    known = ", ".join(f"v{v}" for v in sorted(candidates)) or "none"

    def same_as_live(version: int) -> bool:
        # A copy of the live content under another build number (a publish that failed
        # after publishing its layer, then ran again): moving there would change nothing.
        return live.identity is not None and any(
            r.identity == live.identity for r in candidates[version]
        )

    notes = []
    if to is None:
        older = [v for v in candidates if live.version is not None and v < live.version]
        copies = sorted((v for v in older if same_as_live(v)), reverse=True)
        older = [v for v in older if v not in copies]
        if copies:
            listed = ", ".join(f"v{v}" for v in copies)
            notes.append(
                f"skipped {listed}: the same model content as the live {live.name} "
                f"v{live.version} (same files and input), so not an older model"
            )
        if not older:
            same = f"; {notes[0]}" if copies else ""
            raise NotFoundError(
                f"nothing to roll back to: {live.name} v{live.version} is live and no older "
                f"model version of layer {layer_name} exists (known: {known}){same}; use "
                "--to VERSION to move to another one"
            )
        target_version = max(older)
    else:
        target_version = to
        if to == live.version:
            raise ConfigError(f"model v{to} is already live on function {name}")
        if to not in candidates:
            raise NotFoundError(
                f"model v{to} is not a version of layer {layer_name} (known: {known}); if it "
                "was deleted, publish it again with mlayer publish-model "
                f"layers/model-<name>-v{to}.zip"
            )
        if same_as_live(to):
            raise ConfigError(
                f"model v{to} has the same content as the live {live.name} v{live.version} "
                "(same files and input): rolling back to it would change nothing; pick "
                f"another with --to (known: {known}) or see mlayer history"
            )
    refs = candidates[target_version]
    linkable = [r for r in refs if not r.deleted]
    result = Rollback(
        function=name, from_model=live, to_model=(linkable or refs)[0], alias=alias, notes=notes
    )

    if alias and current_alias is not None:
        carriers = [
            fv for fv in versions
            if fv.version != "$LATEST" and (m := _model_of(models, fv)) is not None
            and m.version == target_version
        ]  # fmt: skip
        result.old_function_version = str(current_alias["FunctionVersion"])
        if carriers:
            carrier = max(carriers, key=lambda fv: int(fv.version))
            result.to_model = models.ref(str(carrier.model_arn))
            lam.update_alias(
                FunctionName=function,
                Name=alias,
                FunctionVersion=carrier.version,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )
            result.new_function_version = carrier.version
            # Keep $LATEST in step with what is live, so the next publish-version or
            # deploy-function does not roll the newer model forward again.
            if result.to_model.deleted:
                result.notes.append(
                    f"$LATEST keeps its model layer: layer version {result.to_model.layer_version} "
                    "was deleted and cannot be linked anew"
                )
            else:
                result.layers = relinked(layer_arns(config), result.to_model.arn)
                if result.layers != layer_arns(config):
                    update_configuration(lam, function, pace, Layers=result.layers)
            return result
    if not linkable:
        ref = refs[0]
        raise ConfigError(
            f"model v{target_version} (layer {layer_name} version {ref.layer_version}) was "
            "deleted: a deleted layer version stays usable by the function versions already "
            "linked to it but cannot be linked anew; publish it again with mlayer "
            f"publish-model layers/model-{ref.name or '<name>'}-v{target_version}.zip"
        )
    result.to_model = linkable[0]
    result.layers = relinked(layer_arns(config), result.to_model.arn)
    check_budget(lam, config, result.layers)
    if result.layers != layer_arns(config):
        update_configuration(lam, function, pace, Layers=result.layers)
    if alias:
        version = publish_function_version(lam, function, carries(result.to_model), pace)
        lam.update_alias(
            FunctionName=function,
            Name=alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        result.new_function_version = version
    return result


def _cancel_canary(
    lam: Any,
    function: str,
    alias: str,
    current_alias: dict[str, Any],
    live: ModelRef,
    live_fv: FunctionVersion,
    models: _Models,
    by_version: dict[str, FunctionVersion],
    config: dict[str, Any],
    pace: Pace,
) -> Rollback:
    weights = alias_weights(current_alias)
    canary_version = max(weights, key=lambda k: weights[k])
    canary_model = _model_of(models, by_version.get(canary_version))
    lam.update_alias(
        FunctionName=function,
        Name=alias,
        FunctionVersion=live_fv.version,
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    result = Rollback(
        function=function_name(function),
        from_model=canary_model,
        to_model=live,
        alias=alias,
        old_function_version=canary_version,
        new_function_version=live_fv.version,
        canary_cancelled=True,
    )
    if not live.deleted:
        result.layers = relinked(layer_arns(config), live.arn)
        if result.layers != layer_arns(config):
            update_configuration(lam, function, pace, Layers=result.layers)
    return result


# --------------------------------------------------------------------------------------
# status, history, prune


@dataclass
class LinkedLayer:
    """A layer linked to the function, and what mlayer recorded about it."""

    arn: str
    name: str
    layer_version: int
    kind: str | None
    sha256: str | None
    unzipped_bytes: int | None
    code_size: int | None
    deleted: bool
    description: str | None


@dataclass
class AliasInfo:
    """An alias, where it routes, and the model each of its versions carries."""

    name: str
    function_version: str
    weights: dict[str, float]
    models: dict[str, str | None]


@dataclass
class Status:
    """mlayer status: the function, its layers, the live model, alias routing, budget."""

    function: str
    arn: str
    runtime: str | None
    arch: str | None
    memory_mb: int | None
    timeout_s: int | None
    state: str | None
    last_update_status: str | None
    handler: str | None
    code_size: int | None
    environment: dict[str, str]
    layers: list[LinkedLayer]
    live_from: str  # "$LATEST" or "alias <name> -> version N"
    live_model: ModelRef | None
    manifest: dict[str, Any] | None
    manifest_source: str | None
    aliases: list[AliasInfo]
    budget: Budget


def status(
    lam: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    layers_dir: Path | None = None,
) -> Status:
    """Everything worth knowing about the deployed function, as data."""
    config = get_configuration(lam, function)
    models = _Models(lam, layer_name)
    versions = function_versions(lam, function, layer_name)
    by_version = {fv.version: fv for fv in versions}
    linked = []
    sizes = {layer["Arn"]: layer.get("CodeSize") for layer in config.get("Layers") or []}
    for arn in layer_arns(config):
        parsed = parse_layer_arn(arn)
        version = get_layer_version(lam, arn)
        record = parse_description(version.get("Description")) if version else None
        linked.append(
            LinkedLayer(
                arn=arn,
                name=parsed.name,
                layer_version=parsed.version,
                kind=record.kind if record else None,
                sha256=record.sha256
                if record
                else (version or {}).get("Content", {}).get("CodeSha256"),
                unzipped_bytes=record.unzipped_bytes if record else None,
                code_size=sizes.get(arn),
                deleted=version is None,
                description=(version or {}).get("Description"),
            )
        )
    aliases = []
    for a in list_aliases(lam, function):
        weights = alias_weights(a)
        routed = [str(a["FunctionVersion"]), *weights]
        aliases.append(
            AliasInfo(
                name=a["Name"],
                function_version=str(a["FunctionVersion"]),
                weights=weights,
                models={
                    v: (m.label if (m := _model_of(models, by_version.get(v))) else None)
                    for v in routed
                },
            )
        )
    live_from = "$LATEST"
    live_fv = by_version["$LATEST"]
    if alias:
        current = get_alias(lam, function, alias)
        if current is not None:
            live_from = f"alias {alias} -> version {current['FunctionVersion']}"
            live_fv = by_version.get(str(current["FunctionVersion"]), live_fv)
    live = _model_of(models, live_fv)
    manifest, source = (None, None)
    if live is not None and live.sha256:
        manifest, source = live_manifest(lam, live, layers_dir)
    return Status(
        function=config["FunctionName"],
        arn=config["FunctionArn"],
        runtime=config.get("Runtime"),
        arch=(config.get("Architectures") or [None])[0],
        memory_mb=config.get("MemorySize"),
        timeout_s=config.get("Timeout"),
        state=config.get("State"),
        last_update_status=config.get("LastUpdateStatus"),
        handler=config.get("Handler"),
        code_size=config.get("CodeSize"),
        environment=(config.get("Environment") or {}).get("Variables", {}),
        layers=linked,
        live_from=live_from,
        live_model=live,
        manifest=manifest,
        manifest_source=source,
        aliases=aliases,
        budget=check_budget_quietly(lam, config),
    )


def check_budget_quietly(lam: Any, config: dict[str, Any]) -> Budget:
    """The function's current budget, even when it is over (status reports, never refuses)."""
    return measure_budget(lam, config, layer_arns(config))


def live_manifest(
    lam: Any, model: ModelRef, layers_dir: Path | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The live model's manifest: from a local build with the same sha256, else the layer.

    The layer's content is fetched from the presigned URL Lambda gives (real AWS); a local
    endpoint that gives none leaves the manifest unknown.
    """
    if layers_dir is not None and layers_dir.is_dir():
        for sidecar in sorted(layers_dir.glob("model-*-v*.json")):
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if data.get("sha256") == model.sha256:
                return data, str(sidecar)
    version = get_layer_version(lam, model.arn)
    location = ((version or {}).get("Content") or {}).get("Location", "")
    if location.startswith("https://"):
        try:
            with urllib.request.urlopen(location, timeout=30) as response:
                body = response.read()
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                return json.loads(zf.read("model/manifest.json")), "the layer version's content"
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            return None, None
    return None, None


@dataclass
class HistoryRow:
    """One model layer version: what it holds and who uses it."""

    layer_version: int
    arn: str
    created: str | None
    model: str | None
    model_version: int | None
    sha256: str | None
    unzipped_bytes: int | None
    deleted: bool
    live: bool
    function_versions: list[str]
    aliases: list[str]


@dataclass
class History:
    """mlayer history: the model layer's versions, newest first."""

    function: str
    layer_name: str
    live_from: str
    rows: list[HistoryRow]


def history(lam: Any, *, function: str, layer_name: str, alias: str | None = None) -> History:
    """The model layer's versions (deleted ones still in use included), who uses each."""
    get_configuration(lam, function)
    models = _Models(lam, layer_name)
    versions = function_versions(lam, function, layer_name)
    by_version = {fv.version: fv for fv in versions}
    users: dict[str, list[str]] = {}
    for fv in versions:
        ref = _model_of(models, fv)
        if ref is not None:
            users.setdefault(ref.arn, []).append(fv.version)
    alias_users: dict[str, list[str]] = {}
    live_fv = by_version["$LATEST"]
    live_from = "$LATEST"
    for a in list_aliases(lam, function):
        weights = alias_weights(a)
        for v in [str(a["FunctionVersion"]), *weights]:
            routed = by_version.get(v)
            if routed and routed.model_arn:
                share = f" ({weights[v]:.0%})" if v in weights else ""
                alias_users.setdefault(routed.model_arn, []).append(f"{a['Name']}{share}")
        if a["Name"] == alias:
            live_fv = by_version.get(str(a["FunctionVersion"]), live_fv)
            live_from = f"alias {alias} -> version {a['FunctionVersion']}"
    live_arn = live_fv.model_arn
    refs = {r.arn: r for r in models.listed()}
    for arn in users:
        refs.setdefault(arn, models.ref(arn))
    rows = [
        HistoryRow(
            layer_version=r.layer_version,
            arn=r.arn,
            created=r.created,
            model=r.name,
            model_version=r.version,
            sha256=r.sha256,
            unzipped_bytes=r.unzipped_bytes,
            deleted=r.deleted,
            live=r.arn == live_arn,
            function_versions=users.get(r.arn, []),
            aliases=alias_users.get(r.arn, []),
        )
        for r in sorted(refs.values(), key=lambda r: r.layer_version, reverse=True)
    ]
    return History(
        function=function_name(function), layer_name=layer_name, live_from=live_from, rows=rows
    )


@dataclass
class PruneResult:
    """What prune deleted (or would, with dry_run) and what it kept, and why."""

    layer_name: str
    keep: int
    dry_run: bool
    deleted: list[HistoryRow]
    kept_in_use: list[HistoryRow]
    kept_newest: list[HistoryRow]


def prune(
    lam: Any, *, function: str, layer_name: str, keep: int, dry_run: bool = False
) -> PruneResult:
    """Delete model layer versions beyond the newest ``keep`` that no function version uses.

    A function version or alias that links a version keeps it (its function versions are
    what alias rollback moves to). Deleted versions already in use are not counted.
    """
    rows = [r for r in history(lam, function=function, layer_name=layer_name).rows if not r.deleted]
    result = PruneResult(
        layer_name=layer_name,
        keep=keep,
        dry_run=dry_run,
        deleted=[],
        kept_in_use=[],
        kept_newest=[],
    )
    for index, row in enumerate(rows):  # newest first
        if index < keep:
            result.kept_newest.append(row)
        elif row.function_versions or row.aliases:
            result.kept_in_use.append(row)
        else:
            result.deleted.append(row)
    if not dry_run:
        for row in result.deleted:
            parsed = parse_layer_arn(row.arn)
            lam.delete_layer_version(LayerName=parsed.layer_arn, VersionNumber=parsed.version)
    return result


def published_model_versions(lam: Any, layer_name: str) -> list[int]:
    """The model versions (vN) published in ``layer_name`` (not deleted)."""
    return sorted(r.version for r in _Models(lam, layer_name).listed() if r.version is not None)


def build_model_for(
    lam: Any,
    model_dir: Path,
    *,
    layer_name: str,
    layers_dir: Path,
    runtime: str | None = None,
    arch: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Build:
    """Build ``model_dir`` with mlayer build-model (gate + smoke test) for publishing.

    Its version is one more than the newest built here or published in ``layer_name``
    (whatever the model's name: versions only go up within a layer, so "previous" stays
    meaningful for rollback).
    """
    from mlayer.model_layer import ModelBuildOptions, build_model

    result = build_model(
        ModelBuildOptions(
            model_dir=model_dir,
            layers_dir=layers_dir,
            runtime=runtime,
            arch=arch,
            published_versions=lambda: published_model_versions(lam, layer_name),
        ),
        progress,
    )
    return load_build(result.zip_path)
