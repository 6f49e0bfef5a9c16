"""The user's model run in the sandboxed Lambda environment: inspection and smoke test.

Model files are code (unpickling imports and calls what they name), so mlayer executes them
only here: in a fresh :class:`~mlayer.lambda_env.environment.LambdaEnvironment` process
whose ``sys.path`` is Lambda's (the function, the layers, the standard library; nothing of
this machine's site-packages), without AWS credentials, under a memory limit and a timeout.

- :func:`inspect_model` runs the function's ``schema.inspect_handler``: it loads the stages
  and reads what they take and answer (the input schema, labels, whether they give
  probabilities), builds example records, predicts them the plain way (the smoke test's
  reference) and, when asked, measures the files saved with ``compress=3``.
- :func:`smoke_test` runs the real handler on the built layers with those records and
  requires the same predictions, no error and no warning.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from mlayer.errors import BuildError, ConfigError, SmokeTestError

_WARNING_LINE = re.compile(r"\b[A-Z][A-Za-z]*Warning\b: ")
_HANDLER = "schema.inspect_handler"


def memory_for(model_bytes: int) -> int:
    """A memory size (MB) that holds the model a few times over, within Lambda's range."""
    return max(1024, min(10240, 512 + math.ceil(model_bytes * 4 / 1_000_000)))


def inspect_model(
    *,
    function_dir: Path,
    opt_dir: Path,
    python: str,
    directory: Path,
    stages: list[str],
    input_spec: dict[str, Any] | None = None,
    records: list[Any] | None = None,
    compress: bool = False,
    model_bytes: int = 0,
    trace: bool = False,
) -> dict[str, Any]:
    """Load the model in the sandbox and return what ``schema.inspect_handler`` reports.

    ``trace``: with every module of the layers deferred (docs/CONTRACTS.md, "Deferred
    imports"); the report's ``deferred_imports`` lists the modules never run.

    Raises:
        BuildError: the environment could not start, or the model could not be loaded (the
            message carries the model's own error).
    """
    from mlayer.lambda_env.environment import LambdaEnvironment

    _check_function_dir(function_dir)
    event = {
        "directory": str(directory.resolve()),
        "stages": stages,
        "input": input_spec,
        "records": records,
        "compress": compress,
        "trace": trace,
    }
    with LambdaEnvironment(
        task_dir=function_dir,
        opt_dir=opt_dir,
        python=python,
        memory_mb=memory_for(model_bytes),
        timeout_s=900,
        handler=_HANDLER,
        function_name="mlayer-inspect",
    ) as env:
        invocation = env.invoke(event)
    if not invocation.ok:
        raise BuildError(
            "the dependency layer cannot load the model: "
            f"{_error_text(invocation.error)}\n{_tail(invocation.logs)}"
        )
    result = invocation.response
    if not isinstance(result, dict):
        raise BuildError(f"the model inspection returned {result!r}")
    result["max_memory_mb"] = invocation.report.max_memory_used_mb
    return result


def _check_function_dir(function_dir: Path) -> None:
    for name in ("lambda_function.py", "schema.py"):
        if not (function_dir / name).is_file():
            raise ConfigError(
                f"no function at {function_dir} ({name} missing); pass --function-dir"
            )


def same_predictions(got: list[Any], expected: list[Any]) -> str | None:
    """None when the function's labels equal the model's own; else the first difference."""
    if len(got) != len(expected):
        return f"{len(got)} predictions for {len(expected)} expected"
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        if isinstance(a, float) and isinstance(b, float):
            if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                continue
        elif a == b:
            continue
        return f"record {index}: the function answered {a!r}, the model itself {b!r}"
    return None


def smoke_test(
    *,
    function_dir: Path,
    opt_dir: Path,
    python: str,
    records: list[Any],
    labels: list[Any] | None,
    version: int,
    expected: list[Any] | None = None,
    memory_mb: int = 1024,
) -> dict[str, Any]:
    """Score ``records`` with the real function on the built layers; raise on any problem.

    ``expected``: the labels the model itself gives the records (``inspect_model``); the
    function's must be the same.

    Raises:
        SmokeTestError: the function failed to start or score, reported failures, or a
            warning was printed.
    """
    from mlayer.lambda_env.environment import LambdaEnvironment

    _check_function_dir(function_dir)
    with LambdaEnvironment(
        task_dir=function_dir, opt_dir=opt_dir, python=python, memory_mb=memory_mb, timeout_s=900
    ) as env:
        env.start()
        init = env.init
        assert init is not None
        if not init.ok:
            raise SmokeTestError(
                f"the function failed to start on the built layers: "
                f"{_error_text(init.error)}\n{_tail(init.stdout + init.stderr)}"
            )
        invocation = env.invoke({"records": records})
    if not invocation.ok:
        raise SmokeTestError(
            f"the function failed on the sample records: {_error_text(invocation.error)}\n"
            f"{_tail(invocation.logs)}"
        )
    output = init.stdout + init.stderr + invocation.stdout + invocation.stderr
    warnings = [line.strip() for line in output.splitlines() if _WARNING_LINE.search(line)]
    # The function catches the warnings of loading the model and logs them in its JSON
    # "model loaded" line: those count as much as printed ones.
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("warnings"):
            logged = entry["warnings"]
            warnings += [str(w) for w in (logged if isinstance(logged, list) else [logged])]
    if warnings:
        raise SmokeTestError(
            "the function printed warnings while loading or scoring the model: "
            + " | ".join(" ".join(w.split()) for w in warnings[:3])
            + " (an InconsistentVersionWarning means the model and the dependency layer "
            "disagree on scikit-learn: retrain or rebuild the layer)"
        )
    response = invocation.response if isinstance(invocation.response, dict) else {}
    predictions = response.get("predictions") or []
    counts = response.get("counts") or {}
    failures = response.get("batchItemFailures") or []
    problems = []
    if len(predictions) != len(records):
        problems.append(f"{len(predictions)} predictions for {len(records)} records")
    for key in ("failed", "dead_lettered", "skipped"):
        if counts.get(key):
            problems.append(f"{counts[key]} records {key.replace('_', ' ')}")
    if failures:
        problems.append(f"batchItemFailures {failures}")
    for prediction in predictions:
        if labels and prediction.get("label") not in labels:
            problems.append(f"label {prediction.get('label')!r} is not one of {labels}")
            break
        probability = prediction.get("probability")
        if probability is not None and not 0.0 <= float(probability) <= 1.0:
            problems.append(f"probability {probability} outside [0, 1]")
            break
        if str(prediction.get("model_version")) != str(version):
            problems.append(
                f"the function reported model version {prediction.get('model_version')!r}, "
                f"expected {version}"
            )
            break
    if expected is not None and not problems:
        differs = same_predictions([p.get("label") for p in predictions], expected)
        if differs:
            problems.append(f"its predictions differ from the model's own: {differs}")
    if problems:
        raise SmokeTestError(
            "the function ran but its answer is wrong: "
            + "; ".join(problems)
            + f"\n{_tail(invocation.logs)}"
        )
    return {
        "records": len(records),
        "predictions": predictions[:5],
        "init_ms": round(init.duration_ms, 1),
        "duration_ms": round(invocation.report.duration_ms, 1),
        "max_memory_mb": invocation.report.max_memory_used_mb,
        "python": python,
    }


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    return f"{error.get('errorType', '')}: {error.get('errorMessage', '')}".strip(": ")


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
