"""Shadow scoring (docs/CONTRACTS.md, "Shadow scoring"): a second real model scored beside the
live one, compared with what both models answer when loaded directly; a shadow that cannot
load or that raises changes nothing for the live model; SHADOW_OUTPUT in a DynamoDB table;
SHADOW_URI from the model store; a set ignores the shadow."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
import pytest
from function_support import (
    FUNCTION_DIR,
    Run,
    dynamodb_record,
    import_function,
    invoke,
    kinesis_event,
    kinesis_record,
)
from moto import mock_aws
from test_function_metrics import emf, labels_of, write_model

import model_store
import shadow
import sinks
from mlayer.archive import iter_files, write_model_tar

# Review-like words, positive and negative mixed: the two models disagree on some texts.
WORDS = (  # noqa: SIM905 - prose reads better than a list of strings
    "great works well love it excellent value broke after a day terrible quality do not buy "
    "stopped working cheap plastic sturdy easy to set up confusing returned five stars okay "
    "not bad slow shipping good packaging refund awful fine kettle leaks battery died"
).split()


@pytest.fixture(autouse=True)
def fresh_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts a new execution environment as far as the shadow goes: a shadow
    dropped by one test must not stay dropped for the next."""
    function = import_function()
    monkeypatch.setattr(shadow, "_STATES", {})
    monkeypatch.setattr(function, "_announced_shadow", None)


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample text model trained again on another seed's data: a real second model."""
    out = tmp_path_factory.mktemp("shadow") / "sentiment-b"
    train = Path(__file__).resolve().parent.parent / "training" / "train.py"
    subprocess.run(
        [sys.executable, str(train), "--out", str(out), "--example", "text", "--seed", "1"],
        check=True,
        capture_output=True,
    )
    return out


def review_texts(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(count)]


def direct_answers(directory: Path, inputs: Any) -> tuple[list[Any], np.ndarray, list[Any]]:
    """Labels, predict_proba and class labels of a model directory, loaded with joblib."""
    meta = json.loads((directory / "metadata.json").read_text())
    stages = [joblib.load(directory / name) for name in meta["stages"]]
    features = inputs
    for stage in stages[:-1]:
        features = stage.transform(features)
    final = stages[-1]
    names = meta.get("labels") or list(final.classes_)
    classes = list(final.classes_)
    labels = [names[classes.index(value)] for value in final.predict(features)]
    return labels, final.predict_proba(features), names


def without_shadow(response: dict[str, Any]) -> dict[str, Any]:
    predictions = [{k: v for k, v in p.items() if k != "shadow"} for p in response["predictions"]]
    return {**response, "predictions": predictions}


def logged(run: Run, message: str) -> list[dict[str, Any]]:
    return [log for log in run.logs if log["message"] == message]


