"""Publishing and rolling out: publish-deps, publish-model, promote, rollback, status,
history, prune. Thin: each parses options, calls one function of mlayer.layers
(publish-deps), mlayer.rollout (publish-model, promote, rollback) or mlayer.inventory (status,
history, prune), renders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from mlayer import options
from mlayer.archive import MIB
from mlayer.commands.bake import bake_canary, bake_guards


def _layer_name(given: str | None, function: str | None, kind: str) -> str:
    from mlayer.contracts import default_layer_name

    if given:
        return given
    if not function:
        raise click.UsageError(f"Missing option '--function' (or '--{kind}-layer NAME').")
    return default_layer_name(function, kind)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class _UploadProgress:
    """A rich progress bar that appears only once an S3 upload sends its first bytes."""

    def __init__(self, build: Any) -> None:
        import threading

        self.label = f"Uploading {build.zip_path.name}"
        self.total = build.zip_bytes
        self._progress: Any = None
        self._task: Any = None
        # s3transfer calls back from its worker threads.
        self._lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self._lock:
            self._start()
        self._progress.advance(self._task, sent)

    def _start(self) -> None:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total or None)

    def __enter__(self) -> _UploadProgress:
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _stored_line(stored: Any) -> str:
    """Where an archive of the model store is, and whether it was uploaded now."""
    verb = "Found" if stored.reused else "Stored"
    return (
        f"{verb} {stored.uri.location} ({stored.uri.size / MIB:,.1f} MiB, sha256 "
        f"{stored.uri.sha256[:12]}){' (already there: nothing uploaded)' if stored.reused else ''}"
    )


def _render_stored(rollout: Any) -> None:
    click.echo(_stored_line(rollout.stored))
    click.echo(f"MODEL_URI={rollout.stored.uri}")
    if rollout.size is not None:
        click.echo(f"Environment: {rollout.size.describe()}")


def _published_line(layer: Any) -> str:
    from mlayer.archive import mb

    if layer.reused and layer.same_content:
        return (
            f"Reused {layer.layer_name} version {layer.version}: the same model content is "
            f"already published there (another build of it, sha256 {layer.sha256[:12]}), "
            f"nothing uploaded.\n  {layer.arn}"
        )
    if layer.reused:
        return (
            f"Reused {layer.layer_name} version {layer.version}: identical content (sha256 "
            f"{layer.sha256[:12]}) is already published, nothing uploaded.\n  {layer.arn}"
        )
    via = f" via {layer.s3_uri}" if layer.s3_uri else ""
    return (
        f"Published {layer.layer_name} version {layer.version}{via}: {mb(layer.zip_bytes)} "
        f"zipped, {mb(layer.unzipped_bytes)} unzipped, sha256 {layer.sha256[:12]}.\n  {layer.arn}"
    )


@click.command("publish-deps", short_help="Publish the built dependency layer.")
@options.function
@options.deps_layer
@options.runtime
@options.arch
@options.layers_dir
@options.bucket
@click.pass_obj
def publish_deps(
    settings: Any,
    function: str | None,
    deps_layer: str | None,
    runtime: str | None,
    arch: str,
    layers_dir: str,
    bucket: str | None,
) -> None:
    """Publish the built dependency layer (layers/deps-<runtime>-<arch>.zip).

    The layer version is compatible with the build's runtime and architecture. Over 50 MB
    zipped it is uploaded to --bucket first (with progress) and published from S3.
    Identical content (same sha256, recorded in the version's description) reuses the
    existing version: nothing is uploaded and no version is added.

    \b
    Example:
      mlayer publish-deps --function scorer --runtime python3.13 --arch arm64
      mlayer publish-deps --deps-layer sklearn-1-7 --bucket my-artifacts
    """
    from mlayer.layers import find_deps_build
    from mlayer.layers import publish_deps as publish

    layer_name = _layer_name(deps_layer, function, "deps")
    build = find_deps_build(Path(layers_dir), runtime, arch)
    with _UploadProgress(build) as progress:
        layer = publish(
            settings.client("lambda"),
            settings.client("s3") if bucket else None,
            build=build,
            layer_name=layer_name,
            bucket=bucket,
            progress=progress,
        )
    click.echo(_published_line(layer))
    click.echo(f"  compatible with {build.runtime} {build.arch}")


@click.command("publish-model")
@click.argument("source", required=False, metavar="[MODEL_DIR | ZIP]", type=click.Path(exists=True))
@options.function
@options.model_layer
@options.alias
@click.option(
    "--canary",
    type=click.FloatRange(0, 100, min_open=True, max_open=True),
    metavar="PCT",
    help="Route PCT% of the alias's invocations to the new version; `mlayer promote` completes it.",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="Publish the model as the live model's shadow: scored on every batch beside it, "
    "written nowhere; `mlayer promote` makes it live, `mlayer shadow stop` removes it.",
)
@options.shadow_layer
@options.store
@click.option(
    "--set",
    "member",
    metavar="NAME",
    help="Add (or replace) model NAME in the function's model set, built from MODEL_DIR, and "
    "publish the set as its next version (records choose their model by --set-field).",
)
@click.option(
    "--set-field",
    metavar="FIELD",
    help="The record field naming the model that scores it (needed to start a set).",
)
@click.option(
    "--set-default",
    metavar="NAME",
    help="The set's model for records without the field or naming no member (else they are "
    "reported as bad).",
)
@click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(128, 10240),
    metavar="MB",
    help="Set the function's memory (a stored model is checked against the peak its smoke "
    "test measured).",
)
@click.option(
    "--bake",
    type=options.Duration(),
    metavar="DURATION",
    help="With --canary: watch the canary's metrics for DURATION (10m, 1h), then promote it "
    "or roll it back by itself.",
)
@click.option(
    "--max-bad-rate",
    type=options.Percent(),
    metavar="PCT",
    help="Bake guard: the canary's bad records / records at most PCT [default: 1%].",
)
@click.option(
    "--min-agreement",
    type=options.Percent(),
    metavar="PCT",
    help="Bake guard: the canary agrees with the live model on at least PCT of records "
    "(its shadow), else of label shares; 0 turns it off [default: 95%].",
)
@click.option(
    "--max-errors",
    type=click.IntRange(min=0),
    metavar="N",
    help="Bake guard: Lambda Errors of the canary's version at most N [default: 0].",
)
@click.option(
    "--min-records",
    type=click.IntRange(min=0),
    metavar="N",
    help="Bake guard: a rate decides only once the canary has N records; fewer at the end "
    "rolls back [default: 100].",
)
@click.option(
    "--bake-interval",
    type=options.Duration(),
    metavar="DURATION",
    help="Time between two looks at the metrics while baking [default: 60s; 2s on a local "
    "endpoint].",
)
@options.runtime
@options.arch
@options.layers_dir
@options.bucket
@click.pass_obj
def publish_model(
    settings: Any,
    source: str | None,
    function: str | None,
    model_layer: str | None,
    alias: str | None,
    canary: float | None,
    shadow: bool,
    shadow_layer: str | None,
    store: str,
    member: str | None,
    set_field: str | None,
    set_default: str | None,
    memory_mb: int | None,
    bake: timedelta | None,
    max_bad_rate: float | None,
    min_agreement: float | None,
    max_errors: int | None,
    min_records: int | None,
    bake_interval: timedelta | None,
    runtime: str | None,
    arch: str,
    layers_dir: str,
    bucket: str | None,
) -> None:
    """Publish a model layer (or store a big model in S3) and roll it out to the function.

    MODEL_DIR (a training output) is built first with the build's compatibility gate and
    smoke test, as version one more than the newest built or published; a ZIP (a
    build-model output) is published as is; without either, the newest model build in
    --layers-dir. Identical content reuses its layer version.

    Models are compared by content (their files and input schema), not build number: a
    model whose content is already live changes nothing ("unchanged: ..."), and a rerun
    after a failed publish reuses the layer version that publish left.

    The function is relinked: only the model layer's ARN changes, every other layer keeps
    its place. Refused beyond 5 layers or 250 MB unzipped. Updates wait for the function to
    settle before and after and retry while another update is in progress.

    With --alias: a function version is published and the alias moved to it; with
    --canary PCT the alias keeps its version and routes PCT% to the new one.

    With --bake DURATION the canary decides by itself: its metrics (since it started) are
    read every --bake-interval; a breach of a guard (--max-bad-rate, --min-agreement,
    --max-errors; the rates once it has --min-records records) rolls it back at once, and
    the end of the bake with every guard holding promotes it. The figures it decided on are
    printed. Agreement is per record when the canary's version scores the live model as its
    shadow, else the overlap of the two models' label shares. Ctrl-C leaves the canary as it
    is and says how to finish it. Metrics reach CloudWatch a minute or two after the
    invocations: on AWS, bake for several minutes.

    A model too big for a layer (or --store s3, or a .tar from build-model --store s3) goes
    to the S3 model store instead: the archive is uploaded once to --bucket under its
    sha256, the function's MODEL_URI points at it (the function downloads and verifies it
    at init), the model layer is unlinked, /tmp is sized for it, and memory is checked
    against the smoke test's measured peak. Rollout, canary, promote and rollback work the
    same way. A canary version carries the live model as its shadow when it can, so the
    two are compared record by record.

    With --shadow the model is not served: it becomes the live model's shadow (a version of
    the shadow layer holding its files under shadow/, or SHADOW_URI for a stored model),
    scored on every batch beside the live model and written nowhere; the live model is
    untouched. `mlayer promote` makes the shadow live, `mlayer shadow stop` removes it.

    \b
    Example:
      mlayer publish-model training/out --function scorer --alias live
      mlayer publish-model layers/model-sentiment-v3.zip --alias live --canary 10
      mlayer promote --function scorer --alias live
      mlayer publish-model training/out2 --function scorer --alias live --shadow
      mlayer publish-model forest/ --store s3 --bucket models --alias live --memory 4096
      mlayer publish-model acme/ --set acme --set-field tenant --alias live
      mlayer publish-model training/out --alias live --canary 10 --bake 10m \\
        --max-bad-rate 1% --min-agreement 95%

    With --set NAME, the function serves a model set: the live set (read back from
    --layers-dir, the layer or the store) with model NAME added or replaced by MODEL_DIR's
    build, smoke-tested as a whole and published as the set's next version; each record is
    scored by the model its --set-field names (or --set-default). Rollback moves the whole
    set.
    """
    from mlayer.contracts import default_layer_name
    from mlayer.layers import build_model_for, load_build, model_builds
    from mlayer.rollout import publish_model as publish

    function = options.require_function(function)
    guards, given = bake_guards(
        bake, canary, max_bad_rate=max_bad_rate, min_agreement=min_agreement,
        max_errors=max_errors, min_records=min_records, bake_interval=bake_interval,
    )  # fmt: skip
    layer_name = model_layer or default_layer_name(function, "model")
    shadow_layer = shadow_layer or default_layer_name(function, "shadow")
    lam = settings.client("lambda")
    layers = Path(layers_dir)
    if shadow and canary is not None:
        raise click.UsageError(
            "--shadow and --canary do not go together: a shadow is scored beside the live "
            "model and serves nothing; a canary version already carries the live model as its "
            "shadow"
        )
    if shadow and member is not None:
        raise click.UsageError("--shadow and --set do not go together: model sets have no shadow")
    if member is not None:
        from mlayer.model_set import build_set

        if source is None or not Path(source).exists() or Path(source).suffix in (".zip", ".tar"):
            raise click.UsageError(
                "--set NAME needs MODEL_DIR (or a model file) to build NAME from"
            )
        change = build_set(
            lam, settings.client("s3"), function=function, layer_name=layer_name, alias=alias,
            member_dir=Path(source), member=member, layers_dir=layers, field_name=set_field,
            default=set_default, store=store, bucket=bucket, runtime=runtime, arch=arch,
            progress=lambda message: click.echo(f"  {message}"),
        )  # fmt: skip
        build = change.build
        action = "replaced" if change.replaced else "added"
        click.echo(
            f"Set: {build.name} v{build.version} from {change.base}: {member} {action}; "
            f"members {', '.join(change.members)}; built {build.zip_path}"
        )
        for note in change.notes:
            click.echo(f"Note: {note}")
    elif source is None:
        builds = model_builds(layers)
        if not builds:
            from mlayer.errors import NotFoundError

            raise NotFoundError(
                f"no model layer build in {layers}/; run `mlayer build-model MODEL_DIR` or pass "
                "MODEL_DIR to publish-model"
            )
        build = builds[-1]
    elif Path(source).is_dir():
        click.echo(f"Building the model layer from {source}")
        build = build_model_for(
            lam,
            Path(source),
            layer_name=layer_name,
            layers_dir=layers,
            runtime=runtime,
            arch=arch,
            progress=lambda message: click.echo(f"  {message}"),
            store=store,
            stored_versions=_other_versions(settings, bucket, layer_name, shadow_layer, shadow),
        )
        if build.package == "store":
            click.secho(
                f"Built {build.zip_path} (model {build.name} v{build.version}) for the S3 "
                "model store.",
                fg="yellow",
                bold=True,
            )
        else:
            click.echo(f"Built {build.zip_path} (model {build.name} v{build.version}).")
    else:
        build = load_build(Path(source))
    if store == "s3" and build.package != "store":
        raise click.UsageError(
            f"{build.zip_path.name} is a model layer; build the model for the store with "
            "mlayer build-model MODEL_DIR --store s3 (or pass MODEL_DIR with --store s3)"
        )
    if shadow:
        _publish_shadow(settings, function, build, layer_name, shadow_layer, alias, bucket,
                        layers, memory_mb)  # fmt: skip
        return
    with _UploadProgress(build) as progress:
        rollout = publish(
            lam,
            settings.client("s3") if bucket else None,
            function=function,
            build=build,
            layer_name=layer_name,
            alias=alias,
            canary=canary,
            bucket=bucket,
            progress=progress,
            memory_mb=memory_mb,
            layers_dir=layers,
            shadow_layer=shadow_layer,
        )
    started = datetime.now(UTC)  # the canary's metrics count from here
    if rollout.unchanged:
        live = rollout.new_model
        where = f"alias {alias}" if alias else f"{rollout.function} $LATEST"
        click.echo(
            f"unchanged: {live.name} v{live.version} is live with this content ({where}, "
            f"{live.location}); nothing was published or relinked."
        )
        if bake is not None:
            click.echo("Not baking: no canary was started.")
        return
    if rollout.stored is not None:
        _render_stored(rollout)
    else:
        assert rollout.layer is not None
        click.echo(_published_line(rollout.layer))
    old = rollout.old_model.label if rollout.old_model else "none"
    click.echo(f"Model: {old} -> {rollout.new_model.label}")
    if rollout.relinked:
        click.echo(f"Relinked {rollout.function}: layers now")
        for arn in rollout.layers:
            click.echo(f"  {arn}")
        for changed in rollout.environment_changes:
            click.echo(f"  {changed}")
    else:
        click.echo(f"{rollout.function} already serves {rollout.new_model.location}")
    click.echo(f"Size: {rollout.budget.describe()}")
    if rollout.alias:
        new_fv = rollout.new_function_version
        if rollout.alias_created:
            click.echo(f"Created alias {rollout.alias} -> function version {new_fv}")
        elif rollout.canary_weight is not None:
            click.echo(
                f"Canary: alias {rollout.alias} stays on function version "
                f"{rollout.old_function_version} and routes {rollout.canary_weight:.1%} to "
                f"version {new_fv}; complete it with `mlayer promote --function "
                f"{rollout.function} --alias {rollout.alias}` or undo it with `mlayer rollback`"
            )
            if rollout.canary_shadow is not None:
                from mlayer.inventory import shadow_label

                click.echo(
                    f"Canary shadow: version {new_fv} also scores the live model, "
                    f"{shadow_label(rollout.canary_shadow)}, on every record it serves"
                )
        elif rollout.old_function_version != new_fv:
            click.echo(
                f"Alias {rollout.alias}: function version {rollout.old_function_version} -> {new_fv}"
            )
    for note in rollout.notes:
        click.echo(f"Note: {note}")
    if bake is not None and guards is not None:
        interval = bake_interval or timedelta(seconds=2 if settings.is_local else 60)
        bake_canary(settings, rollout, layer_name, started, guards, bake, interval, given)


def _other_versions(
    settings: Any, bucket: str | None, layer_name: str, shadow_layer: str, shadow: bool
) -> Any:
    """The model versions a new build's number must pass besides the model layer's: the
    store's, and the shadow layer's for a shadow (which may become live later)."""
    if not bucket and not shadow:
        return None

    def versions() -> list[int]:
        from mlayer import model_store
        from mlayer.layers import published_model_versions

        found = (
            model_store.stored_versions(settings.client("s3"), bucket, layer_name) if bucket else []
        )
        if shadow:
            found += published_model_versions(settings.client("lambda"), shadow_layer)
        return found

    return versions


def _publish_shadow(
    settings: Any,
    function: str,
    build: Any,
    layer_name: str,
    shadow_layer: str,
    alias: str | None,
    bucket: str | None,
    layers: Path,
    memory_mb: int | None,
) -> None:
    """publish-model --shadow: publish, then render what it did."""
    from mlayer.inventory import shadow_label
    from mlayer.shadow import publish_shadow

    with _UploadProgress(build) as progress:
        result = publish_shadow(
            settings.client("lambda"),
            settings.client("s3") if bucket else None,
            function=function,
            build=build,
            model_layer=layer_name,
            shadow_layer=shadow_layer,
            alias=alias,
            bucket=bucket,
            layers_dir=layers,
            progress=progress,
            memory_mb=memory_mb,
        )
    if result.stored is not None:
        click.echo(_stored_line(result.stored))
        click.echo(f"SHADOW_URI={result.stored.uri}")
    else:
        assert result.layer is not None and result.build is not None
        click.echo(f"Shadow zip: {result.build.zip_path} (the model's files under shadow/)")
        click.echo(_published_line(result.layer))
    click.echo(f"Shadow: {shadow_label(result.shadow)}, scored beside the live {result.live.label}")
    if result.relinked:
        click.echo(f"Relinked {result.function}: layers now")
        for arn in result.layers:
            click.echo(f"  {arn}")
        for changed in result.environment_changes:
            click.echo(f"  {changed}")
    else:
        click.echo(f"{result.function} $LATEST already has this shadow")
    click.echo(f"Size: {result.budget.describe()}")
    if result.alias and result.new_function_version != result.old_function_version:
        click.echo(
            f"Alias {result.alias}: function version {result.old_function_version} -> "
            f"{result.new_function_version} (the same live model, now with the shadow)"
        )
    for note in result.notes:
        click.echo(f"Note: {note}")


@click.command()
@options.function
@options.alias
@options.model_layer
@options.shadow_layer
@options.layers_dir
@click.pass_obj
def promote(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    shadow_layer: str | None,
    layers_dir: str,
) -> None:
    """Complete a canary: move the alias fully to the canary version, clear the routing; or,
    without a canary, make the shadow the live model.

    A canary version that carried the live model as its shadow is published again without
    it, and the alias moves there. A shadow becomes the model layer's next version (its
    build, or the model rebuilt from its shadow zip, found in --layers-dir), or MODEL_URI
    for a stored one; the shadow is removed and the alias moved to a new version.

    \b
    Example:
      mlayer publish-model training/out --function scorer --alias live --canary 10
      mlayer promote --function scorer --alias live
      mlayer publish-model training/out2 --function scorer --alias live --shadow
      mlayer promote --function scorer --alias live --layers-dir layers
    """
    from mlayer.inventory import shadow_label
    from mlayer.rollout import promote as do_promote

    function = options.require_function(function)
    alias = options.require(alias, "--alias")
    result = do_promote(
        settings.client("lambda"),
        function=function,
        alias=alias,
        layer_name=_layer_name(model_layer, function, "model"),
        s3=settings.client("s3"),
        shadow_layer=_layer_name(shadow_layer, function, "shadow"),
        layers_dir=Path(layers_dir),
    )
    old = result.old_model.label if result.old_model else "no model"
    new = result.new_model.label if result.new_model else "no model"
    if result.shadow is not None:
        click.echo(
            f"Promoted: shadow {shadow_label(result.shadow)} is now live: alias {result.alias} "
            f"function version {result.old_function_version} -> {result.new_function_version}, "
            "shadow removed."
        )
    else:
        click.echo(
            f"Promoted: alias {result.alias} function version {result.old_function_version} -> "
            f"{result.new_function_version} (was {result.weight:.1%} canary), routing cleared."
        )
    click.echo(f"Model: {old} -> {new}")
    for note in result.notes:
        click.echo(f"Note: {note}")


@click.command()
@options.function
@options.alias
@options.model_layer
@options.shadow_layer
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=1),
    metavar="VERSION",
    help="Model version (the N of vN) to go back to [default: the newest one older than the live one].",
)
@click.pass_obj
def rollback(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    shadow_layer: str | None,
    to: int | None,
) -> None:
    """Go back to the previous model version, or the one named with --to.

    With --alias, the alias moves to the function version that carried that model (a canary
    in progress is cancelled instead), and $LATEST is relinked to match. Without, the
    function is relinked to the older model layer version. A deleted layer version cannot
    be linked again: publish its zip again instead. A shadow is removed from $LATEST, and
    the alias ends on a version without one.

    \b
    Example:
      mlayer rollback --function scorer --alias live
      mlayer rollback --function scorer --alias live --to 3
    """
    from mlayer.rollout import rollback as do_rollback

    function = options.require_function(function)
    result = do_rollback(
        settings.client("lambda"),
        function=function,
        layer_name=_layer_name(model_layer, function, "model"),
        alias=alias,
        to=to,
        s3=settings.client("s3"),
        shadow_layer=_layer_name(shadow_layer, function, "shadow"),
    )
    old = result.from_model.label if result.from_model else "none"
    if result.canary_cancelled:
        click.echo(
            f"Cancelled the canary: alias {result.alias} no longer routes to function version "
            f"{result.old_function_version} ({old}); it serves version "
            f"{result.new_function_version} only."
        )
    else:
        click.echo(f"Rolled back {result.function}: {old} -> {result.to_model.label}")
        if result.alias:
            click.echo(
                f"Alias {result.alias}: function version {result.old_function_version} -> "
                f"{result.new_function_version}"
            )
    if result.layers:
        click.echo("Layers now:")
        for arn in result.layers:
            click.echo(f"  {arn}")
    for note in result.notes:
        click.echo(f"Note: {note}")


@click.command()
@options.function
@options.alias
@options.model_layer
@options.shadow_layer
@options.layers_dir
@options.json_output
@click.pass_obj
def status(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    shadow_layer: str | None,
    layers_dir: str,
    as_json: bool,
) -> None:
    """Show the function, its layers, the live model and where its alias routes.

    The live model is the one the alias serves (with --alias), else $LATEST's: where it
    lives (a model layer, or an archive of the S3 model store with its key, size and
    sha256). Its manifest comes from a local build with the same sha256, else from the
    layer or the archive itself. A shadow model (scored beside it, written nowhere) is
    shown with where it comes from, for $LATEST and each version the alias routes to.

    The stream triggers (event source mappings) of the function follow: the stream, the
    alias or version they invoke, their filters and where failed batches go.

    Last, the last hour's metrics of the live model (and of the canary, and of the shadow
    it scores beside it): records, bad-record rate, label shares (`mlayer compare` shows
    them all side by side). Without CloudWatch access, status says so and shows the rest.

    \b
    Example:
      mlayer status --function scorer --alias live
      mlayer status --function scorer --json
    """
    from dataclasses import asdict

    from mlayer.compare import last_hour
    from mlayer.inventory import status as get_status
    from mlayer.trigger import triggers_of

    function = options.require_function(function)
    layer_name = _layer_name(model_layer, function, "model")
    result = get_status(
        settings.client("lambda"),
        function=function,
        layer_name=layer_name,
        alias=alias,
        layers_dir=Path(layers_dir),
        s3=settings.client("s3"),
        shadow_layer=_layer_name(shadow_layer, function, "shadow"),
    )
    triggers = triggers_of(settings.client("lambda"), function)
    watched = last_hour(
        settings.client("lambda"), settings.client("cloudwatch"), function=function,
        layer_name=layer_name, alias=alias, s3=settings.client("s3"),
    )  # fmt: skip
    if as_json:
        from mlayer.inventory import shadow_label

        data = asdict(result)
        data["budget"]["total"] = result.budget.total
        live = result.live_model
        data["live_model_label"] = live.label if live else None
        data["live_model_location"] = _where(live) if live else None
        data["metrics"] = _metrics_json(watched)
        shade = result.shadow_model
        data["shadow_model_label"] = shadow_label(shade) if shade else None
        data["shadow_model_location"] = _where(shade) if shade else None
        data["triggers"] = [asdict(t) for t in triggers]
        _echo_json(data)
        return
    _render_status(result, watched, triggers)


def _metrics_json(watched: Any) -> dict[str, Any]:
    """status --json's ``metrics``: the window, and each served model's figures by role."""
    from dataclasses import asdict

    data: dict[str, Any] = {
        "start": watched.start,
        "end": watched.end,
        "unavailable": watched.unavailable,
        "notes": watched.notes,
    }
    for column in watched.columns:
        data[column.role] = asdict(column)
    return data


def _where(model: Any) -> dict[str, Any]:
    """Where a model lives, for status: a layer version or an S3 archive."""
    stored = model.stored
    if stored is not None:
        return {
            "from": "s3",
            "at": stored.location,
            "bytes": stored.size,
            "sha256": stored.sha256,
            "model_uri": str(stored),
            "deleted": model.deleted,
        }
    return {
        "from": "layer",
        "at": model.arn,
        "bytes": model.unzipped_bytes,
        "sha256": model.sha256,
        "deleted": model.deleted,
    }


def _render_status(s: Any, watched: Any, triggers: list[Any] | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mlayer.archive import mb

    console = Console(soft_wrap=True)
    console.print(f"[bold]Function[/] {s.function}  {s.arn}")
    console.print(
        f"  {s.runtime} {s.arch}, {s.memory_mb} MB, timeout {s.timeout_s} s, handler "
        f"{s.handler}, state {s.state} / {s.last_update_status}"
    )
    if s.environment:
        env = ", ".join(f"{k}={v}" for k, v in sorted(s.environment.items()))
        console.print(f"  environment: {env}", highlight=False)
    console.print(f"  SnapStart: {_snapstart_text(s)}", highlight=False)
    table = Table(title="Layers linked to $LATEST, in order", title_justify="left")
    for column in ("#", "layer", "version", "kind", "sha256", "unzipped", "zipped"):
        table.add_column(column)
    for i, layer in enumerate(s.layers, 1):
        table.add_row(
            str(i),
            layer.name,
            str(layer.layer_version) + (" (deleted)" if layer.deleted else ""),
            layer.kind or "not mlayer",
            (layer.sha256 or "?")[:12],
            mb(layer.unzipped_bytes) if layer.unzipped_bytes is not None else "?",
            mb(layer.code_size) if layer.code_size is not None else "?",
        )
    console.print(table)
    console.print(f"Size: {s.budget.describe()}", highlight=False)
    live = s.live_model.label if s.live_model else "no model layer linked, no MODEL_URI"
    console.print(f"[bold]Live model[/] ({s.live_from}): {live}", highlight=False)
    if s.live_model:
        where = _where(s.live_model)
        text = f"  from: {where['from']} {where['at']}"
        if where.get("bytes") is not None:
            text += f", {mb(where['bytes'])}"
        if where.get("sha256"):
            text += f", sha256 {where['sha256']}"
        if s.ephemeral_mb and where["from"] == "s3":
            text += f"; /tmp {s.ephemeral_mb:,} MB"
        console.print(text, highlight=False)
    if s.manifest:
        m = s.manifest
        console.print(f"  manifest: {s.manifest_source}", highlight=False)
        console.print(f"  stages: {', '.join(m.get('stages', []))}", highlight=False)
        console.print(f"  input: {json.dumps(m.get('input'))}", highlight=False)
        console.print(f"  labels: {', '.join(map(str, m.get('labels', [])))}", highlight=False)
        versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
        console.print(f"  saved with: {versions}; created {m.get('created')}", highlight=False)
    elif s.live_model:
        console.print(
            "  manifest: not available locally (no build with this sha256 in --layers-dir)",
            highlight=False,
        )
    _render_shadows(console, s)
    for a in s.aliases:

        def served(version: str, a: Any = a) -> str:
            shadow = a.shadow_models.get(version)
            return f"{a.models.get(version) or 'no model'}" + (
                f"; shadow {shadow}" if shadow else ""
            )

        def snap(version: str, a: Any = a) -> str:
            return ", resumes from its snapshot" if a.snapshots.get(version) else ""

        routes = [
            f"version {a.function_version} ({served(a.function_version)}{snap(a.function_version)})"
        ]
        routes += [f"version {v} at {w:.1%} ({served(v)}{snap(v)})" for v, w in a.weights.items()]
        console.print(f"[bold]Alias[/] {a.name}: {' + '.join(routes)}", highlight=False)
    for t in triggers or []:
        console.print("[bold]Trigger[/] " + escape(t.describe()), highlight=False)
    from mlayer.commands.compare import status_lines

    for line in status_lines(watched):
        console.print(line, highlight=False, markup=False)


def _snapstart_text(s: Any) -> str:
    """status's SnapStart line: on or off, how that is known, and the live snapshot."""
    if not s.snapstart:
        return "off"
    known = (
        "the function's SnapStart setting"
        if s.snapstart_from == "configuration"
        else "the mlayer:snapstart tag: the endpoint keeps no SnapStart setting"
    )
    text = f"on for published versions (known from {known})"
    if s.snapshot_version is not None:
        text += f"; {s.live_from.split(' ->')[0]} resumes from the snapshot of version {s.snapshot_version}"
    return text


