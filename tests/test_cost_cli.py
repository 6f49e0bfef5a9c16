"""`mlayer cost` through the CLI: text and JSON output, reports, CloudWatch Logs, errors."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws
from moto.server import ThreadedMotoServer

from mlayer.cli import cli
from mlayer.reports import fetch_reports, parse_since

ROOT = Path(__file__).resolve().parent.parent

PUBLISHED = [
    "cost",
    "--memory",
    "192",
    "--duration-ms",
    "4000",
    "--granularity-ms",
    "100",
    "--no-requests",
    "--records",
    "50000",
    "--batch-size",
    "1",
    "--batch-size",
    "10",
    "--batch-size",
    "100",
    "--compare-hourly",
    "0.07",
]


def run(*args: str) -> Any:
    # A fixed width: rich wraps tables to the terminal's, and a test worker has none.
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def run_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


# --------------------------------------------------------------------------- the published example


def test_published_example_text() -> None:
    result = run(*PUBLISHED)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "us-east-1 x86_64" in out
    assert "$0.0000166667 per GB-s" in out
    assert re.search(r"total\s+\$0\.0000125\b", out)
    assert re.search(r"per 100 ms step\s+\$0\.0000003125", out)
    for batch, invocations, ingest in ((1, "50,000", "$0.625"), (10, "5,000", "$0.0625")):
        assert re.search(rf"\n\s+{batch}\s+{invocations}\s.*\s{re.escape(ingest)}\s", out), out
    assert re.search(r"\n\s+100\s+500\s.*\s\$0\.00625\s", out)
    assert re.search(r"= \$50\.40/month\s+100\s+8,064\s+403,199,194\s+below it", out), out


def test_published_example_json() -> None:
    data = run_json(*PUBLISHED)
    assert data["per_invocation"]["total"] == pytest.approx(0.0000125, rel=1e-5)
    assert set(data["per_invocation"]) >= {"compute", "storage", "requests", "total"}
    assert data["per_invocation"]["storage"] == 0
    assert data["per_invocation"]["requests"] == 0
    assert data["per_record"] == pytest.approx(0.0000125, rel=1e-5)
    assert data["per_1000_records"] == pytest.approx(0.0125, rel=1e-5)
    assert [
        (b["batch_size"], b["invocations_per_ingest"], round(b["cost_per_ingest"], 5))
        for b in data["batches"]
    ] == [(1, 50_000, 0.625), (10, 5_000, 0.0625), (100, 500, 0.00625)]
    hourly = {b["batch_size"]: b for b in data["break_even"] if b["comparison"] == "hourly"}
    assert hourly[100]["alternative_monthly_usd"] == pytest.approx(50.40)
    assert round(hourly[100]["ingests_per_month"]) == 8064
    assert hourly[100]["records_per_month"] == pytest.approx(
        hourly[100]["ingests_per_month"] * 50_000
    )
    assert hourly[100]["lambda_cheaper"] == "below"
    assert round(data["price_per_step"], 9) == 0.000000313


def test_json_schema() -> None:
    data = run_json(
        "cost",
        "--memory",
        "1024",
        "--duration-ms",
        "120",
        "--duration-per-record-ms",
        "0.8",
        "--init-ms",
        "900",
        "--invocations-per-environment",
        "500",
        "--storage-mb",
        "1024",
        "--records",
        "10000",
        "--batch-size",
        "100",
        "--batch-size",
        "500",
        "--ingests-per-month",
        "3000",
        "--free-tier",
        "--compare-hourly",
        "0.07",
        "--compare-per-second",
        "0.00008",
    )
    assert set(data) >= {
        "region",
        "arch",
        "memory_mb",
        "per_invocation",
        "per_record",
        "per_1000_records",
        "batches",
        "break_even",
        "monthly",
        "prices",
        "assumptions",
        "memory_sizes",
        "notes",
    }
    assert set(data["per_invocation"]) == {"compute", "init", "storage", "requests", "total"}
    assert all(
        set(b)
        >= {"batch_size", "invocations_per_ingest", "cost_per_ingest", "per_record", "monthly"}
        for b in data["batches"]
    )
    assert [(b["comparison"], b["batch_size"]) for b in data["break_even"]] == [
        ("hourly", 100),
        ("hourly", 500),
        ("per_second", 100),
        ("per_second", 500),
    ]
    assert all(
        set(b) >= {"ingests_per_month", "records_per_month", "lambda_cheaper"}
        for b in data["break_even"]
    )
    # 120 + 0.8 x 100 = 200 ms at batch 100; 520 ms at batch 500.
    assert [b["duration_ms"] for b in data["batches"]] == [200, 520]
    # 3,000 ingests x 100 invocations x (1 GB x 0.2 s + 0.9 s / 500) = 60,540 GB-s: all free.
    assert data["monthly"]["gb_s"] == pytest.approx(60_540)
    assert data["monthly"]["free_tier"]["gb_s"] == pytest.approx(60_540)
    assert data["monthly"]["compute"] == 0
    assert data["prices"]["duration_tiers"][0] == {
        "up_to_gb_s": 6_000_000_000,
        "price_gb_s": 0.0000166667,
    }


def test_example_in_help_runs() -> None:
    """Every `mlayer cost` example of --help that needs no file or AWS runs."""
    help_text = run("cost", "--help").output
    assert "Example:" in help_text
    commands = _commands(help_text)
    runnable = [c for c in commands if "--from-" not in c]
    assert len(runnable) >= 2
    for command in runnable:
        result = run(*command.split()[1:])
        assert result.exit_code == 0, (command, result.output)


def _commands(text: str) -> list[str]:
    """`mlayer cost ...` commands in a text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [
        re.sub(r"^.*?mlayer ", "mlayer ", line).strip()
        for line in joined.splitlines()
        if re.search(r"mlayer (--\S+ \S+ )*cost\b", line)
    ]


