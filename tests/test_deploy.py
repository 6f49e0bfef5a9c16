"""deploy-function and trigger through the CLI against moto, checking AWS state afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from fake_layers import layer_list, layer_version_arn, role_arn, write_deps_build, write_model_build
from moto import mock_aws

from mlayer.cli import cli
from mlayer.contracts import (
    VersionRecord,
    model_description,
    model_identity,
    parse_version_record,
)
from mlayer.deploy import deploy_function, zip_function

REGION = "us-east-1"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            service: boto3.client(service, region_name=REGION)
            for service in ("lambda", "iam", "kinesis", "dynamodb", "sqs")
        }


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    src = tmp_path / "function"
    src.mkdir()
    (src / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    (src / "records.py").write_text("X = 1\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "records.cpython-311.pyc").write_bytes(b"\0" * 10)
    (src / "tests").mkdir()
    (src / "tests" / "test_x.py").write_text("")
    return src


@pytest.fixture
def published(aws: dict[str, Any], layers: Path) -> dict[str, Any]:
    """Given: deps (python3.11) and model v1 published."""
    write_deps_build(layers)
    assert run("publish-deps", "--function", "scorer", "--layers-dir", str(layers)).exit_code == 0
    lam = aws["lambda"]
    lam.publish_layer_version(
        LayerName="scorer-model",
        Description=_model_description(layers, 1),
        Content={"ZipFile": write_model_build(layers, 1).read_bytes()},
    )
    return aws


def _model_description(layers: Path, version: int) -> str:
    import json

    from mlayer.contracts import model_description

    path = write_model_build(layers, version)
    data = json.loads(path.with_suffix(".json").read_text())
    return model_description("sentiment", version, data["sha256"], data["unzipped_bytes"])


def deploy(function_dir: Path, layers: Path, *extra: str) -> Result:
    return run(
        "deploy-function", "--function", "scorer", "--function-dir", str(function_dir),
        "--layers-dir", str(layers), *extra,
    )  # fmt: skip


# ---------------------------------------------------------------------------- deploy-function


def test_zip_is_deterministic_and_skips_caches(function_dir: Path) -> None:
    first = zip_function(function_dir)
    second = zip_function(function_dir)
    assert first.data == second.data
    assert first.files == ["lambda_function.py", "records.py"]
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()


def test_create_links_layers_and_settings(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    lam = published["lambda"]
    role = role_arn(published["iam"])

    result = deploy(
        function_dir, layers, "--role", role,
        "--env", "OUTPUT_TABLE=predictions",
        "--env", "DEAD_LETTER_QUEUE_URL=https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created scorer (arn:aws:lambda:us-east-1:")
    config = lam.get_function_configuration(FunctionName="scorer")
    assert config["Runtime"] == "python3.11"  # the deps layer's
    assert config["Handler"] == "lambda_function.lambda_handler"
    assert config["MemorySize"] == 512 and config["Timeout"] == 60
    assert config["Architectures"] == ["x86_64"]
    assert config["Role"] == role
    assert config["State"] == "Active"
    assert config["Environment"]["Variables"] == {
        "OUTPUT_TABLE": "predictions",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
    }
    assert layer_list(lam, "scorer") == [
        layer_version_arn(lam, "scorer-deps", 1),
        layer_version_arn(lam, "scorer-model", 1),
    ]
    code = zip_function(function_dir)
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(code.data).digest()).decode()
    assert config["Description"] == (
        f"mlayer function sha256={code.sha256} unzipped={code.unzipped_bytes}"
    )


def test_dead_letter_queue_without_a_bucket_is_warned_about(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    queue = "--env", "DEAD_LETTER_QUEUE_URL=https://sqs.us-east-1.amazonaws.com/123456789012/dlq"
    role = role_arn(published["iam"])

    result = deploy(function_dir, layers, "--role", role, *queue)

    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warning == (
        "Warning: DEAD_LETTER_QUEUE_URL is set but DEAD_LETTER_BUCKET is not: a bad record whose "
        "dead-letter message is over 262,144 bytes (DEAD_LETTER_MAX_BYTES; a Kinesis record of "
        "about 196 KB or more) cannot be dead-lettered, so it is reported in batchItemFailures, "
        "blocks its shard through the trigger's retries and is then kept only by the trigger's "
        "on-failure destination (none by default). Set --env DEAD_LETTER_BUCKET=BUCKET (the "
        "role needs s3:PutObject on it) to keep such records whole in S3, with a pointer in the "
        "queue"
    )

    # With the bucket (and a 1 MiB queue), nothing to warn about.
    result = deploy(
        function_dir, layers,
        "--env", "DEAD_LETTER_BUCKET=scorer-dead-letters", "--env", "DEAD_LETTER_MAX_BYTES=1048576",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Warning:" not in result.output
    variables = published["lambda"].get_function_configuration(FunctionName="scorer")[
        "Environment"
    ]["Variables"]
    assert variables["DEAD_LETTER_BUCKET"] == "scorer-dead-letters"
    assert variables["DEAD_LETTER_MAX_BYTES"] == "1048576"


@pytest.mark.parametrize("value", ["256KiB", "512", "2000000"])
def test_bad_dead_letter_max_bytes_is_refused_before_deploying(
    published: dict[str, Any], function_dir: Path, layers: Path, value: str
) -> None:
    role = role_arn(published["iam"])
    result = deploy(function_dir, layers, "--role", role, "--env", f"DEAD_LETTER_MAX_BYTES={value}")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: DEAD_LETTER_MAX_BYTES={value} is not a whole number of bytes from 1,024 to "
        "1,048,576: set it to the dead-letter queue's MaximumMessageSize (aws sqs "
        "get-queue-attributes --attribute-names MaximumMessageSize), or remove it "
        "(--env DEAD_LETTER_MAX_BYTES=) for 262,144\n"
    )
    assert published["lambda"].list_functions()["Functions"] == []


def test_update_merges_env_keeps_settings_and_relinks_deps(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    lam = published["lambda"]
    role = role_arn(published["iam"])
    first = deploy(
        function_dir, layers, "--role", role, "--memory", "1024", "--env", "A=1", "--env", "B=2"
    )
    assert first.exit_code == 0, first.output
    # A newer deps build is published; a newer model too (deploy keeps the linked model).
    write_deps_build(layers, marker="2")
    assert run("publish-deps", "--function", "scorer", "--layers-dir", str(layers)).exit_code == 0
    lam.publish_layer_version(
        LayerName="scorer-model",
        Description=_model_description(layers, 2),
        Content={"ZipFile": write_model_build(layers, 2).read_bytes()},
    )
    (function_dir / "records.py").write_text("X = 2\n")

    result = deploy(function_dir, layers, "--env", "B=", "--env", "C=3", "--timeout", "30")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Updated scorer (arn:aws:lambda:us-east-1:")
    assert "new code" in result.output
    config = lam.get_function_configuration(FunctionName="scorer")
    assert config["Environment"]["Variables"] == {"A": "1", "C": "3"}
    assert (config["MemorySize"], config["Timeout"], config["Role"]) == (1024, 30, role)
    assert layer_list(lam, "scorer") == [
        layer_version_arn(lam, "scorer-deps", 2),
        layer_version_arn(lam, "scorer-model", 1),
    ]
    assert config["CodeSha256"] == zip_function(function_dir).code_sha256_b64

    unchanged = deploy(function_dir, layers)
    assert "code unchanged" in unchanged.output


def test_deploy_with_alias_publishes_a_version_recording_the_model(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    lam = published["lambda"]
    result = deploy(function_dir, layers, "--role", role_arn(published["iam"]), "--alias", "live")
    assert result.exit_code == 0, result.output
    assert "  alias live -> version 1" in result.output
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"
    version = lam.get_function_configuration(FunctionName="scorer", Qualifier="1")
    sha = json.loads((layers / "model-sentiment-v1.json").read_text())["sha256"]
    # v1 was published before identities were recorded: its sha256 is all there is to carry
    assert version["Description"] == f"mlayer model sentiment v1 sha256={sha}"


def test_deploy_with_alias_records_the_models_zip_and_content_as_a_rollout_does(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    # Given model v2 published as publish-model records it: sha256 and content identity
    lam = published["lambda"]
    zip_path = write_model_build(layers, 2)
    with zipfile.ZipFile(zip_path) as archive:
        identity = model_identity(json.loads(archive.read("model/manifest.json")))
    build = json.loads(zip_path.with_suffix(".json").read_text())
    lam.publish_layer_version(
        LayerName="scorer-model",
        Description=model_description(
            "sentiment", 2, build["sha256"], build["unzipped_bytes"], identity
        ),
        Content={"ZipFile": zip_path.read_bytes()},
    )

    # When deploy-function publishes a version for the alias
    result = deploy(function_dir, layers, "--role", role_arn(published["iam"]), "--alias", "live")
    assert result.exit_code == 0, result.output

    # Then that version says what a rollout's would, so rollback compares it by content
    version = lam.get_function_configuration(FunctionName="scorer", Qualifier="1")
    assert version["Description"] == (
        f"mlayer model sentiment v2 sha256={build['sha256']} identity={identity}"
    )
    assert parse_version_record(version["Description"]) == VersionRecord(
        "sentiment", 2, build["sha256"], identity
    )


def test_create_needs_a_role(published: dict[str, Any], function_dir: Path, layers: Path) -> None:
    result = deploy(function_dir, layers)
    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer does not exist yet: creating it needs --role ARN, an IAM role "
        "Lambda can assume with read access to the stream (e.g. the managed policy "
        "AWSLambdaKinesisExecutionRole or AWSLambdaDynamoDBExecutionRole)\n"
    )


def test_local_endpoint_gets_a_stand_in_role(
    published: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    lam = published["lambda"]
    result = deploy_function(
        lam,
        function="scorer",
        function_dir=function_dir,
        role=None,
        runtime=None,
        arch="x86_64",
        memory_mb=None,
        timeout_s=None,
        environment={},
        deps_layer="scorer-deps",
        model_layer="scorer-model",
        layers_dir=layers,
        local_iam=published["iam"],
    )
    assert result.role.endswith(":role/mlayer-local-lambda-role")
    assert lam.get_function_configuration(FunctionName="scorer")["Role"] == result.role


def test_runtime_needed_without_a_deps_layer(
    aws: dict[str, Any], function_dir: Path, tmp_path: Path
) -> None:
    result = deploy(function_dir, tmp_path / "empty", "--role", role_arn(aws["iam"]))
    assert result.exit_code == 1
    assert result.output == (
        "Error: no runtime to deploy scorer with: pass --runtime (no dependency layer "
        f"scorer-deps is published and no single build in {tmp_path / 'empty'}/ to take it from)\n"
    )

    with_runtime = deploy(
        function_dir, tmp_path / "empty", "--role", role_arn(aws["iam"]), "--runtime", "python3.12"
    )
    assert with_runtime.exit_code == 0, with_runtime.output
    assert (
        "Note: no version of scorer-deps published for python3.12 x86_64: the function cannot "
        "import scikit-learn until you run `mlayer build-deps --runtime python3.12 --arch "
        "x86_64` and `mlayer publish-deps`, then deploy again\n"
    ) in with_runtime.output


def test_missing_function_dir(aws: dict[str, Any], tmp_path: Path, layers: Path) -> None:
    result = deploy(tmp_path / "nowhere", layers, "--role", role_arn(aws["iam"]))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path / 'nowhere'}/lambda_function.py not found; run from the project root "
        "or pass --function-dir DIR (the directory holding the handler)\n"
    )


@pytest.mark.parametrize("item", ["NOEQUALS", "=value"])
def test_bad_env_is_a_usage_error(item: str) -> None:
    result = run("deploy-function", "--function", "scorer", "--env", item)
    assert result.exit_code == 2
    assert f"{item!r} is not KEY=VALUE" in result.output


# ---------------------------------------------------------------------------- trigger


@pytest.fixture
def live(published: dict[str, Any], function_dir: Path, layers: Path) -> dict[str, Any]:
    """Given: the function deployed with alias live."""
    result = deploy(function_dir, layers, "--role", role_arn(published["iam"]), "--alias", "live")
    assert result.exit_code == 0, result.output
    return published


def _kinesis(aws: dict[str, Any], name: str = "reviews") -> str:
    aws["kinesis"].create_stream(StreamName=name, ShardCount=2)
    summary = aws["kinesis"].describe_stream_summary(StreamName=name)
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


def _mappings(aws: dict[str, Any], arn: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = aws["lambda"].list_event_source_mappings(EventSourceArn=arn)[
        "EventSourceMappings"
    ]
    return found


def test_trigger_creates_the_mapping_with_safe_defaults(live: dict[str, Any]) -> None:
    stream = _kinesis(live)

    result = run("trigger", "--function", "scorer", "--alias", "live", "--stream", stream)

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created the kinesis trigger of scorer:live:\n  UUID: ")
    [mapping] = _mappings(live, stream)
    assert mapping["BatchSize"] == 100
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == 10
    assert mapping["MaximumRecordAgeInSeconds"] == 86_400
    assert "  MaximumRetryAttempts: 10" in result.output.splitlines()


def test_trigger_updates_the_existing_mapping(live: dict[str, Any]) -> None:
    stream = _kinesis(live)
    queue = live["sqs"].create_queue(QueueName="scorer-failures")["QueueUrl"]
    queue_arn = live["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    assert run("trigger", "--function", "scorer", "--stream", stream).exit_code == 0

    result = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", "reviews",
        "--batch-size", "500", "--max-retries", "3", "--no-bisect", "--on-failure", queue_arn,
        "--batching-window", "5", "--parallelization", "2",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Updated the kinesis trigger of scorer:live (moved from scorer):\n"
    )
    [mapping] = _mappings(live, stream)
    assert mapping["BatchSize"] == 500
    assert mapping["MaximumRetryAttempts"] == 3
    assert mapping["BisectBatchOnFunctionError"] is False
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}
    assert mapping["MaximumBatchingWindowInSeconds"] == 5
    assert mapping["ParallelizationFactor"] == 2

    conflict = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", stream,
        "--starting-position", "LATEST",
    )  # fmt: skip
    assert conflict.exit_code == 1
    uuid = mapping["UUID"]
    assert conflict.output == (
        f"Error: the mapping {uuid} from this stream starts at TRIM_HORIZON; Lambda cannot "
        f"change a mapping's starting position: delete it (aws lambda "
        f"delete-event-source-mapping --uuid {uuid}) and run trigger again\n"
    )


def test_trigger_resolves_a_dynamodb_table_to_its_stream(live: dict[str, Any]) -> None:
    ddb = live["dynamodb"]
    table = ddb.create_table(
        TableName="reviews-table",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]

    result = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", "reviews-table",
        "--starting-position", "LATEST",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created the dynamodb trigger of scorer:live:")
    [mapping] = _mappings(live, table["LatestStreamArn"])
    assert mapping["StartingPosition"] == "LATEST"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_trigger_on_a_table_without_stream(live: dict[str, Any]) -> None:
    live["dynamodb"].create_table(
        TableName="plain",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    result = run("trigger", "--function", "scorer", "--stream", "plain")
    assert result.exit_code == 1
    assert result.output == (
        "Error: DynamoDB table plain has no stream; enable one: aws dynamodb update-table "
        "--table-name plain --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stream", "nowhere"],
            "Error: no Kinesis stream or DynamoDB table named nowhere in us-east-1; check "
            "--region, or pass the stream ARN\n",
        ),
        (
            ["--alias", "beta", "--stream", "x"],
            "Error: function scorer has no alias beta; create it with mlayer publish-model "
            "--alias beta (or mlayer deploy-function --alias beta), or drop --alias to trigger "
            "$LATEST\n",
        ),
        (
            ["--stream", "arn:aws:sqs:us-east-1:123456789012:q"],
            "Error: arn:aws:sqs:us-east-1:123456789012:q is not a Kinesis stream or DynamoDB "
            "stream ARN (arn:aws:kinesis:...:stream/NAME or "
            "arn:aws:dynamodb:...:table/T/stream/LABEL)\n",
        ),
    ],
    ids=["unknown-stream", "unknown-alias", "not-a-stream"],
)
def test_trigger_errors(live: dict[str, Any], args: list[str], message: str) -> None:
    result = run("trigger", "--function", "scorer", *args)
    assert result.exit_code == 1
    assert result.output == message


@pytest.mark.parametrize(
    "destination",
    [
        "queue",
        "arn:aws:s3:us-east-1:123456789012:bucket",  # a bucket ARN has no region or account
        "arn:aws:s3:::bucket/prefix",
        "arn:aws:sqs:::scorer-failures",  # a queue ARN has both
        "arn:aws:lambda:us-east-1:123456789012:function:f",
    ],
)
def test_trigger_bad_destination_is_a_usage_error(destination: str) -> None:
    result = run("trigger", "--function", "scorer", "--stream", "s", "--on-failure", destination)
    assert result.exit_code == 2
    assert f"'{destination}' is not an SQS queue, SNS topic or S3 bucket ARN" in result.output


def test_trigger_with_an_s3_on_failure_destination(live: dict[str, Any]) -> None:
    stream = _kinesis(live)

    result = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", stream,
        "--on-failure", "arn:aws:s3:::scorer-failures",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    [mapping] = _mappings(live, stream)
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": "arn:aws:s3:::scorer-failures"}
    }
    assert (
        "  OnFailure: arn:aws:s3:::scorer-failures (S3: the whole batch given up on, records "
        "and metadata, one object each; the execution role needs s3:PutObject and "
        "s3:ListBucket)"
    ) in result.output.splitlines()


def test_trigger_says_what_its_on_failure_choice_keeps(live: dict[str, Any]) -> None:
    stream = _kinesis(live)
    result = run("trigger", "--function", "scorer", "--stream", stream)
    assert result.exit_code == 0, result.output
    assert (
        "  OnFailure: none (a batch given up on after the retries or past the record age is "
        "discarded; --on-failure arn:aws:s3:::BUCKET keeps it whole)"
    ) in result.output.splitlines()

    queue = "arn:aws:sqs:us-east-1:123456789012:scorer-failures"
    result = run("trigger", "--function", "scorer", "--stream", stream, "--on-failure", queue)
    assert result.exit_code == 0, result.output
    assert (
        f"  OnFailure: {queue} (SQS: only the metadata of a batch given up on (shard, sequence "
        "numbers); its records stay in the stream until they expire. --on-failure "
        "arn:aws:s3:::BUCKET keeps them whole)"
    ) in result.output.splitlines()


def test_trigger_unknown_function(aws: dict[str, Any]) -> None:
    result = run("trigger", "--function", "ghost", "--stream", "s")
    assert result.exit_code == 1
    assert result.output == (
        "Error: function ghost does not exist in us-east-1; create it with "
        "`mlayer deploy-function --function ghost --role ARN`\n"
    )


def test_function_zip_has_no_caches(function_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "f.zip"
    path.write_bytes(zip_function(function_dir).data)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["lambda_function.py", "records.py"]


# ------------------------------------------------------------- trigger: view types, filters


def _table(aws: dict[str, Any], name: str, view: str | None) -> dict[str, Any]:
    spec = {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": view}} if view else {}
    table: dict[str, Any] = aws["dynamodb"].create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **spec,
    )["TableDescription"]
    return table


def _no_new_images(table: str, view: str) -> str:
    return (
        f"Error: DynamoDB table {table}'s stream is {view}: its records carry no new image, so "
        "the function would skip every one. A stream's view type cannot be changed in place: "
        "disable the stream, then enable one with new images (a new stream with a new ARN; "
        "the old one stays readable for 24 hours): aws dynamodb update-table --table-name "
        f"{table} --stream-specification StreamEnabled=false, then (the table ACTIVE again) "
        f"aws dynamodb update-table --table-name {table} --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES, and run mlayer trigger again\n"
    )


@pytest.mark.parametrize("view", ["KEYS_ONLY", "OLD_IMAGE"])
@pytest.mark.parametrize("by", ["table", "stream-arn"])
def test_trigger_refuses_a_stream_without_new_images(
    live: dict[str, Any], view: str, by: str
) -> None:
    table = _table(live, "keys", view)
    stream = "keys" if by == "table" else table["LatestStreamArn"]

    result = run("trigger", "--function", "scorer", "--stream", stream)

    assert result.exit_code == 1
    assert result.output == _no_new_images("keys", view)
    assert _mappings(live, table["LatestStreamArn"]) == []


def test_trigger_accepts_a_new_image_stream_by_arn(live: dict[str, Any]) -> None:
    table = _table(live, "news", "NEW_IMAGE")
    result = run("trigger", "--function", "scorer", "--stream", table["LatestStreamArn"])
    assert result.exit_code == 0, result.output
    assert len(_mappings(live, table["LatestStreamArn"])) == 1


def test_trigger_refuses_a_table_whose_stream_was_disabled(live: dict[str, Any]) -> None:
    # A disabled stream keeps the table's LatestStreamArn (readable for 24 hours). (By its
    # ARN, DescribeStream says DISABLED on AWS; moto 5.2.1 raises KeyError there instead.)
    _table(live, "gone", "NEW_AND_OLD_IMAGES")
    live["dynamodb"].update_table(TableName="gone", StreamSpecification={"StreamEnabled": False})

    result = run("trigger", "--function", "scorer", "--stream", "gone")

    assert result.exit_code == 1
    assert result.output == (
        "Error: DynamoDB table gone has no stream; enable one: aws dynamodb update-table "
        "--table-name gone --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES\n"
    )


def _filters(mapping: dict[str, Any]) -> list[str]:
    return [f["Pattern"] for f in (mapping.get("FilterCriteria") or {}).get("Filters", [])]


def test_trigger_filters_dynamodb_to_inserts_and_modifies_by_default(live: dict[str, Any]) -> None:
    table = _table(live, "reviews-table", "NEW_AND_OLD_IMAGES")
    arn = table["LatestStreamArn"]

    created = run("trigger", "--function", "scorer", "--alias", "live", "--stream", "reviews-table")

    assert created.exit_code == 0, created.output
    [mapping] = _mappings(live, arn)
    assert _filters(mapping) == ['{"eventName":["INSERT","MODIFY"]}']
    assert (
        '  FilterCriteria: {"eventName":["INSERT","MODIFY"]} (mlayer\'s default for DynamoDB: '
        "a REMOVE has nothing to score, so Lambda drops it before invoking and it is not "
        "billed; --filter PATTERN replaces it, --no-filter removes it)"
    ) in created.output.splitlines()

    # when: an update without filter flags keeps them; --filter replaces; --no-filter removes
    kept = run("trigger", "--function", "scorer", "--alias", "live", "--stream", arn)
    assert kept.exit_code == 0, kept.output
    assert _filters(_mappings(live, arn)[0]) == ['{"eventName":["INSERT","MODIFY"]}']

    pattern = '{"dynamodb": {"NewImage": {"lang": {"S": ["en", "fr"]}}}}'
    replaced = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", arn,
        "--filter", pattern, "--filter", '{"eventName": ["INSERT"]}',
    )  # fmt: skip
    assert replaced.exit_code == 0, replaced.output
    assert _filters(_mappings(live, arn)[0]) == [
        '{"dynamodb":{"NewImage":{"lang":{"S":["en","fr"]}}}}',
        '{"eventName":["INSERT"]}',
    ]
    assert (
        '  FilterCriteria: {"dynamodb":{"NewImage":{"lang":{"S":["en","fr"]}}}} OR '
        '{"eventName":["INSERT"]} (records matching none are dropped before invoking, unbilled)'
    ) in replaced.output.splitlines()

    removed = run(
        "trigger", "--function", "scorer", "--alias", "live", "--stream", arn, "--no-filter"
    )
    assert removed.exit_code == 0, removed.output
    assert _filters(_mappings(live, arn)[0]) == []
    assert (
        "  FilterCriteria: none (Lambda invokes the function for every record)"
        in removed.output.splitlines()
    )


def test_trigger_sets_no_filter_on_kinesis_unless_asked(live: dict[str, Any]) -> None:
    stream = _kinesis(live)
    created = run("trigger", "--function", "scorer", "--stream", stream)
    assert created.exit_code == 0, created.output
    assert _filters(_mappings(live, stream)[0]) == []

    updated = run(
        "trigger", "--function", "scorer", "--stream", stream,
        "--filter", '{"data": {"rating": [{"numeric": ["<=", 2]}]}}',
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert _filters(_mappings(live, stream)[0]) == ['{"data":{"rating":[{"numeric":["<=",2]}]}}']
    assert (
        '  FilterCriteria: {"data":{"rating":[{"numeric":["<=",2]}]}} (records matching none '
        "are dropped before invoking, unbilled; a record whose data is not JSON matches no "
        "pattern on data and is dropped)"
    ) in updated.output.splitlines()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            ['{"eventName": "INSERT"}'],
            'Error: --filter 1: eventName is "INSERT": a field\'s values must be an array '
            '(e.g. ["INSERT"]) or an object going one level down\n',
        ),
        (
            ['{"data": {"a": ["x"]}}', "{oops"],
            "Error: --filter 2: filter pattern '{oops' is not JSON (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1))\n",
        ),
        (
            ['{"eventName": ["INSERT"]}'],
            'Error: --filter 1: filter pattern {"eventName": ["INSERT"]} filters on eventName: '
            'Kinesis event source mappings only filter on "data" (the record\'s payload, as '
            'JSON), e.g. {"data": {"status": ["open"]}}\n',
        ),
    ],
    ids=["bare-value", "not-json", "kinesis-metadata"],
)
def test_trigger_refuses_bad_filters(
    live: dict[str, Any], filters: list[str], message: str
) -> None:
    stream = _kinesis(live)
    args = [arg for pattern in filters for arg in ("--filter", pattern)]
    result = run("trigger", "--function", "scorer", "--stream", stream, *args)
    assert result.exit_code == 1
    assert result.output == message
    assert _mappings(live, stream) == []


def test_trigger_filter_and_no_filter_conflict() -> None:
    result = run(
        "trigger", "--function", "scorer", "--stream", "s", "--filter", "{}", "--no-filter"
    )
    assert result.exit_code == 2
    assert "Error: give --filter PATTERN or --no-filter, not both" in result.output


def test_status_shows_the_triggers_with_filters_and_where_failures_go(
    live: dict[str, Any], layers: Path
) -> None:
    table = _table(live, "reviews-table", "NEW_AND_OLD_IMAGES")
    stream = _kinesis(live)
    bucket = "arn:aws:s3:::scorer-failures"
    assert run("trigger", "--function", "scorer", "--alias", "live", "--stream", "reviews-table",
               "--on-failure", bucket).exit_code == 0  # fmt: skip
    assert run("trigger", "--function", "scorer", "--stream", stream).exit_code == 0

    data = json.loads(
        run("status", "--function", "scorer", "--layers-dir", str(layers), "--json").output
    )
    text = run("status", "--function", "scorer", "--layers-dir", str(layers))

    by_kind = {t["kind"]: t for t in data["triggers"]}
    assert by_kind["dynamodb"]["stream_arn"] == table["LatestStreamArn"]
    # the qualifier as Lambda reports it (moto 5.2.1 resolves alias live to its version)
    [mapping] = _mappings(live, table["LatestStreamArn"])
    qualifier = mapping["FunctionArn"].rsplit(":", 1)[1]
    assert by_kind["dynamodb"]["target"] == f"scorer:{qualifier}"
    assert by_kind["dynamodb"]["filters"] == ['{"eventName":["INSERT","MODIFY"]}']
    assert by_kind["dynamodb"]["on_failure"] == bucket
    assert by_kind["kinesis"]["target"] == "scorer" and by_kind["kinesis"]["filters"] == []
    assert text.exit_code == 0, text.output
    assert (
        f"Trigger dynamodb {table['LatestStreamArn']} -> scorer:{qualifier}: "
        f"{by_kind['dynamodb']['state']}, batch 100, from TRIM_HORIZON; filters "
        '{"eventName":["INSERT","MODIFY"]}; on failure arn:aws:s3:::scorer-failures (S3: the '
        "whole batch given up on, records and metadata, one object each; the execution role "
        "needs s3:PutObject and s3:ListBucket)"
    ) in text.output.splitlines()


def test_trigger_notes_filters_over_the_default_quota(live: dict[str, Any]) -> None:
    stream = _kinesis(live)
    patterns = [f'{{"data": {{"n": [{n}]}}}}' for n in range(6)]
    args = [arg for pattern in patterns for arg in ("--filter", pattern)]

    result = run("trigger", "--function", "scorer", "--stream", stream, *args)

    assert result.exit_code == 0, result.output
    assert len(_filters(_mappings(live, stream)[0])) == 6
    assert result.output.splitlines()[-1] == (
        "Note: 6 filters: over Lambda's default quota of 5 per mapping; Lambda refuses them "
        "unless the account's quota was raised"
    )
