"""publish-deps, publish-model, promote: through the CLI against moto, checking AWS state after.

Also: dedupe, S3 uploads over 50 MB, the 5-layer limit and the 250 MB budget, the update race
(Stubber and a moto patch), and each error a user can act on, with its exact text.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner, Result
from fake_layers import (
    carries,
    create_function,
    layer_list,
    layer_version_arn,
    publish_raw_layer,
    recorded,
    write_deps_build,
    write_model_build,
)
from moto import mock_aws

from mlayer.archive import direct_request_bytes
from mlayer.arns import parse_layer_arn
from mlayer.aws import AwsSettings
from mlayer.cli import cli
from mlayer.contracts import (
    VersionRecord,
    deps_description,
    model_description,
    model_identity,
    parse_description,
    parse_version_description,
    parse_version_record,
    version_description,
)
from mlayer.errors import BudgetError
from mlayer.lambda_api import Pace, relinked, update_configuration

ACCOUNT = "123456789012"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            "lambda": boto3.client("lambda", region_name="us-east-1"),
            "iam": boto3.client("iam", region_name="us-east-1"),
            "s3": boto3.client("s3", region_name="us-east-1"),
        }


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def deps_arn(lam: Any) -> str:
    return layer_version_arn(lam, "scorer-deps", 1)


@pytest.fixture
def deployed(aws: dict[str, Any], layers: Path) -> dict[str, Any]:
    """Given: the deps layer published and a function linked to it."""
    write_deps_build(layers)
    result = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers))
    assert result.exit_code == 0, result.output
    create_function(aws["lambda"], aws["iam"], layers=[deps_arn(aws["lambda"])])
    return aws


# ---------------------------------------------------------------------------- descriptions


def test_descriptions_round_trip() -> None:
    deps = deps_description("a" * 64, 123, "python3.13", "arm64")
    assert deps == f"mlayer deps sha256={'a' * 64} unzipped=123 runtime=python3.13 arch=arm64"
    record = parse_description(deps)
    assert record is not None
    assert (record.kind, record.unzipped_bytes, record.runtime, record.arch) == (
        "deps",
        123,
        "python3.13",
        "arm64",
    )
    model = model_description("sentiment", 7, "b" * 64, 456)
    assert model == f"mlayer model sentiment v7 sha256={'b' * 64} unzipped=456"
    record = parse_description(model)
    assert record is not None
    assert (record.kind, record.name, record.version, record.sha256) == (
        "model",
        "sentiment",
        7,
        "b" * 64,
    )
    assert parse_description("some other layer") is None
    assert parse_description(None) is None


def test_model_identity_is_the_content_not_the_build() -> None:
    files = {"sentiment.joblib": "a" * 64, "metadata.json": "b" * 64}
    manifest: dict[str, Any] = {
        "name": "sentiment",
        "version": 3,
        "files": files,
        "input": {"kind": "text", "field": "text"},
        "stages": ["sentiment.joblib"],
        "labels": ["negative", "positive"],
        "created": "2026-11-23T06:00:00Z",
    }
    content = {
        "files": {"sentiment.joblib": "a" * 64},
        "input": {"kind": "text", "field": "text"},
        "labels": ["negative", "positive"],
        "stages": ["sentiment.joblib"],
    }
    expected = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    assert model_identity(manifest) == expected
    # Another build number, a retrained metadata.json timestamp: the same model.
    rebuilt = {**manifest, "version": 9, "files": {**files, "metadata.json": "c" * 64}}
    assert model_identity(rebuilt) == expected
    # Another model file, input schema or label: another model.
    for change in (
        {"files": {"sentiment.joblib": "d" * 64}},
        {"input": {"kind": "text", "field": "body"}},
        {"labels": ["neg", "pos"]},
    ):
        assert model_identity({**manifest, **change}) != expected


def test_descriptions_record_identity_and_old_ones_still_parse() -> None:
    new = model_description("sentiment", 7, "b" * 64, 456, "c" * 64)
    assert new == f"mlayer model sentiment v7 sha256={'b' * 64} unzipped=456 identity={'c' * 64}"
    record = parse_description(new)
    assert record is not None and record.identity == "c" * 64
    old = parse_description(f"mlayer model sentiment v7 sha256={'b' * 64} unzipped=456")
    assert old is not None and (old.version, old.identity) == (7, None)

    carried = version_description("sentiment", 7, "b" * 64, "c" * 64)
    assert carried == f"mlayer model sentiment v7 sha256={'b' * 64} identity={'c' * 64}"
    assert parse_version_record(carried) == VersionRecord("sentiment", 7, "b" * 64, "c" * 64)
    assert parse_version_record("mlayer model sentiment v7") == VersionRecord("sentiment", 7)
    assert parse_version_description(carried) == ("sentiment", 7)
    assert parse_version_record("mlayer deploy-function") is None


@pytest.mark.parametrize(
    ("layers", "new", "expected"),
    [
        (["d:1", "m:1"], "m:2", ["d:1", "m:2"]),
        (["o:4", "m:1", "d:1"], "m:2", ["o:4", "m:2", "d:1"]),
        (["d:1"], "m:1", ["d:1", "m:1"]),
        ([], "m:1", ["m:1"]),
    ],
    ids=["replace-last", "replace-in-place", "append", "empty"],
)
def test_relinked_replaces_only_the_same_layer(
    layers: list[str], new: str, expected: list[str]
) -> None:
    def arn(short: str) -> str:
        name, version = short.split(":")
        return f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:{name}:{version}"

    assert relinked([arn(a) for a in layers], arn(new)) == [arn(e) for e in expected]


# ---------------------------------------------------------------------------- publish-deps


def test_publish_deps_records_content_and_compatibility(aws: dict[str, Any], layers: Path) -> None:
    zip_path = write_deps_build(layers, "python3.13", "arm64")
    manifest = json.loads(zip_path.with_suffix(".json").read_text())

    result = run(
        "publish-deps", "--function", "scorer", "--runtime", "python3.13", "--arch", "arm64",
        "--layers-dir", str(layers),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Published scorer-deps version 1:")
    version = aws["lambda"].get_layer_version(LayerName="scorer-deps", VersionNumber=1)
    assert version["CompatibleRuntimes"] == ["python3.13"]
    assert version["CompatibleArchitectures"] == ["arm64"]
    assert version["Description"] == (
        f"mlayer deps sha256={manifest['sha256']} unzipped={manifest['unzipped_bytes']} "
        "runtime=python3.13 arch=arm64"
    )


def test_publish_deps_twice_reuses_the_version(aws: dict[str, Any], layers: Path) -> None:
    write_deps_build(layers)
    args = ("publish-deps", "--function", "scorer", "--layers-dir", str(layers))
    first = run(*args)
    second = run(*args)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert second.output.startswith("Reused scorer-deps version 1: identical content (sha256 "), (
        second.output
    )
    versions = aws["lambda"].list_layer_versions(LayerName="scorer-deps")["LayerVersions"]
    assert [v["Version"] for v in versions] == [1]

    # A changed build is a new version.
    write_deps_build(layers, marker="2")
    third = run(*args)
    assert third.output.startswith("Published scorer-deps version 2:"), third.output


def test_publish_deps_without_a_build_names_the_command(aws: dict[str, Any], layers: Path) -> None:
    result = run(
        "publish-deps", "--function", "scorer", "--runtime", "python3.12", "--layers-dir",
        str(layers),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no dependency layer build for python3.12 x86_64 in {layers}/ "
        "(deps-python3.12-x86_64.zip); run `mlayer build-deps --runtime python3.12 --arch x86_64`\n"
    )


OVER_50_MB = 50 * 1024 * 1024 + 4096


@pytest.mark.parametrize(
    ("zip_bytes", "fits"),
    [(52_428_800 - 4096, True), (52_428_800 - 100, False), (52_428_800, False)],
    ids=["under", "base64-plus-envelope-over", "exactly-50-MiB"],
)
def test_direct_upload_limit_counts_base64_and_the_envelope(zip_bytes: int, fits: bool) -> None:
    """Lambda's 50 MB is a request limit of 69,905,067 bytes: a zip of exactly 50 MiB is
    already over once base64-encoded, before the JSON around it."""
    params = {"LayerName": "scorer-deps", "Description": "mlayer deps " + "x" * 200}
    assert (direct_request_bytes(zip_bytes, params) <= 69_905_067) is fits


def test_publish_deps_over_50mb_needs_a_bucket(aws: dict[str, Any], layers: Path) -> None:
    write_deps_build(layers, filler_bytes=OVER_50_MB)
    result = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers))
    assert result.exit_code == 1
    zip_bytes = (layers / "deps-python3.11-x86_64.zip").stat().st_size
    manifest = json.loads((layers / "deps-python3.11-x86_64.json").read_text())
    description = deps_description(
        manifest["sha256"], manifest["unzipped_bytes"], "python3.11", "x86_64"
    )
    request = direct_request_bytes(
        zip_bytes,
        {
            "LayerName": "scorer-deps",
            "Description": description,
            "CompatibleRuntimes": ["python3.11"],
            "CompatibleArchitectures": ["x86_64"],
        },
    )
    assert result.output == (
        f"Error: {layers}/deps-python3.11-x86_64.zip is 50.0 MiB zipped: uploaded directly, its "
        f"request would be {request:,} bytes, over the 69,905,067 Lambda accepts (its 50 MiB "
        "direct-upload limit): pass --bucket NAME (an S3 bucket in us-east-1) to upload it "
        "there first\n"
    )

    missing = run(
        "publish-deps", "--function", "scorer", "--layers-dir", str(layers), "--bucket", "nope"
    )
    assert missing.exit_code == 1
    assert missing.output == (
        "Error: bucket nope does not exist; create it (aws s3 mb s3://nope) or pass --bucket "
        "with an existing one in the function's region\n"
    )
    assert aws["lambda"].list_layer_versions(LayerName="scorer-deps")["LayerVersions"] == []


def test_publish_deps_over_50mb_goes_through_s3(aws: dict[str, Any], layers: Path) -> None:
    zip_path = write_deps_build(layers, filler_bytes=OVER_50_MB)
    manifest = json.loads(zip_path.with_suffix(".json").read_text())
    aws["s3"].create_bucket(Bucket="artifacts")

    result = run(
        "publish-deps", "--function", "scorer", "--layers-dir", str(layers), "--bucket", "artifacts"
    )

    assert result.exit_code == 0, result.output
    key = f"mlayer/scorer-deps/{manifest['sha256']}.zip"
    assert f"via s3://artifacts/{key}" in result.output
    head = aws["s3"].head_object(Bucket="artifacts", Key=key)
    assert head["ContentLength"] == manifest["zip_bytes"]
    version = aws["lambda"].get_layer_version(LayerName="scorer-deps", VersionNumber=1)
    assert version["Content"]["CodeSize"] == manifest["zip_bytes"]

    # Identical content again: no upload, no new version.
    aws["s3"].delete_object(Bucket="artifacts", Key=key)
    again = run(
        "publish-deps", "--function", "scorer", "--layers-dir", str(layers), "--bucket", "artifacts"
    )
    assert again.output.startswith("Reused scorer-deps version 1"), again.output
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket="artifacts")


# ---------------------------------------------------------------------------- publish-model


def test_publish_model_relinks_only_the_model_layer(deployed: dict[str, Any], layers: Path) -> None:
    lam = deployed["lambda"]
    v1 = write_model_build(layers, 1)
    v2 = write_model_build(layers, 2)

    first = run("publish-model", str(v1), "--function", "scorer")
    assert first.exit_code == 0, first.output
    model_v1 = layer_version_arn(lam, "scorer-model", 1)
    assert layer_list(lam, "scorer") == [deps_arn(lam), model_v1]
    assert "Model: none -> sentiment v1 (layer version 1)" in first.output

    second = run("publish-model", str(v2), "--function", "scorer")
    assert second.exit_code == 0, second.output
    model_v2 = layer_version_arn(lam, "scorer-model", 2)
    assert layer_list(lam, "scorer") == [deps_arn(lam), model_v2]
    assert (
        "Model: sentiment v1 (layer version 1) -> sentiment v2 (layer version 2)" in second.output
    )
    description = lam.get_layer_version(LayerName="scorer-model", VersionNumber=2)["Description"]
    sidecar = recorded(v2)
    assert description == (
        f"mlayer model sentiment v2 sha256={sidecar['sha256']} unzipped={sidecar['unzipped_bytes']}"
        f" identity={sidecar['identity']}"
    )


def test_publish_model_keeps_other_layers_and_their_order(
    deployed: dict[str, Any], layers: Path
) -> None:
    lam = deployed["lambda"]
    other = publish_raw_layer(lam, "observability")
    run("publish-model", str(write_model_build(layers, 1)), "--function", "scorer")
    extra = publish_raw_layer(lam, "patches")
    model_v1 = layer_version_arn(lam, "scorer-model", 1)
    lam.update_function_configuration(
        FunctionName="scorer", Layers=[other, model_v1, deps_arn(lam), extra]
    )

    result = run("publish-model", str(write_model_build(layers, 2)), "--function", "scorer")

    assert result.exit_code == 0, result.output
    model_v2 = layer_version_arn(lam, "scorer-model", 2)
    assert layer_list(lam, "scorer") == [other, model_v2, deps_arn(lam), extra]


@pytest.mark.parametrize(
    ("again_version", "alias"),
    [(1, True), (4, True), (4, False)],
    ids=["same-zip-alias", "another-build-of-it-alias", "another-build-of-it-latest"],
)
def test_publishing_the_live_model_again_is_a_no_op(
    deployed: dict[str, Any], layers: Path, again_version: int, alias: bool
) -> None:
    """Given sentiment v1 live; when the same zip, or another build of the same model
    content (v4: same files and input, another build number and zip), is published; then
    nothing changes in AWS and the command says so."""
    lam = deployed["lambda"]
    flags = ["--alias", "live"] if alias else []
    v1 = write_model_build(layers, 1, content="A")
    assert run("publish-model", str(v1), "--function", "scorer", *flags).exit_code == 0
    before = layer_list(lam, "scorer")

    again_zip = write_model_build(layers, again_version, content="A")
    again = run("publish-model", str(again_zip), "--function", "scorer", *flags)

    assert again.exit_code == 0, again.output
    where = "alias live" if alias else "scorer $LATEST"
    assert again.output == (
        f"unchanged: sentiment v1 is live with this content ({where}, scorer-model version 1); "
        "nothing was published or relinked.\n"
    )
    assert len(lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]) == 1
    assert layer_list(lam, "scorer") == before
    versions = lam.list_versions_by_function(FunctionName="scorer")["Versions"]
    assert [v["Version"] for v in versions] == (["$LATEST", "1"] if alias else ["$LATEST"])
    if alias:
        assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"


def test_publish_model_without_argument_takes_the_newest_build(
    deployed: dict[str, Any], layers: Path
) -> None:
    write_model_build(layers, 1)
    write_model_build(layers, 2)
    result = run("publish-model", "--function", "scorer", "--layers-dir", str(layers))
    assert result.exit_code == 0, result.output
    assert "-> sentiment v2 (layer version 1)" in result.output


def test_publish_model_without_any_build_names_the_command(
    deployed: dict[str, Any], layers: Path
) -> None:
    result = run("publish-model", "--function", "scorer", "--layers-dir", str(layers))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no model layer build in {layers}/; run `mlayer build-model MODEL_DIR` or pass "
        "MODEL_DIR to publish-model\n"
    )


def test_publish_model_with_alias_publishes_versions_and_moves_the_alias(
    deployed: dict[str, Any], layers: Path
) -> None:
    lam = deployed["lambda"]
    first = run(
        "publish-model",
        str(write_model_build(layers, 1)),
        "--function",
        "scorer",
        "--alias",
        "live",
    )
    assert "Created alias live -> function version 1" in first.output, first.output
    second = run(
        "publish-model",
        str(write_model_build(layers, 2)),
        "--function",
        "scorer",
        "--alias",
        "live",
    )
    assert second.exit_code == 0, second.output
    assert "Alias live: function version 1 -> 2" in second.output

    alias = lam.get_alias(FunctionName="scorer", Name="live")
    assert alias["FunctionVersion"] == "2"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert layer_list(lam, "scorer", "2") == [
        deps_arn(lam),
        layer_version_arn(lam, "scorer-model", 2),
    ]
    assert layer_list(lam, "scorer", "1") == [
        deps_arn(lam),
        layer_version_arn(lam, "scorer-model", 1),
    ]
    descriptions = {
        v["Version"]: v["Description"]
        for v in lam.list_versions_by_function(FunctionName="scorer")["Versions"]
    }
    assert descriptions["1"] == carries(layers / "model-sentiment-v1.zip")
    assert descriptions["2"] == carries(layers / "model-sentiment-v2.zip")


def test_canary_routes_a_share_then_promote_completes_it(
    deployed: dict[str, Any], layers: Path
) -> None:
    lam = deployed["lambda"]
    run(
        "publish-model",
        str(write_model_build(layers, 1)),
        "--function",
        "scorer",
        "--alias",
        "live",
    )

    canary = run(
        "publish-model", str(write_model_build(layers, 2)), "--function", "scorer",
        "--alias", "live", "--canary", "10",
    )  # fmt: skip

    assert canary.exit_code == 0, canary.output
    assert "Canary: alias live stays on function version 1 and routes 10.0% to version 2" in (
        canary.output
    )
    alias = lam.get_alias(FunctionName="scorer", Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}

    promoted = run("promote", "--function", "scorer", "--alias", "live")

    assert promoted.exit_code == 0, promoted.output
    # The canary version scored the live model as its shadow: the alias ends on $LATEST
    # published again without it (tests/test_shadow.py covers the shadow itself).
    assert promoted.output == (
        "Promoted: alias live function version 1 -> 3 (was 10.0% canary), routing cleared.\n"
        "Model: sentiment v1 (layer version 1) -> sentiment v2 (layer version 2)\n"
        "Note: the canary (function version 2) scored sentiment v1 (scorer-shadow version 1) "
        "as its shadow: $LATEST was published again without it as version 3\n"
    )
    alias = lam.get_alias(FunctionName="scorer", Name="live")
    assert alias["FunctionVersion"] == "3"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")

    nothing = run("promote", "--function", "scorer", "--alias", "live")
    assert nothing.exit_code == 1
    assert nothing.output == (
        "Error: alias live routes all traffic to function version 3: no canary to promote; "
        "start one with mlayer publish-model --alias live --canary PCT\n"
    )


def test_canary_needs_an_existing_alias(deployed: dict[str, Any], layers: Path) -> None:
    result = run(
        "publish-model", str(write_model_build(layers, 1)), "--function", "scorer",
        "--alias", "live", "--canary", "10",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output == (
        "Error: alias live does not exist yet, so there is no version to keep serving while a "
        "canary runs; publish without --canary first (that creates the alias)\n"
    )


@pytest.mark.parametrize("pct", ["0", "100", "-5"])
def test_canary_percent_must_be_between_0_and_100(layers: Path, pct: str) -> None:
    result = run("publish-model", "--function", "scorer", "--alias", "live", "--canary", pct)
    assert result.exit_code == 2
    assert "Invalid value for '--canary'" in result.output


# ---------------------------------------------------------------------------- limits


def test_layer_limit_refused_before_publishing(deployed: dict[str, Any], layers: Path) -> None:
    lam = deployed["lambda"]
    others = [publish_raw_layer(lam, f"extra{i}") for i in range(4)]
    lam.update_function_configuration(FunctionName="scorer", Layers=[deps_arn(lam), *others])

    result = run("publish-model", str(write_model_build(layers, 1)), "--function", "scorer")

    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer would have 6 layers (scorer-deps, extra0, extra1, extra2, "
        "extra3, scorer-model); Lambda allows 5: unlink one (aws lambda "
        "update-function-configuration --layers ...) or merge layers\n"
    )
    assert lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"] == []
    assert layer_list(lam, "scorer") == [deps_arn(lam), *others]


def test_budget_exceeded_names_each_share(deployed: dict[str, Any], layers: Path) -> None:
    lam = deployed["lambda"]
    # A deps layer version whose recorded unzipped size is 240 MB, and a foreign layer that
    # only has its (zipped) CodeSize to go by.
    big = publish_raw_layer(
        lam, "scorer-deps", deps_description("c" * 64, 240 * 1048576, "python3.11", "x86_64")
    )
    foreign = publish_raw_layer(lam, "vendor-tools", body=b"y" * 1000)
    lam.update_function_configuration(FunctionName="scorer", Layers=[big, foreign])
    model = write_model_build(layers, 1)
    model_unzipped = json.loads(model.with_suffix(".json").read_text())["unzipped_bytes"]
    code_size = lam.get_function_configuration(FunctionName="scorer")["CodeSize"]
    foreign_size = lam.get_layer_version(LayerName="vendor-tools", VersionNumber=1)["Content"][
        "CodeSize"
    ]

    # The model alone fits: 240 MB + small parts.
    ok = run("publish-model", str(model), "--function", "scorer")
    assert ok.exit_code == 0, ok.output

    # A deps version recorded 250 KB under the limit leaves no room for a 400 KB model.
    deps_bytes = 262_144_000 - 250_000
    bigger = publish_raw_layer(
        lam, "scorer-deps", deps_description("d" * 64, deps_bytes, "python3.11", "x86_64")
    )
    lam.update_function_configuration(
        FunctionName="scorer", Layers=[bigger, foreign, layer_version_arn(lam, "scorer-model", 1)]
    )
    model2 = write_model_build(layers, 2, weights="x" * 400_000)
    model2_unzipped = json.loads(model2.with_suffix(".json").read_text())["unzipped_bytes"]
    result = run("publish-model", str(model2), "--function", "scorer")

    total = code_size + deps_bytes + foreign_size + model2_unzipped
    over = total - 262_144_000

    def share(n: int) -> str:
        return f"{n / 1048576:.1f} MiB ({100 * n / 262_144_000:.0f}%)"

    assert result.exit_code == 1
    assert result.output == (
        f"Error: function scorer would be {total / 1048576:.1f} MiB unzipped ({total:,} bytes), "
        f"over Lambda's 250 MiB (262,144,000 bytes) by {over / 1048576:.1f} MiB: "
        f"function scorer (at least) {share(code_size)}, layer scorer-deps:3 (deps) "
        f"{share(deps_bytes)}, layer vendor-tools:1 (at least) {share(foreign_size)}, "
        f"layer scorer-model (model sentiment v2) {share(model2_unzipped)}; total "
        f"{total / 1048576:.1f} MiB of 250.0 MiB: over by {over / 1048576:.1f} MiB "
        "(layer vendor-tools:1: not published by mlayer, so its zipped size counts as a lower "
        "bound of its unzipped size) (function scorer: not deployed by mlayer, so its zipped "
        "size counts as a lower bound). Slim the biggest part (layer scorer-deps:3 (deps)), "
        "e.g. rebuild it with mlayer build-deps --exclude PATTERN\n"
    )
    assert model_unzipped < model2_unzipped
    assert len(lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]) == 1


def test_budget_error_is_raised_by_the_library(deployed: dict[str, Any]) -> None:
    from mlayer.layers import check_budget

    lam = deployed["lambda"]
    big = publish_raw_layer(
        lam, "huge", deps_description("e" * 64, 262_144_001, "python3.11", "x86_64")
    )
    config = lam.get_function_configuration(FunctionName="scorer")
    with pytest.raises(BudgetError, match=r"over Lambda's 250 MiB \(262,144,000 bytes\)"):
        check_budget(lam, config, [big])


# ---------------------------------------------------------------------------- errors


def test_unknown_function_suggests_deploy_function(aws: dict[str, Any], layers: Path) -> None:
    result = run("publish-model", str(write_model_build(layers, 1)), "--function", "ghost")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function ghost does not exist in us-east-1; create it with "
        "`mlayer deploy-function --function ghost --role ARN`\n"
    )
    assert "Traceback" not in result.output


def test_missing_function_option_is_a_usage_error() -> None:
    result = run("publish-model")
    assert result.exit_code == 2
    assert (
        "Missing option '--function' (or MLAYER_FUNCTION, or function = ... in mlayer.toml)."
        in result.output
    )


def test_no_credentials(monkeypatch: pytest.MonkeyPatch, layers: Path, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("publish-model", str(write_model_build(layers, 1)), "--function", "scorer")
    assert result.exit_code == 1
    assert result.output == (
        "Error: no AWS credentials found. Configure them (aws configure, AWS_PROFILE, or "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or pass --profile; for the local endpoint "
        "any values work\n"
    )


def test_access_denied(monkeypatch: pytest.MonkeyPatch, layers: Path) -> None:
    """Publishing without lambda:PublishLayerVersion, simulated with botocore's Stubber."""
    write_deps_build(layers)
    lam = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(lam)
    stubber.add_response("list_layer_versions", {"LayerVersions": []}, {"LayerName": "scorer-deps"})
    stubber.add_client_error(
        "publish_layer_version",
        service_error_code="AccessDeniedException",
        service_message=f"User: arn:aws:iam::{ACCOUNT}:user/dev is not authorized to perform: "
        "lambda:PublishLayerVersion",
        http_status_code=403,
    )
    stubber.activate()
    monkeypatch.setattr(AwsSettings, "client", lambda self, service: lam)

    result = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers))

    assert result.exit_code == 1
    assert result.output == (
        "Error: PublishLayerVersion failed (AccessDeniedException): the credentials in use lack "
        "permission for PublishLayerVersion; grant it (lambda:PublishLayerVersion) or pass "
        f"--profile with a role that has it. AWS said: User: arn:aws:iam::{ACCOUNT}:user/dev is "
        "not authorized to perform: lambda:PublishLayerVersion\n"
    )
    stubber.assert_no_pending_responses()


