"""The streaming tar unpacker of the model store (function/tar_stream.py).

Archives come from ``mlayer.archive.write_model_tar`` (what the store serves) and, for what it
never writes, from ``tarfile``; every archive is fed in chunks of several sizes, since
s3transfer's chunks need not fall on the tar's 512-byte blocks.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from function_support import FUNCTION_DIR  # noqa: F401  (puts function/ on sys.path)

from mlayer.archive import write_model_tar
from tar_stream import BLOCK, Malformed, Refused, TarUnpacker

# A model set's layout, and every boundary case of the format: an empty file, files of
# exactly one and two blocks, names over 100 bytes (a pax header each), a name that is not
# ASCII (pax too), subdirectories.
LONG = "tenant-b/" + "nested-" * 12 + "stage-0001-of-a-very-long-pipeline.joblib"
FILES = {
    "manifest.json": b'{"name": "set"}',
    "set.json": b'{"models": ["tenant-a", "tenant-b"], "field": "tenant"}',
    "tenant-a/manifest.json": b"{}",
    "tenant-a/empty.bin": b"",
    "tenant-a/one-block.bin": os.urandom(BLOCK),
    "tenant-a/two-blocks.bin": os.urandom(2 * BLOCK),
    "tenant-a/odd.joblib": os.urandom(3 * BLOCK + 17),
    LONG: os.urandom(70_001),
    "tenant-b/modèle.joblib": os.urandom(999),
}
CHUNKS = {
    "whole": [1 << 30],
    "byte-by-byte-head": [1] * 2000 + [1 << 30],
    "511": [511],
    "512": [BLOCK],
    "513": [513],
    "256KiB": [256 * 1024],
    "random": [],  # drawn per test, seeded
}


def _archive(tmp_path: Path, files: dict[str, bytes] = FILES) -> bytes:
    source = tmp_path / "source"
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    out = tmp_path / "archive.tar"
    write_model_tar(source, list(files), out)
    return out.read_bytes()


def _feed(unpacker: TarUnpacker, data: bytes, chunks: list[int]) -> None:
    rng = random.Random(len(data))
    position = 0
    sizes = iter(chunks)
    while position < len(data):
        size = next(sizes, chunks[-1]) if chunks else rng.choice([1, 100, 511, 4096, 65_537])
        unpacker.feed(data[position : position + size])
        position += size


def _unpack(data: bytes, directory: Path, chunks: list[int] | None = None) -> TarUnpacker:
    directory.mkdir(parents=True, exist_ok=True)
    unpacker = TarUnpacker(directory)
    try:
        _feed(unpacker, data, chunks or CHUNKS["256KiB"])
        unpacker.finish()
    finally:
        unpacker.close()
    return unpacker


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("chunks", list(CHUNKS.values()), ids=list(CHUNKS))
def test_unpacks_what_write_model_tar_writes_as_tarfile_does(
    tmp_path: Path, chunks: list[int]
) -> None:
    # given the store's archive of a model set (pax long names, empty and block-sized files)
    data = _archive(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert any(member.pax_headers for member in archive)  # the pax path is exercised
        archive.extractall(tmp_path / "tarfile", filter="data")
    # when it is fed in chunks
    unpacker = _unpack(data, tmp_path / "streamed", chunks)
    # then every byte was read, and the files are byte for byte the sources and tarfile's
    assert unpacker.position == len(data)
    assert unpacker.members == len(FILES)
    assert _tree(tmp_path / "streamed") == FILES == _tree(tmp_path / "tarfile")


def test_a_corrupt_header_checksum_is_refused(tmp_path: Path) -> None:
    # given the archive with one byte of its second header's name changed (manifest.json's
    # 15 bytes take one block: the second header is at byte 1,024)
    data = bytearray(_archive(tmp_path))
    assert data[1024:1032] == b"set.json"
    data[1024] = ord("S")
    # when it is unpacked: a clear error, after the first member
    with pytest.raises(Malformed) as caught:
        _unpack(bytes(data), tmp_path / "out")
    assert str(caught.value) == (
        "the tar header at byte 1,024 has a wrong checksum: the object is not a tar archive as "
        "mlayer writes them"
    )
    assert _tree(tmp_path / "out") == {"manifest.json": FILES["manifest.json"]}


def test_not_a_tar_at_all(tmp_path: Path) -> None:
    with pytest.raises(Malformed, match=r"^the tar header at byte 0 has a wrong checksum"):
        _unpack(b"PK\x03\x04 a zip, say" * 100, tmp_path / "out")


def _with_member(add: Callable[[tarfile.TarFile], None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        manifest = tarfile.TarInfo("manifest.json")
        manifest.size = 2
        archive.addfile(manifest, io.BytesIO(b"{}"))
        add(archive)
        after = tarfile.TarInfo("after.bin")
        after.size = 5
        archive.addfile(after, io.BytesIO(b"after"))
    return buffer.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"evil"
) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add


CLIMBING = "models/" * 20 + "../../" * 21 + "evil.txt"  # over 100 bytes: a pax path


@pytest.mark.parametrize(
    ("add", "problem"),
    [
        (
            _member("model.joblib", tarfile.SYMTYPE, "/etc/passwd"),
            "member 'model.joblib' that is a link (to '/etc/passwd')",
        ),
        (
            _member("again", tarfile.LNKTYPE, "manifest.json"),
            "member 'again' that is a link (to 'manifest.json')",
        ),
        (
            _member("link", tarfile.SYMTYPE, "/" + "x" * 150),  # pax linkpath
            f"member 'link' that is a link (to '/{'x' * 150}')",
        ),
        (_member("tenant-a", tarfile.DIRTYPE), "member 'tenant-a/' that is a directory entry"),
        (
            _member("null", tarfile.CHRTYPE),
            "member 'null' that is a device, FIFO or other special file",
        ),
        (
            _member("disk", tarfile.BLKTYPE),
            "member 'disk' that is a device, FIFO or other special file",
        ),
        (
            _member("pipe", tarfile.FIFOTYPE),
            "member 'pipe' that is a device, FIFO or other special file",
        ),
        (_member("../evil.txt"), "member '../evil.txt' that climbs out of its directory ('..')"),
        (_member("/tmp/evil.txt"), "member '/tmp/evil.txt' with an absolute path"),
        (_member("C:evil.txt"), "member 'C:evil.txt' with an absolute path"),
        (_member("a\\..\\evil.txt"), "member 'a\\\\..\\\\evil.txt' that climbs out"),
        (_member(CLIMBING), f"member {CLIMBING!r} that climbs out of its directory ('..')"),
    ],
    ids=[
        "symlink",
        "hardlink",
        "symlink-pax-target",
        "directory",
        "char-device",
        "block-device",
        "fifo",
        "dotdot",
        "absolute",
        "drive",
        "backslash",
        "pax-long-name-climbing",
    ],
)
def test_unsafe_members_are_refused_before_anything_of_them_is_written(
    tmp_path: Path, add: Callable[[tarfile.TarFile], None], problem: str
) -> None:
    data = _with_member(add)
    with pytest.raises(Refused) as caught:
        _unpack(data, tmp_path / "out" / "staging", [100])
    assert str(caught.value).startswith(problem)
    # only the member before it was written, nothing outside
    assert _tree(tmp_path / "out") == {"staging/manifest.json": b"{}"}
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("fmt", "add", "problem"),
    [
        (tarfile.GNU_FORMAT, _member("x" * 120), "is a GNU long name header"),
        (tarfile.GNU_FORMAT, _member("s", tarfile.SYMTYPE, "y" * 120), "is a GNU long link name"),
    ],
    ids=["gnu-long-name", "gnu-long-link"],
)
def test_header_types_mlayer_never_writes_are_refused(
    tmp_path: Path, fmt: int, add: Callable[[tarfile.TarFile], None], problem: str
) -> None:
    with pytest.raises(Malformed) as caught:
        _unpack(_with_member(add, fmt), tmp_path / "out")
    assert str(caught.value) == (
        f"the header at byte 1,024 {problem}{'' if 'header' in problem else ' header'}, which "
        "mlayer never writes"
    )


def test_a_pax_global_header_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "hi"}
    ) as archive:
        archive.addfile(tarfile.TarInfo("manifest.json"), io.BytesIO(b""))
    with pytest.raises(Malformed, match=r"^the header at byte 0 is a pax global header"):
        _unpack(buffer.getvalue(), tmp_path / "out")


def test_a_pax_long_name_names_the_file(tmp_path: Path) -> None:
    # given a member whose name only the pax header holds whole (the ustar field has 100 bytes)
    name = "tenant-a/" + "n" * 200 + ".joblib"
    data = _with_member(_member(name, data=b"weights"))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getmember(name).pax_headers == {"path": name}
    # when it is unpacked: the file has the whole name
    _unpack(data, tmp_path / "out", [7])
    assert _tree(tmp_path / "out") == {
        "manifest.json": b"{}",
        name: b"weights",
        "after.bin": b"after",
    }


def test_a_malformed_pax_record_is_refused(tmp_path: Path) -> None:
    # given a pax header whose record claims more bytes than it has (checksum recomputed)
    data = bytearray(_with_member(_member("n" * 120)))
    record = f"{len('n' * 120) + 10} path={'n' * 120}\n".encode()
    start = data.index(record)
    data[start : start + 3] = b"999"
    with pytest.raises(Malformed) as caught:
        _unpack(bytes(data), tmp_path / "out")
    assert str(caught.value) == (
        "the pax header ending at byte 1,666 has a malformed record at its byte 0"
    )


def test_a_path_twice_is_refused(tmp_path: Path) -> None:
    data = _with_member(_member("manifest.json"))
    with pytest.raises(Malformed) as caught:
        _unpack(data, tmp_path / "out")
    assert str(caught.value).startswith(
        "member 'manifest.json' names a path unpacked before it (a member listed twice"
    )
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"{}"  # not overwritten


def _offsets(data: bytes) -> dict[str, int]:
    """Where each member's data starts, and where the end-of-archive marker does ("")."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    offsets = {member.name: member.offset_data for member in members}
    offsets[""] = members[-1].offset_data + -(-members[-1].size // BLOCK) * BLOCK
    return offsets


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        # manifest.json: header at 0, 15 bytes at 512, padding to 1,024
        (1024 + 100, "the archive stops inside the header at byte 1,024"),
        (
            512 + 10,
            "the archive stops 5 bytes before the end of member 'manifest.json' (at byte 522)",
        ),
        (700, "the archive stops in the padding after member 'manifest.json' (at byte 700)"),
        ("long+1000", f"the archive stops 69,001 bytes before the end of member {LONG!r}"),
        # the long name's pax header: its header, 144 bytes of record, padding, then its own
        (
            "long-980",
            "the archive stops 100 bytes before the end of the pax header at byte {pax:,}",
        ),
        ("end", "the archive stops at byte {end:,} without its end-of-archive marker (two zero"),
        ("end+512", "the archive stops at byte {end_one:,} without its end-of-archive marker"),
    ],
    ids=[
        "in-a-header",
        "in-a-member",
        "in-padding",
        "in-a-long-named-member",
        "in-a-pax-header",
        "no-marker",
        "one-zero-block",
    ],
)
def test_a_truncated_stream_is_refused(tmp_path: Path, cut: int | str, expected: str) -> None:
    # given the archive cut short at a header, a member, padding, a pax header, the marker
    data = _archive(tmp_path)
    offsets = _offsets(data)
    long, end = offsets[LONG], offsets[""]
    at = {"long+1000": long + 1000, "long-980": long - 980, "end": end, "end+512": end + BLOCK}
    # when it is unpacked: the stream stopped early, and says where
    with pytest.raises(Malformed) as caught:
        _unpack(data[: at[cut] if isinstance(cut, str) else cut], tmp_path / "out")
    assert str(caught.value).startswith(
        expected.format(end=end, end_one=end + BLOCK, pax=long - 3 * BLOCK)
    )
    assert str(caught.value).endswith(": it was cut short")