def test_readme_cost_examples_run() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "| `mlayer cost` |" in readme
    section = readme.split("\n## Cost\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [c for c in _commands("".join(blocks)) if "--from-" not in c]
    assert commands, "the README's Cost section has no runnable example"
    for command in commands:
        args = command.split()[1:]
        result = run(*args)
        assert result.exit_code == 0, (command, result.output)


# --------------------------------------------------------------------------- options


def test_several_memory_sizes_mark_the_cheapest() -> None:
    args = ["cost", "--batch-size", "100", "--records", "50000"]
    for memory, duration in (("128", "1000"), ("1024", "100"), ("2048", "60")):
        args += ["--memory", memory, "--duration-ms", duration]
    result = run(*args)
    assert result.exit_code == 0, result.output
    cheapest = [line for line in result.output.splitlines() if "<- cheapest" in line]
    assert len(cheapest) == 1 and "1,024 MB" in cheapest[0]
    data = run_json(*args)
    assert [(m["memory_mb"], m["cheapest"]) for m in data["memory_sizes"]] == [
        (128, False),
        (1024, True),
        (2048, False),
    ]
    assert data["memory_mb"] == 1024


def test_arm64_and_region() -> None:
    data = run_json(
        "--region",
        "eu-west-1",
        "cost",
        "--memory",
        "1024",
        "--duration-ms",
        "1000",
        "--arch",
        "arm64",
    )
    assert (data["region"], data["arch"]) == ("eu-west-1", "arm64")
    assert data["per_invocation"]["compute"] == pytest.approx(0.0000133334)


def test_price_overrides() -> None:
    data = run_json(
        "--region",
        "ap-south-9",
        "cost",
        "--memory",
        "1024",
        "--duration-ms",
        "1000",
        "--price-gb-s",
        "0.00002",
        "--price-requests",
        "0.25",
        "--price-storage",
        "0",
    )
    assert data["per_invocation"]["compute"] == pytest.approx(0.00002)
    assert data["per_invocation"]["requests"] == pytest.approx(0.00000025)
    assert data["prices"]["overridden"] == ["--price-gb-s", "--price-requests", "--price-storage"]


def test_prices_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "as_of": "2030-01",
                "regions": {
                    "xx-test-1": {
                        "requests_per_million": 1,
                        "ephemeral_storage_gb_s": 0,
                        "duration": {"x86_64": [{"up_to_gb_s": None, "price_gb_s": 0.001}]},
                    }
                },
            }
        )
    )
    data = run_json(
        "--region",
        "xx-test-1",
        "cost",
        "--prices",
        str(path),
        "--memory",
        "1024",
        "--duration-ms",
        "1000",
    )
    assert data["per_invocation"]["total"] == pytest.approx(0.001 + 0.000001)
    assert data["prices"]["as_of"] == "2030-01"


