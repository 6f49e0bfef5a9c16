"""Lambda ``REPORT`` log lines: what each invocation was billed for, written and read.

The local runner writes them (:func:`format_report`). ``mlayer cost`` reads them from a
file (:func:`read_reports`: the local runner's log, a CloudWatch Logs export, plain or
gzipped, or the JSON ``aws logs filter-log-events`` prints) or from CloudWatch Logs itself
(:func:`fetch_reports`). The text format is Lambda's: tab-separated fields after
``REPORT RequestId: <id>``, ``Init Duration`` only on a cold start, X-Ray fields ignored;
JSON-format logs carry the same figures in a ``platform.report`` event.

SnapStart (checked against AWS's "Monitoring for Lambda SnapStart" and real logs, 2026-11):
the REPORT of a restored environment's first invocation carries ``Restore Duration`` and
``Billed Restore Duration`` instead of ``Init Duration``, and its ``Billed Duration`` already
includes the billed restore (``Duration`` rounded up plus ``Billed Restore Duration``: 2338.66
ms with 182 ms billed restore is billed 2521 ms). The init, run once per snapshot, has its own
``INIT_REPORT`` line; a restore has ``RESTORE_START`` / ``RESTORE_REPORT`` lines before the
first ``START`` (:func:`format_init_report`, :func:`format_restore_report`).

:func:`billed_ms` is the one rounding of a duration to what Lambda bills: the cost model
uses it as well.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from mlayer.errors import AwsError, NotFoundError

_FIELD = re.compile(r"(?P<key>[A-Za-z][A-Za-z ]*?):\s*(?P<value>[^\t]+)")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Report:
    """One invocation's REPORT line."""

    request_id: str
    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None = None
    # SnapStart: the first invocation of an environment restored from a snapshot.
    restore_duration_ms: float | None = None
    billed_restore_duration_ms: int | None = None

    @property
    def cold_start(self) -> bool:
        """A new environment: an init ran, or a snapshot was restored."""
        return self.init_duration_ms is not None or self.restored

    @property
    def restored(self) -> bool:
        return self.restore_duration_ms is not None


def billed_ms(duration_ms: Decimal | float, granularity_ms: int = 1) -> int:
    """Lambda's billed duration: ``duration_ms`` rounded up to the granularity, at least one step.

    A Decimal is rounded exactly. A float (a measured duration) is first read to the
    nanosecond, so that binary noise such as 13.000000000000002 does not bill one more step.
    """
    if not isinstance(duration_ms, Decimal):
        duration_ms = Decimal(str(round(duration_ms, 6)))
    if duration_ms <= 0:
        return granularity_ms
    steps = (duration_ms / granularity_ms).to_integral_value(rounding=ROUND_CEILING)
    return int(steps) * granularity_ms


def format_report(report: Report) -> str:
    """The REPORT line Lambda would write for ``report`` (tab-separated, no newline)."""
    parts = [
        f"REPORT RequestId: {report.request_id}",
        f"Duration: {report.duration_ms:.2f} ms",
        f"Billed Duration: {report.billed_duration_ms} ms",
        f"Memory Size: {report.memory_size_mb} MB",
        f"Max Memory Used: {report.max_memory_used_mb} MB",
    ]
    if report.init_duration_ms is not None:
        parts.append(f"Init Duration: {report.init_duration_ms:.2f} ms")
    if report.restore_duration_ms is not None:
        parts.append(f"Restore Duration: {report.restore_duration_ms:.2f} ms")
        parts.append(f"Billed Restore Duration: {report.billed_restore_duration_ms or 0} ms")
    return "\t".join(parts)


def _status(status: str | None, error_type: str | None) -> str:
    if status is None:
        return ""
    return f"\tStatus: {status}" + (f"\tError Type: {error_type}" if error_type else "")


