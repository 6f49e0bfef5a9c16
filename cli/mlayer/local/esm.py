"""An event source mapping emulator: Lambda's stream poller, run locally (``mlayer run-local``).

It reads a Kinesis stream or a DynamoDB stream through the endpoint and invokes the function
the way Lambda's event source mapping does:

- one poller per shard, and ``ParallelizationFactor`` concurrent batches per shard, records
  split among them by partition key so that order holds per key (per shard when 1);
- batches of up to ``BatchSize`` records, gathered for up to
  ``MaximumBatchingWindowInSeconds``, never over Lambda's 6 MB invocation payload;
- ``StartingPosition`` TRIM_HORIZON, LATEST or AT_TIMESTAMP;
- ``FilterCriteria``: records that match none of the mapping's patterns are dropped as they
  are read, before batching (they never count towards a batch), and checkpointed at once;
  a batch entirely filtered is never invoked (see :mod:`mlayer.filters`);
- ``ReportBatchItemFailures``: the checkpoint moves to just before the lowest reported
  sequence number and the batch is retried from there; an empty list or null is success; a
  null, empty or unknown ``itemIdentifier`` fails the whole batch (as Lambda does);
- on a function error (exception, timeout, out of memory, crash), the batch is retried as
  is, or split in two when ``BisectBatchOnFunctionError`` is on (splits do not count as
  retries); after ``MaximumRetryAttempts`` retries, or once a record is older than
  ``MaximumRecordAgeInSeconds``, the batch is discarded and its invocation record (Lambda's
  shape, with ``KinesisBatchInfo`` / ``DDBStreamBatchInfo``) goes to the on-failure
  destination: an SQS queue or SNS topic gets the metadata, an S3 bucket also the batch's
  event as ``payload`` (see :class:`AwsDestination`); the shard then moves on. Infinite
  retries (-1, Lambda's default) block the shard, as in Lambda.

Each concurrent batch slot has its own execution environment, as Lambda scales one
environment per shard (times the parallelization factor); behind an alias that routes part
of its traffic to a canary version, one per version (see :mod:`mlayer.local.routing`).

Why the run never needs the mapping to live on the endpoint: moto applies event source
mappings itself when Docker is absent, in ways that break a local run. A DynamoDB stream with
a mapping attached is emptied by moto on every write (it hands the records to a function it
cannot run), and with some moto versions ``kinesis.put_records`` on a stream with a mapping
fails or slows down (moto tries to invoke the function per record; here, moto 5.2.1, it costs
2 ms a record). So settings come from the function's mapping when one exists and from flags
otherwise, and ``mlayer demo`` creates its trigger only after producing the records.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from mlayer import filters
from mlayer.arns import on_failure_kind
from mlayer.errors import ConfigError, MlayerError, NotFoundError

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
_EVENT_OVERHEAD = len(b'{"Records": []}')
POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappingSettings:
    """An event source mapping's processing settings (Lambda's defaults)."""

    batch_size: int = 100
    batching_window_s: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    starting_timestamp: datetime | None = None
    parallelization_factor: int = 1
    bisect_on_error: bool = False
    max_retry_attempts: int = -1
    max_record_age_s: int = -1
    report_batch_item_failures: bool = False
    on_failure: str | None = None  # SQS queue, SNS topic or S3 bucket ARN
    filters: tuple[str, ...] = ()  # FilterCriteria patterns (JSON), ORed; none: every record
    source: str = "defaults"  # where they came from: "defaults" or the mapping's UUID

    def validate(self) -> MappingSettings:
        """Check each value against Lambda's range.

        Raises:
            ConfigError: naming the setting, its range and the flag that sets it.
        """
        checks = [
            (1 <= self.batch_size <= 10_000, "batch size must be 1-10000 (--batch-size)"),
            (
                0 <= self.batching_window_s <= 300,
                "batching window must be 0-300 seconds (--batching-window)",
            ),
            (
                self.starting_position in POSITIONS,
                "starting position must be TRIM_HORIZON, LATEST or AT_TIMESTAMP "
                "(--starting-position)",
            ),
            (
                self.starting_position != "AT_TIMESTAMP" or self.starting_timestamp is not None,
                "AT_TIMESTAMP needs a timestamp (--starting-timestamp)",
            ),
            (
                1 <= self.parallelization_factor <= 10,
                "parallelization factor must be 1-10 (--parallelization-factor)",
            ),
            (
                -1 <= self.max_retry_attempts <= 10_000,
                "maximum retry attempts must be -1 (infinite) to 10000 (--max-retries)",
            ),
            (
                self.max_record_age_s == -1 or 60 <= self.max_record_age_s <= 604_800,
                "maximum record age must be -1 (infinite) or 60-604800 seconds (--max-record-age)",
            ),
            (
                self.on_failure is None or on_failure_kind(self.on_failure) is not None,
                f"on-failure destination {self.on_failure!r} must be an SQS queue, SNS topic "
                "or S3 bucket ARN: arn:aws:sqs:REGION:ACCOUNT:NAME, arn:aws:sns:REGION:"
                "ACCOUNT:NAME or arn:aws:s3:::BUCKET (--on-failure)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        filters.check_patterns(self.filters)
        return self

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> MappingSettings:
        """Settings of an existing mapping (``list_event_source_mappings`` item)."""
        destination = (mapping.get("DestinationConfig") or {}).get("OnFailure") or {}
        timestamp = mapping.get("StartingPositionTimestamp")
        return cls(
            batch_size=int(mapping.get("BatchSize") or 100),
            batching_window_s=float(mapping.get("MaximumBatchingWindowInSeconds") or 0),
            starting_position=str(mapping.get("StartingPosition") or "TRIM_HORIZON"),
            starting_timestamp=timestamp if isinstance(timestamp, datetime) else None,
            parallelization_factor=int(mapping.get("ParallelizationFactor") or 1),
            bisect_on_error=bool(mapping.get("BisectBatchOnFunctionError", False)),
            max_retry_attempts=int(mapping.get("MaximumRetryAttempts", -1)),
            max_record_age_s=int(mapping.get("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (mapping.get("FunctionResponseTypes") or []),
            on_failure=destination.get("Destination") or None,
            filters=tuple(filters.patterns_of(mapping)),
            source=str(mapping.get("UUID") or "mapping"),
        )

    def override(self, **values: Any) -> MappingSettings:
        """A copy with the given (non-None) values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


