"""Shadow models: a second model scored beside the live one on every batch, written nowhere
(docs/CONTRACTS.md, "Shadow scoring").

A shadow is a version of the shadow layer (``<function>-shadow``, ``--shadow-layer``) whose
zip holds a model build's files under ``shadow/`` (the function finds them in
``/opt/shadow``), or, for a model of the S3 model store, its archive's URI in
``SHADOW_URI``. This module attaches and detaches a shadow on ``$LATEST`` in one
configuration update, each time checking the budgets, and rolls one out:
:func:`publish_shadow` (``publish-model --shadow``) and :func:`stop_shadow` (``shadow
stop``). :mod:`mlayer.rollout` stands on it for canaries (:func:`attach_live`: the live
model as the canary's shadow) and for promote (:func:`promotable`, :func:`detach`). The
shadow zips themselves, and finding builds in ``layers/``: :mod:`mlayer.shadow_layer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer import model_store, snapstart
from mlayer.archive import Budget, BudgetPart, mb
from mlayer.arns import function_name, parse_layer_arn
from mlayer.contracts import model_description
from mlayer.errors import BudgetError, BuildError, ConfigError, MlayerError, NotFoundError
from mlayer.inventory import (
    FunctionVersion,
    ModelIndex,
    ModelRef,
    carries,
    model_of,
    shadow_label,
    shadow_of,
)
from mlayer.lambda_api import (
    DEFAULT_PACE,
    Pace,
    alias_weights,
    get_alias,
    get_configuration,
    layer_arns,
    relinked,
    set_alias,
    update_configuration,
)
from mlayer.layers import (
    MAX_LAYERS,
    Build,
    PublishedLayer,
    find_published,
    measure_budget,
    model_build_with,
    publish_layer,
)
from mlayer.model_store import StoredModel, StoreURI
from mlayer.shadow_layer import (
    build_shadow,
    find_model_build,
    find_shadow_build,
    is_set,
    model_build_from_shadow,
    search_dirs,
)
from mlayer.sizing import environment_size, memory_problem

ENV_VAR = model_store.SHADOW_ENV_VAR
OUTPUT_VAR = "SHADOW_OUTPUT"
# The canary's note when it runs without the live model as its shadow.
JUDGED = "its agreement with the live model will be judged by label shares instead"
_TO_STORE = (
    "serve the shadow from the S3 model store instead (mlayer publish-model MODEL_DIR --shadow "
    "--store s3 --bucket BUCKET): its archive is downloaded at init and counts against neither "
    "limit"
)


def _live_is_set(s3: Any | None, live: ModelRef, dirs: list[Path]) -> bool:
    """Whether the live model is a set, as far as its local build or stored archive tell."""
    for directory in dirs:
        found = model_build_with(directory, live.sha256)
        if found is not None:
            return is_set(found[1])
    stored = live.stored
    if stored is not None and s3 is not None and not live.deleted:
        return is_set(model_store.read_manifest(s3, stored) or {})
    return False


# ---------------------------------------------------------------------------- $LATEST


def detach_updates(config: dict[str, Any], shadow_layer: str) -> dict[str, Any]:
    """The configuration changes that remove the shadow from ``config``: the shadow layer,
    SHADOW_URI and SHADOW_OUTPUT ({} when it has none)."""
    updates: dict[str, Any] = {}
    current = layer_arns(config)
    layers = _without(current, shadow_layer)
    if layers != current:
        updates["Layers"] = layers
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    if any(env.pop(key, None) is not None for key in (ENV_VAR, OUTPUT_VAR)):
        updates["Environment"] = {"Variables": env}
    return updates


def detach(lam: Any, function: str, shadow_layer: str, pace: Pace = DEFAULT_PACE) -> bool:
    """Remove the shadow from $LATEST in one update (nothing else changes); whether it had one."""
    updates = detach_updates(get_configuration(lam, function), shadow_layer)
    if updates:
        update_configuration(lam, function, pace, **updates)
    return bool(updates)


def _attach(
    lam: Any,
    function: str,
    config: dict[str, Any],
    locator: str,
    shadow_layer: str,
    pace: Pace,
    *,
    unpacked_bytes: int | None = None,
    memory_mb: int | None = None,
    changes: list[str] | None = None,
) -> tuple[list[str], bool]:
    """Give $LATEST the shadow at ``locator`` (a shadow layer version ARN, or a SHADOW_URI),
    in one update and only when something changes; its layers now and whether it changed.

    A layer takes the shadow layer's slot and clears SHADOW_URI; a SHADOW_URI unlinks the
    shadow layer and grows /tmp to hold the live model's archive (when it is stored too) and
    the shadow's, each with its unpacked files (``unpacked_bytes``: the shadow's).
    """
    current = layer_arns(config)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    updates: dict[str, Any] = {}
    uri = StoreURI.parse(locator)
    if uri is None:
        layers = relinked(current, locator)
        if env.pop(ENV_VAR, None) is not None:
            updates["Environment"] = {"Variables": env}
    else:
        layers = _without(current, shadow_layer)
        if env.get(ENV_VAR) != locator:
            env[ENV_VAR] = locator
            updates["Environment"] = {"Variables": env}
        archives, unpacked = uri.size, unpacked_bytes or uri.size
        live = StoreURI.parse(env.get(model_store.ENV_VAR, ""))
        if live is not None:  # a tar's files are about its size
            archives, unpacked = archives + live.size, unpacked + live.size
        needed = environment_size(archives, unpacked, None).ephemeral_mb
        storage = int((config.get("EphemeralStorage") or {}).get("Size") or 512)
        if needed > storage:
            snapstart.check_storage(
                lam, config, needed,
                f"the live and shadow models from the S3 model store need {needed:,} MB",
            )  # fmt: skip
            updates["EphemeralStorage"] = {"Size": needed}
            if changes is not None:
                changes.append(f"/tmp {storage:,} -> {needed:,} MB (the live and shadow models)")
    if memory_mb and memory_mb != config.get("MemorySize"):
        updates["MemorySize"] = memory_mb
        if changes is not None:
            changes.append(f"memory {config.get('MemorySize')} -> {memory_mb:,} MB")
    if layers != current:
        updates["Layers"] = layers
    if updates:
        update_configuration(lam, function, pace, **updates)
    return layers, bool(updates)


def _fit(
    lam: Any, config: dict[str, Any], shadow_layer: str, share: BudgetPart
) -> tuple[Budget, str | None]:
    """The budget of ``config`` with a version of ``shadow_layer`` of ``share``'s size in the
    shadow's slot, and why it does not fit (None when it does)."""
    name = config.get("FunctionName", "the function")
    slot = f"arn:aws:lambda:{lam.meta.region_name}:000000000000:layer:{shadow_layer}:0"
    arns = relinked(layer_arns(config), slot)
    budget = measure_budget(lam, config, arns, {slot: share})
    if len(arns) > MAX_LAYERS:
        listed = ", ".join(parse_layer_arn(a).name for a in arns)
        return budget, (
            f"function {name} would link {len(arns)} layers with the shadow ({listed}), and "
            f"Lambda allows {MAX_LAYERS}"
        )
    if not budget.fits:
        notes = "".join(f" ({n})" for n in budget.notes)
        return budget, (
            f"function {name} would be {mb(budget.total)} unzipped ({budget.total:,} bytes) "
            f"with the shadow, over Lambda's 250 MiB ({budget.limit:,} bytes) by "
            f"{mb(budget.over_by)}: {budget.describe()}{notes}"
        )
    return budget, None


