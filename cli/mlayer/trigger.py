"""trigger: the function's stream event source mapping, created or updated with safe settings.

Before wiring a stream, it checks what Lambda would not: a DynamoDB table whose stream has
no new image (KEYS_ONLY, OLD_IMAGE) or no stream at all is refused, naming the fix, since
the function would skip every record. Filters (``FilterCriteria``) are checked with
:mod:`mlayer.filters`, the module run-local matches records with. Functions take boto3
clients and return dataclasses; nothing prints.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from mlayer import filters
from mlayer.arns import (
    function_name,
    on_failure_kind,
    parse_function,
    parse_stream_arn,
    table_name,
)
from mlayer.errors import ConfigError, NotFoundError
from mlayer.lambda_api import (
    DEFAULT_PACE,
    Pace,
    call_with_backoff,
    get_alias,
    get_configuration,
)

STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


@dataclass(frozen=True)
class TriggerSettings:
    """Event source mapping settings; None leaves a setting as it is on update.

    Defaults, and why:
    - batch_size 100: Lambda's default; a batch of 100 predicts in about a millisecond, so
      larger batches mostly add latency per record.
    - report_batch_item_failures: the function reports failed records by sequence number,
      so Lambda retries from the first failure instead of the whole batch.
    - bisect on function error: a whole-batch error (a record the function cannot even
      decode, a timeout) is split in two until the culprit is isolated.
    - maximum_retry_attempts 10: enough for bisecting a batch of 100 down to one record
      (7 halvings) plus a few transient failures, while a poison batch stops blocking its
      shard after that instead of Lambda's default of retrying until the record expires.
    - maximum_record_age_s 86,400: the default retention of Kinesis and DynamoDB Streams,
      so an outage shorter than a day never drops records for age, and a stream with longer
      retention is not ground through week-old data.
    - starting position TRIM_HORIZON (on create; it cannot change later): nothing already
      in the stream is skipped, and the function's outputs are keyed by record identity,
      so reading older records again is harmless. LATEST would silently skip what producers
      wrote before the mapping existed.
    - filters (``FilterCriteria``): for a DynamoDB stream, on create, ``{"eventName":
      ["INSERT", "MODIFY"]}``: a REMOVE has no new image to score (the function would skip
      it), so Lambda drops it before invoking and no invocation is paid for it. None: that
      default on create, unchanged on update; a tuple replaces the mapping's filters (empty:
      none). Kinesis mappings get none by default: a filter on ``data`` drops every record
      whose data is not JSON, which plain-text records are.
    """

    batch_size: int | None = 100
    starting_position: str | None = None
    starting_position_timestamp: float | None = None
    bisect_on_error: bool | None = True
    maximum_retry_attempts: int | None = 10
    maximum_record_age_s: int | None = 86_400
    batching_window_s: int | None = None
    parallelization_factor: int | None = None
    on_failure: str | None = None
    report_batch_item_failures: bool = True
    enabled: bool | None = None
    filters: tuple[str, ...] | None = None


DEFAULT_TRIGGER = TriggerSettings()


def describe_on_failure(arn: str | None) -> str:
    """What the trigger's on-failure destination keeps of a batch Lambda gives up on."""
    kind = on_failure_kind(arn) if arn else None
    if kind == "s3":
        return (
            f"{arn} (S3: the whole batch given up on, records and metadata, one object each; "
            "the execution role needs s3:PutObject and s3:ListBucket)"
        )
    if kind in ("sqs", "sns"):
        return (
            f"{arn} ({kind.upper()}: only the metadata of a batch given up on (shard, sequence "
            "numbers); its records stay in the stream until they expire. "
            "--on-failure arn:aws:s3:::BUCKET keeps them whole)"
        )
    if arn:
        return arn
    return (
        "none (a batch given up on after the retries or past the record age is discarded; "
        "--on-failure arn:aws:s3:::BUCKET keeps it whole)"
    )


def describe_filters(mapping: dict[str, Any], kind: str, default: bool = False) -> str:
    """The mapping's filters and what they mean for billing and records."""
    patterns = filters.patterns_of(mapping)
    if not patterns:
        return "none (Lambda invokes the function for every record)"
    shown = " OR ".join(patterns)
    if default:
        return (
            f"{shown} (mlayer's default for DynamoDB: a REMOVE has nothing to score, so Lambda "
            "drops it before invoking and it is not billed; --filter PATTERN replaces it, "
            "--no-filter removes it)"
        )
    dropped = (
        "; a record whose data is not JSON matches no pattern on data and is dropped"
        if kind == "kinesis"
        else ""
    )
    return f"{shown} (records matching none are dropped before invoking, unbilled{dropped})"