def test_agreement_and_abs_diff_are_the_two_models_own(
    text_model_dir: Path, shadow_dir: Path
) -> None:
    # given the sample text model live, the same model trained on other data as the shadow,
    # and a batch of reviews with a bad record and a skipped one among them
    texts = review_texts(60)
    event = kinesis_event([{"text": text} for text in texts])
    event["Records"].insert(5, kinesis_record(b"", "1"))
    event["Records"].insert(9, kinesis_record({"text": 7}, "2"))
    alone = invoke(event, MODEL_DIR=text_model_dir)

    # when the handler runs with the shadow
    run = invoke(event, MODEL_DIR=text_model_dir, SHADOW_DIR=shadow_dir)

    # then the live predictions and their outcome are exactly those without a shadow
    assert run.response == alone.response
    (loaded,) = logged(run, "shadow loaded")
    assert (loaded["model"], loaded["model_version"], loaded["output"]) == (
        "sentiment",
        "unversioned",
        False,
    )
    # and agreement and abs_diff are what both models answer, loaded directly
    live_labels, live_proba, live_names = direct_answers(text_model_dir, texts)
    shadow_labels, shadow_proba, shadow_names = direct_answers(shadow_dir, texts)
    assert [p["label"] for p in run.response["predictions"]] == live_labels
    agreement = np.mean([a == b for a, b in zip(live_labels, shadow_labels, strict=True)])
    assert 0 < agreement < 1  # the two models differ somewhere: the comparison means something
    abs_diff = np.mean(
        [
            abs(
                live_proba[row, live_names.index(label)]
                - shadow_proba[row, shadow_names.index(label)]
            )
            for row, label in enumerate(live_labels)
        ]
    )
    line = run.batch_log
    member = line["shadow"]
    assert (member["model"], member["model_version"], member["records"]) == (
        "sentiment",
        "unversioned",
        60,
    )
    assert member["agreement"] == pytest.approx(agreement)
    assert member["abs_diff"] == pytest.approx(abs_diff)
    assert "decode_ms" not in member  # same input: the decoded texts were reused
    # and the line is EMF with the shadow directive
    live, shadowed = emf(line)
    assert line["shadow_version"] == "unversioned"
    assert shadowed["shadow_records"] == 60
    assert shadowed["shadow_agreement"] == pytest.approx(agreement)
    assert shadowed["shadow_agreed"] == sum(
        a == b for a, b in zip(live_labels, shadow_labels, strict=True)
    )
    assert shadowed["shadow_abs_diff"] == pytest.approx(abs_diff)
    assert shadowed["shadow_failures"] == 0
    assert shadowed["shadow_predict_ms"] == member["predict_ms"] > 0
    assert labels_of(shadowed, "shadow_label:") == Counter(shadow_labels)
    assert labels_of(live) == Counter(live_labels)


def test_a_shadow_reading_another_input_decodes_the_records_again(
    text_model_dir: Path, numeric_model_dir: Path
) -> None:
    # given a text model live and the numeric model as the shadow, records carrying a text
    # and, for some, the numeric model's features
    rng = random.Random(5)
    features = ("age", "education_num", "hours_per_week", "capital_gain", "capital_loss")
    payloads: list[dict[str, Any]] = []
    for index, text in enumerate(review_texts(12)):
        payload: dict[str, Any] = {"text": text}
        if index % 3:
            payload.update({name: rng.randint(1, 60) for name in features})
        payloads.append(payload)
    # when the handler runs with SHADOW_OUTPUT
    run = invoke(
        kinesis_event(payloads),
        MODEL_DIR=text_model_dir,
        SHADOW_DIR=numeric_model_dir,
        SHADOW_OUTPUT="1",
    )
    # then the shadow scored the records it can read, each aligned with its own record
    with_features = [p for p in payloads if "age" in p]
    rows = [[float(p[name]) for name in features] for p in with_features]
    expected, proba, _ = direct_answers(numeric_model_dir, np.asarray(rows))
    predictions = run.response["predictions"]
    assert len(predictions) == 12
    answered = [p["shadow"] for p in predictions if "shadow" in p]
    assert [p["label"] for p in answered] == expected
    assert [p["probability"] for p in answered] == pytest.approx(proba.max(axis=1).tolist())
    assert ["shadow" in p for p in predictions] == ["age" in p for p in payloads]
    member = run.batch_log["shadow"]
    assert member["records"] == len(with_features) == 8
    assert member["agreement"] == 0.0  # sentiment labels are never income labels
    assert member["decode_ms"] >= 0


def test_a_shadow_that_cannot_load_is_dropped_and_the_live_model_serves(
    text_model_dir: Path, shadow_dir: Path, tmp_path: Path
) -> None:
    # given a shadow whose classifier file is damaged
    broken = tmp_path / "broken"
    shutil.copytree(shadow_dir, broken)
    (broken / "sentiment.joblib").write_bytes(b"not a pickle")
    event = kinesis_event([{"text": t} for t in review_texts(10)])
    alone = invoke(event, MODEL_DIR=text_model_dir)
    # when two batches run
    first = invoke(event, MODEL_DIR=text_model_dir, SHADOW_DIR=broken)
    second = invoke(event, MODEL_DIR=text_model_dir, SHADOW_DIR=broken)
    # then the first logs that the shadow was dropped, with the reason; neither has a shadow
    (dropped,) = logged(first, "shadow dropped")
    assert dropped["shadow"] == str(broken)
    assert dropped["error"].startswith(f"cannot load {broken / 'sentiment.joblib'}")
    assert logged(second, "shadow dropped") == []  # never tried again
    for run in (first, second):
        assert run.response == alone.response
        assert "shadow" not in run.batch_log
        assert len(emf(run.batch_log)) == 1


