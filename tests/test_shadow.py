"""Shadow rollouts through the CLI against moto: publish-model --shadow, shadow stop, promote
of a shadow, the live model as a canary's shadow, status and history; AWS state checked
after each (docs/CONTRACTS.md, "Shadow scoring").

The models are fake builds (the function never loads them here); what the function does
with /opt/shadow and SHADOW_URI is tested with the function.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from fake_layers import (
    carries,
    layer_list,
    layer_version_arn,
    publish_model,
    publish_raw_layer,
    recorded,
    write_model_archive,
    write_model_build,
)

from mlayer.archive import UNZIPPED_LIMIT, write_zip
from mlayer.cli import cli
from mlayer.contracts import deps_description, model_description, model_identity
from mlayer.layers import load_build
from mlayer.local.resolve import local_builds, resolve_layer
from mlayer.model_store import StoreURI
from mlayer.shadow_layer import build_shadow, model_build_from_shadow

BUCKET = "models"
LIVE = ("--function", "scorer", "--alias", "live")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def shadow_publish(path: Path, *extra: str) -> Result:
    return run("publish-model", str(path), *LIVE, "--shadow", *extra)


def deps(lam: Any) -> str:
    return layer_version_arn(lam, "scorer-deps", 1)


def model(lam: Any, version: int) -> str:
    return layer_version_arn(lam, "scorer-model", version)


def shadow(lam: Any, version: int) -> str:
    return layer_version_arn(lam, "scorer-shadow", version)


def config(lam: Any, qualifier: str | None = None) -> dict[str, Any]:
    kwargs = {"FunctionName": "scorer"}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    result: dict[str, Any] = lam.get_function_configuration(**kwargs)
    return result


def env(lam: Any, qualifier: str | None = None) -> dict[str, str]:
    variables: dict[str, str] = (config(lam, qualifier).get("Environment") or {}).get(
        "Variables"
    ) or {}
    return variables


def alias_version(lam: Any) -> str:
    return str(lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"])


def layer_versions(lam: Any, name: str) -> list[int]:
    try:
        listed = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    except lam.exceptions.ResourceNotFoundException:
        return []
    return sorted(int(v["Version"]) for v in listed)


def members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.fixture
def s3(lam: Any) -> Any:
    """Given (under the lam fixture's moto): the model store's bucket."""
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def shadowed(lam: Any, layers: Path) -> Path:
    """Given: v1 live through alias live, then v2 published as its shadow. Returns v2's zip."""
    publish_model(layers, 1, "--alias", "live")
    v2 = write_model_build(layers, 2)
    result = shadow_publish(v2)
    assert result.exit_code == 0, result.output
    return v2


# ---------------------------------------------------------------------------- publish --shadow


def test_publish_shadow_links_the_shadow_layer_and_keeps_the_live_model(
    lam: Any, layers: Path
) -> None:
    publish_model(layers, 1, "--alias", "live")
    v2 = write_model_build(layers, 2)

    result = shadow_publish(v2)

    assert result.exit_code == 0, result.output
    shadow_zip = layers / "shadow-sentiment-v2.zip"
    assert result.output.splitlines()[:4] == [
        f"Shadow zip: {shadow_zip} (the model's files under shadow/)",
        f"Published scorer-shadow version 1: {result.output.split(': ', 2)[2].split(chr(10))[0]}",
        f"  {shadow(lam, 1)}",
        "Shadow: sentiment v2 (scorer-shadow version 1), scored beside the live sentiment v1 "
        "(layer version 1)",
    ]
    assert "Alias live: function version 1 -> 2 (the same live model, now with the shadow)" in (
        result.output
    )
    # $LATEST and the alias's new version: the live model as it was, and the shadow.
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1), shadow(lam, 1)]
    assert alias_version(lam) == "2"
    assert layer_list(lam, "scorer", "2") == [deps(lam), model(lam, 1), shadow(lam, 1)]
    assert config(lam, "2")["Description"] == carries(layers / "model-sentiment-v1.zip")
    # The shadow zip: the model zip's files under shadow/, byte for byte, found by sha256.
    model_files = members(v2)
    assert members(shadow_zip) == {
        "shadow/" + name.removeprefix("model/"): data for name, data in model_files.items()
    }
    sidecar = json.loads(shadow_zip.with_suffix(".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(shadow_zip.read_bytes()).hexdigest()
    assert sidecar["identity"] == recorded(v2)["identity"]
    assert sidecar["model_sha256"] == recorded(v2)["sha256"]
    layer = lam.get_layer_version(LayerName="scorer-shadow", VersionNumber=1)
    assert layer["Description"] == model_description(
        "sentiment", 2, sidecar["sha256"], sidecar["unzipped_bytes"], sidecar["identity"]
    )


def test_publishing_the_same_shadow_again_reuses_everything(
    lam: Any, layers: Path, shadowed: Path
) -> None:
    again = shadow_publish(shadowed)

    assert again.exit_code == 0, again.output
    assert "Reused scorer-shadow version 1: identical content" in again.output
    assert "scorer $LATEST already has this shadow" in again.output
    assert "Note: alias live already serves function version 2, which has this" in again.output
    assert layer_versions(lam, "scorer-shadow") == [1]
    assert alias_version(lam) == "2"


def test_a_shadow_replacing_another_says_so(lam: Any, layers: Path, shadowed: Path) -> None:
    result = shadow_publish(write_model_build(layers, 3))

    assert result.exit_code == 0, result.output
    assert (
        "Note: replaced the shadow sentiment v2 (scorer-shadow version 1): one shadow at a time"
    ) in result.output
    assert layer_list(lam, "scorer", alias_version(lam)) == [
        deps(lam),
        model(lam, 1),
        shadow(lam, 2),
    ]


def test_shadow_zips_are_deterministic_and_give_the_model_zip_back(tmp_path: Path) -> None:
    """A model zip as build-model writes it (archive.write_zip) -> shadow zip -> model zip."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "m.joblib").write_bytes(b"weights" * 1000)
    manifest = {
        "name": "m",
        "version": 4,
        "files": {"m.joblib": hashlib.sha256(b"weights" * 1000).hexdigest()},
        "input": {"kind": "text", "field": "text"},
        "stages": ["m.joblib"],
        "labels": None,
    }
    (source / "manifest.json").write_text(json.dumps(manifest))
    built = tmp_path / "layers" / "model-m-v4.zip"
    original = write_zip(
        [
            (source / "m.joblib", "model/m.joblib"),
            (source / "manifest.json", "model/manifest.json"),
        ],
        built,
    )
    model = load_build(built)

    first = build_shadow(model)
    first.zip_path.unlink()
    second = build_shadow(model)
    built.unlink()
    built.with_suffix(".json").unlink(missing_ok=True)
    rebuilt = model_build_from_shadow(second)

    assert first.sha256 == second.sha256 != original.sha256
    assert second.identity == model_identity(manifest)
    assert rebuilt.zip_path == built
    assert rebuilt.sha256 == original.sha256


@pytest.mark.parametrize("why", ["layers", "size"])
def test_a_shadow_over_the_budgets_is_refused_naming_the_sizes(
    lam: Any, layers: Path, why: str
) -> None:
    publish_model(layers, 1, "--alias", "live")
    v2 = write_model_build(layers, 2)
    current = layer_list(lam, "scorer")
    if why == "layers":
        extra = [publish_raw_layer(lam, name) for name in ("a", "b", "c")]
    else:
        latest = config(lam)
        room = (
            UNZIPPED_LIMIT
            - latest["CodeSize"]
            - recorded(layers / "model-sentiment-v1.zip")["unzipped_bytes"]
        )
        big = deps_description("a" * 64, room - 10, "python3.11", "x86_64")
        extra = [publish_raw_layer(lam, "big", big)]
    lam.update_function_configuration(FunctionName="scorer", Layers=current + extra)

    result = shadow_publish(v2)

    assert result.exit_code == 1
    store = (
        "serve the shadow from the S3 model store instead (mlayer publish-model MODEL_DIR "
        "--shadow --store s3 --bucket BUCKET): its archive is downloaded at init and counts "
        "against neither limit\n"
    )
    if why == "layers":
        assert result.output == (
            "Error: function scorer would link 6 layers with the shadow (scorer-deps, "
            "scorer-model, a, b, c, scorer-shadow), and Lambda allows 5; " + store
        )
    else:
        assert result.output.startswith("Error: function scorer would be 250.0 MiB unzipped (")
        assert "with the shadow, over Lambda's 250 MiB (262,144,000 bytes) by " in result.output
        assert "layer scorer-shadow (shadow sentiment v2)" in result.output
        assert result.output.endswith(store)
    assert layer_versions(lam, "scorer-shadow") == []
    assert layer_list(lam, "scorer") == current + extra
    assert alias_version(lam) == "1"


def test_a_stored_shadow_sets_shadow_uri(lam: Any, s3: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    archive = write_model_archive(layers, 2)
    sha = recorded(archive)["sha256"]

    result = shadow_publish(archive, "--bucket", BUCKET)

    assert result.exit_code == 0, result.output
    uri = f"s3://{BUCKET}/mlayer/scorer-model/{sha}.tar#sha256={sha}&size={archive.stat().st_size}"
    assert f"SHADOW_URI={uri}" in result.output
    for qualifier in (None, "2"):
        assert env(lam, qualifier)["SHADOW_URI"] == uri
        assert layer_list(lam, "scorer", qualifier) == [deps(lam), model(lam, 1)]
    assert "MODEL_URI" not in env(lam)
    assert alias_version(lam) == "2"
    head = s3.head_object(Bucket=BUCKET, Key=f"mlayer/scorer-model/{sha}.tar")
    assert head["Metadata"]["mlayer"].startswith(f"mlayer model sentiment v2 sha256={sha} ")
    assert layer_versions(lam, "scorer-shadow") == []


# ---------------------------------------------------------------------------- refusals


def test_a_shadow_with_the_live_content_is_refused(lam: Any, layers: Path) -> None:
    live = run("publish-model", str(write_model_build(layers, 1, content="A")), *LIVE)
    assert live.exit_code == 0, live.output

    result = shadow_publish(write_model_build(layers, 2, content="A"))

    assert result.exit_code == 1
    assert result.output == (
        "Error: sentiment v2 has the same content as the live sentiment v1 (same files and "
        "input): as its shadow it would agree on every record and measure nothing; publish "
        "another model with --shadow\n"
    )
    assert layer_versions(lam, "scorer-shadow") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("--canary", "10"),
            "Error: --shadow and --canary do not go together: a shadow is scored beside the "
            "live model and serves nothing; a canary version already carries the live model as "
            "its shadow",
        ),
        (
            ("--set", "acme"),
            "Error: --shadow and --set do not go together: model sets have no shadow",
        ),
    ],
    ids=["canary", "set"],
)
def test_shadow_with_canary_or_set_is_a_usage_error(
    lam: Any, layers: Path, extra: tuple[str, ...], message: str
) -> None:
    publish_model(layers, 1, "--alias", "live")

    result = shadow_publish(write_model_build(layers, 2), *extra)

    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message
    assert layer_versions(lam, "scorer-shadow") == []


def test_a_shadow_while_a_canary_runs_is_refused(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live", "--canary", "10")

    result = shadow_publish(write_model_build(layers, 3))

    assert result.exit_code == 1
    assert result.output == (
        "Error: alias live has a canary in progress (version 2 at 10.0%), whose shadow is the "
        "live model: finish it with mlayer promote --alias live or mlayer rollback --alias live "
        "before a shadow\n"
    )


def write_set_build(layers: Path, version: int) -> Path:
    """layers/model-acme-v<N>.zip: a (fake) model set, its manifest with ``set``."""
    body = f"set member {version}".encode()
    manifest = {
        "name": "acme",
        "version": version,
        "files": {"a/a.joblib": hashlib.sha256(body).hexdigest()},
        "set": {"members": {"a": "0" * 64}, "field": "tenant", "default": None},
        "stages": [],
        "input": None,
        "labels": None,
    }
    path = layers / f"model-acme-v{version}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/a/a.joblib", body)
        zf.writestr("model/manifest.json", json.dumps(manifest))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar = {"kind": "model", **manifest, "sha256": sha, "unzipped_bytes": 100}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def test_sets_have_no_shadow(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")

    as_shadow = shadow_publish(write_set_build(layers, 2))

    assert as_shadow.exit_code == 1
    assert as_shadow.output == (
        "Error: model-acme-v2.zip is a model set, and sets have no shadow (the function "
        "ignores SHADOW_URI and /opt/shadow for a set); publish a single model with --shadow\n"
    )

    live = run("publish-model", str(write_set_build(layers, 3)), *LIVE)
    assert live.exit_code == 0, live.output
    beside_a_set = shadow_publish(write_model_build(layers, 4))

    assert beside_a_set.exit_code == 1
    assert beside_a_set.output == (
        "Error: the live model acme v3 (layer version 2) is a model set, and sets have no "
        "shadow (the function ignores SHADOW_URI and /opt/shadow for a set)\n"
    )
    assert layer_versions(lam, "scorer-shadow") == []


def test_a_shadow_needs_a_live_model(lam: Any, layers: Path) -> None:
    result = run(
        "publish-model", str(write_model_build(layers, 1)), "--function", "scorer", "--shadow"
    )

    assert result.exit_code == 1
    assert result.output == (
        "Error: function scorer serves no model yet, and a shadow scores beside the live one: "
        "publish a model first with mlayer publish-model MODEL_DIR\n"
    )


# ---------------------------------------------------------------------------- shadow stop


def test_shadow_stop_removes_it_and_moves_the_alias(lam: Any, layers: Path, shadowed: Path) -> None:
    variables = {**env(lam), "SHADOW_OUTPUT": "1", "OUTPUT_TABLE": "predictions"}
    lam.update_function_configuration(FunctionName="scorer", Environment={"Variables": variables})

    result = run("shadow", "stop", *LIVE)

    assert result.exit_code == 0, result.output
    assert result.output == (
        "Stopped the shadow sentiment v2 (scorer-shadow version 1); scorer serves sentiment v1 "
        "(layer version 1)\n"
        "Layers now:\n"
        f"  {deps(lam)}\n"
        f"  {model(lam, 1)}\n"
        "Alias live: function version 2 -> 3\n"
    )
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]
    assert env(lam) == {"OUTPUT_TABLE": "predictions"}
    assert alias_version(lam) == "3"
    assert layer_list(lam, "scorer", "3") == [deps(lam), model(lam, 1)]
    assert config(lam, "3")["Description"] == carries(layers / "model-sentiment-v1.zip")

    again = run("shadow", "stop", *LIVE)
    assert again.exit_code == 1
    assert again.output == (
        "Error: function scorer has no shadow on $LATEST nor on function version 3, which "
        "alias live serves; start one with mlayer publish-model MODEL_DIR --shadow\n"
    )


# ---------------------------------------------------------------------------- promote


def test_promote_makes_the_shadow_live(lam: Any, layers: Path, shadowed: Path) -> None:
    result = run("promote", *LIVE, "--layers-dir", str(layers))

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "Promoted: shadow sentiment v2 (scorer-shadow version 1) is now live: alias live "
        "function version 2 -> 3, shadow removed.",
        "Model: sentiment v1 (layer version 1) -> sentiment v2 (layer version 2)",
    ]
    assert alias_version(lam) == "3"
    assert layer_list(lam, "scorer", "3") == [deps(lam), model(lam, 2)]
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]
    assert config(lam, "3")["Description"] == carries(shadowed)
    described = lam.get_layer_version(LayerName="scorer-model", VersionNumber=2)["Description"]
    assert described.startswith(f"mlayer model sentiment v2 sha256={recorded(shadowed)['sha256']} ")

    nothing = run("promote", *LIVE)
    assert nothing.exit_code == 1
    assert nothing.output == (
        "Error: alias live routes all traffic to function version 3: no canary to promote; "
        "start one with mlayer publish-model --alias live --canary PCT\n"
    )


def test_promote_rebuilds_the_model_from_the_shadow_zip(
    lam: Any, layers: Path, shadowed: Path
) -> None:
    identity = recorded(shadowed)["identity"]
    shadowed.unlink()
    shadowed.with_suffix(".json").unlink()

    result = run("promote", *LIVE, "--layers-dir", str(layers))

    assert result.exit_code == 0, result.output
    rebuilt = load_build(shadowed)
    assert rebuilt.identity == identity
    assert layer_list(lam, "scorer", alias_version(lam)) == [deps(lam), model(lam, 2)]
    described = lam.get_layer_version(LayerName="scorer-model", VersionNumber=2)["Description"]
    assert described == model_description(
        "sentiment", 2, rebuilt.sha256, rebuilt.unzipped_bytes, identity
    )


def test_promote_without_the_shadows_build_names_the_fix(
    lam: Any, layers: Path, shadowed: Path
) -> None:
    sha = recorded(layers / "shadow-sentiment-v2.zip")["sha256"]
    for path in layers.glob("*-sentiment-v2.*"):
        path.unlink()

    result = run("promote", *LIVE, "--layers-dir", str(layers))

    assert result.exit_code == 1
    assert result.output == (
        "Error: the shadow sentiment v2 (scorer-shadow version 1) cannot become live here: no "
        f"build of it in {layers}/ (model-sentiment-v2.zip or shadow-sentiment-v2.zip, found by "
        f"sha256 {sha[:12]} or content) and scorer-model has no version of it; pass "
        "--layers-dir with the directory that holds its build, or publish the model with "
        "mlayer publish-model\n"
    )
    assert alias_version(lam) == "2"
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1), shadow(lam, 1)]


@pytest.mark.parametrize("build", ["at hand", "gone"])
def test_promote_of_a_stored_shadow_sets_model_uri(
    lam: Any, s3: Any, layers: Path, build: str
) -> None:
    publish_model(layers, 1, "--alias", "live")
    archive = write_model_archive(layers, 2)
    assert shadow_publish(archive, "--bucket", BUCKET).exit_code == 0
    uri = env(lam)["SHADOW_URI"]
    if build == "gone":  # then MODEL_URI is set from SHADOW_URI as it is
        archive.unlink()
        archive.with_suffix(".json").unlink()

    result = run("promote", *LIVE, "--layers-dir", str(layers))

    assert result.exit_code == 0, result.output
    assert "Promoted: shadow sentiment v2 (s3://models/mlayer/scorer-model/" in result.output
    memory = "Note: the shadow's archive has no build in --layers-dir, so its memory peak"
    assert (memory in result.output) == (build == "gone")
    version = alias_version(lam)
    assert env(lam, version) == {"MODEL_URI": uri}
    assert env(lam) == {"MODEL_URI": uri}
    assert layer_list(lam, "scorer", version) == [deps(lam)]


def test_publishing_the_shadows_model_as_live_removes_the_shadow(
    lam: Any, layers: Path, shadowed: Path
) -> None:
    result = run("publish-model", str(shadowed), *LIVE)

    assert result.exit_code == 0, result.output
    assert (
        "Note: the shadow sentiment v2 (scorer-shadow version 1) is this model, now live: "
        "removed it\n"
    ) in result.output
    assert alias_version(lam) == "3"
    assert layer_list(lam, "scorer", "3") == [deps(lam), model(lam, 2)]


def test_rollback_removes_the_shadow_and_ends_on_a_version_without_one(
    lam: Any, layers: Path
) -> None:
    publish_model(layers, 1, "--alias", "live")
    assert shadow_publish(write_model_build(layers, 2)).exit_code == 0  # version 2: v1 + shadow
    publish_model(layers, 3, "--alias", "live")  # version 3: v3, the shadow kept

    result = run("rollback", *LIVE)

    assert result.exit_code == 0, result.output
    assert alias_version(lam) == "1"  # v1 without the shadow, not version 2
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]
    assert result.output.endswith(
        "Note: removed the shadow sentiment v2 (scorer-shadow version 1) from $LATEST; publish "
        "it again with --shadow to keep scoring it\n"
    )


# ---------------------------------------------------------------------------- canary


def test_a_canary_carries_the_live_model_as_its_shadow_and_promote_leaves_none(
    lam: Any, layers: Path
) -> None:
    publish_model(layers, 1, "--alias", "live")

    canary = publish_model(layers, 2, "--alias", "live", "--canary", "10")

    assert (
        "Canary shadow: version 2 also scores the live model, sentiment v1 (scorer-shadow "
        "version 1), on every record it serves"
    ) in canary.output
    assert layer_list(lam, "scorer", "2") == [deps(lam), model(lam, 2), shadow(lam, 1)]
    v1 = recorded(layers / "model-sentiment-v1.zip")
    described = lam.get_layer_version(LayerName="scorer-shadow", VersionNumber=1)["Description"]
    assert described.startswith("mlayer model sentiment v1 sha256=")
    assert described.endswith(f" identity={v1['identity']}")
    assert layer_list(lam, "scorer", "1") == [deps(lam), model(lam, 1)]

    promoted = run("promote", *LIVE)

    assert promoted.exit_code == 0, promoted.output
    assert alias_version(lam) == "3"
    assert layer_list(lam, "scorer", "3") == [deps(lam), model(lam, 2)]
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2)]
    assert config(lam, "3")["Description"] == carries(layers / "model-sentiment-v2.zip")


def test_rollback_of_a_canary_leaves_no_shadow(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    publish_model(layers, 2, "--alias", "live", "--canary", "10")
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 2), shadow(lam, 1)]

    result = run("rollback", *LIVE)

    assert result.exit_code == 0, result.output
    assert alias_version(lam) == "1"
    assert layer_list(lam, "scorer") == [deps(lam), model(lam, 1)]
    assert "Note:" not in result.output


def test_a_canary_without_the_live_build_goes_without_a_shadow(lam: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    sha = recorded(layers / "model-sentiment-v1.zip")["sha256"]
    for path in layers.glob("model-sentiment-v1.*"):
        path.unlink()

    canary = publish_model(layers, 2, "--alias", "live", "--canary", "10")

    assert (
        "Note: the canary runs without the live model sentiment v1 (layer version 1) as its "
        f"shadow: no build of it (sha256 {sha[:12]}) in layers/, {layers}/, and scorer-shadow "
        "has no version of it; its agreement with the live model will be judged by label "
        "shares instead\n"
    ) in canary.output
    assert layer_list(lam, "scorer", "2") == [deps(lam), model(lam, 2)]
    promoted = run("promote", *LIVE)
    assert promoted.exit_code == 0, promoted.output
    assert alias_version(lam) == "2"


def test_a_stored_live_model_is_the_canarys_shadow_by_its_uri(
    lam: Any, s3: Any, layers: Path
) -> None:
    first = run("publish-model", str(write_model_archive(layers, 1)), *LIVE, "--bucket", BUCKET)
    assert first.exit_code == 0, first.output
    live_uri = env(lam, "1")["MODEL_URI"]

    canary = run(
        "publish-model", str(write_model_archive(layers, 2)), *LIVE, "--bucket", BUCKET,
        "--canary", "10",
    )  # fmt: skip

    assert canary.exit_code == 0, canary.output
    assert env(lam, "2")["SHADOW_URI"] == live_uri
    assert StoreURI.parse(env(lam, "2")["MODEL_URI"]) != StoreURI.parse(live_uri)
    assert run("rollback", *LIVE).exit_code == 0
    assert "SHADOW_URI" not in env(lam)
    assert env(lam)["MODEL_URI"] == live_uri


# ---------------------------------------------------------------------------- status, history


def test_status_and_history_show_the_shadow(lam: Any, layers: Path, shadowed: Path) -> None:
    status = run("status", *LIVE, "--layers-dir", str(layers), "--json")

    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    sidecar = recorded(layers / "shadow-sentiment-v2.zip")
    assert data["shadow_model_label"] == "sentiment v2 (scorer-shadow version 1)"
    assert data["shadow_model_location"] == {
        "from": "layer",
        "at": shadow(lam, 1),
        "bytes": sidecar["unzipped_bytes"],
        "sha256": sidecar["sha256"],
        "deleted": False,
    }
    assert data["shadow_model"]["version"] == 2
    assert data["latest_shadow_model"]["arn"] == shadow(lam, 1)
    assert data["shadow_layer"] == "scorer-shadow"
    assert data["aliases"][0]["shadow_models"] == {"2": "sentiment v2 (scorer-shadow version 1)"}

    text = run("status", *LIVE, "--layers-dir", str(layers))
    assert "Shadow (alias live -> version 2): sentiment v2 (scorer-shadow version 1)" in (
        text.output.splitlines()
    )
    assert (
        "Alias live: version 2 (sentiment v1 (layer version 1); shadow sentiment v2 "
        "(scorer-shadow version 1))"
    ) in text.output.splitlines()

    history = run("history", *LIVE, "--json")

    assert history.exit_code == 0, history.output
    found = json.loads(history.output)
    assert found["shadow_layer"] == "scorer-shadow"
    assert [
        (r["layer_version"], r["model_version"], r["live"], r["shadow_of"], r["shadow_aliases"])
        for r in found["shadows"]
    ] == [(1, 2, True, ["$LATEST", "2"], ["live"])]
    assert "scorer-shadow: shadows" in run("history", *LIVE).output


def test_a_stored_shadow_is_in_history_and_kept_by_prune(lam: Any, s3: Any, layers: Path) -> None:
    publish_model(layers, 1, "--alias", "live")
    archive = write_model_archive(layers, 2)
    assert shadow_publish(archive, "--bucket", BUCKET).exit_code == 0

    history = json.loads(run("history", *LIVE, "--json").output)
    [row] = [r for r in history["rows"] if r["layer_version"] is None]
    assert (row["model_version"], row["shadow_of"]) == (2, ["$LATEST", "2"])

    pruned = run("prune", "--function", "scorer", "--keep", "0")
    assert pruned.exit_code == 0, pruned.output
    assert "Kept (in use by function version $LATEST as its shadow, function version 2 as its" in (
        pruned.output
    )
    sha = recorded(archive)["sha256"]
    assert s3.head_object(Bucket=BUCKET, Key=f"mlayer/scorer-model/{sha}.tar")


# ---------------------------------------------------------------------------- run-local


def test_run_local_finds_the_shadow_layer_by_sha256(lam: Any, layers: Path, shadowed: Path) -> None:
    resolved = resolve_layer(lam, shadow(lam, 1), layers, local_builds(layers))

    assert resolved.zip_path == layers / "shadow-sentiment-v2.zip"
    assert resolved.source == f"local build {resolved.zip_path}"
