"""Deterministic zips and model tars, sizes, hashes, and Lambda's size budgets.

Layer zips must be byte-identical for identical inputs: publishing dedupes on the zip's
sha256, and a rebuild that changes nothing must not look like a new layer. So entries are
sorted by path, every entry gets the same timestamp (1980-01-01, the zip epoch) and one of
two modes (0o755 for executables, 0o644 otherwise), and nothing of the build machine (owner,
mtime, umask, directory order) reaches the archive.

The budget helpers are shared by ``build-deps`` / ``build-model`` (warn early) and the
publish commands (refuse before calling AWS). :func:`unsafe_entry` is what the publish
commands check every entry of a zip with before anything reaches AWS: Lambda unpacks a
layer into ``/opt`` as it is, so an entry that climbs out (``../``), is absolute, is a
symlink or shadows another of the same name must never be published.

:func:`write_model_tar` writes the model store's archive (docs/CONTRACTS.md, "The model
store"): the same determinism for an uncompressed tar, which the function unpacks while it
downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

# Lambda's limits. The quotas page (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html)
# says "250 MB" and "50 MB"; the API counts 2^20-byte megabytes ("Unzipped size must be
# smaller than 262144000 bytes", "Function code combined with layers exceeds the maximum
# allowed size of 262144000 bytes"): 250 MiB and 50 MiB.
UNZIPPED_LIMIT = 262_144_000  # function + all its layers, unzipped: 250 MiB
DIRECT_UPLOAD_LIMIT = 52_428_800  # "50 MiB zipped", as AWS states it (see REQUEST_LIMIT)
# What the direct-upload limit is in fact: Lambda rejects a request body over this many
# bytes, and a direct upload sends the zip base64-encoded inside the JSON body, so the
# largest zip that fits is a little under 50 MiB (52,428,800 bytes, whose base64 alone is
# 69,905,068 bytes). needs_s3 is the one place that decides; builds, publishes and deploys
# all ask it.
REQUEST_LIMIT = 69_905_067
# The widest JSON mlayer sends around a layer zip (a layer name of 140 characters, a full
# 256-character Description, every runtime and both architectures): a build cannot know
# the publish's exact request, so its note assumes this one.
_WIDEST_PUBLISH = {
    "LayerName": "x" * 140,
    "Description": "x" * 256,
    "CompatibleRuntimes": ["python3.10", "python3.11", "python3.12", "python3.13"],
    "CompatibleArchitectures": ["x86_64", "arm64"],
}

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
EXEC_MODE = 0o755
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipResult:
    """What :func:`write_zip` produced."""

    path: Path
    sha256: str
    zip_bytes: int
    unzipped_bytes: int
    files: int


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (symlinks to files included), sorted by relative path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    for _, path in sorted(found):
        yield path


def write_zip(
    sources: Iterable[tuple[Path, str]] | Path,
    zip_path: Path,
    *,
    prefix: str = "",
    compresslevel: int = 9,
    encoder: str = "deflate",
    zopfli_min_bytes: int | None = None,
) -> ZipResult:
    """Write a deterministic zip.

    Args:
        sources: a directory (all its files, under ``prefix``) or ``(file, arcname)`` pairs.
        zip_path: the zip to (over)write; written to a temporary name and renamed, so a
            failed build never leaves a half-written zip under the final name.
        prefix: a folder inside the zip for a directory source, e.g. ``"python"``.
        compresslevel: deflate level (Lambda accepts deflate and stored entries only).
        encoder: ``"deflate"`` (zlib at ``compresslevel``) or ``"zopfli"`` (smaller
            deflate streams, see :func:`write_zip_zopfli`; needs the optional ``zopfli``
            module) for the files of ``zopfli_min_bytes`` and more (default
            :data:`ZOPFLI_MIN_BYTES`).

    Returns:
        the zip's path, sha256, zipped and unzipped sizes and file count.
    """
    if isinstance(sources, Path):
        root = sources
        pairs = [
            (path, _join(prefix, path.relative_to(root).as_posix())) for path in iter_files(root)
        ]
    else:
        pairs = [(path, _join(prefix, name)) for path, name in sources]
    pairs.sort(key=lambda pair: pair[1])
    names = [name for _, name in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate entries in zip sources")
    if encoder not in ZIP_ENCODERS:
        raise ValueError(f"unknown zip encoder {encoder!r}; choose {', '.join(ZIP_ENCODERS)}")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    if encoder == "zopfli":
        unzipped = write_zip_zopfli(pairs, tmp, min_bytes=zopfli_min_bytes)
        return _replace(tmp, zip_path, unzipped, len(pairs))
    unzipped = 0
    with zipfile.ZipFile(
        tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
    ) as archive:
        for path, name in pairs:
            entry = _entry(name, bool(os.stat(path).st_mode & stat.S_IXUSR), compresslevel)
            with open(path, "rb") as src:
                unzipped += _copy(src, archive, entry)
    return _replace(tmp, zip_path, unzipped, len(pairs))


# --------------------------------------------------------------------------- zopfli

# zopfli (PyPI ``zopfli``, the ``mlayer[zopfli]`` extra) writes standard deflate streams,
# a few percent smaller than zlib's level 9, at a hundred times the time: any unzip reads
# them, Lambda's included. Measured on the python3.13 x86_64 layer of the current pins
# (bench/layer_size.py --encoders, 2026-11-30; level 9: 54,217,864 bytes, 3.4% over what a
# direct upload takes): on the files of 256 KiB and more (the shared libraries, most of
# the bytes) it saves 2.4% in about a quarter of the time of every file; on every file
# 3.6%, the only way under (by 0.33%). So ``--zip-encoder auto`` uses it on the large files
# when that is enough (level 9 over by at most ZOPFLI_SAVES_LARGE, or under by less than
# NEAR_LIMIT: a pin bump away), ``--zip-encoder zopfli`` on every file.
ZOPFLI_MIN_BYTES = 256 * 1024
ZOPFLI_SAVES_LARGE = 0.024
ZOPFLI_SAVES_ALL = 0.036
NEAR_LIMIT = 0.01
ZOPFLI_ITERATIONS = 1
ZOPFLI_BLOCK_SPLITS = 15  # zopfli's own default: 50 saves 0.25% more at twice the time
ZIP_ENCODERS = ("deflate", "zopfli")
ZIP_ENCODER_CHOICES = ("auto", *ZIP_ENCODERS)


@dataclass(frozen=True)
class ZipEncoding:
    """How to zip a layer: the encoder, zopfli's smallest file, and why (None: nothing to say)."""

    encoder: str  # "deflate" | "zopfli"
    zopfli_min_bytes: int = 0
    why: str | None = None