# -- records and sources -------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRecord:
    """One stream record as the poller holds it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    arrival: float  # epoch seconds (approximate arrival / creation time)
    event: dict[str, Any]  # the record exactly as Lambda puts it in the event
    size: int  # bytes of ``event`` as JSON
    raw: bytes | None = None  # ``event`` as JSON, encoded once when read


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None


class StreamSource(Protocol):
    """Read access to one stream's shards."""

    kind: str  # "kinesis" | "dynamodb"
    arn: str

    def shards(self) -> list[Shard]: ...

    def iterator(self, shard_id: str, position: str, timestamp: datetime | None) -> str: ...

    def iterator_after(self, shard_id: str, sequence_number: str) -> str: ...

    def read(
        self, shard_id: str, iterator: str, limit: int
    ) -> tuple[list[StreamRecord], str | None]: ...


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or time.time())


def _jsonable(value: Any) -> Any:
    """AttributeValue maps from boto3 as Lambda serializes them (binary as base64)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def _sized(
    shard_id: str, seq: str, key: str, arrival: float, event: dict[str, Any]
) -> StreamRecord:
    raw = json.dumps(event, separators=(",", ":")).encode()
    return StreamRecord(shard_id, seq, key, arrival, event, len(raw) + 1, raw)


class KinesisSource:
    """A Kinesis data stream, records shaped as Lambda's ``aws:kinesis`` events."""

    kind = "kinesis"

    def __init__(self, client: Any, arn: str, *, region: str, invoke_identity_arn: str) -> None:
        self.client = client
        self.arn = arn
        self.name = arn.split("/", 1)[1]
        self.region = region
        self.invoke_identity_arn = invoke_identity_arn

    def shards(self) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamName": self.name}
        while True:
            page = self.client.list_shards(**kwargs)
            shards += [Shard(s["ShardId"], s.get("ParentShardId")) for s in page["Shards"]]
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    def iterator(self, shard_id: str, position: str, timestamp: datetime | None) -> str:
        kwargs: dict[str, Any] = {
            "StreamName": self.name,
            "ShardId": shard_id,
            "ShardIteratorType": position,
        }
        if position == "AT_TIMESTAMP":
            kwargs["Timestamp"] = timestamp
        return str(self.client.get_shard_iterator(**kwargs)["ShardIterator"])

    def iterator_after(self, shard_id: str, sequence_number: str) -> str:
        return str(
            self.client.get_shard_iterator(
                StreamName=self.name,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=sequence_number,
            )["ShardIterator"]
        )

    def read(
        self, shard_id: str, iterator: str, limit: int
    ) -> tuple[list[StreamRecord], str | None]:
        page = self.client.get_records(ShardIterator=iterator, Limit=min(limit, 10_000))
        records = []
        for r in page["Records"]:
            seq = r["SequenceNumber"]
            arrival = _epoch(r.get("ApproximateArrivalTimestamp"))
            event = {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": seq,
                    "data": base64.b64encode(r["Data"]).decode(),
                    "approximateArrivalTimestamp": round(arrival, 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": self.invoke_identity_arn,
                "awsRegion": self.region,
                "eventSourceARN": self.arn,
            }
            records.append(_sized(shard_id, seq, r["PartitionKey"], arrival, event))
        return records, page.get("NextShardIterator")


class DynamoDBStreamSource:
    """A DynamoDB stream, records shaped as Lambda's ``aws:dynamodb`` events."""

    kind = "dynamodb"

    def __init__(self, client: Any, arn: str, *, region: str) -> None:
        self.client = client
        self.arn = arn
        self.region = region

    def shards(self) -> list[Shard]:
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn}
        while True:
            description = self.client.describe_stream(**kwargs)["StreamDescription"]
            shards += [Shard(s["ShardId"], s.get("ParentShardId")) for s in description["Shards"]]
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs = {"StreamArn": self.arn, "ExclusiveStartShardId": last}

    def iterator(self, shard_id: str, position: str, timestamp: datetime | None) -> str:
        if position == "AT_TIMESTAMP":
            raise ConfigError(
                "DynamoDB streams support TRIM_HORIZON and LATEST only (--starting-position)"
            )
        return str(
            self.client.get_shard_iterator(
                StreamArn=self.arn, ShardId=shard_id, ShardIteratorType=position
            )["ShardIterator"]
        )

    def iterator_after(self, shard_id: str, sequence_number: str) -> str:
        return str(
            self.client.get_shard_iterator(
                StreamArn=self.arn,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=sequence_number,
            )["ShardIterator"]
        )

    def read(
        self, shard_id: str, iterator: str, limit: int
    ) -> tuple[list[StreamRecord], str | None]:
        # DynamoDB Streams returns at most 1,000 records per call.
        page = self.client.get_records(ShardIterator=iterator, Limit=min(limit, 1000))
        records = []
        for r in page["Records"]:
            body = _jsonable(r.get("dynamodb", {}))
            seq = str(body["SequenceNumber"])
            arrival = _epoch(r.get("dynamodb", {}).get("ApproximateCreationDateTime"))
            if "ApproximateCreationDateTime" in body:
                body["ApproximateCreationDateTime"] = int(arrival)
            event = {
                "eventID": r.get("eventID"),
                "eventName": r.get("eventName"),
                "eventVersion": r.get("eventVersion", "1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": r.get("awsRegion", self.region),
                "dynamodb": body,
                "eventSourceARN": self.arn,
            }
            if "userIdentity" in r:
                event["userIdentity"] = _jsonable(r["userIdentity"])
            key = json.dumps(body.get("Keys", {}), sort_keys=True)
            records.append(_sized(shard_id, seq, key, arrival, event))
        return records, page.get("NextShardIterator")


# -- invoking ------------------------------------------------------------------------------


class InvocationLike(Protocol):
    """What the emulator needs of an invocation's outcome (see sandbox.Invocation)."""

    @property
    def response(self) -> Any: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def report(self) -> Any: ...  # mlayer.reports.Report


class Invoker(Protocol):
    """One execution environment (sandbox.LambdaEnvironment fits); the emulator hands it
    each event as JSON bytes."""

    def invoke(self, event: Any) -> InvocationLike: ...
    def close(self) -> None: ...


class Destination(Protocol):
    """Where the invocation record of a batch given up on goes."""

    # True: the record carries the batch's event as ``payload`` (what Lambda sends to S3).
    keeps_records: bool

    def send(self, message: dict[str, Any]) -> None: ...


class AwsDestination:
    """The on-failure destination: an SQS queue, SNS topic or S3 bucket, by ARN.

    A queue or topic gets the invocation record (metadata only). A bucket gets one object per
    batch, the invocation record plus ``payload``: the batch's event (``{"Records": [...]}``,
    Kinesis data base64 as delivered) as an escaped JSON string, under
    ``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>``. Both the
    payload and the key are as documented in "Retain discarded batch records for a Kinesis
    Data Streams event source in Lambda" (and its DynamoDB twin): docs.aws.amazon.com/lambda/
    latest/dg/kinesis-on-failure-destination.html. Not documented, so chosen here: the time
    in the key is the time the batch was given up on, in UTC; and without a mapping (settings
    from flags) there is no ESM UUID, so ``mapping_uuid`` is a stand-in derived from the
    function and stream (stable across runs, UUID-shaped for tools that parse the key).
    """

    def __init__(
        self, arn: str, clients: Callable[[str], Any], *, mapping_uuid: str | None = None
    ) -> None:
        self.arn = arn
        parts = arn.split(":")
        self.service = on_failure_kind(arn)
        self.keeps_records = self.service == "s3"
        self.mapping_uuid = mapping_uuid or str(uuid.uuid4())
        if self.service == "s3":
            self._s3 = clients("s3")
            self._bucket = parts[5]
            try:
                self._s3.head_bucket(Bucket=self._bucket)
            except Exception as exc:
                raise NotFoundError(
                    f"the on-failure bucket {self._bucket} does not exist on the endpoint; "
                    "create it or pass another --on-failure"
                ) from exc
        elif self.service == "sqs":
            self._sqs = clients("sqs")
            try:
                self._url = self._sqs.get_queue_url(
                    QueueName=parts[5], QueueOwnerAWSAccountId=parts[4]
                )["QueueUrl"]
            except Exception as exc:
                raise NotFoundError(
                    f"the on-failure queue {arn} does not exist on the endpoint; create it or "
                    "pass another --on-failure"
                ) from exc
        elif self.service == "sns":
            self._sns = clients("sns")
        else:
            raise ConfigError(
                f"on-failure destination {arn!r} must be an SQS queue, SNS topic or S3 bucket "
                "ARN (--on-failure)"
            )

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message)
        if self.service == "s3":
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self.object_key(message),
                Body=body.encode(),
                ContentType="application/json",
            )
        elif self.service == "sqs":
            self._sqs.send_message(QueueUrl=self._url, MessageBody=body)
        else:
            self._sns.publish(TopicArn=self.arn, Message=body)

    def object_key(self, message: dict[str, Any], now: datetime | None = None) -> str:
        """Lambda's documented key for the S3 object of one invocation record."""
        info = message.get("KinesisBatchInfo") or message.get("DDBStreamBatchInfo") or {}
        when = (now or datetime.now(UTC)).astimezone(UTC)
        return (
            f"aws/lambda/{self.mapping_uuid}/{info.get('shardId', 'unknown')}/"
            f"{when:%Y/%m/%d}/{when:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
        )


