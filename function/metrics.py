"""The ``batch`` line's CloudWatch Embedded Metric Format members (docs/CONTRACTS.md, "Metrics").

CloudWatch Logs reads a log line holding ``_aws`` as an EMF record: each metric its
directives name is the root member of that name, each dimension the root member of that
name (a string). So the batch line becomes metrics without an API call and without a
dependency: :func:`batch_members` returns the members to add to it.

Pure and cheap (measured with bench/handler_throughput.py, ``metrics`` column): one
``Counter`` over the labels (Python values, no numpy), a few sums, and a sanitised name per
distinct label.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "mlayer"
LABEL_METRICS = 20  # label:<label> metrics per line at most; the rest in label:(other)
OTHER = "(other)"
NAME_CHARS = 200  # of a label in a metric name (CloudWatch allows 255 for the whole name)
DIMENSION_CHARS = 1024  # CloudWatch's limit on a dimension value
LIVE_DIMENSIONS = ["function", "model_version"]
SHADOW_DIMENSIONS = ["function", "model_version", "shadow_version"]

# Up to this many distinct labels, each is counted with list.count (see label_counts).
_FEW = 8
_COUNT = "Count"
_MS = "Milliseconds"
_NONE = "None"
# The first directive's fixed metrics, in the line's order; the label and confidence or
# score metrics follow them.
_LIVE_FIXED = (
    ("records", _COUNT),
    ("predictions", _COUNT),
    ("bad_records", _COUNT),
    ("sink_failures", _COUNT),
    ("decode_ms", _MS),
    ("predict_ms", _MS),
    ("write_ms", _MS),
)
_LIVE_FIXED_METRICS = [{"Name": name, "Unit": unit} for name, unit in _LIVE_FIXED]
_UNITS = {
    "confidence_mean": _NONE,
    "score_mean": _NONE,
    "score_stddev": _NONE,
    "shadow_records": _COUNT,
    "shadow_predict_ms": _MS,
    "shadow_failures": _COUNT,
    "shadow_agreed": _COUNT,
    "shadow_agreement": _NONE,
    "shadow_abs_diff": _NONE,
}
# A warm environment sees the same few labels and versions batch after batch: their metric
# names, dimension values and metric entries are made once (entries are never mutated; the
# line's JSON only reads them). Bounded, for models with endless distinct outputs.
_NAMES_KEPT = 4096
_NAMES: dict[tuple[type, Any], str] = {}
_DIMENSIONS: dict[tuple[type, Any], str] = {}
# (prefix, a batch's few distinct labels) -> (metric name, the labels it counts)
_PLANS: dict[tuple[str, frozenset[Any]], tuple[tuple[str, tuple[Any, ...]], ...]] = {}
# (metric names besides the fixed ones, the shadow directive's) -> CloudWatchMetrics
_DIRECTIVES: dict[tuple[tuple[str, ...], tuple[str, ...] | None], list[dict[str, Any]]] = {}


@dataclass
class ShadowFigures:
    """What the shadow directive reports for a batch (see shadow.py, which fills it)."""

    version: str
    records: int = 0
    predict_ms: float = 0.0
    failures: int = 0
    agreement: float | None = None
    agreed: int | None = None  # records whose labels agree: weighs agreement by records
    abs_diff: float | None = None
    labels: list[Any] = field(default_factory=list)


def add_members(
    line: dict[str, Any],
    *,
    function: str,
    model_version: str,
    records: int,
    predictions: int,
    bad_records: int,
    sink_failures: int,
    labels: Sequence[Any],
    probabilities: Sequence[float | None],
    scores: Sequence[Any] | None = None,
    shadow: ShadowFigures | None = None,
) -> None:
    """Add the EMF members of one batch to its ``line``: ``_aws``, the dimensions, and every
    metric. The line already holds ``decode_ms``, ``predict_ms`` and ``write_ms``: the
    directive names them.

    Args:
        function: the ``function`` dimension (the Lambda function's name, else the model's).
        model_version: the ``model_version`` dimension.
        labels: every prediction's label, counted as ``label:<label>``.
        probabilities: every prediction's probability (None without one): their mean is
            ``confidence_mean``.
        scores: a regressor's outputs (finite floats), instead of labels: ``score_mean``,
            ``score_stddev``. ``labels`` then holds what is not a score (a non-finite output,
            written as a string) or is empty.
        shadow: the shadow's figures when a shadow scored (or failed on) the batch.
    """
    members = line
    members["function"] = dimension(function)
    members["model_version"] = dimension(model_version)
    members["records"] = records
    members["predictions"] = predictions
    members["bad_records"] = bad_records
    members["sink_failures"] = sink_failures
    # Metrics besides the fixed ones, by name: a warm environment meets the same few sets of
    # names batch after batch, so the directives naming them are built once (``_directives``).
    names: list[str] = []
    for name, count in label_counts(labels, "label:"):
        members[name] = count
        names.append(name)
    # count(None) and sum() run in C: a third of the time of filtering the list first.
    unknown = probabilities.count(None)
    if unknown < len(probabilities):
        confident = probabilities if not unknown else [p for p in probabilities if p is not None]
        mean = sum(confident) / len(confident)  # type: ignore[arg-type]
        if math.isfinite(mean):
            members["confidence_mean"] = mean
            names.append("confidence_mean")
    if scores:
        mean = math.fsum(scores) / len(scores)
        # d * d, not d ** 2: float power raises OverflowError where a product is inf
        spread = math.sqrt(math.fsum((s - mean) * (s - mean) for s in scores) / len(scores))
        for name, value in (("score_mean", mean), ("score_stddev", spread)):
            if math.isfinite(value):  # outputs near the float limit can overflow
                members[name] = value
                names.append(name)
    key = (tuple(names), None if shadow is None else _shadow_members(members, shadow))
    directives = _DIRECTIVES.get(key)
    if directives is None:
        directives = _directives(*key)
        if len(_DIRECTIVES) < _NAMES_KEPT:
            _DIRECTIVES[key] = directives
    members["_aws"] = {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": directives}


def batch_members(*, timings: Mapping[str, float], **batch: Any) -> dict[str, Any]:
    """The members :func:`add_members` adds to a line (with ``timings``: ``decode_ms``,
    ``predict_ms``, ``write_ms``, which the line already holds), as a dict of their own."""
    members: dict[str, Any] = {
        name: timings[name] for name in ("decode_ms", "predict_ms", "write_ms")
    }
    add_members(members, **batch)
    return members


def _shadow_members(members: dict[str, Any], shadow: ShadowFigures) -> tuple[str, ...]:
    """Add the shadow directive's members; return its metrics' names, in order."""
    members["shadow_version"] = dimension(shadow.version)
    members["shadow_records"] = shadow.records
    members["shadow_predict_ms"] = shadow.predict_ms
    members["shadow_failures"] = shadow.failures
    names = ["shadow_records", "shadow_predict_ms", "shadow_failures"]
    if shadow.agreed is not None:
        members["shadow_agreed"] = shadow.agreed
        names.append("shadow_agreed")
    for name, value in (
        ("shadow_agreement", shadow.agreement),
        ("shadow_abs_diff", shadow.abs_diff),
    ):
        if value is not None and math.isfinite(value):
            members[name] = value
            names.append(name)
    for name, count in label_counts(shadow.labels, "shadow_label:"):
        members[name] = count
        names.append(name)
    return tuple(names)


def _directives(live: tuple[str, ...], shadow: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The ``CloudWatchMetrics`` of a line whose metrics besides the fixed ones are ``live``
    (and, with a shadow, whose shadow directive names ``shadow``)."""
    directives: list[dict[str, Any]] = [
        {
            "Namespace": NAMESPACE,
            "Dimensions": [LIVE_DIMENSIONS],
            "Metrics": [*_LIVE_FIXED_METRICS, *({"Name": n, "Unit": _unit(n)} for n in live)],
        }
    ]
    if shadow is not None:
        directives.append(
            {
                "Namespace": NAMESPACE,
                "Dimensions": [SHADOW_DIMENSIONS],
                "Metrics": [{"Name": n, "Unit": _unit(n)} for n in shadow],
            }
        )
    return directives


