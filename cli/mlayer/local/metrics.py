"""What CloudWatch makes of each invocation in AWS, done for the local runner's invocations.

In AWS two things turn an invocation into metrics without the function calling CloudWatch:
CloudWatch Logs extracts every Embedded Metric Format (EMF) record the function logs (the
function's ``batch`` line is one, see docs/CONTRACTS.md, "Metrics: the `batch` line is a
CloudWatch EMF record"), and Lambda publishes its own ``AWS/Lambda`` metrics. Locally nothing
does either, so ``mlayer invoke`` and ``run-local`` do both on the endpoint:

- :func:`emf_data`: the metric data of every EMF record in an invocation's stdout (namespace,
  every dimension set of every directive, values, units, the record's Timestamp). A record
  that breaks the EMF specification is ignored whole, with the reason, as CloudWatch Logs
  rejects it; the invocation is not affected.
- :func:`lambda_data`: ``Invocations``, ``Errors`` (1 when the invocation failed: an error
  response, a timeout, an init failure; else 0, so Average is the error rate) and
  ``Duration``, with the dimension sets ``[FunctionName]``, ``[FunctionName, Resource]``
  (invoked through an alias or version) and ``[FunctionName, Resource, ExecutedVersion]``
  (through an alias), as Lambda publishes them.
- :class:`MetricsPublisher`: :meth:`~MetricsPublisher.record` keeps each invocation as it
  ends (about 2 us on the lane); a background thread reads them and puts their data once a
  second (sooner after a backlog of :data:`WAKE_AFTER` invocations), grouped by namespace in
  requests within PutMetricData's limits (1,000 entries, 1 MB), and
  :meth:`~MetricsPublisher.close` puts the rest before the run returns. The points of one
  series (name, dimensions, unit) in the same second go as one entry's ``Values`` /
  ``Counts``, as PutMetricData takes them: the same statistics and percentiles, fewer
  entries.

Why so, measured on this machine (2 cores, moto_server on it too): one put_metric_data
costs about 4.5 ms for 1 datum, 12 ms for 100 and 83 ms for 1,000, nearly all of it
botocore's validation and serialization in the run's process, and moto_server spends
milliseconds of CPU on each request whatever its size; a warm invocation of the text model
costs a few ms. Reading a batch line and building its data costs about 130 us. Done on
the lanes, or put every 50 invocations, it cost a run of batches of 10 about a fifth of
its records/s (19 data points an invocation); done as above, the difference is within the
machine's noise (bench/stream_throughput.py ``--metrics both``). A canary bake polling
CloudWatch from another process still sees an invocation's metrics within about a second.

Why a failure never fails the run: metrics are a view of the run, not its output. A failed
put is counted, reported once through ``on_warning`` and in :class:`MetricsReport`; after
:data:`GIVE_UP_AFTER` failed requests in a row (an endpoint without CloudWatch, or one that
stopped answering) the rest are counted and dropped instead of costing a timeout each.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeGuard

from mlayer.arns import is_alias

LAMBDA_NAMESPACE = "AWS/Lambda"
MAX_DATA_PER_REQUEST = 1000  # PutMetricData: metrics per request (MetricData entries)
MAX_VALUES_PER_ENTRY = 150  # PutMetricData: distinct values in one entry's Values
# PutMetricData takes 1 MB per request; entries are counted by a pessimistic estimate of
# their encoded size (see _entries), and half of it leaves room for the rest.
MAX_REQUEST_BYTES = 512 * 1024
GIVE_UP_AFTER = 3  # failed requests in a row after which the rest of the run's data are dropped
# Invocations waiting that wake the publisher before its interval: a bound on memory only.
# Each put is a request moto_server spends milliseconds of CPU on whatever its size (it
# shares the machine with the run), and a second's data fit a request or two once merged.
WAKE_AFTER = 1000
SHOWN_REASONS = 5  # reasons for ignored EMF records that notes name (the most frequent)
# The EMF specification's limits.
MAX_DIMENSIONS = 30  # keys in one dimension set
MAX_METRICS = 100  # metric definitions in one directive
MAX_VALUES = 100  # values in one metric's array
# CloudWatch's units (botocore's StandardUnit).
UNITS = frozenset(
    (
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    )
)


class Datum(NamedTuple):
    """One metric data point of ``namespace`` (a tuple: a batch line makes about twenty,
    and a dataclass costs several times as much to create)."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # (name, value) pairs, in the directive's order
    value: float
    unit: str
    timestamp: float  # epoch seconds
    storage_resolution: int | None = None  # 1: high resolution; None: CloudWatch's 60


class _Invalid(ValueError):
    """Why an EMF record is not one CloudWatch would take."""


@dataclass
class Extracted:
    """The EMF records of some log text, as metric data."""

    data: list[Datum] = field(default_factory=list)
    records: int = 0  # EMF records turned into data
    ignored: list[str] = field(default_factory=list)  # why each other EMF record was ignored


