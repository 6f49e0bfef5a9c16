"""rollback: with and without an alias, --to, a canary in progress, deleted layer versions,
nothing to roll back to. Through the CLI against moto; AWS state checked after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from fake_layers import (
    layer_list,
    layer_version_arn,
    publish_model,
)

from mlayer.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def deps(lam: Any) -> str:
    return layer_version_arn(lam, "scorer-deps", 1)


def model(lam: Any, layer_version: int) -> str:
    return layer_version_arn(lam, "scorer-model", layer_version)


def alias_of(lam: Any) -> dict[str, Any]:
    result: dict[str, Any] = lam.get_alias(FunctionName="scorer", Name="live")
    return result


# ---------------------------------------------------------------------------- no alias


def test_rollback_relinks_the_previous_model(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    publish_model(layers, 2)
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]

    result = run("rollback", "--function", "scorer")

    assert result.exit_code == 0, result.output
    assert result.output == (
        "Rolled back scorer: sentiment v2 (layer version 2) -> sentiment v1 (layer version 1)\n"
        "Layers now:\n"
        f"  {deps(lam)}\n"
        f"  {model(lam, 1)}\n"
    )
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]

    again = run("rollback", "--function", "scorer")
    assert again.exit_code == 1
    assert again.output == (
        "Error: nothing to roll back to: sentiment v1 is live and no older model version of "
        "layer scorer-model exists (known: v1, v2); use --to VERSION to move to another one\n"
    )
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]


def test_rollback_to_a_named_version_goes_forward_too(lam: Any, layers: Path) -> None:
    for version in (1, 2, 3):
        publish_model(layers, version)

    back = run("rollback", "--function", "scorer", "--to", "1")
    assert back.exit_code == 0, back.output
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]

    forward = run("rollback", "--function", "scorer", "--to", "3")
    assert forward.exit_code == 0, forward.output
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 3)]


def test_rollback_with_a_single_version_is_refused(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    result = run("rollback", "--function", "scorer")
    assert result.exit_code == 1
    assert result.output == (
        "Error: nothing to roll back to: sentiment v1 is live and no older model version of "
        "layer scorer-model exists (known: v1); use --to VERSION to move to another one\n"
    )


def test_rollback_without_any_model_is_refused(lam: Any) -> None:
    result = run("rollback", "--function", "scorer")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer has no version of layer scorer-model linked, so there is "
        "nothing to roll back; publish a model with mlayer publish-model\n"
    )


def test_rollback_to_an_unknown_version(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    publish_model(layers, 2)
    result = run("rollback", "--function", "scorer", "--to", "7")
    assert result.exit_code == 1
    assert result.output == (
        "Error: model v7 is not a version of layer scorer-model (known: v1, v2); if it was "
        "deleted, publish it again with mlayer publish-model layers/model-<name>-v7.zip\n"
    )
    same = run("rollback", "--function", "scorer", "--to", "2")
    assert same.exit_code == 1
    assert same.output == "Error: model v2 is already live on function scorer\n"


def test_rollback_unknown_function(lam: Any) -> None:
    result = run("rollback", "--function", "ghost")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function ghost does not exist in us-east-1; create it with "
        "`mlayer deploy-function --function ghost --role ARN`\n"
    )


# ---------------------------------------------------------------------------- alias


def test_rollback_moves_the_alias_to_the_version_that_carried_the_model(
    lam: Any, layers: Path
) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    assert alias_of(lam)["FunctionVersion"] == "2"

    result = run("rollback", "--function", "scorer", "--alias", "live")

    assert result.exit_code == 0, result.output
    assert result.output == (
        "Rolled back scorer: sentiment v2 (layer version 2) -> sentiment v1 (layer version 1)\n"
        "Alias live: function version 2 -> 1\n"
        "Layers now:\n"
        f"  {deps(lam)}\n"
        f"  {model(lam, 1)}\n"
    )
    assert alias_of(lam)["FunctionVersion"] == "1"
    assert layer_list(lam, "scorer", "live") == [deps(lam), model(lam, 1)]
    # $LATEST follows, so the next version published does not bring v2 back.
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]
    versions = lam.list_versions_by_function(FunctionName="scorer")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]

    forward = run("rollback", "--function", "scorer", "--alias", "live", "--to", "2")
    assert forward.exit_code == 0, forward.output
    assert alias_of(lam)["FunctionVersion"] == "2"
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]


def test_rollback_during_a_canary_cancels_it(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live", "--canary", "25")
    assert alias_of(lam)["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.25}

    result = run("rollback", "--function", "scorer", "--alias", "live")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Cancelled the canary: alias live no longer routes to function version 2 (sentiment v2 "
        "(layer version 2)); it serves version 1 only.\n"
    )
    alias = alias_of(lam)
    assert alias["FunctionVersion"] == "1"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]


def test_alias_rollback_works_after_the_layer_version_was_deleted(lam: Any, layers: Path) -> None:
    """A deleted layer version stays usable by the function version linked to it."""
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    lam.delete_layer_version(LayerName="scorer-model", VersionNumber=1)

    result = run("rollback", "--function", "scorer", "--alias", "live")

    assert result.exit_code == 0, result.output
    deleted_arn = model(lam, 2).rsplit(":", 1)[0] + ":1"
    assert result.output == (
        "Rolled back scorer: sentiment v2 (layer version 2) -> sentiment v1 (layer version 1, "
        "deleted)\n"
        "Alias live: function version 2 -> 1\n"
        "Note: $LATEST keeps its model layer: layer version 1 was deleted and cannot be linked "
        "anew\n"
    )
    assert alias_of(lam)["FunctionVersion"] == "1"
    assert layer_list(lam, "scorer", "1") == [deps(lam), deleted_arn]
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]


def test_relinking_a_deleted_version_is_refused(lam: Any, layers: Path) -> None:
    """Without an alias the only way back is relinking: impossible for a deleted version."""
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    lam.delete_layer_version(LayerName="scorer-model", VersionNumber=1)

    result = run("rollback", "--function", "scorer")

    assert result.exit_code == 1
    assert result.output == (
        "Error: model v1 (layer scorer-model version 1) was deleted: a deleted layer version "
        "stays usable by the function versions already linked to it but cannot be linked "
        "anew; publish it again with mlayer publish-model layers/model-sentiment-v1.zip\n"
    )
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]


def test_alias_rollback_to_a_model_no_version_carried(lam: Any, layers: Path) -> None:
    """v1 was published before the alias existed: rollback links it and publishes a version."""
    publish_model(layers, 1)
    publish_model(layers, 2, "--alias", "live")
    assert alias_of(lam)["FunctionVersion"] == "1"

    result = run("rollback", "--function", "scorer", "--alias", "live")

    assert result.exit_code == 0, result.output
    alias = alias_of(lam)
    assert alias["FunctionVersion"] == "2"
    assert layer_list(lam, "scorer", "2") == [deps(lam), model(lam, 1)]
    version = lam.get_function_configuration(FunctionName="scorer", Qualifier="2")
    assert version["Description"] == "mlayer model sentiment v1"


def test_rollback_with_a_missing_alias(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    result = run("rollback", "--function", "scorer", "--alias", "live")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer has no alias live; roll back without --alias, or publish with "
        "mlayer publish-model --alias live first\n"
    )
