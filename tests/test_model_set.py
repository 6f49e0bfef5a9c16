"""Model sets: three tenants' models in one function, each record scored by the model it names.

The members are trained here and differ in what they read and answer: ``reviews`` a text
pipeline with string classes, ``income`` two numeric features with labelled integer classes,
``risk`` three numeric features, three classes. Expected predictions are each member's own
``model.load(dir).predict`` on its records.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import pytest
from function_support import function_env, import_function, invoke, load_event
from moto import mock_aws

import model as model_module
import model_set
import sinks
from model_set import ModelSet, cache_budget, read_set

MEMBERS = ("reviews", "income", "risk")
SET_JSON = {
    "models": list(MEMBERS),
    "field": "tenant",
    "default": "reviews",
    "version": 4,
    "name": "tenants",
}
INPUTS: dict[str, dict[str, Any]] = {
    "reviews": {"kind": "text", "field": "text"},
    "income": {"kind": "features", "features": ["age", "hours"]},
    "risk": {"kind": "features", "features": ["score", "debt", "late"]},
}
LABELS: dict[str, list[str] | None] = {
    "reviews": None,  # string classes are the labels
    "income": ["low", "high"],
    "risk": ["safe", "watch", "default"],
}


def _train(name: str) -> Any:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(12)
    if name == "reviews":
        good = ["great sound", "works well", "love it", "excellent value", "five stars"]
        bad = ["broke quickly", "terrible quality", "do not buy", "stopped working", "one star"]
        return make_pipeline(CountVectorizer(), LogisticRegression()).fit(
            good + bad, ["positive"] * 5 + ["negative"] * 5
        )
    if name == "income":
        X = rng.uniform([18, 10], [80, 60], size=(200, 2))
        return LogisticRegression(max_iter=1000).fit(X, (X[:, 0] + X[:, 1] > 80).astype(int))
    X = rng.uniform(0, 10, size=(300, 3))
    y = np.digitize(X[:, 0] - X[:, 1] + X[:, 2], [2, 8])  # classes 0, 1, 2
    return DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)


def _write_member(directory: Path, name: str, version: int) -> None:
    """A model directory as mlayer build-model writes one: the pickle and manifest.json."""
    directory.mkdir(parents=True)
    stage = f"{name}.joblib"
    joblib.dump(_train(name), directory / stage)
    manifest = {
        "name": name,
        "version": version,
        "stages": [stage],
        "input": INPUTS[name],
        "labels": LABELS[name],
        "files": {stage: hashlib.sha256((directory / stage).read_bytes()).hexdigest()},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three members, trained once; copy them into a set with ``make_set``."""
    base = tmp_path_factory.mktemp("members")
    for version, name in enumerate(MEMBERS, start=1):
        _write_member(base / name, name, version)
    return base


@pytest.fixture
def make_set(members: Path, tmp_path: Path) -> Any:
    """A set directory holding the members and ``set.json`` (a dict, or the file's text)."""

    def make(set_json: dict[str, Any] | str = SET_JSON, name: str = "model") -> Path:
        directory = tmp_path / name
        shutil.copytree(members, directory)
        text = set_json if isinstance(set_json, str) else json.dumps(set_json)
        (directory / "set.json").write_text(text)
        return directory

    return make


@pytest.fixture
def set_dir(make_set: Any) -> Path:
    return Path(make_set())


# --- events from the real ones ---------------------------------------------------------------


def kinesis_event(payloads: list[Any]) -> dict[str, Any]:
    """A Kinesis event whose records are tests/events/kinesis_reviews.json's first one, with
    these payloads (dicts as JSON, str as UTF-8) and their own sequence numbers."""
    template = load_event("kinesis_reviews")["Records"][0]
    records = []
    for index, payload in enumerate(payloads):
        record = copy.deepcopy(template)
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        sequence = f"4965730000000000000000000000000000000000000000000000{index:04d}"
        record["kinesis"]["data"] = base64.b64encode(data.encode()).decode()
        record["kinesis"]["sequenceNumber"] = sequence
        record["eventID"] = f"shardId-000000000000:{sequence}"
        records.append(record)
    return {"Records": records}


