"""Slimming a layer: rules that remove what run time never needs, and strip.

Each rule reports the files and bytes it removed; what run-time code imports from a
``tests`` folder stays (numpy 2's ``numpy.testing`` imports ``numpy._core.tests._natype``),
and ``*.dist-info`` and the vendored ``*.libs`` are never touched. Strip touches extension
modules only, with a strip for the target CPU (stripping the vendored libraries breaks
numpy, measured: "ELF load command ... not page-aligned").
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlayer.archive import iter_files
from mlayer.targets import Target, host_machine

# ELF e_machine values: how a .so says which CPU it is for.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183}


@dataclass(frozen=True)
class SlimRule:
    """A removal rule: ``match`` gets a path relative to python/ (posix) and says remove."""

    name: str
    why: str
    match: Callable[[str], bool]
    guarded: bool = True  # built-in rules never touch dist-info, vendored libs, --keep paths


_SOURCE_SUFFIXES = (
    ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".pyx", ".pxd", ".pxi", ".tp",
    ".f", ".f90", ".for",
)  # fmt: skip


def _parts(rel: str) -> list[str]:
    return rel.split("/")


def in_test_dir(rel: str) -> bool:
    parts = _parts(rel)
    return any(p in ("tests", "test") for p in parts[:-1]) or parts[-1] == "conftest.py"


BUILTIN_RULES: tuple[SlimRule, ...] = (
    SlimRule(
        "stale bytecode",
        "__pycache__ and .pyc from another interpreter; the target's are written later",
        lambda rel: "__pycache__" in _parts(rel) or rel.endswith((".pyc", ".pyo")),
    ),
    SlimRule(
        "tests and test data",
        "tests/ and test/ folders and conftest.py (what run-time code imports stays)",
        in_test_dir,
    ),
    SlimRule(
        "C/C++/Cython/Fortran sources and headers",
        "only needed to compile extensions",
        lambda rel: rel.endswith(_SOURCE_SUFFIXES),
    ),
    SlimRule(
        "type stubs", ".pyi files, read by type checkers only", lambda rel: rel.endswith(".pyi")
    ),
    SlimRule(
        "static libraries",
        ".a archives, only needed to link extensions",
        lambda rel: rel.endswith(".a"),
    ),
    SlimRule(
        "console scripts",
        "bin/ (launchers pointing at the build machine's interpreter)",
        lambda rel: rel.startswith("bin/"),
    ),
)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    """A path matches a glob when it, or one of the folders it is in, matches."""
    parts = _parts(rel)
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def _protected(rel: str) -> bool:
    first = _parts(rel)[0]
    # dist-info: importlib.metadata (scikit-learn, joblib) reads METADATA; *.libs: vendored
    # shared libraries the extension modules load by exact name.
    return first.endswith(".dist-info") or first.endswith(".libs")


def _module_files(name: str) -> list[str]:
    base = name.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"]


def _imports_of(path: Path, rel: str) -> set[str]:
    """Absolute module names a source file imports (relative imports resolved)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=rel)
    except (SyntaxError, ValueError):
        return set()
    package_parts = _parts(rel)[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package_parts):
                    continue
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def slim(root: Path, keep: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Apply the slimming rules to ``root`` (the layer's python/), returning the report.

    The report has one entry per rule (files, bytes), the test modules kept because run-time
    code imports them, and what ``--keep`` saved.
    """
    keep, exclude = tuple(keep), tuple(exclude)
    rules = list(BUILTIN_RULES)
    if exclude:
        rules.append(
            SlimRule(
                "--exclude",
                "your patterns: " + ", ".join(exclude),
                lambda rel: _matches(rel, exclude),
                guarded=False,
            )
        )
    files = {path.relative_to(root).as_posix(): path for path in iter_files(root)}
    removal: dict[str, str] = {}
    kept_by_keep: list[str] = []
    for rel in files:
        for rule in rules:
            if rule.match(rel):
                if rule.guarded and (_protected(rel) or _matches(rel, keep)):
                    if _matches(rel, keep):
                        kept_by_keep.append(rel)
                    continue
                removal[rel] = rule.name
                break
    kept_for_imports = _keep_imported(files, removal)
    per_rule: dict[str, list[int]] = {rule.name: [0, 0] for rule in rules}
    for rel, rule_name in removal.items():
        size = files[rel].stat().st_size
        per_rule[rule_name][0] += 1
        per_rule[rule_name][1] += size
        files[rel].unlink()
    _prune_empty_dirs(root)
    records_before = records_bytes(root)
    _drop_removed_from_records(root)
    return {
        "rules": [
            {
                "rule": rule.name,
                "why": rule.why,
                "files": per_rule[rule.name][0],
                "bytes": per_rule[rule.name][1],
            }
            for rule in rules
        ],
        "kept_for_imports": sorted(kept_for_imports),
        "kept_by_keep": len(kept_by_keep),
        "removed_files": sum(v[0] for v in per_rule.values()),
        "removed_bytes": sum(v[1] for v in per_rule.values()),
        # the RECORD rows of removed files, dropped
        "records_trimmed_bytes": records_before - records_bytes(root),
    }


def records_bytes(root: Path) -> int:
    return sum(record.stat().st_size for record in root.glob("*.dist-info/RECORD"))


def _keep_imported(files: dict[str, Path], removal: dict[str, str]) -> list[str]:
    """Take back from ``removal`` every module that kept code imports (to a fixed point)."""
    restored: list[str] = []
    queue = [rel for rel in files if rel.endswith(".py") and rel not in removal]
    seen: set[str] = set()
    while queue:
        rel = queue.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for name in _imports_of(files[rel], rel):
            parts = name.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            for i in range(1, len(parts) + 1):
                for candidate in _module_files(".".join(parts[:i])):
                    if candidate in removal and removal[candidate] != "--exclude":
                        del removal[candidate]
                        restored.append(candidate)
                        queue.append(candidate)
    return restored


def _drop_removed_from_records(root: Path) -> None:
    """Keep each RECORD true to the layer: drop the rows of files no longer in it.

    Besides honesty (importlib.metadata.files()), this matters for determinism: the rows
    of removed console scripts hash launchers that name the build machine's interpreter.
    """
    for record in sorted(root.glob("*.dist-info/RECORD")):
        text = record.read_text(encoding="utf-8", errors="surrogateescape")
        kept = []
        for line in text.splitlines(keepends=True):
            rel = line.split(",", 1)[0].strip('"')
            target = os.path.normpath(root / rel)
            inside = target.startswith(str(root) + os.sep)
            if rel and (not inside or not os.path.exists(target)):
                continue
            kept.append(line)
        record.write_text("".join(kept), encoding="utf-8", errors="surrogateescape")


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda t: -len(t[0])):
        path = Path(dirpath)
        if path != root and not any(path.iterdir()):
            path.rmdir()


# --------------------------------------------------------------------------- strip


def elf_machine(path: Path) -> int | None:
    """The ELF e_machine of a file (62 x86-64, 183 AArch64), None if not ELF."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    if header[5] == 1:
        return int.from_bytes(header[18:20], "little")
    return int.from_bytes(header[18:20], "big")


def extension_modules(root: Path) -> list[Path]:
    """Python extension modules (``*.cpython-*.so``, ``*.abi3.so``), vendored libs excluded."""
    found = []
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        if _protected(rel):
            continue
        if re.search(r"\.(cpython-[^/]+|abi3)\.so$", rel):
            found.append(path)
    return found


def find_strip(machine: str) -> str | None:
    """A strip that understands ``machine`` binaries: the host's own when the CPU matches,
    else a cross binutils (``aarch64-linux-gnu-strip``) or llvm-strip."""
    candidates = [f"{machine}-linux-gnu-strip"]
    if host_machine() == machine:
        candidates.insert(0, "strip")
    candidates.append("llvm-strip")
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def strip_extensions(root: Path, target: Target) -> dict[str, Any]:
    """``strip --strip-unneeded`` every extension module built for the target CPU."""
    modules = extension_modules(root)
    wrong = [
        p.relative_to(root).as_posix()
        for p in modules
        if elf_machine(p) not in (None, ELF_MACHINES[target.machine])
    ]
    report: dict[str, Any] = {
        "tool": None, "files": 0, "bytes_saved": 0, "skipped": None, "failed": [],
        "wrong_arch": wrong,
    }  # fmt: skip
    tool = find_strip(target.machine)
    if tool is None:
        package = "binutils-aarch64-linux-gnu" if target.machine == "aarch64" else "binutils"
        report["skipped"] = (
            f"no strip for {target.machine} binaries on this {host_machine()} machine "
            f"(install {package}, or llvm-strip); extension modules left unstripped "
            "(about 13 MB larger unzipped)"
        )
        return report
    report["tool"] = tool
    candidates = [p for p in modules if elf_machine(p) == ELF_MACHINES[target.machine]]
    before = sum(p.stat().st_size for p in candidates)
    for start in range(0, len(candidates), 64):
        batch = candidates[start : start + 64]
        proc = subprocess.run(
            [tool, "--strip-unneeded", *map(str, batch)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            # strip rewrites through a temporary file: a failed file keeps its bytes.
            for path in batch:
                one = subprocess.run(
                    [tool, "--strip-unneeded", str(path)], capture_output=True, text=True
                )
                if one.returncode != 0:
                    report["failed"].append(path.relative_to(root).as_posix())
    report["files"] = len(candidates) - len(report["failed"])
    report["bytes_saved"] = before - sum(p.stat().st_size for p in candidates)
    return report
