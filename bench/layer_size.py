"""Dependency layer size and cold start: naive ``pip install --target`` vs ``mlayer build-deps``.

Prints one table for the same pins (requirements.txt):

- naive: ``pip install --target`` as pip leaves it (pip writes timestamp pycs for the local
  interpreter: the best case for naive; zipped with mtimes lost, they would all be stale);
- slim, no bytecode: ``mlayer build-deps --bytecode none`` (slimmed and stripped);
- mlayer, bytecode for imports only: ``--bytecode imports``;
- mlayer, ``--bytecode all``: unchecked-hash bytecode in __pycache__ beside every source;
- mlayer (default, ``--bytecode sourceless``): each module's unchecked-hash .pyc replaces its
  .py (loaded without source).

Sizes: unzipped and zipped (deflate level 9, as mlayer writes) in MB = 10^6 bytes (Lambda's
own "MB" is 2^20: divide by 1.048576), and files. Cold start: a fresh ``python -I -S -B``
(nothing written back, as in Lambda's read-only /opt) whose sys.path is the function dir,
the layer and the standard library, from interpreter start to the first 100 predictions of
the text model through the real handler; the median of ``--runs`` runs (default 10).
Layers for python3.13 arm64 are built too (sizes only: they cannot run on x86_64); their
bytecode needs a Python 3.13 here (PATH, pyenv or uv), else the row says it has none.
The 1-minute load average before and after the cold starts is printed: on a busy machine
every figure grows, the ratios less so.

``--pandas`` prints another table instead: what pandas adds to mlayer's layer (slimmed, with
sourceless bytecode, as build-deps ships it) for python3.11 x86_64 (requirements.txt + pandas
2.3.3, and + pandas 3.1.1) and python3.13 x86_64 (tests/pins/current-py313.txt + pandas 3.1.1),
and what importing it costs in fresh processes on the layer: ``import pandas`` after numpy, and
the function's own imports (numpy, joblib, scikit-learn) without and with pandas in the layer
(scikit-learn imports pandas when it is installed: ``sklearn/utils/fixes.py``, checked); median
of ``--runs`` (default 5 here).

``--encoders`` prints another table instead: the python3.13 x86_64 layer with the current pins
(tests/pins/current-py313.txt), built as build-deps builds it, zipped by each lossless encoder
against the largest zip a direct upload takes (``archive.largest_direct_zip()``): zlib
deflate at level 6 (what ``write_zip`` wrote before it set each entry's level), level 9 (what
it writes now), level 9 or stored (whichever is smaller per file), and zopfli at 1 iteration
with 15 block splits (zopfli's default) or 50, on the files of at least 256 KiB, 64 KiB or on
every file (the rest at level 9). Each file is compressed once per encoder, in ``--jobs``
processes; sizes are the entries' streams plus the zip's headers (exact: checked by writing
the zip build-deps writes and comparing); time is the sum over files of each file's encoding
time (CPU seconds of one core: divide by the cores a build has). Then it checks the zopfli zip:
Python's zipfile and ``unzip -t`` read it, every file byte-identical, and the function, run on
the unzipped layer (Python 3.13), predicts. Duplicate files (same bytes) are counted too: a zip
cannot share them (Lambda refuses symlinks), so they are only reported.

Usage: python bench/layer_size.py [--runs 10] [--no-cross] [--quiet-load 0.7 --max-wait 1200]
       python bench/layer_size.py --pandas [--runs 5]
       python bench/layer_size.py --encoders [--jobs 2]
(--quiet-load: before the cold starts, wait until the 1-minute load average is below it, at
most --max-wait seconds, so the builds' own load has settled.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cli"))

from mlayer import archive  # noqa: E402
from mlayer.archive import dir_size, write_zip  # noqa: E402
from mlayer.build_pip import ensure_pip  # noqa: E402
from mlayer.deps_layer import DepsBuildOptions, build_deps, default_cache_dir  # noqa: E402
from mlayer.interpreters import locate_interpreter  # noqa: E402
from mlayer.targets import Target  # noqa: E402

REQUIREMENTS = ROOT / "requirements.txt"
CURRENT = ROOT / "tests" / "pins" / "current-py313.txt"
# (target, base pins, pandas pin): pandas 3 needs numpy >= 2.0.2 below Python 3.14 (checked:
# pandas 3.1.1 has manylinux_2_24 cp311 wheels and installs beside numpy 2.2.6).
PANDAS_CASES = (
    ("python3.11", REQUIREMENTS, "pandas==2.3.3"),
    ("python3.11", REQUIREMENTS, "pandas==3.1.1"),
    ("python3.13", CURRENT, "pandas==3.1.1"),
)
IMPORTS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
started = time.perf_counter()
import numpy
numpy_done = time.perf_counter()
if sys.argv[2] == "pandas":
    import pandas
else:  # what the function imports to load a scikit-learn model
    import joblib, sklearn.linear_model, sklearn.feature_extraction.text
print(json.dumps({"numpy": numpy_done - started, "then": time.perf_counter() - numpy_done,
                  "pandas_loaded": "pandas" in sys.modules}))
"""

