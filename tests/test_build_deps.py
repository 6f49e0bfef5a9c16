"""mlayer build-deps: real builds from the package registry, slimming traps, determinism,
the docker method through a stand-in ``docker``, cross builds, clear errors.

Real layers are built once per session (module fixtures, a session-wide build cache); the
builds run the CLI in a subprocess, as a user would.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlayer.cli import cli
from mlayer.deps_layer import (
    ELF_MACHINES,
    RUNTIME_INFO,
    Target,
    elf_machine,
    find_interpreter,
    find_strip,
    script_path,
    slim,
)

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
    cache = tmp_path_factory.getbasetemp() / "mlayer-build-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def deps311(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("deps311")
    result = build(tmp, "--runtime", "python3.11", "--arch", "x86_64", cache=build_cache)
    result["tmp"] = tmp
    return result


@pytest.fixture(scope="session")
def layer311(deps311: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python3.11 x86_64 layer unzipped (its python/ folder)."""
    out = tmp_path_factory.mktemp("layer311")
    with zipfile.ZipFile(deps311["zip"]) as archive:
        archive.extractall(out)
    return out / "python"


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
    assert report["bytecode"]["cache_tag"] == "cpython-311"
    assert report["verify"]["imported"] == [
        "cloudpickle", "joblib", "numpy", "orjson", "scipy", "sklearn", "threadpoolctl"
    ]  # fmt: skip
    # slimmer than what pip installed, and within Lambda's 250 MB
    assert report["slimming"]["removed_bytes"] > 30_000_000
    assert manifest["unzipped_bytes"] == (
        report["installed"]["bytes"]
        - report["slimming"]["removed_bytes"]
        - report["strip"]["bytes_saved"]
        + report["bytecode"]["bytes"]
    )
    assert report["budget"]["total"] <= report["budget"]["limit"]
    assert any("deprecated python3.11" in w for w in deps311["warnings"])
    assert any("--bucket" in note for note in deps311["notes"])  # the zip is over 50 MB


def test_function_runs_on_the_built_layer(
    deps311: dict[str, Any], text_model_dir: Path, tmp_path: Path
) -> None:
    """The real function, in a Lambda-like process, predicts with the built layer."""
    from mlayer.local.sandbox import LambdaEnvironment, prepare_opt

    opt = tmp_path / "opt"
    prepare_opt([Path(deps311["zip"])], opt)
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
    assert (layer311 / "numpy/testing/__init__.py").is_file()
    assert (layer311 / "numpy/_core/tests/_natype.py").is_file()  # numpy.testing imports it
    assert not list((layer311 / "numpy/_core/tests").glob("test_*.py"))
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


def test_bytecode_is_unchecked_hash_for_the_target(layer311: Path) -> None:
    pyc = layer311 / "sklearn/__pycache__/base.cpython-311.pyc"
    header = pyc.read_bytes()[:16]
    flags = int.from_bytes(header[4:8], "little")
    assert flags == 0b01  # hash-based, check_source off: extraction times never matter
    proc = _in_layer(
        layer311,
        """
        import sys, sklearn.base
        from importlib.util import cache_from_source
        spec = sklearn.base.__spec__
        print(spec.cached == cache_from_source(spec.origin))
        """,
    )
    assert proc.stdout.strip() == "True", proc.stderr


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
    assert steps == ["install", "verify", "compile"]
    # and the layer is the very same as the pip method's: the CLI and the script agree
    assert result["manifest"]["method"] == "docker"
    assert result["manifest"]["image"] == image
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


def test_cross_build_python313_arm64(build_cache: Path, tmp_path: Path) -> None:
    result = build(tmp_path, "--runtime", "python3.13", "--arch", "arm64", cache=build_cache)
    manifest, report = result["manifest"], result["report"]
    assert (manifest["runtime"], manifest["arch"]) == ("python3.13", "arm64")
    layer = tmp_path / "unzipped"
    with zipfile.ZipFile(result["zip"]) as archive:
        archive.extractall(layer)
    layer = layer / "python"
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
    if find_strip("aarch64"):
        assert report["strip"]["files"] > 100 and report["strip"]["bytes_saved"] > 0
    else:
        assert "binutils-aarch64-linux-gnu" in report["strip"]["skipped"]
    # the import check needs an aarch64 machine: it is skipped, and said so
    assert "cannot load here" in report["verify"]["skipped"]
    if find_interpreter(Target("python3.13", "arm64")):
        assert manifest["bytecode"] is True
        assert list(layer.glob("sklearn/__pycache__/*.cpython-313.pyc"))
    else:
        assert manifest["bytecode"] is False
        assert any("WITHOUT bytecode" in w for w in result["warnings"])


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
    from mlayer.deps_layer import default_runtime

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
        json.dumps({"kind": "model", "name": "big", "version": 3, "unzipped_bytes": 90_000_000})
    )
    proc = run_mlayer(
        ["build-deps", "-r", str(REQUIREMENTS), "--runtime", "python3.11", "--layers-dir",
         str(layers), "--cache-dir", str(build_cache)]
    )  # fmt: skip
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: over Lambda's 250 MB unzipped limit by ")
    assert "model layer big v3 85.8 MB" in error
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
