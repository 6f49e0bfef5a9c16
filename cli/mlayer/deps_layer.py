"""The dependency layer build: install, slim, strip, bytecode, verify, zip, in that order.

One build, whatever the method; each step is a named function here, the concerns they use
have rooms of their own:

1. install: ``scripts/get-layer-package.sh install`` (:mod:`mlayer.layer_script`) puts the
   pins' wheels for the runtime's ABI, CPU and glibc (:mod:`mlayer.targets`) into
   ``python/``: on the host with pip's cross-platform options for ``--method pip``, run by
   mlayer's own pinned pip (:mod:`mlayer.wheels`, :mod:`mlayer.build_pip`); inside a Lambda
   build image, with the image's pip, for ``--method docker`` (:mod:`mlayer.docker`).
2. slim and strip (:mod:`mlayer.slim`): rules remove what run time never needs, each
   reporting files and bytes; ``strip --strip-unneeded`` on extension modules only.
3. bytecode + verify: with an interpreter of the target version (:mod:`mlayer.interpreters`:
   ``--python``, the local one, ``python3.X`` on PATH, pyenv's, uv's, or the image's; it
   also runs pip in step 1), write unchecked-hash pycs for that version (by default
   *sourceless*: ``pkg/mod.pyc`` replaces ``pkg/mod.py``, see ``BYTECODE_MODES``), then
   import every top-level package with only the layer and the standard library on
   ``sys.path``: the layer is checked as it ships.
4. zip deterministically into ``layers/deps-<runtime>-<arch>.zip`` with its manifest, and
   check Lambda's size budget.

Identical inputs reuse a cached build (``~/.cache/mlayer``), so repeated builds are quick.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from mlayer import __version__
from mlayer.archive import (
    ZIP_ENCODER_CHOICES,
    Budget,
    BudgetPart,
    ZipResult,
    choose_zip_encoder,
    dir_size,
    iter_files,
    mb,
    needs_s3,
    upload_note,
    write_zip,
    zopfli_available,
)
from mlayer.build_pip import PIP_VERSION, ensure_pip
from mlayer.docker import DEFAULT_IMAGE, DockerBuild, ensure_docker
from mlayer.errors import BudgetError, BuildError, ConfigError
from mlayer.interpreters import InterpreterSearch, interpreter_version, locate_interpreter
from mlayer.layer_script import output_tail, run_script, script_path
from mlayer.manifests import DepsManifest
from mlayer.slim import find_strip, in_test_dir, records_bytes, slim, strip_extensions
from mlayer.targets import Target, host_machine
from mlayer.wheels import default_runtime, has_markers, install_with_pip

Progress = Callable[[str], None]

METHODS = ("pip", "docker")
# sourceless (default): each module's .pyc replaces its .py; all: __pycache__ .pyc beside the
# sources; imports: __pycache__ .pyc only for the modules importing the packages loads.
BYTECODE_MODES = ("sourceless", "all", "imports", "none")

# What an interpreter without bytecode in the read-only /opt costs at each cold start, as
# measured for numpy + scipy + scikit-learn (bench/layer_size.py, README "Layers"): 2.9 s of
# imports instead of 0.9 s.
NO_BYTECODE_COST = "about 2 s more at every cold start (imports recompile scikit-learn each time)"


@dataclass
class DepsBuildOptions:
    """Everything a dependency layer build depends on (all of it goes into the cache key)."""

    requirements: Path
    runtime: str | None = None
    arch: str = "x86_64"
    method: str = "pip"
    image: str | None = None
    python: str | None = None
    keep: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    strip: bool = True
    bytecode: str = "sourceless"
    keep_source: tuple[str, ...] = ()
    layers_dir: Path = Path("layers")
    cache_dir: Path | None = None
    use_cache: bool = True
    function_dir: Path | None = None
    zip_encoder: str = "auto"


@dataclass
class DepsBuildResult:
    """What a build produced: the zip, its manifest, and a JSON-able report of each step."""

    zip_path: Path
    manifest_path: Path
    manifest: DepsManifest
    report: dict[str, Any]
    cached: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- paths, cache


def default_cache_dir() -> Path:
    """``$MLAYER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlayer``, else ``~/.cache/mlayer``."""
    if os.environ.get("MLAYER_CACHE_DIR"):
        return Path(os.environ["MLAYER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlayer"


# The modules whose code shapes what a build writes (with the script): their bytes are part
# of the cache key.
_BUILD_MODULES = (
    "deps_layer", "archive", "build_pip", "targets", "interpreters", "layer_script", "wheels",
    "docker", "slim", "manifests",
)  # fmt: skip


def _source_fingerprint() -> str:
    """Hash of the code that shapes a build, so a changed rule never reuses an old layer."""
    digest = hashlib.sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    for path in (*(here / f"{name}.py" for name in _BUILD_MODULES), script_path()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _read_requirements(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(
            f"requirements file {path} not found; pass --requirements FILE with the pins "
            "(e.g. scikit-learn==1.7.2)"
        )
    return path.read_bytes()


# --------------------------------------------------------------------------- metadata


def installed_packages(root: Path) -> dict[str, str]:
    """{distribution name: version} from the layer's ``*.dist-info/METADATA``."""
    packages: dict[str, str] = {}
    parser = email.parser.HeaderParser()
    for metadata in sorted(root.glob("*.dist-info/METADATA")):
        headers = parser.parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
        if headers.get("Name") and headers.get("Version"):
            packages[str(canonicalize_name(headers["Name"]))] = headers["Version"]
    return packages


