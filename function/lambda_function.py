"""The stream-scoring Lambda function: decode, predict, write, respond.

Handler: ``lambda_function.lambda_handler``. Triggers: Kinesis Data Streams (JSON objects,
plain UTF-8 text, or Kinesis Data Streams for DynamoDB change records), DynamoDB Streams,
and a direct invocation ``{"records": [payload, ...]}`` for manual tests.

Environment:
    MODEL_DIR              the model directory (default /opt/model, the model layer)
    MODEL_URI              the model's archive in the model store,
                           s3://<bucket>/<key>#sha256=<hex64>&size=<bytes>: fetched at init
                           into <tempdir>/mlayer-model/<sha256>/ (wins over MODEL_DIR)
    MODEL_MMAP             how uncompressed joblib files load: memory-mapped when of 32 MiB
                           or more (unset), always (1) or never (0)
    INPUT_FIELD            overrides the field the model reads (from the model's metadata)
    MODEL_VERSION          the version reported when the model directory has no manifest
    MODEL_FIELD            a model set's record field naming the model (overrides set.json)
    MODEL_CACHE_MB         a model set's cache budget, MB of model files (see model_set.py)
    OUTPUT_TABLE           DynamoDB table (partition key ``record_id``, S) for predictions
    OUTPUT_STREAM          Kinesis stream (name or ARN) for predictions
    DEAD_LETTER_QUEUE_URL  SQS queue for bad records (else they are reported as failures)
    DEAD_LETTER_BUCKET     S3 bucket keeping whole the bad records whose message is too large
                           for the queue (the queue gets a pointer and the reason)
    DEAD_LETTER_MAX_BYTES  the queue's MaximumMessageSize (default 262,144)
    SHADOW_URI             a shadow model's archive in the model store (format of MODEL_URI):
                           scored beside the live model on every batch, written nowhere
                           (wins over SHADOW_DIR); see shadow.py
    SHADOW_DIR             a shadow model's directory (default /opt/shadow, the shadow layer,
                           used only when it exists)
    DEFERRED_IMPORTS       0: run every module at import, even those the model's manifest lists
                           in ``deferred_imports`` (see deferred_imports.py)
    SHADOW_OUTPUT          1: each prediction written carries the shadow's answer,
                           "shadow": {"label", "probability", "model_version"}
    AWS_LAMBDA_FUNCTION_NAME  (set by Lambda) the metrics' ``function`` dimension; the
                           model's name when unset

The response is ``{"batchItemFailures": [{"itemIdentifier": ...}], "predictions": [...],
"counts": {...}}``: with ``FunctionResponseTypes=["ReportBatchItemFailures"]`` on the event
source mapping, Lambda retries from the first failed record instead of the whole batch.
Every record is predicted, skipped (DynamoDB REMOVE, no NewImage), dead-lettered, or
reported in batchItemFailures: none is dropped, none fails the batch. Skipped records are
counted once per batch by why, ``"skipped_reasons": {"REMOVE": n, "KEYS_ONLY": n, ...}`` in
the batch line (the stream view type when a change has no new image). Sink calls are bounded
by the invocation's remaining time (``context.get_remaining_time_in_millis()``); what does
not fit is reported, with every record behind it (see ``_deliver``).

A model directory holding ``set.json`` is a model set: each record is scored by the model
it names (``model_set.py`` has the contract); a prediction's ``model`` is then that member.
A set has no shadow (the SHADOW_* settings are ignored, logged once as ``setting ignored``).

Each batch logs one ``batch`` line, which is also a CloudWatch Embedded Metric Format record
(``metrics.py``; docs/CONTRACTS.md, "Metrics"): CloudWatch Logs turns its counts, timings,
label counts and the shadow's agreement into metrics in namespace ``mlayer``, dimensions
``function`` and ``model_version`` (plus ``shadow_version``), with no API call.

Only the standard library, the dependency layer (scikit-learn, numpy, joblib, orjson) and,
when MODEL_URI, a sink or the dead-letter queue is configured, boto3 are imported.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import TYPE_CHECKING, Any, NamedTuple

import deferred_imports
import metrics
import model_set
import shadow
import snapstart
from model import Model, ModelLoadError, Predictions, get_model
from model_set import ModelSet
from records import Batch, decode_event
from safe_json import dumps

# Before any library of the layers (numpy, scikit-learn) is imported: the modules the model's
# manifest lists as never used are imported without running (deferred_imports.py).
deferred_imports.install_for(os.environ)

if TYPE_CHECKING:  # sinks is imported only when a sink is configured (it is not free)
    from sinks import Deadline

_cold_start = True
_announced: Model | None = None
_announced_set: ModelSet | None = None
_announced_shadow: shadow.State | None = None


def _log(entry: dict[str, Any]) -> None:
    # One JSON object per line on stdout: CloudWatch Logs Insights parses the fields.
    # Flushed so each line reaches the log stream with its invocation.
    # safe_json: a bad record's id or reason (a lone surrogate, a huge integer) must not
    # make the log line, and so the invocation, fail.
    stdout = sys.stdout
    stdout.write(dumps(entry) + "\n")
    stdout.flush()


def _model() -> Model:
    """The environment's model; its first use (the init phase, normally) logs how it loaded."""
    global _announced
    model = get_model(os.environ)
    if model is not _announced:
        _announced = model
        entry: dict[str, Any] = {
            "message": "model loaded",
            "model": model.name,
            "model_version": model.version,
            "input": model.input.describe(),
            "load_ms": model.load_ms,
        }
        if model.warnings:
            entry["warnings"] = model.warnings
        if model.version_drift:
            entry["version_drift"] = model.version_drift
        if model.store is not None:
            entry["store"] = model.store
        _log(entry)
    return model


