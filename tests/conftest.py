"""Shared fixtures: fake AWS credentials for moto, the project root, the sample models, the
layers directory and the published-deps-layer function the rollback / status tests start from."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from build_cache import shared_build_cache

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test ever reaches real AWS: fake credentials, a fixed region, no profile."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "MLAYER_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    yield


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def layers(tmp_path: Path) -> Path:
    """Where the test's layer builds go (``--layers-dir``)."""
    return tmp_path / "layers"


@pytest.fixture
def lam(layers: Path) -> Iterator[Any]:
    """Given (under moto): the deps layer published and function "scorer" linked to it.

    Yields the Lambda client.
    """
    import boto3
    from fake_layers import function_on_deps_layer
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("lambda", region_name="us-east-1")
        function_on_deps_layer(client, boto3.client("iam", region_name="us-east-1"), layers)
        yield client


TRAIN_SCRIPT = ROOT / "training" / "train.py"


def _trained_model(request: pytest.FixtureRequest, example: str) -> Path:
    """Train a sample model with training/train.py, once per change of its inputs.

    The model directory is cached under pytest's cache dir (.pytest_cache), keyed by a hash
    of train.py, requirements.txt, the interpreter and the installed library versions, so
    later sessions reuse it.
    Concurrent sessions each train into a private dir and rename it into place; the loser
    of that race uses the winner's copy. Treat the directory as read-only (copy it first
    to modify it).
    """
    digest = hashlib.sha256(sys.version.encode())
    for path in (TRAIN_SCRIPT, ROOT / "requirements.txt"):
        digest.update(path.read_bytes())
    # The installed libraries, not only the pins: a stale environment must not reuse pickles.
    for package in ("scikit-learn", "numpy", "scipy", "joblib"):
        digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    cache: pytest.Cache | None = getattr(request.config, "cache", None)
    if cache is not None:
        base = cache.mkdir("mlayer-models")
    else:  # -p no:cacheprovider: train once for this session only
        base = request.getfixturevalue("tmp_path_factory").mktemp("mlayer-models")
    target = base / f"{example}-{digest.hexdigest()[:16]}"
    if (target / "metadata.json").is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{example}-", dir=base))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(TRAIN_SCRIPT),
                "--out",
                str(staging / "model"),
                "--example",
                example,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"training/train.py --example {example} failed:\n{proc.stdout}{proc.stderr}"
            )
        try:
            os.rename(staging / "model", target)
        except OSError:
            if not (target / "metadata.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def text_model_dir(request: pytest.FixtureRequest) -> Path:
    """The sample text model (sentiment: CountVectorizer -> TfidfTransformer -> classifier)."""
    return _trained_model(request, "text")


@pytest.fixture(scope="session")
def numeric_model_dir(request: pytest.FixtureRequest) -> Path:
    """The sample numeric model (income: one Pipeline on named numeric features)."""
    return _trained_model(request, "numeric")


def _build_deps(factory: pytest.TempPathFactory, requirements: Path, name: str) -> Path:
    # A lock lets the first xdist worker build while the others wait and reuse its build.
    cache = shared_build_cache(factory)
    layers = factory.mktemp(name)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run_build_deps(requirements, layers, cache)


def _run_build_deps(requirements: Path, layers: Path, cache: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", "build-deps", "-r",
         str(requirements), "--runtime", "python3.11", "--layers-dir", str(layers),
         "--cache-dir", str(cache)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return layers


@pytest.fixture(scope="session")
def deps_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layers/ folder holding the python3.11 x86_64 deps layer of requirements.txt (built
    once per session; test_build_deps.py shares the same build cache)."""
    return _build_deps(tmp_path_factory, ROOT / "requirements.txt", "model-layers")


PANDAS_PIN = "pandas==2.3.3"  # the newest pandas beside numpy 2.2 on Python 3.11


@pytest.fixture(scope="session")
def pandas_deps_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same dependency layer with pandas added (what DataFrame models need)."""
    requirements = tmp_path_factory.mktemp("pandas-requirements") / "requirements.txt"
    requirements.write_text((ROOT / "requirements.txt").read_text() + f"{PANDAS_PIN}\n")
    return _build_deps(tmp_path_factory, requirements, "pandas-layers")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
