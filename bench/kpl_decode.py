"""What KPL de-aggregation costs the function: decoding time per user record, and import time.

    python bench/kpl_decode.py                       # this tree's function/
    python bench/kpl_decode.py --function-dir DIR    # another tree's, to compare
    python bench/kpl_decode.py --imports 30          # import-time runs per measurement

Decoding: ``records.decode_event`` on Kinesis events of 10,000 user records, each a JSON
object ``{"text": ...}`` (the sample text model's input), as plain records and packed into
KPL aggregates of 10, 100 and 1,000 user records (tests/kpl_encoder.py makes them); also a
plain batch holding one bad record (the per-record path, which now looks for aggregates
too). CPU time in this process, best of ``--rounds``, per user record.

Imports: ``python -X importtime`` of ``import records`` (kinesis_event with it) and ``kpl``
(which the function imports on its first aggregate) in fresh interpreters, the min and
median of ``--imports`` runs of each module's own time, with bytecode
(.pyc written beforehand) and without (``-B`` on a copy without ``__pycache__``: a Lambda
function zip carries no bytecode, mlayer zips none, so every cold start compiles the
function's modules). The same modules' own code is also run again 200 times in this
process (from the bytecode, and compiled from source), min and median: steadier.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
USER_RECORDS = 10_000
# records (kinesis_event with it), then kpl, as on the first aggregate (if the tree has it)
IMPORTS = "import records, importlib.util as u; u.find_spec('kpl') and __import__('kpl')"


def kinesis_record(data: bytes, sequence: int) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": str(49600000000000000000 + sequence),
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1763877600.5,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{49600000000000000000 + sequence}",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/reviews",
    }


def events() -> dict[str, dict[str, Any]]:
    from kpl_encoder import aggregate

    payloads = [json.dumps({"text": f"great product, number {i}"}).encode() for i in range(10_000)]
    made = {"plain": {"Records": [kinesis_record(p, i) for i, p in enumerate(payloads)]}}
    bad = list(made["plain"]["Records"])
    bad[5000] = kinesis_record(b"\xff", 5000)
    made["plain, 1 bad"] = {"Records": bad}
    for size in (10, 100, 1000):
        made[f"aggregates of {size}"] = {
            "Records": [
                kinesis_record(
                    aggregate([(f"pk-{j}", p) for j, p in enumerate(payloads[i : i + size])]), i
                )
                for i in range(0, len(payloads), size)
            ]
        }
    return made


def decode_times(rounds: int) -> list[tuple[str, int, float]]:
    import records

    spec = records.InputSpec(kind="text", field="text")
    rows = []
    for name, event in events().items():
        best = float("inf")
        for _ in range(rounds):
            began = time.process_time()
            batch = records.decode_event(event, spec)
            best = min(best, time.process_time() - began)
        if len(batch.inputs) + len(batch.rejected) != USER_RECORDS:
            continue  # a tree that does not de-aggregate: nothing to compare
        rows.append((name, len(event["Records"]), best))
    return rows


def import_times(function_dir: Path, runs: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(module, "pyc" | "source") -> (min, median) self time in microseconds."""
    found: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "function"
        shutil.copytree(function_dir, bare, ignore=shutil.ignore_patterns("__pycache__"))
        # PYTHONDONTWRITEBYTECODE (set on this machine) would make "pyc" compile too.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([sys.executable, "-c", IMPORTS], cwd=function_dir, env=env, check=True)
        for mode, cwd, flags in (("pyc", function_dir, []), ("source", bare, ["-B"])):
            samples: dict[str, list[float]] = {"kpl": [], "kinesis_event": [], "records": []}
            # min, not only the median: other work on the machine only ever adds time
            for _ in range(runs):
                proc = subprocess.run(
                    [sys.executable, *flags, "-X", "importtime", "-c", IMPORTS],
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                for line in proc.stderr.splitlines():
                    parts = [part.strip() for part in line.split("|")]
                    if len(parts) == 3 and parts[2] in samples:
                        samples[parts[2]].append(float(parts[0].split(":")[1]))
            for module, values in samples.items():
                if values:
                    found[(module, mode)] = (min(values), statistics.median(values))
    return found


def reimport_times(function_dir: Path, runs: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(module, "pyc" | "source") -> (min, median) microseconds of running the module again in
    this process (its imports already loaded: its own cost only). "pyc": a fresh import from
    its bytecode; "source": compiling its source, then running it. Steadier than importtime
    on a shared machine."""
    import importlib
    import marshal

    found = {}
    for name in ("kpl", "kinesis_event"):
        source_path = function_dir / f"{name}.py"
        if not source_path.exists():
            continue  # a tree without it
        importlib.import_module(name)
        source = source_path.read_text()
        # what a .pyc holds: the marshalled code object
        code_bytes = marshal.dumps(compile(source, str(source_path), "exec"))
        for mode in ("pyc", "source"):
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                code = (
                    marshal.loads(code_bytes)
                    if mode == "pyc"
                    else compile(source, str(source_path), "exec")
                )
                exec(code, {"__name__": name, "__file__": str(source_path)})
                samples.append((time.perf_counter() - began) * 1e6)
            found[(name, mode)] = (min(samples), statistics.median(samples))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function-dir", type=Path, default=ROOT / "function")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--imports", type=int, default=20)
    args = parser.parse_args()
    sys.path[:0] = [str(args.function_dir), str(ROOT / "tests")]

    print(f"decode_event, {USER_RECORDS:,} user records (best of {args.rounds}, CPU):")
    print(f"{'event':<22}{'Kinesis records':>16}{'ms':>9}{'us/user record':>16}")
    for name, count, seconds in decode_times(args.rounds):
        per = seconds / USER_RECORDS * 1e6
        print(f"{name:<22}{count:>16,}{seconds * 1000:>9.1f}{per:>16.2f}")

    print(f"\nimport self time, {args.imports} fresh interpreters (us, min / median):")
    print(f"{'module':<16}{'with .pyc':>16}{'from source':>18}")
    times = import_times(args.function_dir, args.imports)
    for module in ("kpl", "kinesis_event", "records"):
        cells = []
        for mode in ("pyc", "source"):
            low, middle = times.get((module, mode), (float("nan"), float("nan")))
            cells.append(f"{low:>8.0f} / {middle:<5.0f}")
        print(f"{module:<16}{cells[0]:>16}{cells[1]:>18}")

    print("\nthe module's own code run again in this process, 200 times (us, min / median):")
    print(f"{'module':<16}{'from .pyc':>16}{'from source':>18}")
    again = reimport_times(args.function_dir, 200)
    for module in ("kpl", "kinesis_event"):
        if (module, "pyc") not in again:
            continue
        pyc_min, pyc_median = again[(module, "pyc")]
        src_min, src_median = again[(module, "source")]
        print(
            f"{module:<16}{pyc_min:>8.0f} / {pyc_median:<5.0f}{src_min:>10.0f} / {src_median:<5.0f}"
        )


if __name__ == "__main__":
    main()
