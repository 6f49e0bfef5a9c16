"""The S3 model store: where a model too big for a layer lives (docs/CONTRACTS.md).

An archive (``layers/model-<name>-v<N>.tar``, written by ``build-model --store s3``) is
uploaded once under a content-addressed key, ``mlayer/<model-layer-name>/<sha256>.tar``,
with the model layer Description as its metadata; a function version serves it through its
``MODEL_URI`` environment variable. This module owns the key, the URI and the calls to S3
(upload through s3transfer, head, list, delete); rollout and inventory decide when.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlayer.contracts import LayerRecord, parse_description
from mlayer.errors import AwsError, ConfigError, NotFoundError
from mlayer.lambda_api import error_code, is_client_error

ENV_VAR = "MODEL_URI"
# A shadow model of the store (docs/CONTRACTS.md, "Shadow scoring"): the same URI format, the
# same archive and key, in another variable.
SHADOW_ENV_VAR = "SHADOW_URI"
METADATA_KEY = "mlayer"  # x-amz-meta-mlayer: the model layer Description
_URI_RE = re.compile(
    r"^s3://(?P<bucket>[^/#]+)/(?P<key>[^#]+)#sha256=(?P<sha>[0-9a-f]{64})&size=(?P<size>\d+)$"
)


@dataclass(frozen=True)
class StoreURI:
    """Where a stored model is and what it must hash to: ``MODEL_URI``'s value, parsed."""

    bucket: str
    key: str
    sha256: str
    size: int

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}#sha256={self.sha256}&size={self.size}"

    @property
    def location(self) -> str:
        """``s3://bucket/key`` (what `aws s3` commands take)."""
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, text: str) -> StoreURI | None:
        """The URI in ``text``; None when it is not a MODEL_URI mlayer wrote."""
        m = _URI_RE.match(text or "")
        if not m:
            return None
        return cls(m["bucket"], m["key"], m["sha"], int(m["size"]))


def is_store_uri(text: str | None) -> bool:
    return bool(text) and str(text).startswith("s3://")


def archive_key(layer_name: str, sha256: str) -> str:
    """The content-addressed key of an archive: the same content is stored once."""
    return f"mlayer/{layer_name}/{sha256}.tar"


def prefix(layer_name: str) -> str:
    return f"mlayer/{layer_name}/"


@dataclass
class StoredModel:
    """An archive in the store and the model it holds (from its metadata)."""

    uri: StoreURI
    record: LayerRecord | None
    created: str | None = None
    reused: bool = False  # already there: nothing was uploaded
    stored_bytes: int | None = None  # the object's length as S3 reports it


def check_bucket(s3: Any, bucket: str) -> None:
    """Raise a clear error when ``bucket`` is missing or not ours to use.

    Raises:
        NotFoundError: no such bucket.
        AwsError: access denied.
    """
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if not is_client_error(exc):
            raise
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise NotFoundError(
                f"bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket}) or pass "
                "--bucket with an existing one in the function's region"
            ) from exc
        if code in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(
                f"access to bucket {bucket} denied; grant s3:PutObject and s3:GetObject on it "
                "to these credentials (--profile) or pass another --bucket"
            ) from exc
        raise


def head(s3: Any, uri: StoreURI) -> StoredModel | None:
    """The stored archive at ``uri`` with its recorded model; None when it is gone."""
    try:
        found = s3.head_object(Bucket=uri.bucket, Key=uri.key)
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        if is_client_error(exc) and error_code(exc) in ("NoSuchBucket",):
            return None
        raise
    return _stored(uri, found)


def _stored(uri: StoreURI, found: dict[str, Any], *, reused: bool = False) -> StoredModel:
    metadata = {k.lower(): v for k, v in (found.get("Metadata") or {}).items()}
    modified = found.get("LastModified")
    created = modified.strftime("%Y-%m-%dT%H:%M:%SZ") if modified is not None else None
    return StoredModel(
        uri=uri,
        record=parse_description(metadata.get(METADATA_KEY)),
        created=created,
        reused=reused,
        stored_bytes=found.get("ContentLength"),
    )