def emf_data(text: str) -> Extracted:
    """The metric data of every EMF record among the lines of ``text``.

    A line is an EMF record when it is a JSON object with an ``_aws`` member; other lines
    are ignored (they are plain logs to CloudWatch too). A record that breaks the EMF
    specification is ignored whole, its reason kept (CloudWatch Logs extracts nothing from
    it either).
    """
    found = Extracted()
    for line in text.splitlines():
        if '"_aws"' not in line:  # cheap: most lines are not EMF
            continue
        try:
            root = json.loads(line)
        except (ValueError, RecursionError):  # not JSON (or nested past the parser's depth)
            continue
        if not isinstance(root, dict) or "_aws" not in root:
            continue
        try:
            found.data += _record_data(root)
        except _Invalid as exc:
            found.ignored.append(str(exc))
        else:
            found.records += 1
    return found


def _record_data(root: dict[str, Any]) -> list[Datum]:
    """The data of one EMF record, all or none.

    Raises:
        _Invalid: the first way the record breaks the specification.
    """
    meta = root["_aws"]
    if not isinstance(meta, dict):
        raise _Invalid("_aws is not an object")
    stamp = meta.get("Timestamp")
    if not _is_number(stamp):
        raise _Invalid("_aws.Timestamp is missing or not a number (epoch milliseconds)")
    timestamp = stamp / 1000.0
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        raise _Invalid("_aws.CloudWatchMetrics is missing or not a list")
    data: list[Datum] = []
    for i, directive in enumerate(directives):
        where = f"_aws.CloudWatchMetrics[{i}]"
        if not isinstance(directive, dict):
            raise _Invalid(f"{where} is not an object")
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str) or not 1 <= len(namespace) <= 255:
            raise _Invalid(f"{where}.Namespace is missing or not a string of 1-255 characters")
        dimension_sets = [
            _dimension_set(root, keys, f"{where}.Dimensions")
            for keys in _sets(directive, f"{where}.Dimensions")
        ]
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > MAX_METRICS:
            raise _Invalid(f"{where}.Metrics is missing or not a list of up to {MAX_METRICS}")
        for j, metric in enumerate(metrics):
            name, unit, resolution = _definition(metric, f"{where}.Metrics[{j}]")
            values = _values(root, name)
            for dimensions in dimension_sets:
                data += [
                    Datum(namespace, name, dimensions, v, unit, timestamp, resolution)
                    for v in values
                ]
    return data


def _sets(directive: dict[str, Any], where: str) -> list[Any]:
    sets = directive.get("Dimensions")
    if not isinstance(sets, list):
        raise _Invalid(f"{where} is missing or not a list")
    return sets or [[]]  # no dimension set: the metric without dimensions


