"""The cost model behind ``mlayer cost``: what Lambda bills for scoring records in batches.

All money is USD, computed with :class:`~decimal.Decimal` so that figures are exact and the
same on every machine. Prices come from :mod:`mlayer.prices` (``prices.json``, per region
and architecture, with their date and sources, unless overridden); REPORT lines are read by
:mod:`mlayer.reports`, which also holds :func:`~mlayer.reports.billed_ms`, the one rounding
of a duration to what Lambda bills.

Per invocation
--------------
An invocation that scores ``k`` records, with ``M`` MB of memory and ``S`` MB of ephemeral
storage, is billed (the formula of https://aws.amazon.com/lambda/pricing/)::

    d(k)     = duration_ms + duration_per_record_ms * k        warm handler time
    billed   = d(k) rounded up to the granularity               1 ms today, 100 ms before 2020-12
    compute  = M/1024 GB * price_gb_s * billed/1000 s
    storage  = (S/1024 - 0.5) GB * storage_price * billed/1000 s   0 at the default 512 MB
    requests = requests_per_million / 1,000,000                 0 with --no-requests
    init     = (M/1024 * price_gb_s + (S/1024 - 0.5) * storage_price)
               * billed(init_ms)/1000 / N                        cold start, shared by the N
                                                                 invocations of one environment
    total    = compute + storage + requests + init

The INIT phase of zip functions is billed since 2025-08-01, so a cold start costs its init
duration at the function's memory; ``--invocations-per-environment N`` spreads it over the
invocations an execution environment serves before it is recycled.

Duration and batch size
-----------------------
``--duration-ms`` is the time of one invocation *whatever its batch size*. That is the
assumption of the published spreadsheets: a 192 MB function running 4 s per invocation at
batch 1, 10 and 100 costs $0.0000125 an invocation (at 100 ms granularity, $0.000000313 per
100 ms step, rounded), so a 50,000-record ingest costs $0.625 / $0.0625 / $0.00625. It
holds when an invocation's fixed work dominates. Real batches take longer the more records
they carry: ``--duration-per-record-ms`` adds that part, so ``d(k)`` grows with ``k`` and
large batches price correctly. The two combine (fit them from two measured batch sizes:
per_record = (d2 - d1) / (k2 - k1), fixed = d1 - per_record * k1).

An ingest of ``R`` records at batch size ``b`` is ``R // b`` invocations of ``b`` records plus
one of ``R % b`` records when that is not 0. Per-record figures are the ingest's cost divided
by ``R`` (without ``--records``: one invocation's cost divided by ``b``).

Filters
-------
With ``--filtered-share f`` (the trigger's ``FilterCriteria`` drop that share of the records,
e.g. as ``run-local`` counted it), only ``R' = R - floor(f * R)`` records of an ingest reach
the function: Lambda filters before batching, so an ingest is ``R' // b`` full invocations
plus one of ``R' % b``, and the month's invocations and invoked records scale down with it.
Filtered records cost nothing here (no invocation, no duration); per-record figures stay
per record written to the stream (the ingest's cost divided by ``R``).

Tiers and free tier
-------------------
Per-invocation, per-record and per-ingest figures use the first-tier duration price (what
the month's first GB-s cost). Monthly figures (``--ingests-per-month``) add up the month's
GB-s (warm and init) and price them across the tiers: x86_64 changes price at 6 B and 15 B
GB-s, arm64 at 7.5 B and 18.75 B. With ``--free-tier`` the month's first 400,000 GB-s and
first 1 M requests are free (the tiers still count the free GB-s; ephemeral storage has no
free tier). The free tier is per account and shared by every function: give it only when
this pipeline is the account's only Lambda use.

Comparisons and break-even
--------------------------
* ``--compare-hourly P``: an always-on endpoint at ``P`` an hour, ``hours_per_month`` hours a
  month (720: a 30-day month, so $0.07 gives $50.40). Break-even: the monthly volume at
  which Lambda's monthly bill (tiers and free tier included) equals it; Lambda is cheaper
  below it.
* ``--compare-per-second P``: a service billed per second of inference only (SageMaker
  Serverless Inference: $0.00008 a second at 4 GB). It is assumed to spend the same billed
  warm duration per invocation as Lambda, with no request fee, no charge for cold starts and
  no free tier: ``P * billed(d(b)) / 1000`` per invocation. Both bills grow linearly with
  volume, so they cross only where the free tier or the tiers bend Lambda's; otherwise the
  entry says which one is cheaper at every volume.

Break-even volumes are given in ingests a month (with ``--records``), records and
invocations a month, per batch size. Solved exactly: the monthly bill is piecewise linear
in volume, with breaks where the free tier runs out and at the tier boundaries.

Measured runs
-------------
From ``REPORT`` lines (read by :mod:`mlayer.reports` from a file of the local runner, a
CloudWatch Logs export, or CloudWatch Logs itself) each invocation is priced as billed: its ``Billed Duration``
(re-rounded from ``Duration`` when ``--granularity-ms`` is not 1) plus, on a cold start, its
``Init Duration``; since 2025-08-01 Lambda's own ``Billed Duration`` already includes the
init on a cold start, which is recognised (billed >= duration + init) and not counted twice.
Invocations are grouped by ``Memory Size``; each group gives p50 / p99 / mean (nearest-rank
percentiles) of duration, billed duration, init duration and cost, and feeds the model with
its mean billed warm duration, mean billed init duration and measured invocations per cold
start, so the model's per-invocation cost equals the measured mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import pairwise
from typing import Any

from mlayer.errors import ConfigError, NotFoundError
from mlayer.prices import Prices
from mlayer.reports import Report, billed_ms

ZERO = Decimal(0)
ONE = Decimal(1)
MB_PER_GB = Decimal(1024)
MS_PER_S = Decimal(1000)
BASE_STORAGE_MB = 512
MIN_STORAGE_MB = 512
MAX_STORAGE_MB = 10_240
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
TIMEOUT_MS = Decimal(900_000)
DEFAULT_HOURS_PER_MONTH = Decimal(720)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Workload:
    """What one memory size runs: durations in ms, cold starts.

    ``measured``: the durations are already billed (means of REPORT lines' billed
    durations), so they are not rounded to the granularity again.
    """

    memory_mb: int
    duration_ms: Decimal = ZERO
    duration_per_record_ms: Decimal = ZERO
    init_ms: Decimal = ZERO
    invocations_per_environment: Decimal = ONE
    measured: bool = False

    def warm_ms(self, records: int) -> Decimal:
        """Unrounded warm duration of an invocation of ``records`` records."""
        return self.duration_ms + self.duration_per_record_ms * records


@dataclass(frozen=True)
class Scenario:
    """Everything about the pipeline and the question asked that is not per memory size."""

    storage_mb: int = BASE_STORAGE_MB
    granularity_ms: int = 1
    requests: bool = True
    free_tier: bool = False
    records: int | None = None
    batch_sizes: tuple[int, ...] = (1,)
    ingests_per_month: Decimal | None = None
    compare_hourly: Decimal | None = None
    compare_per_second: Decimal | None = None
    hours_per_month: Decimal = DEFAULT_HOURS_PER_MONTH
    filtered_share: Decimal = ZERO  # of the records, dropped by FilterCriteria before batching

    def invoked(self, records: int) -> int:
        """How many of ``records`` written to the stream reach the function (the rest are
        filtered; rounded so that invocations are never under-counted)."""
        return records - int(self.filtered_share * records)


# --------------------------------------------------------------------------- usage and cost


@dataclass(frozen=True)
class Usage:
    """What Lambda meters: GB-s of duration and of extra storage, requests, billed seconds."""

    warm_gb_s: Decimal = ZERO
    init_gb_s: Decimal = ZERO
    warm_storage_gb_s: Decimal = ZERO
    init_storage_gb_s: Decimal = ZERO
    requests: Decimal = ZERO
    warm_seconds: Decimal = ZERO

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.warm_gb_s + other.warm_gb_s,
            self.init_gb_s + other.init_gb_s,
            self.warm_storage_gb_s + other.warm_storage_gb_s,
            self.init_storage_gb_s + other.init_storage_gb_s,
            self.requests + other.requests,
            self.warm_seconds + other.warm_seconds,
        )

    def scale(self, factor: Decimal) -> Usage:
        return Usage(
            self.warm_gb_s * factor,
            self.init_gb_s * factor,
            self.warm_storage_gb_s * factor,
            self.init_storage_gb_s * factor,
            self.requests * factor,
            self.warm_seconds * factor,
        )

    @property
    def gb_s(self) -> Decimal:
        return self.warm_gb_s + self.init_gb_s

    @property
    def storage_gb_s(self) -> Decimal:
        return self.warm_storage_gb_s + self.init_storage_gb_s


def usage(
    memory_mb: int,
    storage_mb: int,
    warm_billed_ms: Decimal,
    init_billed_ms: Decimal,
    requests: Decimal,
) -> Usage:
    """The metered usage of one invocation (``init_billed_ms`` already amortized)."""
    memory_gb = Decimal(memory_mb) / MB_PER_GB
    extra_storage_gb = Decimal(storage_mb - BASE_STORAGE_MB) / MB_PER_GB
    warm_s = warm_billed_ms / MS_PER_S
    init_s = init_billed_ms / MS_PER_S
    return Usage(
        warm_gb_s=memory_gb * warm_s,
        init_gb_s=memory_gb * init_s,
        warm_storage_gb_s=extra_storage_gb * warm_s,
        init_storage_gb_s=extra_storage_gb * init_s,
        requests=requests,
        warm_seconds=warm_s,
    )


@dataclass(frozen=True)
class Breakdown:
    """A cost split by what Lambda bills, at first-tier prices and without free tier."""

    compute: Decimal
    init: Decimal
    storage: Decimal
    requests: Decimal

    @property
    def total(self) -> Decimal:
        return self.compute + self.init + self.storage + self.requests

    @classmethod
    def of(cls, use: Usage, prices: Prices) -> Breakdown:
        return cls(
            compute=use.warm_gb_s * prices.first_tier_gb_s,
            init=use.init_gb_s * prices.first_tier_gb_s
            + use.init_storage_gb_s * prices.storage_gb_s,
            storage=use.warm_storage_gb_s * prices.storage_gb_s,
            requests=use.requests * prices.request_price,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "compute": float(self.compute),
            "init": float(self.init),
            "storage": float(self.storage),
            "requests": float(self.requests),
            "total": float(self.total),
        }


@dataclass(frozen=True)
class Monthly:
    """A month's bill: the month's usage priced across the tiers, after the free tier."""

    ingests: Decimal
    invocations: Decimal
    records: Decimal  # records invoked (written to the stream, less those filtered)
    gb_s: Decimal
    compute: Decimal
    storage: Decimal
    requests: Decimal
    free_gb_s: Decimal
    free_requests: Decimal
    filtered: Decimal = ZERO  # records dropped by FilterCriteria, never invoked

    @property
    def total(self) -> Decimal:
        return self.compute + self.storage + self.requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingests": float(self.ingests),
            "invocations": float(self.invocations),
            "records": float(self.records),
            "filtered_records": float(self.filtered),
            "gb_s": float(self.gb_s),
            "compute": float(self.compute),
            "storage": float(self.storage),
            "requests": float(self.requests),
            "total": float(self.total),
            "free_tier": {"gb_s": float(self.free_gb_s), "requests": float(self.free_requests)},
        }


def monthly_cost(
    unit: Usage, units: Decimal, prices: Prices, *, free_tier: bool
) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """(compute, storage, requests, free GB-s used, free requests used) for ``units`` units."""
    gb_s = unit.gb_s * units
    requests = unit.requests * units
    free_gb_s = prices.free_gb_s if free_tier else ZERO
    free_requests = prices.free_requests if free_tier else ZERO
    compute = prices.duration_cost(gb_s, free_gb_s)
    storage = unit.storage_gb_s * units * prices.storage_gb_s
    request_cost = max(ZERO, requests - free_requests) * prices.request_price
    return compute, storage, request_cost, min(gb_s, free_gb_s), min(requests, free_requests)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BatchCost:
    """The cost at one batch size."""

    batch_size: int
    duration_ms: Decimal
    billed_ms: Decimal
    per_invocation: Breakdown
    per_record: Decimal
    invocations_per_ingest: int | None
    cost_per_ingest: Decimal | None
    monthly: Monthly | None
    unit: Usage = field(repr=False)
    unit_invocations: int = field(repr=False, default=1)
    unit_records: int = field(repr=False, default=1)

    @property
    def per_1000_records(self) -> Decimal:
        return self.per_record * 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "duration_ms": float(self.duration_ms),
            "billed_duration_ms": float(self.billed_ms),
            "invocations_per_ingest": self.invocations_per_ingest,
            "per_invocation": self.per_invocation.to_dict(),
            "per_record": float(self.per_record),
            "per_1000_records": float(self.per_1000_records),
            "cost_per_ingest": None
            if self.cost_per_ingest is None
            else float(self.cost_per_ingest),
            "monthly": None if self.monthly is None else self.monthly.to_dict(),
        }


@dataclass(frozen=True)
class BreakEven:
    """Where Lambda's monthly bill meets an alternative's, at one batch size."""

    comparison: str  # "hourly" | "per_second"
    price_usd: Decimal
    batch_size: int
    alternative_monthly_usd: Decimal | None
    alternative_per_ingest: Decimal | None
    alternative_per_record: Decimal | None
    ingests_per_month: Decimal | None
    records_per_month: Decimal | None
    invocations_per_month: Decimal | None
    lambda_cheaper: str  # "below" | "above" the break-even volume, "always", "never", "equal"

    def to_dict(self) -> dict[str, Any]:
        def num(value: Decimal | None) -> float | None:
            return None if value is None else float(value)

        return {
            "comparison": self.comparison,
            "price_usd": float(self.price_usd),
            "batch_size": self.batch_size,
            "alternative_monthly_usd": num(self.alternative_monthly_usd),
            "alternative_per_ingest": num(self.alternative_per_ingest),
            "alternative_per_record": num(self.alternative_per_record),
            "ingests_per_month": num(self.ingests_per_month),
            "records_per_month": num(self.records_per_month),
            "invocations_per_month": num(self.invocations_per_month),
            "lambda_cheaper": self.lambda_cheaper,
        }


@dataclass(frozen=True)
class Stats:
    """A distribution: nearest-rank p50 and p99, mean, min, max."""

    p50: Decimal
    p99: Decimal
    mean: Decimal
    min: Decimal
    max: Decimal
    count: int

    @classmethod
    def of(cls, values: Sequence[Decimal]) -> Stats:
        ordered = sorted(values)
        n = len(ordered)

        def rank(p: int) -> Decimal:
            return ordered[max(0, math.ceil(p * n / 100) - 1)]

        return cls(rank(50), rank(99), sum(ordered, ZERO) / n, ordered[0], ordered[-1], n)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "p50": float(self.p50),
            "p99": float(self.p99),
            "mean": float(self.mean),
            "min": float(self.min),
            "max": float(self.max),
            "count": self.count,
        }


@dataclass(frozen=True)
class Measured:
    """What the REPORT lines of one memory size say, priced invocation by invocation."""

    memory_mb: int
    invocations: int
    cold_starts: int
    init_in_billed: int
    duration_ms: Stats
    billed_ms: Stats
    init_ms: Stats | None
    cost: Stats
    total: Decimal
    # SnapStart: environments restored from a snapshot, their Billed Restore Duration (in
    # their Billed Duration, priced as duration) and the per-GB restore charge on top.
    restores: int = 0
    billed_restore_ms: Stats | None = None
    restore_charge: Decimal = ZERO

    def to_dict(self) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "cold_starts": self.cold_starts,
            "cold_starts_with_init_in_billed_duration": self.init_in_billed,
            "duration_ms": self.duration_ms.to_dict(),
            "billed_duration_ms": self.billed_ms.to_dict(),
            "init_duration_ms": None if self.init_ms is None else self.init_ms.to_dict(),
            "restores": self.restores,
            "billed_restore_duration_ms": None
            if self.billed_restore_ms is None
            else self.billed_restore_ms.to_dict(),
            "restore_charge": float(self.restore_charge),
            "cost_per_invocation": self.cost.to_dict(),
            "total": float(self.total),
        }


@dataclass(frozen=True)
class MemoryCost:
    """The whole answer for one memory size."""

    workload: Workload
    price_per_step: Decimal
    batches: tuple[BatchCost, ...]
    break_even: tuple[BreakEven, ...]
    measured: Measured | None = None
    cheapest: bool = False

    @property
    def first(self) -> BatchCost:
        return self.batches[0]

    @property
    def cold_start(self) -> Decimal:
        """What one cold start's init costs (memory and ephemeral storage over 512 MB for its
        billed duration), before it is shared among the environment's invocations."""
        return self.first.per_invocation.init * self.workload.invocations_per_environment

    def to_dict(self) -> dict[str, Any]:
        w = self.workload
        return {
            "memory_mb": w.memory_mb,
            "cold_start": float(self.cold_start),
            "duration_ms": float(w.duration_ms),
            "duration_per_record_ms": float(w.duration_per_record_ms),
            "init_ms": float(w.init_ms),
            "invocations_per_environment": float(w.invocations_per_environment),
            "cheapest": self.cheapest,
            "price_per_step": float(self.price_per_step),
            "per_invocation": self.first.per_invocation.to_dict(),
            "per_record": float(self.first.per_record),
            "per_1000_records": float(self.first.per_1000_records),
            "batches": [b.to_dict() for b in self.batches],
            "monthly": None if self.first.monthly is None else self.first.monthly.to_dict(),
            "break_even": [b.to_dict() for b in self.break_even],
            "measured": None if self.measured is None else self.measured.to_dict(),
        }


