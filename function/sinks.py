"""Optional outputs: the prediction table, the prediction stream, the dead-letter queue, and
the bucket that keeps bad records too large for a queue message.

boto3 is imported only when one of them is configured: importing it costs about 0.25 s of
every cold start, and a function that only returns its predictions does not need it.
Clients are created once per execution environment (one per timeout step, see
:func:`client`).

Every call is bounded by the invocation's :class:`Deadline`: connect and read timeouts no
longer than the time left, no botocore retries (the writers retry themselves, and only
while time remains), and no call at all once the deadline has passed. What cannot be
written in time is returned as a failure, so the handler reports it in batchItemFailures
and Lambda retries it, instead of the whole invocation timing out.

The table and stream writers return the failures as ``{position: reason}`` (positions in
the list they were given) after their retries; :func:`dead_letter` stops at the first
letter it cannot deliver (see :class:`DeadLetters`). None raises for an AWS error.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

from safe_json import dumps_bytes, message_body

TABLE_CHUNK = 25  # BatchWriteItem: at most 25 put requests
STREAM_CHUNK = 500  # PutRecords: at most 500 records (and 5 MiB)
QUEUE_CHUNK = 10  # SendMessageBatch: at most 10 messages
# A queue's MaximumMessageSize: 262,144 bytes (256 KiB) on queues made before SQS raised the
# limit to 1 MiB in 2025, and settable from 1,024 up on any queue. 256 KiB is safe for every
# queue left at a default; DEAD_LETTER_MAX_BYTES raises it for a queue known to take more.
DEAD_LETTER_MAX_BYTES = 262_144
MESSAGE_BYTES_RANGE = (1_024, 1_048_576)
QUEUE_BATCH_BYTES = DEAD_LETTER_MAX_BYTES  # SendMessageBatch: bodies of one call, in total
OBJECT_PREFIX = "dead-letters/"
POINTER_FIELD_CHARS = 200  # a pointer message must fit the smallest queue limit (1,024 bytes)
PARTITION_KEY_MAX = 256
ATTEMPTS = 4  # first try + retries of the items AWS reports as not done
BACKOFF_S = 0.05
# Client timeouts step down as the deadline nears: one client per step and service.
TIMEOUT_STEPS_S = (60.0, 30.0, 15.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25)
_THROTTLES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "LimitExceededException",
    }
)

_CLIENTS: dict[tuple[str, str | None, str | None, float], Any] = {}
Sleep = Callable[[float], None]


class Deadline:
    """When the writers must stop: the invocation's remaining time less a safety margin.

    The margin is the larger of 1 s and 10% of the time left when the invocation started, so
    that the handler can still log and return its response. Without a context (a direct call
    in tests or scripts) there is no deadline.
    """

    MARGIN_S = 1.0
    MARGIN_SHARE = 0.1

    def __init__(self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    @classmethod
    def from_context(cls, context: Any, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(None, clock=clock)
        left = remaining() / 1000
        return cls(left - max(cls.MARGIN_S, cls.MARGIN_SHARE * left), clock=clock)

    def remaining(self) -> float:
        """Seconds left (infinite without a deadline)."""
        return math.inf if self._end is None else self._end - self._clock()

    def remaining_ms(self) -> int | None:
        """Milliseconds left, for logs (None without a deadline)."""
        return None if self._end is None else round(self.remaining() * 1000)

    def timeout(self) -> float | None:
        """The longest timeout step a call may take now (connect + read both fit), or None
        when not even the shortest one fits."""
        budget = self.remaining() / 2
        return next((step for step in TIMEOUT_STEPS_S if step <= budget), None)

    def sleep(self, seconds: float, sleep: Sleep) -> bool:
        """Back off for ``seconds`` if a call still fits afterwards; False otherwise."""
        if (self.remaining() - seconds) / 2 < TIMEOUT_STEPS_S[-1]:
            return False
        sleep(seconds)
        return True

    def describe(self) -> str:
        return f"not attempted: the invocation's deadline is near ({max(self.remaining(), 0.0) * 1000:.0f} ms left beyond the safety margin)"


NO_DEADLINE = Deadline(None)


def client(service: str, deadline: Deadline = NO_DEADLINE) -> Any:
    """A boto3 client for ``service`` whose timeouts fit ``deadline`` (AWS_ENDPOINT_URL is
    honoured), created on first use, or None when no call fits any more."""
    timeout = deadline.timeout()
    if timeout is None:
        return None
    key = (service, os.environ.get("AWS_REGION"), os.environ.get("AWS_ENDPOINT_URL"), timeout)
    existing = _CLIENTS.get(key)
    if existing is not None:
        return existing
    import boto3
    from botocore.config import Config

    created = boto3.client(
        service,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            # The writers retry (throttles, 5xx, refused connections) while the deadline
            # allows; botocore's own backoff could sleep past it.
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )
    _CLIENTS[key] = created
    return created


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors, for ``except`` clauses (evaluated only once an exception is raised).

    Anything else (a bug) propagates: the batch fails visibly instead of its records being
    reported as sink failures.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _retryable(exc: Exception) -> bool:
    """A throttle, a server error, or a connection that was never made: worth another try.

    A read timeout is not: the sink may have taken the request, and a sink that does not
    answer in time will not answer a retry in the time left either.
    """
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, BotoConnectionError):
        return True
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = (response.get("Error") or {}).get("Code", "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return code in _THROTTLES or status == 429 or status >= 500


def _once(
    make: Callable[[Any], Any], injected: Any, service: str, deadline: Deadline
) -> tuple[Any, str | None, bool]:
    """One call ``make(client)`` if the deadline allows it.

    Returns (response, None, False) on success, else (None, reason, worth retrying).
    """
    aws = injected if injected is not None else client(service, deadline)
    if aws is None or deadline.timeout() is None:
        return None, deadline.describe(), False
    try:
        return make(aws), None, False
    except _aws_errors() as exc:
        return None, _describe(exc), _retryable(exc)


def _backoff(attempt: int, deadline: Deadline, sleep: Sleep) -> bool:
    """Wait before retry ``attempt`` (1, 2, ...); False when the deadline leaves no time."""
    return deadline.sleep(BACKOFF_S * 2 ** (attempt - 1), sleep)


# --- DynamoDB table --------------------------------------------------------------------------


def write_table(
    table: str,
    predictions: Sequence[dict[str, Any]],
    *,
    dynamodb: Any = None,
    sleep: Sleep = time.sleep,
    deadline: Deadline = NO_DEADLINE,
) -> dict[int, str]:
    """Put each prediction as an item keyed by ``record_id`` (a retry overwrites, never adds).

    Two predictions with the same record_id in one batch (a direct invocation repeating an
    id) are one item: the later one is written, as sequential puts would leave it, since
    BatchWriteItem rejects a request that names a key twice. Chunks the deadline leaves no
    time for are returned as failures without a call.
    """
    if not predictions:
        return {}
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
            if attempt and not _backoff(attempt, deadline, sleep):
                error = f"{error}; {deadline.describe()}"
                break
            response, failure, again = _once(
                partial(_batch_write_item, {table: pending}), dynamodb, "dynamodb", deadline
            )
            if response is None:  # the whole chunk: no such table, throttled, unreachable
                error = str(failure)
                if again:
                    continue
                break
            pending = response.get("UnprocessedItems", {}).get(table, [])
            error = "UnprocessedItems after retries"
            if not pending:
                break
        if pending:
            for request_item in pending:
                failed_keys[request_item["PutRequest"]["Item"]["record_id"]["S"]] = error
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
    deadline: Deadline = NO_DEADLINE,
) -> dict[int, str]:
    """Put each prediction as a JSON record, partition key ``record_id``.

    Consumers should key on ``record_id``: a retried batch puts its records again.
    ``stream`` is a stream name or ARN. Chunks the deadline leaves no time for are returned
    as failures without a call.
    """
    if not predictions:
        return {}
    target = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
    failures: dict[int, str] = {}
    for start in range(0, len(predictions), STREAM_CHUNK):
        pending = list(range(start, min(start + STREAM_CHUNK, len(predictions))))
        reasons: dict[int, str] = {}
        for attempt in range(ATTEMPTS):
            if attempt and not _backoff(attempt, deadline, sleep):
                reasons = {p: f"{reasons.get(p, '')}; {deadline.describe()}" for p in pending}
                break
            entries = [
                {
                    "Data": dumps_bytes(predictions[position]),
                    "PartitionKey": _partition_key(predictions[position]["record_id"]),
                }
                for position in pending
            ]
            response, failure, again = _once(
                partial(_put_records, entries, target), kinesis, "kinesis", deadline
            )
            if response is None:  # the whole chunk: no such stream, throttled, unreachable
                reasons.update(dict.fromkeys(pending, str(failure)))
                if again:
                    continue
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
    return hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()


# --- Dead-letter queue -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Letter:
    """One bad record's dead-letter message, and where its record came from.

    ``source`` is the record's eventSourceARN (None for a direct invocation): with the
    record's identity it names the record's S3 object and its FIFO deduplication id.
    """

    message: dict[str, Any]
    source: str | None = None

    def digest(self) -> str:
        """sha256 of the record's identity: the same on every retry of its batch.

        A stream record is named by its source, eventID and sequence number (immutable);
        a direct invocation's record has no sequence number, so its content is added.
        """
        message = self.message
        material: list[Any] = [
            self.source or "direct",
            message.get("record_id"),
            message.get("sequence_number"),
        ]
        if message.get("sequence_number") is None:
            material.append(hashlib.sha256(dumps_bytes(message.get("record"))).hexdigest())
        return hashlib.sha256(dumps_bytes(material)).hexdigest()

    def group(self) -> str:
        """A FIFO queue's MessageGroupId: the source, so each stream keeps its order."""
        source = self.source or "direct"
        # At most 128 characters, alphanumeric and punctuation: an ARN is, unless too long.
        if len(source) <= 128 and source.isascii() and source.isprintable() and " " not in source:
            return source
        return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class DeadLetters:
    """What :func:`dead_letter` did.

    ``sent``: position -> where its message went (``"queue"``, or ``"s3://bucket/key"`` when
    the record went to S3 and a pointer to the queue). ``failed_at``: the first position not
    delivered, and ``error`` why; letters after it are not attempted, except those already
    in the same SendMessageBatch call (they are in ``sent`` too). None when all went.
    """

    sent: dict[int, str] = field(default_factory=dict)
    failed_at: int | None = None
    error: str | None = None

    def fail(self, position: int, error: str) -> None:
        if self.failed_at is None or position < self.failed_at:
            self.failed_at, self.error = position, error


