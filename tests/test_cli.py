"""The command group: version, help, lazy imports, mlayer.toml precedence, error handling."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import botocore
import click
import pytest
from click.testing import CliRunner

from mlayer import __version__
from mlayer.aws import endpoint_problem
from mlayer.cli import MlayerGroup, cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mlayer, version {__version__}"


def test_help_lists_every_command_with_help_text() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name, command in cli.commands.items():
        assert name in result.output
        assert command.help, f"{name} has no help text"


@pytest.mark.parametrize("args", [["--help"], ["--version"]], ids=["help", "version"])
def test_help_does_not_import_heavy_modules(args: list[str]) -> None:
    """`mlayer --help` in a fresh interpreter loads neither boto3 nor scikit-learn."""
    code = (
        "import sys, json\n"
        "from mlayer.cli import cli\n"
        "try:\n"
        f"    cli({args!r}, prog_name='mlayer')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'sklearn', 'numpy', 'scipy', 'joblib') if m in sys.modules]\n"
        "print(json.dumps(heavy), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_console_script_installed() -> None:
    proc = subprocess.run(["mlayer", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in proc.stdout


# A probe command, added to a copy of the group, to check precedence without relying on
# any real command's options.
def _probe_group() -> click.Group:
    @click.command()
    @click.option("--function", envvar="MLAYER_FUNCTION", default="from-default")
    @click.option("--batch-size", type=int, default=1)
    @click.pass_obj
    def probe(obj, function: str, batch_size: int) -> None:
        click.echo(
            json.dumps({"function": function, "batch_size": batch_size, "region": obj.region})
        )

    return MlayerGroup(
        name="mlayer", params=list(cli.params), callback=cli.callback, commands={"probe": probe}
    )


@pytest.mark.parametrize(
    ("toml", "env", "args", "expected"),
    [
        ("", {}, [], {"function": "from-default", "batch_size": 1, "region": None}),
        (
            'function = "from-file"\nregion = "eu-west-1"\n',
            {},
            [],
            {"function": "from-file", "batch_size": 1, "region": "eu-west-1"},
        ),
        (
            'function = "from-file"\n',
            {"MLAYER_FUNCTION": "from-env"},
            [],
            {"function": "from-env", "batch_size": 1, "region": None},
        ),
        (
            'function = "from-file"\n',
            {"MLAYER_FUNCTION": "from-env"},
            ["--function", "from-flag"],
            {"function": "from-flag", "batch_size": 1, "region": None},
        ),
        (
            "[commands.probe]\nbatch-size = 7\n",
            {},
            [],
            {"function": "from-default", "batch_size": 7, "region": None},
        ),
    ],
    ids=["default", "file", "env-beats-file", "flag-beats-env", "per-command-table"],
)
def test_config_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str,
    env: dict[str, str],
    args: list[str],
    expected: dict,
) -> None:
    (tmp_path / "mlayer.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLAYER_FUNCTION", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(_probe_group(), ["probe", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('functoin = "x"\n', "unknown option(s) functoin"),
        ("[commands.nope]\nx = 1\n", "unknown command(s) nope"),
        (
            "[commands.probe]\nnope = 1\n",
            "[commands.probe] in mlayer.toml has unknown option(s) nope",
        ),
        ("function = \n", "is not valid TOML"),
    ],
    ids=["typo", "unknown-command", "unknown-command-option", "bad-toml"],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    (tmp_path / "mlayer.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_probe_group(), ["probe"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "--help"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


# ---------------------------------------------------------------------------- bad inputs
# Everything a user can get wrong about where AWS is gives one Error: line with its fix,
# never a traceback.


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("region = 5\n", 'region must be a string, not an integer (5); write e.g. region = "..."'),
        (
            "endpoint_url = { host = 'x' }\n",
            "endpoint_url must be a string, not a table ({'host': 'x'}); write e.g. "
            'endpoint_url = "..."',
        ),
        (
            'function = ["scorer", "other"]\n',
            "function must be a string, not an array (['scorer', 'other']); write e.g. "
            'function = "..."',
        ),
        (
            "[commands.prune]\ndry-run = 'yes'\n",
            "[commands.prune] dry_run must be a boolean, not a string ('yes'); write e.g. "
            "dry_run = true",
        ),
        (
            "[commands.prune]\nkeep = 2.5\n",
            "[commands.prune] keep must be an integer, not a number (2.5); write e.g. keep = 1",
        ),
    ],
    ids=["region-int", "endpoint-table", "function-list", "flag-string", "int-float"],
)
def test_config_values_of_the_wrong_type_name_key_type_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    config = tmp_path / "mlayer.toml"
    config.write_text(toml)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["status", "--function", "scorer"])
    assert result.exit_code == 2
    assert _last_line(result.output) == (
        f"Error: Invalid value for '--config': {config}: {message}"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("notaurl", "'notaurl' is not an http(s)://host[:port] URL"),
        ("ftp://127.0.0.1:5000", "'ftp://127.0.0.1:5000' is not an http(s)://host[:port] URL"),
        ("http://", "'http://' is not an http(s)://host[:port] URL"),
        ("http://127.0.0.1:99999", "'http://127.0.0.1:99999' is not a URL (Port out of range 0-65535)"),
        ("http://127.0.0.1:5000/api", "'http://127.0.0.1:5000/api' has a path (/api); give only http(s)://host[:port]"),
        ("http://u:p@127.0.0.1:5000", "'http://u:p@127.0.0.1:5000' has more than http(s)://host[:port]"),
    ],
    ids=["no-scheme", "ftp", "no-host", "bad-port", "path", "userinfo"],
)  # fmt: skip
def test_a_bad_endpoint_url_is_refused(url: str, problem: str) -> None:
    result = CliRunner().invoke(cli, ["--endpoint-url", url, "status", "--function", "scorer"])
    assert result.exit_code == 2
    assert _last_line(result.output) == (
        f"Error: Invalid value for '--endpoint-url': {problem}; pass e.g. http://127.0.0.1:5000 "
        "(moto_server), or leave it out for AWS"
    )


def test_a_good_endpoint_url_passes() -> None:
    for url in ("http://127.0.0.1:5000", "https://lambda.eu-west-1.amazonaws.com/", "http://h"):
        assert endpoint_problem(url) is None


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    ],
    ids=["key-id-only", "secret-only"],
)
def test_partial_credentials_are_named(
    monkeypatch: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    monkeypatch.delenv(missing)
    result = CliRunner().invoke(cli, ["status", "--function", "scorer"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: partial AWS credentials in the environment: {present} is set but {missing} is "
        f"not; set both (and AWS_SESSION_TOKEN for temporary ones), or unset {present} and "
        "pass --profile\n"
    )


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["--region", "eu_west_1"],
            {},
            2,
            "Error: Invalid value for '--region': 'eu_west_1' is not an AWS region name (like "
            "eu-west-1 or us-east-1); pass the function's region",
        ),
        (
            ["--region", "eu-nowhere-9"],
            {},
            1,
            "Error: region eu-nowhere-9 (from --region, MLAYER_REGION or mlayer.toml) is not a "
            f"region botocore {botocore.__version__} knows Lambda in; check the spelling, or "
            "upgrade boto3 if the region is new",
        ),
        (
            [],
            {"AWS_REGION": "", "AWS_DEFAULT_REGION": "us east 1"},
            1,
            "Error: 'us east 1' is not an AWS region name (like eu-west-1 or us-east-1), from "
            "AWS_DEFAULT_REGION; set it to the function's region",
        ),
        (
            [],
            {"AWS_REGION": "useast1"},
            1,
            "Error: 'useast1' is not an AWS region name (like eu-west-1 or us-east-1), from "
            "AWS_REGION; set it to the function's region",
        ),
    ],
    ids=["flag-format", "flag-unknown", "aws-default-region-format", "aws-region-format"],
)
def test_an_invalid_region_is_named_with_its_source(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, [*args, "status", "--function", "scorer"])
    assert result.exit_code == code
    assert _last_line(result.output) == message


def test_aws_region_alone_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The message for a missing region recommends AWS_REGION: it must work on its own."""
    import boto3
    from fake_layers import create_function
    from moto import mock_aws

    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        create_function(
            boto3.client("lambda", region_name="eu-west-1"),
            boto3.client("iam", region_name="eu-west-1"),
        )
        result = CliRunner().invoke(cli, ["status", "--function", "scorer", "--json"])

        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["arn"].startswith("arn:aws:lambda:eu-west-1:")

        monkeypatch.delenv("AWS_REGION")
        none = CliRunner().invoke(cli, ["status", "--function", "scorer"])
        assert none.exit_code == 1
        assert none.output == (
            "Error: no AWS region configured; pass --region, set AWS_REGION (or "
            'AWS_DEFAULT_REGION), or add region = "..." to mlayer.toml\n'
        )