def _shadow(live: Model) -> shadow.State | None:
    """The environment's shadow when one is loaded; its first use (the init, normally) logs
    how it loaded, or that it was dropped."""
    global _announced_shadow
    state = shadow.find(os.environ, live)
    if state is None:
        return None
    if state is not _announced_shadow:
        _announced_shadow = state
        if state.model is None:
            _log({"message": "shadow dropped", "shadow": state.source, "error": state.error})
        else:
            entry: dict[str, Any] = {
                "message": "shadow loaded",
                "model": state.model.name,
                "model_version": state.model.version,
                "input": state.model.input.describe(),
                "load_ms": state.model.load_ms,
                "output": state.output,
            }
            if state.model.warnings:
                entry["warnings"] = state.model.warnings
            if state.model.store is not None:
                entry["store"] = state.model.store
            _log(entry)
    return state if state.model is not None else None


def _announce_set(models: ModelSet) -> None:
    """Log the set the environment serves and load its default (see ``_load_at_init``)."""
    global _announced_set
    _announced_set = models
    _log(
        {
            "message": "model set",
            "model": models.name,
            "model_version": models.version,
            "members": list(models.members),
            "field": models.field,
            "default": models.default,
            "cache_budget_bytes": models.budget_bytes,
        }
    )
    for note in models.notes:
        _log({"message": "setting ignored", "error": note})
    ignored = shadow.ignored_for_set(os.environ)
    if ignored:
        _log({"message": "setting ignored", "error": ignored})
    if models.default is None:
        model_set.import_libraries()
        return
    try:
        _, load = models.get(models.default)
    except ModelLoadError as exc:
        _log_load_failed(models, models.default, str(exc))
        return
    if load is not None:
        _log_load(models, load)


def _log_load(models: ModelSet, load: model_set.Load) -> None:
    entry: dict[str, Any] = {
        "message": "model loaded",
        "set": models.name,
        "model": load.member,
        "model_version": load.version,
        "input": load.input,
        "load_ms": load.load_ms,
        "bytes": load.bytes,
    }
    if load.evicted:
        entry["evicted"] = list(load.evicted)
    if load.warnings:
        entry["warnings"] = load.warnings
    if load.version_drift:
        entry["version_drift"] = load.version_drift
    _log(entry)


def _log_load_failed(models: ModelSet, member: str, error: str) -> None:
    _log({"message": "model load failed", "set": models.name, "model": member, "error": error})


