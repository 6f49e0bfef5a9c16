"""Rolling models out and back: publish-model, promote, rollback.

Policy lives here: when to publish a function version, where the alias points and with what
routing (:func:`set_alias`), and keeping ``$LATEST``'s model layer in step with what is live
(:func:`_relink_latest`). Everything takes boto3 clients and returns dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer import model_store, shadow, snapstart
from mlayer.archive import Budget, BudgetPart
from mlayer.arns import function_name, parse_layer_arn
from mlayer.contracts import default_layer_name, model_description
from mlayer.errors import BuildError, ConfigError, NotFoundError
from mlayer.inventory import (
    FunctionVersion,
    ModelIndex,
    ModelRef,
    carries,
    function_versions,
    model_of,
    shadow_at,
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
    Build,
    PublishedLayer,
    check_budget,
    check_budget_quietly,
    publish_layer,
)
from mlayer.model_store import StoredModel, StoreURI
from mlayer.sizing import EnvironmentSize, environment_size, memory_problem


@dataclass
class Rollout:
    """What publish-model did."""

    function: str
    layer: PublishedLayer | None  # None: the model went to the S3 model store (``stored``)
    old_model: ModelRef | None
    new_model: ModelRef
    layers: list[str]
    relinked: bool
    budget: Budget
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    canary_weight: float | None = None
    alias_created: bool = False
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False  # the live model already has this content: nothing was done
    stored: StoredModel | None = None  # the archive in the S3 model store
    size: EnvironmentSize | None = None  # what a store-backed function needs
    environment_changes: list[str] = field(default_factory=list)  # memory / storage set
    # A canary's shadow: the live model, scored beside the candidate on the canary version
    # (None: the canary runs without one, and a note says why).
    canary_shadow: ModelRef | None = None


def publish_model(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    build: Build,
    layer_name: str,
    alias: str | None = None,
    canary: float | None = None,
    bucket: str | None = None,
    progress: Callable[[int], None] | None = None,
    memory_mb: int | None = None,
    pace: Pace = DEFAULT_PACE,
    layers_dir: Path | None = None,
    shadow_layer: str | None = None,
) -> Rollout:
    """Publish a model layer (or reuse an identical version) and roll it out.

    A store build (``build.package == "store"``) goes to ``bucket`` instead, under its
    content-addressed key, and $LATEST gets its MODEL_URI (and drops the model layer), with
    /tmp sized for it and its memory checked against the smoke test's measured peak
    (``memory_mb`` sets it).

    Relinks only the model layer of ``function`` (others keep their place), after checking
    the 5-layer limit and the 250 MB budget. With ``alias``: publishes a function version
    and moves the alias to it, or with ``canary`` (percent) routes that share of the alias's
    invocations to it while the alias stays on the version it had. The canary version
    carries the live model as its shadow (``Rollout.canary_shadow``) when its stored archive,
    a version of ``shadow_layer`` (default ``<function>-shadow``) or its build (in
    ``layers_dir`` or beside ``build``) is at hand and the budgets allow, so its batches are
    scored by both; else it goes without and a note says so.

    Models are compared by content (:func:`model_identity`), not build number: when the
    live model (and $LATEST's) already has this content nothing is done
    (``Rollout.unchanged``); a layer version already holding it, e.g. left by a publish that
    failed half-way, is reused instead of publishing another.

    Raises:
        NotFoundError: no such function.
        BudgetError: too many layers or over 250 MB unzipped.
        ConfigError: a canary without an existing alias; a store build without a bucket;
            memory below the model's measured peak.
    """
    if build.kind != "model":
        raise BuildError(
            f"{build.zip_path} is not a model layer build; build one with mlayer build-model"
        )
    if canary is not None and not alias:
        raise ConfigError("--canary needs --alias: the canary is a share of the alias's traffic")
    stored_build = build.package == "store"
    if stored_build and not bucket:
        raise ConfigError(
            f"{build.zip_path.name} is packaged for the S3 model store: pass --bucket BUCKET "
            "(an S3 bucket in the function's region the function's role may read)"
        )
    config = get_configuration(lam, function)
    current = layer_arns(config)
    models = ModelIndex(lam, layer_name, s3, [bucket] if bucket else [])
    current_alias = get_alias(lam, function, alias) if alias else None
    if canary is not None and current_alias is None:
        raise ConfigError(
            f"alias {alias} does not exist yet, so there is no version to keep serving while a "
            "canary runs; publish without --canary first (that creates the alias)"
        )
    old_function_version = current_alias["FunctionVersion"] if current_alias else None
    old_model, latest_model = _live_models(lam, function, config, old_function_version, models)
    if (
        build.identity is not None
        and old_model is not None
        and latest_model is not None
        and old_model.identity == build.identity == latest_model.identity
    ):
        return _unchanged(function, layer_name, build, old_model, current, config, lam, alias)

    description = model_description(
        build.name, build.version, build.sha256, build.unzipped_bytes, build.identity
    )
    if stored_build:
        assert s3 is not None and bucket is not None
        rollout = _store(
            lam, s3, function=function, config=config, build=build, layer_name=layer_name,
            bucket=bucket, description=description, models=models, progress=progress,
            memory_mb=memory_mb, pace=pace,
        )  # fmt: skip
    else:
        rollout = _publish_layer(
            lam, s3, function=function, config=config, build=build, layer_name=layer_name,
            bucket=bucket, description=description, models=models, progress=progress, pace=pace,
        )  # fmt: skip
    rollout.old_model = old_model
    rollout.alias = alias
    rollout.old_function_version = old_function_version
    if canary is not None:
        attached = shadow.attach_live(
            lam, s3, function=function, live=old_model, candidate=build,
            dirs=shadow.search_dirs(layers_dir, build.zip_path.parent), model_layer=layer_name,
            shadow_layer=shadow_layer or default_layer_name(function, "shadow"), bucket=bucket,
            pace=pace,
        )  # fmt: skip
        rollout.canary_shadow = attached.model
        rollout.notes += attached.notes
        if attached.changed and attached.layers is not None:
            rollout.layers, rollout.relinked = attached.layers, True
            rollout.budget = check_budget_quietly(lam, get_configuration(lam, function))
    else:
        dropped = shadow.drop_if_live(
            lam, s3, function=function, identity=build.identity, model_layer=layer_name,
            shadow_layer=shadow_layer or default_layer_name(function, "shadow"), pace=pace,
        )  # fmt: skip
        if dropped is not None:
            rollout.relinked = True
            rollout.layers = layer_arns(get_configuration(lam, function))
            rollout.notes.append(
                f"the shadow {shadow_label(dropped)} is this model, now live: removed it"
            )
    if alias:
        _roll_alias(lam, function, alias, current_alias, canary, rollout, pace)
    return rollout


def _publish_layer(
    lam: Any,
    s3: Any | None,
    *,
    function: str,
    config: dict[str, Any],
    build: Build,
    layer_name: str,
    bucket: str | None,
    description: str,
    models: ModelIndex,
    progress: Callable[[int], None] | None,
    pace: Pace,
) -> Rollout:
    """Publish (or reuse) the model layer version and relink $LATEST to it."""
    current = layer_arns(config)
    # Refuse before publishing anything: the new version takes the model layer's slot (any
    # ARN of that layer marks it) and adds the build's unzipped size.
    slot = f"arn:aws:lambda:{lam.meta.region_name}:000000000000:layer:{layer_name}:0"
    share = BudgetPart(
        f"layer {layer_name} (model {build.name} v{build.version})", build.unzipped_bytes
    )
    budget = check_budget(lam, config, relinked(current, slot), {slot: share})
    layer = publish_layer(
        lam, s3, layer_name=layer_name, build=build, description=description,
        bucket=bucket, progress=progress, identity=build.identity,
    )  # fmt: skip
    budget.parts = [
        BudgetPart(f"layer {layer_name}:{layer.version} (model)", p.unzipped_bytes)
        if p is share
        else p
        for p in budget.parts
    ]
    new_model = models.ref(layer.arn)
    rollout = Rollout(
        function=function_name(function),
        layer=layer,
        old_model=None,
        new_model=new_model,
        layers=current,
        relinked=False,
        budget=budget,
    )
    if layer.same_content:
        rollout.notes.append(
            f"{build.zip_path.name} holds the same model content as {new_model.label}, "
            f"published before (by a publish that did not finish, or an earlier build): "
            f"reused it instead of publishing {build.name} v{build.version}"
        )
    rollout.layers, rollout.relinked = _relink_latest(
        lam, function, config, layer.arn, layer_name, pace
    )
    return rollout


def _store(
    lam: Any,
    s3: Any,
    *,
    function: str,
    config: dict[str, Any],
    build: Build,
    layer_name: str,
    bucket: str,
    description: str,
    models: ModelIndex,
    progress: Callable[[int], None] | None,
    memory_mb: int | None,
    pace: Pace,
) -> Rollout:
    """Upload the archive to the model store (or find it there) and point $LATEST's
    MODEL_URI at it, sized for it, without its model layer."""
    peak = (build.manifest.get("smoke_test") or {}).get("max_memory_mb")
    size = environment_size(build.zip_bytes, build.unzipped_bytes, peak)
    memory = memory_mb or int(config.get("MemorySize") or 128)
    problem = memory_problem(size, memory)
    notes = []
    if problem is not None:
        message, refuse = problem
        if refuse:
            raise ConfigError(message)
        notes.append(message)
    without_model = _without_layer(layer_arns(config), layer_name)
    budget = check_budget(lam, config, without_model)
    same = next(
        (
            r for r in models.listed()
            if r.stored and not r.deleted and build.identity and r.identity == build.identity
        ),
        None,
    )  # fmt: skip
    if same is not None and same.stored is not None and same.sha256 != build.sha256:
        stored = model_store.StoredModel(same.stored, None, same.created, reused=True)
        notes.append(
            f"{build.zip_path.name} holds the same model content as {same.label}, stored "
            f"before (by a publish that did not finish, or an earlier build): reused it "
            f"instead of storing {build.name} v{build.version}"
        )
    else:
        stored = model_store.upload(
            s3, bucket=bucket, layer_name=layer_name, path=build.zip_path, sha256=build.sha256,
            size=build.zip_bytes, description=description, progress=progress,
        )  # fmt: skip
    locator = str(stored.uri)
    rollout = Rollout(
        function=function_name(function),
        layer=None,
        old_model=None,
        new_model=models.ref(locator),
        layers=without_model,
        relinked=False,
        budget=budget,
        stored=stored,
        size=size,
        notes=notes,
    )
    rollout.layers, rollout.relinked = _relink_latest(
        lam, function, config, locator, layer_name, pace, size=size, memory_mb=memory_mb,
        changes=rollout.environment_changes,
    )  # fmt: skip
    return rollout


def _live_models(
    lam: Any,
    function: str,
    config: dict[str, Any],
    alias_version: str | None,
    models: ModelIndex,
) -> tuple[ModelRef | None, ModelRef | None]:
    """(the model live: the alias's version's, else $LATEST's; $LATEST's model)."""
    served: ModelRef | None = None
    if alias_version is not None:
        served_config = get_configuration(lam, function, alias_version)
        served = model_of(
            models, FunctionVersion.of(alias_version, served_config, models.layer_name)
        )
    latest = model_of(models, FunctionVersion.of("$LATEST", config, models.layer_name))
    return (served if alias_version is not None else latest), latest


def _unchanged(
    function: str,
    layer_name: str,
    build: Build,
    live: ModelRef,
    current: list[str],
    config: dict[str, Any],
    lam: Any,
    alias: str | None,
) -> Rollout:
    """The Rollout of a publish whose model content is already live: nothing changes."""
    layer = None
    stored = None
    if live.stored is not None:
        stored = model_store.StoredModel(live.stored, None, live.created, reused=True)
    else:
        layer = PublishedLayer(
            layer_name=layer_name,
            arn=live.arn,
            version=live.layer_version or 0,
            reused=True,
            sha256=live.sha256 or build.sha256,
            zip_bytes=build.zip_bytes,
            unzipped_bytes=live.unzipped_bytes or build.unzipped_bytes,
            description="",
            created=live.created,
            same_content=live.sha256 != build.sha256,
        )
    return Rollout(
        function=function_name(function),
        layer=layer,
        old_model=live,
        new_model=live,
        layers=current,
        relinked=False,
        budget=check_budget_quietly(lam, config),
        alias=alias,
        unchanged=True,
        stored=stored,
    )


def _roll_alias(
    lam: Any,
    function: str,
    alias: str,
    current_alias: dict[str, Any] | None,
    canary: float | None,
    rollout: Rollout,
    pace: Pace,
) -> None:
    if current_alias is not None and not rollout.relinked:
        # Nothing changed on $LATEST's side: if the alias's version already is $LATEST (same
        # code, same layers), there is nothing to publish. (Lambda would hand back that
        # version anyway; moto would publish a duplicate.)
        serving = get_configuration(lam, function, str(current_alias["FunctionVersion"]))
        latest = get_configuration(lam, function)
        if shadow.serving_settings(serving) == shadow.serving_settings(latest):
            rollout.new_function_version = str(current_alias["FunctionVersion"])
            rollout.notes.append(
                f"alias {alias} already serves function version "
                f"{rollout.new_function_version}, which carries this model"
            )
            if alias_weights(current_alias) and canary is None:
                rollout.notes.append(
                    "a canary is still routing part of the traffic elsewhere: "
                    "`mlayer promote` or `mlayer rollback` ends it"
                )
            return
    new_version = snapstart.publish_version(
        lam, function, carries(rollout.new_model), pace, rollout.notes
    )
    rollout.new_function_version = new_version
    if current_alias is None:
        lam.create_alias(FunctionName=function, Name=alias, FunctionVersion=new_version)
        rollout.alias_created = True
        return
    old_version = str(current_alias["FunctionVersion"])
    if new_version == old_version:
        rollout.notes.append(
            f"alias {alias} already serves function version {new_version}, which carries this model"
        )
        return
    if canary is None:
        set_alias(lam, function, alias, new_version)
        return
    weight = round(canary / 100, 5)
    set_alias(lam, function, alias, old_version, canary={new_version: weight})
    rollout.canary_weight = weight


@dataclass
class Promotion:
    """What promote did."""

    function: str
    alias: str
    old_function_version: str
    new_function_version: str
    weight: float  # the canary's share (0 for a shadow)
    old_model: ModelRef | None
    new_model: ModelRef | None
    # The canary version, when the alias ended elsewhere: it carried the live model as its
    # shadow, so $LATEST was published again without it.
    canary_function_version: str | None = None
    shadow: ModelRef | None = None  # the shadow made live (promote without a canary)
    notes: list[str] = field(default_factory=list)


def promote(
    lam: Any,
    *,
    function: str,
    alias: str,
    layer_name: str,
    s3: Any | None = None,
    shadow_layer: str | None = None,
    layers_dir: Path | None = None,
    pace: Pace = DEFAULT_PACE,
) -> Promotion:
    """Complete a canary: move the alias fully to its canary version and clear the routing;
    or, without a canary, make the shadow the live model.

    A canary version that carries the live model as its shadow is not where the alias ends:
    $LATEST (the candidate) is published again without the shadow, and the alias moves
    there. A shadow (of the alias's version, else of $LATEST) becomes the model layer's next
    version from its build in ``layers_dir`` (found by sha256 or content, or rebuilt from the
    shadow zip), or MODEL_URI for a stored one; the shadow is removed, a version published
    and the alias moved to it.

    Raises:
        NotFoundError: no such function or alias.
        ConfigError: neither a canary nor a shadow; the shadow's model is not at hand.
    """
    get_configuration(lam, function)
    current = get_alias(lam, function, alias)
    if current is None:
        raise NotFoundError(f"function {function_name(function)} has no alias {alias}")
    shadow_layer = shadow_layer or default_layer_name(function, "shadow")
    models = ModelIndex(lam, layer_name, s3)
    versions = {fv.version: fv for fv in function_versions(lam, function, layer_name)}
    weights = alias_weights(current)
    old_version = str(current["FunctionVersion"])
    if not weights:
        at = shadow_at(versions.get(old_version), shadow_layer) or shadow_at(
            versions["$LATEST"], shadow_layer
        )
        if at is None:
            raise ConfigError(
                f"alias {alias} routes all traffic to function version {old_version}: no "
                f"canary to promote; start one with mlayer publish-model --alias {alias} "
                "--canary PCT"
            )
        return _promote_shadow(
            lam, s3, function, alias, old_version, models.ref(at), models, versions,
            shadow.search_dirs(layers_dir), shadow_layer, pace,
        )  # fmt: skip
    canary_version, weight = max(weights.items(), key=lambda kv: kv[1])
    result = Promotion(
        function=function_name(function),
        alias=alias,
        old_function_version=old_version,
        new_function_version=canary_version,
        weight=weight,
        old_model=model_of(models, versions.get(old_version)),
        new_model=model_of(models, versions.get(canary_version)),
    )
    canary_fv = versions.get(canary_version)
    carried = shadow_of(models, canary_fv, shadow_layer)
    if carried is None or canary_fv is None:
        set_alias(lam, function, alias, canary_version)
        return result
    if versions["$LATEST"].model_at != canary_fv.model_at:
        set_alias(lam, function, alias, canary_version)
        result.notes.append(
            f"function version {canary_version} carries {shadow_label(carried)} as its shadow, "
            "and $LATEST no longer serves the canary's model, so the alias moved to it as it "
            f"is; remove the shadow with mlayer shadow stop --alias {alias}"
        )
        return result
    # The alias must not end on a version still scoring the old model beside the new one.
    shadow.detach(lam, function, shadow_layer, pace)
    new_version = snapstart.publish_version(
        lam, function, canary_fv.description, pace, result.notes
    )
    set_alias(lam, function, alias, new_version)
    result.new_function_version = new_version
    result.canary_function_version = canary_version
    result.notes.append(
        f"the canary (function version {canary_version}) scored {shadow_label(carried)} as its "
        f"shadow: $LATEST was published again without it as version {new_version}"
    )
    return result


def _promote_shadow(
    lam: Any,
    s3: Any | None,
    function: str,
    alias: str,
    old_version: str,
    shade: ModelRef,
    models: ModelIndex,
    versions: dict[str, FunctionVersion],
    dirs: list[Path],
    shadow_layer: str,
    pace: Pace,
) -> Promotion:
    """Make shadow ``shade`` live: its model published (or linked) on $LATEST without the
    shadow, a version published, the alias moved to it."""
    build, locator = shadow.promotable(lam, shade, dirs=dirs, model_layer=models.layer_name)
    old_model = model_of(models, versions.get(old_version))
    shadow.detach(lam, function, shadow_layer, pace)
    result = Promotion(
        function=function_name(function),
        alias=alias,
        old_function_version=old_version,
        new_function_version=old_version,
        weight=0.0,
        old_model=old_model,
        new_model=None,
        shadow=shade,
    )
    if build is not None:
        stored = shade.stored
        rollout = publish_model(
            lam, s3, function=function, build=build, layer_name=models.layer_name, alias=alias,
            bucket=stored.bucket if stored is not None else None, pace=pace,
        )  # fmt: skip
        result.new_model = rollout.new_model
        result.new_function_version = str(rollout.new_function_version)
        result.notes += rollout.notes
        return result
    assert locator is not None
    config = get_configuration(lam, function)
    if StoreURI.parse(locator) is not None:
        check_budget(lam, config, _without_layer(layer_arns(config), models.layer_name))
        result.notes.append(
            "the shadow's archive has no build in --layers-dir, so its memory peak is unknown: "
            "check the function's memory (mlayer status)"
        )
    else:
        check_budget(lam, config, relinked(layer_arns(config), locator))
    _relink_latest(lam, function, config, locator, models.layer_name, pace)
    result.new_model = models.ref(locator)
    result.new_function_version = snapstart.publish_version(
        lam, function, carries(result.new_model), pace, result.notes
    )
    set_alias(lam, function, alias, result.new_function_version)
    return result


@dataclass
class Rollback:
    """What rollback did."""

    function: str
    from_model: ModelRef | None
    to_model: ModelRef
    alias: str | None = None
    old_function_version: str | None = None
    new_function_version: str | None = None
    canary_cancelled: bool = False
    layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def rollback(
    lam: Any,
    *,
    function: str,
    layer_name: str,
    alias: str | None = None,
    to: int | None = None,
    pace: Pace = DEFAULT_PACE,
    s3: Any | None = None,
    shadow_layer: str | None = None,
) -> Rollback:
    """Go back to the previous model version (the newest one older than the live one), or ``to``.

    With ``alias``: moves the alias to the function version that carried that model (a
    canary in progress is cancelled instead when no ``to`` is given), and relinks $LATEST to
    match when the layer version still exists. Without: relinks $LATEST to the older model
    layer version.

    A shadow (of ``shadow_layer``, default ``<function>-shadow``, or SHADOW_URI) is removed
    from $LATEST, and the alias ends on a version without one when there is such a carrier:
    a rollback, like a cancelled canary whose shadow was the live model, leaves none behind.

    Raises:
        NotFoundError: nothing to roll back to, or the named version does not exist.
        ConfigError: the target layer version was deleted and no function version carries it.
    """
    config = get_configuration(lam, function)
    versions = function_versions(lam, function, layer_name)
    buckets = [u.bucket for fv in versions if (u := StoreURI.parse(fv.model_at or ""))]
    models = ModelIndex(lam, layer_name, s3, buckets)
    by_version = {fv.version: fv for fv in versions}
    latest = by_version["$LATEST"]
    name = function_name(function)
    shadow_layer = shadow_layer or default_layer_name(function, "shadow")

    current_alias = None
    if alias:
        current_alias = get_alias(lam, function, alias)
        if current_alias is None:
            raise NotFoundError(
                f"function {name} has no alias {alias}; roll back without --alias, or publish "
                f"with mlayer publish-model --alias {alias} first"
            )
        live_fv = by_version.get(str(current_alias["FunctionVersion"]))
    else:
        live_fv = latest
    live = model_of(models, live_fv)
    if live is None:
        raise NotFoundError(
            f"function {name} has no version of layer {layer_name} linked, so there is nothing "
            "to roll back; publish a model with mlayer publish-model"
        )

    if current_alias is not None and alias_weights(current_alias) and to is None:
        assert live_fv is not None and alias is not None
        return _cancel_canary(
            lam, function, alias, current_alias, live, live_fv, models, by_version, shadow_layer,
            pace,
        )  # fmt: skip

    candidates = _known_models(models, versions)
    target_version, notes = _rollback_target(live, candidates, to, name, layer_name)
    refs = candidates[target_version]
    linkable = [r for r in refs if not r.deleted]
    result = Rollback(
        function=name, from_model=live, to_model=(linkable or refs)[0], alias=alias, notes=notes
    )

    if alias and current_alias is not None:
        result.old_function_version = str(current_alias["FunctionVersion"])
        carrier = _carrier(models, versions, target_version, shadow_layer)
        carried = shadow_of(models, carrier, shadow_layer)
        if carrier is not None and (carried is None or not linkable):
            if carried is not None:
                result.notes.append(
                    f"function version {carrier.version}, the only one serving v{target_version}, "
                    f"also scores the shadow {shadow_label(carried)}; mlayer shadow stop "
                    f"--alias {alias} removes it"
                )
            config = _drop_shadow(lam, function, shadow_layer, models, result, pace)
            return _alias_to_carrier(lam, function, alias, carrier, result, models, config, pace)
    if not linkable and refs[0].stored is not None:
        raise ConfigError(
            f"model v{target_version} ({refs[0].stored.location}) was deleted from the model "
            "store and no function version serves it; publish it again with mlayer "
            f"publish-model layers/model-{refs[0].name or '<name>'}-v{target_version}.tar "
            "--bucket BUCKET"
        )
    if not linkable:
        ref = refs[0]
        raise ConfigError(
            f"model v{target_version} (layer {layer_name} version {ref.layer_version}) was "
            "deleted: a deleted layer version stays usable by the function versions already "
            "linked to it but cannot be linked anew; publish it again with mlayer "
            f"publish-model layers/model-{ref.name or '<name>'}-v{target_version}.zip"
        )
    result.to_model = linkable[0]
    target = result.to_model.arn
    if result.to_model.stored is not None:
        check_budget(lam, config, _without_layer(layer_arns(config), layer_name))
    else:
        check_budget(lam, config, relinked(layer_arns(config), target))
    config = _drop_shadow(lam, function, shadow_layer, models, result, pace)
    result.layers, _ = _relink_latest(lam, function, config, target, layer_name, pace)
    if alias:
        version = snapstart.publish_version(
            lam, function, carries(result.to_model), pace, result.notes
        )
        set_alias(lam, function, alias, version)
        result.new_function_version = version
    return result


def _alias_to_carrier(
    lam: Any,
    function: str,
    alias: str,
    carrier: FunctionVersion,
    result: Rollback,
    models: ModelIndex,
    config: dict[str, Any],
    pace: Pace,
) -> Rollback:
    """Move the alias to ``carrier``, a function version that already carries the model
    (works even after its layer version was deleted), and relink $LATEST to match."""
    result.to_model = models.ref(str(carrier.model_at))
    set_alias(lam, function, alias, carrier.version)
    result.new_function_version = carrier.version
    # Keep $LATEST in step with what is live, so the next publish-version or
    # deploy-function does not roll the newer model forward again.
    if result.to_model.deleted and result.to_model.stored is not None:
        result.notes.append(
            f"$LATEST keeps its model: {result.to_model.location} was deleted from the model "
            "store and cannot be served anew"
        )
    elif result.to_model.deleted:
        result.notes.append(
            f"$LATEST keeps its model layer: layer version {result.to_model.layer_version} "
            "was deleted and cannot be linked anew"
        )
    else:
        result.layers, _ = _relink_latest(
            lam, function, config, result.to_model.arn, models.layer_name, pace
        )
    return result


def _known_models(models: ModelIndex, versions: list[FunctionVersion]) -> dict[int, list[ModelRef]]:
    """Every model version we know of, with where it can be found: the model layer's live
    versions, and the (maybe deleted) ones function versions carry."""
    candidates: dict[int, list[ModelRef]] = {}
    for ref in models.listed():
        if ref.version is not None:
            candidates.setdefault(ref.version, []).append(ref)
    for fv in versions:
        carried = model_of(models, fv)
        if (
            carried is not None
            and carried.version is not None
            and carried not in candidates.get(carried.version, [])
        ):
            candidates.setdefault(carried.version, []).append(carried)
    return candidates


def _rollback_target(
    live: ModelRef,
    candidates: dict[int, list[ModelRef]],
    to: int | None,
    name: str,
    layer_name: str,
) -> tuple[int, list[str]]:
    """The model version to roll back to (``to``, or the newest older than ``live`` that is not
    a copy of it), and notes on what was skipped.

    Raises:
        NotFoundError: nothing older, or ``to`` is not a known version.
        ConfigError: ``to`` is live, or has the live content.
    """
    known = ", ".join(f"v{v}" for v in sorted(candidates)) or "none"

    def same_as_live(version: int) -> bool:
        # A copy of the live content under another build number (a publish that failed
        # after publishing its layer, then ran again): moving there would change nothing.
        return live.identity is not None and any(
            r.identity == live.identity for r in candidates[version]
        )

    notes = []
    if to is None:
        older = [v for v in candidates if live.version is not None and v < live.version]
        copies = sorted((v for v in older if same_as_live(v)), reverse=True)
        older = [v for v in older if v not in copies]
        if copies:
            listed = ", ".join(f"v{v}" for v in copies)
            notes.append(
                f"skipped {listed}: the same model content as the live {live.name} "
                f"v{live.version} (same files and input), so not an older model"
            )
        if not older:
            same = f"; {notes[0]}" if copies else ""
            raise NotFoundError(
                f"nothing to roll back to: {live.name} v{live.version} is live and no older "
                f"model version of layer {layer_name} exists (known: {known}){same}; use "
                "--to VERSION to move to another one"
            )
        return max(older), notes
    if to == live.version:
        raise ConfigError(f"model v{to} is already live on function {name}")
    if to not in candidates:
        raise NotFoundError(
            f"model v{to} is not a version of layer {layer_name} (known: {known}); if it "
            "was deleted, publish it again with mlayer publish-model "
            f"layers/model-<name>-v{to}.zip"
        )
    if same_as_live(to):
        raise ConfigError(
            f"model v{to} has the same content as the live {live.name} v{live.version} "
            "(same files and input): rolling back to it would change nothing; pick "
            f"another with --to (known: {known}) or see mlayer history"
        )
    return to, notes


def _carrier(
    models: ModelIndex, versions: list[FunctionVersion], model_version: int, shadow_layer: str
) -> FunctionVersion | None:
    """The newest published function version that carries model ``model_version``, one
    without a shadow if there is one."""
    carriers = [
        fv for fv in versions
        if fv.version != "$LATEST" and (m := model_of(models, fv)) is not None
        and m.version == model_version
    ]  # fmt: skip
    plain = [fv for fv in carriers if shadow_at(fv, shadow_layer) is None]
    return max(plain or carriers, key=lambda fv: int(fv.version)) if carriers else None


def _drop_shadow(
    lam: Any,
    function: str,
    shadow_layer: str,
    models: ModelIndex,
    result: Rollback,
    pace: Pace,
) -> dict[str, Any]:
    """Remove $LATEST's shadow (a note says which, unless it was a canary's: the live model);
    $LATEST's configuration after."""
    config = get_configuration(lam, function)
    removed = shadow_of(
        models, FunctionVersion.of("$LATEST", config, models.layer_name), shadow_layer
    )
    updates = shadow.detach_updates(config, shadow_layer)
    if not updates:
        return config
    update_configuration(lam, function, pace, **updates)
    config = get_configuration(lam, function)
    result.layers = layer_arns(config)
    if removed is not None and not result.canary_cancelled:
        result.notes.append(
            f"removed the shadow {shadow_label(removed)} from $LATEST; publish it again with "
            "--shadow to keep scoring it"
        )
    return config


def _cancel_canary(
    lam: Any,
    function: str,
    alias: str,
    current_alias: dict[str, Any],
    live: ModelRef,
    live_fv: FunctionVersion,
    models: ModelIndex,
    by_version: dict[str, FunctionVersion],
    shadow_layer: str,
    pace: Pace,
) -> Rollback:
    weights = alias_weights(current_alias)
    canary_version = max(weights, key=lambda k: weights[k])
    canary_model = model_of(models, by_version.get(canary_version))
    set_alias(lam, function, alias, live_fv.version)
    result = Rollback(
        function=function_name(function),
        from_model=canary_model,
        to_model=live,
        alias=alias,
        old_function_version=canary_version,
        new_function_version=live_fv.version,
        canary_cancelled=True,
    )
    # $LATEST serves the canary's model, with the live one as its shadow: back to the live
    # model alone.
    config = _drop_shadow(lam, function, shadow_layer, models, result, pace)
    if not live.deleted:
        result.layers, _ = _relink_latest(lam, function, config, live.arn, models.layer_name, pace)
    return result


def _relink_latest(
    lam: Any,
    function: str,
    config: dict[str, Any],
    locator: str,
    layer_name: str,
    pace: Pace,
    *,
    size: EnvironmentSize | None = None,
    memory_mb: int | None = None,
    changes: list[str] | None = None,
) -> tuple[list[str], bool]:
    """Point $LATEST (``config``: its configuration) at the model at ``locator``, in one
    update and only when something changes; returns its layers now and whether it changed.

    A layer version ARN takes the model layer's slot (every other layer keeps its place) and
    clears MODEL_URI; a MODEL_URI is set, the model layer is unlinked, and /tmp grows to
    ``size`` (never shrinks: a user may have sized it for more). Rollback and rollout keep
    $LATEST in step with what is live, so the next publish-model or deploy-function does not
    roll another model forward.
    """
    current = layer_arns(config)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    updates: dict[str, Any] = {}
    stored = StoreURI.parse(locator)
    if stored is None:
        layers = relinked(current, locator)
        if model_store.ENV_VAR in env:
            env.pop(model_store.ENV_VAR)
            updates["Environment"] = {"Variables": env}
    else:
        layers = _without_layer(current, layer_name)
        if env.get(model_store.ENV_VAR) != locator:
            env[model_store.ENV_VAR] = locator
            updates["Environment"] = {"Variables": env}
        # A rollback knows the archive's size, not its unpacked files': about the same (tar).
        size = size or environment_size(stored.size, stored.size, None)
        storage = int((config.get("EphemeralStorage") or {}).get("Size") or 512)
        if size.ephemeral_mb > storage:
            snapstart.check_storage(
                lam, config, size.ephemeral_mb,
                f"the model from the S3 model store, {stored.location}, needs "
                f"{size.ephemeral_mb:,} MB",
            )  # fmt: skip
            updates["EphemeralStorage"] = {"Size": size.ephemeral_mb}
            if changes is not None:
                changes.append(f"/tmp {storage:,} -> {size.ephemeral_mb:,} MB")
    if memory_mb and memory_mb != config.get("MemorySize"):
        updates["MemorySize"] = memory_mb
        if changes is not None:
            changes.append(f"memory {config.get('MemorySize')} -> {memory_mb:,} MB")
    if layers != current:
        updates["Layers"] = layers
    if updates:
        update_configuration(lam, function, pace, **updates)
    return layers, bool(updates)


def _without_layer(arns: list[str], layer_name: str) -> list[str]:
    return [a for a in arns if parse_layer_arn(a).name != layer_name]
