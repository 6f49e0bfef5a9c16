"""SnapStart: the setting mlayer applies, the one way it is read back, and what SnapStart
does not allow.

Facts from AWS's documentation (Lambda developer guide, "Improving startup performance with
Lambda SnapStart", checked 2026-11-30): SnapStart runs on python3.12 and later, for
published versions and aliases only (never ``$LATEST``); it "does not support provisioned
concurrency, Amazon EFS, or ephemeral storage greater than 512 MB". Lambda initialises a
version when it is published and snapshots it; the version stays ``Pending`` until the
snapshot is ready.

mlayer records what it applied in the function's tag :data:`TAG` as well as in
``SnapStart``: moto (5.x) accepts the setting and reads back ``ApplyOn: None``, so
:func:`applied` reads the configuration first and the tag where the configuration does not
say ``PublishedVersions``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlayer.arns import function_name
from mlayer.errors import ConfigError
from mlayer.lambda_api import (
    Pace,
    error_code,
    get_configuration,
    is_client_error,
    publish_function_version,
)

TAG = "mlayer:snapstart"
ON = "PublishedVersions"
OFF = "None"
# The first Python runtime SnapStart runs on.
FIRST_PYTHON = (3, 12)
# SnapStart's largest ephemeral storage (/tmp), MB.
MAX_EPHEMERAL_MB = 512
_PYTHON = re.compile(r"^python(\d+)\.(\d+)$")
_OFF = "turn SnapStart off (mlayer deploy-function --no-snapstart)"


def setting(on: bool) -> dict[str, str]:
    """What CreateFunction / UpdateFunctionConfiguration take as ``SnapStart``."""
    return {"ApplyOn": ON if on else OFF}


def _apply_on(configuration: Mapping[str, Any] | None) -> str | None:
    snap = (configuration or {}).get("SnapStart") or {}
    value = snap.get("ApplyOn")
    return str(value) if value is not None else None


def applied(configuration: Mapping[str, Any], tags: Mapping[str, str] | None) -> bool:
    """Whether SnapStart is on: the configuration's ``ApplyOn`` when it says
    ``PublishedVersions``, else mlayer's tag (what mlayer applied, where the endpoint does
    not keep the setting)."""
    if _apply_on(configuration) == ON:
        return True
    return (tags or {}).get(TAG) == ON


def version_applied(
    function_configuration: Mapping[str, Any],
    version_configuration: Mapping[str, Any],
    tags: Mapping[str, str] | None,
) -> bool:
    """Whether a published version resumes from a snapshot.

    Where the endpoint keeps the setting (AWS: the function's or the version's
    configuration says ``PublishedVersions``), the version's own configuration decides: a
    version published before SnapStart went on has no snapshot. Where it keeps nothing
    (moto), the function's tag stands for every version.
    """
    if _apply_on(version_configuration) == ON:
        return True
    if _apply_on(function_configuration) == ON:
        return False
    return applied(function_configuration, tags)


def unqualified_arn(configuration: Mapping[str, Any]) -> str:
    """The function's ARN without a version or alias (what tags are kept on)."""
    arn = str(configuration["FunctionArn"])
    parts = arn.split(":")
    return ":".join(parts[:7]) if len(parts) > 7 else arn


def tags(lam: Any, configuration: Mapping[str, Any]) -> dict[str, str]:
    """The function's tags."""
    found: dict[str, str] = lam.list_tags(Resource=unqualified_arn(configuration)).get("Tags") or {}
    return found


def tag(lam: Any, configuration: Mapping[str, Any], on: bool) -> None:
    """Record in the function's tag what mlayer applied."""
    lam.tag_resource(Resource=unqualified_arn(configuration), Tags={TAG: ON if on else OFF})


def is_on(lam: Any, function: str) -> bool:
    """Whether the function has SnapStart on (its configuration, else mlayer's tag)."""
    configuration = get_configuration(lam, function)
    return applied(configuration, tags(lam, configuration))


def applies(lam: Any, function: str, qualifier: str | None) -> bool:
    """Whether an invocation of ``function`` through ``qualifier`` resumes from a snapshot:
    SnapStart is applied, the qualifier is a published version or an alias of one (not
    ``$LATEST``, nor an alias of it) and the version runs python3.12 or later.

    Raises:
        NotFoundError: no such function, version or alias.
    """
    if not qualifier or qualifier == "$LATEST":
        return False
    name = function_name(function)
    version = get_configuration(lam, name, qualifier)
    if str(version.get("Version") or "$LATEST") == "$LATEST":
        return False
    if not runs_on(version.get("Runtime")):
        return False
    latest = get_configuration(lam, name)
    return version_applied(latest, version, tags(lam, latest))


# --------------------------------------------------------------------------- refusals