def package_sizes(root: Path) -> dict[str, int]:
    """Unzipped bytes per distribution, from each dist-info RECORD (vendored libs included)."""
    owner: dict[str, str] = {}
    parser = email.parser.HeaderParser()
    for info in sorted(root.glob("*.dist-info")):
        metadata = info / "METADATA"
        name = info.name.split("-")[0]
        if metadata.is_file():
            name = parser.parsestr(metadata.read_text(errors="replace")).get("Name") or name
        record = info / "RECORD"
        if record.is_file():
            for line in record.read_text(errors="replace").splitlines():
                rel = line.rsplit(",", 2)[0]
                owner[os.path.normpath(rel)] = str(canonicalize_name(name))
    sizes: dict[str, int] = {}
    for path in iter_files(root):
        rel = os.path.normpath(path.relative_to(root).as_posix())
        if rel in owner:
            name = owner[rel]
        else:
            # Bytecode written after install is not in RECORD: charge it to its source's owner.
            source = re.sub(r"__pycache__/([^/]+)\.cpython-\d+\.pyc$", r"\1.py", rel)
            name = owner.get(source, "(other)")
        sizes[name] = sizes.get(name, 0) + path.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- budget


def function_size(function_dir: Path | None) -> int:
    """Unzipped size of the function code as deploy-function zips it (no caches, no tests)."""
    if function_dir is None or not function_dir.is_dir():
        return 0
    total = 0
    for path in iter_files(function_dir):
        rel = path.relative_to(function_dir).as_posix()
        if "__pycache__" in rel or in_test_dir(rel) or rel.endswith(".pyc"):
            continue
        total += path.stat().st_size
    return total


def newest_model_manifest(layers_dir: Path) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for path in layers_dir.glob("model-*-v*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == "model" and (
            best is None or int(data.get("version", 0)) > int(best.get("version", 0))
        ):
            best = data
    return best


def deps_budget(unzipped: int, function_dir: Path | None, layers_dir: Path) -> Budget:
    parts = [BudgetPart("dependency layer", unzipped)]
    notes = []
    fn = function_size(function_dir)
    if fn:
        parts.append(BudgetPart("function", fn))
    model = newest_model_manifest(layers_dir)
    if model:
        parts.append(
            BudgetPart(
                f"model layer {model.get('name')} v{model.get('version')}",
                int(model.get("unzipped_bytes", 0)),
            )
        )
    else:
        notes.append("no model layer built yet: its size will count against the same 250 MiB")
    return Budget(parts=parts, notes=notes)


def _budget_error(budget: Budget, sizes: dict[str, int]) -> BudgetError:
    biggest = ", ".join(f"{name} {mb(size)}" for name, size in list(sizes.items())[:5])
    return BudgetError(
        f"over Lambda's 250 MiB unzipped limit by {mb(budget.over_by)}: {budget.describe()}. "
        f"Biggest packages in the layer: {biggest}. Drop packages from the requirements, "
        "or --exclude parts of them the function never imports"
    )


# --------------------------------------------------------------------------- the build


