"""A shadow model: scored beside the live model on every batch, written nowhere.

The contract is docs/CONTRACTS.md, "Shadow scoring". The shadow is the model in
``SHADOW_URI`` (the model store's archive format, fetched at init like ``MODEL_URI`` by
``model.fetched_directory``; it wins) or in ``SHADOW_DIR`` (default ``/opt/shadow``, the
shadow layer's directory, used only when it exists). It loads once per environment, after the
live model; a shadow that cannot load, or that raises while predicting, is dropped for the
environment and never tried again. The live model never depends on it.

Environment:
    SHADOW_URI     the shadow's archive in the model store (wins over SHADOW_DIR)
    SHADOW_DIR     the shadow's model directory (default /opt/shadow, only when it exists;
                   a directory given explicitly that does not exist drops the shadow)
    SHADOW_OUTPUT  1: each prediction written carries ``"shadow": {"label", "probability",
                   "model_version"}``
    INPUT_FIELD    applies to the shadow too when it reads the same kind of input (text or
                   features) as the live model: it says where that input lives in the records
    MODEL_MMAP     as for the live model

:func:`find` gives the environment's :class:`State`; :func:`score` scores a batch the live
model predicted. Neither prints: lambda_function logs what they report.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import model_set
from metrics import ShadowFigures
from model import MMAP_SETTINGS, Model, ModelLoadError, Predictions, fetched_directory, load
from records import Batch, decode_records

DEFAULT_SHADOW_DIR = "/opt/shadow"
# Relative tolerance within which two regression outputs agree.
AGREEMENT_TOLERANCE = 1e-6
# A shadow starts only when the invocation has this much time left beyond twice the live
# model's predict time (the shadow's likely cost): a shadow must never make the invocation
# time out, which would make Lambda retry a batch whose outputs are already written.
RESERVE_MS = 1000
SETTINGS = ("SHADOW_URI", "SHADOW_DIR", "SHADOW_OUTPUT")


@dataclass
class State:
    """The environment's shadow: loaded (``model``), or dropped (``error``: why)."""

    source: str  # SHADOW_URI's value or the directory
    model: Model | None = None
    error: str | None = None
    output: bool = False
    # The shadow's probability column of each label (None: it has no probabilities).
    columns: dict[Any, int] | None = None


@dataclass
class Scoring:
    """One batch scored by the shadow.

    ``positions`` are the live predictions (their positions in the batch) the shadow
    scored, ``labels`` and ``probabilities`` its answers for them, aligned.
    """

    model: str
    figures: ShadowFigures
    positions: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    decode_ms: float | None = None
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        """The batch line's ``shadow`` member."""
        described: dict[str, Any] = {
            "model": self.model,
            "model_version": self.figures.version,
            "records": self.figures.records,
            "agreement": self.figures.agreement,
            "abs_diff": self.figures.abs_diff,
            "predict_ms": self.figures.predict_ms,
        }
        if self.decode_ms is not None:
            described["decode_ms"] = self.decode_ms
        if self.error is not None:
            described["error"] = self.error
        return described


_STATES: dict[tuple[Any, ...], State | None] = {}


def find(environ: Mapping[str, str], live: Model) -> State | None:
    """The environment's shadow, loaded at the first call and kept (None: none configured).

    A load failure is kept too (``State.error``): it is not retried.
    """
    key = (
        environ.get("SHADOW_URI") or None,
        environ.get("SHADOW_DIR") or None,
        environ.get("SHADOW_OUTPUT") or None,
        environ.get("INPUT_FIELD") or None,
        environ.get("MODEL_MMAP") or None,
        live.input.kind,
    )
    try:
        return _STATES[key]
    except KeyError:
        pass
    state = _load(environ, live)
    _STATES.clear()
    _STATES[key] = state
    return state


def _load(environ: Mapping[str, str], live: Model) -> State | None:
    uri = environ.get("SHADOW_URI") or None
    given = environ.get("SHADOW_DIR") or None
    if uri is None and given is None and not os.path.isdir(DEFAULT_SHADOW_DIR):
        return None
    state = State(source=uri or given or DEFAULT_SHADOW_DIR)
    state.output = (environ.get("SHADOW_OUTPUT") or "").strip() == "1"
    mmap = MMAP_SETTINGS.get((environ.get("MODEL_MMAP") or "").strip())
    try:
        if uri is not None:
            directory, figures = fetched_directory(uri)
        else:
            directory, figures = Path(state.source), None
            if not directory.is_dir():
                raise ModelLoadError(
                    f"SHADOW_DIR {state.source} is not a directory: attach the shadow layer "
                    "(it unpacks to /opt/shadow) or unset SHADOW_DIR"
                )
        if model_set.is_set(directory):
            raise ModelLoadError(f"{directory} holds a model set: a shadow is a single model")
        shadow = load(directory, mmap=mmap)
        shadow.store = figures
        input_field = environ.get("INPUT_FIELD") or None
        if input_field and shadow.input.kind == live.input.kind:
            shadow.input = replace(shadow.input, field=input_field)
        labels = shadow.class_labels
        if labels is not None and hasattr(shadow.final, "predict_proba"):
            state.columns = {label: column for column, label in enumerate(labels)}
    except Exception as exc:  # unpickling and fetching can raise anything: the live model goes on
        state.error = _describe(exc)
        return state
    state.model = shadow
    return state


