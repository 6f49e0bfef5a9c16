"""The build cache the tests share: one per test session, across pytest-xdist workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_build_cache(factory: pytest.TempPathFactory) -> Path:
    """``<session basetemp>/mlayer-build-cache``. Under pytest-xdist each worker has its own
    basetemp below one shared root: the cache goes there, so a layer built by one worker is
    reused by the others (mlayer's cache writes each entry's files atomically)."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    cache = root / "mlayer-build-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache
