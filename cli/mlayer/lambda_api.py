"""Lambda calls without policy: waiting for updates, backing off from conflicts, reading
configurations, layer versions, function versions and aliases, relinking a layer list.

Every function takes the boto3 Lambda client (and a :class:`Pace`, where it waits) and
returns what Lambda answered, or raises an :mod:`mlayer.errors` error that says what to do.
What to change, and when, is decided above: :mod:`mlayer.rollout`, :mod:`mlayer.deploy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlayer.arns import function_name, parse_layer_arn
from mlayer.errors import AwsError, NotFoundError


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


@dataclass(frozen=True)
class Pace:
    """How long to wait for Lambda, and how to back off when an update is in progress."""

    waiter_delay: int = 1
    waiter_attempts: int = 300
    conflict_attempts: int = 6  # backoff 1+2+4+8+16 s = 31 s at most, between waits
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = time.sleep


DEFAULT_PACE = Pace()


def wait_updated(lam: Any, function: str, pace: Pace) -> None:
    """Wait until the function's LastUpdateStatus is Successful (boto3's waiter).

    Raises:
        AwsError: the last update failed (with Lambda's reason).
    """
    _wait(lam, "function_updated_v2", function, pace)


def wait_active(lam: Any, function: str, pace: Pace, qualifier: str | None = None) -> None:
    """Wait until the function (or one of its versions) is Active."""
    _wait(lam, "function_active_v2", function, pace, qualifier)


def _wait(lam: Any, waiter: str, function: str, pace: Pace, qualifier: str | None = None) -> None:
    from botocore.exceptions import WaiterError

    kwargs: dict[str, Any] = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    try:
        lam.get_waiter(waiter).wait(
            **kwargs,
            WaiterConfig={"Delay": pace.waiter_delay, "MaxAttempts": pace.waiter_attempts},
        )
    except WaiterError as exc:
        config = (exc.last_response or {}).get("Configuration", {})
        if "ResourceNotFoundException" in str(exc):
            raise _unknown_function(lam, function) from exc
        reason = config.get("LastUpdateStatusReason") or config.get("StateReason")
        if reason:
            raise AwsError(
                f"function {function_name(function)} is in a failed state: {reason}; fix the cause "
                "and run the command again"
            ) from exc
        raise AwsError(
            f"gave up waiting for function {function_name(function)} to become ready "
            f"({pace.waiter_attempts} checks); check it in the Lambda console and run the "
            "command again"
        ) from exc


def call_with_backoff(call: Callable[[], Any], lam: Any, function: str, pace: Pace) -> Any:
    """Run an update, retrying ResourceConflictException ("an update is in progress").

    Waits for the function to settle between attempts, with exponential backoff, bounded by
    ``pace.conflict_attempts``; the last conflict propagates.
    """
    for attempt in range(pace.conflict_attempts):
        try:
            return call()
        except Exception as exc:
            if not (is_client_error(exc) and error_code(exc) == "ResourceConflictException"):
                raise
            if attempt == pace.conflict_attempts - 1:
                raise
            pace.sleep(min(pace.backoff_base * 2**attempt, pace.backoff_max))
            wait_updated(lam, function, pace)
    raise AssertionError("unreachable")  # pragma: no cover


def update_configuration(lam: Any, function: str, pace: Pace, **changes: Any) -> dict[str, Any]:
    """update_function_configuration, never racing another update: wait, update, wait."""
    wait_updated(lam, function, pace)
    result: dict[str, Any] = call_with_backoff(
        lambda: lam.update_function_configuration(FunctionName=function, **changes),
        lam,
        function,
        pace,
    )
    wait_updated(lam, function, pace)
    return result


def _unknown_function(lam: Any, function: str) -> NotFoundError:
    name = function_name(function)
    return NotFoundError(
        f"function {name} does not exist in {lam.meta.region_name}; create it with "
        f"`mlayer deploy-function --function {name} --role ARN`"
    )


def get_configuration(lam: Any, function: str, qualifier: str | None = None) -> dict[str, Any]:
    """The function's (or a version's) configuration.

    Raises:
        NotFoundError: no such function, with the command that creates it.
    """
    kwargs: dict[str, Any] = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    try:
        config: dict[str, Any] = lam.get_function_configuration(**kwargs)
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "ResourceNotFoundException":
            if qualifier:
                raise NotFoundError(
                    f"function {function_name(function)} has no version or alias {qualifier}"
                ) from exc
            raise _unknown_function(lam, function) from exc
        raise
    return config


def list_layer_versions(lam: Any, layer_name: str) -> list[dict[str, Any]]:
    """Every version of a layer (paginated), newest first; [] when the layer does not exist."""
    versions: list[dict[str, Any]] = []
    try:
        for page in lam.get_paginator("list_layer_versions").paginate(LayerName=layer_name):
            versions.extend(page.get("LayerVersions", []))
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "ResourceNotFoundException":
            return []
        raise
    return sorted(versions, key=lambda v: int(v["Version"]), reverse=True)


def get_layer_version(lam: Any, arn: str) -> dict[str, Any] | None:
    """A layer version by ARN; None when it was deleted (or never existed).

    moto does not implement GetLayerVersionByArn, and GetLayerVersion works on both, so the
    ARN is split and GetLayerVersion used.
    """
    parsed = parse_layer_arn(arn)
    try:
        result: dict[str, Any] = lam.get_layer_version(
            LayerName=parsed.layer_arn, VersionNumber=parsed.version
        )
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return result


def list_function_versions(lam: Any, function: str) -> list[dict[str, Any]]:
    """Every version of the function ($LATEST first, then 1, 2, ...), paginated."""
    versions: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=function):
        versions.extend(page.get("Versions", []))
    return sorted(versions, key=lambda v: -1 if v["Version"] == "$LATEST" else int(v["Version"]))


def list_aliases(lam: Any, function: str) -> list[dict[str, Any]]:
    """Every alias of the function, paginated."""
    aliases: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_aliases").paginate(FunctionName=function):
        aliases.extend(page.get("Aliases", []))
    return aliases


def get_alias(lam: Any, function: str, alias: str) -> dict[str, Any] | None:
    """The alias, or None when it does not exist."""
    try:
        result: dict[str, Any] = lam.get_alias(FunctionName=function, Name=alias)
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return result


def alias_weights(alias: dict[str, Any]) -> dict[str, float]:
    """The alias's additional version weights ({} when it routes to one version)."""
    routing = alias.get("RoutingConfig") or {}
    return {str(k): float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}


