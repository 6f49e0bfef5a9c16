"""mlayer build-deps: real builds from the package registry, slimming traps, determinism,
the docker method through a stand-in ``docker``, cross builds, clear errors.

Real layers are built once per session (module fixtures, a session-wide build cache); the
builds run the CLI in a subprocess, as a user would.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from build_cache import shared_build_cache
from click.testing import CliRunner

from mlayer.build_pip import PIP_VERSION
from mlayer.cli import cli
from mlayer.errors import ConfigError
from mlayer.interpreters import locate_interpreter
from mlayer.layer_script import script_path
from mlayer.slim import ELF_MACHINES, elf_machine, find_strip, slim
from mlayer.targets import RUNTIME_INFO, Target

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
pytestmark = pytest.mark.slow


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def run_mlayer(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
    )


def build(
    tmp: Path,
    *extra: str,
    layers: str = "layers",
    env: dict[str, str] | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    args = [
        "build-deps", "-r", str(REQUIREMENTS), "--layers-dir", str(tmp / layers),
        "--cache-dir", str(cache or tmp / "cache"), "--json", *extra,
    ]  # fmt: skip
    proc = run_mlayer(args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the session (a fresh one: the first build is a real build);
    test_build_model.py uses the same folder, so the layer is built once."""
    return shared_build_cache(tmp_path_factory)