COLD_START = r"""
import json, sys, time
started = float(sys.argv[1])
sys.path[:0] = sys.argv[2:5]
import lambda_function
records = [{"id": str(i), "text": t} for i, t in
           enumerate(["great product, works well", "broke after a day"] * 50)]
if len(sys.argv) > 5:  # another model's records, repeated to 100
    given = json.loads(sys.argv[5])
    records = [given[i % len(given)] for i in range(100)]
response = lambda_function.lambda_handler({"records": records}, None)
assert response["counts"]["predicted"] == 100, response["counts"]
print(json.dumps({"seconds": time.time() - started}))
"""


def naive_install(
    out: Path, target: Target, requirements: Path = REQUIREMENTS, python: str = sys.executable
) -> Path:
    """pip install --target as a user would (pip compiles for its own interpreter: give
    ``python`` the target's to have bytecode it can use)."""
    layer = out / "python"
    # mlayer's pinned pip (what a user with a current pip gets), not this interpreter's own
    pip = ensure_pip(default_cache_dir(), python)
    subprocess.run(
        [*pip.command(), "install", "-q", "--disable-pip-version-check",
         "--target", str(layer), *target.pip_target_args(), "-r", str(requirements)],
        check=True, capture_output=True,
    )  # fmt: skip
    return layer


def sizes(layer: Path, work: Path) -> tuple[int, int, int]:
    unzipped, files = dir_size(layer)
    zipped = write_zip(layer, work / "size.zip", prefix="python").zip_bytes
    (work / "size.zip").unlink()
    return unzipped, zipped, files


def unzip(zip_path: Path, out: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out)
    return out / "python"


