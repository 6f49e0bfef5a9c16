"""ARNs and qualified function names, parsed in one place.

Each parser takes what a user (or an AWS response) gives and returns its parts, or raises
:class:`~mlayer.errors.ConfigError` naming the forms it accepts. Standard library only: the
CLI's ``--help`` must not import boto3.

Forms:

- function: ``scorer``, ``scorer:live``, ``scorer:7``, ``scorer:$LATEST``, a partial ARN
  ``123456789012:function:scorer[:live]``, a full ARN
  ``arn:aws:lambda:REGION:ACCOUNT:function:scorer[:live]`` (what Lambda's FunctionName takes);
- layer version: ``arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION``; layer: the same
  without ``:VERSION``;
- Kinesis stream: ``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``;
- DynamoDB table: ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME``, its stream:
  ``…:table/NAME/stream/LABEL`` (a label is a timestamp, colons included);
- S3 bucket: ``arn:aws:s3:::BUCKET`` (no region, no account).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlayer.errors import ConfigError

_FUNCTION_FORMS = (
    "NAME, NAME:ALIAS, NAME:VERSION, ACCOUNT:function:NAME[:QUALIFIER] or "
    "arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]"
)
# Lambda's own rules: a name of letters, digits, hyphens and underscores (64 at most); a
# qualifier is $LATEST, a version number or an alias name (128 at most).
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUALIFIER_RE = re.compile(r"\$LATEST|[A-Za-z0-9_-]{1,128}")
_ACCOUNT_RE = re.compile(r"\d{12}")
# Loose on region and account: a local endpoint (and the budget check's stand-in slot) may
# use others than AWS's.
_LAYER_VERSION_RE = re.compile(
    r"^(?P<layer_arn>arn:[^:]+:lambda:[^:]*:\d*:layer:(?P<name>[^:]+)):(?P<version>\d+)$"
)
_LAYER_RE = re.compile(r"^arn:[^:]+:lambda:[^:]*:\d*:layer:(?P<name>[^:]+)$")


@dataclass(frozen=True)
class Arn:
    """An ARN's fields: ``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE``."""

    partition: str
    service: str
    region: str
    account: str
    resource: str  # everything after the account, colons included


def parse_arn(text: str) -> Arn:
    """Split any ARN into its fields.

    Raises:
        ConfigError: not ``arn:aws…:SERVICE:REGION:ACCOUNT:RESOURCE``.
    """
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1].startswith("aws") or not parts[2]:
        raise ConfigError(f"{text!r} is not an ARN (arn:aws:SERVICE:REGION:ACCOUNT:RESOURCE)")
    return Arn(*parts[1:])


# --------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True)
class FunctionRef:
    """A function as Lambda's FunctionName takes it: a name, maybe qualified, maybe an ARN."""

    name: str
    qualifier: str | None = None  # an alias, a version number or $LATEST
    region: str | None = None  # only in a full ARN
    account: str | None = None  # in a full or partial ARN


def parse_function(text: str) -> FunctionRef:
    """The name and qualifier (and region, account) of a function name or ARN.

    Raises:
        ConfigError: none of the forms Lambda accepts.
    """
    region = account = None
    if text.startswith("arn:"):
        try:
            arn = parse_arn(text)
        except ConfigError:
            arn = None
        if arn is None or arn.service != "lambda" or not arn.region:
            raise ConfigError(f"{text!r} is not a function ARN ({_FUNCTION_FORMS})")
        region, account = arn.region, arn.account
        rest = [account, *arn.resource.split(":")]
    else:
        rest = text.split(":")
        if len(rest) <= 2:
            rest = ["", "function", *rest]
        else:
            account = rest[0]
    ok = (
        3 <= len(rest) <= 4
        and rest[1] == "function"
        and (account is None or _ACCOUNT_RE.fullmatch(account) is not None)
        and _NAME_RE.fullmatch(rest[2]) is not None
        and (len(rest) == 3 or _QUALIFIER_RE.fullmatch(rest[3]) is not None)
    )
    if not ok:
        raise ConfigError(f"{text!r} is not a function name or ARN ({_FUNCTION_FORMS})")
    return FunctionRef(rest[2], rest[3] if len(rest) == 4 else None, region, account)


def function_name(function: str) -> str:
    """The bare name of a function name, qualified name, partial or full ARN."""
    return parse_function(function).name


def is_alias(qualifier: str | None) -> bool:
    """True for an alias name: a qualifier that is neither a version number nor ``$LATEST``."""
    return bool(qualifier) and not str(qualifier).isdigit() and qualifier != "$LATEST"


def log_group(function: str) -> str:
    """The function's CloudWatch Logs group, ``/aws/lambda/<name>``: one per function,
    whatever alias or version wrote to it."""
    return f"/aws/lambda/{function_name(function)}"


