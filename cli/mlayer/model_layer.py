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
  (:class:`mlayer.lambda_env.environment.LambdaEnvironment`: function dir, the deps layer's
  python/, the standard library) with ``MODEL_DIR`` on the unzipped model layer scores
  sample records; an error or any warning (``InconsistentVersionWarning`` included) fails
  the build.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlayer.archive import (
    MIB,
    Budget,
    BudgetPart,
    ZipResult,
    mb,
    sha256_file,
    upload_note,
    write_zip,
)
from mlayer.deps_layer import function_size
from mlayer.errors import (
    BudgetError,
    BuildError,
    CompatibilityError,
    ConfigError,
    SmokeTestError,
)
from mlayer.interpreters import find_interpreter
from mlayer.manifests import DepsManifest, ManifestError, load_deps_manifest
from mlayer.model_files import ModelSource, Overrides, resolve
from mlayer.sizing import environment_size
from mlayer.targets import Target, host_machine

Progress = Callable[[str], None]
PublishedVersions = Callable[[], Iterable[int]] | Iterable[int] | None


# The pandas to add to a dependency layer: the same generation as its numpy and
# scikit-learn (pandas 3 installs beside numpy 2.2 too, but scikit-learn 1.7, the AL2 pins,
# was released before it; the suite tests 2.3.3 with them).
PANDAS_PINS = (((2, 3), "pandas==3.1.1"), ((0, 0), "pandas==2.3.3"))
# What that pandas adds to mlayer's dependency layer (slimmed, sourceless bytecode), MB =
# 10^6 bytes, measured with `python bench/layer_size.py --pandas`: 2.3.3 on python3.11 with
# the repo's pins, 3.1.1 on python3.13 with scikit-learn 1.9.1 / numpy 2.5.5 (README, "Your
# model").
# The most a stored model's files may weigh: Lambda's 10,240 MB of memory (and of /tmp).
STORE_LIMIT = 10_240 * MIB
PANDAS_ADDS_MB = {"pandas==2.3.3": 33.7, "pandas==3.1.1": 29.0}


@dataclass
class ModelBuildOptions:
    """Inputs of a model layer build."""

    model_dir: Path  # a model file, or a directory of them (see mlayer.model_files)
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
    overrides: Overrides = field(default_factory=Overrides)
    # "layer", "s3" (the model store: an archive the function downloads at init), or "auto":
    # a layer when the model fits the 250 MiB budget, else the store, said loudly.
    store: str = "auto"
    # Trace the modules the model never uses and list them in the manifest's
    # deferred_imports (docs/CONTRACTS.md, "Deferred imports").
    defer_imports: bool = False


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
) -> tuple[Path, DepsManifest]:
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
        try:
            return manifest, DepsManifest.load(manifest)
        except ManifestError as exc:
            raise ConfigError(
                f"--deps {deps}: {exc}; pass the .json (or .zip) that mlayer build-deps wrote"
            ) from None
    pattern = f"deps-{runtime or '*'}-{arch or '*'}.json"
    candidates = []
    for path in layers_dir.glob(pattern):
        data = load_deps_manifest(path)
        if data is not None:
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


def scan_model_files(directory: Path, stages: list[str]) -> dict[str, Any]:
    """What each stage file references and records, read without executing it.

    Raises:
        ConfigError: a stage is not a readable pickle / joblib file.
    """
    from mlayer.pickle_scan import ScanError, scan

    found: dict[str, Any] = {}
    for stage in stages:
        try:
            found[stage] = scan(directory / stage).as_dict()
        except ScanError as exc:
            raise ConfigError(f"cannot read {directory / stage}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {directory / stage}: {exc.strerror}") from None
    return {"stages": found, "reader": "static scan (the files were not executed)"}


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else None