def _render_shadows(console: Any, s: Any) -> None:
    """The live version's shadow, and $LATEST's when it is another."""
    from mlayer.archive import mb
    from mlayer.inventory import shadow_label

    shown = []
    if s.shadow_model is not None:
        shown.append((s.live_from, s.shadow_model))
    latest = s.latest_shadow_model
    if latest is not None and (s.shadow_model is None or latest.arn != s.shadow_model.arn):
        shown.append(("$LATEST", latest))
    for where, shadow in shown:
        console.print(f"[bold]Shadow[/] ({where}): {shadow_label(shadow)}", highlight=False)
        at = _where(shadow)
        text = f"  from: {at['from']} {at['at']}"
        if at.get("bytes") is not None:
            text += f", {mb(at['bytes'])}"
        if at.get("sha256"):
            text += f", sha256 {at['sha256']}"
        console.print(text, highlight=False)
    if latest is None and s.shadow_model is not None and s.live_from != "$LATEST":
        console.print("[bold]Shadow[/] ($LATEST): none", highlight=False)


@click.command()
@options.function
@options.alias
@options.model_layer
@options.shadow_layer
@options.bucket
@options.json_output
@click.pass_obj
def history(
    settings: Any,
    function: str | None,
    alias: str | None,
    model_layer: str | None,
    shadow_layer: str | None,
    bucket: str | None,
    as_json: bool,
) -> None:
    """List the model's versions: where each lives (layer version or S3 archive), model
    version, created, sha256, which is live, users.

    Deleted layer versions and archives still used by a function version are listed too.
    The S3 model store is read in the buckets the function versions' MODEL_URIs name, and
    in --bucket. Shadows are listed with the versions that score them: the shadow layer's
    versions in a table of their own, a stored shadow's archive in the model's.

    \b
    Example:
      mlayer history --function scorer --alias live
    """
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from mlayer.archive import mb
    from mlayer.inventory import history as get_history

    function = options.require_function(function)
    result = get_history(
        settings.client("lambda"),
        function=function,
        layer_name=_layer_name(model_layer, function, "model"),
        alias=alias,
        s3=settings.client("s3"),
        buckets=[bucket] if bucket else [],
        shadow_layer=_layer_name(shadow_layer, function, "shadow"),
    )
    if as_json:
        _echo_json(asdict(result))
        return
    if not result.rows:
        click.echo(
            f"Layer {result.layer_name} has no versions yet; publish one with mlayer publish-model."
        )
        return
    console = Console(soft_wrap=True)
    shadowed = any(r.shadow_of for r in result.rows)
    table = Table(title=f"{result.layer_name}: live = {result.live_from}", title_justify="left")
    columns = ["layer version / S3 archive", "model", "created", "sha256", "unzipped", "live"]
    columns += ["function versions", "aliases"] + (["shadow of"] if shadowed else [])
    for column in columns:
        table.add_column(column)
    for r in result.rows:
        where = str(r.layer_version) if r.layer_version is not None else r.location
        row = [
            where + (" (deleted)" if r.deleted else ""),
            f"{r.model} v{r.model_version}" if r.model_version is not None else "?",
            (r.created or "")[:19],
            (r.sha256 or "?")[:12],
            mb(r.unzipped_bytes) if r.unzipped_bytes is not None else "?",
            "LIVE" if r.live else "",
            ", ".join(r.function_versions),
            ", ".join(r.aliases),
        ]
        table.add_row(*row, *([", ".join(r.shadow_of + r.shadow_aliases)] if shadowed else []))
    console.print(table)
    if result.shadows:
        shadows = Table(
            title=f"{result.shadow_layer}: shadows, LIVE = the live version's",
            title_justify="left",
        )
        for column in ("layer version", "model", "created", "sha256", "unzipped", "live"):
            shadows.add_column(column)
        shadows.add_column("shadow of (function versions, aliases)")
        for r in result.shadows:
            shadows.add_row(
                str(r.layer_version) + (" (deleted)" if r.deleted else ""),
                f"{r.model} v{r.model_version}" if r.model_version is not None else "?",
                (r.created or "")[:19],
                (r.sha256 or "?")[:12],
                mb(r.unzipped_bytes) if r.unzipped_bytes is not None else "?",
                "LIVE" if r.live else "",
                ", ".join(r.shadow_of + r.shadow_aliases),
            )
        console.print(shadows)