def test_trailing_garbage_is_refused_and_zeros_are_not(tmp_path: Path) -> None:
    data = _archive(tmp_path)
    # a record of zeros more (GNU tar's blocking factor, say): the same archive
    _unpack(data + bytes(20 * BLOCK), tmp_path / "zeros")
    assert _tree(tmp_path / "zeros") == FILES
    # anything else after the marker: another archive, a signature, junk
    with pytest.raises(Malformed) as caught:
        _unpack(data + b"\0" * 3 + b"garbage", tmp_path / "garbage")
    assert str(caught.value) == (
        f"the archive has data after its end-of-archive marker (a non-zero byte at byte "
        f"{len(data) + 3:,}): it is not one archive as mlayer writes them"
    )
    # and a second archive after a lone zero block is not a member list tarfile would skip
    second = _with_member(_member("tenant-c/model.joblib"))
    lone = data[: _offsets(data)[""] + BLOCK] + second
    with pytest.raises(Malformed, match=r"data after its end-of-archive marker"):
        _unpack(lone, tmp_path / "lone")


def test_close_releases_a_half_written_file(tmp_path: Path) -> None:
    # given an unpacker stopped in the middle of a member (the download failed)
    data = _archive(tmp_path)
    unpacker = TarUnpacker(tmp_path / "out")
    (tmp_path / "out").mkdir()
    unpacker.feed(data[: _offsets(data)[LONG] + 1000])
    assert unpacker._fd >= 0
    # when it is closed, twice
    unpacker.close()
    unpacker.close()
    assert unpacker._fd == -1
