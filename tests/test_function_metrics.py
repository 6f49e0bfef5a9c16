"""The batch line as a CloudWatch EMF record (docs/CONTRACTS.md, "Metrics"): valid EMF, and
values that are the batch's own counts, over any mix of good, bad and skipped records, with
and without a dead-letter queue, with sinks that fail; regressors' scores; the label cap."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import pytest
from function_support import Run, dynamodb_record, invoke
from hypothesis import example, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from test_function_properties import (
    PROPERTY_SETTINGS,
    Case,
    kinesis_event_of,
    numbers,
    text_kinesis_cases,
    texts,
)

import metrics
import sinks

# CloudWatch's units (the MetricDatum Unit enumeration).
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
MISSING_TABLE = "no-such-table"


def emf(line: dict[str, Any]) -> list[dict[str, float]]:
    """Check ``line`` is a valid EMF record; each directive's metric values, by name."""
    aws = line["_aws"]
    timestamp = aws["Timestamp"]
    assert type(timestamp) is int
    assert abs(timestamp - time.time() * 1000) < 600_000  # epoch milliseconds, now
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    found = []
    for directive in directives:
        assert directive["Namespace"] == "mlayer"
        assert directive["Dimensions"] and all(
            isinstance(keys, list) and 1 <= len(keys) <= 30 for keys in directive["Dimensions"]
        )
        for keys in directive["Dimensions"]:
            for key in keys:
                value = line[key]
                assert isinstance(value, str) and value.strip(), (key, value)
                assert value.isascii() and len(value) <= 1024
        named = directive["Metrics"]
        assert 1 <= len(named) <= 100
        values = {}
        for metric in named:
            assert set(metric) == {"Name", "Unit"}
            name = metric["Name"]
            assert isinstance(name, str) and 1 <= len(name) <= 255 and name.isascii(), name
            assert metric["Unit"] in UNITS
            value = line[name]
            assert type(value) in (int, float) and math.isfinite(value), (name, value)
            values[name] = value
        assert len(values) == len(named)  # no name twice
        found.append(values)
    return found


def labels_of(values: dict[str, float], prefix: str = "label:") -> dict[str, float]:
    return {name[len(prefix) :]: count for name, count in values.items() if name.startswith(prefix)}


def check_batch(run: Run, received: int, *, bad: int, sink_failures: int) -> dict[str, float]:
    """The first directive's values are the batch's: counts, timings, labels, confidence."""
    line = run.batch_log
    directives = emf(line)
    assert len(directives) == 1  # no shadow here
    live = directives[0]
    predictions = run.response["predictions"]
    counts = run.response["counts"]
    assert line["function"] == "sentiment"
    assert line["model_version"] == "unversioned"
    assert live["records"] == received == counts["received"]
    assert live["predictions"] == len(predictions) == counts["predicted"]
    assert (live["bad_records"], live["sink_failures"]) == (bad, sink_failures)
    assert live["bad_records"] + live["sink_failures"] == counts["dead_lettered"] + counts["failed"]
    for name in ("decode_ms", "predict_ms", "write_ms"):
        assert live[name] == line[name] >= 0
    assert labels_of(live) == Counter(p["label"] for p in predictions)
    if predictions:
        assert live["confidence_mean"] == pytest.approx(
            statistics.fmean(p["probability"] for p in predictions)
        )
    else:
        assert "confidence_mean" not in live
    assert "score_mean" not in live
    return live


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """moto for the module's examples: a dead-letter queue; no table named MISSING_TABLE."""
    sinks._CLIENTS.clear()
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="dlq")["QueueUrl"]
    sinks._CLIENTS.clear()