def test_region_from_boto3_when_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert run_json("cost", "--memory", "128", "--duration-ms", "1")["region"] == "eu-west-1"


def test_default_pricing_region_without_any(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert run_json("cost", "--memory", "128", "--duration-ms", "1")["region"] == "us-east-1"


def test_mlayer_toml_scalars_for_repeatable_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mlayer.toml").write_text("memory = 512\n[commands.cost]\nbatch_size = [10, 100]\n")
    monkeypatch.chdir(tmp_path)
    data = run_json("cost", "--duration-ms", "50")
    assert data["memory_mb"] == 512
    assert data["assumptions"]["batch_sizes"] == [10, 100]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--memory", "512", "--duration-ms", "10", "--storage-mb", "20000"],
            "Invalid value for '--storage-mb': 20000 is not in the range 512<=x<=10240.",
        ),
        (
            ["--memory", "512", "--duration-ms", "10", "--storage-mb", "256"],
            "Invalid value for '--storage-mb': 256 is not in the range 512<=x<=10240.",
        ),
        (
            ["--memory", "64", "--duration-ms", "10"],
            "Invalid value for '--memory': 64 is not in the range 128<=x<=10240.",
        ),
        (
            ["--memory", "512", "--duration-ms", "ten"],
            "Invalid value for '--duration-ms': 'ten' is not a number",
        ),
        (
            ["--memory", "512", "--duration-ms", "0"],
            "Invalid value for '--duration-ms': 0 must be > 0",
        ),
        (
            ["--memory", "512", "--memory", "1024", "--duration-ms", "10"],
            "2 memory sizes but --duration-ms given 1 time(s)",
        ),
        (
            ["--memory", "512", "--duration-ms", "10", "--duration-ms", "20"],
            "Invalid value for --duration-ms: given 2 times for 1 --memory value(s)",
        ),
        (["--memory", "512"], "give --memory MB and --duration-ms MS"),
        (
            ["--memory", "512", "--duration-ms", "10", "--ingests-per-month", "5"],
            "--ingests-per-month needs --records",
        ),
        (
            ["--from-report", "nope.log"],
            "Invalid value for '--from-report': File 'nope.log' does not exist.",
        ),
        (["--from-logs", "fn", "--since", "yesterday"], "is not a duration"),
        (
            ["--from-logs", "fn", "--duration-ms", "10"],
            "--duration-ms cannot be combined with --from-report / --from-logs",
        ),
        (
            ["--from-logs", "fn", "--batch-size", "1", "--batch-size", "2"],
            "measured invocations have one batch size",
        ),
    ],
    ids=[
        "storage-high",
        "storage-low",
        "memory-low",
        "duration-nan",
        "duration-zero",
        "durations-per-size",
        "too-many-durations",
        "no-duration",
        "ingests-without-records",
        "missing-file",
        "bad-since",
        "measured-and-given",
        "measured-batches",
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = run("cost", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_unknown_region_exit_1() -> None:
    result = run("--region", "ap-south-9", "cost", "--memory", "512", "--duration-ms", "10")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "Error: no prices for region ap-south-9 in mlayer/prices.json (prices as of 2026-11); "
        "it has eu-west-1, us-east-1. Pass --region with one of those, or give this region's "
        "prices with --price-gb-s, --price-requests and --price-storage"
    ), result.output


def test_timeout_exit_1() -> None:
    result = run(
        "cost", "--memory", "512", "--duration-per-record-ms", "100", "--batch-size", "10000"
    )
    assert result.exit_code == 1
    assert "over Lambda's 900,000 ms (15 min) timeout" in result.output


# --------------------------------------------------------------------------- --from-report

REPORT_LINES = [
    "START RequestId: c-1 Version: $LATEST",
    '{"message": "batch", "counts": {"received": 100}, "cold_start": true}',
    "END RequestId: c-1",
    "REPORT RequestId: c-1\tDuration: 180.00 ms\tBilled Duration: 180 ms\tMemory Size: 512 MB\t"
    "Max Memory Used: 170 MB\tInit Duration: 900.00 ms\t",
    "REPORT RequestId: w-1\tDuration: 100.20 ms\tBilled Duration: 101 ms\tMemory Size: 512 MB\t"
    "Max Memory Used: 170 MB\t",
    "REPORT RequestId: w-2\tDuration: 98.00 ms\tBilled Duration: 98 ms\tMemory Size: 512 MB\t"
    "Max Memory Used: 171 MB\t\nXRAY TraceId: 1-5e1b4151-5ac6c58f5b5dbd6a1b8c4f1e\tSegmentId: "
    "0a1b2c3d4e5f6a7b\tSampled: true",
    "REPORT RequestId: w-3\tDuration: 101.00 ms\tBilled Duration: 101 ms\tMemory Size: 512 MB\t"
    "Max Memory Used: 171 MB\t",
    # The same pipeline at 1,024 MB (cold start with Lambda's post-2025-08 billed duration).
    "REPORT RequestId: c-2\tDuration: 60.00 ms\tBilled Duration: 560 ms\tMemory Size: 1024 MB\t"
    "Max Memory Used: 170 MB\tInit Duration: 500.00 ms\t",
    "REPORT RequestId: w-4\tDuration: 55.00 ms\tBilled Duration: 55 ms\tMemory Size: 1024 MB\t"
    "Max Memory Used: 170 MB\t",
]


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.log"
    path.write_text("\n".join(REPORT_LINES) + "\n")
    return path


def test_from_report(report_file: Path) -> None:
    data = run_json("cost", "--from-report", str(report_file), "--batch-size", "100")
    rows = {m["memory_mb"]: m for m in data["memory_sizes"]}
    m512 = rows[512]["measured"]
    assert (m512["invocations"], m512["cold_starts"]) == (4, 1)
    assert m512["billed_duration_ms"]["p50"] == 101
    assert m512["billed_duration_ms"]["p99"] == 180
    assert m512["billed_duration_ms"]["mean"] == pytest.approx((180 + 101 + 98 + 101) / 4)
    assert m512["init_duration_ms"]["mean"] == 900
    x86 = 0.0000166667
    total_ms = 180 + 101 + 98 + 101 + 900
    assert m512["total"] == pytest.approx(0.5 * x86 * total_ms / 1000 + 4 * 0.0000002)
    assert rows[512]["per_invocation"]["total"] == pytest.approx(
        m512["cost_per_invocation"]["mean"]
    )
    assert rows[512]["per_record"] == pytest.approx(m512["cost_per_invocation"]["mean"] / 100)
    m1024 = rows[1024]["measured"]
    assert m1024["cold_starts_with_init_in_billed_duration"] == 1
    assert m1024["total"] == pytest.approx(1 * x86 * (560 + 55) / 1000 + 2 * 0.0000002)
    assert data["memory_mb"] == 512 and rows[512]["cheapest"]
    assert data["source"] == f"REPORT lines in {report_file}"
    assert any("cold start(s)" in note for note in data["notes"])


def test_from_report_text(report_file: Path) -> None:
    result = run("cost", "--from-report", str(report_file), "--invocations-per-environment", "1000")
    assert result.exit_code == 0, result.output
    assert "Measured at 512 MB: 4 invocations, 1 cold" in result.output
    assert "<- cheapest" in result.output
    assert re.search(r"billed ms\s+101\.00\s+180\.00\s+120\.00", result.output), result.output


def test_from_report_memory_filter_and_missing_size(report_file: Path) -> None:
    data = run_json("cost", "--from-report", str(report_file), "--memory", "512")
    assert [m["memory_mb"] for m in data["memory_sizes"]] == [512]
    result = run("cost", "--from-report", str(report_file), "--memory", "256")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: no REPORT lines with Memory Size 256 MB; the reports have 512 MB, 1024 MB."
    )


