"""Canaries that decide: publish-model --canary --bake through the CLI against moto, with the
canary's metrics put by a background thread while the bake polls (as CloudWatch Logs would
put the function's EMF lines); then the alias checked with boto3."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_layers import layer_list, publish_model, publish_raw_layer, write_model_build
from metrics_support import Batch, Shadow, put_batches, put_invocations

from mlayer.cli import cli
from mlayer.contracts import model_description

FAST = ("--bake", "3s", "--bake-interval", "0.5s")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def bake_canary(layers: Path, version: int, *extra: str) -> Result:
    """publish-model of fake build ``version`` as a 10% canary of alias live, baked."""
    path = write_model_build(layers, version)
    return run(
        "publish-model", str(path), "--function", "scorer", "--alias", "live",
        "--canary", "10", *FAST, *extra,
    )  # fmt: skip


def routing(lam: Any) -> tuple[str, dict[str, float]]:
    alias = lam.get_alias(FunctionName="scorer", Name="live")
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return alias["FunctionVersion"], weights


@contextmanager
def traffic(lam: Any, put: Callable[[Any], None]) -> Iterator[None]:
    """While the block runs: once the alias routes a canary, ``put(cloudwatch)`` once, from
    another thread (the bake polls meanwhile)."""
    import boto3

    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            deadline = time.monotonic() + 30
            while not routing(lam)[1]:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            put(cloudwatch)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=30)
    assert not failures, failures


def bake_lines(output: str) -> list[str]:
    """The bake's part of the output, each check's elapsed time as [T]."""
    start = output.index("Baking the canary")
    return [re.sub(r"^  \[[^\]]+\]", "  [T]", line) for line in output[start:].splitlines()]


def live_batches(labels: list[str], n: int = 4) -> list[Batch]:
    return [Batch("1", labels) for _ in range(n)]


@pytest.fixture
def live(lam: Any, layers: Path) -> Any:
    """Given: model v1 live on alias live (function version 1)."""
    publish_model(layers, 1, "--alias", "live")
    return lam


def link_shadow(lam: Any, model_version: int) -> str:
    """Link a shadow layer holding model ``model_version`` to $LATEST (as the shadow rollout
    does), so the next function version published carries it."""
    description = model_description("sentiment", model_version, "a" * 64, 100, "b" * 64)
    arn = publish_raw_layer(lam, "scorer-shadow", description)
    lam.update_function_configuration(
        FunctionName="scorer", Layers=[*layer_list(lam, "scorer"), arn]
    )
    return arn


# ------------------------------------------------------------------------------- decisions


def test_a_candidate_giving_one_label_is_rolled_back_on_label_shares(
    live: Any, layers: Path
) -> None:
    # given: the live model gives both labels; the candidate only "positive"; and the live
    # model's build is not at hand, so the canary's version cannot score it as its shadow
    for path in layers.glob("model-*-v1.*"):
        path.unlink()

    def put(cw: Any) -> None:
        put_batches(cw, "scorer", *live_batches(["positive", "negative"] * 30))
        put_batches(cw, "scorer", *[Batch("2", ["positive"] * 40) for _ in range(3)])

    # when
    with traffic(live, put):
        result = bake_canary(layers, 2)

    # then: rolled back at once, the figures printed, the alias back on version 1 alone
    assert result.exit_code == 1, result.output
    lines = bake_lines(result.output)
    assert lines[:5] == [
        "Baking the canary for 3s (a look every 0.5s): a breach rolls it back at once; every "
        "guard holding at the end promotes it.",
        "  bad-record rate <= 1% (default)",
        "  agreement >= 95% (default), by label shares against the live model v1: version 2 "
        "carries no shadow",
        "  Lambda errors <= 0 (default), of version 2 through alias live",
        "  the rates decide once the canary has 100 records (default)",
    ]
    assert lines[-3:] == [
        "  [T] 120 records: bad-record rate 0.0%, agreement 50.0%, Lambda errors 0",
        "Cancelled the canary: alias live serves function version 1 (sentiment v1 (layer "
        "version 1)) only.",
        "Error: rolled back: agreement 50.0% < 95% over 120 records (label shares against the "
        "live model v1 over the bake: the canary carries no shadow)",
    ]
    assert routing(live) == ("1", {})


def test_a_candidate_its_shadow_disagrees_with_is_rolled_back_per_record(
    live: Any, layers: Path
) -> None:
    # given: the canary's version scores the live model v1 as its shadow, which agrees on
    # half the records
    link_shadow(live, 1)

    def put(cw: Any) -> None:
        put_batches(
            cw, "scorer",
            *[Batch("2", ["positive"] * 40, shadow=Shadow("1", ["positive", "negative"] * 20))
              for _ in range(3)],
        )  # fmt: skip

    # when
    with traffic(live, put):
        result = bake_canary(layers, 2, "--min-agreement", "90%")

    # then
    assert result.exit_code == 1, result.output
    lines = bake_lines(result.output)
    assert lines[2] == (
        "  agreement >= 90%, per record: version 2 scores the live model v1 as its shadow"
    )
    assert lines[-1] == (
        "Error: rolled back: agreement 50.0% < 90% over 120 records (shadow: the live model "
        "v1 scored the same records)"
    )
    assert routing(live) == ("1", {})


def test_a_healthy_candidate_is_promoted_at_the_end(live: Any, layers: Path) -> None:
    # given: bad metrics of model v2 from before this canary (an earlier bake), which must
    # not count; then a canary agreeing per record with its shadow, the live model
    link_shadow(live, 1)
    with_bad = Batch("2", ["negative"] * 50, bad=50, at=datetime.now(UTC) - timedelta(minutes=10))
    import boto3

    put_batches(boto3.client("cloudwatch", region_name="us-east-1"), "scorer", with_bad)

    def put(cw: Any) -> None:
        labels = ["positive", "negative"] * 30
        put_batches(cw, "scorer", *[Batch("2", labels, shadow=Shadow("1", labels))] * 2)
        put_invocations(cw, "scorer", "live", "2", invocations=2)

    # when
    with traffic(live, put):
        result = bake_canary(layers, 2)

    # then: every guard held to the end; the alias serves version 2 without its shadow (version 3) alone
    assert result.exit_code == 0, result.output
    lines = bake_lines(result.output)
    assert lines[-4].startswith("  [T] 120 records: bad-record rate 0.0%, agreement 100.0%")
    assert lines[-3:] == [
        "Promoted: every guard held over 120 records: bad-record rate 0.0% <= 1%, agreement "
        "100.0% >= 95% (shadow: the live model v1 scored the same records), Lambda errors 0 "
        "<= 0",
        # the canary's version 2 scores the live model as its shadow: promoting publishes
        # version 3, the same without the shadow
        "Alias live: function version 1 -> 3 (sentiment v2 (layer version 2)), routing cleared.",
        "Note: the canary (function version 2) scored sentiment v1 (scorer-shadow version 2) as "
        "its shadow: $LATEST was published again without it as version 3",
    ]
    assert routing(live) == ("3", {})


def test_a_bad_record_rate_breach_rolls_back(live: Any, layers: Path) -> None:
    def put(cw: Any) -> None:
        labels = ["positive", "negative"] * 50
        put_batches(cw, "scorer", *live_batches(labels), Batch("2", labels, bad=10))

    with traffic(live, put):
        result = bake_canary(layers, 2, "--max-bad-rate", "5%")

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: rolled back: bad-record rate 9.1% > 5% over 110 records"
    )
    assert routing(live) == ("1", {})


def test_lambda_errors_roll_back_without_waiting_for_records(live: Any, layers: Path) -> None:
    # given: the canary's version fails (as at init: no batch line, so no records)
    def put(cw: Any) -> None:
        put_invocations(cw, "scorer", "live", "2", invocations=2, errors=2)

    with traffic(live, put):
        result = bake_canary(layers, 2)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == "Error: rolled back: Lambda errors 2 > 0"
    assert routing(live) == ("1", {})


def test_too_few_records_at_the_end_roll_back(live: Any, layers: Path) -> None:
    def put(cw: Any) -> None:
        put_batches(cw, "scorer", *live_batches(["positive"] * 10), Batch("2", ["positive"] * 20))

    with traffic(live, put):
        result = bake_canary(layers, 2)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: rolled back: too few records to judge: 20 < 100 in 3s"
    )
    assert routing(live) == ("1", {})


def test_min_records_lets_a_small_canary_be_judged(live: Any, layers: Path) -> None:
    def put(cw: Any) -> None:
        put_batches(cw, "scorer", *live_batches(["positive"] * 10), Batch("2", ["positive"] * 20))

    with traffic(live, put):
        result = bake_canary(layers, 2, "--min-records", "10")

    assert result.exit_code == 0, result.output
    assert "Promoted: every guard held over 20 records:" in result.output
    assert routing(live) == ("3", {})  # version 2 without its shadow


def test_an_interrupted_bake_leaves_the_canary_and_says_how_to_finish(
    live: Any, layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the user presses Ctrl-C at the first check
    import mlayer.canary

    original = mlayer.canary.bake

    def interrupted(*args: Any, progress: Callable[..., None], **kwargs: Any) -> Any:
        def then_interrupt(check: Any) -> None:
            progress(check)
            raise KeyboardInterrupt

        return original(*args, progress=then_interrupt, **kwargs)

    monkeypatch.setattr(mlayer.canary, "bake", interrupted)

    # when
    result = bake_canary(layers, 2)

    # then
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == (
        "Interrupted: the canary is left as it is (alias live on version 1, 10.0% to version "
        "2). Finish it with `mlayer promote --function scorer --alias live` or `mlayer "
        "rollback --function scorer --alias live`."
    )
    assert routing(live) == ("1", {"2": 0.1})


def test_a_canary_finished_by_hand_meanwhile_is_left_alone(live: Any, layers: Path) -> None:
    # given: someone promotes the canary by hand while it bakes
    def put(cw: Any) -> None:
        live.update_alias(
            FunctionName="scorer", Name="live", FunctionVersion="2",
            RoutingConfig={"AdditionalVersionWeights": {}},
        )  # fmt: skip

    with traffic(live, put):
        result = bake_canary(layers, 2)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: alias live no longer runs this canary (it routes to version 2): promoted or "
        "rolled back meanwhile, so nothing was done"
    )
    assert routing(live) == ("2", {})


def test_cloudwatch_failing_mid_bake_leaves_the_canary(
    live: Any, layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    import mlayer.metrics

    def denied(*args: Any, **kwargs: Any) -> Any:
        error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
        raise ClientError(error, "GetMetricData")

    monkeypatch.setattr(mlayer.metrics, "version_figures", denied)

    result = bake_canary(layers, 2)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "Error: GetMetricData failed (AccessDenied): the credentials in use lack permission "
        "for GetMetricData; grant it (cloudwatch:GetMetricData) or pass --profile with a role "
        "that has it. AWS said: not authorized. The canary "
        "is left as it is: finish it with `mlayer promote --function scorer --alias live` or "
        "`mlayer rollback --function scorer --alias live`"
    )
    assert routing(live) == ("1", {"2": 0.1})


# ------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary", "10", "--max-bad-rate", "1%"],
         "Error: --max-bad-rate needs --bake DURATION: guards are checked while a canary bakes "
         "(--canary PCT --bake 10m)"),
        (["--canary", "10", "--min-agreement", "95%", "--min-records", "50"],
         "Error: --min-agreement, --min-records need --bake DURATION: guards are checked while "
         "a canary bakes (--canary PCT --bake 10m)"),
        (["--bake", "10m"],
         "Error: --bake needs --canary PCT: it watches a canary's share of the traffic, then "
         "promotes it or rolls it back"),
        (["--canary", "10", "--bake", "10m", "--min-agreement", "0.95"],
         "Error: Invalid value for '--min-agreement': 0.95 is ambiguous: write 95% for that "
         "share, or 0.95% if you mean less than one percent"),
        (["--canary", "10", "--bake", "10m", "--max-bad-rate", "120%"],
         "Error: Invalid value for '--max-bad-rate': 120% is not between 0% and 100%"),
        (["--canary", "10", "--bake", "ten"],
         "Error: Invalid value for '--bake': 'ten' is not a duration; use a number and a unit: "
         "30m, 1h, 7d (s, m, h, d, w)"),
    ],
    ids=["guard-without-bake", "guards-without-bake", "bake-without-canary", "ambiguous-pct",
         "over-100", "bad-duration"],
)  # fmt: skip
def test_bake_options_are_checked_before_anything_is_published(
    live: Any, layers: Path, args: list[str], message: str
) -> None:
    path = write_model_build(layers, 2)
    result = run("publish-model", str(path), "--function", "scorer", "--alias", "live", *args)

    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == message
    assert [
        v["Version"] for v in live.list_layer_versions(LayerName="scorer-model")["LayerVersions"]
    ] == [1]


def test_a_bake_with_no_canary_started_says_so(live: Any, layers: Path) -> None:
    # given: the same model content again: nothing is published, no canary starts
    path = write_model_build(layers, 1)
    result = run(
        "publish-model", str(path), "--function", "scorer", "--alias", "live", "--canary", "10",
        *FAST,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "Not baking: no canary was started."


@pytest.mark.parametrize(
    ("text", "share"),
    [("1%", 0.01), ("95%", 0.95), ("0.5%", 0.005), ("95", 0.95), ("0", 0.0), ("100 %", 1.0)],
)
def test_percentages_read_as_written(text: str, share: float) -> None:
    from mlayer.options import Percent

    assert Percent().convert(text, None, None) == pytest.approx(share)
