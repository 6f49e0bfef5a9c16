"""rollback: with and without an alias, --to, a canary in progress, deleted layer versions,
nothing to roll back to. Through the CLI against moto; AWS state checked after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_layers import (
    carries,
    layer_list,
    layer_version_arn,
    publish_model,
    recorded,
    write_model_build,
)

from mlayer.aws import AwsSettings
from mlayer.cli import cli
from mlayer.contracts import model_description
from mlayer.local.resolve import local_builds, resolve_layer

SCORER_LIVE = ("--function", "scorer", "--alias", "live")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def deps(lam: Any) -> str:
    return layer_version_arn(lam, "scorer-deps", 1)


def model(lam: Any, layer_version: int) -> str:
    return layer_version_arn(lam, "scorer-model", layer_version)


def _layer_versions(lam: Any) -> list[int]:
    listed = lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]
    return sorted(int(v["Version"]) for v in listed)


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
    assert version["Description"] == carries(layers / "model-sentiment-v1.zip")


def test_rollback_with_a_missing_alias(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    result = run("rollback", "--function", "scorer", "--alias", "live")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer has no alias live; roll back without --alias, or publish with "
        "mlayer publish-model --alias live first\n"
    )


# ---------------------------------------------------------------------------- model identity


def _kill_after_layer_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Lambda call the CLI makes after PublishLayerVersion raises KeyboardInterrupt,
    as if the process were killed right after the layer version was published."""
    original = AwsSettings.client
    published: list[str] = []

    def after_publish(**kwargs: Any) -> None:
        published.append(kwargs["event_name"])

    def before_call(**kwargs: Any) -> None:
        if published:
            raise KeyboardInterrupt

    def client(self: AwsSettings, service: str) -> Any:
        made = original(self, service)
        made.meta.events.register(
            "after-call.lambda.PublishLayerVersion", after_publish, unique_id="kill-mark"
        )
        made.meta.events.register("before-call.lambda", before_call, unique_id="kill")
        return made

    monkeypatch.setattr(AwsSettings, "client", client)


