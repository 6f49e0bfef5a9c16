"""Event accessors and decoding: real event files, then every kind of bad or skipped record."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from function_support import (
    change_record,
    dynamodb_record,
    encode,
    kinesis_event,
    kinesis_record,
    load_event,
)

import records
from dynamodb_event import (
    AttributeValueError,
    DynamoDBStreamEvent,
    DynamoDBStreamRecord,
    deserialize,
    deserialize_image,
)
from kinesis_event import KinesisStreamEvent, loads
from records import InputSpec, InvalidEventError, decode_event

TEXT = InputSpec(kind="text", field="text")
MESSAGE = InputSpec(kind="text", field="Message")
FEATURES = ("age", "education_num", "hours_per_week", "capital_gain", "capital_loss")
INCOME = InputSpec(kind="features", field=None, features=FEATURES)


# --- accessors over the real events ----------------------------------------------------------


def test_kinesis_accessors_on_the_aws_documentation_sample() -> None:
    event = KinesisStreamEvent(load_event("kinesis"))
    first, second = event.records
    assert first.event_id == (
        "shardId-000000000006:49590338271490256608559692538361571095921575989136588898"
    )
    assert first.event_source == "aws:kinesis"
    assert first.aws_region == "us-east-2"
    assert first.kinesis.partition_key == "1"
    assert (
        first.kinesis.sequence_number == "49590338271490256608559692538361571095921575989136588898"
    )
    assert first.kinesis.approximate_arrival_timestamp == 1545084650.987
    assert first.kinesis.data_as_text() == "Hello, this is a test."
    assert second.kinesis.data_as_bytes() == b"This is only a test."
    ids, sequence_numbers, payloads = event.decoded_columns()
    assert ids == [first.event_id, second.event_id]
    assert sequence_numbers == [first.kinesis.sequence_number, second.kinesis.sequence_number]
    assert payloads == [first.kinesis.data_as_bytes(), second.kinesis.data_as_bytes()]


def test_kinesis_data_as_json_on_a_json_payload() -> None:
    (record, *_) = KinesisStreamEvent(load_event("kinesis_reviews")).records
    assert record.kinesis.data_as_json()["review_id"] == "r-1001"


def test_dynamodb_accessors_on_the_sam_update_event() -> None:
    insert, modify, remove = DynamoDBStreamEvent(load_event("dynamodb_update")).records
    assert insert.event_name == "INSERT"
    assert insert.event_id == "c4ca4238a0b923820dcc509a6f75849b"
    assert insert.dynamodb.sequence_number == "4421584500000000017450439091"
    assert insert.dynamodb.new_image_as_python() == {"Message": "New item!", "Id": 101}
    assert insert.dynamodb.keys_as_python() == {"Id": 101}
    assert modify.dynamodb.old_image == {"Message": {"S": "New item!"}, "Id": {"N": "101"}}
    assert remove.event_name == "REMOVE"
    assert remove.dynamodb.new_image is None
    assert remove.dynamodb.stream_view_type == "NEW_AND_OLD_IMAGES"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"S": "text"}, "text"),
        ({"N": "101"}, 101),
        ({"N": "-1.5"}, -1.5),
        ({"N": "1E+3"}, 1000.0),
        ({"BOOL": False}, False),
        ({"NULL": True}, None),
        ({"B": base64.b64encode(b"\x00\x01").decode()}, b"\x00\x01"),
        ({"SS": ["a", "b"]}, ["a", "b"]),
        ({"NS": ["1", "2.5"]}, [1, 2.5]),
        ({"BS": [base64.b64encode(b"x").decode()]}, [b"x"]),
        ({"L": [{"S": "a"}, {"N": "2"}]}, ["a", 2]),
        ({"M": {"inner": {"M": {"n": {"N": "3"}}}}}, {"inner": {"n": 3}}),
    ],
    ids=["S", "N-int", "N-float", "N-exp", "BOOL", "NULL", "B", "SS", "NS", "BS", "L", "M"],
)
def test_deserialize_every_attribute_type(value: dict[str, Any], expected: Any) -> None:
    assert deserialize(value) == expected
    assert type(deserialize(value)) is type(expected)


@pytest.mark.parametrize(
    "value",
    [{"S": 1}, {"N": "abc"}, {"X": "1"}, {"S": "a", "N": "1"}, "plain", {"B": "!!"}],
    ids=["S-not-str", "N-not-number", "unknown-type", "two-keys", "not-a-mapping", "B-bad"],
)
def test_deserialize_rejects_malformed_values(value: Any) -> None:
    with pytest.raises(AttributeValueError):
        deserialize(value)


def test_deserialize_image_of_the_sam_event() -> None:
    image = load_event("dynamodb_update")["Records"][1]["dynamodb"]["NewImage"]
    assert deserialize_image(image) == {"Message": "This item has changed", "Id": 101}


def test_change_record_detection() -> None:
    assert DynamoDBStreamRecord.is_change_record(change_record())
    assert not DynamoDBStreamRecord.is_change_record({"text": "hello"})
    assert not DynamoDBStreamRecord.is_change_record(["aws:dynamodb"])


def test_loads_does_not_depend_on_orjson() -> None:
    # Valid JSON orjson refuses: the verdict is the standard library's.
    assert loads(b'{"t": "\\ud800"}') == {"t": "\ud800"}
    assert loads(b'{"n": 1e400}') == {"n": math.inf}
    assert math.isnan(loads(b'{"n": NaN}')["n"])  # what json.dumps(float("nan")) writes
    for bad in (
        b"{'single': 1}",
        b'{"a": 1',
        "caf\xe9".encode("latin-1"),
        b"[" * 5000 + b"]" * 5000,
    ):
        with pytest.raises(ValueError):
            loads(bad)


# --- decoding the real events ----------------------------------------------------------------


def test_decode_aws_kinesis_sample_as_plain_text() -> None:
    event = load_event("kinesis")
    batch = decode_event(event, TEXT)
    assert batch.source == "kinesis"
    assert batch.inputs == ["Hello, this is a test.", "This is only a test."]
    assert batch.sequence_numbers == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert batch.record_ids == [r["eventID"] for r in event["Records"]]
    assert (batch.rejected, batch.skipped) == ([], [])


def test_decode_sam_get_records_event() -> None:
    batch = decode_event(load_event("kinesis_get_records"), TEXT)
    assert batch.inputs == ["Hello, this is a test 123."]
    assert batch.sequence_numbers == ["49545115243490985018280067714973144582180062593244200961"]


def test_decode_json_reviews_keeps_duplicates_apart() -> None:
    event = load_event("kinesis_reviews")
    batch = decode_event(event, TEXT)
    assert len(batch.inputs) == 4
    assert batch.inputs[0] == batch.inputs[2]
    assert len(set(batch.record_ids)) == 4


def test_decode_json_features() -> None:
    batch = decode_event(load_event("kinesis_income"), INCOME)
    assert batch.inputs == [
        (39, 13, 40, 2174, 0),
        (50, 13, 13, 0, 0),
        (52, 16, 60, 15024.0, 0),
    ]


def test_decode_sam_dynamodb_update_with_input_field() -> None:
    batch = decode_event(load_event("dynamodb_update"), MESSAGE)
    assert batch.source == "dynamodb"
    assert batch.inputs == ["New item!", "This item has changed"]
    assert batch.sequence_numbers == [
        "4421584500000000017450439091",
        "4421584500000000017450439092",
    ]
    assert batch.record_ids == [
        "c4ca4238a0b923820dcc509a6f75849b",
        "c81e728d9d4c2f636f067f89cc14862c",
    ]
    (skipped,) = batch.skipped
    assert (skipped.index, skipped.sequence_number) == (2, "4421584500000000017450439093")
    assert skipped.reason.startswith("REMOVE")
    assert batch.rejected == []


def test_decode_dynamodb_numbers_for_a_feature_model() -> None:
    batch = decode_event(load_event("dynamodb_income"), INCOME)
    assert batch.inputs == [(39, 13, 40, 2174, 0), (50, 13, 13, 0, 0), (52, 16, 60, 15024, 0)]
    assert [s.index for s in batch.skipped] == [2]


def test_decode_kinesis_data_streams_for_dynamodb() -> None:
    event = load_event("kinesis_dynamodb")
    batch = decode_event(event, TEXT)
    assert batch.inputs == [
        "Love it, easy to set up and the sound is great.",
        "Stopped working after a week, not worth the price.",
    ]
    outer = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    # Identified by the Kinesis record: the change record has no sequence number of its own.
    assert batch.sequence_numbers == outer[:2]
    assert batch.record_ids == [r["eventID"] for r in event["Records"][:2]]
    (skipped,) = batch.skipped
    assert skipped.sequence_number == outer[2]


def test_decode_direct_invocation() -> None:
    batch = decode_event(load_event("direct"), TEXT)
    assert batch.source == "direct"
    assert batch.record_ids == ["0", "manual-1", "2"]
    assert batch.sequence_numbers == [None, None, None]
    assert batch.inputs[1] == "The screen cracked on the first day."


def test_decode_empty_batch() -> None:
    batch = decode_event({"Records": []}, TEXT)
    assert (batch.received, batch.inputs, batch.rejected) == (0, [], [])


# --- bad and skipped records -----------------------------------------------------------------

NAN_JSON = (
    b'{"age": NaN, "education_num": 1, "hours_per_week": 1, "capital_gain": 0, "capital_loss": 0}'
)
GOOD_PERSON = {name: 1 for name in FEATURES}


def _one_kinesis(payload: Any = None, *, raw_data: str | None = None) -> dict[str, Any]:
    return {"Records": [kinesis_record(payload, "100", raw_data=raw_data)]}


@pytest.mark.parametrize(
    ("spec", "event", "reason"),
    [
        (TEXT, _one_kinesis(raw_data="not base64!"), "data is not valid base64"),
        (TEXT, _one_kinesis(raw_data="YQ"), "data is not valid base64"),
        (TEXT, _one_kinesis(b""), "data is empty"),
        (TEXT, _one_kinesis(b"\xff\xfe broken"), "payload is neither a JSON object nor UTF-8 text"),
        (TEXT, _one_kinesis(b'{"text": "unterminated'), "payload is not valid JSON"),
        (TEXT, _one_kinesis({"body": "hi"}), "missing field 'text' (the record has keys 'body')"),
        (TEXT, _one_kinesis({"text": 5}), "field 'text' is a number (5), expected a string"),
        (TEXT, _one_kinesis({"text": None}), "field 'text' is null, expected a string"),
        (INCOME, _one_kinesis(b"age=39"), "payload is not valid JSON"),
        (INCOME, _one_kinesis(b'{"age": 1'), "payload is not valid JSON"),
        (INCOME, _one_kinesis({**GOOD_PERSON, "age": "39"}), "feature 'age' is a string ('39')"),
        (INCOME, _one_kinesis({**GOOD_PERSON, "age": True}), "feature 'age' is a boolean"),
        (INCOME, _one_kinesis({**GOOD_PERSON, "age": None}), "feature 'age' is null"),
        (INCOME, _one_kinesis(NAN_JSON), "feature 'age' is nan"),
        (INCOME, _one_kinesis({**GOOD_PERSON, "age": 1e400}), "feature 'age' is inf"),
        (INCOME, _one_kinesis({**GOOD_PERSON, "age": 10**400}), "feature 'age' is too large"),
        (INCOME, _one_kinesis({"age": 1}), "missing feature 'education_num'"),
        (INCOME, _one_kinesis([1, 2, 3]), "got 3 feature values, expected 5"),
        (INCOME, _one_kinesis("plain words"), "payload is not valid JSON"),
        (INCOME, _one_kinesis([1, 2, 3, 4, "x"]), "feature 'capital_loss' is a string"),
        (
            TEXT,
            _one_kinesis(change_record("INSERT", {"text": {"N": "3"}})),
            "field 'text' is a number",
        ),
        (
            TEXT,
            _one_kinesis(change_record("INSERT", {"body": {"S": "x"}})),
            "missing NewImage attribute 'text'",
        ),
        (
            TEXT,
            _one_kinesis(change_record("INSERT", {"text": {"Q": "x"}})),
            "NewImage is malformed",
        ),
        (
            TEXT,
            _one_kinesis(change_record("UPSERT", {"text": {"S": "x"}})),
            "unknown eventName 'UPSERT'",
        ),
        (
            INCOME,
            {
                "Records": [
                    dynamodb_record(
                        "7", "INSERT", {**{n: {"N": "1"} for n in FEATURES}, "age": {"S": "x"}}
                    )
                ]
            },
            "feature 'age' is a string",
        ),
        (
            INCOME,
            {
                "Records": [
                    dynamodb_record(
                        "7", "MODIFY", {**{n: {"N": "1"} for n in FEATURES}, "age": {"N": "NaN"}}
                    )
                ]
            },
            "feature 'age' is nan",
        ),
        (TEXT, {"records": [5]}, "payload is a number (5), expected an object"),
        (TEXT, {"records": [""]}, "payload is an empty string"),
        (INCOME, {"records": ["a review"]}, "payload is a string; this model reads features"),
    ],
    ids=[
        "bad-base64-chars",
        "bad-base64-padding",
        "empty-data",
        "not-utf8",
        "broken-json-object",
        "missing-field",
        "text-is-number",
        "text-is-null",
        "features-not-json",
        "features-broken-json",
        "feature-is-string",
        "feature-is-bool",
        "feature-is-null",
        "feature-nan",
        "feature-inf",
        "feature-huge-int",
        "missing-feature",
        "feature-array-wrong-length",
        "features-plain-text",
        "feature-array-wrong-type",
        "kds-ddb-wrong-type",
        "kds-ddb-missing-attribute",
        "kds-ddb-malformed-image",
        "kds-ddb-unknown-event",
        "ddb-feature-is-string",
        "ddb-feature-nan",
        "direct-number",
        "direct-empty-string",
        "direct-string-for-features",
    ],
)
def test_bad_record_reasons(spec: InputSpec, event: dict[str, Any], reason: str) -> None:
    batch = decode_event(event, spec)
    assert batch.inputs == []
    (rejected,) = batch.rejected
    assert reason in rejected.reason
    raw_records = event["Records"] if "Records" in event else event["records"]
    assert rejected.record is raw_records[0]
    assert rejected.item_identifier


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"Records": [dynamodb_record("9", "REMOVE")]}, "REMOVE"),
        ({"Records": [dynamodb_record("9", "INSERT", None, view="KEYS_ONLY")]}, "KEYS_ONLY"),
        ({"Records": [dynamodb_record("9", "MODIFY", None, view="OLD_IMAGE")]}, "OLD_IMAGE"),
        (_one_kinesis(change_record("REMOVE")), "REMOVE"),
        (_one_kinesis(change_record("MODIFY")), "without NewImage"),
    ],
    ids=["ddb-remove", "ddb-keys-only", "ddb-old-image", "kds-ddb-remove", "kds-ddb-no-image"],
)
def test_skipped_records(event: dict[str, Any], reason: str) -> None:
    batch = decode_event(event, TEXT)
    assert (batch.inputs, batch.rejected) == ([], [])
    (skipped,) = batch.skipped
    assert reason in skipped.reason
    assert skipped.sequence_number


def test_text_payload_forms() -> None:
    """'{' opens a JSON object; anything else is the text itself (even '[' or a quote)."""
    event = kinesis_event(
        ["[UPDATE] still works", '"quoted"', "  padded", {"text": "json"}, b'  {"text": "spaced"}']
    )
    batch = decode_event(event, TEXT)
    assert batch.inputs == ["[UPDATE] still works", '"quoted"', "  padded", "json", "spaced"]


def test_feature_payload_forms() -> None:
    event = kinesis_event([GOOD_PERSON, [1, 2, 3, 4, 5.5], {"features": GOOD_PERSON}])
    batch = decode_event(event, INCOME)
    assert batch.inputs[:2] == [(1,) * 5, (1, 2, 3, 4, 5.5)]
    assert len(batch.rejected) == 1
    nested = InputSpec(kind="features", field="features", features=FEATURES)
    assert decode_event(event, nested).inputs == [(1,) * 5]


def test_ints_stay_exact_and_floats_finite() -> None:
    batch = decode_event(kinesis_event([{**GOOD_PERSON, "capital_gain": 2**60}]), INCOME)
    assert batch.inputs[0][3] == 2**60
    assert all(math.isfinite(v) for v in batch.inputs[0])


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([1, 2], "the event is an array, expected an object"),
        ({"Records": "x"}, '"Records" is a string'),
        ({"records": {"a": 1}}, '"records" is an object, expected an array'),
        (
            {"Records": [{"eventSource": "aws:sqs", "messageId": "1"}]},
            "unsupported eventSource 'aws:sqs'",
        ),
        ({"detail-type": "Scheduled Event"}, "unrecognised event (keys ['detail-type'])"),
        (
            {"Records": [{"eventSource": "aws:kinesis", "kinesis": {"data": "YQ=="}}]},
            "has no kinesis.sequenceNumber",
        ),
        (
            {"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT", "dynamodb": {}}]},
            "has no dynamodb.SequenceNumber",
        ),
    ],
    ids=[
        "array",
        "Records-not-list",
        "records-not-list",
        "sqs",
        "unknown",
        "kinesis-no-seq",
        "ddb-no-seq",
    ],
)
def test_invalid_events_raise_before_anything_happens(event: Any, message: str) -> None:
    with pytest.raises(InvalidEventError, match=None) as caught:
        decode_event(event, TEXT)
    assert message in str(caught.value)


# --- the fast path is only a faster route to the same result ---------------------------------


def _per_record(
    event: dict[str, Any], spec: InputSpec, monkeypatch: pytest.MonkeyPatch
) -> records.Batch:
    """Decode without the fast path (as a batch with one bad record would be)."""
    with monkeypatch.context() as patch:
        patch.setattr(records, "_kinesis_fast_path", lambda *args: None)
        return decode_event(event, spec)


@pytest.mark.parametrize(
    ("spec", "payloads", "fast"),
    [
        (TEXT, [{"text": "a"}, {"text": "b", "x": 1}, {"text": ""}], True),
        (TEXT, ["plain one", "plain two"], True),
        (INCOME, [GOOD_PERSON, {**GOOD_PERSON, "age": 2.5}], True),
        (InputSpec(kind="features", field=None, features=("age",)), [{"age": 1}], True),
        (INCOME, [GOOD_PERSON, {**GOOD_PERSON, "age": True}], False),
        (TEXT, [{"text": "a"}, "plain"], False),
        (TEXT, [" leading blank", "plain"], False),
        # A change record could pass a lookup of one of its own keys: per record only.
        (InputSpec(kind="text", field="eventName"), [{"eventName": "mine"}], False),
    ],
    ids=[
        "json-text",
        "plain-text",
        "features",
        "one-feature",
        "bool-feature",
        "mixed-forms",
        "leading-blank",
        "reserved-field",
    ],
)
def test_fast_path_agrees_with_per_record_path(
    spec: InputSpec, payloads: list[Any], fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = kinesis_event(payloads)
    assert (records._kinesis_fast_path(event, event["Records"], spec) is not None) is fast
    quick, slow = decode_event(event, spec), _per_record(event, spec, monkeypatch)
    assert quick.inputs == slow.inputs
    assert (quick.record_ids, quick.sequence_numbers) == (slow.record_ids, slow.sequence_numbers)
    assert quick.indexes == slow.indexes
    assert [(r.index, r.reason) for r in quick.rejected] == [
        (r.index, r.reason) for r in slow.rejected
    ]
    if fast:
        assert quick.indexes == list(range(len(payloads)))


def test_encode_helper_round_trips() -> None:
    assert json.loads(base64.b64decode(encode({"a": 1}))) == {"a": 1}