def dead_letter(
    queue_url: str,
    letters: Sequence[Letter],
    *,
    bucket: str | None = None,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
    sqs: Any = None,
    s3: Any = None,
    sleep: Sleep = time.sleep,
    deadline: Deadline = NO_DEADLINE,
) -> DeadLetters:
    """Send each letter (a bad record and its reason) to the SQS queue, in order, once.

    A message over ``max_bytes`` (measured: the UTF-8 body as sent) is stored whole in
    ``bucket`` under ``dead-letters/<sha256 of the record's identity>.json`` (a retry
    overwrites the same object) and the queue gets a pointer to it with the reason. The
    first letter that cannot be delivered (too large and no bucket, S3 or SQS refusing it
    after retries, the deadline) stops the rest: they are behind it, and the handler reports
    them in batchItemFailures for Lambda to resend, so sending them now would send them twice.
    A FIFO queue (``.fifo``) also gets a MessageDeduplicationId (the identity digest) and a
    MessageGroupId (the record's source).
    """
    result = DeadLetters()
    if not letters:
        return result
    fifo = queue_url.endswith(".fifo")
    bodies: list[bytes] = []
    digests: list[str] = []
    locations: list[str] = []
    for position, letter in enumerate(letters):
        body = message_body(letter.message)
        digest = letter.digest()
        location = "queue"
        if len(body) > max_bytes:
            if not bucket:
                result.fail(
                    position,
                    f"the dead-letter message is {len(body):,} bytes, over "
                    f"DEAD_LETTER_MAX_BYTES ({max_bytes:,}); set DEAD_LETTER_BUCKET to keep "
                    "such records whole in S3",
                )
                break
            key = f"{OBJECT_PREFIX}{digest}.json"
            error = _put_object(bucket, key, body, s3=s3, sleep=sleep, deadline=deadline)
            if error is not None:
                result.fail(position, f"storing the record in s3://{bucket}/{key}: {error}")
                break
            location = f"s3://{bucket}/{key}"
            body = message_body(_pointer(letter.message, bucket, key, body, max_bytes))
            if len(body) > max_bytes:
                result.fail(
                    position,
                    f"even a pointer message is {len(body):,} bytes, over DEAD_LETTER_MAX_BYTES "
                    f"({max_bytes:,}); the record is in {location}",
                )
                break
        bodies.append(body)
        digests.append(digest)
        locations.append(location)

    for chunk in _queue_chunks(bodies, max_bytes):
        pending = chunk
        reasons: dict[int, str] = {}
        for attempt in range(ATTEMPTS):
            if attempt and not _backoff(attempt, deadline, sleep):
                reasons = {p: f"{reasons.get(p, '')}; {deadline.describe()}" for p in pending}
                break
            entries = []
            for position in pending:
                entry = {"Id": str(position), "MessageBody": bodies[position].decode("utf-8")}
                if fifo:
                    entry["MessageGroupId"] = letters[position].group()
                    entry["MessageDeduplicationId"] = digests[position]
                entries.append(entry)
            response, failure, again = _once(
                partial(_send_message_batch, queue_url, entries), sqs, "sqs", deadline
            )
            if response is None:  # the whole chunk: no such queue, throttled, unreachable
                reasons.update(dict.fromkeys(pending, str(failure)))
                if again:
                    continue
                break
            failed = {int(item["Id"]): item for item in response.get("Failed", [])}
            for position in pending:
                if position not in failed:
                    result.sent[position] = locations[position]
            retry = []
            for position in sorted(failed):
                item = failed[position]
                reasons[position] = f"{item.get('Code', 'Failed')}: {item.get('Message', '')}"
                if item.get("SenderFault"):  # malformed or too large: fails again
                    result.fail(position, reasons[position])
                    break
                retry.append(position)
            # What SQS refused for good stops the letters behind it: retrying those now
            # would send them twice (they are resent with the batch).
            pending = [p for p in retry if result.failed_at is None or p < result.failed_at]
            if not pending:
                break
        for position in pending:
            result.fail(position, reasons[position])
        if result.failed_at is not None:
            break
    return result


