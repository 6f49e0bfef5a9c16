"""Lambda ``REPORT`` log lines: the one record of what an invocation was billed for.

The local runner writes them (:func:`format_report`), the cost estimator reads them from a
file or CloudWatch Logs (:func:`parse_report`, :func:`parse_reports`). The format is
Lambda's: tab-separated fields after ``REPORT RequestId: <id>``, ``Init Duration`` only on
a cold start, X-Ray fields ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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

    @property
    def cold_start(self) -> bool:
        return self.init_duration_ms is not None


def billed_ms(duration_ms: float, granularity_ms: int = 1) -> int:
    """Lambda's billed duration: the duration rounded up to the billing granularity."""
    if duration_ms <= 0:
        return granularity_ms
    return int(math.ceil(round(duration_ms, 6) / granularity_ms) * granularity_ms)


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
    return "\t".join(parts)


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
