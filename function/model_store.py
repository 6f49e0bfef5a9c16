"""Fetch a model archive from the model store (S3) named by ``MODEL_URI``.

The contract is docs/CONTRACTS.md, "The model store (S3)": ``MODEL_URI`` is
``s3://<bucket>/<key>#sha256=<hex64>&size=<bytes>`` and the object an uncompressed tar holding
``manifest.json`` and the model files at its root. :func:`fetch` unpacks it into
``<tempdir>/mlayer-model/<sha256>/`` (tempdir: ``TMPDIR``, else ``/tmp``) and returns that
directory for ``model.load``:

* before the first request, the file system must have room for the archive's size;
* the ranged GETs of boto3's transfer manager are written, in order, into a non-seekable
  writer that unpacks each chunk as it comes, on s3transfer's I/O thread (``tar_stream``:
  the tar headers parsed there, each member's bytes written straight to its file), and hands
  it to a hashing thread: download, unpacking and hashing overlap, each byte is copied once
  (to its file) and hashed once, and the archive itself never lands on disk;
* members are unpacked into a staging directory (regular files only: absolute names, ``..``,
  links, devices and directory entries refused); only when the sha256 and the size of every
  byte received match ``MODEL_URI`` is it renamed into place and marked complete, so a
  re-init in the same execution environment (its ``/tmp`` survives) reuses it. Anything else
  removes the staging directory and raises :class:`model.ModelLoadError` with the reason and
  the fix.

:func:`start_fetch` runs :func:`fetch` in a background thread, so the init can import numpy
and scikit-learn while the bytes arrive. boto3 is imported only here, only when a fetch
starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from model import ModelLoadError
from tar_stream import Malformed, Refused, TarUnpacker

STORE_DIR = "mlayer-model"
MARKER = ".mlayer-verified"  # in the final directory: its contents were verified
MIB = 1_048_576

# The transfer manager's part size and concurrency on S3. AWS's performance guidelines
# ("Use byte-range fetches", docs.aws.amazon.com/whitepapers/latest/
# s3-optimizing-performance-best-practices) give 8 or 16 MB as the typical range size, best
# aligned with the object's upload parts (boto3 uploads in 8 MiB parts by default): 8 MiB parts
# over 10 connections. The in-order writer holds parts that arrive ahead of the next byte in
# memory, about concurrency x part size (80 MiB) at worst, which bigger parts would multiply.
PART_BYTES = 8 * MIB
CONCURRENCY = 10
# On a loopback endpoint (moto_server in mlayer's local runs) the archive comes in one GET:
# moto_server reads the whole object again for every ranged GET, so parts are quadratic there.
# Measured on moto_server (this machine, 2 cores): 106 MB in 1.18 s with 8 MiB parts, 0.45 s
# with 64 MiB parts, 0.36 s in one GET; 1,047 MB in 113 s with 8 MiB parts, 15.5 s with
# 64 MiB parts, 5.3 s in one GET.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# s3transfer reads the response and calls the writer in IO_CHUNK pieces (its default: 256 KiB),
# at most IO_QUEUE of them waiting for the writer (the default's 100 x 256 KiB, in bytes); the
# writer hands each to the hashing thread, which holds up to HASH_QUEUE of them (16 MiB).
# Measured fetching 1 GB from moto_server (bench/store_fetch.py, this 2-core machine): 1 MiB
# pieces take a third less CPU to read than 256 KiB ones; hashing on a thread of its own, beside
# the unpacker writing files, 2.1 s instead of 2.8 s with both on s3transfer's I/O thread.
IO_CHUNK = MIB
IO_QUEUE = 25
HASH_QUEUE = 16
# How every message that blames the object ends: the one fix is a fresh publish and deploy.
REPUBLISH = (
    "publish the model again with mlayer publish-model <model> --store s3 --bucket <bucket>, "
    "which uploads the archive and sets the function's MODEL_URI"
)

_URI = re.compile(r"^s3://(?P<bucket>[^/#?]+)/(?P<key>[^#]+)#(?P<fragment>.*)$")


@dataclass(frozen=True)
class ModelUri:
    """A parsed ``MODEL_URI``."""

    bucket: str
    key: str
    sha256: str
    size: int

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}#sha256={self.sha256}&size={self.size}"


@dataclass(frozen=True)
class Fetched:
    """A model directory from the store, and what getting it cost.

    ``fetch_ms`` is the whole fetch (download, unpacking and verification overlap in it),
    ``unpack_ms`` the time spent reading tar headers and writing files (not waiting for
    bytes), ``verify_ms`` the time spent hashing; all 0 but ``fetch_ms`` when ``reused``.
    """

    uri: str
    directory: Path
    size: int
    fetch_ms: float
    unpack_ms: float
    verify_ms: float
    reused: bool

    def describe(self) -> dict[str, Any]:
        """The ``store`` figures of the "model loaded" log line."""
        return {
            "uri": self.uri,
            "bytes": self.size,
            "fetch_ms": self.fetch_ms,
            "unpack_ms": self.unpack_ms,
            "verify_ms": self.verify_ms,
            "reused": self.reused,
        }


def parse_uri(text: str) -> ModelUri:
    """Parse ``s3://<bucket>/<key>#sha256=<hex64>&size=<bytes>``.

    Raises:
        ModelLoadError: naming what is malformed.
    """
    fix = (
        "set it to s3://<bucket>/<key>#sha256=<hex64>&size=<bytes> as mlayer deploy-function "
        "writes it (from the archive's manifest in layers/)"
    )
    match = _URI.match(text.strip())
    if not match:
        raise ModelLoadError(f"MODEL_URI {text!r} is not s3://<bucket>/<key>#...: {fix}")
    fields = parse_qs(match["fragment"], keep_blank_values=True)
    sha = fields.get("sha256", [""])
    size = fields.get("size", [""])
    if len(sha) != 1 or not re.fullmatch(r"[0-9a-f]{64}", sha[0]):
        raise ModelLoadError(
            f"MODEL_URI {text!r} has no sha256=<64 lowercase hex digits> after '#': {fix}"
        )
    if len(size) != 1 or not re.fullmatch(r"[0-9]+", size[0]) or int(size[0]) == 0:
        raise ModelLoadError(
            f"MODEL_URI {text!r} has no size=<bytes> (a positive whole number) after '#': {fix}"
        )
    return ModelUri(match["bucket"], unquote(match["key"]), sha[0], int(size[0]))


def store_root() -> Path:
    """``<tempdir>/mlayer-model``: tempfile honours ``TMPDIR``, the local emulator's per
    environment ``/tmp``."""
    return Path(tempfile.gettempdir()) / STORE_DIR


def fetch(uri: str | ModelUri, root: Path | None = None, *, client: Any = None) -> Fetched:
    """Fetch, verify and unpack the archive ``uri`` names; reuse it when already here.

    Args:
        uri: ``MODEL_URI``'s value, or a parsed one.
        root: where model directories go (default :func:`store_root`).
        client: a boto3 S3 client (default: one for the environment's region and
            ``AWS_ENDPOINT_URL``).

    Returns:
        the model directory ``<root>/<sha256>`` and the figures of the fetch.

    Raises:
        ModelLoadError: a malformed URI, no room, a missing bucket or object, no access, a
            network failure, a size or sha256 that does not match, or an unsafe member.
    """
    started = time.perf_counter()
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    root = root if root is not None else store_root()
    final = root / parsed.sha256
    if _verified(final, parsed):
        return Fetched(str(parsed), final, parsed.size, _ms(started), 0.0, 0.0, True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root, final)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot prepare {root} for the model from the store: {exc}. The function's "
            "temporary directory (/tmp) must be writable"
        ) from None
    _check_room(root, parsed)
    if client is None:
        client = _client()
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=root))
    try:
        unpack_ms, verify_ms = _download_and_unpack(client, parsed, staging)
        _put_in_place(staging, final, parsed)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(
            f"cannot put the verified model from {parsed.bucket}/{parsed.key} in place at "
            f"{final}: {exc}. The function's temporary directory (/tmp) must be writable"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Fetched(str(parsed), final, parsed.size, _ms(started), unpack_ms, verify_ms, False)


class PendingFetch:
    """A :func:`fetch` running in a background thread; :meth:`result` joins it."""

    def __init__(self, uri: str | ModelUri, root: Path | None, client: Any) -> None:
        self._result: Fetched | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(uri, root, client), name="mlayer-model-fetch", daemon=True
        )
        self._thread.start()

    def _run(self, uri: str | ModelUri, root: Path | None, client: Any) -> None:
        try:
            self._result = fetch(uri, root, client=client)
        except BaseException as exc:  # handed to the thread that joins
            self._error = exc

    def done(self) -> bool:
        """True once the fetch has finished (either way)."""
        return not self._thread.is_alive()

    def result(self) -> Fetched:
        """Wait for the fetch; its :class:`Fetched`, or its error raised here.

        Raises:
            ModelLoadError: as :func:`fetch`.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def start_fetch(
    uri: str | ModelUri, root: Path | None = None, *, client: Any = None
) -> PendingFetch:
    """Start :func:`fetch` in a background thread and return at once.

    A malformed URI is raised here, before any thread starts.
    """
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    return PendingFetch(parsed, root, client)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _verified(final: Path, uri: ModelUri) -> bool:
    try:
        marker = json.loads((final / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == uri.sha256


def _remove_leftovers(root: Path, final: Path) -> None:
    """An unmarked final directory (the init died between the rename and the marker) and
    the staging directories of processes that are gone: they hold /tmp's room."""
    if final.exists():
        shutil.rmtree(final)
    for path in root.glob(".staging-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_room(root: Path, uri: ModelUri) -> None:
    """The unpacked files take at most the archive's size (headers and padding are dropped)."""
    usage = shutil.disk_usage(root)
    if usage.free >= uri.size:
        return
    needed_total = -(-(usage.used + uri.size) // MIB)
    raise ModelLoadError(
        f"no room for the model from the store: it needs {uri.size / MIB:.1f} MB in {root} "
        f"and {usage.free / MIB:.1f} MB are free (of {usage.total / MIB:.1f} MB). Give the "
        f"function at least {needed_total} MB of ephemeral storage: mlayer deploy-function "
        f"--ephemeral-storage {needed_total} (the function's EphemeralStorage size)"
    )


def _client() -> Any:
    import boto3
    from botocore.config import Config

    # One connection per concurrent part; botocore's default pool is 10.
    return boto3.client(
        "s3",
        config=Config(
            max_pool_connections=CONCURRENCY,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def transfer_config(size: int, client: Any) -> Any:
    """The boto3 ``TransferConfig`` :func:`fetch` downloads a ``size``-byte archive with
    through ``client``: :data:`PART_BYTES` parts over :data:`CONCURRENCY` connections, or one
    GET when ``client``'s endpoint is a loopback address (see :data:`LOOPBACK_HOSTS`); the
    bytes handed over in :data:`IO_CHUNK` pieces."""
    from boto3.s3.transfer import TransferConfig

    part = PART_BYTES
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) or ""
    host = urlsplit(endpoint).hostname or ""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        part = max(size + 1, PART_BYTES)  # over the multipart threshold: one GET
    settings: dict[str, Any] = {
        "multipart_threshold": part,
        "multipart_chunksize": part,
        "max_concurrency": CONCURRENCY,
        "io_chunksize": IO_CHUNK,
        "max_io_queue": IO_QUEUE,
    }
    try:
        # The classic (s3transfer) manager, whose in-order non-seekable writes and settings
        # are the ones described above: the CRT one (chosen by itself on some instance types
        # when awscrt is installed) may ignore these settings.
        return TransferConfig(preferred_transfer_client="classic", **settings)
    except TypeError:  # a boto3 older than the option: classic is all it has
        return TransferConfig(**settings)


class _TooBig(Exception):
    """More bytes arrived than MODEL_URI's size."""


class _Hasher:
    """The sha256 of the stream, computed on a thread of its own.

    hashlib lets go of the GIL while it hashes, as ``os.write`` does while the unpacker
    writes: on a thread of its own, hashing runs beside the writing instead of after it. The
    chunks are s3transfer's ``bytes`` (immutable: handed over, not copied); at most
    :data:`HASH_QUEUE` of them wait, then the writer (and so the download) waits.
    """

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.seconds = 0.0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE)
        self._thread = threading.Thread(target=self._run, name="mlayer-model-hash", daemon=True)
        self._thread.start()

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            started = time.perf_counter()
            self.digest.update(data)
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        """Hash what is queued and stop (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()


class _Writer:
    """The file s3transfer downloads the archive into: counted, hashed and unpacked in one pass.

    s3transfer calls :meth:`write` from its I/O thread with the object's bytes in order (a
    non-seekable target: ``DownloadNonSeekableOutputManager`` reorders the ranged GETs). Each
    chunk goes whole to the hasher and to the unpacker, which writes the members' bytes to
    their files. The first unpacking error is kept and the rest of the stream only counted
    and hashed (nothing more is written): a sha256 that does not match says more than it.
    """

    def __init__(self, size: int, unpacker: TarUnpacker) -> None:
        self.expected = size
        self.unpacker = unpacker
        self.hasher = _Hasher()
        self.received = 0
        self.unpack_seconds = 0.0
        self.error: Exception | None = None

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        size = len(data)
        if self.received + size > self.expected:
            self.received += size
            raise _TooBig()  # stops the download: its error says how far it got
        self.received += size
        self.hasher.update(data if isinstance(data, bytes) else bytes(data))
        if self.error is None:
            started = time.perf_counter()
            try:
                self.unpacker.feed(data)
            except Exception as exc:  # reported once the whole object is verified
                self.error = exc
                self.unpacker.close()
            self.unpack_seconds += time.perf_counter() - started
        return size

    def close(self) -> None:
        self.unpacker.close()
        self.hasher.close()


def _download_and_unpack(client: Any, uri: ModelUri, staging: Path) -> tuple[float, float]:
    """Stream the object into ``staging``; (unpack_ms, verify_ms) once sha256 and size match."""
    writer = _Writer(uri.size, TarUnpacker(staging))
    download_error: Exception | None = None
    try:
        client.download_fileobj(
            uri.bucket, uri.key, writer, Config=transfer_config(uri.size, client)
        )
    except Exception as exc:  # an interrupt stops the download (s3transfer) and goes through
        download_error = exc
    finally:
        writer.close()
    if download_error is not None:
        raise _download_failure(download_error, uri, writer, client) from None
    if writer.received != uri.size:
        raise ModelLoadError(
            f"the object s3://{uri.bucket}/{uri.key} is {writer.received:,} bytes but MODEL_URI "
            f"says size={uri.size:,}: it is not the archive this function version was "
            f"deployed with: {REPUBLISH}"
        )
    actual = writer.hasher.hexdigest()
    if actual != uri.sha256:
        raise ModelLoadError(
            f"the object s3://{uri.bucket}/{uri.key} has sha256 {actual} but MODEL_URI "
            f"expects {uri.sha256}: it was changed after publishing, or damaged on the way. "
            f"Nothing was loaded: {REPUBLISH}"
        )
    if writer.error is None:
        try:
            writer.unpacker.finish()
        except Malformed as exc:
            writer.error = exc
    if writer.error is not None:
        raise _unpack_failure(writer.error, uri, staging)
    return (
        round(writer.unpack_seconds * 1000, 2),
        round(writer.hasher.seconds * 1000, 2),
    )


def _unpack_failure(exc: Exception, uri: ModelUri, staging: Path) -> ModelLoadError:
    """Why an archive whose sha256 and size match could not be unpacked, and the fix."""
    where = f"s3://{uri.bucket}/{uri.key}"
    if isinstance(exc, Refused):
        return ModelLoadError(
            f"the archive {where} has {exc}: it is not unpacked (the model store's archives "
            f"hold regular files only); {REPUBLISH}"
        )
    if isinstance(exc, Malformed):
        return ModelLoadError(f"cannot unpack {where} into {staging.parent}: {exc}; {REPUBLISH}")
    return ModelLoadError(
        f"cannot unpack {where} into {staging.parent}: {type(exc).__name__}: {exc}"
    )


def _put_in_place(staging: Path, final: Path, uri: ModelUri) -> None:
    try:
        os.rename(staging, final)
    except OSError:
        if not _verified(final, uri):  # not another process of this environment's doing
            raise
        shutil.rmtree(staging, ignore_errors=True)
        return
    (final / MARKER).write_text(
        json.dumps({"sha256": uri.sha256, "size": uri.size, "uri": str(uri)}), encoding="utf-8"
    )


def _download_failure(
    exc: BaseException, uri: ModelUri, writer: _Writer, client: Any
) -> ModelLoadError:
    """A botocore / s3transfer error as the reason the init failed and the fix."""
    where = f"s3://{uri.bucket}/{uri.key}"
    if isinstance(exc, _TooBig):
        return ModelLoadError(
            f"the object {where} is larger than MODEL_URI's size={uri.size:,} (at least "
            f"{writer.received:,} bytes; the download was stopped there): it is not the archive "
            f"this function version was deployed with: {REPUBLISH}"
        )
    if isinstance(exc, ModelLoadError):
        return exc
    code, status = _error_code(exc)
    region = os.environ.get("AWS_REGION", "its region")
    if code == "NoSuchBucket":
        return ModelLoadError(
            f"the bucket {uri.bucket!r} of MODEL_URI does not exist (seen from {region}): "
            f"{REPUBLISH}, or set MODEL_URI to the bucket the archive is in"
        )
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        if _bucket_missing(client, uri):
            return _download_failure(_with_code("NoSuchBucket"), uri, writer, client)
        return ModelLoadError(
            f"the model archive {where} does not exist (the bucket does): it was deleted "
            f"(mlayer prune?) or never uploaded: {REPUBLISH}, or roll back to a function "
            "version whose model is there"
        )
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
        return ModelLoadError(
            f"access to the model archive {where} is denied: the function's execution role "
            f"needs s3:GetObject on arn:aws:s3:::{uri.bucket}/{uri.key} (and s3:ListBucket "
            f"on arn:aws:s3:::{uri.bucket} for a clear 'does not exist'); mlayer "
            "deploy-function grants both"
        )
    if code:
        return ModelLoadError(
            f"cannot download the model archive {where}: {code}: {exc}. Check MODEL_URI and "
            "the function's access to the bucket"
        )
    return ModelLoadError(
        f"cannot download the model archive {where}: {type(exc).__name__}: {exc}. S3 was "
        "not reachable: a function in a VPC needs an S3 gateway endpoint or a NAT gateway; "
        "the init is retried"
    )


def _error_code(exc: BaseException) -> tuple[str | None, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and cause is not exc:
            return _error_code(cause)
        return None, None
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = error.get("Code")
    return (str(code) if code else None), (int(status) if status else None)


def _with_code(code: str) -> BaseException:
    error = Exception(code)
    error.response = {"Error": {"Code": code}}  # type: ignore[attr-defined]
    return error


def _bucket_missing(client: Any, uri: ModelUri) -> bool:
    """s3transfer's HeadObject answers a bare 404 for a missing bucket and a missing key
    alike; HeadBucket tells them apart (only on this failure path)."""
    try:
        client.head_bucket(Bucket=uri.bucket)
    except Exception as error:  # the bucket's absence is all this asks
        code, status = _error_code(error)
        return code in ("404", "NoSuchBucket", "NotFound") or status == 404
    return False
