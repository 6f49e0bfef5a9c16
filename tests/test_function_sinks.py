"""Sinks and the dead-letter queue: against moto, and botocore's Stubber for partial failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from function_support import invoke, kinesis_event, load_event
from moto import mock_aws

import sinks

TABLE = "predictions"
STREAM = "predictions-out"


@pytest.fixture
def aws() -> Iterator[None]:
    """moto for the test; the function's cached clients are dropped on both sides of it."""
    sinks._CLIENTS.clear()
    with mock_aws():
        yield
    sinks._CLIENTS.clear()


def create_table(name: str = TABLE) -> None:
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def scan(name: str = TABLE) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(name)
    return sorted(table.scan()["Items"], key=lambda item: item["record_id"])


def as_item(prediction: dict[str, Any]) -> dict[str, Any]:
    """What a prediction reads back as through boto3's resource layer (numbers as Decimal)."""
    return {
        key: Decimal(repr(value)) if isinstance(value, float) else value
        for key, value in prediction.items()
    }


def bad_and_good(bad: int, good: int) -> dict[str, Any]:
    payloads: list[Any] = [{"text": 12345} for _ in range(bad)] + [
        {"text": f"works well, number {i}"} for i in range(good)
    ]
    return kinesis_event(payloads, first_sequence=7000)


# --- the output table --------------------------------------------------------------------------


def test_table_items_are_the_predictions(aws: None, text_model_dir: Path) -> None:
    create_table()
    run = invoke(load_event("kinesis_reviews"), MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    assert run.response["batchItemFailures"] == []
    expected = sorted(run.response["predictions"], key=lambda p: p["record_id"])
    assert scan() == [as_item(p) for p in expected]
    assert all(isinstance(item["probability"], Decimal) for item in scan())


def test_table_write_is_idempotent(aws: None, text_model_dir: Path) -> None:
    """At-least-once delivery: the same batch twice leaves the same items, no duplicates."""
    create_table()
    event = load_event("kinesis_reviews")
    invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    first = scan()
    invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    assert scan() == first
    assert len(first) == len(event["Records"])


def test_table_write_of_more_than_one_request(aws: None, text_model_dir: Path) -> None:
    create_table()
    event = kinesis_event([f"review {i} works well" for i in range(60)])
    run = invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    assert run.response["batchItemFailures"] == []
    assert len(scan()) == 60


def test_repeated_direct_ids_are_one_item(aws: None, text_model_dir: Path) -> None:
    """BatchWriteItem refuses a key twice in one request: the later prediction is the item."""
    create_table()
    event = {"records": [{"id": "same", "text": "love it"}, {"id": "same", "text": "broke, awful"}]}
    run = invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    assert run.response["batchItemFailures"] == []
    assert len(run.response["predictions"]) == 2
    assert scan() == [as_item(run.response["predictions"][1])]


def test_missing_table_reports_every_predicted_record(aws: None, text_model_dir: Path) -> None:
    event = load_event("kinesis_reviews")
    run = invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE="no-such-table")
    assert run.failures == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    (log,) = [log for log in run.logs if log["message"] == "write failed"]
    assert log["sink"] == "table"
    assert log["error"].startswith("ResourceNotFoundException")
    assert log["record_ids"] == [r["eventID"] for r in event["Records"]]
    assert run.response["counts"]["failed"] == 4


# --- the output stream -------------------------------------------------------------------------


def read_stream(name: str = STREAM) -> list[dict[str, Any]]:
    kinesis = boto3.client("kinesis")
    shard = kinesis.describe_stream(StreamName=name)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return kinesis.get_records(ShardIterator=iterator)["Records"]


def test_stream_records_are_the_predictions(aws: None, text_model_dir: Path) -> None:
    boto3.client("kinesis").create_stream(StreamName=STREAM, ShardCount=1)
    run = invoke(load_event("kinesis_reviews"), MODEL_DIR=text_model_dir, OUTPUT_STREAM=STREAM)
    assert run.response["batchItemFailures"] == []
    written = read_stream()
    assert [json.loads(r["Data"]) for r in written] == run.response["predictions"]
    assert [r["PartitionKey"] for r in written] == [
        p["record_id"] for p in run.response["predictions"]
    ]


def test_missing_stream_reports_every_predicted_record(aws: None, text_model_dir: Path) -> None:
    event = load_event("kinesis_reviews")
    run = invoke(event, MODEL_DIR=text_model_dir, OUTPUT_STREAM="gone")
    assert run.failures == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    (log,) = [log for log in run.logs if log["message"] == "write failed"]
    assert (log["sink"], log["target"]) == ("stream", "gone")