# --------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True)
class LayerArn:
    """A layer version ARN, split."""

    arn: str
    layer_arn: str  # the layer's ARN: the version's without ``:VERSION``
    name: str
    version: int


def parse_layer_arn(arn: str) -> LayerArn:
    """Split a layer version ARN, ``arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION``.

    Raises:
        ConfigError: not a layer version ARN.
    """
    m = _LAYER_VERSION_RE.match(arn)
    if not m:
        raise ConfigError(f"{arn!r} is not a layer version ARN (…:layer:<name>:<version>)")
    return LayerArn(arn=arn, layer_arn=m["layer_arn"], name=m["name"], version=int(m["version"]))


def layer_name(arn: str) -> str:
    """The name of a layer given by ARN (``arn:aws:lambda:REGION:ACCOUNT:layer:NAME``), or by
    a version's ARN.

    Raises:
        ConfigError: neither.
    """
    m = _LAYER_RE.match(arn)
    if m:
        return m["name"]
    return parse_layer_arn(arn).name


# --------------------------------------------------------------------------------------
# Streams, tables, buckets


@dataclass(frozen=True)
class StreamArn:
    """A Kinesis stream's or DynamoDB table stream's ARN, split."""

    arn: str
    kind: str  # "kinesis" | "dynamodb"
    name: str  # the Kinesis stream's, or the DynamoDB table's
    region: str
    account: str
    label: str | None = None  # a DynamoDB stream's label (a timestamp)


def parse_stream_arn(arn: str) -> StreamArn:
    """Split a Kinesis stream or DynamoDB stream ARN.

    Raises:
        ConfigError: neither.
    """
    try:
        parsed = parse_arn(arn)
    except ConfigError:
        parsed = None
    if parsed is not None:
        resource = parsed.resource
        if parsed.service == "kinesis" and resource.startswith("stream/"):
            name = resource.split("/")[1]
            return StreamArn(arn, "kinesis", name, parsed.region, parsed.account)
        if parsed.service == "dynamodb" and "/stream/" in resource:
            table, _, label = resource.partition("/stream/")
            name = table.removeprefix("table/")
            return StreamArn(arn, "dynamodb", name, parsed.region, parsed.account, label)
    raise ConfigError(
        f"{arn!r} is not a Kinesis stream or DynamoDB stream ARN "
        "(arn:aws:kinesis:...:stream/NAME or arn:aws:dynamodb:...:table/T/stream/LABEL)"
    )


def table_name(arn: str) -> str:
    """The DynamoDB table an ARN of the table (or one of its parts: stream, index) names.

    Raises:
        ConfigError: not a DynamoDB table ARN.
    """
    try:
        parsed = parse_arn(arn)
    except ConfigError:
        parsed = None
    if parsed is None or parsed.service != "dynamodb" or not parsed.resource.startswith("table/"):
        raise ConfigError(f"{arn!r} is not a DynamoDB table ARN (arn:aws:dynamodb:...:table/NAME)")
    return parsed.resource.split("/")[1]


def bucket_name(arn: str) -> str:
    """The bucket of an S3 bucket ARN, ``arn:aws:s3:::BUCKET`` (no region, no account).

    Raises:
        ConfigError: not a bucket ARN (an object's ARN, with ``/KEY``, is not one either).
    """
    try:
        parsed = parse_arn(arn)
    except ConfigError:
        parsed = None
    if (
        parsed is None
        or parsed.service != "s3"
        or parsed.region
        or parsed.account
        or not 3 <= len(parsed.resource) <= 63
        or "/" in parsed.resource
        or ":" in parsed.resource
    ):
        raise ConfigError(f"{arn!r} is not an S3 bucket ARN (arn:aws:s3:::BUCKET)")
    return parsed.resource


def on_failure_kind(arn: str) -> str | None:
    """ "s3", "sqs" or "sns" for an on-failure destination ARN Lambda accepts from a stream
    mapping; None for anything else.

    An S3 bucket ARN has no region or account (``arn:aws:s3:::BUCKET``); a queue or topic
    ARN has both (``arn:aws:sqs:REGION:ACCOUNT:NAME``).
    """
    try:
        parsed = parse_arn(arn)
    except ConfigError:
        return None
    if parsed.service == "s3":
        try:
            bucket_name(arn)
        except ConfigError:
            return None
        return "s3"
    if (
        parsed.service in ("sqs", "sns")
        and parsed.region
        and parsed.account.isdigit()
        and len(parsed.account) == 12
        and ":" not in parsed.resource  # a queue's or topic's name has none
    ):
        return parsed.service if parsed.resource else None
    return None