def _cache_key(
    options: DepsBuildOptions,
    target: Target,
    requirements: bytes,
    python: str | None,
    image: str | None,
) -> str:
    parts = {
        "requirements_sha256": hashlib.sha256(requirements).hexdigest(),
        "runtime": target.runtime,
        "arch": target.arch,
        "method": options.method,
        "image": image,
        "keep": sorted(options.keep),
        "exclude": sorted(options.exclude),
        "strip": options.strip,
        "strip_tool": find_strip(target.machine) if options.strip else None,
        "bytecode": options.bytecode,
        "keep_source": sorted(options.keep_source),
        "python": interpreter_version(python) if python else None,
        # the docker method uses the image's pip, which the image name stands for
        "pip": PIP_VERSION if options.method == "pip" else None,
        "code": _source_fingerprint(),
        "zip_encoder": options.zip_encoder,
        # auto and zopfli zip differently once zopfli is installed
        "zopfli": zopfli_available() if options.zip_encoder != "deflate" else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _layer_names(target: Target) -> str:
    return f"deps-{target.runtime}-{target.arch}"


@dataclass
class _Plan:
    """What one build decided before it starts: target, interpreter, image, where it writes."""

    options: DepsBuildOptions
    target: Target
    requirements: bytes
    cache_dir: Path
    search: InterpreterSearch  # the interpreter that compiles, verifies and runs pip
    docker: str | None = None  # the docker client, for --method docker
    image: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def python(self) -> str | None:
        return self.search.path

    def cache_entry(self) -> Path:
        """Where the cache keeps a build of these inputs (the key runs the interpreter)."""
        python = self.python if self.docker is None else None
        key = _cache_key(self.options, self.target, self.requirements, python, self.image)
        return self.cache_dir / "deps" / key

    @property
    def zip_path(self) -> Path:
        return self.options.layers_dir / f"{_layer_names(self.target)}.zip"

    @property
    def manifest_path(self) -> Path:
        return self.options.layers_dir / f"{_layer_names(self.target)}.json"


def build_deps(options: DepsBuildOptions, progress: Progress | None = None) -> DepsBuildResult:
    """Build the dependency layer zip and manifest under ``options.layers_dir``.

    Raises:
        ConfigError: bad requirements path, runtime, ``--python``, pattern.
        BuildError: a pin has no wheel for the target, an import fails in the layer.
        DockerError: ``--method docker`` without a running Docker engine.
        BudgetError: the layer (with the function and model layer) is over 250 MB unzipped.
    """
    started = time.monotonic()
    say = progress or (lambda message: None)
    plan = _plan(options, progress)
    cache_entry = plan.cache_entry()
    if options.use_cache and (cache_entry / "report.json").is_file():
        say("reusing the cached build (same requirements, target and options)")
        return _reuse(plan, cache_entry, started)
    with tempfile.TemporaryDirectory(prefix="mlayer-deps-") as tmp:
        manifest, report, budget = _build(plan, Path(tmp), cache_entry, say)
    report["budget"] = _budget_report(budget)
    return DepsBuildResult(
        plan.zip_path,
        plan.manifest_path,
        manifest,
        report,
        cached=False,
        seconds=time.monotonic() - started,
        warnings=plan.warnings,
        notes=_notes(manifest, budget, report),
    )


def _check_options(options: DepsBuildOptions) -> None:
    """Refuse a method, bytecode mode or flag combination the build does not know."""
    if options.method not in METHODS:
        raise ConfigError(f"unknown method {options.method!r}; choose pip or docker")
    if options.bytecode not in BYTECODE_MODES:
        raise ConfigError(
            f"unknown bytecode mode {options.bytecode!r}; choose {', '.join(BYTECODE_MODES)}"
        )
    if options.keep_source and options.bytecode != "sourceless":
        raise ConfigError(
            f"--keep-source only applies to --bytecode sourceless (with --bytecode "
            f"{options.bytecode} every .py is kept)"
        )


def _plan(options: DepsBuildOptions, progress: Progress | None) -> _Plan:
    """Check the options, choose the runtime and find the interpreter (or the image)."""
    _check_options(options)
    requirements = _read_requirements(options.requirements)
    cache_dir = options.cache_dir or default_cache_dir()
    runtime = options.runtime or default_runtime(
        options.requirements, options.arch, cache_dir, progress, options.python
    )
    target = Target(runtime, options.arch)
    warnings_: list[str] = []
    if target.deprecated:
        warnings_.append(
            f"Lambda deprecated {target.runtime} on {target.deprecated} (Amazon Linux 2): "
            "it gets no more security patches, and Lambda later blocks creating and then "
            "updating functions on it; prefer python3.12 or newer"
        )
    if options.method == "docker":
        docker = ensure_docker()
        image = options.image or DEFAULT_IMAGE.format(runtime=target.runtime, arch=target.arch)
        # the image's own interpreter is the target's
        search = InterpreterSearch(target.python_version, "python", f"the image {image}")
        return _Plan(options, target, requirements, cache_dir, search, docker, image, warnings_)
    if options.image:
        raise ConfigError("--image only applies to --method docker")
    search = locate_interpreter(target.python_version, options.python)
    return _Plan(options, target, requirements, cache_dir, search, warnings=warnings_)


def _reuse(plan: _Plan, cache_entry: Path, started: float) -> DepsBuildResult:
    """Copy a cached build of the same inputs into layers/ (its budget checked again)."""
    options = plan.options
    report = json.loads((cache_entry / "report.json").read_text())
    manifest = DepsManifest.load(cache_entry / "manifest.json")
    budget = deps_budget(manifest.unzipped_bytes, options.function_dir, options.layers_dir)
    if not budget.fits:
        raise _budget_error(budget, report.get("package_sizes", {}))
    options.layers_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache_entry / "layer.zip", plan.zip_path)
    manifest.write(plan.manifest_path)
    report["budget"] = _budget_report(budget)
    return DepsBuildResult(
        plan.zip_path,
        plan.manifest_path,
        manifest,
        report,
        cached=True,
        seconds=time.monotonic() - started,
        warnings=plan.warnings + report.get("warnings", []),
        notes=_notes(manifest, budget, report),
    )


