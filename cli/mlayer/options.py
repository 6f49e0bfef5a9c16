"""Shared options, one name per concept across commands (pip-tools' scripts/options.py).

Every option here can also come from ``MLAYER_<NAME>`` in the environment or from
mlayer.toml (see :mod:`mlayer.config`).
"""

from __future__ import annotations

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
