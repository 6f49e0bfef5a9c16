"""What a fitted model reads and answers, read from the estimator itself.

Used in two places: ``mlayer build-model`` runs :func:`inspect_handler` in the sandboxed
Lambda environment (the only place where the user's pickles are executed at build time) and
writes the result into the model's manifest; the function calls :func:`infer_input` at load
when a model directory's metadata names no input.

What a fitted scikit-learn estimator tells:

- a first step that is a text vectorizer (Count, Tfidf, Hashing): the input is one text;
- ``feature_names_in_`` (fitted on a pandas DataFrame with string column names): records are
  objects keyed by those names, and the model is given a DataFrame with those columns. A
  column is a string column when the encoder or imputer that reads it learnt string
  categories (``categories_``, ``statistics_``) or a text vectorizer reads it; else numeric;
- only ``n_features_in_``: the input is that many numbers in column order;
- ``classes_``: the labels; ``predict_proba``: a probability for the predicted label.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

TEXT_VECTORIZERS = frozenset({"CountVectorizer", "TfidfVectorizer", "HashingVectorizer"})
NUMBER, STRING = "number", "string"


def _class_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def steps_of(stages: Sequence[Any]) -> list[Any]:
    """The stages with every Pipeline unrolled into its steps (``passthrough`` dropped)."""
    flat: list[Any] = []
    pending = list(stages)
    while pending:
        stage = pending.pop(0)
        if "Pipeline" in _class_names(stage) and hasattr(stage, "steps"):
            pending[:0] = [s for _, s in stage.steps if s is not None and s != "passthrough"]
        else:
            flat.append(stage)
    return flat


def is_text_vectorizer(obj: Any) -> bool:
    return bool(TEXT_VECTORIZERS & _class_names(obj))


def infer_input(stages: Sequence[Any]) -> dict[str, Any]:
    """The input spec (manifest form) the fitted ``stages`` take.

    Returns ``{"kind": "text", "field": None}`` or ``{"kind": "features", "features": [...],
    "types": [...], "dataframe": bool, "named": bool}``.

    Raises:
        ValueError: the model says nothing about its input (no ``n_features_in_``).
    """
    steps = steps_of(stages)
    first = steps[0]
    if is_text_vectorizer(first):
        return {"kind": "text", "field": None}
    names = _feature_names(stages, steps)
    if names is not None:
        types = _column_types(first, names)
        return {
            "kind": "features",
            "features": names,
            "types": types,
            "dataframe": True,
            "named": True,
        }
    count = _n_features(stages, steps)
    if count is None:
        raise ValueError(
            f"{type(first).__name__} records neither feature_names_in_ nor n_features_in_: "
            "name the input with --features a,b,c (numbers) or --input-field F (text)"
        )
    return {
        "kind": "features",
        "features": [f"x{i}" for i in range(count)],
        "types": [NUMBER] * count,
        "dataframe": False,
        "named": False,
    }


def _feature_names(stages: Sequence[Any], steps: Sequence[Any]) -> list[str] | None:
    for candidate in (stages[0], steps[0]):
        names = getattr(candidate, "feature_names_in_", None)
        if names is not None:
            return [str(name) for name in list(names)]
    return None


def _n_features(stages: Sequence[Any], steps: Sequence[Any]) -> int | None:
    for candidate in (stages[0], steps[0], steps[-1]):
        count = getattr(candidate, "n_features_in_", None)
        if isinstance(count, int) and count > 0:
            return count
    return None


def _column_types(first: Any, names: list[str]) -> list[str]:
    """number or string per column, from what the transformers reading it learnt."""
    types = [NUMBER] * len(names)
    for indices, transformer in _column_groups(first, names):
        for position, index in enumerate(indices):
            if _reads_strings(transformer, position):
                types[index] = STRING
    return types


def _column_groups(first: Any, names: list[str]) -> list[tuple[list[int], Any]]:
    """(column indices, transformer) pairs: a ColumnTransformer's, else the step on all."""
    if "ColumnTransformer" not in _class_names(first):
        return [(list(range(len(names))), first)]
    groups: list[tuple[list[int], Any]] = []
    by_name = getattr(first, "named_transformers_", {})
    resolved = getattr(first, "_transformer_to_input_indices", None)
    for name, transformer, columns in getattr(first, "transformers_", []):
        if (name == "remainder" and isinstance(resolved, Mapping) and name in resolved) or (
            isinstance(resolved, Mapping) and name in resolved
        ):
            indices = [int(i) for i in resolved[name]]
        else:
            indices = _indices(columns, names)
        fitted = by_name.get(name, transformer) if hasattr(by_name, "get") else transformer
        if fitted in ("drop", "passthrough") or fitted is None:
            continue
        groups.append((indices, fitted))
    return groups


