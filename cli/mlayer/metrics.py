"""Reading the metrics back: what one model version did over a window, from CloudWatch.

The function's ``batch`` lines are CloudWatch EMF records (docs/CONTRACTS.md, "Metrics:
the `batch` line is a CloudWatch EMF record"): namespace ``mlayer``, dimensions
``function, model_version`` (and ``function, model_version, shadow_version`` for what a
shadow scored). Lambda adds its own ``Errors`` and ``Invocations`` in ``AWS/Lambda`` per
alias and executed version. :func:`version_figures` sums them over a window into a
:class:`VersionFigures`; ``mlayer compare``, ``mlayer status`` and the canary's bake read
through it.

How the figures are made, and where CloudWatch limits them:

- The window is asked as one period (rounded up to what CloudWatch accepts: a multiple of
  60 s, of 300 s beyond 15 days back, of 3600 s beyond 63 days), so every metric comes back
  as one datapoint; any datapoints returned are summed, so nothing depends on that.
  CloudWatch rounds the start down to the minute (the local endpoint does not).
- Counts (``records``, ``label:<x>``, ...) are Sums. Means (``confidence_mean``,
  ``predict_ms``, ...) are Sum / SampleCount: the mean over batches, each batch counting
  once whatever its size.
- The shadow's agreement is per record when the line carries ``shadow_agreed`` (records
  whose labels were identical): Sum(shadow_agreed) / Sum(shadow_records). Without it, the
  mean over batches of ``shadow_agreement`` (``ShadowFigures.agreement_basis`` says which).
- ``p99`` of ``predict_ms`` is asked separately: CloudWatch computes it from the raw values;
  an endpoint that cannot (moto) leaves it None with a note, and ``predict_ms_max`` stands.
- Label metric names are discovered with ``list_metrics`` (paginated; only metrics whose
  dimensions are exactly the directive's count, as CloudWatch keys metrics by their whole
  dimension set).

Takes a boto3 CloudWatch client; returns dataclasses; prints nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlayer.arns import function_name

NAMESPACE = "mlayer"
LAMBDA_NAMESPACE = "AWS/Lambda"
LABEL_PREFIX = "label:"
SHADOW_LABEL_PREFIX = "shadow_label:"
# Records the shadow labelled as the live model did (Count). Proposed beside
# shadow_agreement: with it the agreement is weighted by records, not by batches.
SHADOW_AGREED = "shadow_agreed"
# GetMetricData takes at most 500 queries a call.
MAX_QUERIES = 500
# list_metrics may be narrowed to metrics with data in the last 3 hours, its only option.
RECENTLY_ACTIVE = timedelta(hours=3)


@dataclass
class ShadowFigures:
    """What the shadow model scored beside the live one over the window."""

    version: str  # the shadow model's version
    records: int = 0
    agreement: float | None = None  # share (0-1) of records labelled as the live model did
    agreement_basis: str | None = None  # "records" (exact) or "batches" (mean of batch shares)
    abs_diff: float | None = None
    predict_ms: float | None = None  # mean over batches
    failures: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    label_shares: dict[str, float] = field(default_factory=dict)


@dataclass
class VersionFigures:
    """What one model version of a function did over ``[start, end]``, from the metrics."""

    function: str
    model_version: str
    start: datetime
    end: datetime
    batches: int = 0  # batch lines counted (SampleCount of records)
    records: int = 0
    predictions: int = 0
    bad_records: int = 0
    sink_failures: int = 0
    bad_rate: float | None = None  # bad_records / records; None without records
    labels: dict[str, int] = field(default_factory=dict)
    label_shares: dict[str, float] = field(default_factory=dict)  # of the labelled predictions
    confidence_mean: float | None = None  # means over batches
    score_mean: float | None = None
    score_stddev: float | None = None
    predict_ms: float | None = None  # mean over batches
    predict_ms_p99: float | None = None
    predict_ms_max: float | None = None
    shadow: ShadowFigures | None = None
    lambda_scope: str | None = None  # whose Lambda metrics: "scorer:live, version 2"
    invocations: int | None = None  # Lambda's, for lambda_scope
    errors: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seen(self) -> bool:
        """True when the window holds any metric of this version."""
        return bool(self.batches or self.records or self.invocations or self.errors)


def label_overlap(a: dict[str, int], b: dict[str, int]) -> float | None:
    """The overlap of two label distributions: sum over labels of min(share in a, share in b).

    1 when both models give each label as often, 0 when they never give the same labels;
    None when either has no labelled predictions.
    """
    shares_a, shares_b = shares(a), shares(b)
    if not shares_a or not shares_b:
        return None
    return sum(min(share, shares_b.get(label, 0.0)) for label, share in shares_a.items())


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Each label's share of the counts, most frequent first ({} without counts)."""
    total = sum(counts.values())
    if total <= 0:
        return {}
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {label: count / total for label, count in ordered}


