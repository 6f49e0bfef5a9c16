"""Canaries that decide: bake a canary, watching its metrics, then promote or roll back.

``mlayer publish-model ... --canary 10 --bake 10m`` starts a canary (:mod:`mlayer.rollout`)
and hands it to :func:`bake`, which reads the canary's figures every ``interval`` seconds
(:func:`mlayer.metrics.version_figures`, only metrics since the canary started) and judges
them against :class:`Guards`:

- ``max_bad_rate``: bad records / records of the canary's model version;
- ``min_agreement``: agreement with the live model, per record when the canary's version
  scores the live model as its shadow (docs/CONTRACTS.md "Shadow scoring"), else the overlap
  of the two models' label shares over the bake (0 turns the guard off);
- ``max_errors``: Lambda's ``Errors`` of the canary's version through the alias;
- ``min_records``: a bad-record rate or agreement breach decides only once the canary has
  scored this many records. Lambda errors decide at once: a version that fails at init logs
  no records at all.

A breach rolls back at once (:func:`mlayer.rollout.rollback`, which cancels the canary); when
the bake ends with every guard holding the canary is promoted (:func:`mlayer.rollout.promote`).
At the end with too few records, or a guard that could not be measured, it is rolled back
with the reason. If the alias no longer routes to the canary (someone promoted or rolled back
meanwhile), nothing is done and the result says so.

Takes boto3 clients; returns dataclasses; prints nothing (``progress`` gets each check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlayer import metrics
from mlayer.arns import function_name
from mlayer.compare import agreement_with_live, shadow_of
from mlayer.errors import ConfigError
from mlayer.inventory import ModelIndex, function_versions
from mlayer.lambda_api import alias_weights, get_alias
from mlayer.rollout import Promotion, Rollback, Rollout, promote, rollback

BAD_RATE = "bad-record rate"
AGREEMENT = "agreement"
ERRORS = "Lambda errors"


@dataclass
class Guards:
    """What a canary must hold to be promoted (shares as fractions: 0.01 is 1%)."""

    max_bad_rate: float = 0.01
    min_agreement: float = 0.95
    max_errors: int = 0
    min_records: int = 100


@dataclass
class Canary:
    """A canary in progress: who serves what, and since when."""

    function: str
    alias: str
    primary_version: str  # the function version the alias stays on
    canary_version: str
    primary_model: str  # model versions, as the metrics' model_version dimension
    canary_model: str
    model_name: str | None
    weight: float
    started: datetime
    shadow_model: str | None = None  # the model the canary's version scores as its shadow
    shadow_name: str | None = None


def canary_of(
    lam: Any, rollout: Rollout, *, layer_name: str, started: datetime, s3: Any | None = None
) -> Canary:
    """The canary ``rollout`` (publish-model with a canary) started at ``started``, with the
    shadow its version scores (the live model, when the publish could give it one).

    Raises:
        ConfigError: the rollout started no canary.
    """
    if (
        rollout.alias is None
        or rollout.canary_weight is None
        or rollout.new_function_version is None
        or rollout.old_function_version is None
    ):
        raise ConfigError("the publish started no canary, so there is nothing to bake")
    if rollout.old_model is None or rollout.old_model.version is None:
        raise ConfigError(
            f"alias {rollout.alias}'s version {rollout.old_function_version} serves no model "
            "mlayer knows, so the canary has nothing to be judged against; finish it with "
            f"mlayer promote or mlayer rollback --alias {rollout.alias}"
        )
    versions = {fv.version: fv for fv in function_versions(lam, rollout.function, layer_name)}
    carried = versions.get(rollout.new_function_version)
    shadow = shadow_of(ModelIndex(lam, layer_name, s3), rollout.function, carried)
    return Canary(
        function=rollout.function,
        alias=rollout.alias,
        primary_version=rollout.old_function_version,
        canary_version=rollout.new_function_version,
        primary_model=str(rollout.old_model.version),
        canary_model=str(rollout.new_model.version),
        model_name=rollout.new_model.name,
        weight=rollout.canary_weight,
        started=started,
        shadow_model=str(shadow.version) if shadow is not None and shadow.version else None,
        shadow_name=shadow.name if shadow is not None else None,
    )


@dataclass
class GuardFigure:
    """One guard at one check: the figure, its threshold, whether it held."""

    guard: str  # BAD_RATE, AGREEMENT or ERRORS
    value: float | None  # None: not measurable yet
    threshold: float
    held: bool | None  # None: not measured
    basis: str = ""  # how it was measured

    def describe(self) -> str:
        """``agreement 48.2% < 95%``, ``Lambda errors 0 <= 0``, ``bad-record rate n/a``."""
        if self.guard == AGREEMENT and self.threshold <= 0:
            return f"{self.guard} not judged (--min-agreement 0)"
        if self.value is None:
            return f"{self.guard} not measured"
        if self.guard == ERRORS:
            sign = "<=" if self.held else ">"
            return f"{self.guard} {self.value:.0f} {sign} {self.threshold:.0f}"
        if self.guard == AGREEMENT:
            sign = ">=" if self.held else "<"
        else:
            sign = "<=" if self.held else ">"
        return f"{self.guard} {_pct(self.value)} {sign} {_threshold(self.threshold)}"


@dataclass
class Check:
    """One look at the canary's metrics."""

    number: int
    elapsed_s: float
    records: int
    figures: list[GuardFigure]
    final: bool = False