def dynamodb_event(changes: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """A DynamoDB Streams event from tests/events/dynamodb_update.json's first record:
    (eventName, NewImage or None) per record."""
    template = load_event("dynamodb_update")["Records"][0]
    records = []
    for index, (name, image) in enumerate(changes):
        record = copy.deepcopy(template)
        record["eventName"] = name
        record["eventID"] = f"ev-{index}"
        record["dynamodb"]["SequenceNumber"] = f"44215845000000000174504{index:05d}"
        if image is None:
            del record["dynamodb"]["NewImage"]
        else:
            record["dynamodb"]["NewImage"] = image
        records.append(record)
    return {"Records": records}


REVIEW: dict[str, Any] = {"tenant": "reviews", "text": "great sound, works well"}
INCOME: dict[str, Any] = {"tenant": "income", "age": 52, "hours": 45}
RISK: dict[str, Any] = {"tenant": "risk", "score": 7.5, "debt": 1.0, "late": 2.0}


def model_input(name: str, payload: dict[str, Any]) -> Any:
    """What the member reads from a payload, in the member's column order."""
    spec = INPUTS[name]
    if spec["kind"] == "text":
        return payload[spec["field"]]
    return tuple(float(payload[feature]) for feature in spec["features"])


def expected(set_dir: Path, routed: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """(label, probability, member) per record, from each member's own load + predict,
    called once per member on its records in event order."""
    answers: dict[int, tuple[Any, ...]] = {}
    for name in MEMBERS:
        mine = [(i, payload) for i, (member, payload) in enumerate(routed) if member == name]
        if not mine:
            continue
        result = model_module.load(set_dir / name).predict([model_input(name, p) for _, p in mine])
        for (i, _), label, probability in zip(
            mine, result.labels, result.probabilities, strict=True
        ):
            answers[i] = (label, probability, name)
    return [answers[i] for i in range(len(routed))]


def answered(run: Any) -> list[tuple[Any, ...]]:
    return [(p["label"], p["probability"], p["model"]) for p in run.response["predictions"]]


@pytest.fixture
def predict_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(model name, inputs) of every Model.predict call (the real predict runs)."""
    calls: list[tuple[str, int]] = []
    original = model_module.Model.predict

    def counting(self: model_module.Model, inputs: Any) -> Any:
        calls.append((self.name, len(inputs)))
        return original(self, inputs)

    monkeypatch.setattr(model_module.Model, "predict", counting)
    return calls


# --- routing ---------------------------------------------------------------------------------


def test_mixed_kinesis_batch_routes_each_record_to_its_model(
    set_dir: Path, predict_calls: list[tuple[str, int]]
) -> None:
    # given: the three tenants interleaved, two records of each
    routed = [
        ("income", INCOME),
        ("reviews", REVIEW),
        ("risk", RISK),
        ("reviews", {"tenant": "reviews", "text": "terrible quality, do not buy"}),
        ("risk", {"tenant": "risk", "score": 1.0, "debt": 9.0, "late": 0.5}),
        ("income", {"tenant": "income", "age": 19, "hours": 12}),
    ]
    event = kinesis_event([payload for _, payload in routed])

    # when
    run = invoke(event, MODEL_DIR=set_dir)
    calls = list(predict_calls)

    # then: one vectorized predict per member
    assert sorted(calls) == [("income", 2), ("reviews", 2), ("risk", 2)]
    # and each prediction is its member's own, in event order, named by member
    assert answered(run) == expected(set_dir, routed)
    predictions = run.response["predictions"]
    assert [p["sequence_number"] for p in predictions] == [
        r["kinesis"]["sequenceNumber"] for r in event["Records"]
    ]
    assert [p["record_id"] for p in predictions] == [r["eventID"] for r in event["Records"]]
    assert {p["model_version"] for p in predictions} == {4}
    assert {label for label, _, member in answered(run) if member == "risk"} <= {
        "safe",
        "watch",
        "default",
    }
    assert run.response["batchItemFailures"] == []
    line = run.batch_log
    assert (line["model"], line["model_version"]) == ("tenants", "4")  # a dimension: a string
    assert line["models"] == {name: {"routed": 2, "predicted": 2} for name in MEMBERS}
    assert (line["defaulted"], line["unrouted"]) == (0, 0)
    assert (
        line["counts"]
        == run.response["counts"]
        == {
            "received": 6,
            "predicted": 6,
            "skipped": 0,
            "dead_lettered": 0,
            "failed": 0,
        }
    )


def test_mixed_direct_invocation_keeps_event_positions_as_ids(set_dir: Path) -> None:
    # given: records without an "id" are known by their position in the whole event
    payloads: list[Any] = [
        {**RISK, "id": "r-1"},
        INCOME,
        "plain text, no tenant: the default reads it",
        {**REVIEW, "id": "r-3"},
    ]
    run = invoke({"records": payloads}, MODEL_DIR=set_dir)
    assert [p["record_id"] for p in run.response["predictions"]] == ["r-1", "1", "2", "r-3"]
    assert [p["model"] for p in run.response["predictions"]] == [
        "risk",
        "income",
        "reviews",
        "reviews",
    ]
    plain = model_module.load(set_dir / "reviews").predict([payloads[2]])
    assert answered(run)[2] == (plain.labels[0], plain.probabilities[0], "reviews")
    assert run.batch_log["defaulted"] == 1


def test_dynamodb_changes_route_by_their_new_image(set_dir: Path) -> None:
    event = dynamodb_event(
        [
            ("INSERT", {"tenant": {"S": "income"}, "age": {"N": "52"}, "hours": {"N": "45"}}),
            ("REMOVE", None),
            ("MODIFY", {"tenant": {"S": "reviews"}, "text": {"S": "great sound, works well"}}),
        ]
    )
    run = invoke(event, MODEL_DIR=set_dir)
    assert [p["model"] for p in run.response["predictions"]] == ["income", "reviews"]
    assert answered(run) == expected(set_dir, [("income", INCOME), ("reviews", REVIEW)])
    assert run.response["counts"]["skipped"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"tenant": "nobody", "text": "love it"}, id="unknown-name"),
        pytest.param({"text": "love it"}, id="no-field"),
        pytest.param({"tenant": 7, "text": "love it"}, id="not-a-string"),
    ],
)
def test_records_naming_no_member_go_to_the_default(set_dir: Path, payload: Any) -> None:
    run = invoke(kinesis_event([INCOME, payload]), MODEL_DIR=set_dir)
    assert answered(run) == expected(set_dir, [("income", INCOME), ("reviews", payload)])
    assert run.batch_log["defaulted"] == 1
    assert run.batch_log["models"]["reviews"] == {"routed": 1, "predicted": 1}


def test_model_field_overrides_the_set_field(set_dir: Path) -> None:
    payload = {"customer": "risk", "tenant": "income", "score": 1, "debt": 2, "late": 3}
    run = invoke({"records": [payload]}, MODEL_DIR=set_dir, MODEL_FIELD="customer")
    assert run.response["predictions"][0]["model"] == "risk"


# --- bad records: reported, never lost -------------------------------------------------------


def test_without_a_default_a_record_naming_no_member_is_reported(make_set: Any) -> None:
    # given: a set without a default, and records it cannot place or decode
    directory = make_set({key: value for key, value in SET_JSON.items() if key != "default"})
    payloads = [
        INCOME,
        {"tenant": "nobody", "text": "love it"},
        RISK,
        {"text": "love it"},
        {"tenant": "income", "age": 40},
        "plain text",
    ]
    event = kinesis_event(payloads)
    sequence = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]

    # when
    run = invoke(event, MODEL_DIR=directory)

    # then: every record is predicted or reported, once, with its reason
    assert [p["sequence_number"] for p in run.response["predictions"]] == [
        sequence[0],
        sequence[2],
    ]
    assert run.failures == [sequence[1], sequence[3], sequence[4], sequence[5]]
    assert [(log["sequence_number"], log["reason"]) for log in run.bad_records[:3]] == [
        (
            sequence[1],
            "record names model 'nobody', not one of the set (reviews, income, risk): send "
            "one of them in field 'tenant', or give the set a \"default\" model",
        ),
        (
            sequence[3],
            "record names no model of the set in field 'tenant' (missing feature 'tenant' "
            "(the record has keys 'text')): send one of (reviews, income, risk) in it, or "
            'give the set a "default" model',
        ),
        (
            sequence[4],
            "model 'income': missing feature 'hours' (the record has keys 'age', 'tenant')",
        ),
    ]
    assert run.bad_records[3]["sequence_number"] == sequence[5]
    reason = run.bad_records[3]["reason"]
    assert reason.startswith(
        "record names no model of the set in field 'tenant' (payload is not valid JSON ("
    )
    assert reason.endswith(
        "; this model reads the name of a model of the set in field 'tenant'): send one of "
        '(reviews, income, risk) in it, or give the set a "default" model'
    )
    assert run.response["counts"] == {
        "received": 6,
        "predicted": 2,
        "skipped": 0,
        "dead_lettered": 0,
        "failed": 4,
    }
    assert (run.batch_log["unrouted"], run.batch_log["defaulted"]) == (3, 0)


def test_bad_records_of_a_set_are_dead_lettered_with_the_set_as_model(make_set: Any) -> None:
    directory = make_set({key: value for key, value in SET_JSON.items() if key != "default"})
    sinks._CLIENTS.clear()
    try:
        with mock_aws():
            queue = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
            run = invoke(
                {"records": [INCOME, {"tenant": "nobody"}]},
                MODEL_DIR=directory,
                DEAD_LETTER_QUEUE_URL=queue,
            )
            (message,) = boto3.client("sqs").receive_message(QueueUrl=queue)["Messages"]
    finally:
        sinks._CLIENTS.clear()
    letter = json.loads(message["Body"])
    assert (letter["record_id"], letter["model"], letter["model_version"]) == ("1", "tenants", 4)
    assert letter["reason"].startswith("record names model 'nobody', not one of the set")
    assert run.response["batchItemFailures"] == []
    assert run.response["counts"]["dead_lettered"] == 1


def test_a_member_that_cannot_load_fails_only_its_records(make_set: Any) -> None:
    directory = make_set()
    (directory / "risk" / "risk.joblib").write_bytes(b"not a pickle")
    event = kinesis_event([INCOME, RISK, REVIEW])
    run = invoke(event, MODEL_DIR=directory)
    assert [p["model"] for p in run.response["predictions"]] == ["income", "reviews"]
    assert run.failures == [event["Records"][1]["kinesis"]["sequenceNumber"]]
    (reason,) = [log["reason"] for log in run.bad_records]
    assert reason.startswith("model 'risk' of the set cannot be loaded: cannot load ")
    (failed,) = [log for log in run.logs if log["message"] == "model load failed"]
    assert (failed["set"], failed["model"]) == ("tenants", "risk")


# --- loading: at init, on first use, within the budget ---------------------------------------


def _init_logs(**env: Any) -> list[dict[str, Any]]:
    """The log lines of the function's init (``_load_at_init``) in this environment."""
    function = import_function()
    out = io.StringIO()
    with function_env(**env), contextlib.redirect_stdout(out):
        function._load_at_init()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_init_logs_the_set_and_loads_only_the_default(make_set: Any) -> None:
    directory = make_set(name="init-default")
    logs = _init_logs(MODEL_DIR=directory, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024")
    assert [log["message"] for log in logs] == ["model set", "model loaded"]
    assert logs[0] == {
        "message": "model set",
        "model": "tenants",
        "model_version": 4,
        "members": list(MEMBERS),
        "field": "tenant",
        "default": "reviews",
        "cache_budget_bytes": 192_000_000,
    }
    loaded = logs[1]
    assert (loaded["set"], loaded["model"], loaded["model_version"]) == ("tenants", "reviews", 1)
    assert loaded["bytes"] == sum(f.stat().st_size for f in (directory / "reviews").iterdir())
    found = model_set.find({"MODEL_DIR": str(directory), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"})
    assert found is not None and found.cached() == ["reviews"]


def test_init_without_a_default_loads_no_member(make_set: Any) -> None:
    directory = make_set({**SET_JSON, "default": None}, name="init-no-default")
    logs = _init_logs(MODEL_DIR=directory, MODEL_CACHE_MB="oops")
    assert [log["message"] for log in logs] == ["model set", "setting ignored"]
    assert logs[1]["error"] == (
        "MODEL_CACHE_MB='oops' is not a number of MB (10^6 bytes) >= 0; using no budget"
    )


@pytest.fixture
def alive_at_load(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many of the models the set loaded before are still in memory as it loads each
    next one (the real load runs)."""
    refs: list[weakref.ref[model_module.Model]] = []
    alive: list[int] = []
    original = model_set.load

    def tracking(directory: Any, **kwargs: Any) -> model_module.Model:
        alive.append(sum(ref() is not None for ref in refs))
        loaded = original(directory, **kwargs)
        refs.append(weakref.ref(loaded))
        return loaded

    monkeypatch.setattr(model_set, "load", tracking)
    return alive


def test_eviction_under_a_tiny_budget(set_dir: Path, alive_at_load: list[int]) -> None:
    # given: a budget no member fits, so each loads alone
    routed = [("reviews", REVIEW), ("income", INCOME), ("risk", RISK), ("income", INCOME)]
    event = kinesis_event([payload for _, payload in routed])
    want = expected(set_dir, routed)

    # the default loads before the first batch (as at init); in a batch, the member still
    # cached is scored first, then each other member loads and evicts the one before it
    loaded_per_batch: list[list[tuple[str, list[str] | None]]] = [
        [("reviews", None), ("income", ["reviews"]), ("risk", ["income"])],
        [("reviews", ["risk"]), ("income", ["reviews"])],
    ]
    for loaded in loaded_per_batch:
        # when
        run = invoke(event, MODEL_DIR=set_dir, MODEL_CACHE_MB="0")

        # then
        line = run.batch_log
        assert (line["loads"], line["evictions"], line["cached"]) == (2, 2, 1)
        assert (line["cache_budget_bytes"], line["cache_bytes"]) == (
            0,
            model_set.member_bytes(set_dir / loaded[-1][0]),
        )
        assert [
            (log["model"], log.get("evicted"))
            for log in run.logs
            if log["message"] == "model loaded"
        ] == loaded
        # and the predictions are still each member's own
        assert answered(run) == want
    # an evicted member is freed before the next one loads (gc is paused during a batch)
    assert alive_at_load == [0] * 5


def test_without_pressure_members_stay_loaded(set_dir: Path) -> None:
    event = kinesis_event([REVIEW, INCOME, RISK])
    first = invoke(event, MODEL_DIR=set_dir, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024")
    second = invoke(event, MODEL_DIR=set_dir, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024")
    # the default loaded before the first batch (as at init), the others on first use
    assert (first.batch_log["loads"], first.batch_log["evictions"]) == (2, 0)
    assert (second.batch_log["loads"], second.batch_log["evictions"]) == (0, 0)
    assert second.batch_log["cached"] == 3
    assert answered(first) == answered(second)


def test_lru_evicts_the_least_recently_used_member(set_dir: Path) -> None:
    spec = read_set(set_dir)
    cost = {name: model_set.member_bytes(set_dir / name) for name in MEMBERS}
    models = ModelSet(spec, budget_bytes=cost["reviews"] + max(cost["income"], cost["risk"]))
    models.get("reviews")
    models.get("income")
    models.get("reviews")  # now income is the least recently used
    _, load = models.get("risk")
    assert load is not None and load.evicted == ("income",)
    assert models.cached() == ["reviews", "risk"]
    assert models.cached_bytes == cost["reviews"] + cost["risk"]
    assert (models.loads, models.evictions) == (3, 1)


def test_a_member_larger_than_the_budget_loads_alone(set_dir: Path) -> None:
    models = ModelSet(read_set(set_dir), budget_bytes=1)
    models.get("income")
    model, load = models.get("reviews")
    assert load is not None and load.evicted == ("income",)
    assert models.cached() == ["reviews"]
    assert model.predict(["love it"]).labels == ["positive"]


@pytest.mark.parametrize(
    ("environ", "budget"),
    [
        pytest.param({}, None, id="outside-lambda"),
        pytest.param({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 192_000_000, id="1024-MB"),
        pytest.param({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}, 0, id="128-MB"),
        pytest.param(
            {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "MODEL_CACHE_MB": "2.5"},
            2_500_000,
            id="MODEL_CACHE_MB-wins",
        ),
    ],
)
def test_cache_budget(environ: dict[str, str], budget: int | None) -> None:
    assert cache_budget(environ) == (budget, None)


def test_cache_budget_ignores_a_negative_setting() -> None:
    assert cache_budget({"MODEL_CACHE_MB": "-5", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}) == (
        64_000_000,
        "MODEL_CACHE_MB='-5' is not a number of MB (10^6 bytes) >= 0; using 64,000,000 bytes",
    )


# --- a malformed set -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_json", "message"),
    [
        pytest.param("{not json", "cannot read ", id="not-json"),
        pytest.param("[1, 2]", "holds list, expected an object like", id="not-an-object"),
        pytest.param(
            {"field": "tenant"}, '"models" must be a non-empty list of member names', id="no-models"
        ),
        pytest.param(
            {**SET_JSON, "models": ["../reviews"]},
            '"models" must be a non-empty list of member names (subdirectories of',
            id="path-as-name",
        ),
        pytest.param(
            {**SET_JSON, "models": ["income", "income"]},
            '"models" lists income more than once',
            id="repeated",
        ),
        pytest.param(
            {**SET_JSON, "models": ["reviews", "fraud"]},
            "\"models\" lists 'fraud' but ",
            id="missing-member",
        ),
        pytest.param(
            {key: value for key, value in SET_JSON.items() if key != "field"},
            '"field" must name the record field that chooses the model',
            id="no-field",
        ),
        pytest.param(
            {**SET_JSON, "default": "fraud"},
            '"default" \'fraud\' is not one of "models" (reviews, income, risk)',
            id="default-not-a-member",
        ),
        pytest.param(
            {**SET_JSON, "version": 0},
            '"version" must be a positive integer',
            id="version-zero",
        ),
    ],
)
def test_malformed_set_json_raises_a_clear_error(
    make_set: Any, set_json: dict[str, Any] | str, message: str
) -> None:
    directory = make_set(set_json)
    with pytest.raises(model_module.ModelLoadError) as caught:
        invoke({"records": [REVIEW]}, MODEL_DIR=directory)
    assert message in str(caught.value)
    assert str(directory / "set.json") in str(caught.value)


def test_a_member_directory_without_a_manifest_is_refused(make_set: Any) -> None:
    directory = make_set()
    (directory / "income" / "manifest.json").unlink()
    with pytest.raises(model_module.ModelLoadError, match=r"has neither manifest\.json nor"):
        read_set(directory)


@pytest.fixture(autouse=True)
def _fresh_sets() -> Iterator[None]:
    """Each test opens its own set (the tmp directories differ; this only frees memory)."""
    yield
    model_set._OPENED.clear()
