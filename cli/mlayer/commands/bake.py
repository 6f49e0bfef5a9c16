"""publish-model's --bake: the guards its options name, and the bake rendered as it runs.

publish-model (:mod:`mlayer.commands.publish`) starts the canary; :func:`bake_canary` hands
it to :func:`mlayer.canary.bake` and prints each check, then the decision and the figures it
was made on (a roll back exits 1, an interrupt leaves the canary and exits 130).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mlayer.canary import BakeResult, Canary, Check, Guards


def bake_guards(
    bake: timedelta | None, canary: float | None, **given: Any
) -> tuple[Guards | None, dict[str, Any]]:
    """The bake's guards (None without --bake) and the options given on the command line.

    Raises:
        click.UsageError: a guard without --bake, or --bake without --canary.
    """
    from mlayer.canary import Guards

    named = {key: value for key, value in given.items() if value is not None}
    if bake is None:
        if named:
            flags = ", ".join("--" + key.replace("_", "-") for key in named)
            raise click.UsageError(
                f"{flags} {'needs' if len(named) == 1 else 'need'} --bake DURATION: guards "
                "are checked while a canary bakes (--canary PCT --bake 10m)"
            )
        return None, {}
    if canary is None:
        raise click.UsageError(
            "--bake needs --canary PCT: it watches a canary's share of the traffic, then "
            "promotes it or rolls it back"
        )
    guards = Guards(**{key: value for key, value in named.items() if key != "bake_interval"})
    return guards, named


def bake_canary(
    settings: Any,
    rollout: Any,
    layer_name: str,
    started: datetime,
    guards: Guards,
    duration: timedelta,
    interval: timedelta,
    given: dict[str, Any],
) -> None:
    """Bake the canary the publish started, printing each check and the decision.

    Ctrl-C at any point once the canary routes (reading it, printing the guards, baking)
    leaves it as it is and says how to finish it (exit 130).
    """
    if rollout.canary_weight is None:
        click.echo("Not baking: no canary was started.")
        return
    from mlayer.canary import bake, canary_of, human_duration

    try:
        lam, s3 = settings.client("lambda"), settings.client("s3")
        canary = canary_of(lam, rollout, layer_name=layer_name, started=started, s3=s3)
        every = human_duration(interval.total_seconds())
        default = "" if "bake_interval" in given else ", default"
        click.echo(
            f"Baking the canary for {human_duration(duration.total_seconds())} (a look every "
            f"{every}{default}): a breach rolls it back at once; every guard holding at the "
            "end promotes it."
        )
        for line in _guard_lines(guards, given, canary):
            click.echo(f"  {line}")

        def progress(check: Check) -> None:
            figures = ", ".join(_figure(f) for f in check.figures)
            click.echo(
                f"  [{human_duration(check.elapsed_s)}] {check.records:,} records: {figures}"
            )

        try:
            result = bake(
                lam, settings.client("cloudwatch"), canary, guards=guards,
                duration_s=duration.total_seconds(), interval_s=interval.total_seconds(),
                layer_name=layer_name, s3=s3, progress=progress,
            )  # fmt: skip
        except Exception as exc:  # a KeyboardInterrupt is not one: handled below
            from mlayer.errors import to_click_exception

            converted = to_click_exception(exc)
            if converted is None:
                raise
            raise click.ClickException(
                f"{converted.message}. The canary is left as it is: {_finish(canary, lower=True)}"
            ) from exc
        _render_bake(result)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted: the canary is left as it is (alias {rollout.alias} on version "
            f"{rollout.old_function_version}, {rollout.canary_weight:.1%} to version "
            f"{rollout.new_function_version}). {_finish(rollout)}."
        )
        raise click.exceptions.Exit(130) from None


def _finish(canary: Canary | Any, lower: bool = False) -> str:
    """How to finish a canary left as it is (``canary``: a Canary or the Rollout)."""
    where = f"--function {canary.function} --alias {canary.alias}"
    finish = "finish" if lower else "Finish"
    return f"{finish} it with `mlayer promote {where}` or `mlayer rollback {where}`"


def _guard_lines(guards: Guards, given: dict[str, Any], canary: Canary) -> list[str]:
    def mark(key: str) -> str:
        return "" if key in given else " (default)"

    live = f"the live model v{canary.primary_model}"
    if guards.min_agreement <= 0:
        agreement = "agreement: not judged (--min-agreement 0)"
    elif canary.shadow_model is not None:
        agreement = (
            f"agreement >= {guards.min_agreement * 100:g}%{mark('min_agreement')}, per record: "
            f"version {canary.canary_version} scores {live} as its shadow"
        )
    else:
        agreement = (
            f"agreement >= {guards.min_agreement * 100:g}%{mark('min_agreement')}, by label "
            f"shares against {live}: version {canary.canary_version} carries no shadow"
        )
    return [
        f"bad-record rate <= {guards.max_bad_rate * 100:g}%{mark('max_bad_rate')}",
        agreement,
        f"Lambda errors <= {guards.max_errors}{mark('max_errors')}, of version "
        f"{canary.canary_version} through alias {canary.alias}",
        f"the rates decide once the canary has {guards.min_records:,} records{mark('min_records')}",
    ]


def _figure(f: Any) -> str:
    if f.value is None:
        return f"{f.guard} n/a"
    if f.guard == "Lambda errors":
        return f"{f.guard} {f.value:.0f}"
    return f"{f.guard} {f.value * 100:.1f}%"


def _render_bake(result: BakeResult) -> None:
    canary = result.canary
    if result.decision == "left":
        raise click.ClickException(" ".join(result.notes))
    if result.promotion is not None:
        p = result.promotion
        click.echo(f"Promoted: {result.reason}")
        new = p.new_model.label if p.new_model else "no model"
        click.echo(
            f"Alias {p.alias}: function version {p.old_function_version} -> "
            f"{p.new_function_version} ({new}), routing cleared."
        )
        for note in p.notes:
            click.echo(f"Note: {note}")
        return
    r = result.rollback
    assert r is not None
    click.echo(
        f"Cancelled the canary: alias {canary.alias} serves function version "
        f"{r.new_function_version} ({r.to_model.label}) only."
    )
    raise click.ClickException(f"rolled back: {result.reason}")
