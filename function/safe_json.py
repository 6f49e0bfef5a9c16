"""JSON text of anything a record can hold, without ever raising.

The log lines, the dead-letter messages and the output stream's records are JSON. orjson
writes them fast, but raises on what a direct invocation can carry: a string with a lone
surrogate (``"\\ud800"``, which Python's json.loads accepts), an integer over 64 bits, a
value nested deeper than 255 levels, a dict with non-string keys. A raise there would fail
the whole invocation over one bad record, so those values take a slower path that always
succeeds and writes ASCII only: lone surrogates as ``\\ud800`` escapes, big integers as
numbers (as hexadecimal strings past Python's 4,300-digit conversion limit), NaN and
infinities as null (what orjson writes for them), other objects as ``str()``.

ASCII output also keeps dead-letter messages within the characters SQS accepts (#x9, #xA,
#xD, #x20 to #xD7FF, #xE000 to #xFFFD, #x10000 to #x10FFFF).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

# U+FFFE and U+FFFF in UTF-8: valid JSON, but characters SQS refuses in a message body.
_SQS_REFUSED = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")

try:
    import orjson

    def dumps_bytes(value: Any) -> bytes:
        """Compact JSON as UTF-8 bytes; never raises (see the module docstring)."""
        try:
            return orjson.dumps(value, default=str)
        except (TypeError, ValueError, RecursionError):
            return ascii_dumps(value).encode("ascii")

except ImportError:  # the dependency layer pins orjson; the standard library's path is slower

    def dumps_bytes(value: Any) -> bytes:
        """Compact JSON as UTF-8 bytes; never raises (see the module docstring)."""
        return ascii_dumps(value).encode("ascii")


def dumps(value: Any) -> str:
    """Compact JSON text; never raises (see the module docstring)."""
    return dumps_bytes(value).decode("utf-8")


def message_body(value: Any) -> bytes:
    """JSON for an SQS message body: UTF-8 made only of characters SQS accepts."""
    body = dumps_bytes(value)
    if any(refused in body for refused in _SQS_REFUSED):
        return ascii_dumps(value).encode("ascii")
    return body


def ascii_dumps(value: Any) -> str:
    """ASCII-only JSON text of ``value``, whatever it holds; never raises."""
    try:
        return json.dumps(
            value, ensure_ascii=True, allow_nan=False, default=str, separators=(",", ":")
        )
    except (TypeError, ValueError, RecursionError):
        # NaN, an int past the 4,300-digit limit, non-string keys, deep nesting, a failing
        # __str__: the iterative encoder below handles each without recursion.
        return "".join(_chunks(value))


def _chunks(value: Any) -> Iterator[str]:
    # An explicit stack instead of recursion: depth is bounded by memory, not the C stack.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            yield item.text
        elif isinstance(item, Mapping):
            yield "{"
            pending: list[Any] = []
            for position, (key, member) in enumerate(list(item.items())):
                if position:
                    pending.append(_COMMA)
                pending.append(_Raw(encode_basestring_ascii(_text(key)) + ":"))
                pending.append(member)
            pending.append(_Raw("}"))
            stack.extend(reversed(pending))
        elif isinstance(item, list | tuple):
            yield "["
            pending = []
            for position, member in enumerate(item):
                if position:
                    pending.append(_COMMA)
                pending.append(member)
            pending.append(_Raw("]"))
            stack.extend(reversed(pending))
        else:
            yield _scalar(item)


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_COMMA = _Raw(",")


def _scalar(value: Any) -> str:
    if value is None or value is True or value is False:
        return json.dumps(value)
    if isinstance(value, int):
        try:
            return str(int(value))
        except ValueError:  # over sys.get_int_max_str_digits(): hex has no such limit
            return encode_basestring_ascii(hex(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    return encode_basestring_ascii(_text(value))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # a __str__ that raises: its type still says what it was
        return f"<unprintable {type(value).__name__}>"
