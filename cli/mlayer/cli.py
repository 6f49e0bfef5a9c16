"""The ``mlayer`` command group: global options, mlayer.toml, and one place for errors.

Commands live in ``mlayer/commands/<concern>.py`` (build, publish, deploy, cost, local),
each a thin layer that parses options, calls one library function and renders its result.
Nothing here imports boto3 or scikit-learn: ``mlayer --help`` must stay fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from mlayer import __version__
from mlayer.aws import (
    ATTEMPTS,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    AwsSettings,
    endpoint_problem,
    region_problem,
)
from mlayer.config import CONFIG_NAME, build_default_map, read_config
from mlayer.errors import MlayerError, to_click_exception

# Modules under mlayer.commands; each exposes COMMANDS, a list of click commands.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "build",
    "cost",
    "publish",
    "shadow",
    "compare",
    "deploy",
    "local",
)


class MlayerGroup(click.Group):
    """A group that turns expected failures into one ``Error: ...`` line (exit 1)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Click cuts each command's one-line help at 45 columns; say the whole sentence.
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=78)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            settings = ctx.obj if isinstance(ctx.obj, AwsSettings) else AwsSettings()
            converted = to_click_exception(
                exc,
                read_timeout=settings.read_timeout,
                connect_timeout=CONNECT_TIMEOUT,
                attempts=settings.attempts,
            )
            if converted is None:
                raise
            raise converted from exc


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    path = Path(value) if value else Path.cwd() / CONFIG_NAME
    if not path.exists():
        if value:
            raise click.BadParameter(f"{value} does not exist", ctx=ctx, param=param)
        return value
    try:
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = build_default_map(ctx.command, ctx, read_config(path), str(path))
    except MlayerError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    return str(path)


def _check_region(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    problem = region_problem(value) if value else None
    if problem:
        raise click.BadParameter(f"{problem}; pass the function's region", ctx=ctx, param=param)
    return value


def _check_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    problem = endpoint_problem(value) if value else None
    if problem:
        raise click.BadParameter(
            f"{problem}; pass e.g. http://127.0.0.1:5000 (moto_server), or leave it out for AWS",
            ctx=ctx,
            param=param,
        )
    return value


@click.group(cls=MlayerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="mlayer")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="MLAYER_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help=f"Project defaults file [default: ./{CONFIG_NAME} when present].",
)
@click.option(
    "--region",
    envvar="MLAYER_REGION",
    callback=_check_region,
    help="AWS region [default: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's].",
)
@click.option(
    "--endpoint-url",
    envvar=["MLAYER_ENDPOINT_URL", "AWS_ENDPOINT_URL"],
    callback=_check_endpoint,
    help="AWS endpoint, http(s)://host[:port], e.g. http://127.0.0.1:5000 for moto_server "
    "[default: AWS].",
)
@click.option("--profile", help="AWS credentials profile [default: boto3's (AWS_PROFILE)].")
@click.option(
    "--timeout",
    envvar="MLAYER_TIMEOUT",
    type=click.IntRange(min=1),
    default=READ_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help=f"Wait this long for each AWS answer ({ATTEMPTS} attempts; connecting: "
    f"{CONNECT_TIMEOUT} s).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
    timeout: int,
) -> None:
    """Serve scikit-learn models from AWS Lambda on Kinesis and DynamoDB streams.

    Build the dependency and model layers, publish them, roll models out and back, wire
    stream triggers, run it all locally, and see what it costs.

    \b
    Example:
      mlayer demo                      # the whole pipeline on a local endpoint
      mlayer build-deps --runtime python3.13 --arch arm64
      mlayer publish-model training/out --function scorer --alias live
    """
    ctx.obj = AwsSettings(
        region=region, endpoint_url=endpoint_url, profile=profile, read_timeout=timeout
    )


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(f"mlayer.commands.{_name}").COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mlayer")