def choose_zip_encoder(
    deflate_bytes: int, requested: str, *, available: bool, limit: int | None = None
) -> ZipEncoding:
    """How a layer zip should be written, given its size at deflate level 9.

    ``requested``: ``auto``, ``deflate`` or ``zopfli`` (every file); ``available``: whether
    zopfli is installed; ``limit``: the largest zip a direct upload takes (default
    :func:`largest_direct_zip`). ``auto`` takes zopfli on the files of
    :data:`ZOPFLI_MIN_BYTES` and more only when level 9 is over the limit by at most what
    that saves, or under it by less than :data:`NEAR_LIMIT`.
    """
    install = "pip install 'mlayer[zopfli]'"
    if requested == "deflate":
        return ZipEncoding("deflate")
    if requested == "zopfli":
        if available:
            return ZipEncoding("zopfli", 0, "--zip-encoder zopfli (every file)")
        return ZipEncoding(
            "deflate", why=f"--zip-encoder zopfli, but zopfli is not installed ({install})"
        )
    limit = largest_direct_zip() if limit is None else limit
    if deflate_bytes <= limit * (1 - NEAR_LIMIT):
        return ZipEncoding("deflate")
    over = (deflate_bytes - limit) / limit
    where = (
        f"deflate level 9 gives {deflate_bytes:,} bytes, "
        + (f"{over:.1%} over" if over > 0 else f"within {NEAR_LIMIT:.0%} of")
        + f" what a direct upload takes ({limit:,})"
    )
    if over > ZOPFLI_SAVES_LARGE:
        reach = (
            f"--zip-encoder zopfli (every file, about {ZOPFLI_SAVES_ALL:.1%} smaller, many "
            "minutes) may bring it under"
            if over <= ZOPFLI_SAVES_ALL
            else "no lossless encoder brings it under"
        )
        return ZipEncoding(
            "deflate",
            why=f"{where}, more than zopfli on the large files saves (about "
            f"{ZOPFLI_SAVES_LARGE:.1%}): publishing goes through S3; {reach}",
        )
    if not available:
        return ZipEncoding(
            "deflate",
            why=f"{where}; zopfli (about {ZOPFLI_SAVES_LARGE:.1%} smaller) would bring it under: "
            f"{install} and rebuild",
        )
    return ZipEncoding(
        "zopfli",
        ZOPFLI_MIN_BYTES,
        f"{where}: zopfli on the files of {ZOPFLI_MIN_BYTES // 1024} KiB and more",
    )