def _indices(columns: Any, names: list[str]) -> list[int]:
    if isinstance(columns, str):
        return [names.index(columns)] if columns in names else []
    try:
        values = list(columns)
    except TypeError:
        return []
    out: list[int] = []
    for position, value in enumerate(values):
        if isinstance(value, str) and value in names:
            out.append(names.index(value))
        elif isinstance(value, bool):
            if value:
                out.append(position)
        elif isinstance(value, int):
            out.append(value)
    return out


def _reads_strings(transformer: Any, position: int) -> bool:
    """Whether the transformer (or the first step of a Pipeline) learnt strings for a column."""
    for step in steps_of([transformer]):
        if is_text_vectorizer(step):
            return True
        categories = getattr(step, "categories_", None)
        if isinstance(categories, list) and position < len(categories):
            return _holds_strings(categories[position])
        statistics = getattr(step, "statistics_", None)
        if statistics is not None and position < len(statistics):
            value = statistics[position]
            if isinstance(value, str):
                return True
            if getattr(statistics, "dtype", None) is not None and statistics.dtype.kind == "O":
                continue  # a numeric statistic in an object array: look further
            return False
        if getattr(step, "n_features_in_", None) is not None:
            return False  # a numeric transformer (scaler, ...) learnt numbers
    return False


def _holds_strings(values: Any) -> bool:
    kind = getattr(getattr(values, "dtype", None), "kind", None)
    if kind in ("U", "S"):
        return True
    if kind == "O":
        return any(isinstance(value, str) for value in list(values))
    return False


