"""Metrics as the function and Lambda would leave them in CloudWatch, for the reader, canary,
compare and status tests.

:func:`batch_line` writes a ``batch`` line's EMF part as docs/CONTRACTS.md ("Metrics: the
`batch` line is a CloudWatch EMF record") lays it out; :func:`put_line` turns it into
``put_metric_data`` calls as CloudWatch Logs (or the local runner) does: one datum per
metric of each directive, with the directive's dimensions, at the line's timestamp.
:func:`put_invocations` puts Lambda's own ``Invocations`` / ``Errors`` of an alias's version.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Shadow:
    """What a shadow scored in one batch."""

    version: str
    labels: list[str]  # the shadow's label for each record the live model labelled
    abs_diff: float = 0.0
    predict_ms: float = 5.0
    failed: bool = False
    agreed_metric: bool = True  # emit shadow_agreed (the proposed per-record count)


@dataclass
class Batch:
    """One invocation's batch: the live model's labels, bad records, timings."""

    model_version: str
    labels: list[str]
    bad: int = 0
    sink_failures: int = 0
    predict_ms: float = 10.0
    confidence: float | None = 0.9
    shadow: Shadow | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def batch_line(function: str, batch: Batch) -> dict[str, Any]:
    """The EMF members of the batch line the function logs for ``batch``."""
    counts = Counter(batch.labels)
    metrics: dict[str, float] = {
        "records": len(batch.labels) + batch.bad,
        "predictions": len(batch.labels),
        "bad_records": batch.bad,
        "sink_failures": batch.sink_failures,
        "decode_ms": 1.0,
        "predict_ms": batch.predict_ms,
        "write_ms": 2.0,
    }
    metrics.update({f"label:{label}": n for label, n in counts.items()})
    if batch.confidence is not None:
        metrics["confidence_mean"] = batch.confidence
    directives: list[dict[str, Any]] = [
        {
            "Namespace": "mlayer",
            "Dimensions": [["function", "model_version"]],
            "Metrics": [{"Name": name, "Unit": _unit(name)} for name in metrics],
        }
    ]
    line: dict[str, Any] = {
        "message": "batch",
        "function": function,
        "model_version": batch.model_version,
        **metrics,
    }
    shadow = batch.shadow
    if shadow is not None:
        agreed = sum(a == b for a, b in zip(batch.labels, shadow.labels, strict=True))
        scored = 0 if shadow.failed else len(shadow.labels)
        extra: dict[str, float] = {
            "shadow_records": scored,
            "shadow_failures": 1 if shadow.failed else 0,
        }
        if scored:
            extra.update(
                {
                    "shadow_agreement": agreed / scored,
                    "shadow_abs_diff": shadow.abs_diff,
                    "shadow_predict_ms": shadow.predict_ms,
                }
            )
            extra.update({f"shadow_label:{k}": n for k, n in Counter(shadow.labels).items()})
            if shadow.agreed_metric:
                extra["shadow_agreed"] = agreed
        directives.append(
            {
                "Namespace": "mlayer",
                "Dimensions": [["function", "model_version", "shadow_version"]],
                "Metrics": [{"Name": name, "Unit": _unit(name)} for name in extra],
            }
        )
        line["shadow_version"] = shadow.version
        line.update(extra)
    line["_aws"] = {"Timestamp": int(batch.at.timestamp() * 1000), "CloudWatchMetrics": directives}
    return line


def _unit(name: str) -> str:
    if name.endswith("_ms"):
        return "Milliseconds"
    if name in ("confidence_mean", "shadow_agreement", "shadow_abs_diff"):
        return "None"
    return "Count"


def put_line(cloudwatch: Any, line: dict[str, Any]) -> None:
    """What CloudWatch Logs makes of an EMF line: each directive's metrics, put."""
    emf = line["_aws"]
    at = datetime.fromtimestamp(emf["Timestamp"] / 1000, UTC)
    for directive in emf["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dims = [{"Name": d, "Value": str(line[d])} for d in dimension_set]
            data = [
                {
                    "MetricName": m["Name"],
                    "Dimensions": dims,
                    "Value": float(line[m["Name"]]),
                    "Unit": m["Unit"],
                    "Timestamp": at,
                }
                for m in directive["Metrics"]
            ]
            cloudwatch.put_metric_data(Namespace=directive["Namespace"], MetricData=data)


def put_batches(cloudwatch: Any, function: str, *batches: Batch) -> None:
    for batch in batches:
        put_line(cloudwatch, batch_line(function, batch))


def put_invocations(
    cloudwatch: Any,
    function: str,
    alias: str,
    version: str,
    *,
    invocations: int = 1,
    errors: int = 0,
    at: datetime | None = None,
) -> None:
    """Lambda's Invocations and Errors of ``version`` invoked through ``alias``, each with
    the three dimension sets Lambda gives them."""
    when = at or datetime.now(UTC)
    sets = [
        [("FunctionName", function)],
        [("FunctionName", function), ("Resource", f"{function}:{alias}")],
        [
            ("FunctionName", function),
            ("Resource", f"{function}:{alias}"),
            ("ExecutedVersion", version),
        ],
    ]
    for dims in sets:
        cloudwatch.put_metric_data(
            Namespace="AWS/Lambda",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    "Value": float(value),
                    "Unit": "Count",
                    "Timestamp": when,
                }
                for name, value in (("Invocations", invocations), ("Errors", errors))
            ],
        )
