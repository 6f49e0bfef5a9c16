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

Usage: python bench/layer_size.py [--runs 10] [--no-cross] [--quiet-load 0.7 --max-wait 1200]
       python bench/layer_size.py --pandas [--runs 5]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, help="cold starts per layer (default 10; 5 with --pandas)"
    )
    parser.add_argument("--no-cross", action="store_true", help="skip python3.13 arm64")
    parser.add_argument("--quiet-load", type=float, help="wait for a 1-min load below this")
    parser.add_argument("--max-wait", type=float, default=1200, help="seconds, at most")
    parser.add_argument("--pandas", action="store_true", help="what pandas adds (another table)")
    args = parser.parse_args()
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
