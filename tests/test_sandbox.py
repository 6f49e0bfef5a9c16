"""The local execution environment behaves like Lambda's: isolation, warm reuse, limits, logs.

The function here is a small stand-in written per test (the real function on real layers
runs in tests/test_local_e2e.py); the runtime is the real awslambdaric behind the local
Runtime API.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlayer.errors import MlayerError
from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt
from mlayer.reports import parse_reports

HANDLER = """
import json, os, sys, time, warnings
import helper  # from opt/python: layers are importable at init
INIT_TIME = time.time()
print("init done")

def lambda_handler(event, context):
    action = event.get("action")
    print("handling", action)
    if action == "describe":
        return {
            "sys_path": sys.path,
            "env": dict(os.environ),
            "remaining_ms": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "memory": context.memory_limit_in_mb,
            "init_time": INIT_TIME,
            "helper": helper.WHERE,
        }
    if action == "warn":
        warnings.warn("model saved with another version", UserWarning)
        return "warned"
    if action == "raise":
        raise ValueError("bad input")
    if action == "sleep":
        time.sleep(event["seconds"])
        return "slept"
    if action == "eat":
        hog = bytearray(event["mb"] * 1024 * 1024)
        return len(hog)
    if action == "exit":
        os._exit(3)
    return event
"""


@pytest.fixture
def function_dirs(tmp_path: Path) -> tuple[Path, Path]:
    task = tmp_path / "task"
    task.mkdir()
    (task / "lambda_function.py").write_text(textwrap.dedent(HANDLER))
    opt = tmp_path / "opt"
    (opt / "python").mkdir(parents=True)
    (opt / "python" / "helper.py").write_text("WHERE = 'opt/python'\n")
    return task, opt


@pytest.fixture
def env(function_dirs: tuple[Path, Path], tmp_path: Path) -> Iterator[LambdaEnvironment]:
    task, opt = function_dirs
    with LambdaEnvironment(
        task_dir=task,
        opt_dir=opt,
        env={"OUTPUT_TABLE": "predictions"},
        memory_mb=256,
        timeout_s=3,
        function_name="scorer",
        log_path=tmp_path / "lambda.log",
    ) as environment:
        yield environment


def test_isolated_sys_path_and_lambda_environment(env: LambdaEnvironment) -> None:
    # Given a fresh environment, when describing itself
    result = env.invoke({"action": "describe"})
    # then sys.path is Lambda's order and nothing of this interpreter's site-packages
    assert result.ok, result.error
    path = result.response["sys_path"]
    assert path[:3] == [
        str(env.task_dir),
        str(
            env.opt_dir
            / "python/lib"
            / f"python{sys.version_info[0]}.{sys.version_info[1]}"
            / "site-packages"
        ),
        str(env.opt_dir / "python"),
    ]
    assert "runtime-py" in path[3]
    assert not any("site-packages" in p for p in path[4:]), path
    assert result.response["helper"] == "opt/python"
    variables = result.response["env"]
    assert variables["MODEL_DIR"] == str(env.opt_dir / "model")
    assert variables["OUTPUT_TABLE"] == "predictions"
    assert variables["AWS_LAMBDA_FUNCTION_NAME"] == "scorer"
    assert variables["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert variables["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/scorer"
    assert variables["LAMBDA_TASK_ROOT"] == str(env.task_dir)
    # and the context object is the real runtime's
    assert 0 < result.response["remaining_ms"] <= 3000
    assert result.response["request_id"] == result.request_id
    assert result.response["function_name"] == "scorer"
    assert result.response["memory"] == "256"


def test_warm_reuse_and_init_timed_apart(env: LambdaEnvironment, tmp_path: Path) -> None:
    first = env.invoke({"action": "describe"})
    second = env.invoke({"action": "describe"})
    # One process served both: init ran once, the second is warm.
    assert first.response["init_time"] == second.response["init_time"]
    assert first.cold_start and not second.cold_start
    assert first.report.init_duration_ms is not None and first.report.init_duration_ms > 0
    assert second.report.init_duration_ms is None
    assert env.init is not None and env.init.stdout == "init done\n"
    assert first.stdout == "handling describe\n"
    # REPORT lines land in the log, parseable by the cost estimator.
    reports = list(parse_reports((tmp_path / "lambda.log").read_text().splitlines()))
    assert [r.request_id for r in reports] == [first.request_id, second.request_id]
    assert reports[0] == first.report
    assert reports[0].memory_size_mb == 256 and 0 < reports[0].max_memory_used_mb <= 256
    log = (tmp_path / "lambda.log").read_text()
    assert f"START RequestId: {first.request_id} Version: $LATEST" in log
    assert f"END RequestId: {first.request_id}" in log


def test_warnings_are_captured_per_invocation(env: LambdaEnvironment) -> None:
    quiet = env.invoke({"action": "echo"})
    noisy = env.invoke({"action": "warn"})
    assert quiet.ok and quiet.stderr == ""
    assert noisy.ok and "UserWarning: model saved with another version" in noisy.stderr


def test_pythonwarnings_error_turns_a_warning_into_a_function_error(
    function_dirs: tuple[Path, Path],
) -> None:
    task, opt = function_dirs
    with LambdaEnvironment(task_dir=task, opt_dir=opt, env={"PYTHONWARNINGS": "error"}) as env:
        result = env.invoke({"action": "warn"})
    assert result.error is not None
    assert result.error["errorType"] == "UserWarning"
    assert "model saved with another version" in result.error["errorMessage"]


def test_function_error_keeps_the_environment_warm(env: LambdaEnvironment) -> None:
    failed = env.invoke({"action": "raise"})
    assert failed.error is not None
    assert failed.error["errorType"] == "ValueError"
    assert failed.error["errorMessage"] == "bad input"
    assert any("raise ValueError" in line for line in failed.error["stackTrace"])
    assert "[ERROR] ValueError: bad input" in failed.stdout
    after = env.invoke({"action": "echo", "n": 1})
    assert after.response == {"action": "echo", "n": 1}
    assert not after.cold_start


def test_timeout_kills_and_the_next_invocation_is_cold(env: LambdaEnvironment) -> None:
    env.invoke({"action": "echo"})
    timed_out = env.invoke({"action": "sleep", "seconds": 30})
    assert timed_out.error == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {timed_out.request_id} Error: Task timed out after 3.00 seconds",
    }
    assert 3000 <= timed_out.report.duration_ms < 6000
    assert f"{timed_out.request_id} Task timed out after 3.00 seconds" in timed_out.logs
    recovered = env.invoke({"action": "echo"})
    assert recovered.ok and recovered.cold_start


def test_memory_limit_kills_like_lambda(env: LambdaEnvironment) -> None:
    result = env.invoke({"action": "eat", "mb": 400})
    assert result.error is not None
    assert result.error["errorType"] == "Runtime.OutOfMemory"
    assert "Runtime exited with error: signal: killed" in result.error["errorMessage"]
    assert result.report.max_memory_used_mb == 256
    assert env.invoke({"action": "eat", "mb": 50}).ok  # fits: a fresh environment


def test_runtime_exit_is_reported(env: LambdaEnvironment) -> None:
    result = env.invoke({"action": "exit"})
    assert result.error is not None
    assert result.error["errorType"] == "Runtime.ExitError"
    assert result.error["errorMessage"].endswith("Runtime exited with error: exit status 3")
    assert env.invoke({"action": "echo"}).cold_start


def test_import_error_is_an_init_error(function_dirs: tuple[Path, Path]) -> None:
    task, opt = function_dirs
    (task / "lambda_function.py").write_text("import sklearn_not_here\n")
    with LambdaEnvironment(task_dir=task, opt_dir=opt) as env:
        env.start()
        assert env.init is not None and not env.init.ok
        assert env.init.error is not None
        assert env.init.error["errorType"] == "Runtime.ImportModuleError"
        assert "No module named 'sklearn_not_here'" in env.init.error["errorMessage"]
        # The invocation answers with the init error, as Lambda does.
        result = env.invoke({})
        assert result.error is not None
        assert result.error["errorType"] == "Runtime.ImportModuleError"


def test_site_packages_of_this_interpreter_are_not_visible(
    function_dirs: tuple[Path, Path],
) -> None:
    task, opt = function_dirs
    (task / "lambda_function.py").write_text("import click\n")  # installed here, not in opt
    with LambdaEnvironment(task_dir=task, opt_dir=opt) as env:
        env.start()
        assert env.init is not None and env.init.error is not None
        assert "No module named 'click'" in env.init.error["errorMessage"]


def test_bad_arguments(function_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    task, opt = function_dirs
    with pytest.raises(MlayerError, match="does not exist"):
        LambdaEnvironment(task_dir=tmp_path / "nope", opt_dir=opt)
    with pytest.raises(MlayerError, match="outside Lambda's 128-10240 MB"):
        LambdaEnvironment(task_dir=task, opt_dir=opt, memory_mb=64)
    with (
        LambdaEnvironment(task_dir=task, opt_dir=opt) as env,
        pytest.raises(MlayerError, match="not JSON-serializable"),
    ):
        env.invoke({"x": object()})


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_prepare_opt_later_layers_override(tmp_path: Path) -> None:
    deps = _zip(tmp_path / "deps.zip", {"python/a.py": "A = 'deps'", "python/b.py": "B = 1"})
    model = _zip(
        tmp_path / "model.zip", {"model/metadata.json": "{}", "python/a.py": "A = 'model'"}
    )
    opt = tmp_path / "opt"
    prepare_opt([deps, model], opt)
    assert (opt / "python/a.py").read_text() == "A = 'model'"
    assert (opt / "python/b.py").exists()
    assert json.loads((opt / "model/metadata.json").read_text()) == {}
    # Preparing again with fewer layers leaves nothing of the earlier set behind.
    prepare_opt([model], opt)
    assert not (opt / "python/b.py").exists()


def test_prepare_opt_refuses_escapes_and_foreign_dirs(tmp_path: Path) -> None:
    evil = _zip(tmp_path / "evil.zip", {"../outside.py": "x"})
    with pytest.raises(MlayerError, match="would extract outside /opt"):
        prepare_opt([evil], tmp_path / "opt")
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MlayerError, match="not empty and was not made by mlayer"):
        prepare_opt([], foreign)
    with pytest.raises(MlayerError, match="does not exist"):
        prepare_opt([tmp_path / "missing.zip"], tmp_path / "opt2")