# --- the dead-letter queue ---------------------------------------------------------------------


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.parametrize("queue", ["dead-letters", "dead-letters.fifo"])
def test_bad_records_go_to_the_dead_letter_queue(
    aws: None, text_model_dir: Path, queue: str
) -> None:
    attributes = {"FifoQueue": "true"} if queue.endswith(".fifo") else {}
    url = boto3.client("sqs").create_queue(QueueName=queue, Attributes=attributes)["QueueUrl"]
    event = bad_and_good(bad=12, good=3)  # 12 bad: two SendMessageBatch calls
    run = invoke(event, MODEL_DIR=text_model_dir, DEAD_LETTER_QUEUE_URL=url)

    assert run.response["batchItemFailures"] == []
    assert run.response["counts"] == {
        "received": 15,
        "predicted": 3,
        "skipped": 0,
        "dead_lettered": 12,
        "failed": 0,
    }
    bodies = sorted(receive_all(url), key=lambda body: int(body["sequence_number"]))
    assert [body["record"] for body in bodies] == event["Records"][:12]
    assert {body["reason"] for body in bodies} == {
        "field 'text' is a number (12345), expected a string"
    }
    assert [body["record_id"] for body in bodies] == [r["eventID"] for r in event["Records"][:12]]
    assert {(body["model"], body["model_version"]) for body in bodies} == {
        ("sentiment", "unversioned")
    }
    assert {log["action"] for log in run.bad_records} == {"dead-lettered"}


def test_unreachable_dead_letter_queue_reports_the_records(aws: None, text_model_dir: Path) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    event = bad_and_good(bad=2, good=1)
    run = invoke(event, MODEL_DIR=text_model_dir, DEAD_LETTER_QUEUE_URL=url)
    # The first undeliverable dead letter and everything behind it: Lambda resends them all.
    assert run.failures == ["7000", "7001", "7002"]
    assert run.response["counts"]["dead_lettered"] == 0
    first, behind = run.bad_records
    assert first["action"] == "reported in batchItemFailures"
    assert first["dead_letter_error"].startswith("AWS.SimpleQueueService.NonExistentQueue")
    assert behind["action"] == "reported in batchItemFailures (behind the first record to retry)"


# --- partial failures, as AWS reports them (botocore Stubber) ----------------------------------


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name="us-east-1")
    return client, Stubber(client)


PREDICTIONS = [
    {
        "record_id": f"shardId-000000000000:{seq}",
        "sequence_number": str(seq),
        "label": "positive",
        "probability": 0.75,
        "model": "sentiment",
        "model_version": 3,
    }
    for seq in (1, 2, 3)
]


def no_sleep(seconds: float) -> None:
    pass


def test_unprocessed_items_are_retried_then_reported() -> None:
    dynamodb, stubber = stubbed("dynamodb")
    items = [{"PutRequest": {"Item": sinks.to_item(p)}} for p in PREDICTIONS]
    stubber.add_response(
        "batch_write_item",
        {"UnprocessedItems": {TABLE: items[1:]}},
        {"RequestItems": {TABLE: items}},
    )
    # Record 3 goes through on the first retry; record 2 never does.
    stubber.add_response(
        "batch_write_item",
        {"UnprocessedItems": {TABLE: [items[1]]}},
        {"RequestItems": {TABLE: items[1:]}},
    )
    for _ in range(sinks.ATTEMPTS - 2):
        stubber.add_response(
            "batch_write_item",
            {"UnprocessedItems": {TABLE: [items[1]]}},
            {"RequestItems": {TABLE: [items[1]]}},
        )
    with stubber:
        failures = sinks.write_table(TABLE, PREDICTIONS, dynamodb=dynamodb, sleep=no_sleep)
    stubber.assert_no_pending_responses()
    assert failures == {1: "UnprocessedItems after retries"}


def test_table_items_in_attribute_value_form() -> None:
    assert sinks.to_item(PREDICTIONS[0]) == {
        "record_id": {"S": "shardId-000000000000:1"},
        "sequence_number": {"S": "1"},
        "label": {"S": "positive"},
        "probability": {"N": "0.75"},
        "model": {"S": "sentiment"},
        "model_version": {"N": "3"},
    }
    assert sinks.to_item({"sequence_number": None, "label": 1, "p": 1e-200}) == {
        "sequence_number": {"NULL": True},
        "label": {"N": "1"},
        "p": {"S": "1e-200"},  # below DynamoDB's number range: kept, as text
    }


