"""``mlayer demo``: the whole pipeline against a local endpoint (arrives with issue 5)."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Run the whole pipeline (train, build, publish, stream, predict, cost) locally.

    \b
    Example:
      mlayer demo
    """
    raise click.ClickException(
        "the demo arrives with the local runner (issue 5: invoke, run-local, demo); "
        "until then run the tests: python3 -m pytest"
    )


COMMANDS = [demo]
