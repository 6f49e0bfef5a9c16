"""A local SnapStart restore against an on-demand cold start, same function, same layers.

    python bench/snapstart_restore.py                       # python3.13, 5 of each
    python bench/snapstart_restore.py --runtime python3.12 --runs 10

Builds (with mlayer's build cache) the deps layer of requirements.txt for the runtime and
the sample text model's layer, then, with the real function on those layers:

- on demand: ``--runs`` fresh environments (:class:`LambdaEnvironment`), each a process
  start, the imports and the model load (Init Duration), then one invocation;
- SnapStart: one template initialised once (:class:`SnapshotTemplate`, its Init Duration
  includes the before-snapshot hooks: none here), then ``--runs`` environments restored
  from it (Restore Duration: the restore request to the fork's first ``next``; Billed
  Restore Duration: the fork's runtime load and after-restore hooks), each invoked once.

Prints medians of init / restore and of the first invocation's Duration (a restored
environment's first invocation pays for what the snapshot did not warm), and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cli"))

from mlayer.interpreters import locate_interpreter  # noqa: E402
from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt  # noqa: E402
from mlayer.lambda_env.snapshot import SnapshotTemplate  # noqa: E402

EVENT = {"records": ["great product, works well", "broke after a day", "does what it says"]}


def _text_model(work: Path) -> Path:
    model = work / "text-model"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "train.py"),
            "--out",
            str(model),
            "--example",
            "text",
        ],
        check=True,
        capture_output=True,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", default="python3.13")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from mlayer.deps_layer import DepsBuildOptions, build_deps
    from mlayer.model_layer import ModelBuildOptions, build_model

    version = args.runtime.removeprefix("python")
    python = locate_interpreter(version).path
    if python is None:
        sys.exit(f"no Python {version} found (PATH, pyenv, uv)")
    with tempfile.TemporaryDirectory(prefix="mlayer-snapbench-") as tmp:
        work = Path(tmp)
        layers = work / "layers"
        deps = build_deps(
            DepsBuildOptions(
                requirements=ROOT / "requirements.txt",
                runtime=args.runtime,
                python=python,
                layers_dir=layers,
                function_dir=ROOT / "function",
            )
        )
        model = build_model(
            ModelBuildOptions(
                model_dir=_text_model(work),
                version=1,
                layers_dir=layers,
                function_dir=ROOT / "function",
            )
        )
        opt = work / "opt"
        prepare_opt([deps.zip_path, model.zip_path], opt)
        settings: dict[str, Any] = dict(
            task_dir=ROOT / "function", opt_dir=opt, python=python, memory_mb=1024
        )
        inits, on_demand_first = [], []
        for _ in range(args.runs):
            with LambdaEnvironment(**settings) as env:
                done = env.invoke(EVENT)
                assert done.ok and done.report.init_duration_ms is not None, done.error
                inits.append(done.report.init_duration_ms)
                on_demand_first.append(done.report.duration_ms)
        restores, billed, restored_first = [], [], []
        with SnapshotTemplate(**settings) as template:
            template.start()
            assert template.init is not None and template.init.ok, template.init
            template_init = template.init.duration_ms
            for _ in range(args.runs):
                with template.environment() as env:
                    done = env.invoke(EVENT)
                    assert done.ok and done.report.restore_duration_ms is not None, done.error
                    restores.append(done.report.restore_duration_ms)
                    billed.append(done.report.billed_restore_duration_ms or 0)
                    restored_first.append(done.report.duration_ms)
    med = statistics.median
    print(f"{args.runtime}, text model, 1024 MB, {args.runs} of each (medians)")
    print(f"{'':32}{'new environment ms':>20}{'first invocation ms':>22}")
    print(f"{'on demand: Init Duration':32}{med(inits):>20.1f}{med(on_demand_first):>22.2f}")
    print(f"{'SnapStart: Restore Duration':32}{med(restores):>20.1f}{med(restored_first):>22.2f}")
    print(f"{'  of which Billed Restore':32}{med(billed):>20.0f}")
    print(f"{'  (template Init Duration, once)':32}{template_init:>20.1f}")
    print(f"restore / init: {med(restores) / med(inits):.3f}")


if __name__ == "__main__":
    main()
