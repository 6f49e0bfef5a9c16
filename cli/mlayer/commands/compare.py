"""``mlayer compare``: the models a function serves side by side, from their metrics; and the
figures' wording that ``mlayer status`` shares. Thin: parses options, calls
:func:`mlayer.compare.compare`, renders a table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import click

from mlayer import options

# Label rows beyond these are summed in one row: the function names at most 20 a batch.
LABEL_ROWS = 20


@click.command()
@options.function
@options.alias
@options.model_layer
@click.option(
    "--since",
    type=options.Duration(),
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="How far back to read the metrics: 30m, 1h, 2d, ...",
)
@options.json_output
@click.pass_obj
def compare(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    since: timedelta,
    as_json: bool,
) -> None:
    """Show the models the function serves side by side, from their metrics.

    The live model (the alias's version, else $LATEST's) beside the canary (while the
    alias routes a share to another version) and the shadow (a model the live version
    scores beside its own, writing nothing): records, predictions, bad-record rate,
    agreement with the live model, each label's share, confidence (or score) mean, predict
    time and Lambda errors, summed from the batch lines' metrics in CloudWatch over --since.

    Agreement is per record for a shadow, and for a canary whose version scores the live
    model as its shadow; else the overlap of the two models' label shares.

    \b
    Example:
      mlayer compare --function scorer --alias live
      mlayer compare --function scorer --alias live --since 30m --json
    """
    from mlayer.compare import compare as do_compare
    from mlayer.contracts import default_layer_name

    function = options.require_function(function)
    result = do_compare(
        settings.client("lambda"),
        settings.client("cloudwatch"),
        function=function,
        layer_name=model_layer or default_layer_name(function, "model"),
        alias=alias,
        since=since,
        s3=settings.client("s3"),
        percentiles=not settings.is_local,
    )
    if as_json:
        data = asdict(result)
        data["since_s"] = since.total_seconds()
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _render(result, since)


def _render(c: Any, since: timedelta) -> None:
    from rich.console import Console
    from rich.table import Table

    from mlayer.canary import human_duration

    window = (
        f"{c.start:%Y-%m-%d %H:%M:%S} to {c.end:%H:%M:%S} UTC "
        f"({human_duration(since.total_seconds())})"
    )
    table = Table(title=f"{c.function}, {c.live_from}: {window}", title_justify="left")
    table.add_column("")
    for col in c.columns:
        where = f"version {col.function_version}"
        if col.weight is not None:
            where += f" at {col.weight:.1%}"
        if col.role == "shadow":
            where = f"beside version {col.function_version}"
        model = col.model.split(" (")[0]  # "sentiment v2", without where it lives
        table.add_column(f"{col.role}\n{model}\n{where}", justify="right")

    def row(label: str, cells: list[str]) -> None:
        table.add_row(label, *cells)

    cols = c.columns
    row("records", [f"{x.records:,}" for x in cols])
    row("predictions", [_count(x.predictions) for x in cols])
    row("bad-record rate", [_share(x.bad_rate) for x in cols])
    row("agreement with live", [_share(x.agreement) if x.role != "live" else "" for x in cols])
    labels = _labels(cols)
    for label in labels[:LABEL_ROWS]:
        row(
            f"label {label}",
            [_share(x.label_shares.get(label, 0.0)) if x.labels else "-" for x in cols],
        )
    if len(labels) > LABEL_ROWS:
        rest = labels[LABEL_ROWS:]
        row(
            f"{len(rest)} more labels",
            [
                _share(sum(x.label_shares.get(r, 0.0) for r in rest)) if x.labels else "-"
                for x in cols
            ],
        )
    if any(x.score_mean is not None for x in cols):
        row("score mean", [_number(x.score_mean) for x in cols])
    else:
        row("confidence mean", [_number(x.confidence_mean) for x in cols])
    if any(x.abs_diff is not None for x in cols):
        row("abs diff with live", [_number(x.abs_diff) for x in cols])
    row("predict ms, mean", [_ms(x.predict_ms) for x in cols])
    if any(x.predict_ms_p99 is not None for x in cols):
        row("predict ms, p99", [_ms(x.predict_ms_p99) for x in cols])
    else:
        row("predict ms, max", [_ms(x.predict_ms_max) for x in cols])
    row(
        "Lambda errors",
        [f"{x.errors:,} of {x.invocations:,}" if x.invocations is not None else "-" for x in cols],
    )
    if any(x.shadow_failures for x in cols):
        row("shadow failures", [_count(x.shadow_failures) for x in cols])
    console = Console(soft_wrap=True)
    console.print(table)
    for col in cols:
        if col.agreement_basis:
            console.print(f"agreement of the {col.role}: {col.agreement_basis}", highlight=False)
    if not any(x.seen for x in cols):
        console.print(
            f"No metrics in the last {human_duration(since.total_seconds())}: no batch was "
            "scored (or CloudWatch has not received them yet: metrics arrive a minute or two "
            "after the invocations).",
            highlight=False,
        )
    for note in c.notes:
        console.print(f"Note: {note}", highlight=False)


def _labels(cols: list[Any]) -> list[str]:
    """Every label any column gave, by the live model's share first, then the others'."""
    order: dict[str, float] = {}
    for col in cols:
        for label, share in col.label_shares.items():
            order.setdefault(label, share)
    return sorted(order, key=lambda label: -order[label])


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def shares_text(shares: dict[str, float], limit: int = 5) -> str:
    """``positive 61.0%, negative 39.0%`` (the first ``limit``, then how many more)."""
    items = [f"{label} {share * 100:.1f}%" for label, share in list(shares.items())[:limit]]
    if len(shares) > limit:
        items.append(f"{len(shares) - limit} more")
    return ", ".join(items)


def status_lines(c: Any) -> list[str]:
    """The last hour's figures of each served model, for ``mlayer status``."""
    if c.unavailable:
        return [f"Last hour: metrics not available: {c.unavailable}"]
    lines = [f"Last hour (metrics since {c.start:%H:%M:%S} UTC):"]
    for col in c.columns:
        who = f"  {col.role:<7} {col.model}"
        if col.weight is not None:
            who += f" at {col.weight:.1%}"
        if not col.seen:
            lines.append(f"{who}: no metrics in the last hour")
            continue
        if col.role == "shadow":
            figures = [f"{col.records:,} records scored beside the live model"]
            figures.append(f"agreement {_share(col.agreement)}")
        else:
            figures = [f"{col.records:,} records", f"bad-record rate {_share(col.bad_rate)}"]
        if col.label_shares:
            figures.append(f"labels {shares_text(col.label_shares)}")
        lines.append(f"{who}: {'; '.join(figures)}")
    return lines


COMMANDS = [compare]
