"""End to end: SnapStart, locally, as Lambda does it (mlayer.lambda_env.snapshot).

The real function on a real python3.13 layer (requirements.txt's pins) and the sample text
model, deployed on moto_server with SnapStart applied (tag ``mlayer:snapstart``) and alias
``live``. A tiny extra module in a copy of the function's code registers test runtime hooks
(two before-snapshot, two after-restore, each appending its name and pid to a file) and
wraps the handler to sleep or allocate on request. Checked: one template initialised and
many environments restored from it (run-local over three shards), the hooks in Lambda's
order, predictions equal to an on-demand run, INIT_REPORT once and Restore Duration on each
restored environment's first REPORT only, a timeout or an out-of-memory kill restoring a
fresh environment (no new init), ``mlayer cost --from-report`` pricing the restores, and
``--snapstart`` refused on python3.11.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlayer.aws import AwsSettings
from mlayer.interpreters import locate_interpreter
from mlayer.local.endpoint import LocalEndpoint, local_endpoint
from mlayer.reports import parse_reports

ROOT = Path(__file__).resolve().parent.parent
FUNCTION = "snapscorer"
pytestmark = pytest.mark.slow

HOOKS = '''\
"""Test runtime hooks (registered at import, as a function's own would be)."""
import os
import time

from snapshot_restore_py import register_after_restore, register_before_snapshot

from lambda_function import lambda_handler


def _record(name):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(f"{name} {os.getpid()}\\n")


register_before_snapshot(_record, "before-1")
register_before_snapshot(_record, "before-2")
register_after_restore(_record, "after-1")
register_after_restore(_record, "after-2")


@register_after_restore
def _fail_when_asked():
    if os.path.exists(os.environ["HOOK_LOG"] + ".fail"):
        raise RuntimeError("after-restore hook failed on purpose")


_held = []


def handler(event, context):
    if "sleep_s" in event:
        time.sleep(event["sleep_s"])
    if "allocate_mb" in event:
        _held.append(b"x" * (event["allocate_mb"] << 20))
    return lambda_handler(event, context)
'''


@pytest.fixture(scope="module")
def python313() -> str:
    found = locate_interpreter("3.13").path
    if found is None:
        pytest.skip("no Python 3.13 on this machine (PATH, pyenv, uv): SnapStart needs 3.12+")
    return found


@pytest.fixture(scope="module")
def layers313(
    tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path, python313: str
) -> Path:
    """layers/ with the python3.13 deps layer of requirements.txt and the text model v1."""
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.model_layer import ModelBuildOptions, build_model

    layers = tmp_path_factory.mktemp("snap-layers")
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime="python3.13",
            python=python313,
            layers_dir=layers,
            function_dir=ROOT / "function",
        )
    )
    build_model(
        ModelBuildOptions(
            model_dir=text_model_dir, version=1, layers_dir=layers, function_dir=ROOT / "function"
        )
    )
    return layers


@dataclass
class Deployed:
    endpoint: LocalEndpoint
    layers: Path
    code: Path
    clients: dict[str, Any]
    hook_log: Path


@pytest.fixture(scope="module")
def deployed(layers313: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The function (python3.13, 256 MB, 5 s) with the test hooks' handler, SnapStart
    applied through its tag, model v1 published as version 1 behind alias live."""
    from mlayer.deploy import deploy_function
    from mlayer.layers import load_build, publish_deps
    from mlayer.rollout import publish_model

    code = tmp_path_factory.mktemp("snap-code") / "function"
    shutil.copytree(ROOT / "function", code, ignore=shutil.ignore_patterns("__pycache__"))
    (code / "snapstart_test_hooks.py").write_text(HOOKS)
    hook_log = tmp_path_factory.mktemp("hooks") / "hooks.log"
    with local_endpoint() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        clients = {n: aws.client(n) for n in ("lambda", "s3", "dynamodb", "kinesis", "iam")}
        clients["s3"].create_bucket(Bucket="artifacts")
        clients["dynamodb"].create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        publish_deps(
            clients["lambda"], clients["s3"], build=load_build(next(layers313.glob("deps-*.zip"))),
            layer_name=f"{FUNCTION}-deps", bucket="artifacts",
        )  # fmt: skip
        deploy_function(
            clients["lambda"], function=FUNCTION, function_dir=code, role=None,
            runtime="python3.13", arch="x86_64", memory_mb=256, timeout_s=5,
            environment={"OUTPUT_TABLE": "predictions", "HOOK_LOG": str(hook_log)},
            deps_layer=f"{FUNCTION}-deps", model_layer=f"{FUNCTION}-model",
            layers_dir=layers313, local_iam=clients["iam"],
        )  # fmt: skip
        lam = clients["lambda"]
        lam.get_waiter("function_updated_v2").wait(FunctionName=FUNCTION)
        lam.update_function_configuration(
            FunctionName=FUNCTION, Handler="snapstart_test_hooks.handler"
        )
        lam.get_waiter("function_updated_v2").wait(FunctionName=FUNCTION)
        arn = lam.get_function_configuration(FunctionName=FUNCTION)["FunctionArn"]
        lam.tag_resource(Resource=arn, Tags={"mlayer:snapstart": "PublishedVersions"})
        publish_model(
            lam, clients["s3"], function=FUNCTION, build=load_build(next(layers313.glob("model-*.zip"))),
            layer_name=f"{FUNCTION}-model", alias="live",
        )  # fmt: skip
        yield Deployed(endpoint, layers313, code, clients, hook_log)


def mlayer(deployed: Deployed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("mlayer")
    assert executable, "the mlayer console script is not installed (pip install -e .)"
    return subprocess.run(
        [executable, "--endpoint-url", deployed.endpoint.url, *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _code_args(deployed: Deployed) -> list[str]:
    return ["--layers-dir", str(deployed.layers), "--function-dir", str(deployed.code)]


def _hooks(deployed: Deployed) -> list[tuple[str, int]]:
    if not deployed.hook_log.exists():
        return []
    return [
        (name, int(pid))
        for name, pid in (line.split() for line in deployed.hook_log.read_text().splitlines())
    ]


def _invoke(
    deployed: Deployed, tmp_path: Path, event: dict[str, Any], *flags: str
) -> dict[str, Any]:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--alias", "live", "--event", str(event_file),
        *_code_args(deployed), "--log", str(tmp_path / "lambda.log"), "--json", *flags,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


TEXTS = [f"{word} product, {n} stars" for n in range(12) for word in ("great", "awful", "okay")]


def test_run_local_restores_every_shard_from_one_snapshot(
    deployed: Deployed, tmp_path: Path
) -> None:
    # Given the on-demand predictions of the texts (SnapStart forced off)
    baseline = _invoke(deployed, tmp_path, {"records": TEXTS}, "--no-snapstart")
    assert baseline["snapstart"] is False
    expected = Counter((p["label"], p["probability"]) for p in baseline["response"]["predictions"])
    deployed.hook_log.unlink(missing_ok=True)
    # and a stream of three shards holding the same texts
    kinesis = deployed.clients["kinesis"]
    kinesis.create_stream(StreamName="snap-reviews", ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName="snap-reviews", WaiterConfig={"Delay": 0.2})
    kinesis.put_records(
        StreamName="snap-reviews",
        Records=[
            {"Data": json.dumps({"text": t}).encode(), "PartitionKey": f"key-{i}"}
            for i, t in enumerate(TEXTS)
        ],
    )
    shards_used = {
        s["ShardId"]
        for s in kinesis.list_shards(StreamName="snap-reviews")["Shards"]
        if kinesis.get_records(
            ShardIterator=kinesis.get_shard_iterator(
                StreamName="snap-reviews", ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        )["Records"]
    }
    # When run-local drains it through alias live (SnapStart applied: no flag)
    log = tmp_path / "run.log"
    proc = mlayer(
        deployed, "run-local", "--function", FUNCTION, "--alias", "live", "--stream",
        "snap-reviews", "--starting-position", "TRIM_HORIZON", "--batch-size", "3",
        "--until-idle", "2", "--checkpoints", str(tmp_path / "cp.json"), "--log", str(log),
        "--json", *_code_args(deployed),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    stats = summary["stats"]
    # Then one template was initialised and each shard's environment restored from it
    assert summary["snapstart"] is True and stats["records_done"] == len(TEXTS)
    text = log.read_text()
    assert text.count("INIT_REPORT Init Duration:") == 1
    assert text.count("RESTORE_REPORT Restore Duration:") == len(shards_used) == stats["restores"]
    assert stats["cold_starts"] == 0  # no REPORT carries an Init Duration
    reports = list(parse_reports(text.splitlines()))
    assert len(reports) == stats["invocations"] > len(shards_used)
    restored = [r for r in reports if r.restore_duration_ms is not None]
    assert len(restored) == len(shards_used)
    assert all(r.init_duration_ms is None for r in reports)
    for r in restored:
        assert r.billed_restore_duration_ms is not None and r.billed_restore_duration_ms >= 1
        # Lambda's Billed Duration includes the billed restore
        assert r.billed_duration_ms == math.ceil(r.duration_ms) + r.billed_restore_duration_ms
    # and each restore's RESTORE_REPORT comes before the REPORT that carries its duration
    # (the environments of the lanes interleave their lines)
    lines = text.splitlines()
    for r in restored:
        restore_at = lines.index(f"RESTORE_REPORT Restore Duration: {r.restore_duration_ms:.2f} ms")
        report_at = next(
            i for i, line in enumerate(lines) if f"RequestId: {r.request_id}\t" in line
        )
        assert restore_at < report_at
    # and the hooks ran as Lambda runs them: before-snapshot once, in reverse order of
    # registration, in the template; after-restore once per restored environment, in order
    hooks = _hooks(deployed)
    before = [h for h in hooks if h[0].startswith("before")]
    after = [h for h in hooks if h[0].startswith("after")]
    assert [name for name, _ in before] == ["before-2", "before-1"]
    template_pid = before[0][1]
    assert before[1][1] == template_pid
    assert hooks[:2] == before
    forks = {pid for _, pid in after}
    assert len(forks) == len(shards_used) and template_pid not in forks
    for pid in forks:
        assert [name for name, p in after if p == pid] == ["after-1", "after-2"]
    # and the restored environments answered as the on-demand one did
    items = deployed.clients["dynamodb"].scan(TableName="predictions")["Items"]
    stream_items = [i for i in items if i["record_id"]["S"].startswith("shardId-")]
    got = Counter((i["label"]["S"], float(i["probability"]["N"])) for i in stream_items)
    assert sum(got.values()) == len(TEXTS)
    assert got == Counter(
        {(label, float(Decimal(str(p)))): n for (label, p), n in expected.items()}
    )


def test_invoke_restores_and_cost_prices_the_restore(deployed: Deployed, tmp_path: Path) -> None:
    # When invoking alias live with and without SnapStart
    event = {"records": TEXTS[:6]}
    snap = _invoke(deployed, tmp_path, event)
    plain = _invoke(deployed, tmp_path, event, "--no-snapstart")
    # Then the restored environment answered as the on-demand one
    assert snap["snapstart"] is True and plain["snapstart"] is False
    assert [(p["label"], p["probability"]) for p in snap["response"]["predictions"]] == [
        (p["label"], p["probability"]) for p in plain["response"]["predictions"]
    ]
    assert "Restore Duration" in snap["report"] and "Init Duration" not in snap["report"]
    assert "Init Duration" in plain["report"] and "Restore Duration" not in plain["report"]
    # When pricing the log (a price file with the SnapStart restore price)
    prices = json.loads((ROOT / "cli" / "mlayer" / "prices.json").read_text())
    restore_gb = "0.0001397998"
    prices["regions"]["us-east-1"]["snapstart"]["restore_gb"] = float(restore_gb)
    price_file = tmp_path / "prices.json"
    price_file.write_text(json.dumps(prices))
    log = tmp_path / "lambda.log"
    proc = mlayer(
        deployed, "--region", "us-east-1", "cost", "--from-report", str(log), "--prices",
        str(price_file), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measured = json.loads(proc.stdout)["measured"]
    # Then each invocation is priced by the formula on its parsed figures: the restore's
    # Billed Duration (with its billed restore in it) at the duration price plus the per-GB
    # restore charge; the on-demand cold start's billed duration plus its init
    reports = list(parse_reports(log.read_text().splitlines()))
    assert len(reports) == 2 and measured["restores"] == 1 and measured["cold_starts"] == 1
    region = prices["regions"]["us-east-1"]
    tier = Decimal(str(region["duration"]["x86_64"][0]["price_gb_s"]))
    request = Decimal(str(region["requests_per_million"])) / 1_000_000
    expected = []
    for r in reports:
        gb = Decimal(r.memory_size_mb) / 1024
        if r.restored:
            charge = gb * Decimal(restore_gb)
            expected.append(gb * Decimal(r.billed_duration_ms) / 1000 * tier + request + charge)
            assert measured["restore_charge"] == pytest.approx(float(charge), rel=1e-12)
            assert measured["billed_restore_duration_ms"]["mean"] == r.billed_restore_duration_ms
        else:
            assert r.init_duration_ms is not None
            billed = r.billed_duration_ms + math.ceil(r.init_duration_ms)
            expected.append(gb * Decimal(billed) / 1000 * tier + request)
    assert measured["total"] == pytest.approx(float(sum(expected)), rel=1e-12)
    assert sorted(
        [measured["cost_per_invocation"]["min"], measured["cost_per_invocation"]["max"]]
    ) == [pytest.approx(float(v), rel=1e-12) for v in sorted(expected)]
    # and a price file without the restore price is refused with the key to add
    del region["snapstart"]
    price_file.write_text(json.dumps(prices))
    proc = mlayer(
        deployed, "--region", "us-east-1", "cost", "--from-report", str(log), "--prices",
        str(price_file), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "regions.us-east-1.snapstart.restore_gb" in proc.stderr


def test_a_timeout_or_oom_in_a_restored_environment_restores_a_fresh_one(
    deployed: Deployed, tmp_path: Path
) -> None:
    from mlayer.local.resolve import resolve_function
    from mlayer.local.runner import function_env

    aws = AwsSettings(
        region="us-east-1",
        endpoint_url=deployed.endpoint.url,
        _session=boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ),
    )
    local = resolve_function(
        deployed.clients["lambda"], function=FUNCTION, qualifier="live",
        layers_dir=deployed.layers, function_dir=deployed.code,
    )  # fmt: skip
    assert local.snapstart and local.memory_mb == 256 and local.timeout_s == 5
    log = tmp_path / "lambda.log"
    event = {"records": TEXTS[:3]}
    with (
        local.snapshot_template(extra_env=function_env(aws), log_path=log) as template,
        local.environment_for(log_path=log, template=template) as env,
    ):
        first = env.invoke(event)
        # When an invocation times out, the next one runs in a freshly restored environment
        slow = env.invoke({**event, "sleep_s": 8})
        after_timeout = env.invoke(event)
        # and so after the environment outgrew its memory
        big = env.invoke({**event, "allocate_mb": 400})
        after_oom = env.invoke(event)
        warm = env.invoke(event)
        # and when an after-restore hook fails, the restore fails with it (no invocation)
        fail_flag = Path(str(deployed.hook_log) + ".fail")
        fail_flag.write_text("")
        try:
            with template.environment() as failing:
                failed = failing.invoke(event)
        finally:
            fail_flag.unlink()
    assert first.ok and first.report.restored
    assert slow.error_type == "Sandbox.Timedout"
    assert after_timeout.ok and after_timeout.report.restored
    assert big.error_type == "Runtime.OutOfMemory"
    assert after_oom.ok and after_oom.report.restored
    assert warm.ok and not warm.report.cold_start
    assert after_oom.response["predictions"] == first.response["predictions"]
    assert failed.error_type == "Runtime.AfterRestoreError"
    assert failed.error is not None
    assert "after-restore hook failed on purpose" in failed.error["errorMessage"]
    assert failed.report.restored and failed.response is None
    # and the snapshot was taken once: one init, four restores (the last one failed)
    text = log.read_text()
    assert text.count("INIT_REPORT") == 1 and text.count("RESTORE_REPORT") == 4
    assert "\tStatus: error\tError Type: Runtime.AfterRestoreError" in text


def test_snapstart_is_refused_before_python312(deployed: Deployed, tmp_path: Path) -> None:
    # Given a function on python3.11 (its code only)
    from mlayer.deploy import zip_function

    role = deployed.clients["iam"].create_role(
        RoleName="old-runtime-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    deployed.clients["lambda"].create_function(
        FunctionName="old-runtime", Runtime="python3.11", Role=role,
        Handler="lambda_function.lambda_handler",
        Code={"ZipFile": zip_function(ROOT / "function").data},
    )  # fmt: skip
    # When forcing SnapStart for a local run
    proc = mlayer(
        deployed, "invoke", "--function", "old-runtime", "--snapstart", "--function-dir",
        str(ROOT / "function"), cwd=tmp_path,
    )  # fmt: skip
    # Then it is refused with the reason and the fix, as Lambda refuses it
    assert proc.returncode == 1
    assert "SnapStart runs on python3.12 and later" in proc.stderr
    assert "--runtime python3.13" in proc.stderr
