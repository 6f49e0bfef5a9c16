"""End to end, the S3 model store: build-model --store s3, publish-model --bucket, invoke and
run-local as subprocesses against moto_server, with the real function downloading the
archive into each environment's own /tmp, verifying it and loading it on the real layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from function_support import log_entries as logged

from mlayer.aws import AwsSettings
from mlayer.local.endpoint import LocalEndpoint, local_endpoint
from mlayer.model_store import StoreURI

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
FUNCTION = "scorer"
BUCKET = "models"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_layers(tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path) -> Path:
    """layers/ with the deps layer for this Python and two store builds of the sample text
    model: v1 as trained, v2 the same pickles with other label names (another model
    content: its predictions read differently)."""
    from mlayer.deps_layer import DepsBuildOptions, build_deps

    layers = tmp_path_factory.mktemp("store-layers")
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime=RUNTIME,
            layers_dir=layers,
            function_dir=ROOT / "function",
        )
    )
    renamed = tmp_path_factory.mktemp("renamed") / "model"
    shutil.copytree(text_model_dir, renamed)
    meta = json.loads((renamed / "metadata.json").read_text())
    meta["labels"] = [f"label-{label}" for label in meta["labels"]]
    (renamed / "metadata.json").write_text(json.dumps(meta))
    for version, source in ((1, text_model_dir), (2, renamed)):
        proc = subprocess.run(
            [shutil.which("mlayer") or "mlayer", "build-model", str(source), "--store", "s3",
             "--version", str(version), "--layers-dir", str(layers)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "for the S3 model store" in proc.stdout
    return layers


@dataclass
class Deployed:
    endpoint: LocalEndpoint
    layers: Path
    clients: dict[str, Any]


@pytest.fixture(scope="module")
def deployed(store_layers: Path) -> Iterator[Deployed]:
    """A fresh moto_server: the deps layer published, the function deployed, a bucket."""
    from mlayer.deploy import deploy_function
    from mlayer.layers import load_build, publish_deps

    with local_endpoint() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        clients = {n: aws.client(n) for n in ("lambda", "s3", "dynamodb", "kinesis", "iam")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        clients["dynamodb"].create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        deps = next(store_layers.glob("deps-*.zip"))
        publish_deps(
            clients["lambda"], clients["s3"], build=load_build(deps),
            layer_name=f"{FUNCTION}-deps", bucket=BUCKET,
        )  # fmt: skip
        deploy_function(
            clients["lambda"], function=FUNCTION, function_dir=ROOT / "function", role=None,
            runtime=RUNTIME, arch="x86_64", memory_mb=1024, timeout_s=60,
            environment={"OUTPUT_TABLE": "predictions"}, deps_layer=f"{FUNCTION}-deps",
            model_layer=f"{FUNCTION}-model", layers_dir=store_layers,
            local_iam=clients["iam"],
        )  # fmt: skip
        yield Deployed(endpoint, store_layers, clients)


def mlayer(deployed: Deployed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("mlayer") or "mlayer", "--endpoint-url", deployed.endpoint.url, *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def invoke(deployed: Deployed, tmp_path: Path, log: Path) -> subprocess.CompletedProcess[str]:
    return mlayer(
        deployed, "invoke", "--function", FUNCTION, "--alias", "live", "--json",
        "--layers-dir", str(deployed.layers), "--function-dir", str(ROOT / "function"),
        "--log", str(log), cwd=tmp_path,
    )  # fmt: skip


def model_uri(deployed: Deployed, qualifier: str | None = None) -> StoreURI:
    kwargs = {"FunctionName": FUNCTION, **({"Qualifier": qualifier} if qualifier else {})}
    config = deployed.clients["lambda"].get_function_configuration(**kwargs)
    uri = StoreURI.parse(config["Environment"]["Variables"].get("MODEL_URI", ""))
    assert uri is not None, config["Environment"]
    return uri


def test_a_stored_model_rolls_out_serves_a_stream_and_rolls_back(
    deployed: Deployed, tmp_path: Path
) -> None:
    """Given v1 and v2 built for the store; when v1 is published (alias live), invoked, fed a
    Kinesis stream through run-local, then v2 rolled out and rolled back; then every record
    is predicted by the model downloaded from the endpoint, v2's labels show while it is
    live, and rollback serves v1 again without storing anything new."""
    from mlayer.deploy import TriggerSettings, trigger

    clients = deployed.clients
    v1 = deployed.layers / "model-sentiment-v1.tar"
    v2 = deployed.layers / "model-sentiment-v2.tar"
    publish = mlayer(
        deployed, "publish-model", str(v1), "--function", FUNCTION, "--bucket", BUCKET,
        "--alias", "live", "--layers-dir", str(deployed.layers), cwd=tmp_path,
    )  # fmt: skip
    assert publish.returncode == 0, publish.stdout + publish.stderr
    stored = model_uri(deployed, "live")
    assert stored.size == v1.stat().st_size

    log = tmp_path / "lambda.log"
    first = invoke(deployed, tmp_path, log)

    assert first.returncode == 0, first.stdout + first.stderr
    response = json.loads(first.stdout)["response"]
    assert response["counts"]["predicted"] >= 1
    assert {p["label"] for p in response["predictions"]} <= {"negative", "positive"}
    loaded = logged(log, "model loaded")
    assert len(loaded) == 1
    assert loaded[0]["model_version"] == 1
    assert loaded[0]["store"]["bytes"] == stored.size
    assert loaded[0]["store"]["reused"] is False

    # a stream through run-local: two shards, two environments, each downloads the archive
    kinesis = clients["kinesis"]
    kinesis.create_stream(StreamName="reviews", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="reviews", WaiterConfig={"Delay": 0.2})
    texts = [f"{'great' if i % 2 else 'awful'} product {i}" for i in range(120)]
    kinesis.put_records(
        StreamName="reviews",
        Records=[
            {"Data": json.dumps({"text": t}).encode(), "PartitionKey": str(i)}
            for i, t in enumerate(texts)
        ],
    )
    trigger(
        clients["lambda"], kinesis, clients["dynamodb"], function=FUNCTION, stream="reviews",
        alias="live", settings=TriggerSettings(batch_size=50),
    )  # fmt: skip
    run_log = tmp_path / "run.log"
    run = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "reviews",
        "--until-idle", "1", "--layers-dir", str(deployed.layers),
        "--function-dir", str(ROOT / "function"), "--log", str(run_log), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    stats = json.loads(run.stdout)["stats"]
    assert stats["records_done"] == stats["predictions"] == 120
    assert stats["cold_starts"] == 2
    environments = logged(run_log, "model loaded")
    assert len(environments) == 2
    assert all(e["store"]["bytes"] == stored.size for e in environments)
    items = clients["dynamodb"].scan(TableName="predictions")["Items"]
    assert {i["label"]["S"] for i in items} <= {"negative", "positive"}
    assert sum(i["record_id"]["S"].startswith("shardId-") for i in items) == 120

    # v2 rolls out: its labels are served
    assert mlayer(
        deployed, "publish-model", str(v2), "--function", FUNCTION, "--bucket", BUCKET,
        "--alias", "live", "--layers-dir", str(deployed.layers), cwd=tmp_path,
    ).returncode == 0  # fmt: skip
    second = invoke(deployed, tmp_path, log)
    assert second.returncode == 0, second.stdout + second.stderr
    labels = {p["label"] for p in json.loads(second.stdout)["response"]["predictions"]}
    assert labels <= {"label-negative", "label-positive"}
    objects = clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix="mlayer/scorer-model/")
    assert objects["KeyCount"] == 2

    # rollback: the alias moves back to v1's function version; nothing new is stored
    back = mlayer(deployed, "rollback", "--function", FUNCTION, "--alias", "live", cwd=tmp_path)

    assert back.returncode == 0, back.stdout + back.stderr
    assert "-> sentiment v1 (S3 archive" in back.stdout
    assert model_uri(deployed, "live") == stored
    assert model_uri(deployed) == stored  # $LATEST in step
    after = clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix="mlayer/scorer-model/")
    assert [o["LastModified"] for o in after["Contents"]] == [
        o["LastModified"] for o in objects["Contents"]
    ]
    third = invoke(deployed, tmp_path, log)
    labels = {p["label"] for p in json.loads(third.stdout)["response"]["predictions"]}
    assert labels <= {"negative", "positive"}

    status = mlayer(deployed, "status", "--function", FUNCTION, "--alias", "live", "--json",
                    "--layers-dir", str(deployed.layers), cwd=tmp_path)  # fmt: skip
    where = json.loads(status.stdout)["live_model_location"]
    assert (where["from"], where["at"], where["sha256"]) == ("s3", stored.location, stored.sha256)


def test_a_tampered_archive_fails_the_init_and_nothing_is_served(
    deployed: Deployed, tmp_path: Path
) -> None:
    """Given the live archive overwritten in S3 with other bytes of the same length; when the
    function starts; then its init fails with the sha256 mismatch, the invocation fails
    (Lambda would retry the batch), and no prediction is made."""
    clients = deployed.clients
    if not clients["lambda"].list_aliases(FunctionName=FUNCTION)["Aliases"]:
        publish = mlayer(
            deployed, "publish-model", str(deployed.layers / "model-sentiment-v1.tar"),
            "--function", FUNCTION, "--bucket", BUCKET, "--alias", "live", cwd=tmp_path,
        )  # fmt: skip
        assert publish.returncode == 0, publish.stdout + publish.stderr
    stored = model_uri(deployed, "live")
    original = clients["s3"].get_object(Bucket=BUCKET, Key=stored.key)["Body"].read()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF  # a byte of the model's pickles: a valid tar still
    clients["s3"].put_object(Bucket=BUCKET, Key=stored.key, Body=bytes(tampered))
    log = tmp_path / "lambda.log"
    try:
        result = invoke(deployed, tmp_path, log)
    finally:
        clients["s3"].put_object(Bucket=BUCKET, Key=stored.key, Body=original)

    assert result.returncode == 1, result.stdout + result.stderr
    failed = logged(log, "model load failed")
    assert len(failed) == 1
    assert "sha256" in failed[0]["error"] and stored.sha256 in failed[0]["error"]
    assert logged(log, "model loaded") == []
    assert logged(log, "batch") == []


def test_a_model_set_routes_each_record_to_its_tenants_model_and_rolls_back_whole(
    deployed: Deployed, tmp_path: Path, text_model_dir: Path, numeric_model_dir: Path
) -> None:
    """Given function "tenants"; when three members are published one by one with --set
    (a text model, a numeric model, the text model with other labels); then one invocation
    with records for each tenant predicts each with its own model (equal to loading that
    model directly), records naming no tenant go to the default; and rollback serves the
    previous set, where the third tenant's records fall back to the default."""
    from function_support import FUNCTION_DIR  # noqa: F401  (puts function/ on sys.path)

    from mlayer.deploy import deploy_function
    from model import load

    clients = deployed.clients
    deploy_function(
        clients["lambda"], function="tenants", function_dir=ROOT / "function", role=None,
        runtime=RUNTIME, arch="x86_64", memory_mb=1024, timeout_s=60, environment={},
        deps_layer=f"{FUNCTION}-deps", model_layer="tenants-model",
        layers_dir=deployed.layers, local_iam=clients["iam"],
    )  # fmt: skip
    relabelled = tmp_path / "relabelled"
    shutil.copytree(text_model_dir, relabelled)
    meta = json.loads((relabelled / "metadata.json").read_text())
    meta["labels"] = ["bad", "good"]
    (relabelled / "metadata.json").write_text(json.dumps(meta))
    members = [("acme", text_model_dir), ("globex", numeric_model_dir), ("initech", relabelled)]
    for i, (member, source) in enumerate(members):
        extra = ["--set-field", "tenant", "--set-default", "acme"] if i == 0 else []
        proc = mlayer(
            deployed, "publish-model", str(source), "--function", "tenants", "--set", member,
            "--alias", "live", "--layers-dir", str(deployed.layers), *extra, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{member} added; members {', '.join(sorted(m for m, _ in members[: i + 1]))}" in (
            proc.stdout
        )
    numeric_meta = json.loads((numeric_model_dir / "metadata.json").read_text())
    numeric_row = dict(numeric_meta["examples"][0])
    records = [
        {"tenant": "acme", "text": "great product, works"},
        {"tenant": "globex", **numeric_row},
        {"tenant": "initech", "text": "great product, works"},
        {"tenant": "acme", "text": "awful, broke at once"},
        {"tenant": "nobody", "text": "awful, broke at once"},  # -> the default, acme
    ]
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"records": records}))

    def invoke_set() -> list[dict[str, Any]]:
        proc = mlayer(
            deployed, "invoke", "--function", "tenants", "--alias", "live", "--event",
            str(event), "--json", "--layers-dir", str(deployed.layers),
            "--function-dir", str(ROOT / "function"), "--log", str(tmp_path / "l.log"),
            cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        predictions: list[dict[str, Any]] = json.loads(proc.stdout)["response"]["predictions"]
        return predictions

    predicted = invoke_set()

    direct = {member: load(source) for member, source in members}
    text_rows = [r["text"] for r in records if "text" in r]
    acme = direct["acme"].predict(text_rows).labels
    initech = direct["initech"].predict(text_rows).labels
    globex = (
        direct["globex"]
        .predict([[float(numeric_row[f]) for f in direct["globex"].input.features]])
        .labels
    )
    assert [p["model"] for p in predicted] == ["acme", "globex", "initech", "acme", "acme"]
    assert [p["label"] for p in predicted] == [
        acme[0], globex[0], initech[1], acme[2], acme[3],
    ]  # fmt: skip
    assert {p["model_version"] for p in predicted} == {3}

    back = mlayer(deployed, "rollback", "--function", "tenants", "--alias", "live", cwd=tmp_path)
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = invoke_set()
    assert [p["model"] for p in rolled] == ["acme", "globex", "acme", "acme", "acme"]
    assert {p["model_version"] for p in rolled} == {2}
