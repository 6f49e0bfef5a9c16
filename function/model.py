"""Load the model once per execution environment and predict through its stages.

A model directory (MODEL_DIR, default /opt/model: the model layer; or the archive MODEL_URI
names in the model store, fetched by ``model_store``) holds the joblib stages
and ``manifest.json`` (written by ``mlayer build-model``) or ``metadata.json`` (written by
``training/train.py``)::

    {"name": "sentiment",
     "stages": ["PreProc1_sentiment.joblib", "PreProc2_sentiment.joblib", "sentiment.joblib"],
     "input": {"kind": "text", "field": "text"},
     "labels": ["negative", "positive"], "versions": {...}, "version": 3}

Every stage but the last is applied with ``transform``, the last with ``predict`` (and
``predict_proba`` when it has one). A stage that is a scikit-learn Pipeline is unrolled
into its steps, so ``predict`` and ``predict_proba`` share one pass of the transforms.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from records import InputSpec

DEFAULT_MODEL_DIR = "/opt/model"
UNVERSIONED = "unversioned"


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or cannot be loaded here."""


@dataclass(frozen=True)
class Predictions:
    """One label and one probability (None without predict_proba) per input, in order.

    ``table``: predict_proba's whole matrix (a row per input, a column per class in
    ``Model.class_labels`` order), or None; a shadow compares probabilities through it.
    """

    labels: list[Any]
    probabilities: list[float | None]
    table: Any = field(default=None, compare=False, repr=False)


@dataclass
class Model:
    """A loaded model: its identity, what it reads, and its stage chain."""

    name: str
    version: int | str
    input: InputSpec
    directory: Path
    transforms: list[Any]
    final: Any
    labels: list[Any] | None
    load_ms: float
    # What Python warned about while unpickling (e.g. scikit-learn's
    # InconsistentVersionWarning): the pickles do not match this environment.
    warnings: list[str] = field(default_factory=list)
    # Where metadata.json's library versions differ from this environment's (informational:
    # the pickles, not the metadata, say what they need).
    version_drift: list[str] = field(default_factory=list)
    # From the model store (MODEL_URI): model_store.Fetched.describe() and wait_ms, how long
    # the init waited for the fetch after its own imports. None for a model layer.
    store: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        import numpy as np
        from sklearn import config_context

        self._np = np
        self._config_context = config_context
        self._frame: Any = None
        if self.input.frame:
            try:
                import pandas
            except ImportError:
                raise ModelLoadError(
                    "this model was fitted on a pandas DataFrame and must be given one, but "
                    "pandas is not importable: add pandas to the dependency layer's "
                    "requirements (mlayer build-model names the version) and rebuild it"
                ) from None
            self._frame = pandas.DataFrame
            self._column_dtypes = [
                np.float64 if kind == "number" else object for kind in self.input.types
            ]
        self._has_proba = hasattr(self.final, "predict_proba")
        classes = getattr(self.final, "classes_", None)
        self._classes = None if classes is None else np.asarray(classes)
        if self._classes is not None:
            # classes_ is sorted for every scikit-learn classifier; the sorter keeps the
            # label lookup exact for any estimator that does not sort.
            self._sorter = np.argsort(self._classes, kind="stable")
            names = self.labels if self.labels is not None else self._classes.tolist()
            self._label_array = np.empty(len(names), dtype=object)
            self._label_array[:] = names

    @property
    def regressor(self) -> bool:
        """The model answers values, not classes (no ``classes_``): its float predictions
        are scores (a clusterer's or outlier detector's integers are still labels)."""
        return self._classes is None

    @property
    def class_labels(self) -> list[Any] | None:
        """The labels the model answers, in its probability columns' order (None: no classes)."""
        return None if self._classes is None else self._label_array.tolist()

    def predict(self, inputs: Sequence[Any]) -> Predictions:
        """Predict every input in one vectorized pass through the stages.

        ``inputs`` are texts (text models) or rows of finite numbers in the model's column
        order (feature models), as ``records.decode_event`` produces them.
        """
        count = len(inputs)
        if count == 0:
            return Predictions([], [])
        np = self._np
        features: Any
        if self.input.kind == "text":
            features = inputs
        elif self._frame is not None:
            features = self._dataframe(inputs)
        else:
            features = np.asarray(inputs, np.float64)

        # The inputs were validated record by record (finite numbers, strings), and the text
        # stages cannot produce NaN: scikit-learn's finiteness check of every intermediate
        # matrix is redundant, and costs about 7% of a 100-record text batch.
        with self._config_context(assume_finite=True, skip_parameter_validation=True):
            for stage in self.transforms:
                features = stage.transform(features)
            predicted = self.final.predict(features)
            proba = self.final.predict_proba(features) if self._has_proba else None
        if self._classes is None:
            return Predictions(_json_values(predicted), [None] * count)
        positions = np.searchsorted(self._classes, predicted, sorter=self._sorter)
        index = self._sorter[positions]
        labels = self._label_array[index].tolist()
        if proba is None:
            return Predictions(labels, [None] * count)
        return Predictions(labels, proba[np.arange(count), index].tolist(), proba)

    def _dataframe(self, rows: Sequence[Any]) -> Any:
        """The batch as a DataFrame with the training columns, built once column by column."""
        np = self._np
        columns = zip(*rows, strict=True)
        data = {
            name: np.array(values, dtype=dtype)
            for name, dtype, values in zip(
                self.input.features, self._column_dtypes, columns, strict=True
            )
        }
        # The dict is in feature order already: passing columns= again costs about 0.4 ms a
        # batch (pandas reindexes), measured with bench/handler_throughput.py's DataFrame row.
        return self._frame(data, copy=False)


