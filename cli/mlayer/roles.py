"""The function's least-privilege execution role: ``deploy-function --create-role``.

What the role may do is read from what the function uses, each statement scoped to the
resource ARNs it needs:

- its log group (``/aws/lambda/<function>``, or the one its LoggingConfig names);
- the streams that trigger it: the ones given (``--stream``) and the ones its event source
  mappings (of the function and its aliases) already read, with the mappings' on-failure
  destinations (and ``--on-failure``);
- its environment: the output table (OUTPUT_TABLE), the output stream (OUTPUT_STREAM), the
  dead-letter queue (DEAD_LETTER_QUEUE_URL) and bucket (DEAD_LETTER_BUCKET), the model store
  (MODEL_URI, SHADOW_URI, and the store bucket mlayer would publish to, ``--bucket``).

The actions are the ones AWS documents for each use: the Lambda developer guide's list for a
Kinesis event source mapping (DescribeStream, DescribeStreamSummary, GetRecords,
GetShardIterator, ListShards; SubscribeToShard for an enhanced fan-out consumer), the DynamoDB
developer guide's example for a DynamoDB stream (DescribeStream, GetRecords,
GetShardIterator, ListStreams on ``table/T/stream/*``), the on-failure destinations'
(sqs:SendMessage, sns:Publish, s3:PutObject + s3:ListBucket), and the calls the function
makes (function/sinks.py: BatchWriteItem, PutRecords, SendMessageBatch, which IAM authorises
as sqs:SendMessage, PutObject; function/model_store.py: GetObject, and HeadBucket, which IAM
authorises as s3:ListBucket, to tell a missing bucket from a missing key). The function's
metrics are EMF log lines: no cloudwatch:PutMetricData.

The role is ``mlayer-<function>``, trusted by lambda.amazonaws.com, tagged
``mlayer:function=<function>`` (a role of that name without the tag is not mlayer's and is
never changed), with one inline policy, ``mlayer-execution``, rewritten only when the
document changes.

moto stores roles and policies but evaluates none of them, and creates functions and
mappings without checking that Lambda may assume the role or read the stream: the tests read
the document back statement by statement, and stand in for IAM's propagation delay with a
first CreateFunction that fails as AWS's does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlayer import model_store
from mlayer.arns import function_name, log_group, on_failure_kind, parse_stream_arn
from mlayer.errors import ConfigError
from mlayer.lambda_api import DEFAULT_PACE, Pace, error_code, function_mappings, is_client_error
from mlayer.model_store import StoreURI

POLICY_NAME = "mlayer-execution"
TAG = "mlayer:function"
TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
KINESIS_READ = [
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
]
KINESIS_CONSUMER = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]
DYNAMODB_STREAM_READ = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
]
# function/sinks.py OBJECT_PREFIX: where dead letters too large for the queue are kept.
DEAD_LETTER_PREFIX = "dead-letters/"
# IAM is eventually consistent: CreateFunction right after CreateRole can fail with "The
# role defined for the function cannot be assumed by Lambda" for seconds to a minute or two
# (Chalice retries 30 x 5 s). 1+2+4+8+15x7 s = 120 s at most.
ASSUMABLE_ATTEMPTS = 12
ASSUMABLE_MAX_DELAY = 15.0
_NOT_YET_ASSUMABLE = ("cannot be assumed by Lambda",)
_ROLE_NAME_MAX = 64
# IAM: a role's inline policies hold at most 10,240 characters together (whitespace aside).
POLICY_MAX_CHARS = 10_240


@dataclass(frozen=True)
class Statement:
    """One statement of the role's policy: why, what, on which resources."""

    sid: str
    purpose: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": list(self.actions),
            "Resource": list(self.resources),
        }


