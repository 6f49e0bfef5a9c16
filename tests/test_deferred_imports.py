"""Deferred imports (function/deferred_imports.py): a deferred module behaves as an eager one.

- Semantics, on a small package tree written here: ``import m`` binds without running it,
  its identity reads do not run it, any other use runs it once and in place (``from m
  import x``, ``m.x``, ``isinstance``, unpickling, ``dir``), ``import m.sub`` runs ``m``
  first, a package whose run imports the very submodule being imported gives that one
  module object, a failure propagates, threads run it once; the trace lists what never ran
  and runs what a dotted ``import a.b.c`` imported (imports made for their side effects).
- Every package of the real dependency layers (python3.11 with requirements.txt, with and
  without pandas; python3.13 with tests/pins/current-py313.txt) imports with every module
  deferred, and running every deferred module then leaves exactly the modules, and the same
  public names, an eager import gives; fresh ``python -I -S`` processes on the layer.
- The python3.13 sample model built with ``--defer-imports`` is served with the model's own
  predictions (the corpus of users' models is built the same way in test_model_corpus.py).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from function_support import FUNCTION_DIR
from test_build_deps_current import (  # noqa: F401  (fixtures)
    bare313,
    deps313,
    model313,
    python313,
    user_python,
)

import deferred_imports
from deferred_imports import DeferredModule

ROOT = Path(__file__).resolve().parent.parent
FUNCTION = FUNCTION_DIR

TREE = {
    "tracker.py": "RAN = []\n",
    "dpkg/__init__.py": "import tracker\ntracker.RAN.append(__name__)\nfrom . import heavy\n",
    "dpkg/heavy.py": (
        "import tracker\ntracker.RAN.append(__name__)\nVALUE = 42\n"
        "class Thing:\n    def __init__(self, n):\n        self.n = n\n"
    ),
    "dpkg/broken.py": "import tracker\ntracker.RAN.append(__name__)\nraise RuntimeError('boom')\n",
    "dpkg/lazy/__init__.py": (
        "import tracker\ntracker.RAN.append(__name__)\nX = 1\nfrom dpkg.lazy import child\n"
    ),
    "dpkg/lazy/child.py": (
        "import tracker\ntracker.RAN.append(__name__)\nfrom dpkg.lazy import X\nY = X + 1\n"
    ),
    "dpkg/registry.py": "NAMES = []\n",
    "dpkg/plugin.py": "import tracker\ntracker.RAN.append(__name__)\n"
    "from dpkg import registry\nregistry.NAMES.append('plugin')\n",
    "dpkg/user.py": (
        "import tracker\ntracker.RAN.append(__name__)\nimport dpkg.plugin\n"
        "from dpkg import registry\n"
    ),
    "dpkg/slow.py": (
        "import time, tracker\ntracker.RAN.append(__name__)\ntime.sleep(0.2)\nDONE = True\n"
    ),
}


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """The package tree on sys.path; every module of it forgotten and the finder removed
    afterwards."""
    for name, text in TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        deferred_imports.uninstall()
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "tracker" or n.split(".")[0] == "dpkg"]:
            del sys.modules[name]


def _ran() -> list[str]:
    import tracker

    return list(tracker.RAN)


def test_import_binds_without_running_and_identity_reads_do_not_run(tree: Path) -> None:
    # given dpkg.heavy deferred
    finder = deferred_imports.install(["dpkg.heavy"])
    # when dpkg (which does `from . import heavy`) and dpkg.heavy are imported
    import dpkg
    import dpkg.heavy

    # then heavy is bound, not run, and reading its identity does not run it
    assert type(dpkg.heavy) is DeferredModule
    assert dpkg.heavy.__name__ == "dpkg.heavy"
    assert dpkg.heavy.__spec__ is not None and dpkg.heavy.__spec__.name == "dpkg.heavy"
    assert dpkg.heavy.__file__ == str(tree / "dpkg" / "heavy.py")
    assert dpkg.heavy.__loader__ is dpkg.heavy.__spec__.loader
    assert dpkg.heavy.__package__ == "dpkg"
    assert repr(dpkg.heavy).startswith("<module 'dpkg.heavy'")
    assert _ran() == ["dpkg"]
    assert finder.never_ran() == ["dpkg.heavy"]


def test_from_import_runs_it_once_in_place(tree: Path) -> None:
    finder = deferred_imports.install(["dpkg.heavy"])
    import dpkg.heavy

    module = dpkg.heavy
    from dpkg.heavy import VALUE

    assert VALUE == 42
    assert type(module) is type(sys) and sys.modules["dpkg.heavy"] is module
    assert module.VALUE == 42
    assert _ran() == ["dpkg", "dpkg.heavy"]
    assert finder.never_ran() == [] and finder.ran() == ["dpkg.heavy"]


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda m: m.VALUE, id="attribute"),
        pytest.param(lambda m: dir(m), id="dir"),
        pytest.param(lambda m: vars(m), id="vars"),
        pytest.param(lambda m: setattr(m, "VALUE", 7), id="setattr"),
        pytest.param(lambda m: isinstance(object(), m.Thing), id="isinstance"),
    ],
)
def test_every_other_use_runs_it_first(tree: Path, use: Any) -> None:
    deferred_imports.install(["dpkg.heavy"])
    import dpkg.heavy as heavy

    assert type(heavy) is DeferredModule
    use(heavy)
    assert _ran() == ["dpkg", "dpkg.heavy"]
    assert "Thing" in dir(heavy)


def test_unpickling_an_object_whose_class_lives_in_it(tree: Path) -> None:
    # given a pickle of dpkg.heavy.Thing made by an eager process
    made = subprocess.run(
        [sys.executable, "-c", "import pickle, sys, dpkg.heavy as h; "
         "sys.stdout.buffer.write(pickle.dumps(h.Thing(5)))"],
        capture_output=True, check=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
    ).stdout  # fmt: skip
    deferred_imports.install(["dpkg.heavy"])
    import dpkg.heavy

    assert type(dpkg.heavy) is DeferredModule
    # when it is unpickled
    thing = pickle.loads(made)
    # then the module ran, and the object is of its class
    assert isinstance(thing, dpkg.heavy.Thing) and thing.n == 5
    assert pickle.loads(pickle.dumps(thing)).n == 5
    assert _ran() == ["dpkg", "dpkg.heavy"]


def test_import_of_a_submodule_runs_the_package_first(tree: Path) -> None:
    # given the package deferred; its own code imports the child (a circle through it)
    deferred_imports.install(["dpkg.lazy", "dpkg.lazy.child"])
    import dpkg.lazy

    assert type(dpkg.lazy) is DeferredModule
    # when the child is imported
    import dpkg.lazy.child

    # then the package ran, and the child its run imported is the one module bound
    assert "dpkg.lazy" in _ran() and "dpkg.lazy.child" not in _ran()
    child = sys.modules["dpkg.lazy.child"]
    assert dpkg.lazy.child is child and type(child) is DeferredModule
    spec = child.__spec__
    assert spec is not None and type(spec.loader).__name__ == "SourceFileLoader"  # its own
    assert spec.name == "dpkg.lazy.child" and str(spec.origin).endswith("child.py")
    # and using it runs it once, after its package
    assert child.Y == 2
    ran = _ran()
    assert ran.index("dpkg.lazy") < ran.index("dpkg.lazy.child")
    assert ran.count("dpkg.lazy.child") == 1


def test_a_failure_propagates_and_the_next_import_tries_again(tree: Path) -> None:
    deferred_imports.install(["dpkg.broken"])
    import dpkg.broken

    with pytest.raises(RuntimeError, match="boom"):
        dpkg.broken.anything  # noqa: B018
    assert "dpkg.broken" not in sys.modules
    import dpkg.broken

    assert type(sys.modules["dpkg.broken"]) is DeferredModule
    with pytest.raises(RuntimeError, match="boom"):
        sys.modules["dpkg.broken"].anything  # noqa: B018
    assert _ran().count("dpkg.broken") == 2


def test_threads_run_it_once(tree: Path) -> None:
    deferred_imports.install(["dpkg.slow"])
    import dpkg.slow

    seen: list[bool] = []
    threads = [threading.Thread(target=lambda: seen.append(dpkg.slow.DONE)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True] * 4
    assert _ran().count("dpkg.slow") == 1


def test_only_pure_python_modules_outside_the_standard_library_are_deferred() -> None:
    import importlib.util

    json_spec = importlib.util.find_spec("json.decoder")
    extension = importlib.util.find_spec("numpy._core._multiarray_umath")
    function_own = importlib.util.find_spec("records")
    layer_module = importlib.util.find_spec("joblib.hashing")
    assert json_spec is not None and extension is not None and function_own is not None
    assert layer_module is not None
    assert not deferred_imports.eligible(json_spec)
    assert not deferred_imports.eligible(extension)
    assert not deferred_imports.eligible(function_own)
    assert deferred_imports.eligible(layer_module)


def test_the_trace_lists_what_never_ran_and_runs_dotted_imports(tree: Path) -> None:
    # A fresh process: the trace defers every module imported after it is installed.
    script = (
        "import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import deferred_imports\n"
        "finder = deferred_imports.install(None)\n"
        "from dpkg import user\n"
        "user.__doc__\n"
        "from dpkg import registry\n"
        "import tracker\n"
        "print(json.dumps({'never': finder.never_ran(), 'names': registry.NAMES,"
        " 'ran': tracker.RAN}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(FUNCTION), str(tree)],
        capture_output=True, text=True, cwd=tree,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # user's `import dpkg.plugin` (for what it registers) ran; heavy was never used
    assert out["names"] == ["plugin"]
    assert "dpkg.plugin" in out["ran"]
    assert out["never"] == ["dpkg.heavy"]


def test_the_manifest_list_and_the_switch(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"deferred_imports": ["scipy.stats"]}))
    environ = {"MODEL_DIR": str(tmp_path)}
    assert deferred_imports.manifest_list(environ) == ["scipy.stats"]
    assert deferred_imports.manifest_list({**environ, "MODEL_URI": "s3://b/k"}) == []
    assert deferred_imports.install_for({**environ, "DEFERRED_IMPORTS": "0"}) is None
    assert deferred_imports.manifest_list({"MODEL_DIR": str(tmp_path / "none")}) == []
    try:
        finder = deferred_imports.install_for(environ)
        assert finder is not None and finder.names == frozenset({"scipy.stats"})
        assert sys.meta_path[0] is finder
    finally:
        deferred_imports.uninstall()
    assert all(not isinstance(f, deferred_imports.DeferringFinder) for f in sys.meta_path)


# --------------------------------------------------------------------------- real layers

IMPORT_CHECK = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
layer = sys.argv[2]
deferred = sys.argv[3] == "deferred"
import deferred_imports
if deferred:
    finder = deferred_imports.install(None)
names = json.loads(sys.argv[4])
errors = {}
for name in names:
    try:
        __import__(name)
    except Exception as exc:
        errors[name] = type(exc).__name__
ran = 0
if deferred:
    # run every deferred module (as a use would), until none is left
    while True:
        waiting = [m for m in list(sys.modules.values()) if type(m) is deferred_imports.DeferredModule]
        if not waiting:
            break
        for module in waiting:
            try:
                dir(module)
                ran += 1
            except Exception as exc:
                errors[module.__spec__.name] = type(exc).__name__
modules = sorted(
    name for name, m in sys.modules.items()
    if str(getattr(m, "__file__", "") or "").startswith(layer)
)
public = {name: sorted(n for n in dir(sys.modules[name]) if not n.startswith("_"))
          for name in names if name in sys.modules}
print(json.dumps({"errors": errors, "modules": modules, "public": public, "ran": ran}))
"""


