"""Lambda event filtering: pattern checks and the matcher run-local drops records with."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mlayer.filters import (
    DEFAULT_DYNAMODB_FILTER,
    FilterError,
    RecordFilter,
    check_patterns,
    criteria,
    match,
    parse_pattern,
    patterns_of,
)

ORDER = {
    "record": 12345,
    "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000, "price": 10.5},
    "tags": ["new", "sale"],
    "note": None,
    "region": "us-east-1",
    "file": "photo.PNG",
    "gift": False,
}

# (name, pattern, matches ORDER?)
CASES = [
    ("exact string", {"order": {"type": ["buy"]}}, True),
    ("exact string, other value", {"order": {"type": ["sell"]}}, False),
    ("OR within a list", {"order": {"type": ["sell", "buy"]}}, True),
    ("AND across fields", {"order": {"type": ["buy"], "stock": ["OTHER"]}}, False),
    ("exact number", {"record": [12345]}, True),
    ("a number is not its string", {"record": ["12345"]}, False),
    ("300 is not 300.0", {"order": {"quantity": [1000.0]}}, False),
    ("null", {"note": [None]}, True),
    ("false", {"gift": [False]}, True),
    ("false is not 0", {"gift": [0]}, False),
    ("missing field", {"colour": ["red"]}, False),
    ("array field: any element", {"tags": ["sale"]}, True),
    ("array field: none", {"tags": ["old"]}, False),
    ("prefix", {"region": [{"prefix": "us-"}]}, True),
    ("prefix, no", {"region": [{"prefix": "eu-"}]}, False),
    ("suffix is case-sensitive", {"file": [{"suffix": ".png"}]}, False),
    ("suffix ignoring case", {"file": [{"suffix": {"equals-ignore-case": ".png"}}]}, True),
    ("prefix ignoring case", {"region": [{"prefix": {"equals-ignore-case": "US-"}}]}, True),
    ("equals-ignore-case", {"order": {"stock": [{"equals-ignore-case": "anyco"}]}}, True),
    ("anything-but a value", {"order": {"type": [{"anything-but": "sell"}]}}, True),
    ("anything-but a list", {"order": {"type": [{"anything-but": ["buy", "x"]}]}}, False),
    ("anything-but numbers", {"record": [{"anything-but": [1, 2]}]}, True),
    ("anything-but a prefix", {"region": [{"anything-but": {"prefix": "us-"}}]}, False),
    ("anything-but a suffix", {"region": [{"anything-but": {"suffix": "-2"}}]}, True),
    (
        "anything-but ignoring case",
        {"order": {"stock": [{"anything-but": {"equals-ignore-case": ["anyco"]}}]}},
        False,
    ),
    ("anything-but needs the field", {"colour": [{"anything-but": "red"}]}, False),
    ("numeric =", {"order": {"quantity": [{"numeric": ["=", 1000]}]}}, True),
    ("numeric range", {"order": {"price": [{"numeric": [">", 10, "<=", 20]}]}}, True),
    ("numeric range, out", {"order": {"price": [{"numeric": [">", 11, "<=", 20]}]}}, False),
    ("numeric on a string", {"region": [{"numeric": [">", 0]}]}, False),
    ("exists", {"order": {"stock": [{"exists": True}]}}, True),
    ("exists on a missing field", {"colour": [{"exists": True}]}, False),
    ("does not exist", {"colour": [{"exists": False}]}, True),
    ("does not exist, but does", {"region": [{"exists": False}]}, False),
    ("exists: leaves only", {"order": [{"exists": True}]}, False),
    ("nested under a missing object", {"missing": {"deep": [{"exists": False}]}}, True),
    (
        "$or across fields",
        {"$or": [{"order": {"type": ["sell"]}}, {"region": [{"prefix": "us-"}]}]},
        True,
    ),
    ("$or, neither", {"$or": [{"record": [1]}, {"region": ["eu-west-1"]}]}, False),
    (
        "$or nested",
        {"order": {"$or": [{"type": ["sell"]}, {"quantity": [{"numeric": [">=", 1000]}]}]}},
        True,
    ),
]


@pytest.mark.parametrize(("pattern", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matcher_follows_the_grammar(pattern: dict[str, Any], expected: bool) -> None:
    checked = parse_pattern(json.dumps(pattern))
    assert match(checked, ORDER) is expected


BAD = [
    ("not JSON", "{eventName: [INSERT]}", "is not JSON"),
    ("not an object", '["INSERT"]', "must be a non-empty JSON object"),
    ("empty", "{}", "must be a non-empty JSON object"),
    (
        "a bare value",
        '{"eventName": "INSERT"}',
        'eventName is "INSERT": a field\'s values must be an array (e.g. ["INSERT"])',
    ),
    ("an empty array", '{"eventName": []}', "eventName is an empty array"),
    ("unknown operator", '{"a": [{"wildcard": "x*"}]}', "unknown operator 'wildcard'"),
    ("two operators", '{"a": [{"prefix": "x", "suffix": "y"}]}', "objects of one operator"),
    ("numeric malformed", '{"a": [{"numeric": [">", "10"]}]}', '"numeric" takes [op, number]'),
    ("numeric range backwards", '{"a": [{"numeric": ["<", 1, ">", 5]}]}', 'a "numeric" range'),
    ("exists not a bool", '{"a": [{"exists": "yes"}]}', '"exists" takes true or false'),
    ("prefix not a string", '{"a": [{"prefix": 1}]}', '"prefix" takes a string'),
    ("anything-but mixed", '{"a": [{"anything-but": ["x", 1]}]}', '"anything-but" takes'),
    ("$or of one", '{"$or": [{"a": ["x"]}]}', "$or must be an array of at least two"),
    ("too long", json.dumps({"a": ["x" * 4100]}), "over Lambda's 4,096"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_patterns_are_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        check_patterns([DEFAULT_DYNAMODB_FILTER, text])
    assert str(raised.value).startswith("--filter 2: ")
    assert message in str(raised.value)


def test_fields_the_stream_does_not_have_are_refused() -> None:
    with pytest.raises(FilterError, match='Kinesis event source mappings only filter on "data"'):
        check_patterns(['{"eventName": ["INSERT"]}'], "kinesis")
    with pytest.raises(FilterError, match="item attributes are under dynamodb"):
        check_patterns(['{"NewImage": {"a": {"S": ["x"]}}}'], "dynamodb")
    assert check_patterns(['{"data": {"a": ["x"]}}'], "kinesis") == ['{"data":{"a":["x"]}}']


def test_at_most_ten_filters() -> None:
    with pytest.raises(FilterError, match="11 filters: a mapping takes at most 5 \\(10 with"):
        check_patterns([DEFAULT_DYNAMODB_FILTER] * 11)


def test_criteria_round_trip() -> None:
    patterns = check_patterns([' { "eventName" : [ "INSERT", "MODIFY" ] } '])
    assert patterns == ['{"eventName":["INSERT","MODIFY"]}']
    assert criteria(patterns) == {"Filters": [{"Pattern": '{"eventName":["INSERT","MODIFY"]}'}]}
    assert patterns_of({"FilterCriteria": criteria(patterns)}) == patterns
    assert criteria([]) == {} and patterns_of({}) == []


def _kinesis(data: bytes) -> dict[str, Any]:
    return {"kinesis": {"data": base64.b64encode(data).decode()}, "eventSource": "aws:kinesis"}


def test_kinesis_records_are_matched_on_their_json_data() -> None:
    only_open = RecordFilter(['{"data": {"status": ["open"]}}'], "kinesis")
    assert only_open.matches(_kinesis(b'{"status": "open", "text": "x"}'))
    assert not only_open.matches(_kinesis(b'{"status": "closed"}'))
    # not JSON (plain text, a KPL-aggregated record): dropped by a filter on data
    assert not only_open.matches(_kinesis(b"plain text review"))
    assert not only_open.matches(_kinesis(b"\xf3\x89\x9a\xc2\x0a\x01"))
    assert not RecordFilter(['{"data": [{"exists": false}]}'], "kinesis").matches(
        _kinesis(b"not json")
    )


def test_no_filter_sends_everything() -> None:
    none = RecordFilter([], "kinesis")
    assert not none and none.matches(_kinesis(b"anything"))


def test_dynamodb_default_drops_removes() -> None:
    default = RecordFilter([DEFAULT_DYNAMODB_FILTER], "dynamodb")
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": {"text": {"S": "hi"}}}}
    assert default.matches(record)
    assert default.matches({**record, "eventName": "MODIFY"})
    assert not default.matches({"eventName": "REMOVE", "dynamodb": {"Keys": {}}})
    by_attribute = RecordFilter(
        ['{"dynamodb": {"NewImage": {"text": {"S": [{"prefix": "h"}]}}}}'], "dynamodb"
    )
    assert by_attribute.matches(record)
    assert not by_attribute.matches({"eventName": "REMOVE", "dynamodb": {}})