def ignored_for_set(environ: Mapping[str, str]) -> str | None:
    """Why the SHADOW_* settings (or the shadow layer) do nothing here, for a model set."""
    given = [name for name in SETTINGS if environ.get(name)]
    if not given and os.path.isdir(DEFAULT_SHADOW_DIR):
        given = [DEFAULT_SHADOW_DIR]
    if not given:
        return None
    return f"{', '.join(given)} ignored: a model set has no shadow"


def drop(state: State, error: str) -> None:
    """Drop the shadow for the environment (it raised)."""
    state.model = None
    state.error = error


def time_left_ms(context: Any) -> float | None:
    """The invocation's remaining time, or None without a deadline (a direct call)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return None if remaining is None else float(remaining())


def too_late(context: Any, live_predict_ms: float) -> str | None:
    """Why the shadow must not run now, or None (see RESERVE_MS)."""
    left = time_left_ms(context)
    if left is None or left - 2 * live_predict_ms >= RESERVE_MS:
        return None
    return f"skipped: {left:.0f} ms left in the invocation"


def skipped(state: State, reason: str) -> dict[str, Any]:
    """The batch line's ``shadow`` member when the shadow did not run (see :func:`too_late`)."""
    shadow = state.model
    return {
        "model": None if shadow is None else shadow.name,
        "model_version": None if shadow is None else str(shadow.version),
        "skipped": reason,
    }


def score(
    state: State,
    batch: Batch,
    live: Model,
    predicted: Predictions,
) -> Scoring:
    """Score the records ``live`` predicted with the shadow and compare the answers.

    The shadow reads the batch's decoded inputs when its input is the live model's, else
    decodes those records again with its own (records it cannot read are left out). An
    exception (a bug, a model that fails on these inputs) is returned in ``error``, the
    figures saying ``failures`` 1; the caller drops the shadow.
    """
    shadow = state.model
    assert shadow is not None
    figures = ShadowFigures(version=str(shadow.version))
    scoring = Scoring(shadow.name, figures)
    started = time.perf_counter()
    try:
        if shadow.input == live.input:
            positions: Sequence[int] = range(len(batch.inputs))
            inputs = batch.inputs
        else:
            part = decode_records(
                batch.source, [batch.raw_records[i] for i in batch.indexes], shadow.input,
                batch.indexes,
            )  # fmt: skip
            where = {index: position for position, index in enumerate(batch.indexes)}
            positions = [where[index] for index in part.indexes]
            inputs = part.inputs
            scoring.decode_ms = _ms(started)
        begun = time.perf_counter()
        answer = shadow.predict(inputs)
        figures.predict_ms = _ms(begun)
        scoring.positions = list(positions)
        scoring.labels = answer.labels
        scoring.probabilities = answer.probabilities
        figures.records = len(scoring.positions)
        _compare(scoring, state, live, predicted, answer)
    except Exception as exc:  # whatever the shadow does, the live batch goes on
        failed = ShadowFigures(figures.version, predict_ms=_ms(started), failures=1)
        return Scoring(shadow.name, failed, error=_describe(exc))
    return scoring


def _compare(
    scoring: Scoring, state: State, live: Model, predicted: Predictions, answer: Predictions
) -> None:
    """Fill agreement, abs_diff and the shadow's label counts."""
    figures = scoring.figures
    shadow = state.model
    assert shadow is not None
    live_labels = predicted.labels
    positions = scoring.positions
    regression = live.regressor and shadow.regressor
    figures.labels = (
        [label for label in answer.labels if type(label) is not float]
        if shadow.regressor
        else answer.labels
    )
    if not positions:
        return
    agreed = 0
    differences: list[float] = []
    if regression:
        for position, theirs in zip(positions, answer.labels, strict=True):
            ours = live_labels[position]
            if type(ours) is float and type(theirs) is float:
                agreed += math.isclose(ours, theirs, rel_tol=AGREEMENT_TOLERANCE)
                differences.append(abs(ours - theirs))
            else:
                agreed += ours == theirs
    else:
        agreed = sum(
            live_labels[p] == theirs for p, theirs in zip(positions, answer.labels, strict=True)
        )
        differences = _probability_differences(scoring, state, predicted, answer)
    figures.agreed = int(agreed)
    figures.agreement = agreed / len(positions)
    if differences:
        figures.abs_diff = math.fsum(differences) / len(differences)


def _probability_differences(
    scoring: Scoring, state: State, predicted: Predictions, answer: Predictions
) -> list[float]:
    """|p_live - p_shadow| of the live label's probability, per record both give one."""
    columns = state.columns
    table = answer.table
    if columns is None or table is None:
        return []
    differences = []
    live_labels = predicted.labels
    live_probabilities = predicted.probabilities
    for row, position in enumerate(scoring.positions):
        ours = live_probabilities[position]
        if ours is None:
            continue
        try:
            column = columns.get(live_labels[position])
        except TypeError:  # an unhashable label (a list from metadata.json): no comparison
            column = None
        # A label the shadow does not know has probability 0 for it.
        theirs = 0.0 if column is None else float(table[row, column])
        differences.append(abs(ours - theirs))
    return differences


def attach(scoring: Scoring, predictions: list[dict[str, Any]]) -> None:
    """SHADOW_OUTPUT=1: each prediction the shadow scored carries its answer."""
    version = scoring.figures.version
    for position, label, probability in zip(
        scoring.positions, scoring.labels, scoring.probabilities, strict=True
    ):
        predictions[position]["shadow"] = {
            "label": label,
            "probability": probability,
            "model_version": version,
        }


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ModelLoadError):
        return text  # says what is wrong and what to do
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