def zopfli_available() -> bool:
    """Whether the optional ``zopfli`` module can be imported."""
    import importlib.util

    return importlib.util.find_spec("zopfli") is not None


def zopfli_deflate(
    data: bytes, iterations: int = ZOPFLI_ITERATIONS, block_splits: int = ZOPFLI_BLOCK_SPLITS
) -> bytes:
    """``data`` as a raw deflate stream (what a zip entry holds) written by zopfli.

    Raises:
        ImportError: zopfli is not installed (``pip install 'mlayer[zopfli]'``).
    """
    from zopfli import zopfli as _zopfli

    # A zlib container: a 2-byte header (no preset dictionary) and an Adler-32 trailer
    # around the raw deflate stream.
    wrapped: bytes = _zopfli.compress(
        data, numiterations=iterations, blocksplittingmax=block_splits, gzip_mode=0
    )
    if len(wrapped) < 6 or wrapped[1] & 0x20:
        raise ValueError("zopfli returned no zlib container")
    return wrapped[2:-4]


def deflate9(data: bytes) -> bytes:
    """``data`` as zlib's level-9 raw deflate stream (what :func:`write_zip` writes)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_END_RECORD = struct.Struct("<4s4H2LH")
_DOS_DATE = (ZIP_EPOCH[0] - 1980) << 9 | ZIP_EPOCH[1] << 5 | ZIP_EPOCH[2]
_DOS_TIME = ZIP_EPOCH[3] << 11 | ZIP_EPOCH[4] << 5 | ZIP_EPOCH[5] // 2
_UTF8_NAME = 0x800


def _zopfli_entry(
    path: Path, min_bytes: int, iterations: int, block_splits: int
) -> tuple[int, int, bytes]:
    """(crc32, size, smallest deflate stream) of one file."""
    data = path.read_bytes()
    payload = deflate9(data)
    if len(data) >= min_bytes:
        candidate = zopfli_deflate(data, iterations, block_splits)
        if len(candidate) < len(payload):
            payload = candidate
    return zlib.crc32(data), len(data), payload


def write_zip_zopfli(
    pairs: list[tuple[Path, str]],
    zip_path: Path,
    *,
    min_bytes: int | None = None,
    iterations: int = ZOPFLI_ITERATIONS,
    block_splits: int = ZOPFLI_BLOCK_SPLITS,
    jobs: int | None = None,
) -> int:
    """Write ``pairs`` (sorted, unique arcnames) as a zip whose entries hold precompressed
    deflate streams: zopfli's for files of ``min_bytes`` (default :data:`ZOPFLI_MIN_BYTES`) or more, zlib level 9 for the rest,
    whichever is smaller for each file. Returns the unzipped bytes.

    The headers are :func:`write_zip`'s (the zip epoch, 0o644 / 0o755, Unix, deflated,
    version 2.0; with no file over ``min_bytes`` the zip is byte for byte :func:`write_zip`'s),
    written here because :mod:`zipfile` compresses what it writes and cannot take a stream
    compressed elsewhere. No zip64: a layer is far below 4 GiB and 65,535 entries (checked).
    Files are compressed in ``jobs`` threads (default: one per CPU; zopfli releases the
    GIL) and written in order, so the zip is the same whatever ``jobs`` is.
    """
    from concurrent.futures import ThreadPoolExecutor

    if len(pairs) >= 0xFFFF:
        raise ValueError(f"{len(pairs)} entries: too many for a zip without zip64")
    smallest = ZOPFLI_MIN_BYTES if min_bytes is None else min_bytes
    central: list[bytes] = []
    unzipped = 0
    with (
        open(zip_path, "wb") as out,
        ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool,
    ):
        entries = pool.map(
            lambda pair: _zopfli_entry(pair[0], smallest, iterations, block_splits), pairs
        )
        for (path, name), (crc, size, payload) in zip(pairs, entries, strict=True):
            unzipped += size
            info = _entry(name, bool(os.stat(path).st_mode & stat.S_IXUSR))
            try:
                encoded, flags = name.encode("ascii"), 0
            except UnicodeEncodeError:
                encoded, flags = name.encode("utf-8"), _UTF8_NAME
            offset = out.tell()
            if max(offset, size, len(payload)) >= 0xFFFFFFFF:
                raise ValueError(f"{name}: too large for a zip without zip64")
            # version 2.0 to extract, deflated, no data descriptor: sizes known up front
            local = (b"PK\x03\x04", 20, 0, flags, zipfile.ZIP_DEFLATED, _DOS_TIME, _DOS_DATE,
                     crc, len(payload), size, len(encoded), 0)  # fmt: skip
            out.write(_LOCAL_HEADER.pack(*local) + encoded + payload)
            made_by = (b"PK\x01\x02", 20, info.create_system, 20, 0, flags,
                       zipfile.ZIP_DEFLATED, _DOS_TIME, _DOS_DATE, crc, len(payload), size,
                       len(encoded), 0, 0, 0, 0, info.external_attr, offset)  # fmt: skip
            central.append(_CENTRAL_HEADER.pack(*made_by) + encoded)
        start = out.tell()
        for record in central:
            out.write(record)
        size = out.tell() - start
        out.write(_END_RECORD.pack(b"PK\x05\x06", 0, 0, len(pairs), len(pairs), size, start, 0))
    return unzipped


def _entry(name: str, executable: bool, compresslevel: int = 9) -> zipfile.ZipInfo:
    """A deterministic zip entry: the zip epoch, 0o644 or 0o755, deflated at ``compresslevel``."""
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # Unix, so that external_attr's mode is honoured
    info.external_attr = (stat.S_IFREG | (EXEC_MODE if executable else FILE_MODE)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    # ZipFile.open(info, "w") compresses at the entry's own level, not the archive's: an
    # entry without one is deflated at zlib's default, 6 (so every zip before this was).
    # The attribute is public from Python 3.13 (compress_level), private before.
    if hasattr(info, "compress_level"):
        info.compress_level = compresslevel
    else:
        info._compresslevel = compresslevel  # type: ignore[attr-defined]
    return info


def _copy(reader: IO[bytes], archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> int:
    """Write ``reader``'s bytes as ``entry``; returns how many."""
    written = 0
    with archive.open(entry, "w") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            written += len(chunk)
    return written


