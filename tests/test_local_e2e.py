"""End to end: ``mlayer invoke`` and ``mlayer run-local`` as subprocesses against moto_server,
running the real function on real built layers (deps for this Python + the sample model),
checked through the system afterwards (output table, dead-letter queue, REPORT log).
"""

from __future__ import annotations

import base64
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

from mlayer.aws import AwsSettings
from mlayer.local.endpoint import LocalEndpoint, local_endpoint
from mlayer.reports import parse_reports

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
FUNCTION = "scorer"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_layers(tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path) -> Path:
    """layers/ with the deps layer for this Python (mlayer's build cache makes repeats fast)
    and model layer v1 of the sample text model (its build runs the smoke test)."""
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.model_layer import ModelBuildOptions, build_model

    layers = tmp_path_factory.mktemp("local-layers")
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime=RUNTIME,
            layers_dir=layers,
            function_dir=ROOT / "function",
        )
    )
    build_model(
        ModelBuildOptions(
            model_dir=text_model_dir, version=1, layers_dir=layers, function_dir=ROOT / "function"
        )
    )
    return layers


@dataclass
class Deployed:
    endpoint: LocalEndpoint
    layers: Path
    clients: dict[str, Any]
    table: str
    dlq_url: str
    failures_arn: str
    failures_url: str


@pytest.fixture(scope="module")
def deployed(built_layers: Path) -> Iterator[Deployed]:
    """The function deployed on a fresh moto_server: deps + model v1 linked, alias live,
    writing predictions to a table and bad records to a dead-letter queue."""
    from mlayer.deploy import deploy_function
    from mlayer.publish import load_build, publish_deps, publish_model

    with local_endpoint() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        clients = {n: aws.client(n) for n in ("lambda", "s3", "sqs", "dynamodb", "kinesis", "iam")}
        clients["s3"].create_bucket(Bucket="artifacts")
        clients["dynamodb"].create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dlq_url = clients["sqs"].create_queue(QueueName="bad-records")["QueueUrl"]
        failures_url = clients["sqs"].create_queue(QueueName="esm-failures")["QueueUrl"]
        failures_arn = clients["sqs"].get_queue_attributes(
            QueueUrl=failures_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        deps = next(built_layers.glob("deps-*.zip"))
        model = next(built_layers.glob("model-*.zip"))
        publish_deps(
            clients["lambda"], clients["s3"], build=load_build(deps), layer_name=f"{FUNCTION}-deps",
            bucket="artifacts",
        )  # fmt: skip
        deploy_function(
            clients["lambda"],
            function=FUNCTION,
            function_dir=ROOT / "function",
            role=None,
            runtime=RUNTIME,
            arch="x86_64",
            memory_mb=512,
            timeout_s=30,
            environment={"OUTPUT_TABLE": "predictions", "DEAD_LETTER_QUEUE_URL": dlq_url},
            deps_layer=f"{FUNCTION}-deps",
            model_layer=f"{FUNCTION}-model",
            layers_dir=built_layers,
            local_iam=clients["iam"],
        )
        publish_model(
            clients["lambda"], clients["s3"], function=FUNCTION, build=load_build(model),
            layer_name=f"{FUNCTION}-model", alias="live",
        )  # fmt: skip
        yield Deployed(
            endpoint, built_layers, clients, "predictions", dlq_url, failures_arn, failures_url
        )


def mlayer(
    deployed: Deployed, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("mlayer")
    assert executable, "the mlayer console script is not installed (pip install -e .)"
    return subprocess.run(
        [executable, "--endpoint-url", deployed.endpoint.url, *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_invoke_runs_the_live_model_on_its_layers(deployed: Deployed, tmp_path: Path) -> None:
    # When invoking alias live with the default event (the model's example records)
    log = tmp_path / "lambda.log"
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--alias", "live",
        "--layers-dir", str(deployed.layers), "--function-dir", str(ROOT / "function"),
        "--log", str(log), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    # Then the function answered with predictions of model v1
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    response = result["response"]
    assert result["error"] is None and result["version"] == "1"
    assert response["counts"]["predicted"] == len(response["predictions"]) >= 1
    assert {p["model_version"] for p in response["predictions"]} == {1}
    assert {p["label"] for p in response["predictions"]} <= {"negative", "positive"}
    # and a cold-start REPORT line was logged for the cost estimator
    reports = list(parse_reports(log.read_text().splitlines()))
    assert len(reports) == 1 and reports[0].init_duration_ms is not None
    assert reports[0].memory_size_mb == 512 and reports[0].request_id == result["request_id"]
    # and the direct records were written to the table by the function itself
    item = deployed.clients["dynamodb"].get_item(
        TableName="predictions", Key={"record_id": {"S": response["predictions"][0]["record_id"]}}
    )
    assert "Item" in item


def test_invoke_with_an_event_file_and_a_function_error(deployed: Deployed, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"records": [{"id": "a", "text": "works well"}, {"id": "b"}]}))
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--event", str(event),
        "--layers-dir", str(deployed.layers), "--log", str(tmp_path / "l.log"), "--json",
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)["response"]
    assert [p["record_id"] for p in response["predictions"]] == ["a"]
    assert response["counts"]["dead_lettered"] == 1  # "b" has no text: dead-lettered

    # An event the function cannot take at all is a function error: exit 1, Lambda's shape.
    event.write_text(json.dumps({"Records": "not a list"}))
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--event", str(event),
        "--layers-dir", str(deployed.layers), "--log", str(tmp_path / "l.log"),
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: the function failed: ")
    assert "Traceback" not in proc.stderr


def test_invoke_without_the_layer_builds_names_the_layer_and_the_fix(
    deployed: Deployed, tmp_path: Path
) -> None:
    empty = tmp_path / "layers"
    empty.mkdir()
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--layers-dir", str(empty),
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"Error: layer arn:aws:lambda:us-east-1:123456789012:layer:{FUNCTION}-deps:1 (sha256 "
    )
    assert "the endpoint does not serve its content and no build in" in proc.stderr
    assert f"Rebuild it with `mlayer build-deps --runtime {RUNTIME} --arch x86_64`" in proc.stderr


