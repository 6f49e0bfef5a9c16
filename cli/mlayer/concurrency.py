"""Reserved concurrency: ``deploy-function --reserved-concurrency N|none``.

Reserved concurrency caps how many environments of the function run at once (so a scorer
cannot starve the account's other functions) and sets that many aside for it. A stream
trigger runs one batch per shard at a time (times its ParallelizationFactor): a cap below
that holds batches back, and the stream's iterator age grows.

0 is refused: Lambda would throttle every invocation, and a stream trigger would retry each
batch until its records expire. To stop processing without losing the position,
``mlayer trigger --disable`` pauses the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlayer.arns import function_name
from mlayer.errors import ConfigError
from mlayer.lambda_api import function_mappings

REMOVE = "none"
# Not checked here: the account's headroom. Lambda keeps 100 unreserved and refuses a
# reservation that would leave less (InvalidParameterValueException, which the CLI shows as
# AWS words it); GetAccountSettings would tell in advance, but moto (5.2) does not implement
# it, so a check built on it could not be tested here.


@dataclass
class Concurrency:
    """The function's reserved concurrency after deploy-function, and what changed."""

    reserved: int | None  # None: none reserved (the account's unreserved pool)
    changed: bool
    warnings: list[str]


def check(value: int | str) -> int | str:
    """``value`` as put_function_concurrency takes it, or :data:`REMOVE`.

    Raises:
        ConfigError: not a whole number from 1, or ``none``.
    """
    if isinstance(value, str):
        if value.strip().lower() == REMOVE:
            return REMOVE
        if not value.strip().lstrip("-").isdigit():
            raise ConfigError(
                f"reserved concurrency {value!r} is not a whole number; pass N (1 or more) "
                "or none to remove it"
            )
        value = int(value)
    if value < 0:
        raise ConfigError(
            f"reserved concurrency {value} is negative; pass N (1 or more), or none to remove it"
        )
    if value == 0:
        raise ConfigError(
            "reserved concurrency 0 throttles every invocation: a stream trigger would retry "
            "each batch until its records expire. To pause processing keep the position with "
            "mlayer trigger --disable; to remove the cap pass --reserved-concurrency none"
        )
    return value


def reserved(lam: Any, function: str) -> int | None:
    """The function's reserved concurrency; None when none is reserved."""
    found = lam.get_function_concurrency(FunctionName=function_name(function))
    value = found.get("ReservedConcurrentExecutions")
    return None if value is None else int(value)


def apply(
    lam: Any, function: str, value: int | str | None, kinesis: Any | None = None
) -> Concurrency:
    """Set (N), remove (``none``) or keep (None) the reserved concurrency; say when a cap is
    below what the function's Kinesis triggers run at once (``kinesis`` reads their shards).

    Raises:
        ConfigError: see :func:`check`.
    """
    name = function_name(function)
    before = reserved(lam, name)
    wanted: int | str | None = None if value is None else check(value)
    changed = False
    if wanted == REMOVE:
        if before is not None:
            lam.delete_function_concurrency(FunctionName=name)
            changed = True
        after = None
    elif isinstance(wanted, int):
        if before != wanted:
            lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=wanted)
            changed = True
        after = wanted
    else:
        after = before
    warnings: list[str] = []
    if after is not None and kinesis is not None:
        needed, streams = concurrent_batches(lam, name, kinesis)
        if needed > after:
            warnings.append(
                f"reserved concurrency {after} is below the {needed} batches its Kinesis "
                f"triggers run at once ({streams}): batches wait for a free environment and "
                f"the streams' iterator age grows. Pass --reserved-concurrency {needed} or more"
            )
    return Concurrency(after, changed, warnings)


def concurrent_batches(lam: Any, function: str, kinesis: Any) -> tuple[int, str]:
    """How many batches the function's Kinesis triggers (of it and its aliases) run at once:
    open shards x ParallelizationFactor, summed; and a short account of them. DynamoDB
    streams are left out: their shards split and close on their own schedule."""
    total = 0
    parts = []
    for mapping in function_mappings(lam, function):
        arn = str(mapping.get("EventSourceArn", ""))
        if ":kinesis:" not in arn or mapping.get("State") in ("Disabled", "Disabling"):
            continue
        stream = arn.partition("/consumer/")[0]
        try:
            summary = kinesis.describe_stream_summary(StreamARN=stream)["StreamDescriptionSummary"]
        except Exception:  # a stream we cannot describe: no figure, no warning from it
            continue
        shards = int(summary.get("OpenShardCount") or 0)
        factor = int(mapping.get("ParallelizationFactor") or 1)
        total += shards * factor
        parts.append(f"{summary.get('StreamName', stream)}: {shards} shards x {factor}")
    return total, "; ".join(parts)
