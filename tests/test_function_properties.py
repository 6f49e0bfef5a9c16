"""Property-based: over any mix of good, bad and skipped records, every record is predicted,
skipped, or reported / dead-lettered, exactly once, with its own identity, in event order."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from function_support import (
    change_record,
    dynamodb_record,
    invoke,
    kinesis_record,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

import records
import sinks

# The autouse fake-credentials fixture is function-scoped but constant across examples.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FEATURES = ("age", "education_num", "hours_per_week", "capital_gain", "capital_loss")

texts = st.text(max_size=60)
plain_texts = st.text(min_size=1, max_size=60).filter(
    lambda text: not text.encode("utf-8").lstrip().startswith(b"{")
)
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON (the function's parser refuses them)


def _plain_text_outcome(text: str) -> str:
    """A plain payload is text unless it is a JSON array, number, boolean or null."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return "predicted"
    return "predicted" if isinstance(value, dict | str) else "failed"


# A generated record: (what the function must do with it, the record's payload or shape).
Case = tuple[str, str, Any]  # (expected outcome, kind, value)


def text_kinesis_cases() -> st.SearchStrategy[Case]:
    return st.one_of(
        texts.map(lambda t: ("predicted", "json", {"text": t, "id": 1})),
        plain_texts.map(lambda t: (_plain_text_outcome(t), "plain", t)),
        texts.map(lambda t: ("predicted", "kds", change_record("INSERT", {"text": {"S": t}}))),
        st.just(("skipped", "kds", change_record("REMOVE"))),
        st.just(("skipped", "kds", change_record("MODIFY"))),
        st.just(("failed", "raw-data", "bm90IGJhc2U2NA=!")),
        st.just(("failed", "bytes", b"")),
        st.just(("failed", "bytes", b"\xc3\x28 not utf-8")),
        st.just(("failed", "bytes", b'{"text": "unterminated')),
        texts.map(lambda t: ("failed", "json", {"body": t})),
        numbers.map(lambda n: ("failed", "json", {"text": n})),
        st.just(("failed", "kds", change_record("INSERT", {"text": {"N": "5"}}))),
    )


def feature_kinesis_cases() -> st.SearchStrategy[Case]:
    good = st.fixed_dictionaries({name: numbers for name in FEATURES})

    def spoil(row: dict[str, Any], value: Any) -> dict[str, Any]:
        return {**row, "hours_per_week": value}

    return st.one_of(
        good.map(lambda row: ("predicted", "json", row)),
        st.lists(numbers, min_size=5, max_size=5).map(lambda row: ("predicted", "json", row)),
        good.map(lambda row: ("failed", "nan", row)),
        good.map(lambda row: ("failed", "json", spoil(row, math.inf))),
        good.map(lambda row: ("failed", "json", spoil(row, "40"))),
        good.map(lambda row: ("failed", "json", spoil(row, True))),
        good.map(lambda row: ("failed", "json", {k: v for k, v in row.items() if k != "age"})),
        st.lists(numbers, max_size=4).map(lambda row: ("failed", "json", row)),
        plain_texts.map(lambda t: ("failed", "plain", t)),
    )


def kinesis_event_of(cases: list[Case]) -> dict[str, Any]:
    records = []
    for index, (_, kind, value) in enumerate(cases):
        sequence_number = str(49_600_000_000 + index)
        if kind == "raw-data":
            records.append(kinesis_record(None, sequence_number, raw_data=value))
        elif kind == "nan":
            # What json.dumps writes for float("nan"): NaN, not valid JSON but common.
            data = json.dumps({**value, "hours_per_week": float("nan")}).encode()
            records.append(kinesis_record(data, sequence_number))
        else:
            records.append(kinesis_record(value, sequence_number))
    return {"Records": records}