def expected_failures(outcomes: list[str], dead_letters: bool, sink_fails: bool) -> tuple[int, int]:
    """(bad_records, sink_failures) as the contract defines them, from each record's fate.

    A failing sink fails from the first predicted record: it and every record behind it are
    reported. Bad records before it are dead-lettered (with a queue); without a queue every
    bad record is reported alone, wherever it is.
    """
    failed = outcomes.count("failed")
    predicted = [i for i, outcome in enumerate(outcomes) if outcome == "predicted"]
    if not sink_fails or not predicted:
        return failed, 0
    first = predicted[0]
    behind = outcomes[first:]
    if dead_letters:
        return outcomes[:first].count("failed"), len(behind)
    return failed, len(behind) - behind.count("failed")


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(
    cases=st.lists(text_kinesis_cases(), max_size=25),
    dead_letters=st.booleans(),
    sink_fails=st.booleans(),
)
def test_kinesis_batch_metrics_are_the_batch_counts(
    text_model_dir: Path, aws: str, cases: list[Case], dead_letters: bool, sink_fails: bool
) -> None:
    # given any mix of good, malformed and skipped (DynamoDB REMOVE) records
    event = kinesis_event_of(cases)
    env: dict[str, Any] = {"MODEL_DIR": text_model_dir}
    if dead_letters:
        env["DEAD_LETTER_QUEUE_URL"] = aws
    if sink_fails:
        env["OUTPUT_TABLE"] = MISSING_TABLE
    # when the handler runs
    run = invoke(event, **env)
    # then the batch line is valid EMF whose values are the batch's
    outcomes = [outcome for outcome, _, _ in cases]
    bad, sink_failures = expected_failures(outcomes, dead_letters, sink_fails)
    check_batch(run, len(cases), bad=bad, sink_failures=sink_failures)


@settings(PROPERTY_SETTINGS, max_examples=30)
@given(
    records=st.lists(
        st.one_of(
            texts.map(lambda t: ("predicted", "INSERT", {"text": {"S": t}})),
            st.just(("skipped", "REMOVE", None)),
            st.just(("skipped", "MODIFY", None)),
            numbers.map(lambda n: ("failed", "INSERT", {"text": {"N": str(n)}})),
        ),
        max_size=25,
    ),
    dead_letters=st.booleans(),
)
def test_dynamodb_batch_metrics_are_the_batch_counts(
    text_model_dir: Path, aws: str, records: list[Case], dead_letters: bool
) -> None:
    event = {
        "Records": [
            dynamodb_record(str(10**20 + i), name, image)
            for i, (_, name, image) in enumerate(records)
        ]
    }
    env: dict[str, Any] = {"MODEL_DIR": text_model_dir}
    if dead_letters:
        env["DEAD_LETTER_QUEUE_URL"] = aws
    run = invoke(event, **env)
    outcomes = [outcome for outcome, _, _ in records]
    check_batch(run, len(records), bad=outcomes.count("failed"), sink_failures=0)
    assert run.response["counts"]["skipped"] == outcomes.count("skipped")


def test_function_dimension_is_the_lambda_function_name(text_model_dir: Path) -> None:
    run = invoke(
        {"records": ["great"]}, MODEL_DIR=text_model_dir, AWS_LAMBDA_FUNCTION_NAME="scorer"
    )
    line = run.batch_log
    emf(line)
    assert (line["function"], line["model"]) == ("scorer", "sentiment")


def test_an_empty_batch_is_a_record_of_zeros(text_model_dir: Path) -> None:
    (live,) = emf(invoke({"Records": []}, MODEL_DIR=text_model_dir).batch_log)
    assert {name: live[name] for name in ("records", "predictions", "bad_records")} == {
        "records": 0,
        "predictions": 0,
        "bad_records": 0,
    }
    assert labels_of(live) == {}


# --- models with chosen labels: a regressor, many labels, a set ------------------------------


def write_model(directory: Path, estimator: Any, name: str) -> Path:
    """A one-feature model directory (feature ``x``) as training/train.py writes one."""
    directory.mkdir(parents=True)
    joblib.dump(estimator, directory / f"{name}.joblib")
    meta = {
        "name": name,
        "stages": [f"{name}.joblib"],
        "input": {"kind": "features", "features": ["x"]},
    }
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