def _without(arns: list[str], layer_name: str) -> list[str]:
    return [a for a in arns if parse_layer_arn(a).name != layer_name]


def serving_settings(config: dict[str, Any]) -> tuple[Any, ...]:
    """What a function version serves: its code, layers, models and shadow."""
    env = (config.get("Environment") or {}).get("Variables") or {}
    return (
        config.get("CodeSha256"),
        layer_arns(config),
        env.get(model_store.ENV_VAR),
        env.get(ENV_VAR),
        env.get(OUTPUT_VAR),
    )


# ---------------------------------------------------------------------------- publish --shadow


@dataclass
class ShadowRollout:
    """What publish-model --shadow did."""

    function: str
    shadow: ModelRef  # now on $LATEST (and the alias's version)
    live: ModelRef  # the live model, unchanged
    shadow_layer: str
    layers: list[str]
    relinked: bool
    budget: Budget
    replaced: ModelRef | None = None  # the shadow it replaced
    layer: PublishedLayer | None = None  # the shadow layer version (None: SHADOW_URI)
    stored: StoredModel | None = None  # the archive in the S3 model store
    build: Build | None = None  # the shadow zip written (layers/shadow-<name>-v<N>.zip)
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    environment_changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def publish_shadow(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    build: Build,
    model_layer: str,
    shadow_layer: str,
    alias: str | None = None,
    bucket: str | None = None,
    layers_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    memory_mb: int | None = None,
    pace: Pace = DEFAULT_PACE,
) -> ShadowRollout:
    """Make model ``build`` the shadow of the live model and roll it out.

    A layer build becomes a version of ``shadow_layer`` (its shadow zip, written beside it;
    a version with the same content is reused), after checking the 5-layer limit and the
    250 MB budget; a store build is uploaded to ``bucket`` as publish-model stores a model
    (the same key), and $LATEST's SHADOW_URI points at it, /tmp sized for both models.
    $LATEST gets the shadow in one configuration update; its live model is untouched. With
    ``alias``: a function version is published (its Description records the live model) and
    the alias moved to it. A shadow already there is replaced (a note says so).

    Raises:
        ConfigError: the shadow has the live model's content; a model set on either side;
            a canary in progress on the alias; $LATEST serving another model than the alias;
            no live model; a store build without a bucket.
        BudgetError: with the shadow layer, over 5 layers or 250 MB unzipped.
        NotFoundError: no such function or alias.
    """
    name = function_name(function)
    if build.kind != "model":
        raise BuildError(
            f"{build.zip_path} is not a model build; build one with mlayer build-model"
        )
    if is_set(build.manifest):
        raise ConfigError(
            f"{build.zip_path.name} is a model set, and sets have no shadow (the function "
            "ignores SHADOW_URI and /opt/shadow for a set); publish a single model with --shadow"
        )
    stored_build = build.package == "store"
    if stored_build and not bucket:
        raise ConfigError(
            f"{build.zip_path.name} is packaged for the S3 model store: pass --bucket BUCKET "
            "(an S3 bucket in the function's region the function's role may read)"
        )
    config = get_configuration(lam, function)
    current_alias = _alias_without_canary(lam, function, alias, "a shadow")
    models = ModelIndex(lam, model_layer, s3, [bucket] if bucket else [])
    latest_fv, served_fv = _served(lam, function, config, current_alias, model_layer)
    live = model_of(models, served_fv)
    if live is None:
        raise ConfigError(
            f"function {name} serves no model yet, and a shadow scores beside the live one: "
            f"publish a model first with mlayer publish-model MODEL_DIR"
            f"{f' --alias {alias}' if alias else ''}"
        )
    _check_in_step(alias, latest_fv, served_fv, models)
    if build.identity is not None and build.identity == live.identity:
        raise ConfigError(
            f"{build.name} v{build.version} has the same content as the live {live.name} "
            f"v{live.version} (same files and input): as its shadow it would agree on every "
            "record and measure nothing; publish another model with --shadow"
        )
    dirs = search_dirs(layers_dir, build.zip_path.parent)
    if _live_is_set(s3, live, dirs):
        raise ConfigError(
            f"the live model {live.label} is a model set, and sets have no shadow (the "
            "function ignores SHADOW_URI and /opt/shadow for a set)"
        )
    replaced = shadow_of(models, latest_fv, shadow_layer) or shadow_of(
        models, served_fv, shadow_layer
    )
    description = model_description(
        build.name, build.version, build.sha256, build.unzipped_bytes, build.identity
    )
    notes: list[str] = []
    layer = stored = shadow_zip = None
    if stored_build:
        assert s3 is not None and bucket is not None
        stored = _store(s3, build, model_layer, bucket, description, models, progress, notes)
        locator = str(stored.uri)
        budget = measure_budget(lam, config, _without(layer_arns(config), shadow_layer))
        _memory_note(build, memory_mb or int(config.get("MemorySize") or 128), notes)
    else:
        shadow_zip = build_shadow(build)
        share = BudgetPart(
            f"layer {shadow_layer} (shadow {build.name} v{build.version})",
            shadow_zip.unzipped_bytes,
        )
        budget, problem = _fit(lam, config, shadow_layer, share)
        if problem is not None:
            raise BudgetError(f"{problem}; {_TO_STORE}")
        layer = publish_layer(
            lam, s3, layer_name=shadow_layer, build=shadow_zip, bucket=bucket, progress=progress,
            description=model_description(
                build.name, build.version, shadow_zip.sha256, shadow_zip.unzipped_bytes,
                build.identity,
            ),
            identity=build.identity,
        )  # fmt: skip
        locator = layer.arn
        budget.parts = [
            BudgetPart(f"layer {shadow_layer}:{layer.version} (shadow)", p.unzipped_bytes)
            if p is share
            else p
            for p in budget.parts
        ]
    result = ShadowRollout(
        function=name,
        shadow=models.ref(locator),
        live=live,
        shadow_layer=shadow_layer,
        layers=layer_arns(config),
        relinked=False,
        budget=budget,
        replaced=replaced if replaced is not None and replaced.arn != locator else None,
        layer=layer,
        stored=stored,
        build=shadow_zip,
        alias=alias,
        notes=notes,
    )
    result.layers, result.relinked = _attach(
        lam, function, config, locator, shadow_layer, pace, memory_mb=memory_mb,
        unpacked_bytes=build.unzipped_bytes if stored_build else None,
        changes=result.environment_changes,
    )  # fmt: skip
    if result.replaced is not None:
        result.notes.append(
            f"replaced the shadow {shadow_label(result.replaced)}: one shadow at a time"
        )
    if alias and current_alias is not None:
        _move_alias(lam, function, alias, current_alias, live, result, pace)
    return result