def _dimension_set(root: dict[str, Any], keys: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(keys, list) or len(keys) > MAX_DIMENSIONS:
        raise _Invalid(f"{where} holds something other than lists of up to {MAX_DIMENSIONS} keys")
    pairs = []
    for key in keys:
        if not isinstance(key, str):
            raise _Invalid(f"{where} holds a dimension key that is not a string: {_short(key)}")
        value = root.get(key)
        if not isinstance(value, str) or not 1 <= len(value) <= 1024:
            raise _Invalid(
                f"dimension {key!r} has no value of 1-1024 characters in the record "
                f"(dimension values must be strings): {_short(value)}"
            )
        pairs.append((key, value))
    return tuple(pairs)


def _definition(metric: Any, where: str) -> tuple[str, str, int | None]:
    if not isinstance(metric, dict):
        raise _Invalid(f"{where} is not an object")
    name = metric.get("Name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise _Invalid(f"{where}.Name is missing or not a string of 1-255 characters")
    unit = metric.get("Unit", "None")
    if unit not in UNITS:
        raise _Invalid(f"{where}.Unit {_short(unit)} is not a CloudWatch unit")
    resolution = metric.get("StorageResolution")
    if resolution not in (None, 1, 60) or isinstance(resolution, bool):
        raise _Invalid(f"{where}.StorageResolution must be 1 or 60, not {_short(resolution)}")
    return name, str(unit), None if resolution in (None, 60) else 1


def _values(root: dict[str, Any], name: str) -> list[float]:
    value = root.get(name)
    items: list[Any] = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_VALUES or not all(_is_number(v) for v in items):
        raise _Invalid(
            f"metric {name!r} has no value in the record (a number, or a list of 1-{MAX_VALUES} "
            f"numbers): {_short(value)}"
        )
    values = [float(v) for v in items]
    if not all(math.isfinite(v) for v in values):
        raise _Invalid(f"metric {name!r} is not finite (CloudWatch takes no NaN or Infinity)")
    return values


def _short(value: Any) -> str:
    """A value as a reason quotes it: its repr, cut (reasons are counted and shown)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lambda_data(
    invocation: InvocationLike,
    *,
    function: str,
    qualifier: str | None,
    executed_version: str,
    timestamp: float,
) -> list[Datum]:
    """Lambda's own metrics of one invocation (``AWS/Lambda``), as Lambda publishes them.

    Args:
        function: the function's name.
        qualifier: the alias or version invoked (None: unqualified, ``$LATEST``).
        executed_version: the version that ran (an alias's primary or canary version).
    """
    dimension_sets: list[tuple[tuple[str, str], ...]] = [(("FunctionName", function),)]
    if qualifier:
        resource = ("Resource", f"{function}:{qualifier}")
        dimension_sets.append((("FunctionName", function), resource))
        if is_alias(qualifier):
            dimension_sets.append(
                (("FunctionName", function), resource, ("ExecutedVersion", executed_version))
            )
    report = invocation.report
    metrics = [
        ("Invocations", 1.0, "Count"),
        ("Errors", 0.0 if invocation.error is None else 1.0, "Count"),
    ]
    if report is not None:
        metrics.append(("Duration", float(report.duration_ms), "Milliseconds"))
    return [
        Datum(LAMBDA_NAMESPACE, name, dimensions, value, unit, timestamp)
        for name, value, unit in metrics
        for dimensions in dimension_sets
    ]


class InvocationLike(Protocol):
    """What is read of an invocation (mlayer.lambda_env.environment.Invocation fits)."""

    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def report(self) -> Any: ...  # mlayer.reports.Report
    @property
    def stdout(self) -> str: ...
    @property
    def init(self) -> Any: ...  # InitResult (its stdout) on a cold start, else None


@dataclass
class MetricsReport:
    """What the publisher did over a run."""

    put: int = 0  # data points the endpoint accepted
    failed: int = 0  # data points not put: refused, unanswered, or dropped after GIVE_UP_AFTER
    requests: int = 0  # PutMetricData calls that succeeded
    invocations: int = 0  # invocations recorded
    emf_records: int = 0  # EMF records turned into data
    ignored: Counter[str] = field(default_factory=Counter)  # EMF records ignored, by reason
    first_error: str | None = None
    gave_up: bool = False

    def notes(self) -> list[str]:
        """What a user should know: ignored records and failed puts, one line each."""
        reasons = self.ignored.most_common()
        notes = [
            f"{count} EMF record(s) ignored (CloudWatch would extract nothing from them): {why}"
            for why, count in reasons[:SHOWN_REASONS]
        ]
        if len(reasons) > SHOWN_REASONS:
            others = sum(count for _, count in reasons[SHOWN_REASONS:])
            notes.append(f"{others} more EMF record(s) ignored, for other reasons")
        if self.failed:
            notes.append(
                f"{self.failed:,} metric data point(s) could not be put to CloudWatch on the "
                f"endpoint (first error: {self.first_error})"
                + (
                    f"; after {GIVE_UP_AFTER} failed requests in a row the run stopped trying"
                    if self.gave_up
                    else ""
                )
                + ". The run itself was not affected"
            )
        return notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "put": self.put,
            "failed": self.failed,
            "requests": self.requests,
            "invocations": self.invocations,
            "emf_records": self.emf_records,
            "ignored": sum(self.ignored.values()),
            "ignored_reasons": dict(self.ignored.most_common(SHOWN_REASONS)),
            "first_error": self.first_error,
        }


class MetricsPublisher:
    """Puts each recorded invocation's metrics to CloudWatch, buffered, from one thread.

    Use as a context manager (or call :meth:`close`): leaving it puts what is buffered.
    :meth:`record` is thread-safe and costs the caller (a lane, between two invocations)
    next to nothing: it keeps the invocation and the time; reading its EMF records (about
    80 us for a batch line) and the puts happen in the background thread, or in :meth:`close`.

    Args:
        cloudwatch: a boto3 CloudWatch client (of the endpoint).
        function: the function's name; ``qualifier``: the alias or version invoked.
        flush_interval_s: the longest a datum waits in the buffer.
        on_warning: called once, from the thread that saw it, with the first failure.
    """

    def __init__(
        self,
        cloudwatch: Any,
        *,
        function: str,
        qualifier: str | None,
        flush_interval_s: float = 1.0,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.cloudwatch = cloudwatch
        self.function = function
        self.qualifier = qualifier
        self.flush_interval_s = flush_interval_s
        self.on_warning = on_warning
        self.report = MetricsReport()
        # Invocations recorded and not yet read: (invocation, executed version, when it ended)
        self._pending: list[tuple[InvocationLike, str, float]] = []
        self._lock = threading.Lock()  # the pending invocations and the report
        self._put_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures_in_a_row = 0
        self._warned = False

    def __enter__(self) -> MetricsPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlayer-metrics", daemon=True)
            self._thread.start()

    def record(self, invocation: InvocationLike, executed_version: str) -> None:
        """Buffer the metrics of one invocation (which just ended): its EMF records (the
        init's output too, on a cold start) and Lambda's own."""
        with self._lock:
            self.report.invocations += 1
            self._pending.append((invocation, executed_version, time.time()))
            full = len(self._pending) >= WAKE_AFTER
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Put everything buffered now (in the caller's thread)."""
        with self._put_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            data: list[Datum] = []
            for invocation, executed_version, ended in pending:
                text = invocation.stdout
                init_output = str(getattr(invocation.init, "stdout", "") or "")
                if init_output:
                    text = f"{init_output}\n{text}"
                found = emf_data(text)
                data += found.data
                data += lambda_data(
                    invocation,
                    function=self.function,
                    qualifier=self.qualifier,
                    executed_version=executed_version,
                    timestamp=ended,
                )
                with self._lock:
                    self.report.emf_records += found.records
                    self.report.ignored.update(found.ignored)
            for namespace, chunk in _requests(_entries(data)):
                self._put(namespace, chunk)

    def close(self) -> MetricsReport:
        """Stop the thread and put what is left; returns the report."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        return self.report

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                return  # close() puts the rest
            self.flush()

    def _put(self, namespace: str, chunk: list[_Entry]) -> None:
        points = sum(entry.points for entry in chunk)
        if self._failures_in_a_row >= GIVE_UP_AFTER:
            with self._lock:
                self.report.failed += points
            return
        try:
            self.cloudwatch.put_metric_data(
                Namespace=namespace, MetricData=[entry.request for entry in chunk]
            )
        except Exception as exc:  # never fails the run: counted, reported once
            self._failures_in_a_row += 1
            message = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.report.failed += points
                self.report.first_error = self.report.first_error or message
                self.report.gave_up = self._failures_in_a_row >= GIVE_UP_AFTER
            if not self._warned and self.on_warning is not None:
                self._warned = True
                self.on_warning(
                    f"could not put metrics to CloudWatch on the endpoint ({message}); the run "
                    "goes on, and the summary counts the data points lost"
                )
            return
        self._failures_in_a_row = 0
        with self._lock:
            self.report.put += points
            self.report.requests += 1


@dataclass(frozen=True)
class _Entry:
    """One PutMetricData ``MetricData`` entry."""

    request: dict[str, Any]
    points: int  # data points it carries (the sum of its Counts)
    size: int  # a pessimistic estimate of its bytes in a request


def _entries(data: Iterable[Datum]) -> dict[str, list[_Entry]]:
    """The data as entries, per namespace: the points of one series (name, dimensions, unit,
    resolution) in the same second merged into one entry's Values / Counts (at most
    MAX_VALUES_PER_ENTRY distinct values an entry), in the order the series first came."""
    series: dict[tuple[Any, ...], Counter[float]] = {}
    for d in data:
        key = (d.namespace, d.name, d.dimensions, d.unit, d.storage_resolution, int(d.timestamp))
        series.setdefault(key, Counter())[d.value] += 1
    entries: dict[str, list[_Entry]] = {}
    for (namespace, name, dimensions, unit, resolution, second), counts in series.items():
        values = sorted(counts)
        text = len(name) + sum(len(n) + len(v) for n, v in dimensions)
        for start in range(0, len(values), MAX_VALUES_PER_ENTRY):
            chunk = values[start : start + MAX_VALUES_PER_ENTRY]
            request: dict[str, Any] = {
                "MetricName": name,
                "Dimensions": [{"Name": n, "Value": v} for n, v in dimensions],
                "Values": chunk,
                "Counts": [float(counts[v]) for v in chunk],
                "Unit": unit,
                "Timestamp": datetime.fromtimestamp(second, UTC),
            }
            if resolution is not None:
                request["StorageResolution"] = resolution
            # Query protocol, every character percent-encoded to 3 bytes, plus member names
            # and numbers: an overestimate for the JSON and CBOR protocols.
            size = 3 * text + 200 + 60 * len(dimensions) + 60 * len(chunk)
            points = sum(counts[v] for v in chunk)
            entries.setdefault(namespace, []).append(_Entry(request, points, size))
    return entries


def _requests(entries: dict[str, list[_Entry]]) -> Iterator[tuple[str, list[_Entry]]]:
    """The entries as PutMetricData requests: one namespace each, within the API's limits."""
    for namespace, items in entries.items():
        chunk: list[_Entry] = []
        size = 0
        for entry in items:
            if chunk and (
                len(chunk) >= MAX_DATA_PER_REQUEST or size + entry.size > MAX_REQUEST_BYTES
            ):
                yield namespace, chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += entry.size
        if chunk:
            yield namespace, chunk
