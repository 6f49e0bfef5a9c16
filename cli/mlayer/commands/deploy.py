"""deploy-function and trigger. Thin: parse options, call one function of mlayer.deploy,
render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlayer import options


def _env_pairs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        env[key] = value
    return env


def _destination(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from mlayer.arns import on_failure_kind

    if value is None or on_failure_kind(value):
        return value
    raise click.BadParameter(
        f"{value!r} is not an SQS queue, SNS topic or S3 bucket ARN "
        "(e.g. arn:aws:s3:::scorer-failures, which keeps the records, or "
        "arn:aws:sqs:us-east-1:123456789012:scorer-failures)",
        ctx=ctx,
        param=param,
    )


@click.command("deploy-function")
@options.function
@click.option(
    "--function-dir",
    type=click.Path(file_okay=False, path_type=str),
    default="function",
    show_default=True,
    help="Directory holding lambda_function.py (zipped without caches).",
)
@options.role
@options.runtime
@options.arch
@click.option(
    "--memory",
    type=click.IntRange(128, 10_240),
    metavar="MB",
    help="Memory (128-10,240 MB; CPU grows with it) [default: 512 on create, else unchanged].",
)
@click.option(
    "--timeout",
    type=click.IntRange(1, 900),
    metavar="SECONDS",
    help="Timeout (1-900 s) [default: 60 on create, else unchanged].",
)
@click.option(
    "--ephemeral-storage",
    "ephemeral_mb",
    type=click.IntRange(512, 10_240),
    metavar="MB",
    help="/tmp size (512-10,240 MB; over 512 is billed) [default: 512 on create, else "
    "unchanged, raised to what a stored model needs].",
)
@click.option(
    "--env",
    "environment",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_env_pairs,
    help="Environment variable, repeatable (OUTPUT_TABLE, OUTPUT_STREAM, DEAD_LETTER_QUEUE_URL, "
    "DEAD_LETTER_BUCKET, DEAD_LETTER_MAX_BYTES, INPUT_FIELD, ...); merged into the existing ones, "
    "KEY= removes one.",
)
@click.option(
    "--snapstart/--no-snapstart",
    "snapstart",
    default=None,
    help="SnapStart for published versions (python3.12+): each version is initialised and "
    "snapshotted when published, and new environments resume from the snapshot. Refused "
    "with /tmp over 512 MB, EFS or provisioned concurrency [default: unchanged; off on create].",
)
@options.deps_layer
@options.model_layer
@options.alias
@options.layers_dir
@click.pass_obj
def deploy_function(
    settings: Any,
    function: str | None,
    function_dir: str,
    role: str | None,
    runtime: str | None,
    arch: str,
    memory: int | None,
    timeout: int | None,
    ephemeral_mb: int | None,
    environment: dict[str, str],
    snapstart: bool | None,
    deps_layer: str | None,
    model_layer: str | None,
    alias: str | None,
    layers_dir: str,
) -> None:
    """Create or update the function from function/, with its layers linked.

    Handler lambda_function.lambda_handler; the runtime defaults to the dependency layer's.
    Linked: the newest published dependency layer version for the runtime and
    architecture, and the model layer (kept on update, else the newest published). Waits
    until the function is Active / its update Successful. --role is needed to create it
    (on a local endpoint such as moto_server, mlayer makes a stand-in role when omitted).
    With --alias, publishes a version and points the alias at it.

    With --snapstart, Lambda initialises every version mlayer publishes (publish-model
    --alias, promote, rollback, ...) and snapshots it; the alias moves once the snapshot is
    ready, and environments started through the alias or a version resume from it
    ($LATEST never does). The function is tagged mlayer:snapstart with the setting.

    \b
    Example:
      mlayer deploy-function --function scorer --role arn:aws:iam::123456789012:role/scorer \\
        --env OUTPUT_TABLE=predictions --env DEAD_LETTER_QUEUE_URL=https://sqs...
      mlayer deploy-function --function scorer --memory 1024 --alias live
      mlayer deploy-function --function scorer --runtime python3.13 --snapstart --alias live
    """
    from mlayer.contracts import default_layer_name
    from mlayer.deploy import deploy_function as deploy

    function = options.require_function(function)
    result = deploy(
        settings.client("lambda"),
        function=function,
        function_dir=Path(function_dir),
        role=role,
        runtime=runtime,
        arch=arch,
        memory_mb=memory,
        timeout_s=timeout,
        environment=environment,
        deps_layer=deps_layer or default_layer_name(function, "deps"),
        model_layer=model_layer or default_layer_name(function, "model"),
        layers_dir=Path(layers_dir),
        alias=alias,
        local_iam=settings.client("iam") if settings.is_local and not role else None,
        ephemeral_mb=ephemeral_mb,
        s3=settings.client("s3"),
        snapstart_on=snapstart,
    )
    verb = "Created" if result.created else "Updated"
    code = "new code" if result.code_changed else "code unchanged"
    click.echo(
        f"{verb} {result.function} ({result.arn}): {code}, {result.code_bytes:,} bytes zipped "
        f"({result.code_unzipped_bytes:,} unzipped)"
    )
    click.echo(
        f"  {result.runtime} {result.arch}, {result.memory_mb} MB, timeout {result.timeout_s} s, "
        f"/tmp {result.ephemeral_mb:,} MB, handler lambda_function.lambda_handler, role "
        f"{result.role}"
    )
    if result.environment:
        env = ", ".join(f"{k}={v}" for k, v in sorted(result.environment.items()))
        click.echo(f"  environment: {env}")
    click.echo("  layers:" if result.layers else "  layers: none")
    for arn in result.layers:
        click.echo(f"    {arn}")
    click.echo(f"  size: {result.budget.describe()}")
    click.echo(
        "  SnapStart: on (published versions resume from their snapshot; $LATEST does not)"
        if result.snapstart
        else "  SnapStart: off"
    )
    if result.alias:
        click.echo(f"  alias {result.alias} -> version {result.function_version}")
    for note in result.notes:
        click.echo(f"Note: {note}")
    for warning in result.warnings:
        click.echo(f"Warning: {warning}")


@click.command()
@options.function
@options.alias
@click.option(
    "--stream",
    required=True,
    metavar="ARN|NAME",
    help="Kinesis stream or DynamoDB stream ARN; a DynamoDB table name resolves to its stream, "
    "a Kinesis stream name to its ARN.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Records per invocation.",
)
@click.option(
    "--starting-position",
    type=click.Choice(["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]),
    help="Where a new mapping starts reading [default: TRIM_HORIZON: nothing already in the "
    "stream is skipped; outputs are keyed by record, so rereading is harmless]. Fixed once created.",
)
@click.option(
    "--starting-timestamp",
    type=float,
    metavar="EPOCH_SECONDS",
    help="With --starting-position AT_TIMESTAMP.",
)
@click.option(
    "--bisect/--no-bisect",
    default=True,
    show_default=True,
    help="Split a batch in two when the function fails as a whole, to isolate a bad record.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(-1, 10_000),
    default=10,
    show_default=True,
    help="Retries of a failing batch before its metadata goes to --on-failure (-1: until the "
    "records expire, blocking the shard); 10 lets bisect isolate one record of 100.",
)
@click.option(
    "--max-record-age",
    type=click.IntRange(-1, 604_800),
    default=86_400,
    show_default=True,
    metavar="SECONDS",
    help="Skip records older than this (-1: never); a day matches the streams' default retention.",
)
@click.option(
    "--batching-window",
    type=click.IntRange(0, 300),
    metavar="SECONDS",
    help="Wait up to this long to fill a batch [default: Lambda's, 0].",
)
@click.option(
    "--parallelization",
    type=click.IntRange(1, 10),
    metavar="N",
    help="Concurrent batches per shard, in order per partition key [default: Lambda's, 1].",
)
@click.option(
    "--on-failure",
    metavar="ARN",
    callback=_destination,
    help="Where batches given up on go: an S3 bucket (arn:aws:s3:::BUCKET) keeps their records "
    "and metadata; an SQS queue or SNS topic only their metadata.",
)
@click.option(
    "--report-failures/--no-report-failures",
    default=True,
    show_default=True,
    help="ReportBatchItemFailures: retry from the first failed record, not the whole batch.",
)
@click.option(
    "--filter",
    "filter_patterns",
    multiple=True,
    metavar="PATTERN",
    help="A FilterCriteria pattern (JSON, Lambda's filter grammar), repeatable (ORed; up to 5). "
    'Kinesis filters on "data", the payload as JSON: {"data": {"status": ["open"]}}; DynamoDB '
    'on the record: {"dynamodb": {"NewImage": {"lang": {"S": ["en"]}}}}. Replaces the '
    'mapping\'s filters [default on create: {"eventName": ["INSERT", "MODIFY"]} for DynamoDB, '
    "none for Kinesis; unchanged on update].",
)
@click.option(
    "--no-filter",
    is_flag=True,
    help="Remove the mapping's filters (Lambda invokes for every record, REMOVEs included).",
)
@click.option("--enable/--disable", "enabled", default=None, help="Turn the mapping on or off.")
@click.pass_obj
def trigger(
    settings: Any,
    function: str | None,
    alias: str | None,
    stream: str,
    batch_size: int,
    starting_position: str | None,
    starting_timestamp: float | None,
    bisect: bool,
    max_retries: int,
    max_record_age: int,
    batching_window: int | None,
    parallelization: int | None,
    on_failure: str | None,
    report_failures: bool,
    filter_patterns: tuple[str, ...],
    no_filter: bool,
    enabled: bool | None,
) -> None:
    """Create or update the stream trigger (event source mapping) of the alias or function.

    Safe defaults: batches of 100, ReportBatchItemFailures, bisect on function error, 10
    retries, records up to a day old, TRIM_HORIZON; flags override each. An existing mapping
    of the stream to the function is updated (and moved to --alias).

    A DynamoDB table (or stream ARN) must have a stream with new images (NEW_IMAGE or
    NEW_AND_OLD_IMAGES): a KEYS_ONLY or OLD_IMAGE stream, or none, is refused with the
    update-table commands that fix it. A new DynamoDB mapping filters to INSERT and MODIFY
    (a REMOVE has nothing to score; Lambda drops it before invoking, unbilled); --filter
    sets other patterns, --no-filter none.

    \b
    Example:
      mlayer trigger --function scorer --alias live --stream arn:aws:kinesis:...:stream/reviews
      mlayer trigger --function scorer --alias live --stream reviews-table \\
        --on-failure arn:aws:s3:::scorer-failures
      mlayer trigger --function scorer --alias live --stream reviews \\
        --filter '{"data": {"lang": ["en"]}}'
    """
    from mlayer.trigger import TriggerSettings, describe_filters, describe_on_failure
    from mlayer.trigger import trigger as make_trigger

    function = options.require_function(function)
    if no_filter and filter_patterns:
        raise click.UsageError("give --filter PATTERN or --no-filter, not both")
    result = make_trigger(
        settings.client("lambda"),
        settings.client("kinesis"),
        settings.client("dynamodb"),
        function=function,
        stream=stream,
        alias=alias,
        streams=settings.client("dynamodbstreams"),
        settings=TriggerSettings(
            filters=() if no_filter else (filter_patterns or None),
            batch_size=batch_size,
            starting_position=starting_position,
            starting_position_timestamp=starting_timestamp,
            bisect_on_error=bisect,
            maximum_retry_attempts=max_retries,
            maximum_record_age_s=max_record_age,
            batching_window_s=batching_window,
            parallelization_factor=parallelization,
            on_failure=on_failure,
            report_batch_item_failures=report_failures,
            enabled=enabled,
        ),
    )
    verb = "Created" if result.created else "Updated"
    moved = f" (moved from {result.moved_from})" if result.moved_from else ""
    click.echo(f"{verb} the {result.stream_kind} trigger of {result.target}{moved}:")
    m = result.mapping
    on_failure_dest = ((m.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    rows = [
        ("UUID", m.get("UUID")),
        ("EventSourceArn", m.get("EventSourceArn")),
        ("FunctionArn", m.get("FunctionArn")),
        ("State", m.get("State")),
        ("StartingPosition", m.get("StartingPosition")),
        ("BatchSize", m.get("BatchSize")),
        ("MaximumBatchingWindowInSeconds", m.get("MaximumBatchingWindowInSeconds")),
        ("ParallelizationFactor", m.get("ParallelizationFactor")),
        ("FunctionResponseTypes", ", ".join(m.get("FunctionResponseTypes") or []) or None),
        ("BisectBatchOnFunctionError", m.get("BisectBatchOnFunctionError")),
        ("MaximumRetryAttempts", m.get("MaximumRetryAttempts")),
        ("MaximumRecordAgeInSeconds", m.get("MaximumRecordAgeInSeconds")),
        ("OnFailure", describe_on_failure(on_failure_dest)),
        ("FilterCriteria", describe_filters(m, result.stream_kind, result.default_filter)),
    ]
    for key, value in rows:
        if value is not None:
            click.echo(f"  {key}: {value}")
    for note in result.notes:
        click.echo(f"Note: {note}")


COMMANDS = [deploy_function, trigger]