def _json_values(predicted: Any) -> list[Any]:
    """Predictions as JSON-safe Python values (NaN and infinities as strings).

    Raises:
        ValueError: the model predicts several values per record.
    """
    if getattr(predicted, "ndim", 1) != 1:
        raise ValueError(
            f"the model predicts {predicted.shape[1:]} values per record; the function serves one"
        )
    values: list[Any] = predicted.tolist()
    kind = predicted.dtype.kind
    if kind == "f":
        if all(map(math.isfinite, values)):
            return values
        return [v if math.isfinite(v) else str(v) for v in values]
    if kind in "biuUS":
        return values
    return [v if v is None or isinstance(v, bool | int | float | str) else str(v) for v in values]


def load(
    directory: Path | str,
    *,
    input_field: str | None = None,
    version: str | None = None,
    mmap: bool | None = None,
) -> Model:
    """Load the model in ``directory``.

    Args:
        input_field: overrides the field the model reads (env INPUT_FIELD).
        version: the version to report when the directory has no manifest (env MODEL_VERSION).
        mmap: memory-map the numpy arrays of uncompressed joblib files: None (env
            MODEL_MMAP unset) for files of MMAP_MIN_BYTES or more, True (MODEL_MMAP=1) for
            all, False (MODEL_MMAP=0) for none. Compressed files and plain pickles are read.

    Raises:
        ModelLoadError: with what is wrong and how to fix it.
    """
    started = time.perf_counter()
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(
            f"model directory {directory} does not exist: attach the model layer to the "
            "function (its files unzip to /opt/model) or set MODEL_DIR to a directory "
            "written by training/train.py"
        )
    manifest = directory / "manifest.json"
    meta_path = manifest if manifest.is_file() else directory / "metadata.json"
    if not meta_path.is_file():
        raise ModelLoadError(
            f"{directory} has neither manifest.json nor metadata.json: it is not a model "
            "directory (training/train.py and mlayer build-model write one)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, Mapping):
        raise ModelLoadError(f"{meta_path} holds {type(meta).__name__}, expected an object")

    stage_names = meta.get("stages")
    if (
        not isinstance(stage_names, list)
        or not stage_names
        or not all(isinstance(name, str) and name for name in stage_names)
    ):
        raise ModelLoadError(f'{meta_path}: "stages" must be a non-empty list of file names')
    stages = [_load_stage(directory / name, meta, mmap=mmap) for name in stage_names]
    caught = [message for _, message in stages if message]
    loaded = [stage for stage, _ in stages]
    raw_input = meta.get("input")
    if raw_input is None:
        # A hand-written metadata.json may leave the input out: read it from the model.
        import schema

        try:
            raw_input = schema.infer_input(loaded)
        except ValueError as exc:
            raise ModelLoadError(f"{meta_path}: no input given and {exc}") from None
    spec = _input_spec(raw_input, meta_path, input_field)
    transforms, final = _unroll(loaded, meta_path)

    labels = _labels(final, meta.get("labels"), meta_path)
    if manifest.is_file() and meta.get("version") is not None:
        model_version: int | str = meta["version"]
    else:
        model_version = version or UNVERSIONED
    name = meta.get("name") or Path(stage_names[-1]).stem
    return Model(
        name=str(name),
        version=model_version,
        input=spec,
        directory=directory,
        transforms=transforms,
        final=final,
        labels=labels,
        load_ms=round((time.perf_counter() - started) * 1000, 2),
        warnings=caught,
        version_drift=_version_drift(meta),
    )


def _input_spec(raw: Any, meta_path: Path, input_field: str | None) -> InputSpec:
    if not isinstance(raw, Mapping) or raw.get("kind") not in ("text", "features"):
        raise ModelLoadError(
            f'{meta_path}: "input" must be {{"kind": "text", "field": ...}} or '
            '{"kind": "features", "features": [...]}'
        )
    if raw["kind"] == "text":
        # A model layer built from a bare model reads a plain text or the object's only
        # string field (field null); training/train.py's metadata names its field.
        text_field = input_field or raw.get("field", "text")
        return InputSpec(kind="text", field=str(text_field) if text_field else None)
    features = raw.get("features")
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(name, str) and name for name in features)
    ):
        raise ModelLoadError(f'{meta_path}: "input.features" must be a non-empty list of names')
    types = raw.get("types") or ["number"] * len(features)
    if (
        not isinstance(types, list)
        or len(types) != len(features)
        or not all(kind in ("number", "string") for kind in types)
    ):
        raise ModelLoadError(
            f'{meta_path}: "input.types" must list "number" or "string" for each feature'
        )
    container = input_field or raw.get("field") or None
    return InputSpec(
        kind="features",
        field=container,
        features=tuple(features),
        types=tuple(types),
        named=bool(raw.get("named", True)),
        frame=bool(raw.get("dataframe", False)),
    )


