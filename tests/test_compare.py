"""mlayer compare, and status's last hour: the served models' figures from the metrics, text
and --json, through the CLI against moto (metrics put as CloudWatch Logs would put the
function's EMF lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fake_layers import layer_list, publish_model, publish_raw_layer
from metrics_support import Batch, Shadow, put_batches, put_invocations

from mlayer.cli import cli
from mlayer.contracts import model_description

SCORER_LIVE = ("--function", "scorer", "--alias", "live")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def cw(lam: Any) -> Any:
    import boto3

    return boto3.client("cloudwatch", region_name="us-east-1")


@pytest.fixture
def canary(lam: Any, layers: Path, cw: Any) -> Any:
    """Given: v1 live on alias live, v2 a 10% canary, each with an hour's metrics."""
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live", "--canary", "10")
    put_batches(
        cw, "scorer",
        Batch("1", ["positive"] * 60 + ["negative"] * 40, bad=5, predict_ms=10, confidence=0.8),
        Batch("1", ["positive"] * 60 + ["negative"] * 40, predict_ms=20, confidence=0.6),
        Batch("2", ["positive"] * 9 + ["neutral"], predict_ms=12, confidence=0.9),
    )  # fmt: skip
    put_invocations(cw, "scorer", "live", "1", invocations=2)
    put_invocations(cw, "scorer", "live", "2", invocations=1, errors=1)
    return lam


def with_shadow(lam: Any, layers: Path, cw: Any) -> None:
    """Given: v1 live on alias live, its version scoring model v3 as its shadow."""
    description = model_description("sentiment", 3, "a" * 64, 100, "b" * 64)
    shadow = publish_raw_layer(lam, "scorer-shadow", description)
    lam.update_function_configuration(
        FunctionName="scorer", Layers=[*layer_list(lam, "scorer"), shadow]
    )
    publish_model(layers, 1, "--alias", "live")
    labels = ["positive"] * 6 + ["negative"] * 4
    put_batches(
        cw, "scorer",
        *[Batch("1", labels, shadow=Shadow("3", ["positive"] * 10, abs_diff=0.05)) for _ in range(2)],
    )  # fmt: skip


def test_compare_json_puts_the_canary_beside_the_live_model(canary: Any) -> None:
    result = run("compare", *SCORER_LIVE, "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["function"], data["live_from"], data["since_s"]) == (
        "scorer", "alias live -> version 1", 3600,
    )  # fmt: skip
    live, candidate = data["columns"]
    assert (live["role"], live["model"], live["function_version"]) == (
        "live", "sentiment v1 (layer version 1)", "1",
    )  # fmt: skip
    assert (live["records"], live["predictions"], live["bad_records"]) == (205, 200, 5)
    assert live["label_shares"] == {"positive": 0.6, "negative": 0.4}
    assert live["confidence_mean"] == pytest.approx(0.7)
    assert (live["predict_ms"], live["predict_ms_max"]) == (15, 20)
    assert (live["errors"], live["invocations"], live["agreement"]) == (0, 2, None)
    assert (candidate["role"], candidate["weight"], candidate["records"]) == ("canary", 0.1, 10)
    assert candidate["label_shares"] == {"positive": 0.9, "neutral": 0.1}
    # no shadow on the canary: the overlap of the label shares, min(0.6, 0.9)
    assert candidate["agreement"] == pytest.approx(0.6)
    assert candidate["agreement_basis"] == "label shares against v1"
    assert (candidate["errors"], candidate["invocations"]) == (1, 1)
    assert data["notes"] == [
        "p99 of predict_ms is not available from this endpoint: the maximum is shown"
    ]


def test_compare_text_is_a_table_with_a_row_per_label(canary: Any) -> None:
    result = run("compare", *SCORER_LIVE)

    assert result.exit_code == 0, result.output
    text = result.output
    assert "scorer, alias live -> version 1:" in text
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.count("│") == 4}  # fmt: skip
    assert rows["records"] == ["205", "10"]
    assert rows["bad-record rate"] == ["2.4%", "0.0%"]
    assert rows["agreement with live"] == ["", "60.0%"]
    assert rows["label positive"] == ["60.0%", "90.0%"]
    assert rows["label negative"] == ["40.0%", "0.0%"]
    assert rows["label neutral"] == ["0.0%", "10.0%"]
    assert rows["predict ms, max"] == ["20.0", "12.0"]
    assert rows["Lambda errors"] == ["0 of 2", "1 of 1"]
    assert "agreement of the canary: label shares against v1" in text


