"""status, history, prune: what they report (text and --json) and what prune deletes,
through the CLI against moto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_layers import (
    layer_version_arn,
    publish_model,
    publish_raw_layer,
)

from mlayer.cli import cli


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def sidecar(layers: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((layers / name).read_text())
    return data


def test_status_json_describes_function_layers_live_model_and_routing(
    lam: Any, layers: Path
) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    publish_model(layers, 3, "--alias", "live", "--canary", "20")

    result = run(
        "status", "--function", "scorer", "--alias", "live", "--layers-dir", str(layers), "--json"
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["function"], data["runtime"], data["arch"], data["memory_mb"]) == (
        "scorer",
        "python3.11",
        "x86_64",
        128,
    )
    deps = sidecar(layers, "deps-python3.11-x86_64.json")
    v3 = sidecar(layers, "model-sentiment-v3.json")
    # $LATEST serves the canary: v3, with the live v2 as its shadow (tests/test_shadow.py).
    v2_shadow = sidecar(layers, "shadow-sentiment-v2.json")
    assert [(x["name"], x["layer_version"], x["kind"], x["sha256"]) for x in data["layers"]] == [
        ("scorer-deps", 1, "deps", deps["sha256"]),
        ("scorer-model", 3, "model", v3["sha256"]),
        ("scorer-shadow", 1, "shadow", v2_shadow["sha256"]),
    ]
    assert [x["unzipped_bytes"] for x in data["layers"]] == [
        deps["unzipped_bytes"],
        v3["unzipped_bytes"],
        v2_shadow["unzipped_bytes"],
    ]
    # The alias still serves v2; 20% goes to the canary carrying v3.
    assert data["live_from"] == "alias live -> version 2"
    assert data["live_model_label"] == "sentiment v2 (layer version 2)"
    assert data["live_model"]["sha256"] == sidecar(layers, "model-sentiment-v2.json")["sha256"]
    assert data["manifest"]["version"] == 2
    assert data["manifest"]["stages"] == ["sentiment.joblib"]
    assert data["manifest_source"] == str(layers / "model-sentiment-v2.json")
    assert data["aliases"] == [
        {
            "name": "live",
            "function_version": "2",
            "weights": {"3": 0.2},
            "models": {
                "2": "sentiment v2 (layer version 2)",
                "3": "sentiment v3 (layer version 3)",
            },
            "shadow_models": {"2": None, "3": "sentiment v2 (scorer-shadow version 1)"},
            "snapshots": {"2": False, "3": False},  # SnapStart off
        }
    ]
    assert data["budget"]["total"] == sum(p["unzipped_bytes"] for p in data["budget"]["parts"])


def test_status_text(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live", "--canary", "5")

    result = run("status", "--function", "scorer", "--alias", "live", "--layers-dir", str(layers))

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Function scorer  arn:aws:lambda:us-east-1:")
    assert lines[1] == (
        "  python3.11 x86_64, 128 MB, timeout 3 s, handler lambda_function.lambda_handler, "
        "state Active / Successful"
    )
    assert "Live model (alias live -> version 1): sentiment v1 (layer version 1)" in lines
    assert "  stages: sentiment.joblib" in lines
    assert "  labels: negative, positive" in lines
    assert (
        "Alias live: version 1 (sentiment v1 (layer version 1)) + version 2 at 5.0% "
        "(sentiment v2 (layer version 2); shadow sentiment v1 (scorer-shadow version 1))"
    ) in lines
    assert any(line.startswith("Size: function scorer (at least)") for line in lines)


def test_status_without_alias_reports_latest_and_foreign_layers(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)
    foreign = publish_raw_layer(lam, "vendor-tools")
    lam.update_function_configuration(
        FunctionName="scorer",
        Layers=[
            layer_version_arn(lam, "scorer-deps", 1),
            foreign,
            layer_version_arn(lam, "scorer-model", 1),
        ],
    )
    result = run("status", "--function", "scorer", "--json", "--layers-dir", str(layers / "none"))
    data = json.loads(result.output)
    assert data["live_from"] == "$LATEST"
    assert data["live_model_label"] == "sentiment v1 (layer version 1)"
    assert data["manifest"] is None
    vendor = data["layers"][1]
    assert (vendor["name"], vendor["kind"], vendor["unzipped_bytes"]) == (
        "vendor-tools",
        None,
        None,
    )
    assert vendor["sha256"]  # Lambda's CodeSha256 of its zip
    assert "layer vendor-tools:1: not published by mlayer" in " ".join(data["budget"]["notes"])


def test_status_unknown_function(lam: Any) -> None:
    result = run("status", "--function", "ghost")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function ghost does not exist in us-east-1; create it with "
        "`mlayer deploy-function --function ghost --role ARN`\n"
    )


def test_history_lists_versions_users_and_the_live_one(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    publish_model(layers, 3, "--alias", "live", "--canary", "10")
    assert run("rollback", "--function", "scorer", "--alias", "live").exit_code == 0  # cancel

    result = run("history", "--function", "scorer", "--alias", "live", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["live_from"] == "alias live -> version 2"
    rows = [
        (r["layer_version"], r["model_version"], r["live"], r["function_versions"], r["aliases"])
        for r in data["rows"]
    ]
    assert rows == [
        (3, 3, False, ["3"], []),
        (2, 2, True, ["$LATEST", "2"], ["live"]),
        (1, 1, False, ["1"], []),
    ]
    for r, n in zip(data["rows"], (3, 2, 1), strict=True):
        assert r["sha256"] == sidecar(layers, f"model-sentiment-v{n}.json")["sha256"]
        assert r["created"]

    text = run("history", "--function", "scorer", "--alias", "live")
    assert text.exit_code == 0, text.output
    assert "scorer-model: live = alias live -> version 2" in text.output
    assert "LIVE" in text.output


def test_history_shows_deleted_versions_still_in_use(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live")
    lam.delete_layer_version(LayerName="scorer-model", VersionNumber=1)

    data = json.loads(run("history", "--function", "scorer", "--json").output)

    assert [(r["layer_version"], r["deleted"], r["model_version"]) for r in data["rows"]] == [
        (2, False, 2),
        (1, True, 1),  # named from function version 1's description
    ]


def test_prune_deletes_unused_versions_beyond_keep(lam: Any, layers: Path) -> None:
    for version in (1, 2, 3, 4):
        publish_model(layers, version)

    dry = run("prune", "--function", "scorer", "--keep", "1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output == (
        "Would delete 3 version(s) of scorer-model: 3 (sentiment v3), 2 (sentiment v2), "
        "1 (sentiment v1)\n"
        "Kept (newest 1): 4 (sentiment v4)\n"
    )
    assert len(lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]) == 4

    real = run("prune", "--function", "scorer", "--keep", "2", "--json")
    assert real.exit_code == 0, real.output
    data = json.loads(real.output)
    assert [r["layer_version"] for r in data["deleted"]] == [2, 1]
    remaining = lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]
    assert sorted(v["Version"] for v in remaining) == [3, 4]


def test_prune_keeps_versions_function_versions_use(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2)  # relinks $LATEST only: nothing else uses v1's successor
    publish_model(layers, 3, "--alias", "live")
    publish_model(layers, 4)

    result = run("prune", "--function", "scorer", "--keep", "0")

    assert result.exit_code == 0, result.output
    assert result.output == (
        "Deleted 1 version(s) of scorer-model: 2 (sentiment v2)\n"
        "Kept (in use by function version $LATEST): 4 (sentiment v4)\n"
        "Kept (in use by function version 2, alias live): 3 (sentiment v3)\n"
        "Kept (in use by function version 1): 1 (sentiment v1)\n"
    )
    remaining = lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]
    assert sorted(v["Version"] for v in remaining) == [1, 3, 4]


def test_live_manifest_is_read_from_the_layer_when_no_local_build_matches(
    lam: Any, layers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On AWS, GetLayerVersion gives a presigned https URL of the content: status reads
    model/manifest.json from it when no local build has the same sha256."""
    import io

    import mlayer.inventory as inventory

    publish_model(layers, 1)
    zip_bytes = (layers / "model-sentiment-v1.zip").read_bytes()
    real_get = inventory.get_layer_version
    fetched: list[str] = []

    def get_layer_version(client: Any, arn: str) -> dict[str, Any] | None:
        version = real_get(client, arn)
        if version is not None and ":layer:scorer-model:" in arn:
            version["Content"]["Location"] = "https://awslambda-us-east-1-layers.s3/presigned"
        return version

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        fetched.append(url)
        return io.BytesIO(zip_bytes)

    monkeypatch.setattr(inventory, "get_layer_version", get_layer_version)
    monkeypatch.setattr(inventory.urllib.request, "urlopen", urlopen)

    data = json.loads(
        run(
            "status", "--function", "scorer", "--json", "--layers-dir", str(tmp_path / "none")
        ).output
    )

    assert fetched == ["https://awslambda-us-east-1-layers.s3/presigned"]
    assert data["manifest_source"] == "the layer version's content"
    assert (data["manifest"]["name"], data["manifest"]["version"]) == ("sentiment", 1)
