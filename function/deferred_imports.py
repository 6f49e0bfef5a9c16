"""Deferred imports: modules the model never uses are imported but not executed.

``build-model --defer-imports`` traces which modules of the layers the model's load and
predict import but never use (numpy.f2py, numpy.testing, scipy's deprecated aliases, ...)
and lists them in the model's manifest (``deferred_imports``, docs/CONTRACTS.md "Deferred
imports"). At cold start :func:`install_for` puts a meta-path finder first in
``sys.meta_path``, before numpy or scikit-learn are imported: importing a listed module
creates its module object as usual but does not run its code; the first real use of the
module runs it, in place, in the same module object, as an eager import would have.

What counts as use, and what does not:

- ``import m`` and ``from pkg import m`` bind ``m`` without running it;
- ``__name__``, ``__spec__``, ``__loader__``, ``__package__``, ``__file__``, ``__cached__``
  and ``__path__`` read without running it (the import system reads ``__spec__`` at every
  ``import m``; ``module_from_spec`` sets them before an eager import runs the module too);
- every other attribute read, write or delete runs it first: ``from m import x``, ``m.x``,
  ``isinstance(obj, m.C)``, unpickling an object whose class lives in ``m`` (pickle looks
  the class up with ``getattr``), ``dir(m)``, ``vars(m)``;
- ``import m.sub`` runs ``m`` first: the finder runs a deferred package before it looks a
  submodule up, as an eager import would have, and when that run imported the submodule,
  the import system is handed that one module object (see :class:`_Existing`).

While a module runs, its spec says ``_initializing`` and the import system's lock for the
module is held, as during an eager import: other threads wait, the running thread sees it
partly initialised (as in a circular eager import); an exception propagates to the code
that used the module, and the module leaves ``sys.modules`` as a failed eager import does.
Only pure-Python modules (source or bytecode, as mlayer's layers ship them) of the layers
are deferred: never an extension module, the standard library or the function's own
modules. A listed module that is used after all is merely run at its first use. What it
cannot see: a module whose only effect is to register something elsewhere when it runs
(nobody reads its attributes) stays unregistered; the build's trace runs modules imported
by a dotted ``import a.b.c`` (the idiom for that), and its predictions and the smoke test's
must equal the eager ones.

``DEFERRED_IMPORTS=0`` in the environment turns it off. Standard library only: this module
runs before the layers are imported.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import sysconfig
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from importlib import _bootstrap
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec, SourceFileLoader, SourcelessFileLoader
from pathlib import Path
from typing import Any

ENV_SWITCH = "DEFERRED_IMPORTS"
MANIFEST_KEY = "deferred_imports"
# Set before exec by module_from_spec (an eager module has them before it runs): reading
# them does not run a deferred module. `import m.sub` reads m.__path__ after it looked for
# m.sub in sys.modules: the finder runs m before it looks m.sub up, as an eager import did.
_PASS_THROUGH = frozenset({
    "__name__", "__spec__", "__loader__", "__package__", "__file__", "__cached__", "__path__",
    "__class__",
})  # fmt: skip
_FUNCTION_DIR = str(Path(__file__).resolve().parent)
_STDLIB_DIRS = tuple(
    str(Path(p).resolve()) + os.sep
    for p in {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    if p
)
_module_getattribute = types.ModuleType.__getattribute__


class DeferredModule(types.ModuleType):
    """A module imported but not run yet: any use but reading its identity runs it."""

    def __getattribute__(self, name: str) -> Any:
        if name not in _PASS_THROUGH:
            _run(self)
        return _module_getattribute(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "__spec__":  # the import system sets it (module_from_spec) before a run
            _run(self)
        types.ModuleType.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        _run(self)
        types.ModuleType.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        _run(self)
        return list(types.ModuleType.__dir__(self))


# id(module) -> the thread running it. The module stays a DeferredModule while it runs: the
# running thread sees it as it is (a partly initialised module, as in a circular eager
# import), any other thread waits for the run to finish.
_RUNNING: dict[int, int] = {}


def _run(module: types.ModuleType) -> None:
    """Run a deferred module in place, once; other threads wait until it has run."""
    if _RUNNING.get(id(module)) == threading.get_ident():
        return  # its own run (or what that run calls) reads it
    spec: ModuleSpec = _module_getattribute(module, "__spec__")
    if isinstance(spec.loader, _Existing) and spec.loader.spec is not None:
        spec = spec.loader.spec  # the import system is handing the module over (_Existing)
    with _bootstrap._ModuleLockManager(spec.name):  # type: ignore[attr-defined]
        if type(module) is not DeferredModule or _RUNNING.get(id(module)):
            return  # another thread ran it while this one waited for the lock
        deferral: _Deferral = spec.loader_state[_STATE_KEY]
        initializing = getattr(spec, "_initializing", False)
        spec._initializing = True  # type: ignore[attr-defined]
        _RUNNING[id(module)] = threading.get_ident()
        try:
            loader = spec.loader
            assert loader is not None
            loader.exec_module(module)
        except BaseException:
            # As after a failed eager import: the next `import m` tries again from scratch.
            if sys.modules.get(spec.name) is module:
                del sys.modules[spec.name]
            raise
        finally:
            if type(module) is DeferredModule:  # unless its own code gave it another class
                object.__setattr__(module, "__class__", types.ModuleType)
            del _RUNNING[id(module)]
            spec._initializing = initializing  # type: ignore[attr-defined]
        with deferral.lock:
            deferral.ran.add(spec.name)


_STATE_KEY = "mlayer.deferred"


class _Deferral:
    """What the finder deferred, and which of those have run since."""

    def __init__(self) -> None:
        self.deferred: set[str] = set()
        self.ran: set[str] = set()
        self.lock = threading.Lock()


class _DeferringLoader(Loader):
    """Wraps a module's real loader: creates the module as it would, runs it later."""

    def __init__(self, loader: Loader, deferral: _Deferral) -> None:
        self.loader = loader
        self.deferral = deferral

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        # The real loader from here on, as an eager import leaves it (importlib.resources
        # and the module's own code may ask it for data).
        spec.loader = self.loader
        module.__loader__ = self.loader
        state = spec.loader_state if isinstance(spec.loader_state, dict) else {}
        state[_STATE_KEY] = self.deferral
        spec.loader_state = state
        with self.deferral.lock:
            self.deferral.deferred.add(spec.name)
        module.__class__ = DeferredModule


