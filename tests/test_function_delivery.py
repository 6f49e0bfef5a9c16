"""Where every record ends up, against moto and a sink that never answers: dead letters too
large for the queue (S3 + pointer), the invocation's deadline, retries that must not
dead-letter twice, and direct invocations whose bad records hold anything JSON can."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from function_support import Run, invoke, kinesis_record
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from moto import mock_aws

import safe_json
import sinks

BUCKET = "dead-letter-records"
TABLE = "predictions"
KINESIS_MAX_DATA = 1_048_576  # a Kinesis record's data: at most 1 MiB
OLD_QUEUE_LIMIT = 262_144  # MaximumMessageSize of a queue made before SQS's 2025 increase


@pytest.fixture
def aws() -> Iterator[None]:
    sinks._CLIENTS.clear()
    with mock_aws():
        yield
    sinks._CLIENTS.clear()


def make_queue(name: str = "dlq", max_bytes: int = OLD_QUEUE_LIMIT) -> str:
    attributes = {"MaximumMessageSize": str(max_bytes)}
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    return str(boto3.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


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


def objects(bucket: str = BUCKET) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def bad_record(size: int, sequence_number: str) -> dict[str, Any]:
    """A Kinesis record whose ``size`` bytes of data are not UTF-8: bad for the text model."""
    return kinesis_record(None, sequence_number, raw_data=base64.b64encode(b"\xff" * size).decode())


def good_record(sequence_number: str) -> dict[str, Any]:
    return kinesis_record({"text": "works well"}, sequence_number)


def full_message(record: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "record_id": record["eventID"],
        "sequence_number": record["kinesis"]["sequenceNumber"],
        "reason": reason,
        "record": record,
        "model": "sentiment",
        "model_version": "unversioned",
    }


# --- 1. no record is ever lost: too large for the queue -> S3 + pointer ------------------------


def test_too_large_bad_record_goes_to_s3_with_a_pointer(aws: None, text_model_dir: Path) -> None:
    # Given an old-style queue (256 KiB) and a bucket, a 790 KB malformed record (its message
    # is over 1 MB once base64 and JSON encoded) between two small ones
    queue = make_queue()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    event = {
        "Records": [
            bad_record(10, "100"),
            bad_record(790_000, "101"),
            good_record("102"),
        ]
    }
    env = {"MODEL_DIR": text_model_dir, "DEAD_LETTER_QUEUE_URL": queue}

    # When the handler runs
    run = invoke(event, DEAD_LETTER_BUCKET=BUCKET, **env)

    # Then both are dead-lettered, the large one as an S3 object and a pointer
    assert run.response["batchItemFailures"] == []
    assert run.response["counts"]["dead_lettered"] == 2
    small, pointer = sorted(
        (json.loads(m["Body"]) for m in receive_all(queue)), key=lambda b: b["sequence_number"]
    )
    assert small["record"] == event["Records"][0]
    assert "record" not in pointer
    location = pointer["record_s3"]
    (key, stored), *others = objects().items()
    assert others == []
    assert (location["bucket"], location["key"]) == (BUCKET, key)
    assert key.startswith("dead-letters/") and key.endswith(".json")
    assert location["sha256"] == hashlib.sha256(stored).hexdigest()
    assert location["bytes"] == len(stored) > OLD_QUEUE_LIMIT
    assert json.loads(stored)["record"] == event["Records"][1]
    assert pointer["reason"] == json.loads(stored)["reason"]
    assert "over the queue's 262,144 (DEAD_LETTER_MAX_BYTES)" in pointer["note"]
    (log,) = [b for b in run.bad_records if b["sequence_number"] == "101"]
    assert (log["action"], log["record_s3"]) == ("dead-lettered", f"s3://{BUCKET}/{key}")

    # And a second run of the same records writes the same object, not another one
    invoke(event, DEAD_LETTER_BUCKET=BUCKET, **env)
    assert list(objects()) == [key]


def test_too_large_bad_record_without_a_bucket_is_reported(aws: None, text_model_dir: Path) -> None:
    queue = make_queue()
    event = {"Records": [bad_record(10, "100"), bad_record(300_000, "101"), bad_record(5, "102")]}
    run = invoke(event, MODEL_DIR=text_model_dir, DEAD_LETTER_QUEUE_URL=queue)

    # The first is dead-lettered; the large one cannot be, so it and the one behind it are
    # reported for Lambda to retry (then the trigger's on-failure destination), not lost.
    assert run.failures == ["101", "102"]
    assert [json.loads(m["Body"])["sequence_number"] for m in receive_all(queue)] == ["100"]
    large = next(b for b in run.bad_records if b["sequence_number"] == "101")
    assert large["action"] == "reported in batchItemFailures"
    assert large["dead_letter_error"].startswith("the dead-letter message is 400,")
    assert large["dead_letter_error"].endswith(
        "bytes, over DEAD_LETTER_MAX_BYTES (262,144); set DEAD_LETTER_BUCKET to keep such "
        "records whole in S3"
    )


@pytest.mark.parametrize(
    ("value", "used"),
    [("1048576", 1_048_576), ("lots", 262_144), ("100", 262_144)],
    ids=["new-queue-limit", "not-a-number", "below-sqs-minimum"],
)
def test_dead_letter_max_bytes_setting(
    aws: None, text_model_dir: Path, value: str, used: int
) -> None:
    queue = make_queue(max_bytes=1_048_576)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    event = {"Records": [bad_record(300_000, "100")]}  # a message of about 400 KB
    run = invoke(
        event,
        MODEL_DIR=text_model_dir,
        DEAD_LETTER_QUEUE_URL=queue,
        DEAD_LETTER_BUCKET=BUCKET,
        DEAD_LETTER_MAX_BYTES=value,
    )
    (body,) = [json.loads(m["Body"]) for m in receive_all(queue)]
    assert ("record" in body) == (used == 1_048_576)
    assert bool(objects()) == (used == 262_144)
    ignored = [log for log in run.logs if log["message"] == "setting ignored"]
    if used == 1_048_576:
        assert ignored == []
    else:
        assert ignored[0]["error"] == (
            f"DEAD_LETTER_MAX_BYTES={value!r} is not a whole number of bytes from 1,024 to "
            "1,048,576 (an SQS queue's MaximumMessageSize); using 262,144"
        )


@pytest.fixture
def queue_and_bucket() -> Iterator[dict[str, str]]:
    """One moto queue per limit and one bucket for all examples of a test (each drains them)."""
    sinks._CLIENTS.clear()
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        yield {
            str(limit): sqs.create_queue(
                QueueName=f"dlq-{limit}", Attributes={"MaximumMessageSize": str(limit)}
            )["QueueUrl"]
            for limit in (OLD_QUEUE_LIMIT, 1_048_576)
        }
    sinks._CLIENTS.clear()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(
    sizes=st.lists(
        st.one_of(
            st.integers(0, 2_000),
            st.integers(180_000, 200_000),  # around the 256 KiB message once encoded
            st.integers(700_000, 800_000),  # around the 1 MiB message once encoded
            st.integers(0, KINESIS_MAX_DATA),
            st.just(KINESIS_MAX_DATA),
        ),
        min_size=1,
        max_size=4,
    ),
    limit=st.sampled_from([OLD_QUEUE_LIMIT, 1_048_576]),
    good_every=st.integers(1, 3),
)
def test_every_bad_record_ends_in_the_queue_or_s3_once(
    text_model_dir: Path,
    queue_and_bucket: dict[str, str],
    sizes: list[int],
    limit: int,
    good_every: int,
) -> None:
    queue = queue_and_bucket[str(limit)]
    s3 = boto3.client("s3", region_name="us-east-1")
    for key in objects():
        s3.delete_object(Bucket=BUCKET, Key=key)
    records = []
    for position, size in enumerate(sizes):
        records.append(bad_record(size, str(1000 + 2 * position)))
        if position % good_every == 0:
            records.append(good_record(str(1001 + 2 * position)))
    event = {"Records": records}

    run = invoke(
        event,
        MODEL_DIR=text_model_dir,
        DEAD_LETTER_QUEUE_URL=queue,
        DEAD_LETTER_BUCKET=BUCKET,
        DEAD_LETTER_MAX_BYTES=str(limit),
    )

    assert run.response["batchItemFailures"] == []
    bad = [r for r in records if int(r["kinesis"]["sequenceNumber"]) % 2 == 0]
    assert run.response["counts"]["dead_lettered"] == len(bad)
    bodies = [json.loads(m["Body"]) for m in receive_all(queue)]
    stored = objects()
    # exactly once: one message per bad record, none for anything else
    assert sorted(Counter(b["sequence_number"] for b in bodies).items()) == sorted(
        (r["kinesis"]["sequenceNumber"], 1) for r in bad
    )
    by_sequence = {r["kinesis"]["sequenceNumber"]: r for r in bad}
    in_s3 = 0
    for body in bodies:
        record = by_sequence[body["sequence_number"]]
        whole = safe_json.message_body(full_message(record, body["reason"]))
        if "record" in body:  # whole in the queue, because it fits
            assert body["record"] == record
            assert len(whole) <= limit
        else:  # in S3, because it does not fit; the pointer names it
            location = body["record_s3"]
            content = stored[location["key"]]
            assert len(whole) > limit
            assert content == whole
            assert location["sha256"] == hashlib.sha256(content).hexdigest()
            in_s3 += 1
    assert len(stored) == in_s3


# --- 2. sinks respect the invocation's deadline ------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers; closes all after ``lifetime``."""

    def __init__(self, lifetime: float = 30.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._until = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._until:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)  # held open, never read from or written to
        for connection in self.accepted:
            connection.close()
        self.listener.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    server = SilentServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.port}")
    sinks._CLIENTS.clear()
    yield server
    server.stop()
    sinks._CLIENTS.clear()


