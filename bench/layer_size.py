"""Dependency layer size and cold start: naive ``pip install --target`` vs ``mlayer build-deps``.

Prints one table for the same pins (requirements.txt):

- naive: ``pip install --target`` as pip leaves it (pip writes timestamp pycs for the local
  interpreter: the best case for naive; zipped with mtimes lost, they would all be stale);
- slim, no bytecode: ``mlayer build-deps --bytecode none`` (slimmed and stripped);
- mlayer, bytecode for imports only: ``--bytecode imports``;
- mlayer (default): unchecked-hash bytecode for every module.

Sizes: unzipped and zipped (deflate level 9, as mlayer writes) in MB = 10^6 bytes (Lambda's
own "MB" is 2^20: divide by 1.048576), and files. Cold start: a fresh ``python -I -S -B``
(nothing written back, as in Lambda's read-only /opt) whose sys.path is the function dir,
the layer and the standard library, from interpreter start to the first 100 predictions of
the text model through the real handler; the median of ``--runs`` runs (default 10).
Layers for python3.13 arm64 are built too (sizes only: they cannot run on x86_64).

Usage: python bench/layer_size.py [--runs 10] [--no-cross]
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
from mlayer.deps_layer import DepsBuildOptions, Target, build_deps  # noqa: E402

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


def cold_starts(layers: list[Path], model_dir: Path, runs: int) -> list[float]:
    """Median seconds from interpreter start to 100 predictions, per layer.

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
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-cross", action="store_true", help="skip python3.13 arm64")
    args = parser.parse_args()
    here = Target("python3.11", "x86_64")
    rows: list[tuple[str, str, int, int, int, float | None]] = []
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
                    ("mlayer build-deps (default)", "all")]  # fmt: skip
        for label, mode in variants:
            print(f"{label} ...", file=sys.stderr)
            result = build_deps(
                DepsBuildOptions(requirements=REQUIREMENTS, runtime="python3.11",
                                 arch="x86_64", bytecode=mode, layers_dir=work / f"l-{mode}")
            )  # fmt: skip
            layer = unzip(result.zip_path, work / f"u-{mode}")
            m = result.manifest
            rows.append((label, "python3.11 x86_64", m["unzipped_bytes"], m["zip_bytes"],
                         m["files"], None))  # fmt: skip
            measured.append(layer)
        print(f"cold starts: {args.runs} rounds ...", file=sys.stderr)
        for i, median in enumerate(cold_starts(measured, model_dir, args.runs)):
            rows[i] = (*rows[i][:5], median)
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
            note = "" if m["bytecode"] else " (no bytecode: no Python 3.13 here)"
            rows.append((f"mlayer build-deps{note}", "python3.13 arm64", m["unzipped_bytes"],
                         m["zip_bytes"], m["files"], None))  # fmt: skip
    base = next(r[5] for r in rows if r[0] == "slim, no bytecode")
    header = ("layer", "target", "unzipped MB", "zipped MB", "files", "cold start s",
              "vs no bytecode")  # fmt: skip
    lines = [header]
    for label, target_text, unzipped, zipped, files, seconds in rows:
        lines.append((
            label, target_text, f"{unzipped / 1e6:.1f}", f"{zipped / 1e6:.1f}", str(files),
            "-" if seconds is None else f"{seconds:.2f}",
            "-" if seconds is None or not base else f"{100 * seconds / base:.0f}%",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"Pins: {REQUIREMENTS.name}; cold start = median of {args.runs} fresh processes, "
          "interpreter start to 100 predictions of the text model (real handler)")  # fmt: skip
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
