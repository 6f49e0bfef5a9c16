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


# --------------------------------------------------------------------------- cited documents

# What is searched for citations: the code, the tests, the docs and the package data.
CITING = ("cli", "function", "tests", "bench", "training", "scripts", "docs")
CITING_SUFFIXES = {".py", ".md", ".json", ".toml", ".sh", ".txt", ".ipynb"}
_MD_CITATION = re.compile(r"(?<![\w./-])((?:\.\.?/)?[\w-][\w./-]*\.md)\b")
_URL = re.compile(r"https?://\S+")
OUTSIDE = "not in this repository"
# Not citations: test_cost asserts the price file names where its prices come from.
NOT_CITATIONS = {("tests/test_cost.py", "REFERENCE.md")}


def cited_documents(text: str) -> list[tuple[str, bool]]:
    """The ``.md`` paths ``text`` cites (URLs aside), each with whether it says it is outside."""
    text = _URL.sub("", text)
    return [
        (m.group(1), OUTSIDE in text[m.end() : m.end() + len(OUTSIDE) + 4])
        for m in _MD_CITATION.finditer(text)
    ]


def _citing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for top in CITING:
        files += sorted(
            p
            for p in (ROOT / top).rglob("*")
            if p.suffix in CITING_SUFFIXES and p.is_file() and "__pycache__" not in p.parts
        )
    return files


def test_cited_documents_finds_paths_and_the_outside_marker() -> None:
    text = (
        'see docs/CONTRACTS.md "Descriptions", README.md and ../shared/REFERENCE.md (not in '
        "this repository); https://github.com/x/y/blob/main/OTHER.md is a link, *.md a glob"
    )
    assert cited_documents(text) == [
        ("docs/CONTRACTS.md", False),
        ("README.md", False),
        ("../shared/REFERENCE.md", True),
    ]


def test_every_cited_document_exists() -> None:
    """A ``.md`` cited by code, tests or docs is in the repository, at that path from the root
    or from the citing file; a document outside it says so: ``(not in this repository)``."""
    missing = []
    for path in _citing_files():
        if path == Path(__file__).resolve():
            continue  # its examples of citations are not citations
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited, outside in cited_documents(text):
            if outside or (str(path.relative_to(ROOT)), cited) in NOT_CITATIONS:
                continue
            if not ((ROOT / cited).is_file() or (path.parent / cited).is_file()):
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "cited documents not in the repository:\n" + "\n".join(missing)
