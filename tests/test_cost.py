"""The cost model's arithmetic, against published figures and AWS's pricing formula.

Formula (https://aws.amazon.com/lambda/pricing/): cost = M_GB * price_GB_s * billed_s + (S_GB - 0.5) * storage_price
* billed_s + request_price. Expected values below are written out from it by hand, not
computed by the code under test.
"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlayer.cost import (
    Estimate,
    MemoryCost,
    Scenario,
    Stats,
    Workload,
    estimate,
    estimate_from_reports,
    measure,
    monthly_cost,
    usage,
)
from mlayer.errors import ConfigError, NotFoundError
from mlayer.prices import Prices, Tier, load_prices, price_regions
from mlayer.reports import (
    Report,
    log_group_for,
    parse_since,
    read_reports,
    report_from_message,
)
from mlayer.reports import billed_ms as billed

X86 = D("0.0000166667")
X86_2 = D("0.0000150000")
X86_3 = D("0.0000133334")
ARM = D("0.0000133334")
ARM_2 = D("0.0000120001")
REQUEST = D("0.20") / 1_000_000
STORAGE_US = D("0.0000000309")
STORAGE_EU = D("0.000000034")


@pytest.fixture
def us() -> Prices:
    return load_prices("us-east-1", "x86_64")


def one(prices: Prices, workload: Workload, **scenario: Any) -> tuple[MemoryCost, Estimate]:
    result = estimate(prices, Scenario(**scenario), [workload])
    return result.rows[0], result


# --------------------------------------------------------------------------- published example


def test_published_example_per_invocation(us: Prices) -> None:
    """192 MB, 4 s, 100 ms steps: $0.000000313 per 100 ms (rounded), $0.0000125 an invocation."""
    row, _ = one(us, Workload(192, D(4000)), granularity_ms=100, requests=False)
    assert row.price_per_step.quantize(D("0.000000001")) == D("0.000000313")
    assert row.price_per_step == X86 * D("0.1875") * D("0.1")
    total = row.first.per_invocation.total
    assert total.quantize(D("0.0000001")) == D("0.0000125")
    assert total == X86 * D("0.1875") * 4


@pytest.mark.parametrize(
    ("batch_size", "published"),
    [(1, D("0.625")), (10, D("0.0625")), (100, D("0.00625"))],
)
def test_published_example_ingest(us: Prices, batch_size: int, published: D) -> None:
    """A 50,000-record ingest: $0.625 / $0.0625 / $0.00625 at batch 1 / 10 / 100."""
    row, _ = one(
        us,
        Workload(192, D(4000)),
        granularity_ms=100,
        requests=False,
        records=50_000,
        batch_sizes=(batch_size,),
    )
    batch = row.first
    assert batch.invocations_per_ingest == 50_000 // batch_size
    assert batch.cost_per_ingest is not None
    # Exact to the published three significant digits.
    assert batch.cost_per_ingest.quantize(published) == published
    assert batch.cost_per_ingest == X86 * D("0.1875") * 4 * (50_000 // batch_size)


def test_published_example_break_even(us: Prices) -> None:
    """At batch 100 about 8,064 ingests a month cost as much as a $50.40 always-on endpoint."""
    row, _ = one(
        us,
        Workload(192, D(4000)),
        granularity_ms=100,
        requests=False,
        records=50_000,
        batch_sizes=(1, 10, 100),
        compare_hourly=D("0.07"),
    )
    by_batch = {b.batch_size: b for b in row.break_even}
    entry = by_batch[100]
    assert entry.alternative_monthly_usd == D("50.40")
    assert entry.ingests_per_month is not None
    assert round(entry.ingests_per_month) == 8064
    assert entry.ingests_per_month == D("50.40") / (X86 * D("0.1875") * 4 * 500)
    assert entry.records_per_month == entry.ingests_per_month * 50_000
    assert entry.lambda_cheaper == "below"
    assert round(by_batch[10].ingests_per_month or 0) == 806
    assert round(by_batch[1].ingests_per_month or 0) == 81


# --------------------------------------------------------------------------- derived cases


@pytest.mark.parametrize(
    ("duration", "granularity", "billed_ms"),
    [
        (D("12.01"), 1, 13),
        (D("13"), 1, 13),
        (D("0.2"), 1, 1),
        (D("4000"), 100, 4000),
        (D("4000.5"), 100, 4100),
        (D("1"), 100, 100),
    ],
    ids=["up-1ms", "exact-1ms", "min-1ms", "exact-100ms", "up-100ms", "min-100ms"],
)
def test_granularity_rounds_up(us: Prices, duration: D, granularity: int, billed_ms: int) -> None:
    assert billed(duration, granularity) == billed_ms
    row, _ = one(us, Workload(1024, duration), granularity_ms=granularity, requests=False)
    assert row.first.billed_ms == billed_ms
    assert row.first.per_invocation.compute == X86 * 1 * D(billed_ms) / 1000


@pytest.mark.parametrize(
    ("region", "storage_mb", "storage_price"),
    [
        ("us-east-1", 512, STORAGE_US),
        ("us-east-1", 1024, STORAGE_US),
        ("us-east-1", 10_240, STORAGE_US),
        ("eu-west-1", 10_240, STORAGE_EU),
    ],
)
def test_storage_above_512_mb(region: str, storage_mb: int, storage_price: D) -> None:
    prices = load_prices(region, "x86_64")
    row, _ = one(prices, Workload(2048, D(1500)), storage_mb=storage_mb)
    part = row.first.per_invocation
    extra_gb = (D(storage_mb) - 512) / 1024
    assert part.storage == extra_gb * storage_price * D("1.5")
    assert part.compute == 2 * X86 * D("1.5")
    assert part.requests == REQUEST
    assert part.total == 2 * X86 * D("1.5") + extra_gb * storage_price * D("1.5") + REQUEST


def test_arm64_prices() -> None:
    prices = load_prices("us-east-1", "arm64")
    row, _ = one(prices, Workload(512, D(250)), requests=False)
    assert row.first.per_invocation.total == D("0.5") * ARM * D("0.25")


@pytest.mark.parametrize("requests", [True, False], ids=["requests", "no-requests"])
def test_requests_on_off(us: Prices, requests: bool) -> None:
    row, _ = one(us, Workload(128, D(10)), requests=requests)
    compute = D("0.125") * X86 * D("0.010")
    assert row.first.per_invocation.total == compute + (REQUEST if requests else 0)


def test_per_record_duration_and_partial_batch(us: Prices) -> None:
    """d(k) = 50 + 2k: 250 records at batch 100 = 2 x 250 ms + 1 x 150 ms."""
    row, _ = one(
        us,
        Workload(1024, D(50), duration_per_record_ms=D(2)),
        records=250,
        batch_sizes=(100,),
    )
    batch = row.first
    assert batch.duration_ms == 250
    assert batch.invocations_per_ingest == 3
    expected = X86 * (D("0.25") * 2 + D("0.15")) + 3 * REQUEST
    assert batch.cost_per_ingest == expected
    assert batch.per_record == expected / 250


def test_fixed_duration_model_is_the_same_at_every_batch_size(us: Prices) -> None:
    row, _ = one(us, Workload(192, D(4000)), batch_sizes=(1, 10, 100))
    assert len({b.per_invocation.total for b in row.batches}) == 1
    assert [b.per_record for b in row.batches] == [
        row.first.per_invocation.total / n for n in (1, 10, 100)
    ]


def test_init_amortized_over_environment(us: Prices) -> None:
    row, _ = one(
        us,
        Workload(1024, D(100), init_ms=D("845.2"), invocations_per_environment=D(10)),
        storage_mb=1536,
    )
    part = row.first.per_invocation
    init_s = D("0.846")  # 845.2 ms billed as 846 ms
    assert part.init == (X86 * 1 + 1 * STORAGE_US) * init_s / 10
    assert part.total == X86 * D("0.1") + STORAGE_US * D("0.1") + REQUEST + part.init


def test_timeout_is_an_error(us: Prices) -> None:
    with pytest.raises(ConfigError, match="over Lambda's 900,000 ms"):
        one(us, Workload(1024, D(0), duration_per_record_ms=D(100)), batch_sizes=(10_000,))


# --------------------------------------------------------------------------- monthly: tiers, free tier


def _gigabyte_second_ingest(prices: Prices, ingests: D, **scenario: Any) -> MemoryCost:
    """1,000,000 records of 1 GB x 1 s each per ingest: 1 M GB-s and 1 M requests an ingest."""
    row, _ = one(
        prices,
        Workload(1024, D(1000)),
        records=1_000_000,
        ingests_per_month=ingests,
        **scenario,
    )
    return row


def test_tier_boundary_x86(us: Prices) -> None:
    """7 B GB-s straddles the 6 B boundary: 6 B at the first price, 1 B at the second."""
    row = _gigabyte_second_ingest(us, D(7000), requests=False)
    monthly = row.first.monthly
    assert monthly is not None
    assert monthly.gb_s == D(7_000_000_000)
    assert monthly.compute == 6_000_000_000 * X86 + 1_000_000_000 * X86_2
    assert monthly.compute == D("115000.2")


def test_third_tier_x86(us: Prices) -> None:
    row = _gigabyte_second_ingest(us, D(16_000), requests=False)
    monthly = row.first.monthly
    assert monthly is not None
    assert monthly.compute == 6_000_000_000 * X86 + 9_000_000_000 * X86_2 + 1_000_000_000 * X86_3


def test_tier_boundary_arm64() -> None:
    prices = load_prices("us-east-1", "arm64")
    row = _gigabyte_second_ingest(prices, D(8000), requests=False)
    monthly = row.first.monthly
    assert monthly is not None
    assert monthly.compute == 7_500_000_000 * ARM + 500_000_000 * ARM_2


def test_per_invocation_figures_stay_first_tier(us: Prices) -> None:
    row = _gigabyte_second_ingest(us, D(7000), requests=False)
    assert row.first.per_invocation.compute == X86


@pytest.mark.parametrize("free_tier", [False, True], ids=["no-free-tier", "free-tier"])
def test_free_tier(us: Prices, free_tier: bool) -> None:
    """1 GB x 1 s x 1,000 records x 1,000 ingests = 1 M GB-s and 1 M requests a month."""
    row, _ = one(
        us,
        Workload(1024, D(1000)),
        records=1000,
        ingests_per_month=D(1000),
        free_tier=free_tier,
    )
    monthly = row.first.monthly
    assert monthly is not None
    if free_tier:
        assert monthly.compute == (1_000_000 - 400_000) * X86
        assert monthly.requests == 0
        assert (monthly.free_gb_s, monthly.free_requests) == (400_000, 1_000_000)
    else:
        assert monthly.compute == 1_000_000 * X86
        assert monthly.requests == D("0.20")
    assert monthly.total == monthly.compute + monthly.requests


def test_free_tier_without_monthly_volume_says_so(us: Prices) -> None:
    _, result = one(us, Workload(1024, D(100)), free_tier=True)
    assert any("--ingests-per-month" in note for note in result.notes)


# --------------------------------------------------------------------------- break-even


def test_break_even_across_a_tier_boundary(us: Prices) -> None:
    """An endpoint costing what 7 B GB-s cost breaks even at exactly 7,000 such ingests."""
    row, _ = one(
        us,
        Workload(1024, D(1000)),
        requests=False,
        records=1_000_000,
        compare_hourly=D("115000.2") / 720,
    )
    entry = row.break_even[0]
    assert entry.ingests_per_month == 7000


def test_break_even_without_records_is_in_records(us: Prices) -> None:
    row, _ = one(
        us, Workload(1024, D(100)), requests=False, batch_sizes=(10,), compare_hourly=D("0.07")
    )
    entry = row.break_even[0]
    per_invocation = X86 * D("0.1")
    assert entry.ingests_per_month is None
    assert entry.invocations_per_month == D("50.40") / per_invocation
    assert entry.records_per_month == 10 * D("50.40") / per_invocation


@pytest.mark.parametrize(
    ("memory", "per_second", "free_tier", "cheaper", "has_volume"),
    [
        (192, D("0.00008"), False, "always", False),
        (4096, D("0.00001"), False, "never", False),
        (4096, D("0.00001"), True, "below", True),
    ],
    ids=["lambda-cheaper", "alternative-cheaper", "free-tier-bends"],
)
def test_break_even_per_second(
    us: Prices, memory: int, per_second: D, free_tier: bool, cheaper: str, has_volume: bool
) -> None:
    row, _ = one(
        us,
        Workload(memory, D(1000)),
        requests=False,
        free_tier=free_tier,
        records=100,
        batch_sizes=(10,),
        compare_per_second=per_second,
    )
    entry = row.break_even[0]
    assert entry.lambda_cheaper == cheaper
    assert entry.alternative_per_ingest == per_second * 10  # 10 invocations x 1 s
    assert (entry.ingests_per_month is not None) == has_volume
    if has_volume:
        # 4 GB x 1 s x 10 invocations = 40 GB-s an ingest; free 400,000 GB-s.
        # 40x*X86 - 400000*X86 = 10x*0.00001  =>  x = 400000*X86 / (40*X86 - 0.0001)
        assert entry.ingests_per_month == 400_000 * X86 / (40 * X86 - D("0.0001"))


@settings(max_examples=60, deadline=None)
@given(
    memory=st.integers(128, 10_240),
    duration=st.integers(1, 900_000),
    batch=st.integers(1, 10_000),
    hourly=st.decimals("0.01", "5000", places=2),
    free_tier=st.booleans(),
    requests=st.booleans(),
)
def test_break_even_volume_costs_the_same(
    memory: int, duration: int, batch: int, hourly: D, free_tier: bool, requests: bool
) -> None:
    """Whatever the inputs, Lambda's monthly bill at the break-even volume is the endpoint's."""
    prices = load_prices("us-east-1", "x86_64")
    scenario = Scenario(
        requests=requests,
        free_tier=free_tier,
        records=batch * 7 + 3,
        batch_sizes=(batch,),
        compare_hourly=hourly,
    )
    row = estimate(prices, scenario, [Workload(memory, D(duration))]).rows[0]
    entry = row.break_even[0]
    assert entry.ingests_per_month is not None and entry.ingests_per_month > 0
    compute, storage, request_cost, _, _ = monthly_cost(
        row.first.unit, entry.ingests_per_month, prices, free_tier=free_tier
    )
    assert abs(compute + storage + request_cost - hourly * 720) < D("1e-12")


# --------------------------------------------------------------------------- several memory sizes


def test_cheapest_memory_size_is_marked(us: Prices) -> None:
    """128 MB x 1 s = 0.125 GB-s, 1 GB x 100 ms = 0.1, 2 GB x 60 ms = 0.12: 1,024 MB wins."""
    result = estimate(
        us,
        Scenario(batch_sizes=(100,)),
        [Workload(128, D(1000)), Workload(1024, D(100)), Workload(2048, D(60))],
    )
    assert [(r.workload.memory_mb, r.cheapest) for r in result.rows] == [
        (128, False),
        (1024, True),
        (2048, False),
    ]
    assert result.best.workload.memory_mb == 1024
    assert result.to_dict()["memory_mb"] == 1024


# --------------------------------------------------------------------------- prices


def test_price_file_regions_and_sources() -> None:
    assert {"us-east-1", "eu-west-1"} <= set(price_regions())
    prices = load_prices("eu-west-1", "arm64")
    assert prices.tiers == (
        Tier(D(7_500_000_000), ARM),
        Tier(D(18_750_000_000), ARM_2),
        Tier(None, D("0.0000106667")),
    )
    assert prices.storage_gb_s == STORAGE_EU
    assert "REFERENCE.md" in prices.source
    assert prices.as_of


def test_unknown_region_names_known_ones_and_the_flags() -> None:
    with pytest.raises(ConfigError) as info:
        load_prices("ap-south-9", "x86_64", price_gb_s=D("0.00002"))
    message = str(info.value)
    assert "no prices for region ap-south-9" in message
    assert "eu-west-1, us-east-1" in message
    assert "missing: --price-requests, --price-storage" in message
    assert "--prices FILE" in message


def test_unknown_region_with_every_price_given() -> None:
    prices = load_prices(
        "ap-south-9",
        "x86_64",
        price_gb_s=D("0.00002"),
        price_requests=D("0.25"),
        price_storage=D("0.00000004"),
    )
    assert prices.tiers == (Tier(None, D("0.00002")),)
    assert prices.request_price == D("0.25") / 1_000_000
    assert prices.free_gb_s == 400_000


def test_overrides_replace_file_prices(us: Prices) -> None:
    prices = load_prices("us-east-1", "x86_64", price_gb_s=D("0.00001"))
    assert prices.tiers == (Tier(None, D("0.00001")),)
    assert prices.requests_per_million == D("0.20")
    assert prices.overridden == ("--price-gb-s",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", 'has no "regions" object'),
        (
            '{"regions": {"us-east-1": {"duration": {"x86_64": [{"up_to_gb_s": null, '
            '"price_gb_s": -1}]}}}}',
            "must be a non-negative number",
        ),
        ('{"regions": {"us-east-1": {"duration": {}}}}', "has no duration prices for x86_64"),
    ],
    ids=["not-json", "no-regions", "negative", "no-arch"],
)
def test_bad_price_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prices("us-east-1", "x86_64", path=path)


# --------------------------------------------------------------------------- measurements

COLD_LOCAL = (
    "REPORT RequestId: c-1\tDuration: 120.40 ms\tBilled Duration: 121 ms\t"
    "Memory Size: 1024 MB\tMax Memory Used: 160 MB\tInit Duration: 845.20 ms"
)
# Since 2025-08-01 Lambda's Billed Duration includes the init: 120.40 + 845.20 -> 966.
COLD_AWS = (
    "REPORT RequestId: c-2\tDuration: 120.40 ms\tBilled Duration: 966 ms\t"
    "Memory Size: 1024 MB\tMax Memory Used: 160 MB\tInit Duration: 845.20 ms"
)


def warm(request_id: str, duration: str, billed_ms: int, memory: int = 1024) -> str:
    return (
        f"REPORT RequestId: {request_id}\tDuration: {duration} ms\tBilled Duration: "
        f"{billed_ms} ms\tMemory Size: {memory} MB\tMax Memory Used: 150 MB\t"
    )


def _reports(*lines: str) -> list[Report]:
    return [r for r in (report_from_message(line) for line in lines) if r is not None]


@pytest.mark.parametrize("cold", [COLD_LOCAL, COLD_AWS], ids=["init-apart", "init-in-billed"])
def test_measure_prices_each_invocation_as_billed(us: Prices, cold: str) -> None:
    reports = _reports(cold, warm("w-1", "10.20", 11), warm("w-2", "30.00", 30))
    measured, workload = measure(reports, us, Scenario(), 1024)
    assert (measured.invocations, measured.cold_starts) == (3, 1)
    assert measured.init_in_billed == (1 if cold is COLD_AWS else 0)
    # Warm parts 121, 11, 30 ms; the cold start's init 846 ms (845 ms when Lambda folded it
    # into 966 ms billed = 121 + 845), never counted twice.
    init_ms = D(846) if cold is COLD_LOCAL else D(845)
    assert measured.billed_ms.mean == D(162) / 3
    assert measured.init_ms is not None and measured.init_ms.mean == init_ms
    total_ms = D(121 + 11 + 30) + init_ms
    assert measured.total == X86 * total_ms / 1000 + 3 * REQUEST
    # The model fed with the measurement reproduces the measured mean cost.
    assert workload.invocations_per_environment == 3
    row = estimate(us, Scenario(), [workload]).rows[0]
    # (equal to Decimal's 28 digits: a mean of three has a repeating last digit)
    assert abs(row.first.per_invocation.total - measured.cost.mean) < D("1e-25")


@pytest.mark.parametrize(
    ("duration", "billed_ms", "init", "included"),
    [
        ("120.40", 121, "845.20", False),  # local runner / before 2025-08: handler only
        ("120.40", 966, "845.20", True),  # Lambda since 2025-08: ceil(120.40 + 845.20)
        ("120.40", 967, "845.20", True),  # ceil(duration) + ceil(init)
        ("4000.50", 4100, "50.00", False),  # 100 ms era: slack over a short init
        ("10.00", 10, "0.40", False),  # init under 1 ms: handler only
    ],
    ids=["handler-only", "init-summed", "init-rounded-apart", "100ms-era", "tiny-init"],
)
def test_init_in_billed_duration_detection(
    us: Prices, duration: str, billed_ms: int, init: str, included: bool
) -> None:
    line = (
        f"REPORT RequestId: r\tDuration: {duration} ms\tBilled Duration: {billed_ms} ms\t"
        f"Memory Size: 1024 MB\tMax Memory Used: 1 MB\tInit Duration: {init} ms"
    )
    measured, _ = measure(_reports(line), us, Scenario(), 1024)
    assert measured.init_in_billed == int(included)
    expected_ms = D(billed_ms) if included else D(billed_ms) + billed(D(init), 1)
    assert measured.total == X86 * expected_ms / 1000 + REQUEST


def test_measure_regranulates_at_100_ms(us: Prices) -> None:
    reports = _reports(warm("w-1", "10.20", 11), warm("w-2", "130.00", 130))
    measured, _ = measure(reports, us, Scenario(granularity_ms=100), 1024)
    assert [measured.billed_ms.min, measured.billed_ms.max] == [100, 200]


def test_estimate_from_reports_one_row_per_memory_size(us: Prices) -> None:
    reports = _reports(
        warm("a", "200.00", 200, memory=512),
        warm("b", "220.00", 220, memory=512),
        warm("c", "90.00", 90, memory=1024),
        warm("d", "95.00", 95, memory=1024),
    )
    result = estimate_from_reports(us, Scenario(batch_sizes=(100,)), reports)
    assert [(r.workload.memory_mb, r.cheapest) for r in result.rows] == [
        (512, False),
        (1024, True),
    ]
    only = estimate_from_reports(us, Scenario(), reports, memory_sizes=[512])
    assert [r.workload.memory_mb for r in only.rows] == [512]
    with pytest.raises(NotFoundError, match="no REPORT lines with Memory Size 256 MB"):
        estimate_from_reports(us, Scenario(), reports, memory_sizes=[256])


def test_estimate_from_reports_overrides(us: Prices) -> None:
    reports = _reports(COLD_LOCAL, warm("w", "10.00", 10))
    result = estimate_from_reports(us, Scenario(), reports, invocations_per_environment=D(1000))
    assert result.rows[0].workload.invocations_per_environment == 1000
    no_cold = estimate_from_reports(us, Scenario(), _reports(warm("w", "10.00", 10)))
    assert any("no cold start" in note for note in no_cold.notes)
    priced = estimate_from_reports(
        us, Scenario(), _reports(warm("w", "10.00", 10)), init_ms=D("500.5")
    )
    assert priced.rows[0].workload.init_ms == 501


def test_stats_nearest_rank() -> None:
    stats = Stats.of([D(v) for v in range(1, 101)])
    assert (stats.p50, stats.p99, stats.mean, stats.min, stats.max) == (50, 99, D("50.5"), 1, 100)
    single = Stats.of([D(7)])
    assert (single.p50, single.p99) == (7, 7)


PLATFORM_REPORT = json.dumps(
    {
        "time": "2026-11-23T06:00:00.000Z",
        "type": "platform.report",
        "record": {
            "requestId": "j-1",
            "metrics": {
                "durationMs": 12.5,
                "billedDurationMs": 13,
                "memorySizeMB": 256,
                "maxMemoryUsedMB": 90,
                "initDurationMs": 300.1,
            },
            "status": "success",
        },
    }
)


def test_json_format_platform_report() -> None:
    report = report_from_message(PLATFORM_REPORT)
    assert report == Report("j-1", 12.5, 13, 256, 90, 300.1)
    assert report_from_message('{"type": "platform.start"}') is None
    assert report_from_message("START RequestId: x Version: $LATEST") is None


def test_read_reports_text_file(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    path.write_text(
        "START RequestId: c-1 Version: $LATEST\n"
        '{"message": "batch", "counts": {"received": 100}}\n'
        "END RequestId: c-1\n"
        f"2026-11-23T06:00:00.100Z {COLD_LOCAL}\n"
        f"{warm('w-1', '10.20', 11)}\n"
        "XRAY TraceId: 1-5e1b4151-5ac6c58f5b5dbd6a1b8c4f1e\tSegmentId: 0a1b\tSampled: true\n"
    )
    assert [r.request_id for r in read_reports(path)] == ["c-1", "w-1"]


def test_read_reports_gzip_and_json(tmp_path: Path) -> None:
    gz = tmp_path / "export.gz"
    gz.write_bytes(gzip.compress(f"{COLD_AWS}\n{warm('w-1', '1.00', 1)}\n".encode()))
    assert len(read_reports(gz)) == 2
    cli_json = tmp_path / "events.json"
    cli_json.write_text(
        json.dumps(
            {
                "events": [
                    {"timestamp": 1, "message": "START RequestId: c-2 Version: 3\n"},
                    {"timestamp": 2, "message": COLD_AWS + "\n"},
                    {"timestamp": 3, "message": PLATFORM_REPORT},
                ]
            }
        )
    )
    assert [r.request_id for r in read_reports(cli_json)] == ["c-2", "j-1"]
    lines = tmp_path / "json-lines.log"
    lines.write_text(PLATFORM_REPORT + "\n" + PLATFORM_REPORT + "\n")
    assert len(read_reports(lines)) == 2


def test_read_reports_without_reports(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_text("START RequestId: x\nEND RequestId: x\n")
    with pytest.raises(NotFoundError, match="no REPORT lines in"):
        read_reports(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 12 hours", None),
        ("0h", None),
        ("yesterday", None),
    ],
)
def test_parse_since(text: str, expected: timedelta | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            parse_since(text)
    else:
        assert parse_since(text) == expected


@pytest.mark.parametrize(
    ("function", "group"),
    [
        ("scorer", "/aws/lambda/scorer"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:scorer", "/aws/lambda/scorer"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:scorer:live", "/aws/lambda/scorer"),
        ("scorer:live", "/aws/lambda/scorer"),
        ("scorer:3", "/aws/lambda/scorer"),
        ("123456789012:function:scorer:live", "/aws/lambda/scorer"),
    ],
    ids=["name", "arn", "qualified-arn", "name-alias", "name-version", "partial-arn"],
)
def test_log_group_for(function: str, group: str) -> None:
    assert log_group_for(function) == group


def test_usage_is_additive() -> None:
    one_call = usage(1024, 1536, D(100), D(10), D(1))
    assert one_call + one_call == one_call.scale(D(2))
    assert one_call.gb_s == D("0.11")


# --------------------------------------------------------------------------- SnapStart

PRICE_FILE = Path(__file__).resolve().parent.parent / "cli" / "mlayer" / "prices.json"


def _raw_snapstart(region: str = "us-east-1") -> dict[str, D]:
    """prices.json's SnapStart entry read directly (not through mlayer.prices)."""
    raw = json.loads(PRICE_FILE.read_text(), parse_float=D, parse_int=D)["regions"][region]
    entry = raw["snapstart"]
    return {key: entry[key] for key in ("cache_gb_s", "restore_gb", "cache_minimum_hours")}


