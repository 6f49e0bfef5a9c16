"""Lambda's prices for ``mlayer cost``: the bundled ``prices.json``, a region's entry, overrides.

``prices.json`` holds, per region, the duration price tiers per architecture, the request
price and the ephemeral-storage price, with the date they were read and their sources, and
the account's monthly free tier. :func:`load_prices` picks one region and architecture and
applies the ``--price-*`` flags; a region missing from the file needs all three of them.
Money is :class:`~decimal.Decimal` (0.0000166667 stays exact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from mlayer.errors import ConfigError

ZERO = Decimal(0)
PER_MILLION = Decimal(1_000_000)
DEFAULT_PRICING_REGION = "us-east-1"
PRICES_FILE = "prices.json"


@dataclass(frozen=True)
class Tier:
    """One duration price tier: GB-s of the month up to ``up_to_gb_s`` (None: no end)."""

    up_to_gb_s: Decimal | None
    price_gb_s: Decimal


@dataclass(frozen=True)
class Prices:
    """The prices for one region and architecture, where they come from, what was overridden."""

    region: str
    arch: str
    tiers: tuple[Tier, ...]
    requests_per_million: Decimal
    storage_gb_s: Decimal
    free_requests: Decimal
    free_gb_s: Decimal
    as_of: str
    source: str
    overridden: tuple[str, ...] = ()

    @property
    def first_tier_gb_s(self) -> Decimal:
        """The duration price of the month's first GB-s."""
        return self.tiers[0].price_gb_s

    @property
    def request_price(self) -> Decimal:
        """The price of one request."""
        return self.requests_per_million / PER_MILLION

    @property
    def tier_boundaries(self) -> list[Decimal]:
        """The GB-s counts at which the duration price changes."""
        return [t.up_to_gb_s for t in self.tiers if t.up_to_gb_s is not None]

    def duration_cost(self, gb_s: Decimal, free_gb_s: Decimal = ZERO) -> Decimal:
        """What ``gb_s`` GB-s in one month cost across the tiers; the first ``free_gb_s`` are free."""
        cost = ZERO
        lower = ZERO
        for tier in self.tiers:
            upper = tier.up_to_gb_s
            start = max(lower, free_gb_s)
            end = gb_s if upper is None else min(upper, gb_s)
            if end > start:
                cost += (end - start) * tier.price_gb_s
            if upper is None or upper >= gb_s:
                break
            lower = upper
        return cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "arch": self.arch,
            "as_of": self.as_of,
            "source": self.source,
            "duration_tiers": [
                {
                    "up_to_gb_s": None if t.up_to_gb_s is None else int(t.up_to_gb_s),
                    "price_gb_s": float(t.price_gb_s),
                }
                for t in self.tiers
            ],
            "requests_per_million": float(self.requests_per_million),
            "ephemeral_storage_gb_s": float(self.storage_gb_s),
            "free_tier": {"requests": int(self.free_requests), "gb_s": int(self.free_gb_s)},
            "overridden": list(self.overridden),
        }


def _read_price_data(path: Path | None) -> tuple[dict[str, Any], str]:
    try:
        if path is None:
            text = resources.files("mlayer").joinpath(PRICES_FILE).read_text(encoding="utf-8")
            name = f"mlayer/{PRICES_FILE}"
        else:
            text = path.read_text(encoding="utf-8")
            name = str(path)
    except OSError as exc:
        raise ConfigError(f"cannot read price file {path}: {exc.strerror}; check --prices") from exc
    try:
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON ({exc}); fix it or drop --prices") from exc
    if not isinstance(data, dict) or not isinstance(data.get("regions"), dict):
        raise ConfigError(
            f'{name} has no "regions" object; see mlayer/{PRICES_FILE} for the expected shape'
        )
    return data, name


def _decimal(value: Any, what: str, name: str) -> Decimal:
    if not isinstance(value, Decimal) or value < 0:
        raise ConfigError(f"{name}: {what} must be a non-negative number, not {value!r}")
    return value


