"""The local runner puts what CloudWatch would make of each invocation on the endpoint.

EMF records in an invocation's stdout become metric data (docs/CONTRACTS.md, "Metrics: the
`batch` line is a CloudWatch EMF record"), Lambda's own AWS/Lambda metrics are added, and
both are put with put_metric_data and read back with get_metric_data: first unit by unit
against moto in-process, then through ``invoke`` and ``run-local`` with a small function
that prints EMF lines and an alias routing 25% to a second version, and at the end end to
end with the real function on real layers against moto_server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from mlayer.aws import AwsSettings
from mlayer.lambda_env.environment import InitResult, Invocation
from mlayer.local.metrics import (
    GIVE_UP_AFTER,
    LAMBDA_NAMESPACE,
    MAX_DATA_PER_REQUEST,
    Datum,
    MetricsPublisher,
    emf_data,
    lambda_data,
)
from mlayer.reports import Report

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
NOW_MS = int(time.time() * 1000)
AT = NOW_MS / 1000  # epoch seconds, as Datum keeps them


def batch_line(model_version: str = "3", *, shadow: bool = True, **extra: Any) -> dict[str, Any]:
    """A ``batch`` line as the contract shapes it: live directive, and the shadow's."""
    line: dict[str, Any] = {
        "message": "batch",
        "counts": {"received": 10, "predicted": 9},
        "decode_ms": 0.5,
        "predict_ms": 1.25,
        "write_ms": 0.0,
        "function": "scorer",
        "model_version": model_version,
        "records": 10,
        "predictions": 9,
        "bad_records": 1,
        "label:positive": 6,
        "label:negative": 3,
        "confidence_mean": 0.8125,
    }
    directives: list[dict[str, Any]] = [
        {
            "Namespace": "mlayer",
            "Dimensions": [["function", "model_version"]],
            "Metrics": [
                {"Name": "records", "Unit": "Count"},
                {"Name": "predictions", "Unit": "Count"},
                {"Name": "bad_records", "Unit": "Count"},
                {"Name": "predict_ms", "Unit": "Milliseconds"},
                {"Name": "label:positive", "Unit": "Count"},
                {"Name": "label:negative", "Unit": "Count"},
                {"Name": "confidence_mean", "Unit": "None"},
            ],
        }
    ]
    if shadow:
        line.update({"shadow_version": "2", "shadow_records": 9, "shadow_agreement": 0.875})
        directives.append(
            {
                "Namespace": "mlayer",
                "Dimensions": [["function", "model_version", "shadow_version"]],
                "Metrics": [
                    {"Name": "shadow_records", "Unit": "Count"},
                    {"Name": "shadow_agreement"},  # no Unit: EMF's default, None
                ],
            }
        )
    line["_aws"] = {"Timestamp": NOW_MS, "CloudWatchMetrics": directives}
    line.update(extra)
    return line


def invocation(
    stdout: str = "",
    *,
    error: dict[str, Any] | None = None,
    duration_ms: float = 12.5,
    init_stdout: str | None = None,
) -> Invocation:
    init = None if init_stdout is None else InitResult(300.0, init_stdout, "")
    report = Report("req", duration_ms, 13, 512, 100, 300.0 if init else None)
    return Invocation("req", None if error else {}, error, report, "", stdout, "", init)


# -- EMF records to metric data ------------------------------------------------------------


def test_a_batch_line_gives_every_metric_of_every_directive() -> None:
    # Given a stdout with a plain log line, a JSON line without _aws, and a batch line
    text = "\n".join(
        [
            "START of something",
            json.dumps({"message": "model loaded", "ms": 12}),
            json.dumps(batch_line()),
        ]
    )
    found = emf_data(text)
    assert found.records == 1 and found.ignored == []
    live = (("function", "scorer"), ("model_version", "3"))
    shadow = (*live, ("shadow_version", "2"))
    assert found.data == [
        Datum("mlayer", "records", live, 10.0, "Count", AT),
        Datum("mlayer", "predictions", live, 9.0, "Count", AT),
        Datum("mlayer", "bad_records", live, 1.0, "Count", AT),
        Datum("mlayer", "predict_ms", live, 1.25, "Milliseconds", AT),
        Datum("mlayer", "label:positive", live, 6.0, "Count", AT),
        Datum("mlayer", "label:negative", live, 3.0, "Count", AT),
        Datum("mlayer", "confidence_mean", live, 0.8125, "None", AT),
        Datum("mlayer", "shadow_records", shadow, 9.0, "Count", AT),
        Datum("mlayer", "shadow_agreement", shadow, 0.875, "None", AT),
    ]


