"""The model layer: a versioned zip of a trained model, gated and smoke-tested before use.

``build_model`` turns a model directory (``training/train.py`` output: joblib stages +
``metadata.json``) into ``layers/model-<name>-v<N>.zip`` with ``model/`` at its root (Lambda
unzips it to ``/opt/model``) and a ``manifest.json`` inside (name, version, sha256 of every
file, stages, input spec, labels, library versions, created).

Before writing anything it checks that the dependency layer can load the model:

- what the pickles record: scikit-learn writes ``_sklearn_version`` into every estimator's
  pickled state; a recording unpickler (joblib's own, with its BUILD step observed) reads it
  while the user's model loads, in a separate process, so the metadata is cross-checked
  against the pickles themselves, not trusted.
- the compatibility gate: scikit-learn promises nothing across versions (any change
  refuses); numpy refuses across a major version (2.x pickles reference ``numpy._core``,
  which 1.x does not have). ``--force`` overrides, loudly.
- the smoke test: the real function (``function/``) in a fresh Lambda-like process
  (:class:`mlayer.local.sandbox.LambdaEnvironment`: function dir, the deps layer's python/,
  the standard library) with ``MODEL_DIR`` on the unzipped model layer scores sample
  records; an error or any warning (``InconsistentVersionWarning`` included) fails the build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlayer.archive import Budget, BudgetPart, mb, sha256_file, upload_note, write_zip
from mlayer.deps_layer import (
    Target,
    find_interpreter,
    function_size,
    host_machine,
)
from mlayer.errors import BudgetError, BuildError, CompatibilityError, ConfigError, SmokeTestError

Progress = Callable[[str], None]
PublishedVersions = Callable[[], Iterable[int]] | Iterable[int] | None

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WARNING_LINE = re.compile(r"\b[A-Z][A-Za-z]*Warning\b: ")

# Runs in a separate interpreter: loads each stage with joblib's own unpickler, observing
# every BUILD (where sklearn's pickled state carries ``_sklearn_version``) and every global
# the pickle references (numpy 2 pickles name ``numpy._core``, numpy 1 ``numpy.core``).
_INSPECT = r"""
import json, pickle, sys, warnings
import joblib
from joblib import numpy_pickle as npk

_Base = npk.NumpyUnpickler

class Recording(_Base):
    # joblib.load builds its unpickler from this module attribute at call time, so
    # swapping the class in observes joblib's own loading, whatever its file format.
    dispatch = _Base.dispatch.copy()
    sklearn_versions = set()
    modules = set()
    classes = set()

    def find_class(self, module, name):
        Recording.modules.add(module)
        Recording.classes.add(module + "." + name)
        return super().find_class(module, name)

    def load_build(self):
        state = self.stack[-1]
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if isinstance(state, dict) and "_sklearn_version" in state:
            Recording.sklearn_versions.add(str(state["_sklearn_version"]))
        _Base.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

npk.NumpyUnpickler = Recording
result = {}
for path in sys.argv[1:]:
    Recording.sklearn_versions, Recording.modules, Recording.classes = set(), set(), set()
    entry = {"sklearn_versions": [], "numpy_major": None, "classes": [], "error": None,
             "api": []}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = joblib.load(path)
        entry["api"] = [m for m in ("transform", "predict", "predict_proba")
                        if callable(getattr(obj, m, None))]
    except BaseException as exc:
        entry["error"] = type(exc).__name__ + ": " + str(exc)
    entry["sklearn_versions"] = sorted(Recording.sklearn_versions)
    entry["classes"] = sorted(Recording.classes)
    mods = Recording.modules
    if any(m == "numpy._core" or m.startswith("numpy._core.") for m in mods):
        entry["numpy_major"] = 2
    elif any(m == "numpy.core" or m.startswith("numpy.core.") for m in mods):
        entry["numpy_major"] = 1
    result[path] = entry
import numpy
try:
    import sklearn
    sk = sklearn.__version__
except ImportError:
    sk = None
