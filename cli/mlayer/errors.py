"""One exception root for everything a user can cause, and its translation to Click errors.

Library code raises :class:`MlayerError` subclasses (never prints or exits); the CLI turns
them, and botocore's errors, into one ``Error: ...`` line in :func:`to_click_exception`.
"""

from __future__ import annotations

from typing import Any

import click


class MlayerError(Exception):
    """An expected failure: the message says what happened and what to do next."""


class ConfigError(MlayerError):
    """mlayer.toml (or a flag) is invalid."""


class BuildError(MlayerError):
    """A layer build failed (resolution, slimming, verification, budget)."""


class CompatibilityError(BuildError):
    """A model was saved with library versions the dependency layer cannot promise to load."""


class SmokeTestError(BuildError):
    """The real function failed on the built layers."""


class BudgetError(MlayerError):
    """A size or count limit of Lambda would be exceeded."""


class NotFoundError(MlayerError):
    """Something named by the user (function, layer, build, bucket, version) does not exist."""


class AwsError(MlayerError):
    """An AWS call failed in a way the user can act on."""


class DockerError(MlayerError):
    """Docker is missing or its build failed."""


# The IAM service prefix of the operations mlayer calls outside Lambda, for the hint of an
# access-denied error (Lambda's are the default).
_SERVICE_OF = {
    **dict.fromkeys(
        ("GetMetricData", "ListMetrics", "PutMetricData", "GetMetricStatistics"), "cloudwatch"
    ),
    **dict.fromkeys(
        (
            "GetObject",
            "PutObject",
            "HeadObject",
            "HeadBucket",
            "ListObjectsV2",
            "DeleteObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "CreateBucket",
        ),
        "s3",
    ),
    **dict.fromkeys(
        (
            "PutRecord",
            "PutRecords",
            "GetRecords",
            "GetShardIterator",
            "DescribeStream",
            "DescribeStreamSummary",
            "ListShards",
        ),
        "kinesis",
    ),
    **dict.fromkeys(("SendMessage", "SendMessageBatch", "GetQueueAttributes"), "sqs"),
    **dict.fromkeys(("PutItem", "BatchWriteItem", "DescribeTable"), "dynamodb"),
}


def _role_hint(code: str, message: str) -> str | None:
    """What to do when Lambda finds the function's execution role short of a permission a
    trigger needs (it checks when the mapping is created or updated)."""
    if code != "InvalidParameterValueException":
        return None
    if "Cannot access stream" in message:
        return (
            "the function's execution role cannot read the stream; mlayer deploy-function "
            "--create-role --stream STREAM grants it (IAM can take a few seconds to apply a "
            "new policy: if it just did, run the command again)"
        )
    if "execution role does not have permissions" in message:
        return (
            "the function's execution role may not use the destination; mlayer "
            "deploy-function --create-role --on-failure ARN grants it"
        )
    return None


def _client_error_message(exc: Any) -> str:
    """Say what an AWS ClientError means for a user, with the fix where there is one."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message", "") or str(exc)
    operation = getattr(exc, "operation_name", "an AWS call")
    service = _SERVICE_OF.get(operation, "lambda")
    denied = (
        f"access denied for {operation}; check the bucket policy and your credentials (--profile)"
        if service == "s3"
        else f"the credentials in use lack permission for {operation}; grant it "
        f"({service}:{operation}) or pass --profile with a role that has it"
    )
    hints = {
        "AccessDeniedException": denied,
        "AccessDenied": denied,
        "UnrecognizedClientException": "the credentials were rejected; check --profile or "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "InvalidClientTokenId": "the credentials were rejected; check --profile or "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "ExpiredTokenException": "the session token expired; refresh your credentials",
        "NoSuchBucket": "the bucket does not exist; create it or pass --bucket with an "
        "existing one",
        "ResourceConflictException": "another update of the function is in progress; "
        "wait and run the command again",
        "TooManyRequestsException": "AWS throttled the request; wait a moment and retry",
    }
    hint = hints.get(code) or _role_hint(code, message)
    if hint:
        return f"{operation} failed ({code}): {hint}. AWS said: {message}"
    return f"{operation} failed ({code}): {message}"


def to_click_exception(
    exc: BaseException,
    *,
    read_timeout: int | None = None,
    connect_timeout: int | None = None,
    attempts: int | None = None,
) -> click.ClickException | None:
    """Translate an expected failure into a ClickException; None for a real bug.

    The clients' timeouts (seconds) and attempts are named when a call timed out.
    """
    if isinstance(exc, MlayerError):
        return click.ClickException(str(exc))
    try:
        from botocore import exceptions as boto_exc
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(exc, boto_exc.NoCredentialsError):
        return click.ClickException(
            "no AWS credentials found. Configure them (aws configure, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or pass --profile; for the local "
            "endpoint any values work"
        )
    if isinstance(exc, boto_exc.PartialCredentialsError):
        return click.ClickException(
            f"{exc}; complete them (aws configure) or pass --profile with complete ones"
        )
    if isinstance(exc, boto_exc.NoRegionError):
        return click.ClickException(
            "no AWS region configured; pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), "
            'or add region = "..." to mlayer.toml'
        )
    if isinstance(exc, boto_exc.InvalidRegionError):
        return click.ClickException(
            f"{exc} Pass --region with the function's region (like eu-west-1)"
        )
    if isinstance(exc, boto_exc.ProfileNotFound):
        return click.ClickException(f"{exc}; check --profile against ~/.aws/config")
    if isinstance(exc, boto_exc.ReadTimeoutError | boto_exc.ConnectTimeoutError):
        endpoint = exc.kwargs.get("endpoint_url", "the endpoint")
        connect = isinstance(exc, boto_exc.ConnectTimeoutError)
        waited = "accept a connection" if connect else "answer"
        limit = connect_timeout if connect else read_timeout
        within = f" within {limit} s" if limit else ""
        tries = f" ({attempts} attempts)" if attempts else ""
        return click.ClickException(
            f"{endpoint} did not {waited}{within}{tries}. Is the endpoint up and reachable? "
            "Check --endpoint-url (or AWS_ENDPOINT_URL) and the network; for a slow call "
            "pass --timeout SECONDS"
        )
    if isinstance(exc, boto_exc.EndpointConnectionError | boto_exc.ConnectionClosedError):
        return click.ClickException(
            f"{exc}. Is the endpoint running? Check --endpoint-url (or AWS_ENDPOINT_URL)"
        )
    if isinstance(exc, boto_exc.ClientError):
        return click.ClickException(_client_error_message(exc))
    if isinstance(exc, boto_exc.WaiterError):
        return click.ClickException(f"gave up waiting: {exc}")
    return None
