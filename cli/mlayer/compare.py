"""The models a function serves, side by side, from the metrics: ``mlayer compare`` and the
last hour of ``mlayer status``.

An alias serves its version's model (the live one) and, during a canary, the canary
version's; a function version may also score a shadow model beside its own (written
nowhere, docs/CONTRACTS.md "Shadow scoring"). :func:`served` finds them from Lambda (the
versions' Descriptions, layers and environment); :func:`compare` reads each one's figures
through :func:`mlayer.metrics.version_figures` and says how far each agrees with the live
model: a shadow by the records both scored, a canary by its own shadow when it carries the
live model as one, else by the overlap of the two models' label shares.

Takes boto3 clients; returns dataclasses; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlayer import metrics
from mlayer.arns import function_name
from mlayer.contracts import default_layer_name
from mlayer.errors import NotFoundError
from mlayer.inventory import FunctionVersion, ModelIndex, ModelRef, function_versions, model_of
from mlayer.inventory import shadow_of as inventory_shadow_of
from mlayer.lambda_api import alias_weights, get_alias, get_configuration
from mlayer.model_store import StoreURI

LAST_HOUR = timedelta(hours=1)


def shadow_of(models: ModelIndex, function: str, fv: FunctionVersion | None) -> ModelRef | None:
    """The shadow model function version ``fv`` scores beside its own (its ``SHADOW_URI``,
    else a version of layer ``<function>-shadow``), or None."""
    return inventory_shadow_of(models, fv, default_layer_name(function, "shadow"))


@dataclass
class Served:
    """A model the function serves, in its role."""

    role: str  # "live", "canary" (a share of the alias's invocations) or "shadow"
    model: ModelRef
    function_version: str  # the version that serves it (a shadow's: the version it rides on)
    weight: float | None = None  # a canary's share of the alias's invocations
    shadow: ModelRef | None = None  # the shadow scored beside it (live, canary)

    @property
    def model_version(self) -> str:
        return str(self.model.version)


def served(
    lam: Any, *, function: str, layer_name: str, alias: str | None = None, s3: Any | None = None
) -> tuple[str, list[Served]]:
    """Where the live model comes from ("alias live -> version 2" or "$LATEST"), and the
    models served: the live one, the canary's (during a canary), the live version's shadow.

    Raises:
        NotFoundError: no such function or alias; no model served.
    """
    get_configuration(lam, function)
    versions = function_versions(lam, function, layer_name)
    buckets = [u.bucket for fv in versions if (u := StoreURI.parse(fv.model_at or ""))]
    models = ModelIndex(lam, layer_name, s3, buckets)
    by_version = {fv.version: fv for fv in versions}
    name = function_name(function)
    live_version, live_from, weights = "$LATEST", "$LATEST", {}
    if alias:
        current = get_alias(lam, function, alias)
        if current is None:
            raise NotFoundError(
                f"function {name} has no alias {alias}; create it with mlayer publish-model "
                f"--alias {alias}, or leave --alias out to read $LATEST"
            )
        live_version = str(current["FunctionVersion"])
        live_from = f"alias {alias} -> version {live_version}"
        weights = alias_weights(current)
    roles = []
    live_fv = by_version.get(live_version)
    live = model_of(models, live_fv)
    if live is not None and live.version is not None:
        shadow = shadow_of(models, name, live_fv)
        roles.append(Served("live", live, live_version, shadow=shadow))
        if shadow is not None and shadow.version is not None:
            roles.append(Served("shadow", shadow, live_version))
    for version, weight in sorted(weights.items(), key=lambda kv: -kv[1]):
        fv = by_version.get(version)
        model = model_of(models, fv)
        if model is not None and model.version is not None:
            roles.insert(1, Served("canary", model, version, weight, shadow_of(models, name, fv)))
            break
    if not roles:
        raise NotFoundError(
            f"function {name} serves no model mlayer knows ({live_from}: no model layer "
            "linked, no MODEL_URI); publish one with mlayer publish-model"
        )
    return live_from, roles


@dataclass
class Column:
    """One served model's figures over the window."""

    role: str
    model: str  # its label: "sentiment v2 (layer version 2)"
    model_version: str
    function_version: str
    weight: float | None
    seen: bool  # any metric in the window
    records: int
    predictions: int | None  # None for a shadow (it writes nothing)
    bad_records: int | None
    bad_rate: float | None
    agreement: float | None  # with the live model (None for the live one)
    agreement_basis: str | None  # how it was measured
    labels: dict[str, int]
    label_shares: dict[str, float]
    confidence_mean: float | None
    score_mean: float | None
    abs_diff: float | None  # a shadow's (or a canary's own shadow's) mean difference
    predict_ms: float | None
    predict_ms_p99: float | None
    predict_ms_max: float | None
    invocations: int | None  # Lambda's, of the version through the alias
    errors: int | None
    shadow_failures: int | None = None


