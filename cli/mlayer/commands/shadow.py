"""The shadow command group: shadow stop. Thin: parses options, calls mlayer.shadow, renders.

A shadow is started with ``publish-model --shadow`` and made live with ``promote``; status
and history show it.
"""

from __future__ import annotations

from typing import Any

import click

from mlayer import options


@click.group()
def shadow() -> None:
    """Shadow models: scored beside the live model on every batch, written nowhere.

    Start one with publish-model --shadow, see it in status and history, make it live with
    promote, remove it with shadow stop.

    \b
    Example:
      mlayer publish-model training/out2 --function scorer --alias live --shadow
      mlayer shadow stop --function scorer --alias live
    """


@shadow.command()
@options.function
@options.alias
@options.model_layer
@options.shadow_layer
@click.pass_obj
def stop(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    shadow_layer: str | None,
) -> None:
    """Remove the shadow: its layer, SHADOW_URI and SHADOW_OUTPUT leave $LATEST (one
    update); with --alias a version is published (the live model alone) and the alias
    moved to it.

    \b
    Example:
      mlayer shadow stop --function scorer --alias live
    """
    from mlayer.contracts import default_layer_name
    from mlayer.inventory import shadow_label
    from mlayer.shadow import stop_shadow

    function = options.require_function(function)
    result = stop_shadow(
        settings.client("lambda"),
        function=function,
        model_layer=model_layer or default_layer_name(function, "model"),
        shadow_layer=shadow_layer or default_layer_name(function, "shadow"),
        alias=alias,
        s3=settings.client("s3"),
    )
    live = result.live.label if result.live else "no model"
    click.echo(
        f"Stopped the shadow {shadow_label(result.removed)}; {result.function} serves {live}"
    )
    click.echo("Layers now:")
    for arn in result.layers:
        click.echo(f"  {arn}")
    if result.alias and result.new_function_version != result.old_function_version:
        click.echo(
            f"Alias {result.alias}: function version {result.old_function_version} -> "
            f"{result.new_function_version}"
        )
    for note in result.notes:
        click.echo(f"Note: {note}")


COMMANDS = [shadow]