def test_each_dimension_set_arrays_and_high_resolution() -> None:
    line = {
        "a": "x",
        "b": "y",
        "latency": [1, 2.5],
        "_aws": {
            "Timestamp": NOW_MS,
            "CloudWatchMetrics": [
                {
                    "Namespace": "ns",
                    "Dimensions": [["a"], ["a", "b"], []],
                    "Metrics": [{"Name": "latency", "Unit": "Seconds", "StorageResolution": 1}],
                }
            ],
        },
    }
    data = emf_data(json.dumps(line)).data
    assert [(d.dimensions, d.value) for d in data] == [
        ((("a", "x"),), 1.0),
        ((("a", "x"),), 2.5),
        ((("a", "x"), ("b", "y")), 1.0),
        ((("a", "x"), ("b", "y")), 2.5),
        ((), 1.0),
        ((), 2.5),
    ]
    assert {d.storage_resolution for d in data} == {1}


def _broken(change: Any) -> str:
    line = batch_line(shadow=False)
    change(line)
    return json.dumps(line)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            lambda line: line.update(_aws="yes"), "_aws is not an object", id="aws-not-object"
        ),
        pytest.param(
            lambda line: line["_aws"].pop("Timestamp"),
            "_aws.Timestamp is missing or not a number (epoch milliseconds)",
            id="no-timestamp",
        ),
        pytest.param(
            lambda line: line["_aws"].update(CloudWatchMetrics={}),
            "_aws.CloudWatchMetrics is missing or not a list",
            id="directives-not-list",
        ),
        pytest.param(
            lambda line: line["_aws"]["CloudWatchMetrics"][0].pop("Namespace"),
            "_aws.CloudWatchMetrics[0].Namespace is missing or not a string of 1-255 characters",
            id="no-namespace",
        ),
        pytest.param(
            lambda line: line["_aws"]["CloudWatchMetrics"][0].update(Dimensions=["function"]),
            "_aws.CloudWatchMetrics[0].Dimensions holds something other than lists of up to 30 "
            "keys",
            id="dimensions-flat",
        ),
        pytest.param(
            lambda line: line.update(model_version=3),
            "dimension 'model_version' has no value of 1-1024 characters in the record "
            "(dimension values must be strings): 3",
            id="dimension-value-not-string",
        ),
        pytest.param(
            lambda line: line.pop("predictions"),
            "metric 'predictions' has no value in the record (a number, or a list of 1-100 "
            "numbers): None",
            id="metric-value-missing",
        ),
        pytest.param(
            lambda line: line.update(records="10"),
            "metric 'records' has no value in the record (a number, or a list of 1-100 "
            "numbers): '10'",
            id="metric-value-string",
        ),
        pytest.param(
            lambda line: line.update(confidence_mean=float("nan")),
            "metric 'confidence_mean' is not finite (CloudWatch takes no NaN or Infinity)",
            id="metric-nan",
        ),
        pytest.param(
            lambda line: line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="records"),
            "_aws.CloudWatchMetrics[0].Metrics[0].Unit 'records' is not a CloudWatch unit",
            id="bad-unit",
        ),
    ],
)
def test_a_malformed_record_is_ignored_whole_with_its_reason(change: Any, reason: str) -> None:
    # Given a broken EMF record between two good ones
    good = json.dumps(batch_line(shadow=False))
    found = emf_data("\n".join([good, _broken(change), good]))
    # Then the good ones count, the broken one gives nothing and says why
    assert found.records == 2 and found.ignored == [reason]
    assert len(found.data) == 2 * 7


def test_lines_that_only_mention_aws_are_not_records() -> None:
    text = "\n".join(
        [
            'print: the "_aws" key is special',  # not JSON
            json.dumps(["_aws"]),  # JSON, not an object
            json.dumps({"text": '{"_aws": 1}'}),  # inside a string
            "[" * 100_000 + '"_aws"',  # nested past the parser's depth
        ]
    )
    assert emf_data(text).records == 0 and emf_data(text).ignored == []


def test_the_reasons_shown_are_the_most_frequent_and_short() -> None:
    # Given 8 records whose dimension value is a different long non-string, one of them 3 times
    publisher = MetricsPublisher(Recorder(), function="f", qualifier=None)
    lines = [_broken(lambda line, i=i: line.update(model_version=[i] * 100)) for i in range(8)]
    for line in [*lines, lines[0], lines[0]]:
        publisher.record(invocation(line), "1")
    report = publisher.close()
    notes = report.notes()
    assert len(notes) == 6 and notes[-1] == "3 more EMF record(s) ignored, for other reasons"
    assert notes[0].startswith("3 EMF record(s) ignored")
    assert notes[0].endswith("(dimension values must be strings): " + repr([0] * 100)[:57] + "...")
    assert report.to_dict()["ignored"] == 10 and len(report.to_dict()["ignored_reasons"]) == 5


