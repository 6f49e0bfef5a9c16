"""The README's first command, ``mlayer demo``, runs to the end (with fewer records) and
leaves nothing running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlayer.demo import DemoOptions, make_records, run_demo

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but the process table.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_demo_runs_every_step_and_stops_the_endpoint(tmp_path: Path) -> None:
    executable = shutil.which("mlayer")
    assert executable, "the mlayer console script is not installed (pip install -e .)"
    # Given a fresh shell with no AWS configuration at all
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLAYER_"))}
        | {"COLUMNS": "200", "HOME": str(tmp_path / "home")}
        | _cache_env()
    )
    # When the demo runs with 300 records (3 malformed: one in 97)
    proc = subprocess.run(
        [executable, "demo", "--records", "300", "--workdir", str(tmp_path / "demo")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr
    # Then each step said what it did, in order
    titles = [
        "Starting moto_server",
        "Training the sample text model",
        "Building the dependency layer",
        "Building model layer v1",
        "Creating the output table",
        "Publishing the layers, deploying the function",
        "Producing 300 review records",
        "Creating the stream trigger",
        "Consuming the stream with the real function",
        "Reading back the predictions table",
        "Pricing the measured REPORT lines",
        "Training model v2 and rolling it out",
        "Rolling back alias live",
        "Publishing model v2 as the shadow of the live v1",
        "A degenerate candidate v3",
        "Model v2 as a 30% canary",
        "Stopping moto_server",
    ]
    positions = [out.find(title) for title in titles]
    assert -1 not in positions, [t for t, p in zip(titles, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    # and the outputs are the system's: 297 predictions in the table, 3 poison records
    assert re.search(r"records\s+300\b", out)
    assert re.search(r"predictions\s+297\b", out)
    assert re.search(r"dead-lettered by the function\s+3\b", out)
    assert "297 predictions in mlayer-demo-predictions" in out
    assert "3 poison records in the dead-letter queue" in out
    assert re.search(r"this run would have cost \$\d+\.\d{6} on Lambda", out)
    # and the live version followed the rollout and the rollback
    assert "live: alias live -> version 2: sentiment v2" in out
    assert "a local invoke of alias live is answered by model sentiment v2" in out
    assert "live: alias live -> version 1: sentiment v1" in out
    assert "a local invoke of alias live is answered by model sentiment v1" in out
    # and the shadow was scored beside v1 on every record, compared from the metrics
    shadow = out[positions[13] : positions[14]]
    scored = re.search(r"records scored\s+([\d,]+)\s+([\d,]+)", shadow)
    assert scored, shadow
    live_records, shadow_records = (int(n.replace(",", "")) for n in scored.groups())
    # 1,000 records, two malformed (one in 500); the live model's window, rounded down to
    # the minute as CloudWatch does, may also hold the rollback step's invoke
    assert live_records >= 1_000 and shadow_records == 998
    assert re.search(r"agreement with live\s+\d+\.\d%", shadow), shadow
    assert "shadow stop: alias live -> version" in shadow
    # and the degenerate canary was rolled back by its agreement with the live model,
    # measured record by record (its version scores v1 as its shadow)
    bad = out[positions[14] : positions[15]]
    assert re.search(
        r"rolled back: agreement \d+\.\d% < 95% over \d+ records \(shadow: the live model v1 "
        r"scored the same records\)",
        bad,
    ), bad
    # and the healthy one was promoted with every guard holding
    good = out[positions[15] : positions[16]]
    assert re.search(r"promoted: every guard held over \d+ records: bad-record rate", good), good
    assert re.search(r"alias live -> version \d+ alone", good), good
    # and nothing is left running
    pid = int(re.search(r"Stopping moto_server \(pid (\d+)\)", out).group(1))  # type: ignore[union-attr]
    assert not _running(pid)
    assert "stopped; nothing left running" in out
    reports = (tmp_path / "demo" / "lambda.log").read_text()
    assert reports.count("REPORT RequestId:") >= 3


def _cache_env() -> dict[str, str]:
    """Keep mlayer's build cache (a fresh HOME must not rebuild the 180 MB layer)."""
    from mlayer.lambda_env.runtime_dir import cache_root

    return {"MLAYER_CACHE_DIR": str(cache_root())}


def test_stopping_the_demo_early_stops_the_endpoint(tmp_path: Path) -> None:
    steps = run_demo(DemoOptions(workdir=tmp_path / "demo", records=10))
    first = next(steps)
    assert first.key == "endpoint" and not first.done
    started = next(steps)
    url = started.data["url"]
    assert url.startswith("http://127.0.0.1:")
    pid = int(started.lines[0].split("(pid ")[1].rstrip(")"))
    assert _running(pid)
    steps.close()  # the consumer stops (Ctrl-C, an error in rendering...)
    assert not _running(pid)


def test_records_have_the_promised_share_of_malformed_ones() -> None:
    records, malformed = make_records(970, 97)
    assert len(records) == 970 and malformed == 10
    bad = [
        r for r in records if not r["Data"].startswith(b'{"id"') or b'"text": "' not in r["Data"]
    ]
    assert len(bad) == 10
