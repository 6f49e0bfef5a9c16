"""End to end: the installed ``mlayer`` executable, as a subprocess, against moto_server.

build-deps -> publish-deps (59 MB: through S3) -> deploy-function -> publish-model v1 ->
publish-model v2 -> rollback -> status shows v1 live, history shows both. The real function,
real layers (the model builds run the smoke test on them), AWS state checked with boto3 after
each step. The transcript (commands and output) is kept: set MLAYER_E2E_TRANSCRIPT=FILE to
save it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import pytest

from mlayer.local.endpoint import LocalEndpoint, local_endpoint

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def endpoint() -> Iterator[LocalEndpoint]:
    """moto_server on a free 127.0.0.1 port, stopped however the test ends."""
    with local_endpoint() as running:
        yield running


class Session:
    """Runs the installed mlayer against the endpoint and records a transcript."""

    def __init__(self, endpoint: LocalEndpoint, cwd: Path) -> None:
        executable = shutil.which("mlayer")
        assert executable, "the mlayer console script is not installed (pip install -e .)"
        self.executable = executable
        self.cwd = cwd
        self.env = {
            **os.environ,
            "MLAYER_ENDPOINT_URL": endpoint.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "COLUMNS": "140",
        }
        self.transcript: list[str] = []

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            [self.executable, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=570,
        )
        self.transcript.append(f"$ mlayer {shlex.join(args)}\n{proc.stdout}{proc.stderr}")
        assert proc.returncode == 0, self.text()
        assert "Traceback" not in proc.stdout
        return proc.stdout

    def text(self) -> str:
        return "\n".join(self.transcript)


def test_build_publish_deploy_roll_out_and_back(
    endpoint: LocalEndpoint, text_model_dir: Path, tmp_path: Path
) -> None:
    mlayer = Session(endpoint, tmp_path)
    layers = str(tmp_path / "layers")
    aws: dict[str, Any] = {
        name: boto3.client(name, endpoint_url=endpoint.url, region_name="us-east-1")
        for name in ("lambda", "s3")
    }
    lam = aws["lambda"]
    aws["s3"].create_bucket(Bucket="mlayer-artifacts")
    try:
        # Given: the dependency layer built for the local interpreter (cached across runs).
        mlayer(
            "build-deps",
            "--runtime",
            "python3.11",
            "--layers-dir",
            layers,
            "--requirements",
            str(ROOT / "requirements.txt"),
        )
        deps_manifest = json.loads(
            (tmp_path / "layers" / "deps-python3.11-x86_64.json").read_text()
        )

        out = mlayer(
            "publish-deps", "--function", "scorer", "--runtime", "python3.11",
            "--layers-dir", layers, "--bucket", "mlayer-artifacts",
        )  # fmt: skip
        deps = lam.get_layer_version(LayerName="scorer-deps", VersionNumber=1)
        if deps_manifest["zip_bytes"] > 50 * 1024 * 1024:
            assert "Published scorer-deps version 1 via s3://mlayer-artifacts/" in out
        assert deps["Content"]["CodeSize"] == deps_manifest["zip_bytes"]
        assert deps["CompatibleRuntimes"] == ["python3.11"]

        mlayer(
            "deploy-function", "--function", "scorer", "--function-dir", str(ROOT / "function"),
            "--layers-dir", layers, "--alias", "live",
            "--env", "OUTPUT_TABLE=predictions",
        )  # fmt: skip
        config = lam.get_function_configuration(FunctionName="scorer")
        assert config["Runtime"] == "python3.11"
        assert [x["Arn"] for x in config["Layers"]] == [deps["LayerVersionArn"]]

        # When: model v1, then v2, are rolled out through the alias.
        out1 = mlayer(
            "publish-model", str(text_model_dir), "--function", "scorer", "--alias", "live",
            "--layers-dir", layers, "--runtime", "python3.11",
        )  # fmt: skip
        assert "Built " in out1 and "(model sentiment v1)" in out1
        # v2: the same estimator saved again with compression: other bytes, another model.
        # (The same files again would be no new model at all: see "unchanged" below.)
        v2_dir = tmp_path / "model-v2"
        shutil.copytree(text_model_dir, v2_dir)
        joblib.dump(
            joblib.load(v2_dir / "sentiment.joblib"), v2_dir / "sentiment.joblib", compress=3
        )
        out2 = mlayer(
            "publish-model", str(v2_dir), "--function", "scorer", "--alias", "live",
            "--layers-dir", layers, "--runtime", "python3.11",
        )  # fmt: skip
        assert "Model: sentiment v1 (layer version 1) -> sentiment v2 (layer version 2)" in out2
        again = mlayer(
            "publish-model", str(v2_dir), "--function", "scorer", "--alias", "live",
            "--layers-dir", layers, "--runtime", "python3.11",
        )  # fmt: skip
        assert again.endswith(
            "unchanged: sentiment v2 is live with this content (alias live, scorer-model "
            "version 2); nothing was published or relinked.\n"
        )
        assert len(lam.list_layer_versions(LayerName="scorer-model")["LayerVersions"]) == 2
        model_v1 = lam.get_layer_version(LayerName="scorer-model", VersionNumber=1)
        model_v2 = lam.get_layer_version(LayerName="scorer-model", VersionNumber=2)
        live = lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"]
        layers_of = lambda q: [  # noqa: E731
            x["Arn"]
            for x in lam.get_function_configuration(FunctionName="scorer", Qualifier=q)["Layers"]
        ]
        assert layers_of(live) == [deps["LayerVersionArn"], model_v2["LayerVersionArn"]]

        # And rolled back.
        out = mlayer("rollback", "--function", "scorer", "--alias", "live")
        assert out.startswith(
            "Rolled back scorer: sentiment v2 (layer version 2) -> sentiment v1 (layer version 1)"
        )

        # Then: AWS says v1 is live, and so do status and history.
        live = lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"]
        assert layers_of(live) == [deps["LayerVersionArn"], model_v1["LayerVersionArn"]]
        assert layers_of("$LATEST") == [deps["LayerVersionArn"], model_v1["LayerVersionArn"]]

        text = mlayer("status", "--function", "scorer", "--alias", "live", "--layers-dir", layers)
        assert f"Live model (alias live -> version {live}): sentiment v1 (layer version 1)" in text
        status = json.loads(
            mlayer(
                "status",
                "--function",
                "scorer",
                "--alias",
                "live",
                "--layers-dir",
                layers,
                "--json",
            )
        )
        assert status["live_model"]["version"] == 1
        assert status["manifest"]["version"] == 1
        assert status["manifest"]["stages"] == [
            "PreProc1_sentiment.joblib",
            "PreProc2_sentiment.joblib",
            "sentiment.joblib",
        ]
        assert [x["sha256"] for x in status["layers"]] == [
            deps_manifest["sha256"],
            json.loads((tmp_path / "layers" / "model-sentiment-v1.json").read_text())["sha256"],
        ]

        mlayer("history", "--function", "scorer", "--alias", "live")
        history = json.loads(mlayer("history", "--function", "scorer", "--alias", "live", "--json"))
        assert [(r["model_version"], r["live"]) for r in history["rows"]] == [(2, False), (1, True)]
        assert history["rows"][1]["aliases"] == ["live"]
    finally:
        target = os.environ.get("MLAYER_E2E_TRANSCRIPT")
        if target:
            Path(target).write_text(mlayer.text())