# 30 classes, among them names that are not printable ASCII, too long for a metric name, or
# equal once sanitised ("é", "ü" and "?" are all "?"), and one that is literally "(other)".
LABELS = [
    *(f"class-{i:02d}" for i in range(22)),
    "crème brûlée",
    "日本語",
    "tab\there",
    "x" * 300,
    "é",
    "ü",
    "?",
    "(other)",
]


@pytest.fixture(scope="module")
def many_labels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.neighbors import KNeighborsClassifier

    positions = [[float(i)] for i in range(len(LABELS))]
    knn = KNeighborsClassifier(n_neighbors=1).fit(positions, LABELS)
    return write_model(tmp_path_factory.mktemp("many") / "labels", knn, "labels")


@pytest.fixture(scope="module")
def regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import LinearRegression

    fitted = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.5, 2.5, 4.5])  # 2x + 0.5
    return write_model(tmp_path_factory.mktemp("regressor") / "values", fitted, "values")


def sanitised(label: str) -> str:
    """The contract's label name, written out plainly."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E else "?" for c in label)[:200]


def capped(labels: list[str]) -> dict[str, int]:
    """label name -> count as the contract says: names merged, 20 most frequent (ties by
    name), the rest summed in "(other)"."""
    merged: Counter[str] = Counter()
    for label in labels:
        merged[sanitised(label)] += 1
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:20])
    rest = sum(count for _, count in ranked[20:])
    if rest:
        kept["(other)"] = kept.get("(other)", 0) + rest
    return kept


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(picks=st.lists(st.integers(min_value=0, max_value=len(LABELS) - 1), max_size=120))
# a class named "(other)" among the 20 kept: the rest join its count
@example(picks=[LABELS.index("(other)")] * 3 + list(range(22)))
def test_at_most_twenty_labels_then_other(many_labels_dir: Path, picks: list[int]) -> None:
    # given records whose labels are chosen, from 30 classes
    run = invoke({"records": [{"x": float(i)} for i in picks]}, MODEL_DIR=many_labels_dir)
    assert [p["label"] for p in run.response["predictions"]] == [LABELS[i] for i in picks]
    # then the label metrics are the 20 most frequent names, the rest in label:(other)
    (live,) = emf(run.batch_log)
    found = labels_of(live)
    assert found == capped([LABELS[i] for i in picks])
    assert len(found) <= 21
    assert sum(found.values()) == len(picks)
    if picks:
        assert live["confidence_mean"] == 1.0  # 1-nearest neighbour: certain


def test_non_ascii_labels_are_sanitised(many_labels_dir: Path) -> None:
    index = {label: i for i, label in enumerate(LABELS)}
    picks = ["crème brûlée", "日本語", "tab\there", "x" * 300, "é", "ü", "?", "?"]
    run = invoke({"records": [{"x": float(index[p])} for p in picks]}, MODEL_DIR=many_labels_dir)
    (live,) = emf(run.batch_log)
    assert labels_of(live) == {
        "cr?me br?l?e": 1,
        "???": 1,
        "tab?here": 1,
        "x" * 200: 1,
        "?": 4,  # é, ü and ? itself, twice
    }


def test_regressor_scores_instead_of_labels(regressor_dir: Path) -> None:
    xs = [0.0, 1.0, 1.5, 4.0, -2.0]
    run = invoke({"records": [{"x": x} for x in xs]}, MODEL_DIR=regressor_dir)
    outputs = [p["label"] for p in run.response["predictions"]]
    assert outputs == pytest.approx([2 * x + 0.5 for x in xs])
    (live,) = emf(run.batch_log)
    assert live["score_mean"] == pytest.approx(statistics.fmean(outputs))
    assert live["score_stddev"] == pytest.approx(statistics.pstdev(outputs))
    assert labels_of(live) == {}
    assert "confidence_mean" not in live


def test_a_set_counts_labels_over_its_members_and_reports_its_version(
    many_labels_dir: Path, regressor_dir: Path, tmp_path: Path
) -> None:
    # given a set of a classifier and a regressor, version 4
    import shutil

    set_dir = tmp_path / "tenants"
    shutil.copytree(many_labels_dir, set_dir / "labels")
    shutil.copytree(regressor_dir, set_dir / "values")
    (set_dir / "set.json").write_text(
        json.dumps(
            {"models": ["labels", "values"], "field": "m", "default": "labels", "version": 4}
        )
    )
    records = [
        {"m": "labels", "x": 0.0},
        {"m": "values", "x": 1.0},
        {"m": "labels", "x": 0.0},
        {"x": 1.0},  # the default
        {"m": "values", "x": 3.0},
        {"m": "labels", "x": "not a number"},  # bad
    ]
    # when a batch of both runs
    run = invoke({"records": records}, MODEL_DIR=set_dir)
    line = run.batch_log
    (live,) = emf(line)
    # then labels come from the classifier, scores from the regressor, the version the set's
    assert (line["function"], line["model_version"]) == ("tenants", "4")
    assert labels_of(live) == {LABELS[0]: 2, LABELS[1]: 1}
    assert live["score_mean"] == pytest.approx(statistics.fmean([2.5, 6.5]))
    assert live["score_stddev"] == pytest.approx(statistics.pstdev([2.5, 6.5]))
    assert (live["records"], live["predictions"], live["bad_records"]) == (6, 5, 1)


# --- metrics.py on its own -------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(labels=st.lists(st.one_of(st.text(max_size=5), st.integers(-3, 3), st.none()), max_size=80))
def test_label_counts_keep_every_prediction(labels: list[Any]) -> None:
    counted = metrics.label_counts(labels, "label:")
    assert sum(count for _, count in counted) == len(labels)
    assert len(counted) <= metrics.LABEL_METRICS + 1
    names = [name for name, _ in counted]
    assert len(set(names)) == len(names)
    assert all(name.isascii() and name.isprintable() for name in names)
    assert dict(counted) == {f"label:{k}": v for k, v in capped([str(x) for x in labels]).items()}


def test_labels_and_scores_that_are_awkward_never_raise() -> None:
    # labels metadata.json names with lists (unhashable), scores whose spread overflows
    members = metrics.batch_members(
        function="f",
        model_version="1",
        records=4,
        predictions=4,
        bad_records=0,
        sink_failures=0,
        timings={"decode_ms": 0.0, "predict_ms": 0.0, "write_ms": 0.0},
        labels=[["a"], ["a"], {"b": 1}],
        probabilities=[None] * 4,
        scores=[1e200, -1e200],
    )
    (live,) = emf(members)
    assert labels_of(live) == {"['a']": 2, "{'b': 1}": 1}
    assert (live["score_mean"], "score_stddev" in live) == (0.0, False)


def test_shadow_directive_names_only_what_the_shadow_gave() -> None:
    # given a shadow that raised on the batch: no agreement, no labels
    figures = metrics.ShadowFigures(version="3", predict_ms=0.5, failures=1)
    members = metrics.batch_members(
        function="scorer",
        model_version="4",
        records=2,
        predictions=2,
        bad_records=0,
        sink_failures=0,
        timings={"decode_ms": 0.1, "predict_ms": 1.0, "write_ms": 0.0},
        labels=["a", "b"],
        probabilities=[None, None],
        shadow=figures,
    )
    live, shadowed = emf({**members})
    assert members["shadow_version"] == "3"
    assert shadowed == {"shadow_records": 0, "shadow_predict_ms": 0.5, "shadow_failures": 1}
    assert members["_aws"]["CloudWatchMetrics"][1]["Dimensions"] == [
        ["function", "model_version", "shadow_version"]
    ]
    assert "confidence_mean" not in live  # no probabilities


@pytest.mark.parametrize(
    ("value", "dimension"),
    [("7", "7"), (7, "7"), ("v\u00e9", "v?"), ("", "-"), ("  ", "-"), ("a" * 2000, "a" * 1024)],
    ids=["string", "integer", "non-ascii", "empty", "blank", "too-long"],
)
def test_dimension_values(value: Any, dimension: str) -> None:
    assert metrics.dimension(value) == dimension