def local_mapping_uuid(function_arn: str, stream_arn: str) -> str:
    """A stand-in ESM UUID for a run without a mapping: the same for a function and stream."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlayer-run-local:{function_arn}:{stream_arn}"))


# -- the run -------------------------------------------------------------------------------


@dataclass
class RunStats:
    """Counters of one run (a snapshot is handed to the progress callback)."""

    records_read: int = 0
    records_done: int = 0  # checkpointed: handled by the function or discarded
    # Records the function returned a prediction for (unique): a KPL aggregate's user
    # records count one each, so this can pass records_done.
    predictions: int = 0
    reported: int = 0  # batchItemFailures entries returned by the function
    # Messages the function sent to its own dead-letter queue (its counts.dead_lettered over
    # every invocation that returned: a retried poison record is dead-lettered again).
    dead_lettered: int = 0
    # KPL aggregated records the function de-aggregated (its counts.aggregated, over every
    # invocation that returned, as dead_lettered).
    aggregated: int = 0
    discarded: int = 0  # records the emulator gave up on (on-failure destination)
    filtered: int = 0  # records no FilterCriteria pattern matched: dropped before batching
    on_failure_messages: int = 0
    invocations: int = 0
    retries: int = 0  # invocations that re-sent records delivered before
    bisections: int = 0
    function_errors: Counter[str] = field(default_factory=Counter)
    # Invocations per function version that ran them (an alias's canary routing splits them).
    batches_by_version: Counter[str] = field(default_factory=Counter)
    cold_starts: int = 0
    restores: int = 0  # SnapStart: environments restored from a snapshot (no init of their own)
    durations_ms: list[float] = field(default_factory=list)
    init_durations_ms: list[float] = field(default_factory=list)
    restore_durations_ms: list[float] = field(default_factory=list)
    busy_s: float = 0.0  # wall time spent inside invoke() calls, all lanes
    function_s: float = 0.0  # the functions' own Duration, all lanes
    in_flight: int = 0
    shards: int = 0
    lanes: int = 0

    def copy(self) -> RunStats:
        clone = replace(self)
        clone.function_errors = Counter(self.function_errors)
        clone.batches_by_version = Counter(self.batches_by_version)
        clone.durations_ms = list(self.durations_ms)
        clone.init_durations_ms = list(self.init_durations_ms)
        clone.restore_durations_ms = list(self.restore_durations_ms)
        return clone


@dataclass
class RunSummary:
    """What ``run-local`` did."""

    stream_arn: str
    kind: str
    settings: MappingSettings
    stats: RunStats
    elapsed_s: float
    active_s: float  # from the start to the last record done (the idle tail excluded)
    stopped: str  # "idle", "max-records", "interrupted", "closed"
    # Per shard: the last sequence number resolved with every record before it (the
    # checkpoint the next run resumes after; None: nothing resolved yet), and where this run
    # started reading ({"position": "AFTER_SEQUENCE_NUMBER", "sequence_number": ...} when it
    # resumed from a checkpoint, else {"position": <starting position>}).
    shard_checkpoints: dict[str, str | None] = field(default_factory=dict)
    resumed_from: dict[str, dict[str, str]] = field(default_factory=dict)
    # Per shard: the lowest sequence number read but not resolved when the run stopped (a
    # batch left unfinished, or records read and not started): the next run starts there.
    unresolved: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Records done per second, from the start to the last record done."""
        return self.stats.records_done / self.active_s if self.active_s > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        values = sorted(self.stats.durations_ms)
        if not values:
            return None
        # Nearest rank: the smallest value with at least q% of the values at or below it.
        index = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
        return values[index]

    def to_dict(self) -> dict[str, Any]:
        stats = asdict(self.stats)
        stats.pop("durations_ms")
        stats.pop("init_durations_ms")
        stats.pop("restore_durations_ms")
        stats["function_errors"] = dict(self.stats.function_errors)
        stats["batches_by_version"] = dict(sorted(self.stats.batches_by_version.items()))
        settings = asdict(self.settings)
        if self.settings.starting_timestamp is not None:
            settings["starting_timestamp"] = self.settings.starting_timestamp.isoformat()
        return {
            "stream_arn": self.stream_arn,
            "kind": self.kind,
            "settings": settings,
            "stats": stats,
            "elapsed_s": round(self.elapsed_s, 3),
            "active_s": round(self.active_s, 3),
            "throughput_records_per_s": round(self.throughput, 1),
            "duration_ms": {
                "p50": self.percentile(50),
                "p99": self.percentile(99),
                "count": len(self.stats.durations_ms),
            },
            "init_duration_ms": self.stats.init_durations_ms,
            "restore_duration_ms": self.stats.restore_durations_ms,
            "stopped": self.stopped,
            "shard_checkpoints": self.shard_checkpoints,
            "resumed_from": self.resumed_from,
            "unresolved": self.unresolved,
            "notes": self.notes,
        }


