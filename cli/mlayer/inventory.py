"""What is where: which model each layer version and function version holds, and the
status, history and prune commands that read (and prune) it.

Reads AWS through :mod:`mlayer.lambda_api` and the records of :mod:`mlayer.contracts`;
:mod:`mlayer.rollout` stands on :class:`ModelIndex` to find what to move to.
"""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer import concurrency, model_store, sharing, snapstart
from mlayer.archive import Budget
from mlayer.arns import function_name, parse_layer_arn
from mlayer.contracts import (
    VersionRecord,
    default_layer_name,
    parse_description,
    parse_version_record,
    version_description,
)
from mlayer.lambda_api import (
    alias_weights,
    find_layer,
    get_alias,
    get_configuration,
    get_layer_version,
    layer_arns,
    list_aliases,
    list_function_versions,
    list_layer_versions,
)
from mlayer.layers import check_budget_quietly, model_build_with
from mlayer.model_store import StoreURI


@dataclass
class ModelRef:
    """Where a model is served from and the model it holds: a model layer version (``arn``
    its ARN), or an archive of the S3 model store (``arn`` its ``MODEL_URI``, no
    ``layer_version``)."""

    arn: str
    layer_version: int | None
    name: str | None
    version: int | None  # the model's version (vN), not the layer version
    sha256: str | None = None
    unzipped_bytes: int | None = None
    created: str | None = None
    deleted: bool = False
    identity: str | None = None

    @property
    def stored(self) -> StoreURI | None:
        """The S3 archive of a store-backed model; None for a model layer version."""
        return StoreURI.parse(self.arn)

    @property
    def location(self) -> str:
        """Where the function gets it: ``<layer name> version <N>`` or ``s3://bucket/key``."""
        stored = self.stored
        if stored is not None:
            return stored.location
        parsed = parse_layer_arn(self.arn)
        return f"{parsed.name} version {parsed.version}"

    @property
    def label(self) -> str:
        model = f"{self.name} v{self.version}" if self.version is not None else "unknown model"
        deleted = ", deleted" if self.deleted else ""
        stored = self.stored
        if stored is not None:
            return f"{model} (S3 archive {stored.sha256[:12]}{deleted})"
        return f"{model} (layer version {self.layer_version}{deleted})"


class ModelIndex:
    """Looks up model layer versions by ARN, and stored archives by MODEL_URI, once per
    command.

    ``s3`` reads the model store; the buckets it lists are ``buckets`` and every bucket a
    looked-up MODEL_URI names. Without ``s3`` a stored model is known only by what its URI
    and the function version's Description say.
    """

    def __init__(
        self, lam: Any, layer_name: str, s3: Any | None = None, buckets: Iterable[str] = ()
    ) -> None:
        self.lam = lam
        self.s3 = s3
        self.layer_name = layer_name
        self.buckets = {b for b in buckets if b}
        self._by_arn: dict[str, ModelRef] = {}
        self._listed: list[ModelRef] | None = None

    def listed(self) -> list[ModelRef]:
        """The model layer's live (not deleted) versions, newest first, then the archives
        in the store's buckets, newest model version first."""
        if self._listed is None:
            self._listed = []
            for v in list_layer_versions(self.lam, self.layer_name):
                ref = self._from_version(v)
                self._by_arn[ref.arn] = ref
                self._listed.append(ref)
            if self.s3 is not None:
                for bucket in sorted(self.buckets):
                    for stored in model_store.listed(self.s3, bucket, self.layer_name):
                        ref = self._from_stored(stored.uri, stored)
                        self._by_arn[ref.arn] = ref
                        self._listed.append(ref)
        return self._listed

    def ref(self, arn: str, hint: VersionRecord | None = None) -> ModelRef:
        """The model at ``arn`` (a layer version ARN or a MODEL_URI); for a deleted one what
        a function version recorded about it (``hint``), if anything."""
        uri = StoreURI.parse(arn)
        if uri is not None and arn not in self._by_arn:
            self.buckets.add(uri.bucket)
            if self.s3 is None:
                # Unknown whether it is still there: say only what the URI says.
                self._by_arn[arn] = ModelRef(
                    arn=arn, layer_version=None, name=None, version=None, sha256=uri.sha256
                )
            else:
                self._by_arn[arn] = self._from_stored(uri, model_store.head(self.s3, uri))
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
    def _from_stored(uri: StoreURI, stored: model_store.StoredModel | None) -> ModelRef:
        record = stored.record if stored is not None else None
        model = record if record and record.kind == "model" else None
        return ModelRef(
            arn=str(uri),
            layer_version=None,
            name=model.name if model else None,
            version=model.version if model else None,
            sha256=uri.sha256,
            unzipped_bytes=model.unzipped_bytes if model else None,
            created=stored.created if stored else None,
            deleted=stored is None,
            identity=model.identity if model else None,
        )

    def from_version(self, v: dict[str, Any]) -> ModelRef:
        """The model a layer version holds (from a listing of any mlayer model or shadow
        layer), remembered for :meth:`ref`."""
        ref = self._from_version(v)
        self._by_arn.setdefault(ref.arn, ref)
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
    """A function version and where its model is: the model layer version it links, or
    the MODEL_URI it downloads."""

    version: str
    model_at: str | None  # the model layer version's ARN, or a MODEL_URI
    description: str
    layers: list[str]
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, version: str, config: dict[str, Any], layer_name: str) -> FunctionVersion:
        """Function ``version`` from its configuration: a MODEL_URI wins (the function
        downloads that model whatever layers it links), else a version of ``layer_name``."""
        arns = layer_arns(config)
        env = dict((config.get("Environment") or {}).get("Variables") or {})
        uri = env.get(model_store.ENV_VAR)
        at = uri if uri else find_layer(arns, layer_name)
        return cls(version, at, config.get("Description") or "", arns, env)