def _unit(name: str) -> str:
    if name.startswith(("label:", "shadow_label:")):
        return _COUNT
    return _UNITS[name]


def label_counts(labels: Sequence[Any], prefix: str) -> list[tuple[str, int]]:
    """``(prefix + label name, count)`` for the LABEL_METRICS most frequent labels (ties by
    name), then ``(prefix + "(other)", the rest)`` when there are more.

    Labels whose names come out equal once sanitised (``"é"`` and ``"è"`` are both ``"?"``)
    are one metric: a line cannot hold a member twice.
    """
    if not labels:
        return []
    try:
        distinct = frozenset(labels)
    except TypeError:  # an unhashable label (metadata.json may name classes with lists)
        labels = [label_name(label) for label in labels]
        distinct = frozenset(labels)
    if len(distinct) <= _FEW:
        # A classifier's few labels, the same batch after batch: which metric counts which
        # labels is worked out once (``_plan``); list.count per label runs in C, about three
        # times as fast as a Counter over 100 predictions.
        plan = _PLANS.get((prefix, distinct))
        if plan is None:
            plan = _plan(prefix, distinct)
        return [
            (name, labels.count(group[0]) if len(group) == 1 else sum(map(labels.count, group)))
            for name, group in plan
        ]
    counted = Counter(labels)
    names: dict[str, int] = {}
    for label, count in counted.items():
        name = label_name(label)
        names[name] = names.get(name, 0) + count
    if len(names) <= LABEL_METRICS:
        # All kept: in name order, so that batches with the same labels name the same
        # metrics in the same order (one cached directive, see batch_members).
        return [(prefix + name, count) for name, count in sorted(names.items())]
    ranked = sorted(names.items(), key=_rank)
    kept = [(prefix + name, count) for name, count in ranked[:LABEL_METRICS]]
    if len(ranked) > LABEL_METRICS:
        other = prefix + OTHER
        rest = sum(count for _, count in ranked[LABEL_METRICS:])
        # A label that is itself "(other)" is among the kept: the rest join it.
        for position, (name, count) in enumerate(kept):
            if name == other:
                kept[position] = (name, count + rest)
                break
        else:
            kept.append((other, rest))
    return kept