def test_from_report_without_reports(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("hello\n")
    result = run("cost", "--from-report", str(path))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no REPORT lines in {path}")


# --------------------------------------------------------------------------- --from-logs


def _put_reports(logs: Any, function: str, lines: list[str], *, stream: str = "s1") -> None:
    group = f"/aws/lambda/{function}"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now - 1000 + i, "message": line} for i, line in enumerate(lines)],
    )


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def test_fetch_reports_pages_through_the_log_group(aws: None) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    _put_reports(logs, "scorer", REPORT_LINES)
    _put_reports(logs, "scorer", REPORT_LINES[3:5], stream="s2")
    calls: list[dict[str, Any]] = []
    logs.meta.events.register(
        "provide-client-params.logs.FilterLogEvents", lambda params, **_: calls.append(params)
    )
    reports = fetch_reports(logs, "scorer", parse_since("1h"), page_size=2)
    assert len(reports) == 8
    assert len(calls) > 2  # several pages of 2 events each
    assert {call["logGroupName"] for call in calls} == {"/aws/lambda/scorer"}
    assert all("nextToken" in call for call in calls[1:])


def test_from_logs_cli(aws: None) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    _put_reports(logs, "scorer", REPORT_LINES)
    data = run_json("cost", "--from-logs", "scorer", "--since", "30m", "--batch-size", "100")
    assert data["source"] == "CloudWatch Logs /aws/lambda/scorer"
    assert {m["memory_mb"]: m["measured"]["invocations"] for m in data["memory_sizes"]} == {
        512: 4,
        1024: 2,
    }


