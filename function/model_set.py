"""Many models in one function: a model set, each record scored by the model it names.

A model directory (MODEL_DIR, default /opt/model) is a set when it holds ``set.json``::

    {"models": ["tenant-a", "tenant-b", "tenant-c"], "field": "tenant",
     "default": "tenant-a", "version": 4, "name": "tenants"}

    models   required: the members, each a subdirectory of the set directory holding an
             ordinary model directory (manifest.json or metadata.json and its files); names
             of 1-64 letters, digits, "-", "_", "." (not starting with "." or "-"), no
             repeats. Members may read different inputs (text, features).
    field    the record field whose string value names the member that scores the record;
             required unless the environment sets MODEL_FIELD (which wins).
    default  optional, one of ``models``: scores the records without the field, with a
             value that is not a string, or naming no member. Without a default such a
             record is bad: dead-lettered or reported in batchItemFailures with the reason
             ("record names model 'x', not one of the set (a, b); ...").
    version  optional, a positive integer or a non-empty string: every prediction's
             ``model_version`` (else MODEL_VERSION, else "unversioned").
    name     optional: the set's name in the log lines and dead letters (else the set
             directory's name).
    Other keys are ignored.

Where the field is read: the JSON object of a Kinesis record or of a direct invocation
(``{"records": [...]}``), the NewImage of a DynamoDB change (either delivery, as a string
attribute ``{"S": "tenant-a"}``). DynamoDB REMOVEs and changes without a NewImage are
skipped, as for a single model, without loading any member.

Environment:
    MODEL_FIELD     overrides set.json's ``field``
    MODEL_CACHE_MB  the cache budget: the members kept loaded together may hold at most this
                    many MB (10^6 bytes) of model files; a decimal number >= 0. Default: a
                    quarter of (AWS_LAMBDA_FUNCTION_MEMORY_SIZE - 256 MB), see
                    ``cache_budget``; no budget when neither is set (outside Lambda).
    INPUT_FIELD     ignored for a set (each member reads the input its manifest names)

Loading: members load on first use (``ModelSet.get``) and stay loaded; before a member
loads, the least recently used ones are evicted until its files fit the budget beside the
others'. A member larger than the whole budget still loads, alone. A member that cannot be
loaded makes its records bad, with the load error as their reason; the other members' records
are scored.

``score(event, model_set)`` decodes the event once to read each record's field, then each
member's records with that member's input spec (``records.decode_records``), and calls each
member's ``predict`` once: one vectorized predict per member per batch. The result is in
event order, as a single model's is.

Log lines (written by lambda_function):
    "model set"      at init: model (the set's name), model_version, members, field, default,
                     cache_budget_bytes
    "model loaded"   at each member load: set, model (the member), model_version (the
                     member's own), input, load_ms, bytes (its cost), evicted (members evicted
                     to make room), warnings / version_drift as for a single model
    "model load failed"  a member that cannot be loaded: set, model, error
    "batch"          as for a single model (model: the set's name, model_version: the set's
                     version), plus models ({member: {"routed": n, "predicted": n}} for the
                     members this batch used), defaulted (records given to the default),
                     unrouted (records rejected for naming no member), loads, evictions and
                     load_ms (this batch), cached (members loaded after it), cache_bytes,
                     cache_budget_bytes
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import DEFAULT_MODEL_DIR, UNVERSIONED, Model, ModelLoadError, fetched_directory, load
from records import Batch, InputSpec, Rejected, decode_event, decode_records

SET_FILE = "set.json"
# What the runtime and the libraries take before any model: measured here, python 3.11 with
# numpy, scipy and scikit-learn imported, about 145 MB resident; pandas (DataFrame models)
# and the batch itself (a 6 MB event decoded, the response) come on top.
BASELINE_MB = 256
# The default budget is this fraction of what the baseline leaves: see cache_budget.
DEFAULT_SHARE = 4
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_SHOWN = 10  # member names listed in a reason, at most


@dataclass(frozen=True)
class SetSpec:
    """set.json, checked: the set's members, the field that chooses one, its default."""

    directory: Path
    name: str
    members: tuple[str, ...]
    field: str
    default: str | None
    version: int | str


@dataclass(frozen=True)
class Load:
    """One member load: what the "model loaded" log line says (not the model itself: an
    eviction later in the batch must be able to free it)."""

    member: str
    version: int | str
    input: str
    load_ms: float
    bytes: int
    evicted: tuple[str, ...]
    warnings: list[str]
    version_drift: list[str]