@contextmanager
def _silent_endpoint(lifetime: float = 60.0) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers; it stops when
    the block ends, and on its own after ``lifetime`` seconds whatever happens."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        deadline = time.monotonic() + lifetime
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)  # read nothing, answer nothing
        for connection in held:
            connection.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)


def test_an_endpoint_that_never_answers_gives_an_error_within_the_timeout() -> None:
    with _silent_endpoint() as url:
        result = CliRunner().invoke(
            cli, ["--endpoint-url", url, "--timeout", "1", "status", "--function", "scorer"]
        )

    assert result.exit_code == 1
    assert result.output == (
        f"Error: {url}/2015-03-31/functions/scorer/configuration did not answer within 1 s "
        "(3 attempts). Is the endpoint up and reachable? Check --endpoint-url (or "
        "AWS_ENDPOINT_URL) and the network; for a slow call pass --timeout SECONDS\n"
    )


FUNCTION_MISSING = (
    "Error: Missing option '--function' (or MLAYER_FUNCTION, or function = ... in mlayer.toml)."
)


@pytest.mark.parametrize(
    "args",
    [
        ["publish-model"],
        ["promote", "--alias", "live"],
        ["rollback"],
        ["status"],
        ["history"],
        ["prune", "--keep", "3"],
        ["deploy-function"],
        ["trigger", "--stream", "reviews"],
        ["invoke"],
        ["run-local", "--stream", "reviews"],
    ],
    ids=lambda args: args[0],
)
def test_every_command_that_needs_a_function_says_so_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # Given no function in the flags, the environment or mlayer.toml
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLAYER_FUNCTION", raising=False)
    # When a command that needs one runs
    result = CliRunner().invoke(cli, args)
    # Then it stops with the one usage error, before any work
    assert result.exit_code == 2, result.output
    assert FUNCTION_MISSING in result.output