def test_from_logs_qualified_name_reads_the_function_log_group(aws: None) -> None:
    # Given REPORT lines in the function's one log group (aliases and versions share it)
    logs = boto3.client("logs", region_name="us-east-1")
    _put_reports(logs, "scorer", REPORT_LINES)
    # When the function is given with its alias
    data = run_json("cost", "--from-logs", "scorer:live", "--batch-size", "100")
    # Then its log group is read, not /aws/lambda/scorer:live
    assert data["source"] == "CloudWatch Logs /aws/lambda/scorer"
    assert sum(m["measured"]["invocations"] for m in data["memory_sizes"]) == 6


def test_from_logs_old_events_are_outside_since(aws: None) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/aws/lambda/old")
    logs.create_log_stream(logGroupName="/aws/lambda/old", logStreamName="s")
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    logs.put_log_events(
        logGroupName="/aws/lambda/old",
        logStreamName="s",
        logEvents=[{"timestamp": two_hours_ago, "message": REPORT_LINES[4]}],
    )
    result = run("cost", "--from-logs", "old", "--since", "1h")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: no REPORT lines in /aws/lambda/old over the last 1h: invoke the function or "
        "widen --since (e.g. --since 7d)"
    ), result.output
    assert run_json("cost", "--from-logs", "old", "--since", "3h")["memory_mb"] == 512


def test_from_logs_missing_group(aws: None) -> None:
    result = run("cost", "--from-logs", "nope")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: log group /aws/lambda/nope does not exist in this region: check the function "
        "name and --region"
    ), result.output


# --------------------------------------------------------------------------- end to end


def test_console_script_published_example() -> None:
    proc = subprocess.run(
        ["mlayer", *PUBLISHED, "--json"], capture_output=True, text=True, check=True
    )
    data = json.loads(proc.stdout)
    assert round(data["break_even"][2]["ingests_per_month"]) == 8064