def _store(
    s3: Any,
    build: Build,
    model_layer: str,
    bucket: str,
    description: str,
    models: ModelIndex,
    progress: Callable[[int], None] | None,
    notes: list[str],
) -> StoredModel:
    """The archive in the model store (uploaded, or found: the same key as publish-model's,
    or an archive of the same model content)."""
    same = next(
        (
            r for r in models.listed()
            if r.stored and not r.deleted and build.identity and r.identity == build.identity
        ),
        None,
    )  # fmt: skip
    if same is not None and same.stored is not None and same.sha256 != build.sha256:
        notes.append(
            f"{build.zip_path.name} holds the same model content as {same.label}, stored "
            f"before: reused it instead of storing {build.name} v{build.version}"
        )
        return StoredModel(same.stored, None, same.created, reused=True)
    return model_store.upload(
        s3, bucket=bucket, layer_name=model_layer, path=build.zip_path, sha256=build.sha256,
        size=build.zip_bytes, description=description, progress=progress,
    )  # fmt: skip


def _memory_note(build: Build, memory_mb: int, notes: list[str]) -> None:
    peak = (build.manifest.get("smoke_test") or {}).get("max_memory_mb")
    problem = memory_problem(
        environment_size(build.zip_bytes, build.unzipped_bytes, peak), memory_mb
    )
    if problem is not None:
        notes.append(
            f"the shadow loads beside the live model, and on its own {problem[0]}; a shadow "
            "that fails to load is dropped and the live model keeps serving"
        )


