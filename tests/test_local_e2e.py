"""End to end: ``mlayer invoke`` and ``mlayer run-local`` as subprocesses against moto_server,
running the real function on real built layers (deps for this Python + the sample model),
checked through the system afterwards (output table, dead-letter queue, REPORT log).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
    from mlayer.layers import load_build, publish_deps
    from mlayer.rollout import publish_model

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
    args = [
        "run-local", "--function", FUNCTION, "--stream", "reviews-table", "--batch-size", "10",
        "--layers-dir", str(deployed.layers), "--log", str(tmp_path / "l.log"),
        "--checkpoints", str(tmp_path / "checkpoints.json"), "--json",
    ]  # fmt: skip
    env = {"AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"}
    proc = mlayer(deployed, *args, "--max-records", "26", cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kind"] == "dynamodb" and summary["stopped"] == "max-records"
    assert summary["stats"]["records_done"] == 26
    assert summary["stats"]["predictions"] == 25
    # the REMOVE is dropped by trigger's default filter, before any invocation
    assert summary["settings"]["filters"] == ['{"eventName":["INSERT","MODIFY"]}']
    assert summary["stats"]["filtered"] == 1
    assert summary["settings"]["source"].startswith("mlayer trigger defaults")
    # A second run resumes after the checkpoint (AFTER_SEQUENCE_NUMBER, as for Kinesis)
    ((shard, checkpoint),) = summary["shard_checkpoints"].items()
    for i in range(3):
        dynamodb.put_item(
            TableName="reviews-table", Item={"id": {"S": f"n{i}"}, "text": {"S": "works well"}}
        )
    proc = mlayer(deployed, *args, "--until-idle", "1", cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads(proc.stdout)
    assert again["resumed_from"] == {
        shard: {"position": "AFTER_SEQUENCE_NUMBER", "sequence_number": checkpoint}
    }
    assert again["stats"]["records_done"] == again["stats"]["predictions"] == 3


def test_run_local_bad_arguments(deployed: Deployed, tmp_path: Path) -> None:
    proc = mlayer(deployed, "run-local", "--function", FUNCTION, "--stream", "nope", cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: no Kinesis stream or DynamoDB table named nope in us-east-1; check --region, or "
        "pass the stream ARN\n"
    )
    proc = mlayer(deployed, "run-local", "--stream", "reviews", cwd=ROOT)
    assert proc.returncode == 2
    assert (
        "Missing option '--function' (or MLAYER_FUNCTION, or function = ... in mlayer.toml)."
        in proc.stderr
    )
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


# -- stopping, killing and restarting run-local --------------------------------------------

# Appended to a copy of the function (run with --local-code): every record delivered is
# logged (between START and END, in the REPORT log) so that the test can count deliveries per
# record and check their order; files in CONTROL slow it down, fail a record until healed, or
# hang a batch, standing in for a function that misbehaves while run-local is stopped.
TRACER = """

import base64 as _base64
import pathlib as _pathlib
import time as _time

_CONTROL = _pathlib.Path({control!r})
_real_handler = lambda_handler


def lambda_handler(event, context):
    records = event.get("Records") or []
    texts = [_base64.b64decode(r["kinesis"]["data"]).decode("utf-8", "replace") for r in records]
    if any("HANG" in t for t in texts):
        (_CONTROL / "hanging").touch()
        _time.sleep(600)
    slow = _CONTROL / "slow"
    if slow.exists():
        _time.sleep(float(slow.read_text()))
    response = _real_handler(event, context)
    failing = [
        r["kinesis"]["sequenceNumber"]
        for r, t in zip(records, texts)
        if "FAIL" in t and not (_CONTROL / "healed").exists()
    ]
    if failing:
        (_CONTROL / "failing").touch()
        response["batchItemFailures"] = [{{"itemIdentifier": s}} for s in failing]
    for r in records:
        print("DELIVERED", r["eventID"])
    return response
