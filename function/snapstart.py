"""SnapStart's runtime hooks: what runs before Lambda snapshots a version, and after an
environment resumes from the snapshot (docs/CONTRACTS.md, "SnapStart").

:func:`register` registers them with ``snapshot_restore_py``, which Lambda's python3.12+
runtimes ship; where it does not import (older runtimes, tests, scripts) nothing is
registered and nothing fails. Lambda runs them only for versions published with SnapStart
on; awslambdaric runs before-snapshot hooks in reverse order of registration and
after-restore hooks in order.

Before the snapshot (once per published version, after the module's own init): the model
(or the set and its default member) and the shadow are loaded, and the manifest's
``examples`` (the records the smoke test scored) go through the decode, predict, shadow
scoring and metrics the handler uses, writing and logging nothing of them, so that every
import and lazily built cache is in the snapshot. One line says it:
``{"message": "snapshot ready", "model_version", "warmed", "ms"}``. A model that cannot load
raises here: Lambda then fails the version instead of snapshotting an environment that
cannot score (mlayer's rollout stops before moving the alias).

After restore (in every environment resumed from it, before its first invocation): ``random``
and numpy's legacy global generator (when numpy is imported) are re-seeded from the OS, so
environments restored from one snapshot draw differently; cached AWS clients and boto3's
default session are dropped, so they are created afresh (credentials, connections); the next
invocation logs ``cold_start: true``, as the environment's first. One line says it:
``{"message": "restored", "reseeded", "clients_dropped", "ms"}``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import metrics
import model_set
import shadow
from model import Model
from model_set import ModelSet
from records import Batch, decode_event
from safe_json import dumps

Log = Callable[[dict[str, Any]], None]
Served = Callable[[], Model | ModelSet]


def register(served: Served, restored: Callable[[], None], log: Log) -> bool:
    """Register the hooks when ``snapshot_restore_py`` imports; True when it did.

    ``served`` gives the environment's model or set, loaded (and its loading logged) once,
    as the handler finds it; ``restored`` marks the next invocation as the environment's
    first; ``log`` writes one JSON line.
    """
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, served, log)
    register_after_restore(after_restore, restored, log)
    return True


def before_snapshot(served: Served, log: Log) -> int:
    """Load what the handler serves and warm its predict path; returns the records warmed.

    Raises:
        ModelLoadError: the model cannot be loaded (Lambda fails the version).
    """
    started = time.perf_counter()
    owner = served()
    warmed = warm(owner, log)
    log(
        {
            "message": "snapshot ready",
            "model_version": owner.version,
            "warmed": warmed,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
    )
    return warmed


def after_restore(restored: Callable[[], None], log: Log) -> None:
    """Re-seed, drop cached clients, and make the next invocation the environment's first."""
    started = time.perf_counter()
    reseeded = reseed()
    dropped = drop_clients()
    restored()
    log(
        {
            "message": "restored",
            "reseeded": reseeded,
            "clients_dropped": dropped,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
    )


def reseed() -> list[str]:
    """Seed ``random`` and, when numpy is imported, its legacy global RandomState from the
    OS's entropy (every environment restored from one snapshot holds the same state)."""
    random.seed()
    reseeded = ["random"]
    numpy: Any = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
        reseeded.append("numpy.random")
    return reseeded


def drop_clients() -> int:
    """Forget every cached AWS client and boto3's default session (which keeps the
    credentials it resolved): the next use creates them afresh. Returns how many clients
    were dropped.

    sinks keeps its clients; model_store creates one per fetch and keeps none; boto3's
    module-level ``client()`` goes through its default session.
    """
    dropped = 0
    sinks: Any = sys.modules.get("sinks")
    if sinks is not None:
        dropped = len(sinks._CLIENTS)
        sinks._CLIENTS.clear()
    boto3: Any = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None
    return dropped


def examples(directory: Path) -> list[Any]:
    """The manifest's ``examples`` in a model (or set) directory; [] when there are none."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    found = manifest.get("examples") if isinstance(manifest, Mapping) else None
    return list(found) if isinstance(found, list) else []


def warm(owner: Model | ModelSet, log: Log) -> int:
    """Score the manifest's examples as the handler would, writing and logging nothing;
    returns how many records were predicted. A shadow that fails on them is dropped, and
    the drop logged, as the handler does.

    A set scores only the examples of the members already loaded (its default): loading
    the others here would overrun the cache budget the set keeps.
    """
    if isinstance(owner, ModelSet):
        return _warm_set(owner)
    return _warm_model(owner, log)


def _warm_model(model: Model, log: Log) -> int:
    records = examples(model.directory)
    if not records:
        return 0
    batch = decode_event({"records": records}, model.input)
    predicted = model.predict(batch.inputs)
    figures = None
    state = shadow.find(os.environ, model)
    if state is not None and state.model is not None:
        scoring = shadow.score(state, batch, model, predicted)
        figures = scoring.figures
        if scoring.error is not None:
            log({"message": "shadow dropped", "shadow": state.source, "error": scoring.error})
            shadow.drop(state, scoring.error)
    _warm_line(batch, model.name, model.version, predicted.labels, predicted.probabilities,
               model.regressor, figures)  # fmt: skip
    return len(batch.inputs)


def _warm_set(models: ModelSet) -> int:
    loaded = set(models.cached())
    chosen = []
    for record in examples(models.spec.directory):
        named = record.get(models.field) if isinstance(record, Mapping) else None
        member = named if isinstance(named, str) and named in models else models.default
        if member in loaded:
            chosen.append(record)
    if not chosen:
        return 0
    scored = model_set.score({"records": chosen}, models)
    _warm_line(scored.batch, models.name, models.version, scored.labels, scored.probabilities,
               bool(scored.regressors), None)  # fmt: skip
    return len(scored.labels)


def _warm_line(
    batch: Batch,
    name: str,
    version: int | str,
    labels: Sequence[Any],
    probabilities: Sequence[float | None],
    regressor: bool,
    figures: metrics.ShadowFigures | None,
) -> None:
    """Build (and serialise, then drop) a batch line as the handler does: the metrics'
    caches and the JSON encoder are warmed, nothing is written."""
    line: dict[str, Any] = {"message": "batch", "decode_ms": 0.0, "predict_ms": 0.0}
    line["write_ms"] = 0.0
    scores = [label for label in labels if type(label) is float] if regressor else []
    metrics.add_members(
        line,
        function=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or name,
        model_version=str(version),
        records=batch.received,
        predictions=len(labels),
        bad_records=0,
        sink_failures=0,
        labels=[label for label in labels if type(label) is not float] if regressor else labels,
        probabilities=probabilities,
        scores=scores,
        shadow=figures,
    )
    dumps(line)
