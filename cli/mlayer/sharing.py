"""Sharing a published layer version with other accounts: ``publish-deps --share-with``.

A layer version permission lets another account (Principal = its id) or every account of an
organization (Principal ``*`` with OrganizationId) link the version to their functions
(``lambda:GetLayerVersion``). Each is one statement of the version's policy, with a
statement id made from the target (``mlayer-share-<account or org id>``), so running the
command again adds nothing. Permissions belong to one version: a new version starts
unshared, and each publish-deps run shares the version it published or reused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mlayer.errors import ConfigError
from mlayer.lambda_api import error_code, is_client_error

ACTION = "lambda:GetLayerVersion"
ACCOUNT_RE = re.compile(r"^\d{12}$")
ORG_RE = re.compile(r"^o-[a-z0-9]{10,32}$")
SID_PREFIX = "mlayer-share-"


@dataclass(frozen=True)
class Share:
    """One target a layer version is shared with."""

    target: str  # a 12-digit account id, or an organization id (o-...)
    statement_id: str
    added: bool  # False: it was already there

    @property
    def kind(self) -> str:
        return "organization" if self.target.startswith("o-") else "account"


def check_target(text: str) -> str:
    """An account id or organization id, as given.

    Raises:
        ConfigError: neither.
    """
    value = text.strip()
    if ACCOUNT_RE.match(value) or ORG_RE.match(value):
        return value
    raise ConfigError(
        f"{text!r} is neither a 12-digit AWS account id (123456789012) nor an organization id "
        "(o- and 10 to 32 lower-case letters or digits, as aws organizations "
        "describe-organization prints)"
    )


def statement_id(target: str) -> str:
    return f"{SID_PREFIX}{target}"


def share(lam: Any, layer_name: str, version: int, targets: list[str]) -> list[Share]:
    """Grant each target lambda:GetLayerVersion on the version; what is already granted (by
    statement id) is left as it is.

    Raises:
        ConfigError: a target that is neither an account nor an organization id.
    """
    checked = list(dict.fromkeys(check_target(t) for t in targets))
    # Read before adding: AWS refuses a statement id that exists (ResourceConflictException)
    # while moto (5.2) adds a second statement with the same id, so asking first is what
    # keeps a re-run idempotent on both.
    present = {s.get("Sid") for s in policy_statements(lam, layer_name, version) or []}
    shares = []
    for target in checked:
        sid = statement_id(target)
        if sid in present:
            shares.append(Share(target, sid, False))
            continue
        kwargs: dict[str, Any] = {
            "LayerName": layer_name,
            "VersionNumber": version,
            "StatementId": sid,
            "Action": ACTION,
        }
        if target.startswith("o-"):
            kwargs.update(Principal="*", OrganizationId=target)
        else:
            kwargs["Principal"] = target
        try:
            lam.add_layer_version_permission(**kwargs)
        except Exception as exc:
            # Added meanwhile (a concurrent run): the statement id exists, which is the goal.
            if not (is_client_error(exc) and error_code(exc) == "ResourceConflictException"):
                raise
            shares.append(Share(target, sid, False))
            continue
        shares.append(Share(target, sid, True))
    return shares


def policy_statements(lam: Any, layer_name: str, version: int) -> list[dict[str, Any]] | None:
    """The statements of the version's policy; [] when it has none; None when it cannot be
    read (a layer of another account)."""
    try:
        found = lam.get_layer_version_policy(LayerName=layer_name, VersionNumber=version)
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) == "ResourceNotFoundException":
            return []
        if is_client_error(exc) and error_code(exc) in ("AccessDeniedException", "AccessDenied"):
            return None
        raise
    policy = found.get("Policy")
    document = json.loads(policy) if isinstance(policy, str) else policy or {}
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def shared_with(lam: Any, layer_name: str, version: int) -> list[str] | None:
    """Who may use the version besides its account: account ids, organization ids, ``*``
    (every account); None when its policy cannot be read."""
    statements = policy_statements(lam, layer_name, version)
    if statements is None:
        return None
    found: list[str] = []
    for s in statements:
        if s.get("Effect", "Allow") != "Allow":
            continue
        org = s.get("OrganizationId") or (
            (s.get("Condition") or {}).get("StringEquals", {}).get("aws:PrincipalOrgID")
        )
        principal = s.get("Principal")
        if isinstance(principal, dict):
            principal = principal.get("AWS")
        if org:
            found.append(str(org))
        elif principal:
            text = str(principal)
            match = re.search(r"(\d{12})", text)
            found.append(match.group(1) if match and text != "*" else text)
    return list(dict.fromkeys(found))


def describe(targets: list[str] | None) -> str:
    """``account 111122223333, organization o-abc...``; for status."""
    if targets is None:
        return "unknown (its policy cannot be read with these credentials)"
    if not targets:
        return "not shared (this account only)"
    return ", ".join(
        "every AWS account"
        if t == "*"
        else f"organization {t}"
        if t.startswith("o-")
        else f"account {t}"
        for t in targets
    )