def _alias_without_canary(
    lam: Any, function: str, alias: str | None, what: str
) -> dict[str, Any] | None:
    """The alias (None without one); refused when missing or while a canary runs."""
    if not alias:
        return None
    current = get_alias(lam, function, alias)
    name = function_name(function)
    if current is None:
        raise NotFoundError(
            f"function {name} has no alias {alias}; publish a model with mlayer publish-model "
            f"MODEL_DIR --alias {alias} first"
        )
    weights = alias_weights(current)
    if weights:
        routed = ", ".join(f"version {v} at {w:.1%}" for v, w in weights.items())
        raise ConfigError(
            f"alias {alias} has a canary in progress ({routed}), whose shadow is the live "
            f"model: finish it with mlayer promote --alias {alias} or mlayer rollback --alias "
            f"{alias} before {what}"
        )
    return current


def _served(
    lam: Any,
    function: str,
    config: dict[str, Any],
    current_alias: dict[str, Any] | None,
    model_layer: str,
) -> tuple[FunctionVersion, FunctionVersion]:
    """($LATEST, the version the alias serves, else $LATEST)."""
    latest = FunctionVersion.of("$LATEST", config, model_layer)
    if current_alias is None:
        return latest, latest
    version = str(current_alias["FunctionVersion"])
    return latest, FunctionVersion.of(
        version, get_configuration(lam, function, version), model_layer
    )