# The first byte of a pickle of protocol 2 or later, which every joblib.dump writes
# uncompressed; joblib's compressed files start with their compressor's magic instead (zlib
# "x", gzip, bz2, xz, lzma, lz4), and joblib warns when asked to memory-map those.
_PICKLE_PROTO = b"\x80"
# joblib < 1.2 wrote arrays unaligned: it warns rather than memory-map them; read them instead.
_UNALIGNED = "is not byte aligned"
# Mapping an array costs ~70 us (joblib opens and maps the file once per array) and saves
# reading it: about 1.2 ms per MB of a forest's trees, 0.4 ms per MB of a KNN's data
# (medians, warm page cache, 2 shared cores). A file of many small arrays loses: a
# 100-tree 3 MB forest 27 ms (59 vs 32 ms), a 1,000-tree 10 MB one 280 ms; big files win: a
# 100 MB forest loads in 120 instead of 238 ms, a 1 GB one in 1.3 instead of 2.4 s, a 100 MB
# KNN in 1 instead of 41 ms without a 100 MB copy. Below this size the gain is a few ms at
# best, so small (layer) models are read as before.
MMAP_MIN_BYTES = 32 * 1_048_576


def _load_stage(path: Path, meta: Mapping[str, Any], *, mmap: bool | None) -> tuple[Any, str]:
    if not path.is_file():
        raise ModelLoadError(f"stage {path.name} is listed in the metadata but {path} is missing")
    import joblib

    if mmap is None:
        mmap = path.stat().st_size >= MMAP_MIN_BYTES
    mmap_mode = "r" if mmap and _uncompressed(path) else None
    stage, caught = _joblib_load(joblib, path, meta, mmap_mode)
    if mmap_mode and any(_UNALIGNED in message for message in caught):
        stage, caught = _joblib_load(joblib, path, meta, None)
    return stage, "; ".join(caught)


