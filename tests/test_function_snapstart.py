"""The function's SnapStart hooks (function/snapstart.py), run by the real runtime pieces.

A child interpreter (``-I -S``) runs the function on real built layers, with Lambda's
``sys.path`` (the function dir, the layers' /opt/python, the runtime dir holding
``snapshot_restore_py`` and awslambdaric 4.2.2). It imports the handler (the init), then
calls awslambdaric's own hook runner as ``bootstrap.on_init_complete`` does: the
before-snapshot hooks, then, standing in for environments restored from that one
snapshot, it forks twice and each child runs the after-restore hooks and is invoked.

The layers are python3.11's (the session's shared deps build): the hooks are plain Python
and ``snapshot_restore_py`` is the same file in every runtime dir; Lambda runs SnapStart on
python3.12+ only, which mlayer's deploy-function enforces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from function_support import FUNCTION_DIR, function_env

from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt

CHILD = r"""
import json, os, random, sys

paths, out_path, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path[:0] = paths
if mode == "absent":
    sys.modules["snapshot_restore_py"] = None  # import snapshot_restore_py -> ImportError

import io, contextlib

lines = []


class Tee(io.TextIOBase):
    def write(self, text):
        lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)


sys.stdout = Tee()
import lambda_function  # the init: the model (and its shadow) load here
import metrics
import model
import shadow

result = {"init_lines": list(lines)}
event = {"records": [{"text": "great product, works well"}, {"text": "broke at once"}]}


def invoke():
    del lines[:]
    response = lambda_function.lambda_handler(event, None)
    batch = [json.loads(l) for l in lines if json.loads(l).get("message") == "batch"][0]
    return {
        "labels": [p["label"] for p in response["predictions"]],
        "cold_start": batch["cold_start"],
        "shadow_records": (batch.get("shadow") or {}).get("records"),
    }


if mode == "absent":
    result["registered"] = False
    result["invocation"] = invoke()
    result["snapstart_lines"] = [l for l in lines if "snapshot" in l or "restored" in l]
    json.dump(result, open(out_path, "w"))
    sys.exit(0)

import snapshot_restore_py
from awslambdaric import lambda_runtime_hooks_runner as hooks

result["registered"] = [
    (f.__module__, f.__name__) for f, _, _ in snapshot_restore_py.get_before_snapshot()
] + [(f.__module__, f.__name__) for f, _, _ in snapshot_restore_py.get_after_restore()]

# A client cached before the snapshot, as a sink's would be (no call is made).
import sinks
before_client = sinks.client("sqs")
result["clients_before"] = len(sinks._CLIENTS)
result["label_names_before"] = len(metrics._NAMES)

del lines[:]
hooks.run_before_snapshot()  # what on_init_complete does before restore_next
result["snapshot_lines"] = [json.loads(l) for l in lines]
result["label_names_after"] = len(metrics._NAMES)

# From here on a model load is counted: the invocations must need none.
loads = []
original_load = model.load
model.load = shadow.load = lambda *a, **k: loads.append(a) or original_load(*a, **k)

import numpy

children = []
for n in range(2):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # an environment restored from the snapshot
        os.close(read)
        del lines[:]
        hooks.run_after_restore()
        restored = [json.loads(l) for l in lines]
        mine = {
            "restored_lines": restored,
            "random": random.random(),
            "numpy": float(numpy.random.random()),
            "clients_after": len(sinks._CLIENTS),
            "default_session": __import__("boto3").DEFAULT_SESSION is not None,
            "same_client": sinks.client("sqs") is before_client,
        }
        modules = set(sys.modules)
        mine["first"] = invoke()
        mine["imported_by_first"] = sorted(set(sys.modules) - modules)
        mine["second"] = invoke()
        hooks.run_after_restore()  # restored again: the next invocation is a first again
        mine["after_second_restore"] = invoke()
        mine["loads"] = len(loads)
        os.write(write, json.dumps(mine).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
for pid, read in children:
    chunks = []
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.waitpid(pid, 0)
    result.setdefault("children", []).append(json.loads(b"".join(chunks)))
# The snapshot's own state, drawn without re-seeding: what every restored environment
# would draw without the after-restore hook.
result["unseeded"] = {"random": random.random(), "numpy": float(numpy.random.random())}
json.dump(result, open(out_path, "w"))
"""


@pytest.fixture(scope="module")
def opt(deps_layers: Path, text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt of the real deps layer (python3.11) and the text model's layer, built by
    build-model (whose smoke test scored the manifest's examples)."""
    layers = tmp_path_factory.mktemp("snap-layers")
    for path in deps_layers.glob("deps-*"):
        os.link(path, layers / path.name)
    proc = subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", "build-model",
         str(text_model_dir), "--layers-dir", str(layers)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (model_zip,) = layers.glob("model-*.zip")
    opt = tmp_path_factory.mktemp("snap-opt") / "opt"
    prepare_opt([next(layers.glob("deps-*.zip")), model_zip], opt)
    return opt


def _child(opt: Path, tmp_path: Path, mode: str, **extra: str) -> dict[str, Any]:
    env = LambdaEnvironment(task_dir=FUNCTION_DIR, opt_dir=opt, python=sys.executable)
    paths = env.sys_path[:4]  # the function, /opt/python's two entries, the runtime dir
    out = tmp_path / f"{mode}.json"
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "MODEL_DIR": str(opt / "model"),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",  # Lambda sets both; boto3 reads this one
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": "scorer",
        **extra,
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, json.dumps(paths), str(out), mode],
        capture_output=True, text=True, env=environ, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_runtime_dir_has_the_snapshot_library(opt: Path) -> None:
    env = LambdaEnvironment(task_dir=FUNCTION_DIR, opt_dir=opt, python=sys.executable)
    runtime = Path(env.sys_path[3])
    assert (runtime / "snapshot_restore_py.py").is_file()
    assert (runtime / "awslambdaric" / "lambda_runtime_hooks_runner.py").is_file()


