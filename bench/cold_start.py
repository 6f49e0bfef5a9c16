"""Cold start: naive ``pip install --target`` vs mlayer vs mlayer with deferred imports.

Prints one table, in one run, for python3.11 (requirements.txt pins) and python3.13
(tests/pins/current-py313.txt pins), x86_64, for the text and the numeric sample models
(training/train.py, trained here with the layer's own libraries). Rows:

- naive: ``pip install --target`` run by the target's own interpreter (so its bytecode is
  usable: the best case for naive), the function and the model directory as trained;
- mlayer: ``mlayer build-deps`` (slimmed, sourceless bytecode), the same model directory;
- mlayer + deferred imports: the model layer built with ``build-model --defer-imports``
  (its trace, smoke test and all), served from its ``model/`` as Lambda's /opt/model;
- a local SnapStart restore (python3.12+): one template process initialised once on the
  mlayer layer and the model layer, each environment a fork of it
  (``mlayer.lambda_env.snapshot``); the figure runs from the restore request to the first
  100 predictions (what the on-demand rows count from process start). Without that module
  the row says so.

Each figure: a fresh ``python -I -S -B`` (nothing written back, as in Lambda's read-only
/opt) whose sys.path is the function dir, the layer and the standard library, from
interpreter start to the first 100 predictions through the real handler
(bench/layer_size.py's ``cold_starts``, interleaved round by round); the median of
``--runs`` runs, the best, and the ratio of medians to naive's.

``--importtime`` prints instead, per Python and model, the modules with the most import time
(``-X importtime``, self time, one process each) eager and with the deferred list, and
each total: a deferred module's import costs almost nothing; if it runs later, that is not
counted as import time (the cold start column counts it).

Usage: python bench/cold_start.py [--runs 10] [--quiet-load 0.7 --max-wait 1200]
       python bench/cold_start.py --importtime [--top 15]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "cli"), str(ROOT / "bench")]

from layer_size import (  # noqa: E402
    COLD_START,
    CURRENT,
    REQUIREMENTS,
    cold_starts,
    naive_install,
    print_table,
    unzip,
    wait_for_quiet,
)

from mlayer.deps_layer import DepsBuildOptions, build_deps  # noqa: E402
from mlayer.interpreters import locate_interpreter  # noqa: E402
from mlayer.model_layer import ModelBuildOptions, build_model  # noqa: E402
from mlayer.targets import Target  # noqa: E402

CASES = (("python3.11", REQUIREMENTS), ("python3.13", CURRENT))
MODELS = ("text", "numeric")


@dataclass
class Prepared:
    """One Python's layers and models, ready to start."""

    runtime: str
    python: str
    naive: Path
    mlayer: Path
    trained: dict[str, Path]  # model kind -> training/train.py's directory
    deferred: dict[str, Path]  # model kind -> the --defer-imports model layer's model/
    listed: dict[str, int]  # model kind -> how many modules its manifest defers
    records: dict[str, list[Any] | None]  # None: layer_size's text records
    deps_zip: Path
    model_zips: dict[str, Path]  # model kind -> the model layer (with its deferred list)


