"""The sample models: training/train.py's CLI, the model directory format, model quality,
determinism, and the notebook holding the same code."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import nbformat
import numpy as np
import pytest
from ipykernel.kernelspec import get_kernel_dict
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from sklearn.base import BaseEstimator
from sklearn.exceptions import InconsistentVersionWarning

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "training"
TRAIN_SCRIPT = TRAINING / "train.py"
NOTEBOOK = TRAINING / "notebooks" / "train_sample_models.ipynb"

sys.path.insert(0, str(TRAINING))
import make_notebook  # noqa: E402
import train  # noqa: E402


def run_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )


def load_stages(model_dir: Path) -> tuple[dict[str, Any], list[Any]]:
    metadata = json.loads((model_dir / "metadata.json").read_text())
    return metadata, [joblib.load(model_dir / stage) for stage in metadata["stages"]]


def predict(stages: list[Any], inputs: Any) -> tuple[np.ndarray, np.ndarray]:
    """What the function does: every stage but the last transforms, the last predicts."""
    for stage in stages[:-1]:
        inputs = stage.transform(inputs)
    return stages[-1].predict(inputs), stages[-1].predict_proba(inputs)


def example_inputs(metadata: dict[str, Any]) -> Any:
    spec = metadata["input"]
    if spec["kind"] == "text":
        return [record[spec["field"]] for record in metadata["examples"]]
    return np.array(
        [[record[name] for name in spec["features"]] for record in metadata["examples"]],
        dtype=np.float64,
    )


@pytest.fixture
def model_dirs(text_model_dir: Path, numeric_model_dir: Path) -> dict[str, Path]:
    return {"text": text_model_dir, "numeric": numeric_model_dir}


EXPECTED_FILES = {
    "text": {"PreProc1_sentiment.joblib", "PreProc2_sentiment.joblib", "sentiment.joblib"},
    "numeric": {"income.joblib"},
}


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "files", "labels"),
    [
        pytest.param(
            ["--example", "text", "--name", "reviews"],
            {"PreProc1_reviews.joblib", "PreProc2_reviews.joblib", "reviews.joblib"},
            ["negative", "positive"],
            id="text-named",
        ),
        pytest.param(["--example", "numeric"], {"income.joblib"}, ["<=50K", ">50K"], id="numeric"),
    ],
)
def test_cli_writes_a_model_directory(
    tmp_path: Path, args: list[str], files: set[str], labels: list[str]
) -> None:
    out = tmp_path / "model"
    proc = run_train("--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == files | {"metadata.json"}
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["labels"] == labels
    assert "held-out accuracy" in proc.stdout
    assert f"{metadata['training']['heldout_accuracy']:.3f}" in proc.stdout


def test_cli_defaults_to_the_text_example(tmp_path: Path) -> None:
    proc = run_train("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in tmp_path.iterdir()} == EXPECTED_FILES["text"] | {"metadata.json"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "the following arguments are required: --out", id="no-out"),
        pytest.param(
            ["--out", "x", "--example", "image"],
            "argument --example: invalid choice: 'image' (choose from 'numeric', 'text')",
            id="bad-example",
        ),
        pytest.param(
            ["--out", "x", "--name", "../evil"],
            "argument --name: invalid model name '../evil': use 1-64 letters, digits, '-' or '_'",
            id="bad-name",
        ),
        pytest.param(
            ["--out", "x", "--seed", "abc"],
            "argument --seed: invalid seed 'abc': pass an integer",
            id="bad-seed",
        ),
        pytest.param(
            ["--out", "x", "--seed", "-1"],
            "argument --seed: invalid seed -1: pass 0 <= seed < 2**32",
            id="negative-seed",
        ),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "usage: train.py" in proc.stderr
    assert f"train.py: error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_train("--out", str(tmp_path))
    assert proc.returncode == 2
    assert (
        f"train.py: error: {tmp_path} is not empty and holds no metadata.json: refusing to "
        "write a model into it; pass an empty or new directory as --out"
    ) in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_refuses_a_file_as_out(tmp_path: Path) -> None:
    (tmp_path / "model").write_text("not a directory")
    proc = run_train("--out", str(tmp_path / "model"))
    assert proc.returncode == 2
    assert (
        f"train.py: error: {tmp_path / 'model'} exists and is not a directory: pass another --out"
    ) in proc.stderr


def test_cli_reports_an_unwritable_out(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = run_train("--out", str(tmp_path / "file" / "model"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"train.py: error: cannot write the model to {tmp_path / 'file' / 'model'}: [Errno 20] "
        "Not a directory"
    )
    assert "Traceback" not in proc.stderr


def test_cli_replaces_an_earlier_model(tmp_path: Path) -> None:
    """Retraining into the same directory leaves no stale stage behind."""
    assert run_train("--out", str(tmp_path), "--name", "old").returncode == 0
    proc = run_train("--out", str(tmp_path), "--example", "numeric")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"income.joblib", "metadata.json"}


# -- the model directory format -------------------------------------------------------------


@pytest.mark.parametrize("example", ["text", "numeric"])
def test_metadata_schema(model_dirs: dict[str, Path], example: str) -> None:
    model_dir = model_dirs[example]
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert {"name", "stages", "input", "labels", "versions", "created", "examples"} <= set(metadata)
    assert set(metadata["stages"]) == EXPECTED_FILES[example]
    assert {p.name for p in model_dir.iterdir()} == EXPECTED_FILES[example] | {"metadata.json"}
    if example == "text":
        assert metadata["name"] == "sentiment"
        assert metadata["stages"] == [
            "PreProc1_sentiment.joblib",
            "PreProc2_sentiment.joblib",
            "sentiment.joblib",
        ]
        assert metadata["input"] == {"kind": "text", "field": "text"}
        assert metadata["labels"] == ["negative", "positive"]
    else:
        assert metadata["name"] == "income"
        assert metadata["input"] == {
            "kind": "features",
            "features": ["age", "education_num", "hours_per_week", "capital_gain", "capital_loss"],
        }
        assert metadata["labels"] == ["<=50K", ">50K"]
    assert metadata["versions"] == {
        "python": platform.python_version(),
        **{name: version(name) for name in ("scikit-learn", "numpy", "scipy", "joblib")},
    }
    assert metadata["created"].endswith("Z")
    assert len(metadata["examples"]) >= 2


@pytest.fixture
def pickled_sklearn_versions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record the ``_sklearn_version`` stored in each estimator's pickled state on load."""
    seen: list[str] = []
    original = BaseEstimator.__setstate__

    def spy(self: BaseEstimator, state: dict[str, Any]) -> None:
        seen.append(state.get("_sklearn_version", "missing"))
        original(self, state)

    monkeypatch.setattr(BaseEstimator, "__setstate__", spy)
    yield seen