@dataclass
class Comparison:
    """The models a function serves and their figures over ``[start, end]``."""

    function: str
    alias: str | None
    live_from: str
    start: datetime
    end: datetime
    columns: list[Column]  # live first, then the canary, then the live version's shadow
    notes: list[str] = field(default_factory=list)
    unavailable: str | None = None  # why no figures could be read (status only)

    def column(self, role: str) -> Column | None:
        return next((c for c in self.columns if c.role == role), None)


def compare(
    lam: Any,
    cloudwatch: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    since: timedelta = LAST_HOUR,
    s3: Any | None = None,
    percentiles: bool = True,
    tolerate_metric_errors: bool = False,
) -> Comparison:
    """The figures of every model the function (``alias``, else $LATEST) serves over the
    last ``since``.

    With ``tolerate_metric_errors`` (status), CloudWatch refusing or unreachable is not an
    error: the comparison comes back without columns and says why (``unavailable``).

    Raises:
        NotFoundError: no such function or alias, or no model served.
        botocore's errors: CloudWatch refused or is unreachable (unless tolerated).
    """
    live_from, roles = served(lam, function=function, layer_name=layer_name, alias=alias, s3=s3)
    name = function_name(function)
    # The current second whole: CloudWatch drops the end's fraction of a second.
    end = datetime.now(UTC) + timedelta(seconds=1)
    result = Comparison(name, alias, live_from, start=end - since, end=end, columns=[])
    try:
        read = _read(cloudwatch, name, alias, roles, result.start, end, percentiles)
    except Exception as exc:
        if not tolerate_metric_errors or not _is_aws_error(exc):
            raise
        result.unavailable = _why(exc)
        return result
    live_figures = read.get("live")
    for served_model in roles:
        if served_model.role == "shadow":
            assert live_figures is not None  # a shadow rides on the live version
            result.columns.append(_shadow_column(served_model, live_figures))
        else:
            figures = read[served_model.role]
            column = _column(served_model, figures)
            if served_model.role == "canary":
                column.agreement, how = agreement_with_live(figures, live_figures)
                column.agreement_basis = _basis(how, figures, live_figures)
            result.columns.append(column)
    for figures in read.values():
        result.notes += [note for note in figures.notes if note not in result.notes]
    return result


def agreement_with_live(
    candidate: metrics.VersionFigures, live: metrics.VersionFigures | None
) -> tuple[float | None, str | None]:
    """How far a candidate agrees with the live model, and how that was measured.

    Returns (agreement, how): ``how`` is "shadow" when the candidate's version scored the
    live model as its shadow (per record), "shadow batches" (the same, as a mean over
    batches: the lines carry no ``shadow_agreed``), "labels" (the overlap of the two models'
    label shares over the same window, ``live``'s figures), or None (not measurable).
    """
    scored = candidate.shadow
    if scored is not None and scored.records and scored.agreement is not None:
        return scored.agreement, "shadow" if scored.agreement_basis == "records" else (
            "shadow batches"
        )
    if live is None:
        return None, None
    overlap = metrics.label_overlap(candidate.labels, live.labels)
    return (overlap, "labels") if overlap is not None else (None, None)


