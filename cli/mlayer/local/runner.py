"""``mlayer invoke`` and ``mlayer run-local`` as library calls: they return data, never print.

Both run the deployed function (code and linked layers resolved by
:mod:`mlayer.local.resolve`) in local execution environments
(:mod:`mlayer.lambda_env.environment`); its sinks (output table, stream, dead-letter queue)
write to the same endpoint, with the caller's credentials standing in for the execution
role's. Through an alias that routes part of its traffic to a canary version, each
invocation runs the version the routing picks (:mod:`mlayer.local.routing`). Each
invocation's metrics (the function's EMF records, Lambda's ``AWS/Lambda`` metrics) are put
to CloudWatch on the endpoint, as CloudWatch Logs and Lambda do in AWS
(:mod:`mlayer.local.metrics`).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer.arns import function_name, parse_function
from mlayer.aws import AwsSettings
from mlayer.errors import ConfigError
from mlayer.lambda_env.environment import Invocation
from mlayer.local.checkpoints import CheckpointFile
from mlayer.local.esm import (
    AwsDestination,
    DynamoDBStreamSource,
    KinesisSource,
    MappingSettings,
    RunStats,
    RunSummary,
    StreamProcessor,
    StreamSource,
    local_mapping_uuid,
)
from mlayer.local.metrics import MetricsPublisher, MetricsReport
from mlayer.local.resolve import LocalFunction, resolve_routes
from mlayer.local.routing import Route, RoutedInvoker, cadence, draw

DEFAULT_LOG = Path(".mlayer") / "local" / "lambda.log"


def function_env(aws: AwsSettings) -> dict[str, str]:
    """What the function needs to reach the endpoint: its URL, region and credentials."""
    env: dict[str, str] = {}
    session = aws.session()
    if aws.endpoint_url:
        env["AWS_ENDPOINT_URL"] = aws.endpoint_url
    region = session.region_name or aws.region
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        env["AWS_ACCESS_KEY_ID"] = frozen.access_key
        env["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    # DynamoDB Streams calls need it against moto (boto3 builds an account-specific host).
    mode = os.environ.get("AWS_ACCOUNT_ID_ENDPOINT_MODE")
    if mode:
        env["AWS_ACCOUNT_ID_ENDPOINT_MODE"] = mode
    return env


def metrics_publisher(
    aws: AwsSettings,
    *,
    function: str,
    qualifier: str | None,
    metrics: bool | None,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[MetricsPublisher | None, list[str]]:
    """The publisher of a local run's metrics, or None when they are off; and notes.

    ``metrics`` None: on when an endpoint plays AWS (``--endpoint-url``), off against AWS
    itself, where a local run's metrics would mix with the deployed function's in its
    dashboards, alarms and canary bakes (and ``AWS/`` namespaces are CloudWatch's own).
    """
    if metrics is None:
        metrics = bool(aws.endpoint_url)
        if not metrics:
            return None, [
                "metrics not put: against AWS itself a local run's metrics would mix with the "
                "deployed function's (pass --metrics to put them anyway)"
            ]
    if not metrics:
        return None, []
    publisher = MetricsPublisher(
        aws.client("cloudwatch"), function=function, qualifier=qualifier, on_warning=on_warning
    )
    return publisher, []


def routing_note(
    routes: list[Route], qualifier: str | None, *, round_robin_over: str | None
) -> str | None:
    """What the alias's routing does in this run, or None when it routes to one version.

    ``round_robin_over``: what the round robin spreads (run-local: "each shard's batches");
    None: one invocation, its version drawn at random (invoke).
    """
    if len(routes) < 2:
        return None
    primary = routes[0].version
    canaries = ", ".join(f"{r.weight * 100:g}% to version {r.version}" for r in routes[1:])
    if round_robin_over is None:
        how = "this invocation's version was drawn at random with the weights, as Lambda does"
    else:
        cadences = ", ".join(
            f"version {route.version} exactly {share.numerator} in every {share.denominator}"
            for index, route in enumerate(routes[1:], start=1)
            if (share := cadence(routes, index))
        )
        how = (
            f"{round_robin_over} go by smooth weighted round robin (deterministic): "
            f"{cadences}, the rest to version {primary}"
        )
    return (
        f"alias {qualifier} routes {canaries} (a canary), the rest to its primary version "
        f"{primary}; {how}"
    )


@dataclass
class InvokeResult:
    function: LocalFunction  # the version that ran (an alias's canary, or its primary)
    event: Any
    invocation: Invocation
    log_path: Path
    routes: list[Route] = field(default_factory=list)  # the versions the alias may run
    metrics: MetricsReport | None = None  # None: metrics were off
    notes: list[str] = field(default_factory=list)


def default_event(function: LocalFunction) -> dict[str, Any]:
    """A direct invocation of records built from the model's metadata (examples or spec).

    Raises:
        ConfigError: the function has no model layer to build records from.
    """
    from mlayer.model_layer import sample_records

    meta = function.model_metadata()
    if meta is None:
        raise ConfigError(
            f"function {function.name} has no model layer (or stored model whose manifest "
            "can be read) to build sample records from; pass --event FILE"
        )
    return {"records": sample_records(meta, None)}


def invoke(
    aws: AwsSettings,
    *,
    function: str,
    qualifier: str | None = None,
    event: Any | None = None,
    layers_dir: Path = Path("layers"),
    function_dir: Path = Path("function"),
    local_code: bool = False,
    python: str | None = None,
    log_path: Path = DEFAULT_LOG,
    metrics: bool | None = None,
    rng: random.Random | None = None,
    snapstart: bool | None = None,
) -> InvokeResult:
    """Invoke the deployed function once in a local execution environment (a cold start).

    Through an alias with a canary, the version is drawn at random with the alias's weights
    (``rng``), as Lambda does per invocation. With SnapStart (applied to the version, or
    ``snapstart`` True) the environment is restored from a snapshot taken for this call.
    The invocation's metrics are put to CloudWatch before this returns (``metrics``: see :func:`metrics_publisher`); failing to put them
    is a note, never an error.
    """
    routes = resolve_routes(
        aws.client("lambda"),
        function=function,
        qualifier=qualifier,
        layers_dir=layers_dir,
        function_dir=function_dir,
        local_code=local_code,
        python=python,
        s3=aws.client("s3"),
        snapstart=snapstart,
    )
    route = routes[draw(routes, rng or random.Random()) if len(routes) > 1 else 0]
    local = route.function
    payload = event if event is not None else default_event(local)
    publisher, notes = metrics_publisher(
        aws, function=local.name, qualifier=qualifier, metrics=metrics
    )
    extra_env = function_env(aws)
    with contextlib.ExitStack() as stack:
        template = (
            stack.enter_context(local.snapshot_template(extra_env=extra_env, log_path=log_path))
            if local.snapstart
            else None
        )
        env = stack.enter_context(
            local.environment_for(extra_env=extra_env, log_path=log_path, template=template)
        )
        invocation = env.invoke(payload)
    report = None
    if publisher is not None:
        publisher.record(invocation, executed_version=local.version)
        report = publisher.close()
        notes += report.notes()
    note = routing_note(routes, qualifier, round_robin_over=None)
    return InvokeResult(
        local,
        payload,
        invocation,
        log_path,
        routes=routes,
        metrics=report,
        notes=[*([note] if note else []), *notes],
    )


@dataclass
class RunLocalResult:
    function: LocalFunction  # the primary version (an alias's canaries are in routes)
    summary: RunSummary
    log_path: Path
    mapping: dict[str, Any] | None  # the function's mapping the settings came from
    notes: list[str] = field(default_factory=list)
    checkpoints_path: Path | None = None  # None: checkpoints were kept in memory only
    reset_checkpoints: dict[str, str] = field(default_factory=dict)  # forgotten by this run
    routes: list[Route] = field(default_factory=list)  # the versions the alias routes to
    metrics: MetricsReport | None = None  # None: metrics were off


def find_mapping(
    lam: Any, function: str, stream_arn: str, qualifier: str | None
) -> dict[str, Any] | None:
    """The function's event source mapping from ``stream_arn`` (the qualifier's first)."""
    name = function_name(function)
    mappings: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_event_source_mappings").paginate(EventSourceArn=stream_arn):
        mappings.extend(page.get("EventSourceMappings", []))
    ours = []
    for mapping in mappings:
        target = parse_function(str(mapping.get("FunctionArn", "")))
        if target.name == name:
            ours.append((target.qualifier, mapping))
    ours.sort(key=lambda pair: pair[0] != qualifier)
    return ours[0][1] if ours else None


def mlayer_defaults(kind: str = "kinesis") -> MappingSettings:
    """The settings ``mlayer trigger`` would create a mapping from a ``kind`` stream with
    (see trigger.TriggerSettings): for DynamoDB, its default filter too."""
    from mlayer.filters import DEFAULT_DYNAMODB_FILTER, check_patterns
    from mlayer.trigger import DEFAULT_TRIGGER as t

    return MappingSettings(
        filters=tuple(check_patterns([DEFAULT_DYNAMODB_FILTER])) if kind == "dynamodb" else (),
        batch_size=t.batch_size or 100,
        bisect_on_error=bool(t.bisect_on_error),
        max_retry_attempts=-1 if t.maximum_retry_attempts is None else t.maximum_retry_attempts,
        max_record_age_s=-1 if t.maximum_record_age_s is None else t.maximum_record_age_s,
        report_batch_item_failures=t.report_batch_item_failures,
        source="mlayer trigger defaults (the function has no mapping from this stream)",
    )


def run_local(
    aws: AwsSettings,
    *,
    function: str,
    stream: str,
    qualifier: str | None = None,
    overrides: dict[str, Any] | None = None,
    until_idle_s: float | None = None,
    max_records: int | None = None,
    layers_dir: Path = Path("layers"),
    function_dir: Path = Path("function"),
    local_code: bool = False,
    python: str | None = None,
    log_path: Path = DEFAULT_LOG,
    on_progress: Callable[[RunStats], None] | None = None,
    on_ready: Callable[[list[Route], MappingSettings, int], None] | None = None,
    stop: threading.Event | None = None,
    poll_interval_s: float | None = None,
    checkpoints: Path | None = None,
    reset_checkpoints: bool = False,
    metrics: bool | None = None,
    on_warning: Callable[[str], None] | None = None,
    snapstart: bool | None = None,
) -> RunLocalResult:
    """Consume ``stream`` with the function as its event source mapping would, locally.

    Settings: the function's mapping from this stream when one exists (its qualifier is
    then the one run, unless ``qualifier`` is given), else mlayer's trigger defaults; then
    ``overrides`` (MappingSettings field names; None values ignored).

    With ``checkpoints`` (a JSON file, see :mod:`mlayer.local.checkpoints`), each shard
    resumes after the checkpoint this function (and qualifier) left on this stream, in
    preference to the starting position, and every resolved batch moves it;
    ``reset_checkpoints`` forgets them first. Without, checkpoints live for this run only.

    Through an alias with a canary (``RoutingConfig.AdditionalVersionWeights``), each
    invocation runs the version a smooth weighted round robin picks, per concurrent batch
    slot: a 25% canary gets exactly one batch in every 4 of each shard (see
    :mod:`mlayer.local.routing`); ``summary.stats.batches_by_version`` counts them.
    ``on_ready`` gets the routes (the primary version first), the settings and the number
    of shards.

    Each invocation's metrics go to CloudWatch on the endpoint (``metrics``: see
    :func:`metrics_publisher`), at most about a second after it ends and all of them before
    this returns; a failure to put them is reported once to ``on_warning``, counted in
    ``metrics``, and never stops the run.

    Raises:
        NotFoundError / ConfigError: unknown function or stream, bad settings, layers that
            cannot be found locally.
        CheckpointError: the checkpoint file is unreadable, unwritable, or of an earlier
            stream with the same ARN.
        RunAborted: a second Ctrl-C (see StreamProcessor.run).
    """
    from mlayer.trigger import resolve_stream

    lam = aws.client("lambda")
    stream_arn, kind = resolve_stream(aws.client("kinesis"), aws.client("dynamodb"), stream)
    mapping = find_mapping(lam, function, stream_arn, qualifier)
    if mapping is not None:
        settings = MappingSettings.from_mapping(mapping)
        if qualifier is None:
            qualifier = parse_function(str(mapping.get("FunctionArn", ""))).qualifier
    else:
        settings = mlayer_defaults(kind)
    settings = settings.override(**(overrides or {})).validate()
    routes = resolve_routes(
        lam,
        function=function,
        qualifier=qualifier,
        layers_dir=layers_dir,
        function_dir=function_dir,
        local_code=local_code,
        python=python,
        s3=aws.client("s3"),
        snapstart=snapstart,
    )
    local = routes[0].function
    region = aws.session().region_name or "us-east-1"
    source: StreamSource
    if kind == "kinesis":
        source = KinesisSource(
            aws.client("kinesis"), stream_arn, region=region, invoke_identity_arn=local.role
        )
    else:
        source = DynamoDBStreamSource(aws.client("dynamodbstreams"), stream_arn, region=region)
    destination = None
    if settings.on_failure:
        # An S3 object's key names the mapping; a run without one gets a stable stand-in.
        mapping_uuid = str(mapping["UUID"]) if mapping and mapping.get("UUID") else None
        destination = AwsDestination(
            settings.on_failure,
            aws.client,
            mapping_uuid=mapping_uuid or local_mapping_uuid(local.arn, stream_arn),
        )
    extra_env = function_env(aws)
    shards = source.shards()
    notes: list[str] = []
    if kind == "dynamodb":
        # mlayer trigger refuses such a stream; run locally, the function skips every record
        # (its batch lines count them by view type), which the run should say up front.
        from mlayer.trigger import check_new_images

        try:
            check_new_images(aws.client("dynamodb"), aws.client("dynamodbstreams"), stream_arn)
        except ConfigError as exc:
            notes.append(f"{exc} (mlayer trigger refuses this stream)")
    store: CheckpointFile | None = None
    resume: dict[str, str] = {}
    forgotten: dict[str, str] = {}
    if checkpoints is not None:
        store = CheckpointFile(
            checkpoints,
            stream_arn=stream_arn,
            function=f"{local.name}:{qualifier or '$LATEST'}",
            stream_created=_stream_created(aws, stream_arn) if kind == "kinesis" else None,
        )
        if reset_checkpoints:
            forgotten = store.reset()
        resume = store.load()
        known = {shard.shard_id for shard in shards}
        for shard_id, sequence_number in sorted(resume.items()):
            if shard_id not in known:
                notes.append(
                    f"checkpoint {sequence_number} of {shard_id} ignored: the stream has no "
                    "such shard any more (closed and expired after a reshard)"
                )

    publisher, metrics_notes = metrics_publisher(
        aws, function=local.name, qualifier=qualifier, metrics=metrics, on_warning=on_warning
    )
    spread = "each shard's batches" + (
        " (each concurrent batch slot's)" if settings.parallelization_factor > 1 else ""
    )
    note = routing_note(routes, qualifier, round_robin_over=spread)
    if note:
        local.notes.append(note)

    # SnapStart: one snapshot per version, every lane's environments restored from it.
    templates = {
        route.version: route.function.snapshot_template(extra_env=extra_env, log_path=log_path)
        for route in routes
        if route.function.snapstart
    }

    def factory() -> RoutedInvoker:
        return RoutedInvoker(
            routes,
            lambda version: version.environment_for(
                extra_env=extra_env, log_path=log_path, template=templates.get(version.version)
            ),
            on_invocation=publisher.record if publisher is not None else None,
        )

    processor = StreamProcessor(
        source,
        settings,
        factory,
        destination=destination,
        function_arn=local.arn,
        function_version=local.version,
        poll_interval_s=poll_interval_s
        if poll_interval_s is not None
        else (0.2 if aws.is_local else 1.0),
        resume=resume,
        on_checkpoint=store.save if store is not None else None,
    )
    if on_ready is not None:
        on_ready(routes, settings, len(shards))
    report = None
    if publisher is not None:
        publisher.start()
    try:
        summary = processor.run(
            until_idle_s=until_idle_s, max_records=max_records, on_progress=on_progress, stop=stop
        )
    finally:
        for template in templates.values():
            template.close()
        if publisher is not None:  # every invocation's metrics are put before returning
            report = publisher.close()
    notes = [*local.notes, *notes, *metrics_notes, *(report.notes() if report else [])]
    if mapping is not None and kind == "dynamodb" and aws.is_local:
        notes.append(
            "moto empties a DynamoDB stream that has an event source mapping on every write: "
            "on the local endpoint, run DynamoDB streams without a mapping (pass the settings "
            "as flags)"
        )
    return RunLocalResult(
        local,
        summary,
        log_path,
        mapping,
        notes,
        checkpoints,
        reset_checkpoints=forgotten,
        routes=routes,
        metrics=report,
    )


def _stream_created(aws: AwsSettings, stream_arn: str) -> str | None:
    """A Kinesis stream's creation time (ISO 8601), which tells a recreated stream apart."""
    summary = aws.client("kinesis").describe_stream_summary(StreamARN=stream_arn)
    created = summary["StreamDescriptionSummary"].get("StreamCreationTimestamp")
    return created.isoformat() if created is not None else None
