"""Whether Lambda SnapStart applies to a function version (the one reader of the setting).

Minimal version written by the local-snapshot work (worktree snaplocal) so that ``invoke`` /
``run-local`` can decide; the deploy-function side (worktree snapcli) owns the full module.

SnapStart applies to published versions (and the aliases pointing at them), never to
``$LATEST``, when the function's configuration says ``SnapStart.ApplyOn: PublishedVersions``
or, as moto reads the setting back as ``None``, when the function is tagged
``mlayer:snapstart`` = ``PublishedVersions`` (mlayer deploy-function --snapstart writes both).
"""

from __future__ import annotations

from typing import Any

TAG = "mlayer:snapstart"
PUBLISHED_VERSIONS = "PublishedVersions"
MIN_PYTHON = (3, 12)


def applied(configuration: dict[str, Any], tags: dict[str, str]) -> bool:
    """SnapStart is on for the function's published versions (configuration, else the tag)."""
    setting = (configuration.get("SnapStart") or {}).get("ApplyOn")
    if setting == PUBLISHED_VERSIONS:
        return True
    return tags.get(TAG) == PUBLISHED_VERSIONS


def _runtime_supports(runtime: str) -> bool:
    """SnapStart runs on python3.12 and later."""
    version = runtime.removeprefix("python")
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= MIN_PYTHON


def applies(lambda_client: Any, function_name: str, qualifier: str | None) -> bool:
    """Whether an invocation of ``function_name`` at ``qualifier`` starts from a snapshot.

    Only a published version or an alias (``qualifier`` not None nor ``$LATEST``) of a
    python3.12+ function with SnapStart applied.
    """
    from mlayer.lambda_api import get_configuration

    if not qualifier or qualifier == "$LATEST":
        return False
    configuration = get_configuration(lambda_client, function_name, qualifier)
    if str(configuration.get("Version") or "$LATEST") == "$LATEST":
        return False
    if not _runtime_supports(str(configuration.get("Runtime") or "")):
        return False
    arn = str(configuration.get("FunctionArn") or "")
    # Tags live on the unqualified function.
    base_arn = arn.rsplit(":", 1)[0] if arn.count(":") >= 7 else arn
    tags: dict[str, str] = lambda_client.list_tags(Resource=base_arn).get("Tags") or {}
    return applied(configuration, tags)
