"""Read what a model file needs without executing it.

Loading a pickle (or a joblib file, which is a pickle) runs code: every global it names is
imported and called. The compatibility gate must not do that on the build machine, so it
reads the file with a pickle virtual machine whose globals are inert stand-ins
(:class:`_Stub`): the opcodes are interpreted, the objects they would build are recorded,
nothing is imported, nothing named in the file is called. What it records:

- every ``module.name`` the file references (the classes and functions unpickling would
  import: ``sklearn.linear_model._logistic.LogisticRegression``, ``numpy._core...``, and
  ``__main__.MyTransformer`` when a class was defined in the training script);
- the ``_sklearn_version`` each scikit-learn estimator's pickled state records;
- the numpy major version (numpy 2 pickles reference ``numpy._core``, numpy 1
  ``numpy.core``).

joblib files need two things more than plain pickles, both handled here as joblib's own
reader does: they may be compressed as a whole (zlib, gzip, bz2, xz, lzma; lz4 needs the
``lz4`` package), and numpy arrays are written as raw bytes right after a
``NumpyArrayWrapper`` object in the stream (object arrays as a nested pickle), so the scanner
skips ``shape x itemsize`` bytes (plus joblib's alignment padding) where joblib would read
them.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# joblib.numpy_pickle_utils: the magic bytes of each compressor's stream.
_ZLIB_PREFIX = b"\x78"
_GZIP_PREFIX = b"\x1f\x8b"
_BZ2_PREFIX = b"BZ"
_XZ_PREFIX = b"\xfd\x37\x7a\x58\x5a"
_LZMA_PREFIX = b"\x5d\x00"
_LZ4_PREFIX = b"\x04\x22\x4d\x18"
_JOBLIB_WRAPPERS = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
}
_OLD_JOBLIB_WRAPPERS = {
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"),
    ("joblib.numpy_pickle", "NDArrayWrapper"),
}


class ScanError(ValueError):
    """The file is not a pickle this scanner can read (the message says why)."""


@dataclass
class ScanResult:
    """What one model file references and records."""

    path: str
    compression: str | None  # None: uncompressed
    globals: set[str] = field(default_factory=set)  # "module.name"
    sklearn_versions: set[str] = field(default_factory=set)

    @property
    def modules(self) -> set[str]:
        return {ref.rsplit(".", 1)[0] for ref in self.globals}

    @property
    def top_level_modules(self) -> set[str]:
        return {module.split(".", 1)[0] for module in self.modules}

    @property
    def numpy_major(self) -> int | None:
        modules = self.modules
        if any(m == "numpy._core" or m.startswith("numpy._core.") for m in modules):
            return 2
        if any(m == "numpy.core" or m.startswith("numpy.core.") for m in modules):
            return 1
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "sklearn_versions": sorted(self.sklearn_versions),
            "numpy_major": self.numpy_major,
            "classes": sorted(self.globals),
            "modules": sorted(self.top_level_modules),
        }


class _Stub:
    """What a global of the file stands for: records how it is called and built, runs nothing."""

    _ref: tuple[str, str] = ("", "")
    args: tuple[Any, ...]
    state: Any
    items: dict[int, tuple[Any, Any]]
    elements: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        instance = super().__new__(cls)
        instance.args = args
        instance.state = None
        instance.items = {}
        instance.elements = []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # Containers rebuilt through a global (OrderedDict, defaultdict, set...) get items added.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[id(key)] = (key, value)

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def add(self, value: Any) -> None:
        self.elements.append(value)

    # Attribute reads on a stub are stubs (e.g. a ``getattr`` global applied to one).
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(*args)


class _Scanner(pickle._Unpickler):  # the pure-Python VM, whose opcodes can be overridden
    def __init__(self, file: IO[bytes], result: ScanResult) -> None:
        super().__init__(file)
        self._raw = file
        self._result = result
        self._classes: dict[tuple[str, str], type[_Stub]] = {}
        # The BUILD handler is looked up in this per-instance copy of the dispatch table.
        dispatch: dict[int, Any] = dict(pickle._Unpickler.dispatch)
        dispatch[pickle.BUILD[0]] = _Scanner._load_build
        self.__dict__["dispatch"] = dispatch

    def find_class(self, module: str, name: str) -> Any:
        self._result.globals.add(f"{module}.{name}")
        key = (module, name)
        stub = self._classes.get(key)
        if stub is None:
            stub = type(name.replace(".", "_") or "stub", (_Stub,), {"_ref": key})
            self._classes[key] = stub
        return stub

    def persistent_load(self, pid: Any) -> Any:
        return _Stub(pid)

    def _load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        state = stack.pop()
        inst = stack[-1]
        _record_versions(state, self._result)
        if isinstance(inst, _Stub):
            inst.state = state
            if inst._ref in _JOBLIB_WRAPPERS:
                self._skip_array(inst)
            elif inst._ref in _OLD_JOBLIB_WRAPPERS:
                raise ScanError(
                    "it was written by joblib older than 0.10 (arrays in separate files); "
                    "load it and save it again with a current joblib"
                )
            return
        # A builtin object (a dict built with EMPTY_DICT, ...): apply the state as pickle does.
        if isinstance(state, tuple) and len(state) == 2:
            state, _slots = state
        if isinstance(state, dict) and hasattr(inst, "__dict__"):
            inst.__dict__.update(state)

    def _skip_array(self, wrapper: _Stub) -> None:
        """Skip the array bytes joblib wrote after a NumpyArrayWrapper (as its reader reads)."""
        state = wrapper.state if isinstance(wrapper.state, dict) else {}
        dtype = state.get("dtype")
        shape = state.get("shape")
        if not isinstance(shape, tuple):
            raise ScanError("a joblib array wrapper has no shape")
        count = 1
        for dim in shape:
            count *= _as_int(dim)
        itemsize, has_object = _dtype_size(dtype)
        if has_object:
            # A nested pickle stream with its own stack, read from the same file.
            nested = _Scanner(self._raw, self._result)
            nested._classes = self._classes
            nested.load()
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self._raw.read(1)
            if len(padding) != 1:
                raise ScanError("the file ends inside an array's padding")
            _skip(self._raw, padding[0])
        _skip(self._raw, count * itemsize)


def _record_versions(state: Any, result: ScanResult) -> None:
    if isinstance(state, tuple) and len(state) == 2:
        state = state[0]
    if isinstance(state, dict):
        version = state.get("_sklearn_version")
        if isinstance(version, str):
            result.sklearn_versions.add(version)


def _as_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, _Stub) and len(value.args) == 2 and isinstance(value.args[1], bytes):
        # numpy scalar: numpy._core.multiarray.scalar(dtype, raw bytes)
        return int.from_bytes(value.args[1], "little", signed=True)
    raise ScanError(f"a joblib array has a dimension that is not an integer ({value!r})")


_TYPE_SIZE = re.compile(r"^[<>|=]?([A-Za-z?]+)(\d*)")


def _dtype_size(dtype: Any) -> tuple[int, bool]:
    """(itemsize, has Python objects) of a stubbed ``numpy.dtype(...)``."""
    if not isinstance(dtype, _Stub) or not dtype.args or not isinstance(dtype.args[0], str):
        raise ScanError("a joblib array has no readable dtype")
    code = dtype.args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    match = _TYPE_SIZE.match(code)
    kind = match.group(1) if match else code
    if kind == "O" or flags & 1:  # NPY_ITEM_HASOBJECT
        return 0, True
    elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
    if elsize > 0:
        return elsize, False
    if match and match.group(2):
        return int(match.group(2)), False
    if kind in ("?", "b"):
        return 1, False
    raise ScanError(f"a joblib array has a dtype of unknown size ({code!r})")


def _skip(file: IO[bytes], count: int) -> None:
    if isinstance(file, io.BufferedReader | io.FileIO) and file.seekable():
        file.seek(count, io.SEEK_CUR)  # an uncompressed file: no need to read the bytes
        return
    while count > 0:
        chunk = file.read(min(count, 1 << 24))
        if not chunk:
            raise ScanError("the file ends inside an array's data (truncated?)")
        count -= len(chunk)


class _ZlibReader(io.RawIOBase):
    """A raw zlib stream (joblib's ``compress=`` default) as a readable file."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = self._file.read(1 << 20)
            if not chunk:
                self._buffer = self._inflate.flush()
                if not self._buffer:
                    return 0
                break
            self._buffer = self._inflate.decompress(chunk)
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@contextmanager
def _open(path: Path) -> Iterator[tuple[IO[bytes], str | None]]:
    with path.open("rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        stream: Any
        # The decompressing wrappers read from ``raw``, which the with-block closes.
        if head.startswith(_GZIP_PREFIX):
            stream, kind = gzip.GzipFile(fileobj=raw), "gzip"
        elif head.startswith(_BZ2_PREFIX):
            stream, kind = bz2.BZ2File(raw), "bz2"
        elif head.startswith(_XZ_PREFIX):
            stream, kind = lzma.LZMAFile(raw, format=lzma.FORMAT_XZ), "xz"  # noqa: SIM115
        elif head.startswith(_LZMA_PREFIX):
            stream, kind = lzma.LZMAFile(raw, format=lzma.FORMAT_ALONE), "lzma"  # noqa: SIM115
        elif head.startswith(_ZLIB_PREFIX):
            stream, kind = io.BufferedReader(_ZlibReader(raw), 1 << 20), "zlib"
        elif head.startswith(_LZ4_PREFIX):
            try:
                import lz4.frame
            except ImportError:
                raise ScanError(
                    "it is lz4-compressed and the lz4 package is not installed here; "
                    "pip install lz4, or save it with joblib.dump(model, path, compress=3)"
                ) from None
            stream, kind = lz4.frame.open(raw), "lz4"
        elif head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}", b"c"):
            stream, kind = raw, None  # protocol 2+ starts with PROTO; 0/1 with an opcode
        else:
            raise ScanError(
                "it is neither a pickle nor a joblib file (unknown first bytes "
                f"{head[:4].hex()}); save the model with joblib.dump(model, path)"
            )
        yield stream, kind


def scan(path: Path) -> ScanResult:
    """What the model file at ``path`` references and records, without executing it.

    Raises:
        ScanError: the file is not a readable pickle / joblib file.
    """
    path = Path(path)
    with _open(path) as (stream, compression):
        result = ScanResult(path=str(path), compression=compression)
        try:
            _Scanner(stream, result).load()
        except ScanError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as exc:
            raise ScanError(f"it is not a readable pickle ({type(exc).__name__}: {exc})") from None
        except (KeyError, IndexError, AttributeError, RecursionError) as exc:
            raise ScanError(f"its pickle stream is malformed ({type(exc).__name__})") from None
    return result
