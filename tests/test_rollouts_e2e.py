"""End to end, safe rollouts through the CLI against moto_server, with the real function on
the real layers: a shadow scored beside the live model (its agreement checked against both
models called directly, then read back by ``compare`` from the metrics the local runner
put), and canaries that decide: a degenerate candidate rolled back by ``--min-agreement``,
a healthy one promoted, while ``run-local`` streams records through the alias.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import joblib
import pytest
from function_support import log_entries as logged

from mlayer.aws import AwsSettings
from mlayer.demo import degenerate_model
from mlayer.local.endpoint import LocalEndpoint, local_endpoint

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
FUNCTION = "scorer"
pytestmark = pytest.mark.slow

TEXTS = [
    "great product, works well",
    "broke after a day",
    "excellent value, would buy again",
    "terrible support and the battery died",
    "does what it says",
    "arrived late and damaged",
    "love it, five stars",
    "waste of money",
    "not bad, not great",
    "the kettle is fine I guess",
    "would not recommend to anyone",
    "fast shipping, poor quality",
]


def _mlayer() -> str:
    return shutil.which("mlayer") or "mlayer"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path) -> dict[str, Path]:
    """Model directories: v1 the sample text model, v2 retrained with another seed, v3 v1's
    preprocessing with a classifier answering 'positive' to every record."""
    base = tmp_path_factory.mktemp("rollout-models")
    v2 = base / "v2"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), "--out", str(v2), "--seed", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    v3 = degenerate_model(text_model_dir, base / "v3", "positive")
    return {"v1": text_model_dir, "v2": v2, "v3": v3}


@pytest.fixture(scope="module")
def rollout_layers(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Path:
    """layers/ with the deps layer for this Python and the three model builds."""
    from mlayer.deps_layer import DepsBuildOptions, build_deps

    layers = tmp_path_factory.mktemp("rollout-layers")
    build_deps(
        DepsBuildOptions(
            requirements=ROOT / "requirements.txt",
            runtime=RUNTIME,
            layers_dir=layers,
            function_dir=ROOT / "function",
        )
    )
    for version, name in ((1, "v1"), (2, "v2"), (3, "v3")):
        proc = subprocess.run(
            [_mlayer(), "build-model", str(models[name]), "--version", str(version),
             "--layers-dir", str(layers)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return layers


@dataclass
class Deployed:
    endpoint: LocalEndpoint
    layers: Path
    clients: dict[str, Any]


@pytest.fixture
def deployed(rollout_layers: Path) -> Iterator[Deployed]:
    """A fresh moto_server: the deps layer published, the function deployed (no model)."""
    from mlayer.deploy import deploy_function
    from mlayer.layers import load_build, publish_deps

    with local_endpoint() as endpoint:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        aws = AwsSettings(region="us-east-1", endpoint_url=endpoint.url, _session=session)
        names = ("lambda", "s3", "kinesis", "iam", "cloudwatch")
        clients = {n: aws.client(n) for n in names}
        clients["s3"].create_bucket(Bucket="artifacts")
        deps = next(rollout_layers.glob("deps-*.zip"))
        publish_deps(
            clients["lambda"], clients["s3"], build=load_build(deps),
            layer_name=f"{FUNCTION}-deps", bucket="artifacts",
        )  # fmt: skip
        deploy_function(
            clients["lambda"], function=FUNCTION, function_dir=ROOT / "function", role=None,
            runtime=RUNTIME, arch="x86_64", memory_mb=1024, timeout_s=60, environment={},
            deps_layer=f"{FUNCTION}-deps", model_layer=f"{FUNCTION}-model",
            layers_dir=rollout_layers, local_iam=clients["iam"],
        )  # fmt: skip
        yield Deployed(endpoint, rollout_layers, clients)


def command(deployed: Deployed, *args: str) -> list[str]:
    return [_mlayer(), "--endpoint-url", deployed.endpoint.url, *args]


def mlayer(deployed: Deployed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(deployed, *args),
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def publish(deployed: Deployed, version: int, *extra: str, cwd: Path) -> str:
    proc = mlayer(
        deployed, "publish-model", str(deployed.layers / f"model-sentiment-v{version}.zip"),
        "--function", FUNCTION, "--alias", "live", "--layers-dir", str(deployed.layers),
        *extra, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def direct(model_dir: Path, texts: list[str]) -> tuple[list[str], Any]:
    """Labels and probabilities of the model's stages called directly (no mlayer code)."""
    meta = json.loads((model_dir / "metadata.json").read_text())
    stages = [joblib.load(model_dir / name) for name in meta["stages"]]
    features: Any = texts
    for stage in stages[:-1]:
        features = stage.transform(features)
    classifier = stages[-1]
    names = meta["labels"]
    labels = [names[list(classifier.classes_).index(c)] for c in classifier.predict(features)]
    return labels, classifier.predict_proba(features)