"""


@dataclass
class Traced:
    """A stream run by the tracing copy of the function, and what was produced into it."""

    stream: str
    function_dir: Path
    control: Path
    checkpoints: Path
    log: Path
    produced: list[tuple[str, str, bytes]]  # (shard id, sequence number, data), put order


@pytest.fixture
def traced(deployed: Deployed, tmp_path: Path, request: pytest.FixtureRequest) -> Traced:
    function_dir = tmp_path / "function"
    shutil.copytree(ROOT / "function", function_dir, ignore=shutil.ignore_patterns("__pycache__"))
    control = tmp_path / "control"
    control.mkdir()
    handler = function_dir / "lambda_function.py"
    handler.write_text(handler.read_text() + TRACER.format(control=str(control)))
    stream = "restart-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[-60:]
    kinesis = deployed.clients["kinesis"]
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    return Traced(
        stream, function_dir, control, tmp_path / "checkpoints.json", tmp_path / "lambda.log", []
    )


def produce(deployed: Deployed, traced: Traced, texts: list[str]) -> None:
    """Put records (JSON {"text"} or, for "BAD", bytes the function dead-letters)."""
    kinesis = deployed.clients["kinesis"]
    start = len(traced.produced)
    payloads = [b"\xff\xfe" if t == "BAD" else json.dumps({"text": t}).encode() for t in texts]
    for offset in range(0, len(payloads), 500):
        chunk = payloads[offset : offset + 500]
        result = kinesis.put_records(
            StreamName=traced.stream,
            Records=[
                {"Data": d, "PartitionKey": f"k{start + offset + i}"} for i, d in enumerate(chunk)
            ],
        )
        assert result.get("FailedRecordCount", 0) == 0
        traced.produced += [
            (r["ShardId"], r["SequenceNumber"], d)
            for r, d in zip(result["Records"], chunk, strict=True)
        ]


def run_local_args(deployed: Deployed, traced: Traced, *extra: str) -> list[str]:
    executable = shutil.which("mlayer")
    assert executable, "the mlayer console script is not installed (pip install -e .)"
    return [
        executable, "--endpoint-url", deployed.endpoint.url, "run-local",
        "--function", FUNCTION, "--stream", traced.stream, "--batch-size", "10",
        "--max-retries", "-1", "--no-bisect",
        "--report-batch-item-failures", "--checkpoints", str(traced.checkpoints),
        "--layers-dir", str(deployed.layers), "--function-dir", str(traced.function_dir),
        "--local-code", "--log", str(traced.log), "--json", *extra,
    ]  # fmt: skip


@dataclass
class Running:
    proc: subprocess.Popen[str]
    stderr: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def said(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        """Exit code, stdout and stderr, once it has exited (bounded)."""
        stdout, _ = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, stdout, self.said()


def start_run_local(deployed: Deployed, traced: Traced, *extra: str) -> Running:
    stderr = traced.control.parent / f"stderr-{time.monotonic_ns()}.txt"
    with stderr.open("w") as err:
        # Its own session, so that os.killpg stands in for Ctrl-C in a terminal (which
        # signals the whole foreground process group).
        proc = subprocess.Popen(
            run_local_args(deployed, traced, *extra),
            env={**os.environ, "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    return Running(proc, stderr)


def wait_for(condition: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def deliveries(log: Path) -> list[tuple[str, str]]:
    """(shard id, sequence number) of every record delivered, in log order."""
    if not log.exists():
        return []
    found = re.findall(r"^DELIVERED (shardId-\d+):(\d+)$", log.read_text(), re.MULTILINE)
    return [(shard, seq) for shard, seq in found]


def batches(log: Path) -> list[list[tuple[str, str]]]:
    """The records of each invocation, in log order (START ... END blocks)."""
    blocks = re.split(r"^START RequestId: ", log.read_text(), flags=re.MULTILINE)[1:]
    found = [re.findall(r"^DELIVERED (shardId-\d+):(\d+)$", b, re.MULTILINE) for b in blocks]
    return [[(shard, seq) for shard, seq in records] for records in found if records]


def saved_checkpoints(traced: Traced) -> dict[str, str]:
    if not traced.checkpoints.exists():
        return {}
    data = json.loads(traced.checkpoints.read_text())
    (stream,) = data["streams"].values()
    return {
        shard: entry["sequence_number"]
        for shard, entry in stream["functions"]["scorer:$LATEST"].items()
    }


def checkpoints_so_far(traced: Traced) -> dict[str, str]:
    """The saved checkpoints, or none while the file has no entry for the function yet."""
    try:
        return saved_checkpoints(traced)
    except (ValueError, KeyError):
        return {}


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the execution environments of a run-local)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def in_order(records: list[tuple[str, str]]) -> bool:
    """Each shard's records in increasing sequence number order."""
    last: dict[str, int] = {}
    for shard, seq in records:
        if int(seq) <= last.get(shard, -1):
            return False
        last[shard] = int(seq)
    return True