def _layer_packages(python_dir: Path) -> list[str]:
    """Every top-level importable name of a layer's python/ (packages and modules)."""
    names = set()
    for entry in python_dir.iterdir():
        if entry.name.endswith((".dist-info", ".libs")) or entry.name == "__pycache__":
            continue
        if entry.is_dir() and (
            (entry / "__init__.py").exists() or (entry / "__init__.pyc").exists()
        ):
            names.add(entry.name)
        elif entry.suffix in (".py", ".pyc") or entry.name.endswith(".so"):
            names.add(entry.name.split(".")[0])
    return sorted(names)


def _import_check(python: str, layer_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(layer_zip) as archive:
        archive.extractall(tmp_path / "layer")
    python_dir = tmp_path / "layer" / "python"
    names = _layer_packages(python_dir)
    assert {"numpy", "scipy", "sklearn", "joblib"} <= set(names)
    results = {}
    for mode in ("eager", "deferred"):
        proc = subprocess.run(
            [python, "-I", "-S", "-B", "-c", IMPORT_CHECK, str(FUNCTION), str(python_dir), mode,
             json.dumps(names)],
            capture_output=True, text=True, cwd="/",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = json.loads(proc.stdout)
    eager, deferred = results["eager"], results["deferred"]
    assert eager["errors"] == {}, eager["errors"]
    assert deferred["errors"] == {}, deferred["errors"]
    assert deferred["ran"] > 100  # the deferral was at work
    assert deferred["modules"] == eager["modules"]
    assert deferred["public"] == eager["public"]


def test_every_package_of_the_python311_layers_imports_as_eagerly(
    deps_layers: Path, pandas_deps_layers: Path, tmp_path: Path
) -> None:
    for n, layers in enumerate((deps_layers, pandas_deps_layers)):
        (layer_zip,) = layers.glob("deps-python3.11-x86_64.zip")
        _import_check(sys.executable, layer_zip, tmp_path / str(n))


SERVE = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import lambda_function, deferred_imports
records = json.loads(sys.argv[3])
response = lambda_function.lambda_handler({"records": records}, None)
finder = deferred_imports.installed()
listed = deferred_imports.manifest_list(__import__("os").environ)
print(json.dumps({
    "predictions": response["predictions"],
    "installed": finder is not None,
    "waiting": sorted(n for n in listed
                      if type(sys.modules.get(n)) is deferred_imports.DeferredModule),
    "sklearn": type(sys.modules["sklearn"]).__name__,
}))
"""


def _build(
    model: Path, layers: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", "build-model", str(model),
         "--layers-dir", str(layers), *args],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (manifest,) = layers.glob("model-*.json")
    return proc, json.loads(manifest.read_text())


@pytest.mark.parametrize("example", ["text", "numeric"])
def test_the_function_defers_what_the_manifest_lists_and_predicts_the_same(
    example: str, deps_layers: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model_dir: Path = request.getfixturevalue(f"{example}_model_dir")
    layers = tmp_path / "layers"
    layers.mkdir()
    for path in deps_layers.glob("deps-*"):
        os.link(path, layers / path.name)
    # given the sample model built with --defer-imports (trace and smoke test passed)
    proc, manifest = _build(model_dir, layers, "--defer-imports")
    listed = manifest["deferred_imports"]
    assert len(listed) > 20
    assert f"deferred imports: {len(listed)} modules" in " ".join(proc.stdout.split())
    opt = tmp_path / "opt"
    (layer_zip,) = layers.glob("deps-*.zip")
    (model_zip,) = layers.glob("model-*.zip")
    for archive in (layer_zip, model_zip):
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(opt)
    meta = json.loads((model_dir / "metadata.json").read_text())
    records = [meta["examples"][i % len(meta["examples"])] for i in range(50)]
    runs = {}
    # when the function scores them with the list, and with DEFERRED_IMPORTS=0
    for mode, env in (("deferred", {}), ("eager", {"DEFERRED_IMPORTS": "0"})):
        served = subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", SERVE, str(FUNCTION), str(opt / "python"),
             json.dumps(records)],
            capture_output=True, text=True, cwd="/",
            env={"PATH": os.environ["PATH"], "MODEL_DIR": str(opt / "model"), **env},
        )  # fmt: skip
        assert served.returncode == 0, served.stderr[-3000:]
        runs[mode] = json.loads(served.stdout.strip().splitlines()[-1])
    # then the listed modules are still waiting after a batch, none when turned off, and the
    # predictions (labels and probabilities) are the same
    assert runs["deferred"]["installed"] and len(runs["deferred"]["waiting"]) > 20
    assert not runs["eager"]["installed"] and runs["eager"]["waiting"] == []
    assert runs["deferred"]["sklearn"] == "module"
    assert runs["deferred"]["predictions"] == runs["eager"]["predictions"]
    assert len(runs["eager"]["predictions"]) == 50


def test_a_model_for_the_store_defers_nothing(
    deps_layers: Path, text_model_dir: Path, tmp_path: Path
) -> None:
    layers = tmp_path / "layers"
    layers.mkdir()
    for path in deps_layers.glob("deps-*"):
        os.link(path, layers / path.name)
    proc, manifest = _build(text_model_dir, layers, "--defer-imports", "--store", "s3")
    assert manifest["package"] == "store" and manifest["deferred_imports"] == []
    assert (
        "Note: deferred imports: nothing is deferred for a model from the store (MODEL_URI): "
        "its manifest arrives with the archive, while the libraries import"
    ) in proc.stdout
    # and without the flag, the manifest has no list at all
    (layers / "model-sentiment-v1.tar").unlink()
    (layers / "model-sentiment-v1.json").unlink()
    _, plain = _build(text_model_dir, layers)
    assert "deferred_imports" not in plain


@pytest.mark.slow
def test_every_package_of_the_python313_layer_imports_as_eagerly(
    deps313: dict[str, Any],  # noqa: F811
    bare313: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _import_check(str(bare313), Path(deps313["zip"]), tmp_path)


@pytest.mark.slow
def test_python313_model_built_with_deferred_imports_predicts_as_the_model(
    deps313: dict[str, Any],  # noqa: F811
    model313: tuple[Path, dict[str, Any]],  # noqa: F811
    bare313: Path,  # noqa: F811
    user_python: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt

    model_dir, expected = model313
    meta = json.loads((model_dir / "metadata.json").read_text())
    model_copy = tmp_path / "model"
    model_copy.mkdir()
    for name in [*meta["stages"], "metadata.json"]:
        (model_copy / name).write_bytes((model_dir / name).read_bytes())
    layers = tmp_path / "layers"
    layers.mkdir()
    for path in (deps313["tmp"] / "layers").glob("deps-python3.13-x86_64.*"):
        os.link(path, layers / path.name)
    # given the model built with --defer-imports (its trace and smoke test run Python 3.13)
    proc = subprocess.run(
        [str(user_python), "-c", "from mlayer.cli import main; main()", "build-model",
         str(model_copy), "--layers-dir", str(layers), "--python", str(bare313),
         "--defer-imports", "--json"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = json.loads(proc.stdout)
    listed = built["manifest"]["deferred_imports"]
    assert len(listed) > 20 and "sklearn.__check_build" in listed, listed
    with zipfile.ZipFile(built["zip"]) as archive:
        inner = json.loads(archive.read("model/manifest.json"))
    assert inner["deferred_imports"] == listed
    opt = tmp_path / "opt"
    prepare_opt([Path(deps313["zip"]), Path(built["zip"])], opt)
    records = [{"id": str(i), "text": text} for i, text in enumerate(expected["texts"])]
    responses = {}
    # when the function serves 200 reviews with the list, and with DEFERRED_IMPORTS=0
    for mode, env in (("deferred", {}), ("eager", {"DEFERRED_IMPORTS": "0"})):
        with LambdaEnvironment(task_dir=FUNCTION, opt_dir=opt, python=str(bare313), env=env) as lam:
            invocation = lam.invoke({"records": records})
            assert invocation.ok, invocation.logs
            assert lam.init is not None and "Warning" not in lam.init.stderr
        responses[mode] = invocation.response
    # then both answer the model's own labels and probabilities
    for response in responses.values():
        assert [p["label"] for p in response["predictions"]] == expected["labels"]
        assert [p["probability"] for p in response["predictions"]] == expected["probabilities"]