def _read(
    cloudwatch: Any,
    name: str,
    alias: str | None,
    roles: list[Served],
    start: datetime,
    end: datetime,
    percentiles: bool,
) -> dict[str, metrics.VersionFigures]:
    read = {}
    for served_model in roles:
        if served_model.role == "shadow":
            continue
        shadow = served_model.shadow
        read[served_model.role] = metrics.version_figures(
            cloudwatch,
            name,
            served_model.model_version,
            start,
            shadow_version=shadow.version if shadow is not None else None,
            executed_version=served_model.function_version if alias else None,
            alias=alias,
            until=end,
            percentiles=percentiles,
        )
    return read


def _basis(
    how: str | None, figures: metrics.VersionFigures, live: metrics.VersionFigures | None
) -> str | None:
    if how is None:
        return None
    if how == "labels":
        return f"label shares against v{live.model_version if live else '?'}"
    version = figures.shadow.version if figures.shadow is not None else "?"
    per = "" if how == "shadow" else ", mean over batches"
    return f"shadow v{version} scored the same records{per}"


def _column(s: Served, f: metrics.VersionFigures) -> Column:
    return Column(
        role=s.role,
        model=s.model.label,
        model_version=s.model_version,
        function_version=s.function_version,
        weight=s.weight,
        seen=f.seen,
        records=f.records,
        predictions=f.predictions,
        bad_records=f.bad_records,
        bad_rate=f.bad_rate,
        agreement=None,
        agreement_basis=None,
        labels=f.labels,
        label_shares=f.label_shares,
        confidence_mean=f.confidence_mean,
        score_mean=f.score_mean,
        abs_diff=f.shadow.abs_diff if f.shadow is not None and s.role == "canary" else None,
        predict_ms=f.predict_ms,
        predict_ms_p99=f.predict_ms_p99,
        predict_ms_max=f.predict_ms_max,
        invocations=f.invocations,
        errors=f.errors,
        shadow_failures=f.shadow.failures if f.shadow is not None else None,
    )


def _shadow_column(s: Served, live: metrics.VersionFigures) -> Column:
    shadow = live.shadow or metrics.ShadowFigures(version=s.model_version)
    basis = None
    if shadow.agreement is not None:
        per = "per record" if shadow.agreement_basis == "records" else "mean over batches"
        basis = f"the records both scored, {per}"
    return Column(
        role=s.role,
        model=s.model.label,
        model_version=s.model_version,
        function_version=s.function_version,
        weight=None,
        seen=bool(shadow.records or shadow.failures),
        records=shadow.records,
        predictions=None,
        bad_records=None,
        bad_rate=None,
        agreement=shadow.agreement,
        agreement_basis=basis,
        labels=shadow.labels,
        label_shares=shadow.label_shares,
        confidence_mean=None,
        score_mean=None,
        abs_diff=shadow.abs_diff,
        predict_ms=shadow.predict_ms,
        predict_ms_p99=None,
        predict_ms_max=None,
        invocations=None,
        errors=None,
        shadow_failures=shadow.failures,
    )


def _is_aws_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, ClientError | BotoCoreError)


def _why(exc: BaseException) -> str:
    from mlayer.errors import to_click_exception

    converted = to_click_exception(exc)
    return converted.message if converted is not None else str(exc)


def last_hour(
    lam: Any,
    cloudwatch: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    s3: Any | None = None,
) -> Comparison:
    """What ``mlayer status`` shows of the metrics: :func:`compare` over the last hour, where
    CloudWatch refusing or unreachable, no alias or no model served is a reason
    (``unavailable``), never an error."""
    try:
        return compare(
            lam, cloudwatch, function=function, layer_name=layer_name, alias=alias, s3=s3,
            percentiles=False, tolerate_metric_errors=True,
        )  # fmt: skip
    except NotFoundError as exc:
        end = datetime.now(UTC)
        name = function_name(function)
        return Comparison(name, alias, "", end - LAST_HOUR, end, [], unavailable=str(exc))