@click.command()
@options.function
@options.model_layer
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    required=True,
    metavar="N",
    help="Always keep the newest N versions.",
)
@options.bucket
@options.dry_run
@options.json_output
@click.pass_obj
def prune(
    settings: Any,
    function: str | None,
    model_layer: str | None,
    keep: int,
    bucket: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete old model layer versions and stored archives that no function version or
    alias uses.

    The newest N versions are kept, and so is every version a function version links or
    downloads (alias rollbacks move to those). Layer versions count against the 75 GB code
    storage; archives of the S3 model store (in the buckets the function versions name, and
    --bucket) are deleted from S3.

    \b
    Example:
      mlayer prune --function scorer --keep 3 --dry-run
      mlayer prune --function scorer --keep 3
    """
    from dataclasses import asdict

    from mlayer.inventory import prune as do_prune

    function = options.require_function(function)
    result = do_prune(
        settings.client("lambda"),
        function=function,
        layer_name=_layer_name(model_layer, function, "model"),
        keep=keep,
        dry_run=dry_run,
        s3=settings.client("s3"),
        buckets=[bucket] if bucket else [],
    )
    if as_json:
        _echo_json(asdict(result))
        return
    verb = "Would delete" if dry_run else "Deleted"

    def label(r: Any) -> str:
        where = r.layer_version if r.layer_version is not None else r.location
        return f"{where} ({r.model} v{r.model_version})"

    click.echo(
        f"{verb} {len(result.deleted)} version(s) of {result.layer_name}: "
        f"{', '.join(label(r) for r in result.deleted) or 'none'}"
    )
    if result.kept_newest:
        click.echo(f"Kept (newest {keep}): {', '.join(label(r) for r in result.kept_newest)}")
    for r in result.kept_in_use:
        users = ", ".join(
            [f"function version {v}" for v in r.function_versions]
            + [f"alias {a}" for a in r.aliases]
            + [f"function version {v} as its shadow" for v in r.shadow_of]
        )
        click.echo(f"Kept (in use by {users}): {label(r)}")


COMMANDS = [publish_deps, publish_model, promote, rollback, status, history, prune]