def test_not_a_layer_zip_is_refused(aws: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip")
    result = run("publish-model", str(bad), "--function", "scorer")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {bad} is not a zip file: File is not a zip file; rebuild it with mlayer "
        "build-model (or mlayer build-deps)\n"
    )


GOOD_JOBLIB = b"model sentiment v1"
GOOD_MANIFEST = {
    "name": "sentiment",
    "version": 1,
    "stages": ["sentiment.joblib"],
    "input": {"kind": "text", "field": "text"},
    "files": {"sentiment.joblib": hashlib.sha256(GOOD_JOBLIB).hexdigest()},
}
REBUILD = "rebuild it with mlayer build-model (it writes regular files under one root folder only)"
UNSAFE = "is not safe to publish: entry"
INVALID = "model/manifest.json in {zip} "
FIX = "; rebuild the layer with mlayer build-model"


def _hostile_zip(path: Path, case: str) -> Path:
    """A model layer zip, valid but for ``case``: (name, bytes, Unix mode) entries."""
    manifest = json.dumps(GOOD_MANIFEST).encode()
    entries: list[tuple[str, bytes, int]] = [
        ("model/sentiment.joblib", GOOD_JOBLIB, 0o100644),
        ("model/manifest.json", manifest, 0o100644),
    ]
    if case == "dot-dot":
        entries.append(("model/../../var/task/lambda_function.py", b"evil", 0o100644))
    elif case == "absolute":
        entries.append(("/opt/python/sklearn/__init__.py", b"evil", 0o100644))
    elif case == "symlink":
        entries.append(("model/etc", b"/etc", 0o120777))
    elif case == "symlinked-directory":
        entries.append(("model/task", b"/var/task", 0o120777))
        entries.append(("model/task/lambda_function.py", b"evil", 0o100644))
    elif case == "duplicate":
        entries.append(("model/sentiment.joblib", b"other pickle", 0o100644))
    elif case == "outside-model":
        entries.append(("python/sklearn/__init__.py", b"evil", 0o100644))
    elif case == "not-json":
        entries[1] = ("model/manifest.json", b"{not json", 0o100644)
    elif case in ("version-abc", "version-zero", "missing-file", "sha-mismatch"):
        changed = dict(GOOD_MANIFEST)
        if case == "version-abc":
            changed["version"] = "abc"
        elif case == "version-zero":
            changed["version"] = 0
        elif case == "missing-file":
            changed["files"] = {**GOOD_MANIFEST["files"], "vectorizer.joblib": "0" * 64}  # type: ignore[dict-item]
        else:
            entries[0] = ("model/sentiment.joblib", b"swapped pickle", 0o100644)
        entries[1] = ("model/manifest.json", json.dumps(changed).encode(), 0o100644)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


