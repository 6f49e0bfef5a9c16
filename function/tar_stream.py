"""Unpack a model store archive from its bytes as they arrive, in the caller's own thread.

The archive (docs/CONTRACTS.md, "The model store (S3)") is what
``mlayer.archive.write_model_tar`` writes: an uncompressed POSIX tar of 512-byte ustar
headers, a pax extended header ('x') before a member only when its name is over 100 bytes
(or not ASCII), regular files only (no directory entries), then the end-of-archive marker
(two zero blocks) and zeros to the end of the last 10,240-byte record.

:class:`TarUnpacker` is fed those bytes in order, in chunks of any size, and writes each
member's data from the chunk straight into its file (memoryview slices: the only copy is the
kernel's). ``model_store`` feeds it from the non-seekable writer s3transfer calls on its I/O
thread: no queue, no second thread, no tarfile stream buffer. Only what that format needs is
understood, and anything else is refused before a byte of it is written:

* :class:`Refused`: a member that is not a regular file (a link, a device, a FIFO, a
  directory entry), or whose name is absolute, has a ``..`` component or a backslash;
* :class:`Malformed`: a header whose checksum is wrong, a number or pax record that does not
  parse, a header type mlayer never writes (GNU long names, pax global headers), a path
  unpacked twice, data after the end-of-archive marker, or a stream that stops early.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path, PurePosixPath

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
PAX_LIMIT = 1_048_576  # a pax header is held in memory; write_model_tar's hold one name
REGULAR = (b"0", b"\0", b"7")  # '7' (contiguous) is a regular file to every reader
LINKS = (b"1", b"2")
DIRECTORY = b"5"
PAX = b"x"
NOT_WRITTEN = {  # header types tarfile reads but mlayer never writes
    b"g": "a pax global header",
    b"L": "a GNU long name header",
    b"K": "a GNU long link name header",
}
POSIX_MAGIC = b"ustar\x00"
_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL  # nothing is overwritten: a path twice is refused
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class TarError(Exception):
    """The archive cannot be unpacked; the message says why."""


class Refused(TarError):
    """A member that must not be unpacked: ``member '<name>' <why>``."""


class Malformed(TarError):
    """Bytes that are not an archive as ``write_model_tar`` writes it."""


class TarUnpacker:
    """Unpack the archive fed to :meth:`feed` into ``directory`` (which must exist).

    Feed every byte in order, then call :meth:`finish` (the stream must end with the
    end-of-archive marker); :meth:`close` releases the open file on any path. A
    :class:`TarError` or an ``OSError`` from :meth:`feed` leaves the unpacker unusable: the
    caller removes ``directory``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)
        self.members = 0  # regular files unpacked (or being unpacked)
        self.position = 0  # bytes of the stream consumed
        self._header = bytearray()  # a header split across chunks
        self._pax_data: bytearray | None = None  # the records of the pax header being read
        self._pax: dict[str, str] = {}  # the records that apply to the next member
        self._fd = -1
        self._what = ""  # whose data comes next: "member '<name>'" or a pax header
        self._left = 0  # bytes of that data still to come
        self._skip = 0  # then padding up to the next block
        self._zeros = -1  # bytes from the end-of-archive marker on (-1: not seen yet)
        self._made = {self.directory}

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Unpack the next bytes of the stream.

        Raises:
            Refused: an unsafe member (nothing of it was written).
            Malformed: see the module's docstring.
            OSError: creating a directory or writing a file failed.
        """
        view = memoryview(data).cast("B")
        while view:
            if self._left:
                view = self._data(view)
            elif self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                self.position += taken
                view = view[taken:]
            elif self._zeros >= 0:
                self._trailer(view)
                return
            else:
                view = self._next_header(view)

    def finish(self) -> None:
        """The stream ended: check that it ended where the archive does.

        Raises:
            Malformed: the stream stopped inside a header or a member, or before the
                end-of-archive marker.
        """
        self.close()
        if self._zeros >= 2 * BLOCK:
            return
        if self._left:
            raise Malformed(
                f"the archive stops {self._left:,} bytes before the end of {self._what} (at "
                f"byte {self.position:,}): it was cut short"
            )
        if self._skip:
            raise Malformed(
                f"the archive stops in the padding after {self._what} (at byte "
                f"{self.position:,}): it was cut short"
            )
        if self._header:
            raise Malformed(
                f"the archive stops inside the header at byte {self.position:,}: it was cut short"
            )
        raise Malformed(
            f"the archive stops at byte {self.position:,} without its end-of-archive marker "
            "(two zero blocks): it was cut short"
        )

    def close(self) -> None:
        """Close the file being written, if any (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    # -- the parts of the stream -----------------------------------------------------------

    def _data(self, view: memoryview) -> memoryview:
        """A member's bytes to its file, or a pax header's records to memory."""
        taken = min(self._left, len(view))
        if self._pax_data is not None:
            self._pax_data += view[:taken]
        else:
            _write_all(self._fd, view[:taken])
        self._left -= taken
        self.position += taken
        if not self._left:
            self._data_done()
        return view[taken:]

    def _data_done(self) -> None:
        if self._pax_data is not None:
            self._pax.update(_pax_records(bytes(self._pax_data), self.position))
            self._pax_data = None
        else:
            self.close()

    def _next_header(self, view: memoryview) -> memoryview:
        if self._header or len(view) < BLOCK:
            needed = BLOCK - len(self._header)
            self._header += view[:needed]
            if len(self._header) < BLOCK:
                return view[needed:]  # empty: the rest comes with the next chunk
            block = bytes(self._header)
            self._header.clear()
            view = view[needed:]
        else:
            block = view[:BLOCK].tobytes()
            view = view[BLOCK:]
        at = self.position
        self.position += BLOCK
        self._parse(block, at)
        return view

    def _trailer(self, view: memoryview) -> None:
        """After the first zero block: zeros only (the second block and the record's padding)."""
        data = view.tobytes()
        rest = data.lstrip(b"\0")
        if rest:
            where = self.position + len(data) - len(rest)
            raise Malformed(
                f"the archive has data after its end-of-archive marker (a non-zero byte at "
                f"byte {where:,}): it is not one archive as mlayer writes them"
            )
        self._zeros += len(data)
        self.position += len(data)

    # -- headers ---------------------------------------------------------------------------

    def _parse(self, block: bytes, at: int) -> None:
        if block == ZERO_BLOCK:
            self._zeros = BLOCK
            return
        if not _checksum_ok(block):
            raise Malformed(
                f"the tar header at byte {at:,} has a wrong checksum: the object is not a tar "
                "archive as mlayer writes them"
            )
        kind = block[156:157]
        pax, self._pax = self._pax, {}
        size = _size(pax["size"], at) if "size" in pax else _number(block[124:136], "size", at)
        if kind == PAX:
            if size > PAX_LIMIT:
                raise Malformed(f"the pax header at byte {at:,} is {size:,} bytes long")
            self._pax = pax  # a second pax header adds to the first
            self._pax_data = bytearray()
            self._what = f"the pax header at byte {at:,}"
            self._begin(size)
            return
        if kind in NOT_WRITTEN:
            raise Malformed(
                f"the header at byte {at:,} is {NOT_WRITTEN[kind]}, which mlayer never writes"
            )
        name = pax["path"] if "path" in pax else _name(block, at)
        linkname = pax["linkpath"] if "linkpath" in pax else _text(block[157:257], at)
        problem = _unsafe(name, kind, linkname)
        if problem:
            raise Refused(f"member {name!r} {problem}")
        self._open(name)
        self._begin(size)

    def _begin(self, size: int) -> None:
        self._left = size
        self._skip = -size % BLOCK
        if not size:
            self._data_done()

    def _open(self, name: str) -> None:
        path = os.path.join(self.directory, *PurePosixPath(name).parts)
        parent = os.path.dirname(path)
        try:
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            self._fd = os.open(path, _OPEN_FLAGS, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise Malformed(
                f"member {name!r} names a path unpacked before it (a member listed twice, or "
                "the directory of another member)"
            ) from None
        self._what = f"member {name!r}"
        self.members += 1


def _unsafe(name: str, kind: bytes, linkname: str) -> str | None:
    """Why the member must not be unpacked (after ``member '<name>'``), or None."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "with an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts or "\\" in name:
        return "that climbs out of its directory ('..')"
    if kind in LINKS:
        return f"that is a link (to {linkname!r})"
    if kind == DIRECTORY or (kind in REGULAR and name.endswith("/")):
        return "that is a directory entry"
    if kind not in REGULAR:
        return "that is a device, FIFO or other special file"
    if not parts:
        return "that names no file"
    if "\0" in name:
        return "with a NUL byte in its name"
    return None


def _checksum_ok(block: bytes) -> bool:
    """The header's checksum field against the sum of its bytes (the field counted as
    spaces), unsigned as POSIX says or signed as some old tars wrote it."""
    field = block[148:156]
    try:
        stored = int(field.split(b"\0", 1)[0].strip(), 8)
    except ValueError:
        return False
    if stored == 256 + sum(block) - sum(field):
        return True
    return stored == 256 + sum(struct.unpack_from("148b8x356b", block))


def _number(field: bytes, what: str, at: int) -> int:
    """An octal header field, or base-256 (a leading 0x80) as GNU tar writes large sizes."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise Malformed(
            f"the tar header at byte {at:,} has a {what} that is not a number"
        ) from None