def _uncompressed(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(1) == _PICKLE_PROTO
    except OSError:
        return False  # joblib.load reports it


def _joblib_load(
    joblib: Any, path: Path, meta: Mapping[str, Any], mmap_mode: str | None
) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stage = joblib.load(path, mmap_mode=mmap_mode)
        except Exception as exc:  # unpickling runs arbitrary library code: any error
            raise ModelLoadError(
                f"cannot load {path}: {type(exc).__name__}: {exc}. {_version_hint(meta)}"
            ) from exc
    return stage, [str(warning.message) for warning in caught]


def _unroll(stages: list[Any], meta_path: Path) -> tuple[list[Any], Any]:
    from sklearn.pipeline import Pipeline

    flat: list[Any] = []
    pending = list(stages)
    while pending:
        stage = pending.pop(0)
        if isinstance(stage, Pipeline):
            steps = [step for _, step in stage.steps if step is not None and step != "passthrough"]
            pending[:0] = steps
        else:
            flat.append(stage)
    *transforms, final = flat
    for stage in transforms:
        if not hasattr(stage, "transform"):
            raise ModelLoadError(
                f"{meta_path}: stage {type(stage).__name__} has no transform(); every stage "
                "but the last must be a transformer"
            )
    if not hasattr(final, "predict"):
        raise ModelLoadError(f"{meta_path}: the last stage {type(final).__name__} has no predict()")
    return transforms, final


def _labels(final: Any, labels: Any, meta_path: Path) -> list[Any] | None:
    classes = getattr(final, "classes_", None)
    if classes is None:
        return None  # a regressor: the prediction is the label
    if isinstance(classes, list):
        raise ModelLoadError(
            f"{meta_path}: {type(final).__name__} is a multi-output classifier; the function "
            "serves one label per record"
        )
    if classes.dtype.kind in "US" or all(isinstance(value, str) for value in classes.tolist()):
        return [str(value) for value in classes.tolist()]  # string classes are the labels
    if labels is None:
        return None
    if not isinstance(labels, list) or len(labels) != len(classes):
        raise ModelLoadError(
            f'{meta_path}: "labels" names {len(labels) if isinstance(labels, list) else 0} '
            f"classes but the model has {len(classes)} ({list(classes)[:10]})"
        )
    return labels


def _version_hint(meta: Mapping[str, Any]) -> str:
    saved = meta.get("versions") if isinstance(meta.get("versions"), Mapping) else {}
    try:
        import sklearn

        here = sklearn.__version__
    except ImportError:
        return "scikit-learn is not importable: attach the dependency layer to the function."
    trained = saved.get("scikit-learn") if saved else None
    if trained == here:
        return (
            f"scikit-learn {here} here, as at training: the file is damaged or not a joblib "
            "pickle; rebuild the model layer (mlayer build-model) from the training output."
        )
    return (
        f"It was saved with scikit-learn {trained or 'an unknown version'}; this environment "
        f"has {here}. Build the dependency layer from the training pins (requirements.txt) "
        "or retrain with this environment's versions."
    )


def _version_drift(meta: Mapping[str, Any]) -> list[str]:
    saved = meta.get("versions")
    if not isinstance(saved, Mapping):
        return []
    import joblib
    import numpy
    import sklearn

    here = {
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }
    return [
        f"{package} {saved[package]} at training, {version} here"
        for package, version in here.items()
        if saved.get(package) and saved[package] != version
    ]


_LOADED: dict[tuple[str, str | None, str | None, bool | None], Model] = {}


# MODEL_MMAP: 0 reads every file, 1 maps every uncompressed joblib file, anything else (unset)
# maps those of MMAP_MIN_BYTES or more.
MMAP_SETTINGS = {"0": False, "1": True}


def get_model(environ: Mapping[str, str] = os.environ) -> Model:
    """The model of this execution environment, loaded at the first call and kept.

    From the model store when MODEL_URI is set (it wins over MODEL_DIR), else from
    MODEL_DIR. Keyed by MODEL_URI or MODEL_DIR, INPUT_FIELD, MODEL_VERSION and MODEL_MMAP,
    which never change inside a Lambda execution environment; tests that change them get a
    fresh load.

    Raises:
        ModelLoadError: with what is wrong and how to fix it (a fetch that failed too).
    """
    uri = environ.get("MODEL_URI") or None
    key = (
        uri or environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR,
        environ.get("INPUT_FIELD") or None,
        environ.get("MODEL_VERSION") or None,
        MMAP_SETTINGS.get((environ.get("MODEL_MMAP") or "").strip()),
    )
    model = _LOADED.get(key)
    if model is None:
        if uri:
            model = _load_from_store(uri, input_field=key[1], version=key[2], mmap=key[3])
        else:
            model = load(key[0], input_field=key[1], version=key[2], mmap=key[3])
        _LOADED.clear()
        _LOADED[key] = model
    return model


def _load_from_store(
    uri: str, *, input_field: str | None, version: str | None, mmap: bool | None
) -> Model:
    """Load the directory MODEL_URI's archive unpacked to (see :func:`fetched_directory`)."""
    directory, figures = fetched_directory(uri)
    model = load(directory, input_field=input_field, version=version, mmap=mmap)
    model.store = figures
    return model


_FETCHED: dict[str, tuple[Path, dict[str, Any]]] = {}


def fetched_directory(uri: str) -> tuple[Path, dict[str, Any]]:
    """The model directory MODEL_URI's archive unpacks to, fetched once per environment,
    and the fetch's figures for the "model loaded" line.

    The fetch runs in a background thread while this one imports the libraries every
    model needs. A model set stored in the store is a directory like any other. Kept per
    URI: an environment fetches at most two (MODEL_URI and SHADOW_URI).

    Raises:
        ModelLoadError: the fetch failed (tried again at the next call).
    """
    done = _FETCHED.get(uri)
    if done is None:
        import model_store

        pending = model_store.start_fetch(uri)
        _import_libraries()
        waiting = time.perf_counter()
        fetched = pending.result()
        waited_ms = round((time.perf_counter() - waiting) * 1000, 2)
        done = (fetched.directory, {**fetched.describe(), "wait_ms": waited_ms})
        _FETCHED[uri] = done
    return done


def _import_libraries() -> None:
    """What loading any model imports first (about 0.5-1 s of an init): done while the
    archive downloads. A library that fails to import is reported by load() itself, with
    its fix."""
    try:
        import joblib  # noqa: F401
        import numpy  # noqa: F401
        import sklearn.pipeline  # noqa: F401
    except Exception:  # load() meets the same failure and explains it
        pass
