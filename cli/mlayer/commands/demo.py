"""``mlayer demo``: the whole pipeline on a local endpoint, every step said as it runs.

The pipeline is :func:`mlayer.demo.run_demo` (a generator of steps); this command renders
each step before it runs and what it found after, with a live progress line while the
stream is consumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command()
@click.option(
    "--records",
    type=click.IntRange(min=10),
    default=10_000,
    show_default=True,
    help="Records to produce to the stream (about 1% malformed).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".mlayer/demo",
    show_default=True,
    help="Where the model, the layers and the REPORT log go.",
)
def demo(records: int, workdir: Path) -> None:
    """Run the whole pipeline (train, build, publish, stream, predict, cost) locally.

    Starts moto_server on a free 127.0.0.1 port, trains the sample model, builds the
    layers for this Python, publishes them, deploys the function, produces records (some
    malformed) to a 2-shard Kinesis stream, consumes it with the real function as Lambda's
    event source mapping would, shows the predictions, the dead-lettered records, the
    throughput and the cost from the measured REPORT lines, then rolls model v2 out and
    back. The endpoint is stopped at the end, whatever happens.

    \b
    Example:
      mlayer demo
      mlayer demo --records 1000
    """
    from rich.console import Console

    from mlayer.demo import DemoOptions, run_demo

    console = Console(soft_wrap=True)
    progress = _Progress(console, records)
    options = DemoOptions(records=records, workdir=workdir, on_progress=progress.update)
    count = 0
    steps = run_demo(options)
    try:
        for step in steps:
            if not step.done:
                count += 1
                console.print(f"\n[bold cyan]{count:>2}. {step.title}[/] ...")
                if step.key == "run-local":
                    progress.start()
                continue
            if step.key == "run-local":
                progress.stop()
            _render(console, step)
    finally:
        progress.stop()
        # Stops the endpoint now, also on Ctrl-C or an error (not whenever the generator
        # happens to be garbage-collected).
        steps.close()
    console.print(
        "\n[bold green]Demo finished.[/] Try the same commands on your own model: mlayer --help"
    )


def _render(console: Any, step: Any) -> None:
    from rich.table import Table

    for line in step.lines:
        console.print(f"    {line}", highlight=False)
    if step.rows:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 4))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for what, value in step.rows:
            table.add_row(what, value)
        console.print(table)
    console.print(f"    [dim]done in {step.seconds:.1f} s[/]")


class _Progress:
    def __init__(self, console: Any, total: int) -> None:
        self.console = console
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def start(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("    "),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} records {task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("", total=self.total)
        self._progress.start()

    def update(self, stats: Any) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=stats.records_done,
                description=f"({stats.invocations} batches, {stats.dead_lettered} dead-lettered)",
            )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


COMMANDS = [demo]