def prepare(runtime: str, requirements: Path, work: Path) -> Prepared:
    python = locate_interpreter(runtime.removeprefix("python")).path
    if python is None:
        raise SystemExit(f"no {runtime} interpreter here (PATH, pyenv, uv): the bench runs it")
    target = Target(runtime, "x86_64")
    print(f"{runtime}: naive pip install --target ...", file=sys.stderr)
    naive = naive_install(work / "naive", target, requirements, python)
    print(f"{runtime}: mlayer build-deps ...", file=sys.stderr)
    layers = work / "layers"
    result = build_deps(
        DepsBuildOptions(requirements=requirements, runtime=runtime, arch="x86_64",
                         python=python, layers_dir=layers)
    )  # fmt: skip
    mlayer = unzip(result.zip_path, work / "mlayer")
    trained: dict[str, Path] = {}
    deferred: dict[str, Path] = {}
    model_zips: dict[str, Path] = {}
    listed: dict[str, int] = {}
    records: dict[str, list[Any] | None] = {}
    for kind in MODELS:
        out = work / f"trained-{kind}"
        # trained with the layer's own libraries, so the pickles match them
        subprocess.run(
            [python, "-S", str(ROOT / "training" / "train.py"), "--out", str(out),
             "--example", kind],
            check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(mlayer)},
        )  # fmt: skip
        trained[kind] = out
        meta = json.loads((out / "metadata.json").read_text())
        records[kind] = None if kind == "text" else meta["examples"]
        print(f"{runtime}: build-model --defer-imports ({kind}) ...", file=sys.stderr)
        built = build_model(
            ModelBuildOptions(model_dir=out, layers_dir=layers, python=python,
                              defer_imports=True)
        )  # fmt: skip
        listed[kind] = len(built.manifest.get("deferred_imports") or [])
        model_zips[kind] = built.zip_path
        with zipfile.ZipFile(built.zip_path) as archive:
            archive.extractall(work / f"model-{kind}")
        deferred[kind] = work / f"model-{kind}" / "model"
    return Prepared(
        runtime, python, naive, mlayer, trained, deferred, listed, records, result.zip_path,
        model_zips,
    )  # fmt: skip


def measure(prepared: Prepared, kind: str, runs: int) -> list[list[float]]:
    """naive, mlayer, mlayer + deferred imports: every run's seconds."""
    p = prepared
    return cold_starts(
        [p.naive, p.mlayer, p.mlayer],
        p.trained[kind],
        runs,
        python=p.python,
        model_dirs=[p.trained[kind], p.trained[kind], p.deferred[kind]],
        envs=[{"DEFERRED_IMPORTS": "0"}, {"DEFERRED_IMPORTS": "0"}, {}],
        records=p.records[kind],
    )


def snapstart_restores(prepared: Prepared, kind: str, runs: int, work: Path) -> list[float] | str:
    """Seconds from the restore request to the first 100 predictions, per run, with a local
    SnapStart snapshot (mlayer.lambda_env.snapshot: one template initialised once, each
    environment a fork of it); or why there is no figure."""
    p = prepared
    if p.runtime < "python3.12":
        return "n/a (SnapStart: python3.12+)"
    try:
        from mlayer.lambda_env.snapshot import (  # type: ignore[import-not-found,unused-ignore]
            SnapshotTemplate,
        )
    except ImportError:
        return "not measured (lambda_env/snapshot.py not on main)"
    from mlayer.lambda_env.environment import prepare_opt

    opt = work / f"opt-{p.runtime}-{kind}"
    prepare_opt([p.deps_zip, p.model_zips[kind]], opt)
    given = p.records[kind]
    if given is None:
        texts = ["great product, works well", "broke after a day"] * 50
        records: list[Any] = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    else:
        records = [given[i % len(given)] for i in range(100)]
    seconds = []
    with SnapshotTemplate(
        task_dir=ROOT / "function", opt_dir=opt, python=p.python, memory_mb=1024
    ) as template:
        template.start()
        for _ in range(runs):
            with template.environment() as env:
                started = time.perf_counter()
                done = env.invoke({"records": records})
                seconds.append(time.perf_counter() - started)
                if not done.ok or done.response["counts"]["predicted"] != 100:
                    raise SystemExit(f"restored environment failed: {done.error}")
    return seconds


def importtimes(prepared: Prepared, kind: str) -> dict[str, dict[str, int]]:
    """Per row (mlayer eager, mlayer deferred): module -> self import time in us."""
    p = prepared
    out = {}
    for label, model_dir, env in (
        ("eager", p.trained[kind], {"DEFERRED_IMPORTS": "0"}),
        ("deferred", p.deferred[kind], {}),
    ):
        extra = [] if p.records[kind] is None else [json.dumps(p.records[kind])]
        proc = subprocess.run(
            [p.python, "-X", "importtime", "-I", "-S", "-B", "-c", COLD_START, "0",
             str(ROOT / "function"), str(p.mlayer), str(p.mlayer), *extra],
            capture_output=True, text=True, cwd=ROOT / "function",
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp",
                 "MODEL_DIR": str(model_dir), **env},
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{p.runtime} {kind} {label} failed:\n{proc.stderr[-2000:]}")
        selfs: dict[str, int] = defaultdict(int)
        for line in proc.stderr.splitlines():
            found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(.*)$", line)
            if found:
                selfs[found.group(3).strip()] += int(found.group(1))
        out[label] = dict(selfs)
    return out