@dataclass
class RoleRequest:
    """What ``--create-role`` needs besides the function's environment.

    ``streams``: stream ARNs or names (as ``mlayer trigger --stream`` takes them) the function
    will be triggered by; ``on_failure``: the triggers' on-failure destination ARNs;
    ``store_bucket``: the model store's bucket (``--bucket``), read under
    ``mlayer/<model layer>/``.
    """

    iam: Any
    sts: Any
    kinesis: Any
    dynamodb: Any
    streams: list[str] = field(default_factory=list)
    on_failure: list[str] = field(default_factory=list)
    store_bucket: str | None = None


@dataclass
class RoleResult:
    """What ensure_role did: the role, whether it was created or its policy rewritten."""

    name: str
    arn: str
    created: bool
    policy_changed: bool
    statements: list[Statement]
    dropped: list[Statement] = field(default_factory=list)  # granted before, not now

    @property
    def verb(self) -> str:
        if self.created:
            return "created"
        return "updated" if self.policy_changed else "unchanged"


def role_name(function: str) -> str:
    """``mlayer-<function>``; a long name is cut and made unique with a hash (IAM: 64)."""
    name = f"mlayer-{function_name(function)}"
    if len(name) <= _ROLE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _ROLE_NAME_MAX - 9]}-{digest}"


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class Where:
    """The account, region and partition ARNs are built for."""

    account: str
    region: str
    partition: str = "aws"

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account}:{resource}"
        )


# --------------------------------------------------------------------------------------
# What the function uses -> statements


def table_arn(value: str, where: Where) -> str:
    if value.startswith("arn:"):
        return value
    return where.arn("dynamodb", f"table/{value}")


def kinesis_stream_arn(value: str, where: Where) -> str:
    if value.startswith("arn:"):
        return value
    return where.arn("kinesis", f"stream/{value}")


def queue_arn(url: str, where: Where) -> str:
    """The ARN of an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME).

    Raises:
        ConfigError: not a queue URL.
    """
    if url.startswith("arn:"):
        return url
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not parts.scheme or len(path) != 2 or not path[0].isdigit():
        raise ConfigError(
            f"DEAD_LETTER_QUEUE_URL={url!r} is not an SQS queue URL "
            "(https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, as aws sqs get-queue-url prints)"
        )
    host = parts.hostname or ""
    match = re.match(r"sqs\.([a-z0-9-]+)\.", host)
    region = match.group(1) if match else where.region
    return f"arn:{where.partition}:sqs:{region}:{path[0]}:{path[1]}"


def store_prefixes(env: dict[str, str], store_bucket: str | None, model_layer: str) -> list[str]:
    """``bucket/prefix`` of the model store the function reads: MODEL_URI's and SHADOW_URI's
    key directory, and ``mlayer/<model layer>`` in ``store_bucket``."""
    found: list[str] = []
    for name in (model_store.ENV_VAR, "SHADOW_URI"):
        uri = StoreURI.parse(env.get(name, ""))
        if uri is not None:
            directory = uri.key.rpartition("/")[0]
            found.append(f"{uri.bucket}/{directory}" if directory else uri.bucket)
    if store_bucket:
        found.append(f"{store_bucket}/mlayer/{model_layer}")
    return list(dict.fromkeys(found))