def format_init_report(
    duration_ms: float, *, phase: str | None = None, status: str | None = None,
    error_type: str | None = None,
) -> str:  # fmt: skip
    """Lambda's ``INIT_REPORT`` line: ``INIT_REPORT Init Duration: 150.79 ms``, and on a
    failure ``\tPhase: init\tStatus: error\tError Type: Runtime.ExitError`` after it."""
    phase_part = f"\tPhase: {phase}" if phase else ""
    return (
        f"INIT_REPORT Init Duration: {duration_ms:.2f} ms{phase_part}{_status(status, error_type)}"
    )


def format_restore_report(
    duration_ms: float, *, status: str | None = None, error_type: str | None = None
) -> str:
    """Lambda's ``RESTORE_REPORT`` line: ``RESTORE_REPORT Restore Duration: 398.97 ms``, and on
    a failure ``\tStatus: timeout`` or ``\tStatus: error\tError Type: Runtime.ExitError``."""
    return f"RESTORE_REPORT Restore Duration: {duration_ms:.2f} ms{_status(status, error_type)}"


def parse_report(line: str) -> Report | None:
    """Parse one REPORT line; None when the line is not one (START, END, app logs)."""
    start = line.find("REPORT RequestId:")
    if start < 0:
        return None
    fields: dict[str, str] = {}
    for match in _FIELD.finditer(line[start + len("REPORT ") :]):
        fields[match.group("key").strip()] = match.group("value").strip()
    try:
        duration = _number(fields["Duration"])
        return Report(
            request_id=fields["RequestId"].split()[0],
            duration_ms=duration,
            billed_duration_ms=int(
                _number(fields.get("Billed Duration", str(billed_ms(duration))))
            ),
            memory_size_mb=int(_number(fields["Memory Size"])),
            max_memory_used_mb=int(_number(fields.get("Max Memory Used", "0"))),
            init_duration_ms=_number(fields["Init Duration"])
            if "Init Duration" in fields
            else None,
            restore_duration_ms=_number(fields["Restore Duration"])
            if "Restore Duration" in fields
            else None,
            billed_restore_duration_ms=int(_number(fields["Billed Restore Duration"]))
            if "Billed Restore Duration" in fields
            else None,
        )
    except (KeyError, ValueError):
        return None


def parse_reports(lines: Iterable[str]) -> Iterator[Report]:
    """Every REPORT line among ``lines`` (other lines are skipped)."""
    for line in lines:
        report = parse_report(line)
        if report is not None:
            yield report


def _number(text: str) -> float:
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(text)
    return float(match.group())


# --------------------------------------------------------------------------- reading