def is_set(directory: Path | str) -> bool:
    """Whether ``directory`` is a model set (holds set.json)."""
    return os.path.isfile(os.path.join(directory, SET_FILE))


def read_set(
    directory: Path | str, *, model_field: str | None = None, version: str | None = None
) -> SetSpec:
    """Read and check ``directory/set.json``.

    Args:
        model_field: overrides set.json's ``field`` (env MODEL_FIELD).
        version: the version when set.json has none (env MODEL_VERSION).

    Raises:
        ModelLoadError: set.json is unreadable or malformed, or names a member directory
            that is missing or holds no model; the message says which key and how to fix it.
    """
    directory = Path(directory)
    path = directory / SET_FILE
    example = '{"models": ["tenant-a", "tenant-b"], "field": "tenant", "default": "tenant-a"}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ModelLoadError(
            f"{path} holds {type(raw).__name__}, expected an object like {example}"
        )
    members = raw.get("models")
    if (
        not isinstance(members, list)
        or not members
        or not all(isinstance(name, str) and _NAME.fullmatch(name) for name in members)
    ):
        raise ModelLoadError(
            f'{path}: "models" must be a non-empty list of member names (subdirectories of '
            f'{directory}: 1-64 letters, digits, "-", "_", "."), got {_short(members)}'
        )
    repeated = sorted({name for name in members if members.count(name) > 1})
    if repeated:
        raise ModelLoadError(f'{path}: "models" lists {", ".join(repeated)} more than once')
    for name in members:
        member = directory / name
        if not member.is_dir():
            raise ModelLoadError(
                f'{path}: "models" lists {name!r} but {member} does not exist: add the '
                f"model directory (manifest.json and its files) or remove {name!r}"
            )
        if not (member / "manifest.json").is_file() and not (member / "metadata.json").is_file():
            raise ModelLoadError(
                f"{member} has neither manifest.json nor metadata.json: it is not a model "
                "directory (mlayer build-model and training/train.py write one)"
            )
    chosen_by = model_field or raw.get("field")
    if not isinstance(chosen_by, str) or not chosen_by:
        raise ModelLoadError(
            f'{path}: "field" must name the record field that chooses the model (e.g. '
            f'"tenant"), got {_short(raw.get("field"))}; or set MODEL_FIELD'
        )
    default = raw.get("default")
    if default is not None and default not in members:
        raise ModelLoadError(
            f'{path}: "default" {_short(default)} is not one of "models" '
            f"({_names(members)}): name one of them, or leave it out (records naming no "
            "model are then reported as bad)"
        )
    set_version = raw.get("version")
    if set_version is None:
        set_version = version or UNVERSIONED
    elif isinstance(set_version, bool) or not (
        (isinstance(set_version, int) and set_version > 0)
        or (isinstance(set_version, str) and set_version)
    ):
        raise ModelLoadError(
            f'{path}: "version" must be a positive integer (or a non-empty string), got '
            f"{_short(set_version)}"
        )
    name = raw.get("name") or directory.name
    if not isinstance(name, str):
        raise ModelLoadError(f'{path}: "name" must be a string, got {_short(name)}')
    return SetSpec(
        directory=directory,
        name=name,
        members=tuple(members),
        field=chosen_by,
        default=default,
        version=set_version,
    )


def cache_budget(environ: Mapping[str, str]) -> tuple[int | None, str | None]:
    """The cache budget in bytes of model files (None: no budget), and why MODEL_CACHE_MB
    was ignored (else None).

    MODEL_CACHE_MB when it is a number >= 0. Otherwise, in Lambda, a quarter of what the
    runtime and libraries leave of the function's memory:
    (AWS_LAMBDA_FUNCTION_MEMORY_SIZE - 256) / 4 MB, 0 for functions of 256 MB or less (each
    member then loads alone). A quarter, because a model's cost is counted in file bytes
    (see ``member_bytes``) and takes more memory once loaded: about as much for numpy arrays
    and forests (joblib stores the arrays raw), 3-4x for compressed dumps, and about 10x for
    a text vectorizer's vocabulary (measured: a 184,000-word CountVectorizer is 2.5 MB of
    pickle and 24 MB of Python strings and dict, 42 MB at the peak of its load). Lambda's
    memory "MB" are MiB: read as 10^6 bytes here, the budget errs low by 5%. Set
    MODEL_CACHE_MB from the REPORT lines' Max Memory Used once the members are known.
    """
    given = environ.get("MODEL_CACHE_MB")
    error = None
    if given:
        try:
            megabytes = float(given)
        except ValueError:
            megabytes = -1.0
        if 0 <= megabytes < float("inf"):
            return int(megabytes * 1_000_000), None
        error = f"MODEL_CACHE_MB={given!r} is not a number of MB (10^6 bytes) >= 0"
    memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    budget = None
    if memory and memory.isdigit():
        budget = max(0, int(memory) - BASELINE_MB) * 1_000_000 // DEFAULT_SHARE
    if error:
        error += f"; using {'no budget' if budget is None else f'{budget:,} bytes'}"
    return budget, error


