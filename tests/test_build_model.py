"""mlayer build-model: manifest, versions, determinism, the compatibility gate (read from the
pickles), and the smoke test of the real function on the built layers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mlayer.model_layer import compatibility_gate, next_version

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
pytestmark = pytest.mark.slow


def run_mlayer(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=ROOT,
    )


@pytest.fixture
def layers(deps_layers: Path, tmp_path: Path) -> Path:
    """A fresh layers/ folder with the deps layer in it (no model layer yet)."""
    out = tmp_path / "layers"
    out.mkdir()
    for path in deps_layers.glob("deps-*"):
        os.link(path, out / path.name)
    return out


def build_model(model_dir: Path, layers: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_mlayer(["build-model", str(model_dir), "--layers-dir", str(layers), *extra])


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def _copy_model(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def test_text_model_layer_end_to_end(text_model_dir: Path, layers: Path) -> None:
    # when a model layer is built
    proc = build_model(text_model_dir, layers)
    # then the function scored the examples on both layers before success was reported
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Smoke test: 4 records scored by the function" in proc.stdout
    assert f"Built {layers / 'model-sentiment-v1.zip'}: sentiment v1" in proc.stdout
    # and the zip holds model/ with the files and a manifest that hashes each of them
    meta = json.loads((text_model_dir / "metadata.json").read_text())
    with zipfile.ZipFile(layers / "model-sentiment-v1.zip") as archive:
        names = archive.namelist()
        inner = json.loads(archive.read("model/manifest.json"))
        for name, digest in inner["files"].items():
            assert hashlib.sha256(archive.read(f"model/{name}")).hexdigest() == digest
    assert names == sorted(
        f"model/{n}" for n in [*meta["stages"], "metadata.json", "manifest.json"]
    )
    assert inner["version"] == 1
    for key in ("name", "stages", "input", "labels", "versions", "created"):
        assert inner[key] == meta[key]
    assert inner["saved_with"]["scikit-learn"] == [meta["versions"]["scikit-learn"]]
    outer = json.loads((layers / "model-sentiment-v1.json").read_text())
    assert outer["kind"] == "model" and outer["version"] == 1
    assert (
        outer["sha256"]
        == hashlib.sha256((layers / "model-sentiment-v1.zip").read_bytes()).hexdigest()
    )
    assert outer["files"] == inner["files"]
    assert outer["smoke_test"]["records"] == 4
    # a second build is the next version
    again = _json(build_model(text_model_dir, layers, "--json"))
    assert again["manifest"]["version"] == 2


def test_numeric_model_and_determinism(
    numeric_model_dir: Path, layers: Path, tmp_path: Path
) -> None:
    first = _json(build_model(numeric_model_dir, layers, "--version", "5", "--json"))
    other = tmp_path / "other-layers"
    shutil.copytree(layers, other)
    (other / "model-income-v5.zip").unlink()
    (other / "model-income-v5.json").unlink()
    second = _json(build_model(numeric_model_dir, other, "--version", "5", "--json"))
    assert first["manifest"]["version"] == 5
    assert first["manifest"]["sha256"] == second["manifest"]["sha256"]
    assert first["manifest"]["input"]["kind"] == "features"


def test_next_version_counts_built_and_published(tmp_path: Path) -> None:
    assert next_version(tmp_path, "m") == 1
    (tmp_path / "model-m-v3.json").write_text("{}")
    (tmp_path / "model-other-v8.json").write_text("{}")
    assert next_version(tmp_path, "m") == 4
    assert next_version(tmp_path, "m", [2, 6]) == 7
    assert next_version(tmp_path, "m", lambda: [9]) == 10


def _edit_recorded_version(model_dir: Path, stage: str, old: str, new: str) -> None:
    """Rewrite the scikit-learn version a pickle records (same length keeps it valid)."""
    path = model_dir / stage
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old.encode()) >= 1
    path.write_bytes(data.replace(old.encode(), new.encode()))


def test_gate_refuses_a_pickle_saved_with_another_sklearn(
    text_model_dir: Path, layers: Path, tmp_path: Path
) -> None:
    # given a model whose pickle records scikit-learn 1.6.1 while metadata.json still says
    # the layer's version: only the pickle tells
    model = _copy_model(text_model_dir, tmp_path)
    meta = json.loads((model / "metadata.json").read_text())
    sk = meta["versions"]["scikit-learn"]
    for stage in meta["stages"]:
        _edit_recorded_version(model, stage, sk, "1.6.1")
    # when building
    proc = build_model(model, layers)
    # then the gate refuses, naming both versions and both ways out
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: the model was saved with scikit-learn 1.6.1 (recorded in its pickles) and the "
        f"dependency layer has {sk}; scikit-learn does not promise to load a model saved with "
        f"another version. Retrain with the layer's pins (scikit-learn=={sk}, pip install -r "
        f"requirements.txt) or rebuild the dependency layer with the model's "
        f"(scikit-learn==1.6.1 in requirements.txt, then mlayer build-deps). (--force builds "
        f"anyway, at your own risk)"
    )
    assert not list(layers.glob("model-*"))
    # and --force gets past the gate, but the smoke test still fails the build: the function
    # warns (InconsistentVersionWarning) when it loads the model
    forced = build_model(model, layers, "--force")
    assert forced.returncode == 1
    assert "InconsistentVersionWarning" in forced.stderr
    assert (
        forced.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "Error: the function printed warnings while loading or scoring the model: "
            "Trying to unpickle estimator CountVectorizer from version 1.6.1"
        )
    )
    assert not list(layers.glob("model-*"))


def test_gate_trusts_the_pickles_over_metadata(
    text_model_dir: Path, layers: Path, tmp_path: Path
) -> None:
    model = _copy_model(text_model_dir, tmp_path)
    meta = json.loads((model / "metadata.json").read_text())
    real = meta["versions"]["scikit-learn"]
    meta["versions"]["scikit-learn"] = "1.6.1"
    (model / "metadata.json").write_text(json.dumps(meta))
    result = _json(build_model(model, layers, "--json"))
    rows = [row for row in result["gate"] if row["library"] == "scikit-learn"]
    assert rows[0]["verdict"] == f"metadata.json is wrong: pickles say {real}"
    assert rows[1] == {"library": "scikit-learn", "model": real, "layer": real,
                       "verdict": "same version"}  # fmt: skip


def test_force_is_loud(text_model_dir: Path, layers: Path, tmp_path: Path) -> None:
    model = _copy_model(text_model_dir, tmp_path)
    meta = json.loads((model / "metadata.json").read_text())
    meta["versions"]["numpy"] = "1.26.4"
    (model / "metadata.json").write_text(json.dumps(meta))
    refused = build_model(model, layers)
    assert refused.returncode == 1
    assert (
        "Error: the model was saved with numpy 1.26.4 and the dependency layer has 2."
        in refused.stderr
    )
    forced = build_model(model, layers, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "WARNING: --force: building a model the dependency layer may not load" in forced.stderr
    assert json.loads((layers / "model-sentiment-v1.json").read_text())["forced"] is True


def test_gate_numpy_2_pickle_on_numpy_1_layer() -> None:
    pickles = {"stages": {"m.joblib": {"sklearn_versions": ["1.5.2"], "numpy_major": 2}}}
    meta = {"versions": {"scikit-learn": "1.5.2"}}
    deps = {"packages": {"scikit-learn": "1.5.2", "numpy": "1.26.4"}}
    _checks, problems, saved = compatibility_gate(meta, pickles, deps["packages"])
    assert saved == {"scikit-learn": ["1.5.2"], "numpy_major": [2]}
    assert problems == [
        "the model was saved with numpy 2.x and the dependency layer has 1.26.4: numpy 1.x "
        "cannot load pickles written by numpy 2.x (they reference numpy._core). Retrain with "
        "numpy==1.26.4 or rebuild the dependency layer with the model's numpy"
    ]


def test_smoke_test_fails_on_records_the_model_cannot_score(
    text_model_dir: Path, layers: Path, tmp_path: Path
) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps([{"text": "fine"}, {"review": "no text field"}]))
    proc = build_model(text_model_dir, layers, "--sample", str(sample))
    assert proc.returncode == 1
    assert (
        "Error: the function ran but its answer is wrong: 1 predictions for 2 records"
        in proc.stderr
    )
    assert not list(layers.glob("model-*"))


def test_bad_model_dirs_and_missing_deps(text_model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = build_model(empty, tmp_path / "layers")
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: {empty} holds no model file (.joblib, .pkl, .pickle, .sav) and no "
        "metadata.json: pass the file your training saved, or a directory of them"
    )
    proc = build_model(text_model_dir, tmp_path / "no-layers")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: no dependency layer in {tmp_path / 'no-layers'} (deps-*-*.json): build it "
        "first with `mlayer build-deps` (the model is checked and smoke-tested against it), "
        "or pass --deps FILE"
    )


def test_deps_that_is_not_a_manifest(text_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "deps.json"
    broken.write_text("{not json")
    proc = build_model(text_model_dir, tmp_path / "layers", "--deps", str(broken))
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: --deps {broken}: ")
    assert line.endswith("pass the .json (or .zip) that mlayer build-deps wrote")