@dataclass
class BakeResult:
    """How a bake ended: the decision, why, and the figures it decided on."""

    decision: str  # "promoted", "rolled back" or "left" (the alias changed meanwhile)
    reason: str
    figures: list[GuardFigure]
    records: int
    checks: int
    elapsed_s: float
    canary: Canary
    promotion: Promotion | None = None
    rollback: Rollback | None = None
    notes: list[str] = field(default_factory=list)


def judge(
    canary: Canary,
    figures: metrics.VersionFigures,
    live: metrics.VersionFigures | None,
    guards: Guards,
) -> list[GuardFigure]:
    """Each guard against the canary's figures (``live``: the live model's over the same
    window, for the label-share agreement)."""
    bad = GuardFigure(BAD_RATE, figures.bad_rate, guards.max_bad_rate, None)
    if figures.bad_rate is not None:
        bad.held = figures.bad_rate <= guards.max_bad_rate
    agreement, how = agreement_with_live(figures, live)
    agree = GuardFigure(AGREEMENT, agreement, guards.min_agreement, None, _basis(how, canary))
    if guards.min_agreement <= 0:
        agree.held = True
    elif agreement is not None:
        agree.held = agreement >= guards.min_agreement
    errors = GuardFigure(ERRORS, float(figures.errors or 0), float(guards.max_errors), None)
    errors.held = (figures.errors or 0) <= guards.max_errors
    errors.basis = f"version {canary.canary_version} through alias {canary.alias}"
    return [bad, agree, errors]