def _size(text: str, at: int) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise Malformed(f"the pax header before byte {at:,} has a size that is not a number")
    return int(text)


def _text(field: bytes, at: int) -> str:
    try:
        return field.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"the tar header at byte {at:,} has a name that is not UTF-8") from None


def _name(block: bytes, at: int) -> str:
    name = _text(block[0:100], at)
    if block[257:263] == POSIX_MAGIC:  # ustar splits a long name at a '/' into prefix/name
        prefix = _text(block[345:500], at)
        if prefix:
            name = f"{prefix}/{name}"
    return name


_RECORD = re.compile(rb"([0-9]+) ")


def _pax_records(data: bytes, end: int) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records, each length counting its whole record."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        match = _RECORD.match(data, position)
        stop = position + int(match[1]) if match else 0
        if match is None or stop > len(data) or stop <= match.end() or data[stop - 1] != 0x0A:
            raise _bad_record(end, position)
        key, equals, value = data[match.end() : stop - 1].partition(b"=")
        if not key or not equals:
            raise _bad_record(end, position)
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_record(end, position) from None
        position = stop
    return records


def _bad_record(end: int, position: int) -> Malformed:
    return Malformed(
        f"the pax header ending at byte {end:,} has a malformed record at its byte {position:,}"
    )


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
