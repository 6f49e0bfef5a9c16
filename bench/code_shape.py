"""The shape of the CLI's code: how big its largest module and longest function are.

Prints one table: for the whole ``cli/mlayer`` tree, and for each group of files given with
``--files`` (paths relative to the repository, or modules that no longer exist, which count
as nothing), the largest module's lines, the longest function's lines (named), and how many
functions run over 80 lines. Functions are every ``def`` (nested ones and methods too),
measured from the ``def`` line (decorators excluded) to their last line.

Usage: python bench/code_shape.py [--root cli/mlayer] [--files cli/mlayer/deploy.py ...]
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONG = 80


@dataclass
class Shape:
    """The figures of one group of files."""

    label: str
    files: int = 0
    lines: int = 0
    largest: tuple[int, str] = (0, "-")
    longest: tuple[int, str] = (0, "-")
    over: int = 0

    def add(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        count = len(text.splitlines())
        rel = path.relative_to(ROOT).as_posix()
        self.files += 1
        self.lines += count
        self.largest = max(self.largest, (count, rel))
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                self.longest = max(self.longest, (length, f"{path.stem}.{node.name}"))
                self.over += length > LONG


def measure(label: str, paths: list[Path]) -> Shape:
    shape = Shape(label)
    for path in sorted(paths):
        if path.is_file():
            shape.add(path)
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="cli/mlayer")
    parser.add_argument("--files", nargs="*", default=[], help="a group of files, measured apart")
    args = parser.parse_args()
    shapes = [measure(args.root, list((ROOT / args.root).rglob("*.py")))]
    if args.files:
        shapes.append(measure("files touched", [ROOT / f for f in args.files]))
    header = ("scope", "files", "lines", "largest module", "longest function", f">{LONG} lines")
    rows = [
        (
            s.label,
            str(s.files),
            f"{s.lines:,}",
            f"{s.largest[1]} ({s.largest[0]:,})",
            f"{s.longest[1]} ({s.longest[0]})",
            str(s.over),
        )
        for s in shapes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