@dataclass(frozen=True)
class Estimate:
    """Every memory size's cost; ``best`` is the cheapest (per record at the first batch size)."""

    prices: Prices
    scenario: Scenario
    rows: tuple[MemoryCost, ...]
    notes: tuple[str, ...] = ()
    source: str = "parameters"  # or "report file <path>" / "CloudWatch Logs <group>"

    @property
    def best(self) -> MemoryCost:
        return next(row for row in self.rows if row.cheapest)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``mlayer cost --json``: the cheapest memory size at the top level."""
        s = self.scenario
        return {
            "region": self.prices.region,
            "arch": self.prices.arch,
            "source": self.source,
            **self.best.to_dict(),
            "assumptions": {
                "storage_mb": s.storage_mb,
                "granularity_ms": s.granularity_ms,
                "requests": s.requests,
                "free_tier": s.free_tier,
                "records": s.records,
                "batch_sizes": list(s.batch_sizes),
                "ingests_per_month": None
                if s.ingests_per_month is None
                else float(s.ingests_per_month),
                "hours_per_month": float(s.hours_per_month),
                "filtered_share": float(s.filtered_share),
                "compare_hourly": None if s.compare_hourly is None else float(s.compare_hourly),
                "compare_per_second": None
                if s.compare_per_second is None
                else float(s.compare_per_second),
            },
            "prices": self.prices.to_dict(),
            "memory_sizes": [row.to_dict() for row in self.rows],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- the model


def _invocation(
    workload: Workload, scenario: Scenario, records: int
) -> tuple[Decimal, Decimal, Usage]:
    """(warm duration, billed warm duration, usage) of one invocation of ``records`` records."""
    warm = workload.warm_ms(records)
    if warm > TIMEOUT_MS:
        raise ConfigError(
            f"an invocation of {records} record(s) at {workload.memory_mb} MB would run "
            f"{warm:,.0f} ms, over Lambda's 900,000 ms (15 min) timeout; use a smaller "
            "--batch-size or more --memory"
        )
    if workload.measured:
        warm_billed = warm
        init_billed = workload.init_ms
    else:
        warm_billed = Decimal(billed_ms(warm, scenario.granularity_ms))
        init_billed = (
            Decimal(billed_ms(workload.init_ms, scenario.granularity_ms))
            if workload.init_ms > 0
            else ZERO
        )
    use = usage(
        workload.memory_mb,
        scenario.storage_mb,
        warm_billed,
        init_billed / workload.invocations_per_environment,
        ONE if scenario.requests else ZERO,
    )
    return warm, warm_billed, use


def _batch_cost(
    workload: Workload, scenario: Scenario, prices: Prices, batch_size: int
) -> BatchCost:
    warm, warm_billed, full = _invocation(workload, scenario, batch_size)
    per_invocation = Breakdown.of(full, prices)
    records = scenario.records
    if records is None:
        # Without --records the unit of volume is one full invocation.
        return BatchCost(
            batch_size=batch_size,
            duration_ms=warm,
            billed_ms=warm_billed,
            per_invocation=per_invocation,
            per_record=per_invocation.total / batch_size,
            invocations_per_ingest=None,
            cost_per_ingest=None,
            monthly=None,
            unit=full,
            unit_invocations=1,
            unit_records=batch_size,
        )
    invoked = scenario.invoked(records)
    whole, rest = divmod(invoked, batch_size)
    unit = full.scale(Decimal(whole))
    if rest:
        unit = unit + _invocation(workload, scenario, rest)[2]
    invocations = whole + (1 if rest else 0)
    per_ingest = Breakdown.of(unit, prices).total
    monthly = None
    if scenario.ingests_per_month is not None:
        ingests = scenario.ingests_per_month
        compute, storage, requests, free_gb_s, free_requests = monthly_cost(
            unit, ingests, prices, free_tier=scenario.free_tier
        )
        monthly = Monthly(
            ingests=ingests,
            invocations=ingests * invocations,
            records=ingests * invoked,
            filtered=ingests * (records - invoked),
            gb_s=unit.gb_s * ingests,
            compute=compute,
            storage=storage,
            requests=requests,
            free_gb_s=free_gb_s,
            free_requests=free_requests,
        )
    return BatchCost(
        batch_size=batch_size,
        duration_ms=warm,
        billed_ms=warm_billed,
        per_invocation=per_invocation,
        per_record=per_ingest / records,
        invocations_per_ingest=invocations,
        cost_per_ingest=per_ingest,
        monthly=monthly,
        unit=unit,
        unit_invocations=invocations,
        unit_records=records,
    )


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def solve_crossing(
    f: Callable[[Decimal], Decimal], breakpoints: Iterable[Decimal]
) -> tuple[Decimal | None, str]:
    """The first volume x > 0 where the piecewise-linear ``f`` (Lambda minus alternative) is 0.

    ``f`` must be linear between ``breakpoints`` and beyond the last one. Returns the volume
    (None when there is none) and where Lambda is cheaper: "below" / "above" the volume, or
    "always" / "never" / "equal" when there is no crossing.
    """
    xs = sorted({ZERO, *(b for b in breakpoints if b > 0)})
    values = [f(x) for x in xs]
    for (x0, f0), (x1, f1) in pairwise(zip(xs, values, strict=True)):
        if (f0 < 0 < f1) or (f0 > 0 > f1) or (f1 == 0 and f0 != 0):
            root = x0 + (x1 - x0) * (-f0) / (f1 - f0)
            return root, "below" if f0 < 0 else "above"
    last_x, last_f = xs[-1], values[-1]
    slope = f(last_x + 1) - last_f
    if _sign(last_f) * _sign(slope) < 0:
        return last_x - last_f / slope, "below" if last_f < 0 else "above"
    # No crossing: f keeps one sign on (0, inf); look just past the last point.
    beyond = _sign(f(last_x + 1))
    return None, {-1: "always", 1: "never", 0: "equal"}[beyond]


def _break_even(
    batch: BatchCost, scenario: Scenario, prices: Prices, comparison: str, price: Decimal
) -> BreakEven:
    unit = batch.unit
    alt_monthly: Decimal | None = None
    alt_per_unit = ZERO
    if comparison == "hourly":
        alt_monthly = price * scenario.hours_per_month
    else:
        alt_per_unit = price * unit.warm_seconds

    def lambda_total(x: Decimal) -> Decimal:
        compute, storage, requests, _, _ = monthly_cost(
            unit, x, prices, free_tier=scenario.free_tier
        )
        return compute + storage + requests

    def difference(x: Decimal) -> Decimal:
        alternative = alt_monthly if alt_monthly is not None else alt_per_unit * x
        return lambda_total(x) - alternative

    points: list[Decimal] = []
    if unit.gb_s > 0:
        edges = list(prices.tier_boundaries)
        if scenario.free_tier:
            edges.append(prices.free_gb_s)
        points += [edge / unit.gb_s for edge in edges]
    if scenario.free_tier and unit.requests > 0:
        points.append(prices.free_requests / unit.requests)
    volume, cheaper = solve_crossing(difference, points)
    has_ingests = scenario.records is not None
    return BreakEven(
        comparison=comparison,
        price_usd=price,
        batch_size=batch.batch_size,
        alternative_monthly_usd=alt_monthly,
        alternative_per_ingest=alt_per_unit if comparison == "per_second" and has_ingests else None,
        alternative_per_record=alt_per_unit / batch.unit_records
        if comparison == "per_second"
        else None,
        ingests_per_month=volume if has_ingests else None,
        records_per_month=None if volume is None else volume * batch.unit_records,
        invocations_per_month=None if volume is None else volume * batch.unit_invocations,
        lambda_cheaper=cheaper,
    )


def _memory_cost(
    workload: Workload, scenario: Scenario, prices: Prices, measured: Measured | None = None
) -> MemoryCost:
    batches = tuple(_batch_cost(workload, scenario, prices, b) for b in scenario.batch_sizes)
    comparisons = [
        (name, price)
        for name, price in (
            ("hourly", scenario.compare_hourly),
            ("per_second", scenario.compare_per_second),
        )
        if price is not None
    ]
    break_even = tuple(
        _break_even(batch, scenario, prices, name, price)
        for name, price in comparisons
        for batch in batches
    )
    step = (
        Decimal(workload.memory_mb)
        / MB_PER_GB
        * prices.first_tier_gb_s
        * Decimal(scenario.granularity_ms)
        / MS_PER_S
    )
    return MemoryCost(workload, step, batches, break_even, measured)


def _validate(workloads: Sequence[Workload], scenario: Scenario) -> None:
    if not workloads:
        raise ConfigError("nothing to price: give --memory with --duration-ms, or --from-report")
    if not MIN_STORAGE_MB <= scenario.storage_mb <= MAX_STORAGE_MB:
        raise ConfigError(
            f"ephemeral storage {scenario.storage_mb} MB is outside Lambda's "
            f"{MIN_STORAGE_MB}-{MAX_STORAGE_MB} MB; fix --storage-mb"
        )
    for w in workloads:
        if not MIN_MEMORY_MB <= w.memory_mb <= MAX_MEMORY_MB:
            raise ConfigError(
                f"memory {w.memory_mb} MB is outside Lambda's {MIN_MEMORY_MB}-{MAX_MEMORY_MB} MB"
            )
        if w.duration_ms <= 0 and w.duration_per_record_ms <= 0:
            raise ConfigError(
                f"no duration for {w.memory_mb} MB: give --duration-ms and/or "
                "--duration-per-record-ms"
            )
        if w.invocations_per_environment <= 0:
            raise ConfigError("--invocations-per-environment must be at least 1")
    if scenario.ingests_per_month is not None and scenario.records is None:
        raise ConfigError(
            "--ingests-per-month needs --records (the records in one ingest) to know the "
            "month's volume"
        )
    if not ZERO <= scenario.filtered_share < ONE:
        raise ConfigError(
            f"--filtered-share {scenario.filtered_share} must be from 0 to below 1 (the share "
            "of records the trigger's filters drop)"
        )
    if scenario.filtered_share and scenario.records is None:
        raise ConfigError(
            "--filtered-share needs --records (the records written to the stream in one "
            "ingest): filtered records never join a batch, so the share changes how many "
            "invocations an ingest takes, not the cost of one"
        )


def estimate(
    prices: Prices,
    scenario: Scenario,
    workloads: Sequence[Workload],
    *,
    measured: Sequence[Measured | None] = (),
    notes: Sequence[str] = (),
    source: str = "parameters",
) -> Estimate:
    """Price every workload (one per memory size) under ``scenario``; mark the cheapest.

    Raises:
        ConfigError: an input outside Lambda's limits (memory, storage, timeout) or missing.
    """
    _validate(workloads, scenario)
    extra = list(notes)
    if (
        scenario.free_tier
        and scenario.ingests_per_month is None
        and scenario.compare_hourly is None
        and scenario.compare_per_second is None
    ):
        extra.append(
            "the free tier applies to a month's totals: pass --ingests-per-month (or a "
            "comparison) to apply it; per-invocation figures never include it"
        )
    if scenario.filtered_share and scenario.records is not None:
        invoked = scenario.invoked(scenario.records)
        extra.append(
            f"filters drop {float(scenario.filtered_share):.1%} of the records before batching: "
            f"{invoked:,} of the {scenario.records:,} records of an ingest reach the function "
            f"({scenario.records - invoked:,} filtered, never invoked nor billed); per-record "
            "figures are per record written to the stream"
        )
    rows = [
        _memory_cost(w, scenario, prices, measured[i] if i < len(measured) else None)
        for i, w in enumerate(workloads)
    ]
    cheapest = min(range(len(rows)), key=lambda i: rows[i].first.per_record)
    rows[cheapest] = replace(rows[cheapest], cheapest=True)
    return Estimate(prices, scenario, tuple(rows), tuple(extra), source)


# --------------------------------------------------------------------------- measurements


def _decimal_of(value: float) -> Decimal:
    # Through str: 12.34 stays 12.34 instead of its binary approximation.
    return Decimal(str(value))


def _init_in_billed(duration: Decimal, init: Decimal, lambda_billed: Decimal) -> bool:
    """Whether a cold start's Billed Duration already covers its init (Lambda since 2025-08-01).

    Exact at 1 ms billing (a handler-only figure is below duration + init by at least 1 ms
    once init is 1 ms or more). A line from the 100 ms era, when init was not billed, rounds
    the handler alone up to 100 ms, and that slack can exceed a short init: not included.
    """
    if lambda_billed < billed_ms(duration + init):
        return False
    return lambda_billed != billed_ms(duration, 100)


def measure(
    reports: Sequence[Report],
    prices: Prices,
    scenario: Scenario,
    memory_mb: int,
    restore_gb_price: Decimal | None = None,
) -> tuple[Measured, Workload]:
    """Price the REPORTs of one memory size as billed, and the workload they imply.

    The workload's duration is the mean billed warm duration, its init the mean billed
    init (or restore) duration, its invocations per environment invocations / new
    environments. A SnapStart restore (``Restore Duration`` on the REPORT) is billed its
    ``Billed Restore Duration`` at the duration price (Lambda's ``Billed Duration`` already
    includes it: taken out of the warm part, not counted twice) plus ``restore_gb_price``
    per GB of memory.

    Raises:
        ConfigError: restores to price and no ``restore_gb_price``.
    """
    durations: list[Decimal] = []
    warm_billed: list[Decimal] = []
    inits: list[Decimal] = []
    restores: list[Decimal] = []
    costs: list[Decimal] = []
    init_in_billed = 0
    restore_charge = ZERO
    step = scenario.granularity_ms
    for report in reports:
        duration = _decimal_of(report.duration_ms)
        init = None if report.init_duration_ms is None else _decimal_of(report.init_duration_ms)
        lambda_billed = Decimal(report.billed_duration_ms)
        if report.restore_duration_ms is not None:
            if restore_gb_price is None:
                raise ConfigError(
                    "the REPORT lines have SnapStart restores (Restore Duration) and no "
                    "restore price was given: pass --prices FILE with "
                    "regions.<region>.snapstart.restore_gb"
                )
            restore_part = Decimal(report.billed_restore_duration_ms or 0)
            warm = Decimal(billed_ms(duration, step))
            if step == 1 and lambda_billed >= warm + restore_part:
                warm = lambda_billed - restore_part
            charge = Decimal(memory_mb) / MB_PER_GB * restore_gb_price
            restore_charge += charge
            restores.append(restore_part)
            durations.append(duration)
            warm_billed.append(warm)
            use = usage(
                memory_mb,
                scenario.storage_mb,
                warm,
                restore_part,
                ONE if scenario.requests else ZERO,
            )
            costs.append(Breakdown.of(use, prices).total + charge)
            continue
        if init is not None and _init_in_billed(duration, init, lambda_billed):
            init_in_billed += 1
            warm = Decimal(billed_ms(duration, step))
            init_part = (
                lambda_billed - billed_ms(duration) if step == 1 else Decimal(billed_ms(init, step))
            )
        else:
            warm = lambda_billed if step == 1 else Decimal(billed_ms(duration, step))
            init_part = ZERO if init is None else Decimal(billed_ms(init, step))
        durations.append(duration)
        warm_billed.append(warm)
        if init is not None:
            inits.append(init_part)
        use = usage(
            memory_mb, scenario.storage_mb, warm, init_part, ONE if scenario.requests else ZERO
        )
        costs.append(Breakdown.of(use, prices).total)
    cold = len(inits)
    measured = Measured(
        memory_mb=memory_mb,
        invocations=len(reports),
        cold_starts=cold,
        init_in_billed=init_in_billed,
        duration_ms=Stats.of(durations),
        billed_ms=Stats.of(warm_billed),
        init_ms=Stats.of(inits) if inits else None,
        cost=Stats.of(costs),
        total=sum(costs, ZERO),
        restores=len(restores),
        billed_restore_ms=Stats.of(restores) if restores else None,
        restore_charge=restore_charge,
    )
    new_environments = inits + restores
    workload = Workload(
        memory_mb=memory_mb,
        duration_ms=measured.billed_ms.mean,
        init_ms=sum(new_environments, ZERO) / len(new_environments) if new_environments else ZERO,
        invocations_per_environment=Decimal(len(reports)) / len(new_environments)
        if new_environments
        else ONE,
        measured=True,
    )
    return measured, workload


def estimate_from_reports(
    prices: Prices,
    scenario: Scenario,
    reports: Sequence[Report],
    *,
    memory_sizes: Sequence[int] = (),
    init_ms: Decimal | None = None,
    invocations_per_environment: Decimal | None = None,
    source: str = "REPORT lines",
    restore_gb_price: Decimal | None = None,
) -> Estimate:
    """Price measured invocations, one row per ``Memory Size``, and model volumes from them.

    ``memory_sizes`` keeps only those sizes; ``init_ms`` and ``invocations_per_environment``
    replace the measured init duration and invocations per cold start (a short local run
    has far more cold starts per invocation than production).

    Raises:
        NotFoundError: a requested memory size has no REPORT line.
        ConfigError: as :func:`estimate`.
    """
    by_memory: dict[int, list[Report]] = {}
    for report in reports:
        by_memory.setdefault(report.memory_size_mb, []).append(report)
    sizes = list(dict.fromkeys(memory_sizes)) or sorted(by_memory)
    missing = [m for m in sizes if m not in by_memory]
    if missing:
        raise NotFoundError(
            f"no REPORT lines with Memory Size {', '.join(f'{m} MB' for m in missing)}; the "
            f"reports have {', '.join(f'{m} MB' for m in sorted(by_memory))}. Drop --memory "
            "or give one of those"
        )
    notes: list[str] = []
    measured: list[Measured] = []
    workloads: list[Workload] = []
    for size in sizes:
        m, workload = measure(by_memory[size], prices, scenario, size, restore_gb_price)
        if m.restores:
            notes.append(
                f"{size} MB: {m.restores} SnapStart restore(s), each billed its Billed Restore "
                f"Duration as duration plus {m.restore_charge / m.restores:.10f} USD (per GB "
                "restored) in the measured figures; the modelled volumes price a restore as "
                "its billed restore duration only"
            )
        if init_ms is not None:
            init_value = (
                Decimal(billed_ms(init_ms, scenario.granularity_ms)) if init_ms > 0 else ZERO
            )
            workload = replace(workload, init_ms=init_value)
        if invocations_per_environment is not None:
            workload = replace(workload, invocations_per_environment=invocations_per_environment)
        elif m.cold_starts:
            notes.append(
                f"{size} MB: {m.cold_starts} cold start(s) in {m.invocations} invocations, so "
                f"the init is spread over {workload.invocations_per_environment:.4g} "
                "invocations; pass --invocations-per-environment for production's ratio"
            )
        if not m.cold_starts and init_ms is None:
            notes.append(
                f"{size} MB: no cold start in the reports, so no init cost; pass --init-ms "
                "to price one"
            )
        measured.append(m)
        workloads.append(workload)
    return estimate(prices, scenario, workloads, measured=measured, notes=notes, source=source)
