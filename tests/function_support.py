"""Helpers for the Lambda function's tests: event files, record factories, in-process runs.

The function's modules are top-level modules (as in /var/task on Lambda): the function dir
is put on sys.path here, once.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_DIR = ROOT / "function"
EVENTS_DIR = Path(__file__).resolve().parent / "events"
FUNCTION_ENV = (
    "MODEL_DIR",
    "MODEL_URI",
    "MODEL_MMAP",
    "INPUT_FIELD",
    "MODEL_VERSION",
    "MODEL_FIELD",
    "MODEL_CACHE_MB",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "OUTPUT_TABLE",
    "OUTPUT_STREAM",
    "DEAD_LETTER_QUEUE_URL",
    "DEAD_LETTER_BUCKET",
    "DEAD_LETTER_MAX_BYTES",
    "SHADOW_URI",
    "SHADOW_DIR",
    "SHADOW_OUTPUT",
    "AWS_LAMBDA_FUNCTION_NAME",
)

if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))


def load_event(name: str) -> dict[str, Any]:
    """A real-shaped event from tests/events/<name>.json (a fresh copy each call)."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def encode(payload: Any) -> str:
    """Kinesis ``data``: JSON for dicts / lists, UTF-8 for str, as is for bytes; base64."""
    if isinstance(payload, dict | list):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return base64.b64encode(payload).decode("ascii")


def kinesis_record(
    payload: Any,
    sequence_number: str,
    *,
    shard: str = "shardId-000000000000",
    raw_data: str | None = None,
) -> dict[str, Any]:
    """A Kinesis record shaped like the ones Lambda delivers (see tests/events/kinesis.json)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": sequence_number,
            "data": raw_data if raw_data is not None else encode(payload),
            "approximateArrivalTimestamp": 1763877600.5,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/mlayer-scorer",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/reviews",
    }


def kinesis_event(
    payloads: list[Any], *, first_sequence: int = 49600000000000000000
) -> dict[str, Any]:
    return {
        "Records": [
            kinesis_record(payload, str(first_sequence + index))
            for index, payload in enumerate(payloads)
        ]
    }


def dynamodb_record(
    sequence_number: str,
    event_name: str = "INSERT",
    new_image: Mapping[str, Any] | None = None,
    *,
    view: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    """A DynamoDB Streams record (see tests/events/dynamodb_update.json)."""
    stream: dict[str, Any] = {
        "Keys": {"id": {"S": f"item-{sequence_number}"}},
        "ApproximateCreationDateTime": 1763877600,
        "SequenceNumber": sequence_number,
        "SizeBytes": 64,
        "StreamViewType": view,
    }
    if new_image is not None:
        stream["NewImage"] = dict(new_image)
    return {
        "eventID": f"ev-{sequence_number}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/reviews/stream/2026-11-23T06:00:00.000",
    }


def change_record(
    event_name: str = "INSERT", new_image: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The payload Kinesis Data Streams for DynamoDB writes (see tests/events/kinesis_dynamodb.json)."""
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1763877600123,
        "Keys": {"id": {"S": "item"}},
        "SizeBytes": 64,
    }
    if new_image is not None:
        stream["NewImage"] = dict(new_image)
    return {
        "awsRegion": "us-east-1",
        "eventID": "0b9f3a8e-6d1c-4e2b-9f7a-5c4d3e2b1a00",
        "eventName": event_name,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "reviews",
        "dynamodb": stream,
        "eventSource": "aws:dynamodb",
    }


@contextlib.contextmanager
def function_env(**values: str | os.PathLike[str] | None) -> Iterator[None]:
    """Set the function's environment (others unset) for the block, then restore it.

    Not monkeypatch: hypothesis tests run many examples inside one test function.
    """
    saved = {name: os.environ.get(name) for name in FUNCTION_ENV}
    try:
        for name in FUNCTION_ENV:
            os.environ.pop(name, None)
        for name, value in values.items():
            assert name in FUNCTION_ENV, name
            if value is not None:
                os.environ[name] = os.fspath(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Run:
    response: dict[str, Any]
    logs: list[dict[str, Any]]

    @property
    def batch_log(self) -> dict[str, Any]:
        (line,) = [log for log in self.logs if log.get("message") == "batch"]
        return line

    @property
    def failures(self) -> list[str]:
        return [item["itemIdentifier"] for item in self.response["batchItemFailures"]]

    @property
    def bad_records(self) -> list[dict[str, Any]]:
        return [log for log in self.logs if log.get("message") == "bad record"]


class FakeContext:
    aws_request_id = "11111111-2222-3333-4444-555555555555"
    function_name = "mlayer-test"


def import_function() -> Any:
    """Import lambda_function (its import-time model load logs to stdout: swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import lambda_function
    return lambda_function


def invoke(event: Any, context: Any = None, **env: str | os.PathLike[str] | None) -> Run:
    """Run the handler in this process with ``env`` as the function's environment.

    ``context`` defaults to a FakeContext without a deadline.
    """
    handler = import_function().lambda_handler
    out = io.StringIO()
    with function_env(**env), contextlib.redirect_stdout(out):
        response = handler(event, context if context is not None else FakeContext())
    # The response goes back to Lambda as JSON: it must serialize.
    json.dumps(response)
    logs = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return Run(response, logs)


def log_entries(log: Path, message: str) -> list[dict[str, Any]]:
    """The function's JSON log lines with this ``message`` in a log file (REPORT lines and
    other text skipped)."""
    entries = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("message") == message:
            entries.append(entry)
    return entries
