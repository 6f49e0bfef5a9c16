"""metrics.version_figures: the batch lines' EMF metrics, put as CloudWatch Logs puts them,
read back exactly (moto in process); the window, the period, label discovery past a page,
queries past one call, and what moto cannot answer (p99)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from metrics_support import Batch, Shadow, put_batches, put_invocations

from mlayer.metrics import label_overlap, period_for, shares, version_figures

HOUR = timedelta(hours=1)


@pytest.fixture
def cw() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def test_two_versions_and_a_shadow_read_back_exactly(cw: Any) -> None:
    # given: v1 live (two batches), v2 a canary scored beside v1 as its shadow (two batches),
    # Lambda's metrics of both versions through alias live
    put_batches(
        cw, "scorer",
        Batch("1", ["pos"] * 6 + ["neg"] * 4, bad=2, predict_ms=10, confidence=0.8, at=ago(20)),
        Batch("1", ["pos"] * 3 + ["neg"] * 7, predict_ms=30, confidence=0.6, at=ago(10)),
        Batch("2", ["pos"] * 8, bad=1, sink_failures=1, predict_ms=12, confidence=0.9,
              shadow=Shadow("1", ["pos"] * 4 + ["neg"] * 4, abs_diff=0.2, predict_ms=6),
              at=ago(15)),
        Batch("2", ["neg"] * 2, predict_ms=8, confidence=0.7,
              shadow=Shadow("1", ["neg"] * 2, abs_diff=0.1, predict_ms=4), at=ago(5)),
    )  # fmt: skip
    put_invocations(cw, "scorer", "live", "1", invocations=2, at=ago(10))
    put_invocations(cw, "scorer", "live", "2", invocations=3, errors=1, at=ago(10))

    # when
    v1 = version_figures(cw, "scorer", "1", HOUR, executed_version="1", alias="live")
    v2 = version_figures(cw, "scorer", 2, HOUR, shadow_version="1", executed_version="2",
                         alias="live")  # fmt: skip

    # then: sums, means over batches, shares of the labelled predictions
    assert (v1.batches, v1.records, v1.predictions, v1.bad_records) == (2, 22, 20, 2)
    assert v1.bad_rate == pytest.approx(2 / 22)
    assert v1.labels == {"pos": 9, "neg": 11}
    assert v1.label_shares == {"neg": 0.55, "pos": 0.45}
    assert list(v1.label_shares) == ["neg", "pos"]  # most frequent first
    assert v1.confidence_mean == pytest.approx(0.7)
    assert v1.predict_ms == pytest.approx(20)
    assert v1.predict_ms_max == 30
    assert v1.score_mean is None
    assert v1.shadow is None
    assert (v1.invocations, v1.errors, v1.lambda_scope) == (2, 0, "scorer:live, version 1")

    assert (v2.records, v2.predictions, v2.bad_records, v2.sink_failures) == (11, 10, 1, 1)
    assert v2.labels == {"pos": 8, "neg": 2}
    assert (v2.invocations, v2.errors) == (3, 1)
    shadow = v2.shadow
    assert shadow is not None
    assert (shadow.version, shadow.records, shadow.failures) == ("1", 10, 0)
    # per record: 4 of the first batch's 8 and both of the second agree
    assert (shadow.agreement, shadow.agreement_basis) == (pytest.approx(0.6), "records")
    assert shadow.abs_diff == pytest.approx(0.15)
    assert shadow.predict_ms == pytest.approx(5)
    assert shadow.labels == {"pos": 4, "neg": 6}
    assert shadow.label_shares == {"neg": 0.6, "pos": 0.4}


def test_without_shadow_agreed_the_agreement_is_the_mean_over_batches(cw: Any) -> None:
    put_batches(
        cw, "scorer",
        Batch("2", ["pos"] * 8, shadow=Shadow("1", ["pos"] * 4 + ["neg"] * 4, agreed_metric=False)),
        Batch("2", ["neg"] * 2, shadow=Shadow("1", ["neg"] * 2, agreed_metric=False)),
    )  # fmt: skip

    shadow = version_figures(cw, "scorer", "2", HOUR, shadow_version="1").shadow

    assert shadow is not None
    assert (shadow.agreement, shadow.agreement_basis) == (pytest.approx(0.75), "batches")


def test_a_shadow_that_failed_counts_its_failure(cw: Any) -> None:
    put_batches(cw, "scorer", Batch("2", ["pos"] * 3, shadow=Shadow("1", ["pos"] * 3, failed=True)))

    shadow = version_figures(cw, "scorer", "2", HOUR, shadow_version="1").shadow

    assert shadow is not None
    assert (shadow.records, shadow.failures, shadow.agreement) == (0, 1, None)


def test_only_the_window_the_version_and_the_function_count(cw: Any) -> None:
    put_batches(
        cw, "scorer",
        Batch("1", ["pos"] * 5, at=ago(90)),  # before the window
        Batch("1", ["pos"] * 2, at=ago(30)),
        Batch("2", ["neg"] * 7, at=ago(30)),  # another version
    )  # fmt: skip
    put_batches(cw, "other", Batch("1", ["neg"] * 9, at=ago(30)))  # another function

    v1 = version_figures(cw, "scorer", "1", HOUR)
    since_start = version_figures(cw, "scorer", "1", ago(45), until=ago(15))
    before = version_figures(cw, "scorer", "1", ago(120), until=ago(60))

    assert (v1.records, v1.labels) == (2, {"pos": 2})
    assert since_start.records == 2
    assert (before.records, before.labels) == (5, {"pos": 5})


def test_no_metrics_is_all_zero_and_unseen(cw: Any) -> None:
    figures = version_figures(cw, "scorer", "7", HOUR, shadow_version="6", alias="live")

    assert not figures.seen
    assert (figures.records, figures.bad_rate, figures.labels, figures.predict_ms) == (
        0, None, {}, None,
    )  # fmt: skip
    assert figures.shadow is not None and figures.shadow.records == 0
    assert (figures.invocations, figures.errors, figures.lambda_scope) == (0, 0, "scorer:live")
    assert figures.notes == []  # no p99 asked without data


def test_moto_gives_no_p99_so_the_maximum_stands_with_a_note(cw: Any) -> None:
    put_batches(cw, "scorer", Batch("1", ["pos"], predict_ms=4), Batch("1", ["pos"], predict_ms=9))

    figures = version_figures(cw, "scorer", "1", HOUR)
    skipped = version_figures(cw, "scorer", "1", HOUR, percentiles=False)

    assert (figures.predict_ms_p99, figures.predict_ms_max) == (None, 9)
    assert figures.notes == [
        "p99 of predict_ms is not available from this endpoint: the maximum is shown"
    ]
    assert skipped.notes == []


def test_labels_past_one_page_and_queries_past_one_call(cw: Any) -> None:
    # 520 labels: list_metrics pages at 500 and GetMetricData takes 500 queries a call
    labels = [f"class-{i:03d}" for i in range(520)]
    put_batches(cw, "scorer", Batch("3", labels, at=ago(3)), Batch("3", labels[:10], at=ago(2)))

    figures = version_figures(cw, "scorer", "3", HOUR, percentiles=False)

    assert len(figures.labels) == 520
    assert figures.labels["class-000"] == 2
    assert figures.labels["class-519"] == 1
    assert figures.records == 530


@pytest.mark.parametrize(
    ("start_age", "window", "period"),
    [
        (timedelta(minutes=10), timedelta(minutes=10), 660),  # rounded start: one more minute
        (timedelta(hours=1), timedelta(hours=1), 3660),
        (timedelta(days=20), timedelta(days=1), 86400 + 300),
        (timedelta(days=70), timedelta(days=1), 86400 + 3600),
    ],
    ids=["10m", "1h", "20d-back", "70d-back"],
)
def test_one_period_covers_the_window_as_cloudwatch_rounds_it(
    start_age: timedelta, window: timedelta, period: int
) -> None:
    now = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)
    start = now - start_age
    assert period_for(start, start + window, now) == period


def test_label_overlap_is_the_shared_part_of_two_distributions() -> None:
    assert label_overlap({"a": 5, "b": 5}, {"a": 5, "b": 5}) == 1
    assert label_overlap({"a": 10}, {"b": 3}) == 0
    assert label_overlap({"a": 8, "b": 2}, {"a": 5, "b": 5}) == pytest.approx(0.7)
    assert label_overlap({}, {"a": 1}) is None
    assert shares({"a": 1, "b": 3}) == {"b": 0.75, "a": 0.25}