def dead_letters(deployed: Deployed) -> list[str]:
    """The record ids in the function's dead-letter queue (drained)."""
    sqs, ids = deployed.clients["sqs"], list[str]()
    while True:
        messages = sqs.receive_message(
            QueueUrl=deployed.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        if not messages:
            return ids
        for message in messages:
            ids.append(json.loads(message["Body"])["record_id"])
            sqs.delete_message(QueueUrl=deployed.dlq_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_run_local_stopped_then_restarted_loses_nothing_and_repeats_no_checkpointed_record(
    deployed: Deployed, traced: Traced, signal_name: str
) -> None:
    # Given 400 records (1 in 25 malformed) consumed slowly (0.1 s a batch of 10, 2 shards)
    (traced.control / "slow").write_text("0.1")
    dead_letters(deployed)  # empty the queue of other tests' dead letters
    produce(deployed, traced, ["BAD" if i % 25 == 24 else f"works well {i}" for i in range(400)])
    run = start_run_local(deployed, traced, "--starting-position", "TRIM_HORIZON")
    # When run-local is stopped while records flow, once each shard has a checkpoint (on a
    # loaded machine one shard may not have finished a batch by the 60th delivery, and a
    # shard without a checkpoint restarts from LATEST, by design)
    wait_for(
        lambda: len(deliveries(traced.log)) >= 60 and len(checkpoints_so_far(traced)) == 2,
        "60 records delivered and a checkpoint on each shard",
    )
    environments = children(run.pid)
    if signal_name == "SIGINT":
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in a terminal
    else:
        os.kill(run.pid, signal.SIGKILL)
    code, stdout, stderr = run.finish(120)
    first_run = deliveries(traced.log)
    checkpoints = saved_checkpoints(traced)
    if signal_name == "SIGINT":
        # Then it stopped after the batches in flight, without draining what it had read
        assert code == 130, stdout + stderr
        assert "Ctrl-C: finishing the batches in flight" in stderr
        summary = json.loads(stdout)
        assert summary["stopped"] == "interrupted"
        assert summary["shard_checkpoints"] == checkpoints
        assert len(first_run) <= 60 + 4 * 10  # what was done, plus a batch in flight per shard
        assert summary["stats"]["records_done"] == len(first_run)
    else:
        assert code == -signal.SIGKILL
    assert len(environments) == 2
    wait_for(lambda: not any(alive(pid) for pid in environments), "the environments to end", 30)
    # and 200 more records are produced while it is down
    produce(deployed, traced, ["BAD" if i % 25 == 24 else f"broke at once {i}" for i in range(200)])
    # When it is restarted from LATEST (the checkpoints take precedence)
    run = start_run_local(deployed, traced, "--starting-position", "LATEST", "--until-idle", "2")
    code, stdout, stderr = run.finish(300)
    assert code == 0, stdout + stderr
    summary = json.loads(stdout)
    second_run = deliveries(traced.log)[len(first_run) :]
    # Then each shard resumed after its checkpoint
    assert summary["resumed_from"] == {
        shard: {"position": "AFTER_SEQUENCE_NUMBER", "sequence_number": seq}
        for shard, seq in checkpoints.items()
    }
    # and no checkpointed record was delivered again, and each shard went in order
    assert not [(s, q) for s, q in second_run if int(q) <= int(checkpoints[s])]
    assert in_order(first_run) and in_order(second_run)
    # and every record produced was delivered: none lost
    produced = {(shard, seq) for shard, seq, _ in traced.produced}
    assert len(produced) == 600
    assert produced == set(first_run) | set(second_run)
    if signal_name == "SIGINT":
        assert len(first_run) + len(second_run) == 600  # each exactly once
    # and the system agrees: a prediction for each good record, a dead letter for each bad one
    pages = deployed.clients["dynamodb"].get_paginator("scan").paginate(TableName=deployed.table)
    predicted = {i["record_id"]["S"] for page in pages for i in page["Items"]}
    good = {f"{s}:{q}" for s, q, d in traced.produced if d != b"\xff\xfe"}
    bad = {f"{s}:{q}" for s, q, d in traced.produced if d == b"\xff\xfe"}
    assert good <= predicted
    letters = dead_letters(deployed)
    assert set(letters) == bad
    # and a bad record checkpointed by the first run was not dead-lettered again
    done_first = [b for b in bad if int(b.split(":")[1]) <= int(checkpoints[b.split(":")[0]])]
    assert done_first and all(letters.count(b) == 1 for b in done_first)


def test_ctrl_c_during_a_retry_checkpoints_before_the_unresolved_record(
    deployed: Deployed, traced: Traced
) -> None:
    # Given a record the function fails (batchItemFailures) until healed, retried forever
    produce(deployed, traced, [f"works well {i}" for i in range(4)])
    run = start_run_local(deployed, traced, "--starting-position", "TRIM_HORIZON")
    wait_for(lambda: len(deliveries(traced.log)) >= 4, "the first records")
    produce(deployed, traced, ["works well", "FAIL this one", *[f"fine {i}" for i in range(30)]])
    failing = next((shard, seq) for shard, seq, d in traced.produced if b"FAIL" in d)
    wait_for(lambda: deliveries(traced.log).count(failing) >= 3, "the failing record's retries")
    # When Ctrl-C arrives while its batch is being retried
    os.killpg(run.pid, signal.SIGINT)
    code, stdout, stderr = run.finish(120)
    assert code == 130, stdout + stderr
    summary = json.loads(stdout)
    first_run = deliveries(traced.log)
    # Then its shard's checkpoint is the record just before it, and no later batch of that
    # shard was started (records after it were only sent with it, in its retries)
    shard = failing[0]
    before = [q for s, q, _ in traced.produced if s == shard and int(q) < int(failing[1])]
    assert saved_checkpoints(traced)[shard] == before[-1]
    assert summary["shard_checkpoints"][shard] == before[-1]
    assert summary["unresolved"][shard] == failing[1]
    later = [b for b in batches(traced.log) if b[0][0] == shard and int(b[-1][1]) > int(failing[1])]
    assert later and all(b[0] == failing for b in later[1:])
    # When the function is healed and run-local restarted (from TRIM_HORIZON: the
    # checkpoints take precedence)
    (traced.control / "healed").touch()
    run = start_run_local(
        deployed, traced, "--starting-position", "TRIM_HORIZON", "--until-idle", "2"
    )
    code, stdout, stderr = run.finish(300)
    assert code == 0, stdout + stderr
    second_run = deliveries(traced.log)[len(first_run) :]
    # Then the shard starts again at the unresolved record, and every record is done once
    # after its checkpoint
    assert next(q for s, q in second_run if s == shard) == failing[1]
    checkpoints = json.loads(stdout)["resumed_from"]
    assert not [(s, q) for s, q in second_run if int(q) <= int(checkpoints[s]["sequence_number"])]
    produced = {(s, q) for s, q, _ in traced.produced}
    assert produced == set(first_run) | set(second_run)
    assert in_order(second_run)


def test_a_second_ctrl_c_aborts_at_once_and_kills_the_environments(
    deployed: Deployed, traced: Traced
) -> None:
    # Given a batch that hangs (its function would run until its 30 s timeout)
    produce(deployed, traced, [f"works well {i}" for i in range(20)])
    run = start_run_local(deployed, traced, "--starting-position", "TRIM_HORIZON")
    wait_for(lambda: len(deliveries(traced.log)) >= 20, "the first records")
    wait_for(lambda: len(saved_checkpoints(traced)) == 2, "both shards' checkpoints")
    checkpoints = saved_checkpoints(traced)
    produce(deployed, traced, ["HANG"])
    wait_for(lambda: (traced.control / "hanging").exists(), "the hanging batch")
    environments = children(run.pid)
    assert len(environments) == 2
    # When Ctrl-C is pressed, then again while the batch in flight has not finished
    os.killpg(run.pid, signal.SIGINT)
    wait_for(lambda: "Ctrl-C: finishing" in run.said(), "the first Ctrl-C's message")
    os.killpg(run.pid, signal.SIGINT)
    code, stdout, stderr = run.finish(20)  # well within the function's 30 s timeout
    # Then it exits at once, saying what it did, with no environment left running
    assert code == 130, stdout + stderr
    assert "Aborted: killed 2 execution environment(s) without finishing their batches" in (
        " ".join(stderr.split())
    )
    assert "Traceback" not in stderr
    assert not any(alive(pid) for pid in environments)
    # and the checkpoints written before stand, the hung record unresolved
    assert saved_checkpoints(traced) == checkpoints


def test_run_local_honours_the_mappings_filters(deployed: Deployed, tmp_path: Path) -> None:
    clients = deployed.clients
    kinesis = clients["kinesis"]
    kinesis.create_stream(StreamName="filtered", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="filtered", WaiterConfig={"Delay": 0.2})
    # Given 120 records: 70 English reviews, 40 French ones and 10 plain-text lines
    payloads = [
        b"plain text review" if i % 12 == 11 else
        json.dumps({"text": f"great product {i}", "lang": "fr" if i % 3 == 1 else "en"}).encode()
        for i in range(120)
    ]  # fmt: skip
    english = sum(b'"lang": "en"' in p for p in payloads)
    assert english == 70 and sum(b'"lang": "fr"' in p for p in payloads) == 40
    _put(kinesis, "filtered", payloads)
    # and the trigger, made after producing, filtering to English
    made = mlayer(
        deployed, "trigger", "--function", FUNCTION, "--alias", "live", "--stream", "filtered",
        "--batch-size", "10", "--filter", '{"data": {"lang": ["en"]}}', cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert '  FilterCriteria: {"data":{"lang":["en"]}} (records matching none' in made.stdout
    log = tmp_path / "lambda.log"
    # When run-local drains it with the mapping's settings
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "filtered",
        "--until-idle", "1", "--layers-dir", str(deployed.layers), "--log", str(log),
        "--checkpoints", str(tmp_path / "checkpoints.json"), "--json", cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    stats = summary["stats"]
    # Then Lambda's count: only the 70 English records are invoked, 10 to a batch
    assert summary["settings"]["filters"] == ['{"data":{"lang":["en"]}}']
    assert stats["records_read"] == stats["records_done"] == 120
    assert stats["filtered"] == 50
    assert stats["invocations"] == 7 and stats["predictions"] == 70
    assert stats["dead_lettered"] == 0  # the plain-text lines never reached the function
    reports = list(parse_reports(log.read_text().splitlines()))
    assert len(reports) == 7
    # and the checkpoint is past the last record, filtered or not
    last = kinesis.get_records(
        ShardIterator=kinesis.get_shard_iterator(
            StreamName="filtered", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
    )["Records"][-1]["SequenceNumber"]
    assert summary["shard_checkpoints"] == {"shardId-000000000000": last}

    # When run again with --no-filter from the start: every record is invoked
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "filtered", "--no-filter",
        "--until-idle", "1", "--layers-dir", str(deployed.layers), "--log", str(log),
        "--reset-checkpoints", "--checkpoints", str(tmp_path / "checkpoints.json"), "--json",
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unfiltered = json.loads(proc.stdout)["stats"]
    assert unfiltered["filtered"] == 0 and unfiltered["invocations"] == 12
    assert unfiltered["predictions"] == 120  # plain text is a review too, for a text model


def test_skipped_records_are_logged_by_reason_by_the_real_function(
    deployed: Deployed, tmp_path: Path
) -> None:
    from function_support import log_entries

    dynamodb = deployed.clients["dynamodb"]
    dynamodb.create_table(
        TableName="deletions",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    for i in range(4):
        dynamodb.put_item(TableName="deletions", Item={"id": {"S": f"d{i}"}, "text": {"S": "ok"}})
    for i in range(3):
        dynamodb.delete_item(TableName="deletions", Key={"id": {"S": f"d{i}"}})
    log = tmp_path / "lambda.log"
    # When run without the default filter, the REMOVEs reach the function
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "deletions", "--no-filter",
        "--batch-size", "100", "--until-idle", "1", "--layers-dir", str(deployed.layers),
        "--log", str(log), "--checkpoints", str(tmp_path / "c.json"), "--json",
        cwd=ROOT, env={"AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)["stats"]
    assert stats["filtered"] == 0 and stats["predictions"] == 4
    # Then its batch line says why the 3 were skipped, once for the batch
    [batch] = log_entries(log, "batch")
    assert batch["counts"]["skipped"] == 3
    assert batch["skipped_reasons"] == {"REMOVE": 3}


def test_a_batch_given_up_on_goes_whole_to_an_s3_bucket(deployed: Deployed, traced: Traced) -> None:
    s3 = deployed.clients["s3"]
    s3.create_bucket(Bucket="scorer-failures")
    # Given a record the function keeps reporting as failed, among good ones
    produce(deployed, traced, ["fine 1", "fine 2", "FAIL for good", "fine 3", "fine 4"])
    [(fail_shard, fail_seq, fail_data)] = [p for p in traced.produced if b"FAIL" in p[2]]
    # When run-local gives up on it after one retry, with a bucket as on-failure destination
    proc = subprocess.run(
        run_local_args(
            deployed, traced, "--max-retries", "1", "--on-failure", "arn:aws:s3:::scorer-failures",
            "--until-idle", "1",
        ),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads(proc.stdout)["stats"]
    assert stats["on_failure_messages"] == 1 and stats["discarded"] >= 1
    # Then one object, under Lambda's key, holds the batch from the failed record on
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket="scorer-failures")["Contents"]]
    assert re.fullmatch(
        rf"aws/lambda/[0-9a-f-]{{36}}/{fail_shard}/\d{{4}}/\d\d/\d\d/"
        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}",
        key,
    ), key
    record = json.loads(s3.get_object(Bucket="scorer-failures", Key=key)["Body"].read())
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"].endswith(f":function:{FUNCTION}")
    assert record["version"] == "1.0" and record["responseContext"]["statusCode"] == 200
    info = record["KinesisBatchInfo"]
    assert info["shardId"] == fail_shard and info["startSequenceNumber"] == fail_seq
    assert info["batchSize"] == stats["discarded"]
    payload = json.loads(record["payload"])["Records"]
    assert payload[0]["kinesis"]["sequenceNumber"] == fail_seq
    assert base64.b64decode(payload[0]["kinesis"]["data"]) == fail_data
    assert [r["kinesis"]["sequenceNumber"] for r in payload][-1] == info["endSequenceNumber"]


def test_a_keys_only_stream_is_named_and_its_records_skipped_by_view_type(
    deployed: Deployed, tmp_path: Path
) -> None:
    from function_support import log_entries

    dynamodb = deployed.clients["dynamodb"]
    dynamodb.create_table(
        TableName="keys-only",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    for i in range(5):
        dynamodb.put_item(TableName="keys-only", Item={"id": {"S": f"k{i}"}, "text": {"S": "ok"}})
    log = tmp_path / "lambda.log"
    # Given that trigger refuses the table
    refused = mlayer(deployed, "trigger", "--function", FUNCTION, "--stream", "keys-only", cwd=ROOT)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "Error: DynamoDB table keys-only's stream is KEYS_ONLY: its records carry no new image"
    )
    # When run-local consumes it anyway
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--stream", "keys-only",
        "--until-idle", "1", "--layers-dir", str(deployed.layers), "--log", str(log),
        "--checkpoints", str(tmp_path / "c.json"), "--json",
        cwd=ROOT, env={"AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    # Then it says so up front, and the function skips every record, counted by view type
    assert any(
        note.startswith("DynamoDB table keys-only's stream is KEYS_ONLY")
        and note.endswith("(mlayer trigger refuses this stream)")
        for note in summary["notes"]
    ), summary["notes"]
    assert summary["stats"]["predictions"] == 0 and summary["stats"]["records_done"] == 5
    assert [b["skipped_reasons"] for b in log_entries(log, "batch")] == [{"KEYS_ONLY": 5}]
