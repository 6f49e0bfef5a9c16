"""A tiny KPL aggregated-record encoder for the tests (the format: function/kpl.py).

Hand-written so that the tests need no protobuf package; ``corrupt_checksum`` and the
``raw`` hooks build the broken records a producer or a transit error could make.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

MAGIC = b"\xf3\x89\x9a\xc2"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint (wire 0) or a length-delimited value (wire 2)."""
    key = varint(number << 3 | wire)
    if wire == 0:
        assert isinstance(value, int)
        return key + varint(value)
    assert isinstance(value, bytes)
    if wire == 2:
        return key + varint(len(value)) + value
    return key + value  # fixed-width: the caller gives the bytes


def user_record(
    partition_key_index: int,
    data: bytes,
    *,
    explicit_hash_key_index: int | None = None,
    tags: Sequence[tuple[str, str | None]] = (),
) -> bytes:
    """A ``Record`` message."""
    out = field(1, 0, partition_key_index)
    if explicit_hash_key_index is not None:
        out += field(2, 0, explicit_hash_key_index)
    out += field(3, 2, data)
    for key, value in tags:
        tag = field(1, 2, key.encode())
        if value is not None:
            tag += field(2, 2, value.encode())
        out += field(4, 2, tag)
    return out


def aggregated_message(
    records: Sequence[tuple[str, bytes] | tuple[str, bytes, str]],
    *,
    tags: Sequence[tuple[str, str | None]] = (),
) -> bytes:
    """The ``AggregatedRecord`` protobuf of (partition key, data[, explicit hash key]) user
    records, with each key once in its table (as the KPL writes it)."""
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    body = b""
    for record in records:
        partition_key, data = record[0], record[1]
        if partition_key not in partition_keys:
            partition_keys.append(partition_key)
        hash_index = None
        if len(record) == 3:
            hash_key = record[2]
            if hash_key not in hash_keys:
                hash_keys.append(hash_key)
            hash_index = hash_keys.index(hash_key)
        body += field(
            3,
            2,
            user_record(
                partition_keys.index(partition_key),
                data,
                explicit_hash_key_index=hash_index,
                tags=tags,
            ),
        )
    tables = b"".join(field(1, 2, key.encode()) for key in partition_keys)
    tables += b"".join(field(2, 2, key.encode()) for key in hash_keys)
    return tables + body


def frame(message: bytes, *, corrupt_checksum: bool = False) -> bytes:
    """Magic + protobuf + MD5: the Kinesis record's data."""
    digest = hashlib.md5(message).digest()
    if corrupt_checksum:
        digest = bytes([digest[0] ^ 0xFF]) + digest[1:]
    return MAGIC + message + digest


def aggregate(
    records: Sequence[tuple[str, bytes] | tuple[str, bytes, str]],
    *,
    corrupt_checksum: bool = False,
) -> bytes:
    """A KPL aggregated record's data holding ``records`` (partition key, data[, hash key])."""
    return frame(aggregated_message(records), corrupt_checksum=corrupt_checksum)
