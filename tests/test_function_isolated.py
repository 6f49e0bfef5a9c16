"""The function needs nothing but the standard library and its dependency layer.

The handler runs in a separate interpreter started with ``-I -S`` (no site-packages, no
PYTHONPATH, no user site), whose sys.path holds only the standard library, the function dir
and a layer-like dir made by ``pip install --target`` from requirements.txt, as on Lambda
(/var/task, /opt/python). The child asserts its own sys.path and that boto3 was never
imported, and its responses must equal the in-process ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from function_support import FUNCTION_DIR, ROOT, invoke, load_event

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlayer-tests"

CHILD = r"""
import json, os, sys

function_dir, layer_dir, requests_path, block_orjson = sys.argv[1:5]
# -I -S: only the standard library is on the path (prefix/lib/python3.X, its zip, lib-dynload).
for entry in sys.path:
    assert entry.startswith(sys.base_prefix) and "site-packages" not in entry, sys.path
stdlib = list(sys.path)
sys.path[:0] = [function_dir, layer_dir]
if block_orjson == "1":
    sys.modules["orjson"] = None  # import orjson -> ImportError: the json fallback

import lambda_function
import kinesis_event

results = []
for request in json.load(open(requests_path)):
    for name in ("INPUT_FIELD", "DEAD_LETTER_QUEUE_URL", "OUTPUT_TABLE", "OUTPUT_STREAM"):
        os.environ.pop(name, None)
    os.environ.update(request["env"])
    results.append(lambda_function.lambda_handler(request["event"], None))

import sklearn
assert sklearn.__file__.startswith(layer_dir), sklearn.__file__
# No sink configured, and a dead-letter queue with nothing to send: boto3 never loads.
assert "boto3" not in sys.modules and "botocore" not in sys.modules
heavy = sorted(m for m in ("boto3", "botocore", "s3transfer", "mlayer", "pytest") if m in sys.modules)
outside = sorted(
    {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
     if getattr(module, "__file__", None)
     and not any(module.__file__.startswith(p) for p in [function_dir, layer_dir, *stdlib])}
)
print("RESULT " + json.dumps({
    "responses": results,
    "heavy": heavy,
    "outside": outside,
    "json": kinesis_event.fast_loads.__module__,
    "sys_path": sys.path,
    "python": "%d.%d" % sys.version_info[:2],
}))
"""


def interpreter(version: str) -> str | None:
    """A working ``python<version>``: on PATH, or installed by pyenv (whose shims may refuse)."""
    if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}")
    )
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def layer_for(python: str, version: str) -> Path:
    """requirements.txt installed by ``python -m pip install --target``, cached by its sha256."""
    requirements = ROOT / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    target = CACHE / f"layer-py{version}-{digest}"
    if (target / ".complete").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".layer-", dir=CACHE))
    try:
        proc = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--target",
                str(staging / "python"),
                "-r",
                str(requirements),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.fail(f"pip install --target failed:\n{proc.stdout}{proc.stderr}")
        (staging / "python" / ".complete").write_text("")
        try:
            os.rename(staging / "python", target)
        except OSError:  # another session won the race: use its copy
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def run_isolated(
    python: str,
    layer: Path,
    requests: list[dict[str, Any]],
    tmp_path: Path,
    *,
    block_orjson: bool = False,
) -> dict[str, Any]:
    requests_path = tmp_path / "requests.json"
    requests_path.write_text(json.dumps(requests))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_REGION": "us-east-1",
        # Left as the machine has it (OpenBLAS's CPU detection in some VMs needs it).
        **(
            {"OPENBLAS_CORETYPE": os.environ["OPENBLAS_CORETYPE"]}
            if "OPENBLAS_CORETYPE" in os.environ
            else {}
        ),
    }
    proc = subprocess.run(
        [
            python,
            "-I",
            "-S",
            "-c",
            CHILD,
            str(FUNCTION_DIR),
            str(layer),
            str(requests_path),
            "1" if block_orjson else "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    # Everything else on stdout is the function's log: one JSON object per line.
    result["logs"] = [
        json.loads(line) for line in proc.stdout.splitlines() if not line.startswith("RESULT ")
    ]
    return result


def requests_for(text_model_dir: Path, numeric_model_dir: Path) -> list[dict[str, Any]]:
    text = {"MODEL_DIR": str(text_model_dir)}
    numeric = {"MODEL_DIR": str(numeric_model_dir)}
    bad_mix = load_event("kinesis_reviews")
    bad_mix["Records"][1]["kinesis"]["data"] = "not base64!"
    return [
        {"env": text, "event": load_event("kinesis")},
        {"env": text, "event": load_event("kinesis_reviews")},
        {"env": text, "event": bad_mix},
        {"env": text, "event": load_event("kinesis_dynamodb")},
        {"env": {**text, "INPUT_FIELD": "Message"}, "event": load_event("dynamodb_update")},
        {"env": text, "event": load_event("direct")},
        {
            "env": {**text, "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/dlq"},
            "event": load_event("kinesis_reviews"),
        },
        {"env": numeric, "event": load_event("kinesis_income")},
        {"env": numeric, "event": load_event("dynamodb_income")},
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("version", "orjson"),
    [("3.11", True), ("3.11", False), ("3.12", True), ("3.13", True)],
    ids=["py3.11-orjson", "py3.11-json-fallback", "py3.12", "py3.13"],
)
def test_handler_runs_on_stdlib_and_the_layer_alone(
    text_model_dir: Path,
    numeric_model_dir: Path,
    tmp_path: Path,
    version: str,
    orjson: bool,
) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"python{version} is not installed here (Lambda runtime python{version})")
    layer = layer_for(python, version)
    requests = requests_for(text_model_dir, numeric_model_dir)
    result = run_isolated(python, layer, requests, tmp_path, block_orjson=not orjson)

    assert result["python"] == version
    assert result["heavy"] == []  # no boto3 without a sink or a dead-letter queue
    assert result["outside"] == []  # every module came from stdlib, the function or the layer
    assert result["sys_path"][:2] == [str(FUNCTION_DIR), str(layer)]
    assert result["json"] == ("orjson" if orjson else "kinesis_event")
    expected = [invoke(request["event"], **request["env"]).response for request in requests]
    assert result["responses"] == expected
    batches = [log for log in result["logs"] if log["message"] == "batch"]
    assert [log["counts"] for log in batches] == [r["counts"] for r in expected]
    assert [log["cold_start"] for log in batches] == [True] + [False] * (len(requests) - 1)
    assert result["responses"][2]["batchItemFailures"] == [
        {"itemIdentifier": requests[2]["event"]["Records"][1]["kinesis"]["sequenceNumber"]}
    ]