def _build(
    plan: _Plan, work: Path, cache_entry: Path, say: Progress
) -> tuple[DepsManifest, dict[str, Any], Budget]:
    """Every step of a fresh build in ``work``; the zip and manifest land in layers/ and the
    cache."""
    options, target = plan.options, plan.target
    layer = work / "python"
    pip_report, docker_build = _install(plan, work, say)
    packages = installed_packages(layer)
    unslimmed, unslimmed_files = dir_size(layer)
    slim_report, strip_report = _slim_and_strip(plan, layer, say)
    verify_report, bytecode_report = _verify_and_compile(
        options, target, plan.search, layer, work, docker_build, say
    )
    _warn_about_bytecode(plan, verify_report, bytecode_report)

    sizes = package_sizes(layer)
    unzipped, _files = dir_size(layer)
    budget = deps_budget(unzipped, options.function_dir, options.layers_dir)
    if not budget.fits:
        raise _budget_error(budget, sizes)

    say("writing the zip")
    staged = work / "layer.zip"
    result, zip_report = _write_layer_zip(layer, staged, options.zip_encoder, say)
    manifest = DepsManifest(
        runtime=target.runtime,
        arch=target.arch,
        sha256=result.sha256,
        zip_bytes=result.zip_bytes,
        unzipped_bytes=result.unzipped_bytes,
        files=result.files,
        packages=packages,
        bytecode=bool(bytecode_report.get("files")),
        bytecode_mode=bytecode_report["mode"],
        method=options.method,
        pip=pip_report["version"],
        requirements_sha256=hashlib.sha256(plan.requirements).hexdigest(),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        image=plan.image,
        python_version=target.python_version,
        verified=bool(verify_report.get("imported")) and not verify_report.get("failed"),
        mlayer_version=__version__,
    )
    report = {
        "target": {
            "runtime": target.runtime,
            "arch": target.arch,
            "abi": target.abi,
            "glibc": target.glibc_text,
            "platforms": target.platforms(),
        },
        "method": options.method,
        "image": plan.image,
        "pip": pip_report,
        "installed": {"bytes": unslimmed, "files": unslimmed_files},
        "slimming": slim_report,
        "strip": strip_report,
        "bytecode": bytecode_report,
        "verify": {k: v for k, v in verify_report.items() if k != "loaded"},
        "package_sizes": sizes,
        "zip": zip_report,
        "warnings": [w for w in plan.warnings if not w.startswith("Lambda deprecated")],
    }
    _remember(cache_entry, staged, manifest, report)
    options.layers_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), plan.zip_path)
    manifest.write(plan.manifest_path)
    return manifest, report, budget


