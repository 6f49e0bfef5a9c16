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


# SnapStart lines as Lambda writes them (a real log of 2023-06-02, trailing tab included):
# the restore in its own RESTORE_* lines, Restore Duration / Billed Restore Duration on the
# first REPORT, whose Billed Duration includes the billed restore (2339 + 182 = 2521).
RESTORED = (
    "REPORT RequestId: 8c360c87-d4b7-4423-b5f3-af02be3c1763\tDuration: 2338.66 ms\t"
    "Billed Duration: 2521 ms\tMemory Size: 3009 MB\tMax Memory Used: 173 MB\t"
    "Restore Duration: 398.97 ms\tBilled Restore Duration: 182 ms\t"
)
SNAPSTART_LOG = [
    "INIT_START Runtime Version: python:3.13.v12\tRuntime Version ARN: arn:aws:lambda:us-east-1::runtime:abc",
    "INIT_REPORT Init Duration: 1947.93 ms",
    "RESTORE_START Runtime Version: python:3.13.v12\tRuntime Version ARN: arn:aws:lambda:us-east-1::runtime:abc",
    "RESTORE_REPORT Restore Duration: 398.97 ms",
    "START RequestId: 8c360c87-d4b7-4423-b5f3-af02be3c1763 Version: 72",
    "END RequestId: 8c360c87-d4b7-4423-b5f3-af02be3c1763",
    RESTORED,
    "RESTORE_REPORT Restore Duration: 1236.04 ms\tStatus: error\tError Type: Runtime.ExitError",
]


def test_restored_environment_line() -> None:
    report = parse_report(RESTORED)
    assert report == Report(
        "8c360c87-d4b7-4423-b5f3-af02be3c1763", 2338.66, 2521, 3009, 173,
        restore_duration_ms=398.97, billed_restore_duration_ms=182,
    )  # fmt: skip
    assert report.restored and report.cold_start and report.init_duration_ms is None
    assert report.billed_duration_ms == billed_ms(report.duration_ms) + 182


def test_init_and_restore_report_lines_are_not_invocations() -> None:
    assert [r.request_id for r in parse_reports(SNAPSTART_LOG)] == [
        "8c360c87-d4b7-4423-b5f3-af02be3c1763"
    ]


def test_snapstart_lines_are_lambdas() -> None:
    from mlayer.reports import format_init_report, format_restore_report

    report = Report(
        "r-2", 11.46, 45, 512, 87, restore_duration_ms=44.48, billed_restore_duration_ms=33
    )
    assert format_report(report) == (
        "REPORT RequestId: r-2\tDuration: 11.46 ms\tBilled Duration: 45 ms\tMemory Size: 512 MB"
        "\tMax Memory Used: 87 MB\tRestore Duration: 44.48 ms\tBilled Restore Duration: 33 ms"
    )
    assert parse_report(format_report(report)) == report
    assert format_init_report(1947.931) == "INIT_REPORT Init Duration: 1947.93 ms"
    assert format_init_report(
        150.79, phase="init", status="error", error_type="Runtime.Unknown"
    ) == (
        "INIT_REPORT Init Duration: 150.79 ms\tPhase: init\tStatus: error\tError Type: Runtime.Unknown"
    )
    assert format_restore_report(398.97) == SNAPSTART_LOG[3]
    assert (
        format_restore_report(1236.04, status="error", error_type="Runtime.ExitError")
        == (SNAPSTART_LOG[-1])
    )
    assert format_restore_report(1236.04, status="timeout") == (
        "RESTORE_REPORT Restore Duration: 1236.04 ms\tStatus: timeout"
    )


def test_json_platform_report_of_a_restore() -> None:
    """JSON-format logs: the Telemetry API's platform.report carries restoreDurationMs."""
    from mlayer.reports import report_from_message

    message = (
        '{"time":"2026-11-30T22:00:00.000Z","type":"platform.report","record":{"requestId":"r-3",'
        '"metrics":{"durationMs":36.97,"billedDurationMs":173,"memorySizeMB":128,'
        '"maxMemoryUsedMB":68,"restoreDurationMs":511.56}}}'
    )
    report = report_from_message(message)
    assert report == Report("r-3", 36.97, 173, 128, 68, None, 511.56, None)
    assert report is not None and report.restored