def load_prices(
    region: str,
    arch: str,
    *,
    path: Path | None = None,
    price_gb_s: Decimal | None = None,
    price_requests: Decimal | None = None,
    price_storage: Decimal | None = None,
) -> Prices:
    """The prices for ``region`` and ``arch`` from the price file, with flag overrides applied.

    ``price_gb_s`` replaces the tiered duration price with one flat price;
    ``price_requests`` is USD per million requests; ``price_storage`` USD per GB-s of
    ephemeral storage over 512 MB. A region missing from the file needs all three.

    Raises:
        ConfigError: the price file is unreadable or malformed, or has no prices for the
            region or architecture and the overrides do not fill the gap.
    """
    data, name = _read_price_data(path)
    regions: dict[str, Any] = data["regions"]
    free = data.get("free_tier", {})
    free_requests = _decimal(free.get("requests", ZERO), "free_tier.requests", name)
    free_gb_s = _decimal(free.get("gb_s", ZERO), "free_tier.gb_s", name)
    as_of = str(data.get("as_of", "unknown"))
    overridden = tuple(
        flag
        for flag, value in (
            ("--price-gb-s", price_gb_s),
            ("--price-requests", price_requests),
            ("--price-storage", price_storage),
        )
        if value is not None
    )
    entry = regions.get(region)
    if entry is None:
        if price_gb_s is None or price_requests is None or price_storage is None:
            missing = [
                flag
                for flag, value in (
                    ("--price-gb-s", price_gb_s),
                    ("--price-requests", price_requests),
                    ("--price-storage", price_storage),
                )
                if value is None
            ]
            raise ConfigError(
                f"no prices for region {region} in {name} (prices as of {as_of}); it has "
                f"{', '.join(sorted(regions))}. Pass --region with one of those, or give this "
                f"region's prices with --price-gb-s, --price-requests and --price-storage "
                f"(missing: {', '.join(missing)}), or a price file with --prices FILE"
            )
        return Prices(
            region=region,
            arch=arch,
            tiers=(Tier(None, price_gb_s),),
            requests_per_million=price_requests,
            storage_gb_s=price_storage,
            free_requests=free_requests,
            free_gb_s=free_gb_s,
            as_of="given by flags",
            source="--price-gb-s, --price-requests, --price-storage",
            overridden=overridden,
        )
    where = f"{name} regions.{region}"
    durations = entry.get("duration", {})
    if arch not in durations:
        raise ConfigError(
            f"{where} has no duration prices for {arch} (it has "
            f"{', '.join(sorted(durations)) or 'none'}); pass --price-gb-s or use --arch "
            f"{' / '.join(sorted(durations)) or 'x86_64'}"
        )
    tiers: list[Tier] = []
    for index, raw in enumerate(durations[arch]):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}.duration.{arch}[{index}] must be an object")
        up_to = raw.get("up_to_gb_s")
        tiers.append(
            Tier(
                None
                if up_to is None
                else _decimal(up_to, f"duration.{arch}[{index}].up_to_gb_s", where),
                _decimal(raw.get("price_gb_s"), f"duration.{arch}[{index}].price_gb_s", where),
            )
        )
    if not tiers or tiers[-1].up_to_gb_s is not None:
        raise ConfigError(f"{where}.duration.{arch}: the last tier must have up_to_gb_s null")
    bounds = [t.up_to_gb_s for t in tiers[:-1]]
    checked = [b for b in bounds if b is not None]
    if len(checked) != len(bounds) or checked != sorted(set(checked)):
        raise ConfigError(
            f"{where}.duration.{arch}: tier boundaries must be numbers that increase, the "
            "last tier's null"
        )
    if price_gb_s is not None:
        tiers = [Tier(None, price_gb_s)]
    sources = data.get("sources", {})
    source = "; ".join(
        str(s)
        for s in (
            entry.get("duration_source"),
            entry.get("requests_source"),
            entry.get("ephemeral_storage_source"),
            sources.get("aws") if isinstance(sources, dict) else None,
        )
        if s
    )
    return Prices(
        region=region,
        arch=arch,
        tiers=tuple(tiers),
        requests_per_million=price_requests
        if price_requests is not None
        else _decimal(entry.get("requests_per_million"), "requests_per_million", where),
        storage_gb_s=price_storage
        if price_storage is not None
        else _decimal(entry.get("ephemeral_storage_gb_s"), "ephemeral_storage_gb_s", where),
        free_requests=free_requests,
        free_gb_s=free_gb_s,
        as_of=as_of,
        source=source or name,
        overridden=overridden,
    )


