"""``mlayer cost``: what the pipeline costs on Lambda, from parameters or measured runs.

The arithmetic lives in :mod:`mlayer.cost` (its docstring states the model), prices in
:mod:`mlayer.prices`, REPORT reading in :mod:`mlayer.reports`; this module parses options,
calls them, and renders a table or JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from mlayer import options

if TYPE_CHECKING:
    from decimal import Decimal

    from mlayer.cost import Estimate, MemoryCost
    from mlayer.snapstart_cost import SnapStartCost


class DecimalType(click.ParamType):
    """A number kept as a Decimal (0.07 stays exactly 0.07), with an optional lower bound."""

    name = "number"

    def __init__(self, *, minimum: int = 0, open_minimum: bool = False) -> None:
        self.minimum = minimum
        self.open_minimum = open_minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from decimal import Decimal, InvalidOperation

        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value).strip().lstrip("$"))
        except InvalidOperation:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not number.is_finite():
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.minimum or (self.open_minimum and number == self.minimum):
            relation = ">" if self.open_minimum else ">="
            self.fail(f"{value} must be {relation} {self.minimum}", param, ctx)
        return number


POSITIVE = DecimalType(open_minimum=True)
NON_NEGATIVE = DecimalType()


@click.command()
@click.option(
    "--memory",
    type=click.IntRange(128, 10_240),
    multiple=True,
    metavar="MB",
    help="Function memory (128-10,240 MB). Repeat to compare sizes (one row each, cheapest "
    "marked); pair each with a --duration-ms.",
)
@click.option(
    "--duration-ms",
    type=DecimalType(open_minimum=True),
    multiple=True,
    metavar="MS",
    help="Warm duration of one invocation, whatever its batch size (the spreadsheet model). "
    "Once, or once per --memory in the same order.",
)
@click.option(
    "--duration-per-record-ms",
    type=NON_NEGATIVE,
    multiple=True,
    metavar="MS",
    help="Duration added per record in the batch: an invocation of k records runs "
    "duration-ms + k x this. Once, or once per --memory.",
)
@click.option(
    "--init-ms",
    type=NON_NEGATIVE,
    multiple=True,
    metavar="MS",
    help="Init (cold start) duration, billed since 2025-08-01. Once, or once per --memory. "
    "With reports: replaces the measured one.",
)
@click.option(
    "--invocations-per-environment",
    type=click.IntRange(min=1),
    metavar="N",
    help="Invocations an execution environment serves, over which one cold start is "
    "spread [default: 1 with --init-ms; measured with reports].",
)
@click.option(
    "--storage-mb",
    type=click.IntRange(512, 10_240),
    default=512,
    show_default=True,
    metavar="MB",
    help="Ephemeral storage (/tmp), 512-10,240 MB; over 512 MB is billed.",
)
@options.arch
@click.option(
    "--granularity-ms",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="MS",
    help="Billing step: 1 since December 2020, 100 before.",
)
@click.option(
    "--requests/--no-requests",
    default=True,
    show_default=True,
    help="Include the per-request price.",
)
@click.option(
    "--free-tier",
    is_flag=True,
    help="Take the monthly free tier (1 M requests, 400,000 GB-s) off monthly totals and "
    "break-even volumes. It is per account: only if nothing else uses it.",
)
@click.option("--records", type=click.IntRange(min=1), metavar="N", help="Records in one ingest.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    multiple=True,
    metavar="N",
    help="Records per invocation (the event source mapping's BatchSize, 1-10,000). Repeat "
    "to compare [default: 1].",
)
@click.option(
    "--ingests-per-month",
    type=NON_NEGATIVE,
    metavar="N",
    help="Ingests a month: prices the month across the duration tiers (needs --records).",
)
@click.option(
    "--filtered-share",
    type=NON_NEGATIVE,
    default="0",
    metavar="SHARE",
    help="Share of the records the trigger's FilterCriteria drop before batching (0 to below "
    "1; run-local prints it): they are never invoked, so an ingest takes fewer invocations "
    "(needs --records) [default: 0].",
)
@click.option(
    "--compare-hourly",
    type=POSITIVE,
    metavar="USD",
    help="An always-on endpoint's hourly price (e.g. 0.07 for ml.t2.medium): break-even volume.",
)
@click.option(
    "--compare-per-second",
    type=POSITIVE,
    metavar="USD",
    help="A per-second-of-inference price (e.g. 0.00008, SageMaker Serverless at 4 GB), "
    "applied to the same billed warm duration per invocation.",
)
@click.option(
    "--hours-per-month",
    type=POSITIVE,
    default="720",
    show_default=True,
    metavar="H",
    help="Hours an always-on endpoint runs a month (720: 30 days).",
)
@click.option(
    "--price-gb-s",
    type=NON_NEGATIVE,
    metavar="USD",
    help="Duration price per GB-s, flat (replaces the tiers of the price file).",
)
@click.option(
    "--price-requests", type=NON_NEGATIVE, metavar="USD", help="Price per million requests."
)
@click.option(
    "--price-storage",
    type=NON_NEGATIVE,
    metavar="USD",
    help="Ephemeral storage price per GB-s over 512 MB.",
)
@click.option(
    "--prices",
    "prices_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A price file of the shape of mlayer's prices.json [default: the bundled one].",
)
@click.option(
    "--from-report",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Price measured REPORT lines (local runner log, CloudWatch export, or "
    "`aws logs filter-log-events` JSON); one row per Memory Size.",
)
@click.option(
    "--from-logs",
    metavar="FUNCTION",
    help="Price the REPORT lines of FUNCTION from CloudWatch Logs (/aws/lambda/FUNCTION).",
)
@click.option(
    "--since",
    type=options.Duration(),
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="How far back --from-logs reads: 30m, 1h, 7d, ...",
)
@click.option(
    "--snapstart",
    is_flag=True,
    help="Compare SnapStart (snapshot cache per published version, a restore per cold start) "
    "with the billed init it replaces, and give the cold-start rate where each wins.",
)
@options.runtime
@click.option(
    "--cold-starts-per-hour",
    type=NON_NEGATIVE,
    metavar="N",
    help="With --snapstart: cold starts (new execution environments) an hour [default: the "
    "month's invocations / --invocations-per-environment].",
)
@click.option(
    "--snapshot-versions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="With --snapstart: published versions whose snapshots are cached (2 during a canary).",
)
@click.option(
    "--restore-ms",
    type=NON_NEGATIVE,
    metavar="MS",
    help="With --snapstart: Billed Restore Duration of one restore [default: the reports' "
    "mean, else 200].",
)
@options.json_output
@click.pass_context
def cost(
    ctx: click.Context,
    memory: tuple[int, ...],
    duration_ms: tuple[Decimal, ...],
    duration_per_record_ms: tuple[Decimal, ...],
    init_ms: tuple[Decimal, ...],
    invocations_per_environment: int | None,
    storage_mb: int,
    arch: str,
    granularity_ms: int,
    requests: bool,
    free_tier: bool,
    records: int | None,
    batch_size: tuple[int, ...],
    ingests_per_month: Decimal | None,
    filtered_share: Decimal,
    compare_hourly: Decimal | None,
    compare_per_second: Decimal | None,
    hours_per_month: Decimal,
    price_gb_s: Decimal | None,
    price_requests: Decimal | None,
    price_storage: Decimal | None,
    prices_path: str | None,
    from_report: str | None,
    from_logs: str | None,
    since: Any,
    snapstart: bool,
    runtime: str | None,
    cold_starts_per_hour: Decimal | None,
    snapshot_versions: int,
    restore_ms: Decimal | None,
    as_json: bool,
) -> None:
    """Estimate what Lambda costs per invocation, record, ingest and month.

    From parameters (memory, duration per invocation and per record, cold starts, batch
    sizes, records per ingest) or from measured REPORT lines (--from-report FILE,
    --from-logs FUNCTION). Compares with an always-on endpoint (--compare-hourly) or a
    per-second service (--compare-per-second) and gives the break-even volume. Prices:
    the bundled prices.json for the region (--region, default us-east-1) and --arch.

    \b
    Example:
      mlayer cost --memory 192 --duration-ms 4000 --granularity-ms 100 --no-requests \\
        --records 50000 --batch-size 1 --batch-size 10 --batch-size 100 \\
        --compare-hourly 0.07
      mlayer cost --memory 512 --memory 1024 --duration-ms 180 --duration-ms 95 \\
        --init-ms 900 --invocations-per-environment 1000 --batch-size 100 --arch arm64
      mlayer cost --from-report run.log --batch-size 100 --records 50000 --json
      mlayer cost --memory 512 --duration-ms 40 --batch-size 100 --records 50000 \\
        --ingests-per-month 30 --filtered-share 0.4
      mlayer --region eu-west-1 cost --from-logs scorer --since 7d --batch-size 100
      mlayer cost --memory 1024 --duration-ms 120 --init-ms 1500 --snapstart \\
        --runtime python3.13 --cold-starts-per-hour 20
    """
    from decimal import Decimal
    from pathlib import Path

    from mlayer import cost as model
    from mlayer import prices, reports

    if from_report and from_logs:
        raise click.UsageError("give --from-report or --from-logs, not both")
    if not snapstart:
        for snap_flag, snap_given in (
            ("--cold-starts-per-hour", cold_starts_per_hour is not None),
            ("--restore-ms", restore_ms is not None),
            ("--snapshot-versions", snapshot_versions != 1),
        ):
            if snap_given:
                raise click.UsageError(f"{snap_flag} prices SnapStart: add --snapstart")
    measuring = bool(from_report or from_logs)
    if measuring:
        for flag, given in (
            ("--duration-ms", duration_ms),
            ("--duration-per-record-ms", duration_per_record_ms),
        ):
            if given:
                raise click.UsageError(
                    f"{flag} cannot be combined with --from-report / --from-logs: the "
                    "durations are measured"
                )
        if len(batch_size) > 1:
            raise click.BadParameter(
                "measured invocations have one batch size: give the batch size the measured "
                "runs used, once",
                param_hint="--batch-size",
            )
        if len(init_ms) > 1:
            raise click.BadParameter(
                "give it once with --from-report / --from-logs", param_hint="--init-ms"
            )
    elif not memory or not (duration_ms or duration_per_record_ms):
        raise click.UsageError(
            "give --memory MB and --duration-ms MS (and/or --duration-per-record-ms), or "
            "measure: --from-report FILE / --from-logs FUNCTION"
        )

    if ingests_per_month is not None and records is None:
        raise click.UsageError(
            "--ingests-per-month needs --records (the records in one ingest) to know the "
            "month's volume"
        )

    settings = ctx.obj
    region = settings.region or settings.session().region_name or prices.DEFAULT_PRICING_REGION
    price_table = prices.load_prices(
        region,
        arch,
        path=Path(prices_path) if prices_path else None,
        price_gb_s=price_gb_s,
        price_requests=price_requests,
        price_storage=price_storage,
    )
    scenario = model.Scenario(
        storage_mb=storage_mb,
        granularity_ms=granularity_ms,
        requests=requests,
        free_tier=free_tier,
        records=records,
        batch_sizes=tuple(dict.fromkeys(batch_size)) or (1,),
        ingests_per_month=ingests_per_month,
        compare_hourly=compare_hourly,
        compare_per_second=compare_per_second,
        hours_per_month=hours_per_month,
        filtered_share=filtered_share,
    )
    n_env = Decimal(invocations_per_environment) if invocations_per_environment else None
    if snapstart:
        from mlayer import snapstart_cost

        snapstart_cost.check_runtime(runtime)
    measured: list[Any] = []
    if measuring:
        if from_report:
            measured = reports.read_reports(Path(from_report))
            source = f"REPORT lines in {from_report}"
        else:
            assert from_logs is not None
            measured = reports.fetch_reports(settings.client("logs"), from_logs, since)
            source = f"CloudWatch Logs {reports.log_group_for(from_logs)}"
        restore_gb = (
            prices.snapstart(region, path=Path(prices_path) if prices_path else None).restore_gb
            if any(r.restored for r in measured)
            else None
        )
        estimate = model.estimate_from_reports(
            price_table,
            scenario,
            measured,
            memory_sizes=memory,
            init_ms=init_ms[0] if init_ms else None,
            invocations_per_environment=n_env,
            source=source,
            restore_gb_price=restore_gb,
        )
    else:
        estimate = model.estimate(
            price_table,
            scenario,
            _workloads(memory, duration_ms, duration_per_record_ms, init_ms, n_env),
        )
    comparisons: list[Any] = []
    if snapstart:
        snap_prices = prices.snapstart(region, path=Path(prices_path) if prices_path else None)
        comparisons = [
            snapstart_cost.compare(
                row,
                scenario,
                price_table,
                snap_prices,
                snapstart_cost.SnapStartInputs(
                    cold_starts_per_hour=cold_starts_per_hour,
                    snapshot_versions=snapshot_versions,
                    restore_ms=restore_ms,
                    measured_restore_ms=snapstart_cost.measured_restore_ms(
                        measured, row.workload.memory_mb
                    ),
                ),
            )
            for row in estimate.rows
        ]
    if as_json:
        data = estimate.to_dict()
        if comparisons:
            by_memory = {c.memory_mb: c for c in comparisons}
            data["snapstart"] = by_memory[estimate.best.workload.memory_mb].to_dict()
            for row in data["memory_sizes"]:
                row["snapstart"] = by_memory[row["memory_mb"]].to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        _render(estimate, comparisons)


def _per_memory(values: tuple[Decimal, ...], count: int, flag: str) -> list[Decimal | None]:
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) == count:
        return list(values)
    raise click.BadParameter(
        f"given {len(values)} times for {count} --memory value(s): give it once (the same "
        "for every size) or once per --memory, in the same order",
        param_hint=flag,
    )


def _workloads(
    memory: tuple[int, ...],
    duration_ms: tuple[Decimal, ...],
    per_record_ms: tuple[Decimal, ...],
    init_ms: tuple[Decimal, ...],
    n_env: Decimal | None,
) -> list[Any]:
    from decimal import Decimal

    from mlayer.cost import Workload

    sizes = list(dict.fromkeys(memory))
    if len(sizes) != len(memory):
        raise click.BadParameter("each memory size once, please", param_hint="--memory")
    count = len(sizes)
    if count > 1 and len(duration_ms) != count and len(per_record_ms) != count:
        given = "--duration-ms" if duration_ms else "--duration-per-record-ms"
        raise click.BadParameter(
            f"{count} memory sizes but {given} given {len(duration_ms or per_record_ms)} "
            "time(s): durations change with memory (more memory, more CPU), so give one "
            "per --memory in the same order, or measure them with --from-report",
            param_hint=given,
        )
    durations = _per_memory(duration_ms, count, "--duration-ms")
    per_records = _per_memory(per_record_ms, count, "--duration-per-record-ms")
    inits = _per_memory(init_ms, count, "--init-ms")
    zero = Decimal(0)
    return [
        Workload(
            memory_mb=size,
            duration_ms=durations[i] or zero,
            duration_per_record_ms=per_records[i] or zero,
            init_ms=inits[i] or zero,
            invocations_per_environment=n_env or Decimal(1),
        )
        for i, size in enumerate(sizes)
    ]


# --------------------------------------------------------------------------- rendering


def usd(value: Decimal) -> str:
    """Dollars, readable at any scale: cents from $1 up, else 4 significant digits."""
    from decimal import Decimal

    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    digits = value.quantize(Decimal(1).scaleb(value.adjusted() - 3))
    return "$" + format(digits, "f").rstrip("0").rstrip(".")


def _count(value: Decimal | int | None) -> str:
    if value is None:
        return "-"
    return f"{round(value):,}"


def _ms(value: Decimal) -> str:
    return (
        f"{value.normalize():,f} ms" if value == value.to_integral_value() else f"{value:,.2f} ms"
    )


def _price(value: Decimal) -> str:
    """A unit price exactly as the price data has it (0.0000166667, not rounded)."""
    return "$" + format(value, "f")


def _table(title: str, headers: list[str], rows: list[list[str]], left: int = 0) -> Any:
    """A rich table whose value cells never truncate: headers wrap instead.

    The first ``left`` columns are left-aligned text; the rest are right-aligned values.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for index, header in enumerate(headers):
        widest = max((Text.from_markup(row[index]).cell_len for row in rows), default=1)
        # Value columns are as wide as their widest cell; headers and text columns wrap.
        table.add_column(
            header,
            justify="left" if index < left else "right",
            min_width=None if index < left else min(widest, 40),
        )
    for row in rows:
        table.add_row(*row)
    return table


