"""function/kpl.py: the KPL aggregated-record reader, on records the real KPL made, on the
tests' encoder (tests/kpl_encoder.py) and on every way a record can be broken.

tests/events/kinesis_kpl.json holds two aggregated records written by the KPL itself and
delivered by Lambda, published as test data by awslabs/kinesis-aggregation
(python/test/test_deagg.py, Apache-2.0; the second record's envelope members, nested there
under ``kinesis``, are put back where Lambda puts them).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import kpl_encoder
import pytest
from function_support import FUNCTION_DIR, load_event
from hypothesis import given, settings
from hypothesis import strategies as st
from kpl_encoder import aggregate, field, frame, user_record, varint

import kinesis_event
import kpl
from kpl import AggregateError

# --- what the real KPL wrote -------------------------------------------------------------------


def test_records_the_kpl_wrote_with_explicit_hash_keys() -> None:
    first, _ = load_event("kinesis_kpl")["Records"]
    users = kpl.deaggregate(base64.b64decode(first["kinesis"]["data"]))
    assert users == [
        (
            "fc03dd88-3e79-448a-b01a-7cf1bd47b784",
            "38486495867508399078159723846051807020",
            b"RECORD 22 peeobhczbzdmskboupgyq\n",
        ),
        (
            "cae41b1c-ea61-43f2-90be-b8755ebf88e2",
            "193787600037681706952143357071916352604",
            b"RECORD 23 uswkxftxroeusscxsjhno\n",
        ),
        (
            "d490690c-e74d-4db2-a3c8-d8f2f184fd23",
            "266880436964932424265466916734068684439",
            b"RECORD 24 casehdgivfaxeustlyszy\n",
        ),
        (
            "c924bc09-b85e-47f1-b32e-336522ee53c8",
            "339606600942967391854603552402021847292",
            b"RECORD 25 nvffvpmuogdopjhamevrk\n",
        ),
    ]


def test_records_the_kpl_wrote_without_explicit_hash_keys() -> None:
    _, second = load_event("kinesis_kpl")["Records"]
    users = kpl.deaggregate(base64.b64decode(second["kinesis"]["data"]))
    assert [data for _, _, data in users] == [
        f"RECORD {n} {tail}\n".encode()
        for n, tail in zip(
            range(18, 26),
            [
                "iklrpsvyhxnerodfeheru",
                "lnmnudyhvpvcgrokfmzdh",
                "pjqrcfbxafzdndzmbgane",
                "aafreyrntwuwxliygkbhk",
                "qsaadhbsgmvqgdifguyou",
                "wjokoiwvzzhlftlzhqfjk",
                "zopcascrthbbpnjiwuhjb",
                "txbbvnozrwsboxuomqboq",
            ],
            strict=True,
        )
    ]
    assert users[0][0] == "78feb12a-dba0-45ca-a91e-bb1f2f1819b4"
    assert all(hash_key is None for _, hash_key, _ in users)


def test_every_aggregate_is_recognised_from_its_base64_prefix() -> None:
    for record in load_event("kinesis_kpl")["Records"]:
        assert record["kinesis"]["data"].startswith(kpl.BASE64_PREFIX)
    # whatever follows the magic
    for tail in (b"", b"\x00", b"\xff" * 3, b"{}"):
        encoded = base64.b64encode(kpl.MAGIC + tail).decode()
        assert encoded.startswith(kpl.BASE64_PREFIX)


def test_the_function_tells_aggregates_apart_as_kpl_does() -> None:
    assert kinesis_event.KPL_MAGIC == kpl.MAGIC
    assert kinesis_event.KPL_BASE64_PREFIX == kpl.BASE64_PREFIX
    assert base64.b64encode(kpl.MAGIC[:3]).decode() == kpl.BASE64_PREFIX


def test_kpl_is_imported_on_the_first_aggregate_only() -> None:
    # The function zip has no bytecode: an import is a compile at every cold start.
    child = """
import base64, json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import records
from function_support import kinesis_event
from kpl_encoder import aggregate
spec = records.InputSpec(kind="text", field="text")
plain = kinesis_event([{"text": "love it"}, {"text": 5}, "fine"])
batch = records.decode_event(plain, spec)  # the per-record path: a bad record
assert len(batch.rejected) == 1 and "kpl" not in sys.modules, sys.modules.keys()
records.decode_event(kinesis_event([{"text": "love it"}]), spec)  # the fast path
assert "kpl" not in sys.modules
event = kinesis_event(["x"])
event["Records"][0]["kinesis"]["data"] = base64.b64encode(aggregate([("pk", b"hi")])).decode()
assert records.decode_event(event, spec).inputs == ["hi"]
assert "kpl" in sys.modules
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", child, str(FUNCTION_DIR), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