def test_invoke_refuses_code_that_differs_from_the_deployed_code(
    deployed: Deployed, tmp_path: Path
) -> None:
    changed = tmp_path / "function"
    shutil.copytree(ROOT / "function", changed, ignore=shutil.ignore_patterns("__pycache__"))
    (changed / "lambda_function.py").write_text(
        (changed / "lambda_function.py").read_text() + "\n# edited\n"
    )
    args = ["invoke", "--function", FUNCTION, "--layers-dir", str(deployed.layers)]
    proc = mlayer(deployed, *args, "--function-dir", str(changed), cwd=ROOT)
    assert proc.returncode == 1
    assert f"Error: the code deployed to {FUNCTION} (CodeSha256 " in proc.stderr
    assert "pass --local-code to run the local code as it is" in proc.stderr
    proc = mlayer(
        deployed, *args, "--function-dir", str(changed), "--local-code",
        "--log", str(tmp_path / "l.log"), cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _put(kinesis: Any, stream: str, payloads: list[bytes]) -> None:
    for start in range(0, len(payloads), 500):
        chunk = payloads[start : start + 500]
        kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": d, "PartitionKey": f"k{start + i}"} for i, d in enumerate(chunk)],
        )


def test_run_local_consumes_a_kinesis_stream_like_lambda(
    deployed: Deployed, tmp_path: Path
) -> None:
    from mlayer.deploy import TriggerSettings, trigger

    clients = deployed.clients
    kinesis = clients["kinesis"]
    kinesis.create_stream(StreamName="reviews", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="reviews", WaiterConfig={"Delay": 0.2})
    # Given 300 records of which 6 are malformed, produced before the trigger exists
    payloads = [
        b"\xff\xfe" if i % 50 == 49 else json.dumps({"text": f"great product {i}"}).encode()
        for i in range(300)
    ]
    _put(kinesis, "reviews", payloads)
    trigger(
        clients["lambda"], kinesis, clients["dynamodb"], function=FUNCTION, stream="reviews",
        alias="live", settings=TriggerSettings(batch_size=40, on_failure=deployed.failures_arn),
    )  # fmt: skip
    log = tmp_path / "lambda.log"
    # When run-local drains it with the mapping's settings
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "reviews",
        "--until-idle", "1", "--layers-dir", str(deployed.layers),
        "--function-dir", str(ROOT / "function"), "--log", str(log), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    stats = summary["stats"]
    # Then every record was handled once: predicted, or dead-lettered by the function
    assert summary["settings"]["batch_size"] == 40  # from the mapping
    assert summary["settings"]["on_failure"] == deployed.failures_arn
    assert summary["version"] == "1"  # the mapping targets alias live
    assert stats["records_done"] == stats["records_read"] == 300
    assert stats["predictions"] == 294 and stats["dead_lettered"] == 6
    assert stats["retries"] == 0 and stats["discarded"] == 0 and stats["shards"] == 2
    assert stats["invocations"] >= 300 // 40 and stats["cold_starts"] == 2
    assert summary["stopped"] == "idle"
    # and the system agrees: predictions in the table (keyed by eventID), poison in the DLQ
    items = clients["dynamodb"].scan(TableName="predictions")["Items"]
    stream_items = [i for i in items if i["record_id"]["S"].startswith("shardId-")]
    assert len(stream_items) == 294
    attributes = clients["sqs"].get_queue_attributes(
        QueueUrl=deployed.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) >= 6
    reports = list(parse_reports(log.read_text().splitlines()))
    assert len(reports) == stats["invocations"]
    assert sum(r.init_duration_ms is not None for r in reports) == 2


