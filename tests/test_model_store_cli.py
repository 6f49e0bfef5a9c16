"""The S3 model store through the CLI, against moto: publish, rollout, rollback, status,
history, prune and deploy-function for models that live in S3 instead of a layer.

The archives are fake models (the function never loads them here); what the function does
with MODEL_URI is tested in test_model_store.py and end to end in test_local_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from fake_layers import (
    create_function,
    layer_list,
    layer_version_arn,
    write_deps_build,
    write_model_archive,
    write_model_build,
)
from moto import mock_aws

from mlayer.cli import cli
from mlayer.model_store import StoreURI

BUCKET = "models"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def aws(layers: Path) -> Iterator[dict[str, Any]]:
    """Given: the deps layer published, function scorer linked to it, a bucket."""
    with mock_aws():
        clients = {
            name: boto3.client(name, region_name="us-east-1") for name in ("lambda", "iam", "s3")
        }
        clients["s3"].create_bucket(Bucket=BUCKET)
        write_deps_build(layers)
        result = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers))
        assert result.exit_code == 0, result.output
        create_function(
            clients["lambda"],
            clients["iam"],
            layers=[layer_version_arn(clients["lambda"], "scorer-deps", 1)],
        )
        yield clients


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every UpdateFunctionConfiguration moto received. moto 5 stores EphemeralStorage on
    create only (an update's is accepted and dropped), so what mlayer sends is read here."""
    from moto.awslambda.models import LambdaFunction

    updates: list[dict[str, Any]] = []
    original = LambdaFunction.update_configuration

    def spy(self: Any, config_updates: dict[str, Any]) -> dict[str, Any]:
        updates.append(dict(config_updates))
        return original(self, config_updates)

    monkeypatch.setattr(LambdaFunction, "update_configuration", spy)
    return updates


def storage_sent(updates: list[dict[str, Any]]) -> list[int]:
    return [u["EphemeralStorage"]["Size"] for u in updates if "EphemeralStorage" in u]


def publish(path: Path, *extra: str) -> Result:
    return run("publish-model", str(path), "--function", "scorer", "--bucket", BUCKET, *extra)


def config(lam: Any, qualifier: str | None = None) -> dict[str, Any]:
    kwargs = {"FunctionName": "scorer"}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    result: dict[str, Any] = lam.get_function_configuration(**kwargs)
    return result


def model_uri(lam: Any, qualifier: str | None = None) -> str | None:
    env = (config(lam, qualifier).get("Environment") or {}).get("Variables") or {}
    return env.get("MODEL_URI")