def _install(plan: _Plan, work: Path, say: Progress) -> tuple[dict[str, Any], DockerBuild | None]:
    """Install the pins' wheels for the target into ``work/python``: the pip report, and the
    Docker build that later steps run in (None for --method pip)."""
    options, target = plan.options, plan.target
    if plan.docker is not None and plan.image is not None:
        say(f"installing wheels for {target.describe()} (docker, the image's pip)")
        docker_build = DockerBuild(
            plan.docker, plan.image, target, work, options.requirements, plan.cache_dir
        )
        return {
            "version": docker_build.install(),
            "source": f"the image {plan.image}",
        }, docker_build
    # The target's interpreter runs pip when there is one: pip evaluates environment
    # markers (python_version < "3.12") for the interpreter running it, whatever
    # --python-version says (pip 26.3, checked).
    runner = plan.python or sys.executable
    pip = ensure_pip(plan.cache_dir, runner)
    say(f"installing wheels for {target.describe()} with {pip.describe()}")
    version = install_with_pip(options.requirements, target, work, pip)
    runner_version = interpreter_version(runner)
    pip_report = {
        "version": version,
        "source": "mlayer",
        "path": str(pip.home),
        "python": runner,
        "python_version": runner_version,
    }
    if runner_version != target.python_version and has_markers(options.requirements):
        plan.warnings.append(
            f"{options.requirements} has environment markers: pip evaluated them for "
            f"Python {runner_version} (the interpreter running it), not "
            f"{target.python_version}; pass --python PATH to a Python "
            f"{target.python_version} to evaluate them for the target"
        )
    return pip_report, None


