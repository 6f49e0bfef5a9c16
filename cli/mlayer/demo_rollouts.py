"""The demo's safe-rollout steps: a shadow, then two canaries that decide by themselves.

Part of ``mlayer demo`` (:mod:`mlayer.demo` runs these after its rollout and rollback, with
model v1 live on alias ``live``). Each step streams fresh records through the real function
in local Lambda environments while it watches the metrics the function emits, exactly as
the commands do: ``publish-model --shadow``, ``compare``, ``shadow stop`` and
``publish-model --canary PCT --bake DURATION`` with its guards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlayer.errors import MlayerError

# The canaries' share of the alias's batches: big enough that a demo-sized stream gives the
# canary a few hundred records to be judged on within the bake.
CANARY_PERCENT = 30.0
BAKE_S = 25.0
BAKE_INTERVAL_S = 2.0


@dataclass
class RolloutContext:
    """What the demo's earlier steps set up, as the rollout steps need it."""

    aws: Any
    name: str  # the function
    alias: str
    stream: str  # the rollout steps' own stream (created by rollout_steps)
    model_layer: str
    shadow_layer: str
    layers_dir: Path
    function_dir: Path
    log_path: Path
    records: int  # per step
    malformed_every: int
    until_idle_s: float
    v1_dir: Path  # the live model's directory (model v1)
    v2_zip: Path  # model v2's build
    work: Path
    checkpoints: Path  # run-local's, for the rollout steps' stream
    step: Callable[[str, str], Any]  # makes a demo Step
    put_records: Callable[[str, list[dict[str, Any]]], int]  # (stream, records)
    make_records: Callable[[int, int, int], tuple[list[dict[str, Any]], int]]


def rollout_steps(ctx: RolloutContext) -> Iterator[Any]:
    """The shadow step, then a degenerate canary rolled back and a healthy one promoted.

    Their records go through a stream of their own, without a mapping (``ctx.stream`` is
    created here): moto runs a stream's mappings itself on every put, and cannot without
    Docker. run-local then takes mlayer's trigger defaults, and resumes each step where
    the previous one stopped (checkpoints in the workdir).
    """
    kinesis = ctx.aws.client("kinesis")
    kinesis.create_stream(StreamName=ctx.stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=ctx.stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    ctx.checkpoints.unlink(missing_ok=True)
    yield from _shadow(ctx)
    yield from _bad_canary(ctx)
    yield from _good_canary(ctx)


def _shadow(ctx: RolloutContext) -> Iterator[Any]:
    from mlayer.compare import compare
    from mlayer.layers import load_build
    from mlayer.shadow import publish_shadow, stop_shadow

    lam, s3 = ctx.aws.client("lambda"), ctx.aws.client("s3")
    step = ctx.step(
        "shadow",
        f"Publishing model v2 as the shadow of the live v1 (publish-model --shadow), then "
        f"streaming {ctx.records:,} records: both models score every batch, only v1's "
        "predictions are written",
    )
    yield step
    started = datetime.now(UTC)
    shadowed = publish_shadow(
        lam, s3, function=ctx.name, build=load_build(ctx.v2_zip), model_layer=ctx.model_layer,
        shadow_layer=ctx.shadow_layer, alias=ctx.alias, layers_dir=ctx.layers_dir,
    )  # fmt: skip
    summary = _stream(ctx, seed=11)
    comparison = compare(
        lam, ctx.aws.client("cloudwatch"), function=ctx.name, layer_name=ctx.model_layer,
        alias=ctx.alias, since=datetime.now(UTC) - started + timedelta(seconds=1), s3=s3,
        percentiles=False,
    )  # fmt: skip
    live, shadow = comparison.column("live"), comparison.column("shadow")
    if live is None or shadow is None or not shadow.records:
        raise MlayerError(
            "the shadow step found no shadow metrics: the function's batch lines did not "
            "reach CloudWatch on the local endpoint"
        )
    stopped = stop_shadow(
        lam, function=ctx.name, model_layer=ctx.model_layer, shadow_layer=ctx.shadow_layer,
        alias=ctx.alias, s3=s3,
    )  # fmt: skip
    lines = [
        f"shadow {shadowed.shadow.label} beside the live {shadowed.live.label}: alias "
        f"{ctx.alias} -> version {shadowed.new_function_version}",
        f"{summary.stats.records_done:,} records streamed; compare over this step:",
        f"  {'':<22}{'live':>14}{'shadow':>14}",
        f"  {'model':<22}{'v' + live.model_version:>14}{'v' + shadow.model_version:>14}",
        f"  {'records scored':<22}{live.records:>14,}{shadow.records:>14,}",
    ]
    for label in sorted(set(live.label_shares) | set(shadow.label_shares)):
        lines.append(
            f"  {'label ' + label:<22}{_pct(live.label_shares.get(label)):>14}"
            f"{_pct(shadow.label_shares.get(label)):>14}"
        )
    lines += [
        f"  {'agreement with live':<22}{'':>14}{_pct(shadow.agreement):>14}",
        f"  {'mean |p difference|':<22}{'':>14}{_num(shadow.abs_diff):>14}",
        f"  {'predict ms (mean)':<22}{_num(live.predict_ms):>14}{_num(shadow.predict_ms):>14}",
        f"shadow stop: alias {ctx.alias} -> version {stopped.new_function_version} (v1 alone)",
    ]
    yield step.finish(
        lines,
        agreement=shadow.agreement,
        shadow_records=shadow.records,
        live_records=live.records,
    )


def _bad_canary(ctx: RolloutContext) -> Iterator[Any]:
    from mlayer.demo import degenerate_model
    from mlayer.model_layer import ModelBuildOptions, build_model

    step = ctx.step(
        "canary-rollback",
        f"A degenerate candidate v3 (its classifier answers 'positive' to every record) as a "
        f"{CANARY_PERCENT:.0f}% canary, baked {BAKE_S:.0f} s with --min-agreement 95%",
    )
    yield step
    bad_dir = degenerate_model(ctx.v1_dir, ctx.work / "model-v3-degenerate", "positive")
    built = build_model(
        ModelBuildOptions(
            model_dir=bad_dir, version=3, layers_dir=ctx.layers_dir, function_dir=ctx.function_dir
        )
    )
    result = _canary(ctx, built.zip_path, seed=12)
    if result.decision != "rolled back":
        raise MlayerError(f"the degenerate canary was not rolled back: {result.reason}")
    yield step.finish(_bake_lines(result), decision=result.decision, reason=result.reason)


def _good_canary(ctx: RolloutContext) -> Iterator[Any]:
    step = ctx.step(
        "canary-promote",
        f"Model v2 as a {CANARY_PERCENT:.0f}% canary, baked {BAKE_S:.0f} s with the same guards",
    )
    yield step
    result = _canary(ctx, ctx.v2_zip, seed=13)
    if result.decision != "promoted":
        raise MlayerError(f"the healthy canary was not promoted: {result.reason}")
    yield step.finish(_bake_lines(result), decision=result.decision, reason=result.reason)


def _canary(ctx: RolloutContext, zip_path: Path, seed: int) -> Any:
    """Publish ``zip_path`` as a canary, stream records through the alias while the bake
    watches, and return how the bake ended."""
    from mlayer.canary import Guards, bake, canary_of
    from mlayer.layers import load_build
    from mlayer.rollout import publish_model

    lam, s3, cloudwatch = (ctx.aws.client(c) for c in ("lambda", "s3", "cloudwatch"))
    rollout = publish_model(
        lam, s3, function=ctx.name, build=load_build(zip_path), layer_name=ctx.model_layer,
        alias=ctx.alias, canary=CANARY_PERCENT, layers_dir=ctx.layers_dir,
        shadow_layer=ctx.shadow_layer,
    )  # fmt: skip
    started = datetime.now(UTC)
    canary = canary_of(lam, rollout, layer_name=ctx.model_layer, started=started, s3=s3)
    stop = threading.Event()
    streamed: list[Any] = []
    failed: list[BaseException] = []

    def consume() -> None:
        try:
            streamed.append(_stream(ctx, seed=seed, stop=stop))
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)

    runner = threading.Thread(target=consume, name="demo-run-local", daemon=True)
    runner.start()
    try:
        result = bake(
            lam, cloudwatch, canary, guards=Guards(), duration_s=BAKE_S,
            interval_s=BAKE_INTERVAL_S, layer_name=ctx.model_layer, s3=s3,
        )  # fmt: skip
    finally:
        stop.set()
        runner.join()
    if failed:
        raise failed[0]
    result.notes.append(
        f"{streamed[0].stats.records_done:,} records streamed during the bake"
        if streamed
        else "no records streamed"
    )
    return result