def _check_in_step(
    alias: str | None, latest: FunctionVersion, served: FunctionVersion, models: ModelIndex
) -> None:
    """Refuse when $LATEST serves another model than the alias: the version published from
    it would change the live model too."""
    if alias and latest.model_at != served.model_at:
        at_latest = model_of(models, latest)
        at_alias = model_of(models, served)
        raise ConfigError(
            f"$LATEST serves {at_latest.label if at_latest else 'no model'} but alias {alias} "
            f"serves {at_alias.label if at_alias else 'no model'}: a version published from "
            f"$LATEST would change the live model too; bring $LATEST in step first (mlayer "
            f"publish-model with the live model's build and --alias {alias})"
        )


def _move_alias(
    lam: Any,
    function: str,
    alias: str,
    current_alias: dict[str, Any],
    live: ModelRef,
    result: ShadowRollout | ShadowStop,
    pace: Pace,
) -> None:
    """Publish $LATEST as a version carrying ``live`` and move the alias there (unless the
    alias's version already serves exactly what $LATEST does)."""
    old = str(current_alias["FunctionVersion"])
    result.old_function_version = old
    serving = get_configuration(lam, function, old)
    if serving_settings(serving) == serving_settings(get_configuration(lam, function)):
        result.new_function_version = old
        result.notes.append(f"alias {alias} already serves function version {old}, which has this")
        return
    new = snapstart.publish_version(lam, function, carries(live), pace, result.notes)
    if new != old:
        set_alias(lam, function, alias, new)
    result.new_function_version = new


# ---------------------------------------------------------------------------- shadow stop


@dataclass
class ShadowStop:
    """What shadow stop did."""

    function: str
    removed: ModelRef  # the shadow removed
    live: ModelRef | None
    layers: list[str]
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    notes: list[str] = field(default_factory=list)