def function_versions(lam: Any, function: str, layer_name: str) -> list[FunctionVersion]:
    """$LATEST and every published version, each with its model layer ARN."""
    return [
        FunctionVersion.of(v["Version"], v, layer_name)
        for v in list_function_versions(lam, function)
    ]


def model_of(models: ModelIndex, fv: FunctionVersion | None) -> ModelRef | None:
    if fv is None or fv.model_at is None:
        return None
    return models.ref(fv.model_at, parse_version_record(fv.description))


def carries(model: ModelRef) -> str:
    """The Description of a function version carrying ``model``: what rollback reads."""
    return version_description(str(model.name), model.version or 0, model.sha256, model.identity)


def shadow_at(fv: FunctionVersion | None, shadow_layer: str) -> str | None:
    """Where function version ``fv``'s shadow model is (docs/CONTRACTS.md, "Shadow
    scoring"): its SHADOW_URI (which wins, as in the function), else the version of
    ``shadow_layer`` it links; None when it has no shadow."""
    if fv is None:
        return None
    return fv.environment.get(model_store.SHADOW_ENV_VAR) or find_layer(fv.layers, shadow_layer)


def shadow_of(models: ModelIndex, fv: FunctionVersion | None, shadow_layer: str) -> ModelRef | None:
    """The shadow model of function version ``fv`` (a shadow layer's Description is a model
    layer's, so ``models`` reads it whatever layer it indexes); None without one."""
    at = shadow_at(fv, shadow_layer)
    return models.ref(at) if at else None


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
    # Dependency layers: who else may link this version (account / organization ids, "*");
    # None when not read (other kinds) or not readable (another account's layer).
    shared_with: list[str] | None = None