@pytest.fixture(scope="session")
def deps311(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("deps311")
    result = build(tmp, "--runtime", "python3.11", "--arch", "x86_64", cache=build_cache)
    result["tmp"] = tmp
    return result


@pytest.fixture(scope="session")
def deps311_all(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> dict[str, Any]:
    """The same layer with ``--bytecode all`` (sources kept, pycs in __pycache__)."""
    tmp = tmp_path_factory.mktemp("deps311-all")
    result = build(
        tmp, "--runtime", "python3.11", "--arch", "x86_64", "--bytecode", "all", cache=build_cache
    )
    result["tmp"] = tmp
    return result


def _unzip(zip_path: str | Path, out: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out)
    return out / "python"


@pytest.fixture(scope="session")
def sourceless311(deps311: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default python3.11 x86_64 layer (sourceless bytecode) unzipped: its python/."""
    return _unzip(deps311["zip"], tmp_path_factory.mktemp("layer311"))


@pytest.fixture(scope="session")
def all311(deps311_all: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``--bytecode all`` python3.11 x86_64 layer unzipped: its python/."""
    return _unzip(deps311_all["zip"], tmp_path_factory.mktemp("layer311-all"))


@pytest.fixture(scope="session", params=["sourceless", "all"])
def layer311(request: pytest.FixtureRequest) -> Path:
    """Each bytecode mode's layer: the slimming traps must hold in both."""
    return Path(request.getfixturevalue(f"{request.param}311"))


def _module(layer: Path, dotted: str) -> Path | None:
    """The file a module loads from: its .py (sources kept) or its sourceless .pyc."""
    base = layer / dotted.replace(".", "/")
    for candidate in (base / "__init__.py", base / "__init__.pyc", base.with_suffix(".py"),
                      base.with_suffix(".pyc")):  # fmt: skip
        if candidate.is_file():
            return candidate
    return None


def _in_layer(layer: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter whose sys.path is only the layer and the stdlib."""
    prelude = f"import sys\nsys.path.insert(0, {str(layer)!r})\n"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd="/",
    )


# --------------------------------------------------------------------------- a real build


def test_real_build_for_the_local_runtime(deps311: dict[str, Any]) -> None:
    manifest = deps311["manifest"]
    assert manifest["kind"] == "deps"
    assert (manifest["runtime"], manifest["arch"], manifest["method"]) == (
        "python3.11", "x86_64", "pip"
    )  # fmt: skip
    assert manifest["packages"] == {name: version for name, version in _pins().items()}
    assert manifest["bytecode"] is True and manifest["verified"] is True
    assert manifest["bytecode_mode"] == "sourceless"  # the default
    zip_path = Path(deps311["zip"])
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() == manifest["sha256"]
    assert zip_path.stat().st_size == manifest["zip_bytes"]
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
    assert {info.filename.split("/")[0] for info in infos} == {"python"}
    assert sum(info.file_size for info in infos) == manifest["unzipped_bytes"]
    assert len(infos) == manifest["files"]
    on_disk = json.loads(zip_path.with_suffix(".json").read_text())
    assert on_disk == manifest
    assert manifest["requirements_sha256"] == hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    # the report: each rule's files and bytes, and the size against the budget
    report = deps311["report"]
    rules = {rule["rule"]: rule for rule in report["slimming"]["rules"]}
    assert rules["tests and test data"]["files"] > 1000
    assert rules["tests and test data"]["bytes"] > 20_000_000
    assert rules["C/C++/Cython/Fortran sources and headers"]["files"] > 0
    assert report["strip"]["files"] > 100 and report["strip"]["bytes_saved"] > 5_000_000
    # the wheels were installed by mlayer's pinned pip, run by this (the target's) interpreter
    assert manifest["pip"] == PIP_VERSION
    assert (report["pip"]["version"], report["pip"]["source"]) == (PIP_VERSION, "mlayer")
    assert report["pip"]["python"] == sys.executable
    assert report["bytecode"]["cache_tag"] == "cpython-311"
    assert report["bytecode"]["interpreter_source"] == "this interpreter"
    assert report["bytecode"]["interpreter"] == sys.executable
    # every module's source was replaced by its bytecode
    assert report["bytecode"]["sources_removed"] == report["bytecode"]["files"] > 1000
    assert report["bytecode"]["sources_kept"] == 0
    assert report["verify"]["imported"] == [
        "cloudpickle", "joblib", "numpy", "orjson", "scipy", "sklearn", "threadpoolctl"
    ]  # fmt: skip
    # slimmer than what pip installed, and within Lambda's 250 MB
    assert report["slimming"]["removed_bytes"] > 30_000_000
    assert manifest["unzipped_bytes"] == (
        report["installed"]["bytes"]
        - report["slimming"]["removed_bytes"]
        - report["slimming"]["records_trimmed_bytes"]
        - report["strip"]["bytes_saved"]
        + report["bytecode"]["bytes"]
        - report["bytecode"]["sources_removed_bytes"]
        - report["bytecode"]["records_trimmed_bytes"]
    )
    assert manifest["unzipped_bytes"] <= 175_000_000  # the size target
    assert report["budget"]["total"] <= report["budget"]["limit"]
    assert any("deprecated python3.11" in w for w in deps311["warnings"])
    assert any("--bucket" in note for note in deps311["notes"])  # the zip is over 50 MB


@pytest.mark.parametrize("deps", ["deps311", "deps311_all"], ids=["sourceless", "all"])
def test_function_runs_on_the_built_layer(
    deps: str, text_model_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The real function, in a Lambda-like process, predicts with the built layer."""
    from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt

    built = request.getfixturevalue(deps)
    opt = tmp_path / "opt"
    prepare_opt([Path(built["zip"])], opt)
    records = [{"id": str(i), "text": t} for i, t in enumerate(["great, love it", "awful"] * 50)]
    with LambdaEnvironment(
        task_dir=ROOT / "function", opt_dir=opt, env={"MODEL_DIR": str(text_model_dir)}
    ) as env:
        invocation = env.invoke({"records": records})
        assert invocation.ok, invocation.logs
        assert env.init is not None and "Warning" not in env.init.stderr
    response = invocation.response
    assert response["counts"]["predicted"] == 100
    assert response["batchItemFailures"] == []
    assert {p["label"] for p in response["predictions"]} <= {"negative", "positive"}


# --------------------------------------------------------------------------- slimming traps


def _record(layer: Path) -> dict[str, str]:
    """path -> sha256 (urlsafe b64, as RECORD writes it) from every dist-info RECORD."""
    hashes = {}
    for record in layer.glob("*.dist-info/RECORD"):
        with open(record, newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[1].startswith("sha256="):
                    hashes[row[0]] = row[1].removeprefix("sha256=")
    return hashes


def _b64sha(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_numpy_testing_is_kept_and_sklearn_imports(layer311: Path) -> None:
    assert _module(layer311, "numpy.testing")
    assert _module(layer311, "numpy._core.tests._natype")  # numpy.testing imports it
    assert not list((layer311 / "numpy/_core/tests").glob("test_*.py*"))
    assert not (layer311 / "sklearn/tests").exists()
    proc = _in_layer(
        layer311,
        """
        import numpy.testing, scipy.stats, sklearn, sklearn.linear_model
        import sklearn.feature_extraction.text, joblib, orjson, threadpoolctl
        numpy.testing.assert_allclose([1.0], [1.0])
        print(numpy.__file__)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(layer311))


def test_dist_info_metadata_is_kept(layer311: Path) -> None:
    assert sorted(p.parent.name.split("-")[0] for p in layer311.glob("*.dist-info/METADATA")) == [
        "cloudpickle", "joblib", "numpy", "orjson", "scikit_learn", "scipy", "threadpoolctl"
    ]  # fmt: skip
    proc = _in_layer(
        layer311,
        """
        from importlib.metadata import version
        print(version("scikit-learn"), version("numpy"), version("threadpoolctl"))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    pins = _pins()
    assert proc.stdout.split() == [pins["scikit-learn"], pins["numpy"], pins["threadpoolctl"]]


def test_vendored_libs_untouched_and_only_extension_modules_stripped(layer311: Path) -> None:
    record = _record(layer311)
    vendored = [p for p in layer311.glob("*.libs/*") if p.is_file()]
    assert len(vendored) >= 5  # numpy.libs, scipy.libs: openblas, gfortran, ...
    for path in vendored:
        rel = path.relative_to(layer311).as_posix()
        assert _b64sha(path) == record[rel], f"{rel} was modified"
    extensions = list(layer311.glob("numpy/**/*.cpython-311-x86_64-linux-gnu.so"))
    assert extensions
    stripped = [p for p in extensions if _b64sha(p) != record[p.relative_to(layer311).as_posix()]]
    assert len(stripped) == len(extensions)


def _pyc_header(path: Path) -> tuple[bytes, int]:
    header = path.read_bytes()[:16]
    return header[:4], int.from_bytes(header[4:8], "little")


def test_bytecode_all_is_unchecked_hash_beside_the_sources(all311: Path) -> None:
    pyc = all311 / "sklearn/__pycache__/base.cpython-311.pyc"
    assert (all311 / "sklearn/base.py").is_file()
    # hash-based, check_source off: extraction times never matter
    assert _pyc_header(pyc) == (importlib.util.MAGIC_NUMBER, 0b01)
    proc = _in_layer(
        all311,
        """
        import sys, sklearn.base
        from importlib.util import cache_from_source
        spec = sklearn.base.__spec__
        print(spec.cached == cache_from_source(spec.origin))
        """,
    )
    assert proc.stdout.strip() == "True", proc.stderr


def test_sourceless_bytecode_replaces_the_sources(sourceless311: Path, all311: Path) -> None:
    # every module of the "all" layer is a .pyc in the same place, and no .py or
    # __pycache__ is left
    modules = {p.relative_to(all311).with_suffix(".pyc") for p in all311.rglob("*.py")}
    assert len(modules) > 1000
    assert {p.relative_to(sourceless311) for p in sourceless311.rglob("*.pyc")} == modules
    assert not list(sourceless311.rglob("*.py")) and not list(sourceless311.rglob("__pycache__"))
    assert _pyc_header(sourceless311 / "sklearn/base.pyc") == (importlib.util.MAGIC_NUMBER, 0b01)
    # ... loaded without a source, the package's __init__ included
    proc = _in_layer(
        sourceless311,
        """
        import sklearn, sklearn.base
        print(type(sklearn.__spec__.loader).__name__, type(sklearn.base.__spec__.loader).__name__)
        print(sklearn.base.__file__)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    loaders, path = proc.stdout.split("\n")[:2]
    assert loaders == "SourcelessFileLoader SourcelessFileLoader"
    assert path == str(sourceless311 / "sklearn/base.pyc")
    # each dist-info RECORD lists the .pyc in place of the source it replaced
    rows = {}
    for record in sourceless311.glob("*.dist-info/RECORD"):
        with open(record, newline="") as handle:
            rows.update({row[0]: row[1:] for row in csv.reader(handle) if row})
    assert rows["sklearn/base.pyc"] == ["", ""] and "sklearn/base.py" not in rows
    assert rows["threadpoolctl.pyc"] == ["", ""]


def test_a_traceback_from_the_sourceless_layer_names_file_and_line(
    sourceless311: Path, all311: Path
) -> None:
    # when scikit-learn raises from inside the layer
    code = """
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().predict([[1.0]])
        """
    proc = _in_layer(sourceless311, code)
    # then the traceback names each frame's file (where Lambda puts it) and line, without
    # the source text
    assert proc.returncode == 1 and "NotFittedError" in proc.stderr
    frames = re.findall(r'File "/opt/python/([^"]+)", line (\d+), in (\w+)', proc.stderr)
    assert [f[2] for f in frames] == ["predict", "decision_function", "check_is_fitted"]
    assert "raise NotFittedError" not in proc.stderr
    # and the lines are those of the sources the "all" layer ships
    with_source = _in_layer(all311, code)
    for rel, line, _ in frames:
        assert f'{all311 / rel}", line {line}' in with_source.stderr
    rel, line, _ = frames[-1]
    assert "raise NotFittedError" in (all311 / rel).read_text().splitlines()[int(line) - 1]


def test_what_reads_sources_falls_back_in_the_sourceless_layer(sourceless311: Path) -> None:
    """inspect.getsource fails on a sourceless module (the documented trade-off); joblib's
    code hashing and scipy's docstring checks, the layer's only source readers, fall back."""
    proc = _in_layer(
        sourceless311,
        """
        import inspect, sklearn.base
        from joblib.func_inspect import get_func_code
        try:
            inspect.getsource(sklearn.base.clone)
        except OSError as exc:
            print("getsource:", exc)
        code, filename, line = get_func_code(sklearn.base.clone)
        print(filename, line, len(code) > 0)
        print(inspect.getsourcefile(sklearn.base.clone))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "getsource: could not get source code",
        "/opt/python/sklearn/base.py -1 True",
        "/opt/python/sklearn/base.py",
    ]


# --------------------------------------------------------------------------- determinism


def test_two_builds_give_one_sha256(deps311: dict[str, Any], tmp_path: Path) -> None:
    again = build(tmp_path, "--runtime", "python3.11", "--no-cache")
    assert again["cached"] is False
    assert again["manifest"]["sha256"] == deps311["manifest"]["sha256"]
    assert Path(again["zip"]).read_bytes() == Path(deps311["zip"]).read_bytes()
    # and with the cache, a third build is a copy of the same bytes
    cached = build(tmp_path, "--runtime", "python3.11", layers="layers3")
    assert cached["cached"] is True
    assert cached["manifest"]["sha256"] == deps311["manifest"]["sha256"]


# --------------------------------------------------------------------------- docker


STAND_IN = r'''#!{python}
"""A stand-in for the docker client: records its arguments, runs `docker run` locally.

`docker run ... IMAGE bash SCRIPT ARGS` runs SCRIPT with ARGS on this machine, container
paths mapped back to the host paths mounted there, and a `python3` that plays the image's.
"""
import json, os, subprocess, sys
log = os.environ["FAKE_DOCKER_LOG"]
with open(log, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1] == "info":
    if os.environ.get("FAKE_DOCKER_NO_ENGINE"):
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
              "Is the docker daemon running?", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
assert sys.argv[1] == "run", sys.argv
args = sys.argv[2:]
mounts, env = [], {{}}
while args[0].startswith("-"):
    flag = args.pop(0)
    if flag == "--rm":
        continue
    value = args.pop(0)
    if flag == "-v":
        host, container = value.split(":")[:2]
        mounts.append((container, host))
    elif flag == "-e":
        key, _, val = value.partition("=")
        env[key] = val
image = args.pop(0)
def host_path(arg):
    for container, host in sorted(mounts, key=lambda m: -len(m[0])):
        if arg == container or arg.startswith(container + "/"):
            return host + arg[len(container):]
    return arg
command = [host_path(a) for a in args]
env = {{k: host_path(v) for k, v in env.items()}}
image_bin = os.path.join(os.path.dirname(os.path.abspath(log)), "image-bin")
os.makedirs(image_bin, exist_ok=True)
if not os.path.exists(os.path.join(image_bin, "python3")):
    os.symlink({python!r}, os.path.join(image_bin, "python3"))
full_env = dict(os.environ, **env)
full_env["PATH"] = image_bin + os.pathsep + os.environ["PATH"]
sys.exit(subprocess.run(command, env=full_env).returncode)
'''


def _stand_in(tmp: Path, *, engine: bool = True) -> dict[str, str]:
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(STAND_IN.format(python=sys.executable))
    docker.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_LOG": str(tmp / "docker-calls.jsonl"),
    }
    if not engine:
        env["FAKE_DOCKER_NO_ENGINE"] = "1"
    return env


def test_docker_method_runs_the_script_in_the_image(
    deps311: dict[str, Any], tmp_path: Path
) -> None:
    # given a docker client (a stand-in) whose runs execute locally with the mounts mapped
    env = _stand_in(tmp_path)
    # when building with --method docker
    result = build(tmp_path, "--runtime", "python3.11", "--method", "docker", env=env)
    # then docker ran the repository's script in the default Lambda build image
    calls = [
        json.loads(line) for line in (tmp_path / "docker-calls.jsonl").read_text().splitlines()
    ]
    assert calls[0] == ["info"]
    runs = [call for call in calls if call[0] == "run"]
    image = "public.ecr.aws/sam/build-python3.11:latest-x86_64"
    steps = []
    for call in runs:
        assert call[call.index("--platform") + 1] == "linux/amd64"
        at = call.index(image)
        assert call[at + 1 : at + 3] == ["bash", "/mlayer/scripts/get-layer-package.sh"]
        assert f"{script_path().parent}:/mlayer/scripts:ro" in call
        steps.append(call[at + 3])
    # the default (sourceless) compiles first, so the import check sees the layer as shipped
    assert steps == ["install", "compile", "verify"]
    compile_call = runs[steps.index("compile")]
    assert compile_call[compile_call.index("--bytecode") + 1] == "sourceless"
    # and the layer is the very same as the pip method's: the CLI and the script agree
    assert result["manifest"]["method"] == "docker"
    assert result["manifest"]["image"] == image
    # installed by the image's own pip (here the stand-in image's python3), recorded as such
    assert result["manifest"]["pip"] == importlib.metadata.version("pip")
    assert result["report"]["pip"]["source"] == f"the image {image}"
    assert result["manifest"]["sha256"] == deps311["manifest"]["sha256"]


def test_docker_image_override_and_no_engine(tmp_path: Path) -> None:
    env = _stand_in(tmp_path, engine=False)
    proc = run_mlayer(
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.11", "--method", "docker",
         "--image", "lambci/lambda:build-python3.8", "--layers-dir", str(tmp_path / "layers")],
        env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: no Docker engine is running (Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?); start Docker or use "
        "--method pip, which needs no Docker"
    )
    assert not (tmp_path / "layers").exists()


def test_no_docker_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(
        cli,
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.12", "--method", "docker",
         "--layers-dir", str(tmp_path / "layers")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: docker is not installed (not on PATH); use --method pip, which needs no Docker"
    )


def test_script_and_cli_agree_on_platform_tags() -> None:
    for runtime in RUNTIME_INFO:
        for arch in ("x86_64", "arm64"):
            target = Target(runtime, arch)
            proc = subprocess.run(
                ["bash", str(script_path()), "platforms", "--runtime", runtime, "--arch", arch],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert proc.stdout.split() == target.platforms()
    assert Target("python3.11", "arm64").platforms()[-1] == "manylinux_2_26_aarch64"
    assert Target("python3.13", "x86_64").platforms()[-1] == "manylinux_2_34_x86_64"


# --------------------------------------------------------------------------- cross build


def _wheel_tags(layer: Path) -> dict[str, list[str]]:
    tags = {}
    for wheel in layer.glob("*.dist-info/WHEEL"):
        tags[wheel.parent.name] = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text().splitlines()
            if line.startswith("Tag:")
        ]
    return tags


def _no_python_env(tmp: Path, version: str) -> dict[str, str]:
    """An environment where no Python ``version`` can be found: PATH without the folders
    that hold a ``python3.X``, plus a pyenv-style shim that does not run (and links to the
    tools a build needs, wherever they were); an empty pyenv root; no uv."""
    name = f"python{version}"
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / name
    shim.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    tools = (
        "bash",
        "mkdir",
        "rm",
        "uname",
        "sed",
        "strip",
        "aarch64-linux-gnu-strip",
        "llvm-strip",
    )
    for tool in tools:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    folders = [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if folder and not (Path(folder) / name).exists() and not (Path(folder) / "uv").exists()
    ]
    (tmp / "pyenv" / "versions").mkdir(parents=True)
    return {"PATH": os.pathsep.join([str(bin_dir), *folders]), "PYENV_ROOT": str(tmp / "pyenv")}


def _cross_build(
    tmp: Path, cache: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], Path]:
    result = build(tmp, "--runtime", "python3.13", "--arch", "arm64", cache=cache, env=env)
    manifest = result["manifest"]
    assert (manifest["runtime"], manifest["arch"]) == ("python3.13", "arm64")
    layer = _unzip(result["zip"], tmp / "unzipped")
    # every binary wheel is cp313 for aarch64 with a glibc Amazon Linux 2023 has
    allowed = set(Target("python3.13", "arm64").platforms())
    binary = 0
    for name, tags in _wheel_tags(layer).items():
        for tag in tags:
            python, abi, plat = tag.split("-")
            if plat == "any":
                continue
            binary += 1
            assert (python, abi) in {("cp313", "cp313"), ("cp313", "abi3")} or python == "cp38", (
                name
            )
            assert plat in allowed, f"{name}: {plat}"
    assert binary >= 4
    # and every .so, vendored libs included, is an AArch64 ELF
    shared = [p for p in layer.rglob("*.so*") if p.is_file()]
    assert len(shared) > 100
    assert {elf_machine(p) for p in shared} == {ELF_MACHINES["aarch64"]}
    # stripping needs a strip for aarch64; the report says which it used or why it did not
    report = result["report"]
    if find_strip("aarch64"):
        assert report["strip"]["files"] > 100 and report["strip"]["bytes_saved"] > 0
    else:
        assert "binutils-aarch64-linux-gnu" in report["strip"]["skipped"]
    # the import check needs an aarch64 machine: it is skipped, and said so
    assert "cannot load here" in report["verify"]["skipped"]
    return result, layer


def test_cross_build_python313_arm64_with_python313(build_cache: Path, tmp_path: Path) -> None:
    """An extra where a Python 3.13 exists (PATH, pyenv or uv): sourceless 3.13 bytecode.
    (The cross build without one: tests/test_build_deps_current.py, with today's pins.)"""
    python313 = locate_interpreter("3.13").path
    if python313 is None:
        pytest.skip("extra: no Python 3.13 on this machine (the build without one is tested)")
    result, layer = _cross_build(tmp_path, build_cache)
    assert result["manifest"]["bytecode"] is True
    assert result["manifest"]["bytecode_mode"] == "sourceless"
    assert result["report"]["bytecode"]["interpreter"] == python313
    magic = subprocess.run(
        [python313, "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert _pyc_header(layer / "sklearn/base.pyc") == (bytes.fromhex(magic), 0b01)
    assert not list(layer.rglob("*.py"))


# --------------------------------------------------------------------------- errors


def test_a_pin_without_a_wheel_names_the_package_the_target_and_a_way_out(tmp_path: Path) -> None:
    proc = run_mlayer(
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.11", "--arch", "arm64",
         "--layers-dir", str(tmp_path / "layers"), "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "Error: scikit-learn==1.7.2 has no wheel for python3.11 arm64 (cp311, manylinux up to "
        "glibc 2.26, Amazon Linux 2): pin scikit-learn==1.7.0 (the newest version with a wheel "
        "for this target); or build for python3.12, python3.13"
    ), error
    assert "Traceback" not in proc.stderr


def test_default_runtime_is_the_newest_the_pins_resolve_for(tmp_path: Path) -> None:
    from mlayer.wheels import default_runtime

    # numpy 2.2.6 has no python3.14 wheels: python3.13 is the newest
    assert default_runtime(REQUIREMENTS, "x86_64", tmp_path) == "python3.13"
    cached = list((tmp_path / "runtimes").glob("*-x86_64.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == {"runtime": "python3.13"}


def test_over_the_budget_names_the_biggest_packages(
    deps311: dict[str, Any], build_cache: Path, tmp_path: Path
) -> None:
    # given a model layer already built that leaves too little room
    layers = tmp_path / "layers"
    layers.mkdir()
    (layers / "model-big-v3.json").write_text(
        json.dumps({"kind": "model", "name": "big", "version": 3, "unzipped_bytes": 100_000_000})
    )
    proc = run_mlayer(
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.11", "--layers-dir",
         str(layers), "--cache-dir", str(build_cache)]
    )  # fmt: skip
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: over Lambda's 250 MiB unzipped limit by ")
    assert "model layer big v3 95.4 MiB" in error
    assert "Biggest packages in the layer: scipy " in error
    assert not (layers / "deps-python3.11-x86_64.zip").exists()


def test_bad_inputs_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["build-deps", "-r", str(tmp_path / "nope.txt"), "--runtime",
                                 "python3.12"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: requirements file {tmp_path / 'nope.txt'} not found; pass --requirements "
        "FILE with the pins (e.g. scikit-learn==1.7.2)"
    )
    result = runner.invoke(cli, ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.12",
                                 "--python", sys.executable])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: --python {sys.executable} is Python 3.11; python3.12 needs Python 3.12"
    )


# --------------------------------------------------------------------------- slimming, unit


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_slim_rules_keep_what_run_time_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .testing import helper\n",
            "pkg/testing/__init__.py": "from ..core.tests._util import thing\nfrom . import x\n",
            "pkg/testing/x.py": "",
            "pkg/core/__init__.py": "",
            "pkg/core/tests/_util.py": "from pkg.core.tests import other\n",
            "pkg/core/tests/other.py": "",
            "pkg/core/tests/test_big.py": "x" * 1000,
            "pkg/core/src.c": "int x;",
            "pkg/core/api.pyi": "",
            "pkg/__pycache__/stale.cpython-39.pyc": "",
            "pkg-1.0.dist-info/METADATA": "Name: pkg\nVersion: 1.0\n",
            "pkg-1.0.dist-info/tests/x": "",
            "pkg.libs/libfoo.so": "",
            "mine/tests/fixture.py": "",
            "mine/data/big.bin": "0" * 500,
            "bin/tool": "#!/usr/bin/python",
        },
    )
    report = slim(tmp_path, keep=["mine/tests/*"], exclude=["mine/data"])
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "mine/tests/fixture.py",
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/tests/x",
        "pkg.libs/libfoo.so",
        "pkg/__init__.py",
        "pkg/core/__init__.py",
        "pkg/core/tests/_util.py",
        "pkg/core/tests/other.py",
        "pkg/testing/__init__.py",
        "pkg/testing/x.py",
    ]
    assert report["kept_for_imports"] == ["pkg/core/tests/_util.py", "pkg/core/tests/other.py"]
    rules = {rule["rule"]: (rule["files"], rule["bytes"]) for rule in report["rules"]}
    assert rules["tests and test data"] == (1, 1000)
    assert rules["--exclude"] == (1, 500)
    assert rules["C/C++/Cython/Fortran sources and headers"] == (1, 6)
    assert rules["console scripts"][0] == 1
    assert report["kept_by_keep"] == 1


# --------------------------------------------------------------------------- --keep-source


def test_keep_source_keeps_the_py_of_matching_paths(tmp_path: Path) -> None:
    # given pins of two pure-Python packages (quick to build for real)
    requirements = tmp_path / "requirements.txt"
    pins = _pins()
    requirements.write_text(
        f"threadpoolctl=={pins['threadpoolctl']}\ncloudpickle=={pins['cloudpickle']}\n"
    )
    # when building with --keep-source for one module and one whole package
    proc = run_mlayer(
        ["build-deps", "-r", str(requirements), "--runtime", "python3.11", "--layers-dir",
         str(tmp_path / "layers"), "--cache-dir", str(tmp_path / "cache"), "--json",
         "--keep-source", "threadpoolctl.py", "--keep-source", "cloudpickle/cloudpickle.py"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    layer = _unzip(result["zip"], tmp_path / "unzipped")
    # then those keep their source (with __pycache__ bytecode), the rest is sourceless
    assert (layer / "threadpoolctl.py").is_file()
    assert (layer / "__pycache__/threadpoolctl.cpython-311.pyc").is_file()
    assert (layer / "cloudpickle/cloudpickle.py").is_file()
    assert (layer / "cloudpickle/__pycache__/cloudpickle.cpython-311.pyc").is_file()
    assert (layer / "cloudpickle/__init__.pyc").is_file()
    assert not (layer / "cloudpickle/__init__.py").exists()
    bytecode = result["report"]["bytecode"]
    assert bytecode["keep_source"] == ["threadpoolctl.py", "cloudpickle/cloudpickle.py"]
    assert bytecode["sources_kept"] == 2
    assert result["manifest"]["bytecode_mode"] == "sourceless"
    assert result["report"]["verify"]["imported"] == ["cloudpickle", "threadpoolctl"]
    # and a kept module still gives its source to whoever reads it
    check = _in_layer(
        layer,
        """
        import inspect, threadpoolctl, cloudpickle.cloudpickle
        print(inspect.getsource(threadpoolctl).startswith('\"\"\"'))
        print(type(cloudpickle.__spec__.loader).__name__)
        """,
    )
    assert check.stdout.split() == ["True", "SourcelessFileLoader"], check.stderr


def test_keep_source_needs_sourceless(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.11", "--bytecode", "all",
         "--keep-source", "mypkg", "--layers-dir", str(tmp_path / "layers")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: --keep-source only applies to --bytecode sourceless (with --bytecode all "
        "every .py is kept)"
    )


# --------------------------------------------------------------------------- interpreters


def _wrapper(path: Path, python: str) -> str:
    """An executable at ``path`` that runs the real interpreter ``python``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean search space: PATH and PYENV_ROOT in tmp_path, and the running interpreter
    counted as another version, so only the later places of the search can answer."""
    import mlayer.interpreters as interpreters

    monkeypatch.setattr(interpreters, "_this_interpreter", lambda version: None)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    return tmp_path


def test_a_shim_that_does_not_run_is_skipped_for_pyenv(elsewhere: Path) -> None:
    # given pyenv's shim on PATH that does not run, and the version in pyenv's versions/
    shim = elsewhere / "bin/python3.11"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    older = _wrapper(elsewhere / "pyenv/versions/3.11.2/bin/python3.11", sys.executable)
    newer = _wrapper(elsewhere / "pyenv/versions/3.11.10/bin/python3.11", sys.executable)
    # when looking for Python 3.11
    found = locate_interpreter("3.11")
    # then the newest pyenv version is used, and the shim reported as skipped
    assert (found.path, found.source) == (newer, "pyenv")
    assert found.path != older
    assert found.tried == (f"{shim}: does not run",)
    assert found.describe() == f"Python 3.11 from pyenv ({newer})"


def test_python_on_path_must_report_the_right_version(elsewhere: Path) -> None:
    wrong = _wrapper(elsewhere / "bin/python3.12", sys.executable)  # really a 3.11
    found = locate_interpreter("3.12")
    assert found.path is None
    assert found.describe() == (
        f"no Python 3.12 interpreter found (tried {wrong}: is Python 3.11; pyenv: no "
        f"{elsewhere}/pyenv/versions/3.12*/bin/python3.12; uv: not installed)"
    )
    right = _wrapper(elsewhere / "bin/python3.11", sys.executable)
    assert locate_interpreter("3.11").path == right
    assert locate_interpreter("3.11").source == "PATH"


def test_uv_is_asked_last(elsewhere: Path) -> None:
    # given a uv (a stand-in that answers `uv python find 3.11` as uv does) and nothing else
    python = _wrapper(elsewhere / "uv-pythons/cpython-3.11/bin/python3.11", sys.executable)
    uv = elsewhere / "bin/uv"
    uv.write_text(
        '#!/bin/sh\n[ "$1 $2 $3" = "python find 3.11" ] && echo ' + python + " && exit 0\n"
        'echo "error: No interpreter found for Python $3" >&2; exit 2\n'
    )
    uv.chmod(0o755)
    found = locate_interpreter("3.11")
    assert (found.path, found.source) == (python, "uv")
    missing = locate_interpreter("3.12")
    assert missing.path is None and missing.tried[-1] == "uv python find 3.12: none"


def test_explicit_python_must_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        locate_interpreter("3.12", str(tmp_path / "nope"))
    assert str(caught.value) == (
        f"--python {tmp_path / 'nope'} is not a working Python interpreter; python3.12 needs "
        "Python 3.12"
    )
    assert locate_interpreter("3.11", sys.executable).source == "--python"
