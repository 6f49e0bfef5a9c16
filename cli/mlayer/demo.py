"""The whole pipeline on a local endpoint, as a sequence of steps (``mlayer demo``).

:func:`run_demo` is a generator: before each step it yields the step with ``done=False``
(so the caller can say what is about to happen), then the same step with ``done=True`` and
what it found. It never prints. The local endpoint (moto_server) lives inside the
generator and is stopped however the iteration ends (finished, failed, Ctrl-C, or the
consumer stopping early), so nothing is left running.

Every step calls the same library functions the commands do: training/train.py,
build_deps / build_model, publish_deps / deploy_function / publish_model / trigger,
run_local and invoke, the cost model, rollback and status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlayer.archive import mb
from mlayer.errors import MlayerError

ALIAS = "live"


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does; the defaults are the README's."""

    records: int = 10_000
    malformed_every: int = 97  # one record in 97 is malformed (about 1%)
    shards: int = 2
    function: str = "mlayer-demo"
    workdir: Path = Path(".mlayer/demo")
    project_root: Path | None = None  # holds training/, function/, requirements.txt
    until_idle_s: float = 2.0
    on_progress: Callable[[Any], None] | None = None  # run-local's progress (RunStats)


@dataclass(frozen=True)
class Step:
    """One step: what it does (``title``), then what it found."""

    key: str
    title: str
    done: bool = False
    lines: tuple[str, ...] = ()
    rows: tuple[tuple[str, str], ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic, repr=False, compare=False)

    def finish(
        self,
        lines: list[str] | None = None,
        rows: list[tuple[str, str]] | None = None,
        **data: Any,
    ) -> Step:
        return replace(
            self,
            done=True,
            lines=tuple(lines or ()),
            rows=tuple(rows or ()),
            data=data,
            seconds=time.monotonic() - self.started,
        )