def _snap(
    memory_mb: int = 1024,
    init_ms: str = "1500",
    *,
    region: str = "us-east-1",
    hours: str = "720",
    **inputs: Any,
) -> Any:
    """SnapStart against billed init for one workload (100 ms warm) at ``hours`` a month."""
    from mlayer.prices import snapstart
    from mlayer.snapstart_cost import SnapStartInputs, compare

    prices = load_prices(region, "x86_64")
    row, result = one(
        prices, Workload(memory_mb, D(100), init_ms=D(init_ms)), hours_per_month=D(hours)
    )
    return compare(row, result.scenario, prices, snapstart(region), SnapStartInputs(**inputs))


@pytest.mark.parametrize("versions", [1, 2], ids=["one-version", "canary-two-versions"])
@pytest.mark.parametrize("memory_mb", [512, 1769], ids=["512MB", "1769MB"])
def test_snapstart_figures_equal_the_formula(versions: int, memory_mb: int) -> None:
    raw = _raw_snapstart()
    got = _snap(
        memory_mb,
        "1500",
        cold_starts_per_hour=D(20),
        snapshot_versions=versions,
        restore_ms=D("149.2"),
    )
    gb = D(memory_mb) / 1024
    init_each = gb * D("1.5") * X86
    restore_each = gb * raw["restore_gb"] + gb * D("0.15") * X86  # 149.2 ms billed as 150
    cache = gb * 720 * 3600 * raw["cache_gb_s"] * versions
    cold = D(20) * 720
    assert got.init_each == init_each
    assert got.restore_each == restore_each
    assert got.cache_month == cache
    assert got.cold_starts_per_month == cold
    assert got.without_month == cold * init_each
    assert got.with_month == cache + cold * restore_each
    assert got.difference == cache + cold * restore_each - cold * init_each
    assert got.restore_ms_from == "--restore-ms"