def python_version(runtime: str | None) -> tuple[int, int] | None:
    """(3, 13) for ``python3.13``; None for anything else."""
    match = _PYTHON.match(runtime or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def runs_on(runtime: str | None) -> bool:
    """Whether Lambda offers SnapStart on ``runtime`` (python3.12 and later)."""
    version = python_version(runtime)
    return version is not None and version >= FIRST_PYTHON


def provisioned_concurrency(lam: Any, function: str) -> list[dict[str, Any]]:
    """The function's provisioned concurrency configs (every version and alias).

    moto (5.x) answers ListProvisionedConcurrencyConfigs with a 404 "Not yet implemented":
    such an endpoint cannot hold any, so none is what it has.
    """
    configs: list[dict[str, Any]] = []
    try:
        paginator = lam.get_paginator("list_provisioned_concurrency_configs")
        for page in paginator.paginate(FunctionName=function):
            configs.extend(page.get("ProvisionedConcurrencyConfigs") or [])
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "404":
            return []
        raise
    return configs


def problems(
    *,
    function: str,
    runtime: str | None,
    ephemeral_mb: int,
    ephemeral_reason: str | None = None,
    configuration: Mapping[str, Any] | None = None,
    provisioned: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Why SnapStart cannot be on for this function, each with its fix ([] when it can).

    ``runtime`` and ``ephemeral_mb``: what the function will have (requested, else its
    current; a runtime of None is not checked); ``ephemeral_reason``: why /tmp is that large (a stored model), for the
    message; ``configuration``: the function's current one (its FileSystemConfigs);
    ``provisioned``: its provisioned concurrency configs.
    """
    name = function_name(function)
    found = []
    if runtime is not None and not runs_on(runtime):
        found.append(
            f"SnapStart runs on python3.12 and later, and {name} would run on {runtime}: "
            "deploy with --runtime python3.13 (or python3.12) and a dependency layer built "
            "for it (mlayer build-deps --runtime python3.13, then mlayer publish-deps "
            "--runtime python3.13)"
        )
    if ephemeral_mb > MAX_EPHEMERAL_MB:
        why = f" ({ephemeral_reason})" if ephemeral_reason else ""
        fix = (
            f"publish the model as a model layer instead of the S3 model store, or {_OFF}"
            if ephemeral_reason
            else f"pass --ephemeral-storage {MAX_EPHEMERAL_MB}, or {_OFF}"
        )
        found.append(
            f"SnapStart does not support ephemeral storage over {MAX_EPHEMERAL_MB} MB, and "
            f"{name}'s /tmp would be {ephemeral_mb:,} MB{why}: {fix}"
        )
    mounts = (configuration or {}).get("FileSystemConfigs") or []
    if mounts:
        paths = ", ".join(str(m.get("LocalMountPath") or m.get("Arn")) for m in mounts)
        found.append(
            f"SnapStart does not support Amazon EFS, and {name} mounts {paths} "
            "(FileSystemConfigs): remove it (aws lambda update-function-configuration "
            f"--function-name {name} --file-system-configs '[]'), or {_OFF}"
        )
    if provisioned:
        qualifiers = [str(c.get("FunctionArn", "")).rsplit(":", 1)[-1] for c in provisioned]
        total = sum(
            int(c.get("RequestedProvisionedConcurrentExecutions") or 0) for c in provisioned
        )
        removes = "; ".join(
            f"aws lambda delete-provisioned-concurrency-config --function-name {name} "
            f"--qualifier {q}"
            for q in qualifiers
        )
        found.append(
            "SnapStart does not support provisioned concurrency, and "
            f"{name} has it on {', '.join(qualifiers)} ({total:,} environments): remove it "
            f"({removes}), or {_OFF}"
        )
    return found


def check(
    lam: Any,
    *,
    function: str,
    runtime: str | None,
    ephemeral_mb: int,
    ephemeral_reason: str | None = None,
    configuration: Mapping[str, Any] | None = None,
) -> None:
    """Refuse what SnapStart does not allow (see :func:`problems`); the function's
    provisioned concurrency is read when it exists (``configuration`` given).

    Raises:
        ConfigError: every reason found, each with its fix.
    """
    provisioned = provisioned_concurrency(lam, function) if configuration is not None else []
    found = problems(
        function=function, runtime=runtime, ephemeral_mb=ephemeral_mb,
        ephemeral_reason=ephemeral_reason, configuration=configuration, provisioned=provisioned,
    )  # fmt: skip
    if found:
        raise ConfigError(
            f"SnapStart cannot be on for {function_name(function)}: " + "; ".join(found)
        )


def check_storage(
    lam: Any, configuration: Mapping[str, Any], ephemeral_mb: int, reason: str
) -> None:
    """Refuse to give a function with SnapStart on more than 512 MB of /tmp (a rollout of a
    model from the S3 model store raises it to what the archive needs), before any change.

    Raises:
        ConfigError: SnapStart is on and ``ephemeral_mb`` is over 512.
    """
    if ephemeral_mb <= MAX_EPHEMERAL_MB or not applied(configuration, tags(lam, configuration)):
        return
    name = function_name(unqualified_arn(configuration))
    found = problems(function=name, runtime=None, ephemeral_mb=ephemeral_mb,
                     ephemeral_reason=reason)  # fmt: skip
    raise ConfigError(f"SnapStart is on for {name}: " + "; ".join(found))


# --------------------------------------------------------------------------- publishing


def publish_version(lam: Any, function: str, description: str, pace: Pace, notes: list[str]) -> str:
    """Publish $LATEST as a version and wait until it is Active (callers move aliases only
    after that); returns the version.

    With SnapStart, Lambda initialises the version and snapshots it while it is Pending: a
    note (appended to ``notes``) says how long that took.
    """
    published = publish_function_version(lam, function, description, pace)
    configuration = get_configuration(lam, function, published.version)
    on = _apply_on(configuration) == ON
    if not on:
        found = tags(lam, configuration)
        on = found.get(TAG) == ON and version_applied(
            get_configuration(lam, function), configuration, found
        )
    if on:
        notes.append(
            f"SnapStart: snapshot of version {published.version} ready in "
            f"{published.ready_s:.1f} s (the version was Pending until then; the alias moved "
            "after)"
        )
    return published.version