# -- Lambda's own metrics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qualifier", "dimension_sets"),
    [
        pytest.param(None, [{"FunctionName": "scorer"}], id="unqualified"),
        pytest.param(
            "3",
            [{"FunctionName": "scorer"}, {"FunctionName": "scorer", "Resource": "scorer:3"}],
            id="version",
        ),
        pytest.param(
            "live",
            [
                {"FunctionName": "scorer"},
                {"FunctionName": "scorer", "Resource": "scorer:live"},
                {"FunctionName": "scorer", "Resource": "scorer:live", "ExecutedVersion": "4"},
            ],
            id="alias",
        ),
    ],
)
def test_lambda_metrics_have_lambdas_dimension_sets(
    qualifier: str | None, dimension_sets: list[dict[str, str]]
) -> None:
    data = lambda_data(
        invocation(), function="scorer", qualifier=qualifier, executed_version="4", timestamp=AT
    )
    assert {d.namespace for d in data} == {LAMBDA_NAMESPACE}
    for name, value, unit in [
        ("Invocations", 1.0, "Count"),
        ("Errors", 0.0, "Count"),
        ("Duration", 12.5, "Milliseconds"),
    ]:
        got = [d for d in data if d.name == name]
        assert [dict(d.dimensions) for d in got] == dimension_sets
        assert {(d.value, d.unit, d.timestamp) for d in got} == {(value, unit, AT)}


@pytest.mark.parametrize(
    "error",
    [
        {"errorType": "ValueError", "errorMessage": "bad input"},
        {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 3.00 seconds"},
        {"errorType": "Runtime.ImportModuleError", "errorMessage": "init failed"},
    ],
    ids=["function-error", "timeout", "init-failure"],
)
def test_a_failed_invocation_counts_one_error(error: dict[str, Any]) -> None:
    data = lambda_data(
        invocation(error=error), function="f", qualifier=None, executed_version="1", timestamp=AT
    )
    assert [d.value for d in data if d.name == "Errors"] == [1.0]


# -- the publisher, against moto ------------------------------------------------------------


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def metric_sum(
    cloudwatch: Any, namespace: str, name: str, dimensions: dict[str, str], stat: str = "Sum"
) -> float:
    """The metric's statistic over the last hour (moto matches the dimension set exactly)."""
    now = datetime.now(UTC)
    result = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    },
                    "Period": 3600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5),
    )
    return float(sum(result["MetricDataResults"][0]["Values"]))


def test_the_publisher_puts_emf_and_lambda_metrics_read_back_by_get_metric_data(
    cloudwatch: Any,
) -> None:
    # Given three invocations through alias live: two of version 3 (one a cold start whose
    # init also logged a record, one failed), one of version 4
    lines = [json.dumps(batch_line("3")), json.dumps(batch_line("3"))]
    with MetricsPublisher(cloudwatch, function="scorer", qualifier="live") as publisher:
        publisher.record(
            invocation(lines[0], init_stdout=json.dumps(batch_line("3", shadow=False))),
            executed_version="3",
        )
        publisher.record(
            invocation(lines[1], error={"errorType": "Unhandled"}), executed_version="3"
        )
        publisher.record(invocation(json.dumps(batch_line("4"))), executed_version="4")
    report = publisher.report
    assert report.invocations == 3 and report.emf_records == 4
    assert report.failed == 0 and report.put == 4 * 7 + 3 * 2 + 3 * 3 * 3
    # Then CloudWatch holds the function's metrics per model version
    live = {"function": "scorer", "model_version": "3"}
    assert metric_sum(cloudwatch, "mlayer", "records", live) == 30
    assert metric_sum(cloudwatch, "mlayer", "label:positive", live) == 18
    assert metric_sum(cloudwatch, "mlayer", "confidence_mean", live, "Average") == 0.8125
    assert metric_sum(cloudwatch, "mlayer", "records", {**live, "model_version": "4"}) == 10
    shadow = {**live, "shadow_version": "2"}
    assert metric_sum(cloudwatch, "mlayer", "shadow_records", shadow) == 18
    # and Lambda's, per executed version
    alias = {"FunctionName": "scorer", "Resource": "scorer:live"}
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", {"FunctionName": "scorer"}) == 3
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", alias) == 3
    v3 = {**alias, "ExecutedVersion": "3"}
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", v3) == 2
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Errors", v3) == 1
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Errors", {**v3, "ExecutedVersion": "4"}) == 0
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Duration", v3, "Average") == 12.5