def set_alias(
    lam: Any, function: str, alias: str, version: str, canary: dict[str, float] | None = None
) -> None:
    """Point ``alias`` at function ``version``; route ``canary`` ({version: weight}) besides.

    Without ``canary`` the alias's routing is reset: every rollout step that moves an alias
    (publish, promote, rollback, deploy-function, shadow) ends any canary it had.
    """
    lam.update_alias(
        FunctionName=function,
        Name=alias,
        FunctionVersion=version,
        RoutingConfig={"AdditionalVersionWeights": canary or {}},
    )


def layer_arns(config: dict[str, Any]) -> list[str]:
    """The layer version ARNs linked to a function configuration, in order."""
    return [layer["Arn"] for layer in config.get("Layers") or []]


def find_layer(arns: list[str], layer_name: str) -> str | None:
    """The ARN among ``arns`` that is a version of ``layer_name``."""
    for arn in arns:
        if parse_layer_arn(arn).name == layer_name:
            return arn
    return None


def relinked(arns: list[str], new_arn: str) -> list[str]:
    """``arns`` with the same layer's version replaced by ``new_arn`` (or it appended).

    Every other layer keeps its place: layers later in the list override earlier ones in /opt.
    """
    name = parse_layer_arn(new_arn).name
    out = [new_arn if parse_layer_arn(a).name == name else a for a in arns]
    if new_arn not in out:
        out.append(new_arn)
    return out


@dataclass(frozen=True)
class PublishedVersion:
    """A function version just published, and how long it took to become Active (with
    SnapStart: Lambda's init of the version and its snapshot)."""

    version: str
    ready_s: float


def publish_function_version(
    lam: Any, function: str, description: str, pace: Pace
) -> PublishedVersion:
    """Publish $LATEST as a version (Lambda reuses the last one if nothing changed) and wait
    until the version is Active: only then may an alias point at it."""
    wait_updated(lam, function, pace)
    result = call_with_backoff(
        lambda: lam.publish_version(FunctionName=function, Description=description),
        lam,
        function,
        pace,
    )
    version = str(result["Version"])
    started = time.perf_counter()
    wait_active(lam, function, pace, qualifier=version)
    return PublishedVersion(version, time.perf_counter() - started)


def function_mappings(lam: Any, function: str) -> list[dict[str, Any]]:
    """The event source mappings of the function and of each of its aliases (Lambda lists a
    qualified target's apart from the unqualified function's), once each."""
    name = function_name(function)
    targets = [name] + [f"{name}:{a['Name']}" for a in list_aliases(lam, name)]
    found: dict[str, dict[str, Any]] = {}
    for target in targets:
        for page in lam.get_paginator("list_event_source_mappings").paginate(FunctionName=target):
            for mapping in page.get("EventSourceMappings", []):
                found.setdefault(str(mapping.get("UUID")), mapping)
    return list(found.values())