def test_put_records_failures_are_retried_then_reported() -> None:
    kinesis, stubber = stubbed("kinesis")
    throttled = {
        "ErrorCode": "ProvisionedThroughputExceededException",
        "ErrorMessage": "Rate exceeded for shard shardId-000000000000",
    }
    ok = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}

    def sent(*positions: int) -> dict[str, Any]:
        return {
            "StreamName": STREAM,
            "Records": [
                {"Data": ANY, "PartitionKey": PREDICTIONS[p]["record_id"]} for p in positions
            ],
        }

    stubber.add_response(
        "put_records",
        {"FailedRecordCount": 2, "Records": [ok, throttled, throttled]},
        sent(0, 1, 2),
    )
    stubber.add_response(
        "put_records", {"FailedRecordCount": 1, "Records": [ok, throttled]}, sent(1, 2)
    )
    for _ in range(sinks.ATTEMPTS - 2):
        stubber.add_response(
            "put_records", {"FailedRecordCount": 1, "Records": [throttled]}, sent(2)
        )
    with stubber:
        failures = sinks.put_stream(STREAM, PREDICTIONS, kinesis=kinesis, sleep=no_sleep)
    stubber.assert_no_pending_responses()
    assert failures == {
        2: "ProvisionedThroughputExceededException: Rate exceeded for shard shardId-000000000000"
    }


def test_dead_letter_sender_fault_stops_the_letters_behind_it() -> None:
    """A message SQS refuses for good is not retried, and the ones behind it are not retried
    either: they are reported with it and resent by Lambda, so a retry now would send them
    twice. Those SQS took in the same call are said to be sent."""
    sqs, stubber = stubbed("sqs")
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"
    letters = [
        sinks.Letter({"record_id": f"r{i}", "sequence_number": str(i), "reason": "bad"})
        for i in range(4)
    ]
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [
                {"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"},
                {"Id": "3", "MessageId": "m3", "MD5OfMessageBody": "x"},
            ],
            "Failed": [
                {
                    "Id": "1",
                    "SenderFault": True,
                    "Code": "InvalidParameterValue",
                    "Message": "too big",
                },
                {"Id": "2", "SenderFault": False, "Code": "InternalError", "Message": "try again"},
            ],
        },
        {"QueueUrl": url, "Entries": [{"Id": str(i), "MessageBody": ANY} for i in range(4)]},
    )
    with stubber:
        result = sinks.dead_letter(url, letters, sqs=sqs, sleep=no_sleep)
    stubber.assert_no_pending_responses()
    assert (result.failed_at, result.error) == (1, "InvalidParameterValue: too big")
    assert result.sent == {0: "queue", 3: "queue"}


def test_dead_letter_transient_failures_are_retried() -> None:
    sqs, stubber = stubbed("sqs")
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"
    letters = [sinks.Letter({"record_id": f"r{i}", "reason": "bad"}) for i in range(3)]
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
            "Failed": [
                {"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "again"},
                {"Id": "2", "SenderFault": False, "Code": "InternalError", "Message": "again"},
            ],
        },
        {"QueueUrl": url, "Entries": [{"Id": str(i), "MessageBody": ANY} for i in range(3)]},
    )
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [
                {"Id": str(i), "MessageId": "m", "MD5OfMessageBody": "x"} for i in (1, 2)
            ],
            "Failed": [],
        },
        {"QueueUrl": url, "Entries": [{"Id": str(i), "MessageBody": ANY} for i in (1, 2)]},
    )
    with stubber:
        result = sinks.dead_letter(url, letters, sqs=sqs, sleep=no_sleep)
    stubber.assert_no_pending_responses()
    assert result.failed_at is None
    assert result.sent == {0: "queue", 1: "queue", 2: "queue"}


def test_dead_letter_chunks_respect_count_and_size() -> None:
    small, large = b"x" * 100, b"y" * 200_000
    chunks = sinks._queue_chunks([small] * 11 + [large, large])
    assert chunks == [list(range(10)), [10, 11], [12]]


def test_handler_reports_partial_sink_failures_by_sequence_number(
    text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb, stubber = stubbed("dynamodb")
    event = load_event("kinesis_reviews")
    sequence_numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]

    # The second record stays unprocessed through every attempt.
    first = invoke(event, MODEL_DIR=text_model_dir).response["predictions"]
    stuck = {"PutRequest": {"Item": sinks.to_item(first[1])}}
    for _ in range(sinks.ATTEMPTS):
        stubber.add_response(
            "batch_write_item", {"UnprocessedItems": {TABLE: [stuck]}}, {"RequestItems": ANY}
        )
    monkeypatch.setattr(sinks, "client", lambda service, deadline: dynamodb)
    monkeypatch.setattr(sinks, "BACKOFF_S", 0.0)
    with stubber:
        run = invoke(event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE)
    # The stuck record and every record behind it: Lambda retries from the stuck one.
    assert run.failures == sequence_numbers[1:]
    assert run.response["counts"]["predicted"] == 4
    assert run.response["counts"]["failed"] == 3
    (stop,) = [log for log in run.logs if log["message"] == "retry from here"]
    assert (stop["itemIdentifier"], stop["reported"]) == (sequence_numbers[1], 3)