class RunAborted(Exception):
    """A second Ctrl-C: the environments were killed without finishing their batches.

    Not an :class:`MlayerError`: the user asked for it. ``checkpoints`` are the ones
    written before the abort (still valid: a batch cut short was never checkpointed).
    """

    def __init__(self, checkpoints: dict[str, str | None], killed: int) -> None:
        super().__init__("aborted")
        self.checkpoints = checkpoints
        self.killed = killed


class _ShardProgress:
    """Which records of a shard are resolved, and so the shard's checkpoint.

    With a parallelization factor above 1 the lanes of a shard finish out of order: the
    checkpoint is the last record of the longest resolved run from the start, never past
    a record still in a lane's queue or in a batch being retried.
    """

    def __init__(self, checkpoint: str | None) -> None:
        self.checkpoint = checkpoint
        self.pending: deque[str] = deque()  # read, in stream order, not yet resolved in front
        self.resolved: set[str] = set()

    def read(self, records: Iterable[StreamRecord]) -> None:
        self.pending.extend(r.sequence_number for r in records)

    def resolve(self, records: Iterable[StreamRecord]) -> str | None:
        """Mark records resolved; return the new checkpoint if it moved."""
        self.resolved.update(r.sequence_number for r in records)
        moved = None
        while self.pending and self.pending[0] in self.resolved:
            moved = self.pending.popleft()
            self.resolved.discard(moved)
        if moved is not None:
            self.checkpoint = moved
        return moved

    @property
    def first_unresolved(self) -> str | None:
        return self.pending[0] if self.pending else None


class _Lane:
    """One concurrent batch slot of a shard: its queue, its environment, its checkpoint."""

    def __init__(self, shard_id: str, index: int) -> None:
        self.shard_id = shard_id
        self.index = index
        self.queue: deque[StreamRecord] = deque()
        self.busy = False
        self.invoker: Invoker | None = None