def _pointer(
    message: dict[str, Any], bucket: str, key: str, body: bytes, max_bytes: int
) -> dict[str, Any]:
    """The queue message for a record stored in S3: who, why, and where, without the record."""
    pointer: dict[str, Any] = {}
    for name, value in message.items():
        if name == "record":
            continue
        if isinstance(value, str) and len(value) > POINTER_FIELD_CHARS:
            value = value[:POINTER_FIELD_CHARS] + "... (whole in the S3 object)"
        pointer[name] = value
    pointer["record_s3"] = {
        "bucket": bucket,
        "key": key,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    pointer["note"] = (
        f"the message with the record is {len(body):,} bytes, over the queue's "
        f"{max_bytes:,} (DEAD_LETTER_MAX_BYTES): the S3 object holds it whole"
    )
    return pointer


def _put_object(
    bucket: str, key: str, body: bytes, *, s3: Any, sleep: Sleep, deadline: Deadline
) -> str | None:
    """Put ``body`` at ``key`` (overwriting: the key is the record's identity); None or why not."""
    error = deadline.describe()
    for attempt in range(ATTEMPTS):
        if attempt and not _backoff(attempt, deadline, sleep):
            return f"{error}; {deadline.describe()}"
        response, failure, again = _once(
            partial(_put_object_call, bucket, key, body), s3, "s3", deadline
        )
        if response is not None:
            return None
        error = str(failure)
        if not again:
            break
    return error


def _queue_chunks(bodies: Sequence[bytes], max_bytes: int = QUEUE_BATCH_BYTES) -> list[list[int]]:
    """Positions in order, at most 10 a chunk and ``max_bytes`` of bodies together."""
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for position, body in enumerate(bodies):
        length = len(body)
        if current and (len(current) == QUEUE_CHUNK or size + length > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(position)
        size += length
    if current:
        chunks.append(current)
    return chunks


# --- Helpers ---------------------------------------------------------------------------------


def _batch_write_item(request: dict[str, Any], aws: Any) -> Any:
    return aws.batch_write_item(RequestItems=request)


def _put_records(entries: list[dict[str, Any]], target: dict[str, str], aws: Any) -> Any:
    return aws.put_records(Records=entries, **target)


def _send_message_batch(queue_url: str, entries: list[dict[str, Any]], aws: Any) -> Any:
    return aws.send_message_batch(QueueUrl=queue_url, Entries=entries)


def _put_object_call(bucket: str, key: str, body: bytes, aws: Any) -> Any:
    return aws.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"
