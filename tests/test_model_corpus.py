"""Users' own models, as they save them, served end to end.

Each model of the corpus is trained here on data the test makes, saved the way users save
it (no metadata.json), built with ``mlayer build-model`` from the raw files (a subprocess),
then scored by the real function in its isolated Lambda environment on the built layers
with Kinesis and DynamoDB Streams events; its predictions must equal calling the model
directly. Each refusal has its exact ``Error:`` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from function_support import FUNCTION_DIR, dynamodb_record, kinesis_event
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

import model
import records
from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

POSITIVE = [
    "great",
    "excellent",
    "love",
    "works",
    "perfect",
    "sturdy",
    "fast",
    "happy",
    "recommend",
]
NEGATIVE = ["broke", "terrible", "awful", "slow", "cheap", "returned", "refund", "poor", "useless"]


def reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.RandomState(seed)
    texts, labels = [], []
    for _ in range(n):
        good = rng.rand() < 0.5
        words = list(rng.choice(POSITIVE if good else NEGATIVE, 4)) + list(
            rng.choice(POSITIVE + NEGATIVE, 2)
        )
        texts.append(" ".join(words))
        labels.append("positive" if good else "negative")
    return texts, labels


def customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.RandomState(seed)
    return pd.DataFrame(
        {
            "age": rng.randint(18, 80, n),
            "income": rng.rand(n) * 100_000,
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "plan": rng.choice(["basic", "pro"], n),
        }
    )


def churn(frame: pd.DataFrame) -> np.ndarray:
    return np.where((frame["age"] > 45) | (frame["city"] == "nice"), "churn", "stay")


def run_mlayer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


@dataclass
class Made:
    """A saved model and how to check it."""

    path: Path  # what is given to build-model
    predict: Callable[[list[Any]], list[Any]]  # the model called directly on records
    records: list[Any]  # Kinesis payloads (JSON objects, texts or arrays)
    images: list[dict[str, Any]] | None  # DynamoDB NewImages of the same records, if any
    args: list[str] = field(default_factory=list)
    layer: str = "plain"  # or "pandas"
    inferred: str = ""  # what build-model prints as the input


def _ddb(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: {"N": repr(value)} if isinstance(value, int | float) else {"S": str(value)}
        for key, value in record.items()
    }


def _text_records(seed: int) -> list[str]:
    return reviews(12, seed)[0]


def classic_text(classifier: Any) -> Callable[[Path], Made]:
    def make(directory: Path) -> Made:
        texts, labels = reviews(300, 1)
        counts = CountVectorizer().fit(texts)
        tfidf = TfidfTransformer().fit(counts.transform(texts))
        model = classifier.fit(tfidf.transform(counts.transform(texts)), labels)
        joblib.dump(counts, directory / "PreProc1_reviews.joblib")
        joblib.dump(tfidf, directory / "PreProc2_reviews.joblib")
        joblib.dump(model, directory / "reviews.joblib")
        records = _text_records(2)

        def predict(batch: list[Any]) -> list[Any]:
            texts = [r["review"] if isinstance(r, dict) else r for r in batch]
            return list(model.predict(tfidf.transform(counts.transform(texts))))

        # plain-text payloads and JSON objects mixed in one batch
        mixed = [
            text if i % 2 else {"review": text, "id": f"r{i}"} for i, text in enumerate(records)
        ]
        return Made(
            path=directory,
            predict=predict,
            records=mixed,
            images=[{"id": {"S": f"r{i}"}, "review": {"S": t}} for i, t in enumerate(records)],
            args=["--input-field", "review"],
            inferred="text: a plain-text payload, or the JSON object's field 'review'",
        )

    return make


def text_pipeline(directory: Path) -> Made:
    texts, labels = reviews(300, 3)
    model = make_pipeline(TfidfVectorizer(), SGDClassifier(random_state=0)).fit(texts, labels)
    path = directory / "model.joblib"
    joblib.dump(model, path)
    records = _text_records(4)
    return Made(
        path=path,
        predict=lambda batch: list(model.predict(batch)),
        records=records,  # plain text, no field needed
        images=None,
        inferred="text: a plain-text payload, or the JSON object's only string field",
    )


def tabular(directory: Path) -> Made:
    frame = customers(400, 5)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
                        ("num", StandardScaler(), ["age", "income"]),
                    ]
                ),
            ),
            ("clf", HistGradientBoostingClassifier(random_state=0)),
        ]
    ).fit(frame, churn(frame))
    path = directory / "model.joblib"
    joblib.dump(model, path)
    batch = customers(15, 6)
    records = [
        {**row, "age": int(row["age"]), "extra": "ignored"} for row in batch.to_dict("records")
    ]

    def predict(rows: list[Any]) -> list[Any]:
        return list(model.predict(pd.DataFrame(rows)[["age", "income", "city", "plan"]]))

    return Made(
        path=path,
        predict=predict,
        records=records,
        images=[_ddb(r) for r in records],
        layer="pandas",
        inferred="JSON objects (or DynamoDB images) with age (number), income (number), "
        "city (string), plan (string); given to the model as a pandas DataFrame",
    )


def numeric_dataframe(directory: Path) -> Made:
    frame = customers(400, 7)[["age", "income"]]
    target = (frame["age"] > 45).map({True: "old", False: "young"})
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, target)
    path = directory / "scorer.joblib"
    joblib.dump(model, path)
    records = customers(10, 8)[["age", "income"]].to_dict("records")
    return Made(
        path=path,
        predict=lambda rows: list(model.predict(pd.DataFrame(rows)[["age", "income"]])),
        records=records,
        images=[_ddb(r) for r in records],
        layer="pandas",
        inferred="JSON objects (or DynamoDB images) with age (number), income (number); "
        "given to the model as a pandas DataFrame",
    )


def _arrays(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    features = rng.rand(n, 4)
    return features, features @ np.array([3.0, -2.0, 0.5, 1.0]) + rng.rand(n) * 0.1


def forest_regressor(directory: Path) -> Made:
    features, target = _arrays(9)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(features, target)
    path = directory / "price.joblib"
    joblib.dump(model, path)
    records = _arrays(10, 8)[0].tolist()
    return Made(
        path=path,
        predict=lambda rows: model.predict(np.asarray(rows)).tolist(),
        records=records,
        images=None,
        inferred="a JSON array of 4 numbers",
    )


def isolation_forest(directory: Path) -> Made:
    features, _ = _arrays(11)
    model = IsolationForest(random_state=0).fit(features)
    path = directory / "anomaly.joblib"
    joblib.dump(model, path)
    records = (_arrays(12, 8)[0] * 3).tolist()
    return Made(
        path=path,
        predict=lambda rows: model.predict(np.asarray(rows)).tolist(),
        records=records,
        images=None,
        inferred="a JSON array of 4 numbers",
    )


def pickled_forest(directory: Path) -> Made:
    # a .pkl from pickle.dump, integer classes, named with --features: objects in
    features, target = _arrays(13)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(
        features, (target > 1).astype(int)
    )
    path = directory / "classifier.pkl"
    path.write_bytes(pickle.dumps(model))
    names = ["a", "b", "c", "d"]
    records = [dict(zip(names, row, strict=True)) for row in _arrays(14, 10)[0].tolist()]
    return Made(
        path=path,
        predict=lambda rows: model.predict(
            np.asarray([[r[n] for n in names] for r in rows])
        ).tolist(),
        records=records,
        images=[_ddb(r) for r in records],
        args=["--features", ",".join(names)],
        inferred="JSON objects (or DynamoDB images) with a (number), b (number), c (number), "
        "d (number)",
    )


def compressed_knn(directory: Path) -> Made:
    features, target = _arrays(15)
    model = KNeighborsClassifier(n_neighbors=3).fit(features, np.where(target > 1, "hi", "lo"))
    path = directory / "knn.joblib"
    joblib.dump(model, path, compress=3)
    records = _arrays(16, 8)[0].tolist()
    return Made(
        path=path,
        predict=lambda rows: list(model.predict(np.asarray(rows))),
        records=records,
        images=None,
        inferred="a JSON array of 4 numbers",
    )


def kmeans_clusters(directory: Path) -> Made:
    features, _ = _arrays(17)
    model = KMeans(n_clusters=3, n_init=2, random_state=0).fit(features)
    path = directory / "segments.joblib"
    joblib.dump(model, path)
    records = _arrays(18, 6)[0].tolist()
    return Made(
        path=path,
        predict=lambda rows: model.predict(np.asarray(rows)).tolist(),
        records=records,
        images=None,
        inferred="a JSON array of 4 numbers",
    )


CORPUS: dict[str, Callable[[Path], Made]] = {
    "classic-linearsvc": classic_text(LinearSVC()),
    "classic-multinomialnb": classic_text(MultinomialNB()),
    "classic-logreg": classic_text(LogisticRegression()),
    "text-pipeline-sgd": text_pipeline,
    "tabular-columntransformer-hgb": tabular,
    "numeric-dataframe-logreg": numeric_dataframe,
    "forest-regressor-arrays": forest_regressor,
    "isolation-forest": isolation_forest,
    "pkl-forest-features": pickled_forest,
    "compress3-knn": compressed_knn,
    "kmeans": kmeans_clusters,
}


def _layers(kind: str, deps_layers: Path, pandas_deps_layers: Path, tmp_path: Path) -> Path:
    source = pandas_deps_layers if kind == "pandas" else deps_layers
    out = tmp_path / "layers"
    out.mkdir()
    for path in source.glob("deps-*"):
        os.link(path, out / path.name)
    return out


def _score(layers: Path, model_zip: Path, tmp_path: Path, events: list[Any]) -> list[Any]:
    opt = tmp_path / "opt"
    prepare_opt([next(layers.glob("deps-*.zip")), model_zip], opt)
    with LambdaEnvironment(
        task_dir=FUNCTION_DIR, opt_dir=opt, python=sys.executable, memory_mb=1024, timeout_s=60
    ) as env:
        out = []
        for event in events:
            invocation = env.invoke(event)
            assert invocation.ok, invocation.logs
            assert "Warning" not in invocation.logs, invocation.logs
            out.append(invocation.response)
        return out


def _labels(response: dict[str, Any]) -> list[Any]:
    assert response["batchItemFailures"] == [], response
    return [p["label"] for p in response["predictions"]]


def _same(got: list[Any], expected: list[Any]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-9)
        else:
            assert a == (b.item() if hasattr(b, "item") else b)


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_users_model_served_as_saved(
    case: str, deps_layers: Path, pandas_deps_layers: Path, tmp_path: Path
) -> None:
    # given a model saved the way its user saved it (no metadata.json)
    saved = tmp_path / "saved"
    saved.mkdir()
    made = CORPUS[case](saved)
    layers = _layers(made.layer, deps_layers, pandas_deps_layers, tmp_path)
    # when it is built from the raw files, with deferred imports (the trace and the smoke
    # test require the model's eager predictions)
    proc = run_mlayer(
        "build-model", str(made.path), "--layers-dir", str(layers), "--defer-imports", *made.args
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # then the build printed what it inferred, and the smoke test matched the model itself
    assert f"Input: {made.inferred}" in proc.stdout, proc.stdout
    (model_zip,) = layers.glob("model-*.zip")
    (manifest,) = layers.glob("model-*.json")
    deferred = json.loads(manifest.read_text())["deferred_imports"]
    assert len(deferred) > 20, proc.stdout  # the function below runs with them deferred
    assert f"deferred imports: {len(deferred)} modules" in " ".join(proc.stdout.split())
    # and the real function on both layers answers as the model does (called directly here,
    # eagerly), on Kinesis records
    events = [kinesis_event(made.records)]
    if made.images is not None:
        events.append(
            {
                "Records": [
                    dynamodb_record(str(100 + i), "INSERT", image)
                    for i, image in enumerate(made.images)
                ]
            }
        )
    responses = _score(layers, model_zip, tmp_path, events)
    expected = made.predict(made.records)
    for response in responses:
        _same(_labels(response), expected)
        assert response["counts"]["predicted"] == len(made.records)
        for prediction in response["predictions"]:
            json.dumps(prediction, allow_nan=False)  # JSON-safe, no NaN


def _memmapped(value: Any, depth: int = 0) -> bool:
    """True when a numpy memmap is among ``value``'s attributes (through pipelines and
    column transformers: lists, tuples and dicts of estimators)."""
    if isinstance(value, np.memmap):
        return True
    if depth > 4:
        return False
    if isinstance(value, list | tuple):
        return any(_memmapped(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return any(_memmapped(item, depth + 1) for item in value.values())
    attributes = getattr(value, "__dict__", None)
    return attributes is not None and any(
        _memmapped(item, depth + 1) for item in attributes.values()
    )


# A regression forest's arrays are all in its trees, whose __setstate__ copies them out of
# the mapped pages into memory of their own: nothing stays mapped (classifiers keep classes_).
NO_ARRAY_ATTRIBUTES = {"forest-regressor-arrays"}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_memory_mapped_model_predicts_the_same(case: str, tmp_path: Path) -> None:
    # given a corpus model saved as its user saved it, with a metadata.json naming its files
    saved = tmp_path / "saved"
    saved.mkdir()
    made = CORPUS[case](saved)
    files = sorted(path.name for path in saved.iterdir())
    meta: dict[str, Any] = {"name": case, "stages": files}
    if "--features" in made.args:
        meta["input"] = {"kind": "features", "features": made.args[1].split(",")}
    (saved / "metadata.json").write_text(json.dumps(meta))
    field = made.args[1] if "--input-field" in made.args else None
    # when it is loaded with its arrays memory-mapped, and read into memory
    mapped = model.load(saved, input_field=field, mmap=True)
    read = model.load(saved, input_field=field, mmap=False)
    # then uncompressed joblib files keep their arrays mapped (compressed ones and pickles
    # cannot be mapped), with no warning either way
    uncompressed_joblib = any(
        name.endswith(".joblib") and (saved / name).read_bytes()[:1] == b"\x80" for name in files
    )
    keeps_arrays = case not in NO_ARRAY_ATTRIBUTES
    assert _memmapped([mapped.transforms, mapped.final]) == (uncompressed_joblib and keeps_arrays)
    assert not _memmapped([read.transforms, read.final])
    assert mapped.warnings == read.warnings == []
    # and both predict exactly what the model itself predicts, on the same decoded records
    batch = records.decode_event(kinesis_event(made.records), mapped.input)
    assert not batch.rejected, batch.rejected
    from_map = mapped.predict(batch.inputs)
    assert from_map == read.predict(batch.inputs)
    _same(from_map.labels, made.predict(made.records))


def test_text_model_reports_json_that_is_not_text(deps_layers: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    made = text_pipeline(saved)
    layers = _layers("plain", deps_layers, deps_layers, tmp_path)
    assert run_mlayer("build-model", str(made.path), "--layers-dir", str(layers)).returncode == 0
    (model_zip,) = layers.glob("model-*.zip")
    payloads = ["fine product", ["two", "texts"], None, 42, True, "-- ok, 5 stars"]
    event = kinesis_event([p if isinstance(p, str) else json.dumps(p) for p in payloads])
    (response,) = _score(layers, model_zip, tmp_path, [event])
    sequence = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == sequence[1:5]
    assert [p["sequence_number"] for p in response["predictions"]] == [sequence[0], sequence[5]]
    assert response["counts"] == {
        "received": 6, "predicted": 2, "skipped": 0, "dead_lettered": 0, "failed": 4
    }  # fmt: skip


def test_dataframe_model_refused_without_pandas(deps_layers: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    made = tabular(saved)
    layers = _layers("plain", deps_layers, deps_layers, tmp_path)
    proc = run_mlayer("build-model", str(made.path), "--layers-dir", str(layers))
    assert error_line(proc) == (
        "Error: ColumnTransformer -> HistGradientBoostingClassifier was fitted on a pandas "
        "DataFrame (columns age, income, city, plan) and must be given one, and the "
        "dependency layer has no pandas: add the line pandas==2.3.3 to requirements.txt and "
        "run mlayer build-deps (pandas adds about 32 MiB of the 250 MiB)"
    )
    assert not list(layers.glob("model-*"))


def test_class_from_the_training_script_is_refused(deps_layers: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    script = (
        "import pickle, sys\n"
        "from sklearn.base import BaseEstimator\n"
        "class Cleaner(BaseEstimator):\n"
        "    def predict(self, X): return X\n"
        "open(sys.argv[1], 'wb').write(pickle.dumps(Cleaner()))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    layers = _layers("plain", deps_layers, deps_layers, tmp_path)
    proc = run_mlayer("build-model", str(path), "--layers-dir", str(layers))
    assert error_line(proc) == (
        "Error: model.pkl references __main__.Cleaner, defined in the script or notebook that "
        "trained it: Lambda cannot import it. Move it into a module of its own, ship that "
        "module in the dependency layer (requirements.txt or --keep), and save the model "
        "again. (--force builds anyway, at your own risk)"
    )


def test_too_big_for_a_layer_goes_to_the_store_or_is_refused_with_the_compressed_size(
    deps_layers: Path, tmp_path: Path
) -> None:
    # given a 96 MB model (a brute-force KNN holds its training data) of low-entropy values
    rng = np.random.RandomState(0)
    features = rng.randint(0, 4, size=(1_200_000, 10)).astype(np.float64)
    model = KNeighborsClassifier(algorithm="brute").fit(features, rng.randint(0, 2, 1_200_000))
    path = tmp_path / "big.joblib"
    joblib.dump(model, path)
    layers = _layers("plain", deps_layers, deps_layers, tmp_path)
    # when it is built for a layer (--store layer)
    proc = run_mlayer("build-model", str(path), "--layers-dir", str(layers), "--store", "layer")
    # then the refusal names the file, its size, the measured compress=3 size and load cost
    line = error_line(proc)
    assert re.fullmatch(
        r"Error: the model does not fit in a layer: over Lambda's 250 MiB unzipped limit by "
        r"[\d.]+ MiB \(.*\)\. Model files: big\.joblib [\d.]+ MiB\. Saved with compress=3 they "
        r"measure [\d.]+ MiB \(measured on your files\), which fits: "
        r"joblib\.dump\(model, 'model\.joblib', compress=3\)\. Decompression is paid at every "
        r"cold start: loading took [\d.]+ s compressed against [\d.]+ s as saved \(measured "
        r"here\)\. Or build it for the S3 model store: mlayer build-model --store s3",
        line,
    ), line
    assert not list(layers.glob("model-*"))
    # when it is built as users do (--store auto, the default)
    proc = run_mlayer("build-model", str(path), "--layers-dir", str(layers))
    # then it is packaged for the S3 model store, loudly, smoke-tested like a layer
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warned = " ".join(proc.stderr.split())  # rich wraps the warning on stderr
    assert "WARNING: the model does not fit in a layer (" in warned
    assert "packaged for the S3 model store instead" in warned
    archive = layers / "model-big-v1.tar"
    sidecar = json.loads(archive.with_suffix(".json").read_text())
    assert sidecar["package"] == "store"
    assert sidecar["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert sidecar["smoke_test"]["records"] >= 1
    assert sidecar["smoke_test"]["max_memory_mb"] > 96
    assert f"Built {archive}: big v1 for the S3 model store" in proc.stdout
    assert re.search(
        r"Store: model archive for the S3 model store: [\d.]+ MiB; the function needs /tmp "
        r"512 MB \(the archive and its unpacked files, \d+ MB\) and at least [\d,]+ MB of "
        r"memory \(the smoke test's measured peak [\d,]+ MB\)",
        proc.stdout,
    ), proc.stdout
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["manifest.json", "big.joblib"]
    # and it rolls out through S3: publish-model stores it and points MODEL_URI at it, and
    # the function's init fetches, verifies and loads it, predicting as the model does
    _rolls_out_through_s3(archive, model, features[:50])


def _rolls_out_through_s3(archive: Path, model: Any, rows: np.ndarray) -> None:
    import boto3
    from click.testing import CliRunner
    from fake_layers import create_function
    from moto import mock_aws

    from mlayer.cli import cli

    with mock_aws():
        lam = boto3.client("lambda", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        create_function(lam, boto3.client("iam", region_name="us-east-1"))
        published = CliRunner().invoke(
            cli,
            ["publish-model", str(archive), "--function", "scorer", "--bucket", "models",
             "--memory", "1024", "--alias", "live"],
        )  # fmt: skip
        assert published.exit_code == 0, published.output
        config = lam.get_function_configuration(FunctionName="scorer", Qualifier="live")
        uri = config["Environment"]["Variables"]["MODEL_URI"]
        import model as function_model
        import model_store

        with tempfile.TemporaryDirectory() as tmp:
            fetched = model_store.fetch(uri, Path(tmp), client=s3)
            served = function_model.load(fetched.directory)
            assert served.version == 1
            labels = served.predict([list(map(float, row)) for row in rows]).labels
    assert labels == model.predict(rows).tolist()


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        (
            ["a.joblib", "b.joblib"],
            [],
            "Error: {dir} holds 2 model files (a.joblib, b.joblib) and no metadata.json: give "
            "their order with --stages a,b,c (preprocessors first, the model last), or name "
            "them PreProc1_<name>.joblib, ..., <name>.joblib",
        ),
        (
            ["PreProc1_m.joblib", "other.joblib"],
            [],
            "Error: {dir} has preprocessors for 'm' but its model file m.joblib is missing "
            "(found none); the classic layout is PreProc1_m.joblib, ..., m.joblib; or pass "
            "--stages a,b,c",
        ),
        (
            ["a.joblib"],
            ["--stages", "a.joblib,missing.joblib"],
            "Error: --stages: {dir}/missing.joblib does not exist (a.joblib there)",
        ),
        (
            ["notes.txt"],
            [],
            "Error: {dir} holds no model file (.joblib, .pkl, .pickle, .sav) and no "
            "metadata.json: pass the file your training saved, or a directory of them",
        ),
    ],
    ids=["two-files-no-order", "classic-without-model", "stages-missing", "no-model-file"],
)
def test_layout_errors(
    files: list[str], args: list[str], message: str, deps_layers: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "models"
    directory.mkdir()
    for name in files:
        (directory / name).write_bytes(pickle.dumps({"not": "read"}))
    proc = run_mlayer("build-model", str(directory), "--layers-dir", str(deps_layers), *args)
    assert error_line(proc) == message.format(dir=directory)
