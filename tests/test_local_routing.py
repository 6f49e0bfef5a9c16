"""An alias's canary routing, run locally: deterministic per batch slot in run-local, drawn
per invocation in invoke, one lazily started environment per version.

The environments are stand-ins that answer from Python; the real function through a canary
alias runs in tests/test_local_metrics.py.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from mlayer.errors import MlayerError
from mlayer.lambda_env.environment import Invocation
from mlayer.local.esm import KinesisSource, MappingSettings, StreamProcessor
from mlayer.local.resolve import LocalFunction
from mlayer.local.routing import (
    Route,
    RoutedInvoker,
    SmoothWeightedRoundRobin,
    cadence,
    draw,
    shares,
)
from mlayer.reports import Report


def version(number: str) -> LocalFunction:
    """A resolved function version; only its version number matters here."""
    return LocalFunction(
        name="scorer", arn="arn:aws:lambda:us-east-1:123456789012:function:scorer",
        version=number, qualifier="live", runtime="python3.11", arch="x86_64", memory_mb=128,
        timeout_s=3, handler="lambda_function.lambda_handler", environment={},
        task_dir=Path("task"), opt_dir=Path("opt"), layers=[], code_source="test", python="python3",
    )  # fmt: skip


def routes(*weights: tuple[str, float]) -> list[Route]:
    return [Route(version(v), w) for v, w in weights]


@pytest.mark.parametrize(
    ("weights", "first"),
    [
        pytest.param([9, 1], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0] * 2, id="10%"),
        pytest.param([3, 1], [0, 0, 1, 0] * 3, id="25%"),
        pytest.param([1, 1], [0, 1] * 3, id="50%"),
        pytest.param([7, 2, 1], [0, 0, 1, 0, 0, 2, 0, 0, 1, 0], id="two-canaries"),
        pytest.param([0, 1], [1, 1, 1], id="all-to-the-canary"),
    ],
)
def test_round_robin_sequences(weights: list[int], first: list[int]) -> None:
    robin = SmoothWeightedRoundRobin(weights)
    assert [robin.next() for _ in first] == first


@given(
    weights=st.lists(st.integers(0, 20), min_size=1, max_size=4).filter(lambda w: sum(w) > 0),
    start=st.integers(0, 50),
)
def test_any_run_of_sum_picks_holds_each_weight_exactly(weights: list[int], start: int) -> None:
    robin = SmoothWeightedRoundRobin(weights)
    picks = [robin.next() for _ in range(start + sum(weights))]
    window = Counter(picks[start:])
    assert [window[i] for i in range(len(weights))] == weights


def test_weights_are_taken_exactly() -> None:
    canary = routes(("1", 0.9), ("2", 0.1))
    assert shares(canary) == [9, 1] and str(cadence(canary, 1)) == "1/10"
    odd = routes(("1", 0.875), ("2", 0.125))
    assert shares(odd) == [7, 1] and str(cadence(odd, 1)) == "1/8"
    assert shares(routes(("1", 0.7), ("3", 0.2), ("4", 0.1))) == [7, 2, 1]


def test_invoke_draws_with_the_weights() -> None:
    canary = routes(("1", 0.75), ("2", 0.25))
    rng = random.Random(7)
    drawn = Counter(draw(canary, rng) for _ in range(20_000))
    assert 0.23 < drawn[1] / 20_000 < 0.27


@dataclass
class FakeEnvironments:
    """Stand-in environments: each answers as its version; ``fail`` versions raise."""

    fail: set[str] = field(default_factory=set)
    made: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, function: LocalFunction) -> Any:
        environments = self
        with self.lock:
            self.made.append(function.version)

        class Environment:
            def invoke(self, event: Any) -> Invocation:
                records = json.loads(event).get("Records", []) if isinstance(event, bytes) else []
                error = (
                    {"errorType": "ValueError", "errorMessage": "canary broke"}
                    if function.version in environments.fail
                    else None
                )
                return Invocation(
                    "id",
                    None if error else {"batchItemFailures": [], "n": len(records)},
                    error,
                    Report("id", 2.0, 2, 128, 64),
                    "",
                    executed_version=function.version,
                )

            def close(self) -> None:
                with environments.lock:
                    environments.closed.append(function.version)

        return Environment()


def test_each_version_gets_its_environment_on_its_first_invocation() -> None:
    environments = FakeEnvironments()
    seen: list[tuple[str, str]] = []
    invoker = RoutedInvoker(
        routes(("1", 0.75), ("2", 0.25)),
        environments,
        on_invocation=lambda invocation, executed: seen.append(
            (invocation.executed_version, executed)
        ),
    )
    ran = [invoker.invoke(b'{"Records": []}').executed_version for _ in range(2)]
    assert ran == ["1", "1"] and environments.made == ["1"]  # the canary has not started
    ran += [invoker.invoke(b'{"Records": []}').executed_version for _ in range(6)]
    assert ran == ["1", "1", "2", "1", "1", "1", "2", "1"]
    assert environments.made == ["1", "2"]
    assert seen == [(v, v) for v in ran]
    invoker.close()
    assert sorted(environments.closed) == ["1", "2"]
    with pytest.raises(MlayerError, match="closed"):
        invoker.invoke(b"{}")


@pytest.fixture
def stream() -> Iterator[KinesisSource]:
    """A 1-shard Kinesis stream (moto) with 40 records."""
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        kinesis.create_stream(StreamName="s", ShardCount=1)
        kinesis.put_records(
            StreamName="s", Records=[{"Data": b"{}", "PartitionKey": f"k{i}"} for i in range(40)]
        )
        arn = kinesis.describe_stream_summary(StreamName="s")["StreamDescriptionSummary"][
            "StreamARN"
        ]
        yield KinesisSource(kinesis, arn, region="us-east-1", invoke_identity_arn="role")


class Destination:
    keeps_records = False

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def run(
    source: KinesisSource, environments: FakeEnvironments, destination: Destination, **settings: Any
) -> Any:
    canary = routes(("1", 0.75), ("2", 0.25))
    processor = StreamProcessor(
        source,
        MappingSettings(batch_size=10, **settings),
        lambda: RoutedInvoker(canary, environments),
        destination=destination,
        function_version="1",
        poll_interval_s=0.02,
        retry_delay_s=0.0,
    )
    return processor.run(until_idle_s=0.3)


def test_a_batch_given_up_on_names_the_version_that_ran_it(stream: KinesisSource) -> None:
    # Given a canary version that fails every batch, and no retries
    destination = Destination()
    summary = run(stream, FakeEnvironments(fail={"2"}), destination, max_retry_attempts=0)
    # Then of the 4 batches the 3rd ran on the canary, failed, and was discarded, its
    # invocation record naming version 2
    assert summary.stats.batches_by_version == {"1": 3, "2": 1}
    assert summary.stats.discarded == 10
    (message,) = destination.messages
    assert message["responseContext"]["executedVersion"] == "2"
    assert message["responseContext"]["functionError"] == "Unhandled"


def test_a_retried_batch_may_run_on_the_other_version(stream: KinesisSource) -> None:
    # Given the same failing canary, one retry allowed
    destination = Destination()
    summary = run(stream, FakeEnvironments(fail={"2"}), destination, max_retry_attempts=1)
    # Then the batch that failed on the canary was retried on the primary, and succeeded
    assert summary.stats.batches_by_version == {"1": 4, "2": 1}
    assert summary.stats.retries == 1 and summary.stats.discarded == 0
    assert summary.stats.records_done == 40 and destination.messages == []