def importtime_table(prepared: list[Prepared], top: int) -> None:
    for p in prepared:
        for kind in MODELS:
            times = importtimes(p, kind)
            eager, deferred = times["eager"], times["deferred"]
            print(f"\n{p.runtime}, {kind} model: import self time, ms (-X importtime, one "
                  f"process each); total {sum(eager.values()) / 1000:.0f} eager, "
                  f"{sum(deferred.values()) / 1000:.0f} deferred "
                  f"({p.listed[kind]} modules listed)")  # fmt: skip
            # top packages (first two name parts), then top modules
            packages: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for i, selfs in enumerate((eager, deferred)):
                for name, us in selfs.items():
                    packages[".".join(name.split(".")[:2])][i] += us
            lines = [("package (2 levels)", "eager ms", "deferred ms")]
            for name, (e, d) in sorted(packages.items(), key=lambda kv: -kv[1][0])[:top]:
                lines.append((name, f"{e / 1000:.1f}", f"{d / 1000:.1f}"))
            print_table(lines)
            lines = [("module", "eager ms", "deferred ms")]
            for name, us in sorted(eager.items(), key=lambda kv: -kv[1])[:top]:
                lines.append((name, f"{us / 1000:.1f}", f"{deferred.get(name, 0) / 1000:.1f}"))
            print_table(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="cold starts per row")
    parser.add_argument("--quiet-load", type=float, help="wait for a 1-min load below this")
    parser.add_argument("--max-wait", type=float, default=1200, help="seconds, at most")
    parser.add_argument("--importtime", action="store_true", help="the import breakdown")
    parser.add_argument("--top", type=int, default=15, help="rows of the import breakdown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlayer-bench-cold-") as tmp:
        prepared = [
            prepare(runtime, requirements, Path(tmp) / runtime) for runtime, requirements in CASES
        ]
        if args.importtime:
            importtime_table(prepared, args.top)
            return
        if args.quiet_load is not None:
            wait_for_quiet(args.quiet_load, args.max_wait)
        load_before = os.getloadavg()[0]
        lines = [("python", "pins", "model", "row", "median s", "best s", "vs naive")]
        for p in prepared:
            pins = "requirements.txt" if p.runtime == "python3.11" else CURRENT.name
            for kind in MODELS:
                print(f"{p.runtime} {kind}: {args.runs} rounds ...", file=sys.stderr)
                runs = measure(p, kind, args.runs)
                naive = statistics.median(runs[0])
                labels = ("naive pip --target", "mlayer",
                          f"mlayer + deferred imports ({p.listed[kind]} listed)")  # fmt: skip
                for label, seconds in zip(labels, runs, strict=True):
                    median = statistics.median(seconds)
                    lines.append((p.runtime, pins, kind, label, f"{median:.3f}",
                                  f"{min(seconds):.3f}", f"{median / naive:.2f}"))  # fmt: skip
                restored = snapstart_restores(p, kind, args.runs, Path(tmp))
                if isinstance(restored, str):
                    lines.append((p.runtime, pins, kind, "local SnapStart restore", "-", "-",
                                  restored))  # fmt: skip
                else:
                    median = statistics.median(restored)
                    lines.append((p.runtime, pins, kind, "local SnapStart restore",
                                  f"{median:.3f}", f"{min(restored):.3f}",
                                  f"{median / naive:.2f}"))  # fmt: skip
    print(f"Cold start: interpreter start to 100 predictions through the real handler, "
          f"median (best) of {args.runs} fresh `python -I -S -B` processes, interleaved; "
          f"1-min load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print_table(lines)


if __name__ == "__main__":
    main()