def compatibility_gate(
    meta: dict[str, Any], pickles: dict[str, Any], layer: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Compare the model's library versions with the dependency layer's ``layer`` packages
    (name: version, as its manifest records them).

    Returns:
        (checks, problems, saved_with): each check says library, model, layer, verdict;
        problems are the refusals' reasons; saved_with is what the pickles recorded.
    """
    meta_versions = {str(k).lower(): str(v) for k, v in meta.get("versions", {}).items()}
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
            if model_v is None:
                verdict = "not recorded (not gated)"
            else:
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
        field_name = spec.get("field", "text") or "text"
        return [{field_name: text} for text in ("great product", "terrible, broke at once", "ok")]
    if spec.get("named") is False:
        return [[float(value)] * len(spec["features"]) for value in (0.0, 1.0, 10.0)]
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
    deps_path: Path, deps: DepsManifest, layers_dir: Path, python: str | None
) -> tuple[Path, DepsManifest, str] | None:
    """A deps layer that can run on this machine: the chosen one, else one with the same
    package versions built for this machine's CPU."""
    candidates = [(deps_path, deps)]
    for path in sorted(layers_dir.glob("deps-*.json")):
        if path.resolve() == deps_path.resolve():
            continue
        other = load_deps_manifest(path)
        if other is not None and other.packages == deps.packages:
            candidates.append((path, other))
    for path, data in candidates:
        target = Target(data.runtime, data.arch)
        if target.machine != host_machine():
            continue
        interpreter = _interpreter_for(target, python)
        if interpreter:
            return path, data, interpreter
    return None


# --------------------------------------------------------------------------- the build


def default_function_dir() -> Path:
    """function/ of this checkout."""
    return Path(__file__).resolve().parents[2] / "function"


@dataclass
class _Build:
    """What the steps of one build share."""

    options: ModelBuildOptions
    source: ModelSource
    deps_path: Path
    deps: DepsManifest
    function_dir: Path
    runnable: tuple[Path, DepsManifest, str] | None
    opt: Path
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected_error: str | None = None  # the model itself failed on the smoke test's records

    @property
    def model_bytes(self) -> int:
        return sum((self.source.directory / f).stat().st_size for f in self.source.stages)


def build_model(options: ModelBuildOptions, progress: Progress | None = None) -> ModelBuildResult:
    """Gate, inspect, package, smoke-test and write a model layer.

    The user's files are read without executing them for the gate (:mod:`mlayer.pickle_scan`)
    and executed only in the sandboxed Lambda environment (:mod:`mlayer.model_sandbox`).

    Raises:
        ConfigError: bad model path, metadata, flags or sample, or no dependency layer.
        CompatibilityError: the model's scikit-learn / numpy cannot be promised to load with
            the dependency layer's (``force`` overrides), or it needs a module the layer
            lacks (pandas for a DataFrame model, a class defined in ``__main__``).
        SmokeTestError: the real function failed, warned, or predicted differently.
        BudgetError: dependency layer + function + model over 250 MB unzipped.
    """
    say = progress or (lambda message: None)
    source = resolve(options.model_dir, options.overrides)
    layers_dir = options.layers_dir
    deps_path, deps = find_deps_manifest(layers_dir, options.deps, options.runtime, options.arch)
    _deps_zip(deps_path)  # fail early when the manifest has no zip beside it
    version = options.version
    if version is None:
        version = next_version(layers_dir, source.name, options.published_versions)
    elif version < 1:
        raise ConfigError(f"--version must be 1 or more, got {version}")

    say(f"reading {source.describe()} without executing it")
    pickles = scan_model_files(source.directory, source.stages)
    checks, problems, saved_with = compatibility_gate(source.meta, pickles, deps.packages)
    with tempfile.TemporaryDirectory(prefix="mlayer-model-") as tmp:
        staging = Path(tmp)
        build = _Build(
            options=options,
            source=source,
            deps_path=deps_path,
            deps=deps,
            function_dir=options.function_dir or default_function_dir(),
            runnable=_runnable_deps(deps_path, deps, layers_dir, options.python),
            opt=staging / "opt",
        )
        problems += _gate(build, pickles, problems, say)
        package = _package(build, say)
        inspected = _inspect(build, say)
        spec = _decide_input(build, inspected)
        _require_pandas(build, spec, inspected)
        labels = _decide_labels(build, inspected)
        records, expected = _records_and_expected(build, inspected, spec, say)
        outputs = (inspected or {}).get("outputs")
        eager = expected
        expected = _named(expected, labels, (outputs or {}).get("labels"))
        inner = _inner_manifest(source, version, spec, labels, outputs, records, saved_with)
        deferred = _trace_imports(build, package, spec, records, eager, say)
        if deferred is not None:
            inner["deferred_imports"] = deferred
        if package == "store":
            staged_zip = staging / "model.tar"
            result = _write_archive(source, inner, staging, staged_zip)
        else:
            staged_zip = staging / "model.zip"
            result = _write_layer_zip(source, inner, staging, staged_zip)
            budget = _budget(build, result.unzipped_bytes, version)
            if not budget.fits:
                raise BudgetError(_too_big(build, budget, None))
        smoke = _smoke(build, staged_zip, records, labels, version, expected, say)
        layers_dir.mkdir(parents=True, exist_ok=True)
        suffix = ".tar" if package == "store" else ".zip"
        zip_path = layers_dir / f"model-{source.name}-v{version}{suffix}"
        manifest_path = zip_path.with_suffix(".json")
        # One build per version: a stale archive of the other kind would be published instead.
        zip_path.with_suffix(".zip" if package == "store" else ".tar").unlink(missing_ok=True)
        shutil.copyfile(staged_zip, zip_path)
    manifest = _build_manifest(build, inner, result, forced=bool(problems), smoke=smoke)
    if "deferred_imports" in inner:
        manifest["deferred_imports"] = inner["deferred_imports"]
    manifest["package"] = package
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    if package == "store":
        build.notes.insert(0, _store_note(result, smoke))
    else:
        build.notes.insert(0, budget.describe())
        upload = upload_note(result.zip_bytes, "model layer")
        if upload:
            build.notes.append(upload)
    return ModelBuildResult(
        zip_path, manifest_path, manifest, pickles, checks, smoke, build.warnings, build.notes
    )


def _inner_manifest(
    source: ModelSource,
    version: int,
    spec: dict[str, Any],
    labels: list[Any] | None,
    outputs: dict[str, Any] | None,
    records: list[Any],
    saved_with: dict[str, Any],
) -> dict[str, Any]:
    """``model/manifest.json``: metadata.json's keys, then what the build decided."""
    inner = {key: value for key, value in source.meta.items() if key not in ("stages", "input")}
    files = {name: sha256_file(source.directory / name) for name in source.files}
    inner.update({
        "name": source.name,
        "version": version,
        "stages": source.stages,
        "input": spec,
        "labels": labels,
        "outputs": outputs,
        "examples": records,
        "layout": source.layout,
        "files": dict(sorted(files.items())),
        "created": source.meta.get("created") or _newest_mtime(source.directory, list(files)),
        "saved_with": saved_with,
    })  # fmt: skip
    return inner


def _gate(build: _Build, pickles: dict[str, Any], problems: list[str], say: Progress) -> list[str]:
    """Unpack the deps layer (when it runs here), add the modules it lacks to ``problems``,
    and refuse them unless forced. Returns the problems found here."""
    found: list[str] = []
    if build.runnable is not None:
        say("unpacking the layers as Lambda's /opt")
        from mlayer.lambda_env.environment import prepare_opt

        prepare_opt([_deps_zip(build.runnable[0])], build.opt)
        found = _missing_modules(pickles, build.opt)
    else:
        build.notes.append(
            "the dependency layer "
            f"({build.deps.runtime} {build.deps.arch}) cannot run here: the model's input is "
            "taken from metadata.json and flags, not read from the model"
        )
    every = problems + found
    if every:
        message = "; ".join(every)
        if not build.options.force:
            raise CompatibilityError(f"{message}. (--force builds anyway, at your own risk)")
        build.warnings.append(
            f"--force: building a model the dependency layer may not load: {message}"
        )
    return found


def _named(
    expected: list[Any] | None, labels: list[Any] | None, classes: list[Any] | None
) -> list[Any] | None:
    """The model's own predictions as the function answers them: with the label names
    given for its classes."""
    if expected is None or not labels or not classes or labels == classes:
        return expected
    names = dict(zip(map(str, classes), labels, strict=True))
    return [names.get(str(value), value) for value in expected]


def _write_layer_zip(
    source: ModelSource, inner: dict[str, Any], staging: Path, staged_zip: Path
) -> Any:
    """``model/`` with the files and ``manifest.json`` (``inner``), zipped deterministically."""
    manifest_file = staging / "manifest.json"
    manifest_file.write_text(json.dumps(inner, indent=2, sort_keys=True) + "\n")
    pairs = [(source.directory / f, f"model/{f}") for f in inner["files"]]
    pairs.append((manifest_file, "model/manifest.json"))
    return write_zip(pairs, staged_zip)


def _build_manifest(
    build: _Build, inner: dict[str, Any], result: Any, *, forced: bool, smoke: dict[str, Any]
) -> dict[str, Any]:
    """The manifest beside the zip in layers/ (docs/CONTRACTS.md)."""
    deps = build.deps
    return {
        "kind": "model",
        "name": inner["name"],
        "version": inner["version"],
        "sha256": result.sha256,
        "zip_bytes": result.zip_bytes,
        "unzipped_bytes": result.unzipped_bytes,
        "files": inner["files"],
        "stages": inner["stages"],
        "layout": inner["layout"],
        "input": inner["input"],
        "labels": inner["labels"],
        "outputs": inner["outputs"],
        "versions": build.source.meta.get("versions", {}),
        "saved_with": inner["saved_with"],
        "created": inner["created"],
        "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deps": {"runtime": deps.runtime, "arch": deps.arch, "sha256": deps.sha256},
        "forced": forced,
        "smoke_test": smoke,
    }


def _missing_modules(pickles: dict[str, Any], opt: Path) -> list[str]:
    """Modules the files reference that Lambda could not import (read from the scan)."""
    available = _layer_modules(opt / "python")
    problems: list[str] = []
    for stage, entry in pickles["stages"].items():
        for module in entry.get("modules", []):
            if module == "__main__":
                names = [c for c in entry.get("classes", []) if c.startswith("__main__.")]
                problems.append(
                    f"{stage} references {', '.join(names)}, defined in the script or notebook "
                    "that trained it: Lambda cannot import it. Move it into a module of its "
                    "own, ship that module in the dependency layer (requirements.txt or "
                    "--keep), and save the model again"
                )
            elif module not in sys.stdlib_module_names and module not in available:
                problems.append(
                    f"{stage} needs the module {module!r}, which the dependency layer does not "
                    f"have: add the package that provides it to requirements.txt and run "
                    "mlayer build-deps"
                )
    return problems


def _layer_modules(python: Path) -> set[str]:
    """Top-level names importable from a layer's python/, and its extension modules' names.

    Cython registers an extension module under its short name too (a forest of
    HistGradientBoosting pickles ``_loss.CyHalfBinomialLoss``), so those count.
    """
    names = {"builtins", "copyreg", "_codecs", "__builtin__", "copy_reg"}
    if not python.is_dir():
        return names
    for entry in python.iterdir():
        names.add(entry.name.split(".", 1)[0])
    for extension in python.rglob("*.so"):
        names.add(extension.name.split(".", 1)[0])
    return names


def _package(build: _Build, say: Progress) -> str:
    """ "layer" or "store": where this model goes, decided before anything runs.

    ``--store layer`` refuses a model over the layer budget (with the size compress=3 would
    give, measured); ``auto`` sends it to the S3 model store instead, saying so.

    Raises:
        BudgetError: over the layer budget with ``--store layer``, or too big even for the
            store (Lambda's 10,240 MB of memory and of /tmp).
    """
    model_bytes = build.model_bytes
    if model_bytes > STORE_LIMIT:
        raise BudgetError(
            f"the model's files are {mb(model_bytes)}: a Lambda function has at most 10,240 MB "
            "of memory and of /tmp, so it cannot load this model; serve it from a container "
            "service (ECS, SageMaker) or shrink it (fewer or shallower trees, compress=3)"
        )
    if build.options.store == "s3":
        return "store"
    budget = _budget(build, model_bytes, None)
    if budget.fits:
        return "layer"
    if build.options.store == "layer":
        measured = None
        if build.runnable is not None:
            say("too big for a layer: measuring the files saved with compress=3")
            measured = _inspect(build, say, compress=True)
        raise BudgetError(
            _too_big(build, budget, measured)
            + ". Or build it for the S3 model store: mlayer build-model --store s3"
        )
    build.warnings.append(
        f"the model does not fit in a layer ({budget.describe()}): packaged for the S3 model "
        "store instead. The function downloads it at init: publish it with mlayer "
        "publish-model --bucket BUCKET (--store layer refuses instead)"
    )
    say("too big for a layer: packaging it for the S3 model store")
    return "store"


def _write_archive(
    source: ModelSource, inner: dict[str, Any], staging: Path, staged: Path
) -> ZipResult:
    """The model archive of the S3 store: ``manifest.json`` and the files, an uncompressed
    deterministic tar (docs/CONTRACTS.md)."""
    from mlayer.archive import write_model_tar

    manifest_file = staging / "manifest.json"
    manifest_file.write_text(json.dumps(inner, indent=2, sort_keys=True) + "\n")
    files = list(inner["files"])
    sha256, size = write_model_tar(source.directory, files, staged, manifest=manifest_file)
    unpacked = manifest_file.stat().st_size + sum(
        (source.directory / name).stat().st_size for name in files
    )
    return ZipResult(staged, sha256, size, unpacked, len(inner["files"]) + 1)


def _store_note(result: ZipResult, smoke: dict[str, Any]) -> str:
    peak = smoke.get("max_memory_mb")
    sizing = environment_size(result.zip_bytes, result.unzipped_bytes, peak)
    return (
        f"model archive for the S3 model store: {mb(result.zip_bytes)}; the function needs "
        f"{sizing.describe()}"
    )


def _budget(build: _Build, model_bytes: int, version: int | None) -> Budget:
    deps = build.deps
    label = f"model layer {build.source.name}" + (f" v{version}" if version else "")
    return Budget(parts=[
        BudgetPart(f"dependency layer ({deps.runtime} {deps.arch})", deps.unzipped_bytes),
        BudgetPart("function", function_size(build.function_dir)),
        BudgetPart(label, model_bytes),
    ])  # fmt: skip


def _too_big(build: _Build, budget: Budget, measured: dict[str, Any] | None) -> str:
    directory = build.source.directory
    sizes = sorted(
        ((f, (directory / f).stat().st_size) for f in build.source.stages), key=lambda x: -x[1]
    )
    text = (
        f"the model does not fit in a layer: over Lambda's 250 MiB unzipped limit by "
        f"{mb(budget.over_by)} ({budget.describe()}). Model files: "
        + ", ".join(f"{name} {mb(size)}" for name, size in sizes)
    )
    compressed = (measured or {}).get("compressed")
    if not compressed:
        return text + (
            ". Saving them with joblib.dump(model, path, compress=3) often shrinks a forest "
            "several times (not measured: the dependency layer cannot run here)"
        )
    total = sum(entry["bytes"] for entry in compressed.values())
    room = budget.limit - sum(part.unzipped_bytes for part in budget.parts[:-1])
    load_s = sum(entry["load_ms"] for entry in compressed.values()) / 1000
    plain_s = sum(entry["original_load_ms"] for entry in compressed.values()) / 1000
    verdict = "fits" if total <= room else f"still does not fit (room: {mb(room)})"
    return text + (
        f". Saved with compress=3 they measure {mb(total)} (measured on your files), which "
        f"{verdict}: joblib.dump(model, 'model.joblib', compress=3). Decompression is paid "
        f"at every cold start: loading took {load_s:.2f} s compressed against {plain_s:.2f} s "
        "as saved (measured here)"
    )


def _inspect(build: _Build, say: Progress, *, compress: bool = False) -> dict[str, Any] | None:
    """The sandbox's report on the model (None when no deps layer runs here)."""
    if build.runnable is None:
        return None
    from mlayer.model_sandbox import inspect_model

    if not compress:
        say("loading the model in the sandboxed Lambda environment to read its input")
    report = inspect_model(
        function_dir=build.function_dir,
        opt_dir=build.opt,
        python=build.runnable[2],
        directory=build.source.directory,
        stages=build.source.stages,
        input_spec=build.source.meta.get("input"),
        records=None if compress else _given_records(build),
        compress=compress,
        model_bytes=build.model_bytes,
    )
    if report.get("error"):
        raise ConfigError(f"{build.source.describe()}: {report['error']}")
    return report


def _trace_imports(
    build: _Build,
    package: str,
    spec: dict[str, Any],
    records: list[Any],
    reference: list[Any] | None,
    say: Progress,
) -> list[str] | None:
    """The modules the model's load and predict never use (``--defer-imports``), traced in
    the sandbox with every module of the layers deferred; None when not asked.

    The trace's own predictions must equal the model's eager ones (``reference``, from the
    inspection): else, or when the trace fails, nothing is deferred and a note says why.
    The smoke test then runs the function with the list and compares again.
    """
    if not build.options.defer_imports:
        return None
    if package == "store":
        build.notes.append(
            "deferred imports: nothing is deferred for a model from the store (MODEL_URI): "
            "its manifest arrives with the archive, while the libraries import"
        )
        return []
    if build.runnable is None or reference is None or not build.options.smoke_test:
        build.notes.append(
            "deferred imports: not traced (the model could not be run and checked here), "
            "nothing is deferred"
        )
        return []
    from mlayer.model_sandbox import inspect_model

    say("tracing the modules the model uses (deferred imports)")
    try:
        traced = inspect_model(
            function_dir=build.function_dir,
            opt_dir=build.opt,
            python=build.runnable[2],
            directory=build.source.directory,
            stages=build.source.stages,
            input_spec=spec,
            records=records,
            model_bytes=build.model_bytes,
            trace=True,
        )
    except BuildError as exc:
        build.notes.append(f"deferred imports: the trace failed, nothing is deferred ({exc})")
        return []
    problem = traced.get("expected_error")
    if problem is None and traced.get("expected") != reference:
        problem = (
            f"its predictions {traced.get('expected')!r} differ from the eager ones {reference!r}"
        )
    if problem:
        build.notes.append(f"deferred imports: the trace failed, nothing is deferred ({problem})")
        return []
    names = [str(name) for name in traced.get("deferred_imports") or []]
    build.notes.append(
        f"deferred imports: {len(names)} modules the model never uses are imported without "
        f"running ({traced.get('deferred_ran', 0)} others run as they are used)"
    )
    return names


def _decide_input(build: _Build, inspected: dict[str, Any] | None) -> dict[str, Any]:
    """The input spec: metadata.json's, else the inferred one; flags override both."""
    given = build.options.overrides
    meta_spec = build.source.meta.get("input")
    inferred = (inspected or {}).get("inferred")
    if meta_spec is not None:
        spec = dict(meta_spec)
        if (
            inferred
            and inferred["kind"] == "features"
            and spec["kind"] == "features"
            and list(spec["features"]) == inferred["features"]
        ):
            # A hand-written spec for a DataFrame model: types and the DataFrame come from it.
            for key in ("types", "dataframe", "named"):
                spec.setdefault(key, inferred[key])
    elif inferred is not None:
        spec = dict(inferred)
    elif given.features:
        spec = {"kind": "features", "features": list(given.features), "named": True}
    elif given.input_field:
        spec = {"kind": "text", "field": given.input_field}
    else:
        reason = (inspected or {}).get("infer_error") or (
            "the dependency layer cannot run here to read it from the model"
        )
        raise ConfigError(
            f"cannot tell what the model reads: {reason}. Pass --features a,b,c or --input-field F"
        )
    if given.features is not None:
        spec = _override_features(spec, given.features)
    if given.input_field is not None:
        spec["field"] = given.input_field
    return spec


def _override_features(spec: dict[str, Any], names: list[str]) -> dict[str, Any]:
    if spec["kind"] == "text":
        raise ConfigError(
            "--features names numeric inputs, but this model reads text (its first step is a "
            "text vectorizer): use --input-field to name the text field"
        )
    if len(names) != len(set(names)):
        raise ConfigError(f"--features names a column twice: {','.join(names)}")
    current = list(spec["features"])
    if spec.get("named", True) and spec.get("dataframe"):
        if sorted(names) != sorted(current):
            raise ConfigError(
                f"--features {','.join(names)} differs from the columns the model was fitted "
                f"on ({', '.join(current)}); a model fitted on a DataFrame reads those names "
                "(drop --features)"
            )
        return spec
    if len(names) != len(current):
        raise ConfigError(
            f"--features names {len(names)} columns but the model takes {len(current)} "
            "(n_features_in_)"
        )
    return {**spec, "features": names, "named": True}


def _require_pandas(build: _Build, spec: dict[str, Any], inspected: dict[str, Any] | None) -> None:
    if not spec.get("dataframe") or "pandas" in build.deps.packages:
        return
    numpy = build.deps.packages.get("numpy", "0")
    numbers = tuple(int(p) for p in re.findall(r"\d+", numpy)[:2])
    pin = next(pin for floor, pin in PANDAS_PINS if numbers >= floor)
    steps = " -> ".join((inspected or {}).get("steps", [])) or "the model"
    columns = ", ".join(spec["features"][:6]) + (", ..." if len(spec["features"]) > 6 else "")
    raise CompatibilityError(
        f"{steps} was fitted on a pandas DataFrame (columns {columns}) and must be given "
        f"one, and the dependency layer has no pandas: add the line {pin} to requirements.txt "
        f"and run mlayer build-deps (pandas adds about {PANDAS_ADDS_MB[pin] * 1e6 / MIB:.0f} MiB "
        "of the 250 MiB)"
    )


def _decide_labels(build: _Build, inspected: dict[str, Any] | None) -> list[Any] | None:
    given = build.options.overrides.labels
    classes = ((inspected or {}).get("outputs") or {}).get("labels")
    if given is not None:
        if classes is None:
            raise ConfigError(
                "--labels names classes, but the model has no classes_ (it is not a classifier)"
            )
        if len(given) != len(classes):
            raise ConfigError(
                f"--labels names {len(given)} labels but the model has {len(classes)} classes "
                f"({', '.join(map(str, classes[:10]))})"
            )
        return list(given)
    labels = build.source.meta.get("labels")
    if labels is not None:
        return list(labels)
    return classes


def _given_records(build: _Build) -> list[Any] | None:
    """The smoke test's records when the user gave them (--sample, metadata's examples)."""
    examples = build.source.meta.get("examples")
    if not build.options.sample and not examples:
        return None
    return sample_records({"examples": examples}, build.options.sample)


def _records_and_expected(
    build: _Build, inspected: dict[str, Any] | None, spec: dict[str, Any], say: Progress
) -> tuple[list[Any], list[Any] | None]:
    """The smoke test's records (--sample, metadata's examples, else made from what the
    model learnt) and what the model itself predicts for them (None: not known here).

    The first inspection already predicted them for the spec it used; only when flags
    changed the spec in a way the records cannot follow does the model run again.
    """
    given = _given_records(build)
    if inspected is None:
        return given or sample_records({"input": spec}, None), None
    used = inspected.get("spec")
    found: dict[str, Any] | None = inspected
    if given is not None:
        records = given
        if spec != used:
            found = None
    else:
        adapted = _adapt_examples(inspected.get("examples"), used, spec)
        records = adapted if adapted is not None else []
        if adapted is None:
            found = None
    if found is None:
        from mlayer.model_sandbox import inspect_model

        assert build.runnable is not None
        say("predicting the sample records with the model itself")
        found = inspect_model(
            function_dir=build.function_dir,
            opt_dir=build.opt,
            python=build.runnable[2],
            directory=build.source.directory,
            stages=build.source.stages,
            input_spec=spec,
            records=given,
            model_bytes=build.model_bytes,
        )
        if given is None:
            records = list(found["examples"])
    if found.get("expected_error"):
        # The smoke test says what is wrong with the records first (the function reports
        # each bad one); if it passes, this error is raised after it.
        build.expected_error = str(found["expected_error"])
        return records, None
    expected = found.get("expected")
    return records, list(expected) if isinstance(expected, list) else None


def _adapt_examples(
    examples: Any, used: dict[str, Any] | None, spec: dict[str, Any]
) -> list[Any] | None:
    """The examples made for ``used`` rewritten for ``spec`` when only names differ (a text
    field, names given to an array model's columns); None when they cannot follow."""
    if not isinstance(examples, list) or used is None:
        return None
    if spec == used:
        return examples
    if spec["kind"] == used["kind"] == "text":
        texts = [
            next(v for v in e.values() if isinstance(v, str)) if isinstance(e, dict) else e
            for e in examples
        ]
        return [{spec.get("field") or "text": text} for text in texts]
    if (
        spec["kind"] == used["kind"] == "features"
        and used.get("named") is False
        and spec.get("named", True)
        and len(spec["features"]) == len(used["features"])
        and not spec.get("dataframe")
        and not spec.get("field")
    ):
        return [dict(zip(spec["features"], row, strict=True)) for row in examples]
    return None


def _smoke(
    build: _Build,
    staged_zip: Path,
    records: list[Any],
    labels: list[Any] | None,
    version: int,
    expected: list[Any] | None,
    say: Progress,
) -> dict[str, Any]:
    """The smoke test's report, or why it was skipped (--no-smoke-test)."""
    if not build.options.smoke_test:
        build.warnings.append("the smoke test was skipped (--no-smoke-test): the model is untested")
        return {"skipped": "--no-smoke-test"}
    deps = build.deps
    if build.runnable is None:
        raise SmokeTestError(
            f"cannot smoke-test on this machine: the dependency layer is for "
            f"{deps.runtime} {deps.arch} and this is a {host_machine()} machine "
            f"without a matching interpreter. Build one that runs here with the same "
            f"pins (mlayer build-deps --runtime {deps.runtime} --arch "
            f"{'arm64' if host_machine() == 'aarch64' else 'x86_64'}), pass --python, "
            "or --no-smoke-test to skip the check"
        )
    from mlayer.model_sandbox import memory_for, smoke_test

    run_path, run_deps, python = build.runnable
    if run_path != build.deps_path:
        build.notes.append(
            f"smoke-tested on {run_path.name} (same package versions as "
            f"{build.deps_path.name}, built for this machine)"
        )
    _add_model(staged_zip, build.opt)
    say(f"smoke test: the function scores sample records ({run_deps.runtime})")
    report = smoke_test(
        function_dir=build.function_dir,
        opt_dir=build.opt,
        python=python,
        records=records,
        labels=labels if labels and build.source.meta.get("labels") is not None else None,
        version=version,
        expected=expected,
        memory_mb=memory_for(build.model_bytes),
    )
    if build.expected_error:
        raise SmokeTestError(
            f"the model itself fails on the sample records ({build.expected_error}) "
            "while the function scored them: check --sample and the input it was "
            "fitted on"
        )
    return report


def smoke_test_directory(
    model_dir: Path,
    *,
    layers_dir: Path,
    records: list[Any],
    version: int,
    runtime: str | None = None,
    arch: str | None = None,
    python: str | None = None,
    function_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the real function on the dependency layer built in ``layers_dir`` with
    ``model_dir`` as /opt/model (a model or a model set), on ``records``; its report.

    Raises:
        ConfigError: no dependency layer build.
        SmokeTestError: no interpreter to run it here, or the function failed.
    """
    from mlayer.lambda_env.environment import prepare_opt
    from mlayer.model_sandbox import memory_for, smoke_test

    deps_path, deps = find_deps_manifest(layers_dir, None, runtime, arch)
    runnable = _runnable_deps(deps_path, deps, layers_dir, python)
    if runnable is None:
        raise SmokeTestError(
            f"cannot smoke-test on this machine: the dependency layer is for {deps.runtime} "
            f"{deps.arch} and this is a {host_machine()} machine without a matching interpreter"
        )
    run_path, _, interpreter = runnable
    size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    with tempfile.TemporaryDirectory(prefix="mlayer-smoke-") as tmp:
        opt = Path(tmp) / "opt"
        prepare_opt([_deps_zip(run_path)], opt)
        shutil.copytree(model_dir, opt / "model")
        return smoke_test(
            function_dir=function_dir or default_function_dir(),
            opt_dir=opt,
            python=interpreter,
            records=records,
            labels=None,
            version=version,
            expected=None,
            memory_mb=memory_for(size),
        )


def _add_model(model_zip: Path, opt_dir: Path) -> None:
    """Unzip the model layer over an /opt that holds the deps layer (as Lambda stacks them);
    a store archive goes to /opt/model, where the function finds the same files."""
    import zipfile

    if model_zip.suffix == ".tar":
        import tarfile

        with tarfile.open(model_zip, "r:") as tar:
            tar.extractall(opt_dir / "model", filter="data")
        return
    with zipfile.ZipFile(model_zip) as archive:
        archive.extractall(opt_dir)


def _newest_mtime(model_dir: Path, files: list[str]) -> str:
    newest = max((model_dir / f).stat().st_mtime for f in files)
    return datetime.fromtimestamp(int(newest), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