def _plan(prefix: str, distinct: frozenset[Any]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(metric name, the labels it counts) for a batch of these few labels, in name order
    (labels whose names sanitise alike share a metric)."""
    groups: dict[str, list[Any]] = {}
    for label in distinct:
        groups.setdefault(prefix + label_name(label), []).append(label)
    plan = tuple((name, tuple(group)) for name, group in sorted(groups.items()))
    if len(_PLANS) < _NAMES_KEPT:
        _PLANS[(prefix, distinct)] = plan
    return plan


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def label_name(label: Any) -> str:
    """``str(label)`` with every character outside printable ASCII replaced by ``?``, cut to
    NAME_CHARS characters: CloudWatch metric names are ASCII."""
    return _cached(_NAMES, label, _label_name)


def _label_name(label: Any) -> str:
    return _printable(label)[:NAME_CHARS]


def _printable(value: Any) -> str:
    """``str(value)`` with every character outside printable ASCII replaced by ``?``."""
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and text.isprintable()):
        text = "".join(char if " " <= char <= "~" else "?" for char in text)
    return text


def dimension(value: Any) -> str:
    """A dimension value as CloudWatch takes it: a string of printable ASCII (others ``?``), at
    most DIMENSION_CHARS long, not blank (``"-"`` stands for a blank one)."""
    return _cached(_DIMENSIONS, value, _dimension)


def _cached(cache: dict[tuple[type, Any], str], value: Any, make: Callable[[Any], str]) -> str:
    """``make(value)``, kept in ``cache`` (up to _NAMES_KEPT values). Keyed by type too: 1,
    1.0 and True are equal keys but different names."""
    key = (value.__class__, value)
    try:
        return cache[key]
    except KeyError:
        text = make(value)
        if len(cache) < _NAMES_KEPT:
            cache[key] = text
        return text
    except TypeError:  # unhashable
        return make(value)


def _dimension(value: Any) -> str:
    text = _printable(value)[:DIMENSION_CHARS]
    return text if text.strip() else "-"
