"""End to end: ``mlayer run-local`` consumes a stream fed KPL aggregated records, as Lambda
does: the event source mapping passes the Kinesis records through, the real function on the
real built layers de-aggregates them, and each user record comes out on its own.

Against moto_server, with the deployment of tests/test_local_e2e.py (its fixtures, its own
instance for this module); the aggregates are made by tests/kpl_encoder.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kpl_encoder import aggregate, frame
from test_local_e2e import FUNCTION, ROOT, Deployed, built_layers, deployed, mlayer

pytestmark = pytest.mark.slow
__all__ = ["built_layers", "deployed"]  # fixtures, used by name


def review(text: str) -> bytes:
    return json.dumps({"text": text}).encode()


def receive_all(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    bodies = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in batch:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def put(kinesis: Any, stream: str, entries: list[tuple[bytes, str]]) -> list[str]:
    """Put (data, partition key) records in order; their sequence numbers."""
    response = kinesis.put_records(
        StreamName=stream, Records=[{"Data": d, "PartitionKey": k} for d, k in entries]
    )
    assert response["FailedRecordCount"] == 0
    return [r["SequenceNumber"] for r in response["Records"]]


def make_stream(kinesis: Any, name: str, shards: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})


def run_local(deployed: Deployed, tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, *args, "--until-idle", "1",
        "--layers-dir", str(deployed.layers), "--function-dir", str(ROOT / "function"),
        "--log", str(tmp_path / "lambda.log"), "--checkpoints", str(tmp_path / "cp.json"),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def test_run_local_predicts_each_user_record_of_aggregated_records(
    deployed: Deployed, tmp_path: Path
) -> None:
    clients = deployed.clients
    kinesis = clients["kinesis"]
    make_stream(kinesis, "kpl-reviews", 2)
    # Given, interleaved: 12 aggregates of 5 user records (one user record of the 6th not
    # UTF-8), 8 plain records, an aggregate with a corrupt checksum and an empty one
    entries: list[tuple[bytes, str]] = []
    expected: dict[int, list[int]] = {}  # entry -> sub-sequence numbers predicted
    for n in range(12):
        user_records = [
            (f"user-{n}-{j}", b"\xff\xfe" if (n, j) == (5, 2) else review(f"great product {n}"))
            for j in range(5)
        ]
        expected[len(entries)] = [j for j in range(5) if (n, j) != (5, 2)]
        entries.append((aggregate(user_records), f"agg-{n}"))
        if n < 8:
            entries.append((review(f"plain review {n}"), f"plain-{n}"))
    corrupt = len(entries)
    entries.append((aggregate([("c", review("lost"))], corrupt_checksum=True), "corrupt"))
    entries.append((frame(b""), "empty"))
    sequences = put(kinesis, "kpl-reviews", entries)

    # When run-local drains it through the deployed alias (the function has a dead-letter
    # queue), in batches of 7 Kinesis records
    summary = run_local(
        deployed, tmp_path, "--alias", "live", "--stream", "kpl-reviews", "--batch-size", "7",
        "--report-batch-item-failures",
    )  # fmt: skip

    # Then every Kinesis record was read and checkpointed once, and every user record
    # predicted but the two bad ones, dead-lettered by the function
    stats = summary["stats"]
    assert stats["records_read"] == stats["records_done"] == len(entries) == 22
    assert stats["predictions"] == 12 * 5 - 1 + 8 == 67
    assert stats["dead_lettered"] == 2
    assert stats["aggregated"] == 12  # valid, non-empty aggregates: each de-aggregated once
    assert (stats["retries"], stats["discarded"], stats["reported"]) == (0, 0, 0)
    # and the system agrees: one item per predicted user record, keyed by
    # (sequence number, sub-sequence number)
    items = clients["dynamodb"].scan(TableName="predictions")["Items"]
    mine = {i["record_id"]["S"]: i for i in items if i["sequence_number"]["S"] in sequences}
    keys: set[tuple[str, int | None]] = set()
    for index, sequence in enumerate(sequences):
        subs = expected.get(index)
        if subs is None:
            if entries[index][1].startswith("plain"):
                keys.add((sequence, None))
            continue
        keys.update((sequence, sub) for sub in subs)
    found = {
        (
            item["sequence_number"]["S"],
            int(item["sub_sequence_number"]["N"]) if "sub_sequence_number" in item else None,
        )
        for item in mine.values()
    }
    assert found == keys
    assert len(mine) == 67
    for record_id, item in mine.items():
        suffix = item.get("sub_sequence_number", {}).get("N")
        assert record_id.endswith(f"{item['sequence_number']['S']}:{suffix}" if suffix else "")
    # the dead letters: the bad user record (whole, its own keys) and the corrupt aggregate
    letters = {
        letter["sequence_number"]: letter
        for letter in receive_all(clients["sqs"], deployed.dlq_url)
        if letter["sequence_number"] in sequences
    }
    bad_user = letters[sequences[10]]  # the 6th aggregate (entries: agg, plain, ...)
    assert bad_user["sub_sequence_number"] == 2
    assert bad_user["record"]["kinesis"]["partitionKey"] == "user-5-2"
    assert bad_user["reason"].startswith("payload is neither a JSON object nor UTF-8 text")
    assert letters[sequences[corrupt]]["reason"].startswith(
        "KPL aggregated record is corrupt: MD5 checksum mismatch"
    )
    assert len(letters) == 2


def test_run_local_retries_an_aggregate_from_its_sequence_number(
    deployed: Deployed, tmp_path: Path
) -> None:
    clients = deployed.clients
    kinesis = clients["kinesis"]
    lam = clients["lambda"]
    make_stream(kinesis, "kpl-retries", 1)
    # Given $LATEST without a dead-letter queue (bad records go to batchItemFailures), and
    # a plain record, an aggregate with two bad user records, a plain one, a good aggregate
    # (its own output table: moto's sequence numbers restart at 1 on every stream)
    clients["dynamodb"].create_table(
        TableName="kpl-predictions",
        KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    lam.update_function_configuration(
        FunctionName=FUNCTION, Environment={"Variables": {"OUTPUT_TABLE": "kpl-predictions"}}
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=FUNCTION)
    failures_before = len(receive_all(clients["sqs"], deployed.failures_url))
    bad = [("a0", b"\xff"), ("a1", review("works well")), ("a2", b"\xfe")]
    sequences = put(
        kinesis,
        "kpl-retries",
        [
            (review("love it"), "p0"),
            (aggregate(bad), "agg-a"),
            (review("five stars"), "p1"),
            (aggregate([("b0", review("great")), ("b1", review("fine"))]), "agg-b"),
        ],
    )

    # When run-local runs $LATEST with partial batch responses, one retry, and an
    # on-failure queue
    summary = run_local(
        deployed, tmp_path, "--stream", "kpl-retries", "--batch-size", "10",
        "--report-batch-item-failures", "--max-retries", "1",
        "--on-failure", deployed.failures_arn,
    )  # fmt: skip

    # Then the function reported the aggregate's sequence number once per invocation (two
    # bad user records, one itemIdentifier), the mapping checkpointed before it, retried
    # from it, then gave the rest of the batch up to the on-failure queue
    stats = summary["stats"]
    assert stats["invocations"] == 2 and stats["retries"] == 1
    assert stats["reported"] == 2
    assert stats["records_read"] == stats["records_done"] == 4
    assert stats["discarded"] == 3
    assert stats["aggregated"] == 2 + 2  # both aggregates, in each invocation
    (message,) = receive_all(clients["sqs"], deployed.failures_url)[failures_before:]
    info = message["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        sequences[1],
        sequences[3],
        3,
    )
    # the good user records were written all the same (the table is idempotent)
    items = clients["dynamodb"].scan(TableName="kpl-predictions")["Items"]
    written = sorted(
        (i["sequence_number"]["S"], i.get("sub_sequence_number", {}).get("N", "-")) for i in items
    )
    assert written == sorted(
        [
            (sequences[0], "-"),
            (sequences[1], "1"),
            (sequences[2], "-"),
            (sequences[3], "0"),
            (sequences[3], "1"),
        ]
    )