def _load_at_init() -> None:
    """Load the model while Lambda initialises the environment, not in the first invoke.

    A failure is logged here and raised again by every invocation (Lambda retries the
    batch), with the same clear message.

    For a model set: the set is logged, and only its default member is loaded (the others
    load on first use). The default is the member most records fall back to, and loading
    one member moves the library imports (about 1.3 s of scikit-learn, numpy, joblib: most
    of a cold start) into init, as for a single model; a set without a default imports them
    without loading a member. Loading every member would make init grow with the set and
    could overrun the cache budget before the first record arrives. A default that fails
    to load is logged; its records are then reported as bad, the other members' scored.

    The shadow, if any, loads after the live model (a shadow that fails is dropped, logged,
    and changes nothing for the live model).
    """
    try:
        models = model_set.find(os.environ)
        if models is None:
            _shadow(_model())
        else:
            _announce_set(models)
    except ModelLoadError as exc:
        _log({"message": "model load failed", "error": str(exc)})


def _served() -> Model | ModelSet:
    """The environment's model (with its shadow) or set, loaded and announced once, as the
    handler finds them: SnapStart's before-snapshot hook loads them through this.

    Raises:
        ModelLoadError: the model (or set.json) cannot be loaded.
    """
    models = model_set.find(os.environ)
    if models is None:
        model = _model()
        _shadow(model)
        return model
    if models is not _announced_set:
        _announce_set(models)
    return models