def version_figures(
    cloudwatch: Any,
    function: str,
    model_version: str | int,
    since: timedelta | datetime,
    shadow_version: str | int | None = None,
    executed_version: str | None = None,
    alias: str | None = None,
    *,
    until: datetime | None = None,
    percentiles: bool = True,
) -> VersionFigures:
    """Sum the metrics of ``model_version`` of ``function`` over ``[now - since, now]``.

    Args:
        since: a look-back (timedelta), or the window's start (an aware datetime).
        shadow_version: read what that shadow model scored beside this version.
        executed_version, alias: read Lambda's Errors and Invocations of that function
            version invoked through that alias (``[FunctionName, Resource, ExecutedVersion]``);
            with the alias only, of the alias; with neither, of the whole function.
        until: the window's end [default: now, its second included].
        percentiles: ask CloudWatch for the p99 of predict_ms (False: skip the call).

    Raises:
        botocore's ClientError / connection errors: CloudWatch refused or is unreachable.
    """
    name = function_name(function)
    # The current second whole: CloudWatch (and moto) drop the end's fraction of a second.
    end = until or datetime.now(UTC) + timedelta(seconds=1)
    start = since if isinstance(since, datetime) else end - since
    if end <= start:
        end = start + timedelta(seconds=1)
    model = str(model_version)
    figures = VersionFigures(function=name, model_version=model, start=start, end=end)
    base = _dims(function=name, model_version=model)
    recent = datetime.now(UTC) - start <= RECENTLY_ACTIVE
    names = _metric_names(cloudwatch, base, recent)
    labels = sorted(n for n in names if n.startswith(LABEL_PREFIX))

    queries = _Queries()
    for metric in ("records", "predictions", "bad_records", "sink_failures"):
        queries.add(metric, NAMESPACE, metric, base, "Sum")
    queries.add("batches", NAMESPACE, "records", base, "SampleCount")
    for metric in ("confidence_mean", "score_mean", "score_stddev", "predict_ms"):
        queries.add(f"{metric}.sum", NAMESPACE, metric, base, "Sum")
        queries.add(f"{metric}.n", NAMESPACE, metric, base, "SampleCount")
    queries.add("predict_ms.max", NAMESPACE, "predict_ms", base, "Maximum")
    for label in labels:
        queries.add(label, NAMESPACE, label, base, "Sum")

    shadow_dims: list[dict[str, str]] = []
    shadow_labels: list[str] = []
    agreed = False
    if shadow_version is not None:
        shadow_dims = _dims(function=name, model_version=model, shadow_version=str(shadow_version))
        shadow_names = _metric_names(cloudwatch, shadow_dims, recent)
        shadow_labels = sorted(n for n in shadow_names if n.startswith(SHADOW_LABEL_PREFIX))
        agreed = SHADOW_AGREED in shadow_names
        for metric in ("shadow_records", "shadow_failures", SHADOW_AGREED):
            queries.add(metric, NAMESPACE, metric, shadow_dims, "Sum")
        for metric in ("shadow_agreement", "shadow_abs_diff", "shadow_predict_ms"):
            queries.add(f"{metric}.sum", NAMESPACE, metric, shadow_dims, "Sum")
            queries.add(f"{metric}.n", NAMESPACE, metric, shadow_dims, "SampleCount")
        for label in shadow_labels:
            queries.add(label, NAMESPACE, label, shadow_dims, "Sum")

    lambda_dims = [{"Name": "FunctionName", "Value": name}]
    if alias or executed_version:
        lambda_dims.append({"Name": "Resource", "Value": f"{name}:{alias or executed_version}"})
    if alias and executed_version:
        lambda_dims.append({"Name": "ExecutedVersion", "Value": str(executed_version)})
    queries.add("Invocations", LAMBDA_NAMESPACE, "Invocations", lambda_dims, "Sum")
    queries.add("Errors", LAMBDA_NAMESPACE, "Errors", lambda_dims, "Sum")

    got = queries.run(cloudwatch, start, end)

    def total(key: str) -> int:
        return round(sum(got.get(key, [])))

    def mean(key: str) -> float | None:
        n = sum(got.get(f"{key}.n", []))
        return sum(got.get(f"{key}.sum", [])) / n if n else None

    figures.batches = total("batches")
    figures.records = total("records")
    figures.predictions = total("predictions")
    figures.bad_records = total("bad_records")
    figures.sink_failures = total("sink_failures")
    figures.bad_rate = figures.bad_records / figures.records if figures.records else None
    figures.labels = _counts(labels, LABEL_PREFIX, got)
    figures.label_shares = shares(figures.labels)
    figures.confidence_mean = mean("confidence_mean")
    figures.score_mean = mean("score_mean")
    figures.score_stddev = mean("score_stddev")
    figures.predict_ms = mean("predict_ms")
    maxima = got.get("predict_ms.max", [])
    figures.predict_ms_max = max(maxima) if maxima else None
    if percentiles and figures.batches:
        figures.predict_ms_p99 = _p99(cloudwatch, base, start, end, figures.notes)

    if shadow_version is not None:
        shadow = ShadowFigures(version=str(shadow_version))
        shadow.records = total("shadow_records")
        shadow.failures = total("shadow_failures")
        if agreed and shadow.records:
            shadow.agreement = total(SHADOW_AGREED) / shadow.records
            shadow.agreement_basis = "records"
        elif (batch_mean := mean("shadow_agreement")) is not None:
            shadow.agreement = batch_mean
            shadow.agreement_basis = "batches"
        shadow.abs_diff = mean("shadow_abs_diff")
        shadow.predict_ms = mean("shadow_predict_ms")
        shadow.labels = _counts(shadow_labels, SHADOW_LABEL_PREFIX, got)
        shadow.label_shares = shares(shadow.labels)
        figures.shadow = shadow

    figures.lambda_scope = _scope(name, alias, executed_version)
    figures.invocations = total("Invocations")
    figures.errors = total("Errors")
    return figures


