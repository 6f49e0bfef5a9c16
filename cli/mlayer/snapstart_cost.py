"""``mlayer cost --snapstart``: SnapStart's snapshot cache and restores against billed init.

Without SnapStart every cold start bills its init (zip functions, since 2025-08-01). With
SnapStart the init runs once, when a version is published, and each new execution
environment is restored from the snapshot instead; Lambda then bills (prices from
:func:`mlayer.prices.snapstart`, duration price from :class:`~mlayer.prices.Prices`)::

    GB               = memory MB / 1024
    init             = GB * billed(init_ms)/1000 * duration price          per cold start, without
    cache            = GB * max(hours, 3) * 3600 * cache_gb_s * versions   a month, with
    restore          = GB * restore_gb + GB * billed(restore_ms)/1000 * duration price
                                                                           per cold start, with
    without(C)       = C * init
    with(C)          = cache + C * restore                                 C: cold starts a month

``versions`` is the published versions whose snapshots are kept (``--snapshot-versions``:
1, or 2 while a canary splits an alias between two). ``hours`` is ``--hours-per-month``;
the cache's minimum charge is 3 hours a version. The duration price is the first tier's,
without the free tier (as every per-invocation figure of ``mlayer cost``).

SnapStart costs less above the break-even rate ``C* = cache / (init - restore)`` cold starts
a month; when a restore costs as much as the init it replaces or more, never. Paying for it
below that buys latency: a restore instead of an init on every cold start.

The cold-start rate is ``--cold-starts-per-hour`` when given, else the month's invocations
(``--ingests-per-month`` x invocations per ingest) over ``--invocations-per-environment``;
without either, the totals are not priced but the break-even still is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mlayer import snapstart
from mlayer.cost import MB_PER_GB, MS_PER_S, ZERO, MemoryCost, Scenario
from mlayer.errors import ConfigError
from mlayer.prices import Prices, SnapStartPrices
from mlayer.reports import Report, billed_ms

SECONDS_PER_HOUR = Decimal(3600)
# Billed Restore Duration is the runtime's load plus the after-restore hooks (Lambda's
# REPORT field, docs "Monitoring for Lambda SnapStart"); mlayer's after-restore hook only
# re-seeds random generators and drops cached clients. AWS publishes no figure for Python's
# runtime load, so the default is deliberately generous: a longer restore makes SnapStart
# look dearer, never cheaper. Measure it (--from-report on SnapStart REPORT lines) or pass
# --restore-ms.
DEFAULT_RESTORE_MS = Decimal(200)


def check_runtime(runtime: str | None) -> None:
    """Refuse a runtime SnapStart does not run on (Python before 3.12); None passes.

    Raises:
        ConfigError: the runtime is python3.11 or earlier.
    """
    if runtime is not None and runtime.startswith("python") and not snapstart.runs_on(runtime):
        raise ConfigError(
            f"SnapStart needs python3.12 or later and {runtime} is older: Lambda offers "
            "SnapStart for Python 3.12+ only. Price it with --runtime python3.12 or later "
            "(and deploy on it), or drop --snapstart"
        )


@dataclass(frozen=True)
class SnapStartInputs:
    """What the comparison needs beyond the workload: rates, versions, restore time."""

    cold_starts_per_hour: Decimal | None = None
    snapshot_versions: int = 1
    restore_ms: Decimal | None = None
    measured_restore_ms: Decimal | None = None  # mean Billed Restore Duration of the reports


@dataclass(frozen=True)
class SnapStartCost:
    """SnapStart against billed init, for one memory size."""

    memory_mb: int
    init_ms: Decimal  # billed
    restore_ms: Decimal  # billed
    restore_ms_from: str  # "--restore-ms" | "reports" | "default"
    versions: int
    cache_hours: Decimal
    init_each: Decimal
    restore_memory_each: Decimal
    restore_duration_each: Decimal
    cache_month: Decimal
    cold_starts_per_month: Decimal | None
    cold_starts_from: str | None
    hours_per_month: Decimal
    prices: SnapStartPrices

    @property
    def restore_each(self) -> Decimal:
        return self.restore_memory_each + self.restore_duration_each

    @property
    def cold_starts_per_hour(self) -> Decimal | None:
        if self.cold_starts_per_month is None:
            return None
        return self.cold_starts_per_month / self.hours_per_month

    @property
    def without_month(self) -> Decimal | None:
        if self.cold_starts_per_month is None:
            return None
        return self.cold_starts_per_month * self.init_each

    @property
    def with_month(self) -> Decimal | None:
        if self.cold_starts_per_month is None:
            return None
        return self.cache_month + self.cold_starts_per_month * self.restore_each

    @property
    def difference(self) -> Decimal | None:
        """With SnapStart minus without: negative when SnapStart saves."""
        if self.with_month is None or self.without_month is None:
            return None
        return self.with_month - self.without_month

    @property
    def break_even_per_month(self) -> Decimal | None:
        """Cold starts a month above which SnapStart costs less; None: never."""
        saving = self.init_each - self.restore_each
        if saving <= 0:
            return None
        return self.cache_month / saving

    @property
    def break_even_per_hour(self) -> Decimal | None:
        month = self.break_even_per_month
        return None if month is None else month / self.hours_per_month

    @property
    def cheaper(self) -> str | None:
        """ "snapstart", "init" or "equal" at the given rate; None without a rate."""
        diff = self.difference
        if diff is None:
            return None
        return "snapstart" if diff < 0 else "init" if diff > 0 else "equal"

    def to_dict(self) -> dict[str, Any]:
        def num(value: Decimal | None) -> float | None:
            return None if value is None else float(value)

        return {
            "memory_mb": self.memory_mb,
            "init_ms": float(self.init_ms),
            "restore_ms": float(self.restore_ms),
            "restore_ms_from": self.restore_ms_from,
            "snapshot_versions": self.versions,
            "cache_hours": float(self.cache_hours),
            "per_cold_start": {
                "init": float(self.init_each),
                "restore": float(self.restore_each),
                "restore_memory": float(self.restore_memory_each),
                "restore_duration": float(self.restore_duration_each),
            },
            "cache_per_month": float(self.cache_month),
            "cold_starts_per_month": num(self.cold_starts_per_month),
            "cold_starts_per_hour": num(self.cold_starts_per_hour),
            "cold_starts_from": self.cold_starts_from,
            "monthly": None
            if self.without_month is None
            else {
                "without_snapstart": num(self.without_month),
                "with_snapstart": num(self.with_month),
                "difference": num(self.difference),
                "cheaper": self.cheaper,
            },
            "break_even": {
                "cold_starts_per_month": num(self.break_even_per_month),
                "cold_starts_per_hour": num(self.break_even_per_hour),
                "never": self.break_even_per_month is None,
            },
            "prices": self.prices.to_dict(),
        }


def compare(
    row: MemoryCost,
    scenario: Scenario,
    prices: Prices,
    snap_prices: SnapStartPrices,
    inputs: SnapStartInputs,
) -> SnapStartCost:
    """SnapStart against billed init for one memory size of an estimate.

    Raises:
        ConfigError: nothing to compare (no init), ephemeral storage over 512 MB (SnapStart
            does not support it), or fewer than one snapshot version.
    """
    workload = row.workload
    if scenario.storage_mb > 512:
        raise ConfigError(
            f"SnapStart does not support ephemeral storage over 512 MB (--storage-mb "
            f"{scenario.storage_mb}); price it at 512 MB or drop --snapstart"
        )
    if workload.init_ms <= 0:
        raise ConfigError(
            "--snapstart compares SnapStart with the billed init it replaces, and there is no "
            "init to compare with: give --init-ms (reports of a SnapStart function carry "
            "restores, not inits)"
        )
    if inputs.snapshot_versions < 1:
        raise ConfigError("--snapshot-versions must be at least 1")
    step = scenario.granularity_ms
    memory_gb = Decimal(workload.memory_mb) / MB_PER_GB
    duration_price = prices.first_tier_gb_s
    # The workload's init is already billed (rounded) for parameters and measured alike.
    init_ms = workload.init_ms if workload.measured else Decimal(billed_ms(workload.init_ms, step))
    if inputs.restore_ms is not None:
        restore_raw, restore_from = inputs.restore_ms, "--restore-ms"
    elif inputs.measured_restore_ms is not None:
        restore_raw, restore_from = inputs.measured_restore_ms, "reports"
    else:
        restore_raw, restore_from = DEFAULT_RESTORE_MS, "default"
    restore_ms = Decimal(billed_ms(restore_raw, step)) if restore_raw > 0 else ZERO
    hours = scenario.hours_per_month
    cache_hours = max(hours, snap_prices.cache_minimum_hours)
    cold_per_month: Decimal | None = None
    cold_from: str | None = None
    if inputs.cold_starts_per_hour is not None:
        cold_per_month = inputs.cold_starts_per_hour * hours
        cold_from = "--cold-starts-per-hour"
    elif row.first.monthly is not None:
        cold_per_month = row.first.monthly.invocations / workload.invocations_per_environment
        cold_from = (
            f"{row.first.monthly.invocations:,.0f} invocations a month (--ingests-per-month x "
            f"{row.first.unit_invocations:,} per ingest) / "
            f"{workload.invocations_per_environment:,.4g} per environment"
        )
    return SnapStartCost(
        memory_mb=workload.memory_mb,
        init_ms=init_ms,
        restore_ms=restore_ms,
        restore_ms_from=restore_from,
        versions=inputs.snapshot_versions,
        cache_hours=cache_hours,
        init_each=memory_gb * init_ms / MS_PER_S * duration_price,
        restore_memory_each=memory_gb * snap_prices.restore_gb,
        restore_duration_each=memory_gb * restore_ms / MS_PER_S * duration_price,
        cache_month=memory_gb
        * cache_hours
        * SECONDS_PER_HOUR
        * snap_prices.cache_gb_s
        * inputs.snapshot_versions,
        cold_starts_per_month=cold_per_month,
        cold_starts_from=cold_from,
        hours_per_month=hours,
        prices=snap_prices,
    )


def measured_restore_ms(reports: Sequence[Report], memory_mb: int) -> Decimal | None:
    """The mean Billed Restore Duration of the reports of ``memory_mb``; None without any.

    ``billed_restore_duration_ms`` comes with SnapStart REPORT lines (docs/CONTRACTS.md,
    "SnapStart"); a report without it (or a :class:`Report` from before that field) counts
    as none.
    """
    values = [
        Decimal(str(value))
        for report in reports
        if report.memory_size_mb == memory_mb
        and (value := getattr(report, "billed_restore_duration_ms", None)) is not None
    ]
    if not values:
        return None
    return sum(values, ZERO) / len(values)