def member_bytes(directory: Path) -> int:
    """A member's cost in the cache: the bytes of the files in its directory.

    Chosen over the two alternatives, measured here: the resident-memory growth at load
    says nothing once a member has been evicted (the next load reuses the freed memory and
    grows the process by almost nothing, so the costs of what is loaded no longer add up to
    what the process holds), and the first load also pays for imports; tracing the
    allocations (tracemalloc) slows an object-heavy load about 5x and misses the memory
    scikit-learn's Cython trees allocate. File bytes are exact, free (one stat per file) and
    known before the load, so the members to evict go before the new one arrives and the
    peak stays within the budget. What they understate is in the default budget's margin
    (``cache_budget``).
    """
    with os.scandir(directory) as entries:
        return sum(entry.stat().st_size for entry in entries if entry.is_file())


class _RouteSpec(InputSpec):
    """The field that names a record's model, read as a one-string-feature model's input:
    records.py then reads it from every kind of record, skips what a single model skips, and
    says why a record has no usable name. Described as what it is in those reasons."""

    __slots__ = ()

    def describe(self) -> str:
        return f"the name of a model of the set in field {self.features[0]!r}"


class ModelSet:
    """The members of a set, loaded on first use and kept within a budget (LRU).

    ``loads`` and ``evictions`` count since the set was opened; ``notes`` are settings the
    set ignores (to log).
    """

    def __init__(self, spec: SetSpec, budget_bytes: int | None, notes: Sequence[str] = ()) -> None:
        self.spec = spec
        self.budget_bytes = budget_bytes
        self.notes = list(notes)
        self.loads = 0
        self.evictions = 0
        self.route_spec: InputSpec = _RouteSpec(
            kind="features", field=None, features=(spec.field,), types=("string",)
        )
        self._members = frozenset(spec.members)
        self._cache: OrderedDict[str, tuple[Model, int]] = OrderedDict()
        self._cached_bytes = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int | str:
        return self.spec.version

    @property
    def field(self) -> str:
        return self.spec.field

    @property
    def default(self) -> str | None:
        return self.spec.default

    @property
    def members(self) -> tuple[str, ...]:
        return self.spec.members

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def cached(self) -> list[str]:
        """The loaded members, least recently used first."""
        return list(self._cache)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def get(self, member: str) -> tuple[Model, Load | None]:
        """The member's model, and the Load when this call loaded it (None when cached).

        Raises:
            ModelLoadError: the member cannot be loaded (the members evicted to make room
                for it stay evicted; they reload on their next use).
        """
        cached = self._cache.get(member)
        if cached is not None:
            self._cache.move_to_end(member)
            return cached[0], None
        directory = self.spec.directory / member
        cost = member_bytes(directory)
        evicted = self._make_room(cost)
        model = load(directory)
        self._cache[member] = (model, cost)
        self._cached_bytes += cost
        self.loads += 1
        return model, Load(
            member,
            model.version,
            model.input.describe(),
            model.load_ms,
            cost,
            evicted,
            model.warnings,
            model.version_drift,
        )

    def _make_room(self, cost: int) -> tuple[str, ...]:
        """Evict the least recently used members until ``cost`` more bytes fit the budget."""
        if self.budget_bytes is None:
            return ()
        evicted = []
        while self._cache and self._cached_bytes + cost > self.budget_bytes:
            name, (_, freed) = self._cache.popitem(last=False)
            self._cached_bytes -= freed
            self.evictions += 1
            evicted.append(name)
        return tuple(evicted)