def _replace(tmp: Path, zip_path: Path, unzipped: int, files: int) -> ZipResult:
    """Move the finished ``tmp`` zip to ``zip_path`` and measure it."""
    os.replace(tmp, zip_path)
    return ZipResult(
        path=zip_path,
        sha256=sha256_file(zip_path),
        zip_bytes=zip_path.stat().st_size,
        unzipped_bytes=unzipped,
        files=files,
    )


def rerooted_zip(
    source: Path, zip_path: Path, old_root: str, new_root: str, *, compresslevel: int = 9
) -> ZipResult:
    """Copy the zip ``source`` to ``zip_path`` with its root folder ``old_root`` renamed
    ``new_root`` (``"model/"`` -> ``"shadow/"``), deterministically.

    The entries are written as :func:`write_zip` writes them (sorted, the zip epoch, 0o644 or
    0o755, deflated), from the same bytes: a zip written by :func:`write_zip` and rerooted
    there and back is byte for byte the zip it was, so a model layer zip and its shadow zip
    can each be rebuilt from the other.

    Raises:
        ValueError: an entry of ``source`` is not under ``old_root``.
    """
    with zipfile.ZipFile(source) as src:
        infos = sorted((i for i in src.infolist() if not i.is_dir()), key=lambda i: i.filename)
        outside = [i.filename for i in infos if not i.filename.startswith(old_root)]
        if outside:
            raise ValueError(f"{source}: entry {outside[0]!r} is not under {old_root}")
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = zip_path.with_name(zip_path.name + ".tmp")
        unzipped = 0
        with zipfile.ZipFile(
            tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel
        ) as out:
            for info in infos:
                entry = _entry(
                    new_root + info.filename[len(old_root) :],
                    bool((info.external_attr >> 16) & stat.S_IXUSR),
                    compresslevel,
                )
                with src.open(info) as reader:
                    unzipped += _copy(reader, out, entry)
    return _replace(tmp, zip_path, unzipped, len(infos))