def _scope(name: str, alias: str | None, executed_version: str | None) -> str:
    if alias and executed_version:
        return f"{name}:{alias}, version {executed_version}"
    if alias or executed_version:
        return f"{name}:{alias or executed_version}"
    return name


def _dims(**values: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in values.items()]


def _counts(names: Iterable[str], prefix: str, got: dict[str, list[float]]) -> dict[str, int]:
    counts = {n[len(prefix) :]: round(sum(got.get(n, []))) for n in names}
    return {label: count for label, count in counts.items() if count}


def _metric_names(cloudwatch: Any, dims: list[dict[str, str]], recent: bool) -> set[str]:
    """The names of the ``mlayer`` metrics whose dimensions are exactly ``dims``."""
    wanted = {(d["Name"], d["Value"]) for d in dims}
    kwargs: dict[str, Any] = {"Namespace": NAMESPACE, "Dimensions": dims}
    if recent:
        kwargs["RecentlyActive"] = "PT3H"
    names = set()
    for page in cloudwatch.get_paginator("list_metrics").paginate(**kwargs):
        for metric in page.get("Metrics", []):
            have = {(d["Name"], d["Value"]) for d in metric.get("Dimensions", [])}
            if have == wanted:
                names.add(metric["MetricName"])
    return names


def period_for(start: datetime, end: datetime, now: datetime | None = None) -> int:
    """One period covering ``[start, end]`` as CloudWatch will read it, in seconds.

    CloudWatch rounds a start within 15 days down to the minute (to 5 minutes within 63
    days, to the hour beyond), and takes periods in multiples of 60 s (300 s, 3600 s for
    those older starts); the period covers from the rounded start to ``end``.
    """
    age = (now or datetime.now(UTC)) - start
    step = 60 if age <= timedelta(days=15) else 300 if age <= timedelta(days=63) else 3600
    rounded = start.timestamp() // step * step
    return max(step, math.ceil((end.timestamp() - rounded) / step) * step)


class _Queries:
    """GetMetricData queries of one window, asked in batches of MAX_QUERIES."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.stats: list[dict[str, Any]] = []

    def add(
        self, key: str, namespace: str, metric: str, dims: list[dict[str, str]], stat: str
    ) -> None:
        self.keys.append(key)
        self.stats.append(
            {
                "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims},
                "Stat": stat,
            }
        )

    def run(self, cloudwatch: Any, start: datetime, end: datetime) -> dict[str, list[float]]:
        """{key: the values of its datapoints} (absent keys: no data in the window)."""
        period = period_for(start, end)
        got: dict[str, list[float]] = {}
        paginator = cloudwatch.get_paginator("get_metric_data")
        for first in range(0, len(self.stats), MAX_QUERIES):
            batch = [
                {"Id": f"q{i}", "MetricStat": {**stat, "Period": period}, "ReturnData": True}
                for i, stat in enumerate(self.stats[first : first + MAX_QUERIES], first)
            ]
            for page in paginator.paginate(
                MetricDataQueries=batch, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
            ):
                for result in page.get("MetricDataResults", []):
                    key = self.keys[int(result["Id"][1:])]
                    got.setdefault(key, []).extend(float(v) for v in result.get("Values", []))
        return got


def _p99(
    cloudwatch: Any, dims: list[dict[str, str]], start: datetime, end: datetime, notes: list[str]
) -> float | None:
    """The p99 of predict_ms over the window, or None (with a note) where it is not given."""
    queries = _Queries()
    queries.add("p99", NAMESPACE, "predict_ms", dims, "p99")
    try:
        values = queries.run(cloudwatch, start, end).get("p99", [])
    except Exception:
        # Percentiles are CloudWatch's own: moto answers them with an error (a 500 from
        # moto_server, a TypeError in process). Whatever the endpoint says, the other
        # figures stand, and the maximum is there instead.
        notes.append("p99 of predict_ms is not available from this endpoint: the maximum is shown")
        return None
    if len(values) > 1:
        notes.append("p99 of predict_ms came in several periods: the highest is shown")
    return max(values) if values else None