@pytest.mark.slow
def test_from_logs_against_moto_server(tmp_path: Path) -> None:
    """The CLI as a subprocess reads REPORT lines from a real HTTP CloudWatch Logs endpoint."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        logs = boto3.client("logs", region_name="eu-west-1", endpoint_url=url)
        _put_reports(logs, "scorer", REPORT_LINES)
        env = {
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "HOME": str(tmp_path),
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from mlayer.cli import main; main()",
                "--endpoint-url",
                url,
                "--region",
                "eu-west-1",
                "cost",
                "--from-logs",
                "scorer",
                "--since",
                "1h",
                "--batch-size",
                "100",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["region"] == "eu-west-1"
        assert data["prices"]["ephemeral_storage_gb_s"] == 0.000000034
        assert sum(m["measured"]["invocations"] for m in data["memory_sizes"]) == 6
    finally:
        server.stop()


@pytest.mark.slow
def test_from_report_on_the_local_runner_log(tmp_path: Path) -> None:
    """REPORT lines the local runner writes (two memory sizes, a cold start each) price as-is."""
    from mlayer.lambda_env.environment import LambdaEnvironment

    task = tmp_path / "task"
    task.mkdir()
    (task / "lambda_function.py").write_text(
        "import time\n"
        "def lambda_handler(event, context):\n"
        "    time.sleep(0.002 * len(event['records']))\n"
        "    return {'predictions': len(event['records'])}\n"
    )
    opt = tmp_path / "opt"
    opt.mkdir()
    log = tmp_path / "lambda.log"
    for memory in (256, 512):
        with LambdaEnvironment(
            task_dir=task, opt_dir=opt, memory_mb=memory, timeout_s=30, log_path=log
        ) as env:
            for _ in range(3):
                assert env.invoke({"records": [{"text": "x"}] * 10}).ok
    data = run_json("cost", "--from-report", str(log), "--batch-size", "10", "--records", "1000")
    rows = {m["memory_mb"]: m["measured"] for m in data["memory_sizes"]}
    assert {m: (r["invocations"], r["cold_starts"]) for m, r in rows.items()} == {
        256: (3, 1),
        512: (3, 1),
    }
    for measured in rows.values():
        # The local runner bills the handler only (pre-2025-08 style): init is added to it.
        assert measured["cold_starts_with_init_in_billed_duration"] == 0
        assert measured["billed_duration_ms"]["min"] >= 20  # 10 records x 2 ms
        assert measured["init_duration_ms"]["count"] == 1
    assert data["batches"][0]["invocations_per_ingest"] == 100
    assert sum(m["cheapest"] for m in data["memory_sizes"]) == 1


def test_one_cold_start_is_priced_with_its_memory_and_ephemeral_storage() -> None:
    """A store-backed function's cold start: 9 s of init at 3,072 MB with 2,304 MB of /tmp
    costs 9 x 3 GB-s of compute and 9 x 1.75 GB-s of storage over 512 MB."""
    args = ["cost", "--memory", "3072", "--storage-mb", "2304", "--init-ms", "9000",
            "--duration-ms", "200", "--invocations-per-environment", "1000"]  # fmt: skip
    data = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    text = CliRunner().invoke(cli, args, env={"COLUMNS": "200"}).output

    expected = 9 * 3 * 0.0000166667 + 9 * 1.75 * 0.0000000309
    assert data["cold_start"] == pytest.approx(expected, rel=1e-9)
    assert "one cold start" in text and "9,000 ms at 3,072 MB, /tmp 2,304 MB" in text


# --------------------------------------------------------------------------- --snapstart

PRICE_FILE = ROOT / "cli" / "mlayer" / "prices.json"


def _snap_prices(region: str = "us-east-1") -> tuple[float, float]:
    """(cache per GB-s, restore per GB) as prices.json states them, read directly."""
    entry = json.loads(PRICE_FILE.read_text())["regions"][region]["snapstart"]
    return entry["cache_gb_s"], entry["restore_gb"]


SNAP = ["cost", "--memory", "2048", "--duration-ms", "120", "--snapstart"]


def test_snapstart_json_equals_the_formula() -> None:
    data = run_json(
        *SNAP, "--init-ms", "12000", "--restore-ms", "150", "--cold-starts-per-hour", "200",
        "--snapshot-versions", "2", "--runtime", "python3.13",
    )  # fmt: skip
    cache_gb_s, restore_gb = _snap_prices()
    x86 = 0.0000166667
    init_each = 2 * 12 * x86
    restore_each = 2 * restore_gb + 2 * 0.150 * x86
    cache = 2 * 720 * 3600 * cache_gb_s * 2
    cold = 200 * 720
    snap = data["snapstart"]
    assert snap["per_cold_start"]["init"] == pytest.approx(init_each, rel=1e-12)
    assert snap["per_cold_start"]["restore"] == pytest.approx(restore_each, rel=1e-12)
    assert snap["cache_per_month"] == pytest.approx(cache, rel=1e-12)
    assert snap["cold_starts_per_month"] == cold
    monthly = snap["monthly"]
    assert monthly["without_snapstart"] == pytest.approx(cold * init_each, rel=1e-12)
    assert monthly["with_snapstart"] == pytest.approx(cache + cold * restore_each, rel=1e-12)
    assert monthly["difference"] == pytest.approx(
        cache + cold * restore_each - cold * init_each, rel=1e-9
    )
    assert monthly["cheaper"] == "snapstart"
    break_even = cache / (init_each - restore_each)
    assert snap["break_even"]["cold_starts_per_month"] == pytest.approx(break_even, rel=1e-12)
    assert snap["break_even"]["cold_starts_per_hour"] == pytest.approx(break_even / 720)
    assert data["memory_sizes"][0]["snapstart"] == snap


def test_snapstart_break_even_rate_gives_equal_totals() -> None:
    base = run_json(*SNAP, "--init-ms", "12000", "--restore-ms", "150")["snapstart"]
    assert base["monthly"] is None
    per_hour = base["break_even"]["cold_starts_per_hour"]
    at = run_json(
        *SNAP, "--init-ms", "12000", "--restore-ms", "150", "--cold-starts-per-hour", repr(per_hour)
    )["snapstart"]["monthly"]
    assert at["with_snapstart"] == pytest.approx(at["without_snapstart"], rel=1e-9)


def test_snapstart_text_never() -> None:
    result = run(*SNAP, "--init-ms", "1500", "--cold-starts-per-hour", "20")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "SnapStart vs billed init: 2,048 MB" in out
    assert re.search(r"break-even\s+never\s+a restore costs at least the init it replaces", out)
    assert re.search(r"cold starts\s+20 an hour \(14,400 a month\)", out)
    cache_gb_s, restore_gb = _snap_prices()
    x86 = 0.0000166667
    without = 14_400 * 2 * 1.5 * x86
    with_ = 2 * 720 * 3600 * cache_gb_s + 14_400 * (2 * restore_gb + 2 * 0.2 * x86)
    assert re.search(rf"without SnapStart, a month\s+\${without:,.2f}", out)
    assert re.search(rf"with SnapStart, a month\s+\${with_:,.2f}", out)
    assert "SnapStart costs more" in out
    assert "its latency is what you pay for" in out
    assert "restore billed at 200 ms by default" in out


def test_snapstart_rate_derived_from_the_month() -> None:
    data = run_json(
        *SNAP, "--init-ms", "12000", "--records", "50000", "--batch-size", "100",
        "--ingests-per-month", "300", "--invocations-per-environment", "50",
    )  # fmt: skip
    snap = data["snapstart"]
    assert snap["cold_starts_per_month"] == 300 * 500 / 50
    assert "--ingests-per-month" in snap["cold_starts_from"]


def test_snapstart_from_report_uses_the_measured_init(report_file: Path) -> None:
    data = run_json(
        "cost", "--from-report", str(report_file), "--memory", "512", "--snapstart",
        "--cold-starts-per-hour", "1",
    )  # fmt: skip
    snap = data["snapstart"]
    assert snap["init_ms"] == 900  # the 512 MB cold start's Init Duration, billed
    assert snap["restore_ms_from"] == "default"


def test_snapstart_eu_west_1_says_which_prices() -> None:
    result = CliRunner().invoke(
        cli, ["--region", "eu-west-1", *SNAP, "--init-ms", "1500"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "SnapStart prices for eu-west-1: no source found" in result.output
    assert "us-east-1's are used" in result.output


@pytest.mark.parametrize("runtime", ["python3.10", "python3.11"])
def test_snapstart_refused_before_python_3_12(runtime: str) -> None:
    result = run(*SNAP, "--init-ms", "1500", "--runtime", runtime)
    assert result.exit_code == 1
    assert f"Error: SnapStart needs python3.12 or later and {runtime} is older" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage-mb", "1024"], "SnapStart does not support ephemeral storage over 512 MB"),
        ([], "there is no init to compare with: give --init-ms"),
    ],
    ids=["storage", "no-init"],
)
def test_snapstart_refusals(args: list[str], message: str) -> None:
    result = run(*SNAP, *args)
    assert result.exit_code == 1
    assert message in result.output


def test_snapstart_options_need_the_flag() -> None:
    result = run("cost", "--memory", "1024", "--duration-ms", "100", "--restore-ms", "100")
    assert result.exit_code == 2
    assert "--restore-ms prices SnapStart: add --snapstart" in result.output


# -- filtered share (the trigger's FilterCriteria) ------------------------------------------

FILTERED = (
    "cost", "--memory", "512", "--duration-ms", "40", "--batch-size", "100",
    "--batch-size", "7", "--records", "50000", "--ingests-per-month", "30",
)  # fmt: skip


def test_a_filtered_share_scales_the_invocations_and_records_down() -> None:
    plain = run_json(*FILTERED)
    filtered = run_json(*FILTERED, "--filtered-share", "0.4")

    def by_size(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
        return {b["batch_size"]: b for b in data["batches"]}

    # 30,000 of 50,000 records reach the function: batches form from them alone
    assert by_size(plain)[100]["invocations_per_ingest"] == 500
    assert by_size(filtered)[100]["invocations_per_ingest"] == 300
    assert by_size(filtered)[7]["invocations_per_ingest"] == 4286  # 4,285 of 7 and one of 5
    month = by_size(filtered)[100]["monthly"]
    assert month["invocations"] == 9000 and month["records"] == 900_000
    assert month["filtered_records"] == 600_000
    assert by_size(plain)[100]["monthly"]["filtered_records"] == 0
    # nothing is billed for what is filtered: the same invocation costs the same, 300 of them
    assert by_size(filtered)[100]["per_invocation"] == by_size(plain)[100]["per_invocation"]
    assert by_size(filtered)[100]["cost_per_ingest"] == pytest.approx(
        by_size(plain)[100]["cost_per_ingest"] * 0.6
    )
    # per-record figures stay per record written to the stream
    assert by_size(filtered)[100]["per_record"] == pytest.approx(
        by_size(filtered)[100]["cost_per_ingest"] / 50_000
    )
    assert filtered["assumptions"]["filtered_share"] == 0.4
    assert filtered["notes"] == [
        "filters drop 40.0% of the records before batching: 30,000 of the 50,000 records of "
        "an ingest reach the function (20,000 filtered, never invoked nor billed); per-record "
        "figures are per record written to the stream"
    ]


def test_a_share_rounds_so_invocations_are_never_undercounted() -> None:
    data = run_json(
        "cost", "--memory", "512", "--duration-ms", "40", "--batch-size", "10",
        "--records", "15", "--filtered-share", "0.35",
    )  # fmt: skip
    # 0.35 of 15 is 5.25 records: 5 filtered, 10 invoked in one batch of 10
    assert data["batches"][0]["invocations_per_ingest"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--filtered-share", "0.4"],
            "Error: --filtered-share needs --records (the records written to the stream in one "
            "ingest): filtered records never join a batch, so the share changes how many "
            "invocations an ingest takes, not the cost of one\n",
        ),
        (
            ["--records", "100", "--filtered-share", "1"],
            "Error: --filtered-share 1 must be from 0 to below 1 (the share of records the "
            "trigger's filters drop)\n",
        ),
    ],
    ids=["without-records", "all-filtered"],
)
def test_filtered_share_errors(args: list[str], message: str) -> None:
    result = run("cost", "--memory", "512", "--duration-ms", "40", *args)
    assert result.exit_code == 1
    assert result.output == message