def test_a_publish_killed_after_the_layer_converges_when_run_again(
    lam: Any, layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given v1 then v2 live behind alias live, and a publish of v3 killed right after its
    layer version was published; when it runs again (the rebuild numbers it v4: same model
    content, another build number), then nothing new is published: the leftover layer
    version is what goes live, and rollback goes to the true older model, v2."""
    write_model_build(layers, 1, content="A")
    write_model_build(layers, 2, content="B")
    for version in (1, 2):
        zip_path = layers / f"model-sentiment-v{version}.zip"
        assert run("publish-model", str(zip_path), *SCORER_LIVE).exit_code == 0
    with monkeypatch.context() as patch:
        _kill_after_layer_published(patch)
        killed = run("publish-model", str(write_model_build(layers, 3, content="C")), *SCORER_LIVE)
    assert killed.exit_code == 1
    assert killed.output.endswith("Aborted!\n")
    assert _layer_versions(lam) == [1, 2, 3]
    assert alias_of(lam)["FunctionVersion"] == "2"

    rerun = run("publish-model", str(write_model_build(layers, 4, content="C")), *SCORER_LIVE)

    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.startswith(
        "Reused scorer-model version 3: the same model content is already published there "
        "(another build of it, sha256 "
    )
    assert "Model: sentiment v2 (layer version 2) -> sentiment v3 (layer version 3)\n" in (
        rerun.output
    )
    assert (
        "Note: model-sentiment-v4.zip holds the same model content as sentiment v3 (layer "
        "version 3), published before (by a publish that did not finish, or an earlier build): "
        "reused it instead of publishing sentiment v4\n"
    ) in rerun.output
    assert _layer_versions(lam) == [1, 2, 3]
    assert alias_of(lam)["FunctionVersion"] == "3"
    assert layer_list(lam, "scorer", "live") == [deps(lam), model(lam, 3)]
    described = lam.get_function_configuration(FunctionName="scorer", Qualifier="3")
    assert described["Description"] == carries(layers / "model-sentiment-v3.zip")

    back = run("rollback", "--function", "scorer", "--alias", "live")

    assert back.exit_code == 0, back.output
    assert back.output.startswith(
        "Rolled back scorer: sentiment v3 (layer version 3) -> sentiment v2 (layer version 2)\n"
        "Alias live: function version 3 -> 2\n"
    )
    assert alias_of(lam)["FunctionVersion"] == "2"
    assert layer_list(lam, "scorer", "live") == [deps(lam), model(lam, 2)]


def _publish_raw_model(lam: Any, zip_path: Path) -> int:
    """Publish a build's zip straight through boto3 with the Description mlayer gives it, as
    a concurrent publish of the same model content would; returns the layer version."""
    data = recorded(zip_path)
    result = lam.publish_layer_version(
        LayerName="scorer-model",
        Description=model_description(
            data["name"], data["version"], data["sha256"], data["unzipped_bytes"], data["identity"]
        ),
        Content={"ZipFile": zip_path.read_bytes()},
    )
    return int(result["Version"])


def test_rollback_skips_older_versions_with_the_live_content(lam: Any, layers: Path) -> None:
    """Given v1 (A), v2 (B), v4 (C) live, and v3 holding C too (two publishes of C raced);
    when rolling back, then v3 is skipped (it would serve the same model) and v2 is live."""
    for version, content in ((1, "A"), (2, "B"), (4, "C")):
        zip_path = write_model_build(layers, version, content=content)
        assert run("publish-model", str(zip_path), *SCORER_LIVE).exit_code == 0
    copy = _publish_raw_model(lam, write_model_build(layers, 3, content="C"))

    same = run("rollback", "--function", "scorer", "--alias", "live", "--to", "3")

    assert same.exit_code == 1
    assert same.output == (
        "Error: model v3 has the same content as the live sentiment v4 (same files and input): "
        "rolling back to it would change nothing; pick another with --to (known: v1, v2, v3, "
        "v4) or see mlayer history\n"
    )
    assert alias_of(lam)["FunctionVersion"] == "3"

    back = run("rollback", "--function", "scorer", "--alias", "live")

    assert back.exit_code == 0, back.output
    assert back.output == (
        "Rolled back scorer: sentiment v4 (layer version 3) -> sentiment v2 (layer version 2)\n"
        "Alias live: function version 3 -> 2\n"
        "Layers now:\n"
        f"  {deps(lam)}\n"
        f"  {model(lam, 2)}\n"
        "Note: skipped v3: the same model content as the live sentiment v4 (same files and "
        "input), so not an older model\n"
    )
    assert alias_of(lam)["FunctionVersion"] == "2"
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]
    assert copy == 4


def test_rollback_with_only_a_copy_of_the_live_model_is_refused(lam: Any, layers: Path) -> None:
    """Given v2 live and v1 holding the same content; then rollback refuses to "move"."""
    v2 = write_model_build(layers, 2, content="A")
    assert run("publish-model", str(v2), "--function", "scorer").exit_code == 0
    _publish_raw_model(lam, write_model_build(layers, 1, content="A"))

    result = run("rollback", "--function", "scorer")

    assert result.exit_code == 1
    assert result.output == (
        "Error: nothing to roll back to: sentiment v2 is live and no older model version of "
        "layer scorer-model exists (known: v1, v2); skipped v1: the same model content as the "
        "live sentiment v2 (same files and input), so not an older model; use --to VERSION to "
        "move to another one\n"
    )
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]


# ---------------------------------------------------------------------------- local runs


def _rolled_back_to_a_deleted_layer(lam: Any, layers: Path) -> dict[str, Any]:
    """Given v1 then v2 behind alias live, layer version 1 deleted, then a rollback: the alias
    serves function version 1, which links the deleted layer version. Returns its link."""
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    lam.delete_layer_version(LayerName="scorer-model", VersionNumber=1)
    assert run("rollback", "--function", "scorer", "--alias", "live").exit_code == 0
    config = lam.get_function_configuration(FunctionName="scorer", Qualifier="live")
    [link] = [layer for layer in config["Layers"] if ":layer:scorer-model:" in layer["Arn"]]
    assert link["Arn"].endswith(":scorer-model:1")
    return {"link": link, "description": config["Description"]}


def test_a_deleted_layer_version_is_run_from_its_local_build(lam: Any, layers: Path) -> None:
    given = _rolled_back_to_a_deleted_layer(lam, layers)

    resolved = resolve_layer(
        lam,
        given["link"]["Arn"],
        layers,
        local_builds(layers),
        carried=given["description"],
        code_size=given["link"].get("CodeSize"),
    )

    assert resolved.zip_path == layers / "model-sentiment-v1.zip"
    assert resolved.sha256 == recorded(layers / "model-sentiment-v1.zip")["sha256"]
    assert resolved.source == f"local build {resolved.zip_path} (layer version deleted)"


def test_invoke_of_a_deleted_layer_version_without_its_build_names_the_fix(
    lam: Any, layers: Path, root: Path
) -> None:
    given = _rolled_back_to_a_deleted_layer(lam, layers)
    sha256 = recorded(layers / "model-sentiment-v1.zip")["sha256"]
    (layers / "model-sentiment-v1.zip").unlink()

    result = run(
        "invoke", "--function", "scorer", "--alias", "live", "--layers-dir", str(layers),
        "--function-dir", str(root / "function"), "--local-code",
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.output == (
        f"Error: layer version {given['link']['Arn']} linked to the function was deleted, so "
        f"its content cannot be fetched; put the build of model sentiment v1 (sha256 "
        f"{sha256[:12]}…) back in {layers}/ or pass --layers-dir with the directory that holds "
        "it; else rebuild it (`mlayer build-model MODEL_DIR --version 1`) and publish it again "
        "(mlayer publish-model)\n"
    )