HOSTILE = [
    ("dot-dot", f"{UNSAFE} 'model/../../var/task/lambda_function.py' climbs out of the zip's root (a '..' component), and Lambda would unpack it into /opt as it is; {REBUILD}"),
    ("absolute", f"{UNSAFE} '/opt/python/sklearn/__init__.py' is an absolute path, and Lambda would unpack it into /opt as it is; {REBUILD}"),
    ("symlink", f"{UNSAFE} 'model/etc' is a symbolic link, and Lambda would unpack it into /opt as it is; {REBUILD}"),
    ("symlinked-directory", f"{UNSAFE} 'model/task' is a symbolic link, and Lambda would unpack it into /opt as it is; {REBUILD}"),
    ("duplicate", f"{UNSAFE} 'model/sentiment.joblib' is in the zip twice (duplicate names), and Lambda would unpack it into /opt as it is; {REBUILD}"),
    ("outside-model", f"{UNSAFE} 'python/sklearn/__init__.py' is outside model/, where a model layer keeps everything (anything else in /opt could shadow the dependency layer); rebuild it with mlayer build-model"),
    ("not-json", INVALID + "is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))" + FIX),
    ("version-abc", INVALID + "has version 'abc': it must be a positive integer (the N of vN)" + FIX),
    ("version-zero", INVALID + "has version 0: it must be a positive integer (the N of vN)" + FIX),
    ("missing-file", INVALID + "lists 'vectorizer.joblib', which is not in the zip (model/vectorizer.joblib)" + FIX),
    ("sha-mismatch", "model/sentiment.joblib in {zip} has sha256 " + hashlib.sha256(b"swapped pickle").hexdigest()[:12] + "…, but model/manifest.json records " + GOOD_MANIFEST["files"]["sentiment.joblib"][:12] + "…: the zip was changed after it was built" + FIX),  # type: ignore[index]
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"), [pytest.param(case, message, id=case) for case, message in HOSTILE]
)
def test_a_hostile_or_broken_model_zip_is_refused_before_anything_is_published(
    deployed: dict[str, Any], tmp_path: Path, case: str, message: str
) -> None:
    """Given a function on the deps layer; when publish-model is given a zip that would
    unpack outside its root, or whose manifest is broken; then one Error: line names the
    problem and the fix, and nothing changed in AWS."""
    lam = deployed["lambda"]
    before = layer_list(lam, "scorer")
    zip_path = _hostile_zip(tmp_path / "upload" / f"{case}.zip", case)

    result = run("publish-model", str(zip_path), "--function", "scorer", "--alias", "live")

    assert result.exit_code == 1, result.output
    if message.startswith(UNSAFE):
        message = "{zip} " + message
    assert result.output == "Error: " + message.format(zip=zip_path) + "\n"
    assert layer_list(lam, "scorer") == before
    assert lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"] == []
    assert lam.list_aliases(FunctionName="scorer")["Aliases"] == []
    versions = lam.list_versions_by_function(FunctionName="scorer")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST"]


