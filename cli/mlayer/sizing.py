"""Sizing a function's execution environment for a stored model: /tmp and memory.

A store-backed function downloads its model into /tmp (ephemeral storage, 512-10,240 MB;
over 512 MB is billed per GB-second) and loads it into memory (128-10,240 MB). The needs
come from the build: the archive's size and its unpacked files, and the peak memory the
smoke test measured while the real function loaded the model and scored records.

Lambda counts both in MB of 2^20 bytes. Pure functions: no AWS calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 1 << 20
EPHEMERAL_MIN_MB = 512
EPHEMERAL_MAX_MB = 10_240
MEMORY_MAX_MB = 10_240
# /tmp is sized in these steps: a few MB of slack make no difference to the bill, and a
# round figure reads better in the console.
EPHEMERAL_STEP_MB = 128
MEMORY_STEP_MB = 64
# The smoke test scores a handful of records; a batch of thousands allocates its inputs,
# features and outputs on top of the loaded model, and the allocator does not return
# everything at once.
MEMORY_HEADROOM = 1.25
MEMORY_SLACK_MB = 128


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


@dataclass(frozen=True)
class EnvironmentSize:
    """What a function serving one stored model needs."""

    ephemeral_mb: int  # EphemeralStorage.Size to set
    memory_mb: int  # the smallest MemorySize recommended
    peak_mb: float | None  # the smoke test's measured peak (None: not measured)
    archive_bytes: int
    unpacked_bytes: int

    def describe(self) -> str:
        peak = (
            f"the smoke test's measured peak {self.peak_mb:,.0f} MB"
            if self.peak_mb
            else "not measured (no smoke test): estimated from the files"
        )
        return (
            f"/tmp {self.ephemeral_mb:,} MB (the archive and its unpacked files, "
            f"{(self.archive_bytes + self.unpacked_bytes) / MIB:,.0f} MB) and at least "
            f"{self.memory_mb:,} MB of memory ({peak})"
        )


def environment_size(
    archive_bytes: int, unpacked_bytes: int, peak_mb: float | None
) -> EnvironmentSize:
    """The /tmp and memory a function needs for a stored model.

    /tmp holds the archive and its unpacked files with 10% to spare: the function unpacks
    while it downloads, so the archive never lands there, but /tmp may hold other files and
    a re-initialised environment keeps the previous files until the new ones are verified.
    Memory: the measured peak with a quarter on top, or without a measurement twice the
    files (a loaded model is at least as big as its pickles).
    """
    needed_mb = (archive_bytes + unpacked_bytes) * 1.1 / MIB
    ephemeral = max(EPHEMERAL_MIN_MB, _round_up(needed_mb, EPHEMERAL_STEP_MB))
    if peak_mb:
        memory = peak_mb * MEMORY_HEADROOM + MEMORY_SLACK_MB
    else:
        memory = 2 * unpacked_bytes / MIB + 512
    return EnvironmentSize(
        # Capped at Lambda's maximum: past it only the unpacked files must fit (the function
        # streams), and the model layer build refuses files over 10,240 MB.
        ephemeral_mb=min(ephemeral, EPHEMERAL_MAX_MB),
        memory_mb=min(MEMORY_MAX_MB, max(128, _round_up(memory, MEMORY_STEP_MB))),
        peak_mb=peak_mb,
        archive_bytes=archive_bytes,
        unpacked_bytes=unpacked_bytes,
    )


def memory_problem(size: EnvironmentSize, memory_mb: int) -> tuple[str, bool] | None:
    """(message, refuse) when ``memory_mb`` is not enough for the model; None when it is.

    Below the measured peak the environment would run out of memory while loading: refuse.
    Between the peak and the recommendation: warn.
    """
    if memory_mb >= size.memory_mb:
        return None
    if size.peak_mb and memory_mb < size.peak_mb:
        return (
            f"the function has {memory_mb:,} MB of memory but loading and scoring this model "
            f"peaked at {size.peak_mb:,.0f} MB in the smoke test: it would run out of memory at "
            f"init. Pass --memory {size.memory_mb} (recommended), or at least "
            f"{math.ceil(size.peak_mb)}",
            True,
        )
    return (
        f"the function has {memory_mb:,} MB of memory; {size.memory_mb:,} MB is recommended "
        f"for this model ({size.describe()}): pass --memory {size.memory_mb}",
        False,
    )