class DeadlineContext:
    """Lambda's context as far as the deadline goes: the time left until ``seconds`` from now."""

    aws_request_id = "deadline-test"
    function_name = "mlayer-test"

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def test_a_sink_that_never_answers_is_reported_within_the_deadline(
    silent_endpoint: SilentServer, text_model_dir: Path
) -> None:
    # Given a table and a dead-letter queue behind a server that never answers, and 3 s left
    records = [
        good_record("200"),
        bad_record(10, "201"),
        good_record("202"),
        bad_record(10, "203"),
    ]
    invoke({"records": []}, MODEL_DIR=text_model_dir)  # a warm environment: model loaded
    context = DeadlineContext(3.0)

    # When the handler runs
    run = invoke(
        {"Records": records},
        context,
        MODEL_DIR=text_model_dir,
        OUTPUT_TABLE=TABLE,
        DEAD_LETTER_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
    )

    # Then it returns before the invocation's deadline, every record reported for retry
    assert context.get_remaining_time_in_millis() > 0
    assert silent_endpoint.accepted  # the calls did reach the silent server
    assert run.failures == ["200", "201", "202", "203"]
    assert run.response["counts"]["dead_lettered"] == 0
    (failed,) = [log for log in run.logs if log["message"] == "write failed"]
    assert failed["error"].startswith("ReadTimeoutError")
    (stop,) = [log for log in run.logs if log["message"] == "retry from here"]
    assert (stop["itemIdentifier"], stop["reported"]) == ("200", 4)