def _slim_and_strip(
    plan: _Plan, layer: Path, say: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Slim the layer, strip its extension modules; refuse extension modules for another CPU."""
    options, target = plan.options, plan.target
    say("slimming")
    slim_report = slim(layer, options.keep, options.exclude)
    strip_report: dict[str, Any] = {"skipped": "--no-strip", "files": 0, "bytes_saved": 0}
    if options.strip:
        say("stripping extension modules")
        strip_report = strip_extensions(layer, target)
        if strip_report.get("skipped"):
            plan.warnings.append(strip_report["skipped"])
    if strip_report.get("wrong_arch"):
        raise BuildError(
            f"extension modules built for another CPU than {target.machine}: "
            f"{', '.join(strip_report['wrong_arch'][:5])}; a wheel for the wrong platform "
            "was installed (check the requirements for local paths or URLs)"
        )
    return slim_report, strip_report


def _warn_about_bytecode(
    plan: _Plan, verify_report: dict[str, Any], bytecode_report: dict[str, Any]
) -> None:
    """Say what an unverified layer, or one without bytecode, costs and how to avoid it."""
    options, target = plan.options, plan.target
    if verify_report.get("skipped"):
        plan.warnings.append(f"imports not verified: {verify_report['skipped']}")
    if options.bytecode == "none":
        plan.warnings.append(
            f"the layer ships WITHOUT bytecode (--bytecode none): {NO_BYTECODE_COST}"
        )
    elif bytecode_report.get("skipped"):
        kept = " and with every .py source" if options.bytecode == "sourceless" else ""
        plan.warnings.append(
            f"the layer ships WITHOUT bytecode{kept} ({bytecode_report['skipped']}): "
            f"{NO_BYTECODE_COST}; pass --python PATH to a Python {target.python_version} "
            "(or install one with pyenv or uv), or use --method docker"
        )


def _write_layer_zip(
    layer: Path, staged: Path, requested: str, say: Progress
) -> tuple[ZipResult, dict[str, Any]]:
    """Zip the layer at deflate level 9, then with zopfli when :func:`choose_zip_encoder`
    says so (``--zip-encoder``); the report says which, why, and both sizes."""
    if requested not in ZIP_ENCODER_CHOICES:
        raise ConfigError(
            f"unknown zip encoder {requested!r}; choose {', '.join(ZIP_ENCODER_CHOICES)}"
        )
    result = write_zip(layer, staged, prefix="python")
    chosen = choose_zip_encoder(result.zip_bytes, requested, available=zopfli_available())
    report: dict[str, Any] = {
        "requested": requested,
        "encoder": "deflate",
        "why": chosen.why,
        "deflate_bytes": result.zip_bytes,
        "zopfli_min_bytes": None,
        "zopfli_bytes": None,
        "zopfli_seconds": None,
    }
    if chosen.encoder == "zopfli":
        say("writing the zip with zopfli (smaller, slower; the build is cached)")
        started = time.monotonic()
        smaller = write_zip(
            layer,
            staged,
            prefix="python",
            encoder="zopfli",
            zopfli_min_bytes=chosen.zopfli_min_bytes,
        )
        report.update(
            encoder="zopfli",
            zopfli_min_bytes=chosen.zopfli_min_bytes,
            zopfli_bytes=smaller.zip_bytes,
            zopfli_seconds=round(time.monotonic() - started, 1),
        )
        result = smaller
    return result, report


def _zip_note(report: dict[str, Any]) -> str | None:
    """What the zip's encoder was and why, for the build's notes (None: plain deflate)."""
    zipped = report.get("zip") or {}
    why = zipped.get("why")
    if not why:
        return None
    if zipped.get("encoder") != "zopfli":
        return f"zip: {why}"
    size = zipped["zopfli_bytes"]
    verdict = (
        "still over what a direct upload takes" if needs_s3(size) else "a direct upload takes it"
    )
    return (
        f"zip: {why}: {size:,} bytes instead of {zipped['deflate_bytes']:,} "
        f"({zipped['zopfli_seconds']:.0f} s; standard deflate, any unzip reads it): {verdict} "
        "(--zip-encoder deflate to skip)"
    )


def _remember(
    cache_entry: Path, staged: Path, manifest: DepsManifest, report: dict[str, Any]
) -> None:
    """Keep the build in the cache (--no-cache skips reusing a build, not remembering it).

    Each file is written under a private name and renamed into place, so two builds of the
    same inputs at once (two terminals, parallel test workers) never leave a reader a
    half-written file; report.json comes last: its presence marks a complete entry.
    """
    cache_entry.mkdir(parents=True, exist_ok=True)
    private = f".{os.getpid()}-{threading.get_ident()}"
    zip_tmp = cache_entry / f"layer.zip{private}"
    shutil.copyfile(staged, zip_tmp)
    os.replace(zip_tmp, cache_entry / "layer.zip")
    manifest_tmp = cache_entry / f"manifest.json{private}"
    manifest.write(manifest_tmp)
    os.replace(manifest_tmp, cache_entry / "manifest.json")
    report_tmp = cache_entry / f"report.json{private}"
    report_tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(report_tmp, cache_entry / "report.json")


def _budget_report(budget: Budget) -> dict[str, Any]:
    return {
        "limit": budget.limit,
        "total": budget.total,
        "parts": [{"name": n, "bytes": b, "percent": round(p, 1)} for n, b, p in budget.shares()],
        "notes": budget.notes,
    }


def _notes(manifest: DepsManifest, budget: Budget, report: dict[str, Any]) -> list[str]:
    notes = [budget.describe()]
    zipped = _zip_note(report)
    if zipped:
        notes.append(zipped)
    upload = upload_note(manifest.zip_bytes, "dependency layer")
    if upload:
        notes.append(upload)
    notes += budget.notes
    return notes


def _foreign(target: Target) -> str:
    return (
        f"this machine is {host_machine()}, the layer is for {target.machine}: its extension "
        "modules cannot load here"
    )


def _verify_and_compile(
    options: DepsBuildOptions,
    target: Target,
    search: InterpreterSearch,
    layer: Path,
    work: Path,
    docker_build: DockerBuild | None,
    say: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the target's bytecode and verify imports, in the order the mode needs.

    ``imports`` compiles what the import check loaded, so it verifies first; the other
    modes compile first, so the check imports the layer as it ships (a sourceless module
    that needed its source fails here, not in Lambda).
    """
    python = search.path
    can_import = docker_build is not None or host_machine() == target.machine
    if python is None:
        reason = search.describe()
        verify = {"skipped": _foreign(target) if not can_import else reason}
        return verify, {
            "skipped": reason,
            "files": 0,
            "mode": "none",
            "requested": options.bytecode,
        }
    if options.bytecode == "imports":
        verify = _verify(options, target, python, work, docker_build, can_import, say)
        if not verify.get("loaded"):
            raise ConfigError(
                "--bytecode imports needs the import check, which cannot run for this target "
                "here; use --bytecode sourceless or all"
            )
        listing = work / "compile.txt"
        listing.write_text("\n".join(r for r in verify["loaded"] if r.endswith(".py")) + "\n")
        where = str(listing) if docker_build is None else f"{DockerBuild.WORK}/compile.txt"
        bytecode = _compile(
            options, target, search, layer, work, docker_build, say, ["--compile-list", where]
        )
        return verify, bytecode
    if options.bytecode == "none":
        verify = _verify(options, target, python, work, docker_build, can_import, say)
        return verify, {"skipped": "--bytecode none", "files": 0, "mode": "none"}
    bytecode = _compile(options, target, search, layer, work, docker_build, say, [])
    verify = _verify(options, target, python, work, docker_build, can_import, say)
    return verify, bytecode


def _verify(
    options: DepsBuildOptions,
    target: Target,
    python: str,
    work: Path,
    docker_build: DockerBuild | None,
    can_import: bool,
    say: Progress,
) -> dict[str, Any]:
    """Import every top-level package with only the layer and the standard library."""
    if not can_import:
        return {"skipped": _foreign(target)}
    trace = work / "trace.json"
    say(f"verifying imports with Python {target.python_version}")
    if docker_build is not None:
        proc = docker_build.run(["verify"], ["--trace", f"{DockerBuild.WORK}/trace.json"])
    else:
        proc = run_script(
            ["verify"], out=work, target=target, python=python, extra=["--trace", str(trace)]
        )
    if not trace.is_file():
        raise BuildError(
            f"the import check could not run:\n{output_tail(proc.stdout + proc.stderr)}"
        )
    verify: dict[str, Any] = json.loads(trace.read_text())
    if verify["failed"]:
        lines = "; ".join(
            f"{name}: {error.splitlines()[-1]}" for name, error in verify["failed"].items()
        )
        fixes = "a wheel is for the wrong platform or a slimming rule removed something needed "
        fixes += "(--keep PATTERN keeps it)"
        if options.bytecode == "sourceless":
            fixes += (
                ", or a module needs its .py source (--keep-source PATTERN keeps it, "
                "--bytecode all keeps every source)"
            )
        raise BuildError(
            f"importing the layer's packages with only the layer and the standard library "
            f"on sys.path failed ({lines}); {fixes}"
        )
    return verify


def _compile(
    options: DepsBuildOptions,
    target: Target,
    search: InterpreterSearch,
    layer: Path,
    work: Path,
    docker_build: DockerBuild | None,
    say: Progress,
    extra: list[str],
) -> dict[str, Any]:
    """Run the script's compile step for the mode; report what it wrote and removed."""
    mode = options.bytecode
    script_mode = "sourceless" if mode == "sourceless" else "all"
    args = ["--bytecode", script_mode, *extra]
    for glob in options.keep_source:
        args += ["--keep-source", glob]
    sources = {p: p.stat().st_size for p in layer.rglob("*.py")} if mode == "sourceless" else {}
    records_before = records_bytes(layer)
    say(f"compiling bytecode for {target.cache_tag} ({mode})")
    if docker_build is not None:
        proc = docker_build.run(["compile"], args)
    else:
        assert search.path is not None
        proc = run_script(["compile"], out=work, target=target, python=search.path, extra=args)
    if proc.returncode != 0:
        raise BuildError(f"compiling bytecode failed:\n{output_tail(proc.stdout + proc.stderr)}")
    pycs = [p for p in layer.rglob("*.pyc")]
    removed = [p for p in sources if not p.exists()]
    return {
        "mode": mode,
        "cache_tag": target.cache_tag,
        "files": len(pycs),
        "bytes": sum(p.stat().st_size for p in pycs),
        "sources_removed": len(removed),
        "sources_removed_bytes": sum(sources[p] for p in removed),
        "sources_kept": len(sources) - len(removed),
        # RECORD rows of replaced sources name the .pyc, without hash and size
        "records_trimmed_bytes": records_before - records_bytes(layer),
        "keep_source": list(options.keep_source),
        "interpreter": search.path,
        "interpreter_source": search.source,
        "interpreter_skipped": list(search.tried),
        "skipped": None,
    }