def test_compare_puts_the_shadow_beside_the_live_model(lam: Any, layers: Path, cw: Any) -> None:
    with_shadow(lam, layers, cw)

    data = json.loads(run("compare", *SCORER_LIVE, "--json").output)

    live, shadow = data["columns"]
    assert (live["role"], shadow["role"]) == ("live", "shadow")
    assert shadow["model"].startswith("sentiment v3 (layer version 1")
    assert (shadow["records"], shadow["predictions"], shadow["bad_rate"]) == (20, None, None)
    assert shadow["agreement"] == pytest.approx(0.6)
    assert shadow["agreement_basis"] == "the records both scored, per record"
    assert shadow["label_shares"] == {"positive": 1.0}
    assert shadow["abs_diff"] == pytest.approx(0.05)


def test_compare_of_an_unknown_alias_says_so(lam: Any, layers: Path) -> None:
    publish_model(layers, 1)

    result = run("compare", "--function", "scorer", "--alias", "blue")

    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer has no alias blue; create it with mlayer publish-model --alias "
        "blue, or leave --alias out to read $LATEST\n"
    )


def test_status_shows_the_last_hour_of_the_live_model_and_the_canary(
    canary: Any, layers: Path
) -> None:
    text = run("status", *SCORER_LIVE, "--layers-dir", str(layers))
    data = json.loads(run("status", *SCORER_LIVE, "--json").output)

    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Last hour")))
    assert lines[start].startswith("Last hour (metrics since ")
    assert lines[start + 1 :] == [
        "  live    sentiment v1 (layer version 1): 205 records; bad-record rate 2.4%; labels "
        "positive 60.0%, negative 40.0%",
        "  canary  sentiment v2 (layer version 2) at 10.0%: 10 records; bad-record rate 0.0%; "
        "labels positive 90.0%, neutral 10.0%",
    ]
    metrics = data["metrics"]
    assert metrics["unavailable"] is None
    assert (metrics["live"]["records"], metrics["canary"]["records"]) == (205, 10)
    assert metrics["canary"]["label_shares"] == {"positive": 0.9, "neutral": 0.1}
    assert "shadow" not in metrics


def test_status_shows_the_shadow(lam: Any, layers: Path, cw: Any) -> None:
    with_shadow(lam, layers, cw)

    lines = run("status", *SCORER_LIVE).output.splitlines()

    assert lines[-1] == (
        "  shadow  sentiment v3 (layer version 1): 20 records scored beside the live model; "
        "agreement 60.0%; labels positive 100.0%"
    )


def test_status_without_metrics_says_so(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")

    result = run("status", *SCORER_LIVE)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "  live    sentiment v1 (layer version 1): no metrics in the last hour"
    )


def test_status_without_cloudwatch_access_still_works(
    lam: Any, layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: CloudWatch refuses (the credentials lack cloudwatch:ListMetrics)
    from botocore.exceptions import ClientError

    import mlayer.metrics

    def denied(*args: Any, **kwargs: Any) -> Any:
        error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
        raise ClientError(error, "ListMetrics")

    monkeypatch.setattr(mlayer.metrics, "version_figures", denied)
    publish_model(layers, 1, "--alias", "live")

    text = run("status", *SCORER_LIVE)
    data = json.loads(run("status", *SCORER_LIVE, "--json").output)

    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[-1] == (
        "Last hour: metrics not available: ListMetrics failed (AccessDenied): the credentials "
        "in use lack permission for ListMetrics; grant it (cloudwatch:ListMetrics) or pass "
        "--profile with a role that has it. AWS said: not authorized"
    )
    assert data["metrics"]["unavailable"].startswith("ListMetrics failed (AccessDenied)")
    assert data["live_model_label"] == "sentiment v1 (layer version 1)"


def test_status_of_a_function_without_a_model_notes_it(lam: Any) -> None:
    result = run("status", "--function", "scorer")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "Last hour: metrics not available: function scorer serves no model mlayer knows "
        "($LATEST: no model layer linked, no MODEL_URI); publish one with mlayer publish-model"
    )