def test_deadline_margin_and_timeouts() -> None:
    now = [100.0]
    deadline = sinks.Deadline.from_context(DeadlineContextAt(30_000), clock=lambda: now[0])
    assert deadline.remaining() == pytest.approx(27.0)  # 10% of 30 s is over the 1 s floor
    assert deadline.timeout() == 8.0  # connect + read both fit in what is left
    now[0] += 26.0
    assert deadline.timeout() == 0.5
    now[0] += 0.6
    assert deadline.timeout() is None
    assert sinks.client("dynamodb", deadline) is None  # no call at all past the deadline
    short = sinks.Deadline.from_context(DeadlineContextAt(3_000), clock=lambda: 0.0)
    assert short.remaining() == pytest.approx(2.0)  # the 1 s floor
    assert sinks.Deadline.from_context(object()).remaining() == math.inf


class DeadlineContextAt:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


# --- 3. retries do not multiply dead letters --------------------------------------------------


def lambda_retries(
    event: dict[str, Any], rounds: int, run: Any
) -> Iterator[tuple[int, dict[str, Any], Run]]:
    """Invoke like a Kinesis event source mapping: after a partial failure, resend the batch
    from the lowest reported sequence number (Lambda's checkpoint), until it succeeds."""
    records = event["Records"]
    for attempt in range(rounds):
        result = run({"Records": records})
        yield attempt, {"Records": records}, result
        if not result.failures:
            return
        lowest = min(int(sequence) for sequence in result.failures)
        records = [r for r in records if int(r["kinesis"]["sequenceNumber"]) >= lowest]
    raise AssertionError(f"still failing after {rounds} rounds")