class StreamProcessor:
    """The emulator: pollers, lanes and their environments for one stream and function.

    Args:
        source: the stream.
        settings: the mapping's settings (validated here).
        invoker_factory: makes one execution environment per lane, on the lane's first batch.
        destination: where discarded batches' invocation records go (None: records are
            dropped, as Lambda does without a destination).
        function_arn, function_version: for the on-failure messages (``function_version``
            stands for the executed version of invokers whose results do not carry one).
        poll_interval_s: pause between polls of a shard that returned nothing (Lambda polls
            each shard about once a second; a smaller value keeps local runs snappy).
        retry_delay_s: base of the backoff before re-invoking a failed batch.
        resume: shard id -> the checkpoint to resume after (AFTER_SEQUENCE_NUMBER), in
            preference to the starting position (see :mod:`mlayer.local.checkpoints`).
        on_checkpoint: called with (shard id, sequence number) each time a shard's
            checkpoint moves, in order per shard, before the next batch of that lane starts.
    """

    def __init__(
        self,
        source: StreamSource,
        settings: MappingSettings,
        invoker_factory: Callable[[], Invoker],
        *,
        destination: Destination | None = None,
        function_arn: str = "",
        function_version: str = "$LATEST",
        poll_interval_s: float = 0.2,
        retry_delay_s: float = 0.05,
        resume: dict[str, str] | None = None,
        on_checkpoint: Callable[[str, str], None] | None = None,
    ) -> None:
        self.source = source
        self.settings = settings.validate()
        filters.check_patterns(settings.filters, source.kind)
        self._filter = filters.RecordFilter(settings.filters, source.kind)
        self.invoker_factory = invoker_factory
        self.destination = destination
        self.function_arn = function_arn
        self.function_version = function_version
        self.poll_interval_s = poll_interval_s
        self.retry_delay_s = retry_delay_s
        self.stats = RunStats()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._lanes: dict[str, list[_Lane]] = {}
        self._threads: list[threading.Thread] = []
        self._finished_shards: set[str] = set()
        self._budget: int | None = None
        self._last_activity = time.monotonic()
        self._last_done: float | None = None
        # A read in progress (GetRecords of 10,000 records takes seconds on moto) or a shard
        # not read once yet may still bring records: never idle meanwhile.
        self._reads_in_flight = 0
        self._unread_shards: set[str] = set()
        self._errors: list[BaseException] = []
        self._shards_known: set[str] = set()
        self.resume = dict(resume or {})
        self.on_checkpoint = on_checkpoint
        self._progress: dict[str, _ShardProgress] = {}
        self._resumed_from: dict[str, dict[str, str]] = {}
        self._notes: list[str] = []
        # Held from computing a shard's new checkpoint to writing it, so that writes of
        # two lanes of a shard never land out of order.
        self._checkpoint_lock = threading.Lock()
        self._aborted = False
        self._caller_stop: threading.Event | None = None

    # -- public --------------------------------------------------------------------------

    def run(
        self,
        *,
        until_idle_s: float | None = None,
        max_records: int | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        progress_every_s: float = 0.25,
        stop: threading.Event | None = None,
    ) -> RunSummary:
        """Process the stream until idle for ``until_idle_s``, ``max_records`` records are
        done, every shard is closed and drained, or ``stop`` is set (Ctrl-C: the caller sets
        it, or a KeyboardInterrupt reaches here).

        Stopping finishes the invocations in flight and starts no other: records read but
        not started, and a batch waiting for a retry, are left for the next run (the
        checkpoints stay before them).

        Raises:
            RunAborted: a KeyboardInterrupt arrived while stopping (a second Ctrl-C): the
                environments were killed at once, the run's checkpoints stand.
        """
        self._budget = max_records
        self._caller_stop = stop
        started = time.monotonic()
        stopped = "interrupted"
        try:
            self._refresh_shards()
            next_refresh = time.monotonic() + 5.0
            next_progress = 0.0
            while True:
                if self._errors:
                    raise self._errors[0]
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    stopped = "interrupted"
                    break
                if max_records is not None and self.stats.records_done >= max_records:
                    stopped = "max-records"
                    break
                if self._all_closed_and_drained():
                    stopped = "closed"
                    break
                if until_idle_s is not None and self._idle_for() >= until_idle_s:
                    stopped = "idle"
                    break
                if on_progress is not None and now >= next_progress:
                    on_progress(self.snapshot())
                    next_progress = now + progress_every_s
                if now >= next_refresh:
                    self._refresh_shards()
                    next_refresh = now + 5.0
                time.sleep(0.02)
        except KeyboardInterrupt:
            if stop is not None and stop.is_set():
                # A second Ctrl-C that arrived before this loop saw the first one's stop:
                # abort now, as one arriving during the shutdown does.
                raise RunAborted(self._checkpoints(), self._abort()) from None
            stopped = "interrupted"
        except BaseException:
            self._abort()
            raise
        try:
            self._shutdown()
        except KeyboardInterrupt:
            raise RunAborted(self._checkpoints(), self._abort()) from None
        if self._errors:
            raise self._errors[0]
        if on_progress is not None:
            on_progress(self.snapshot())
        with self._lock:
            unresolved = {
                shard_id: first
                for shard_id, progress in self._progress.items()
                if (first := progress.first_unresolved) is not None
            }
        return RunSummary(
            stream_arn=self.source.arn,
            kind=self.source.kind,
            settings=self.settings,
            stats=self.snapshot(),
            elapsed_s=time.monotonic() - started,
            active_s=max(0.0, (self._last_done or started) - started),
            stopped=stopped,
            shard_checkpoints=self._checkpoints(),
            resumed_from=dict(self._resumed_from),
            unresolved=unresolved,
            notes=list(self._notes),
        )

    def _checkpoints(self) -> dict[str, str | None]:
        with self._lock:
            return {shard_id: p.checkpoint for shard_id, p in self._progress.items()}

    def snapshot(self) -> RunStats:
        with self._lock:
            stats = self.stats.copy()
            stats.in_flight = sum(
                len(lane.queue) + lane.busy for lanes in self._lanes.values() for lane in lanes
            )
            stats.shards = len(self._lanes)
            stats.lanes = sum(len(lanes) for lanes in self._lanes.values())
            return stats

    # -- shards and polling ----------------------------------------------------------------

    def _refresh_shards(self) -> None:
        """Start a poller for each shard not yet read whose parent (if any) is done."""
        for shard in self.source.shards():
            if shard.shard_id in self._shards_known:
                continue
            parent_pending = (
                shard.parent_id is not None
                and shard.parent_id in self._shards_known
                and shard.parent_id not in self._finished_shards
            )
            if parent_pending:
                continue  # order across a reshard: children wait for their parent
            self._shards_known.add(shard.shard_id)
            lanes = [_Lane(shard.shard_id, i) for i in range(self.settings.parallelization_factor)]
            with self._lock:
                self._lanes[shard.shard_id] = lanes
                self._progress[shard.shard_id] = _ShardProgress(self.resume.get(shard.shard_id))
                self._unread_shards.add(shard.shard_id)
            for lane in lanes:
                self._spawn(self._lane_loop, lane, name=f"lane-{shard.shard_id}-{lane.index}")
            self._spawn(self._poll_loop, shard.shard_id, name=f"poll-{shard.shard_id}")

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except BaseException as exc:  # surfaced by run() in the main thread
                self._errors.append(exc)
                self._stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _poll_loop(self, shard_id: str) -> None:
        try:
            self._poll(shard_id)
        finally:
            with self._lock:
                self._unread_shards.discard(shard_id)

    def _poll(self, shard_id: str) -> None:
        settings = self.settings
        iterator: str | None = self._first_iterator(shard_id)
        last_seq = self.resume.get(shard_id)
        lanes = self._lanes[shard_id]
        progress = self._progress[shard_id]
        buffer_limit = max(10_000, 4 * settings.batch_size * len(lanes))
        while iterator and not self._stop.is_set():
            with self._lock:
                queued = sum(len(lane.queue) for lane in lanes)
                budget_left = (
                    None if self._budget is None else self._budget - self.stats.records_read
                )
            if queued >= buffer_limit or (budget_left is not None and budget_left <= 0):
                self._stop.wait(self.poll_interval_s)  # back-pressure: the lanes are behind
                continue
            with self._lock:
                self._reads_in_flight += 1
            try:
                records, next_iterator = self.source.read(shard_id, iterator, 10_000)
            except Exception as exc:
                if _is_expired(exc) and last_seq is not None:
                    iterator = self.source.iterator_after(shard_id, last_seq)
                    continue
                if _is_throttled(exc):
                    self._stop.wait(1.0)
                    continue
                raise
            finally:
                with self._lock:
                    self._reads_in_flight -= 1
                    self._unread_shards.discard(shard_id)
            if budget_left is not None:
                records = records[:budget_left]
            if records:
                last_seq = records[-1].sequence_number
                dropped = [r for r in records if not self._filter.matches(r.event)]
                gone = {id(r) for r in dropped}
                with self._lock:
                    progress.read(records)
                    for record in records:
                        if id(record) in gone:
                            continue
                        lane = lanes[_lane_of(record.partition_key, len(lanes))]
                        lane.queue.append(record)
                    self.stats.records_read += len(records)
                    self._last_activity = time.monotonic()
                    self._lock.notify_all()
                if dropped:
                    self._drop_filtered(shard_id, dropped)
            iterator = next_iterator
            if not records:
                self._stop.wait(self.poll_interval_s)
        if not iterator:  # the shard is closed (resharded) and fully read
            with self._lock:
                self._finished_shards.add(shard_id)

    def _drop_filtered(self, shard_id: str, dropped: list[StreamRecord]) -> None:
        """Records no pattern matched: done without an invocation, as Lambda's iterator moves
        past them (the checkpoint still waits for the records read before them)."""
        with self._lock:
            self.stats.filtered += len(dropped)
            self.stats.records_done += len(dropped)
            self._last_activity = self._last_done = time.monotonic()
        self._resolve(shard_id, dropped)

    def _first_iterator(self, shard_id: str) -> str:
        """After the shard's checkpoint when there is one, else at the starting position."""
        settings = self.settings
        checkpoint = self.resume.get(shard_id)
        if checkpoint is not None:
            try:
                iterator = self.source.iterator_after(shard_id, checkpoint)
            except Exception as exc:
                if _error_code(exc) != "TrimmedDataAccessException":
                    raise MlayerError(
                        f"cannot resume {shard_id} of {self.source.arn} after its checkpoint "
                        f"{checkpoint}: {_error_code(exc) or type(exc).__name__}: {exc}; pass "
                        "--reset-checkpoints to start from the starting position"
                    ) from exc
                with self._lock:
                    self._notes.append(
                        f"{shard_id}: the checkpoint {checkpoint} is past the trim horizon "
                        "(the records after it expired before this run): resumed from "
                        "TRIM_HORIZON"
                    )
                    self._resumed_from[shard_id] = {
                        "position": "TRIM_HORIZON",
                        "expired_checkpoint": checkpoint,
                    }
                return self.source.iterator(shard_id, "TRIM_HORIZON", None)
            with self._lock:
                self._resumed_from[shard_id] = {
                    "position": "AFTER_SEQUENCE_NUMBER",
                    "sequence_number": checkpoint,
                }
            return iterator
        with self._lock:
            self._resumed_from[shard_id] = {"position": settings.starting_position}
        return self.source.iterator(
            shard_id, settings.starting_position, settings.starting_timestamp
        )

    # -- batches ---------------------------------------------------------------------------

    def _next_batch(self, lane: _Lane) -> list[StreamRecord] | None:
        """Up to BatchSize records within the payload limit, waiting for the batching
        window once the first record is there; None when stopping."""
        settings = self.settings
        with self._lock:
            # Stopping starts no batch: records already read are read again by the next run.
            while not lane.queue or self._stopping():
                if self._stopping():
                    return None
                self._lock.wait(0.1)
            if settings.batching_window_s > 0:
                window_end = time.monotonic() + settings.batching_window_s
                while (
                    len(lane.queue) < settings.batch_size
                    and _payload(lane.queue, settings.batch_size) < MAX_PAYLOAD_BYTES
                    and not self._stopping()
                ):
                    left = window_end - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(min(left, 0.1))
                if self._stopping():
                    return None
            batch: list[StreamRecord] = []
            size = _EVENT_OVERHEAD
            while lane.queue and len(batch) < settings.batch_size:
                record = lane.queue[0]
                if batch and size + record.size > MAX_PAYLOAD_BYTES:
                    break
                batch.append(lane.queue.popleft())
                size += record.size
            lane.busy = True
            return batch

    def _lane_loop(self, lane: _Lane) -> None:
        try:
            while True:
                batch = self._next_batch(lane)
                if batch is None:
                    return
                try:
                    self._process(lane, batch)
                finally:
                    with self._lock:
                        lane.busy = False
                        self._last_activity = time.monotonic()
                        self._lock.notify_all()
        finally:
            if lane.invoker is not None:
                lane.invoker.close()

    def _process(self, lane: _Lane, batch: list[StreamRecord]) -> None:
        """Deliver one batch with Lambda's retry, bisect and checkpoint rules."""
        settings = self.settings
        # Each entry: (records, retries used, delivered before?)
        work: deque[tuple[list[StreamRecord], int, bool]] = deque([(batch, 0, False)])
        while work:
            chunk, attempts, seen = work[0]
            chunk = self._drop_expired(lane, chunk, attempts)
            if not chunk:
                work.popleft()
                continue
            if seen and self._stopping():
                return  # stopping: an unfinished retry is left for the next run, like a crash
            result = self._invoke(lane, chunk, retry=seen)
            failed_at, whole = self._failures(result, chunk)
            if not whole and failed_at is None:  # success
                self._checkpoint(lane, chunk, result, len(chunk))
                work.popleft()
                continue
            if not whole and failed_at is not None:
                # Partial failure: checkpoint before the lowest failed record, retry from it.
                self._checkpoint(lane, chunk, result, failed_at)
                chunk = chunk[failed_at:]
            elif settings.bisect_on_error and len(chunk) > 1:
                half = len(chunk) // 2
                work.popleft()
                work.appendleft((chunk[half:], attempts, True))
                work.appendleft((chunk[:half], attempts, True))
                with self._lock:
                    self.stats.bisections += 1
                continue
            attempts += 1
            if 0 <= settings.max_retry_attempts < attempts:
                self._discard(lane, chunk, "RetryAttemptsExhausted", attempts, result)
                work.popleft()
                continue
            work[0] = (chunk, attempts, True)
            # Backoff grows with the attempts (capped), so a poison batch does not spin.
            self._stop.wait(min(self.retry_delay_s * attempts, 1.0))

    def _drop_expired(
        self, lane: _Lane, chunk: list[StreamRecord], attempts: int
    ) -> list[StreamRecord]:
        age = self.settings.max_record_age_s
        if age < 0:
            return chunk
        now = time.time()
        expired = [r for r in chunk if now - r.arrival > age]
        if not expired:
            return chunk
        keep = [r for r in chunk if now - r.arrival <= age]
        self._discard(lane, expired, "RecordAgeExceeded", attempts, None)
        return keep

    def _invoke(self, lane: _Lane, chunk: list[StreamRecord], *, retry: bool) -> InvocationLike:
        with self._lock:
            if self._aborted:  # no new environment once the others are being killed
                raise RunAborted({}, 0)
            if lane.invoker is None:
                lane.invoker = self.invoker_factory()
        event = _event_json(chunk)
        began = time.perf_counter()
        result = lane.invoker.invoke(event)
        wall = time.perf_counter() - began
        report = result.report
        with self._lock:
            stats = self.stats
            stats.invocations += 1
            stats.batches_by_version[_executed_version(result, self.function_version)] += 1
            stats.retries += int(retry)
            stats.busy_s += wall
            if report is not None:
                stats.durations_ms.append(float(report.duration_ms))
                stats.function_s += float(report.duration_ms) / 1000.0
                if report.init_duration_ms is not None:
                    stats.cold_starts += 1
                    stats.init_durations_ms.append(float(report.init_duration_ms))
                if report.restore_duration_ms is not None:
                    stats.restores += 1
                    stats.restore_durations_ms.append(float(report.restore_duration_ms))
            if result.error is not None:
                stats.function_errors[str(result.error.get("errorType") or "Unhandled")] += 1
            elif isinstance(result.response, dict):
                counts = result.response.get("counts")
                if isinstance(counts, dict):
                    stats.dead_lettered += int(counts.get("dead_lettered") or 0)
                    stats.aggregated += int(counts.get("aggregated") or 0)
            self._last_activity = time.monotonic()
        return result

    def _failures(
        self, result: InvocationLike, chunk: list[StreamRecord]
    ) -> tuple[int | None, bool]:
        """(index of the lowest failed record, whole batch failed)."""
        if result.error is not None:
            return None, True
        response = result.response
        if not self.settings.report_batch_item_failures or not isinstance(response, dict):
            return None, False
        items = response.get("batchItemFailures")
        if items is None or items == []:
            return None, False
        if not isinstance(items, list):
            return None, True
        index = {r.sequence_number: i for i, r in enumerate(chunk)}
        with self._lock:
            self.stats.reported += len(items)
        positions = []
        for item in items:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not identifier or str(identifier) not in index:
                return None, True  # Lambda: a null, empty or unknown identifier fails it all
            positions.append(index[str(identifier)])
        return min(positions), False

    def _checkpoint(
        self, lane: _Lane, chunk: list[StreamRecord], result: InvocationLike, upto: int
    ) -> None:
        """Records chunk[:upto] are done: count what the function did with them."""
        if upto <= 0:
            return
        done = chunk[:upto]
        sequences = {r.sequence_number for r in done}
        response = result.response if isinstance(result.response, dict) else {}
        predictions = response.get("predictions")
        predicted = 0
        if isinstance(predictions, list):
            with_seq = [p for p in predictions if isinstance(p, dict) and p.get("sequence_number")]
            if with_seq:
                predicted = sum(1 for p in with_seq if str(p["sequence_number"]) in sequences)
            elif upto == len(chunk):
                predicted = len(predictions)
        with self._lock:
            self.stats.records_done += len(done)
            self.stats.predictions += predicted
            self._last_activity = self._last_done = time.monotonic()
        self._resolve(lane.shard_id, done)

    def _resolve(self, shard_id: str, records: list[StreamRecord]) -> None:
        """Records are done (handled or discarded): move the shard's checkpoint and save it."""
        with self._checkpoint_lock:
            with self._lock:
                moved = self._progress[shard_id].resolve(records)
            if moved is not None and self.on_checkpoint is not None:
                self.on_checkpoint(shard_id, moved)

    def _discard(
        self,
        lane: _Lane | None,
        chunk: list[StreamRecord],
        condition: str,
        invokes: int,
        result: InvocationLike | None,
    ) -> None:
        """Give up on a batch: its metadata to the on-failure destination, then move on."""
        if self.destination is not None:
            self.destination.send(self._failure_message(chunk, condition, invokes, result))
        with self._lock:
            self.stats.discarded += len(chunk)
            self.stats.records_done += len(chunk)
            self.stats.on_failure_messages += int(self.destination is not None)
            self._last_activity = self._last_done = time.monotonic()
        self._resolve(chunk[0].shard_id, chunk)

    def _failure_message(
        self,
        chunk: list[StreamRecord],
        condition: str,
        invokes: int,
        result: InvocationLike | None,
    ) -> dict[str, Any]:
        """Lambda's on-failure invocation record for a stream batch: its metadata, and for a
        destination that keeps records (S3) the batch's event as ``payload``, an escaped JSON
        string, as Lambda documents it."""
        kinesis = self.source.kind == "kinesis"
        info_key = "KinesisBatchInfo" if kinesis else "DDBStreamBatchInfo"
        # Kinesis arrival times carry milliseconds; DynamoDB's creation times are whole
        # seconds, written without a fraction ("2019-11-14T00:13:19Z" in Lambda's example).
        arrival = _iso if kinesis else _iso_seconds
        response: dict[str, Any] = {
            "statusCode": 200,
            "executedVersion": _executed_version(result, self.function_version),
        }
        if result is not None and result.error is not None:
            response["functionError"] = "Unhandled"
        message: dict[str, Any] = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            "responseContext": response,
            "version": "1.0",
            "timestamp": _iso(time.time()),
            info_key: {
                "shardId": chunk[0].shard_id,
                "startSequenceNumber": chunk[0].sequence_number,
                "endSequenceNumber": chunk[-1].sequence_number,
                "approximateArrivalOfFirstRecord": arrival(chunk[0].arrival),
                "approximateArrivalOfLastRecord": arrival(chunk[-1].arrival),
                "batchSize": len(chunk),
                "streamArn": self.source.arn,
            },
        }
        if self.destination is not None and self.destination.keeps_records:
            message["payload"] = _event_json(chunk).decode()
        return message

    # -- stopping --------------------------------------------------------------------------

    def _idle_for(self) -> float:
        with self._lock:
            busy = any(lane.busy or lane.queue for lanes in self._lanes.values() for lane in lanes)
            if busy or self._reads_in_flight or self._unread_shards:
                return 0.0
            return time.monotonic() - self._last_activity

    def _all_closed_and_drained(self) -> bool:
        with self._lock:
            if not self._lanes or set(self._lanes) - self._finished_shards:
                return False
            return not any(
                lane.busy or lane.queue for lanes in self._lanes.values() for lane in lanes
            )

    def _stopping(self) -> bool:
        """Stopping, as seen by a lane about to start a batch or a retry: the caller's event
        counts at once (the main loop only notices it between its polls)."""
        caller = self._caller_stop
        return self._stop.is_set() or (caller is not None and caller.is_set())

    def _shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            # In short waits: a signal sent to the process may be taken by any thread, and
            # the main thread runs Python's handler (a second Ctrl-C) only once it wakes up.
            while thread.is_alive():
                thread.join(0.1)
        self._threads.clear()

    def _abort(self) -> int:
        """Kill every environment now (their batches unfinished, so never checkpointed);
        return how many were running. The lane threads end on their own."""
        self._stop.set()
        with self._lock:
            self._aborted = True
            self._lock.notify_all()
            invokers = [
                lane.invoker
                for lanes in self._lanes.values()
                for lane in lanes
                if lane.invoker is not None
            ]
        for invoker in invokers:
            with contextlib.suppress(Exception):
                invoker.close()
        return len(invokers)


