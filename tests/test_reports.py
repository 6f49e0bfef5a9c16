"""REPORT lines round-trip and parse as Lambda writes them."""

from __future__ import annotations

import pytest

from mlayer.reports import Report, billed_ms, format_report, parse_report, parse_reports

COLD = (
    "REPORT RequestId: 3f1b2c4d-0000-4000-8000-000000000001\tDuration: 12.34 ms\t"
    "Billed Duration: 13 ms\tMemory Size: 192 MB\tMax Memory Used: 151 MB\t"
    "Init Duration: 845.20 ms\t"
)
XRAY = (
    "REPORT RequestId: abc\tDuration: 101.00 ms\tBilled Duration: 101 ms\tMemory Size: 1024 MB\t"
    "Max Memory Used: 90 MB\t\nXRAY TraceId: 1-5e1b4151-5ac6c58f5b5dbd6a1b8c4f1e\t"
    "SegmentId: 0a1b2c3d4e5f6a7b\tSampled: true"
)


def test_cold_start_line() -> None:
    report = parse_report(COLD)
    assert report == Report("3f1b2c4d-0000-4000-8000-000000000001", 12.34, 13, 192, 151, 845.2)
    assert report.cold_start


def test_xray_fields_ignored() -> None:
    report = parse_report(XRAY)
    assert report is not None
    assert (report.duration_ms, report.billed_duration_ms, report.memory_size_mb) == (
        101.0,
        101,
        1024,
    )
    assert report.init_duration_ms is None


def test_cloudwatch_export_prefix_and_other_lines() -> None:
    lines = [
        "2026-11-23T06:00:00.000Z START RequestId: abc Version: 3",
        "2026-11-23T06:00:00.100Z " + COLD,
        "2026-11-23T06:00:00.100Z END RequestId: abc",
        '{"message": "batch"}',
    ]
    assert [r.billed_duration_ms for r in parse_reports(lines)] == [13]


def test_round_trip() -> None:
    report = Report("r-1", 3.5, 4, 512, 120, None)
    assert parse_report(format_report(report)) == report


@pytest.mark.parametrize(
    ("duration", "granularity", "billed"),
    [
        (0.2, 1, 1),
        (12.01, 1, 13),
        (13.0, 1, 13),
        (4000, 100, 4000),
        (4000.5, 100, 4100),
        (1, 100, 100),
    ],
)
def test_billed_ms(duration: float, granularity: int, billed: int) -> None:
    assert billed_ms(duration, granularity) == billed