def stored_keys(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents") or []
    return sorted(obj["Key"] for obj in listed)


def test_a_stored_model_rolls_out_through_s3(aws: dict[str, Any], layers: Path) -> None:
    """Given a store build; when published with --alias; then the archive is in S3 under its
    sha256 with the model's record, $LATEST and the new version download it (MODEL_URI),
    link no model layer, and /tmp is sized for it."""
    lam, s3 = aws["lambda"], aws["s3"]
    archive = write_model_archive(layers, 1, payload_bytes=600 * 1024 * 1024 // 100)
    sidecar = json.loads(archive.with_suffix(".json").read_text())

    result = publish(archive, "--alias", "live")

    assert result.exit_code == 0, result.output
    key = f"mlayer/scorer-model/{sidecar['sha256']}.tar"
    assert stored_keys(s3) == [key]
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == archive.stat().st_size
    assert head["Metadata"]["mlayer"].startswith(
        f"mlayer model sentiment v1 sha256={sidecar['sha256']} "
    )
    uri = f"s3://{BUCKET}/{key}#sha256={sidecar['sha256']}&size={archive.stat().st_size}"
    assert model_uri(lam) == uri
    version = lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"]
    assert model_uri(lam, version) == uri
    assert config(lam, version)["Description"].startswith(
        f"mlayer model sentiment v1 sha256={sidecar['sha256']} identity="
    )
    assert layer_list(lam, "scorer") == [layer_version_arn(lam, "scorer-deps", 1)]
    assert config(lam)["EphemeralStorage"]["Size"] == 512  # a 6 MB archive fits the default
    assert f"Stored s3://{BUCKET}/{key}" in result.output
    assert f"MODEL_URI={uri}" in result.output
    assert "Environment: /tmp 512 MB" in result.output
    assert "Model: none -> sentiment v1 (S3 archive" in result.output


def test_tmp_grows_for_a_big_archive_and_memory_is_checked(
    aws: dict[str, Any], layers: Path, sent: list[dict[str, Any]]
) -> None:
    """Given an archive of 400 MB whose smoke test peaked at 3,000 MB; when published to a
    function with 128 MB; then it is refused naming the peak, and with --memory it rolls out
    with the memory set and /tmp raised to hold the archive and its files."""
    lam = aws["lambda"]
    archive = write_model_archive(layers, 1, peak_mb=3000.0, payload_bytes=400 * 1024 * 1024)

    refused = publish(archive)

    assert refused.exit_code == 1
    assert refused.output.startswith(
        "Error: the function has 128 MB of memory but loading and scoring this model peaked at "
        "3,000 MB in the smoke test: it would run out of memory at init. Pass --memory 3904 "
        "(recommended), or at least 3000"
    )
    assert model_uri(lam) is None
    assert stored_keys(aws["s3"]) == []  # refused before uploading

    result = publish(archive, "--memory", "3904")

    assert result.exit_code == 0, result.output
    assert config(lam)["MemorySize"] == 3904
    # (400 MiB archive + 400 MiB files) * 1.1 = 880 MiB -> 896 MB, in the same update
    assert storage_sent(sent) == [896]
    assert [u["MemorySize"] for u in sent if "EphemeralStorage" in u] == [3904]
    assert "/tmp 512 -> 896 MB" in result.output
    assert "memory 128 -> 3,904 MB" in result.output


def test_store_build_needs_a_bucket_and_an_existing_one(aws: dict[str, Any], layers: Path) -> None:
    archive = write_model_archive(layers, 1)

    no_bucket = run("publish-model", str(archive), "--function", "scorer")
    missing = run(
        "publish-model", str(archive), "--function", "scorer", "--bucket", "no-such-bucket"
    )

    assert no_bucket.exit_code == 1
    assert no_bucket.output == (
        "Error: model-sentiment-v1.tar is packaged for the S3 model store: pass --bucket BUCKET "
        "(an S3 bucket in the function's region the function's role may read)\n"
    )
    assert missing.exit_code == 1
    assert missing.output.startswith(
        "Error: bucket no-such-bucket does not exist; create it (aws s3 mb s3://no-such-bucket)"
    )
    assert model_uri(aws["lambda"]) is None


def test_store_s3_refuses_a_layer_zip(aws: dict[str, Any], layers: Path) -> None:
    result = publish(write_model_build(layers, 1), "--store", "s3")

    assert result.exit_code == 2
    assert "model-sentiment-v1.zip is a model layer; build the model for the store" in result.output


def test_publishing_the_stored_live_model_again_uploads_nothing(
    aws: dict[str, Any], layers: Path
) -> None:
    lam, s3 = aws["lambda"], aws["s3"]
    assert publish(write_model_archive(layers, 1, content="A"), "--alias", "live").exit_code == 0
    puts: list[str] = []
    s3.meta.events.register("before-call.s3.PutObject", lambda **kw: puts.append("put"))

    again = publish(write_model_archive(layers, 2, content="A"), "--alias", "live")

    assert again.exit_code == 0, again.output
    assert again.output.startswith("unchanged: sentiment v1 is live with this content (alias live")
    assert len(stored_keys(s3)) == 1
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"


def test_rollback_moves_between_layer_and_store_without_uploading(
    aws: dict[str, Any], layers: Path
) -> None:
    """Given v1 in a layer and v2 in the store, both rolled out on alias live; when rolled
    back; then the alias is on v1's function version, $LATEST links the v1 layer again and
    has no MODEL_URI, and nothing was uploaded or downloaded; rolling forward again (--to 2)
    puts MODEL_URI back without a new upload."""
    lam, s3 = aws["lambda"], aws["s3"]
    assert publish(write_model_build(layers, 1), "--alias", "live").exit_code == 0
    assert publish(write_model_archive(layers, 2), "--alias", "live").exit_code == 0
    v2_uri = model_uri(lam)
    assert v2_uri is not None
    calls: list[str] = []
    for event in ("PutObject", "GetObject", "CreateMultipartUpload"):
        s3.meta.events.register(f"before-call.s3.{event}", lambda **kw: calls.append("s3"))

    back = run("rollback", "--function", "scorer", "--alias", "live")

    assert back.exit_code == 0, back.output
    assert "Rolled back scorer: sentiment v2 (S3 archive" in back.output
    assert "-> sentiment v1 (layer version 1)" in back.output
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"
    assert model_uri(lam) is None
    assert layer_list(lam, "scorer")[-1] == layer_version_arn(lam, "scorer-model", 1)

    forward = run("rollback", "--function", "scorer", "--alias", "live", "--to", "2")

    assert forward.exit_code == 0, forward.output
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "2"
    assert model_uri(lam) == v2_uri
    assert layer_list(lam, "scorer") == [layer_version_arn(lam, "scorer-deps", 1)]
    assert calls == []


def test_canary_and_promote_with_stored_models(aws: dict[str, Any], layers: Path) -> None:
    lam = aws["lambda"]
    assert publish(write_model_archive(layers, 1), "--alias", "live").exit_code == 0

    canary = publish(write_model_archive(layers, 2), "--alias", "live", "--canary", "10")
    assert canary.exit_code == 0, canary.output
    alias = lam.get_alias(FunctionName="scorer", Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}

    promoted = run("promote", "--function", "scorer", "--alias", "live")

    assert promoted.exit_code == 0, promoted.output
    assert "Model: sentiment v1 (S3 archive" in promoted.output
    assert "-> sentiment v2 (S3 archive" in promoted.output
    # Version 2 scored the live v1 as its shadow (SHADOW_URI): the alias ends on $LATEST
    # published again without it.
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "3"
    assert model_uri(lam, "3") == model_uri(lam, "2")
    assert "SHADOW_URI" not in (config(lam, "3").get("Environment") or {}).get("Variables", {})


def test_status_and_history_say_where_each_model_lives(aws: dict[str, Any], layers: Path) -> None:
    lam = aws["lambda"]
    assert publish(write_model_build(layers, 1), "--alias", "live").exit_code == 0
    archive = write_model_archive(layers, 2)
    assert publish(archive, "--alias", "live").exit_code == 0
    uri = StoreURI.parse(model_uri(lam) or "")
    assert uri is not None

    status = run("status", "--function", "scorer", "--alias", "live", "--json")
    history = run("history", "--function", "scorer", "--alias", "live", "--json")
    text = run("status", "--function", "scorer", "--alias", "live", "--layers-dir", str(layers))

    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["live_model_location"] == {
        "from": "s3",
        "at": uri.location,
        "bytes": archive.stat().st_size,
        "sha256": uri.sha256,
        "model_uri": str(uri),
        "deleted": False,
    }
    assert data["ephemeral_mb"] == 512
    assert data["manifest"]["version"] == 2  # from the local build with this sha256
    rows = json.loads(history.output)["rows"]
    assert [(r["model_version"], r["layer_version"], r["live"]) for r in rows] == [
        (2, None, True),
        (1, 1, False),
    ]
    assert rows[0]["location"] == uri.location
    assert rows[0]["archive_bytes"] == archive.stat().st_size
    assert rows[0]["function_versions"] == ["$LATEST", "2"]
    assert f"from: s3 {uri.location}" in text.output
    assert f"sha256 {uri.sha256}" in text.output


def test_status_reads_the_manifest_from_the_archive_itself(
    aws: dict[str, Any], layers: Path, tmp_path: Path
) -> None:
    """No local build: the manifest is read from the first megabyte of the stored archive."""
    assert publish(write_model_archive(layers, 1)).exit_code == 0

    status = run("status", "--function", "scorer", "--json", "--layers-dir", str(tmp_path))

    data = json.loads(status.output)
    assert data["manifest"]["name"] == "sentiment"
    assert data["manifest_source"].endswith("(its manifest.json)")


def test_prune_deletes_only_unused_archives(aws: dict[str, Any], layers: Path) -> None:
    """Given v1..v4 stored, alias live on v4 and function version 1 carrying v1; when pruned
    with --keep 1; then v2 and v3 are deleted from S3, v1 (used) and v4 (newest, live) kept."""
    lam, s3 = aws["lambda"], aws["s3"]
    archives = [write_model_archive(layers, n) for n in (1, 2, 3, 4)]
    assert publish(archives[0], "--alias", "live").exit_code == 0
    for archive in archives[1:3]:
        assert publish(archive).exit_code == 0  # $LATEST only: no function version keeps them
    assert publish(archives[3], "--alias", "live").exit_code == 0
    sha = {
        n: json.loads(a.with_suffix(".json").read_text())["sha256"]
        for n, a in enumerate(archives, 1)
    }

    dry = run("prune", "--function", "scorer", "--keep", "1", "--dry-run", "--json")
    pruned = run("prune", "--function", "scorer", "--keep", "1")

    assert dry.exit_code == 0, dry.output
    assert sorted(r["model_version"] for r in json.loads(dry.output)["deleted"]) == [2, 3]
    assert pruned.exit_code == 0, pruned.output
    assert stored_keys(s3) == sorted(f"mlayer/scorer-model/{sha[n]}.tar" for n in (1, 4))
    assert "Kept (in use by function version 1" in pruned.output
    rollback = run("rollback", "--function", "scorer", "--alias", "live")
    assert rollback.exit_code == 0, rollback.output
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"


def test_deploy_function_keeps_the_stored_model(
    aws: dict[str, Any], layers: Path, sent: list[dict[str, Any]]
) -> None:
    """Given a store-backed function; when deploy-function updates it; then MODEL_URI stays,
    no model layer is linked (one is published), and a too small --ephemeral-storage is
    refused naming what the archive needs."""
    lam = aws["lambda"]
    assert (
        run("publish-model", str(write_model_build(layers, 1)), "--function", "scorer").exit_code
        == 0
    )
    assert publish(write_model_archive(layers, 2, payload_bytes=300 * 1024 * 1024)).exit_code == 0
    uri = model_uri(lam)

    result = run("deploy-function", "--function", "scorer", "--layers-dir", str(layers))
    small = run(
        "deploy-function", "--function", "scorer", "--layers-dir", str(layers),
        "--ephemeral-storage", "512",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert model_uri(lam) == uri
    assert layer_list(lam, "scorer") == [layer_version_arn(lam, "scorer-deps", 1)]
    assert storage_sent(sent)[-1] == 768  # publish-model sized it; deploy-function keeps it
    assert small.exit_code == 1
    assert small.output.startswith(
        "Error: --ephemeral-storage 512 MB cannot hold the stored model (s3://models/mlayer/"
    )
    assert "pass at least 768" in small.output


def test_a_changed_or_unsafe_archive_is_refused_before_anything_reaches_aws(
    aws: dict[str, Any], layers: Path
) -> None:
    """Given an archive whose model file was changed after the build, and one with an entry
    climbing out of its root; when published; then each gets one Error line and S3 and the
    function are untouched."""
    import io
    import tarfile

    archive = write_model_archive(layers, 1)
    data = bytearray(archive.read_bytes())
    data[data.index(b"model sentiment v1")] ^= 0x20  # "Model sentiment v1": same size
    archive.write_bytes(bytes(data))
    changed = publish(archive)

    unsafe = layers / "model-evil-v1.tar"
    with tarfile.open(unsafe, "w") as tar:
        for name, body in (("manifest.json", b"{}"), ("../escape.py", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    refused = publish(unsafe)

    assert changed.exit_code == 1
    assert changed.output.startswith("Error: sentiment.joblib in ")
    assert "the archive was changed after it was built; rebuild it with mlayer build-model " in (
        changed.output
    )
    assert refused.exit_code == 1
    assert refused.output.startswith(
        f"Error: {unsafe} is not safe to publish: entry '../escape.py' is not a regular file "
        "under the archive's root"
    )
    assert stored_keys(aws["s3"]) == []
    assert model_uri(aws["lambda"]) is None


def test_deploy_function_checks_memory_against_the_stored_models_peak(
    aws: dict[str, Any], layers: Path
) -> None:
    """Given a stored model whose smoke test peaked at 900 MB, live with --memory 1280; when
    deploy-function lowers the memory below the peak; then it is refused naming the peak,
    and between the peak and the recommendation it warns."""
    lam = aws["lambda"]
    archive = write_model_archive(layers, 1, peak_mb=900.0)
    assert publish(archive, "--memory", "1280").exit_code == 0
    deploy = ["deploy-function", "--function", "scorer", "--layers-dir", str(layers)]

    refused = run(*deploy, "--memory", "512")
    warned = run(*deploy, "--memory", "1024")

    assert refused.exit_code == 1
    assert refused.output.startswith(
        "Error: the function has 512 MB of memory but loading and scoring this model peaked at "
        "900 MB in the smoke test"
    )
    assert warned.exit_code == 0, warned.output
    assert "Warning: the function has 1,024 MB of memory; 1,280 MB is recommended" in (
        warned.output
    )
    assert config(lam)["MemorySize"] == 1024
