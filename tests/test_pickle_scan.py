"""The static pickle scan: what a model file needs, read without executing it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline

from mlayer.pickle_scan import ScanError, scan


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    rng = np.random.RandomState(0)
    features = rng.rand(200, 4)
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(
        features, (features[:, 0] > 0.5).astype(int)
    )


SAVERS = {
    "joblib": lambda model, path: joblib.dump(model, path),
    "joblib-compress3": lambda model, path: joblib.dump(model, path, compress=3),
    "joblib-gzip": lambda model, path: joblib.dump(model, path, compress=("gzip", 3)),
    "joblib-bz2": lambda model, path: joblib.dump(model, path, compress=("bz2", 3)),
    "joblib-xz": lambda model, path: joblib.dump(model, path, compress=("xz", 3)),
    "joblib-lzma": lambda model, path: joblib.dump(model, path, compress=("lzma", 3)),
    "pickle-protocol2": lambda model, path: Path(path).write_bytes(pickle.dumps(model, 2)),
    "pickle-default": lambda model, path: Path(path).write_bytes(pickle.dumps(model)),
    "pickle-protocol5": lambda model, path: Path(path).write_bytes(pickle.dumps(model, 5)),
}
COMPRESSION = {
    "joblib-compress3": "zlib",
    "joblib-gzip": "gzip",
    "joblib-bz2": "bz2",
    "joblib-xz": "xz",
    "joblib-lzma": "lzma",
}


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_every_way_users_save_a_model_is_read(
    saver: str, forest: RandomForestClassifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.joblib"
    SAVERS[saver](forest, path)
    found = scan(path)
    assert found.compression == COMPRESSION.get(saver)
    assert found.sklearn_versions == {sklearn.__version__}
    assert found.numpy_major == int(np.__version__.split(".")[0])
    assert "sklearn.ensemble._forest.RandomForestClassifier" in found.globals
    assert "sklearn.tree._classes.DecisionTreeClassifier" in found.globals
    assert {"sklearn", "numpy"} <= found.top_level_modules


def test_object_arrays_and_text_pipelines(tmp_path: Path) -> None:
    # a vectorizer's vocabulary and string classes are object arrays: joblib writes them as
    # a nested pickle inside the stream
    texts = ["good", "bad", "great", "awful"] * 5
    model = make_pipeline(TfidfVectorizer(), SGDClassifier(random_state=0)).fit(
        texts, np.array(["pos", "neg", "pos", "neg"] * 5, dtype=object)
    )
    path = tmp_path / "text.joblib"
    joblib.dump(model, path)
    found = scan(path)
    assert found.sklearn_versions == {sklearn.__version__}
    assert "sklearn.pipeline.Pipeline" in found.globals


class _Payload:
    """Unpickling this would create a file: the scan must not."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.target,))


def test_nothing_in_the_file_is_executed(tmp_path: Path) -> None:
    target = tmp_path / "created-by-unpickling"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _Payload(str(target))}))
    found = scan(path)
    assert "posix.mkdir" in found.globals or "os.mkdir" in found.globals
    assert not target.exists()
    # the same bytes, really unpickled, do run it: the test's premise holds
    pickle.loads(path.read_bytes())
    assert target.is_dir()


def test_classes_defined_in_main_are_named(tmp_path: Path) -> None:
    # given a model with a class defined in the training script itself
    path = tmp_path / "custom.pkl"
    script = (
        "import pickle, sys\n"
        "class Cleaner:\n    pass\n"
        "open(sys.argv[1], 'wb').write(pickle.dumps({'steps': [Cleaner()]}))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    # then the scan names it
    assert "__main__.Cleaner" in scan(path).globals
    assert "__main__" in scan(path).top_level_modules


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 a zip", "it is neither a pickle nor a joblib file"),
        (b"", "it is neither a pickle nor a joblib file"),
    ],
    ids=["zip", "empty"],
)
def test_not_a_pickle(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(content)
    with pytest.raises(ScanError, match=message):
        scan(path)


def test_truncated_joblib_file(forest: RandomForestClassifier, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(forest, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError):
        scan(path)