print(json.dumps({"stages": result, "reader": {"joblib": joblib.__version__,
                  "numpy": numpy.__version__, "scikit-learn": sk}}))
"""


@dataclass
class ModelBuildOptions:
    """Inputs of a model layer build."""

    model_dir: Path
    version: int | None = None
    layers_dir: Path = Path("layers")
    deps: Path | None = None
    runtime: str | None = None
    arch: str | None = None
    sample: Path | None = None
    force: bool = False
    smoke_test: bool = True
    function_dir: Path | None = None
    python: str | None = None
    published_versions: PublishedVersions = None


@dataclass
class ModelBuildResult:
    """What ``build_model`` produced and what it checked."""

    zip_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    pickles: dict[str, Any]
    gate: list[dict[str, Any]]
    smoke: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- metadata


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The model directory's metadata.json, validated.

    Raises:
        ConfigError: the directory, the file, or one of its fields is missing or malformed.
    """
    if not model_dir.is_dir():
        raise ConfigError(
            f"model directory {model_dir} does not exist; pass the folder training wrote "
            "(python training/train.py --out DIR)"
        )
    path = model_dir / "metadata.json"
    if not path.is_file():
        raise ConfigError(
            f"{model_dir} has no metadata.json; it is not a model directory "
            "(python training/train.py --out DIR writes one)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{path}: name must be 1-64 letters, digits, '-', '_' or '.', got {name!r}"
        )
    stages = meta.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
        raise ConfigError(f"{path}: stages must be a non-empty list of file names")
    for stage in stages:
        if Path(stage).name != stage:
            raise ConfigError(f"{path}: stage {stage!r} must be a file name inside {model_dir}")
        if not (model_dir / stage).is_file():
            raise ConfigError(f"{path} names stage {stage}, which is not in {model_dir}")
    spec = meta.get("input")
    if not isinstance(spec, dict) or spec.get("kind") not in ("text", "features"):
        raise ConfigError(
            f'{path}: input must be {{"kind": "text", "field": ...}} or '
            f'{{"kind": "features", "features": [...]}}, got {spec!r}'
        )
    if spec["kind"] == "features" and (
        not isinstance(spec.get("features"), list) or not spec["features"]
    ):
        raise ConfigError(f"{path}: input.features must list the model's feature names")
    versions = meta.get("versions", {})
    if not isinstance(versions, dict):
        raise ConfigError(f"{path}: versions must map library names to versions")
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise ConfigError(f"{path}: labels must be a list")
    return meta


# --------------------------------------------------------------------------- versions


