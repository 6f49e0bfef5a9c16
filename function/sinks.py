"""Optional outputs: the prediction table, the prediction stream, the dead-letter queue.

boto3 is imported only when one of them is configured: importing it costs about 0.25 s of
every cold start, and a function that only returns its predictions does not need it.
Clients are created once per execution environment.

Each writer returns the failures as ``{position: reason}`` (positions in the list it was
given) after its retries, so the handler can report exactly those records in
``batchItemFailures``; it never raises for an AWS error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

TABLE_CHUNK = 25  # BatchWriteItem: at most 25 put requests
STREAM_CHUNK = 500  # PutRecords: at most 500 records (and 5 MiB)
QUEUE_CHUNK = 10  # SendMessageBatch: at most 10 messages
QUEUE_BATCH_BYTES = 262_144  # SendMessageBatch: at most 256 KiB of bodies per call
PARTITION_KEY_MAX = 256
ATTEMPTS = 4  # first try + retries of the items AWS reports as not done
BACKOFF_S = 0.05

_CLIENTS: dict[tuple[str, str | None, str | None], Any] = {}
Sleep = Callable[[float], None]


def client(service: str) -> Any:
    """A boto3 client for ``service``, created on first use (AWS_ENDPOINT_URL is honoured)."""
    key = (service, os.environ.get("AWS_REGION"), os.environ.get("AWS_ENDPOINT_URL"))
    existing = _CLIENTS.get(key)
    if existing is not None:
        return existing
    import boto3
    from botocore.config import Config

    created = boto3.client(service, config=Config(retries={"mode": "standard", "max_attempts": 3}))
    _CLIENTS[key] = created
    return created


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors, for ``except`` clauses (evaluated only once an exception is raised).

    Anything else (a bug) propagates: the batch fails visibly instead of its records being
    reported as sink failures.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


# --- DynamoDB table --------------------------------------------------------------------------


def write_table(
    table: str,
    predictions: Sequence[dict[str, Any]],
    *,
    dynamodb: Any = None,
    sleep: Sleep = time.sleep,
) -> dict[int, str]:
    """Put each prediction as an item keyed by ``record_id`` (a retry overwrites, never adds).

    Two predictions with the same record_id in one batch (a direct invocation repeating an
    id) are one item: the later one is written, as sequential puts would leave it, since
    BatchWriteItem rejects a request that names a key twice.
    """
    if not predictions:
        return {}
    dynamodb = dynamodb or client("dynamodb")
    latest: dict[str, int] = {}
    sharing: dict[str, list[int]] = {}
    for position, prediction in enumerate(predictions):
        key = prediction["record_id"]
        latest[key] = position
        sharing.setdefault(key, []).append(position)
    keys = list(latest)
    failed_keys: dict[str, str] = {}
    for start in range(0, len(keys), TABLE_CHUNK):
        chunk = keys[start : start + TABLE_CHUNK]
        pending = [{"PutRequest": {"Item": to_item(predictions[latest[key]])}} for key in chunk]
        error = "UnprocessedItems after retries"
        for attempt in range(ATTEMPTS):
            if attempt:
                sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = dynamodb.batch_write_item(RequestItems={table: pending})
            except _aws_errors() as exc:  # the whole chunk: no such table, throttled past retries
                error = _describe(exc)
                break
            pending = response.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                break
        if pending:
            for request in pending:
                failed_keys[request["PutRequest"]["Item"]["record_id"]["S"]] = error
    return {position: reason for key, reason in failed_keys.items() for position in sharing[key]}


def to_item(prediction: dict[str, Any]) -> dict[str, Any]:
    """A prediction in DynamoDB's attribute-value form (numbers as N, like boto3's Decimal)."""
    return {name: _attribute(value) for name, value in prediction.items()}


def _attribute(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        # DynamoDB numbers span 1E-130 to 9.9E+125 with 38 digits: repr() has at most 17.
        if math.isfinite(value) and (value == 0 or 1e-130 <= abs(value) < 9.9e125):
            return {"N": str(Decimal(repr(value)))}
        return {"S": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(key): _attribute(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_attribute(item) for item in value]}
    return {"S": str(value)}


# --- Kinesis stream --------------------------------------------------------------------------


def put_stream(
    stream: str,
    predictions: Sequence[dict[str, Any]],
    *,
    kinesis: Any = None,
    sleep: Sleep = time.sleep,
) -> dict[int, str]:
    """Put each prediction as a JSON record, partition key ``record_id``.

    Consumers should key on ``record_id``: a retried batch puts its records again.
    ``stream`` is a stream name or ARN.
    """
    if not predictions:
        return {}
    kinesis = kinesis or client("kinesis")
    target = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
    failures: dict[int, str] = {}
    for start in range(0, len(predictions), STREAM_CHUNK):
        pending = list(range(start, min(start + STREAM_CHUNK, len(predictions))))
        reasons: dict[int, str] = {}
        for attempt in range(ATTEMPTS):
            if attempt:
                sleep(BACKOFF_S * 2 ** (attempt - 1))
            entries = [
                {
                    "Data": _dumps(predictions[position]),
                    "PartitionKey": _partition_key(predictions[position]["record_id"]),
                }
                for position in pending
            ]
            try:
                response = kinesis.put_records(Records=entries, **target)
            except _aws_errors() as exc:  # the whole chunk: no such table, throttled past retries
                reasons.update(dict.fromkeys(pending, _describe(exc)))
                break
            if not response.get("FailedRecordCount"):
                pending = []
                break
            retry = []
            for position, result in zip(pending, response["Records"], strict=True):
                if result.get("ErrorCode"):
                    retry.append(position)
                    reasons[position] = f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}"
            pending = retry
        for position in pending:
            failures[position] = reasons[position]
    return failures


def _partition_key(record_id: str) -> str:
    # Kinesis partition keys hold at most 256 characters; the key only picks the shard.
    if len(record_id) <= PARTITION_KEY_MAX:
        return record_id
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()


# --- Dead-letter queue -----------------------------------------------------------------------


def dead_letter(
    queue_url: str,
    messages: Sequence[dict[str, Any]],
    *,
    sqs: Any = None,
    sleep: Sleep = time.sleep,
) -> dict[int, str]:
    """Send each message (a bad record and its reason) to the SQS queue.

    Chunks hold at most 10 messages and 256 KiB. A message SQS refuses (too large, a
    throttle that outlasts the retries) is returned as a failure, so the handler reports
    that record in batchItemFailures instead of losing it.
    """
    if not messages:
        return {}
    sqs = sqs or client("sqs")
    fifo = queue_url.endswith(".fifo")
    bodies = [_dumps(message).decode("utf-8") for message in messages]
    failures: dict[int, str] = {}
    for chunk in _queue_chunks(bodies):
        pending = chunk
        reasons: dict[int, str] = {}
        for attempt in range(ATTEMPTS):
            if attempt:
                sleep(BACKOFF_S * 2 ** (attempt - 1))
            entries = []
            for position in pending:
                entry = {"Id": str(position), "MessageBody": bodies[position]}
                if fifo:
                    identity = (
                        f"{messages[position]['record_id']}|{messages[position]['sequence_number']}"
                    )
                    entry["MessageGroupId"] = "mlayer-dead-letters"
                    entry["MessageDeduplicationId"] = hashlib.sha256(identity.encode()).hexdigest()
                entries.append(entry)
            try:
                response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except _aws_errors() as exc:  # the whole chunk: no such table, throttled past retries
                reasons.update(dict.fromkeys(pending, _describe(exc)))
                break
            retry = []
            for failed in response.get("Failed", []):
                position = int(failed["Id"])
                reasons[position] = f"{failed.get('Code', 'Failed')}: {failed.get('Message', '')}"
                # A sender fault (too large, malformed) fails again; SQS-side ones may pass.
                if not failed.get("SenderFault"):
                    retry.append(position)
                else:
                    failures[position] = reasons[position]
            pending = retry
            if not pending:
                break
        for position in pending:
            failures[position] = reasons[position]
    return failures


def _queue_chunks(bodies: Sequence[str]) -> list[list[int]]:
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for position, body in enumerate(bodies):
        length = len(body.encode("utf-8"))
        if current and (len(current) == QUEUE_CHUNK or size + length > QUEUE_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(position)
        size += length
    if current:
        chunks.append(current)
    return chunks


# --- Helpers ---------------------------------------------------------------------------------


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False).encode("utf-8")


try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=str)

except ImportError:  # pragma: no cover - orjson is pinned in the dependency layer
    _dumps = _stdlib_dumps


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"