def _render(estimate: Estimate, comparisons: list[SnapStartCost]) -> None:
    import os

    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured output has no width to fit; 80 columns would crop the tables.
        console = Console(width=120)
    prices = estimate.prices
    scenario = estimate.scenario
    best = estimate.best
    first = best.first
    console.print(
        f"[bold]Lambda cost[/bold], {prices.region} {prices.arch}, prices as of {prices.as_of}: "
        f"{_price(prices.first_tier_gb_s)} per GB-s (first tier), "
        f"{_price(prices.requests_per_million)} per million requests, "
        f"{_price(prices.storage_gb_s)} per GB-s of storage over 512 MB"
        + (f" (overridden: {', '.join(prices.overridden)})" if prices.overridden else "")
    )
    console.print(
        f"From {estimate.source}; billed in {scenario.granularity_ms} ms steps, "
        f"{scenario.storage_mb} MB ephemeral storage, requests "
        f"{'included' if scenario.requests else 'excluded'}"
        + (", free tier taken off monthly totals" if scenario.free_tier else "")
        + "."
    )
    if len(estimate.rows) > 1:
        headers = ["memory", "duration", "billed", "per invocation", "per 1,000 records"]
        if scenario.records is not None:
            headers.append("per ingest")
        if first.monthly is not None:
            headers.append("per month")
        headers.append("")
        rows = []
        for row in estimate.rows:
            batch = row.first
            cells = [
                f"{row.workload.memory_mb:,} MB",
                _ms(batch.duration_ms),
                _ms(batch.billed_ms),
                usd(batch.per_invocation.total),
                usd(batch.per_1000_records),
            ]
            if scenario.records is not None:
                cells.append(
                    usd(batch.cost_per_ingest) if batch.cost_per_ingest is not None else "-"
                )
            if first.monthly is not None:
                cells.append(usd(batch.monthly.total) if batch.monthly else "-")
            cells.append("[bold green]<- cheapest[/bold green]" if row.cheapest else "")
            rows.append(cells)
        console.print(_table(f"By memory size, batch of {first.batch_size}", headers, rows))
    console.print(_invocation_table(best, scenario.granularity_ms, scenario.storage_mb))
    console.print(_batches_table(best, scenario))
    if best.break_even:
        console.print(_break_even_table(best))
    for row in estimate.rows:
        if row.measured is not None:
            console.print(_measured_table(row))
    for comparison in comparisons:
        console.print(_snapstart_table(comparison))
    # the same note for every memory size once
    snap_notes = dict.fromkeys(note for c in comparisons for note in _snapstart_notes(c))
    for note in snap_notes:
        console.print(f"[yellow]Note:[/yellow] {note}")
    for note in estimate.notes:
        console.print(f"[yellow]Note:[/yellow] {note}")


