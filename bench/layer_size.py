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

Usage: python bench/layer_size.py [--runs 10] [--no-cross] [--quiet-load 0.7 --max-wait 1200]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cli"))

from mlayer.archive import dir_size, write_zip  # noqa: E402
from mlayer.deps_layer import DepsBuildOptions, build_deps  # noqa: E402
from mlayer.targets import Target  # noqa: E402

REQUIREMENTS = ROOT / "requirements.txt"

COLD_START = r"""
import json, sys, time
started = float(sys.argv[1])
sys.path[:0] = sys.argv[2:5]
import lambda_function
records = [{"id": str(i), "text": t} for i, t in
           enumerate(["great product, works well", "broke after a day"] * 50)]
response = lambda_function.lambda_handler({"records": records}, None)
assert response["counts"]["predicted"] == 100, response["counts"]
print(json.dumps({"seconds": time.time() - started}))
"""


def naive_install(out: Path, target: Target) -> Path:
    """pip install --target as a user would (pip compiles for its own interpreter)."""
    layer = out / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--target", str(layer), *target.pip_target_args(), "-r", str(REQUIREMENTS)],
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


def cold_starts(layers: list[Path], model_dir: Path, runs: int) -> list[list[float]]:
    """Seconds from interpreter start to 100 predictions, per layer: every run's.

    Runs are interleaved (one of each layer per round), so a load change on this shared
    machine hits every layer alike instead of whichever was measured at the time.
    """
    env = {"PATH": os.environ.get("PATH", ""), "MODEL_DIR": str(model_dir), "HOME": "/tmp"}
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    times: list[list[float]] = [[] for _ in layers]
    for _ in range(runs):
        for i, layer in enumerate(layers):
            site = layer / "lib" / version / "site-packages"
            proc = subprocess.run(
                [sys.executable, "-I", "-S", "-B", "-c", COLD_START, repr(time.time()),
                 str(ROOT / "function"), str(site), str(layer)],
                capture_output=True, text=True, env=env, cwd=ROOT / "function",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-cross", action="store_true", help="skip python3.13 arm64")
    parser.add_argument("--quiet-load", type=float, help="wait for a 1-min load below this")
    parser.add_argument("--max-wait", type=float, default=1200, help="seconds, at most")
    args = parser.parse_args()
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
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"Pins: {REQUIREMENTS.name}; cold start = median (best) of {args.runs} fresh processes, "
          "interpreter start to 100 predictions of the text model (real handler); "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