def bake(
    lam: Any,
    cloudwatch: Any,
    canary: Canary,
    *,
    guards: Guards,
    duration_s: float,
    interval_s: float,
    layer_name: str,
    s3: Any | None = None,
    progress: Callable[[Check], None] | None = None,
    percentiles: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BakeResult:
    """Watch ``canary`` for ``duration_s``, a check every ``interval_s``, then decide.

    A breach of the bad-record rate or the agreement (once the canary has ``min_records``
    records) or of the Lambda errors rolls back at once; the end of the bake with every
    guard holding promotes; the end with too few records, or a guard not measured, rolls
    back. ``progress`` is called after each check (a KeyboardInterrupt it raises, or one
    while sleeping, leaves the canary as it is and propagates).

    Raises:
        botocore's errors: CloudWatch or Lambda refused or is unreachable.
    """
    began = clock()
    number = 0
    while True:
        remaining = duration_s - (clock() - began)
        if remaining > 0:
            sleep(min(interval_s, remaining))
        elapsed = clock() - began
        final = elapsed >= duration_s
        number += 1
        figures, checked = _check(cloudwatch, canary, guards, percentiles)
        check = Check(number, elapsed, figures.records, checked, final)
        if progress is not None:
            progress(check)
        enough = figures.records >= guards.min_records
        breached = [f for f in checked if f.held is False and (enough or f.guard == ERRORS)]
        if breached or final:
            return _decide(
                lam, canary, guards, check, breached, figures, duration_s,
                layer_name=layer_name, s3=s3,
            )  # fmt: skip


def _check(
    cloudwatch: Any, canary: Canary, guards: Guards, percentiles: bool
) -> tuple[metrics.VersionFigures, list[GuardFigure]]:
    end = datetime.now(UTC) + timedelta(seconds=1)
    figures = metrics.version_figures(
        cloudwatch,
        canary.function,
        canary.canary_model,
        canary.started,
        shadow_version=canary.shadow_model,
        executed_version=canary.canary_version,
        alias=canary.alias,
        until=end,
        percentiles=percentiles,
    )
    live = None
    scored = figures.shadow
    if guards.min_agreement > 0 and not (scored is not None and scored.records):
        live = metrics.version_figures(
            cloudwatch,
            canary.function,
            canary.primary_model,
            canary.started,
            until=end,
            percentiles=False,
        )
    return figures, judge(canary, figures, live, guards)


def _decide(
    lam: Any,
    canary: Canary,
    guards: Guards,
    check: Check,
    breached: list[GuardFigure],
    figures: metrics.VersionFigures,
    duration_s: float,
    *,
    layer_name: str,
    s3: Any | None,
) -> BakeResult:
    records = figures.records
    result = BakeResult(
        decision="rolled back",
        reason="",
        figures=check.figures,
        records=records,
        checks=check.number,
        elapsed_s=check.elapsed_s,
        canary=canary,
    )
    over = f" over {records:,} record{'s' if records != 1 else ''}"
    if breached:
        result.reason = "; ".join(_with_basis(f, over) for f in breached)
    elif records < guards.min_records:
        result.reason = (
            f"too few records to judge: {records:,} < {guards.min_records:,} in "
            f"{human_duration(duration_s)}"
        )
    elif unmeasured := [f for f in check.figures if f.held is None]:
        result.reason = "; ".join(_unmeasured(f, canary) for f in unmeasured)
    else:
        result.decision = "promoted"
        held = ", ".join(_with_basis(f) for f in check.figures)
        result.reason = f"every guard held{over}: {held}"
    still = _still_routed(lam, canary)
    if still is not None:
        result.decision = "left"
        result.notes.append(still)
        return result
    name = function_name(canary.function)
    if result.decision == "promoted":
        result.promotion = promote(
            lam, function=name, alias=canary.alias, layer_name=layer_name, s3=s3
        )
    else:
        result.rollback = rollback(
            lam, function=name, layer_name=layer_name, alias=canary.alias, s3=s3
        )
    return result


def _still_routed(lam: Any, canary: Canary) -> str | None:
    """None when the alias still runs this canary; else what it does now."""
    current = get_alias(lam, canary.function, canary.alias)
    if current is None:
        return f"alias {canary.alias} no longer exists: nothing was done"
    weights = alias_weights(current)
    on = str(current["FunctionVersion"])
    if on == canary.primary_version and canary.canary_version in weights:
        return None
    routes = f"version {on}" + "".join(f" + version {v} at {w:.1%}" for v, w in weights.items())
    return (
        f"alias {canary.alias} no longer runs this canary (it routes to {routes}): promoted or "
        "rolled back meanwhile, so nothing was done"
    )


def _basis(how: str | None, canary: Canary) -> str:
    """How the agreement was measured, in words."""
    if how is None:
        return ""
    if how == "labels":
        why = "its shadow scored nothing" if canary.shadow_model else "the canary carries no shadow"
        return f"label shares against the live model v{canary.primary_model} over the bake: {why}"
    who = (
        f"the live model v{canary.primary_model}"
        if canary.shadow_model == canary.primary_model
        else f"model v{canary.shadow_model}"
    )
    per = "" if how == "shadow" else ", mean over batches"
    return f"shadow: {who} scored the same records{per}"


def _with_basis(f: GuardFigure, over: str = "") -> str:
    """The figure, over how many records, and how it was measured."""
    text = f.describe() + ("" if f.guard == ERRORS else over)
    return f"{text} ({f.basis})" if f.guard == AGREEMENT and f.basis else text


def _unmeasured(f: GuardFigure, canary: Canary) -> str:
    if f.guard == AGREEMENT:
        return (
            f"agreement could not be measured: the canary carries no shadow and the live model "
            f"v{canary.primary_model} or the canary predicted no labels during the bake (a "
            "regressor has none); pass --min-agreement 0 to bake without it"
        )
    return f"{f.guard} could not be measured"


def _pct(share: float) -> str:
    """A figure: 48.2%."""
    return f"{share * 100:.1f}%"


def _threshold(share: float) -> str:
    """A threshold as given: 1%, 95%, 0.5%."""
    return f"{round(share * 100, 6):g}%"


def human_duration(seconds: float) -> str:
    """2.5 -> 2.5s, 90 -> 1m30s, 600 -> 10m, 5400 -> 1h30m."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"