class Recorder:
    """A CloudWatch client that keeps each put_metric_data call (or fails them)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.fail is not None:
            raise self.fail


def points(call: dict[str, Any]) -> int:
    """The data points of one put_metric_data call (Values / Counts entries)."""
    return int(sum(sum(entry["Counts"]) for entry in call["MetricData"]))


def test_requests_stay_within_put_metric_datas_limits() -> None:
    # Given 2,000 series of one namespace (each record in its own second, 100 metrics), half
    # of them with 1 KB dimension values
    recorder = Recorder()
    publisher = MetricsPublisher(recorder, function="f", qualifier=None)
    many = {f"m{i}": i for i in range(100)}
    directive = {"Namespace": "a", "Dimensions": [["d"]], "Metrics": [{"Name": n} for n in many]}
    for value in ("x", "y" * 1024):
        for second in range(10):
            emf = {"Timestamp": NOW_MS - 1000 * second, "CloudWatchMetrics": [directive]}
            line = {"d": value, **many, "_aws": emf}
            publisher.record(invocation(json.dumps(line)), executed_version="1")
    publisher.close()
    # Then each request holds one namespace, at most 1,000 entries and well under 1 MB
    calls = [(c["Namespace"], len(c["MetricData"]), points(c)) for c in recorder.calls]
    assert all(entries <= MAX_DATA_PER_REQUEST for _, entries, _ in calls)
    assert sum(n for ns, _, n in calls if ns == "a") == 2000
    assert sum(n for ns, _, n in calls if ns == LAMBDA_NAMESPACE) == 20 * 3
    for call in recorder.calls:
        assert len(json.dumps(call, default=str)) < 1_000_000
    assert len([ns for ns, _, _ in calls if ns == "a"]) >= 3  # the long values took more
    assert publisher.report.put == 2000 + 60 and publisher.report.requests == len(calls)


def test_a_series_points_in_one_second_go_as_values_and_counts() -> None:
    # Given 4 records in the same second, each with 100 latencies (400 distinct), and the
    # same count 4 times
    recorder = Recorder()
    publisher = MetricsPublisher(recorder, function="f", qualifier=None)
    directive = {
        "Namespace": "a",
        "Dimensions": [[]],
        "Metrics": [{"Name": "latency", "Unit": "Milliseconds"}, {"Name": "n", "Unit": "Count"}],
    }
    for record in range(4):
        line = {
            "latency": [record * 100 + i + 0.5 for i in range(100)],
            "n": 7,
            "_aws": {"Timestamp": NOW_MS, "CloudWatchMetrics": [directive]},
        }
        publisher.record(invocation(json.dumps(line)), executed_version="1")
    publisher.close()
    (call,) = [c for c in recorder.calls if c["Namespace"] == "a"]
    entries = [e for e in call["MetricData"] if e["MetricName"] == "latency"]
    # Then at most 150 distinct values an entry, each counted once; the count merged
    assert [len(e["Values"]) for e in entries] == [150, 150, 100]
    assert {c for e in entries for c in e["Counts"]} == {1.0}
    (n,) = [e for e in call["MetricData"] if e["MetricName"] == "n"]
    assert (n["Values"], n["Counts"], n["Unit"]) == ([7.0], [4.0], "Count")
    assert n["Timestamp"] == datetime.fromtimestamp(NOW_MS // 1000, UTC)


def test_a_run_sees_its_metrics_before_it_ends() -> None:
    recorder = Recorder()
    with MetricsPublisher(recorder, function="f", qualifier=None, flush_interval_s=0.05) as pub:
        pub.record(invocation(json.dumps(batch_line())), executed_version="1")
        deadline = time.monotonic() + 30
        while not recorder.calls:  # put by the background thread, not by close()
            assert time.monotonic() < deadline, "the buffered metrics were never put"
            time.sleep(0.01)


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "InternalFailure", "Message": "boom"}}, "PutMetricData"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=["refused", "unreachable"],
)
def test_failures_to_put_are_counted_warned_once_and_never_raise(error: Exception) -> None:
    recorder = Recorder(fail=error)
    warnings: list[str] = []
    publisher = MetricsPublisher(recorder, function="f", qualifier=None, on_warning=warnings.append)
    for _ in range(GIVE_UP_AFTER + 2):
        publisher.record(invocation(json.dumps(batch_line())), executed_version="1")
        publisher.flush()  # one request per namespace each time
    report = publisher.close()
    assert len(warnings) == 1 and warnings[0].startswith("could not put metrics to CloudWatch")
    assert len(recorder.calls) == GIVE_UP_AFTER  # then it stopped trying
    assert report.put == 0 and report.failed == (GIVE_UP_AFTER + 2) * (9 + 3)  # points
    (note,) = report.notes()
    assert note.startswith(f"{report.failed:,} metric data point(s) could not be put")
    assert f"after {GIVE_UP_AFTER} failed requests in a row the run stopped trying" in note


# -- invoke and run-local with a function that prints EMF lines -----------------------------

TINY = """
import json, os, time