def statements_for(
    *,
    function: str,
    where: Where,
    env: dict[str, str],
    streams: list[str],
    on_failure: list[str],
    log_group_name: str | None = None,
    store_bucket: str | None = None,
    model_layer: str | None = None,
) -> list[Statement]:
    """The role's statements for what the function uses (``streams``: stream ARNs,
    ``on_failure``: destination ARNs), each scoped to its resources, in a fixed order.

    Raises:
        ConfigError: a stream, destination or queue URL that is not one.
    """
    name = function_name(function)
    group = where.arn("logs", f"log-group:{log_group_name or log_group(name)}")
    out = [
        Statement("CreateLogGroup", "create its log group", ("logs:CreateLogGroup",),
                  (group, f"{group}:*")),
        Statement("WriteLogs", "write its log streams",
                  ("logs:CreateLogStream", "logs:PutLogEvents"), (f"{group}:*",)),
    ]  # fmt: skip
    kinesis: list[str] = []
    consumers: list[str] = []
    tables: list[str] = []
    for arn in streams:
        parsed = parse_stream_arn(arn)
        if parsed.kind == "kinesis":
            stream_part, _, consumer = arn.partition("/consumer/")
            kinesis.append(stream_part)
            if consumer:
                consumers.append(arn)
        else:
            prefix = arn.partition("/stream/")[0]
            tables.append(f"{prefix}/stream/*")  # the table's streams: a re-enabled one too
    if kinesis:
        out.append(Statement("ReadKinesisStreams", "read the trigger's Kinesis stream",
                             tuple(KINESIS_READ), _unique(kinesis)))  # fmt: skip
    if consumers:
        out.append(Statement("ReadKinesisConsumers", "read through the enhanced fan-out consumer",
                             tuple(KINESIS_CONSUMER), _unique(consumers)))  # fmt: skip
    if tables:
        out.append(Statement("ReadDynamoDBStreams", "read the trigger's DynamoDB stream",
                             tuple(DYNAMODB_STREAM_READ), _unique(tables)))  # fmt: skip
    if env.get("OUTPUT_TABLE"):
        out.append(Statement("WriteOutputTable", "write predictions to OUTPUT_TABLE",
                             ("dynamodb:BatchWriteItem",),
                             (table_arn(env["OUTPUT_TABLE"], where),)))  # fmt: skip
    if env.get("OUTPUT_STREAM"):
        out.append(Statement("WriteOutputStream", "write predictions to OUTPUT_STREAM",
                             ("kinesis:PutRecords",),
                             (kinesis_stream_arn(env["OUTPUT_STREAM"], where),)))  # fmt: skip
    if env.get("DEAD_LETTER_QUEUE_URL"):
        out.append(Statement("SendDeadLetters", "dead-letter bad records to DEAD_LETTER_QUEUE_URL",
                             ("sqs:SendMessage",),
                             (queue_arn(env["DEAD_LETTER_QUEUE_URL"], where),)))  # fmt: skip
    if env.get("DEAD_LETTER_BUCKET"):
        bucket = env["DEAD_LETTER_BUCKET"]
        out.append(Statement("StoreDeadLetters", "keep dead letters too large for the queue in DEAD_LETTER_BUCKET",
                             ("s3:PutObject",),
                             (f"arn:{where.partition}:s3:::{bucket}/{DEAD_LETTER_PREFIX}*",)))  # fmt: skip
    prefixes = store_prefixes(env, store_bucket, model_layer or f"{name}-model")
    if prefixes:
        out.append(Statement("ReadModelStore", "read the model store's archives",
                             ("s3:GetObject",),
                             tuple(f"arn:{where.partition}:s3:::{p}/*" for p in prefixes)))  # fmt: skip
        buckets = _unique(f"arn:{where.partition}:s3:::{p.split('/')[0]}" for p in prefixes)
        out.append(Statement("FindModelStoreBucket",
                             "tell a missing archive from a missing bucket: HeadBucket",
                             ("s3:ListBucket",), buckets))  # fmt: skip
    queues, topics, buckets_out = [], [], []
    for arn in on_failure:
        kind = on_failure_kind(arn)
        if kind == "sqs":
            queues.append(arn)
        elif kind == "sns":
            topics.append(arn)
        elif kind == "s3":
            buckets_out.append(arn)
        else:
            raise ConfigError(
                f"{arn!r} is not an SQS queue, SNS topic or S3 bucket ARN (an on-failure "
                "destination of a stream trigger)"
            )
    if queues:
        out.append(Statement("OnFailureQueue", "the trigger's on-failure queue",
                             ("sqs:SendMessage",), _unique(queues)))  # fmt: skip
    if topics:
        out.append(Statement("OnFailureTopic", "the trigger's on-failure topic",
                             ("sns:Publish",), _unique(topics)))  # fmt: skip
    if buckets_out:
        out.append(Statement("OnFailureBucket", "the trigger's on-failure bucket: the batches",
                             ("s3:PutObject",), _unique(f"{b}/*" for b in buckets_out)))  # fmt: skip
        out.append(Statement("OnFailureBucketList", "the trigger's on-failure bucket",
                             ("s3:ListBucket",), _unique(buckets_out)))  # fmt: skip
    return out


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def policy_document(statements: list[Statement]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [s.document() for s in statements]}