def project_root(explicit: Path | None = None) -> Path:
    """The checkout holding training/, function/ and requirements.txt.

    Raises:
        MlayerError: not found (mlayer installed from a wheel, not a clone).
    """
    candidates = [explicit] if explicit else [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        if root is not None and all(
            (root / part).exists()
            for part in ("training/train.py", "function/lambda_function.py", "requirements.txt")
        ):
            return root
    raise MlayerError(
        "the demo needs the project's training/, function/ and requirements.txt: run it from a "
        "clone of the repository (python3 -m pip install -e '.[dev]' && mlayer demo)"
    )


def _train(root: Path, out: Path, seed: int) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(root / "training" / "train.py"),
            "--out",
            str(out),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise MlayerError(f"training failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else str(out)


# A retrain gone wrong, for the canary that must be rolled back: the model's own
# preprocessing, then a classifier that answers one label to every record. It raises no
# error and its probabilities look confident; only agreement with the live model shows it.
_DEGENERATE = """
import json, shutil, sys
from pathlib import Path
import joblib
import numpy as np
from sklearn.dummy import DummyClassifier

source, out, label = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
shutil.copytree(source, out, dirs_exist_ok=True)
meta = json.loads((out / "metadata.json").read_text())
final = out / meta["stages"][-1]
live = joblib.load(final)
classes = list(live.classes_)
names = [str(name) for name in meta.get("labels") or classes]  # labels name the classes
constant = classes[names.index(label)]
dummy = DummyClassifier(strategy="constant", constant=constant)
dummy.fit(np.zeros((len(classes), 1)), classes)
joblib.dump(dummy, final)
meta["training"] = {"example": "degenerate", "constant_label": label}
(out / "metadata.json").write_text(json.dumps(meta, indent=2))
"""


def degenerate_model(source: Path, out: Path, label: str) -> Path:
    """A copy of the text model ``source`` whose classifier answers ``label`` to everything.

    Run in a subprocess with this Python (the training environment), like ``_train``.
    """
    result = subprocess.run(
        [sys.executable, "-c", _DEGENERATE, str(source), str(out), label],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise MlayerError(f"building the degenerate model failed: {result.stderr.strip()[-500:]}")
    return out


def make_records(
    count: int, malformed_every: int, seed: int = 7
) -> tuple[list[dict[str, Any]], int]:
    """Kinesis PutRecords entries: product reviews as JSON, one in ``malformed_every`` broken
    in one of three ways the function must dead-letter (not UTF-8, no text field, wrong type).
    """
    import random

    rng = random.Random(seed)
    good = [
        "great product, works well",
        "broke after a day",
        "excellent value, would buy again",
        "terrible support and the battery died",
        "does what it says",
        "arrived late and damaged",
        "love it, five stars",
        "waste of money",
    ]
    broken = [
        lambda i: b"\xff\xfe\x00 not utf-8",
        lambda i: json.dumps({"id": f"r{i}", "review": "the text went to another field"}).encode(),
        lambda i: json.dumps({"id": f"r{i}", "text": 404}).encode(),
    ]
    records = []
    malformed = 0
    for i in range(count):
        if malformed_every and i % malformed_every == malformed_every - 1:
            data = broken[malformed % len(broken)](i)
            malformed += 1
        else:
            data = json.dumps({"id": f"r{i}", "text": rng.choice(good)}).encode()
        records.append({"Data": data, "PartitionKey": f"user-{rng.randrange(500)}"})
    return records, malformed


def _put_records(kinesis: Any, stream: str, records: list[dict[str, Any]]) -> int:
    """PutRecords in chunks of 500, retrying the entries Kinesis rejects (throttling)."""
    sent = 0
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        for _ in range(10):
            response = kinesis.put_records(StreamName=stream, Records=chunk)
            if not response.get("FailedRecordCount"):
                break
            chunk = [
                r for r, out in zip(chunk, response["Records"], strict=True) if "ErrorCode" in out
            ]
            time.sleep(0.2)
        else:
            raise MlayerError(f"Kinesis kept rejecting {len(chunk)} records")
        sent += len(records[start : start + 500])
    return sent


def _count_items(dynamodb: Any, table: str) -> int:
    count = 0
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT"):
        count += int(page["Count"])
    return count


def _queue_messages(sqs: Any, url: str, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    total = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    sample = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=limit, VisibilityTimeout=0)
    return total, [json.loads(m["Body"]) for m in sample.get("Messages", [])]


def run_demo(options: DemoOptions = DemoOptions()) -> Generator[Step, None, None]:
    """Run the pipeline end to end on a fresh local endpoint, step by step."""
    import boto3

    from mlayer.aws import AwsSettings
    from mlayer.local.endpoint import local_endpoint

    root = project_root(options.project_root)
    work = options.workdir.resolve()
    layers_dir = work / "layers"
    log_path = work / "lambda.log"
    work.mkdir(parents=True, exist_ok=True)
    if log_path.exists():
        log_path.unlink()  # this run's REPORT lines only
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    arch = "arm64" if os.uname().machine in ("aarch64", "arm64") else "x86_64"
    name = options.function

    step = Step(
        "endpoint", "Starting moto_server, the local AWS endpoint, on a free 127.0.0.1 port"
    )
    yield step
    with local_endpoint() as endpoint:
        yield step.finish(
            [f"listening on {endpoint.url} (pid {endpoint.process.pid})"], url=endpoint.url
        )
        session = boto3.Session(
            aws_access_key_id="mlayer-demo",
            aws_secret_access_key="mlayer-demo",
            region_name="us-east-1",
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        yield from _pipeline(options, aws, root, work, layers_dir, log_path, runtime, arch, name)
        step = Step("stop", f"Stopping moto_server (pid {endpoint.process.pid})")
        yield step
    yield step.finish(["stopped; nothing left running"])


def _pipeline(
    options: DemoOptions,
    aws: Any,
    root: Path,
    work: Path,
    layers_dir: Path,
    log_path: Path,
    runtime: str,
    arch: str,
    name: str,
) -> Iterator[Step]:
    from mlayer.contracts import default_layer_name
    from mlayer.demo_rollouts import RolloutContext, rollout_steps
    from mlayer.deploy import TriggerSettings, deploy_function, trigger
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.inventory import status as function_status
    from mlayer.layers import load_build, publish_deps
    from mlayer.local.runner import invoke, run_local
    from mlayer.model_layer import ModelBuildOptions, build_model
    from mlayer.rollout import publish_model
    from mlayer.rollout import rollback as do_rollback

    lam, s3, sqs = aws.client("lambda"), aws.client("s3"), aws.client("sqs")
    kinesis, dynamodb = aws.client("kinesis"), aws.client("dynamodb")
    deps_layer, model_layer = default_layer_name(name, "deps"), default_layer_name(name, "model")
    # A snapshot: the code deployed, smoke-tested and run locally stays one and the same
    # even if function/ is edited while the demo runs.
    function_dir = work / "function"
    if function_dir.exists():
        shutil.rmtree(function_dir)
    shutil.copytree(
        root / "function", function_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )

    # -- train ---------------------------------------------------------------------------
    step = Step("train", "Training the sample text model (CountVectorizer -> TF-IDF -> classifier)")
    yield step
    v1_dir = work / "model-v1"
    trained = _train(root, v1_dir, seed=0)
    yield step.finish([trained])

    # -- build ---------------------------------------------------------------------------
    step = Step(
        "build-deps",
        f"Building the dependency layer for {runtime} {arch} (numpy, scipy, scikit-learn; "
        "cached after the first run)",
    )
    yield step
    deps = build_deps(
        DepsBuildOptions(
            requirements=root / "requirements.txt",
            runtime=runtime,
            arch=arch,
            layers_dir=layers_dir,
            function_dir=function_dir,
        )
    )
    manifest = deps.manifest
    yield step.finish(
        [
            f"{deps.zip_path.name}: {mb(manifest.unzipped_bytes)} unzipped, "
            f"{mb(manifest.zip_bytes)} zipped, sha256 {manifest.sha256[:12]}"
            + (" (cached build)" if deps.cached else "")
        ]
    )

    step = Step(
        "build-model",
        "Building model layer v1 (compatibility gate + the real function scoring samples)",
    )
    yield step
    model_v1 = build_model(
        ModelBuildOptions(
            model_dir=v1_dir, version=1, layers_dir=layers_dir, function_dir=function_dir
        )
    )
    yield step.finish(_model_lines(model_v1))

    # -- AWS resources -------------------------------------------------------------------
    table, stream = f"{name}-predictions", f"{name}-reviews"
    step = Step(
        "resources",
        f"Creating the output table, the dead-letter queue, the on-failure queue and a "
        f"{options.shards}-shard Kinesis stream",
    )
    yield step
    bucket = f"{name}-artifacts"
    s3.create_bucket(Bucket=bucket)
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dlq_url = sqs.create_queue(QueueName=f"{name}-dead-letters")["QueueUrl"]
    failures_url = sqs.create_queue(QueueName=f"{name}-esm-failures")["QueueUrl"]
    failures_arn = sqs.get_queue_attributes(QueueUrl=failures_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    kinesis.create_stream(StreamName=stream, ShardCount=options.shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    yield step.finish(
        rows=[
            ("output table", table),
            ("dead-letter queue (bad records)", dlq_url),
            ("on-failure queue (discarded batches)", failures_arn),
            ("stream", f"{stream} ({options.shards} shards)"),
        ]
    )

    # -- publish and deploy ----------------------------------------------------------------
    step = Step(
        "publish",
        "Publishing the layers, deploying the function, rolling model v1 out to alias live",
    )
    yield step
    published_deps = publish_deps(
        lam, s3, build=load_build(deps.zip_path), layer_name=deps_layer, bucket=bucket
    )
    deployment = deploy_function(
        lam,
        function=name,
        function_dir=function_dir,
        role=None,
        runtime=runtime,
        arch=arch,
        memory_mb=None,
        timeout_s=None,
        # Bad records too large for a queue message go whole to the artifacts bucket.
        environment={
            "OUTPUT_TABLE": table,
            "DEAD_LETTER_QUEUE_URL": dlq_url,
            "DEAD_LETTER_BUCKET": bucket,
        },
        deps_layer=deps_layer,
        model_layer=model_layer,
        layers_dir=layers_dir,
        local_iam=aws.client("iam"),
    )
    rollout = publish_model(
        lam, s3, function=name, build=load_build(model_v1.zip_path), layer_name=model_layer,
        alias=ALIAS, bucket=bucket,
    )  # fmt: skip
    yield step.finish(
        [
            f"{published_deps.arn}"
            + (f" (via {published_deps.s3_uri})" if published_deps.s3_uri else ""),
            f"function {deployment.function}: {deployment.runtime} {deployment.arch}, "
            f"{deployment.memory_mb} MB, timeout {deployment.timeout_s} s",
            f"{rollout.new_model.location}: {rollout.new_model.label}",
            f"alias {ALIAS} -> version {rollout.new_function_version}",
        ]
    )

    # -- produce -------------------------------------------------------------------------
    records, malformed = make_records(options.records, options.malformed_every)
    step = Step(
        "produce",
        f"Producing {len(records):,} review records to {stream}, {malformed} of them malformed",
    )
    yield step
    sent = _put_records(kinesis, stream, records)
    yield step.finish(
        [
            f"{sent:,} records put; malformed ones: not UTF-8, no 'text' field, 'text' not a "
            "string (the function must dead-letter each, never fail the batch)"
        ],
        sent=sent,
        malformed=malformed,
    )

    step = Step(
        "trigger",
        f"Creating the stream trigger on alias {ALIAS} (after producing: moto tries to run the "
        "function itself on every put to a stream with a mapping)",
    )
    yield step
    created = trigger(
        lam, kinesis, dynamodb, function=name, stream=stream, alias=ALIAS,
        settings=TriggerSettings(on_failure=failures_arn),
        streams=aws.client("dynamodbstreams"),
    )  # fmt: skip
    mapping = created.mapping
    yield step.finish(
        [
            f"mapping {mapping.get('UUID')}: batch {mapping.get('BatchSize')}, bisect "
            f"{mapping.get('BisectBatchOnFunctionError')}, retries "
            f"{mapping.get('MaximumRetryAttempts')}, {mapping.get('FunctionResponseTypes')}"
        ]
    )

    # -- consume ---------------------------------------------------------------------------
    step = Step(
        "run-local",
        "Consuming the stream with the real function in local Lambda environments "
        "(one per shard), as the event source mapping would, until drained",
    )
    yield step
    result = run_local(
        aws,
        function=name,
        stream=stream,
        until_idle_s=options.until_idle_s,
        layers_dir=layers_dir,
        function_dir=function_dir,
        log_path=log_path,
        on_progress=options.on_progress,
    )
    summary = result.summary
    if summary.stopped == "interrupted":
        raise KeyboardInterrupt  # Ctrl-C during the run stops the demo, not just this step
    stats = summary.stats
    p50, p99 = summary.percentile(50), summary.percentile(99)
    yield step.finish(
        rows=[
            ("records", f"{stats.records_done:,}"),
            ("predictions", f"{stats.predictions:,}"),
            ("dead-lettered by the function", f"{stats.dead_lettered:,}"),
            ("reported (batchItemFailures)", f"{stats.reported:,}"),
            ("discarded to on-failure queue", f"{stats.discarded:,}"),
            ("batches / retries", f"{stats.invocations:,} / {stats.retries:,}"),
            ("cold starts", f"{stats.cold_starts}"),
            ("duration p50 / p99", f"{p50 or 0:.1f} / {p99 or 0:.1f} ms"),
            ("throughput", f"{summary.throughput:,.0f} records/s ({summary.active_s:.1f} s)"),
        ],
        summary=summary.to_dict(),
    )

    # -- verify ----------------------------------------------------------------------------
    step = Step("outputs", "Reading back the predictions table and the dead-letter queue")
    yield step
    items = _count_items(dynamodb, table)
    sample = dynamodb.scan(TableName=table, Limit=3)["Items"]
    dead_total, dead_sample = _queue_messages(sqs, dlq_url)
    reasons = Counter(str(m.get("reason", "")).split(" (")[0] for m in dead_sample)
    failures_total, _ = _queue_messages(sqs, failures_url, limit=1)
    lines = [f"{items:,} predictions in {table}, e.g.:"]
    for item in sample:
        lines.append(
            f"  {item['record_id']['S']}: {item.get('label', {}).get('S')} "
            f"(p={float(item.get('probability', {}).get('N', 'nan')):.3f}, model "
            f"{item.get('model', {}).get('S')} v{item.get('model_version', {}).get('N', item.get('model_version', {}).get('S'))})"
        )
    lines.append(f"{dead_total} poison records in the dead-letter queue, e.g.:")
    lines += [f"  {reason}" for reason in reasons]
    lines.append(f"{failures_total} batches on the on-failure queue")
    yield step.finish(lines, items=items, dead_lettered=dead_total, on_failure=failures_total)

    # -- cost ------------------------------------------------------------------------------
    step = Step("cost", f"Pricing the measured REPORT lines ({log_path})")
    yield step
    yield step.finish(
        _cost_lines(
            log_path, aws.region or "us-east-1", arch, options.records, summary.settings.batch_size
        )
    )

    # -- roll out v2, roll back ------------------------------------------------------------
    step = Step("rollout", "Training model v2 and rolling it out to alias live")
    yield step
    v2_dir = work / "model-v2"
    _train(root, v2_dir, seed=1)
    model_v2 = build_model(
        ModelBuildOptions(
            model_dir=v2_dir, version=2, layers_dir=layers_dir, function_dir=function_dir
        )
    )
    rollout = publish_model(
        lam, s3, function=name, build=load_build(model_v2.zip_path), layer_name=model_layer,
        alias=ALIAS, bucket=bucket,
    )  # fmt: skip
    live = _live(function_status, lam, name, model_layer, layers_dir)
    served = _served(invoke, aws, name, layers_dir, function_dir, log_path)
    yield step.finish(
        [
            f"{rollout.old_model.label if rollout.old_model else 'none'} -> {rollout.new_model.label}",
            f"live: {live}",
            f"a local invoke of alias {ALIAS} is answered by {served}",
        ],
        live=live,
        served=served,
    )

    step = Step("rollback", "Rolling back alias live to the previous model")
    yield step
    back = do_rollback(lam, function=name, layer_name=model_layer, alias=ALIAS)
    live = _live(function_status, lam, name, model_layer, layers_dir)
    served = _served(invoke, aws, name, layers_dir, function_dir, log_path)
    yield step.finish(
        [
            f"{back.from_model.label if back.from_model else 'none'} -> {back.to_model.label}",
            f"live: {live}",
            f"a local invoke of alias {ALIAS} is answered by {served}",
        ],
        live=live,
        served=served,
    )

    # -- safe rollouts: a shadow, canaries that decide -----------------------------------
    yield from rollout_steps(
        RolloutContext(
            aws=aws, name=name, alias=ALIAS, stream=f"{name}-rollouts", model_layer=model_layer,
            shadow_layer=default_layer_name(name, "shadow"), layers_dir=layers_dir,
            function_dir=function_dir, log_path=log_path,
            records=max(1_000, options.records // 10), malformed_every=500,
            until_idle_s=options.until_idle_s, v1_dir=v1_dir, v2_zip=model_v2.zip_path,
            work=work, checkpoints=work / "rollouts-checkpoints.json", step=Step,
            put_records=lambda to, rs: _put_records(kinesis, to, rs),
            make_records=make_records,
        )
    )  # fmt: skip


def _model_lines(result: Any) -> list[str]:
    manifest = result.manifest
    smoke = result.smoke or {}
    return [
        f"{result.zip_path.name}: {manifest.get('name')} v{manifest.get('version')}, sha256 "
        f"{str(manifest.get('sha256', ''))[:12]}",
        f"smoke test: {smoke.get('records')} records scored by the real function "
        f"(init {smoke.get('init_ms')} ms, invoke {smoke.get('duration_ms')} ms)",
    ]


def _live(status: Callable[..., Any], lam: Any, name: str, layer: str, layers_dir: Path) -> str:
    info = status(lam, function=name, layer_name=layer, alias=ALIAS, layers_dir=layers_dir)
    model = info.live_model.label if info.live_model else "no model"
    return f"{info.live_from}: {model}"


def _served(
    invoke: Callable[..., Any], aws: Any, name: str, layers_dir: Path, function_dir: Path, log: Path
) -> str:
    result = invoke(
        aws, function=name, qualifier=ALIAS, layers_dir=layers_dir, function_dir=function_dir,
        log_path=log.with_name("invoke.log"),
    )  # fmt: skip
    invocation = result.invocation
    if invocation.error:
        raise MlayerError(f"the live function failed: {invocation.error}")
    predictions = (invocation.response or {}).get("predictions") or []
    versions = sorted({str(p.get("model_version")) for p in predictions})
    names = sorted({str(p.get("model")) for p in predictions})
    return f"model {', '.join(names)} v{', '.join(versions)} (function version {result.function.version})"


def _cost_lines(log_path: Path, region: str, arch: str, records: int, batch_size: int) -> list[str]:
    from decimal import Decimal

    from mlayer.cost import Scenario, estimate_from_reports
    from mlayer.prices import load_prices
    from mlayer.reports import read_reports

    reports = read_reports(log_path)
    prices = load_prices(region, arch)
    estimate = estimate_from_reports(
        prices,
        Scenario(records=records, batch_sizes=(batch_size,)),
        reports,
        invocations_per_environment=Decimal(1000),
    )
    row = estimate.best
    measured = row.measured
    lines = []
    if measured is not None:
        lines.append(
            f"{measured.invocations} invocations at {measured.memory_mb} MB: billed "
            f"p50 {measured.billed_ms.p50:.0f} ms, p99 {measured.billed_ms.p99:.0f} ms; "
            f"{measured.cold_starts} cold starts"
        )
        lines.append(f"this run would have cost ${measured.total:.6f} on Lambda ({region}, {arch})")
    lines.append(
        f"per 1,000 records: ${row.first.per_1000_records:.6f} at batch {batch_size}; per "
        f"invocation ${row.first.per_invocation.total:.8f} (one cold start per 1,000 "
        "invocations, as in steady production)"
    )
    return lines
