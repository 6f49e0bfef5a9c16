"""Docs are tested: the README's set-up commands, its commands table, and every --help."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlayer.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _first_code_block() -> list[str]:
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S)
    assert block, "the README has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_setup_commands() -> None:
    """Exactly two commands: the demo (the main job) first, then the tests."""
    assert README.index("```") < README.index("\n## "), "the set-up block must come first"
    demo, tests = _first_code_block()
    assert demo.endswith("mlayer demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_and_nothing_else() -> None:
    _, tests = _first_code_block()
    script = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    commands = [line for line in script if not line.startswith(("set ", "cd "))]
    assert commands == [tests]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_in_the_readme_table(name: str) -> None:
    assert re.search(rf"^\| `mlayer {re.escape(name)}[ `]", README, flags=re.M), (
        f"`mlayer {name}` has no row in the README's commands table"
    )


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`mlayer {name} --help` has no Example block"
    # the example lines name the command itself
    assert f"mlayer {name}" in result.output