def test_an_explicit_shadow_dir_that_does_not_exist_is_reported(
    text_model_dir: Path, tmp_path: Path
) -> None:
    run = invoke({"records": ["fine"]}, MODEL_DIR=text_model_dir, SHADOW_DIR=tmp_path / "none")
    (dropped,) = logged(run, "shadow dropped")
    assert dropped["error"] == (
        f"SHADOW_DIR {tmp_path / 'none'} is not a directory: attach the shadow layer (it "
        "unpacks to /opt/shadow) or unset SHADOW_DIR"
    )
    assert run.response["counts"]["predicted"] == 1


def test_a_set_is_no_shadow(text_model_dir: Path, tmp_path: Path) -> None:
    shadow_set = tmp_path / "shadow-set"
    shutil.copytree(text_model_dir, shadow_set / "reviews")
    (shadow_set / "set.json").write_text(json.dumps({"models": ["reviews"], "field": "t"}))
    run = invoke({"records": ["fine"]}, MODEL_DIR=text_model_dir, SHADOW_DIR=shadow_set)
    (dropped,) = logged(run, "shadow dropped")
    assert dropped["error"] == f"{shadow_set} holds a model set: a shadow is a single model"
    assert "shadow" not in run.batch_log


def test_input_field_applies_to_a_shadow_of_the_same_kind(
    text_model_dir: Path, shadow_dir: Path
) -> None:
    # given records whose text is in "Message", which INPUT_FIELD names for the live model
    texts = review_texts(6)
    run = invoke(
        {"records": [{"Message": text} for text in texts]},
        MODEL_DIR=text_model_dir,
        SHADOW_DIR=shadow_dir,
        INPUT_FIELD="Message",
    )
    # then the shadow reads the same field: every record is scored by both
    assert run.batch_log["shadow"]["records"] == 6
    shadow_labels, _, _ = direct_answers(shadow_dir, texts)
    _, shadowed = emf(run.batch_log)
    assert labels_of(shadowed, "shadow_label:") == Counter(shadow_labels)


def test_a_shadow_that_raises_is_dropped_for_the_environment(
    text_model_dir: Path, numeric_model_dir: Path, tmp_path: Path
) -> None:
    # given a shadow that says it reads texts but is the numeric model: it loads, and fails
    # on the first batch (a model expecting another input form)
    wrong = tmp_path / "wrong"
    shutil.copytree(numeric_model_dir, wrong)
    meta = json.loads((wrong / "metadata.json").read_text())
    (wrong / "metadata.json").write_text(
        json.dumps({**meta, "input": {"kind": "text", "field": "text"}})
    )
    event = kinesis_event([{"text": t} for t in review_texts(8)])
    alone = invoke(event, MODEL_DIR=text_model_dir)
    # when two batches run
    first = invoke(event, MODEL_DIR=text_model_dir, SHADOW_DIR=wrong)
    second = invoke(event, MODEL_DIR=text_model_dir, SHADOW_DIR=wrong)
    # then the first logs the drop and counts the failure; the live model is unaffected
    (dropped,) = logged(first, "shadow dropped")
    assert dropped["error"].startswith("ValueError: ")
    line = first.batch_log
    assert line["shadow"]["error"] == dropped["error"]
    assert line["shadow"]["records"] == 0
    _, shadowed = emf(line)
    assert shadowed["shadow_failures"] == 1
    assert "shadow_agreement" not in shadowed and "shadow_agreed" not in shadowed
    assert first.response == alone.response
    # and the next batch has no shadow at all
    assert second.response == alone.response
    assert logged(second, "shadow dropped") == []
    assert "shadow" not in second.batch_log and len(emf(second.batch_log)) == 1


