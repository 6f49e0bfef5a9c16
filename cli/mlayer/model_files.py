"""The user's model files as they saved them: which files, in which order, under which name.

``mlayer build-model PATH`` accepts three layouts (``resolve`` tells which one PATH is):

- **a single model file** (``.joblib``, ``.pkl``, ``.pickle``, ``.sav``): one estimator or
  one ``Pipeline``;
- **a directory of stages**: the classic layout ``PreProc1_<name>.joblib``,
  ``PreProc2_<name>.joblib``, ..., ``<name>.joblib`` (preprocessors applied in PreProc
  number order, the model last), a directory holding a single model file, or any directory
  with ``--stages a,b,c``;
- **a directory with ``metadata.json``** (``training/train.py`` writes one; the format is in
  the README, "Your model"): stages, name, input, labels, examples, library versions.

Nothing here loads a model file: that happens only in the sandboxed Lambda environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer.errors import ConfigError

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle", ".sav")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PREPROC = re.compile(r"^PreProc(\d+)_(.+?)(\.joblib|\.pkl|\.pickle|\.sav)$")
_METADATA_KEYS = {
    "name", "stages", "input", "labels", "examples", "versions", "created", "training",
    "description",
}  # fmt: skip


@dataclass
class Overrides:
    """What flags say about the model, overriding what is inferred."""

    name: str | None = None
    stages: list[str] | None = None
    input_field: str | None = None
    features: list[str] | None = None
    labels: list[str] | None = None


@dataclass
class ModelSource:
    """The model files to package, in the order the function applies them."""

    directory: Path
    stages: list[str]
    name: str
    layout: str  # "file", "classic", "stages", "metadata"
    meta: dict[str, Any] = field(default_factory=dict)  # metadata.json, when there is one

    @property
    def files(self) -> list[str]:
        """Every file that goes into the layer: the stages, and metadata.json if present."""
        extra = ["metadata.json"] if self.layout == "metadata" else []
        return [*self.stages, *extra]

    def describe(self) -> str:
        chain = " -> ".join(self.stages)
        return {
            "file": f"a single model file ({chain})",
            "classic": f"the classic layout ({chain})",
            "stages": f"the stages given with --stages ({chain})",
            "metadata": f"metadata.json ({chain})",
        }[self.layout]


def parse_list(value: str | None, what: str) -> list[str] | None:
    """``a,b,c`` as a list (None when not given).

    Raises:
        ConfigError: an empty item.
    """
    if value is None:
        return None
    items = [item.strip() for item in value.split(",")]
    if not items or any(not item for item in items):
        raise ConfigError(f"{what} must be a comma-separated list without empty items: {value!r}")
    return items


def resolve(path: Path, overrides: Overrides | None = None) -> ModelSource:
    """Which layout ``path`` is, and its stages and name.

    Raises:
        ConfigError: the path does not exist, holds no model file, or its layout is
            ambiguous; the message names the flag or file that settles it.
    """
    given = overrides or Overrides()
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist; pass a model file (.joblib, .pkl, .pickle) or a directory "
            "of model files"
        )
    if path.is_file():
        if given.stages:
            raise ConfigError(f"--stages names files in a directory; {path} is a file")
        source = _single_file(path)
    elif (path / "metadata.json").is_file():
        source = _from_metadata(path)
        if given.stages:
            source.stages = _check_stages(path, given.stages)
    elif given.stages:
        source = ModelSource(path, _check_stages(path, given.stages), "", "stages")
    else:
        source = _from_directory(path)
    if given.name:
        source.name = given.name
    if not source.name:
        source.name = _name_from_file(Path(source.stages[-1]))
    if not NAME.match(source.name):
        raise ConfigError(
            f"the model name {source.name!r} must be 1-64 letters, digits, '-', '_' or '.': "
            "pass --name NAME"
        )
    return source


def _single_file(path: Path) -> ModelSource:
    if path.suffix == ".skops":
        raise ConfigError(
            f"{path}: skops files are not supported yet; save the model with "
            "joblib.dump(model, 'model.joblib') from a trusted environment"
        )
    if path.suffix not in MODEL_SUFFIXES:
        raise ConfigError(
            f"{path} is not a model file (expected {', '.join(MODEL_SUFFIXES)}): save the "
            "fitted estimator or Pipeline with joblib.dump(model, 'model.joblib')"
        )
    return ModelSource(path.parent, [path.name], "", "file")


def _name_from_file(path: Path) -> str:
    match = _PREPROC.match(path.name)
    stem = match.group(2) if match else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-._")[:64] or "model"


def _model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)


def _from_directory(directory: Path) -> ModelSource:
    files = _model_files(directory)
    if not files:
        raise ConfigError(
            f"{directory} holds no model file (.joblib, .pkl, .pickle, .sav) and no "
            "metadata.json: pass the file your training saved, or a directory of them"
        )
    preprocs: dict[str, list[tuple[int, str]]] = {}
    for path in files:
        match = _PREPROC.match(path.name)
        if match:
            preprocs.setdefault(match.group(2), []).append((int(match.group(1)), path.name))
    if not preprocs:
        if len(files) == 1:
            return ModelSource(directory, [files[0].name], "", "file")
        raise ConfigError(
            f"{directory} holds {len(files)} model files ({_names(files)}) and no "
            "metadata.json: give their order with --stages a,b,c (preprocessors first, the "
            "model last), or name them PreProc1_<name>.joblib, ..., <name>.joblib"
        )
    if len(preprocs) > 1:
        raise ConfigError(
            f"{directory} holds preprocessors of several models ({', '.join(sorted(preprocs))}): "
            "pass --stages a,b,c, or one model's files per directory"
        )
    ((name, numbered),) = preprocs.items()
    numbers = [number for number, _ in numbered]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(
            f"{directory}: two preprocessors share a number ({sorted(f for _, f in numbered)}); "
            "number them PreProc1_, PreProc2_, ... in the order they apply"
        )
    finals = [p.name for p in files if p.stem == name]
    if len(finals) != 1:
        expected = f"{name}.joblib"
        found = "none" if not finals else ", ".join(finals)
        raise ConfigError(
            f"{directory} has preprocessors for {name!r} but its model file {expected} is "
            f"missing (found {found}); the classic layout is PreProc1_{name}.joblib, ..., "
            f"{name}.joblib; or pass --stages a,b,c"
        )
    preproc_files = {filename for _, filename in numbered}
    others = [p.name for p in files if p.name not in finals and p.name not in preproc_files]
    if others:
        raise ConfigError(
            f"{directory} holds files outside the classic layout of {name!r} ({', '.join(others)}): "
            "remove them or pass --stages a,b,c"
        )
    stages = [filename for _, filename in sorted(numbered)] + finals
    return ModelSource(directory, stages, name, "classic")


def _names(files: list[Path]) -> str:
    shown = ", ".join(p.name for p in files[:6])
    return shown + (f" and {len(files) - 6} more" if len(files) > 6 else "")


def _check_stages(directory: Path, stages: list[str]) -> list[str]:
    for stage in stages:
        if Path(stage).name != stage:
            raise ConfigError(f"--stages: {stage!r} must be a file name inside {directory}")
        if not (directory / stage).is_file():
            present = _names(_model_files(directory)) or "no model files"
            raise ConfigError(f"--stages: {directory / stage} does not exist ({present} there)")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"--stages names a file twice: {','.join(stages)}")
    return list(stages)


def _from_metadata(directory: Path) -> ModelSource:
    path = directory / "metadata.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} must hold a JSON object (see README, 'Your model')")
    unknown = sorted(set(meta) - _METADATA_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; the keys are "
            f"{', '.join(sorted(_METADATA_KEYS))} (README, 'Your model')"
        )
    name = meta.get("name")
    if name is not None and (not isinstance(name, str) or not NAME.match(name)):
        raise ConfigError(
            f"{path}: name must be 1-64 letters, digits, '-', '_' or '.', got {name!r}"
        )
    stages = meta.get("stages")
    if stages is None:
        found = _model_files(directory)
        if len(found) != 1:
            raise ConfigError(
                f"{path} lists no stages and {directory} holds {len(found)} model files: add "
                '"stages": ["PreProc1_x.joblib", "x.joblib"] (applied in order, the model last)'
            )
        stages = [found[0].name]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
        raise ConfigError(f"{path}: stages must be a non-empty list of file names")
    for stage in stages:
        if Path(stage).name != stage:
            raise ConfigError(f"{path}: stage {stage!r} must be a file name inside {directory}")
        if not (directory / stage).is_file():
            raise ConfigError(f"{path} names stage {stage}, which is not in {directory}")
    spec = meta.get("input")
    if spec is not None:
        _check_input(spec, path)
    versions = meta.get("versions", {})
    if not isinstance(versions, dict):
        raise ConfigError(f"{path}: versions must map library names to versions")
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise ConfigError(f"{path}: labels must be a list")
    examples = meta.get("examples")
    if examples is not None and not isinstance(examples, list):
        raise ConfigError(f"{path}: examples must be a list of records")
    return ModelSource(directory, list(stages), name or "", "metadata", meta)


def _check_input(spec: Any, path: Path) -> None:
    if not isinstance(spec, dict) or spec.get("kind") not in ("text", "features"):
        raise ConfigError(
            f'{path}: input must be {{"kind": "text", "field": ...}} or '
            f'{{"kind": "features", "features": [...]}}, got {spec!r}'
        )
    if spec["kind"] == "features":
        features = spec.get("features")
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) and f for f in features)
        ):
            raise ConfigError(f"{path}: input.features must list the model's feature names")
        types = spec.get("types")
        if types is not None and (
            not isinstance(types, list)
            or len(types) != len(features)
            or not all(t in ("number", "string") for t in types)
        ):
            raise ConfigError(
                f'{path}: input.types must give "number" or "string" for each feature'
            )