@pytest.mark.parametrize("example", ["text", "numeric"])
def test_pickles_carry_the_installed_sklearn_version(
    model_dirs: dict[str, Path], example: str, pickled_sklearn_versions: list[str]
) -> None:
    metadata = json.loads((model_dirs[example] / "metadata.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        load_stages(model_dirs[example])
    # text: 3 stages; numeric: Pipeline + scaler + classifier.
    assert len(pickled_sklearn_versions) == 3
    assert set(pickled_sklearn_versions) == {metadata["versions"]["scikit-learn"]}


# -- the models ---------------------------------------------------------------------------


def test_text_model_is_accurate_on_fresh_reviews(text_model_dir: Path) -> None:
    _, stages = load_stages(text_model_dir)
    texts, labels = train.make_reviews(2000, seed=12345)
    predicted, _ = predict(stages, texts)
    assert (predicted == labels).mean() > 0.88


def test_numeric_model_is_accurate_on_a_fresh_population(numeric_model_dir: Path) -> None:
    _, stages = load_stages(numeric_model_dir)
    features, labels = train.make_census(4000, seed=12345)
    predicted, _ = predict(stages, features)
    accuracy = (predicted == labels).mean()
    majority = max((labels == label).mean() for label in set(labels))
    assert accuracy > 0.8
    assert accuracy > majority + 0.04


@pytest.mark.parametrize("example", ["text", "numeric"])
def test_stage_chain_scores_the_metadata_examples(
    model_dirs: dict[str, Path], example: str
) -> None:
    metadata, stages = load_stages(model_dirs[example])
    predicted, probabilities = predict(stages, example_inputs(metadata))
    classes = list(stages[-1].classes_)
    labels = [
        str(c) if isinstance(c, str) else metadata["labels"][classes.index(c)] for c in predicted
    ]
    assert set(labels) <= set(metadata["labels"])
    assert probabilities.shape == (len(metadata["examples"]), len(metadata["labels"]))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    if example == "text":
        assert labels[:2] == ["positive", "negative"]
    else:
        # A 52-year-old with a doctorate working 60 h and big capital gains vs a 38-year-old
        # high-school graduate working 40 h.
        assert labels[3] == ">50K"
        assert labels[2] == "<=50K"


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_model(tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000", "PATH": "/usr/bin:/bin"}
    for out, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        proc = run_train("--out", str(tmp_path / out), "--seed", seed, env=env)
        assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "sentiment.joblib").read_bytes() != (
        tmp_path / "c" / "sentiment.joblib"
    ).read_bytes()
    assert json.loads((tmp_path / "a" / "metadata.json").read_text())["created"] == (
        "2023-11-14T22:13:20Z"
    )


# -- the notebook holds the same code ---------------------------------------------------------


def test_notebook_is_generated_from_train_py() -> None:
    """The committed notebook is exactly what make_notebook.py makes of train.py."""
    source = TRAIN_SCRIPT.read_text()
    assert NOTEBOOK.read_text() == make_notebook.render(source), (
        "the notebook is stale: run python training/make_notebook.py"
    )
    # The split loses nothing: every line of train.py is in a notebook cell or in a
    # script-only section.
    notebook = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    code_cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    shared = [code for _, code in make_notebook.notebook_sections(source)]
    assert code_cells[: len(shared)] == shared
    script_only = [
        code for title, code in make_notebook.sections(source) if make_notebook.SCRIPT_ONLY in title
    ]
    assert [title for title, _ in make_notebook.sections(source)].count("") == 1
    kept = "\n".join(shared + script_only).splitlines()
    for line in source.splitlines():
        assert line.startswith(make_notebook.MARKER) or not line.strip() or line in kept, line
    assert any("def main(" in code for code in script_only)
    assert not any("def main(" in code for code in code_cells)


@pytest.fixture
def kernel_manager(tmp_path: Path) -> Iterator[KernelManager]:
    """A kernel on this very interpreter, without installing a kernel spec anywhere.

    The installed "python3" spec runs whatever ``python`` is first on PATH, which need not be
    the interpreter (or virtualenv) running the tests.
    """
    spec_dir = tmp_path / "kernels" / "mlayer-training"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(get_kernel_dict()))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    yield KernelManager(kernel_name="mlayer-training", kernel_spec_manager=specs)


def test_notebook_trains_the_same_models_as_the_script(
    tmp_path: Path, kernel_manager: KernelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executed with the same seed, the notebook writes byte-identical model directories."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    notebook = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    parameters = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    notebook.cells.insert(
        parameters + 1,
        nbformat.v4.new_code_cell(f"OUT_DIR = Path({str(tmp_path / 'notebook')!r})\nSEED = 5"),
    )
    NotebookClient(
        notebook,
        km=kernel_manager,
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)

    for example, name in (("text", "sentiment"), ("numeric", "income")):
        script_dir = tmp_path / "script" / name
        proc = run_train("--out", str(script_dir), "--example", example, "--seed", "5")
        assert proc.returncode == 0, proc.stderr
        notebook_dir = tmp_path / "notebook" / name
        files = sorted(p.name for p in script_dir.iterdir())
        assert sorted(p.name for p in notebook_dir.iterdir()) == files
        for file in files:
            assert (notebook_dir / file).read_bytes() == (script_dir / file).read_bytes(), file
        summary = proc.stdout.split(": ", 1)[1].rsplit(" (", 1)[0]
        assert f"{notebook_dir}: {summary}\n" in printed