@dataclass
class Trigger:
    """What trigger did, and the mapping as Lambda reports it."""

    stream_arn: str
    stream_kind: str  # "kinesis" | "dynamodb"
    target: str
    created: bool
    mapping: dict[str, Any]
    moved_from: str | None = None
    default_filter: bool = False  # the mapping got the DynamoDB default filter just now
    notes: list[str] = field(default_factory=list)


def stream_kind(arn: str) -> str | None:
    """ "kinesis" or "dynamodb" for a stream ARN; None for anything else."""
    try:
        return parse_stream_arn(arn).kind
    except ConfigError:
        return None


def resolve_stream(kinesis: Any, dynamodb: Any, stream: str) -> tuple[str, str]:
    """(stream ARN, kind) for a stream ARN, a DynamoDB table (name or ARN) or a Kinesis name.

    Raises:
        NotFoundError: neither a Kinesis stream nor a DynamoDB table of that name exists.
        ConfigError: the table has no stream, or the name is both.
    """
    kind = stream_kind(stream)
    if kind:
        return stream, kind
    if stream.startswith("arn:"):
        try:
            table = table_name(stream)
        except ConfigError:
            raise ConfigError(
                f"{stream} is not a Kinesis stream or DynamoDB stream ARN "
                "(arn:aws:kinesis:...:stream/NAME or arn:aws:dynamodb:...:table/T/stream/LABEL)"
            ) from None
        return _table_stream(dynamodb, table), "dynamodb"
    kinesis_arn = None
    try:
        summary = kinesis.describe_stream_summary(StreamName=stream)
        kinesis_arn = summary["StreamDescriptionSummary"]["StreamARN"]
    except Exception as exc:
        if "ResourceNotFoundException" not in str(exc):
            raise
    table_arn = None
    with contextlib.suppress(NotFoundError):
        table_arn = _table_stream(dynamodb, stream)
    if kinesis_arn and table_arn:
        raise ConfigError(
            f"{stream} names both a Kinesis stream and a DynamoDB table; pass the stream ARN"
        )
    if kinesis_arn:
        return kinesis_arn, "kinesis"
    if table_arn:
        return table_arn, "dynamodb"
    raise NotFoundError(
        f"no Kinesis stream or DynamoDB table named {stream} in {kinesis.meta.region_name}; "
        "check --region, or pass the stream ARN"
    )


def _table_stream(dynamodb: Any, table: str) -> str:
    try:
        description = dynamodb.describe_table(TableName=table)["Table"]
    except Exception as exc:
        if "ResourceNotFoundException" in str(exc):
            raise NotFoundError(f"no DynamoDB table named {table}") from exc
        raise
    arn = description.get("LatestStreamArn")
    # A disabled stream keeps its LatestStreamArn (readable for 24 hours) and loses its
    # StreamSpecification (or has StreamEnabled false): no stream to wire.
    enabled = (description.get("StreamSpecification") or {}).get("StreamEnabled")
    if not arn or not enabled:
        raise ConfigError(
            f"DynamoDB table {table} has no stream; enable one: aws dynamodb update-table "
            f"--table-name {table} --stream-specification "
            f"StreamEnabled=true,StreamViewType={NEW_IMAGES}"
        )
    return str(arn)


NEW_IMAGES = "NEW_AND_OLD_IMAGES"
SCORABLE_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")