def outputs(final: Any) -> dict[str, Any]:
    """What the final estimator answers: labels, whether it gives probabilities, its task."""
    classes = getattr(final, "classes_", None)
    labels = None
    if classes is not None and not isinstance(classes, list):
        labels = [_json_safe(value) for value in classes.tolist()]
    estimator_type = getattr(final, "_estimator_type", None)
    if estimator_type is None:
        tags = getattr(final, "__sklearn_tags__", None)
        try:
            estimator_type = tags().estimator_type if callable(tags) else None
        except Exception:  # a tag protocol this scikit-learn does not have
            estimator_type = None
    return {
        "labels": labels,
        "probability": callable(getattr(final, "predict_proba", None)),
        "task": str(estimator_type or ("classifier" if labels is not None else "other")),
        "estimator": type(final).__name__,
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def examples(spec: Mapping[str, Any], stages: Sequence[Any], count: int = 3) -> list[Any]:
    """Records the model can score, built from its input spec and what it learnt."""
    if spec["kind"] == "text":
        texts = ["great product, works well", "terrible, broke at once", "ok"][:count]
        field = spec.get("field")
        return [{field: text} for text in texts] if field else [{"text": t} for t in texts]
    names = list(spec["features"])
    types = list(spec.get("types") or [NUMBER] * len(names))
    known = _known_categories(steps_of(stages)[0], names) if spec.get("named") else {}
    records: list[Any] = []
    for row in range(count):
        values: list[Any] = []
        for index, (_name, kind) in enumerate(zip(names, types, strict=True)):
            if kind == STRING:
                choices = known.get(index) or ["a"]
                values.append(choices[row % len(choices)])
            else:
                choices = known.get(index) or [0.0, 1.0, 2.5]
                values.append(float(choices[row % len(choices)]))
        records.append(dict(zip(names, values, strict=True)) if spec.get("named") else values)
    return records


def _known_categories(first: Any, names: list[str]) -> dict[int, list[Any]]:
    known: dict[int, list[Any]] = {}
    for indices, transformer in _column_groups(first, names):
        for step in steps_of([transformer]):
            categories = getattr(step, "categories_", None)
            if isinstance(categories, list):
                for position, index in enumerate(indices):
                    if position < len(categories):
                        values = [
                            v
                            for v in list(categories[position])
                            if v is not None and not (isinstance(v, float) and math.isnan(v))
                        ]
                        if values:
                            known[index] = [_plain(v) for v in values[:3]]
                break
    return known


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


# --- the build's inspection, run in the sandboxed Lambda environment ------------------------


def inspect_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Load the model files named in ``event`` and say what they take and answer.

    Event: ``{"directory": DIR, "stages": [file, ...], "input": spec or None,
    "records": [...] or None, "compress": bool, "trace": bool}``. Returns the inferred ``input``,
    ``outputs``, ``examples``, what predicting ``records`` (or the examples) directly gives
    (``expected``), each stage's class and API, and with ``compress`` the size and load time
    of each file saved again with ``joblib.dump(..., compress=3)``.

    With ``trace`` (the build's deferred-imports trace), every module of the layers is
    deferred before anything is imported; the records are then also scored the function's
    way (``model.Model.predict``), and ``deferred_imports`` lists the modules never run.
    """
    import os
    import tempfile
    import warnings
    from pathlib import Path

    finder = None
    if event.get("trace"):
        import deferred_imports

        finder = deferred_imports.install(None)

    import joblib

    directory = Path(str(event["directory"]))
    names = [str(name) for name in event["stages"]]
    loaded: list[Any] = []
    load_ms: dict[str, float] = {}
    caught: list[str] = []
    for name in names:
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            loaded.append(joblib.load(directory / name))
        caught += [f"{type(w.message).__name__}: {w.message}" for w in seen]
        load_ms[name] = round((time.perf_counter() - started) * 1000, 1)
    steps = steps_of(loaded)
    result: dict[str, Any] = {
        "stages": [
            {
                "file": name,
                "class": type(stage).__module__ + "." + type(stage).__name__,
                "api": [
                    m
                    for m in ("transform", "predict", "predict_proba")
                    if callable(getattr(stage, m, None))
                ],
            }
            for name, stage in zip(names, loaded, strict=True)
        ],
        "steps": [type(step).__name__ for step in steps],
        "load_ms": load_ms,
        "warnings": caught,
    }
    for step in steps[:-1]:
        if not callable(getattr(step, "transform", None)):
            result["error"] = (
                f"{type(step).__name__} has no transform(): every stage but the last must be "
                "a transformer (check the stage order, or --stages)"
            )
            return result
    if not callable(getattr(steps[-1], "predict", None)):
        result["error"] = (
            f"the last stage, {type(steps[-1]).__name__}, has no predict(): the model file must "
            "hold a fitted estimator or a Pipeline ending in one (check --stages)"
        )
        return result
    try:
        inferred = infer_input(loaded)
    except ValueError as exc:
        inferred = None
        result["infer_error"] = str(exc)
    result["inferred"] = inferred
    spec = event.get("input") or inferred
    result["spec"] = spec  # what the examples and the expected predictions were made for
    result["outputs"] = outputs(steps[-1])
    if spec is not None:
        result["examples"] = examples(spec, loaded)
        records = event.get("records") or result["examples"]
        try:
            result["expected"] = predict_directly(loaded, spec, records)
            if finder is not None:
                function_predict(loaded, spec, records)
        except Exception as exc:  # the user's model on the user's records: any error
            result["expected_error"] = f"{type(exc).__name__}: {exc}"
    if finder is not None:
        result["deferred_imports"] = finder.never_ran()
        result["deferred_ran"] = len(finder.ran())
    if event.get("compress"):
        measured = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, stage in zip(names, loaded, strict=True):
                target = os.path.join(tmp, name)
                joblib.dump(stage, target, compress=3)
                started = time.perf_counter()
                joblib.load(target)
                measured[name] = {
                    "bytes": os.path.getsize(target),
                    "load_ms": round((time.perf_counter() - started) * 1000, 1),
                    "original_load_ms": load_ms[name],
                }
        result["compressed"] = measured
    return result


def predict_directly(stages: Sequence[Any], spec: Mapping[str, Any], records: list[Any]) -> Any:
    """The labels the model gives ``records`` called the plain way (the smoke test's reference).

    Records are what a direct invocation carries: texts or objects with the text field,
    objects keyed by feature names, or arrays in column order.
    """
    import numpy as np

    inputs: Any = _inputs(spec, records)
    if spec["kind"] != "text":
        names = list(spec["features"])
        rows = inputs
        if spec.get("dataframe"):
            import pandas as pd

            inputs = pd.DataFrame(rows, columns=names)
            for name, kind in zip(names, spec.get("types") or [], strict=False):
                if kind == NUMBER:
                    inputs[name] = inputs[name].astype("float64")
        else:
            inputs = np.asarray(rows, dtype=np.float64)
    # As the user calls it: each preprocessing stage's transform, then the model's predict.
    *transforms, final = stages
    for stage in transforms:
        inputs = stage.transform(inputs)
    predicted = final.predict(inputs)
    return [_json_safe(value) for value in np.asarray(predicted).tolist()]


def _inputs(spec: Mapping[str, Any], records: list[Any]) -> list[Any]:
    """Texts, or rows in column order, as the function decodes ``records``."""
    if spec["kind"] == "text":
        field = spec.get("field")
        return [
            r
            if isinstance(r, str)
            else (r[field] if field else next(v for v in r.values() if isinstance(v, str)))
            for r in records
        ]
    names = list(spec["features"])
    return [[r[name] for name in names] if isinstance(r, Mapping) else list(r) for r in records]


def function_predict(stages: list[Any], spec: Mapping[str, Any], records: list[Any]) -> Any:
    """Score ``records`` through ``model.Model.predict``, the function's own path (labels,
    probabilities and all): what the trace must see the function use."""
    from pathlib import Path

    import model

    where = Path("manifest.json")
    transforms, final = model._unroll(list(stages), where)
    loaded = model.Model(
        name="trace",
        version=0,
        input=model._input_spec(spec, where, None),
        directory=where,
        transforms=transforms,
        final=final,
        labels=None,
        load_ms=0.0,
    )
    return loaded.predict(_inputs(spec, records))
