"""What KPL de-aggregation costs the function: decoding time per user record, and import time.

    python bench/kpl_decode.py                       # this tree's function/
    python bench/kpl_decode.py --function-dir DIR    # another tree's, to compare
    python bench/kpl_decode.py --imports 30          # import-time runs per measurement

Decoding: ``records.decode_event`` on Kinesis events of 10,000 user records, each a JSON
object ``{"text": ...}`` (the sample text model's input), as plain records and packed into
KPL aggregates of 10, 100 and 1,000 user records (tests/kpl_encoder.py makes them); also a
plain batch holding one bad record (the per-record path, which now looks for aggregates
too). CPU time in this process, best of ``--rounds``, per user record.

Imports: ``python -X importtime -c "import kpl"`` and ``import records`` in fresh
interpreters, the median of ``--imports`` runs of each module's own time, with bytecode
(.pyc written beforehand) and without (``-B`` on a copy without ``__pycache__``: a Lambda
function zip carries no bytecode, mlayer zips none, so every cold start compiles the
function's modules).
"""

from __future__ import annotations

import argparse
import base64
import json
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


def import_times(function_dir: Path, runs: int) -> dict[tuple[str, str], float]:
    """(module, "pyc" | "source") -> median self time in microseconds."""
    found: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "function"
        shutil.copytree(function_dir, bare, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-c", "import records"], cwd=function_dir, check=True)
        for mode, cwd, flags in (("pyc", function_dir, []), ("source", bare, ["-B"])):
            samples: dict[str, list[float]] = {"kpl": [], "kinesis_event": [], "records": []}
            for _ in range(runs):
                proc = subprocess.run(
                    [sys.executable, *flags, "-X", "importtime", "-c", "import records"],
                    cwd=cwd,
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
                    found[(module, mode)] = statistics.median(values)
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

    print(f"\nimport self time, median of {args.imports} fresh interpreters (us):")
    print(f"{'module':<16}{'with .pyc':>12}{'from source':>14}")
    times = import_times(args.function_dir, args.imports)
    for module in ("kpl", "kinesis_event", "records"):
        pyc = times.get((module, "pyc"))
        source = times.get((module, "source"))
        shown = [f"{value:>12.0f}" if value is not None else f"{'-':>12}" for value in (pyc,)]
        shown.append(f"{source:>14.0f}" if source is not None else f"{'-':>14}")
        print(f"{module:<16}{''.join(shown)}")


if __name__ == "__main__":
    main()