def check_new_images(dynamodb: Any, streams: Any | None, stream_arn: str) -> str:
    """The view type of a DynamoDB stream that carries new images, else the refusal.

    Read with DynamoDB Streams' DescribeStream (``streams``), or from the table when no
    such client is given and the stream is the table's latest.

    Raises:
        ConfigError: the stream is disabled, or its view type is KEYS_ONLY or OLD_IMAGE
            (the function would skip every record), naming the fix.
        NotFoundError: no such stream.
    """
    table = table_name(stream_arn)
    if streams is not None:
        try:
            description = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]
        except Exception as exc:
            if "ResourceNotFoundException" in str(exc):
                raise NotFoundError(f"no DynamoDB stream {stream_arn}") from exc
            raise
        view = description.get("StreamViewType")
        status = description.get("StreamStatus")
        table = description.get("TableName") or table
    else:
        latest = dynamodb.describe_table(TableName=table)["Table"]
        spec = latest.get("StreamSpecification") or {}
        view = spec.get("StreamViewType") if latest.get("LatestStreamArn") == stream_arn else None
        status = "ENABLED" if spec.get("StreamEnabled") else "DISABLED"
    if status in ("DISABLING", "DISABLED"):
        raise ConfigError(
            f"DynamoDB stream {stream_arn} is {status.lower()}: it receives no new records. "
            f"Trigger the table's current stream (--stream {table}), or enable one: aws dynamodb "
            f"update-table --table-name {table} --stream-specification "
            f"StreamEnabled=true,StreamViewType={NEW_IMAGES}"
        )
    if view not in SCORABLE_VIEWS:
        raise ConfigError(
            f"DynamoDB table {table}'s stream is {view or 'of an unknown view type'}: its "
            "records carry no new image, so the function would skip every one. A stream's "
            "view type cannot be changed in place: disable the stream, then enable one with "
            "new images (a new stream with a new ARN; the old one stays readable for 24 "
            f"hours): aws dynamodb update-table --table-name {table} --stream-specification "
            "StreamEnabled=false, then (the table ACTIVE again) aws dynamodb update-table "
            f"--table-name {table} --stream-specification "
            f"StreamEnabled=true,StreamViewType={NEW_IMAGES}, and run mlayer trigger again"
        )
    return str(view)


def _mapping_function(mapping: dict[str, Any]) -> tuple[str, str | None]:
    function = parse_function(str(mapping.get("FunctionArn", "")))
    return function.name, function.qualifier


def trigger(
    lam: Any,
    kinesis: Any,
    dynamodb: Any,
    *,
    function: str,
    stream: str,
    alias: str | None = None,
    settings: TriggerSettings = DEFAULT_TRIGGER,
    pace: Pace = DEFAULT_PACE,
    streams: Any | None = None,
) -> Trigger:
    """Create or update the event source mapping from ``stream`` to the alias (or function).

    An existing mapping of this stream to the function (any qualifier) is updated, and moved
    to the alias when one is given. A DynamoDB stream must carry new images (read with
    ``streams``, a DynamoDB Streams client; see :func:`check_new_images`). Filters: see
    :class:`TriggerSettings`.

    Raises:
        NotFoundError: no such function, alias or stream.
        ConfigError: a starting position different from the existing mapping's; a DynamoDB
            table without a stream, or whose stream has no new images.
        FilterError: a filter pattern Lambda would refuse or the stream cannot match.
    """
    name = function_name(function)
    get_configuration(lam, name)
    if alias and get_alias(lam, name, alias) is None:
        raise NotFoundError(
            f"function {name} has no alias {alias}; create it with mlayer publish-model "
            f"--alias {alias} (or mlayer deploy-function --alias {alias}), or drop --alias to "
            "trigger $LATEST"
        )
    target = f"{name}:{alias}" if alias else name
    stream_arn, kind = resolve_stream(kinesis, dynamodb, stream)
    if kind == "dynamodb":
        check_new_images(dynamodb, streams, stream_arn)
    patterns = None if settings.filters is None else filters.check_patterns(settings.filters, kind)
    notes: list[str] = []
    if patterns is not None and len(patterns) > filters.DEFAULT_QUOTA:
        notes.append(
            f"{len(patterns)} filters: over Lambda's default quota of {filters.DEFAULT_QUOTA} "
            "per mapping; Lambda refuses them unless the account's quota was raised"
        )

    mappings: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_event_source_mappings").paginate(EventSourceArn=stream_arn):
        mappings.extend(page.get("EventSourceMappings", []))
    ours = [m for m in mappings if _mapping_function(m)[0] == name]
    ours.sort(key=lambda m: _mapping_function(m)[1] != alias)

    common: dict[str, Any] = {}
    if settings.batch_size is not None:
        common["BatchSize"] = settings.batch_size
    if settings.bisect_on_error is not None:
        common["BisectBatchOnFunctionError"] = settings.bisect_on_error
    if settings.maximum_retry_attempts is not None:
        common["MaximumRetryAttempts"] = settings.maximum_retry_attempts
    if settings.maximum_record_age_s is not None:
        common["MaximumRecordAgeInSeconds"] = settings.maximum_record_age_s
    if settings.batching_window_s is not None:
        common["MaximumBatchingWindowInSeconds"] = settings.batching_window_s
    if settings.parallelization_factor is not None:
        common["ParallelizationFactor"] = settings.parallelization_factor
    if settings.on_failure:
        common["DestinationConfig"] = {"OnFailure": {"Destination": settings.on_failure}}
    if settings.enabled is not None:
        common["Enabled"] = settings.enabled
    if patterns is not None:
        common["FilterCriteria"] = filters.criteria(patterns)
    common["FunctionResponseTypes"] = (
        ["ReportBatchItemFailures"] if settings.report_batch_item_failures else []
    )

    if ours:
        existing = ours[0]
        position = existing.get("StartingPosition")
        if settings.starting_position and position and settings.starting_position != position:
            raise ConfigError(
                f"the mapping {existing['UUID']} from this stream starts at {position}; Lambda "
                "cannot change a mapping's starting position: delete it (aws lambda "
                f"delete-event-source-mapping --uuid {existing['UUID']}) and run trigger again"
            )
        moved_from = None
        fn, qualifier = _mapping_function(existing)
        if qualifier != alias:
            moved_from = f"{fn}:{qualifier}" if qualifier else fn
        _wait_mapping(lam, existing["UUID"], pace)
        mapping = call_with_backoff(
            lambda: lam.update_event_source_mapping(
                UUID=existing["UUID"], FunctionName=target, **common
            ),
            lam,
            name,
            pace,
        )
        mapping = _wait_mapping(lam, existing["UUID"], pace) or mapping
        return Trigger(stream_arn, kind, target, False, _clean(mapping), moved_from, notes=notes)

    position = settings.starting_position or "TRIM_HORIZON"
    create: dict[str, Any] = {
        "EventSourceArn": stream_arn,
        "FunctionName": target,
        "StartingPosition": position,
        **common,
    }
    if position == "AT_TIMESTAMP":
        if settings.starting_position_timestamp is None:
            raise ConfigError("--starting-position AT_TIMESTAMP needs --starting-timestamp")
        create["StartingPositionTimestamp"] = settings.starting_position_timestamp
    default_filter = patterns is None and kind == "dynamodb"
    if default_filter:
        create["FilterCriteria"] = filters.criteria(
            filters.check_patterns([filters.DEFAULT_DYNAMODB_FILTER])
        )
    mapping = lam.create_event_source_mapping(**create)
    mapping = _wait_mapping(lam, mapping["UUID"], pace) or mapping
    return Trigger(
        stream_arn, kind, target, True, _clean(mapping), default_filter=default_filter, notes=notes
    )