def _stream(ctx: RolloutContext, seed: int, stop: threading.Event | None = None) -> Any:
    """Produce ``ctx.records`` records and consume them through the alias until drained."""
    from mlayer.local.runner import run_local

    records, _ = ctx.make_records(ctx.records, ctx.malformed_every, seed)
    ctx.put_records(ctx.stream, records)
    result = run_local(
        ctx.aws, function=ctx.name, stream=ctx.stream, qualifier=ctx.alias,
        until_idle_s=ctx.until_idle_s, layers_dir=ctx.layers_dir,
        function_dir=ctx.function_dir, log_path=ctx.log_path, stop=stop,
        checkpoints=ctx.checkpoints,
    )  # fmt: skip
    if result.summary.stopped == "interrupted" and (stop is None or not stop.is_set()):
        raise KeyboardInterrupt  # Ctrl-C, not the bake's end
    return result.summary


def _bake_lines(result: Any) -> list[str]:
    canary = result.canary
    lines = [
        f"alias {canary.alias}: version {canary.primary_version} (v{canary.primary_model}) and "
        f"{canary.weight:.0%} to version {canary.canary_version} (v{canary.canary_model}"
        + (f", scoring v{canary.shadow_model} as its shadow)" if canary.shadow_model else ")"),
        f"{result.checks} checks over {result.elapsed_s:.0f} s; the canary's figures:",
    ]
    lines += [f"  {figure.describe()}" for figure in result.figures]
    lines.append(f"{result.decision}: {result.reason}")
    if result.promotion is not None:
        p = result.promotion
        lines.append(f"alias {p.alias} -> version {p.new_function_version} alone")
    if result.rollback is not None:
        r = result.rollback
        lines.append(f"alias {r.alias} -> version {r.new_function_version} alone")
    lines += result.notes
    return lines


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