def test_before_snapshot_loads_and_warms_after_restore_reseeds_and_drops_clients(
    opt: Path, tmp_path: Path
) -> None:
    # Given the function on its layers, its init done and its hooks run as Lambda runs them
    # (the model is its own shadow: scored beside itself on every batch)
    result = _child(opt, tmp_path, "present", SHADOW_DIR=str(opt / "model"))

    # Then both hooks were registered by the handler's import
    assert result["registered"] == [
        ["snapstart", "before_snapshot"],
        ["snapstart", "after_restore"],
    ]
    # and the before-snapshot hook warmed the predict path on the manifest's examples
    manifest = json.loads((opt / "model" / "manifest.json").read_text())
    (ready,) = result["snapshot_lines"]
    assert ready["message"] == "snapshot ready"
    assert ready["model_version"] == manifest["version"]
    assert ready["warmed"] == len(manifest["examples"]) > 0
    assert ready["ms"] > 0
    assert result["label_names_before"] == 0 < result["label_names_after"]  # metrics' cache

    unseeded = result["unseeded"]
    first, second = result["children"]
    for child in (first, second):
        # after restore: one "restored" line, both generators re-seeded, clients dropped
        (restored,) = child["restored_lines"]
        assert restored["message"] == "restored"
        assert restored["reseeded"] == ["random", "numpy.random"]
        assert restored["clients_dropped"] == result["clients_before"] == 1
        assert child["clients_after"] == 0 and not child["default_session"]
        assert child["same_client"] is False  # created afresh
        # the first invocation is the environment's first, and loads nothing, imports nothing
        assert child["first"]["cold_start"] is True
        assert child["second"]["cold_start"] is False
        assert child["after_second_restore"]["cold_start"] is True
        assert child["loads"] == 0
        assert child["imported_by_first"] == []
        assert child["first"]["labels"] == child["second"]["labels"]
        assert child["first"]["shadow_records"] == 2  # the shadow scored, not loaded
        # the draws are not the snapshot's
        assert child["random"] != unseeded["random"]
        assert child["numpy"] != unseeded["numpy"]
    # two environments restored from one snapshot draw differently
    assert first["random"] != second["random"]
    assert first["numpy"] != second["numpy"]


def test_without_the_snapshot_library_the_function_works_as_before(
    opt: Path, tmp_path: Path
) -> None:
    result = _child(opt, tmp_path, "absent")

    loaded = [json.loads(line) for line in result["init_lines"]]
    assert [entry["message"] for entry in loaded] == ["model loaded"]
    assert result["invocation"]["cold_start"] is True
    assert len(result["invocation"]["labels"]) == 2
    assert result["snapstart_lines"] == []


# ------------------------------------------------------------------- a model set, in process


def test_a_set_warms_only_the_members_it_loaded(opt: Path, tmp_path: Path) -> None:
    """Given a set of two copies of the text model (default "a"), its default loaded as at
    init; when warmed on the set's examples; then only a's examples were scored, and no other
    member was loaded (the cache budget stays the set's)."""
    import model_set
    import snapstart

    root = tmp_path / "set"
    for member in ("a", "b"):
        shutil.copytree(opt / "model", root / member)
    (root / "set.json").write_text(
        json.dumps({"models": ["a", "b"], "field": "tenant", "default": "a", "version": 3})
    )
    records = [{"text": "great", "tenant": "a"}, {"text": "bad", "tenant": "b"}, {"text": "ok"}]
    (root / "manifest.json").write_text(json.dumps({"examples": records}))
    logged: list[dict[str, Any]] = []
    with function_env(MODEL_DIR=root):
        models = model_set.find(os.environ)
        assert models is not None
        models.get("a")

        warmed = snapstart.warm(models, logged.append)

        assert warmed == 2  # tenant a's record and the one without the field (default a)
        assert models.cached() == ["a"]
        assert logged == []