def built_versions(layers_dir: Path, name: str) -> list[int]:
    """Versions of ``name`` already built in ``layers_dir``."""
    found = []
    for path in layers_dir.glob(f"model-{name}-v*.json"):
        match = re.fullmatch(rf"model-{re.escape(name)}-v(\d+)\.json", path.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def next_version(layers_dir: Path, name: str, published: PublishedVersions = None) -> int:
    """One more than the newest version built here or published (1 for a new model)."""
    versions = built_versions(layers_dir, name)
    if published is not None:
        values = published() if callable(published) else published
        versions += [int(v) for v in values]
    return max(versions, default=0) + 1


# --------------------------------------------------------------------------- deps layer


def find_deps_manifest(
    layers_dir: Path, deps: Path | None, runtime: str | None, arch: str | None
) -> tuple[Path, dict[str, Any]]:
    """The dependency layer to check against: ``deps`` (zip or manifest) or one in layers/.

    Raises:
        ConfigError: none is built, or the given one has no manifest.
    """
    if deps is not None:
        manifest = deps if deps.suffix == ".json" else deps.with_suffix(".json")
        if not manifest.is_file():
            raise ConfigError(
                f"no dependency layer manifest at {manifest}; pass the .json (or .zip) that "
                "mlayer build-deps wrote"
            )
        return manifest, json.loads(manifest.read_text())
    pattern = f"deps-{runtime or '*'}-{arch or '*'}.json"
    candidates = []
    for path in layers_dir.glob(pattern):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if data.get("kind") == "deps":
            candidates.append((path.stat().st_mtime, path, data))
    if not candidates:
        raise ConfigError(
            f"no dependency layer in {layers_dir} ({pattern}): build it first with "
            "`mlayer build-deps` (the model is checked and smoke-tested against it), or pass "
            "--deps FILE"
        )
    _, path, data = max(candidates, key=lambda c: c[0])
    return path, data


def _deps_zip(manifest_path: Path) -> Path:
    zip_path = manifest_path.with_suffix(".zip")
    if not zip_path.is_file():
        raise ConfigError(f"{zip_path} is missing; rebuild it with mlayer build-deps")
    return zip_path


# --------------------------------------------------------------------------- pickles


def inspect_pickles(
    model_dir: Path, stages: list[str], python: str, sys_path: list[str] | None
) -> dict[str, Any]:
    """What each stage's pickle records (scikit-learn versions, numpy major, classes).

    Loads the user's own model files with joblib in a separate process: ``python`` with
    ``sys_path`` (the dependency layer) in front, or its own environment when None.
    """
    paths = [str((model_dir / stage).resolve()) for stage in stages]
    if sys_path is None:
        command = [python, "-I", "-B", "-c", _INSPECT, *paths]
    else:
        prelude = f"import sys\nsys.path[:0] = {sys_path!r}\n"
        command = [python, "-I", "-S", "-B", "-c", prelude + _INSPECT, *paths]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"could not read the model's pickles: {tail[0]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    stages_out = {Path(p).name: v for p, v in data["stages"].items()}
    return {"stages": stages_out, "reader": data["reader"]}


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else None


def compatibility_gate(
    meta: dict[str, Any], pickles: dict[str, Any], deps: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Compare the model's library versions with the dependency layer's.

    Returns:
        (checks, problems, saved_with): each check says library, model, layer, verdict;
        problems are the refusals' reasons; saved_with is what the pickles recorded.
    """
    meta_versions = {str(k).lower(): str(v) for k, v in meta.get("versions", {}).items()}
    layer = deps.get("packages", {})
    checks: list[dict[str, Any]] = []
    problems: list[str] = []
    recorded = sorted(
        {v for entry in pickles["stages"].values() for v in entry.get("sklearn_versions", [])}
    )
    numpy_majors = sorted(
        {e["numpy_major"] for e in pickles["stages"].values() if e.get("numpy_major")}
    )
    saved_with: dict[str, Any] = {"scikit-learn": recorded, "numpy_major": numpy_majors}

    # scikit-learn: the pickles are the truth; metadata is a claim to cross-check.
    meta_sk = meta_versions.get("scikit-learn")
    if len(recorded) > 1:
        problems.append(
            f"the stages were saved with different scikit-learn versions ({', '.join(recorded)}); "
            "retrain all stages with one version"
        )
    model_sk = recorded[0] if recorded else meta_sk
    source = "its pickles" if recorded else "metadata.json"
    if recorded and meta_sk and meta_sk not in recorded:
        checks.append(
            {
                "library": "scikit-learn",
                "model": f"{meta_sk} (metadata.json)",
                "layer": "",
                "verdict": f"metadata.json is wrong: pickles say {recorded[0]}",
            }
        )
    layer_sk = layer.get("scikit-learn")
    if model_sk is None:
        checks.append(
            {
                "library": "scikit-learn",
                "model": "unknown",
                "layer": layer_sk or "-",
                "verdict": "not recorded (no scikit-learn estimator found)",
            }
        )
    elif layer_sk is None:
        problems.append(
            f"the model needs scikit-learn {model_sk} and the dependency layer has none; add "
            f"scikit-learn=={model_sk} to the requirements and run mlayer build-deps"
        )
        checks.append(
            {"library": "scikit-learn", "model": model_sk, "layer": "-", "verdict": "missing"}
        )
    elif model_sk != layer_sk:
        problems.append(
            f"the model was saved with scikit-learn {model_sk} (recorded in {source}) and the "
            f"dependency layer has {layer_sk}; scikit-learn does not promise to load a model "
            f"saved with another version. Retrain with the layer's pins "
            f"(scikit-learn=={layer_sk}, pip install -r requirements.txt) or rebuild the "
            f"dependency layer with the model's (scikit-learn=={model_sk} in requirements.txt, "
            "then mlayer build-deps)"
        )
        checks.append(
            {
                "library": "scikit-learn",
                "model": model_sk,
                "layer": layer_sk,
                "verdict": "refused: any version change",
            }
        )
    else:
        checks.append(
            {
                "library": "scikit-learn",
                "model": model_sk,
                "layer": layer_sk,
                "verdict": "same version",
            }
        )

    # numpy: pickles are portable within a major version.
    meta_np = meta_versions.get("numpy")
    layer_np = layer.get("numpy")
    model_np_major = _major(meta_np) if meta_np else (numpy_majors[-1] if numpy_majors else None)
    if numpy_majors and model_np_major is not None and model_np_major < numpy_majors[-1]:
        model_np_major = numpy_majors[-1]  # a numpy 2 pickle, whatever metadata says
    layer_np_major = _major(layer_np) if layer_np else None
    model_np_text = meta_np or (f"{model_np_major}.x" if model_np_major else "unknown")
    if model_np_major is None:
        checks.append(
            {
                "library": "numpy",
                "model": "unknown",
                "layer": layer_np or "-",
                "verdict": "not recorded",
            }
        )
    elif layer_np_major is None:
        problems.append("the dependency layer has no numpy; add it to the requirements")
        checks.append(
            {"library": "numpy", "model": model_np_text, "layer": "-", "verdict": "missing"}
        )
    elif model_np_major != layer_np_major:
        direction = (
            "numpy 1.x cannot load pickles written by numpy 2.x (they reference numpy._core)"
            if model_np_major > layer_np_major
            else "pickles do not survive a major numpy upgrade intact"
        )
        problems.append(
            f"the model was saved with numpy {model_np_text} and the dependency layer has "
            f"{layer_np}: {direction}. Retrain with numpy=={layer_np} or rebuild the "
            f"dependency layer with the model's numpy"
        )
        checks.append(
            {
                "library": "numpy",
                "model": model_np_text,
                "layer": layer_np,
                "verdict": "refused: major version change",
            }
        )
    else:
        checks.append(
            {
                "library": "numpy",
                "model": model_np_text,
                "layer": layer_np,
                "verdict": "same major version",
            }
        )

    for library in ("scipy", "joblib"):
        model_v, layer_v = meta_versions.get(library), layer.get(library)
        if model_v or layer_v:
            verdict = "same version" if model_v == layer_v else "differs (not gated)"
            checks.append(
                {
                    "library": library,
                    "model": model_v or "-",
                    "layer": layer_v or "-",
                    "verdict": verdict,
                }
            )
    return checks, problems, saved_with


# --------------------------------------------------------------------------- smoke test


def sample_records(meta: dict[str, Any], sample: Path | None) -> list[Any]:
    """Records to score: ``sample`` (JSON list, {"records": [...]} or JSON lines), else the
    metadata's examples, else records built from the input spec."""
    if sample is not None:
        if not sample.is_file():
            raise ConfigError(f"--sample {sample} does not exist")
        text = sample.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError:
            try:
                data = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as exc:
                raise ConfigError(
                    f'--sample {sample} must be a JSON list, {{"records": [...]}} or JSON '
                    f"lines: {exc}"
                ) from exc
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            data = data["records"]
        if not isinstance(data, list) or not data:
            raise ConfigError(f"--sample {sample} holds no records")
        return data
    examples = meta.get("examples")
    if isinstance(examples, list) and examples:
        return examples
    spec = meta["input"]
    if spec["kind"] == "text":
        field_name = spec.get("field", "text")
        return [{field_name: text} for text in ("great product", "terrible, broke at once", "ok")]
    features = spec["features"]
    return [{name: float(value) for name in features} for value in (0.0, 1.0, 10.0)]


def _interpreter_for(target: Target, python: str | None) -> str | None:
    try:
        return find_interpreter(target, python)
    except ConfigError:
        if python:
            raise
        return None


def _runnable_deps(
    deps_path: Path, deps: dict[str, Any], layers_dir: Path, python: str | None
) -> tuple[Path, dict[str, Any], str] | None:
    """A deps layer that can run on this machine: the chosen one, else one with the same
    package versions built for this machine's CPU."""
    candidates = [(deps_path, deps)]
    for path in sorted(layers_dir.glob("deps-*.json")):
        if path.resolve() == deps_path.resolve():
            continue
        try:
            other = json.loads(path.read_text())
        except ValueError:
            continue
        if other.get("packages") == deps.get("packages"):
            candidates.append((path, other))
    for path, data in candidates:
        target = Target(data["runtime"], data["arch"])
        if target.machine != host_machine():
            continue
        interpreter = _interpreter_for(target, python)
        if interpreter:
            return path, data, interpreter
    return None


def smoke_test(
    *,
    function_dir: Path,
    opt_dir: Path,
    python: str,
    records: list[Any],
    labels: list[Any] | None,
    version: int,
) -> dict[str, Any]:
    """Score ``records`` with the real function on the built layers; raise on any problem.

    Raises:
        SmokeTestError: the function failed to start or score, reported failures, or a
            warning was printed.
    """
    from mlayer.local.sandbox import LambdaEnvironment

    if not (function_dir / "lambda_function.py").is_file():
        raise ConfigError(
            f"no function at {function_dir} (lambda_function.py); pass --function-dir"
        )
    with LambdaEnvironment(
        task_dir=function_dir, opt_dir=opt_dir, python=python, memory_mb=1024, timeout_s=60
    ) as env:
        env.start()
        init = env.init
        assert init is not None
        if not init.ok:
            raise SmokeTestError(
                f"the function failed to start on the built layers: "
                f"{_error_text(init.error)}\n{_tail(init.stdout + init.stderr)}"
            )
        invocation = env.invoke({"records": records})
    if not invocation.ok:
        raise SmokeTestError(
            f"the function failed on the sample records: {_error_text(invocation.error)}\n"
            f"{_tail(invocation.logs)}"
        )
    output = init.stdout + init.stderr + invocation.stdout + invocation.stderr
    warnings = [line.strip() for line in output.splitlines() if _WARNING_LINE.search(line)]
    # The function catches the warnings of loading the model and logs them in its JSON
    # "model loaded" line: those count as much as printed ones.
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("warnings"):
            logged = entry["warnings"]
            warnings += [str(w) for w in (logged if isinstance(logged, list) else [logged])]
    if warnings:
        raise SmokeTestError(
            "the function printed warnings while loading or scoring the model: "
            + " | ".join(" ".join(w.split()) for w in warnings[:3])
            + " (an InconsistentVersionWarning means the model and the dependency layer "
            "disagree on scikit-learn: retrain or rebuild the layer)"
        )
    response = invocation.response if isinstance(invocation.response, dict) else {}
    predictions = response.get("predictions") or []
    counts = response.get("counts") or {}
    failures = response.get("batchItemFailures") or []
    problems = []
    if len(predictions) != len(records):
        problems.append(f"{len(predictions)} predictions for {len(records)} records")
    for key in ("failed", "dead_lettered", "skipped"):
        if counts.get(key):
            problems.append(f"{counts[key]} records {key.replace('_', ' ')}")
    if failures:
        problems.append(f"batchItemFailures {failures}")
    for prediction in predictions:
        if labels and prediction.get("label") not in labels:
            problems.append(f"label {prediction.get('label')!r} is not one of {labels}")
            break
        probability = prediction.get("probability")
        if probability is not None and not 0.0 <= float(probability) <= 1.0:
            problems.append(f"probability {probability} outside [0, 1]")
            break
        if str(prediction.get("model_version")) != str(version):
            problems.append(
                f"the function reported model version {prediction.get('model_version')!r}, "
                f"expected {version}"
            )
            break
    if problems:
        raise SmokeTestError(
            "the function ran but its answer is wrong: "
            + "; ".join(problems)
            + f"\n{_tail(invocation.logs)}"
        )
    return {
        "records": len(records),
        "predictions": predictions[:5],
        "init_ms": round(init.duration_ms, 1),
        "duration_ms": round(invocation.report.duration_ms, 1),
        "max_memory_mb": invocation.report.max_memory_used_mb,
        "python": python,
    }


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    return f"{error.get('errorType', '')}: {error.get('errorMessage', '')}".strip(": ")


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


# --------------------------------------------------------------------------- the build


def default_function_dir() -> Path:
    """function/ of this checkout."""
    return Path(__file__).resolve().parents[2] / "function"


def build_model(options: ModelBuildOptions, progress: Progress | None = None) -> ModelBuildResult:
    """Gate, package, smoke-test and write a model layer.

    Raises:
        ConfigError: bad model directory, metadata, sample, or no dependency layer.
        CompatibilityError: the model's scikit-learn / numpy cannot be promised to load with
            the dependency layer's (``force`` overrides).
        SmokeTestError: the real function failed or warned on the built layers.
        BudgetError: dependency layer + function + model over 250 MB unzipped.
    """
    say = progress or (lambda message: None)
    model_dir = options.model_dir
    meta = read_metadata(model_dir)
    name = meta["name"]
    stages = list(meta["stages"])
    layers_dir = options.layers_dir
    function_dir = options.function_dir or default_function_dir()
    deps_path, deps = find_deps_manifest(layers_dir, options.deps, options.runtime, options.arch)
    _deps_zip(deps_path)  # fail early when the manifest has no zip beside it
    warnings: list[str] = []
    notes: list[str] = []

    version = options.version
    if version is None:
        version = next_version(layers_dir, name, options.published_versions)
    elif version < 1:
        raise ConfigError(f"--version must be 1 or more, got {version}")
    files = {stage: sha256_file(model_dir / stage) for stage in stages}
    files["metadata.json"] = sha256_file(model_dir / "metadata.json")
    created = meta.get("created") or _newest_mtime(model_dir, list(files))
    runnable = _runnable_deps(deps_path, deps, layers_dir, options.python)

    with tempfile.TemporaryDirectory(prefix="mlayer-model-") as tmp:
        staging = Path(tmp)
        opt = staging / "opt"
        if runnable is not None:
            say("unpacking the layers as Lambda's /opt")
            from mlayer.local.sandbox import prepare_opt

            # The deps layer alone first: the pickles are read with it, before the gate.
            prepare_opt([_deps_zip(runnable[0])], opt)
            say("reading what the model's pickles record")
            pickles = inspect_pickles(model_dir, stages, runnable[2], [str(opt / "python")])
        else:
            pickles = _inspect_locally(model_dir, stages)
            notes.append(
                "the pickles were read with this machine's own joblib: the dependency layer "
                f"({deps['runtime']} {deps['arch']}) cannot run here"
            )
        checks, problems, saved_with = compatibility_gate(meta, pickles, deps)
        unreadable = {s: e["error"] for s, e in pickles["stages"].items() if e.get("error")}
        if unreadable and not problems:
            problems.append(
                "the dependency layer cannot load the model: "
                + "; ".join(f"{s}: {e}" for s, e in unreadable.items())
            )
        if problems:
            message = "; ".join(problems)
            if not options.force:
                raise CompatibilityError(f"{message}. (--force builds anyway, at your own risk)")
            warnings.append(
                f"--force: building a model the dependency layer may not load: {message}"
            )

        inner = dict(meta)
        inner.update({
            "version": version,
            "files": dict(sorted(files.items())),
            "created": created,
            "saved_with": saved_with,
        })  # fmt: skip
        manifest_file = staging / "manifest.json"
        manifest_file.write_text(json.dumps(inner, indent=2, sort_keys=True) + "\n")
        pairs = [(model_dir / f, f"model/{f}") for f in files]
        pairs.append((manifest_file, "model/manifest.json"))
        staged_zip = staging / "model.zip"
        result = write_zip(pairs, staged_zip)

        budget = Budget(parts=[
            BudgetPart(f"dependency layer ({deps['runtime']} {deps['arch']})",
                       int(deps.get("unzipped_bytes", 0))),
            BudgetPart("function", function_size(function_dir)),
            BudgetPart(f"model layer {name} v{version}", result.unzipped_bytes),
        ])  # fmt: skip
        if not budget.fits:
            biggest = sorted(files, key=lambda f: -(model_dir / f).stat().st_size)[:3]
            raise BudgetError(
                f"over Lambda's 250 MB unzipped limit by {mb(budget.over_by)}: "
                f"{budget.describe()}. Biggest model files: "
                + ", ".join(f"{f} {mb((model_dir / f).stat().st_size)}" for f in biggest)
            )

        smoke: dict[str, Any] = {"skipped": "--no-smoke-test"}
        if options.smoke_test:
            if runnable is None:
                raise SmokeTestError(
                    f"cannot smoke-test on this machine: the dependency layer is for "
                    f"{deps['runtime']} {deps['arch']} and this is a {host_machine()} machine "
                    f"without a matching interpreter. Build one that runs here with the same "
                    f"pins (mlayer build-deps --runtime {deps['runtime']} --arch "
                    f"{'arm64' if host_machine() == 'aarch64' else 'x86_64'}), pass --python, "
                    "or --no-smoke-test to skip the check"
                )
            run_path, run_deps, python = runnable
            if run_path != deps_path:
                notes.append(
                    f"smoke-tested on {run_path.name} (same package versions as "
                    f"{deps_path.name}, built for this machine)"
                )
            _add_model(staged_zip, opt)
            say(f"smoke test: the function scores sample records ({run_deps['runtime']})")
            smoke = smoke_test(
                function_dir=function_dir,
                opt_dir=opt,
                python=python,
                records=sample_records(meta, options.sample),
                labels=meta.get("labels"),
                version=version,
            )
        else:
            warnings.append("the smoke test was skipped (--no-smoke-test): the model is untested")

        layers_dir.mkdir(parents=True, exist_ok=True)
        zip_path = layers_dir / f"model-{name}-v{version}.zip"
        manifest_path = zip_path.with_suffix(".json")
        shutil.copyfile(staged_zip, zip_path)
    manifest = {
        "kind": "model",
        "name": name,
        "version": version,
        "sha256": result.sha256,
        "zip_bytes": result.zip_bytes,
        "unzipped_bytes": result.unzipped_bytes,
        "files": inner["files"],
        "stages": stages,
        "input": meta["input"],
        "labels": meta.get("labels"),
        "versions": meta.get("versions", {}),
        "saved_with": saved_with,
        "created": created,
        "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deps": {
            "runtime": deps.get("runtime"),
            "arch": deps.get("arch"),
            "sha256": deps.get("sha256"),
        },
        "forced": bool(problems),
        "smoke_test": smoke,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    notes.insert(0, budget.describe())
    upload = upload_note(result.zip_bytes, "model layer")
    if upload:
        notes.append(upload)
    return ModelBuildResult(
        zip_path, manifest_path, manifest, pickles, checks, smoke, warnings, notes
    )


def _add_model(model_zip: Path, opt_dir: Path) -> None:
    """Unzip the model layer over an /opt that holds the deps layer (as Lambda stacks them)."""
    import zipfile

    with zipfile.ZipFile(model_zip) as archive:
        archive.extractall(opt_dir)


def _inspect_locally(model_dir: Path, stages: list[str]) -> dict[str, Any]:
    try:
        return inspect_pickles(model_dir, stages, sys.executable, None)
    except BuildError as exc:
        raise BuildError(
            f"{exc}. Reading the pickles needs joblib: build a dependency layer for this "
            "machine, or install the training extra (pip install -e '.[train]')"
        ) from exc


def _newest_mtime(model_dir: Path, files: list[str]) -> str:
    newest = max((model_dir / f).stat().st_mtime for f in files)
    return datetime.fromtimestamp(int(newest), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