def check_partition(
    cases: list[Case], event: dict[str, Any], response: dict[str, Any], *, dead_letters: bool
) -> None:
    """Each record lands exactly where its case says, once, with its own identity, in order."""
    records = event["Records"]
    sequence = [r["kinesis"]["sequenceNumber"] for r in records]
    expected = {
        outcome: [sequence[i] for i, (o, _, _) in enumerate(cases) if o == outcome]
        for outcome in ("predicted", "skipped", "failed")
    }
    predictions = response["predictions"]
    assert [p["sequence_number"] for p in predictions] == expected["predicted"]
    by_sequence = {r["kinesis"]["sequenceNumber"]: r["eventID"] for r in records}
    assert [p["record_id"] for p in predictions] == [by_sequence[s] for s in expected["predicted"]]
    failures = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    assert all(isinstance(f, str) and f for f in failures)
    counts = response["counts"]
    if dead_letters:
        assert failures == []
        assert counts["dead_lettered"] == len(expected["failed"])
    else:
        assert failures == expected["failed"]
        assert counts["dead_lettered"] == 0
    assert counts["skipped"] == len(expected["skipped"])
    assert counts["predicted"] == len(predictions)
    assert (
        counts["received"]
        == len(records)
        == (counts["predicted"] + counts["skipped"] + counts["dead_lettered"] + counts["failed"])
    )
    for prediction in predictions:
        probability = prediction["probability"]
        assert isinstance(probability, float) and 0.0 <= probability <= 1.0


@PROPERTY_SETTINGS
@given(cases=st.lists(text_kinesis_cases(), max_size=30))
def test_text_model_kinesis_mixes(text_model_dir: Path, cases: list[Case]) -> None:
    event = kinesis_event_of(cases)
    run = invoke(event, MODEL_DIR=text_model_dir)
    check_partition(cases, event, run.response, dead_letters=False)
    assert [log["sequence_number"] for log in run.bad_records] == [
        item["itemIdentifier"] for item in run.response["batchItemFailures"]
    ]


@PROPERTY_SETTINGS
@given(cases=st.lists(feature_kinesis_cases(), max_size=30))
def test_numeric_model_kinesis_mixes(numeric_model_dir: Path, cases: list[Case]) -> None:
    event = kinesis_event_of(cases)
    run = invoke(event, MODEL_DIR=numeric_model_dir)
    check_partition(cases, event, run.response, dead_letters=False)


@PROPERTY_SETTINGS
@given(
    records=st.lists(
        st.one_of(
            texts.map(lambda t: ("predicted", "INSERT", {"text": {"S": t}})),
            texts.map(lambda t: ("predicted", "MODIFY", {"text": {"S": t}, "n": {"N": "1"}})),
            st.just(("skipped", "REMOVE", None)),
            st.just(("skipped", "INSERT", None)),
            numbers.map(lambda n: ("failed", "INSERT", {"text": {"N": str(n)}})),
            st.just(("failed", "MODIFY", {"other": {"S": "x"}})),
        ),
        max_size=30,
    )
)
def test_text_model_dynamodb_mixes(text_model_dir: Path, records: list[Case]) -> None:
    event = {
        "Records": [
            dynamodb_record(str(10**20 + i), name, image)
            for i, (_, name, image) in enumerate(records)
        ]
    }
    run = invoke(event, MODEL_DIR=text_model_dir)
    sequence = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
    outcome = [o for o, _, _ in records]
    predicted = [p["sequence_number"] for p in run.response["predictions"]]
    assert predicted == [s for s, o in zip(sequence, outcome, strict=True) if o == "predicted"]
    assert [f["itemIdentifier"] for f in run.response["batchItemFailures"]] == [
        s for s, o in zip(sequence, outcome, strict=True) if o == "failed"
    ]
    assert run.response["counts"]["skipped"] == outcome.count("skipped")


@PROPERTY_SETTINGS
@given(
    payloads=st.lists(
        st.one_of(
            plain_texts,
            st.fixed_dictionaries({"text": texts}),
            st.fixed_dictionaries({"id": st.sampled_from(["a", "b", 7]), "text": texts}),
            st.fixed_dictionaries({"id": st.just("bad"), "text": numbers}),
        ),
        max_size=20,
    )
)
def test_direct_invocation_keeps_each_record(text_model_dir: Path, payloads: list[Any]) -> None:
    run = invoke({"records": payloads}, MODEL_DIR=text_model_dir)
    expected_ids = [
        str(p["id"]) if isinstance(p, dict) and "id" in p else str(i)
        for i, p in enumerate(payloads)
    ]
    good = [not (isinstance(p, dict) and not isinstance(p["text"], str)) for p in payloads]
    assert [p["record_id"] for p in run.response["predictions"]] == [
        rid for rid, ok in zip(expected_ids, good, strict=True) if ok
    ]
    assert [f["itemIdentifier"] for f in run.response["batchItemFailures"]] == [
        rid for rid, ok in zip(expected_ids, good, strict=True) if not ok
    ]