def _restored() -> None:
    """SnapStart resumed this environment from a snapshot: its next invocation is its first."""
    global _cold_start
    _cold_start = True


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Score every record of the event in one prediction call; see the module docstring."""
    # A batch allocates a few container objects per record (decoded payloads, feature
    # rows, predictions), all freed by reference counting: the cyclic collector's passes
    # over them cost 5-10% of a 10,000-record numeric batch (26.5 -> 25.2 ms best, 29.6 ->
    # 26.5 ms median of 15 here). It resumes after the batch.
    if not gc.isenabled():
        return _handle(event, context)
    gc.disable()
    try:
        return _handle(event, context)
    finally:
        gc.enable()


def _handle(event: Any, context: Any) -> dict[str, Any]:
    global _cold_start
    cold_start, _cold_start = _cold_start, False
    models = model_set.find(os.environ)
    if models is not None:
        return _handle_set(event, context, models, cold_start)
    model = _model()
    state = _shadow(model)

    started = time.perf_counter()
    batch = decode_event(event, model.input)
    decoded = time.perf_counter()
    result = model.predict(batch.inputs)
    predicted = time.perf_counter()

    name = model.name
    timings = {
        "decode_ms": round((decoded - started) * 1000, 3),
        "predict_ms": round((predicted - decoded) * 1000, 3),
    }
    return _finish(
        batch, result.labels, result.probabilities, repeat(name, len(result.labels)),
        model, context, predicted, cold_start, timings, {"model": name},
        regressor=model.regressor,
        shadowing=None if state is None else (state, model, result),
    )  # fmt: skip


def _handle_set(event: Any, context: Any, models: ModelSet, cold_start: bool) -> dict[str, Any]:
    """``_handle`` for a model set: each record scored by the member it names."""
    if models is not _announced_set:
        _announce_set(models)
    scored = model_set.score(event, models)
    predicted = time.perf_counter()
    for load in scored.loads:
        _log_load(models, load)
    for member, error in scored.load_errors.items():
        _log_load_failed(models, member, error)

    timings = {
        "decode_ms": scored.decode_ms,
        "predict_ms": scored.predict_ms,
        "load_ms": scored.load_ms,
    }
    described = {
        "model": models.name,
        "models": scored.per_model,
        "defaulted": scored.defaulted,
        "unrouted": scored.unrouted,
        "loads": len(scored.loads),
        "evictions": scored.evictions,
        "cached": len(models.cached()),
        "cache_bytes": models.cached_bytes,
        "cache_budget_bytes": models.budget_bytes,
    }
    regressor: bool | list[bool] = False
    if scored.regressors:
        regressor = [member in scored.regressors for member in scored.members]
    return _finish(
        scored.batch, scored.labels, scored.probabilities, scored.members, models, context,
        predicted, cold_start, timings, described, regressor=regressor,
    )  # fmt: skip


def _finish(
    batch: Batch,
    labels: list[Any],
    probabilities: list[float | None],
    scored_by: Iterable[str],
    owner: Model | ModelSet,
    context: Any,
    predicted: float,
    cold_start: bool,
    timings: dict[str, Any],
    described: dict[str, Any],
    *,
    regressor: bool | list[bool] = False,
    shadowing: tuple[shadow.State, Model, Predictions] | None = None,
) -> dict[str, Any]:
    """Write the predictions (``scored_by``: the model of each) and the dead letters, log
    the batch line (``timings`` and ``described``: its timing and model fields) and build
    the response, for a single model and a set alike.

    ``regressor``: whether the model answers values (or, for a set, whether each
    prediction's member does): its float predictions are scores in the metrics, not labels.
    ``shadowing``: the shadow, the live model and its predictions, when a shadow scores the
    batch (see ``_ShadowPass``).
    """
    version = owner.version
    predictions = [
        {
            "record_id": record_id,
            "sequence_number": sequence_number,
            "label": label,
            "probability": probability,
            "model": model_name,
            "model_version": version,
        }
        for record_id, sequence_number, label, probability, model_name in zip(
            batch.record_ids,
            batch.sequence_numbers,
            labels,
            probabilities,
            scored_by,
            strict=True,
        )
    ]
    if batch.aggregation is not None:
        _add_sub_sequence_numbers(batch, predictions)
    shadowed = _ShadowPass(shadowing, batch, predictions, context, timings["predict_ms"])
    # event index -> itemIdentifier of every record Lambda must retry
    failed: dict[int, str] = {}
    delivered = _deliver(batch, predictions, owner, os.environ, context, failed)
    written = time.perf_counter()
    shadowed.after_writes()

    counts = {
        "received": batch.received,
        "predicted": len(predictions),
        "skipped": len(batch.skipped),
        "dead_lettered": delivered.dead_lettered,
        "failed": len(failed),
    }
    if batch.aggregation is not None:
        # received counts user records; these say what the event held
        counts["kinesis_records"] = batch.aggregation.kinesis_records
        counts["aggregated"] = batch.aggregation.aggregates
    write_ms = round((written - predicted - shadowed.before_writes_s) * 1000, 3)
    line = {
        "message": "batch",
        "source": batch.source,
        "counts": counts,
        **_skipped_reasons(batch),
        **timings,
        "write_ms": write_ms,
        **described,
        "model_version": version,
        "cold_start": cold_start,
        "request_id": getattr(context, "aws_request_id", None),
    }
    member = shadowed.member()
    if member is not None:
        line["shadow"] = member
    counted, scores = _split_scores(labels, regressor)
    metrics.add_members(
        line,
        function=os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or owner.name,
        model_version=str(version),
        records=batch.received,
        predictions=len(predictions),
        bad_records=delivered.dead_lettered + delivered.reported_alone,
        sink_failures=len(failed) - delivered.reported_alone,
        labels=counted,
        probabilities=probabilities,
        scores=scores,
        shadow=None if shadowed.scoring is None else shadowed.scoring.figures,
    )
    _log(line)
    return {
        "batchItemFailures": [
            {"itemIdentifier": failed[index]} for index in _reported(batch, sorted(failed))
        ],
        "predictions": predictions,
        "counts": counts,
    }


def _reported(batch: Batch, indexes: list[int]) -> list[int]:
    """The failed records to name in batchItemFailures: each one, except that the user
    records of one KPL aggregate share its sequence number, named once."""
    if batch.aggregation is None:
        return indexes
    origins = batch.aggregation.origins
    seen: set[int] = set()
    named = []
    for index in indexes:
        if origins[index] not in seen:
            seen.add(origins[index])
            named.append(index)
    return named


def _add_sub_sequence_numbers(batch: Batch, predictions: list[dict[str, Any]]) -> None:
    """Give each prediction of a KPL aggregate's user record its ``sub_sequence_number``:
    with ``sequence_number`` (the aggregate's) it names the user record, as ``record_id``
    (the aggregate's eventID and ``:<sub_sequence_number>``) does."""
    for prediction, index in zip(predictions, batch.indexes, strict=True):
        sub = batch.sub_sequence_number(index)
        if sub is not None:
            prediction["sub_sequence_number"] = sub


def _skipped_reasons(batch: Batch) -> dict[str, Any]:
    """``{"skipped_reasons": {kind: count}}`` for a batch with skipped records, else ``{}``.

    Said once per batch rather than per record: a KEYS_ONLY or OLD_IMAGE stream skips every
    record, and the counts name the fix (a stream with new images) without a line each.
    """
    if not batch.skipped:
        return {}
    reasons: dict[str, int] = {}
    for skipped in batch.skipped:
        reasons[skipped.kind] = reasons.get(skipped.kind, 0) + 1
    return {"skipped_reasons": dict(sorted(reasons.items()))}


class _ShadowPass:
    """The shadow's part in one batch (``shadowing``: the shadow, the live model and its
    predictions, or None).

    It scores after the writes, so that they never wait for it, unless its answers go out
    with them (SHADOW_OUTPUT=1): then before, and ``before_writes_s`` says how long it took.
    It does not run when the invocation is nearly out of time (``shadow.too_late``), nor on a
    batch without predictions. A shadow that raises is dropped, and the drop logged.
    """

    def __init__(
        self,
        shadowing: tuple[shadow.State, Model, Predictions] | None,
        batch: Batch,
        predictions: list[dict[str, Any]],
        context: Any,
        live_predict_ms: float,
    ) -> None:
        self.run = shadowing if predictions else None
        self.batch = batch
        self.skipped: str | None = None
        self.scoring: shadow.Scoring | None = None
        self.before_writes_s = 0.0
        if self.run is None:
            return
        self.skipped = shadow.too_late(context, live_predict_ms)
        if self.skipped is None and self.run[0].output:
            begun = time.perf_counter()
            self.scoring = self._score(self.run)
            shadow.attach(self.scoring, predictions)
            self.before_writes_s = time.perf_counter() - begun

    def after_writes(self) -> None:
        if self.run is not None and self.skipped is None and self.scoring is None:
            self.scoring = self._score(self.run)

    def member(self) -> dict[str, Any] | None:
        """The batch line's ``shadow`` member (None: no shadow)."""
        if self.scoring is not None:
            return self.scoring.describe()
        if self.run is not None and self.skipped is not None:
            return shadow.skipped(self.run[0], self.skipped)
        return None

    def _score(self, run: tuple[shadow.State, Model, Predictions]) -> shadow.Scoring:
        state, live, predicted = run
        scoring = shadow.score(state, self.batch, live, predicted)
        if scoring.error is not None:
            _log({"message": "shadow dropped", "shadow": state.source, "error": scoring.error})
            shadow.drop(state, scoring.error)
        return scoring


def _split_scores(labels: list[Any], regressor: bool | list[bool]) -> tuple[list[Any], list[Any]]:
    """(labels, scores): a regressor's float outputs are scores; what else it answers (a
    non-finite output, written as a string) and every classifier's answer are labels."""
    if isinstance(regressor, bool):
        if not regressor:
            return labels, []
        scores = [label for label in labels if type(label) is float]
        if len(scores) == len(labels):
            return [], scores
        return [label for label in labels if type(label) is not float], scores
    counted: list[Any] = []
    scores = []
    for label, answers_values in zip(labels, regressor, strict=True):
        (scores if answers_values and type(label) is float else counted).append(label)
    return counted, scores


class Delivered(NamedTuple):
    """What ``_deliver`` did with the bad records: dead-lettered, or (without a dead-letter
    queue) reported in batchItemFailures on their own."""

    dead_lettered: int
    reported_alone: int


def _deliver(
    batch: Batch,
    predictions: list[dict[str, Any]],
    model: Model | ModelSet,
    environ: Mapping[str, str],
    context: Any,
    failed: dict[int, str],
) -> Delivered:
    """Write the outputs and dead letters, in event order up to the first record that must be
    retried; fill ``failed`` (event index -> itemIdentifier). Returns how many bad records
    were dead-lettered or reported alone (every other failure is a write's, a dead letter's
    or the deadline's).

    The first record that must be retried (a table or stream write that failed, a dead
    letter that could not be delivered, the invocation's deadline) is reported with every
    record after it: Lambda checkpoints before the lowest reported sequence number and
    resends all of them. So the stream and the dead-letter queue, which are not idempotent,
    get nothing behind it now (it would arrive twice); the table, keyed by record_id, gets
    every prediction (a rewrite on retry changes nothing, and a record behind a poison
    record is still scored). Without a dead-letter queue a bad record is reported alone:
    it can only fail again, and stopping at it would hold back the good ones behind it.
    """
    queue_url = environ.get("DEAD_LETTER_QUEUE_URL")
    table = environ.get("OUTPUT_TABLE")
    stream = environ.get("OUTPUT_STREAM")
    if not (predictions and (table or stream)) and not (batch.rejected and queue_url):
        for bad in batch.rejected:  # no dead-letter queue: Lambda retries them, then gives up
            failed[bad.index] = bad.item_identifier
            _log_bad(bad, "reported in batchItemFailures", **_sub_sequence(batch, bad.index))
        return Delivered(0, len(batch.rejected))

    import sinks

    deadline = sinks.Deadline.from_context(context)
    first = _write_outputs(batch, predictions, table, stream, deadline)
    dead_lettered = 0
    if batch.rejected:
        dead_lettered, first = _handle_rejected(
            batch, model, queue_url, environ, deadline, first, failed
        )
    if first is not None:
        behind = _item_identifiers(batch, first)
        failed.update(behind)
        _log(
            {
                "message": "retry from here",
                "index": first,
                "itemIdentifier": behind[first],
                "reported": len(behind),
                "remaining_ms": deadline.remaining_ms(),
            }
        )
    return Delivered(dead_lettered, 0 if queue_url else len(batch.rejected))


def _handle_rejected(
    batch: Batch,
    model: Model | ModelSet,
    queue_url: str | None,
    environ: Mapping[str, str],
    deadline: Deadline,
    first: int | None,
    failed: dict[int, str],
) -> tuple[int, int | None]:
    """Dead-letter the bad records before ``first`` (or mark them failed); log each.

    Returns (how many were dead-lettered, the new first record to retry).
    """
    if not queue_url:
        for bad in batch.rejected:
            failed[bad.index] = bad.item_identifier
            _log_bad(bad, "reported in batchItemFailures", **_sub_sequence(batch, bad.index))
        return 0, first

    import sinks

    before = [bad for bad in batch.rejected if first is None or bad.index < first]
    max_bytes, setting_error = _max_bytes(environ.get("DEAD_LETTER_MAX_BYTES"))
    if setting_error:
        _log({"message": "setting ignored", "error": setting_error})
    letters = [
        sinks.Letter(
            {
                "record_id": bad.record_id,
                "sequence_number": bad.sequence_number,
                **_sub_sequence(batch, bad.index),
                "reason": bad.reason,
                "record": bad.record,
                "model": model.name,
                "model_version": model.version,
            },
            _source(bad.record),
        )
        for bad in before
    ]
    result = sinks.dead_letter(
        queue_url,
        letters,
        bucket=environ.get("DEAD_LETTER_BUCKET") or None,
        max_bytes=max_bytes,
        deadline=deadline,
    )
    stop = first
    failed_index = None
    if result.failed_at is not None:
        failed_index = before[result.failed_at].index
        # Lambda resends the whole Kinesis record: every user record of its aggregate.
        stop = batch.retry_start(failed_index)
    for position, bad in enumerate(before):
        where = result.sent.get(position)
        if stop is None or bad.index < stop:
            detail = {} if where == "queue" else {"record_s3": where}
            _log_bad(bad, "dead-lettered", **_sub_sequence(batch, bad.index), **detail)
        elif position == result.failed_at:
            _log_bad(
                bad,
                "reported in batchItemFailures",
                **_sub_sequence(batch, bad.index),
                dead_letter_error=result.error,
            )
    sent_behind = {before[position].index for position in result.sent}
    for bad in batch.rejected:
        # Behind the first record to retry: Lambda resends it, it is dead-lettered then.
        if stop is not None and bad.index >= stop and bad.index != failed_index:
            detail = _sub_sequence(batch, bad.index)
            if bad.index in sent_behind:
                # SQS took it in the call that refused an earlier one, or (an aggregate's
                # user record) before a later user record of its aggregate was refused.
                detail["note"] = "also sent to the queue: it will be sent again"
            _log_bad(
                bad, "reported in batchItemFailures (behind the first record to retry)", **detail
            )
    dead_lettered = sum(1 for bad in before if stop is None or bad.index < stop)
    return dead_lettered, stop


def _sub_sequence(batch: Batch, index: int) -> dict[str, Any]:
    """``{"sub_sequence_number": n}`` for a KPL aggregate's user record, else ``{}``."""
    sub = batch.sub_sequence_number(index)
    return {} if sub is None else {"sub_sequence_number": sub}


def _log_bad(bad: Any, action: str, **detail: Any) -> None:
    _log(
        {
            "message": "bad record",
            "record_id": bad.record_id,
            "sequence_number": bad.sequence_number,
            "reason": bad.reason,
            "action": action,
            **detail,
        }
    )


def _max_bytes(value: str | None) -> tuple[int, str | None]:
    """DEAD_LETTER_MAX_BYTES, or the default and why the value given is not usable."""
    import sinks

    if not value:
        return sinks.DEAD_LETTER_MAX_BYTES, None
    low, high = sinks.MESSAGE_BYTES_RANGE
    try:
        number = int(value)
    except ValueError:
        number = 0
    if low <= number <= high:
        return number, None
    return sinks.DEAD_LETTER_MAX_BYTES, (
        f"DEAD_LETTER_MAX_BYTES={value!r} is not a whole number of bytes from {low:,} to "
        f"{high:,} (an SQS queue's MaximumMessageSize); using {sinks.DEAD_LETTER_MAX_BYTES:,}"
    )


def _source(record: Any) -> str | None:
    if isinstance(record, Mapping):
        source = record.get("eventSourceARN")
        if isinstance(source, str) and source:
            return source
    return None


def _item_identifiers(batch: Batch, first: int) -> dict[int, str]:
    """event index -> itemIdentifier of every record from ``first`` on, whatever its outcome."""
    found: dict[int, str] = {}
    for index, record_id, sequence_number in zip(
        batch.indexes, batch.record_ids, batch.sequence_numbers, strict=True
    ):
        if index >= first:
            found[index] = sequence_number or record_id
    for bad in batch.rejected:
        if bad.index >= first:
            found[bad.index] = bad.item_identifier
    for skipped in batch.skipped:
        if skipped.index >= first:
            found[skipped.index] = skipped.sequence_number or skipped.record_id
    return found


def _write_outputs(
    batch: Batch,
    predictions: list[dict[str, Any]],
    table: str | None,
    stream: str | None,
    deadline: Deadline,
) -> int | None:
    """Write the table (every prediction), then the stream (those before the table's first
    failure); log failures. Returns the event index of the first failure, or None."""
    if not predictions or not (table or stream):
        return None
    import sinks

    first: int | None = None
    for sink, target in (("table", table), ("stream", stream)):
        if not target:
            continue
        if sink == "table":
            positions = list(range(len(predictions)))
            failures = sinks.write_table(target, predictions, deadline=deadline)
        else:
            positions = [
                position
                for position, index in enumerate(batch.indexes)
                if first is None or index < first
            ]
            failures = {
                positions[position]: reason
                for position, reason in sinks.put_stream(
                    target, [predictions[position] for position in positions], deadline=deadline
                ).items()
            }
        if not failures:
            continue
        # Lambda resends a whole aggregate: the retry starts at its first user record.
        lowest = batch.retry_start(min(batch.indexes[position] for position in failures))
        first = lowest if first is None else min(first, lowest)
        _log(
            {
                "message": "write failed",
                "sink": sink,
                "target": target,
                "count": len(failures),
                "error": next(iter(failures.values())),
                "record_ids": [batch.record_ids[position] for position in failures],
            }
        )
    return first


_load_at_init()
snapstart.register(_served, _restored, _log)
