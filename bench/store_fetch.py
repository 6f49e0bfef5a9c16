"""The model store's fetch alone, against the same three steps one after another.

    python bench/store_fetch.py                           # the ~1 GB forest's archive, 3 rounds
    python bench/store_fetch.py --mb 140 --repeats 5
    python bench/store_fetch.py --baseline ../main/function/model_store.py   # and another one
    python bench/store_fetch.py --endpoint http://127.0.0.1:PORT   # a moto_server left running

The archive is bench/model_load.py's (the RandomForest of that size, fitted and kept in
``~/.cache/mlayer/bench-models/`` the first time), uploaded to a moto_server on 127.0.0.1
(started here unless ``--endpoint`` names one that has it: ``model_load.py --keep-server``).
Everything runs in this process, each variant once a round in rotating order, into an empty
directory that is removed after each trial (so the page cache holds the object, and no
written file is flushed during the next trial):

- sequential: ``download_file`` to a file with the TransferConfig the store uses for the
  object (``model_store.transfer_config``: one GET on loopback), then the sha256 of the file
  (1 MiB reads), then ``tarfile`` extraction (``filter="data"``): the steps the streamed
  fetch overlaps, without overlap;
- download only: ``download_fileobj`` with the same config into a writer that drops the
  bytes: the floor of any fetch from this endpoint;
- fetch: ``model_store.fetch`` (download, hash and unpack in one pass), with its own
  ``unpack_ms`` and ``verify_ms``;
- baseline fetch (with ``--baseline``): the same from another ``model_store.py`` (e.g. an
  older checkout's), loaded beside this one, so both are timed on the same machine state.

Only the fetch is timed: no imports of numpy or scikit-learn beside it, as a function's init
has (bench/model_load.py measures that whole cold start).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
FUNCTION_DIR = BENCH.parent / "function"
sys.path[:0] = [str(FUNCTION_DIR), str(BENCH)]

import model_load  # noqa: E402

import model_store  # noqa: E402

MB = 1_000_000


class _Drop:
    """A non-seekable file that forgets what is written to it."""

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        return len(data)


Steps = dict[str, float]  # seconds by step; "total" always


def sequential(client: Any, model: Any, out: Path) -> Steps:
    config = model_store.transfer_config(model.archive_bytes, client)
    started = time.perf_counter()
    path = out / "model.tar"
    client.download_file(model_load.BUCKET, model.archive_key, str(path), Config=config)
    downloaded = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == model.archive_sha256
    hashed = time.perf_counter()
    with tarfile.open(path) as archive:
        archive.extractall(out / "model", filter="data")
    done = time.perf_counter()
    return {
        "total": done - started,
        "download": downloaded - started,
        "hash": hashed - downloaded,
        "extract": done - hashed,
    }


def download_only(client: Any, model: Any, out: Path) -> Steps:
    config = model_store.transfer_config(model.archive_bytes, client)
    started = time.perf_counter()
    client.download_fileobj(model_load.BUCKET, model.archive_key, _Drop(), Config=config)
    return {"total": time.perf_counter() - started}


def fetcher(store: ModuleType) -> Callable[[Any, Any, Path], Steps]:
    def fetch(client: Any, model: Any, out: Path) -> Steps:
        started = time.perf_counter()
        fetched = store.fetch(model_load.model_uri(model), out, client=client)
        total = time.perf_counter() - started
        assert (fetched.directory / model_load.FOREST.file).stat().st_size == model.dump_bytes
        return {
            "total": total,
            "unpack": fetched.unpack_ms / 1000,
            "hash": fetched.verify_ms / 1000,
        }

    return fetch


def load_baseline(path: Path) -> ModuleType:
    """Another model_store.py, as its own module (its ``model`` import is this one's)."""
    spec = importlib.util.spec_from_file_location("baseline_model_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=1000, help="the forest's size (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--baseline", type=Path, help="another model_store.py to time beside")
    parser.add_argument("--endpoint", help="a running moto_server")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    model = model_load.ensure_model(model_load.FOREST, args.mb, say)
    variants: dict[str, Callable[[Any, Any, Path], Steps]] = {
        "sequential": sequential,
        "download only": download_only,
        "fetch": fetcher(model_store),
    }
    if args.baseline:
        variants["baseline fetch"] = fetcher(load_baseline(args.baseline))
    with (
        tempfile.TemporaryDirectory(prefix="mlayer-bench-fetch-") as tmp,
        model_load.endpoint(args.endpoint, False, say) as url,
    ):
        client = model_load.s3_client(url)
        model_load.upload(client, [model], say)
        trials: dict[str, list[Steps]] = {name: [] for name in variants}
        names = list(variants)
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                out = Path(tmp) / "out"
                out.mkdir()
                cpu = time.process_time()
                try:
                    result = variants[name](client, model, out)
                finally:
                    shutil.rmtree(out)
                trials[name].append({**result, "cpu": time.process_time() - cpu})
            say(
                f"  {repeat + 1}/{args.repeats}: "
                + ", ".join(f"{name} {trials[name][-1]['total']:.2f} s" for name in names)
            )
    print(
        f"{model.name}: archive {model.archive_bytes / MB:,.1f} MB, {args.repeats} rounds; the "
        "store's download: "
        f"{model_load.describe(model_store_settings(model, url), model.archive_bytes)}"
    )
    print(f"{'':>15}  {'median s':>8}  {'(min)':>6}  {'MB/s':>5}  {'cpu s':>5}  steps (median s)")
    for name in names:
        runs = trials[name]
        steps = ", ".join(
            f"{step} {statistics.median(run[step] for run in runs):.2f}"
            for step in runs[0]
            if step not in ("total", "cpu")
        )
        totals = [run["total"] for run in runs]
        rate = model.archive_bytes / MB / statistics.median(totals)
        cpu = statistics.median(run["cpu"] for run in runs)
        print(
            f"{name:>15}  {statistics.median(totals):8.2f}  {min(totals):6.2f}  {rate:5.0f}  "
            f"{cpu:5.2f}  {steps}"
        )
    print(NOTES)


NOTES = """
- median s (min): wall clock of the variant; MB/s: the archive's size over the median.
- cpu s: this process's CPU time (every thread), median: moto_server's own is not in it.
  On a shared machine it moves less than the wall clock; the fetch is worth its overlap
  only where cores are free for it.
- steps: sequential's three steps; fetch's unpack_ms (reading headers, writing files) and
  verify_ms (hashing) from its Fetched, wall time inside the writer, so they overlap the
  download."""


def model_store_settings(model: Any, url: str) -> dict[str, int]:
    config = model_store.transfer_config(model.archive_bytes, model_load.s3_client(url))
    return {name: getattr(config, name) for name in model_load.SETTINGS}


if __name__ == "__main__":
    main()