@pytest.mark.parametrize("queue_name", ["dlq", "dlq.fifo"])
def test_a_retried_batch_dead_letters_each_bad_record_once(
    aws: None, text_model_dir: Path, monkeypatch: pytest.MonkeyPatch, queue_name: str
) -> None:
    # Given 60 records, every third one bad, and a table that throttles the chunk holding
    # record 40 for the first three rounds
    queue = make_queue(queue_name, max_bytes=1_048_576)
    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    records = [
        bad_record(20, str(5000 + i)) if i % 3 == 0 else good_record(str(5000 + i))
        for i in range(60)
    ]
    poison = records[40]["eventID"]
    throttled_rounds = {"left": 3}

    def throttle(params: dict[str, Any], **_: Any) -> None:
        items = params["RequestItems"][TABLE]
        if throttled_rounds["left"] and any(
            item["PutRequest"]["Item"]["record_id"]["S"] == poison for item in items
        ):
            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "Rate exceeded",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "BatchWriteItem",
            )

    real_client = sinks.client

    def hooked(service: str, deadline: sinks.Deadline = sinks.NO_DEADLINE) -> Any:
        created = real_client(service, deadline)
        if service == "dynamodb" and not getattr(created, "_throttle_hooked", False):
            created.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", throttle)
            created._throttle_hooked = True
        return created

    monkeypatch.setattr(sinks, "client", hooked)
    monkeypatch.setattr(sinks, "BACKOFF_S", 0.0)

    def run(event: dict[str, Any]) -> Run:
        result = invoke(
            event, MODEL_DIR=text_model_dir, OUTPUT_TABLE=TABLE, DEAD_LETTER_QUEUE_URL=queue
        )
        throttled_rounds["left"] = max(0, throttled_rounds["left"] - 1)
        return result

    # When Lambda retries the batch until it succeeds
    rounds = list(lambda_retries({"Records": records}, 6, run))

    # Then it took four rounds, and each bad record was dead-lettered exactly once
    assert len(rounds) == 4
    first_round = rounds[0][2]
    # the throttled chunk (predictions 25-49) starts at event index 38: retried from there,
    # and the 13 bad records before it are dead-lettered in the first round
    assert first_round.failures == [str(5000 + i) for i in range(38, 60)]
    assert first_round.response["counts"]["dead_lettered"] == len(range(0, 38, 3)) == 13
    messages = receive_all(queue)
    counted = Counter(json.loads(m["Body"])["sequence_number"] for m in messages)
    bad = [r["kinesis"]["sequenceNumber"] for i, r in enumerate(records) if i % 3 == 0]
    assert counted == Counter(bad)
    assert sum(r.response["counts"]["dead_lettered"] for _, _, r in rounds) == len(bad) == 20
    items = boto3.resource("dynamodb").Table(TABLE).scan()["Items"]
    assert len(items) == 40  # every good record once (keyed by record_id)
    if queue_name.endswith(".fifo"):
        source = records[0]["eventSourceARN"]
        assert {m["Attributes"]["MessageGroupId"] for m in messages} == {source}
        assert len({m["Attributes"]["MessageDeduplicationId"] for m in messages}) == 20


def test_fifo_deduplication_id_is_the_record_identity() -> None:
    record = bad_record(5, "77")
    message = full_message(record, "bad")
    letter = sinks.Letter(message, record["eventSourceARN"])
    again = sinks.Letter(
        {**message, "reason": "another reason", "model_version": "v2"}, letter.source
    )
    assert letter.digest() == again.digest()  # the same record on a retry, whatever the model
    other = sinks.Letter(full_message(bad_record(5, "78"), "bad"), letter.source)
    assert letter.digest() != other.digest()
    # direct invocations have no sequence number: their content tells them apart
    direct = sinks.Letter({"record_id": "0", "sequence_number": None, "record": {"a": 1}})
    assert direct.digest() != sinks.Letter({**direct.message, "record": {"a": 2}}).digest()
    assert direct.group() == "direct"


# --- 4. direct invocations never fail on a bad record, whatever it holds ----------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 2**100]),  # past orjson's 64 bits
    # past str()'s 4,300 digits (sys.get_int_max_str_digits), where str() and repr() raise
    # (built by map(), as hypothesis's own repr() of a strategy holding them would raise)
    st.tuples(st.sampled_from([101, 4300, 5000]), st.sampled_from([1, -1])).map(
        lambda power_sign: power_sign[1] * 10 ** power_sign[0]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=12),  # surrogates too
    st.sampled_from(["\ud800", "x\udfff", "\ud83d", "\ufffe\uffff"]),
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=()), max_size=6), children, max_size=4
        ),
    ),
    max_leaves=12,
)
direct_payloads = st.one_of(
    json_values,
    st.integers(256, 700).map(nested),  # deeper than orjson's 255 levels
    st.fixed_dictionaries({"id": json_values, "text": json_values}),
    st.fixed_dictionaries({"id": json_values, "text": st.text(min_size=1, max_size=30)}),
    st.fixed_dictionaries({"text": st.text(max_size=30)}),
)


@pytest.fixture
def direct_queue() -> Iterator[str]:
    sinks._CLIENTS.clear()
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="direct-dlq")[
            "QueueUrl"
        ]
    sinks._CLIENTS.clear()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payloads=st.lists(direct_payloads, max_size=8), dead_letters=st.booleans())
@example(
    payloads=[{"id": 10**5000, "text": 10**5000}, {"id": 10**5000, "text": "ok"}],
    dead_letters=False,
)
@example(payloads=[{"id": 10**5000, "text": 10**5000}, {"text": -(10**5000)}], dead_letters=True)
def test_direct_invocation_accounts_for_any_payload(
    text_model_dir: Path, direct_queue: str, payloads: list[Any], dead_letters: bool
) -> None:
    env = {"DEAD_LETTER_QUEUE_URL": direct_queue} if dead_letters else {}
    run = invoke({"records": payloads}, MODEL_DIR=text_model_dir, **env)

    counts = run.response["counts"]
    assert counts["received"] == len(payloads)
    assert counts["predicted"] + counts["dead_lettered"] + counts["failed"] == len(payloads)
    assert len(run.bad_records) == counts["dead_lettered"] + counts["failed"]
    if dead_letters:
        assert run.failures == []
        bodies = [json.loads(m["Body"]) for m in receive_all(direct_queue)]
        assert len(bodies) == counts["dead_lettered"]
        assert all(body["reason"] for body in bodies)
    else:
        assert len(run.failures) == counts["failed"]
    # Every record is answered for under an id that fits a table key and the response's JSON
    ids = [p["record_id"] for p in run.response["predictions"]] + run.failures
    assert all(isinstance(i, str) and len(i) <= 4_000 for i in ids)


def test_a_huge_integer_id_or_field_is_a_bad_record_with_a_reason_not_a_crash(
    text_model_dir: Path,
) -> None:
    # Given integers whose decimal text is over Python's 4,300-digit limit
    payloads = [{"id": 10**5000, "text": "great"}, {"id": "b", "text": 10**5000}]

    # When they are invoked directly
    run = invoke({"records": payloads}, MODEL_DIR=text_model_dir)

    # Then the first is scored under its position, the second rejected with a bounded reason
    assert [p["record_id"] for p in run.response["predictions"]] == ["0"]
    assert run.failures == ["b"]
    (bad,) = run.bad_records
    assert "an integer of about 5,001 digits" in bad["reason"]
    assert len(bad["reason"]) < 500
