"""deploy-function --create-role: the least-privilege execution role, read back from moto's IAM
statement by statement; created, left alone when unchanged, updated when the function's uses
change; the local endpoint's stand-in replaced; CreateFunction retried while Lambda cannot
assume a new role yet."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from click.testing import CliRunner, Result
from fake_layers import role_arn, write_deps_build
from moto import mock_aws

from mlayer.cli import cli
from mlayer.deploy import deploy_function
from mlayer.lambda_api import Pace
from mlayer.roles import POLICY_NAME, RoleRequest

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parent.parent
SHA = "ab" * 32
MODEL_URI = f"s3://model-store/mlayer/scorer-model/{SHA}.tar#sha256={SHA}&size=1000"
LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/scorer"
LOG_STATEMENTS = [
    {
        "Sid": "CreateLogGroup",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup"],
        "Resource": [LOGS, f"{LOGS}:*"],
    },
    {
        "Sid": "WriteLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [f"{LOGS}:*"],
    },
]
KINESIS_READ = [
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def aws(layers: Path) -> Iterator[dict[str, Any]]:
    """Given: the deps layer published, a 2-shard Kinesis stream "reviews", a table
    "predictions" and a dead-letter queue."""
    with mock_aws():
        clients = {
            service: boto3.client(service, region_name=REGION)
            for service in ("lambda", "iam", "kinesis", "dynamodb", "sqs", "s3")
        }
        clients["kinesis"].create_stream(StreamName="reviews", ShardCount=2)
        clients["sqs"].create_queue(QueueName="dlq")
        write_deps_build(layers)
        published = run("publish-deps", "--function", "scorer", "--layers-dir", str(layers))
        assert published.exit_code == 0, published.output
        yield clients


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    src = tmp_path / "function"
    src.mkdir()
    (src / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    return src


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every AWS operation made, in order (through botocore, whoever made the client)."""
    made: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def recording(self: Any, operation: str, params: dict[str, Any]) -> Any:
        made.append(operation)
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return made


def deploy(function_dir: Path, layers: Path, *extra: str) -> Result:
    return run(
        "deploy-function", "--function", "scorer", "--function-dir", str(function_dir),
        "--layers-dir", str(layers), *extra,
    )  # fmt: skip


def policy(iam: Any) -> list[dict[str, Any]]:
    document = iam.get_role_policy(RoleName="mlayer-scorer", PolicyName=POLICY_NAME)
    statements: list[dict[str, Any]] = document["PolicyDocument"]["Statement"]
    return statements


FULL_ENV = (
    "--env", "OUTPUT_TABLE=predictions",
    "--env", f"DEAD_LETTER_QUEUE_URL=https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/dlq",
    "--env", "DEAD_LETTER_BUCKET=dead-letters-bucket",
    "--env", f"MODEL_URI={MODEL_URI}",
)  # fmt: skip