def _wait_mapping(lam: Any, uuid: str, pace: Pace) -> dict[str, Any] | None:
    """Wait while the mapping is Creating / Updating / Enabling (updates fail meanwhile)."""
    mapping: dict[str, Any] | None = None
    for _ in range(pace.waiter_attempts):
        mapping = lam.get_event_source_mapping(UUID=uuid)
        if mapping.get("State") not in ("Creating", "Updating", "Enabling", "Disabling"):
            return mapping
        pace.sleep(pace.waiter_delay)
    return mapping


def _clean(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != "ResponseMetadata"}


@dataclass(frozen=True)
class TriggerInfo:
    """One event source mapping of the function, for ``mlayer status``."""

    uuid: str
    stream_arn: str
    kind: str | None  # "kinesis" | "dynamodb" | None (another kind of source)
    target: str  # the function, or function:qualifier
    state: str | None
    batch_size: int | None
    starting_position: str | None
    filters: list[str]
    on_failure: str | None

    def describe(self) -> str:
        """The trigger in one line: where from, to what, how it filters and what it keeps."""
        filtered = " OR ".join(self.filters) if self.filters else "none"
        return (
            f"{self.kind or 'source'} {self.stream_arn} -> {self.target}: {self.state}, batch "
            f"{self.batch_size}, from {self.starting_position}; filters {filtered}; "
            f"on failure {describe_on_failure(self.on_failure)}"
        )


def triggers_of(lam: Any, function: str) -> list[TriggerInfo]:
    """The function's event source mappings (any qualifier), oldest first as Lambda lists them."""
    name = function_name(function)
    found = []
    for page in lam.get_paginator("list_event_source_mappings").paginate():
        for mapping in page.get("EventSourceMappings", []):
            fn, qualifier = _mapping_function(mapping)
            if fn != name:
                continue
            arn = str(mapping.get("EventSourceArn", ""))
            destination = (mapping.get("DestinationConfig") or {}).get("OnFailure") or {}
            found.append(
                TriggerInfo(
                    uuid=str(mapping.get("UUID")),
                    stream_arn=arn,
                    kind=stream_kind(arn),
                    target=f"{fn}:{qualifier}" if qualifier else fn,
                    state=mapping.get("State"),
                    batch_size=mapping.get("BatchSize"),
                    starting_position=mapping.get("StartingPosition"),
                    filters=filters.patterns_of(mapping),
                    on_failure=destination.get("Destination") or None,
                )
            )
    return found
