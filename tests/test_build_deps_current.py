"""build-deps with today's libraries (scikit-learn 1.9, numpy 2.5, scipy 1.18) for python3.13,
run as a new user runs it: from a venv of this Python 3.11 whose own pip is 23.2, a pip that
refuses numpy 2.5 for python3.13. The build must not care: it runs mlayer's pinned pip.

- x86_64: built once per module with ``--python`` a Python 3.13 that has no pip at all (so
  neither the user's pip nor the target interpreter's can be what installed the wheels); a
  model trained in a Python 3.13 venv with the same pins is then built with build-model (its
  smoke test runs the real function with Python 3.13) and served: the function's predictions
  equal the model's own.
- arm64: cross built where no Python 3.13 can be found, so the venv's Python 3.11 (pip 23.2)
  runs mlayer's pip; every wheel tag and every .so's ELF machine is checked (no arm64 CPU here).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from build_cache import shared_build_cache
from test_build_deps import _no_python_env, _unzip, _wheel_tags

from mlayer.build_pip import PIP_MINIMUM, PIP_VERSION, ensure_pip, pip_home
from mlayer.interpreters import locate_interpreter
from mlayer.slim import ELF_MACHINES, elf_machine
from mlayer.targets import Target

ROOT = Path(__file__).resolve().parent.parent
CURRENT = ROOT / "tests" / "pins" / "current-py313.txt"
TRAIN = ROOT / "training" / "train.py"
pytestmark = pytest.mark.slow


def _pins(path: Path = CURRENT) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _pip_version(python: str | Path) -> tuple[int, ...] | None:
    proc = subprocess.run(
        [str(python), "-m", "pip", "--version"], capture_output=True, text=True, cwd="/"
    )
    if proc.returncode != 0:
        return None
    return tuple(int(part) for part in proc.stdout.split()[1].split("."))


@pytest.fixture(scope="module")
def user_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv as a new user makes it from this Python 3.11: its own pip is ensurepip's
    (23.2.1 for 3.11.7), pinned to 23.2.1 if this Python bundles another. mlayer and its
    dependencies come from this interpreter's site-packages (a .pth), after the venv's own."""
    import site

    venv = tmp_path_factory.mktemp("user-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    if _pip_version(python) != (23, 2, 1):
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "pip==23.2.1"], check=True, cwd="/"
        )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # addsitedir, not a bare path: the .pth files there (mlayer's editable install) count too
    Path(purelib, "parent-site.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
    )
    assert _pip_version(python) == (23, 2, 1)
    return python


@pytest.fixture(scope="module")
def python313() -> str:
    found = locate_interpreter("3.13").path
    if found is None:
        pytest.skip("no Python 3.13 on this machine (PATH, pyenv, uv): these tests serve with one")
    return found