def test_snapstart_break_even_is_where_the_totals_meet() -> None:
    # A 12 s init (a large model) at 2 GB: a restore costs less than the init it replaces.
    base = _snap(2048, "12000", restore_ms=D(150))
    raw = _raw_snapstart()
    gb = D(2)
    saving = gb * 12 * X86 - (gb * raw["restore_gb"] + gb * D("0.15") * X86)
    assert base.break_even_per_month == gb * 720 * 3600 * raw["cache_gb_s"] / saving
    per_hour = base.break_even_per_hour
    assert per_hour is not None and per_hour == base.break_even_per_month / 720
    at = _snap(2048, "12000", restore_ms=D(150), cold_starts_per_hour=per_hour)
    assert at.with_month is not None and at.without_month is not None
    assert abs(at.with_month - at.without_month) < D("1e-20")
    below = _snap(2048, "12000", restore_ms=D(150), cold_starts_per_hour=per_hour * D("0.9"))
    above = _snap(2048, "12000", restore_ms=D(150), cold_starts_per_hour=per_hour * D("1.1"))
    assert (below.cheaper, above.cheaper) == ("init", "snapstart")


def test_snapstart_never_when_a_restore_costs_more_than_the_init() -> None:
    # mlayer's own init (1.5 s, issue 14) at 1 GB: the restore's per-GB charge alone is
    # restore_gb / duration price = 8.4 s of duration, more than the init it replaces.
    got = _snap(1024, "1500", cold_starts_per_hour=D(10_000))
    raw = _raw_snapstart()
    assert raw["restore_gb"] / X86 > D("1.5")
    assert got.break_even_per_month is None and got.break_even_per_hour is None
    assert got.cheaper == "init"
    assert got.to_dict()["break_even"]["never"] is True
    assert got.restore_ms_from == "default" and got.restore_ms == 200