def price_regions(path: Path | None = None) -> list[str]:
    """The regions the price file has prices for."""
    data, _ = _read_price_data(path)
    return sorted(data["regions"])


@dataclass(frozen=True)
class SnapStartPrices:
    """SnapStart's own prices in one region: the snapshot cache and each restore.

    ``cache_gb_s``: USD per GB-s of the function's memory, per published version with
    SnapStart, while its snapshot is cached (at least ``cache_minimum_hours`` a version).
    ``restore_gb``: USD per GB of memory restored, per restore. A restore's Billed Restore
    Duration is billed at the duration price (:class:`Prices`), not here. ``same_as``: the
    region whose figures these are when the price file has none stated for ``region``, and
    ``why`` says so (shown to the user).
    """

    region: str
    cache_gb_s: Decimal
    restore_gb: Decimal
    cache_minimum_hours: Decimal
    as_of: str
    source: str
    same_as: str | None = None
    why: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "cache_gb_s": float(self.cache_gb_s),
            "restore_gb": float(self.restore_gb),
            "cache_minimum_hours": float(self.cache_minimum_hours),
            "as_of": self.as_of,
            "source": self.source,
            "same_as": self.same_as,
            "why": self.why,
        }


def snapstart(region: str, *, path: Path | None = None) -> SnapStartPrices:
    """SnapStart's prices for ``region`` from the price file (``regions.<region>.snapstart``).

    An entry ``{"same_as": "<region>", "why": ...}`` uses another region's figures and says
    why; a region the file does not have uses :data:`DEFAULT_PRICING_REGION`'s, saying so.

    Raises:
        ConfigError: the price file is unreadable or its SnapStart entry is missing or
            malformed.
    """
    data, name = _read_price_data(path)
    regions: dict[str, Any] = data["regions"]
    same_as: str | None = None
    why: str | None = None
    looked_up = region
    if region not in regions:
        looked_up = same_as = DEFAULT_PRICING_REGION
        why = (
            f"{name} has no prices for {region}; SnapStart's are {DEFAULT_PRICING_REGION}'s "
            "(pass --prices FILE with this region's to change that)"
        )
    for _ in range(len(regions)):
        entry = regions.get(looked_up, {}).get("snapstart")
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{name} has no SnapStart prices for {looked_up}: add "
                f"regions.{looked_up}.snapstart.cache_gb_s (USD per GB-s cached) and "
                f"regions.{looked_up}.snapstart.restore_gb (USD per GB restored), or pass "
                "--prices FILE with them"
            )
        if "same_as" not in entry:
            break
        looked_up = same_as = str(entry["same_as"])
        why = str(entry.get("why") or f"{region} uses {looked_up}'s SnapStart prices")
    else:
        raise ConfigError(f"{name}: the snapstart same_as entries of {region} form a loop")
    where = f"{name} regions.{looked_up}.snapstart"
    sources = "; ".join(
        str(entry[key])
        for key in ("cache_source", "cache_minimum_source", "restore_source")
        if entry.get(key)
    )
    return SnapStartPrices(
        region=region,
        cache_gb_s=_decimal(entry.get("cache_gb_s"), "cache_gb_s", where),
        restore_gb=_decimal(entry.get("restore_gb"), "restore_gb", where),
        cache_minimum_hours=_decimal(
            entry.get("cache_minimum_hours", ZERO), "cache_minimum_hours", where
        ),
        as_of=str(entry.get("as_of", data.get("as_of", "unknown"))),
        source=sources or where,
        same_as=same_as,
        why=why,
    )
