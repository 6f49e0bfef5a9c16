"""The command group: version, help, lazy imports, mlayer.toml precedence, error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlayer import __version__
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