def lambda_handler(event, context):
    records = event.get("Records") or event.get("records") or []
    line = {
        "message": "batch",
        "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        "model_version": os.environ["MODEL_VERSION"],
        "records": len(records),
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": "mlayer",
            "Dimensions": [["function", "model_version"]],
            "Metrics": [{"Name": "records", "Unit": "Count"}],
        }]},
    }
    print(json.dumps(line))
    if os.environ.get("BROKEN_EMF"):
        print(json.dumps({"_aws": {"CloudWatchMetrics": []}}))
    return {"batchItemFailures": [], "version": os.environ["MODEL_VERSION"]}
"""


@dataclass
class Canary:
    aws: AwsSettings
    function_dir: Path
    layers: Path


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Canary]:
    """Function "tiny" (the EMF-printing handler above) with versions 1 and 2 (MODEL_VERSION
    1 and 2), alias live on version 1 routing 25% to version 2; a 1-shard stream "s"."""
    from mlayer.deploy import zip_function

    function_dir = tmp_path / "function"
    function_dir.mkdir()
    (function_dir / "lambda_function.py").write_text(textwrap.dedent(TINY))
    with mock_aws():
        aws = AwsSettings(region="us-east-1")
        lam, iam = aws.client("lambda"), aws.client("iam")
        role = iam.create_role(RoleName="tiny", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam.create_function(
            FunctionName="tiny", Runtime=RUNTIME, Role=role, Timeout=30,
            Handler="lambda_function.lambda_handler",
            Code={"ZipFile": zip_function(function_dir).data},
            Environment={"Variables": {"MODEL_VERSION": "1"}},
        )  # fmt: skip
        lam.publish_version(FunctionName="tiny")
        lam.update_function_configuration(
            FunctionName="tiny", Environment={"Variables": {"MODEL_VERSION": "2"}}
        )
        lam.publish_version(FunctionName="tiny")
        lam.create_alias(
            FunctionName="tiny", Name="live", FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
        )  # fmt: skip
        kinesis = aws.client("kinesis")
        kinesis.create_stream(StreamName="s", ShardCount=1)
        kinesis.put_records(
            StreamName="s",
            Records=[{"Data": b'{"text": "fine"}', "PartitionKey": f"k{i}"} for i in range(80)],
        )
        yield Canary(aws, function_dir, tmp_path / "layers")


def test_run_local_routes_one_batch_in_four_to_a_25_percent_canary(
    canary: Canary, tmp_path: Path
) -> None:
    from mlayer.local.runner import run_local

    # When run-local drains 80 records in batches of 10 through alias live
    result = run_local(
        canary.aws, function="tiny", stream="s", qualifier="live",
        overrides={"batch_size": 10}, until_idle_s=0.5, layers_dir=canary.layers,
        function_dir=canary.function_dir, log_path=tmp_path / "lambda.log", metrics=True,
        poll_interval_s=0.05,
    )  # fmt: skip
    stats = result.summary.stats
    # Then exactly 2 of its 8 batches ran version 2 (the 3rd and 7th), each version in its
    # own environment
    assert stats.records_done == 80 and stats.invocations == 8
    assert stats.batches_by_version == {"1": 6, "2": 2}
    assert stats.cold_starts == 2
    log = (tmp_path / "lambda.log").read_text()
    versions = [line.split("Version: ")[1] for line in log.splitlines() if line.startswith("START")]
    assert versions == ["1", "1", "2", "1", "1", "1", "2", "1"]
    assert [r.version for r in result.routes] == ["1", "2"]
    assert any(
        "alias live routes 25% to version 2 (a canary), the rest to its primary version 1; "
        "each shard's batches go by smooth weighted round robin (deterministic): version 2 "
        "exactly 1 in every 4" in note
        for note in result.notes
    )
    assert result.summary.to_dict()["stats"]["batches_by_version"] == {"1": 6, "2": 2}
    # and CloudWatch holds the function's metrics per model version, Lambda's per version
    cloudwatch = canary.aws.client("cloudwatch")
    assert result.metrics is not None and result.metrics.failed == 0
    for version, records in (("1", 60), ("2", 20)):
        dims = {"function": "tiny", "model_version": version}
        assert metric_sum(cloudwatch, "mlayer", "records", dims) == records
    through = {"FunctionName": "tiny", "Resource": "tiny:live"}
    for version, count in (("1", 6), ("2", 2)):
        dims = {**through, "ExecutedVersion": version}
        assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", dims) == count
    assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Errors", through) == 0


def test_a_running_run_local_shows_its_metrics_before_it_stops(
    canary: Canary, tmp_path: Path
) -> None:
    from mlayer.local.runner import run_local

    # Given run-local consuming the stream with no end (until stopped)
    stop = threading.Event()
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(
            run_local(
                canary.aws, function="tiny", stream="s", qualifier="live",
                overrides={"batch_size": 10}, layers_dir=canary.layers,
                function_dir=canary.function_dir, log_path=tmp_path / "lambda.log",
                metrics=True, poll_interval_s=0.05, stop=stop,
            )
        )
    )  # fmt: skip
    runner.start()
    try:
        # When a reader polls CloudWatch meanwhile, as a canary bake does
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        dims = {"FunctionName": "tiny", "Resource": "tiny:live", "ExecutedVersion": "2"}
        deadline = time.monotonic() + 60
        while metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", dims) < 2:
            assert runner.is_alive(), "run-local ended before its metrics were seen"
            assert time.monotonic() < deadline, "the canary's metrics never showed up"
            time.sleep(0.1)
        # Then the canary's invocations are there while the run still runs
        assert runner.is_alive() and not done
    finally:
        stop.set()
        runner.join(60)
    assert done and done[0].summary.stats.batches_by_version == {"1": 6, "2": 2}


def test_invoke_draws_the_version_and_puts_its_metrics(canary: Canary, tmp_path: Path) -> None:
    import random

    from mlayer.local.runner import invoke

    # Seeds whose first draw lands on each side of the 25% split
    seeds = {
        version: next(
            s for s in range(100) if (random.Random(s).randrange(4) == 3) == (version == "2")
        )
        for version in ("1", "2")
    }
    for version, seed in seeds.items():
        result = invoke(
            canary.aws, function="tiny", qualifier="live", event={"records": [{"a": 1}]},
            layers_dir=canary.layers, function_dir=canary.function_dir,
            log_path=tmp_path / "lambda.log", metrics=True, rng=random.Random(seed),
        )  # fmt: skip
        assert result.function.version == result.invocation.executed_version == version
        assert result.invocation.response["version"] == version
        assert any("drawn at random with the weights" in note for note in result.notes)
    cloudwatch = canary.aws.client("cloudwatch")
    for version in ("1", "2"):
        dims = {"FunctionName": "tiny", "Resource": "tiny:live", "ExecutedVersion": version}
        assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", dims) == 1
        mlayer_dims = {"function": "tiny", "model_version": version}
        assert metric_sum(cloudwatch, "mlayer", "records", mlayer_dims) == 1


def test_a_broken_emf_line_is_a_note_and_the_invocation_stands(
    canary: Canary, tmp_path: Path
) -> None:
    from mlayer.local.runner import invoke

    lam = canary.aws.client("lambda")
    lam.update_function_configuration(
        FunctionName="tiny", Environment={"Variables": {"MODEL_VERSION": "9", "BROKEN_EMF": "1"}}
    )
    result = invoke(
        canary.aws, function="tiny", event={"records": []}, layers_dir=canary.layers,
        function_dir=canary.function_dir, log_path=tmp_path / "lambda.log", metrics=True,
    )  # fmt: skip
    assert result.invocation.error is None and result.metrics is not None
    assert result.metrics.emf_records == 1
    assert result.notes == [
        "1 EMF record(s) ignored (CloudWatch would extract nothing from them): "
        "_aws.Timestamp is missing or not a number (epoch milliseconds)"
    ]


def test_a_canary_that_cannot_run_here_says_how_to_run_the_primary_alone(
    canary: Canary, tmp_path: Path
) -> None:
    from mlayer.deploy import zip_function
    from mlayer.errors import ConfigError
    from mlayer.local.runner import invoke

    # Given a canary version 3 whose code is not the local function's
    lam = canary.aws.client("lambda")
    other = tmp_path / "other"
    other.mkdir()
    (other / "lambda_function.py").write_text("def lambda_handler(event, context):\n    pass\n")
    lam.update_function_code(FunctionName="tiny", ZipFile=zip_function(other).data)
    lam.publish_version(FunctionName="tiny")
    lam.update_alias(
        FunctionName="tiny", Name="live",
        RoutingConfig={"AdditionalVersionWeights": {"3": 0.1}},
    )  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        invoke(
            canary.aws, function="tiny", qualifier="live", event={}, layers_dir=canary.layers,
            function_dir=canary.function_dir, log_path=tmp_path / "lambda.log",
        )  # fmt: skip
    message = str(raised.value)
    assert message.startswith("the code deployed to tiny (CodeSha256 ")
    assert message.endswith(
        ". (Version 3 is alias live's 10% canary; to run its primary version alone, pass --alias 1)"
    )


def test_metrics_are_off_against_aws_itself_unless_asked(canary: Canary, tmp_path: Path) -> None:
    from mlayer.local.runner import invoke

    result = invoke(
        canary.aws, function="tiny", qualifier="1", event={"records": []},
        layers_dir=canary.layers, function_dir=canary.function_dir,
        log_path=tmp_path / "lambda.log",
    )  # fmt: skip
    assert result.metrics is None
    assert result.notes == [
        "metrics not put: against AWS itself a local run's metrics would mix with the "
        "deployed function's (pass --metrics to put them anyway)"
    ]


def test_the_commands_show_the_split_and_the_metrics(canary: Canary, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlayer.cli import cli

    common = [
        "--function", "tiny", "--alias", "live", "--layers-dir", str(canary.layers),
        "--function-dir", str(canary.function_dir), "--log", str(tmp_path / "lambda.log"),
        "--metrics",
    ]  # fmt: skip
    result = CliRunner().invoke(
        cli,
        ["run-local", "--stream", "s", "--batch-size", "10", "--until-idle", "0.5",
         "--checkpoints", str(tmp_path / "checkpoints.json"), *common],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    assert "canary 25%: tiny (2, python3.11, 128 MB, timeout 30 s) on layers: none" in lines
    assert "batches per version 1: 6, 2: 2" in lines
    assert "metrics 80 data points put to CloudWatch (8 EMF records)"  # 8 + 8 x 3 x 3 in lines
    result = CliRunner().invoke(
        cli, ["invoke", "--event", "-", "--json", *common], input='{"records": []}'
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["routes"] == {"1": 0.75, "2": 0.25}
    assert shown["metrics"]["put"] == 1 + 3 * 3 and shown["metrics"]["failed"] == 0


# -- end to end: the real function on real layers, a canary, moto_server --------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path) -> Path:
    """layers/ with the deps layer for this Python and model layers v1 and v2 of the sample
    text model (mlayer's build cache makes the deps build fast after the first). v2 names its
    labels differently, so it is another model to a rollout (its identity differs)."""
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.model_layer import ModelBuildOptions, build_model

    layers = tmp_path_factory.mktemp("canary-layers")
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime=RUNTIME,
            layers_dir=layers,
            function_dir=ROOT / "function",
        )
    )
    renamed = tmp_path_factory.mktemp("model-v2") / "model"
    shutil.copytree(text_model_dir, renamed)
    metadata = json.loads((renamed / "metadata.json").read_text())
    metadata["labels"] = ["neg", "pos"]
    (renamed / "metadata.json").write_text(json.dumps(metadata))
    for version, model_dir in ((1, text_model_dir), (2, renamed)):
        build_model(
            ModelBuildOptions(
                model_dir=model_dir,
                version=version,
                layers_dir=layers,
                function_dir=ROOT / "function",
            )
        )
    return layers


def expected_split(shard_records: dict[str, int], batch_size: int) -> dict[str, list[int]]:
    """Per version, the sizes of the batches the round robin gives it (3:1, per shard)."""
    from mlayer.local.routing import SmoothWeightedRoundRobin

    split: dict[str, list[int]] = {"1": [], "2": []}
    for count in shard_records.values():
        robin = SmoothWeightedRoundRobin([3, 1])
        for start in range(0, count, batch_size):
            split[str(robin.next() + 1)].append(min(batch_size, count - start))
    return split


@pytest.mark.slow
def test_run_local_through_a_canary_alias_end_to_end(two_models: Path, tmp_path: Path) -> None:
    from mlayer.deploy import deploy_function
    from mlayer.layers import load_build, publish_deps
    from mlayer.local.endpoint import local_endpoint
    from mlayer.rollout import publish_model

    with local_endpoint() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        lam, s3, dynamodb, kinesis = (
            aws.client(n) for n in ("lambda", "s3", "dynamodb", "kinesis")
        )
        # Given scorer on model v1 behind alias live, with a 25% canary on model v2 (its own
        # function version, linking model layer v2), writing predictions to a table
        s3.create_bucket(Bucket="artifacts")
        dynamodb.create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        publish_deps(
            lam, s3, build=load_build(next(two_models.glob("deps-*.zip"))),
            layer_name="scorer-deps", bucket="artifacts",
        )  # fmt: skip
        deploy_function(
            lam, function="scorer", function_dir=ROOT / "function", role=None, runtime=RUNTIME,
            arch="x86_64", memory_mb=512, timeout_s=30,
            environment={"OUTPUT_TABLE": "predictions"}, deps_layer="scorer-deps",
            model_layer="scorer-model", layers_dir=two_models, local_iam=aws.client("iam"),
        )  # fmt: skip
        for model, canary in ((1, None), (2, 25.0)):
            publish_model(
                lam, s3, function="scorer", layer_name="scorer-model", alias="live",
                build=load_build(two_models / f"model-sentiment-v{model}.zip"), canary=canary,
            )  # fmt: skip
        # and 300 records on a 2-shard stream
        kinesis.create_stream(StreamName="reviews", ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName="reviews", WaiterConfig={"Delay": 0.2})
        shard_records: dict[str, int] = {}
        put = kinesis.put_records(
            StreamName="reviews",
            Records=[
                {"Data": json.dumps({"text": f"works well {i}"}).encode(), "PartitionKey": f"k{i}"}
                for i in range(300)
            ],
        )
        for record in put["Records"]:
            shard_records[record["ShardId"]] = shard_records.get(record["ShardId"], 0) + 1

        # When run-local drains it through alias live, in batches of 20
        proc = subprocess.run(
            [
                sys.executable, "-c", "from mlayer.cli import main; main()",
                "--endpoint-url", endpoint.url, "run-local", "--function", "scorer",
                "--alias", "live", "--stream", "reviews", "--batch-size", "20",
                "--until-idle", "1", "--layers-dir", str(two_models),
                "--function-dir", str(ROOT / "function"), "--log", str(tmp_path / "lambda.log"),
                "--checkpoints", str(tmp_path / "checkpoints.json"), "--json",
            ],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT / "cli")},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = json.loads(proc.stdout)

        # Then each shard's batches went 3:1 to versions 1 and 2, as the round robin says
        split = expected_split(shard_records, 20)
        stats = summary["stats"]
        assert summary["routes"] == {"1": 0.75, "2": 0.25}
        assert stats["records_done"] == 300 and stats["retries"] == 0
        assert stats["batches_by_version"] == {v: len(sizes) for v, sizes in split.items()}
        assert stats["cold_starts"] == 4  # one environment per shard and version
        # and each version ran its own model layer: the predictions say which model
        pages = dynamodb.get_paginator("scan").paginate(TableName="predictions")
        items = [item for page in pages for item in page["Items"]]
        by_model = Counter(str(next(iter(item["model_version"].values()))) for item in items)
        assert by_model == {v: sum(sizes) for v, sizes in split.items()}
        labels = {(item["model_version"]["N"], item["label"]["S"]) for item in items}
        assert {label for version, label in labels if version == "2"} <= {"neg", "pos"}
        assert {label for version, label in labels if version == "1"} <= {"negative", "positive"}
        # and CloudWatch holds Lambda's metrics per executed version, all put before it ended
        assert summary["metrics"]["failed"] == 0
        cloudwatch = aws.client("cloudwatch")
        through = {"FunctionName": "scorer", "Resource": "scorer:live"}
        for version, sizes in split.items():
            dims = {**through, "ExecutedVersion": version}
            assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", dims) == len(sizes)
            assert metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Errors", dims) == 0
        total = metric_sum(cloudwatch, LAMBDA_NAMESPACE, "Invocations", {"FunctionName": "scorer"})
        assert total == stats["invocations"]
        # and, once the function logs its batch line as an EMF record, its metrics per model
        # version (the function side of the contract; until then only Lambda's are there)
        if summary["metrics"]["emf_records"]:
            assert summary["metrics"]["emf_records"] == stats["invocations"]
            for version, sizes in split.items():
                dims = {"function": "scorer", "model_version": version}
                assert metric_sum(cloudwatch, "mlayer", "records", dims) == sum(sizes)
                assert metric_sum(cloudwatch, "mlayer", "predictions", dims) == sum(sizes)
