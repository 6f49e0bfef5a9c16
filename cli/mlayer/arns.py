"""ARNs mlayer is handed, parsed once (no AWS calls, no imports of higher modules)."""

from __future__ import annotations


def on_failure_kind(arn: str) -> str | None:
    """ "s3", "sqs" or "sns" for an on-failure destination ARN Lambda accepts from a stream
    mapping; None for anything else.

    An S3 bucket ARN has no region or account (``arn:aws:s3:::BUCKET``); a queue or topic
    ARN has both (``arn:aws:sqs:REGION:ACCOUNT:NAME``).
    """
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or not parts[1].startswith("aws"):
        return None
    service, region, account, resource = parts[2:]
    if service == "s3":
        bucket_ok = 3 <= len(resource) <= 63 and "/" not in resource
        return "s3" if not region and not account and bucket_ok else None
    if service in ("sqs", "sns") and region and account.isdigit() and len(account) == 12:
        return service if resource else None
    return None