@dataclass
class AliasInfo:
    """An alias, where it routes, and the model each of its versions carries."""

    name: str
    function_version: str
    weights: dict[str, float]
    models: dict[str, str | None]
    shadow_models: dict[str, str | None] = field(default_factory=dict)  # version -> shadow
    # version -> whether environments of that version resume from its SnapStart snapshot
    snapshots: dict[str, bool] = field(default_factory=dict)


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
    ephemeral_mb: int | None
    layers: list[LinkedLayer]
    live_from: str  # "$LATEST" or "alias <name> -> version N"
    live_model: ModelRef | None
    manifest: dict[str, Any] | None
    manifest_source: str | None
    aliases: list[AliasInfo]
    budget: Budget
    shadow_layer: str = ""
    shadow_model: ModelRef | None = None  # the live version's shadow (alias's, else $LATEST's)
    latest_shadow_model: ModelRef | None = None  # $LATEST's shadow
    # SnapStart on for published versions, and where that is read: "configuration" (the
    # function's SnapStart setting) or "tag" (mlayer:snapstart, where the endpoint does not
    # keep the setting); None when off.
    snapstart: bool = False
    snapstart_from: str | None = None
    # The version whose snapshot the live alias resumes from (with --alias; None: none).
    snapshot_version: str | None = None
    # Reserved concurrency (deploy-function --reserved-concurrency); None: none reserved.
    reserved_concurrency: int | None = None


def status(
    lam: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    layers_dir: Path | None = None,
    s3: Any | None = None,
    shadow_layer: str | None = None,
) -> Status:
    """Everything worth knowing about the deployed function, as data: with the shadow model
    (of ``shadow_layer``, default ``<function>-shadow``, or SHADOW_URI) of $LATEST, of the
    live version and of each version an alias routes to."""
    shadow_layer = shadow_layer or default_layer_name(function, "shadow")
    config = get_configuration(lam, function)
    raw = {str(v["Version"]): v for v in list_function_versions(lam, function)}
    versions = [FunctionVersion.of(version, v, layer_name) for version, v in raw.items()]
    models = ModelIndex(lam, layer_name, s3, _buckets_of(versions))
    by_version = {fv.version: fv for fv in versions}
    linked = []
    sizes = {layer["Arn"]: layer.get("CodeSize") for layer in config.get("Layers") or []}
    for arn in layer_arns(config):
        parsed = parse_layer_arn(arn)
        version = get_layer_version(lam, arn)
        record = parse_description(version.get("Description")) if version else None
        shared = None
        if record is not None and record.kind == "deps" and version is not None:
            shared = sharing.shared_with(lam, arn.rsplit(":", 1)[0], parsed.version)
        linked.append(
            LinkedLayer(
                arn=arn,
                name=parsed.name,
                layer_version=parsed.version,
                kind=("shadow" if parsed.name == shadow_layer else record.kind) if record else None,
                sha256=record.sha256
                if record
                else (version or {}).get("Content", {}).get("CodeSha256"),
                unzipped_bytes=record.unzipped_bytes if record else None,
                code_size=sizes.get(arn),
                deleted=version is None,
                description=(version or {}).get("Description"),
                shared_with=shared,
            )
        )
    tags = snapstart.tags(lam, config)
    snap_on = snapstart.applied(config, tags)

    def resumes(version: str) -> bool:
        found = raw.get(version)
        return (
            version != "$LATEST"
            and found is not None
            and snapstart.version_applied(config, found, tags)
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
                    v: (m.label if (m := model_of(models, by_version.get(v))) else None)
                    for v in routed
                },
                shadow_models={
                    v: (shadow_label(m) if (m := shadow_of(models, fv, shadow_layer)) else None)
                    for v in routed
                    if (fv := by_version.get(v)) is not None
                },
                snapshots={v: resumes(v) for v in routed},
            )
        )
    live_from = "$LATEST"
    live_fv = by_version["$LATEST"]
    snapshot_version = None
    if alias:
        current = get_alias(lam, function, alias)
        if current is not None:
            live_from = f"alias {alias} -> version {current['FunctionVersion']}"
            live_fv = by_version.get(str(current["FunctionVersion"]), live_fv)
            if resumes(str(current["FunctionVersion"])):
                snapshot_version = str(current["FunctionVersion"])
    live = model_of(models, live_fv)
    manifest, source = (None, None)
    if live is not None and live.sha256:
        manifest, source = live_manifest(lam, live, layers_dir, s3)
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
        ephemeral_mb=(config.get("EphemeralStorage") or {}).get("Size"),
        layers=linked,
        live_from=live_from,
        live_model=live,
        manifest=manifest,
        manifest_source=source,
        aliases=aliases,
        budget=check_budget_quietly(lam, config),
        shadow_layer=shadow_layer,
        shadow_model=shadow_of(models, live_fv, shadow_layer),
        latest_shadow_model=shadow_of(models, by_version["$LATEST"], shadow_layer),
        snapstart=snap_on,
        snapstart_from=(
            None if not snap_on else "configuration" if snapstart.applied(config, {}) else "tag"
        ),
        snapshot_version=snapshot_version,
        reserved_concurrency=concurrency.reserved(lam, function),
    )


