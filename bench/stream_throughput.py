"""Records/s end to end through ``run-local``, and where the time goes.

    python bench/stream_throughput.py                    # batch sizes 10, 100, 1,000; 2 shards
    python bench/stream_throughput.py --records 50000 --sink table
    python bench/stream_throughput.py --records 5000 --metrics both   # the metrics' cost

For each batch size a fresh 2-shard Kinesis stream on moto_server gets ``--records`` review
records (JSON, text model), then the emulator drains it with the real function on real
layers (the deps layer for this Python and the sample text model, built with mlayer's build
cache), one execution environment per shard, exactly as ``mlayer run-local`` does. Cold
starts are excluded from the figures (each run has one per shard; see Init).

Where a lane's time goes (each shard's lane, summed, init excluded):

- function: the handler's own Duration, as its REPORT line says;
- runtime API: invoke() wall time minus Duration: serializing the event, the two HTTP
  exchanges with awslambdaric, its JSON decoding and encoding;
- emulator: everything else: polling Kinesis (GetRecords on moto_server), building the
  event records, batching, checkpoints, waiting for records.

``--sink table`` also writes every prediction to a DynamoDB table on moto_server (the
function's OUTPUT_TABLE), which then dominates: it measures moto more than mlayer.

``--metrics`` on (the default on an endpoint), off, or both: each invocation's metrics (the
function's EMF records, Lambda's AWS/Lambda metrics) put to CloudWatch on moto_server by the
runner's background publisher; ``both`` runs each batch size twice, on a fresh stream each.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
TEXTS = (
    "great product, works well",
    "broke after a day",
    "excellent value, would buy again",
    "terrible support and the battery died",
    "does what it says",
    "arrived late and damaged",
)


def build_layers(work: Path, function_dir: Path) -> Path:
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.model_layer import ModelBuildOptions, build_model

    layers = work / "layers"
    model = work / "model"
    subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), "--out", str(model)],
        check=True,
        capture_output=True,
    )
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime=RUNTIME,
            layers_dir=layers,
            function_dir=function_dir,
        )
    )
    build_model(
        ModelBuildOptions(model_dir=model, version=1, layers_dir=layers, function_dir=function_dir)
    )
    return layers


def deploy(aws: Any, layers: Path, sink: str, function_dir: Path) -> None:
    from mlayer.deploy import deploy_function
    from mlayer.layers import load_build, publish_deps
    from mlayer.rollout import publish_model

    lam, s3 = aws.client("lambda"), aws.client("s3")
    s3.create_bucket(Bucket="bench")
    environment = {}
    if sink == "table":
        aws.client("dynamodb").create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        environment["OUTPUT_TABLE"] = "predictions"
    publish_deps(
        lam, s3, build=load_build(next(layers.glob("deps-*.zip"))), layer_name="bench-deps",
        bucket="bench",
    )  # fmt: skip
    deploy_function(
        lam,
        function="bench",
        function_dir=function_dir,
        role=None,
        runtime=RUNTIME,
        arch="x86_64",
        memory_mb=1024,
        timeout_s=60,
        environment=environment,
        deps_layer="bench-deps",
        model_layer="bench-model",
        layers_dir=layers,
        local_iam=aws.client("iam"),
    )
    publish_model(
        lam, s3, function="bench", build=load_build(next(layers.glob("model-*.zip"))),
        layer_name="bench-model",
    )  # fmt: skip


def produce(kinesis: Any, stream: str, count: int) -> None:
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    rng = random.Random(0)
    for start in range(0, count, 500):
        kinesis.put_records(
            StreamName=stream,
            Records=[
                {
                    "Data": json.dumps({"text": rng.choice(TEXTS)}).encode(),
                    "PartitionKey": f"user-{rng.randrange(1000)}",
                }
                for _ in range(min(500, count - start))
            ],
        )


def run(
    aws: Any,
    layers: Path,
    work: Path,
    function_dir: Path,
    batch_size: int,
    records: int,
    metrics: bool,
) -> dict[str, float]:
    from mlayer.local.runner import run_local

    stream = f"bench-{batch_size}-{'metrics' if metrics else 'plain'}"
    produce(aws.client("kinesis"), stream, records)
    result = run_local(
        aws,
        function="bench",
        stream=stream,
        overrides={"batch_size": batch_size},
        until_idle_s=1.0,
        layers_dir=layers,
        function_dir=function_dir,
        log_path=work / f"{stream}.log",
        poll_interval_s=0.05,
        metrics=metrics,
    )
    summary = result.summary
    stats = summary.stats
    assert stats.records_done == records, (summary.stopped, summary.elapsed_s, stats)
    init_s = sum(stats.init_durations_ms) / 1000.0
    lane_s = stats.lanes * summary.active_s - init_s
    busy_s = stats.busy_s - init_s
    return {
        "records_s": stats.records_done / max(summary.active_s - init_s / stats.lanes, 1e-9),
        "invocations": stats.invocations,
        "p50_ms": summary.percentile(50) or 0.0,
        "function": stats.function_s / lane_s,
        "runtime_api": (busy_s - stats.function_s) / lane_s,
        "emulator": 1.0 - busy_s / lane_s,
        "overhead_ms": (busy_s - stats.function_s) / stats.invocations * 1000.0,
        "init_ms": max(stats.init_durations_ms) if stats.init_durations_ms else 0.0,
        "metrics": float(result.metrics.put) if result.metrics else 0.0,
        "metrics_failed": float(result.metrics.failed) if result.metrics else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-sizes", default="10,100,1000")
    parser.add_argument("--sink", choices=("none", "table"), default="none")
    parser.add_argument("--metrics", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.metrics]

    import boto3

    from mlayer.aws import AwsSettings
    from mlayer.local.endpoint import local_endpoint

    with tempfile.TemporaryDirectory(prefix="mlayer-bench-") as tmp:
        work = Path(tmp)
        # The code deployed and the code run must stay the same while the bench runs.
        function_dir = work / "function"
        shutil.copytree(
            ROOT / "function", function_dir, ignore=shutil.ignore_patterns("__pycache__")
        )
        layers = build_layers(work, function_dir)
        with local_endpoint() as endpoint:
            session = boto3.Session(
                aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
            )
            aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
            deploy(aws, layers, args.sink, function_dir)
            rows = []
            for size in (int(s) for s in args.batch_sizes.split(",")):
                for metrics in modes:
                    rows.append(
                        (
                            size,
                            metrics,
                            run(aws, layers, work, function_dir, size, args.records, metrics),
                        )
                    )
    print(
        f"run-local, 2 shards, {args.records:,} records, text model, sink: {args.sink}, "
        f"1024 MB, {RUNTIME}; cold starts excluded"
    )
    header = (
        f"{'batch':>6} {'metrics':>8} {'records/s':>10} {'batches':>8} {'p50 ms':>8} "
        f"{'function':>9} {'runtime API':>12} {'emulator':>9} {'API ms/inv':>11} {'init ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for size, metrics, r in rows:
        put = f"{r['metrics']:,.0f}" if metrics else "off"
        if r["metrics_failed"]:
            put += "!"  # some were not put: see the run's notes
        print(
            f"{size:>6,} {put:>8} {r['records_s']:>10,.0f} {r['invocations']:>8,.0f} "
            f"{r['p50_ms']:>8.1f} {r['function']:>9.0%} {r['runtime_api']:>12.0%} "
            f"{r['emulator']:>9.0%} {r['overhead_ms']:>11.2f} {r['init_ms']:>8.0f}"
        )


if __name__ == "__main__":
    main()