def _event_json(chunk: list[StreamRecord]) -> bytes:
    """``{"Records": [...]}`` as JSON, joined from each record's JSON encoded when read."""
    parts = [
        r.raw if r.raw is not None else json.dumps(r.event, separators=(",", ":")).encode()
        for r in chunk
    ]
    return b'{"Records":[' + b",".join(parts) + b"]}"


def _executed_version(result: InvocationLike | None, default: str) -> str:
    """The version that ran an invocation; invokers that do not say ran ``default``."""
    return str(getattr(result, "executed_version", None) or default)


def _lane_of(partition_key: str, lanes: int) -> int:
    if lanes == 1:
        return 0
    digest = hashlib.md5(partition_key.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % lanes


def _payload(queue: Iterable[StreamRecord], limit: int) -> int:
    total = _EVENT_OVERHEAD
    for i, record in enumerate(queue):
        if i >= limit:
            break
        total += record.size
    return total


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _iso_seconds(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_expired(exc: BaseException) -> bool:
    return _error_code(exc) in ("ExpiredIteratorException", "TrimmedDataAccessException")


def _is_throttled(exc: BaseException) -> bool:
    return _error_code(exc) in ("ProvisionedThroughputExceededException", "LimitExceededException")


def describe_source(arn: str) -> str:
    """``kinesis`` or ``dynamodb`` for a stream ARN.

    Raises:
        MlayerError: the ARN is neither a Kinesis stream nor a DynamoDB stream.
    """
    if arn.startswith("arn:aws:kinesis:") and ":stream/" in arn:
        return "kinesis"
    if arn.startswith("arn:aws:dynamodb:") and "/stream/" in arn:
        return "dynamodb"
    raise MlayerError(
        f"{arn} is not a Kinesis stream or DynamoDB stream ARN; pass a stream name, a "
        "Kinesis stream ARN or a DynamoDB table's LatestStreamArn"
    )