@pytest.fixture(scope="module")
def bare313(python313: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python 3.13 with no pip at all (``venv --without-pip``)."""
    venv = tmp_path_factory.mktemp("bare313") / "venv"
    subprocess.run([python313, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    assert _pip_version(python) is None
    return python


def _build(
    user_python: Path, tmp: Path, cache: Path, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    proc = subprocess.run(
        [str(user_python), "-c", "from mlayer.cli import main; main()", "build-deps",
         "-r", str(CURRENT), "--runtime", "python3.13", "--layers-dir", str(tmp / "layers"),
         "--cache-dir", str(cache), "--json", *extra],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def deps313(
    user_python: Path, bare313: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The python3.13 x86_64 layer of the current pins, built from the pip-23.2 venv."""
    tmp = tmp_path_factory.mktemp("deps313")
    cache = shared_build_cache(tmp_path_factory)
    result = _build(user_python, tmp, cache, "--arch", "x86_64", "--python", str(bare313))
    result["tmp"], result["cache"] = tmp, cache
    return result


def _check_wheels(layer: Path, target: Target) -> None:
    """Every binary wheel is cp313 (or abi3) for the target's CPU and glibc."""
    allowed = set(target.platforms())
    binary = 0
    for name, tags in _wheel_tags(layer).items():
        for tag in tags:
            python, abi, plat = tag.split("-")
            if plat == "any":
                continue
            binary += 1
            assert abi in ("cp313", "abi3") and python.startswith("cp3"), f"{name}: {tag}"
            assert plat in allowed, f"{name}: {tag}"
    assert binary >= 4  # numpy, scipy, scikit-learn, orjson


def test_python313_x86_64_builds_from_a_venv_with_pip_23(
    deps313: dict[str, Any], user_python: Path, bare313: Path
) -> None:
    # given a user's pip that checks Requires-Python against its own Python 3.11
    users_pip = _pip_version(user_python)
    assert users_pip is not None and users_pip < PIP_MINIMUM
    manifest, report = deps313["manifest"], deps313["report"]
    # then the build installed the current pins with mlayer's pip, run by --python
    assert (manifest["runtime"], manifest["arch"]) == ("python3.13", "x86_64")
    assert manifest["packages"] == _pins()
    assert manifest["pip"] == PIP_VERSION
    # The build cache is shared by the suite's modules and workers, and another module
    # (test_deferred_imports) builds this layer with a pip-less Python 3.13 venv of its own:
    # on a cache hit the report is that build's, so its interpreter is checked for what the
    # fixture makes (Python 3.13, no pip at all) rather than for being this module's venv.
    builder = bare313 if not deps313["cached"] else Path(report["pip"]["python"])
    assert builder.name == "python" and builder.parent.parent.parent.name.startswith("bare313")
    assert _pip_version(builder) is None
    assert report["pip"] == {
        "version": PIP_VERSION,
        "source": "mlayer",
        "path": str(pip_home(deps313["cache"])),
        "python": str(builder),
        "python_version": "3.13",
    }
    # and --python wrote the bytecode and ran the import check
    assert report["bytecode"]["interpreter"] == str(builder)
    assert report["bytecode"]["cache_tag"] == "cpython-313"
    assert manifest["bytecode_mode"] == "sourceless" and manifest["verified"] is True
    assert report["verify"]["imported"] == [
        "cloudpickle", "joblib", "narwhals", "numpy", "orjson", "scipy", "sklearn", "threadpoolctl"
    ]  # fmt: skip
    assert report["verify"]["python"].startswith("3.13.")
    _check_wheels(
        _unzip(deps313["zip"], deps313["tmp"] / "unzipped"), Target("python3.13", "x86_64")
    )
    assert manifest["unzipped_bytes"] <= 175_000_000  # the size target holds
    assert not any("markers" in warning for warning in deps313["warnings"])


TRAINED_EXPECTATIONS = r"""
import json, sys
from pathlib import Path
import joblib
sys.path.insert(0, sys.argv[2])
import train
model = Path(sys.argv[1])
meta = json.loads((model / "metadata.json").read_text())
texts, _ = train.make_reviews(200, 20261130)
stages = [joblib.load(model / name) for name in meta["stages"]]
features = texts
for stage in stages[:-1]:
    features = stage.transform(features)
final = stages[-1]
predicted, proba = final.predict(features), final.predict_proba(features)
classes = final.classes_.tolist()
index = [classes.index(p) for p in predicted.tolist()]
print(json.dumps({
    "texts": texts,
    "labels": [meta["labels"][i] for i in index],
    "probabilities": [float(proba[row, i]) for row, i in enumerate(index)],
}))
"""


@pytest.fixture(scope="module")
def model313(
    python313: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The text model trained with the current pins in a Python 3.13 venv, and the model's own
    predictions for 200 generated reviews (computed in that venv).

    Cached in pytest's cache dir, keyed by train.py, the pins and the interpreter, as the
    suite's other trained models are; the venv itself lives in the session's tmp."""
    version = subprocess.run(
        [python313, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    digest = hashlib.sha256(version.encode() + TRAIN.read_bytes() + CURRENT.read_bytes())
    digest.update(TRAINED_EXPECTATIONS.encode())
    cache: pytest.Cache | None = getattr(request.config, "cache", None)
    base = cache.mkdir("mlayer-models") if cache else tmp_path_factory.mktemp("mlayer-models")
    target = base / f"text313-{digest.hexdigest()[:16]}"
    if not (target / "expected.json").is_file():
        # A venv as a user's, filled with mlayer's pip (ensurepip would add ~15 s here) without
        # compiling every module (training imports a fraction of them).
        venv = tmp_path_factory.mktemp("train313") / "venv"
        subprocess.run([python313, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = ensure_pip(shared_build_cache(tmp_path_factory), python)
        install = subprocess.run(
            [*pip.command(), "install", "-q", "--disable-pip-version-check", "--no-compile",
             "--only-binary=:all:", "-r", str(CURRENT)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr
        staging = Path(tempfile.mkdtemp(prefix=".text313-", dir=base))
        model = staging / "model"
        trained = subprocess.run(
            [python, str(TRAIN), "--out", str(model), "--example", "text"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stdout + trained.stderr
        expected = subprocess.run(
            [python, "-c", TRAINED_EXPECTATIONS, str(model), str(TRAIN.parent)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert expected.returncode == 0, expected.stderr
        (model / "expected.json").write_text(expected.stdout)
        try:
            os.rename(model, target)
        except OSError:  # another session won the race: use its copy
            assert (target / "expected.json").is_file()
    expected = json.loads((target / "expected.json").read_text())
    return target, expected


def test_a_model_trained_with_current_pins_is_served_by_python313(
    deps313: dict[str, Any],
    model313: tuple[Path, dict[str, Any]],
    bare313: Path,
    user_python: Path,
    tmp_path: Path,
) -> None:
    from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt

    model_dir, expected = model313
    meta = json.loads((model_dir / "metadata.json").read_text())
    pins = _pins()
    assert meta["versions"]["python"].startswith("3.13.")
    assert {k: meta["versions"][k] for k in ("scikit-learn", "numpy", "scipy", "joblib")} == {
        k: pins[k] for k in ("scikit-learn", "numpy", "scipy", "joblib")
    }
    # given the model layer built against the python3.13 x86_64 layer (the smoke test runs the
    # real function with Python 3.13 on both layers)
    layers = deps313["tmp"] / "layers"
    model_copy = tmp_path / "model"
    model_copy.mkdir()
    for name in [*meta["stages"], "metadata.json"]:
        (model_copy / name).write_bytes((model_dir / name).read_bytes())
    proc = subprocess.run(
        [str(user_python), "-c", "from mlayer.cli import main; main()", "build-model",
         str(model_copy), "--layers-dir", str(layers), "--deps",
         str(layers / "deps-python3.13-x86_64.json"), "--python", str(bare313), "--json"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = json.loads(proc.stdout)
    assert [(c["library"], c["model"]) for c in built["gate"]] == [
        (c["library"], c["layer"]) for c in built["gate"]
    ]
    assert not any(c["verdict"].startswith("refused") for c in built["gate"]), built["gate"]
    # when the function serves 200 reviews on both layers with Python 3.13
    opt = tmp_path / "opt"
    prepare_opt([Path(deps313["zip"]), Path(built["zip"])], opt)
    records = [{"id": str(i), "text": text} for i, text in enumerate(expected["texts"])]
    with LambdaEnvironment(task_dir=ROOT / "function", opt_dir=opt, python=str(bare313)) as env:
        invocation = env.invoke({"records": records})
        assert invocation.ok, invocation.logs
        assert env.init is not None and "Warning" not in env.init.stderr
    # then its predictions are the model's own, label for label, probability for probability
    response = invocation.response
    assert response["counts"]["predicted"] == 200 and response["batchItemFailures"] == []
    assert [p["label"] for p in response["predictions"]] == expected["labels"]
    assert [p["probability"] for p in response["predictions"]] == expected["probabilities"]
    assert len(set(expected["labels"])) == 2  # both classes occur: the comparison means something

    # and with the same model as its own shadow (a shadow layer: shadow/), the batch line
    # carries both directives and a perfect agreement, on Python 3.13 with today's libraries
    from mlayer.layers import load_build
    from mlayer.shadow_layer import build_shadow

    shadow = build_shadow(load_build(Path(built["zip"])), tmp_path)
    opt_shadowed = tmp_path / "opt-shadowed"
    prepare_opt([Path(deps313["zip"]), Path(built["zip"]), shadow.zip_path], opt_shadowed)
    with LambdaEnvironment(
        task_dir=ROOT / "function", opt_dir=opt_shadowed, python=str(bare313),
        function_name="scorer",
    ) as env:  # fmt: skip
        shadowed = env.invoke({"records": records})
        assert shadowed.ok, shadowed.logs
    assert shadowed.response["predictions"] == response["predictions"]
    (line,) = [
        json.loads(text) for text in shadowed.stdout.splitlines() if '"message":"batch"' in text
    ]
    directives = line["_aws"]["CloudWatchMetrics"]
    assert [d["Dimensions"] for d in directives] == [
        [["function", "model_version"]],
        [["function", "model_version", "shadow_version"]],
    ]
    assert (line["function"], line["records"], line["shadow_records"]) == ("scorer", 200, 200)
    assert (line["shadow_agreed"], line["shadow_agreement"], line["shadow_abs_diff"]) == (
        200,
        1.0,
        0.0,
    )
    labels = {label: expected["labels"].count(label) for label in set(expected["labels"])}
    assert {k[len("label:") :]: v for k, v in line.items() if k.startswith("label:")} == labels


def test_python313_arm64_cross_build_runs_mlayers_pip_with_the_users_python(
    user_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # given no Python 3.13 to be found: the venv's Python 3.11 (pip 23.2) must run pip
    tmp = tmp_path_factory.mktemp("deps313-arm64")
    env = _no_python_env(tmp, "3.13")
    cache = shared_build_cache(tmp_path_factory)
    # when cross building the current pins for python3.13 arm64
    result = _build(user_python, tmp, cache, "--arch", "arm64", env=env)
    # then mlayer's pip installed them (the venv's own pip would have refused numpy 2.5.5)
    manifest, report = result["manifest"], result["report"]
    assert manifest["packages"] == _pins() and manifest["pip"] == PIP_VERSION
    assert (report["pip"]["python"], report["pip"]["python_version"]) == (str(user_python), "3.11")
    # and every wheel is for cp313 on aarch64 with Amazon Linux 2023's glibc, every .so
    # (vendored libraries included) an AArch64 ELF
    layer = _unzip(result["zip"], tmp / "unzipped")
    _check_wheels(layer, Target("python3.13", "arm64"))
    shared = [p for p in layer.rglob("*.so*") if p.is_file()]
    assert len(shared) > 100
    assert {elf_machine(p) for p in shared} == {ELF_MACHINES["aarch64"]}
    # without a Python 3.13 there is no bytecode, and the build says so
    assert manifest["bytecode"] is False and "cannot load here" in report["verify"]["skipped"]
    warning = next(w for w in result["warnings"] if "WITHOUT bytecode" in w)
    assert warning.startswith(
        "the layer ships WITHOUT bytecode and with every .py source (no Python 3.13 "
        f"interpreter found (tried {tmp}/bin/python3.13: does not run; pyenv: no "
        f"{tmp}/pyenv/versions/3.13*/bin/python3.13; uv: not installed)): about 2 s more"
    ), warning
    assert "pass --python PATH to a Python 3.13" in warning