def open_set(directory: Path | str, environ: Mapping[str, str]) -> ModelSet:
    """The set in ``directory`` with the environment's settings, nothing loaded yet.

    Raises:
        ModelLoadError: as ``read_set``.
    """
    spec = read_set(
        directory,
        model_field=environ.get("MODEL_FIELD") or None,
        version=environ.get("MODEL_VERSION") or None,
    )
    budget, error = cache_budget(environ)
    notes = [error] if error else []
    if environ.get("INPUT_FIELD"):
        notes.append(
            f"INPUT_FIELD={environ['INPUT_FIELD']!r} is ignored for a model set: each member "
            "reads the input its own manifest names"
        )
    return ModelSet(spec, budget, notes)


def import_libraries() -> None:
    """Import what loading a member needs, so that a cold start pays for it at init."""
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.pipeline  # noqa: F401


# Whether a model directory is a set, by directory (a stat per directory, once), and the set
# opened for the environment's settings.
_IS_SET: dict[str, bool] = {}
_OPENED: dict[tuple[str | None, ...], ModelSet] = {}
# What a set depends on besides its directory: never changed inside a Lambda execution
# environment; tests that change them get a fresh set.
_SETTINGS = (
    "MODEL_FIELD",
    "MODEL_VERSION",
    "MODEL_CACHE_MB",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "INPUT_FIELD",
)


def find(environ: Mapping[str, str] = os.environ) -> ModelSet | None:
    """The environment's model set, opened at the first call and kept; None for a single
    model (the single model's path pays one dictionary lookup for this).

    Raises:
        ModelLoadError: set.json is malformed (raised again at every call, as a single
            model's load error is).
    """
    uri = environ.get("MODEL_URI") or None
    if uri:  # a set in the model store: the directory its archive unpacked to
        directory = str(fetched_directory(uri)[0])
    else:
        directory = environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR
    found = _IS_SET.get(directory)
    if found is None:
        found = is_set(directory)
        if found or os.path.isdir(directory):  # a directory that appears later is looked at again
            _IS_SET[directory] = found
    if not found:
        return None
    key = (directory, *(environ.get(name) or None for name in _SETTINGS))
    opened = _OPENED.get(key)
    if opened is None:
        opened = open_set(directory, environ)
        _OPENED.clear()
        _OPENED[key] = opened
    return opened


# --- scoring a batch -----------------------------------------------------------------------


@dataclass
class Scored:
    """A batch scored by a set. ``batch`` is the whole event's, in event order, as
    ``records.decode_event`` gives it for one model; ``labels``, ``probabilities`` and
    ``members`` (the member that predicted) are aligned with its inputs."""

    batch: Batch
    labels: list[Any] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    regressors: set[str] = field(default_factory=set)  # members that answer values, not labels
    per_model: dict[str, dict[str, int]] = field(default_factory=dict)
    defaulted: int = 0
    unrouted: int = 0
    loads: list[Load] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    evictions: int = 0
    decode_ms: float = 0.0
    predict_ms: float = 0.0
    load_ms: float = 0.0