def parse_statements(document: dict[str, Any] | None) -> list[Statement]:
    """The statements of a policy document mlayer wrote (purpose unknown: empty)."""
    out = []
    for s in (document or {}).get("Statement", []):
        actions = s.get("Action", [])
        resources = s.get("Resource", [])
        out.append(
            Statement(
                str(s.get("Sid", "")),
                "",
                tuple([actions] if isinstance(actions, str) else actions),
                tuple([resources] if isinstance(resources, str) else resources),
            )
        )
    return out


# --------------------------------------------------------------------------------------
# What the function is triggered by


def mapped_streams(lam: Any, function: str) -> tuple[list[str], list[str]]:
    """(stream ARNs, on-failure destination ARNs) of the event source mappings of the
    function and of its aliases."""
    streams: list[str] = []
    destinations: list[str] = []
    for mapping in function_mappings(lam, function):
        arn = str(mapping.get("EventSourceArn", ""))
        try:
            parse_stream_arn(arn)
        except ConfigError:
            continue  # not a stream (SQS, Kafka, ...): not mlayer's trigger
        streams.append(arn)
        destination = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        if destination:
            destinations.append(str(destination))
    return list(dict.fromkeys(streams)), list(dict.fromkeys(destinations))


def resolve_streams(kinesis: Any, dynamodb: Any, streams: list[str]) -> list[str]:
    """Stream ARNs for what ``--stream`` took (as ``mlayer trigger`` resolves them)."""
    from mlayer.deploy import resolve_stream

    return [resolve_stream(kinesis, dynamodb, s)[0] for s in streams]


# --------------------------------------------------------------------------------------
# IAM


def ensure_role(
    iam: Any, function: str, statements: list[Statement], *, description: str | None = None
) -> RoleResult:
    """Create ``mlayer-<function>`` with the policy, or bring its policy to ``statements``.

    Same document: nothing is written. Another document: the inline policy is put again
    (IAM replaces it whole). The trust policy is set back to Lambda's if it was changed.

    Raises:
        ConfigError: a role of that name exists without mlayer's tag (not mlayer's).
    """
    name = role_name(function)
    document = policy_document(statements)
    size = len(json.dumps(document, separators=(",", ":")))
    if size > POLICY_MAX_CHARS:
        raise ConfigError(
            f"the role's policy would be {size:,} characters, over IAM's {POLICY_MAX_CHARS:,} "
            "for a role's inline policies: the function reads or writes too many resources "
            "for one role; write the role yourself (a managed policy) and pass --role ARN"
        )
    existing = _get_role(iam, name)
    if existing is None:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
            Description=description
            or f"mlayer: execution role of Lambda function {function_name(function)}",
            Tags=[{"Key": TAG, "Value": function_name(function)}],
        )["Role"]
        iam.get_waiter("role_exists").wait(RoleName=name, WaiterConfig={"Delay": 1})
        iam.put_role_policy(
            RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document)
        )
        return RoleResult(name, str(role["Arn"]), True, True, statements)
    tags = {t["Key"]: t["Value"] for t in _role_tags(iam, name, existing)}
    if tags.get(TAG) != function_name(function):
        raise ConfigError(
            f"IAM role {name} exists but is not the one mlayer made for {function_name(function)} "
            f"(no tag {TAG}={function_name(function)}): mlayer does not change it. Pass "
            f"--role {existing['Arn']} to use it as it is, or delete it (aws iam delete-role "
            f"--role-name {name}) and run --create-role again"
        )
    if _document(existing.get("AssumeRolePolicyDocument")) != TRUST_POLICY:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(TRUST_POLICY))
    current = _current_policy(iam, name)
    if current == document:
        return RoleResult(name, str(existing["Arn"]), False, False, statements)
    iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document))
    now = {(s.actions, r) for s in statements for r in s.resources}
    dropped = [
        s for s in parse_statements(current) if any((s.actions, r) not in now for r in s.resources)
    ]
    return RoleResult(name, str(existing["Arn"]), False, True, statements, dropped)


