"""KPL aggregated records: the format the Kinesis Producer Library packs user records in.

One Kinesis record holds many user records
(https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md)::

    F3 89 9A C2                  magic
    <AggregatedRecord protobuf>  the user records
    <16 bytes>                   MD5 of the protobuf bytes

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }

The protobuf reader here reads exactly that, strictly: varints of at most 10 bytes and 64
bits, lengths within the message, a known field with an unexpected wire type, a missing
required field, a key index outside its table, a string that is not UTF-8 are all errors.
Unknown fields are skipped by wire type (groups included), as protobuf does; tags are
skipped (nothing here reads them).

``expand`` replaces the aggregates of a Lambda event's records by their user records, in
Lambda's record shape.

Standard library only. The function ships alone, without bytecode: each module it imports is
compiled at every cold start (this one: about 2 ms). So this module is imported on the first
aggregate only: ``kinesis_event.deaggregate`` tells aggregates apart without it.

The reference deaggregators differ on a corrupt record: aws_kinesis_agg (Python) hands it on
as if it were not aggregated, the Node.js module raises "Invalid record checksum". Here it is an error with the reason: a payload starting with the magic is never
UTF-8 (F3 opens a 4-byte sequence, C2 cannot continue one), so handed on as a plain record
it could only fail as "neither JSON nor text", which hides what went wrong.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
# The base64 text of every payload that starts with MAGIC starts with this (the first three
# bytes make exactly four characters): Lambda delivers data as base64, so a batch can be
# searched for aggregates without decoding it. (kinesis_event holds copies of both.)
BASE64_PREFIX = "84ma"

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_GROUP_DEPTH = 64  # protobuf's own default recursion limit is 100


class AggregateError(ValueError):
    """A payload starting with the KPL magic that is not a valid aggregated record."""


# One user record of an aggregate: (partition key, explicit hash key or None, data); its
# sub-sequence number is its index in the aggregate. A plain tuple: a NamedTuple class costs
# about 0.17 ms to create at import.
UserRecord = tuple[str, str | None, bytes]


def is_aggregated(payload: bytes) -> bool:
    """Whether ``payload`` starts with the KPL magic (valid or not)."""
    return payload[:4] == MAGIC


def deaggregate(payload: bytes) -> list[UserRecord]:
    """The user records of an aggregated record, in order (possibly none).

    Raises:
        AggregateError: no magic, too short for the checksum, an MD5 that does not match
            the protobuf bytes, or a malformed protobuf; the message says which and where.
    """
    if not is_aggregated(payload):
        raise AggregateError("no KPL magic (F3 89 9A C2) at the start")
    if len(payload) < len(MAGIC) + DIGEST_SIZE:
        raise AggregateError(
            f"{len(payload)} bytes, too short for the magic and the 16-byte MD5 checksum"
        )
    message = payload[len(MAGIC) : len(payload) - DIGEST_SIZE]
    expected = payload[-DIGEST_SIZE:]
    actual = hashlib.md5(message, usedforsecurity=False).digest()
    if actual != expected:
        raise AggregateError(
            f"MD5 checksum mismatch: the {len(message):,}-byte protobuf hashes to "
            f"{actual.hex()}, the record carries {expected.hex()} (corrupted in transit or by "
            "the producer)"
        )
    try:
        return _aggregated_record(message)
    except _Malformed as exc:
        raise AggregateError(f"malformed protobuf: {exc}") from None


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``."""
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Malformed(f"varint at byte {start} runs past the end of its message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _Malformed(f"varint at byte {start} is longer than 10 bytes")
    if value >> 64:
        raise _Malformed(f"varint at byte {start} exceeds 64 bits")
    return value, pos


def _length(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """(start, end) of the length-delimited value whose length varint is at ``pos``."""
    size, start = _varint(buf, pos, end)
    if size > end - start:
        raise _Malformed(
            f"{what} at byte {start} declares {size:,} bytes, {end - start:,} remain in its message"
        )
    return start, start + size


def _skip(buf: bytes, pos: int, end: int, key: int, depth: int = 0) -> int:
    """The position after the value of field ``key`` (an unknown field) at ``pos``."""
    wire = key & 7
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _LENGTH:
        return _length(buf, pos, end, f"field {key >> 3}")[1]
    if wire in (_FIXED64, _FIXED32):
        after = pos + (8 if wire == _FIXED64 else 4)
        if after > end:
            raise _Malformed(f"fixed-width field {key >> 3} at byte {pos} runs past the end")
        return after
    if wire == _START_GROUP:
        if depth >= _MAX_GROUP_DEPTH:
            raise _Malformed(f"groups nested deeper than {_MAX_GROUP_DEPTH} at byte {pos}")
        while True:
            if pos >= end:
                raise _Malformed(f"group {key >> 3} is never closed")
            inner, pos = _varint(buf, pos, end)
            if inner & 7 == _END_GROUP:
                if inner >> 3 != key >> 3:
                    raise _Malformed(f"group {key >> 3} closed as group {inner >> 3}")
                return pos
            _check_field_number(inner, pos)
            pos = _skip(buf, pos, end, inner, depth + 1)
    if wire == _END_GROUP:
        raise _Malformed(f"end of group {key >> 3} at byte {pos} without its start")
    raise _Malformed(f"field {key >> 3} has invalid wire type {wire} (before byte {pos})")


def _check_field_number(key: int, pos: int) -> None:
    if key >> 3 == 0:
        raise _Malformed(f"field number 0 before byte {pos}")


def _expect(key: int, wire: int, name: str, pos: int) -> None:
    if key & 7 != wire:
        raise _Malformed(f"{name} (field {key >> 3}) has wire type {key & 7}, expected {wire}")


def _text(buf: bytes, start: int, stop: int, what: str) -> str:
    try:
        return str(buf[start:stop], "utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"{what} at byte {start} is not UTF-8 ({exc.reason})") from None


def _aggregated_record(buf: bytes) -> list[UserRecord]:
    """Parse an ``AggregatedRecord`` (records may precede the tables: fields come in any
    order)."""
    end = len(buf)
    pos = 0
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    spans: list[tuple[int, int]] = []
    while pos < end:
        if buf[pos] == _RECORDS and pos + 1 < end and buf[pos + 1] < 0x80:
            # a record of under 128 bytes, as the KPL writes it: inline (once per record)
            start = pos + 2
            pos = start + buf[pos + 1]
            if pos > end:
                raise _Malformed(
                    f"record at byte {start} declares {buf[start - 1]:,} bytes, "
                    f"{end - start:,} remain in its message"
                )
            spans.append((start, pos))
            continue
        key, pos = _varint(buf, pos, end)
        _check_field_number(key, pos)
        field = key >> 3
        if field == 3:
            _expect(key, _LENGTH, "records", pos)
            start, pos = _length(buf, pos, end, "record")
            spans.append((start, pos))
        elif field == 1:
            _expect(key, _LENGTH, "partition_key_table", pos)
            start, pos = _length(buf, pos, end, "partition key")
            partition_keys.append(_text(buf, start, pos, "partition key"))
        elif field == 2:
            _expect(key, _LENGTH, "explicit_hash_key_table", pos)
            start, pos = _length(buf, pos, end, "explicit hash key")
            hash_keys.append(_text(buf, start, pos, "explicit hash key"))
        else:
            pos = _skip(buf, pos, end, key)
    return [
        _record(buf, start, stop, index, partition_keys, hash_keys)
        for index, (start, stop) in enumerate(spans)
    ]


# Field keys (field number << 3 | wire type) as the KPL writes them: AggregatedRecord's
# records, then Record's fields.
_RECORDS = 3 << 3 | _LENGTH
_PARTITION_INDEX = 1 << 3 | _VARINT
_HASH_INDEX = 2 << 3 | _VARINT
_DATA = 3 << 3 | _LENGTH


def _record(
    buf: bytes,
    pos: int,
    end: int,
    index: int,
    partition_keys: list[str],
    hash_keys: list[str],
) -> UserRecord:
    """Parse the ``Record`` message at buf[pos:end], the ``index``-th of its aggregate.

    The KPL's own keys and small values are one byte each: read inline (this loop runs for
    every user record), anything else through ``_varint``.
    """
    partition_index: int | None = None
    hash_index: int | None = None
    data_start = data_end = -1
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        if key in (_PARTITION_INDEX, _HASH_INDEX):
            if pos < end and buf[pos] < 0x80:
                value, pos = buf[pos], pos + 1
            else:
                value, pos = _varint(buf, pos, end)
            if key == _PARTITION_INDEX:
                partition_index = value
            else:
                hash_index = value
        elif key == _DATA:
            if pos < end and buf[pos] < 0x80:
                data_start = pos + 1
                data_end = data_start + buf[pos]
                if data_end > end:
                    raise _Malformed(
                        f"record {index}'s data at byte {data_start} declares "
                        f"{buf[pos]:,} bytes, {end - data_start:,} remain in its message"
                    )
            else:
                data_start, data_end = _length(buf, pos, end, f"record {index}'s data")
            pos = data_end
        else:
            _check_field_number(key, pos)
            field = key >> 3
            if field == 1:
                _expect(key, _VARINT, f"record {index}'s partition_key_index", pos)
            elif field == 2:
                _expect(key, _VARINT, f"record {index}'s explicit_hash_key_index", pos)
            elif field == 3:
                _expect(key, _LENGTH, f"record {index}'s data", pos)
            # tags (4) and fields this format does not know
            pos = _skip(buf, pos, end, key)
    if partition_index is None:
        raise _Malformed(f"record {index} has no partition_key_index (a required field)")
    if data_start < 0:
        raise _Malformed(f"record {index} has no data (a required field)")
    if partition_index >= len(partition_keys):
        raise _Malformed(
            f"record {index} has partition_key_index {partition_index}, the table holds "
            f"{len(partition_keys)} keys"
        )
    hash_key = None
    if hash_index is not None:
        if hash_index >= len(hash_keys):
            raise _Malformed(
                f"record {index} has explicit_hash_key_index {hash_index}, the table holds "
                f"{len(hash_keys)} keys"
            )
        hash_key = hash_keys[hash_index]
    return (partition_keys[partition_index], hash_key, buf[data_start:data_end])


# --- Lambda's Kinesis records -----------------------------------------------------------------


class Deaggregated:
    """An event's records with each KPL aggregate replaced by its user records.

    ``records``, ``origins`` and ``sub_sequence_numbers`` are aligned: per record, the index
    of the Kinesis record of the event it came from, and its index in that aggregate (None
    for a record that was not one of an aggregate's). A plain class: a dataclass costs about
    0.4 ms to create at import.
    """

    __slots__ = ("aggregates", "kinesis_records", "origins", "records", "sub_sequence_numbers")

    def __init__(
        self,
        records: list[Any],
        origins: list[int],
        sub_sequence_numbers: list[int | None],
        kinesis_records: int,
        aggregates: int,
    ) -> None:
        self.records = records
        self.origins = origins
        self.sub_sequence_numbers = sub_sequence_numbers
        self.kinesis_records = kinesis_records  # records in the event
        self.aggregates = aggregates  # aggregated records replaced by their user records


def expand(records: list[Any]) -> Deaggregated | None:
    """Replace each valid, non-empty KPL aggregate of ``records`` by its user records.

    A user record is a record as Lambda would have delivered it had the producer not
    aggregated: the aggregate's envelope and ``kinesis`` members, with the user record's
    ``data`` (base64) and ``partitionKey``, its ``explicitHashKey`` when it has one,
    ``subSequenceNumber`` (its index in the aggregate), ``aggregated`` true (the shape
    aws_kinesis_agg gives), and ``eventID`` the aggregate's with ``:<subSequenceNumber>``
    appended: its identity. ``sequenceNumber`` stays the aggregate's, what Lambda
    checkpoints on.

    Every other record stays as it is: plain records, and aggregates that are corrupt (bad
    checksum, malformed protobuf) or empty, which the decoder reports or skips with the
    reason. Returns None when nothing was replaced.
    """
    prefix = BASE64_PREFIX
    found = [
        index
        for index, record in enumerate(records)
        if isinstance(record, Mapping)
        and isinstance(inner := record.get("kinesis"), Mapping)
        and isinstance(data := inner.get("data"), str)
        and data.startswith(prefix)
        and inner.get("subSequenceNumber") is None
    ]
    expanded: dict[int, list[dict[str, Any]]] = {}
    for index in found:
        users = _user_records(records[index])
        if users:
            expanded[index] = users
    if not expanded:
        return None
    out: list[Any] = []
    origins: list[int] = []
    subs: list[int | None] = []
    for index, record in enumerate(records):
        made = expanded.get(index)
        if made is None:
            out.append(record)
            origins.append(index)
            subs.append(None)
        else:
            out.extend(made)
            origins.extend([index] * len(made))
            subs.extend(range(len(made)))
    return Deaggregated(out, origins, subs, len(records), len(expanded))


def _user_records(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The user records of an aggregated record in Lambda's shape, or [] when it is not a
    valid non-empty aggregate (or has no sequence number: the decoder reports that)."""
    inner = record["kinesis"]
    sequence_number = inner.get("sequenceNumber")
    if not isinstance(sequence_number, str) or not sequence_number:
        return []
    try:
        users = deaggregate(binascii.a2b_base64(inner["data"], strict_mode=True))
    except ValueError:  # bad base64 (binascii.Error), or AggregateError
        return []
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        event_id = sequence_number
    envelope = {key: value for key, value in record.items() if key != "kinesis"}
    b2a = binascii.b2a_base64
    made = []
    for sub, (partition_key, hash_key, data) in enumerate(users):
        kinesis = {
            **inner,
            "partitionKey": partition_key,
            "subSequenceNumber": sub,
            "aggregated": True,
            "data": b2a(data, newline=False).decode("ascii"),
        }
        if hash_key is not None:
            kinesis["explicitHashKey"] = hash_key
        made.append({**envelope, "eventID": f"{event_id}:{sub}", "kinesis": kinesis})
    return made