def _invocation_table(row: MemoryCost, step_ms: int, storage_mb: int = 512) -> Any:
    batch = row.first
    w = row.workload
    part = batch.per_invocation
    rows = [["compute", usd(part.compute), f"{_ms(batch.billed_ms)} billed"]]
    if part.init:
        rows.append(
            [
                "init",
                usd(part.init),
                f"{_ms(w.init_ms)} / {w.invocations_per_environment:,.4g} invocations",
            ]
        )
        rows.append(
            [
                "one cold start",
                usd(row.cold_start),
                f"{_ms(w.init_ms)} at {w.memory_mb:,} MB"
                + (f", /tmp {storage_mb:,} MB" if storage_mb > 512 else ""),
            ]
        )
    rows += [
        ["storage", usd(part.storage), "over 512 MB"],
        ["requests", usd(part.requests), ""],
        ["[bold]total[/bold]", f"[bold]{usd(part.total)}[/bold]", ""],
        ["per record", usd(batch.per_record), ""],
        ["per 1,000 records", usd(batch.per_1000_records), ""],
        [
            f"per {step_ms} ms step",
            usd(row.price_per_step),
            "first-tier price",
        ],
    ]
    title = f"Per invocation: {w.memory_mb:,} MB, batch of {batch.batch_size}"
    table = _table(title, ["item", "USD", ""], rows, left=1)
    table.columns[2].style = "dim"
    table.columns[2].justify = "left"
    return table