def score(event: Any, models: ModelSet) -> Scored:
    """Route every record of ``event`` to its member, decode it for that member, and predict
    with one call per member.

    Raises:
        InvalidEventError: the event as a whole is unreadable (as ``decode_event``).
    """
    clock = time.perf_counter
    started = clock()
    routing = decode_event(event, models.route_spec)
    groups, rejected, defaulted = _route(routing, models)
    decode_s = clock() - started
    result = Scored(
        Batch(
            source=routing.source,
            received=routing.received,
            raw_records=routing.raw_records,
            aggregation=routing.aggregation,
        ),
        defaulted=defaulted,
        unrouted=len(rejected),
    )
    identity = dict(
        zip(
            routing.indexes,
            zip(routing.record_ids, routing.sequence_numbers, strict=True),
            strict=True,
        )
    )
    identity.update((bad.index, (bad.record_id, bad.sequence_number)) for bad in routing.rejected)
    skipped = list(routing.skipped)
    evictions_before = models.evictions
    # (label, probability, member, input) per event index, filled member by member
    slots: list[tuple[Any, float | None, str, Any] | None] = [None] * routing.received
    predict_s = load_s = 0.0
    # Members already loaded first: scoring them before the others load keeps them from
    # being evicted and loaded again within the batch.
    loaded = {name: rank for rank, name in enumerate(models.cached())}
    for member in sorted(groups, key=lambda name: (name not in loaded, loaded.get(name, 0))):
        indexes = groups[member]
        begun = clock()
        try:
            model, done = models.get(member)
        except ModelLoadError as exc:
            load_s += clock() - begun
            result.load_errors[member] = str(exc)
            reason = f"model {member!r} of the set cannot be loaded: {exc}"
            for index in indexes:
                record_id, sequence_number = identity[index]
                rejected.append(
                    Rejected(index, record_id, sequence_number, reason, routing.raw_records[index])
                )
            result.per_model[member] = {"routed": len(indexes), "predicted": 0}
            continue
        if done is not None:
            load_s += clock() - begun
            result.loads.append(done)
        begun = clock()
        part = decode_records(
            routing.source, [routing.raw_records[i] for i in indexes], model.input, indexes
        )
        decoded = clock()
        predictions = model.predict(part.inputs)
        if model.regressor:
            result.regressors.add(member)
        del model  # an eviction for the next member must be able to free it
        predict_s += clock() - decoded
        decode_s += decoded - begun
        for bad in part.rejected:
            bad.reason = f"model {member!r}: {bad.reason}"
        rejected.extend(part.rejected)
        skipped.extend(part.skipped)
        for index, value, label, probability in zip(
            part.indexes, part.inputs, predictions.labels, predictions.probabilities, strict=True
        ):
            slots[index] = (label, probability, member, value)
        result.per_model[member] = {"routed": len(indexes), "predicted": len(part.inputs)}

    _merge(result, slots, identity)
    result.batch.rejected = sorted(rejected, key=lambda bad: bad.index)
    result.batch.skipped = sorted(skipped, key=lambda skip: skip.index)
    result.evictions = models.evictions - evictions_before
    result.decode_ms = round(decode_s * 1000, 3)
    result.predict_ms = round(predict_s * 1000, 3)
    result.load_ms = round(load_s * 1000, 3)
    return result


def _merge(
    result: Scored,
    slots: list[tuple[Any, float | None, str, Any] | None],
    identity: Mapping[int, tuple[str, str | None]],
) -> None:
    """Fill the result's batch and predictions in event order from the members' slots."""
    batch = result.batch
    for index, slot in enumerate(slots):
        if slot is not None:
            label, probability, member, value = slot
            record_id, sequence_number = identity[index]
            batch.add(index, record_id, sequence_number, value)
            result.labels.append(label)
            result.probabilities.append(probability)
            result.members.append(member)


def _route(routing: Batch, models: ModelSet) -> tuple[dict[str, list[int]], list[Rejected], int]:
    """Each member's records (event indexes, ascending), the records no member takes (with
    the reason), and how many went to the default.

    ``routing`` is the event decoded for the field alone: its inputs are the names, its
    rejected records have no usable name (no field, not a string, not a JSON object).
    """
    default = models.default
    names = _names(models.members)
    chosen: list[tuple[int, str]] = []
    rejected: list[Rejected] = []
    defaulted = 0
    for index, record_id, sequence_number, (name,) in zip(
        routing.indexes,
        routing.record_ids,
        routing.sequence_numbers,
        routing.inputs,
        strict=True,
    ):
        if name in models:
            chosen.append((index, name))
        elif default is not None:
            chosen.append((index, default))
            defaulted += 1
        else:
            reason = (
                f"record names model {name!r}, not one of the set ({names}): send one of them "
                f'in field {models.field!r}, or give the set a "default" model'
            )
            rejected.append(
                Rejected(index, record_id, sequence_number, reason, routing.raw_records[index])
            )
    for bad in routing.rejected:
        if default is not None:
            chosen.append((bad.index, default))
            defaulted += 1
        else:
            bad.reason = (
                f"record names no model of the set in field {models.field!r} ({bad.reason}): "
                f'send one of ({names}) in it, or give the set a "default" model'
            )
            rejected.append(bad)
    groups: dict[str, list[int]] = {}
    for index, name in sorted(chosen):
        groups.setdefault(name, []).append(index)
    return groups, rejected, defaulted


def _names(members: Sequence[str]) -> str:
    shown = ", ".join(members[:_SHOWN])
    return shown + (f" and {len(members) - _SHOWN} more" if len(members) > _SHOWN else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