def cold_starts(
    layers: list[Path],
    model_dir: Path,
    runs: int,
    *,
    python: str = sys.executable,
    model_dirs: list[Path] | None = None,
    envs: list[dict[str, str]] | None = None,
    records: list[Any] | None = None,
) -> list[list[float]]:
    """Seconds from interpreter start to 100 predictions, per layer: every run's.

    Runs are interleaved (one of each layer per round), so a load change on this shared
    machine hits every layer alike instead of whichever was measured at the time.
    ``model_dirs`` and ``envs``: per layer, a model directory and settings of its own;
    ``records``: the model's records (repeated to 100) instead of the text model's.
    """
    env = {"PATH": os.environ.get("PATH", ""), "MODEL_DIR": str(model_dir), "HOME": "/tmp"}
    version = subprocess.run(
        [python, "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    extra = [] if records is None else [json.dumps(records)]
    times: list[list[float]] = [[] for _ in layers]
    for _ in range(runs):
        for i, layer in enumerate(layers):
            site = layer / "lib" / version / "site-packages"
            own = {**env, **(envs[i] if envs else {})}
            if model_dirs:
                own["MODEL_DIR"] = str(model_dirs[i])
            proc = subprocess.run(
                [python, "-I", "-S", "-B", "-c", COLD_START, repr(time.time()),
                 str(ROOT / "function"), str(site), str(layer), *extra],
                capture_output=True, text=True, env=own, cwd=ROOT / "function",
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"cold start failed on {layer}:\n{proc.stderr[-2000:]}")
            times[i].append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
    return times


def wait_for_quiet(threshold: float, max_wait: float) -> None:
    """Sleep until the 1-minute load average is below ``threshold`` (or ``max_wait`` passed)."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        print(f"load {os.getloadavg()[0]:.2f} >= {threshold}: waiting", file=sys.stderr)
        time.sleep(30)


def import_times(
    python: str, base: Path, with_pandas: Path, runs: int
) -> dict[str, list[dict[str, Any]]]:
    """Fresh ``python -I -S -B`` processes, interleaved round by round (a load change on a
    shared machine then hits all three alike): the function's imports on the layer without
    pandas and on the one with it, and ``import pandas`` after numpy on the latter."""
    cases = {"without": (base, "sklearn"), "with": (with_pandas, "sklearn"),
             "pandas": (with_pandas, "pandas")}  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (layer, mode) in cases.items():
            proc = subprocess.run(
                [python, "-I", "-S", "-B", "-c", IMPORTS, str(layer), mode],
                capture_output=True, text=True, cwd="/",
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"imports failed on {layer}:\n{proc.stderr[-2000:]}")
            results[name].append(json.loads(proc.stdout))
    return results


def _median(runs: list[dict[str, Any]], *keys: str) -> str:
    """The median over ``runs`` of the sum of ``keys``, in seconds, two decimals."""
    return f"{statistics.median(sum(r[k] for k in keys) for r in runs):.2f}"


def pandas_table(runs: int) -> None:
    """What pandas adds to the layer, and what importing it costs (see the module docstring)."""
    header = ("target", "pins", "without pandas MB (zip)", "with MB (zip)", "pandas adds MB",
              "zip adds MB", "import pandas s", "function imports s, without / with",
              "sklearn imports pandas")  # fmt: skip
    lines = [header]
    with tempfile.TemporaryDirectory(prefix="mlayer-bench-pandas-") as tmp:
        work = Path(tmp)
        for n, (runtime, base, pin) in enumerate(PANDAS_CASES):
            python = locate_interpreter(runtime.removeprefix("python")).path
            if python is None:
                raise SystemExit(f"no {runtime} interpreter here: bytecode and imports need one")
            with_pandas = work / f"with-{n}.txt"
            with_pandas.write_text(base.read_text() + f"\n{pin}\n")
            built = {}
            for label, requirements in (("base", base), ("pandas", with_pandas)):
                print(f"{runtime} {requirements.name} ...", file=sys.stderr)
                result = build_deps(
                    DepsBuildOptions(requirements=requirements, runtime=runtime, arch="x86_64",
                                     python=python, layers_dir=work / f"l-{n}-{label}")
                )  # fmt: skip
                built[label] = result
            added = {k: v for k, v in built["pandas"].manifest.packages.items()
                     if k not in built["base"].manifest.packages}  # fmt: skip
            layers = {k: unzip(r.zip_path, work / f"u-{n}-{k}") for k, r in built.items()}
            times = import_times(python, layers["base"], layers["pandas"], runs)
            b, p = built["base"].manifest.to_dict(), built["pandas"].manifest.to_dict()
            lines.append((
                f"{runtime} x86_64",
                f"{base.name} + " + ", ".join(f"{k} {v}" for k, v in sorted(added.items())),
                f"{b['unzipped_bytes'] / 1e6:.1f} ({b['zip_bytes'] / 1e6:.1f})",
                f"{p['unzipped_bytes'] / 1e6:.1f} ({p['zip_bytes'] / 1e6:.1f})",
                f"{(p['unzipped_bytes'] - b['unzipped_bytes']) / 1e6:.1f}",
                f"{(p['zip_bytes'] - b['zip_bytes']) / 1e6:.1f}",
                _median(times["pandas"], "then"),
                f"{_median(times['without'], 'numpy', 'then')} / "
                f"{_median(times['with'], 'numpy', 'then')}",
                "yes" if all(r["pandas_loaded"] for r in times["with"]) else "no",
            ))  # fmt: skip
    print(f"MB = 10^6 bytes; zip at mlayer's deflate level 9; import times: median of {runs} "
          "fresh processes (python -I -S -B, the layer first on sys.path), interleaved; "
          "import pandas: after numpy; function imports: numpy, joblib, sklearn.linear_model, "
          f"sklearn.feature_extraction.text; 1-min load {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print_table(lines)


def print_table(lines: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


# (label, zopfli min bytes or None for deflate only, block splits)
ZOPFLI_ROWS = (
    ("zopfli, files >= 256 KiB", 256 * 1024, 15),
    ("zopfli, files >= 64 KiB", 64 * 1024, 15),
    ("zopfli, every file", 0, 15),
    ("zopfli 50 splits, files >= 256 KiB", 256 * 1024, 50),
)


def _encode_file(job: tuple[str, bool]) -> dict[str, Any]:
    """One file's stream sizes and encoding seconds: deflate 6 and 9, stored, zopfli."""
    import zlib

    path, big = job
    data = Path(path).read_bytes()
    out: dict[str, Any] = {"size": len(data)}
    for level in (6, 9):
        started = time.perf_counter()
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        out[f"d{level}"] = len(compressor.compress(data) + compressor.flush())
        out[f"d{level}_s"] = time.perf_counter() - started
    for splits in (15, 50) if big else (15,):
        if splits == 50 and len(data) < 256 * 1024:
            continue
        started = time.perf_counter()
        out[f"z{splits}"] = len(archive.zopfli_deflate(data, 1, splits))
        out[f"z{splits}_s"] = time.perf_counter() - started
    return out


def encoders_table(jobs: int) -> None:
    """The current-pins python3.13 layer under each lossless encoder (see the docstring)."""
    import hashlib
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    if not archive.zopfli_available():
        raise SystemExit("zopfli is not installed: pip install 'mlayer[zopfli]'")
    python = locate_interpreter("3.13").path
    if python is None:
        raise SystemExit("no python3.13 interpreter here: the layer's bytecode needs one")
    limit = archive.largest_direct_zip()
    with tempfile.TemporaryDirectory(prefix="mlayer-bench-encoders-") as tmp:
        work = Path(tmp)
        print("building the python3.13 layer (current pins) ...", file=sys.stderr)
        result = build_deps(
            DepsBuildOptions(requirements=CURRENT, runtime="python3.13", arch="x86_64",
                             python=python, layers_dir=work / "layers", zip_encoder="deflate")
        )  # fmt: skip
        layer = unzip(result.zip_path, work / "unzipped")
        files = list(archive.iter_files(layer))
        names = [archive._join("python", p.relative_to(layer).as_posix()) for p in files]
        # every entry: a local header and a central record with its name, then the end record
        overhead = sum(30 + 46 + 2 * len(n.encode()) for n in names) + 22
        print(f"encoding {len(files)} files in {jobs} processes ...", file=sys.stderr)
        with ProcessPoolExecutor(jobs) as pool:
            stats = list(pool.map(_encode_file, [(str(p), True) for p in files], chunksize=4))
        digests: dict[str, list[int]] = {}
        for path, st in zip(files, stats, strict=True):
            digests.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(st["size"])
        duplicate_bytes = sum(sizes[0] * (len(sizes) - 1) for sizes in digests.values())

        def row(label: str, sizes: list[int], seconds: float) -> tuple[str, ...]:
            total = sum(sizes) + overhead
            margin = limit - total
            return (label, f"{total:,}", f"{total / 1e6:.2f}",
                    f"{'under' if margin >= 0 else 'over'} by {abs(margin):,} "
                    f"({100 * abs(margin) / limit:.2f}%)", f"{seconds:,.0f}")  # fmt: skip

        lines: list[tuple[str, ...]] = [("encoder", "zipped bytes", "MB", f"vs the direct limit ({limit:,})",
                  "encode s (1 core)")]  # fmt: skip
        for level in (6, 9):
            label = f"deflate level {level}" + (" (write_zip before)" if level == 6 else "")
            lines.append(row(label, [s[f"d{level}"] for s in stats],
                             sum(s[f"d{level}_s"] for s in stats)))  # fmt: skip
        lines.append(row("deflate 9 or stored, per file",
                         [min(s["d9"], s["size"]) for s in stats],
                         sum(s["d9_s"] for s in stats)))  # fmt: skip
        for label, min_bytes, splits in ZOPFLI_ROWS:
            sizes, seconds = [], 0.0
            for s in stats:
                if s["size"] >= min_bytes and f"z{splits}" in s:
                    sizes.append(min(s["d9"], s[f"z{splits}"]))
                    seconds += s["d9_s"] + s[f"z{splits}_s"]
                else:
                    sizes.append(s["d9"])
                    seconds += s["d9_s"]
            lines.append(row(label, sizes, seconds))
        # The zip build-deps writes with --zip-encoder zopfli, checked against the sums above.
        pairs = sorted(zip(files, names, strict=True), key=lambda pair: pair[1])
        started = time.perf_counter()
        written = write_zip(pairs, work / "zopfli.zip", encoder="zopfli")
        wall = time.perf_counter() - started
        expected = overhead + sum(
            min(s["d9"], s["z15"]) if s["size"] >= archive.ZOPFLI_MIN_BYTES else s["d9"]
            for s in stats
        )
        if written.zip_bytes != expected:
            raise SystemExit(f"zopfli zip is {written.zip_bytes:,} bytes, sums say {expected:,}")
        check = _check_zip(written.path, layer, work, python)
        print(f"Layer: python3.13 x86_64, {CURRENT.name} ({len(files):,} files, "
              f"{sum(s['size'] for s in stats):,} bytes unzipped); MB = 10^6 bytes; "
              f"duplicate files: {duplicate_bytes:,} bytes; "
              f"write_zip(encoder='zopfli') took {wall:.0f} s wall here "
              f"(1-min load {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs); {check}")  # fmt: skip
        print_table(lines)
        shutil.rmtree(work / "unzipped", ignore_errors=True)


def _check_zip(zip_path: Path, layer: Path, work: Path, python: str) -> str:
    """zipfile and ``unzip -t`` read the zip, every file is the layer's, the function predicts."""
    import shutil
    import zipfile

    with zipfile.ZipFile(zip_path) as zipped:
        if zipped.testzip() is not None:
            raise SystemExit("zipfile: a CRC does not match")
        for info in zipped.infolist():
            if zipped.read(info) != (layer / info.filename.removeprefix("python/")).read_bytes():
                raise SystemExit(f"{info.filename} differs from the layer's file")
    said = ["zipfile reads every entry byte-identical"]
    if shutil.which("unzip"):
        proc = subprocess.run(["unzip", "-tq", str(zip_path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"unzip -t failed: {proc.stdout}{proc.stderr}")
        said.append("unzip -t: no errors")
    unzipped = unzip(zip_path, work / "check")
    model_dir = work / "model"
    subprocess.run(
        [python, str(ROOT / "training" / "train.py"), "--out", str(model_dir)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(unzipped)},
    )  # fmt: skip
    proc = subprocess.run(
        [python, "-I", "-S", "-B", "-c", COLD_START, repr(time.time()), str(ROOT / "function"),
         str(unzipped), str(unzipped)],
        capture_output=True, text=True, cwd=ROOT / "function",
        env={"PATH": os.environ.get("PATH", ""), "MODEL_DIR": str(model_dir), "HOME": "/tmp"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the function failed on the zopfli layer:\n{proc.stderr[-2000:]}")
    said.append("the function on the unzipped layer predicted 100 records (python3.13)")
    return "; ".join(said)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, help="cold starts per layer (default 10; 5 with --pandas)"
    )
    parser.add_argument("--no-cross", action="store_true", help="skip python3.13 arm64")
    parser.add_argument("--quiet-load", type=float, help="wait for a 1-min load below this")
    parser.add_argument("--max-wait", type=float, default=1200, help="seconds, at most")
    parser.add_argument("--pandas", action="store_true", help="what pandas adds (another table)")
    parser.add_argument(
        "--encoders", action="store_true", help="the python3.13 layer under each zip encoder"
    )
    parser.add_argument("--jobs", type=int, default=2, help="--encoders: processes")
    args = parser.parse_args()
    if args.encoders:
        encoders_table(args.jobs)
        return
    if args.pandas:
        pandas_table(args.runs or 5)
        return
    args.runs = args.runs or 10
    here = Target("python3.11", "x86_64")
    rows: list[tuple[str, str, int, int, int, list[float] | None]] = []
    with tempfile.TemporaryDirectory(prefix="mlayer-bench-") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        subprocess.run(
            [sys.executable, str(ROOT / "training" / "train.py"), "--out", str(model_dir)],
            check=True, capture_output=True,
        )  # fmt: skip
        print("naive pip install --target ...", file=sys.stderr)
        naive = naive_install(work / "naive", here)
        rows.append(("naive pip --target", "python3.11 x86_64", *sizes(naive, work), None))
        measured = [naive]
        variants = [("slim, no bytecode", "none"), ("mlayer --bytecode imports", "imports"),
                    ("mlayer --bytecode all", "all"),
                    ("mlayer build-deps (default: sourceless)", "sourceless")]  # fmt: skip
        for label, mode in variants:
            print(f"{label} ...", file=sys.stderr)
            result = build_deps(
                DepsBuildOptions(requirements=REQUIREMENTS, runtime="python3.11",
                                 arch="x86_64", bytecode=mode, layers_dir=work / f"l-{mode}")
            )  # fmt: skip
            layer = unzip(result.zip_path, work / f"u-{mode}")
            m = result.manifest
            rows.append((label, "python3.11 x86_64", m.unzipped_bytes, m.zip_bytes, m.files,
                         None))  # fmt: skip
            measured.append(layer)
        if args.quiet_load is not None:
            wait_for_quiet(args.quiet_load, args.max_wait)
        print(f"cold starts: {args.runs} rounds ...", file=sys.stderr)
        load_before = os.getloadavg()[0]
        for i, seconds in enumerate(cold_starts(measured, model_dir, args.runs)):
            rows[i] = (*rows[i][:5], seconds)
        load_after = os.getloadavg()[0]
        if not args.no_cross:
            cross = Target("python3.13", "arm64")
            print("naive / mlayer for python3.13 arm64 ...", file=sys.stderr)
            naive13 = naive_install(work / "naive13", cross)
            rows.append(("naive pip --target", "python3.13 arm64", *sizes(naive13, work), None))
            result = build_deps(
                DepsBuildOptions(requirements=REQUIREMENTS, runtime="python3.13", arch="arm64",
                                 layers_dir=work / "l-cross")
            )  # fmt: skip
            m = result.manifest
            note = (f" ({m.bytecode_mode})" if m.bytecode
                    else " (no bytecode: no Python 3.13 here)")  # fmt: skip
            rows.append((f"mlayer build-deps{note}", "python3.13 arm64", m.unzipped_bytes,
                         m.zip_bytes, m.files, None))  # fmt: skip
    base_runs = next(r[5] for r in rows if r[0] == "slim, no bytecode")
    base = statistics.median(base_runs) if base_runs else None
    header = ("layer", "target", "unzipped MB", "zipped MB", "files", "cold start s",
              "best s", "vs no bytecode")  # fmt: skip
    lines = [header]
    for label, target_text, unzipped, zipped, files, runs in rows:
        median = statistics.median(runs) if runs else None
        lines.append((
            label, target_text, f"{unzipped / 1e6:.1f}", f"{zipped / 1e6:.1f}", str(files),
            "-" if median is None else f"{median:.2f}",
            "-" if not runs else f"{min(runs):.2f}",
            "-" if median is None or not base else f"{100 * median / base:.0f}%",
        ))  # fmt: skip
    print(f"Pins: {REQUIREMENTS.name}; cold start = median (best) of {args.runs} fresh processes, "
          "interpreter start to 100 predictions of the text model (real handler); "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print_table(lines)


if __name__ == "__main__":
    main()