def report_from_message(message: str) -> Report | None:
    """A REPORT from a log message: Lambda's text REPORT line or a JSON-format platform.report."""
    report = parse_report(message)
    if report is not None:
        return report
    if "platform.report" not in message:
        return None
    try:
        event = json.loads(message[message.index("{") :])
        record = event["record"]
        metrics = record["metrics"]
        init = metrics.get("initDurationMs")
        restore = metrics.get("restoreDurationMs")
        billed_restore = metrics.get("billedRestoreDurationMs")
        return Report(
            request_id=str(record.get("requestId", "")),
            duration_ms=float(metrics["durationMs"]),
            billed_duration_ms=int(metrics["billedDurationMs"]),
            memory_size_mb=int(metrics["memorySizeMB"]),
            max_memory_used_mb=int(metrics.get("maxMemoryUsedMB", 0)),
            init_duration_ms=None if init is None else float(init),
            restore_duration_ms=None if restore is None else float(restore),
            billed_restore_duration_ms=None if billed_restore is None else int(billed_restore),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _messages(text: str) -> Iterator[str]:
    """Log messages from a file's text: plain lines, or the JSON `aws logs` commands print."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None  # JSON lines (one platform.report per line): read line by line
        if data is not None:
            events = data.get("events", []) if isinstance(data, dict) else data
            for event in events if isinstance(events, list) else []:
                if isinstance(event, str):
                    yield event
                elif isinstance(event, dict) and isinstance(event.get("message"), str):
                    yield event["message"]
            return
    yield from text.splitlines()


def read_reports(path: Path) -> list[Report]:
    """Every invocation's REPORT in a file: REPORT lines as the local runner writes them, a
    CloudWatch Logs export (plain or gzipped text), or the JSON of ``aws logs
    filter-log-events`` / ``get-log-events``.

    Raises:
        NotFoundError: the file cannot be read or holds no REPORT line.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read {path}: {exc.strerror}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise NotFoundError(f"{path} looks gzipped but cannot be decompressed: {exc}") from exc
    reports = [
        r
        for r in (report_from_message(m) for m in _messages(raw.decode("utf-8", "replace")))
        if r is not None
    ]
    if not reports:
        raise NotFoundError(
            f"no REPORT lines in {path}: expected Lambda's 'REPORT RequestId: ...\\tDuration: "
            "... ms\\tBilled Duration: ... ms\\tMemory Size: ... MB' lines (from mlayer's local "
            "runner or a CloudWatch Logs export)"
        )
    return reports


_SINCE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks)\s*$"
)
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """A look-back such as ``90s``, ``30m``, ``1h``, ``7d``, ``2w``.

    Raises:
        ValueError: not of that form, or zero.
    """
    match = _SINCE.match(text.lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; use a number and a unit: 30m, 1h, 7d (s, m, h, d, w)"
        )
    seconds = float(match.group(1)) * _SINCE_UNITS[match.group(2)[0]]
    if seconds <= 0:
        raise ValueError(f"{text!r} is zero; give a positive look-back such as 1h")
    return timedelta(seconds=seconds)


def log_group_for(function: str) -> str:
    """The log group of a function given by name, ``name:qualifier`` or (partial) ARN
    (:func:`mlayer.arns.log_group`, where function names are parsed once)."""
    from mlayer.arns import log_group

    return log_group(function)


# Lambda's text REPORT lines, or the platform.report events of JSON-format logs. (moto
# returns every event for "?" patterns; the parser skips what is not a report anyway.)
REPORT_FILTER_PATTERN = '?"REPORT RequestId" ?"platform.report"'


def fetch_reports(
    logs: Any,
    function: str,
    since: timedelta,
    *,
    now: datetime | None = None,
    page_size: int | None = None,
) -> list[Report]:
    """The REPORTs of ``function`` in CloudWatch Logs over the last ``since``.

    Pages through ``filter_log_events`` on ``/aws/lambda/<function>`` with boto3's
    paginator. ``logs`` is a CloudWatch Logs client.

    Raises:
        NotFoundError: the log group does not exist, or holds no REPORT in the window.
        AwsError: another CloudWatch Logs error.
    """
    from botocore.exceptions import ClientError

    group = log_group_for(function)
    end = now or datetime.now(UTC)
    start_ms = int((end - since).timestamp() * 1000)
    paginator = logs.get_paginator("filter_log_events")
    config: dict[str, int] = {"PageSize": page_size} if page_size else {}
    reports: list[Report] = []
    try:
        for page in paginator.paginate(
            logGroupName=group,
            startTime=start_ms,  # no endTime: the newest lines count too, whatever the clocks
            filterPattern=REPORT_FILTER_PATTERN,
            PaginationConfig=config,
        ):
            for event in page.get("events", []):
                report = report_from_message(event.get("message", ""))
                if report is not None:
                    reports.append(report)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise NotFoundError(
                f"log group {group} does not exist in this region: check the function name "
                "and --region (the group appears after the function's first invocation)"
            ) from exc
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise AwsError(f"reading {group} failed ({code}): {message}") from exc
    if not reports:
        raise NotFoundError(
            f"no REPORT lines in {group} over the last {_human(since)}: invoke the function "
            "or widen --since (e.g. --since 7d)"
        )
    return reports


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
