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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlayer.archive import Budget
from mlayer.arns import function_name, parse_layer_arn
from mlayer.contracts import VersionRecord, parse_description, parse_version_record
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
from mlayer.layers import check_budget_quietly


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


class ModelIndex:
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

    @classmethod
    def of(cls, version: str, config: dict[str, Any], layer_name: str) -> FunctionVersion:
        """Function ``version`` from its configuration, linking a version of ``layer_name``
        (the model layer) or not."""
        arns = layer_arns(config)
        return cls(version, find_layer(arns, layer_name), config.get("Description") or "", arns)


def function_versions(lam: Any, function: str, layer_name: str) -> list[FunctionVersion]:
    """$LATEST and every published version, each with its model layer ARN."""
    return [
        FunctionVersion.of(v["Version"], v, layer_name)
        for v in list_function_versions(lam, function)
    ]


def model_of(models: ModelIndex, fv: FunctionVersion | None) -> ModelRef | None:
    if fv is None or fv.model_arn is None:
        return None
    return models.ref(fv.model_arn, parse_version_record(fv.description))


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
    models = ModelIndex(lam, layer_name)
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
                    v: (m.label if (m := model_of(models, by_version.get(v))) else None)
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
    live = model_of(models, live_fv)
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
    models = ModelIndex(lam, layer_name)
    versions = function_versions(lam, function, layer_name)
    by_version = {fv.version: fv for fv in versions}
    users: dict[str, list[str]] = {}
    for fv in versions:
        ref = model_of(models, fv)
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