def test_snapstart_cache_minimum_three_hours() -> None:
    got = _snap(1024, "12000", hours="1")
    raw = _raw_snapstart()
    assert raw["cache_minimum_hours"] == 3
    assert got.cache_hours == 3
    assert got.cache_month == 1 * 3 * 3600 * raw["cache_gb_s"]


def test_snapstart_eu_west_1_uses_us_east_1_and_says_why() -> None:
    from mlayer.prices import snapstart

    eu = snapstart("eu-west-1")
    us_prices = _raw_snapstart()
    assert (eu.cache_gb_s, eu.restore_gb) == (us_prices["cache_gb_s"], us_prices["restore_gb"])
    assert eu.same_as == "us-east-1"
    assert eu.why is not None and "no source found" in eu.why
    assert snapstart("us-east-1").same_as is None


def test_snapstart_prices_missing_is_an_error(tmp_path: Path) -> None:
    from mlayer.prices import snapstart

    data = json.loads(PRICE_FILE.read_text())
    del data["regions"]["us-east-1"]["snapstart"]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    with pytest.raises(
        ConfigError,
        match=r"no SnapStart prices for us-east-1: add regions\.us-east-1\.snapstart\.cache_gb_s",
    ):
        snapstart("us-east-1", path=path)


@pytest.mark.parametrize(
    ("runtime", "refused"),
    [("python3.10", True), ("python3.11", True), ("python3.12", False), ("python3.13", False)],
)
def test_snapstart_runtime(runtime: str, refused: bool) -> None:
    from mlayer.snapstart_cost import check_runtime

    if refused:
        with pytest.raises(ConfigError, match=f"SnapStart needs python3.12 or later and {runtime}"):
            check_runtime(runtime)
    else:
        check_runtime(runtime)


