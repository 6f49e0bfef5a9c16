"""``mlayer invoke`` and ``mlayer run-local``: the deployed function, run on this machine.

The library is :mod:`mlayer.local.runner` (which resolves the code and layers, starts the
Lambda-like execution environments and, for run-local, the event source mapping
emulator); these commands parse options and render.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlayer import options
from mlayer.arns import parse_layer_arn

if TYPE_CHECKING:
    from mlayer.local.esm import MappingSettings, RunAborted, RunStats, RunSummary
    from mlayer.local.metrics import MetricsReport
    from mlayer.local.resolve import LocalFunction
    from mlayer.local.routing import Route
    from mlayer.local.runner import RunLocalResult

DEFAULT_LOG = ".mlayer/local/lambda.log"
DEFAULT_CHECKPOINTS = ".mlayer/local/checkpoints.json"

function_dir = click.option(
    "--function-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="function",
    show_default=True,
    help="The function's code, used when its sha256 matches the deployed code "
    "(the endpoint may not serve deployed code).",
)
local_code = click.option(
    "--local-code",
    is_flag=True,
    help="Run --function-dir as it is, even when it differs from the deployed code.",
)
python_option = click.option(
    "--python",
    metavar="PATH",
    help="Interpreter of the function's Python version [default: this one, or pythonX.Y on PATH].",
)
log_option = click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_LOG,
    show_default=True,
    help="Where START / END / REPORT lines are appended (mlayer cost --from-report reads it).",
)

metrics_option = click.option(
    "--metrics/--no-metrics",
    default=None,
    help="Put each invocation's metrics to CloudWatch on the endpoint, as AWS would: the "
    "function's EMF records and Lambda's AWS/Lambda Invocations, Errors, Duration "
    "[default: on with --endpoint-url, off against AWS].",
)

snapstart_option = click.option(
    "--snapstart/--no-snapstart",
    default=None,
    help="Restore new environments from one snapshot, as Lambda SnapStart does (python3.12+), "
    "or not [default: as deployed: on for a version or alias of a function with SnapStart "
    "applied]. The log gets INIT_REPORT once and Restore Duration on each restore's REPORT.",
)


def _layer_label(arn: str) -> str:
    layer = parse_layer_arn(arn)
    return f"{layer.name}:{layer.version}"


def _describe(local: LocalFunction) -> str:
    layers = ", ".join(
        f"{_layer_label(layer.arn)} ({'endpoint' if layer.source == 'endpoint' else 'local build'})"
        for layer in local.layers
    )
    snapstart = ", SnapStart" if local.snapstart else ""
    return (
        f"{local.name} ({local.version}, {local.runtime}, {local.memory_mb} MB, "
        f"timeout {local.timeout_s:g} s{snapstart}) on layers: {layers or 'none'}"
    )


def _routes_lines(routes: list[Route]) -> list[str]:
    """One line per canary version (the primary is described apart)."""
    return [
        f"  canary {route.weight * 100:g}%: {_describe(route.function)}" for route in routes[1:]
    ]


def _metrics_line(report: MetricsReport | None) -> str:
    if report is None:
        return "off"
    line = f"{report.put:,} data points put to CloudWatch ({report.emf_records:,} EMF records)"
    if report.failed:
        line += f", {report.failed:,} failed"
    return line


@click.command("invoke")
@options.function
@options.alias
@click.option(
    "--event",
    "event_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Event JSON file ('-' for stdin) [default: records built from the model's metadata].",
)
@options.layers_dir
@function_dir
@local_code
@python_option
@log_option
@metrics_option
@snapstart_option
@options.json_output
@click.pass_obj
def invoke_command(
    aws: Any,
    function: str | None,
    alias: str | None,
    event_file: Path | None,
    layers_dir: str,
    function_dir: Path,
    local_code: bool,
    python: str | None,
    log_path: Path,
    metrics: bool | None,
    snapstart: bool | None,
    as_json: bool,
) -> None:
    """Invoke the deployed function once, locally, on its linked layers.

    Runs the function's code and layer versions (from the endpoint, or local builds with
    the same sha256) in a fresh Lambda-like execution environment, and prints the response
    and the REPORT line. Through an alias with a canary, the version is drawn with the
    alias's weights, as Lambda does. The invocation's metrics go to CloudWatch on the
    endpoint. Exits 1 when the function fails.

    \b
    Example:
      mlayer --endpoint-url http://127.0.0.1:5000 invoke --function scorer
      mlayer invoke --function scorer --alias live --event tests/events/kinesis.json
      mlayer invoke --function scorer --snapstart
    """
    from mlayer.local.runner import invoke

    name = options.require_function(function)
    event: Any | None = None
    if event_file is not None:
        try:
            text = sys.stdin.read() if str(event_file) == "-" else event_file.read_text("utf-8")
            event = json.loads(text)
        except FileNotFoundError as exc:
            raise click.BadParameter(f"{event_file} does not exist", param_hint="--event") from exc
        except ValueError as exc:
            raise click.BadParameter(
                f"{event_file} is not valid JSON: {exc}", param_hint="--event"
            ) from exc
    result = invoke(
        aws,
        function=name,
        qualifier=alias,
        event=event,
        layers_dir=Path(layers_dir),
        function_dir=function_dir,
        local_code=local_code,
        python=python,
        log_path=log_path,
        metrics=metrics,
        snapstart=snapstart,
    )
    invocation = result.invocation
    from mlayer.reports import format_report

    notes = [*result.function.notes, *result.notes]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "function": result.function.name,
                    "version": result.function.version,
                    "snapstart": result.function.snapstart,
                    "routes": {r.version: r.weight for r in result.routes},
                    "request_id": invocation.request_id,
                    "response": invocation.response,
                    "error": invocation.error,
                    "report": format_report(invocation.report),
                    "logs": invocation.logs,
                    "metrics": result.metrics.to_dict() if result.metrics else None,
                    "notes": notes,
                },
                indent=2,
                default=str,
            )
        )
    else:
        from rich.console import Console

        console = Console(soft_wrap=True)
        console.print(f"[bold]Invoked[/] {_describe(result.function)}")
        for note in notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print("[bold]Log:[/]")
        click.echo(invocation.logs.rstrip("\n"))
        console.print("[bold]Error:[/]" if invocation.error else "[bold]Response:[/]")
        payload = invocation.error if invocation.error else invocation.response
        click.echo(json.dumps(payload, indent=2, default=str))
        console.print(f"Metrics: {_metrics_line(result.metrics)}", style="dim")
        console.print(f"REPORT log appended to {log_path}", style="dim")
    if invocation.error is not None:
        raise click.ClickException(
            f"the function failed: {invocation.error.get('errorType')}: "
            f"{invocation.error.get('errorMessage')}"
        )


def _position(value: str | None) -> str | None:
    return value.upper() if value else None


@click.command("run-local")
@click.option(
    "--stream",
    required=True,
    metavar="NAME|ARN",
    help="Kinesis stream (name or ARN), or a DynamoDB table (name) or its stream ARN.",
)
@options.function
@options.alias
@click.option("--batch-size", type=click.IntRange(1, 10_000), help="Records per batch (1-10000).")
@click.option(
    "--batching-window",
    type=click.FloatRange(0, 300),
    help="Seconds to gather records before invoking (0-300).",
)
@click.option(
    "--starting-position",
    type=click.Choice(["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"], case_sensitive=False),
    help="Where to start reading each shard.",
)
@click.option(
    "--starting-timestamp",
    type=click.DateTime(),
    help="For AT_TIMESTAMP: e.g. 2026-11-23T06:00:00.",
)
@click.option(
    "--parallelization-factor",
    type=click.IntRange(1, 10),
    help="Concurrent batches per shard (1-10), ordered per partition key.",
)
@click.option(
    "--bisect/--no-bisect", default=None, help="Split a failing batch in two before retrying."
)
@click.option(
    "--max-retries",
    type=click.IntRange(-1, 10_000),
    help="Retries of a failing batch before it is discarded (-1: until the record expires).",
)
@click.option(
    "--max-record-age",
    type=int,
    help="Discard records older than this many seconds (-1, or 60-604800).",
)
@click.option(
    "--report-batch-item-failures/--no-report-batch-item-failures",
    default=None,
    help="Honour the function's batchItemFailures (partial batch response).",
)
@click.option(
    "--on-failure",
    metavar="ARN",
    help="Where batches given up on go: an S3 bucket (arn:aws:s3:::BUCKET) keeps their records, "
    "an SQS queue or SNS topic their metadata.",
)
@click.option(
    "--filter",
    "filter_patterns",
    multiple=True,
    metavar="PATTERN",
    help="A FilterCriteria pattern (JSON), repeatable: records matching none are dropped before "
    "batching, as Lambda does [default: the mapping's, else mlayer trigger's: INSERT and "
    "MODIFY for DynamoDB, none for Kinesis].",
)
@click.option("--no-filter", is_flag=True, help="Send every record (no FilterCriteria).")
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop once no record arrived and none was in flight for this long.",
)
@click.option(
    "--max-records", type=click.IntRange(min=1), metavar="N", help="Stop after N records."
)
@click.option(
    "--checkpoints",
    "checkpoints_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CHECKPOINTS,
    show_default=True,
    help="Where each shard's checkpoint is kept (per stream, function and alias); a run "
    "resumes after it rather than at --starting-position.",
)
@click.option(
    "--reset-checkpoints",
    is_flag=True,
    help="Forget this function's checkpoints on this stream first: start at --starting-position.",
)
@options.layers_dir
@function_dir
@local_code
@python_option
@log_option
@metrics_option
@snapstart_option
@options.json_output
@click.pass_obj
def run_local_command(
    aws: Any,
    stream: str,
    function: str | None,
    alias: str | None,
    batch_size: int | None,
    batching_window: float | None,
    starting_position: str | None,
    starting_timestamp: Any,
    parallelization_factor: int | None,
    bisect: bool | None,
    max_retries: int | None,
    max_record_age: int | None,
    report_batch_item_failures: bool | None,
    on_failure: str | None,
    filter_patterns: tuple[str, ...],
    no_filter: bool,
    until_idle: float | None,
    max_records: int | None,
    checkpoints_path: Path,
    reset_checkpoints: bool,
    layers_dir: str,
    function_dir: Path,
    local_code: bool,
    python: str | None,
    log_path: Path,
    metrics: bool | None,
    snapstart: bool | None,
    as_json: bool,
) -> None:
    """Consume a stream with the function locally, as its event source mapping would.

    One poller per shard, one execution environment per concurrent batch; batch size and
    window, starting position, per-shard order, partial batch responses, bisect on error,
    retries and record age, FilterCriteria (records no pattern matches are dropped before
    batching and counted, never invoked) and the on-failure destination behave as in Lambda.
    Settings
    come from the function's mapping from this stream when there is one (else mlayer
    trigger's defaults); flags override them. Runs until --until-idle, --max-records, or
    Ctrl-C, then prints a summary.

    Through an alias with a canary, each shard's batches go to the canary version by smooth
    weighted round robin (a 25% canary gets exactly one batch in every 4), the rest to the
    primary version; the summary counts batches per version. Each invocation's metrics
    (the function's EMF records, Lambda's AWS/Lambda metrics) go to CloudWatch on the
    endpoint within about a second, so a canary bake can read them while this runs.

    Each shard's checkpoint (the last record resolved, with every record before it) is
    written to --checkpoints after each batch, and the next run resumes after it: a run
    stopped, killed or crashed loses no record and repeats none it checkpointed. Ctrl-C
    finishes the batches in flight and starts no other (exit 130); a second Ctrl-C kills
    the environments at once.

    \b
    Example:
      mlayer --endpoint-url http://127.0.0.1:5000 run-local --function scorer \\
          --stream reviews --until-idle 5
      mlayer run-local --function scorer --stream reviews --batch-size 500 --max-records 10000
    """
    from mlayer.local.esm import RunAborted
    from mlayer.local.runner import run_local

    name = options.require_function(function)
    if no_filter and filter_patterns:
        raise click.UsageError("give --filter PATTERN or --no-filter, not both")
    overrides = {
        "batch_size": batch_size,
        "batching_window_s": batching_window,
        "starting_position": _position(starting_position),
        "starting_timestamp": starting_timestamp,
        "parallelization_factor": parallelization_factor,
        "bisect_on_error": bisect,
        "max_retry_attempts": max_retries,
        "max_record_age_s": max_record_age,
        "report_batch_item_failures": report_batch_item_failures,
        "on_failure": on_failure,
        "filters": () if no_filter else (filter_patterns or None),
    }
    from rich.console import Console

    console = Console(stderr=as_json)
    progress = _Progress(console, max_records, quiet=as_json)
    stop = threading.Event()
    try:
        with _ctrl_c_stops(stop):
            result = run_local(
                aws,
                function=name,
                stream=stream,
                qualifier=alias,
                overrides=overrides,
                until_idle_s=until_idle,
                max_records=max_records,
                layers_dir=Path(layers_dir),
                function_dir=function_dir,
                local_code=local_code,
                python=python,
                log_path=log_path,
                on_progress=progress.update,
                on_ready=progress.ready,
                stop=stop,
                checkpoints=checkpoints_path,
                reset_checkpoints=reset_checkpoints,
                metrics=metrics,
                on_warning=progress.warn,
                snapstart=snapstart,
            )
    except RunAborted as aborted:
        progress.close()
        _render_abort(console, aborted, checkpoints_path)
        raise click.exceptions.Exit(130) from None
    finally:
        progress.close()
    if as_json:
        data = result.summary.to_dict()
        data.update(
            {
                "function": result.function.name,
                "version": result.function.version,
                "snapstart": result.function.snapstart,
                "routes": {r.version: r.weight for r in result.routes},
                "metrics": result.metrics.to_dict() if result.metrics else None,
                "log": str(result.log_path),
                "checkpoints": str(checkpoints_path),
                "reset_checkpoints": result.reset_checkpoints,
                "notes": [*result.notes, *result.summary.notes],
            }
        )
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render_summary(console, result)
    if result.summary.stopped == "interrupted":
        raise click.exceptions.Exit(130)  # as a shell expects of a command stopped by Ctrl-C


@contextmanager
def _ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``stop`` (the batches in flight finish, no other starts); the
    next raises KeyboardInterrupt, which the emulator turns into an abort (RunAborted)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; Ctrl-C then raises as usual
        return

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # os.write, not the console: a signal handler may run in the middle of its output.
        os.write(
            2,
            b"\nCtrl-C: finishing the batches in flight and starting no other; "
            b"Ctrl-C again to abort at once\n",
        )

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _render_abort(console: Any, aborted: RunAborted, path: Path) -> None:
    where = ", ".join(
        f"{shard} after {seq}" if seq else f"{shard} at its starting position"
        for shard, seq in sorted(aborted.checkpoints.items())
    )
    console.print(
        f"[bold red]Aborted[/]: killed {aborted.killed} execution environment(s) without "
        "finishing their batches (none of them was checkpointed). The next run resumes from "
        f"the checkpoints in {path}" + (f": {where}" if where else "") + ".",
        style=None,
    )


class _Progress:
    """A live status line while the emulator runs (rich)."""

    def __init__(self, console: Any, total: int | None, *, quiet: bool) -> None:
        self.console = console
        self.total = total
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def ready(self, routes: list[Route], settings: MappingSettings, shards: int) -> None:
        if self.quiet:
            return
        from rich.markup import escape
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        local = routes[0].function
        self.console.print(f"[bold]Running[/] {_describe(local)}")
        for line in _routes_lines(routes):
            self.console.print(line)
        self.console.print(
            f"  {shards} shard(s) x parallelization {settings.parallelization_factor}; batch "
            f"{settings.batch_size}, window {settings.batching_window_s:g} s, from "
            f"{settings.starting_position}; bisect {'on' if settings.bisect_on_error else 'off'}, "
            f"retries {settings.max_retry_attempts}, max age {settings.max_record_age_s}, partial "
            f"batch response {'on' if settings.report_batch_item_failures else 'off'}, on-failure "
            f"{settings.on_failure or 'none'}, filters "
            f"{escape(' OR '.join(settings.filters) or 'none')}  "
            f"[dim](settings: {settings.source})[/]"
        )
        for note in local.notes:
            self.console.print(f"[yellow]note:[/] {note}")
        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if self.total:
            columns.insert(1, BarColumn())
        columns.append(TimeElapsedColumn())
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._task = self._progress.add_task("starting", total=self.total)
        self._progress.start()

    def update(self, stats: RunStats) -> None:
        if self._progress is None:
            return
        errors = sum(stats.function_errors.values())
        self._progress.update(
            self._task,
            completed=stats.records_done,
            description=(
                f"{stats.records_done:,} records done of {stats.records_read:,} read, "
                f"{stats.in_flight:,} in flight | {stats.invocations:,} batches, "
                f"{stats.predictions:,} predictions, {stats.retries} retries, "
                f"{errors} errors, {stats.discarded} discarded, {stats.filtered:,} filtered"
            ),
        )

    def warn(self, message: str) -> None:
        """A problem the run goes on with (called from any thread)."""
        self.console.print(f"[yellow]warning:[/] {message}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def render_summary(console: Any, result: RunLocalResult) -> None:
    """The run-local summary table (shared with mlayer demo)."""
    from rich.table import Table

    summary = result.summary
    stats = summary.stats
    table = Table(title=f"run-local: {summary.stream_arn}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    p50, p99 = summary.percentile(50), summary.percentile(99)
    init = sorted(stats.init_durations_ms)
    rows = [
        ("records", f"{stats.records_done:,}"),
        *(
            [("filtered out (FilterCriteria)", _filtered_line(stats))]
            if stats.filtered or summary.settings.filters
            else []
        ),
        ("predictions", f"{stats.predictions:,}"),
        *(
            [
                (
                    "KPL aggregates de-aggregated",
                    f"{stats.aggregated:,} (a prediction per user record)",
                )
            ]
            if stats.aggregated
            else []
        ),
        ("reported (batchItemFailures)", f"{stats.reported:,}"),
        ("dead-lettered by the function", f"{stats.dead_lettered:,}"),
        ("discarded to on-failure destination", f"{stats.discarded:,}"),
        ("batches (invocations)", f"{stats.invocations:,}"),
        *(
            [("batches per version", _per_version(stats.batches_by_version))]
            if len(result.routes) > 1 or len(stats.batches_by_version) > 1
            else []
        ),
        ("retries", f"{stats.retries:,}"),
        ("bisections", f"{stats.bisections:,}"),
        (
            "function errors",
            ", ".join(f"{k} x{v}" for k, v in stats.function_errors.items()) or "0",
        ),
        (
            "cold starts",
            f"{stats.cold_starts} (init {init[len(init) // 2]:.0f} ms median)" if init else "0",
        ),
        *(
            [("SnapStart restores", _restores_line(stats.restore_durations_ms))]
            if stats.restores
            else []
        ),
        (
            "duration p50 / p99",
            f"{p50:.1f} / {p99:.1f} ms" if p50 is not None and p99 is not None else "-",
        ),
        ("elapsed", f"{summary.elapsed_s:.1f} s ({summary.active_s:.1f} s until the last record)"),
        ("throughput", f"{summary.throughput:,.0f} records/s"),
        ("metrics", _metrics_line(result.metrics)),
        ("stopped", summary.stopped),
    ]
    for shard_id in sorted(set(summary.resumed_from) | set(summary.shard_checkpoints)):
        rows.append((shard_id, _shard_line(summary, shard_id)))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    for note in [*result.notes, *summary.notes]:
        console.print(f"[yellow]note:[/] {note}")
    if result.reset_checkpoints:
        console.print(
            f"Forgot {len(result.reset_checkpoints)} checkpoint(s) first (--reset-checkpoints)."
        )
    if summary.stopped == "interrupted":
        left = stats.records_read - stats.records_done
        console.print(
            f"Stopped by Ctrl-C: the batches in flight finished and no other started; "
            f"{left:,} record(s) read but not resolved are left for the next run."
        )
    if result.checkpoints_path is not None:
        console.print(
            f"Checkpoints in {result.checkpoints_path}: the next run resumes after them.",
            style="dim",
        )
    console.print(f"REPORT lines appended to {result.log_path}", style="dim")


def _filtered_line(stats: RunStats) -> str:
    """Records dropped before batching, and the share ``mlayer cost --filtered-share`` takes."""
    share = stats.filtered / stats.records_done if stats.records_done else 0.0
    return f"{stats.filtered:,} ({share:.1%}: mlayer cost --filtered-share {share:.3g})"


def _restores_line(durations: list[float]) -> str:
    ordered = sorted(durations)
    return f"{len(ordered)} (restore {ordered[len(ordered) // 2]:.0f} ms median)"


def _per_version(batches: dict[str, int]) -> str:
    def order(version: str) -> tuple[bool, int]:
        return (not version.isdigit(), int(version) if version.isdigit() else 0)

    return ", ".join(f"{v}: {batches[v]:,}" for v in sorted(batches, key=order)) or "-"


def _shard_line(summary: RunSummary, shard_id: str) -> str:
    """Where a shard started and where the next run resumes."""
    start = summary.resumed_from.get(shard_id, {})
    if start.get("position") == "AFTER_SEQUENCE_NUMBER":
        began = f"resumed after checkpoint {start['sequence_number']}"
    elif "expired_checkpoint" in start:
        began = "from TRIM_HORIZON (its checkpoint had expired)"
    else:
        began = f"from {start.get('position', '?')} (no checkpoint)"
    checkpoint = summary.shard_checkpoints.get(shard_id)
    ends = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
    unresolved = summary.unresolved.get(shard_id)
    if unresolved:
        ends += f", next unresolved {unresolved}"
    return f"{began}; {ends}"


COMMANDS = [invoke_command, run_local_command]