def _batches_table(row: MemoryCost, scenario: Any) -> Any:
    headers = ["batch size", "duration", "billed", "per invocation", "per 1,000 records"]
    if scenario.records is not None:
        headers[1:1] = ["invocations"]
        headers.append("per ingest")
    if scenario.ingests_per_month is not None:
        headers.append(f"per month ({_count(scenario.ingests_per_month)} ingests)")
    rows = []
    for batch in row.batches:
        cells = [f"{batch.batch_size:,}"]
        if scenario.records is not None:
            cells.append(_count(batch.invocations_per_ingest))
        cells += [
            _ms(batch.duration_ms),
            _ms(batch.billed_ms),
            usd(batch.per_invocation.total),
            usd(batch.per_1000_records),
        ]
        if batch.cost_per_ingest is not None:
            cells.append(usd(batch.cost_per_ingest))
        if batch.monthly is not None:
            cells.append(usd(batch.monthly.total))
        rows.append(cells)
    title = "By batch size" + (
        f", ingest of {scenario.records:,} records" if scenario.records is not None else ""
    )
    return _table(title, headers, rows)


_CHEAPER = {
    "below": "below it",
    "above": "above it",
    "always": "always",
    "never": "never",
    "equal": "same cost",
}


def _break_even_table(row: MemoryCost) -> Any:
    per_second = any(e.comparison == "per_second" for e in row.break_even)
    rows = []
    for entry in row.break_even:
        if entry.comparison == "hourly":
            monthly = entry.alternative_monthly_usd or entry.price_usd
            what = f"{usd(entry.price_usd)}/h = {usd(monthly)}/month"
        else:
            what = f"{_price(entry.price_usd)}/s"
        cells = [what, f"{entry.batch_size:,}"]
        if per_second:
            alt = entry.alternative_per_record
            cells.append("-" if alt is None else usd(alt * 1000))
        cells += [
            _count(entry.ingests_per_month),
            _count(entry.records_per_month),
            _CHEAPER[entry.lambda_cheaper],
        ]
        rows.append(cells)
    headers = ["compared with", "batch size"]
    if per_second:
        headers.append("its cost / 1,000 records")
    headers += ["ingests / month", "records / month", "Lambda cheaper"]
    return _table("Break-even volume", headers, rows, left=1)