def _get_role(iam: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(iam.get_role(RoleName=name)["Role"])
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
            return None
        raise


def _role_tags(iam: Any, name: str, role: dict[str, Any]) -> list[dict[str, str]]:
    if "Tags" in role:
        return list(role["Tags"])
    return list(iam.list_role_tags(RoleName=name).get("Tags", []))


def _document(value: Any) -> Any:
    """A policy document as a dict (boto3 decodes IAM's URL-encoded JSON; a string is parsed)."""
    if isinstance(value, str):
        from urllib.parse import unquote

        return json.loads(unquote(value))
    return value


def _current_policy(iam: Any, name: str) -> dict[str, Any] | None:
    try:
        found = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
            return None
        raise
    document = _document(found.get("PolicyDocument"))
    return document if isinstance(document, dict) else None


def assumable(call: Callable[..., Any], pace: Pace = DEFAULT_PACE) -> Callable[..., Any]:
    """``call`` (CreateFunction, or an update of the configuration) made to retry while
    Lambda cannot assume the role it names yet: IAM propagates a new role in seconds,
    sometimes longer. Exponential backoff up to :data:`ASSUMABLE_ATTEMPTS` tries; then the
    last error propagates."""

    def retrying(*args: Any, **kwargs: Any) -> Any:
        return _until_assumable(lambda: call(*args, **kwargs), pace)

    return retrying


def _until_assumable(call: Callable[[], Any], pace: Pace) -> Any:
    for attempt in range(ASSUMABLE_ATTEMPTS):
        try:
            return call()
        except Exception as exc:
            if not (
                is_client_error(exc)
                and error_code(exc) == "InvalidParameterValueException"
                and any(text in str(exc) for text in _NOT_YET_ASSUMABLE)
            ):
                raise
            if attempt == ASSUMABLE_ATTEMPTS - 1:
                raise
            pace.sleep(min(2.0**attempt, ASSUMABLE_MAX_DELAY))
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------
# The whole: deploy-function calls this


def prepare(
    request: RoleRequest,
    lam: Any,
    *,
    function: str,
    env: dict[str, str],
    existing: dict[str, Any] | None,
    model_layer: str | None = None,
) -> RoleResult:
    """The role for ``function`` with ``env`` (its environment as it will be): its
    statements from what it uses and is triggered by, created or brought up to date.

    Raises:
        ConfigError, NotFoundError: a stream, destination or queue URL that is not one, or a
            role of that name that is not mlayer's.
    """
    region = str(lam.meta.region_name)
    account = str(request.sts.get_caller_identity()["Account"])
    where = Where(account, region, partition_of(region))
    given = resolve_streams(request.kinesis, request.dynamodb, request.streams)
    mapped, destinations = mapped_streams(lam, function) if existing else ([], [])
    statements = statements_for(
        function=function,
        where=where,
        env=env,
        streams=list(dict.fromkeys(given + mapped)),
        on_failure=list(dict.fromkeys(list(request.on_failure) + destinations)),
        log_group_name=((existing or {}).get("LoggingConfig") or {}).get("LogGroup"),
        store_bucket=request.store_bucket,
        model_layer=model_layer,
    )
    return ensure_role(request.iam, function, statements)