def upload(
    s3: Any,
    *,
    bucket: str,
    layer_name: str,
    path: Any,
    sha256: str,
    size: int,
    description: str,
    progress: Callable[[int], None] | None = None,
) -> StoredModel:
    """Store the archive at ``path`` (content-addressed), or find it already stored.

    The upload goes through s3transfer (multipart, parallel parts); the object's metadata
    carries ``description`` so history and status need nothing else.

    Raises:
        NotFoundError / AwsError: the bucket is missing or denied.
        ConfigError: an object at the key has another size (not what mlayer stored there).
    """
    check_bucket(s3, bucket)
    uri = StoreURI(bucket, archive_key(layer_name, sha256), sha256, size)
    existing = head(s3, uri)
    if existing is not None:
        stored_size = existing.stored_bytes
        if stored_size == size:
            existing.reused = True
            return existing
        raise ConfigError(
            f"{uri.location} already holds {stored_size} bytes, not this archive's {size}: "
            "something other than mlayer wrote there; delete the object (aws s3 rm "
            f"{uri.location}) and publish again"
        )
    s3.upload_file(
        str(path),
        bucket,
        uri.key,
        ExtraArgs={"Metadata": {METADATA_KEY: description}},
        Callback=progress,
    )
    found = s3.head_object(Bucket=bucket, Key=uri.key)
    if found.get("ContentLength") != size:
        raise AwsError(
            f"{uri.location} holds {found.get('ContentLength')} bytes after the upload, not "
            f"{size}: publish again"
        )
    return _stored(uri, found)


def listed(s3: Any, bucket: str, layer_name: str) -> list[StoredModel]:
    """Every archive under the model layer's prefix in ``bucket``, newest first.

    An object mlayer did not write (no sha256-named key) is left out; a missing bucket
    lists nothing.
    """
    found: list[StoredModel] = []
    paginator = s3.get_paginator("list_objects_v2")
    try:
        pages = list(paginator.paginate(Bucket=bucket, Prefix=prefix(layer_name)))
    except Exception as exc:
        if is_client_error(exc) and error_code(exc) in ("NoSuchBucket", "404"):
            return []
        raise
    for page in pages:
        for obj in page.get("Contents") or []:
            m = re.fullmatch(r".*/([0-9a-f]{64})\.tar", obj["Key"])
            if not m:
                continue
            uri = StoreURI(bucket, obj["Key"], m.group(1), int(obj["Size"]))
            stored = head(s3, uri)
            if stored is not None:
                found.append(stored)
    found.sort(key=lambda s: s.record.version if s.record and s.record.version else 0, reverse=True)
    return found


def read_manifest(s3: Any, uri: StoreURI, limit: int = 1 << 20) -> dict[str, Any] | None:
    """The archive's ``manifest.json`` (its first member) from its first ``limit`` bytes;
    None when it cannot be read there."""
    import io
    import json
    import tarfile

    try:
        body = s3.get_object(Bucket=uri.bucket, Key=uri.key, Range=f"bytes=0-{limit - 1}")
        head_bytes = body["Body"].read()
    except Exception as exc:
        if is_client_error(exc):
            return None
        raise
    try:
        with tarfile.open(fileobj=io.BytesIO(head_bytes), mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    handle = tar.extractfile(member)
                    data = json.loads(handle.read()) if handle else None
                    return data if isinstance(data, dict) else None
                return None
    except (tarfile.TarError, ValueError, OSError):
        return None
    return None


def stored_versions(s3: Any, bucket: str, layer_name: str) -> list[int]:
    """The model versions (vN) stored under the model layer's prefix in ``bucket``."""
    return sorted(
        s.record.version for s in listed(s3, bucket, layer_name) if s.record and s.record.version
    )


def delete(s3: Any, uri: StoreURI) -> None:
    s3.delete_object(Bucket=uri.bucket, Key=uri.key)
