"""Shared options, one name per concept across commands (pip-tools' scripts/options.py).

Every option here can also come from ``MLAYER_<NAME>`` in the environment or from
mlayer.toml (see :mod:`mlayer.config`).
"""

from __future__ import annotations

from typing import Any

import click

RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14")
ARCHES = ("x86_64", "arm64")

function = click.option(
    "--function",
    "function",
    envvar="MLAYER_FUNCTION",
    metavar="NAME",
    help="Lambda function name (or ARN).",
)
alias = click.option(
    "--alias",
    envvar="MLAYER_ALIAS",
    metavar="NAME",
    help="Function alias that stream triggers point at (recommended, e.g. live).",
)
bucket = click.option(
    "--bucket",
    envvar="MLAYER_BUCKET",
    metavar="NAME",
    help="S3 bucket for zips over the 50 MiB direct-upload limit, and the model store.",
)
role = click.option(
    "--role", envvar="MLAYER_ROLE", metavar="ARN", help="IAM role ARN the function runs as."
)
deps_layer = click.option(
    "--deps-layer",
    envvar="MLAYER_DEPS_LAYER",
    metavar="NAME",
    help="Dependency layer name [default: <function>-deps].",
)
model_layer = click.option(
    "--model-layer",
    envvar="MLAYER_MODEL_LAYER",
    metavar="NAME",
    help="Model layer name [default: <function>-model].",
)
shadow_layer = click.option(
    "--shadow-layer",
    envvar="MLAYER_SHADOW_LAYER",
    metavar="NAME",
    help="Shadow model layer name [default: <function>-shadow].",
)
runtime = click.option(
    "--runtime",
    envvar="MLAYER_RUNTIME",
    type=click.Choice(RUNTIMES),
    help="Lambda Python runtime [default: the newest the pins support].",
)
arch = click.option(
    "--arch",
    envvar="MLAYER_ARCH",
    type=click.Choice(ARCHES),
    default="x86_64",
    show_default=True,
    help="Lambda architecture.",
)
layers_dir = click.option(
    "--layers-dir",
    envvar="MLAYER_LAYERS_DIR",
    type=click.Path(file_okay=False, path_type=str),
    default="layers",
    show_default=True,
    help="Where built layer zips and their manifests live.",
)
json_output = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print machine-readable JSON instead of a table.",
)
store = click.option(
    "--store",
    type=click.Choice(("auto", "layer", "s3")),
    default="auto",
    show_default=True,
    help="Where a model built from MODEL_DIR goes: a model layer, or an archive for the S3 "
    "model store (layers/model-<name>-v<N>.tar, downloaded by the function at init); auto "
    "takes the layer when the model fits Lambda's 250 MiB budget, else the store.",
)
dry_run = click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would change without changing anything.",
)


class Duration(click.ParamType):
    """A length of time such as 90s, 30m, 1h, 2d (a timedelta); decimals allowed (0.5s)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import timedelta

        from mlayer.reports import parse_since

        if isinstance(value, timedelta):
            return value
        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Percent(click.ParamType):
    """A percentage such as 1%, 95%, 0.5%, given as a fraction (0.01, 0.95, 0.005).

    A bare number is a percentage too (``95`` is 95%, as ``--canary 10`` is 10%), except
    between 0 and 1, where it is ambiguous (``0.95``: 95% or 0.95%?) and the % is required.
    """

    name = "percent"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # Every value is read as written, a number from mlayer.toml too: 0.95 there is as
        # ambiguous as on the command line.
        text = str(value).strip()
        bare = not text.endswith("%")
        try:
            number = float(text.rstrip("%").strip())
        except ValueError:
            self.fail(f"{value!r} is not a percentage; write it like 1%, 95% or 0.5%", param, ctx)
        if not 0 <= number <= 100:
            self.fail(f"{value} is not between 0% and 100%", param, ctx)
        if bare and 0 < number < 1:
            self.fail(
                f"{value} is ambiguous: write {number * 100:g}% for that share, or {number:g}% "
                "if you mean less than one percent",
                param,
                ctx,
            )
        return number / 100


def require(value: str | None, flag: str) -> str:
    """``value`` of a shared option the command cannot run without.

    Raises:
        click.UsageError: it is missing (exit 2); the message names the flag, its
            environment variable and its mlayer.toml key, the three places it can come from.
    """
    if not value:
        key = flag.lstrip("-")
        raise click.UsageError(
            f"Missing option '{flag}' (or MLAYER_{key.upper().replace('-', '_')}, or "
            f"{key} = ... in mlayer.toml)."
        )
    return value


def require_function(function: str | None) -> str:
    """The ``--function`` a command needs: the one requirement and message for every command."""
    return require(function, "--function")
