"""deploy-function --reserved-concurrency and publish-deps --share-with: read back from moto,
shown by status (text and --json), refused with an Error: line when malformed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from fake_layers import role_arn, write_deps_build
from moto import mock_aws

from mlayer.cli import cli

REGION = "us-east-1"
ACCOUNT = "123456789012"
OTHER = "111122223333"
ORG = "o-a1b2c3d4e5"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            service: boto3.client(service, region_name=REGION)
            for service in ("lambda", "iam", "kinesis")
        }


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    src = tmp_path / "function"
    src.mkdir()
    (src / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    return src


@pytest.fixture
def deployed(aws: dict[str, Any], function_dir: Path, layers: Path) -> dict[str, Any]:
    """Given: the deps layer published and function scorer linked to it."""
    write_deps_build(layers)
    assert run("publish-deps", "--function", "scorer", "--layers-dir", str(layers)).exit_code == 0
    assert deploy(function_dir, layers, "--role", role_arn(aws["iam"])).exit_code == 0
    return aws


def deploy(function_dir: Path, layers: Path, *extra: str) -> Result:
    return run(
        "deploy-function", "--function", "scorer", "--function-dir", str(function_dir),
        "--layers-dir", str(layers), *extra,
    )  # fmt: skip


def status_json(layers: Path) -> dict[str, Any]:
    result = run("status", "--function", "scorer", "--json", "--layers-dir", str(layers))
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def status_text(layers: Path) -> str:
    result = run("status", "--function", "scorer", "--layers-dir", str(layers))
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------ reserved concurrency


def test_reserved_concurrency_set_shown_and_removed(
    deployed: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    lam = deployed["lambda"]
    assert "  reserved concurrency: none (it draws on the account's unreserved concurrency)\n" in (
        status_text(layers)
    )

    # When: reserved.
    result = deploy(function_dir, layers, "--reserved-concurrency", "5")

    # Then: Lambda has it, deploy-function and status say so.
    assert result.exit_code == 0, result.output
    assert lam.get_function_concurrency(FunctionName="scorer")["ReservedConcurrentExecutions"] == 5
    assert "  reserved concurrency: 5: at most 5 at once, set aside for it (set now)\n" in (
        result.output
    )
    assert status_json(layers)["reserved_concurrency"] == 5
    assert "  reserved concurrency: 5 (at most 5 at once, set aside for it)\n" in status_text(
        layers
    )

    # When: deployed again without the option, then with the same figure.
    assert deploy(function_dir, layers).exit_code == 0
    same = deploy(function_dir, layers, "--reserved-concurrency", "5")
    assert "  reserved concurrency: 5: at most 5 at once, set aside for it (unchanged)\n" in (
        same.output
    )
    assert lam.get_function_concurrency(FunctionName="scorer")["ReservedConcurrentExecutions"] == 5

    # When: removed.
    removed = deploy(function_dir, layers, "--reserved-concurrency", "none")

    # Then
    assert removed.exit_code == 0, removed.output
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="scorer")
    assert "  reserved concurrency: none, the account's unreserved pool (removed now)\n" in (
        removed.output
    )
    assert status_json(layers)["reserved_concurrency"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "reserved concurrency -1 is negative; pass N (1 or more), or none to remove it"),
        (
            "0",
            "reserved concurrency 0 throttles every invocation: a stream trigger would retry "
            "each batch until its records expire. To pause processing keep the position with "
            "mlayer trigger --disable; to remove the cap pass --reserved-concurrency none",
        ),
        (
            "lots",
            "reserved concurrency 'lots' is not a whole number; pass N (1 or more) or none to "
            "remove it",
        ),
    ],
    ids=["negative", "zero", "not-a-number"],
)
def test_bad_reserved_concurrency_is_refused_before_anything_changes(
    deployed: dict[str, Any], function_dir: Path, layers: Path, value: str, message: str
) -> None:
    before = deployed["lambda"].get_function_configuration(FunctionName="scorer")

    result = deploy(function_dir, layers, "--reserved-concurrency", value, "--memory", "1024")

    assert result.exit_code == 2
    assert result.output.endswith(
        f"Error: Invalid value for '--reserved-concurrency': {message}\n"
    ), result.output
    after = deployed["lambda"].get_function_configuration(FunctionName="scorer")
    assert after["MemorySize"] == before["MemorySize"]
    assert "ReservedConcurrentExecutions" not in deployed["lambda"].get_function_concurrency(
        FunctionName="scorer"
    )


def test_a_cap_below_the_kinesis_triggers_batches_is_warned_about(
    deployed: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    # Given: a 3-shard stream triggering the function, 2 batches per shard.
    deployed["kinesis"].create_stream(StreamName="reviews", ShardCount=3)
    triggered = run(
        "trigger", "--function", "scorer", "--stream", "reviews", "--parallelization", "2"
    )
    assert triggered.exit_code == 0, triggered.output

    capped = deploy(function_dir, layers, "--reserved-concurrency", "4")
    enough = deploy(function_dir, layers, "--reserved-concurrency", "6")

    assert capped.exit_code == 0, capped.output
    assert (
        "Warning: reserved concurrency 4 is below the 6 batches its Kinesis triggers run at "
        "once (reviews: 3 shards x 2): batches wait for a free environment and the streams' "
        "iterator age grows. Pass --reserved-concurrency 6 or more\n" in capped.output
    )
    assert enough.exit_code == 0 and "Warning: reserved concurrency" not in enough.output


# ---------------------------------------------------------------------------- layer sharing


def layer_policy(lam: Any, version: int = 1) -> list[dict[str, Any]]:
    found = lam.get_layer_version_policy(LayerName="scorer-deps", VersionNumber=version)
    statements: list[dict[str, Any]] = json.loads(found["Policy"])["Statement"]
    return statements


def test_share_with_an_account_and_an_organization_idempotently(
    deployed: dict[str, Any], layers: Path
) -> None:
    lam = deployed["lambda"]
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:scorer-deps:1"
    text = status_text(layers)
    assert (
        "Dependency layer scorer-deps version 1 shared with: not shared (this account only)\n"
        in text
    )

    # When
    share = ["--share-with", OTHER, "--share-with", ORG]
    first = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers), *share)

    # Then: one statement per target, read back from Lambda.
    assert first.exit_code == 0, first.output
    assert sorted(layer_policy(lam), key=lambda s: s["Sid"]) == [
        {
            "Sid": f"mlayer-share-{OTHER}",
            "Effect": "Allow",
            "Action": "lambda:GetLayerVersion",
            "Principal": OTHER,
            "Resource": arn,
        },
        {
            "Sid": f"mlayer-share-{ORG}",
            "Effect": "Allow",
            "Action": "lambda:GetLayerVersion",
            "Principal": "*",
            "OrganizationId": ORG,
            "Resource": arn,
        },
    ]
    assert (
        f"  shared with account {OTHER} (lambda:GetLayerVersion, statement mlayer-share-{OTHER})\n"
        in first.output
    )
    assert (
        f"  shared with organization {ORG} (lambda:GetLayerVersion, statement mlayer-share-{ORG})\n"
        in first.output
    )

    # When: run again (the same version is reused). moto would keep a second statement with
    # the same id (AWS refuses it): two statements afterwards prove nothing was added.
    again = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers), *share)
    assert again.exit_code == 0, again.output
    assert "Reused scorer-deps version 1" in again.output
    assert f"  already shared with account {OTHER} " in again.output
    assert len(layer_policy(lam)) == 2

    # And: status shows whom the linked dependency layer version is shared with.
    assert (
        f"Dependency layer scorer-deps version 1 shared with: account {OTHER}, organization {ORG}\n"
        in status_text(layers)
    )
    deps = [layer for layer in status_json(layers)["layers"] if layer["kind"] == "deps"]
    assert deps == [
        {**deps[0], "name": "scorer-deps", "layer_version": 1, "shared_with": [OTHER, ORG]}
    ]


@pytest.mark.parametrize(
    "target",
    ["12345", "1234567890123", "o-short", "O-A1B2C3D4E5", "arn:aws:iam::111122223333:root", "*"],
)
def test_bad_share_targets_are_refused_before_publishing(
    aws: dict[str, Any], layers: Path, target: str
) -> None:
    write_deps_build(layers)

    result = run(
        "publish-deps", "--function", "scorer", "--layers-dir", str(layers), "--share-with", target
    )

    assert result.exit_code == 2
    assert result.output.endswith(
        f"Error: Invalid value for '--share-with': {target!r} is neither a 12-digit AWS account "
        "id (123456789012) nor an organization id (o- and 10 to 32 lower-case letters or "
        "digits, as aws organizations describe-organization prints)\n"
    ), result.output
    assert aws["lambda"].list_layer_versions(LayerName="scorer-deps")["LayerVersions"] == []