def shadow_label(shadow: ModelRef) -> str:
    """``sentiment v3 (scorer-shadow version 2)``: where, for a shadow layer's version is not a
    model layer's."""
    model = f"{shadow.name} v{shadow.version}" if shadow.version is not None else "unknown model"
    return f"{model} ({shadow.location}{', deleted' if shadow.deleted else ''})"


def live_manifest(
    lam: Any, model: ModelRef, layers_dir: Path | None, s3: Any | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The live model's manifest: from a local build with the same sha256, else the layer
    (or the stored archive).

    The layer's content is fetched from the presigned URL Lambda gives (real AWS); a local
    endpoint that gives none leaves the manifest unknown. A stored archive starts with its
    manifest, so the first megabyte is enough.
    """
    found = model_build_with(layers_dir, model.sha256) if layers_dir is not None else None
    if found is not None:
        return found[1], str(found[0])
    stored = model.stored
    if stored is not None:
        if s3 is None or model.deleted:
            return None, None
        manifest = model_store.read_manifest(s3, stored)
        return (manifest, f"{stored.location} (its manifest.json)") if manifest else (None, None)
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
    """One model layer version or stored archive: what it holds and who uses it."""

    layer_version: int | None  # None: an archive of the S3 model store
    arn: str  # the layer version ARN, or the archive's MODEL_URI
    created: str | None
    model: str | None
    model_version: int | None
    sha256: str | None
    unzipped_bytes: int | None
    deleted: bool
    live: bool
    function_versions: list[str]
    aliases: list[str]
    location: str = ""  # "layer <name>:<N>" or "s3://bucket/key"
    archive_bytes: int | None = None  # a stored archive's size
    shadow_of: list[str] = field(default_factory=list)  # function versions scoring it as shadow
    shadow_aliases: list[str] = field(default_factory=list)  # aliases routing to those


@dataclass
class History:
    """mlayer history: the model layer's versions, newest first."""

    function: str
    layer_name: str
    live_from: str
    rows: list[HistoryRow]
    shadow_layer: str = ""
    # The shadow layer's versions (a shadow of the store is a row of ``rows``, with its
    # ``shadow_of``); ``live`` marks the live version's shadow.
    shadows: list[HistoryRow] = field(default_factory=list)


def history(
    lam: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    s3: Any | None = None,
    buckets: Iterable[str] = (),
    shadow_layer: str | None = None,
) -> History:
    """The model layer's versions and the model store's archives (deleted ones still in use
    included), who uses each, and the shadow layer's versions (``shadow_layer``, default
    ``<function>-shadow``), who scores each as a shadow. The store is read in ``buckets`` and
    in every bucket a function version's MODEL_URI or SHADOW_URI names (with ``s3``)."""
    get_configuration(lam, function)
    shadow_layer = shadow_layer or default_layer_name(function, "shadow")
    versions = function_versions(lam, function, layer_name)
    models = ModelIndex(lam, layer_name, s3, [*buckets, *_buckets_of(versions)])
    by_version = {fv.version: fv for fv in versions}
    users: dict[str, list[str]] = {}
    shadow_users: dict[str, list[str]] = {}
    for fv in versions:
        ref = model_of(models, fv)
        if ref is not None:
            users.setdefault(ref.arn, []).append(fv.version)
        at = shadow_at(fv, shadow_layer)
        if at is not None:
            shadow_users.setdefault(at, []).append(fv.version)
    alias_users: dict[str, list[str]] = {}
    alias_shadow_users: dict[str, list[str]] = {}
    live_fv = by_version["$LATEST"]
    live_from = "$LATEST"
    for a in list_aliases(lam, function):
        weights = alias_weights(a)
        for v in [str(a["FunctionVersion"]), *weights]:
            routed = by_version.get(v)
            share = f" ({weights[v]:.0%})" if v in weights else ""
            if routed and routed.model_at:
                alias_users.setdefault(routed.model_at, []).append(f"{a['Name']}{share}")
            if (at := shadow_at(routed, shadow_layer)) is not None:
                alias_shadow_users.setdefault(at, []).append(f"{a['Name']}{share}")
        if a["Name"] == alias:
            live_fv = by_version.get(str(a["FunctionVersion"]), live_fv)
            live_from = f"alias {alias} -> version {a['FunctionVersion']}"
    live_arn = live_fv.model_at
    refs = {r.arn: r for r in models.listed()}
    for arn in users:
        refs.setdefault(arn, models.ref(arn))
    for arn in shadow_users:
        if StoreURI.parse(arn) is not None:  # the store's archives are the model layer's
            refs.setdefault(arn, models.ref(arn))
    shadow_refs = {
        r.arn: r for r in map(models.from_version, list_layer_versions(lam, shadow_layer))
    }
    for arn in shadow_users:
        if StoreURI.parse(arn) is None:
            shadow_refs.setdefault(arn, models.ref(arn))

    def rows_of(found: dict[str, ModelRef], live: str | None) -> list[HistoryRow]:
        return [
            HistoryRow(
                layer_version=r.layer_version,
                arn=r.arn,
                created=r.created,
                model=r.name,
                model_version=r.version,
                sha256=r.sha256,
                unzipped_bytes=r.unzipped_bytes,
                deleted=r.deleted,
                live=r.arn == live,
                function_versions=users.get(r.arn, []),
                aliases=alias_users.get(r.arn, []),
                location=r.location,
                archive_bytes=r.stored.size if r.stored else None,
                shadow_of=shadow_users.get(r.arn, []),
                shadow_aliases=alias_shadow_users.get(r.arn, []),
            )
            for r in sorted(
                found.values(), key=lambda r: (r.version or 0, r.layer_version or 0), reverse=True
            )
        ]

    return History(
        function=function_name(function),
        layer_name=layer_name,
        live_from=live_from,
        rows=rows_of(refs, live_arn),
        shadow_layer=shadow_layer,
        shadows=rows_of(shadow_refs, shadow_at(live_fv, shadow_layer)),
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
    lam: Any,
    *,
    function: str,
    layer_name: str,
    keep: int,
    dry_run: bool = False,
    s3: Any | None = None,
    buckets: Iterable[str] = (),
) -> PruneResult:
    """Delete model layer versions and stored archives beyond the newest ``keep`` that no
    function version uses.

    A function version or alias that links a version (or downloads an archive) keeps it
    (its function versions are what alias rollback moves to). Deleted ones already in use
    are not counted.
    """
    found = history(lam, function=function, layer_name=layer_name, s3=s3, buckets=buckets)
    rows = [r for r in found.rows if not r.deleted]
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
        elif row.function_versions or row.aliases or row.shadow_of or row.shadow_aliases:
            result.kept_in_use.append(row)
        else:
            result.deleted.append(row)
    if not dry_run:
        for row in result.deleted:
            stored = StoreURI.parse(row.arn)
            if stored is not None:
                assert s3 is not None, "stored archives are listed only with an S3 client"
                model_store.delete(s3, stored)
                continue
            parsed = parse_layer_arn(row.arn)
            lam.delete_layer_version(LayerName=parsed.layer_arn, VersionNumber=parsed.version)
    return result


def _buckets_of(versions: list[FunctionVersion]) -> list[str]:
    """The buckets the function versions' MODEL_URIs and SHADOW_URIs name."""
    uris = [fv.model_at or "" for fv in versions]
    uris += [fv.environment.get(model_store.SHADOW_ENV_VAR) or "" for fv in versions]
    return [uri.bucket for text in uris if (uri := StoreURI.parse(text))]
