"""Generate training/notebooks/train_sample_models.ipynb from training/train.py.

train.py is the one source: its ``# %%`` sections become the notebook's code cells, verbatim
and in order (the section title becomes a markdown heading); sections titled
``(script only)`` (the command line) are left out, and the notebook ends with a parameters
cell and a cell that trains both samples. tests/test_training.py checks that the committed
notebook is exactly what this script generates, and executes it.

Usage: ``python training/make_notebook.py`` (after editing train.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

TRAINING = Path(__file__).resolve().parent
SOURCE = TRAINING / "train.py"
NOTEBOOK = TRAINING / "notebooks" / "train_sample_models.ipynb"
MARKER = "# %%"
SCRIPT_ONLY = "(script only)"

INTRO = """\
# mlayer sample models

Trains the two sample models on generated data (nothing is downloaded) and writes model
directories that the Lambda function's `MODEL_DIR` can point at:

- **sentiment** (text): `PreProc1_sentiment.joblib` (CountVectorizer) ->
  `PreProc2_sentiment.joblib` (TfidfTransformer) -> `sentiment.joblib` (LogisticRegression);
- **income** (numeric): `income.joblib`, one Pipeline on named census-like features.

Each directory also holds `metadata.json` (stage order, input spec, labels, library versions,
example records).

This notebook is generated from `training/train.py` by `training/make_notebook.py`: edit the
script, then regenerate. The script does the same from the command line:
`python training/train.py --out DIR [--example text|numeric] [--name NAME] [--seed N]`."""

PARAMETERS = """\
OUT_DIR = Path("models")
SEED = 0"""

RUN = """\
for model_dir in (
    train_text(OUT_DIR / "sentiment", seed=SEED),
    train_numeric(OUT_DIR / "income", seed=SEED),
):
    print(summary(model_dir))"""


def sections(source: str) -> list[tuple[str, str]]:
    """Split train.py into (title, code) at its ``# %%`` lines; the first title is ""."""
    found: list[tuple[str, list[str]]] = [("", [])]
    for line in source.splitlines():
        if line.startswith(MARKER):
            found.append((line.removeprefix(MARKER).strip(), []))
        else:
            found[-1][1].append(line)
    return [(title, "\n".join(lines).strip("\n")) for title, lines in found]


def notebook_sections(source: str) -> list[tuple[str, str]]:
    """The sections the notebook holds: all but the script-only ones."""
    return [(title, code) for title, code in sections(source) if SCRIPT_ONLY not in title]


def build(source: str) -> Any:
    """The notebook for ``source`` (train.py's text), with stable cell ids."""
    cells = [new_markdown_cell(INTRO)]
    for title, code in notebook_sections(source):
        if title:
            cells.append(new_markdown_cell(f"## {title}"))
        cells.append(new_code_cell(code))
    cells.append(new_markdown_cell("## Train both samples\n\nChange the parameters, then run."))
    cells.append(new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}))
    cells.append(new_code_cell(RUN))
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"
    return new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


def render(source: str) -> str:
    """The notebook file's text for ``source``."""
    return nbformat.writes(build(source)) + "\n"


def main() -> int:
    NOTEBOOK.parent.mkdir(parents=True, exist_ok=True)
    NOTEBOOK.write_text(render(SOURCE.read_text()))
    print(f"wrote {NOTEBOOK}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