def stop_shadow(
    lam: Any,
    *,
    function: str,
    model_layer: str,
    shadow_layer: str,
    alias: str | None = None,
    s3: Any | None = None,
    pace: Pace = DEFAULT_PACE,
) -> ShadowStop:
    """Remove the shadow (shadow layer, SHADOW_URI, SHADOW_OUTPUT) from $LATEST in one update;
    with ``alias``, publish a version (the live model, no shadow) and move the alias there.

    Raises:
        NotFoundError: no such function or alias; no shadow on $LATEST nor the alias's version.
        ConfigError: a canary in progress (its shadow ends with promote or rollback); $LATEST
            serving another model than the alias.
    """
    name = function_name(function)
    config = get_configuration(lam, function)
    current_alias = _alias_without_canary(lam, function, alias, "stopping a shadow")
    models = ModelIndex(lam, model_layer, s3)
    latest_fv, served_fv = _served(lam, function, config, current_alias, model_layer)
    shadow = shadow_of(models, latest_fv, shadow_layer) or shadow_of(
        models, served_fv, shadow_layer
    )
    if shadow is None:
        where = (
            f" nor on function version {served_fv.version}, which alias {alias} serves"
            if current_alias is not None
            else ""
        )
        raise NotFoundError(
            f"function {name} has no shadow on $LATEST{where}; start one with mlayer "
            "publish-model MODEL_DIR --shadow"
        )
    _check_in_step(alias, latest_fv, served_fv, models)
    live = model_of(models, served_fv)
    detach(lam, function, shadow_layer, pace)
    result = ShadowStop(
        function=name,
        removed=shadow,
        live=live,
        layers=layer_arns(get_configuration(lam, function)),
        alias=alias,
    )
    if alias and current_alias is not None and live is not None:
        _move_alias(lam, function, alias, current_alias, live, result, pace)
    return result


# ---------------------------------------------------------------------------- canary, promote


def drop_if_live(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    identity: str | None,
    model_layer: str,
    shadow_layer: str,
    pace: Pace = DEFAULT_PACE,
) -> ModelRef | None:
    """Remove $LATEST's shadow when it holds the model now live there (``identity``): it
    would only agree with itself. Returns the shadow removed, if any."""
    config = get_configuration(lam, function)
    removed = shadow_of(
        ModelIndex(lam, model_layer, s3), FunctionVersion.of("$LATEST", config, model_layer),
        shadow_layer,
    )  # fmt: skip
    if removed is None or identity is None or removed.identity != identity:
        return None
    update_configuration(lam, function, pace, **detach_updates(config, shadow_layer))
    return removed


@dataclass
class LiveShadow:
    """The live model attached to $LATEST as a canary's shadow (``model`` None: it was not,
    and ``notes`` say why)."""

    model: ModelRef | None
    layers: list[str] | None = None
    changed: bool = False
    notes: list[str] = field(default_factory=list)


def attach_live(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    live: ModelRef | None,
    candidate: Build,
    dirs: list[Path],
    model_layer: str,
    shadow_layer: str,
    bucket: str | None = None,
    progress: Callable[[int], None] | None = None,
    pace: Pace = DEFAULT_PACE,
) -> LiveShadow:
    """Attach the live model to $LATEST (which now serves ``candidate``) as its shadow, so
    the canary version published next scores every record with both.

    From the live model's stored archive (its MODEL_URI becomes SHADOW_URI), a version of
    ``shadow_layer`` already holding it, or its build in ``dirs`` (made into a shadow zip and
    published); only when the budgets allow. Never raises for a shadow that cannot be had:
    the canary goes without, and the notes say why.
    """

    def without(why: str) -> LiveShadow:
        what = f"the live model {live.label}" if live is not None else "the live model"
        return LiveShadow(
            None, notes=[f"the canary runs without {what} as its shadow: {why}; {JUDGED}"]
        )

    if live is None:
        return without("no live model was found")
    if is_set(candidate.manifest) or _live_is_set(s3, live, dirs):
        return without("sets have no shadow")
    if live.identity is not None and live.identity == candidate.identity:
        return LiveShadow(None)
    config = get_configuration(lam, function)
    models = ModelIndex(lam, model_layer, s3)
    replaced = shadow_of(models, FunctionVersion.of("$LATEST", config, model_layer), shadow_layer)
    notes = []
    if replaced is not None and replaced.identity != live.identity:
        notes.append(f"the canary's shadow replaces {shadow_label(replaced)} on $LATEST")
    stored = live.stored
    try:
        if stored is not None:
            if live.deleted:
                return without(f"its archive {stored.location} was deleted from the model store")
            locator = str(stored)
        else:
            locator = _live_layer(lam, s3, live, dirs, config, shadow_layer, bucket, progress)
    except MlayerError as exc:
        return without(str(exc))
    layers, changed = _attach(lam, function, config, locator, shadow_layer, pace)
    return LiveShadow(models.ref(locator), layers, changed, notes)