def full_statements(*, on_failure_bucket: str | None = None) -> list[dict[str, Any]]:
    statements = [
        *LOG_STATEMENTS,
        {
            "Sid": "ReadKinesisStreams",
            "Effect": "Allow",
            "Action": KINESIS_READ,
            "Resource": [f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/reviews"],
        },
        {
            "Sid": "WriteOutputTable",
            "Effect": "Allow",
            "Action": ["dynamodb:BatchWriteItem"],
            "Resource": [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/predictions"],
        },
        {
            "Sid": "SendDeadLetters",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"],
        },
        {
            "Sid": "StoreDeadLetters",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": ["arn:aws:s3:::dead-letters-bucket/dead-letters/*"],
        },
        {
            "Sid": "ReadModelStore",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::model-store/mlayer/scorer-model/*"],
        },
        {
            "Sid": "FindModelStoreBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": ["arn:aws:s3:::model-store"],
        },
    ]
    if on_failure_bucket:
        statements += [
            {
                "Sid": "OnFailureBucket",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{on_failure_bucket}/*"],
            },
            {
                "Sid": "OnFailureBucketList",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{on_failure_bucket}"],
            },
        ]
    return statements


def test_create_role_for_a_function_with_outputs_dead_letters_store_and_kinesis_trigger(
    aws: dict[str, Any], function_dir: Path, layers: Path, calls: list[str]
) -> None:
    iam, lam = aws["iam"], aws["lambda"]

    # When: created with the stream it will be triggered by.
    created = deploy(function_dir, layers, "--create-role", "--stream", "reviews", *FULL_ENV)

    # Then: the role exists, Lambda may assume it, and each statement is scoped.
    assert created.exit_code == 0, created.output
    role = iam.get_role(RoleName="mlayer-scorer")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert {"Key": "mlayer:function", "Value": "scorer"} in role["Tags"]
    assert iam.list_role_policies(RoleName="mlayer-scorer")["PolicyNames"] == [POLICY_NAME]
    assert iam.list_attached_role_policies(RoleName="mlayer-scorer")["AttachedPolicies"] == []
    expected = full_statements()
    got = policy(iam)
    assert [s["Sid"] for s in got] == [s["Sid"] for s in expected]
    for actual, wanted in zip(got, expected, strict=True):
        assert actual == wanted, actual["Sid"]
    assert lam.get_function_configuration(FunctionName="scorer")["Role"] == role["Arn"]
    # And: every statement is printed, each resource on its own line.
    assert f"role mlayer-scorer created: {role['Arn']}, inline policy {POLICY_NAME}:" in (
        created.output
    )
    assert (
        "    WriteOutputTable: dynamodb:BatchWriteItem  (write predictions to OUTPUT_TABLE)\n"
        f"      -> arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/predictions\n" in created.output
    )
    for statement in expected:
        assert f"    {statement['Sid']}: {', '.join(statement['Action'])}  (" in created.output
        for resource in statement["Resource"]:
            assert f"      -> {resource}\n" in created.output

    # When: the trigger is created (it reads the stream the role grants), then deploy-function
    # --create-role runs again without --stream.
    triggered = run("trigger", "--function", "scorer", "--stream", "reviews")
    assert triggered.exit_code == 0, triggered.output
    calls.clear()
    again = deploy(function_dir, layers, "--create-role", *FULL_ENV)

    # Then: the stream is still granted (the mapping reads it), nothing is written to IAM.
    assert again.exit_code == 0, again.output
    assert "role mlayer-scorer unchanged:" in again.output
    assert "GetRolePolicy" in calls  # read and compared, ...
    assert "PutRolePolicy" not in calls and "CreateRole" not in calls  # ... not written
    assert policy(iam) == expected

    # When: the trigger gets an S3 on-failure destination and the output table goes.
    updated_trigger = run(
        "trigger", "--function", "scorer", "--stream", "reviews",
        "--on-failure", "arn:aws:s3:::scorer-failures",
    )  # fmt: skip
    assert updated_trigger.exit_code == 0, updated_trigger.output
    calls.clear()
    changed = deploy(function_dir, layers, "--create-role", *FULL_ENV, "--env", "OUTPUT_TABLE=")

    # Then: the policy is replaced: the destination granted, the table no longer.
    assert changed.exit_code == 0, changed.output
    assert "role mlayer-scorer updated:" in changed.output
    assert calls.count("PutRolePolicy") == 1 and "CreateRole" not in calls
    now = full_statements(on_failure_bucket="scorer-failures")
    now = [s for s in now if s["Sid"] != "WriteOutputTable"]
    assert policy(iam) == now
    assert (
        "    no longer granted: WriteOutputTable: dynamodb:BatchWriteItem on "
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/predictions\n" in changed.output
    )


def test_a_plain_function_gets_its_logs_only(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    result = deploy(function_dir, layers, "--create-role")

    assert result.exit_code == 0, result.output
    assert policy(aws["iam"]) == LOG_STATEMENTS
    role = aws["iam"].get_role(RoleName="mlayer-scorer")["Role"]["Arn"]
    assert aws["lambda"].get_function_configuration(FunctionName="scorer")["Role"] == role


def test_dynamodb_stream_output_stream_and_queue_destination(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    """A table's stream is granted on table/T/stream/* (a re-enabled stream has a new label),
    as the DynamoDB developer guide's example for Lambda does."""
    aws["dynamodb"].create_table(
        TableName="reviews-table",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    aws["kinesis"].create_stream(StreamName="scores", ShardCount=1)
    failures = f"arn:aws:sqs:{REGION}:{ACCOUNT}:esm-failures"

    result = deploy(
        function_dir, layers, "--create-role", "--stream", "reviews-table",
        "--on-failure", failures, "--env", "OUTPUT_STREAM=scores",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert policy(aws["iam"]) == [
        *LOG_STATEMENTS,
        {
            "Sid": "ReadDynamoDBStreams",
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            "Resource": [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/reviews-table/stream/*"],
        },
        {
            "Sid": "WriteOutputStream",
            "Effect": "Allow",
            "Action": ["kinesis:PutRecords"],
            "Resource": [f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/scores"],
        },
        {
            "Sid": "OnFailureQueue",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [failures],
        },
    ]


def test_a_role_of_that_name_that_is_not_mlayers_is_left_alone(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    aws["iam"].create_role(RoleName="mlayer-scorer", AssumeRolePolicyDocument="{}")

    result = deploy(function_dir, layers, "--create-role")

    assert result.exit_code == 1
    assert result.output == (
        "Error: IAM role mlayer-scorer exists but is not the one mlayer made for scorer (no tag "
        "mlayer:function=scorer): mlayer does not change it. Pass --role "
        f"arn:aws:iam::{ACCOUNT}:role/mlayer-scorer to use it as it is, or delete it (aws iam "
        "delete-role --role-name mlayer-scorer) and run --create-role again\n"
    )
    assert aws["iam"].list_role_policies(RoleName="mlayer-scorer")["PolicyNames"] == []
    with pytest.raises(aws["lambda"].exceptions.ResourceNotFoundException):
        aws["lambda"].get_function(FunctionName="scorer")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--create-role", "--role", f"arn:aws:iam::{ACCOUNT}:role/x"],
            "Error: --role and --create-role exclude each other: pass one\n",
        ),
        (
            ["--stream", "reviews"],
            "Error: --stream and --on-failure say what --create-role grants; pass --create-role "
            "(mlayer trigger creates the trigger itself)\n",
        ),
        (
            ["--create-role", "--stream", "nowhere"],
            f"Error: no Kinesis stream or DynamoDB table named nowhere in {REGION}; check "
            "--region, or pass the stream ARN\n",
        ),
        (
            ["--create-role", "--env", "DEAD_LETTER_QUEUE_URL=dlq"],
            "Error: DEAD_LETTER_QUEUE_URL='dlq' is not an SQS queue URL "
            "(https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, as aws sqs get-queue-url prints)\n",
        ),
    ],
    ids=["role-and-create-role", "stream-without-create-role", "unknown-stream", "bad-queue-url"],
)
def test_refusals_change_nothing(
    aws: dict[str, Any], function_dir: Path, layers: Path, args: list[str], message: str
) -> None:
    result = deploy(function_dir, layers, *args)

    assert result.output.endswith(message), result.output
    assert result.exit_code in (1, 2)
    assert aws["iam"].list_roles()["Roles"] == []
    with pytest.raises(aws["lambda"].exceptions.ResourceNotFoundException):
        aws["lambda"].get_function(FunctionName="scorer")


def _deploy_with(aws: dict[str, Any], function_dir: Path, layers: Path, pace: Pace) -> Any:
    return deploy_function(
        aws["lambda"], function="scorer", function_dir=function_dir, role=None, runtime=None,
        arch="x86_64", memory_mb=None, timeout_s=None, environment={},
        deps_layer="scorer-deps", model_layer="scorer-model", layers_dir=layers, pace=pace,
        create_role=RoleRequest(
            iam=aws["iam"], sts=boto3.client("sts", region_name=REGION),
            kinesis=aws["kinesis"], dynamodb=aws["dynamodb"],
        ),
    )  # fmt: skip


def _fail_create_function(lam: Any, times: int, message: str) -> list[int]:
    """Make the next ``times`` CreateFunction calls fail as Lambda does (before moto sees
    them); returns the list the failures are counted in."""
    failed: list[int] = []

    class Http:
        status_code = 400

    def refuse(**_: Any) -> Any:
        if len(failed) >= times:
            return None
        failed.append(1)
        return Http(), {
            "Error": {"Code": "InvalidParameterValueException", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    lam.meta.events.register("before-call.lambda.CreateFunction", refuse)
    return failed


def test_create_function_is_retried_until_lambda_can_assume_the_new_role(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    # Given: Lambda refuses the new role twice, as right after CreateRole in real AWS.
    failed = _fail_create_function(
        aws["lambda"], 2, "The role defined for the function cannot be assumed by Lambda."
    )
    slept: list[float] = []

    # When
    result = _deploy_with(aws, function_dir, layers, Pace(waiter_delay=0, sleep=slept.append))

    # Then: created on the third try, after backing off 1 s then 2 s.
    assert len(failed) == 2
    assert slept == [1.0, 2.0]
    assert result.created
    assert result.made_role is not None and result.made_role.verb == "created"
    config = aws["lambda"].get_function_configuration(FunctionName="scorer")
    assert config["Role"] == result.made_role.arn


def test_other_invalid_parameter_errors_are_not_retried(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    _fail_create_function(aws["lambda"], 1, "Unzipped size must be smaller than 262144000 bytes")
    slept: list[float] = []

    with pytest.raises(botocore.exceptions.ClientError, match="Unzipped size"):
        _deploy_with(aws, function_dir, layers, Pace(waiter_delay=0, sleep=slept.append))

    assert slept == []


def test_on_the_local_endpoint_create_role_replaces_the_stand_in(
    function_dir: Path, tmp_path: Path
) -> None:
    """End to end: mlayer as a subprocess against moto_server."""
    from mlayer.local.endpoint import local_endpoint

    layers = tmp_path / "layers"
    write_deps_build(layers)
    with local_endpoint() as endpoint:
        env = {
            **os.environ,
            "MLAYER_ENDPOINT_URL": endpoint.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

        def mlayer(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-c", "from mlayer.cli import main; main()", *args],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        common = ["--function", "scorer", "--layers-dir", str(layers)]
        assert mlayer("publish-deps", *common).returncode == 0
        # Given: created with the stand-in role (no --role on a local endpoint).
        first = mlayer("deploy-function", *common, "--function-dir", str(function_dir))
        assert first.returncode == 0, first.stdout + first.stderr
        lam = boto3.client("lambda", endpoint_url=endpoint.url, region_name=REGION)
        iam = boto3.client("iam", endpoint_url=endpoint.url, region_name=REGION)
        stand_in = lam.get_function_configuration(FunctionName="scorer")["Role"]
        assert stand_in.endswith(":role/mlayer-local-lambda-role")

        # When
        second = mlayer(
            "deploy-function", *common, "--function-dir", str(function_dir), "--create-role"
        )

        # Then: the function runs as mlayer-scorer, whose policy is the least-privilege one.
        assert second.returncode == 0, second.stdout + second.stderr
        made = iam.get_role(RoleName="mlayer-scorer")["Role"]["Arn"]
        assert lam.get_function_configuration(FunctionName="scorer")["Role"] == made
        assert f"Note: role {stand_in} -> {made}\n" in second.stdout
        assert policy(iam) == LOG_STATEMENTS


def test_an_existing_role_is_kept_without_create_role(
    aws: dict[str, Any], function_dir: Path, layers: Path
) -> None:
    role = role_arn(aws["iam"])
    assert deploy(function_dir, layers, "--role", role).exit_code == 0

    result = deploy(function_dir, layers, "--memory", "1024")

    assert result.exit_code == 0, result.output
    assert aws["lambda"].get_function_configuration(FunctionName="scorer")["Role"] == role
    assert "mlayer-scorer" not in [r["RoleName"] for r in aws["iam"].list_roles()["Roles"]]


def test_a_policy_over_iams_size_limit_is_refused_before_iam_changes() -> None:
    from mlayer.errors import ConfigError
    from mlayer.roles import Where, ensure_role, statements_for

    streams = [f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/stream-{n:04d}" for n in range(200)]
    statements = statements_for(
        function="scorer", where=Where(ACCOUNT, REGION), env={}, streams=streams, on_failure=[]
    )
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        with pytest.raises(ConfigError, match=r"would be 1\d,\d{3} characters, over IAM's 10,240"):
            ensure_role(iam, "scorer", statements)
        assert iam.list_roles()["Roles"] == []


def test_stream_and_bucket_from_mlayer_toml_serve_the_role_and_are_unused_without_it(
    aws: dict[str, Any],
    function_dir: Path,
    layers: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A project whose mlayer.toml names the stream (for trigger) and the bucket (for
    publish-model) deploys as before without --create-role, and grants both with it."""
    (tmp_path / "mlayer.toml").write_text('stream = "reviews"\nbucket = "model-store"\n')
    monkeypatch.chdir(tmp_path)

    plain = deploy(function_dir, layers, "--role", role_arn(aws["iam"]))
    assert plain.exit_code == 0, plain.output
    assert aws["iam"].list_roles()["Roles"][0]["RoleName"] == "scorer-role"

    made = deploy(function_dir, layers, "--create-role")

    assert made.exit_code == 0, made.output
    sids = {s["Sid"]: s["Resource"] for s in policy(aws["iam"])}
    assert sids["ReadKinesisStreams"] == [f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/reviews"]
    assert sids["ReadModelStore"] == ["arn:aws:s3:::model-store/mlayer/scorer-model/*"]


def test_a_trigger_refused_for_the_role_says_how_to_grant_it(
    aws: dict[str, Any], function_dir: Path, layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda checks the role when the mapping is created (moto does not): its refusal, as
    AWS words it, comes with the command that grants the stream."""
    assert deploy(function_dir, layers, "--role", role_arn(aws["iam"])).exit_code == 0
    stream = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/reviews"
    refusal = (
        f"Cannot access stream {stream}. Please ensure the role can perform the GetRecords, "
        "GetShardIterator, DescribeStream, and ListStreams Actions on your stream in IAM."
    )
    original = botocore.client.BaseClient._make_api_call

    def refusing(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "CreateEventSourceMapping":
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InvalidParameterValueException", "Message": refusal}},
                operation,
            )
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refusing)

    result = run("trigger", "--function", "scorer", "--stream", "reviews")

    assert result.exit_code == 1
    assert result.output == (
        "Error: CreateEventSourceMapping failed (InvalidParameterValueException): the "
        "function's execution role cannot read the stream; mlayer deploy-function "
        "--create-role --stream STREAM grants it (IAM can take a few seconds to apply a new "
        f"policy: if it just did, run the command again). AWS said: {refusal}\n"
    )
