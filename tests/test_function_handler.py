"""The handler in this process on the sample models: predictions, identities, failures, logs."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from function_support import (
    FakeContext,
    change_record,
    dynamodb_record,
    import_function,
    invoke,
    kinesis_event,
    kinesis_record,
    load_event,
)

import model as model_module
from model import ModelLoadError
from records import InvalidEventError


@pytest.fixture(scope="module")
def text_stages(text_model_dir: Path) -> list[Any]:
    meta = json.loads((text_model_dir / "metadata.json").read_text())
    return [joblib.load(text_model_dir / name) for name in meta["stages"]]


def reference(stages: list[Any], inputs: list[Any]) -> tuple[list[Any], list[float]]:
    """Labels (class names) and probability of the predicted class, computed the plain way."""
    features: Any = inputs
    for stage in stages[:-1]:
        features = stage.transform(features)
    final = stages[-1]
    predicted = final.predict(features)
    proba = final.predict_proba(features)
    classes = list(final.classes_)
    index = [classes.index(value) for value in predicted]
    return index, [float(proba[row, column]) for row, column in enumerate(index)]


# --- the real events -------------------------------------------------------------------------


def test_kinesis_json_reviews(text_model_dir: Path, text_stages: list[Any]) -> None:
    event = load_event("kinesis_reviews")
    run = invoke(event, MODEL_DIR=text_model_dir)

    texts = [json.loads(_b64(r["kinesis"]["data"]))["text"] for r in event["Records"]]
    index, probabilities = reference(text_stages, texts)
    labels = json.loads((text_model_dir / "metadata.json").read_text())["labels"]
    predictions = run.response["predictions"]
    assert [p["label"] for p in predictions] == [labels[i] for i in index]
    assert [p["probability"] for p in predictions] == pytest.approx(probabilities)
    assert [p["record_id"] for p in predictions] == [r["eventID"] for r in event["Records"]]
    assert [p["sequence_number"] for p in predictions] == [
        r["kinesis"]["sequenceNumber"] for r in event["Records"]
    ]
    assert {p["model"] for p in predictions} == {"sentiment"}
    assert {p["model_version"] for p in predictions} == {"unversioned"}
    # Records 0 and 2 carry the same text: two predictions, each with its own identity.
    assert predictions[0]["label"] == predictions[2]["label"]
    assert predictions[0]["record_id"] != predictions[2]["record_id"]
    assert run.response["batchItemFailures"] == []
    assert run.response["counts"] == {
        "received": 4,
        "predicted": 4,
        "skipped": 0,
        "dead_lettered": 0,
        "failed": 0,
    }


def test_aws_sample_plain_text(text_model_dir: Path) -> None:
    run = invoke(load_event("kinesis"), MODEL_DIR=text_model_dir)
    assert run.response["counts"]["predicted"] == 2
    assert all(0.5 <= p["probability"] <= 1 for p in run.response["predictions"])


def test_sam_dynamodb_update_with_input_field(text_model_dir: Path) -> None:
    run = invoke(load_event("dynamodb_update"), MODEL_DIR=text_model_dir, INPUT_FIELD="Message")
    assert [p["record_id"] for p in run.response["predictions"]] == [
        "c4ca4238a0b923820dcc509a6f75849b",
        "c81e728d9d4c2f636f067f89cc14862c",
    ]
    assert run.response["counts"] == {
        "received": 3,
        "predicted": 2,
        "skipped": 1,
        "dead_lettered": 0,
        "failed": 0,
    }
    assert run.batch_log["source"] == "dynamodb"


def test_sam_dynamodb_update_without_input_field_reports_each_record(text_model_dir: Path) -> None:
    run = invoke(load_event("dynamodb_update"), MODEL_DIR=text_model_dir)
    assert run.failures == ["4421584500000000017450439091", "4421584500000000017450439092"]
    assert [log["reason"] for log in run.bad_records] == [
        "missing NewImage attribute 'text' (the record has keys 'Id', 'Message'); set "
        "INPUT_FIELD if the model's input lives under another name"
    ] * 2
    assert run.response["counts"]["skipped"] == 1


def test_kinesis_data_streams_for_dynamodb(text_model_dir: Path) -> None:
    event = load_event("kinesis_dynamodb")
    run = invoke(event, MODEL_DIR=text_model_dir)
    assert [p["sequence_number"] for p in run.response["predictions"]] == [
        r["kinesis"]["sequenceNumber"] for r in event["Records"][:2]
    ]
    assert run.response["counts"]["skipped"] == 1


def test_kinesis_data_streams_for_dynamodb_failure_uses_the_kinesis_sequence_number(
    text_model_dir: Path,
) -> None:
    event = {
        "Records": [
            kinesis_record(change_record("INSERT", {"text": {"S": "love it"}}), "5001"),
            kinesis_record(change_record("MODIFY", {"text": {"N": "4"}}), "5002"),
        ]
    }
    run = invoke(event, MODEL_DIR=text_model_dir)
    assert run.failures == ["5002"]
    assert run.response["counts"]["predicted"] == 1


def test_numeric_model_on_kinesis_and_dynamodb(numeric_model_dir: Path) -> None:
    from_kinesis = invoke(load_event("kinesis_income"), MODEL_DIR=numeric_model_dir)
    from_dynamodb = invoke(load_event("dynamodb_income"), MODEL_DIR=numeric_model_dir)
    stage = joblib.load(numeric_model_dir / "income.joblib")
    rows = [[39, 13, 40, 2174, 0], [50, 13, 13, 0, 0], [52, 16, 60, 15024, 0]]
    proba = stage.predict_proba(rows).max(axis=1)
    for run in (from_kinesis, from_dynamodb):
        assert [p["probability"] for p in run.response["predictions"]] == pytest.approx(proba)
        assert {p["label"] for p in run.response["predictions"]} <= {"<=50K", ">50K"}
    assert from_dynamodb.response["counts"]["skipped"] == 1


def test_direct_invocation(text_model_dir: Path) -> None:
    run = invoke(load_event("direct"), MODEL_DIR=text_model_dir)
    assert [p["record_id"] for p in run.response["predictions"]] == ["0", "manual-1", "2"]
    assert [p["sequence_number"] for p in run.response["predictions"]] == [None] * 3


def test_direct_invocation_failures_use_the_record_id(text_model_dir: Path) -> None:
    run = invoke({"records": [{"id": "a", "text": 3}, "fine"]}, MODEL_DIR=text_model_dir)
    assert run.failures == ["a"]


def test_empty_batch(text_model_dir: Path) -> None:
    run = invoke({"Records": []}, MODEL_DIR=text_model_dir)
    assert run.response == {
        "batchItemFailures": [],
        "predictions": [],
        "counts": {"received": 0, "predicted": 0, "skipped": 0, "dead_lettered": 0, "failed": 0},
    }


# --- bad records never fail the batch and never vanish ---------------------------------------


def test_bad_records_are_reported_with_their_sequence_numbers(numeric_model_dir: Path) -> None:
    good = {
        "age": 30,
        "education_num": 10,
        "hours_per_week": 40,
        "capital_gain": 0,
        "capital_loss": 0,
    }
    event = kinesis_event(
        [
            good,
            b"not json",
            {**good, "age": "thirty"},
            good,
            b'{"age": NaN, "education_num": 1, "hours_per_week": 1, "capital_gain": 0, "capital_loss": 0}',
            {key: value for key, value in good.items() if key != "capital_loss"},
        ],
        first_sequence=900,
    )
    run = invoke(event, MODEL_DIR=numeric_model_dir)
    assert run.failures == ["901", "902", "904", "905"]
    assert [p["sequence_number"] for p in run.response["predictions"]] == ["900", "903"]
    assert [(log["sequence_number"], log["action"]) for log in run.bad_records] == [
        (seq, "reported in batchItemFailures") for seq in ("901", "902", "904", "905")
    ]
    assert [log["reason"].split(" (")[0] for log in run.bad_records] == [
        "payload is not valid JSON",
        "feature 'age' is a string",
        "feature 'age' is nan",
        "missing feature 'capital_loss'",
    ]
    assert all(
        log["record_id"] == f"shardId-000000000000:{log['sequence_number']}"
        for log in run.bad_records
    )
    assert run.response["counts"] == {
        "received": 6,
        "predicted": 2,
        "skipped": 0,
        "dead_lettered": 0,
        "failed": 4,
    }


def test_every_batch_item_failure_has_an_identifier(text_model_dir: Path) -> None:
    event = {
        "Records": [
            dynamodb_record("11", "INSERT", {"text": {"S": "ok"}}),
            dynamodb_record("12", "INSERT", {"text": {"BOOL": True}}),
            dynamodb_record("13", "REMOVE"),
        ]
    }
    run = invoke(event, MODEL_DIR=text_model_dir)
    assert run.response["batchItemFailures"] == [{"itemIdentifier": "12"}]


def test_invalid_event_raises(text_model_dir: Path) -> None:
    with pytest.raises(InvalidEventError, match="unsupported eventSource 'aws:sqs'"):
        invoke({"Records": [{"eventSource": "aws:sqs"}]}, MODEL_DIR=text_model_dir)
    assert gc.isenabled()  # paused for the batch only, even when it raises


def test_garbage_collection_resumes_after_a_batch(text_model_dir: Path) -> None:
    invoke(load_event("kinesis_reviews"), MODEL_DIR=text_model_dir)
    assert gc.isenabled()


# --- one model load, one predict call --------------------------------------------------------


def test_one_vectorized_predict_call_per_batch(
    text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke({"Records": []}, MODEL_DIR=text_model_dir)  # load (cached) before patching
    loaded = model_module.get_model({"MODEL_DIR": str(text_model_dir)})
    calls: list[int] = []
    original = loaded.final.predict

    def counting_predict(features: Any) -> Any:
        calls.append(features.shape[0])
        return original(features)

    monkeypatch.setattr(loaded.final, "predict", counting_predict)
    payloads: list[Any] = [{"text": f"review number {i}, works well"} for i in range(50)]
    payloads[7] = {"text": 7}
    run = invoke(kinesis_event(payloads), MODEL_DIR=text_model_dir)
    assert calls == [49]
    assert run.response["counts"]["predicted"] == 49


def test_model_is_loaded_once_per_environment(
    text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke({"Records": []}, MODEL_DIR=text_model_dir)
    loads: list[Any] = []
    real_load = joblib.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(joblib, "load", counting_load)
    for _ in range(3):
        run = invoke(load_event("kinesis_reviews"), MODEL_DIR=text_model_dir)
        assert run.batch_log["cold_start"] is False
    assert loads == []


@pytest.mark.parametrize(
    ("setting", "mapped"),
    # CountVectorizer keeps no arrays (a vocabulary dict): never mapped
    [(None, [False, False, True]), ("1", [False, True, True]), ("0", [False, False, False])],
    ids=["unset-by-size", "always", "never"],
)
def test_model_mmap_setting(
    text_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    mapped: list[bool],
) -> None:
    # given the size threshold between the TfidfTransformer's file and the classifier's
    names = json.loads((text_model_dir / "metadata.json").read_text())["stages"]
    sizes = [(text_model_dir / name).stat().st_size for name in names]
    assert sizes[1] < sizes[2]
    monkeypatch.setattr(model_module, "MMAP_MIN_BYTES", sizes[2])
    monkeypatch.setattr(model_module, "_LOADED", {})
    environ = {"MODEL_DIR": str(text_model_dir)}
    if setting is not None:
        environ["MODEL_MMAP"] = setting
    # when the environment's model loads
    loaded = model_module.get_model(environ)
    # then each stage's arrays are memory-mapped or read as the setting says, no warning
    stages = [*loaded.transforms, loaded.final]
    assert [_has_memmap(stage) for stage in stages] == mapped
    assert loaded.warnings == []
    assert loaded.predict(["great", "awful"]).labels == ["positive", "negative"]


def _has_memmap(stage: Any) -> bool:
    return any(isinstance(value, np.memmap) for value in vars(stage).values())


def test_cold_start_flag_only_on_the_first_invocation(
    text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = import_function()
    monkeypatch.setattr(function, "_cold_start", True)
    first = invoke({"Records": []}, MODEL_DIR=text_model_dir)
    second = invoke({"Records": []}, MODEL_DIR=text_model_dir)
    assert (first.batch_log["cold_start"], second.batch_log["cold_start"]) == (True, False)


def test_batch_log_line(text_model_dir: Path) -> None:
    run = invoke(load_event("kinesis_reviews"), MODEL_DIR=text_model_dir)
    line = run.batch_log
    assert line["counts"] == run.response["counts"]
    assert (line["model"], line["model_version"]) == ("sentiment", "unversioned")
    assert line["request_id"] == FakeContext.aws_request_id
    for key in ("decode_ms", "predict_ms", "write_ms"):
        assert isinstance(line[key], float) and line[key] >= 0
    # Nothing else on a clean batch (a "model loaded" line if this test loaded it).
    assert {log["message"] for log in run.logs} <= {"batch", "model loaded"}


def test_manifest_version_and_model_version_env(text_model_dir: Path, tmp_path: Path) -> None:
    unversioned = invoke({"records": ["ok"]}, MODEL_DIR=text_model_dir, MODEL_VERSION="42")
    assert unversioned.response["predictions"][0]["model_version"] == "42"

    layer = tmp_path / "model"
    shutil.copytree(text_model_dir, layer)
    meta = json.loads((layer / "metadata.json").read_text())
    (layer / "manifest.json").write_text(json.dumps({**meta, "version": 7, "files": {}}))
    run = invoke({"records": ["ok"]}, MODEL_DIR=layer, MODEL_VERSION="42")
    assert run.response["predictions"][0]["model_version"] == 7
    # The batch line's model_version is a metric dimension: a string (predictions keep 7).
    assert run.batch_log["model_version"] == "7"


def test_metadata_version_drift_is_logged_at_load(text_model_dir: Path, tmp_path: Path) -> None:
    layer = tmp_path / "model"
    shutil.copytree(text_model_dir, layer)
    meta = json.loads((layer / "metadata.json").read_text())
    meta["versions"]["scikit-learn"] = "1.5.0"
    (layer / "metadata.json").write_text(json.dumps(meta))
    run = invoke({"records": ["fine"]}, MODEL_DIR=layer)
    (loaded,) = [log for log in run.logs if log["message"] == "model loaded"]
    assert loaded["version_drift"] == [
        f"scikit-learn 1.5.0 at training, {sklearn.__version__} here"
    ]
    assert "warnings" not in loaded  # the pickles themselves load cleanly
    assert run.response["counts"]["predicted"] == 1


def test_unpickling_warnings_are_logged_at_load(text_model_dir: Path, tmp_path: Path) -> None:
    """A pickle from another scikit-learn (its recorded version rewritten in place)."""
    layer = tmp_path / "model"
    shutil.copytree(text_model_dir, layer)
    final = layer / json.loads((layer / "metadata.json").read_text())["stages"][-1]
    here = sklearn.__version__.encode()
    other = b"0" * (len(here) - 4) + b".0.0"  # same length: the pickle stays valid
    assert final.read_bytes().count(here) == 1  # the pickled _sklearn_version
    final.write_bytes(final.read_bytes().replace(here, other))
    run = invoke({"records": ["fine"]}, MODEL_DIR=layer)
    (loaded,) = [log for log in run.logs if log["message"] == "model loaded"]
    assert f"from version {other.decode()} when using version" in loaded["warnings"][0]
    assert run.response["counts"]["predicted"] == 1


# --- a missing or broken model ---------------------------------------------------------------


def _broken(tmp_path: Path, text_model_dir: Path, how: str) -> Path:
    target = tmp_path / "model"
    shutil.copytree(text_model_dir, target)
    meta_path = target / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if how == "no-metadata":
        meta_path.unlink()
    elif how == "missing-stage":
        (target / meta["stages"][1]).unlink()
    elif how == "corrupt-stage":
        (target / meta["stages"][-1]).write_bytes(b"not a pickle")
    elif how == "bad-input":
        meta_path.write_text(json.dumps({**meta, "input": {"kind": "image"}}))
    elif how == "label-count":
        meta_path.write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    elif how == "no-predict":
        meta_path.write_text(json.dumps({**meta, "stages": meta["stages"][:2]}))
    return target


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing-dir", "does not exist: attach the model layer"),
        ("no-metadata", "has neither manifest.json nor metadata.json"),
        ("missing-stage", "is listed in the metadata but"),
        ("corrupt-stage", "cannot load"),
        ("bad-input", '"input" must be'),
        ("label-count", '"labels" names 3 classes but the model has 2'),
        ("no-predict", "has no predict()"),
    ],
)
def test_unloadable_model_raises_a_clear_error(
    how: str, message: str, tmp_path: Path, text_model_dir: Path
) -> None:
    directory = (
        tmp_path / "nowhere" if how == "missing-dir" else _broken(tmp_path, text_model_dir, how)
    )
    with pytest.raises(ModelLoadError) as caught:
        invoke({"records": ["ok"]}, MODEL_DIR=directory)
    assert message in str(caught.value)
    if how == "corrupt-stage":
        assert "as at training: the file is damaged or not a joblib pickle" in str(caught.value)


def _b64(data: str) -> bytes:
    import base64

    return base64.b64decode(data)


# --- not only the two samples: any scikit-learn chain ----------------------------------------


def _save_model(directory: Path, name: str, stage: Any, features: list[str], labels: Any) -> Path:
    directory.mkdir(parents=True)
    joblib.dump(stage, directory / f"{name}.joblib")
    meta = {
        "name": name,
        "stages": [f"{name}.joblib"],
        "input": {"kind": "features", "features": features},
        "labels": labels,
        "versions": {"scikit-learn": sklearn.__version__},
    }
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture(scope="module")
def other_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import numpy as np
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    base = tmp_path_factory.mktemp("models")
    return {
        "regressor": _save_model(
            base / "regressor",
            "price",
            make_pipeline(StandardScaler(), LinearRegression()).fit(X, 3 * X[:, 0] + 1),
            ["a", "b"],
            None,
        ),
        "no-proba": _save_model(
            base / "no-proba", "svm", LinearSVC().fit(X, y), ["a", "b"], ["low", "high"]
        ),
        "string-classes": _save_model(
            base / "string-classes",
            "spam",
            make_pipeline(StandardScaler(), LinearSVC()).fit(X, np.where(y, "spam", "ham")),
            ["a", "b"],
            None,
        ),
    }


def test_regressor_predictions_are_the_values(other_models: dict[str, Path]) -> None:
    run = invoke(
        {"records": [{"a": 1.0, "b": 0}, {"a": -1.0, "b": 5}]}, MODEL_DIR=other_models["regressor"]
    )
    values = [p["label"] for p in run.response["predictions"]]
    assert values == pytest.approx([4.0, -2.0])
    assert [p["probability"] for p in run.response["predictions"]] == [None, None]


def test_classifier_without_predict_proba(other_models: dict[str, Path]) -> None:
    run = invoke({"records": [{"a": 3, "b": 3}, [-3, -3]]}, MODEL_DIR=other_models["no-proba"])
    assert [p["label"] for p in run.response["predictions"]] == ["high", "low"]
    assert [p["probability"] for p in run.response["predictions"]] == [None, None]


def test_string_classes_are_the_labels(other_models: dict[str, Path]) -> None:
    run = invoke({"records": [[3, 3], [-3, -3]]}, MODEL_DIR=other_models["string-classes"])
    assert [p["label"] for p in run.response["predictions"]] == ["spam", "ham"]


def test_skipped_records_are_counted_by_reason_once_per_batch(text_model_dir: Path) -> None:
    # given: one batch mixing what a table's stream can deliver: a scored INSERT, REMOVEs,
    # changes from KEYS_ONLY and OLD_IMAGE streams, and a Kinesis-delivered change record
    # without its image (which carries no StreamViewType)
    text = {"text": {"S": "great product, works well"}}
    records = [
        dynamodb_record("101", "INSERT", text),
        dynamodb_record("102", "REMOVE"),
        dynamodb_record("103", "REMOVE", view="KEYS_ONLY"),
        dynamodb_record("104", "MODIFY", view="KEYS_ONLY"),
        dynamodb_record("105", "INSERT", view="KEYS_ONLY"),
        dynamodb_record("106", "MODIFY", view="OLD_IMAGE"),
    ]
    # when
    run = invoke({"Records": records}, MODEL_DIR=text_model_dir)
    kds = invoke(
        kinesis_event([change_record("MODIFY"), change_record("REMOVE")]),
        MODEL_DIR=text_model_dir,
    )
    # then: the existing counts stand, and the batch line says why, per kind
    assert run.response["counts"]["skipped"] == 5
    assert run.batch_log["counts"]["skipped"] == 5
    assert run.batch_log["skipped_reasons"] == {"KEYS_ONLY": 2, "OLD_IMAGE": 1, "REMOVE": 2}
    assert kds.batch_log["skipped_reasons"] == {"NO_NEW_IMAGE": 1, "REMOVE": 1}
    assert [p["sequence_number"] for p in run.response["predictions"]] == ["101"]


def test_a_batch_without_skipped_records_has_no_skip_reasons(text_model_dir: Path) -> None:
    run = invoke(load_event("kinesis"), MODEL_DIR=text_model_dir)
    assert run.batch_log["counts"]["skipped"] == 0
    assert "skipped_reasons" not in run.batch_log
