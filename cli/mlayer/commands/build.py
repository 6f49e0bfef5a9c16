"""``mlayer build-deps`` and ``mlayer build-model``: build the layers under layers/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlayer import options

if TYPE_CHECKING:
    from mlayer.deps_layer import DepsBuildResult


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _progress(console: Any, quiet: bool) -> Any:
    if quiet:
        return None
    return lambda message: console.print(f"[dim]… {message}[/dim]")


def _mb(n: int | float) -> str:
    from mlayer.archive import mb

    return mb(n)


@click.command("build-deps", short_help="Build the dependency layer from requirements.txt.")
@click.option(
    "--requirements",
    "-r",
    type=click.Path(dir_okay=False, path_type=Path),
    default="requirements.txt",
    show_default=True,
    help="The pins to install (exact versions recommended).",
)
@options.runtime
@options.arch
@click.option(
    "--method",
    type=click.Choice(["pip", "docker"]),
    default="pip",
    show_default=True,
    help="pip: manylinux wheels fetched for the target, no Docker. docker: inside a Lambda "
    "build image (scripts/get-layer-package.sh).",
)
@click.option(
    "--image",
    metavar="IMAGE",
    help="Build image for --method docker [default: public.ecr.aws/sam/build-<runtime>:latest-<arch>].",
)
@click.option(
    "--python",
    "python",
    metavar="PATH",
    help="An interpreter of the runtime's Python version: it runs the build's pip (mlayer's "
    "own, provisioned once into the cache: the interpreter's pip is not used), writes the "
    "bytecode and runs the import check [default: this one if the version matches, else the "
    "first that runs of python3.X on PATH, pyenv's versions/3.X*, `uv python find 3.X`; "
    "when none is found, this one runs pip and the layer ships without bytecode].",
)
@click.option(
    "--keep",
    multiple=True,
    metavar="GLOB",
    help="Keep paths (relative to python/) that a slimming rule would remove, e.g. 'mypkg/tests/*'.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Also remove these paths (relative to python/), e.g. 'scipy/io'.",
)
@click.option(
    "--strip/--no-strip",
    default=True,
    show_default=True,
    help="strip --strip-unneeded the extension modules (never the vendored *.libs).",
)
@click.option(
    "--bytecode",
    type=click.Choice(["sourceless", "all", "imports", "none"]),
    default="sourceless",
    show_default=True,
    help="sourceless: every module's .pyc replaces its .py (about 24 MB smaller; tracebacks "
    "show file and line but no source text, inspect.getsource fails for those modules). "
    "all: .pyc in __pycache__ beside every source. imports: .pyc only for the modules "
    "importing the packages loads. none: no bytecode (recompiled at every cold start).",
)
@click.option(
    "--keep-source",
    multiple=True,
    metavar="GLOB",
    help="With --bytecode sourceless, keep the .py of these paths (relative to python/), for "
    "packages that read their own source, e.g. 'mypkg'. They get __pycache__ bytecode.",
)
@click.option(
    "--zip-encoder",
    type=click.Choice(["auto", "deflate", "zopfli"]),
    default="auto",
    show_default=True,
    help="auto: deflate level 9, or zopfli (a few percent smaller, minutes slower, standard "
    "deflate) when level 9 lands over or near the 50 MiB direct upload and zopfli can bring "
    "it under; zopfli needs the mlayer[zopfli] extra.",
)
@options.layers_dir
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build cache [default: ~/.cache/mlayer, or MLAYER_CACHE_DIR].",
)
@click.option("--no-cache", is_flag=True, help="Rebuild even when an identical build is cached.")
@click.option(
    "--function-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="function",
    show_default=True,
    help="The function code, counted in the 250 MB budget.",
)
@options.json_output
def build_deps(
    requirements: Path,
    runtime: str | None,
    arch: str,
    method: str,
    image: str | None,
    python: str | None,
    keep: tuple[str, ...],
    exclude: tuple[str, ...],
    strip: bool,
    bytecode: str,
    keep_source: tuple[str, ...],
    zip_encoder: str,
    layers_dir: str,
    cache_dir: Path | None,
    no_cache: bool,
    function_dir: Path,
    as_json: bool,
) -> None:
    """Build the dependency layer (layers/deps-<runtime>-<arch>.zip) from requirements.txt.

    Installs manylinux wheels for the runtime's Python, CPU and glibc (with mlayer's own pinned
    pip, downloaded once into the cache, whatever pip you have), removes what run time never
    needs (with a report per rule), strips extension modules, compiles every module
    for the target Python (by default its .pyc replaces its .py: smaller, as fast; tracebacks
    show no source text; --bytecode all keeps the sources), imports every package of the layer
    in a clean interpreter, and writes a deterministic zip plus its manifest. Identical inputs
    reuse the cached build.

    \b
    Example:
      mlayer build-deps                                  # newest runtime the pins support
      mlayer build-deps --runtime python3.13 --arch arm64
      mlayer build-deps --method docker --runtime python3.12
      mlayer build-deps --bytecode all                   # keep every .py source
    """
    from mlayer.deps_layer import DepsBuildOptions
    from mlayer.deps_layer import build_deps as build

    console = _console()
    result = build(
        DepsBuildOptions(
            requirements=requirements,
            runtime=runtime,
            arch=arch,
            method=method,
            image=image,
            python=python,
            keep=keep,
            exclude=exclude,
            strip=strip,
            bytecode=bytecode,
            keep_source=keep_source,
            zip_encoder=zip_encoder,
            layers_dir=Path(layers_dir),
            cache_dir=cache_dir,
            use_cache=not no_cache,
            function_dir=function_dir,
        ),
        progress=_progress(console, as_json),
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "zip": str(result.zip_path),
                    "manifest": result.manifest.to_dict(),
                    "report": result.report,
                    "cached": result.cached,
                    "warnings": result.warnings,
                    "notes": result.notes,
                },
                indent=2,
            )
        )
        return
    _render_deps(console, result)


def _render_deps(console: Any, result: DepsBuildResult) -> None:
    from rich.table import Table

    manifest, report = result.manifest, result.report
    for warning in result.warnings:
        console.print(f"[yellow]Warning: {warning}[/yellow]")
    slimming = report.get("slimming", {})
    table = Table(title="Slimming", title_justify="left")
    table.add_column("rule")
    table.add_column("files", justify="right")
    table.add_column("removed", justify="right")
    table.add_column("why")
    installed = report.get("installed", {})
    table.add_row("installed", str(installed.get("files", "")), _mb(installed.get("bytes", 0)), "")
    for rule in slimming.get("rules", []):
        table.add_row(rule["rule"], str(rule["files"]), _mb(rule["bytes"]), rule["why"])
    strip = report.get("strip", {})
    if strip.get("skipped"):
        table.add_row("strip extension modules", "-", "-", strip["skipped"])
    else:
        table.add_row(
            "strip extension modules",
            str(strip.get("files", 0)),
            _mb(strip.get("bytes_saved", 0)),
            f"{strip.get('tool')} --strip-unneeded",
        )
    bytecode = report.get("bytecode", {})
    if bytecode.get("skipped"):
        table.add_row("bytecode", "-", "-", f"none: {bytecode['skipped']}")
    else:
        table.add_row(
            "bytecode (added)",
            str(bytecode.get("files", 0)),
            "+" + _mb(bytecode.get("bytes", 0)),
            f"unchecked-hash .pyc for {bytecode.get('cache_tag')} ({bytecode.get('mode')})",
        )
        if bytecode.get("sources_removed"):
            kept = bytecode.get("sources_kept", 0)
            table.add_row(
                "sources replaced by .pyc",
                str(bytecode["sources_removed"]),
                _mb(bytecode.get("sources_removed_bytes", 0)),
                "loaded sourceless" + (f"; {kept} .py kept" if kept else ""),
            )
    console.print(table)
    pip = report.get("pip") or {}
    if pip.get("source") == "mlayer":
        console.print(
            f"wheels installed by pip {pip['version']} ({pip['path']}) run by {pip['python']}"
        )
    elif pip.get("version"):
        console.print(f"wheels installed by pip {pip['version']} of {pip['source']}")
    if bytecode.get("interpreter") and not bytecode.get("skipped"):
        source = bytecode.get("interpreter_source")
        skipped = "; ".join(bytecode.get("interpreter_skipped") or [])
        console.print(
            f"bytecode written by {bytecode['interpreter']} ({source}"
            + (f"; skipped {skipped})" if skipped else ")")
        )
    kept = slimming.get("kept_for_imports") or []
    if kept:
        console.print(f"kept because run-time code imports them: {', '.join(kept)}")
    verify = report.get("verify", {})
    if verify.get("imported"):
        console.print(
            f"imports verified with Python {verify.get('python')}: {', '.join(verify['imported'])}"
        )
    packages = ", ".join(f"{k}=={v}" for k, v in sorted(manifest.packages.items()))
    click.echo(
        f"{'Reused' if result.cached else 'Built'} {result.zip_path} "
        f"({manifest.runtime} {manifest.arch}, {manifest.method}): "
        f"{_mb(manifest.unzipped_bytes)} unzipped, {_mb(manifest.zip_bytes)} zipped, "
        f"{manifest.files} files, sha256 {manifest.sha256[:12]}"
    )
    click.echo(f"Packages: {packages}")
    for note in result.notes:
        click.echo(f"Budget: {note}" if note is result.notes[0] else f"Note: {note}")


@click.command("build-model", short_help="Build a versioned model layer from your model files.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="The model's name [default: from the files: <name>.joblib].")
@click.option(
    "--stages",
    metavar="A,B,C",
    help="The files of PATH (a directory) in the order they apply: preprocessors, then the "
    "model [default: PreProc1_<name>, PreProc2_<name>, ..., <name>; or metadata.json's].",
)
@click.option(
    "--input-field",
    metavar="FIELD",
    help="Text models: the JSON field holding the text [default: a plain-text payload, or "
    "the object's only string field]. Feature models: the object holding the features.",
)
@click.option(
    "--features",
    metavar="A,B,C",
    help="Names for the columns of a model fitted on an array (only n_features_in_): records "
    "are then objects with those keys [default: a JSON array of the values].",
)
@click.option(
    "--labels",
    metavar="A,B,C",
    help="Names for a classifier's classes_, in their order [default: the classes themselves].",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="Version number [default: one more than the newest built or published].",
)
@click.option(
    "--deps",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The dependency layer to check against (.zip or .json) [default: the newest in --layers-dir, for --runtime/--arch when given].",
)
@click.option(
    "--runtime",
    type=click.Choice(("python3.10", "python3.11", "python3.12", "python3.13", "python3.14")),
    help="Pick layers/deps-<runtime>-*.json.",
)
@click.option(
    "--arch", type=click.Choice(("x86_64", "arm64")), help="Pick layers/deps-*-<arch>.json."
)
@click.option(
    "--sample",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Records for the smoke test: a JSON list, {"records": [...]} or JSON lines [default: metadata.json\'s examples, else records made from what the model learnt].',
)
@click.option(
    "--force",
    is_flag=True,
    help="Build even when the compatibility gate refuses (not recommended).",
)
@click.option(
    "--no-smoke-test",
    is_flag=True,
    help="Skip running the function on the built layers (not recommended).",
)
@click.option(
    "--function-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The function the smoke test runs [default: this checkout's function/].",
)
@click.option(
    "--python",
    "python",
    metavar="PATH",
    help="Interpreter of the deps layer's Python version for the smoke test.",
)
@click.option(
    "--defer-imports/--no-defer-imports",
    default=False,
    show_default=True,
    help="Trace the modules the model never uses and have the function import them without running them until first use (measured 0-8% off a cold start with bench/cold_start.py: scikit-learn runs scipy.stats at import anyway; docs/CONTRACTS.md, Deferred imports).",
)
@options.store
@options.layers_dir
@options.json_output
def build_model(
    path: Path,
    name: str | None,
    stages: str | None,
    input_field: str | None,
    features: str | None,
    labels: str | None,
    version: int | None,
    deps: Path | None,
    runtime: str | None,
    arch: str | None,
    sample: Path | None,
    force: bool,
    no_smoke_test: bool,
    function_dir: Path | None,
    python: str | None,
    defer_imports: bool,
    store: str,
    layers_dir: str,
    as_json: bool,
) -> None:
    """Build a versioned model layer (layers/model-<name>-v<N>.zip) from your model files.

    A model too big for a layer (over Lambda's 250 MiB with the dependency layer) becomes
    an archive for the S3 model store instead (layers/model-<name>-v<N>.tar; --store).

    PATH is a model file (.joblib, .pkl, .pickle: an estimator or a Pipeline), a directory
    in the classic layout (PreProc1_<name>.joblib, PreProc2_<name>.joblib, ...,
    <name>.joblib), any directory with --stages, or a directory with a metadata.json.
    What the model reads (text, named columns, a DataFrame, an array) and its labels are
    read from the fitted estimator and printed; flags override them.

    Model files are code: loading a pickle runs whatever it names. Build only models from a
    source you trust. mlayer reads the versions a file needs without executing it, and runs
    it only in the sandboxed Lambda environment of the smoke test (no AWS credentials, no
    packages of this machine). The build refuses a model the dependency layer cannot load
    (another scikit-learn, another numpy major, a missing module, pandas for a DataFrame
    model), then runs the real function on both layers and requires the model's own
    predictions.

    \b
    Example:
      mlayer build-model model.joblib                    # a Pipeline saved with joblib
      mlayer build-model models/                         # PreProc1_m.joblib ... m.joblib
      mlayer build-model models/ --stages vec.pkl,clf.pkl --input-field review
      mlayer build-model training/out --sample records.json --version 7
      mlayer build-model forest.joblib --store s3        # for the S3 model store
    """
    from mlayer.model_files import Overrides, parse_list
    from mlayer.model_layer import ModelBuildOptions
    from mlayer.model_layer import build_model as build

    console = _console()
    result = build(
        ModelBuildOptions(
            model_dir=path,
            overrides=Overrides(
                name=name,
                stages=parse_list(stages, "--stages"),
                input_field=input_field,
                features=parse_list(features, "--features"),
                labels=parse_list(labels, "--labels"),
            ),
            version=version,
            layers_dir=Path(layers_dir),
            deps=deps,
            runtime=runtime,
            arch=arch,
            sample=sample,
            force=force,
            smoke_test=not no_smoke_test,
            function_dir=function_dir,
            python=python,
            store=store,
            defer_imports=defer_imports,
        ),
        progress=_progress(console, as_json),
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "zip": str(result.zip_path),
                    "manifest": result.manifest,
                    "gate": result.gate,
                    "warnings": result.warnings,
                    "notes": result.notes,
                },
                indent=2,
            )
        )
        return
    from rich.table import Table

    for warning in result.warnings:
        console.print(f"[bold red]WARNING: {warning}[/bold red]")
    table = Table(title="Compatibility with the dependency layer", title_justify="left")
    for column in ("library", "model", "layer", "verdict"):
        table.add_column(column)
    for check in result.gate:
        table.add_row(check["library"], check["model"], check["layer"], check["verdict"])
    console.print(table)
    manifest = result.manifest
    smoke = result.smoke
    click.echo(
        f"Model: {manifest['name']} from {manifest['layout']} layout: "
        + " -> ".join(manifest["stages"])
    )
    click.echo(f"Input: {describe_input(manifest['input'])}")
    click.echo(f"Output: {describe_output(manifest)}")
    if "records" in smoke:
        click.echo(
            f"Smoke test: {smoke['records']} records scored by the function in "
            f"{smoke['duration_ms']} ms (init {smoke['init_ms']} ms, {smoke['max_memory_mb']} MB)"
        )
    if manifest.get("package") == "store":
        click.echo(
            f"Built {result.zip_path}: {manifest['name']} v{manifest['version']} for the S3 "
            f"model store, {_mb(manifest['zip_bytes'])}, sha256 {manifest['sha256'][:12]}"
        )
    else:
        click.echo(
            f"Built {result.zip_path}: {manifest['name']} v{manifest['version']}, "
            f"{_mb(manifest['unzipped_bytes'])} unzipped, {_mb(manifest['zip_bytes'])} zipped, "
            f"sha256 {manifest['sha256'][:12]}"
        )
    for i, note in enumerate(result.notes):
        label = "Store" if manifest.get("package") == "store" else "Budget"
        click.echo(f"{label}: {note}" if i == 0 else f"Note: {note}")


def describe_input(spec: dict[str, Any]) -> str:
    """The input schema in words, as the build prints it."""
    if spec["kind"] == "text":
        field = spec.get("field")
        if field:
            return f"text: a plain-text payload, or the JSON object's field {field!r}"
        return "text: a plain-text payload, or the JSON object's only string field"
    names = spec["features"]
    types = spec.get("types") or ["number"] * len(names)
    if spec.get("named") is False:
        return (
            f"a JSON array of {len(names)} numbers (the model was fitted without column names; "
            "--features a,b,c names them)"
        )
    columns = ", ".join(f"{n} ({t})" for n, t in zip(names, types, strict=True))
    where = f" under field {spec['field']!r}" if spec.get("field") else ""
    frame = "; given to the model as a pandas DataFrame" if spec.get("dataframe") else ""
    return f"JSON objects (or DynamoDB images){where} with {columns}{frame}"


def describe_output(manifest: dict[str, Any]) -> str:
    outputs = manifest.get("outputs") or {}
    labels = manifest.get("labels")
    estimator = outputs.get("estimator", "the model")
    if labels:
        shown = ", ".join(map(str, labels[:8])) + (", ..." if len(labels) > 8 else "")
        proba = (
            " with the probability of the predicted label"
            if outputs.get("probability")
            else " (no predict_proba: probability null)"
        )
        return f"{estimator}: a label of {shown}{proba}"
    return f"{estimator}: its predict() value ({outputs.get('task', 'other')})"


COMMANDS = [build_deps, build_model]