class _NoShadow(MlayerError):
    """The live model cannot be a shadow here (the message says why)."""


def _live_layer(
    lam: Any,
    s3: Any | None,
    live: ModelRef,
    dirs: list[Path],
    config: dict[str, Any],
    shadow_layer: str,
    bucket: str | None,
    progress: Callable[[int], None] | None,
) -> str:
    """A version of ``shadow_layer`` holding the live layer model: found, or published from
    its build in ``dirs`` (or its shadow zip there)."""
    published = (
        find_published(lam, shadow_layer, "", live.identity) if live.identity is not None else None
    )
    unzipped = live.unzipped_bytes or 0
    shadow_zip = None
    if published is None:
        model = find_model_build(dirs, live.sha256, live.identity)
        if model is not None and model.package == "layer":
            shadow_zip = build_shadow(model)
        else:
            shadow_zip = find_shadow_build(dirs, None, live.identity)
        if shadow_zip is None:
            where = ", ".join(f"{d}/" for d in dirs) or "layers/"
            raise _NoShadow(
                f"no build of it (sha256 {(live.sha256 or '?')[:12]}) in {where}, and "
                f"{shadow_layer} has no version of it"
            )
        unzipped = shadow_zip.unzipped_bytes
    _, problem = _fit(
        lam, config, shadow_layer, BudgetPart(f"layer {shadow_layer} (shadow)", unzipped)
    )
    if problem is not None:
        raise _NoShadow(problem)
    if published is not None:
        return str(published["LayerVersionArn"])
    assert shadow_zip is not None
    layer = publish_layer(
        lam, s3, layer_name=shadow_layer, build=shadow_zip, bucket=bucket, progress=progress,
        description=model_description(
            str(live.name), live.version or 0, shadow_zip.sha256, shadow_zip.unzipped_bytes,
            live.identity,
        ),
        identity=live.identity,
    )  # fmt: skip
    return layer.arn


def promotable(
    lam: Any, shadow: ModelRef, *, dirs: list[Path], model_layer: str
) -> tuple[Build | None, str | None]:
    """How shadow ``shadow`` becomes the live model: (a model build to publish, None), or
    (None, a locator to serve as it is: a version of ``model_layer`` already holding the
    model, or the stored archive's URI for MODEL_URI).

    The build is found in ``dirs`` by sha256 or identity, or rebuilt from the shadow zip
    there (:func:`model_build_from_shadow`).

    Raises:
        ConfigError: the shadow's archive was deleted, or no build, shadow zip or model layer
            version of it is at hand.
    """
    stored = shadow.stored
    if stored is not None:
        if shadow.deleted:
            raise ConfigError(
                f"the shadow's archive {stored.location} was deleted from the model store; "
                "publish the model again with mlayer publish-model"
            )
        build = find_model_build(dirs, stored.sha256, shadow.identity)
        if build is not None and build.package == "store" and build.sha256 == stored.sha256:
            return build, None
        return None, str(stored)
    if shadow.identity is not None:
        published = find_published(lam, model_layer, "", shadow.identity)
        if published is not None:
            return None, str(published["LayerVersionArn"])
    build = find_model_build(dirs, None, shadow.identity)
    if build is not None and build.package == "layer":
        return build, None
    shadow_zip = find_shadow_build(dirs, shadow.sha256, shadow.identity)
    if shadow_zip is not None:
        return model_build_from_shadow(shadow_zip), None
    where = ", ".join(f"{d}/" for d in dirs) or "layers/"
    model = f"{shadow.name}-v{shadow.version}"
    raise ConfigError(
        f"the shadow {shadow_label(shadow)} cannot become live here: no build of it in {where} "
        f"(model-{model}.zip or shadow-{model}.zip, found by sha256 {(shadow.sha256 or '?')[:12]} "
        f"or content) and {model_layer} has no version of it; pass --layers-dir with the "
        "directory that holds its build, or publish the model with mlayer publish-model"
    )