def _measured_table(row: MemoryCost) -> Any:
    m = row.measured
    assert m is not None

    def ms(value: Decimal) -> str:
        return f"{value:,.2f}"

    rows = []
    for name, stats, fmt in (
        ("duration ms", m.duration_ms, ms),
        ("billed ms", m.billed_ms, ms),
        ("init ms", m.init_ms, ms),
        *([("billed restore ms", m.billed_restore_ms, ms)] if m.restores else []),
        ("cost per invocation", m.cost, usd),
    ):
        if stats is None:
            rows.append([name, "-", "-", "-", "-", "-"])
        else:
            rows.append(
                [name, *(fmt(v) for v in (stats.p50, stats.p99, stats.mean, stats.min, stats.max))]
            )
    title = (
        f"Measured at {m.memory_mb:,} MB: {m.invocations:,} invocations, {m.cold_starts:,} "
        f"cold"
        + (
            f", {m.restores:,} restored ({usd(m.restore_charge)} restore charge)"
            if m.restores
            else ""
        )
        + f", {usd(m.total)} in all"
    )
    return _table(title, ["", "p50", "p99", "mean", "min", "max"], rows, left=1)


def _number(value: Decimal) -> str:
    """A count or rate: whole with separators from 100 up, else 4 significant digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{float(value):.4g}"


def _rate(per_month: Decimal, hours: Decimal) -> str:
    return f"{_number(per_month / hours)} an hour ({_number(per_month)} a month)"


def _snapstart_table(c: SnapStartCost) -> Any:
    gb = f"{c.memory_mb:,} MB"
    restore_what = {
        "--restore-ms": "--restore-ms",
        "reports": "the reports' mean Billed Restore Duration",
        "default": "default, see note",
    }[c.restore_ms_from]
    rows = [
        [
            "init, per cold start (without)",
            usd(c.init_each),
            f"{_ms(c.init_ms)} billed at {gb}",
        ],
        [
            "restore, per cold start (with)",
            usd(c.restore_each),
            f"{gb} x {_price(c.prices.restore_gb)}/GB + {_ms(c.restore_ms)} billed ({restore_what})",
        ],
        [
            "snapshot cache, a month (with)",
            usd(c.cache_month),
            f"{gb} x {c.cache_hours:,.4g} h x {_price(c.prices.cache_gb_s)}/GB-s x "
            f"{c.versions} version(s)",
        ],
    ]
    if c.cold_starts_per_month is not None:
        assert c.without_month is not None and c.with_month is not None
        diff = c.difference
        assert diff is not None
        rows += [
            ["cold starts", _rate(c.cold_starts_per_month, c.hours_per_month), ""],
            ["[bold]without SnapStart, a month[/bold]", f"[bold]{usd(c.without_month)}[/bold]", ""],
            ["[bold]with SnapStart, a month[/bold]", f"[bold]{usd(c.with_month)}[/bold]", ""],
            [
                "difference (with - without)",
                ("-" if diff < 0 else "+") + usd(abs(diff)),
                {"snapstart": "SnapStart saves", "init": "SnapStart costs more", "equal": "same"}[
                    c.cheaper or "equal"
                ],
            ],
        ]
    rows.append(
        [
            "break-even",
            "never"
            if c.break_even_per_month is None
            else _rate(c.break_even_per_month, c.hours_per_month),
            "a restore costs at least the init it replaces"
            if c.break_even_per_month is None
            else "SnapStart costs less above this cold-start rate",
        ]
    )
    title = f"SnapStart vs billed init: {gb}, prices as of {c.prices.as_of}"
    table = _table(title, ["item", "USD", ""], rows, left=1)
    table.columns[2].style = "dim"
    table.columns[2].justify = "left"
    return table


def _snapstart_notes(c: SnapStartCost) -> list[str]:
    from mlayer.snapstart_cost import DEFAULT_RESTORE_MS

    notes = []
    if c.prices.why:
        notes.append(f"SnapStart prices for {c.prices.region}: {c.prices.why}")
    if c.cold_starts_from is None:
        notes.append(
            "no cold-start rate, so no monthly totals: give --cold-starts-per-hour, or "
            "--records with --ingests-per-month (and --invocations-per-environment)"
        )
    elif c.cold_starts_from != "--cold-starts-per-hour":
        notes.append(f"cold starts from {c.cold_starts_from}")
    if c.restore_ms_from == "default":
        notes.append(
            f"restore billed at {_ms(DEFAULT_RESTORE_MS)} by default (runtime load and "
            "after-restore hooks; AWS publishes no Python figure, and a generous one never "
            "flatters SnapStart): measure it with --from-report on SnapStart REPORT lines, "
            "or pass --restore-ms"
        )
    if c.cheaper == "init" or c.break_even_per_month is None:
        notes.append(
            "where SnapStart costs more, its latency is what you pay for: a cold start "
            "restores a snapshot instead of importing and loading the model"
        )
    notes.append(
        "not counted: the init that runs once when each version is published (with "
        "SnapStart); durations at the first tier's price, without the free tier"
    )
    return notes


COMMANDS = [cost]