def test_run_local_consumes_a_dynamodb_stream(deployed: Deployed, tmp_path: Path) -> None:
    # moto empties a DynamoDB stream that has a mapping, so this stream has none: the
    # settings come from flags (see mlayer.local.esm).
    dynamodb = deployed.clients["dynamodb"]
    dynamodb.create_table(
        TableName="reviews-table",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    for i in range(25):
        dynamodb.put_item(
            TableName="reviews-table", Item={"id": {"S": f"r{i}"}, "text": {"S": "broke at once"}}
        )
    dynamodb.delete_item(TableName="reviews-table", Key={"id": {"S": "r0"}})
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "reviews-table",
        "--batch-size", "10", "--max-records", "26", "--layers-dir", str(deployed.layers),
        "--log", str(tmp_path / "l.log"), "--json",
        cwd=ROOT, env={"AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kind"] == "dynamodb" and summary["stopped"] == "max-records"
    assert summary["stats"]["records_done"] == 26
    assert summary["stats"]["predictions"] == 25  # the REMOVE is skipped, not failed
    assert summary["settings"]["source"].startswith("mlayer trigger defaults")


def test_run_local_bad_arguments(deployed: Deployed, tmp_path: Path) -> None:
    proc = mlayer(deployed, "run-local", "--function", FUNCTION, "--stream", "nope", cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: no Kinesis stream or DynamoDB table named nope in us-east-1; check --region, or "
        "pass the stream ARN\n"
    )
    proc = mlayer(deployed, "run-local", "--stream", "reviews", cwd=ROOT)
    assert proc.returncode == 2
    assert "no function given: pass --function NAME" in proc.stderr
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "reviews",
        "--max-record-age", "5", cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: maximum record age must be -1 (infinite) or 60-604800 seconds (--max-record-age)\n"
    )


def test_kinesis_payload_round_trip_is_lambdas(deployed: Deployed) -> None:
    """The sequence numbers the function reports are the ones the emulator checkpoints on."""
    from mlayer.local.esm import KinesisSource, MappingSettings, StreamProcessor

    kinesis = deployed.clients["kinesis"]
    kinesis.create_stream(StreamName="tiny", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="tiny", WaiterConfig={"Delay": 0.2})
    kinesis.put_record(StreamName="tiny", Data=b'{"text": "fine"}', PartitionKey="a")
    arn = kinesis.describe_stream_summary(StreamName="tiny")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    seen: list[dict[str, Any]] = []

    class Capture:
        def invoke(self, event: bytes) -> Any:
            seen.append(json.loads(event))
            from mlayer.reports import Report

            @dataclass
            class R:
                response: Any
                error: Any
                report: Any

            return R({"batchItemFailures": []}, None, Report("x", 1, 1, 128, 1))

        def close(self) -> None:
            pass

    source = KinesisSource(kinesis, arn, region="us-east-1", invoke_identity_arn="role")
    StreamProcessor(source, MappingSettings(), Capture, poll_interval_s=0.05).run(until_idle_s=0.3)
    record = seen[0]["Records"][0]
    assert base64.b64decode(record["kinesis"]["data"]) == b'{"text": "fine"}'
    assert record["eventID"].endswith(":" + record["kinesis"]["sequenceNumber"])