@pytest.fixture(scope="module")
def dead_letter_queue() -> Iterator[str]:
    """One moto SQS queue for all examples (drained by each)."""
    sinks._CLIENTS.clear()
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="dlq")["QueueUrl"]
    sinks._CLIENTS.clear()


def drain(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    bodies = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


@settings(PROPERTY_SETTINGS, max_examples=25)
@given(cases=st.lists(text_kinesis_cases(), max_size=25))
def test_dead_letter_queue_receives_exactly_the_bad_records(
    text_model_dir: Path, dead_letter_queue: str, cases: list[Case]
) -> None:
    event = kinesis_event_of(cases)
    run = invoke(event, MODEL_DIR=text_model_dir, DEAD_LETTER_QUEUE_URL=dead_letter_queue)
    check_partition(cases, event, run.response, dead_letters=True)
    bodies = drain(dead_letter_queue)
    bad = [
        r for r, (outcome, _, _) in zip(event["Records"], cases, strict=True) if outcome == "failed"
    ]
    assert sorted(bodies, key=lambda b: int(b["sequence_number"])) == [
        {
            "record_id": r["eventID"],
            "sequence_number": r["kinesis"]["sequenceNumber"],
            "reason": body["reason"],
            "record": r,
            "model": "sentiment",
            "model_version": "unversioned",
        }
        for r, body in zip(
            bad, sorted(bodies, key=lambda b: int(b["sequence_number"])), strict=True
        )
    ]
    assert all(body["reason"] for body in bodies)


def _decode_both(event: dict[str, Any], spec: records.InputSpec) -> tuple[Any, Any]:
    quick = records.decode_event(event, spec)
    original = records._kinesis_fast_path
    records._kinesis_fast_path = lambda *args: None
    try:
        slow = records.decode_event(event, spec)
    finally:
        records._kinesis_fast_path = original
    return quick, slow


def _outcome(batch: records.Batch) -> tuple[Any, ...]:
    return (
        batch.inputs,
        batch.record_ids,
        batch.sequence_numbers,
        batch.indexes,
        [(r.index, r.reason) for r in batch.rejected],
        [(s.index, s.reason) for s in batch.skipped],
    )


whitespace = st.sampled_from(["", " ", "\t", "\n", "\r", "\x0b", "\x0c"])
text_payloads = st.one_of(
    st.text(max_size=30).map(str.encode),
    st.binary(max_size=30),
    st.tuples(whitespace, texts).map(lambda p: (p[0] + json.dumps({"text": p[1]})).encode()),
    st.fixed_dictionaries({"text": st.one_of(texts, numbers, st.none())}).map(
        lambda d: json.dumps(d).encode()
    ),
)
feature_payloads = st.one_of(
    st.fixed_dictionaries({name: st.one_of(numbers, st.just("1")) for name in FEATURES}).map(
        lambda d: json.dumps(d).encode()
    ),
    st.lists(numbers, min_size=4, max_size=6).map(lambda row: json.dumps(row).encode()),
    st.binary(max_size=20),
)


@PROPERTY_SETTINGS
@given(payloads=st.lists(text_payloads, min_size=1, max_size=8))
def test_fast_path_equals_per_record_path_text(payloads: list[bytes]) -> None:
    event = {"Records": [kinesis_record(p, str(100 + i)) for i, p in enumerate(payloads)]}
    quick, slow = _decode_both(event, records.InputSpec(kind="text", field="text"))
    assert _outcome(quick) == _outcome(slow)


@PROPERTY_SETTINGS
@given(payloads=st.lists(feature_payloads, min_size=1, max_size=8))
def test_fast_path_equals_per_record_path_features(payloads: list[bytes]) -> None:
    event = {"Records": [kinesis_record(p, str(100 + i)) for i, p in enumerate(payloads)]}
    spec = records.InputSpec(kind="features", field=None, features=FEATURES)
    quick, slow = _decode_both(event, spec)
    assert _outcome(quick) == _outcome(slow)
