"""KPL aggregated records through the handler: each user record predicted, reported or
skipped on its own and exactly once, keyed by (sequence number, sub-sequence number); a
corrupt aggregate is one bad record with the reason; Lambda is told the aggregate's sequence
number, once; retries put nothing twice where the plain records' guarantees say they don't.

Aggregates are made by tests/kpl_encoder.py, and come from the real KPL in
tests/events/kinesis_kpl.json (see tests/test_kpl.py).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from function_support import Run, invoke, kinesis_record, load_event
from kpl_encoder import aggregate, field, frame, user_record
from moto import mock_aws

import records
import sinks

TABLE = "predictions"
STREAM = "predictions-out"
SHARD = "shardId-000000000000"


@pytest.fixture
def aws() -> Iterator[None]:
    sinks._CLIENTS.clear()
    with mock_aws():
        yield
    sinks._CLIENTS.clear()


def kpl_record(data: bytes, sequence_number: str) -> dict[str, Any]:
    """A Kinesis record as Lambda delivers it whose data is ``data`` (an aggregate)."""
    return kinesis_record(None, sequence_number, raw_data=base64.b64encode(data).decode())


def users(*payloads: Any, key: str = "pk") -> list[tuple[str, bytes]]:
    """User records of one partition key: dicts as JSON, str as UTF-8, bytes as they are."""
    out = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        out.append((f"{key}-{index}", payload))
    return out


def mixed_event() -> dict[str, Any]:
    """Plain and aggregated records, good and bad, in one batch (sequence numbers 100-107)."""
    malformed = frame(field(1, 2, b"pk") + field(3, 2, user_record(5, b"love it")))
    return {
        "Records": [
            kinesis_record("love it", "100"),
            kpl_record(aggregate(users({"text": "great sound"}, b"\xff\xfe", "works well")), "101"),
            kpl_record(aggregate(users("five stars", "one star"), corrupt_checksum=True), "102"),
            kpl_record(malformed, "103"),
            kpl_record(frame(b""), "104"),
            kinesis_record({"text": 12345}, "105"),
            kpl_record(aggregate(users("terrible quality", {"text": "excellent value"})), "106"),
            kinesis_record({"text": "do not buy"}, "107"),
        ]
    }


def rid(sequence: str, sub: int | None = None) -> str:
    return f"{SHARD}:{sequence}" if sub is None else f"{SHARD}:{sequence}:{sub}"


# --- accounting: every user record exactly once --------------------------------------------------


def test_mixed_batch_accounts_for_every_user_record_once(text_model_dir: Path) -> None:
    # Given a batch mixing plain records and aggregates: good, with a bad user record,
    # corrupt (checksum), malformed (partition key index out of range), empty
    event = mixed_event()

    # When the handler runs (no dead-letter queue, no sink)
    run = invoke(event, MODEL_DIR=text_model_dir)

    # Then each good user record has its own prediction, keyed by (sequence, sub-sequence)
    predictions = run.response["predictions"]
    assert [(p["record_id"], p["sequence_number"]) for p in predictions] == [
        (rid("100"), "100"),
        (rid("101", 0), "101"),
        (rid("101", 2), "101"),
        (rid("106", 0), "106"),
        (rid("106", 1), "106"),
        (rid("107"), "107"),
    ]
    assert [p.get("sub_sequence_number") for p in predictions] == [None, 0, 2, 0, 1, None]
    # and each bad one is reported with its reason
    bad = {log["record_id"]: log for log in run.bad_records}
    assert sorted(bad) == sorted([rid("101", 1), rid("102"), rid("103"), rid("105")])
    assert bad[rid("101", 1)]["sub_sequence_number"] == 1
    assert bad[rid("101", 1)]["reason"].startswith("payload is neither a JSON object nor UTF-8")
    assert bad[rid("102")]["reason"].startswith(
        "KPL aggregated record is corrupt: MD5 checksum mismatch: the "
    )
    assert bad[rid("103")]["reason"] == (
        "KPL aggregated record is corrupt: malformed protobuf: record 0 has "
        "partition_key_index 5, the table holds 1 keys"
    )
    assert "sub_sequence_number" not in bad[rid("102")]
    # Lambda is told each failing Kinesis record's sequence number, once, in order
    assert run.failures == ["101", "102", "103", "105"]
    # and the counts add up over user records: 11 = 6 predicted + 1 skipped + 4 bad
    assert run.response["counts"] == {
        "received": 11,
        "predicted": 6,
        "skipped": 1,
        "dead_lettered": 0,
        "failed": 4,
        "kinesis_records": 8,
        "aggregated": 2,
    }
    assert run.batch_log["counts"] == run.response["counts"]
    assert run.batch_log["skipped_reasons"] == {"EMPTY_AGGREGATE": 1}

    # Every user record is in exactly one place (the skipped one: the empty aggregate)
    batch = records.decode_event(event, _text_spec())
    places = Counter(
        [p["record_id"] for p in predictions]
        + list(bad)
        + [skip.record_id for skip in batch.skipped]
    )
    assert [skip.reason for skip in batch.skipped] == [
        "KPL aggregated record holding no user records: nothing to score"
    ]
    assert set(places.values()) == {1}
    assert len(places) == run.response["counts"]["received"]


def _text_spec() -> records.InputSpec:
    return records.InputSpec(kind="text", field="text")


def test_records_the_real_kpl_wrote_are_each_predicted(text_model_dir: Path) -> None:
    event = load_event("kinesis_kpl")
    run = invoke(event, MODEL_DIR=text_model_dir)
    predictions = run.response["predictions"]
    first, second = (r["eventID"] for r in event["Records"])
    assert [p["record_id"] for p in predictions] == [f"{first}:{n}" for n in range(4)] + [
        f"{second}:{n}" for n in range(8)
    ]
    assert run.failures == []
    assert run.response["counts"]["received"] == 12


def test_user_records_keep_their_partition_keys(text_model_dir: Path) -> None:
    # A dead letter (the bad user record, whole) carries the user record's own keys.
    data = aggregate([("key-a", b"fine words"), ("key-b", b"\xff", "1234567890")])
    batch = records.decode_event({"Records": [kpl_record(data, "300")]}, _text_spec())
    (bad,) = batch.rejected
    assert bad.record["kinesis"]["partitionKey"] == "key-b"
    assert bad.record["kinesis"]["explicitHashKey"] == "1234567890"
    assert bad.record["kinesis"]["subSequenceNumber"] == 1
    assert bad.record["kinesis"]["sequenceNumber"] == "300"
    assert base64.b64decode(bad.record["kinesis"]["data"]) == b"\xff"
    assert bad.record["eventSourceARN"].endswith(":stream/reviews")


def test_an_all_aggregated_batch_takes_the_fast_path(text_model_dir: Path) -> None:
    # Good aggregates only: de-aggregated, then decoded in bulk like plain records (the same
    # values the per-record path gives)
    event = {
        "Records": [
            kpl_record(aggregate(users(*[{"text": f"love it {n}"} for n in range(5)])), str(s))
            for s in (400, 401)
        ]
    }
    batch = records.decode_event(event, _text_spec())
    assert batch.inputs == [f"love it {n}" for n in range(5)] * 2
    assert batch.raw_records is not event["Records"]  # the user records
    assert batch.aggregation is not None and batch.aggregation.aggregates == 2


@pytest.mark.parametrize(
    "spec",
    [
        records.InputSpec(kind="text", field="text"),
        records.InputSpec(kind="text", field=None),
        records.InputSpec(kind="features", field=None, features=("a", "b")),
        records.InputSpec(kind="features", field="row", features=("a",)),
    ],
    ids=["text-field", "text", "features", "features-field"],
)
def test_the_fast_path_never_takes_an_aggregate(spec: records.InputSpec) -> None:
    # decode_event tries the bulk decoder before looking for aggregates: it must refuse any
    # batch holding one (the magic is not UTF-8, so no text or JSON reading takes it)
    first = {"text": "love it", "a": 1, "b": 2, "row": {"a": 1}}
    data = aggregate([("pk", json.dumps(first).encode())])
    event = {"Records": [kinesis_record(first, "900"), kpl_record(data, "901")]}
    assert records._kinesis_fast_path(event, event["Records"], spec) is None
    batch = records.decode_event(event, spec)
    assert batch.record_ids == [rid("900"), rid("901", 0)]


def test_plain_batches_are_untouched(text_model_dir: Path) -> None:
    event = load_event("kinesis_reviews")
    batch = records.decode_event(event, _text_spec())
    assert batch.aggregation is None
    run = invoke(event, MODEL_DIR=text_model_dir)
    assert all("sub_sequence_number" not in p for p in run.response["predictions"])
    assert "kinesis_records" not in run.response["counts"]
    assert [p["record_id"] for p in run.response["predictions"]] == [
        r["eventID"] for r in event["Records"]
    ]


def test_an_aggregate_with_several_bad_user_records_is_named_once(text_model_dir: Path) -> None:
    event = {
        "Records": [
            kpl_record(aggregate(users(b"\xff", "love it", b"\xfe", b"\xfd")), "550"),
            kpl_record(aggregate(users(b"\xff", "one star")), "551"),
        ]
    }
    run = invoke(event, MODEL_DIR=text_model_dir)
    assert run.failures == ["550", "551"]
    assert run.response["counts"]["failed"] == 4  # user records
    assert len(run.bad_records) == 4


def test_a_nested_aggregate_is_a_bad_user_record(text_model_dir: Path) -> None:
    inner = aggregate([("pk", b"love it")])
    event = {"Records": [kpl_record(aggregate([("pk", inner), ("pk", b"love it")]), "500")]}
    run = invoke(event, MODEL_DIR=text_model_dir)
    (bad,) = run.bad_records
    assert bad["record_id"] == rid("500", 0)
    assert bad["reason"].startswith("payload is a KPL aggregated record inside another one")
    assert [p["record_id"] for p in run.response["predictions"]] == [rid("500", 1)]


# --- sinks: idempotent keys ----------------------------------------------------------------------


def create_table() -> None:
    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    ).get("Messages", []):
        for message in batch:
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def test_sinks_key_user_records_by_sequence_and_sub_sequence(
    aws: None, text_model_dir: Path
) -> None:
    # Given a table, a stream and a dead-letter queue
    create_table()
    boto3.client("kinesis").create_stream(StreamName=STREAM, ShardCount=1)
    queue = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    event = mixed_event()
    env = {
        "MODEL_DIR": text_model_dir,
        "OUTPUT_TABLE": TABLE,
        "OUTPUT_STREAM": STREAM,
        "DEAD_LETTER_QUEUE_URL": queue,
    }

    # When the batch runs twice (a retry)
    first = invoke(event, **env)
    again = invoke(event, **env)

    # Then the table holds one item per predicted user record, under its own key
    assert first.failures == again.failures == []
    items = boto3.resource("dynamodb").Table(TABLE).scan()["Items"]
    assert sorted((i["record_id"], i.get("sub_sequence_number")) for i in items) == sorted(
        [
            (rid("100"), None),
            (rid("101", 0), 0),
            (rid("101", 2), 2),
            (rid("106", 0), 0),
            (rid("106", 1), 1),
            (rid("107"), None),
        ]
    )
    # the stream's partition key is the record_id
    kinesis = boto3.client("kinesis")
    shard = kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["Shards"][0]
    iterator = kinesis.get_shard_iterator(
        StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    written = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [r["PartitionKey"] for r in written][:6] == [
        p["record_id"] for p in first.response["predictions"]
    ]
    # and each bad user record is one letter naming it (per run: the queue is not
    # idempotent, the whole batch ran twice); the corrupt aggregates one each, whole
    letters = {}
    counted: Counter[str] = Counter()
    for message in receive_all(queue):
        letter = json.loads(message["Body"])
        letters[letter["record_id"]] = letter
        counted[letter["record_id"]] += 1
    assert counted == {rid("101", 1): 2, rid("102"): 2, rid("103"): 2, rid("105"): 2}
    assert letters[rid("101", 1)]["sub_sequence_number"] == 1
    assert letters[rid("101", 1)]["record"]["kinesis"]["subSequenceNumber"] == 1
    assert "sub_sequence_number" not in letters[rid("102")]
    assert letters[rid("102")]["record"] == event["Records"][2]  # as delivered


def lambda_retries(
    event: dict[str, Any], rounds: int, run: Any
) -> Iterator[tuple[dict[str, Any], Run]]:
    """Invoke like a Kinesis event source mapping: after a partial failure, resend the batch
    from the lowest reported sequence number (Lambda's checkpoint), until it succeeds."""
    sent = event["Records"]
    for _ in range(rounds):
        result = run({"Records": sent})
        yield {"Records": sent}, result
        if not result.failures:
            return
        lowest = min(int(sequence) for sequence in result.failures)
        sent = [r for r in sent if int(r["kinesis"]["sequenceNumber"]) >= lowest]
    raise AssertionError(f"still failing after {rounds} rounds")


@pytest.mark.parametrize("queue_name", ["dlq", "dlq.fifo"])
def test_a_write_failure_inside_an_aggregate_retries_the_whole_aggregate(
    aws: None, text_model_dir: Path, monkeypatch: pytest.MonkeyPatch, queue_name: str
) -> None:
    # Given 12 aggregates of 4 user records (the second of each bad: 3 predictions each),
    # and a table that refuses, once, the write chunk (25 items) holding the third user
    # record of the aggregate at 608: that chunk starts inside the aggregate (its
    # predictions 24-26 are the 25th-27th)
    create_table()
    attributes = {"FifoQueue": "true"} if queue_name.endswith(".fifo") else {}
    queue = boto3.client("sqs").create_queue(QueueName=queue_name, Attributes=attributes)[
        "QueueUrl"
    ]
    boto3.client("kinesis").create_stream(StreamName=STREAM, ShardCount=1)
    sequences = [str(s) for s in range(600, 612)]
    event = {
        "Records": [
            kpl_record(aggregate(users("love it", b"\xff", "works well", "one star")), s)
            for s in sequences
        ]
    }
    poison = rid("608", 2)
    refusals = {"left": 1}

    def refuse(params: dict[str, Any], **_: Any) -> None:
        items = params["RequestItems"][TABLE]
        if refusals["left"] and any(
            item["PutRequest"]["Item"]["record_id"]["S"] == poison for item in items
        ):
            refusals["left"] -= 1
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "refused"}},
                "BatchWriteItem",
            )

    real_client = sinks.client

    def hooked(service: str, deadline: sinks.Deadline = sinks.NO_DEADLINE) -> Any:
        created = real_client(service, deadline)
        if service == "dynamodb" and not getattr(created, "_refuse_hooked", False):
            created.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", refuse)
            created._refuse_hooked = True
        return created

    monkeypatch.setattr(sinks, "client", hooked)
    env = {
        "MODEL_DIR": text_model_dir,
        "OUTPUT_TABLE": TABLE,
        "OUTPUT_STREAM": STREAM,
        "DEAD_LETTER_QUEUE_URL": queue,
    }

    # When Lambda retries as it does
    rounds = list(lambda_retries(event, 4, lambda e: invoke(e, **env)))

    # Then the first round reports the aggregate's sequence number and every one behind it,
    # each once, and the retry starts at the aggregate's first user record
    assert len(rounds) == 2
    first = rounds[0][1]
    assert first.failures == sequences[8:]
    (stop,) = [log for log in first.logs if log["message"] == "retry from here"]
    assert (stop["itemIdentifier"], stop["index"]) == ("608", 32)  # 608:0, not 608:2
    assert first.response["counts"]["dead_lettered"] == 8
    # the table ends with one item per good user record (a rewrite changes nothing)
    items = boto3.resource("dynamodb").Table(TABLE).scan()["Items"]
    assert len(items) == 12 * 3
    # the dead-letter queue and the stream got nothing of 608 or behind it in the first
    # round (Lambda resends all of 608): each bad user record is dead-lettered once, each
    # prediction streamed once
    letters = [json.loads(m["Body"]) for m in receive_all(queue)]
    assert Counter(m["record_id"] for m in letters) == Counter(rid(s, 1) for s in sequences)
    kinesis = boto3.client("kinesis")
    shard = kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["Shards"][0]
    iterator = kinesis.get_shard_iterator(
        StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    streamed = Counter(
        json.loads(r["Data"])["record_id"]
        for r in kinesis.get_records(ShardIterator=iterator)["Records"]
    )
    assert streamed == Counter(rid(s, sub) for s in sequences for sub in (0, 2, 3))


def test_a_dead_letter_refused_inside_an_aggregate_retries_the_whole_aggregate(
    aws: None, text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an aggregate of 12 bad user records and a good one, and a queue that refuses
    # the second SendMessageBatch call (letters 11 and 12: a call takes 10)
    bad = [bytes([0xFF, n]) for n in range(12)]
    event = {
        "Records": [
            kinesis_record("love it", "700"),
            kpl_record(aggregate(users(*bad, "works well")), "701"),
        ]
    }
    queue = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    refused = rid("701", 11)
    real_client = sinks.client

    def refuse(params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            if json.loads(entry["MessageBody"])["record_id"] == refused:
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "refused"}},
                    "SendMessageBatch",
                )

    def hooked(service: str, deadline: sinks.Deadline = sinks.NO_DEADLINE) -> Any:
        created = real_client(service, deadline)
        if service == "sqs" and not getattr(created, "_refuse_hooked", False):
            created.meta.events.register("before-parameter-build.sqs.SendMessageBatch", refuse)
            created._refuse_hooked = True
        return created

    monkeypatch.setattr(sinks, "client", hooked)

    # When the handler runs
    run = invoke(event, MODEL_DIR=text_model_dir, DEAD_LETTER_QUEUE_URL=queue)

    # Then Lambda is told to retry from the aggregate, whose first ten letters were sent:
    # they are not counted as dead-lettered, and the log says they will be sent again
    assert run.failures == ["701"]
    assert run.response["counts"]["dead_lettered"] == 0
    logs = {log["sub_sequence_number"]: log for log in run.bad_records}
    behind = "reported in batchItemFailures (behind the first record to retry)"
    for sub in range(10):
        assert logs[sub]["action"] == behind
        assert logs[sub]["note"] == "also sent to the queue: it will be sent again"
    assert logs[10]["action"] == "reported in batchItemFailures"
    assert logs[10]["dead_letter_error"].startswith("AccessDenied")
    assert (logs[11]["action"], "note" in logs[11]) == (behind, False)
    assert len(receive_all(queue)) == 10


# --- model sets ----------------------------------------------------------------------------------


def test_a_model_set_scores_each_user_record_by_its_member(tmp_path: Path) -> None:
    from test_model_set import MEMBERS, SET_JSON, _write_member

    directory = tmp_path / "set"
    for version, name in enumerate(MEMBERS, start=1):
        _write_member(directory / name, name, version)
    (directory / "set.json").write_text(json.dumps(SET_JSON))
    income = {"tenant": "income", "age": 40, "hours": 50}
    review = {"tenant": "reviews", "text": "love it"}
    event = {
        "Records": [
            kpl_record(aggregate(users(income, {"tenant": "income"}, review)), "800"),
            kinesis_record(review, "801"),
        ]
    }
    run = invoke(event, MODEL_DIR=directory)
    assert [(p["record_id"], p["model"], p.get("sub_sequence_number")) for p in
            run.response["predictions"]] == [
        (rid("800", 0), "income", 0),
        (rid("800", 2), "reviews", 2),
        (rid("801"), "reviews", None),
    ]  # fmt: skip
    (bad,) = run.bad_records
    assert (bad["record_id"], bad["sub_sequence_number"]) == (rid("800", 1), 1)
    assert run.failures == ["800"]
    shutil.rmtree(directory)