class _Existing(Loader):
    """Gives the import system the module a package's run put in ``sys.modules``, as it is.

    The import system looked for the module in ``sys.modules`` before the package ran; when
    a finder's spec arrives and the module is there by then, it loads the module's own
    ``__spec__`` again (a second module object; an extension module refuses). So the
    module's ``__spec__`` is this loader's spec until the import system is done with it.
    """

    def __init__(self, module: types.ModuleType, spec: ModuleSpec | None) -> None:
        self.module = module
        self.spec = spec

    def create_module(self, spec: ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        object.__setattr__(module, "__spec__", self.spec)


def _existing_spec(module: types.ModuleType) -> ModuleSpec:
    real = _module_getattribute(module, "__spec__")
    # No location, no search path: module_from_spec keeps the module's own attributes.
    spec = ModuleSpec(_module_getattribute(module, "__name__"), _Existing(module, real))
    object.__setattr__(module, "__spec__", spec)
    return spec


class DeferringFinder(MetaPathFinder):
    """First in ``sys.meta_path``: finds modules with the finders after it, and defers the
    eligible ones among ``names`` (all eligible ones when ``names`` is None: the trace)."""

    def __init__(self, names: Iterable[str] | None) -> None:
        self.names = None if names is None else frozenset(names)
        self.deferral = _Deferral()
        self._local = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if getattr(self._local, "finding", False):
            return None
        parent = sys.modules.get(fullname.rpartition(".")[0])
        ran_parent = type(parent) is DeferredModule
        if ran_parent:
            # Eager order: a package runs before its submodules are looked up. Its run may
            # import this very module (the import system looked in sys.modules before it
            # read the package's __path__): that one module object is the answer.
            assert parent is not None
            _run(parent)
            existing = sys.modules.get(fullname)
            if existing is not None:
                return _existing_spec(existing)
            path = getattr(parent, "__path__", path)  # the package's code may change it
        elif self.names is not None and fullname not in self.names:
            return None
        self._local.finding = True
        try:
            spec = _find_with_others(self, fullname, path, target)
        finally:
            self._local.finding = False
        if spec is None:
            return None
        if (self.names is not None and fullname not in self.names) or not eligible(spec):
            return spec if ran_parent else None
        assert spec.loader is not None
        spec.loader = _DeferringLoader(spec.loader, self.deferral)
        return spec

    def never_ran(self) -> list[str]:
        """The deferred modules not run (yet), top-most names only, sorted."""
        with self.deferral.lock:
            waiting = self.deferral.deferred - self.deferral.ran
        return top_most(waiting)

    def ran(self) -> list[str]:
        """The deferred modules that have run since, sorted."""
        with self.deferral.lock:
            return sorted(self.deferral.ran)


def _find_with_others(
    finder: DeferringFinder,
    fullname: str,
    path: Sequence[str] | None,
    target: types.ModuleType | None,
) -> ModuleSpec | None:
    for other in list(sys.meta_path):
        if other is finder:
            continue
        find = getattr(other, "find_spec", None)
        if find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


def eligible(spec: ModuleSpec) -> bool:
    """A pure-Python module (source or bytecode) outside the standard library and the
    function's own directory."""
    if type(spec.loader) not in (SourceFileLoader, SourcelessFileLoader):
        return False
    if spec.name.partition(".")[0] in sys.stdlib_module_names:
        return False
    origin = str(Path(spec.origin).resolve()) if spec.origin else ""
    if not origin:
        return False
    if origin.startswith(_STDLIB_DIRS) and "site-packages" not in origin:
        return False
    return not origin.startswith(_FUNCTION_DIR + os.sep)


def top_most(names: Iterable[str]) -> list[str]:
    """``names`` without those whose package is among them, sorted."""
    every = set(names)
    kept = []
    for name in every:
        parts = name.split(".")
        if not any(".".join(parts[:i]) in every for i in range(1, len(parts))):
            kept.append(name)
    return sorted(kept)


_installed: DeferringFinder | None = None


def install(names: Iterable[str] | None) -> DeferringFinder:
    """Put a finder deferring ``names`` (every eligible module when None: the build's trace)
    first in ``sys.meta_path``; the one installed before is removed. Modules already
    imported stay as they are.

    The trace also runs at once every module imported by a dotted ``import a.b.c`` statement:
    that is how packages import a module for what it does when it runs (pandas registers its
    options with ``import pandas.core.config_init``), which no attribute read would trigger.
    Run in the trace, such a module is not listed, so the function runs it at import too.
    """
    global _installed
    uninstall()
    finder = DeferringFinder(names)
    sys.meta_path.insert(0, finder)
    if names is None:
        builtins.__import__ = _DottedImportsRun(builtins.__import__)
    _installed = finder
    return finder


class _DottedImportsRun:
    """``builtins.__import__`` during the trace: runs what ``import a.b.c`` imported."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        module = self.original(name, globals, locals, fromlist, level)
        if not fromlist and "." in name:
            if level:
                package = (globals or {}).get("__package__") or ""
                name = _bootstrap._resolve_name(name, package, level)  # type: ignore[attr-defined]
            imported = sys.modules.get(name)
            if type(imported) is DeferredModule:
                _run(imported)
        return module


def uninstall() -> None:
    """Take the finder out of ``sys.meta_path`` (modules it deferred still run on use)."""
    global _installed
    if _installed is not None and _installed in sys.meta_path:
        sys.meta_path.remove(_installed)
    if isinstance(builtins.__import__, _DottedImportsRun):
        builtins.__import__ = builtins.__import__.original
    _installed = None


def installed() -> DeferringFinder | None:
    return _installed


def manifest_list(environ: Mapping[str, str]) -> list[str]:
    """The ``deferred_imports`` of the model layer's manifest (MODEL_DIR, default
    /opt/model), read before any library is imported; empty when there is none to read.

    A model from the store (MODEL_URI) gives none: its manifest arrives with the archive,
    whose download runs while the libraries import. A model set's ``set.json`` has none.
    """
    if environ.get("MODEL_URI"):
        return []
    directory = environ.get("MODEL_DIR") or "/opt/model"
    try:
        with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return []  # the model's own load reports what is wrong with the directory
    names = manifest.get(MANIFEST_KEY) if isinstance(manifest, dict) else None
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str) and name]


def install_for(environ: Mapping[str, str]) -> DeferringFinder | None:
    """At cold start: defer what the model's manifest lists, unless ``DEFERRED_IMPORTS=0``.
    Returns the finder, or None when nothing is deferred."""
    if (environ.get(ENV_SWITCH) or "").strip() == "0":
        return None
    names = manifest_list(environ)
    if not names:
        return None
    return install(names)