# --- the encoder round trip --------------------------------------------------------------------

keys = st.text(min_size=0, max_size=12)
user_records = st.lists(
    st.one_of(
        st.tuples(keys, st.binary(max_size=40)),
        st.tuples(keys, st.binary(max_size=40), st.integers(0, 2**128 - 1).map(str)),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(records=user_records)
def test_round_trip(records: list[tuple[str, bytes] | tuple[str, bytes, str]]) -> None:
    users = kpl.deaggregate(aggregate(records))
    assert users == [
        (record[0], record[2] if len(record) == 3 else None, record[1]) for record in records
    ]


def test_empty_aggregate_has_no_user_records() -> None:
    assert kpl.deaggregate(frame(b"")) == []
    # tables without records: still none
    assert kpl.deaggregate(frame(field(1, 2, b"pk") + field(2, 2, b"123"))) == []


def test_unknown_fields_and_tags_are_skipped() -> None:
    # Given every wire type as unknown fields, at the top and inside a record, and tags
    group = field(9, 3, b"") + field(1, 0, 5) + field(2, 2, b"in a group")
    group += field(10, 3, b"") + field(1, 5, b"\x00" * 4) + field(10, 4, b"")  # nested
    group += field(9, 4, b"")
    unknown = (
        field(15, 0, 2**64 - 1)
        + field(16, 1, b"\x01" * 8)
        + field(17, 2, b"whatever")
        + field(18, 5, b"\x02" * 4)
        + group
    )
    record = user_record(0, b"payload", tags=[("k", "v"), ("only-key", None)]) + unknown
    message = unknown + field(3, 2, record) + field(1, 2, b"pk") + unknown
    # Then the record is read (its table came after it) and nothing else
    assert kpl.deaggregate(frame(message)) == [("pk", None, b"payload")]


def test_repeated_scalar_keeps_the_last_value() -> None:
    record = field(1, 0, 0) + field(3, 2, b"first") + field(1, 0, 1) + field(3, 2, b"second")
    message = field(1, 2, b"a") + field(1, 2, b"b") + field(3, 2, record)
    assert kpl.deaggregate(frame(message)) == [("b", None, b"second")]


# --- broken records ----------------------------------------------------------------------------


def test_checksum_mismatch_names_both_digests() -> None:
    data = aggregate([("pk", b"x")], corrupt_checksum=True)
    with pytest.raises(AggregateError, match=r"^MD5 checksum mismatch: the 11-byte protobuf") as e:
        kpl.deaggregate(data)
    assert data[-16:].hex() in str(e.value)


def test_a_flipped_bit_in_the_protobuf_fails_the_checksum() -> None:
    data = bytearray(aggregate([("pk", b"hello"), ("pk", b"world")]))
    data[10] ^= 0x01
    with pytest.raises(AggregateError, match="MD5 checksum mismatch"):
        kpl.deaggregate(bytes(data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\xf3\x89\x9a", "no KPL magic", id="no-magic"),
        pytest.param(kpl_encoder.MAGIC + b"\x00" * 15, "too short for the magic", id="short"),
    ],
)
def test_not_an_aggregate(data: bytes, reason: str) -> None:
    with pytest.raises(AggregateError, match=reason):
        kpl.deaggregate(data)


RECORD = user_record(0, b"x")
PK = field(1, 2, b"pk")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(b"\x80", "varint at byte 0 runs past the end", id="truncated-key"),
        pytest.param(PK + b"\x1a\x80", "varint at byte 5 runs past the end", id="truncated-len"),
        pytest.param(
            PK + b"\x1a\x06" + RECORD,
            "record at byte 6 declares 6 bytes, 5 remain",
            id="length-past-end",
        ),
        pytest.param(
            b"\x78" + b"\xff" * 10 + b"\x01", "longer than 10 bytes", id="varint-11-bytes"
        ),
        pytest.param(b"\x78" + b"\xff" * 9 + b"\x7f", "exceeds 64 bits", id="varint-65-bits"),
        pytest.param(b"\x02\x00", "field number 0", id="field-zero"),
        pytest.param(field(3, 0, 1), "records (field 3) has wire type 0, expected 2", id="wire"),
        pytest.param(field(1, 0, 1), "partition_key_table (field 1) has wire type 0", id="wire1"),
        pytest.param(field(2, 5, b"1234"), "explicit_hash_key_table (field 2)", id="wire2"),
        pytest.param(b"\x7e\x00", "field 15 has invalid wire type 6", id="wire-6"),
        pytest.param(b"\x7f\x00", "field 15 has invalid wire type 7", id="wire-7"),
        pytest.param(field(15, 4, b""), "end of group 15 at byte 1 without its start", id="end"),
        pytest.param(field(15, 3, b"") + field(1, 0, 1), "group 15 is never closed", id="open"),
        pytest.param(
            field(15, 3, b"") + field(16, 4, b""), "group 15 closed as group 16", id="mismatch"
        ),
        pytest.param(field(15, 3, b"") * 70, "groups nested deeper than 64", id="deep"),
        pytest.param(field(15, 1, b"\x00" * 7), "fixed-width field 15 at byte 1", id="fixed64"),
        pytest.param(field(1, 2, b"\xff"), "partition key at byte 2 is not UTF-8", id="pk-utf8"),
        pytest.param(field(2, 2, b"\xc3"), "explicit hash key at byte 2 is not UTF-8", id="ehk"),
        pytest.param(
            PK + field(3, 2, field(3, 2, b"x")),
            "record 0 has no partition_key_index",
            id="no-pk-index",
        ),
        pytest.param(PK + field(3, 2, field(1, 0, 0)), "record 0 has no data", id="no-data"),
        pytest.param(
            PK + field(3, 2, RECORD) + field(3, 2, user_record(1, b"y")),
            "record 1 has partition_key_index 1, the table holds 1 keys",
            id="pk-index",
        ),
        pytest.param(
            PK + field(3, 2, user_record(0, b"y", explicit_hash_key_index=0)),
            "record 0 has explicit_hash_key_index 0, the table holds 0 keys",
            id="ehk-index",
        ),
        pytest.param(
            PK + field(3, 2, field(1, 2, b"0") + field(3, 2, b"x")),
            "record 0's partition_key_index (field 1) has wire type 2, expected 0",
            id="record-wire",
        ),
        pytest.param(
            PK + field(3, 2, field(1, 0, 0) + field(3, 0, 7)),
            "record 0's data (field 3) has wire type 0, expected 2",
            id="data-wire",
        ),
        pytest.param(
            PK + field(3, 2, field(1, 0, 0) + b"\x1a\x09xx"),
            "record 0's data at byte 10 declares 9 bytes, 2 remain",
            id="data-past-record",
        ),
    ],
)
def test_malformed_protobuf(message: bytes, reason: str) -> None:
    with pytest.raises(AggregateError) as raised:
        kpl.deaggregate(frame(message))
    assert str(raised.value).startswith("malformed protobuf: ")
    assert reason in str(raised.value)


@settings(max_examples=300, deadline=None)
@given(
    records=user_records.filter(bool),
    cut=st.integers(min_value=0),
    junk=st.binary(max_size=8),
)
def test_any_damage_is_an_aggregate_error_never_a_crash(
    records: list[tuple[str, bytes] | tuple[str, bytes, str]], cut: int, junk: bytes
) -> None:
    # Given a valid protobuf cut short or with junk spliced in, under a valid checksum
    message = kpl_encoder.aggregated_message(records)
    at = cut % (len(message) + 1)
    damaged = message[:at] + junk + message[at + len(junk) // 2 :]
    # Then it reads, or fails as AggregateError (nothing else escapes)
    try:
        users = kpl.deaggregate(frame(damaged))
    except AggregateError as exc:
        assert str(exc).startswith("malformed protobuf: ")
    else:
        assert all(len(user) == 3 and isinstance(user[2], bytes) for user in users)


def test_varint_encoding_of_the_tests_matches_protobuf_examples() -> None:
    # The protobuf encoding guide's examples: 1 -> 01, 150 -> 96 01, 2^64-1 -> ten bytes.
    assert varint(1) == b"\x01"
    assert varint(150) == b"\x96\x01"
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