def test_shadow_output_items_in_the_table_carry_the_shadow(
    text_model_dir: Path, shadow_dir: Path
) -> None:
    texts = review_texts(30)
    sinks._CLIENTS.clear()
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        table = dynamodb.create_table(
            TableName="predictions",
            KeySchema=[{"AttributeName": "record_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "record_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # when a DynamoDB Streams batch (one REMOVE among the inserts) is scored
        event = {
            "Records": [
                dynamodb_record(str(10**20 + i), "INSERT", {"text": {"S": text}})
                for i, text in enumerate(texts)
            ]
            + [dynamodb_record(str(10**21), "REMOVE")]
        }
        run = invoke(
            event,
            MODEL_DIR=text_model_dir,
            SHADOW_DIR=shadow_dir,
            SHADOW_OUTPUT="1",
            OUTPUT_TABLE="predictions",
        )
        items = {item["record_id"]: item for item in table.scan()["Items"]}
    sinks._CLIENTS.clear()
    # then every item holds the shadow's answer as a map, its probability a number
    shadow_labels, shadow_proba, _ = direct_answers(shadow_dir, texts)
    assert run.response["batchItemFailures"] == []
    assert len(items) == 30
    for prediction, label, row in zip(
        run.response["predictions"], shadow_labels, shadow_proba, strict=True
    ):
        stored = items[prediction["record_id"]]["shadow"]
        assert stored == {
            "label": label,
            "probability": Decimal(repr(prediction["shadow"]["probability"])),
            "model_version": "unversioned",
        }
        assert prediction["shadow"]["probability"] == pytest.approx(row.max())
    assert run.batch_log["shadow"]["records"] == 30


def test_a_shadow_is_skipped_when_the_invocation_is_nearly_out_of_time(
    text_model_dir: Path, shadow_dir: Path
) -> None:
    class Hurried:
        aws_request_id = "r"

        def get_remaining_time_in_millis(self) -> int:
            return 400

    run = invoke(
        {"records": review_texts(3)}, Hurried(), MODEL_DIR=text_model_dir, SHADOW_DIR=shadow_dir
    )
    assert run.response["counts"]["predicted"] == 3
    member = run.batch_log["shadow"]
    assert member["skipped"].startswith("skipped: ")
    assert len(emf(run.batch_log)) == 1  # no shadow directive: it scored nothing
    assert logged(run, "shadow dropped") == []


def test_regression_shadow_agrees_within_a_relative_tolerance(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    xs = [[0.0], [1.0], [2.0]]
    live = write_model(tmp_path / "live", LinearRegression().fit(xs, [0.5, 2.5, 4.5]), "live")
    other = write_model(tmp_path / "other", LinearRegression().fit(xs, [0.5, 2.6, 4.7]), "other")
    run = invoke(
        {"records": [{"x": x} for x in (0.0, 1.0, 2.0, 3.0)]}, MODEL_DIR=live, SHADOW_DIR=other
    )
    member = run.batch_log["shadow"]
    assert member["agreement"] == 0.25  # x = 0 only: 0.5 against 0.5
    assert member["abs_diff"] == pytest.approx(np.mean([0.0, 0.1, 0.2, 0.3]))
    _, shadowed = emf(run.batch_log)
    assert labels_of(shadowed, "shadow_label:") == {}  # scores are not labels


# --- SHADOW_URI: the model store -------------------------------------------------------------


BUCKET = "mlayer-models"


def publish(s3: Any, directory: Path, out: Path) -> str:
    files = [path.relative_to(directory).as_posix() for path in iter_files(directory)]
    sha, size = write_model_tar(directory, files, out)
    key = f"mlayer/scorer-model/{sha}.tar"
    s3.upload_file(str(out), BUCKET, key)
    return f"s3://{BUCKET}/{key}#sha256={sha}&size={size}"


@pytest.fixture
def store_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(model, "_FETCHED", {})
    monkeypatch.setattr(model, "_LOADED", {})
    yield tmp_path


def test_shadow_uri_is_fetched_from_the_store_beside_the_model_uri(
    text_model_dir: Path, shadow_dir: Path, store_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[str] = []
    real_start = model_store.start_fetch

    def counting(uri: Any, *args: Any, **kwargs: Any) -> Any:
        starts.append(str(uri))
        return real_start(uri, *args, **kwargs)

    monkeypatch.setattr(model_store, "start_fetch", counting)
    texts = review_texts(20)
    by_directory = invoke({"records": texts}, MODEL_DIR=text_model_dir, SHADOW_DIR=shadow_dir)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        model_uri = publish(s3, text_model_dir, store_tmp / "model.tar")
        shadow_uri = publish(s3, shadow_dir, store_tmp / "shadow.tar")
        # when both the model and the shadow come from the store, for two batches
        first = invoke({"records": texts}, MODEL_URI=model_uri, SHADOW_URI=shadow_uri)
        second = invoke({"records": texts}, MODEL_URI=model_uri, SHADOW_URI=shadow_uri)
    # then each archive was fetched once, and the shadow scores as from its directory
    assert starts == [model_uri, shadow_uri]
    (loaded,) = logged(first, "shadow loaded")
    assert loaded["store"]["uri"] == shadow_uri and loaded["store"]["reused"] is False
    for run in (first, second):
        assert run.response == by_directory.response
        member = run.batch_log["shadow"]
        assert member["agreement"] == by_directory.batch_log["shadow"]["agreement"]
        assert member["abs_diff"] == pytest.approx(by_directory.batch_log["shadow"]["abs_diff"])


def test_a_shadow_uri_that_cannot_be_fetched_is_dropped(
    text_model_dir: Path, store_tmp: Path
) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        uri = f"s3://{BUCKET}/mlayer/scorer-model/{'0' * 64}.tar#sha256={'0' * 64}&size=10"
        run = invoke({"records": ["fine"]}, MODEL_DIR=text_model_dir, SHADOW_URI=uri)
    (dropped,) = logged(run, "shadow dropped")
    assert dropped["shadow"] == uri
    assert "does not exist" in dropped["error"]
    assert run.response["counts"]["predicted"] == 1


# --- model sets and the init -----------------------------------------------------------------


def test_a_set_ignores_the_shadow_settings_once(
    text_model_dir: Path, shadow_dir: Path, tmp_path: Path
) -> None:
    set_dir = tmp_path / "set"
    shutil.copytree(text_model_dir, set_dir / "reviews")
    (set_dir / "set.json").write_text(
        json.dumps({"models": ["reviews"], "field": "tenant", "default": "reviews"})
    )
    env = {"MODEL_DIR": set_dir, "SHADOW_DIR": shadow_dir, "SHADOW_OUTPUT": "1"}
    first = invoke({"records": [{"text": "great"}]}, **env)
    second = invoke({"records": [{"text": "great"}]}, **env)
    assert [log["error"] for log in logged(first, "setting ignored")] == [
        "SHADOW_DIR, SHADOW_OUTPUT ignored: a model set has no shadow"
    ]
    assert logged(second, "setting ignored") == []
    for run in (first, second):
        assert "shadow" not in run.batch_log
        assert "shadow" not in run.response["predictions"][0]
        assert logged(run, "shadow loaded") == []


def test_the_init_loads_the_shadow_after_the_live_model(
    text_model_dir: Path, shadow_dir: Path, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MODEL_DIR": str(text_model_dir),
        "SHADOW_DIR": str(shadow_dir),
    }
    code = (
        "import json, lambda_function\n"
        "print(json.dumps({'message': 'imported'}))\n"
        "lambda_function.lambda_handler({'records': ['great', 'awful']}, None)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=FUNCTION_DIR, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(line)["message"] for line in proc.stdout.splitlines()]
    assert messages == ["model loaded", "shadow loaded", "imported", "batch"]
