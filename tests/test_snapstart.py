"""SnapStart through the CLI against moto: the setting mlayer sends, the tag it reads back,
each refusal with its message (nothing changed), status, and a rollout that waits for the
snapshot before it moves the alias.

moto (5.x) accepts ``SnapStart`` but reads back ``ApplyOn: None``, keeps no
``FileSystemConfigs`` and does not implement provisioned concurrency: what mlayer sends is
recorded with botocore's ``before-parameter-build`` event on the CLI's own clients, and the
function's EFS mounts and provisioned concurrency configs are given as AWS would answer them
(``after-call`` / ``before-call`` events on the calls mlayer makes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from fake_layers import create_function, role_arn, write_deps_build, write_model_build
from moto import mock_aws

from mlayer import snapstart
from mlayer.aws import AwsSettings
from mlayer.cli import cli
from mlayer.errors import ConfigError

REGION = "us-east-1"
OFF = "turn SnapStart off (mlayer deploy-function --no-snapstart)"
MUTATING = (
    "CreateFunction",
    "UpdateFunctionCode",
    "UpdateFunctionConfiguration",
    "TagResource",
    "PublishVersion",
    "CreateAlias",
    "UpdateAlias",
)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


class Calls:
    """Every Lambda call the CLI's clients make, with the parameters sent, in order; and
    answers to stand in for what moto does not keep."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.efs: list[dict[str, Any]] | None = None
        self.provisioned: list[dict[str, Any]] | None = None

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.sent if name == operation]

    def record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.sent.append((model.name, dict(params)))

    def add_efs(self, parsed: dict[str, Any], **_: Any) -> None:
        if self.efs is not None and "FunctionArn" in parsed:
            parsed["FileSystemConfigs"] = self.efs

    def answer_provisioned(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if self.provisioned is None:
            return None  # moto's own answer (404 Not yet implemented)
        from botocore.awsrequest import AWSResponse

        return AWSResponse("", 200, {}, None), {"ProvisionedConcurrencyConfigs": self.provisioned}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {service: boto3.client(service, region_name=REGION) for service in ("lambda", "iam")}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorder = Calls()
    original = AwsSettings.client

    def client(self: AwsSettings, service: str) -> Any:
        made = original(self, service)
        if service == "lambda" and not getattr(made, "_snapstart_test", False):
            events = made.meta.events
            events.register("before-parameter-build.lambda", recorder.record)
            events.register("after-call.lambda.GetFunctionConfiguration", recorder.add_efs)
            events.register(
                "before-call.lambda.ListProvisionedConcurrencyConfigs",
                recorder.answer_provisioned,
            )
            made._snapstart_test = True
        return made

    monkeypatch.setattr(AwsSettings, "client", client)
    return recorder


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    src = tmp_path / "function"
    src.mkdir()
    (src / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    return src


@pytest.fixture
def deps(aws: dict[str, Any], layers: Path) -> dict[str, Any]:
    """Given: python3.13 and python3.11 dependency layers published (fake builds)."""
    for runtime in ("python3.13", "python3.11"):
        write_deps_build(layers, runtime)
        published = run(
            "publish-deps", "--function", "scorer", "--runtime", runtime,
            "--layers-dir", str(layers),
        )  # fmt: skip
        assert published.exit_code == 0, published.output
    return aws


def deploy(function_dir: Path, layers: Path, *extra: str) -> Result:
    return run(
        "deploy-function", "--function", "scorer", "--function-dir", str(function_dir),
        "--layers-dir", str(layers), *extra,
    )  # fmt: skip


def tags(lam: Any) -> dict[str, str]:
    arn = lam.get_function_configuration(FunctionName="scorer")["FunctionArn"]
    found: dict[str, str] = lam.list_tags(Resource=arn)["Tags"]
    return found


def test_snapstart_on_create_sends_the_setting_and_tags_the_function(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    lam = deps["lambda"]

    result = deploy(
        function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime", "python3.13",
        "--snapstart",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (create,) = calls.params("CreateFunction")
    assert create["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert create["Runtime"] == "python3.13"
    assert tags(lam) == {"mlayer:snapstart": "PublishedVersions"}
    assert (
        "  SnapStart: on (published versions resume from their snapshot; $LATEST does not)\n"
        in result.output
    )
    # moto keeps no setting (ApplyOn None): the tag is what reads back as on.
    config = lam.get_function_configuration(FunctionName="scorer")
    assert config["SnapStart"]["ApplyOn"] == "None"
    assert snapstart.is_on(lam, "scorer")


def test_no_snapstart_on_update_sends_none_and_retags(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    lam = deps["lambda"]
    role = role_arn(deps["iam"])
    assert deploy(function_dir, layers, "--role", role, "--runtime", "python3.13",
                  "--snapstart").exit_code == 0  # fmt: skip

    result = deploy(function_dir, layers, "--no-snapstart")

    assert result.exit_code == 0, result.output
    update = calls.params("UpdateFunctionConfiguration")[-1]
    assert update["SnapStart"] == {"ApplyOn": "None"}
    assert tags(lam) == {"mlayer:snapstart": "None"}
    assert "  SnapStart: off\n" in result.output
    assert not snapstart.is_on(lam, "scorer")


def test_a_deploy_without_the_flag_keeps_snapstart_as_it_is(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    lam = deps["lambda"]
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13", "--snapstart").exit_code == 0  # fmt: skip

    result = deploy(function_dir, layers, "--memory", "1024")

    assert result.exit_code == 0, result.output
    update = calls.params("UpdateFunctionConfiguration")[-1]
    assert "SnapStart" not in update and update["MemorySize"] == 1024
    assert "TagResource" not in calls.names()
    assert tags(lam) == {"mlayer:snapstart": "PublishedVersions"}
    assert "  SnapStart: on" in result.output


def _efs(calls: Calls) -> None:
    calls.efs = [
        {
            "Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0abc",
            "LocalMountPath": "/mnt/models",
        }
    ]


def _provisioned(calls: Calls) -> None:
    calls.provisioned = [
        {
            "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:scorer:live",
            "RequestedProvisionedConcurrentExecutions": 5,
            "AllocatedProvisionedConcurrentExecutions": 5,
            "Status": "READY",
        }
    ]


def _nothing(calls: Calls) -> None:
    pass


REFUSALS = {
    "runtime before python3.12": (
        ["--runtime", "python3.11"],
        _nothing,
        "SnapStart runs on python3.12 and later, and scorer would run on python3.11: deploy "
        "with --runtime python3.13 (or python3.12) and a dependency layer built for it (mlayer "
        "build-deps --runtime python3.13, then mlayer publish-deps --runtime python3.13)",
    ),
    "ephemeral storage over 512 MB": (
        ["--ephemeral-storage", "1024"],
        _nothing,
        "SnapStart does not support ephemeral storage over 512 MB, and scorer's /tmp would be "
        "1,024 MB: pass --ephemeral-storage 512, or " + OFF,
    ),
    "EFS": (
        [],
        _efs,
        "SnapStart does not support Amazon EFS, and scorer mounts /mnt/models "
        "(FileSystemConfigs): remove it (aws lambda update-function-configuration "
        "--function-name scorer --file-system-configs '[]'), or " + OFF,
    ),
    "provisioned concurrency": (
        [],
        _provisioned,
        "SnapStart does not support provisioned concurrency, and scorer has it on live (5 "
        "environments): remove it (aws lambda delete-provisioned-concurrency-config "
        "--function-name scorer --qualifier live), or " + OFF,
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_snapstart_refuses_what_it_does_not_support_and_changes_nothing(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path, case: str
) -> None:
    # Given the function, SnapStart off, on python3.13
    lam = deps["lambda"]
    created = deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                     "python3.13")  # fmt: skip
    assert created.exit_code == 0, created.output
    before = lam.get_function_configuration(FunctionName="scorer")
    flags, given, reason = REFUSALS[case]
    given(calls)
    calls.sent.clear()

    # When SnapStart is asked for with what it does not support
    result = deploy(function_dir, layers, "--snapstart", *flags)

    # Then it is refused with why and the fix, and nothing changed
    assert result.exit_code == 1
    assert result.output == f"Error: SnapStart cannot be on for scorer: {reason}\n"
    assert not set(calls.names()) & set(MUTATING), calls.names()
    after = lam.get_function_configuration(FunctionName="scorer")
    assert {k: v for k, v in after.items() if k != "ResponseMetadata"} == {
        k: v for k, v in before.items() if k != "ResponseMetadata"
    }
    assert tags(lam) == {}


def test_a_function_with_snapstart_on_refuses_a_change_snapstart_does_not_support(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    """SnapStart on (known from the tag alone on moto): a later deploy without the flag that
    asks for more /tmp, or an older runtime, is refused as well, both reasons at once."""
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13", "--snapstart").exit_code == 0  # fmt: skip
    calls.sent.clear()

    result = deploy(function_dir, layers, "--runtime", "python3.11", "--ephemeral-storage", "2048")

    assert result.exit_code == 1
    assert result.output == (
        "Error: SnapStart cannot be on for scorer: "
        f"{REFUSALS['runtime before python3.12'][2]}; SnapStart does not support ephemeral "
        "storage over 512 MB, and scorer's /tmp would be 2,048 MB: pass --ephemeral-storage "
        "512, or " + OFF + "\n"
    )
    assert not set(calls.names()) & set(MUTATING)
    # --no-snapstart lifts the limits
    off = deploy(function_dir, layers, "--no-snapstart", "--ephemeral-storage", "2048")
    assert off.exit_code == 0, off.output
    # (moto does not keep an updated EphemeralStorage: what was sent is what tells)
    update = calls.params("UpdateFunctionConfiguration")[-1]
    assert update["EphemeralStorage"] == {"Size": 2048}
    assert update["SnapStart"] == {"ApplyOn": "None"}


def test_publish_model_on_a_snapstart_function_waits_for_the_snapshot_then_moves_the_alias(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    # Given a SnapStart function whose alias live serves version 1
    deployed = deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                      "python3.13", "--snapstart", "--alias", "live")  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    assert "Note: SnapStart: snapshot of version 1 ready in " in deployed.output
    calls.sent.clear()

    # When a model is published with --alias
    result = run(
        "publish-model", str(write_model_build(layers, 1)), "--function", "scorer",
        "--alias", "live",
    )  # fmt: skip

    # Then version 2 was waited Active (the waiter's reads of version 2) before the alias
    # moved, and the output says the snapshot was ready
    assert result.exit_code == 0, result.output
    names = calls.names()
    published = names.index("PublishVersion")
    moved = names.index("UpdateAlias")
    waited = [
        i
        for i, (name, params) in enumerate(calls.sent)
        if name == "GetFunctionConfiguration" and params.get("Qualifier") == "2"
    ]
    assert waited and published < waited[0] < moved, names
    assert "Alias live: function version 1 -> 2\n" in result.output
    (note,) = [line for line in result.output.splitlines() if "SnapStart" in line]
    assert note.startswith("Note: SnapStart: snapshot of version 2 ready in ")
    assert note.endswith(" s (the version was Pending until then; the alias moved after)")
    assert deps["lambda"].get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "2"


def test_publish_model_without_snapstart_says_nothing_of_snapshots(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13").exit_code == 0  # fmt: skip
    result = run(
        "publish-model", str(write_model_build(layers, 1)), "--function", "scorer",
        "--alias", "live",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SnapStart" not in result.output
    # the version is still waited Active before the alias is created
    names = calls.names()
    assert names.index("PublishVersion") < names.index("CreateAlias")


def test_status_shows_snapstart_and_the_snapshot_the_alias_resumes_from(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13", "--snapstart").exit_code == 0  # fmt: skip
    for version in (1, 2):
        published = run(
            "publish-model", str(write_model_build(layers, version)), "--function", "scorer",
            "--alias", "live",
        )  # fmt: skip
        assert published.exit_code == 0, published.output

    text = run("status", "--function", "scorer", "--alias", "live", "--layers-dir", str(layers))
    data = json.loads(run("status", "--function", "scorer", "--alias", "live", "--json").output)

    assert text.exit_code == 0, text.output
    assert (
        "  SnapStart: on for published versions (known from the mlayer:snapstart tag: the "
        "endpoint keeps no SnapStart setting); alias live resumes from the snapshot of version 2\n"
    ) in text.output
    assert "Alias live: version 2 (sentiment v2 (layer version 2), resumes from its snapshot)" in (
        text.output
    )
    assert (data["snapstart"], data["snapstart_from"], data["snapshot_version"]) == (
        True,
        "tag",
        "2",
    )
    assert data["aliases"][0]["snapshots"] == {"2": True}


def test_status_says_off(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13").exit_code == 0  # fmt: skip
    text = run("status", "--function", "scorer")
    assert text.exit_code == 0, text.output
    assert "  SnapStart: off\n" in text.output
    data = json.loads(run("status", "--function", "scorer", "--json").output)
    assert (data["snapstart"], data["snapstart_from"], data["snapshot_version"]) == (
        False,
        None,
        None,
    )


# --------------------------------------------------------------- readers, on AWS's answers


AWS_ON = {"SnapStart": {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}}
AWS_OFF = {"SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"}}


@pytest.mark.parametrize(
    ("configuration", "found", "expected"),
    [
        (AWS_ON, {}, True),
        (AWS_OFF, {}, False),
        (AWS_OFF, {"mlayer:snapstart": "PublishedVersions"}, True),  # moto: the tag
        (AWS_OFF, {"mlayer:snapstart": "None"}, False),
        ({}, {}, False),
    ],
    ids=["configuration on", "off", "tag on", "tag off", "nothing"],
)
def test_applied_reads_the_configuration_then_the_tag(
    configuration: dict[str, Any], found: dict[str, str], expected: bool
) -> None:
    assert snapstart.applied(configuration, found) is expected


def test_a_version_published_before_snapstart_went_on_has_no_snapshot_where_aws_says_so() -> None:
    tag_on = {"mlayer:snapstart": "PublishedVersions"}
    # AWS keeps the setting: the version's own configuration decides
    assert snapstart.version_applied(AWS_ON, AWS_ON, tag_on)
    assert not snapstart.version_applied(AWS_ON, AWS_OFF, tag_on)
    assert snapstart.version_applied(AWS_OFF, AWS_ON, {})  # turned off since: still resumes
    # moto keeps nothing: the function's tag stands for every version
    assert snapstart.version_applied(AWS_OFF, AWS_OFF, tag_on)


def test_applies_only_to_versions_and_aliases(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    lam = deps["lambda"]
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13", "--snapstart", "--alias", "live").exit_code == 0  # fmt: skip

    lam.create_alias(FunctionName="scorer", Name="edge", FunctionVersion="$LATEST")

    answers: dict[str | None, bool] = {
        q: snapstart.applies(lam, "scorer", q) for q in (None, "$LATEST", "1", "live", "edge")
    }

    assert answers == {None: False, "$LATEST": False, "1": True, "live": True, "edge": False}
    assert deploy(function_dir, layers, "--no-snapstart").exit_code == 0
    assert not snapstart.applies(lam, "scorer", "live")
    # a function tagged on but running python3.11 (made outside mlayer): SnapStart cannot apply
    old = create_function(lam, deps["iam"], "old")
    lam.tag_resource(Resource=old["FunctionArn"], Tags={"mlayer:snapstart": "PublishedVersions"})
    lam.publish_version(FunctionName="old")
    assert not snapstart.applies(lam, "old", "1")


def test_a_stored_model_that_needs_more_tmp_is_refused_on_a_snapstart_function(
    deps: dict[str, Any], calls: Calls, function_dir: Path, layers: Path
) -> None:
    """Rolling out (or back to) a model of the S3 model store raises /tmp to what its archive
    needs: over 512 MB, a SnapStart function refuses it before anything changes. (Through
    the rollout's relink of $LATEST: an archive that big is not made in a test.)"""
    from mlayer.lambda_api import DEFAULT_PACE
    from mlayer.rollout import _relink_latest

    lam = deps["lambda"]
    assert deploy(function_dir, layers, "--role", role_arn(deps["iam"]), "--runtime",
                  "python3.13", "--snapstart").exit_code == 0  # fmt: skip
    config = lam.get_function_configuration(FunctionName="scorer")
    locator = f"s3://models/scorer-model/{'a' * 64}.tar#sha256={'a' * 64}&size=300000000"
    calls.sent.clear()

    with pytest.raises(ConfigError) as refused:
        _relink_latest(lam, "scorer", config, locator, "scorer-model", DEFAULT_PACE)

    assert str(refused.value) == (
        "SnapStart is on for scorer: SnapStart does not support ephemeral storage over 512 MB, "
        "and scorer's /tmp would be 640 MB (the model from the S3 model store, "
        f"s3://models/scorer-model/{'a' * 64}.tar, needs 640 MB): publish the model as a "
        "model layer instead of the S3 model store, or " + OFF
    )
    assert "UpdateFunctionConfiguration" not in calls.names()