def test_snapstart_refuses_storage_over_512_mb_and_no_init() -> None:
    from mlayer.prices import snapstart
    from mlayer.snapstart_cost import SnapStartInputs, compare

    prices = load_prices("us-east-1", "x86_64")
    scenario = Scenario(storage_mb=1024)
    row, _ = one(prices, Workload(1024, D(100), init_ms=D(1500)), storage_mb=1024)
    with pytest.raises(ConfigError, match="ephemeral storage over 512 MB"):
        compare(row, scenario, prices, snapstart("us-east-1"), SnapStartInputs())
    row, _ = one(prices, Workload(1024, D(100)))
    with pytest.raises(ConfigError, match="no init to compare with: give --init-ms"):
        compare(row, Scenario(), prices, snapstart("us-east-1"), SnapStartInputs())


def test_snapstart_restore_ms_from_reports() -> None:
    from dataclasses import dataclass

    from mlayer.snapstart_cost import measured_restore_ms

    @dataclass(frozen=True)
    class RestoreReport(Report):
        # the fields snaplocal adds to Report (docs/CONTRACTS.md, "SnapStart")
        restore_duration_ms: float | None = None
        billed_restore_duration_ms: int | None = None

    reports = [
        RestoreReport("a", 10.0, 10, 1024, 100, None, 400.0, 120),
        RestoreReport("b", 10.0, 10, 1024, 100, None, 500.0, 181),
        RestoreReport("c", 10.0, 10, 1024, 100),
        RestoreReport("d", 10.0, 10, 512, 100, None, 900.0, 700),
        Report("e", 10.0, 10, 1024, 100),
    ]
    assert measured_restore_ms(reports, 1024) == D("150.5")
    assert measured_restore_ms(reports, 512) == 700
    assert measured_restore_ms(reports, 2048) is None