def test_a_shadow_is_scored_beside_the_live_model_compared_and_promoted(
    deployed: Deployed, models: dict[str, Path], tmp_path: Path
) -> None:
    # given v1 live on alias live, and v2 published as its shadow
    publish(deployed, 1, cwd=tmp_path)
    out = publish(deployed, 2, "--shadow", cwd=tmp_path)
    assert "Shadow: sentiment v2" in out, out
    config = deployed.clients["lambda"].get_function_configuration(
        FunctionName=FUNCTION, Qualifier="live"
    )
    linked = [layer["Arn"].split(":")[-2] for layer in config["Layers"]]
    assert linked == [f"{FUNCTION}-deps", f"{FUNCTION}-model", f"{FUNCTION}-shadow"]

    # when one batch of texts goes through the live alias
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"records": [{"text": t} for t in TEXTS]}))
    log = tmp_path / "lambda.log"
    proc = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--alias", "live", "--event", str(event),
        "--layers-dir", str(deployed.layers), "--function-dir", str(ROOT / "function"),
        "--log", str(log), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    response = json.loads(proc.stdout)["response"]

    # then the live model's answers are written, v1's
    live_labels, live_proba = direct(models["v1"], TEXTS)
    shadow_labels, shadow_proba = direct(models["v2"], TEXTS)
    assert [p["label"] for p in response["predictions"]] == live_labels
    assert {p["model_version"] for p in response["predictions"]} == {1}
    # and the batch line's agreement is what the two models answer, called directly
    agreed = sum(a == b for a, b in zip(live_labels, shadow_labels, strict=True))
    names = json.loads((models["v1"] / "metadata.json").read_text())["labels"]
    abs_diff = sum(
        abs(live_proba[row, names.index(label)] - shadow_proba[row, names.index(label)])
        for row, label in enumerate(live_labels)
    ) / len(TEXTS)
    (batch,) = logged(log, "batch")
    assert batch["shadow_version"] == "2" and batch["model_version"] == "1"
    assert batch["shadow_records"] == len(TEXTS)
    assert batch["shadow_agreed"] == agreed
    assert batch["shadow_agreement"] == pytest.approx(agreed / len(TEXTS))
    assert batch["shadow_abs_diff"] == pytest.approx(abs_diff)
    assert abs_diff > 0  # two models that differ: the comparison means something

    # and compare reads the same figures back from CloudWatch on the endpoint
    compared = mlayer(
        deployed, "compare", "--function", FUNCTION, "--alias", "live", "--since", "10m",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stdout + compared.stderr
    columns = {c["role"]: c for c in json.loads(compared.stdout)["columns"]}
    assert columns["live"]["records"] == len(TEXTS)
    assert columns["shadow"]["records"] == len(TEXTS)
    assert columns["shadow"]["agreement"] == pytest.approx(agreed / len(TEXTS))
    shares = {label: live_labels.count(label) / len(TEXTS) for label in set(live_labels)}
    assert columns["live"]["label_shares"] == pytest.approx(shares)

    # and promote makes the shadow live, leaving no shadow behind
    promoted = mlayer(
        deployed, "promote", "--function", FUNCTION, "--alias", "live",
        "--layers-dir", str(deployed.layers), cwd=tmp_path,
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "is now live" in promoted.stdout
    config = deployed.clients["lambda"].get_function_configuration(
        FunctionName=FUNCTION, Qualifier="live"
    )
    linked = [layer["Arn"].split(":")[-2] for layer in config["Layers"]]
    assert linked == [f"{FUNCTION}-deps", f"{FUNCTION}-model"]
    again = mlayer(
        deployed, "invoke", "--function", FUNCTION, "--alias", "live", "--event", str(event),
        "--layers-dir", str(deployed.layers), "--function-dir", str(ROOT / "function"),
        "--log", str(tmp_path / "after.log"), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    answers = json.loads(again.stdout)["response"]["predictions"]
    assert [p["label"] for p in answers] == shadow_labels
    assert {p["model_version"] for p in answers} == {2}


def _bake_with_traffic(
    deployed: Deployed, version: int, seed: int, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """publish-model ``version`` as a 30% canary baked 20 s, while run-local streams 1,000
    records through the alias once the canary routes; the publish's completed process."""
    kinesis = deployed.clients["kinesis"]
    records = [
        {"Data": json.dumps({"text": TEXTS[(i * seed) % len(TEXTS)]}).encode(),
         "PartitionKey": f"user-{i % 97}"}
        for i in range(1_000)
    ]  # fmt: skip
    for start in range(0, len(records), 500):
        kinesis.put_records(StreamName="reviews", Records=records[start : start + 500])
    env = {**os.environ, "COLUMNS": "200"}
    baking = subprocess.Popen(
        command(
            deployed, "publish-model", str(deployed.layers / f"model-sentiment-v{version}.zip"),
            "--function", FUNCTION, "--alias", "live", "--layers-dir", str(deployed.layers),
            "--canary", "30", "--bake", "20s", "--bake-interval", "1s",
            "--min-agreement", "95%",
        ),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lam = deployed.clients["lambda"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and baking.poll() is None:
        routing = lam.get_alias(FunctionName=FUNCTION, Name="live").get("RoutingConfig") or {}
        if routing.get("AdditionalVersionWeights"):
            break
        time.sleep(0.2)
    run = subprocess.run(
        command(
            deployed, "run-local", "--function", FUNCTION, "--alias", "live",
            "--stream", "reviews", "--until-idle", "2", "--checkpoints",
            str(tmp_path / "checkpoints.json"), "--layers-dir", str(deployed.layers),
            "--function-dir", str(ROOT / "function"), "--log", str(tmp_path / "run.log"),
        ),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "batches per version" in run.stdout, run.stdout
    out, err = baking.communicate(timeout=300)
    return subprocess.CompletedProcess(baking.args, baking.returncode, out, err)


def test_canaries_decide_a_degenerate_one_rolled_back_a_healthy_one_promoted(
    deployed: Deployed, tmp_path: Path
) -> None:
    # given v1 live on alias live, and a stream of reviews
    publish(deployed, 1, cwd=tmp_path)
    kinesis = deployed.clients["kinesis"]
    kinesis.create_stream(StreamName="reviews", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="reviews", WaiterConfig={"Delay": 0.2})
    lam = deployed.clients["lambda"]

    # when v3, which answers 'positive' to every record, bakes as a canary
    bad = _bake_with_traffic(deployed, 3, seed=1, tmp_path=tmp_path)

    # then it is rolled back by its agreement with v1, measured record by record, and the
    # figures it decided on are printed
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "agreement >= 95%, per record: version" in bad.stdout, bad.stdout
    assert "Error: rolled back: agreement" in bad.stderr, bad.stderr
    assert "(shadow: the live model v1 scored the same records)" in bad.stderr
    alias = lam.get_alias(FunctionName=FUNCTION, Name="live")
    assert (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}) == {}
    config = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier="live")
    assert config["Description"].startswith("mlayer model sentiment v1 ")

    # when v2, a healthy retrain, bakes the same way
    good = _bake_with_traffic(deployed, 2, seed=5, tmp_path=tmp_path)

    # then every guard holds and it is promoted, onto a version without the shadow
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Promoted: every guard held over" in good.stdout, good.stdout
    config = lam.get_function_configuration(FunctionName=FUNCTION, Qualifier="live")
    assert config["Description"].startswith("mlayer model sentiment v2 ")
    linked = [layer["Arn"].split(":")[-2] for layer in config["Layers"]]
    assert linked == [f"{FUNCTION}-deps", f"{FUNCTION}-model"]
    alias = lam.get_alias(FunctionName=FUNCTION, Name="live")
    assert (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}) == {}


def test_ctrl_c_during_a_bake_leaves_the_canary_and_says_how_to_finish(
    deployed: Deployed, tmp_path: Path
) -> None:
    import signal

    # given v1 live, and v2 baking as a canary for five minutes
    publish(deployed, 1, cwd=tmp_path)
    baking = subprocess.Popen(
        command(
            deployed, "publish-model", str(deployed.layers / "model-sentiment-v2.zip"),
            "--function", FUNCTION, "--alias", "live", "--layers-dir", str(deployed.layers),
            "--canary", "10", "--bake", "5m", "--bake-interval", "1s",
        ),
        cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert baking.stdout is not None
    seen = []
    for line in baking.stdout:
        seen.append(line)
        if line.startswith("Baking the canary"):
            break
    assert seen and seen[-1].startswith("Baking the canary"), "".join(seen)

    # when the user presses Ctrl-C
    baking.send_signal(signal.SIGINT)
    out, err = baking.communicate(timeout=60)

    # then the canary is left as it is, and the output says how to finish it
    assert baking.returncode == 130, out + err
    text = "".join(seen) + out + err
    assert "Interrupted: the canary is left as it is" in text, text
    assert f"mlayer promote --function {FUNCTION} --alias live" in text
    assert f"mlayer rollback --function {FUNCTION} --alias live" in text
    alias = deployed.clients["lambda"].get_alias(FunctionName=FUNCTION, Name="live")
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    assert list(weights.values()) == [0.1]
