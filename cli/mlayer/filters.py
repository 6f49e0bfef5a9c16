"""Lambda event filtering (an event source mapping's ``FilterCriteria``): check patterns, match records.

``mlayer trigger --filter`` checks patterns here before Lambda sees them, and ``run-local``
drops the records they do not match before batching, as Lambda does, so that a local run
counts the invocations Lambda would make. What is implemented, from "Control which events
Lambda sends to your function" (docs.aws.amazon.com/lambda/latest/dg/invocation-
eventfiltering.html) and the EventBridge event pattern rules it takes its syntax from:

- ``FilterCriteria`` is ``{"Filters": [{"Pattern": "<JSON>"}, ...]}``; up to 5 filters per
  mapping by default (10 with a quota increase), ORed: a record that matches any is sent,
  one that matches none is dropped, and the stream's iterator moves past it (it is
  checkpointed, never retried, never billed as an invocation).
- A pattern is a JSON object. Its keys name fields of the record; an object goes one level
  down, an array lists what the field may be (OR). Fields of one object are ANDed.
  ``"$or": [pattern, ...]`` ORs sub-patterns at that level.
- In an array: a string, number, ``true``/``false`` or ``null`` matches that exact value
  (strings character by character; numbers by their JSON form: 300 is not 300.0); or one of
  ``{"prefix": s}``, ``{"suffix": s}`` (either also as ``{"prefix": {"equals-ignore-case":
  s}}``), ``{"equals-ignore-case": s}``, ``{"anything-but": value | [values] | {"prefix": s}
  | {"suffix": s} | {"equals-ignore-case": s | [s]}}`` (matches a present field only),
  ``{"numeric": [op, n]}`` or ``[op, n, op, n]`` (op among ``= < <= > >=``; numbers only),
  ``{"exists": true | false}`` (on leaf fields: an object is not "existing" for it).
  A field holding an array matches when any of its elements does.
- What a pattern addresses: a DynamoDB Streams record as Lambda delivers it (``eventName``,
  ``dynamodb.Keys`` / ``NewImage`` / ``OldImage`` as AttributeValue maps, e.g. ``{"dynamodb":
  {"NewImage": {"status": {"S": ["open"]}}}}``); for Kinesis, only ``data``, the record's
  payload decoded from base64 and parsed as JSON ("Kinesis event source mappings only
  support filtering on the data key"). A Kinesis record whose data is not valid JSON (plain
  text, a KPL-aggregated record) matches no pattern, so it is dropped ("If either field
  isn't in a valid JSON format, Lambda drops the message").
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlayer.errors import ConfigError

DEFAULT_QUOTA = 5  # filters per mapping, unless the account's quota was raised
MAX_FILTERS = 10  # the most a quota increase allows
MAX_PATTERN_CHARS = 4096  # Lambda's Filter.Pattern length limit
# The DynamoDB default: a REMOVE has nothing to score (the function skips it), so Lambda
# need not invoke for it.
DEFAULT_DYNAMODB_FILTER = '{"eventName": ["INSERT", "MODIFY"]}'
_DYNAMODB_FIELDS = frozenset(
    {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "userIdentity",
        "eventSourceARN",
    }
)
_NUMERIC_OPS = frozenset({"=", "<", "<=", ">", ">="})
_OPERATORS = ("prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists")
_MISSING = object()


class FilterError(ConfigError):
    """A filter pattern Lambda would refuse, or one that can never match this stream."""


def parse_pattern(text: str, kind: str | None = None) -> dict[str, Any]:
    """The pattern as a dict, checked against Lambda's grammar (and ``kind``'s fields).

    Raises:
        FilterError: not JSON, not an object, over 4,096 characters, a value that is not an
            array or object, an unknown operator or a malformed one, or a field the stream's
            records do not have (Kinesis: only ``data``).
    """
    if len(text) > MAX_PATTERN_CHARS:
        raise FilterError(
            f"filter pattern is {len(text):,} characters, over Lambda's {MAX_PATTERN_CHARS:,}"
        )
    try:
        pattern = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FilterError(f"filter pattern {text!r} is not JSON ({exc})") from None
    if not isinstance(pattern, dict) or not pattern:
        raise FilterError(
            f"filter pattern {text!r} must be a non-empty JSON object, e.g. "
            '{"eventName": ["INSERT"]} or {"data": {"status": ["open"]}}'
        )
    _check_object(pattern, ())
    if kind is not None:
        _check_fields(pattern, kind, text)
    return pattern


def check_patterns(patterns: Sequence[str], kind: str | None = None) -> list[str]:
    """Each pattern checked (:func:`parse_pattern`), in its compact JSON form, in order.

    Raises:
        FilterError: a bad pattern (named by its position), or more than 10 of them.
    """
    if len(patterns) > MAX_FILTERS:
        raise FilterError(
            f"{len(patterns)} filters: a mapping takes at most {DEFAULT_QUOTA} ({MAX_FILTERS} "
            'with a Lambda quota increase); combine patterns with "$or" or a list of values'
        )
    compact = []
    for position, text in enumerate(patterns, 1):
        try:
            pattern = parse_pattern(text, kind)
        except FilterError as exc:
            raise FilterError(f"--filter {position}: {exc}") from None
        compact.append(json.dumps(pattern, separators=(",", ":")))
    return compact


def criteria(patterns: Sequence[str]) -> dict[str, Any]:
    """``FilterCriteria`` for ``patterns`` (``{}`` for none: it removes a mapping's filters)."""
    if not patterns:
        return {}
    return {"Filters": [{"Pattern": p} for p in patterns]}


def patterns_of(mapping: Mapping[str, Any]) -> list[str]:
    """The patterns of a mapping's ``FilterCriteria`` (none when it has none)."""
    filters = (mapping.get("FilterCriteria") or {}).get("Filters") or []
    return [str(f["Pattern"]) for f in filters if isinstance(f, Mapping) and f.get("Pattern")]


class RecordFilter:
    """Lambda's decision for one stream record: send it (True) or drop it (False)."""

    def __init__(self, patterns: Iterable[str], kind: str) -> None:
        self.kind = kind
        self.patterns = [parse_pattern(p) for p in patterns]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` (as Lambda puts it in the event) passes any pattern."""
        if not self.patterns:
            return True
        document = self._document(record)
        if document is None:
            return False
        return any(match(pattern, document) for pattern in self.patterns)

    def _document(self, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if self.kind != "kinesis":
            return record
        encoded = (record.get("kinesis") or {}).get("data")
        try:
            data = json.loads(base64.b64decode(str(encoded), validate=True))
        except (binascii.Error, ValueError, TypeError):
            return None  # not JSON: dropped by any pattern on data, the only Kinesis key
        return {"data": data}


def match(pattern: Mapping[str, Any], document: Any) -> bool:
    """Whether ``document`` (a decoded JSON value) matches a checked ``pattern``."""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(match(sub, document) for sub in expected):
                return False
            continue
        value = document.get(key, _MISSING) if isinstance(document, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            if not match(expected, value if isinstance(value, Mapping) else {}):
                return False
        elif not _matches_any(expected, value):
            return False
    return True


# -- checking -------------------------------------------------------------------------------


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) if path else "the pattern"


def _check_object(pattern: Mapping[str, Any], path: tuple[str, ...]) -> None:
    if not pattern:
        raise FilterError(f"{_where(path)} is an empty object: give it fields, or remove it")
    for key, value in pattern.items():
        here = (*path, key)
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise FilterError(
                    f'{_where(here)} must be an array of at least two patterns, e.g. "$or": '
                    '[{"a": ["x"]}, {"b": ["y"]}]'
                )
            for sub in value:
                if not isinstance(sub, dict):
                    raise FilterError(f"{_where(here)} holds {sub!r}, not a pattern object")
                _check_object(sub, here)
        elif isinstance(value, dict):
            _check_object(value, here)
        elif isinstance(value, list):
            if not value:
                raise FilterError(f"{_where(here)} is an empty array: it would match nothing")
            for rule in value:
                _check_rule(rule, here)
        else:
            raise FilterError(
                f"{_where(here)} is {json.dumps(value)}: a field's values must be an array "
                f"(e.g. [{json.dumps(value)}]) or an object going one level down"
            )


def _check_rule(rule: Any, path: tuple[str, ...]) -> None:
    if rule is None or isinstance(rule, str | bool | int | float):
        return
    where = _where(path)
    if not isinstance(rule, dict) or len(rule) != 1:
        raise FilterError(
            f"{where} holds {json.dumps(rule)}: an array holds values, or objects of one "
            f"operator ({', '.join(_OPERATORS)})"
        )
    ((operator, argument),) = rule.items()
    if operator in ("prefix", "suffix"):
        if isinstance(argument, dict) and list(argument) == ["equals-ignore-case"]:
            argument = argument["equals-ignore-case"]
        if not isinstance(argument, str):
            raise FilterError(f'{where}: "{operator}" takes a string')
    elif operator == "equals-ignore-case":
        if not isinstance(argument, str):
            raise FilterError(f'{where}: "equals-ignore-case" takes a string')
    elif operator == "exists":
        if not isinstance(argument, bool):
            raise FilterError(f'{where}: "exists" takes true or false')
    elif operator == "numeric":
        _check_numeric(argument, where)
    elif operator == "anything-but":
        _check_anything_but(argument, where)
    else:
        raise FilterError(
            f"{where}: unknown operator {operator!r}; Lambda's are {', '.join(_OPERATORS)}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numeric(argument: Any, where: str) -> None:
    usage = (
        f'{where}: "numeric" takes [op, number] or [op, number, op, number], op among = < <= > >='
    )
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise FilterError(usage)
    for op, number in zip(argument[::2], argument[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(number):
            raise FilterError(usage)
    if len(argument) == 4 and (argument[0] not in (">", ">=") or argument[2] not in ("<", "<=")):
        raise FilterError(f'{where}: a "numeric" range is [">" or ">=", low, "<" or "<=", high]')


def _check_anything_but(argument: Any, where: str) -> None:
    if isinstance(argument, str) or _is_number(argument):
        return
    if (
        isinstance(argument, list)
        and argument
        and (all(isinstance(v, str) for v in argument) or all(_is_number(v) for v in argument))
    ):
        return
    if isinstance(argument, dict) and len(argument) == 1:
        ((operator, value),) = argument.items()
        if operator in ("prefix", "suffix") and isinstance(value, str):
            return
        if operator == "equals-ignore-case" and (
            isinstance(value, str)
            or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
        ):
            return
    raise FilterError(
        f'{where}: "anything-but" takes a value, a non-empty array of strings or of numbers, '
        'or {"prefix": s}, {"suffix": s}, {"equals-ignore-case": s or [s, ...]}'
    )


def _check_fields(pattern: Mapping[str, Any], kind: str, text: str) -> None:
    keys = set(pattern) - {"$or"}
    for sub in pattern.get("$or", []):
        keys |= set(sub) - {"$or"}
    if kind == "kinesis":
        extra = sorted(keys - {"data"})
        if extra:
            raise FilterError(
                f"filter pattern {text} filters on {', '.join(extra)}: Kinesis event source "
                'mappings only filter on "data" (the record\'s payload, as JSON), e.g. '
                '{"data": {"status": ["open"]}}'
            )
    elif kind == "dynamodb":
        extra = sorted(keys - _DYNAMODB_FIELDS)
        if extra:
            raise FilterError(
                f"filter pattern {text} filters on {', '.join(extra)}, which a DynamoDB "
                "stream record does not have at its top level; item attributes are under "
                'dynamodb, e.g. {"dynamodb": {"NewImage": {"status": {"S": ["open"]}}}}'
            )


# -- matching -------------------------------------------------------------------------------


def _matches_any(rules: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        values = [_MISSING]  # an empty array matches only what a missing field matches
    return any(_rule(rule, v) for rule in rules for v in values)


def _same(expected: Any, value: Any) -> bool:
    """Exact match by JSON form: types must agree (300 is not 300.0, "1" is not 1)."""
    if value is _MISSING or isinstance(value, dict | list):
        return False
    if isinstance(expected, bool) or isinstance(value, bool):
        return expected is value
    return type(expected) is type(value) and expected == value


def _rule(rule: Any, value: Any) -> bool:
    if not isinstance(rule, dict):
        return _same(rule, value)
    ((operator, argument),) = rule.items()
    if operator == "exists":
        present = value is not _MISSING and not isinstance(value, dict)
        return present is argument
    if value is _MISSING:
        return False
    if operator == "numeric":
        return _is_number(value) and _numeric(argument, value)
    if operator == "anything-but":
        return _anything_but(argument, value)
    if not isinstance(value, str):
        return False
    if operator == "equals-ignore-case":
        return value.casefold() == str(argument).casefold()
    fold = isinstance(argument, dict)
    text = argument["equals-ignore-case"] if fold else argument
    subject, text = (value.casefold(), text.casefold()) if fold else (value, text)
    return subject.startswith(text) if operator == "prefix" else subject.endswith(text)


def _numeric(argument: list[Any], value: float) -> bool:
    checks = {
        "=": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return all(
        checks[op](value, bound) for op, bound in zip(argument[::2], argument[1::2], strict=True)
    )


def _anything_but(argument: Any, value: Any) -> bool:
    if isinstance(argument, dict):
        ((operator, text),) = argument.items()
        if not isinstance(value, str):
            return True
        if operator == "prefix":
            return not value.startswith(text)
        if operator == "suffix":
            return not value.endswith(text)
        folded = [text] if isinstance(text, str) else text
        return value.casefold() not in {t.casefold() for t in folded}
    excluded = argument if isinstance(argument, list) else [argument]
    return not any(_same(item, value) for item in excluded)