class _HashingWriter:
    """A binary file that hashes and counts what is written to it (what tarfile needs)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self.size


MANIFEST = "manifest.json"


def write_model_tar(
    directory: Path, files: list[str], out: Path, *, manifest: Path | None = None
) -> tuple[str, int]:
    """Write the model store's archive: ``manifest.json`` first, then ``files`` sorted.

    Deterministic (the object key is the sha256): ustar headers (pax only for a name over
    100 bytes), mtime 0, uid/gid 0, mode 0644, no owner names, no directory entries.
    Uncompressed, so the function can memory-map the joblib files it unpacks. Each file is
    copied in 1 MiB chunks and hashed as it is written: a 1 GB model is never in memory.

    Args:
        directory: where the files are.
        files: the archive's members, paths relative to ``directory`` (``/``-separated);
            ``manifest.json`` among them is written first.
        out: the tar to (over)write; written to a temporary name and renamed, so a failed
            build never leaves a half-written archive under the final name.
        manifest: the ``manifest.json`` to write first, when it is not in ``directory``
            (``mlayer build-model`` writes it to its staging directory).

    Returns:
        (the archive's sha256 hex, its size in bytes).

    Raises:
        ValueError: a name is absolute, climbs out (``..``), is given twice, or
            ``manifest.json`` is both listed and passed as ``manifest``.
    """
    names = [PurePosixPath(name).as_posix() for name in files]
    for name in names:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or "\\" in name:
            raise ValueError(f"model file {name!r} is not a relative path inside {directory}")
    if len(set(names)) != len(names):
        raise ValueError(
            "model files listed twice: "
            + ", ".join(sorted(set(name for name in names if names.count(name) > 1)))
        )
    pairs = [(directory / name, name) for name in sorted(names) if name != MANIFEST]
    if manifest is not None:
        if MANIFEST in names:
            raise ValueError(f"{MANIFEST} is both in the model files and passed as manifest")
        pairs.insert(0, (manifest, MANIFEST))
    elif MANIFEST in names:
        pairs.insert(0, (directory / MANIFEST, MANIFEST))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            writer = _HashingWriter(handle)
            with tarfile.TarFile(
                fileobj=writer,  # type: ignore[arg-type]  # write and tell are all it uses
                mode="w",
                format=tarfile.PAX_FORMAT,  # ustar headers unless a name needs pax
                copybufsize=_CHUNK,
            ) as archive:
                for path, name in pairs:
                    info = tarfile.TarInfo(name)
                    info.size = path.stat().st_size
                    info.mtime = 0
                    info.mode = FILE_MODE
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as source:
                        archive.addfile(info, source)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return writer.digest.hexdigest(), writer.size


def unsafe_entry(infos: Iterable[zipfile.ZipInfo]) -> str | None:
    """Why a zip's entries are not safe to unpack into ``/opt``, or None when they are.

    Refused: an absolute name (``/x``, ``\\x``, ``C:x``), a ``..`` component, a symlink
    (``S_IFLNK`` in the Unix mode of the external attributes), and two entries that unpack to
    the same path (``a/x`` twice, or ``a/x`` and ``a/./x``). Returns the first problem found,
    naming the entry.
    """
    seen: dict[str, str] = {}
    for info in infos:
        name = info.filename
        parts = re.split(r"[/\\]", name)
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            return f"entry {name!r} is an absolute path"
        if ".." in parts:
            return f"entry {name!r} climbs out of the zip's root (a '..' component)"
        if stat.S_ISLNK(info.external_attr >> 16):
            return f"entry {name!r} is a symbolic link"
        normal = "/".join(part for part in parts if part not in ("", "."))
        if normal in seen:
            other = seen[normal]
            same = "twice" if other == name else f"and as {other!r}"
            return f"entry {name!r} is in the zip {same} (duplicate names)"
        seen[normal] = name
    return None


def _join(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dir_size(root: Path) -> tuple[int, int]:
    """(bytes, files) of every regular file under ``root``; (0, 0) when it does not exist."""
    total = count = 0
    if root.exists():
        for path in iter_files(root):
            total += path.stat().st_size
            count += 1
    return total, count


def zip_unzipped_size(zip_path: Path) -> int:
    """Sum of the uncompressed sizes of a zip's entries (what Lambda counts)."""
    with zipfile.ZipFile(zip_path) as archive:
        return sum(info.file_size for info in archive.infolist())


MIB = 1_048_576


def mb(n_bytes: int | float) -> str:
    """A size for messages, in MiB (2^20 bytes) with one decimal: ``"162.0 MiB"``.

    Every size mlayer prints meets one of Lambda's limits, and those are whole MiB (250 MiB
    unzipped, 50 MiB zipped): in MiB they read as AWS states them, and the label says so.
    """
    return f"{n_bytes / MIB:.1f} MiB"


@dataclass(frozen=True)
class BudgetPart:
    """One part of what a function loads: the function code or one layer."""

    name: str
    unzipped_bytes: int


@dataclass
class Budget:
    """The unzipped total of a function and its layers against Lambda's 250 MiB."""

    parts: list[BudgetPart]
    limit: int = UNZIPPED_LIMIT
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(part.unzipped_bytes for part in self.parts)

    @property
    def over_by(self) -> int:
        return max(0, self.total - self.limit)

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def shares(self) -> list[tuple[str, int, float]]:
        """(name, bytes, percent of the limit) for each part."""
        return [
            (part.name, part.unzipped_bytes, 100.0 * part.unzipped_bytes / self.limit)
            for part in self.parts
        ]

    def describe(self) -> str:
        """One line: each part's share and the total against the limit."""
        parts = ", ".join(f"{name} {mb(size)} ({pct:.0f}%)" for name, size, pct in self.shares())
        verdict = "fits" if self.fits else f"over by {mb(self.over_by)}"
        return f"{parts}; total {mb(self.total)} of {mb(self.limit)}: {verdict}"


def direct_request_bytes(zip_bytes: int, params: dict[str, Any]) -> int:
    """The size of a request carrying a zip of ``zip_bytes`` inline (base64 in the JSON body)
    beside ``params``."""
    envelope = json.dumps({**params, "Content": {"ZipFile": ""}}, separators=(",", ":"))
    return len(envelope.encode()) + 4 * -(-zip_bytes // 3)


def needs_s3(zip_bytes: int, params: dict[str, Any] | None = None) -> bool:
    """True when a zip cannot be uploaded directly (its request over REQUEST_LIMIT) and must
    go through S3; ``params``: the request's other fields (default: the widest mlayer sends).
    """
    return direct_request_bytes(zip_bytes, params or _WIDEST_PUBLISH) > REQUEST_LIMIT


def largest_direct_zip(params: dict[str, Any] | None = None) -> int:
    """The largest zip a direct upload takes beside ``params`` (default: the widest)."""
    envelope = direct_request_bytes(0, params or _WIDEST_PUBLISH)
    return (REQUEST_LIMIT - envelope) // 4 * 3


def upload_note(zip_bytes: int, what: str = "layer") -> str | None:
    """What publishing a zip of this size involves, or None when a direct upload works."""
    if not needs_s3(zip_bytes):
        return None
    return (
        f"the {what} zip is {mb(zip_bytes)} ({zip_bytes:,} bytes), over what a direct upload "
        f"takes ({largest_direct_zip():,} bytes: Lambda's 50 MiB counts the request, the zip "
        "base64-encoded): publishing uploads it to S3 first (pass --bucket to the publish "
        "command)"
    )