def test_a_well_formed_hand_made_zip_is_published(deployed: dict[str, Any], tmp_path: Path) -> None:
    """The same hand-made zip without the hostile entry goes through: the checks refuse
    only what they name."""
    zip_path = _hostile_zip(tmp_path / "upload" / "good.zip", "none")
    result = run("publish-model", str(zip_path), "--function", "scorer")
    assert result.exit_code == 0, result.output
    assert layer_list(deployed["lambda"], "scorer")[-1].endswith(":layer:scorer-model:1")


def test_tampered_build_is_refused(aws: dict[str, Any], layers: Path) -> None:
    path = write_model_build(layers, 1)
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["sha256"] = "f" * 64
    sidecar.write_text(json.dumps(data))
    actual = json.loads(json.dumps(data))  # the zip itself is unchanged
    result = run("publish-model", str(path), "--function", "scorer")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path} does not match its manifest (sha256 ")
    assert result.output.endswith(f"on disk, {actual['sha256'][:12]}… recorded); rebuild it\n")


# ---------------------------------------------------------------------------- the race


def _function_response(status: str) -> dict[str, Any]:
    return {
        "Configuration": {
            "FunctionName": "scorer",
            "State": "Active",
            "LastUpdateStatus": status,
        }
    }


def test_update_waits_and_retries_a_conflict_stubbed() -> None:
    """InProgress before, a ResourceConflictException on the first try, InProgress after."""
    lam = boto3.client("lambda", region_name="us-east-1")
    layers = [f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:scorer-model:2"]
    stubber = Stubber(lam)
    get = {"FunctionName": "scorer"}
    stubber.add_response("get_function", _function_response("InProgress"), get)
    stubber.add_response("get_function", _function_response("Successful"), get)
    stubber.add_client_error(
        "update_function_configuration",
        service_error_code="ResourceConflictException",
        service_message="The operation cannot be performed at this time. An update is in "
        "progress for resource: arn:aws:lambda:us-east-1:123456789012:function:scorer",
        http_status_code=409,
        expected_params={"FunctionName": "scorer", "Layers": layers},
    )
    stubber.add_response("get_function", _function_response("Successful"), get)
    stubber.add_response(
        "update_function_configuration",
        {"FunctionName": "scorer", "LastUpdateStatus": "InProgress"},
        {"FunctionName": "scorer", "Layers": layers},
    )
    stubber.add_response("get_function", _function_response("InProgress"), get)
    stubber.add_response("get_function", _function_response("Successful"), get)
    sleeps: list[float] = []
    pace = Pace(waiter_delay=0, sleep=sleeps.append)

    with stubber:
        result = update_configuration(lam, "scorer", pace, Layers=layers)

    stubber.assert_no_pending_responses()
    assert result["LastUpdateStatus"] == "InProgress"
    assert sleeps == [1.0]


def test_conflict_backoff_is_bounded() -> None:
    from botocore.exceptions import ClientError

    from mlayer.errors import to_click_exception

    lam = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(lam)
    sleeps: list[float] = []
    pace = Pace(waiter_delay=0, conflict_attempts=3, sleep=sleeps.append)
    stubber.add_response("get_function", _function_response("Successful"))
    for attempt in range(3):
        stubber.add_client_error(
            "update_function_configuration",
            service_error_code="ResourceConflictException",
            service_message="An update is in progress",
            http_status_code=409,
        )
        if attempt < 2:
            stubber.add_response("get_function", _function_response("Successful"))

    with stubber, pytest.raises(ClientError) as info:
        update_configuration(lam, "scorer", pace, MemorySize=256)

    stubber.assert_no_pending_responses()
    assert sleeps == [1.0, 2.0]
    assert str(to_click_exception(info.value)) == (
        "UpdateFunctionConfiguration failed (ResourceConflictException): another update of the "
        "function is in progress; wait and run the command again. AWS said: An update is in "
        "progress"
    )


def test_failed_update_is_a_clear_error() -> None:
    lam = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(lam)
    failed = _function_response("Failed")
    failed["Configuration"]["LastUpdateStatusReason"] = "The layer version could not be extracted"
    stubber.add_response("get_function", failed)
    with stubber, pytest.raises(Exception) as info:
        update_configuration(lam, "scorer", Pace(waiter_delay=0), MemorySize=256)
    assert str(info.value) == (
        "function scorer is in a failed state: The layer version could not be extracted; fix "
        "the cause and run the command again"
    )


def test_publish_model_waits_out_an_update_in_progress_on_moto(
    deployed: dict[str, Any], layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto never reports InProgress: a botocore hook on the real client makes it do so
    (InProgress then Successful around each update) and fails the first update with a
    ResourceConflictException, through the CLI."""
    from botocore.exceptions import ClientError

    calls: list[str] = []
    state = {"in_progress": 1, "conflicts": 1}

    def after_get_function(parsed: dict[str, Any], **_: Any) -> None:
        config = parsed.get("Configuration", {})
        if state["in_progress"] > 0:
            state["in_progress"] -= 1
            config["LastUpdateStatus"] = "InProgress"
        calls.append(f"get_function:{config.get('LastUpdateStatus')}")

    def before_update(params: dict[str, Any], **_: Any) -> None:
        calls.append("update")
        if state["conflicts"] > 0:
            state["conflicts"] -= 1
            raise ClientError(
                {
                    "Error": {
                        "Code": "ResourceConflictException",
                        "Message": "An update is in progress",
                    }
                },
                "UpdateFunctionConfiguration",
            )

    def after_update(**_: Any) -> None:
        state["in_progress"] = 1  # the update just started: the next check sees InProgress

    original = AwsSettings.client

    def client(self: AwsSettings, service: str) -> Any:
        created = original(self, service)
        if service == "lambda" and not getattr(created, "_race_hooks", False):
            events = created.meta.events
            events.register("after-call.lambda.GetFunction", after_get_function)
            events.register(
                "before-parameter-build.lambda.UpdateFunctionConfiguration", before_update
            )
            events.register("after-call.lambda.UpdateFunctionConfiguration", after_update)
            created._race_hooks = True
        return created

    monkeypatch.setattr(AwsSettings, "client", client)
    lam = deployed["lambda"]

    import mlayer.rollout as rollout

    real = rollout.publish_model

    def fast(*args: Any, **kwargs: Any) -> Any:
        # Lambda's pace (1 s between checks, backoff from 1 s) with the sleeps taken out.
        return real(*args, **kwargs, pace=Pace(waiter_delay=0, sleep=lambda _: None))

    monkeypatch.setattr(rollout, "publish_model", fast)
    result = run("publish-model", str(write_model_build(layers, 1)), "--function", "scorer")

    assert result.exit_code == 0, result.output
    assert calls == [
        "get_function:InProgress",
        "get_function:Successful",
        "update",
        "get_function:Successful",
        "update",
        "get_function:InProgress",
        "get_function:Successful",
    ]
    assert layer_list(lam, "scorer") == [deps_arn(lam), layer_version_arn(lam, "scorer-model", 1)]


def test_publish_model_arn_parsing() -> None:
    parsed = parse_layer_arn(f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:scorer-model:12")
    assert (parsed.name, parsed.version) == ("scorer-model", 12)
    assert parsed.layer_arn == f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:scorer-model"


def test_upload_progress_reports_bytes(aws: dict[str, Any], tmp_path: Path) -> None:
    from mlayer.layers import upload_to_s3

    aws["s3"].create_bucket(Bucket="artifacts")
    path = tmp_path / "blob.zip"
    path.write_bytes(b"z" * 3_000_000)
    seen: list[int] = []
    upload_to_s3(aws["s3"], path, "artifacts", "k.zip", seen.append)
    assert sum(seen) == 3_000_000
    body = aws["s3"].get_object(Bucket="artifacts", Key="k.zip")["Body"]
    assert len(io.BytesIO(body.read()).getvalue()) == 3_000_000


def test_build_for_publishing_numbers_after_the_published_versions(
    deployed: dict[str, Any], layers: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """publish-model MODEL_DIR builds one more than the newest built *or published*: here v2
    and v3 are published from elsewhere and nothing is built locally, so the build is v4."""
    import mlayer.model_layer as model_layer
    from mlayer.layers import build_model_for

    elsewhere = tmp_path / "elsewhere"
    run("publish-model", str(write_model_build(elsewhere, 2)), "--function", "scorer")
    run("publish-model", str(write_model_build(elsewhere, 3)), "--function", "scorer")
    seen: dict[str, int] = {}

    def fake_build(options: Any, progress: Any = None) -> Any:
        seen["version"] = model_layer.next_version(
            options.layers_dir, "sentiment", options.published_versions
        )
        path = write_model_build(options.layers_dir, seen["version"])
        return type("Result", (), {"zip_path": path})()

    monkeypatch.setattr(model_layer, "build_model", fake_build)
    build = build_model_for(
        deployed["lambda"], tmp_path / "model", layer_name="scorer-model", layers_dir=layers
    )
    assert seen["version"] == 4
    assert build.version == 4
