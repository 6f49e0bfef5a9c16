"""The event source mapping emulator follows Lambda's stream semantics, each one proven here.

The stream is an in-memory stand-in (exact control over shards, arrival times and read
sizes) and the function a Python callable; the same emulator against moto's Kinesis and
DynamoDB Streams is checked at the end, and with the real function on real layers in
tests/test_local_e2e.py.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from moto import mock_aws

from mlayer.cli import cli
from mlayer.errors import ConfigError, NotFoundError
from mlayer.local.esm import (
    AwsDestination,
    DynamoDBStreamSource,
    KinesisSource,
    MappingSettings,
    RunAborted,
    RunSummary,
    Shard,
    StreamProcessor,
    StreamRecord,
)
from mlayer.reports import Report

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"


class FakeStream:
    """Shards of records in memory; each read returns at most ``per_read`` records."""

    kind = "kinesis"
    arn = STREAM_ARN

    def __init__(self, per_read: int = 10_000) -> None:
        self.records: dict[str, list[StreamRecord]] = {}
        self.per_read = per_read
        self.trimmed: dict[str, set[str]] = {}  # sequence numbers past the trim horizon
        self._lock = threading.Lock()

    def add(
        self,
        shard_id: str,
        count: int,
        *,
        key: Callable[[int], str] = str,
        arrival: float | None = None,
        size: int = 200,
    ) -> list[str]:
        with self._lock:
            shard = self.records.setdefault(shard_id, [])
            added = []
            for _ in range(count):
                n = len(shard)
                seq = f"{int(shard_id[-1]) + 1}{n:08d}"
                event = {"kinesis": {"sequenceNumber": seq, "n": n}, "eventID": f"{shard_id}:{seq}"}
                shard.append(
                    StreamRecord(shard_id, seq, key(n), arrival or time.time(), event, size)
                )
                added.append(seq)
            return added

    def shards(self) -> list[Shard]:
        return [Shard(shard_id, None) for shard_id in sorted(self.records)]

    def iterator(self, shard_id: str, position: str, timestamp: datetime | None) -> str:
        start = len(self.records[shard_id]) if position == "LATEST" else 0
        return f"{shard_id}|{start}"

    def iterator_after(self, shard_id: str, sequence_number: str) -> str:
        seqs = [r.sequence_number for r in self.records[shard_id]]
        if sequence_number in self.trimmed.get(shard_id, ()):
            raise ClientError(
                {"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}},
                "GetShardIterator",
            )
        return f"{shard_id}|{seqs.index(sequence_number) + 1}"

    def read(
        self, shard_id: str, iterator: str, limit: int
    ) -> tuple[list[StreamRecord], str | None]:
        position = int(iterator.split("|")[1])
        with self._lock:
            batch = self.records[shard_id][position : position + min(limit, self.per_read)]
        return batch, f"{shard_id}|{position + len(batch)}"


@dataclass
class Result:
    response: Any = None
    error: dict[str, Any] | None = None
    report: Report = field(default_factory=lambda: Report("id", 1.0, 1, 128, 64))


@dataclass
class Delivery:
    shard: str
    seqs: list[str]
    keys: list[str]
    lane: int


class FakeFunction:
    """Records every delivery; ``behave(seqs) -> response`` may raise to fail the batch."""

    def __init__(self, behave: Callable[[list[str]], Any] | None = None) -> None:
        self.behave = behave or (lambda seqs: {"batchItemFailures": []})
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self.environments = 0
        self.closed = threading.Event()  # set once any environment is closed

    def factory(self) -> Any:
        with self.lock:
            self.environments += 1
            lane = self.environments
        function = self

        class Env:
            def invoke(self, event: bytes) -> Result:
                records = json.loads(event)["Records"]
                seqs = [r["kinesis"]["sequenceNumber"] for r in records]
                with function.lock:
                    function.deliveries.append(
                        Delivery(records[0]["eventID"].split(":")[0], seqs, [], lane)
                    )
                try:
                    return Result(response=function.behave(seqs))
                except Exception as exc:
                    return Result(error={"errorType": type(exc).__name__, "errorMessage": str(exc)})

            def close(self) -> None:
                function.closed.set()

        return Env()

    def delivered(self, shard: str | None = None) -> list[str]:
        return [s for d in self.deliveries if shard in (None, d.shard) for s in d.seqs]


class FakeDestination:
    keeps_records = False

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def run(
    stream: Any,
    function: FakeFunction,
    destination: FakeDestination | None = None,
    *,
    until_idle_s: float | None = 0.3,
    max_records: int | None = None,
    stop: threading.Event | None = None,
    resume: dict[str, str] | None = None,
    on_checkpoint: Callable[[str, str], None] | None = None,
    **settings: Any,
) -> RunSummary:
    processor = StreamProcessor(
        stream,
        MappingSettings(**settings),
        function.factory,
        destination=destination,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:scorer",
        poll_interval_s=0.02,
        retry_delay_s=0.0,
        resume=resume,
        on_checkpoint=on_checkpoint,
    )
    return processor.run(until_idle_s=until_idle_s, max_records=max_records, stop=stop)


def test_each_shard_in_order_every_record_once() -> None:
    # Given two shards of 250 records
    stream = FakeStream(per_read=70)
    first = stream.add("shardId-000000000000", 250)
    second = stream.add("shardId-000000000001", 250)
    function = FakeFunction()
    # When the emulator drains them in batches of 100
    summary = run(stream, function, batch_size=100)
    # Then each shard is delivered in order, every record exactly once
    assert function.delivered("shardId-000000000000") == first
    assert function.delivered("shardId-000000000001") == second
    assert all(len(d.seqs) <= 100 for d in function.deliveries)
    assert summary.stats.records_done == 500 and summary.stats.retries == 0
    assert summary.stopped == "idle"
    assert summary.shard_checkpoints == {
        "shardId-000000000000": first[-1],
        "shardId-000000000001": second[-1],
    }
    assert summary.resumed_from == {
        "shardId-000000000000": {"position": "TRIM_HORIZON"},
        "shardId-000000000001": {"position": "TRIM_HORIZON"},
    }
    assert summary.unresolved == {}
    # One execution environment per shard, as Lambda scales.
    assert function.environments == 2


def test_partial_failure_checkpoints_before_the_lowest_failure_and_retries_from_it() -> None:
    stream = FakeStream()
    seqs = stream.add("shardId-000000000000", 10)
    failed_once: set[str] = set()

    def behave(batch: list[str]) -> Any:
        # Report records 6 and 4 (out of order) once each.
        failures = [s for s in (seqs[6], seqs[4]) if s in batch and s not in failed_once]
        failed_once.update(failures)
        return {"batchItemFailures": [{"itemIdentifier": s} for s in failures]}

    function = FakeFunction(behave)
    summary = run(stream, function, batch_size=10, report_batch_item_failures=True)
    # First the whole batch, then a retry from the lowest failed record (index 4) onwards.
    assert [d.seqs for d in function.deliveries] == [seqs, seqs[4:]]
    # Records before the checkpoint are never delivered again; none is skipped.
    delivered = function.delivered()
    assert all(delivered.count(s) == 1 for s in seqs[:4])
    assert set(delivered) == set(seqs)
    assert summary.stats.reported == 2 and summary.stats.retries == 1
    assert summary.stats.records_done == 10 and summary.stats.discarded == 0


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([{"itemIdentifier": None}], id="null-identifier"),
        pytest.param([{"itemIdentifier": ""}], id="empty-identifier"),
        pytest.param([{"itemIdentifier": "999"}], id="unknown-identifier"),
        pytest.param([{}], id="missing-identifier"),
    ],
)
def test_invalid_identifier_fails_the_whole_batch(items: list[dict[str, Any]]) -> None:
    stream = FakeStream()
    seqs = stream.add("shardId-000000000000", 5)
    calls = []

    def behave(batch: list[str]) -> Any:
        calls.append(batch)
        return {"batchItemFailures": items} if len(calls) == 1 else {"batchItemFailures": []}

    function = FakeFunction(behave)
    summary = run(stream, function, batch_size=10, report_batch_item_failures=True)
    assert calls == [seqs, seqs]  # the whole batch again
    assert summary.stats.retries == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"batchItemFailures": []}, id="empty-list"),
        pytest.param({"batchItemFailures": None}, id="null"),
        pytest.param({"predictions": []}, id="absent"),
        pytest.param(None, id="no-response"),
    ],
)
def test_empty_or_null_failures_mean_success(response: Any) -> None:
    stream = FakeStream()
    stream.add("shardId-000000000000", 5)
    function = FakeFunction(lambda batch: response)
    summary = run(stream, function, batch_size=10, report_batch_item_failures=True)
    assert len(function.deliveries) == 1 and summary.stats.retries == 0


def test_reported_failures_are_ignored_without_report_batch_item_failures() -> None:
    stream = FakeStream()
    seqs = stream.add("shardId-000000000000", 5)
    function = FakeFunction(lambda batch: {"batchItemFailures": [{"itemIdentifier": seqs[0]}]})
    summary = run(stream, function, batch_size=10, report_batch_item_failures=False)
    assert len(function.deliveries) == 1 and summary.stats.records_done == 5


def test_bisect_isolates_a_poison_record_then_max_retries_send_it_on() -> None:
    # Given a batch of 16 whose record 11 always makes the function raise
    stream = FakeStream()
    seqs = stream.add("shardId-000000000000", 16)
    poison = seqs[11]

    def behave(batch: list[str]) -> Any:
        if poison in batch:
            raise ValueError("cannot score")
        return {"batchItemFailures": []}

    function = FakeFunction(behave)
    destination = FakeDestination()
    # When bisecting on function errors with one retry
    summary = run(
        stream, function, destination, batch_size=16, bisect_on_error=True, max_retry_attempts=1
    )
    # Then the batch is halved down to the poison record, retried once, and discarded alone
    sizes = [len(d.seqs) for d in function.deliveries]
    assert sizes == [16, 8, 8, 4, 2, 2, 1, 1, 1, 4]
    assert [d.seqs for d in function.deliveries][-3:-1] == [[poison], [poison]]
    assert len(destination.messages) == 1
    info = destination.messages[0]["KinesisBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison
    assert info["batchSize"] == 1
    assert destination.messages[0]["requestContext"]["approximateInvokeCount"] == 2
    # Every other record was delivered successfully exactly once after its last failure.
    succeeded = [d.seqs for d in function.deliveries if poison not in d.seqs]
    flat = [s for seqs_ in succeeded for s in seqs_]
    assert sorted(flat) == sorted(s for s in seqs if s != poison)
    assert summary.stats.bisections == 4 and summary.stats.discarded == 1
    assert summary.stats.function_errors == {"ValueError": 6}


def test_max_retries_then_on_failure_destination_with_lambdas_metadata() -> None:
    stream = FakeStream()
    seqs = stream.add("shardId-000000000001", 15, arrival=1_700_000_000.0)
    failing = set(seqs[:10])

    def behave(batch: list[str]) -> Any:
        if failing & set(batch):
            raise RuntimeError("sink down")
        return {}

    function = FakeFunction(behave)
    destination = FakeDestination()
    summary = run(stream, function, destination, batch_size=10, max_retry_attempts=2)
    # 1 attempt + 2 retries of the first batch, then the shard moves on to the next batch.
    assert [d.seqs for d in function.deliveries] == [seqs[:10]] * 3 + [seqs[10:]]
    assert destination.messages == [
        {
            "requestContext": {
                "requestId": destination.messages[0]["requestContext"]["requestId"],
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:scorer",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 3,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": destination.messages[0]["timestamp"],
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000001",
                "startSequenceNumber": seqs[0],
                "endSequenceNumber": seqs[9],
                "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.000Z",
                "approximateArrivalOfLastRecord": "2023-11-14T22:13:20.000Z",
                "batchSize": 10,
                "streamArn": STREAM_ARN,
            },
        }
    ]
    assert summary.stats.discarded == 10 and summary.stats.records_done == 15
    assert summary.stats.retries == 2


def test_partial_failure_retries_are_bounded_too() -> None:
    stream = FakeStream()
    seqs = stream.add("shardId-000000000000", 6)
    function = FakeFunction(lambda batch: {"batchItemFailures": [{"itemIdentifier": seqs[3]}]})
    destination = FakeDestination()
    summary = run(
        stream,
        function,
        destination,
        batch_size=6,
        report_batch_item_failures=True,
        max_retry_attempts=1,
    )
    assert [d.seqs for d in function.deliveries] == [seqs, seqs[3:]]
    info = destination.messages[0]["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (seqs[3], seqs[5])
    assert "functionError" not in destination.messages[0]["responseContext"]
    assert summary.stats.discarded == 3 and summary.stats.records_done == 6


def test_records_older_than_max_age_are_discarded_unprocessed() -> None:
    stream = FakeStream()
    old = stream.add("shardId-000000000000", 3, arrival=time.time() - 120)
    fresh = stream.add("shardId-000000000000", 2)
    function = FakeFunction()
    destination = FakeDestination()
    summary = run(stream, function, destination, batch_size=10, max_record_age_s=60)
    assert function.delivered() == fresh
    assert destination.messages[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert destination.messages[0]["KinesisBatchInfo"]["batchSize"] == len(old)
    assert summary.stats.discarded == 3


def test_parallelization_keeps_order_per_partition_key() -> None:
    stream = FakeStream(per_read=50)
    stream.add("shardId-000000000000", 400, key=lambda n: f"user-{n % 7}")

    def slow(batch: list[str]) -> Any:
        time.sleep(0.002)  # lets the three lanes overlap
        return {}

    function = FakeFunction(slow)
    order: dict[str, list[int]] = {}
    summary = run(stream, function, batch_size=20, parallelization_factor=3)
    lanes_of_key: dict[str, set[int]] = {}
    by_seq = {r.sequence_number: r for r in stream.records["shardId-000000000000"]}
    for delivery in function.deliveries:
        for seq in delivery.seqs:
            key = by_seq[seq].partition_key
            order.setdefault(key, []).append(int(seq))
            lanes_of_key.setdefault(key, set()).add(delivery.lane)
    assert all(seqs == sorted(seqs) for seqs in order.values())  # in order per key
    assert all(len(lanes) == 1 for lanes in lanes_of_key.values())  # a key stays on one lane
    assert function.environments == 3  # three concurrent batches, three environments
    assert summary.stats.records_done == 400 and len(function.delivered()) == 400


def test_batching_window_gathers_records() -> None:
    def trickle(batching_window_s: float) -> FakeFunction:
        stream = FakeStream()
        stream.add("shardId-000000000000", 1)

        def produce() -> None:  # one record every 20 ms
            for _ in range(29):
                time.sleep(0.02)
                stream.add("shardId-000000000000", 1)

        producer = threading.Thread(target=produce)
        producer.start()
        function = FakeFunction()
        run(stream, function, batch_size=30, batching_window_s=batching_window_s)
        producer.join()
        assert len(function.delivered()) == 30
        return function

    unbatched = trickle(0)
    windowed = trickle(1.0)
    # Without a window each poll's few records go at once; with one, they are gathered.
    assert len(unbatched.deliveries) > 5
    assert len(windowed.deliveries) <= 2
    assert len(windowed.deliveries[0].seqs) >= 20


def test_batches_stay_under_the_6_mb_payload_limit() -> None:
    stream = FakeStream()
    stream.add("shardId-000000000000", 20, size=1024 * 1024)  # 1 MB records
    function = FakeFunction()
    run(stream, function, batch_size=100)
    assert max(len(d.seqs) for d in function.deliveries) == 5
    assert len(function.delivered()) == 20


def test_latest_skips_what_was_there_before() -> None:
    stream = FakeStream()
    stream.add("shardId-000000000000", 5)
    function = FakeFunction()
    summary = run(stream, function, starting_position="LATEST")
    assert function.delivered() == [] and summary.stats.records_done == 0


def test_max_records_stops_after_that_many() -> None:
    stream = FakeStream(per_read=7)
    seqs = stream.add("shardId-000000000000", 100)
    function = FakeFunction()
    summary = run(stream, function, until_idle_s=None, max_records=25, batch_size=10)
    assert summary.stopped == "max-records"
    assert function.delivered() == seqs[:25]


def test_infinite_retries_block_the_shard_until_stopped() -> None:
    stream = FakeStream()
    stream.add("shardId-000000000000", 3)

    def behave(batch: list[str]) -> Any:
        raise RuntimeError("always")

    function = FakeFunction(behave)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    summary = run(stream, function, until_idle_s=5, stop=stop, max_retry_attempts=-1)
    assert summary.stopped == "interrupted"
    assert summary.stats.records_done == 0 and summary.stats.retries >= 3
    assert {tuple(d.seqs) for d in function.deliveries} == {tuple(function.deliveries[0].seqs)}


SHARD = "shardId-000000000000"


def test_stopping_finishes_the_batch_in_flight_and_starts_no_other() -> None:
    # Given 500 records read at once, and a stop (Ctrl-C) while the first batch runs
    stream = FakeStream()
    seqs = stream.add(SHARD, 500)
    stop = threading.Event()

    def behave(batch: list[str]) -> Any:
        stop.set()
        return {"batchItemFailures": []}

    function = FakeFunction(behave)
    saved: list[tuple[str, str]] = []
    summary = run(
        stream, function, until_idle_s=None, stop=stop, batch_size=10,
        on_checkpoint=lambda shard, seq: saved.append((shard, seq)),
    )  # fmt: skip
    # Then that batch finished and was checkpointed, and none of the 490 others started
    assert [d.seqs for d in function.deliveries] == [seqs[:10]]
    assert summary.stopped == "interrupted"
    assert saved == [(SHARD, seqs[9])]
    assert summary.shard_checkpoints == {SHARD: seqs[9]}
    assert summary.unresolved == {SHARD: seqs[10]}
    assert summary.stats.records_done == 10


def test_stopping_during_a_retry_keeps_the_checkpoint_before_the_unresolved_record() -> None:
    # Given a batch whose record 4 fails (partial batch response) as Ctrl-C arrives
    stream = FakeStream()
    seqs = stream.add(SHARD, 30)
    stop = threading.Event()

    def fail_fourth(batch: list[str]) -> Any:
        stop.set()
        return {"batchItemFailures": [{"itemIdentifier": seqs[4]}]}

    function = FakeFunction(fail_fourth)
    saved: list[str] = []
    summary = run(
        stream, function, until_idle_s=None, stop=stop, batch_size=10,
        report_batch_item_failures=True, on_checkpoint=lambda shard, seq: saved.append(seq),
    )  # fmt: skip
    # Then the retry is left for the next run, no later record is processed, and the
    # checkpoint stays just before the unresolved record
    assert [d.seqs for d in function.deliveries] == [seqs[:10]]
    assert saved == [seqs[3]]
    assert summary.shard_checkpoints == {SHARD: seqs[3]}
    assert summary.unresolved == {SHARD: seqs[4]}
    # When the next run resumes from that checkpoint
    again = FakeFunction()
    resumed = run(stream, again, resume={SHARD: seqs[3]}, batch_size=10)
    # Then it starts at the unresolved record and goes on in order, once each
    assert again.delivered() == seqs[4:]
    assert resumed.resumed_from == {
        SHARD: {"position": "AFTER_SEQUENCE_NUMBER", "sequence_number": seqs[3]}
    }
    assert resumed.shard_checkpoints == {SHARD: seqs[-1]}


def test_the_checkpoint_never_passes_a_record_another_lane_has_not_resolved() -> None:
    # Given two lanes (parallelization 2) and a poison record in one of them, retried forever
    stream = FakeStream()
    seqs = stream.add(SHARD, 40, key=lambda n: f"key-{n % 4}")
    poison = seqs[25]
    stop = threading.Event()

    def behave(batch: list[str]) -> Any:
        if poison in batch:
            raise RuntimeError("poison")
        if seqs[-1] in batch:
            threading.Timer(0.2, stop.set).start()
        return {"batchItemFailures": []}

    function = FakeFunction(behave)
    saved: list[str] = []
    summary = run(
        stream, function, until_idle_s=None, stop=stop, batch_size=5,
        parallelization_factor=2, on_checkpoint=lambda shard, seq: saved.append(seq),
    )  # fmt: skip
    # Then the other lane got to the end, but the shard's checkpoint stays before the poison
    assert seqs[-1] in function.delivered()
    failing = next(d.seqs for d in function.deliveries if poison in d.seqs)
    checkpoint = summary.shard_checkpoints[SHARD]
    assert checkpoint is not None and int(checkpoint) < int(failing[0])
    assert saved and all(int(seq) < int(failing[0]) for seq in saved)
    assert saved == sorted(saved, key=int)  # written in order
    assert summary.unresolved == {SHARD: failing[0]}


def test_a_checkpoint_past_the_trim_horizon_is_reported_and_reading_starts_there() -> None:
    stream = FakeStream()
    seqs = stream.add(SHARD, 5)
    stream.trimmed[SHARD] = {seqs[1]}
    function = FakeFunction()
    summary = run(stream, function, resume={SHARD: seqs[1]}, starting_position="LATEST")
    assert function.delivered() == seqs
    assert summary.resumed_from == {
        SHARD: {"position": "TRIM_HORIZON", "expired_checkpoint": seqs[1]}
    }
    assert summary.notes == [
        f"{SHARD}: the checkpoint {seqs[1]} is past the trim horizon (the records after it "
        "expired before this run): resumed from TRIM_HORIZON"
    ]


def test_a_checkpoint_takes_precedence_over_the_starting_position() -> None:
    stream = FakeStream()
    seqs = stream.add(SHARD, 20)
    function = FakeFunction()
    run(stream, function, resume={SHARD: seqs[11]}, starting_position="LATEST")
    assert function.delivered() == seqs[12:]


def test_an_interrupt_while_stopping_aborts_and_kills_the_environments() -> None:
    # Given a batch that never ends by itself (it ends when its environment is killed)
    stream = FakeStream()
    stream.add(SHARD, 20)
    stop = threading.Event()
    function = FakeFunction()

    def hang(batch: list[str]) -> Any:
        stop.set()  # the first Ctrl-C
        # The second Ctrl-C, delivered to the main thread as the terminal would
        threading.Timer(
            0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
        ).start()
        function.closed.wait(30)
        raise RuntimeError("killed")

    function.behave = hang
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(RunAborted) as aborted:
            run(stream, function, until_idle_s=None, stop=stop, batch_size=10)
    finally:
        signal.signal(signal.SIGINT, previous)
    # Then the environment was closed (killed) and nothing was checkpointed
    assert function.closed.is_set()
    assert aborted.value.killed == 1
    assert aborted.value.checkpoints == {SHARD: None}


def test_a_second_interrupt_before_the_loop_sees_the_first_still_aborts() -> None:
    # Given a hanging batch, and a second Ctrl-C right after the first: the main loop has
    # not yet seen the first one's stop when the second's KeyboardInterrupt reaches it
    stream = FakeStream()
    stream.add(SHARD, 20)
    stop = threading.Event()
    function = FakeFunction()

    def hang(batch: list[str]) -> Any:
        stop.set()
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        function.closed.wait(30)
        raise RuntimeError("killed")

    function.behave = hang
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(RunAborted) as aborted:
            run(stream, function, until_idle_s=None, stop=stop, batch_size=10)
    finally:
        signal.signal(signal.SIGINT, previous)
    # Then it aborted at once: the environment killed, not waited for
    assert function.closed.is_set()
    assert aborted.value.killed == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch size must be 1-10000 (--batch-size)"),
        ({"parallelization_factor": 11}, "parallelization factor must be 1-10"),
        ({"max_record_age_s": 10}, "maximum record age must be -1 (infinite) or 60-604800"),
        ({"starting_position": "AT_TIMESTAMP"}, "AT_TIMESTAMP needs a timestamp"),
        pytest.param(
            {"on_failure": "arn:aws:s3:::bucket/prefix"},
            "on-failure destination 'arn:aws:s3:::bucket/prefix' must be an SQS queue, SNS "
            "topic or S3 bucket ARN: arn:aws:sqs:REGION:ACCOUNT:NAME, arn:aws:sns:REGION:"
            "ACCOUNT:NAME or arn:aws:s3:::BUCKET (--on-failure)",
            id="s3-with-a-key",
        ),
        pytest.param(
            {"on_failure": "arn:aws:s3:us-east-1:123456789012:bucket"},
            "must be an SQS queue, SNS topic or S3 bucket ARN",
            id="s3-with-region-and-account",
        ),
        pytest.param(
            {"on_failure": "arn:aws:lambda:us-east-1:123456789012:function:f"},
            "must be an SQS queue, SNS topic or S3 bucket ARN",
            id="lambda-function",
        ),
        pytest.param({"on_failure": "scorer-failures"}, "must be an SQS queue", id="a-bare-name"),
    ],
)
def test_settings_are_checked_against_lambdas_ranges(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MappingSettings(**settings).validate()


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("arn:aws:s3:::scorer-failures", id="s3"),
        pytest.param("arn:aws:sqs:us-east-1:123456789012:dlq", id="sqs"),
        pytest.param("arn:aws:sns:us-east-1:123456789012:failures", id="sns"),
    ],
)
def test_every_destination_lambda_accepts_for_a_stream_is_accepted(arn: str) -> None:
    # An S3 bucket is what `mlayer trigger --on-failure` recommends: run-local must take it.
    assert MappingSettings(on_failure=arn).validate().on_failure == arn


def test_settings_from_an_existing_mapping_and_flag_overrides() -> None:
    mapping = {
        "UUID": "abc",
        "BatchSize": 500,
        "MaximumBatchingWindowInSeconds": 2,
        "StartingPosition": "LATEST",
        "ParallelizationFactor": 2,
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": 3,
        "MaximumRecordAgeInSeconds": 3600,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:dlq"}},
    }
    settings = MappingSettings.from_mapping(mapping).override(batch_size=50, bisect_on_error=None)
    assert settings == MappingSettings(
        batch_size=50,
        batching_window_s=2.0,
        starting_position="LATEST",
        parallelization_factor=2,
        bisect_on_error=True,
        max_retry_attempts=3,
        max_record_age_s=3600,
        report_batch_item_failures=True,
        on_failure="arn:aws:sqs:us-east-1:1:dlq",
        source="abc",
    )


# -- against moto's streams -------------------------------------------------------------------


class CapturingFunction:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def factory(self) -> Any:
        outer = self

        class Env:
            def invoke(self, event: bytes) -> Result:
                outer.events.append(json.loads(event))
                return Result(response={"batchItemFailures": []})

            def close(self) -> None:
                pass

        return Env()


@mock_aws
def test_kinesis_records_have_lambdas_event_shape() -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="events", ShardCount=2)
    arn = kinesis.describe_stream_summary(StreamName="events")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    kinesis.put_records(
        StreamName="events",
        Records=[
            {"Data": json.dumps({"text": f"t{i}"}).encode(), "PartitionKey": f"k{i}"}
            for i in range(40)
        ],
    )
    function = CapturingFunction()
    source = KinesisSource(
        kinesis, arn, region="us-east-1", invoke_identity_arn="arn:aws:iam::123456789012:role/r"
    )
    summary = StreamProcessor(
        source, MappingSettings(batch_size=100), function.factory, poll_interval_s=0.02
    ).run(until_idle_s=0.3)
    records = [r for event in function.events for r in event["Records"]]
    assert len(records) == 40 and summary.stats.records_done == 40
    record = records[0]
    assert set(record) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    assert record["eventSource"] == "aws:kinesis" and record["eventSourceARN"] == arn
    assert (
        record["eventID"]
        == f"{record['eventID'].split(':')[0]}:{record['kinesis']['sequenceNumber']}"
    )
    assert json.loads(base64.b64decode(record["kinesis"]["data"]))["text"].startswith("t")
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
    assert len({r["eventID"].split(":")[0] for r in records}) == 2


@mock_aws
def test_dynamodb_stream_records_and_sqs_on_failure() -> None:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="reviews",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream_arn = dynamodb.describe_table(TableName="reviews")["Table"]["LatestStreamArn"]
    for i in range(5):
        dynamodb.put_item(
            TableName="reviews",
            Item={"id": {"S": f"r{i}"}, "text": {"S": "ok"}, "blob": {"B": b"\x00"}},
        )
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="esm-failures")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    events: list[dict[str, Any]] = []

    class Failing:
        def invoke(self, event: bytes) -> Result:
            events.append(json.loads(event))
            return Result(error={"errorType": "RuntimeError", "errorMessage": "down"})

        def close(self) -> None:
            pass

    clients = {"sqs": sqs}
    summary = StreamProcessor(
        DynamoDBStreamSource(streams, stream_arn, region="us-east-1"),
        MappingSettings(batch_size=10, max_retry_attempts=0),
        Failing,
        destination=AwsDestination(queue_arn, clients.__getitem__),
        poll_interval_s=0.02,
    ).run(until_idle_s=0.3)
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:dynamodb" and record["eventSourceARN"] == stream_arn
    assert record["eventName"] == "INSERT"
    assert record["dynamodb"]["NewImage"]["text"] == {"S": "ok"}
    assert record["dynamodb"]["NewImage"]["blob"] == {"B": base64.b64encode(b"\x00").decode()}
    assert record["dynamodb"]["SequenceNumber"]
    json.dumps(events)  # the event is JSON as Lambda delivers it
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(messages[0]["Body"])
    assert body["DDBStreamBatchInfo"]["batchSize"] == 5
    assert body["DDBStreamBatchInfo"]["streamArn"] == stream_arn
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert summary.stats.discarded == 5


@mock_aws
def test_a_batch_given_up_on_goes_whole_to_an_s3_destination() -> None:
    # Given a bucket as the on-failure destination and a function that always fails
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="scorer-failures")
    stream = FakeStream()
    seqs = stream.add("shardId-000000000001", 4, arrival=1_700_000_000.0)
    raw = {
        seq: base64.b64encode(json.dumps({"text": f"t{n}"}).encode()).decode()
        for n, seq in enumerate(seqs)
    }
    for record in stream.records["shardId-000000000001"]:
        record.event["kinesis"]["data"] = raw[record.sequence_number]

    def behave(batch: list[str]) -> Any:
        raise RuntimeError("sink down")

    destination = AwsDestination(
        "arn:aws:s3:::scorer-failures",
        {"s3": s3}.__getitem__,
        mapping_uuid="9f6c3a47-3c1b-4f0e-9d5e-0a1b2c3d4e5f",
    )

    # When the batch exhausts its retries
    summary = StreamProcessor(
        stream,
        MappingSettings(batch_size=10, max_retry_attempts=1),
        FakeFunction(behave).factory,
        destination=destination,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:scorer",
        poll_interval_s=0.02,
        retry_delay_s=0.0,
    ).run(until_idle_s=0.3)

    # Then one object holds it, under Lambda's documented key
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="scorer-failures")["Contents"]]
    assert len(keys) == 1
    assert re.fullmatch(
        r"aws/lambda/9f6c3a47-3c1b-4f0e-9d5e-0a1b2c3d4e5f/shardId-000000000001/"
        r"\d{4}/\d{2}/\d{2}/\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}-[0-9a-f-]{36}",
        keys[0],
    ), keys[0]
    record = json.loads(s3.get_object(Bucket="scorer-failures", Key=keys[0])["Body"].read())
    # the metadata, as the queue or topic would get it
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == seqs[0]
    assert record["KinesisBatchInfo"]["endSequenceNumber"] == seqs[-1]
    assert record["KinesisBatchInfo"]["batchSize"] == 4
    # and the batch's event as an escaped JSON string, data base64 as Lambda delivered it
    assert isinstance(record["payload"], str)
    records = json.loads(record["payload"])["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in records] == seqs
    assert [r["kinesis"]["data"] for r in records] == [raw[seq] for seq in seqs]
    assert summary.stats.discarded == 4 and summary.stats.on_failure_messages == 1


@mock_aws
def test_run_local_refuses_a_malformed_on_failure_arn_with_one_error_line() -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="events", ShardCount=1)
    result = CliRunner().invoke(
        cli,
        ["run-local", "--function", "scorer", "--stream", "events",
         "--on-failure", "arn:aws:s3:::scorer-failures/prefix", "--until-idle", "1"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: on-failure destination 'arn:aws:s3:::scorer-failures/prefix' must be an SQS "
        "queue, SNS topic or S3 bucket ARN: arn:aws:sqs:REGION:ACCOUNT:NAME, arn:aws:sns:"
        "REGION:ACCOUNT:NAME or arn:aws:s3:::BUCKET (--on-failure)"
    )


@mock_aws
def test_a_missing_on_failure_bucket_is_named() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    with pytest.raises(NotFoundError, match="the on-failure bucket nowhere does not exist"):
        AwsDestination("arn:aws:s3:::nowhere", {"s3": s3}.__getitem__)


def test_a_slow_read_is_not_idleness() -> None:
    # moto takes seconds to return 10,000 records: the run must wait for them, not stop idle.
    class SlowStream(FakeStream):
        def read(
            self, shard_id: str, iterator: str, limit: int
        ) -> tuple[list[StreamRecord], str | None]:
            time.sleep(0.8)
            return super().read(shard_id, iterator, limit)

    stream = SlowStream()
    seqs = stream.add("shardId-000000000000", 50)
    function = FakeFunction()
    summary = run(stream, function, until_idle_s=0.3)
    assert function.delivered() == seqs
    assert summary.stopped == "idle"


# -- FilterCriteria ------------------------------------------------------------------------


def _with_data(stream: FakeStream, shard: str, payloads: list[bytes]) -> list[str]:
    seqs = stream.add(shard, len(payloads))
    for record, payload in zip(stream.records[shard][-len(payloads) :], payloads, strict=True):
        record.event["kinesis"]["data"] = base64.b64encode(payload).decode()
    return seqs


def test_filtered_records_are_dropped_before_batching_and_checkpointed() -> None:
    # Given 10 records, of which 4 are "open" JSON, 3 "closed" JSON and 3 not JSON at all
    stream = FakeStream()
    kinds = ["open", "closed", "text", "open", "closed", "open", "text", "closed", "text", "open"]
    payloads = [b"plain text" if k == "text" else json.dumps({"status": k}).encode() for k in kinds]
    seqs = _with_data(stream, "shardId-000000000000", payloads)
    function = FakeFunction()
    checkpoints: list[str] = []
    # When the mapping filters to open records, in batches of 3
    summary = run(
        stream, function, batch_size=3, on_checkpoint=lambda shard, seq: checkpoints.append(seq),
        filters=('{"data": {"status": ["open"]}}',),
    )  # fmt: skip
    # Then only the 4 open records are delivered, in order, filling batches by themselves
    opened = [s for s, k in zip(seqs, kinds, strict=True) if k == "open"]
    assert function.delivered() == opened
    assert [len(d.seqs) for d in function.deliveries] == [3, 1]
    assert summary.stats.invocations == 2
    assert summary.stats.filtered == 6
    assert summary.stats.records_done == 10 and summary.stats.records_read == 10
    # and the shard's checkpoint moves past the filtered records, the last one included
    assert summary.shard_checkpoints == {"shardId-000000000000": seqs[-1]}
    assert checkpoints[-1] == seqs[-1]
    assert summary.to_dict()["stats"]["filtered"] == 6


def test_a_batch_entirely_filtered_is_never_invoked() -> None:
    stream = FakeStream()
    seqs = _with_data(stream, "shardId-000000000000", [b'{"status": "closed"}'] * 5)
    function = FakeFunction()
    summary = run(stream, function, filters=('{"data": {"status": ["open"]}}',))
    assert function.deliveries == [] and function.environments == 0
    assert summary.stats.invocations == 0 and summary.stats.filtered == 5
    assert summary.shard_checkpoints == {"shardId-000000000000": seqs[-1]}


def test_without_filters_every_record_is_delivered() -> None:
    stream = FakeStream()
    seqs = _with_data(stream, "shardId-000000000000", [b"not json"] * 3)
    function = FakeFunction()
    summary = run(stream, function)
    assert function.delivered() == seqs and summary.stats.filtered == 0


def test_filters_come_from_the_mapping_and_flags_replace_them() -> None:
    mapping = {
        "UUID": "u-1",
        "FilterCriteria": {"Filters": [{"Pattern": '{"eventName":["INSERT","MODIFY"]}'}]},
    }
    settings = MappingSettings.from_mapping(mapping)
    assert settings.filters == ('{"eventName":["INSERT","MODIFY"]}',)
    assert settings.override(filters=None).filters == settings.filters
    assert settings.override(filters=()).filters == ()
    with pytest.raises(ConfigError, match="--filter 1: filter pattern '\\[1\\]' must be"):
        settings.override(filters=("[1]",)).validate()
    with pytest.raises(ConfigError, match='Kinesis event source mappings only filter on "data"'):
        run(FakeStream(), FakeFunction(), filters=('{"eventName": ["INSERT"]}',))


@mock_aws
def test_a_dynamodb_batch_given_up_on_goes_whole_to_s3_in_lambdas_shape() -> None:
    # Given a table's stream with 3 changes and a function that always fails
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="reviews",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream_arn = dynamodb.describe_table(TableName="reviews")["Table"]["LatestStreamArn"]
    for i in range(3):
        dynamodb.put_item(TableName="reviews", Item={"id": {"S": f"r{i}"}, "text": {"S": "ok"}})
    dynamodb.delete_item(TableName="reviews", Key={"id": {"S": "r0"}})
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="scorer-failures")
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    function = FakeFunction(lambda seqs: 1 / 0)

    class DynamoDBFunction:
        def invoke(self, event: bytes) -> Result:
            records = json.loads(event)["Records"]
            function.deliveries.append(
                Delivery("", [r["dynamodb"]["SequenceNumber"] for r in records], [], 0)
            )
            return Result(error={"errorType": "ZeroDivisionError", "errorMessage": "x"})

        def close(self) -> None:
            pass

    # When the mapping's default filter drops the REMOVE and the rest exhaust the retries
    summary = StreamProcessor(
        DynamoDBStreamSource(streams, stream_arn, region="us-east-1"),
        MappingSettings(
            batch_size=10, max_retry_attempts=0, filters=('{"eventName":["INSERT","MODIFY"]}',)
        ),
        DynamoDBFunction,
        destination=AwsDestination(
            "arn:aws:s3:::scorer-failures", {"s3": s3}.__getitem__, mapping_uuid="u-ddb"
        ),
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:scorer",
        poll_interval_s=0.02,
    ).run(until_idle_s=0.3)

    # Then one object, DDBStreamBatchInfo with whole-second times, the INSERTs as payload
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket="scorer-failures")["Contents"]]
    assert key.startswith("aws/lambda/u-ddb/shardId-")
    record = json.loads(s3.get_object(Bucket="scorer-failures", Key=key)["Body"].read())
    assert set(record) == {
        "requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo",
        "payload",
    }  # fmt: skip
    assert record["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    info = record["DDBStreamBatchInfo"]
    assert set(info) == {
        "shardId", "startSequenceNumber", "endSequenceNumber", "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord", "batchSize", "streamArn",
    }  # fmt: skip
    assert info["batchSize"] == 3 and info["streamArn"] == stream_arn
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["approximateArrivalOfFirstRecord"])
    payload = json.loads(record["payload"])["Records"]
    assert [r["eventName"] for r in payload] == ["INSERT"] * 3
    assert [r["dynamodb"]["SequenceNumber"] for r in payload] == function.deliveries[0].seqs
    assert summary.stats.filtered == 1 and summary.stats.discarded == 3


def test_run_local_summary_counts_the_filtered_and_gives_the_cost_share(tmp_path: Any) -> None:
    from rich.console import Console

    from mlayer.commands.local import render_summary
    from mlayer.local.runner import RunLocalResult

    stream = FakeStream()
    _with_data(stream, "shardId-000000000000", [b'{"lang": "en"}'] * 6 + [b'{"lang": "fr"}'] * 4)
    summary = run(stream, FakeFunction(), filters=('{"data":{"lang":["en"]}}',))
    console = Console(record=True, width=200)
    render_summary(console, RunLocalResult(cast(Any, None), summary, tmp_path / "l.log", None))
    lines = [line.strip(" │|") for line in console.export_text().splitlines()]
    assert any(
        re.fullmatch(
            r"filtered out \(FilterCriteria\)\s+│?\s*4 \(40\.0%: mlayer cost --filtered-share 0\.4\)",
            line.strip(),
        )
        for line in lines
    ), lines
