"""Kinesis Data Streams events: thin typed accessors over the raw event dict.

In the manner of Powertools' ``kinesis_stream_event.py``: properties only read the dict,
decoding happens in explicit methods (``data_as_bytes``, ``data_as_text``, ``data_as_json``)
so a caller decides when to pay for it and sees each failure where it happens.

A record whose data is a KPL aggregate (``kpl.py``) holds many user records: Lambda delivers
it as one record, ``deaggregate`` gives the user records each as a record of its own (see
there).

Record shape (what Lambda delivers)::

    {"eventSource": "aws:kinesis", "eventID": "shardId-000000000006:4959...",
     "eventName": "aws:kinesis:record", "eventSourceARN": ..., "awsRegion": ...,
     "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "1",
                 "sequenceNumber": "4959...", "data": "<base64>",
                 "approximateArrivalTimestamp": 1545084650.987}}
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Iterator, Mapping
from operator import methodcaller
from typing import TYPE_CHECKING, Any

from stream_event import DictWrapper, EventRecord, StreamEvent

if TYPE_CHECKING:
    from kpl import Deaggregated

EVENT_SOURCE = "aws:kinesis"
# The KPL's magic bytes (kpl.MAGIC) and the base64 text every aggregate's data starts with
# (its first three bytes make four characters). Here so that telling an aggregate apart
# imports nothing: kpl.py is imported on the first aggregate only (the function ships no
# bytecode, so each module it imports is compiled at every cold start: about 2 ms for
# kpl.py). tests/test_kpl.py checks that they agree with kpl.py.
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
KPL_BASE64_PREFIX = "84ma"

JsonLoads = Callable[[bytes], Any]


def _stdlib_loads(payload: bytes) -> Any:
    """``json.loads`` of UTF-8 bytes (orjson reads only UTF-8; json would guess UTF-16/32)."""
    try:
        return json.loads(payload.decode("utf-8"))
    except RecursionError:
        # A deeply nested payload must be one bad record, not a crashed batch.
        raise ValueError("JSON nested too deeply") from None


try:
    import orjson

    # orjson is pinned in the dependency layer: about 3x faster than json on small objects.
    fast_loads: JsonLoads = orjson.loads
except ImportError:  # pragma: no cover - exercised by the isolated-process test without orjson
    fast_loads = _stdlib_loads


def loads(payload: bytes) -> Any:
    """Parse one JSON document, fast when orjson is present.

    What orjson refuses is given to the standard library, so whether a record is valid
    never depends on orjson: a lone surrogate escape (``"\\ud800"``), a number beyond the
    double range, and the NaN / Infinity literals Python's ``json.dumps`` writes for
    ``float("nan")`` (a feature model then reports "feature 'x' is nan", a text model
    still scores the text).
    """
    try:
        return fast_loads(payload)
    except ValueError:
        if fast_loads is _stdlib_loads:
            raise
        return _stdlib_loads(payload)


def b64decode(data: str | bytes) -> bytes:
    """Strict base64 (RFC 4648): any character outside the alphabet is an error.

    The lenient default of ``base64.b64decode`` silently drops such characters and can turn
    garbage into plausible bytes; a record should rather be reported as bad.
    """
    return binascii.a2b_base64(data, strict_mode=True)


class KinesisStreamRecordPayload(DictWrapper):
    """The ``kinesis`` member of a record."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any]) -> None:  # per class: see DictWrapper
        self._data = data

    @property
    def sequence_number(self) -> str | None:
        return self._data.get("sequenceNumber")

    @property
    def partition_key(self) -> str | None:
        return self._data.get("partitionKey")

    @property
    def data(self) -> str | None:
        """The record's data, still base64-encoded as Lambda delivers it."""
        return self._data.get("data")

    @property
    def sub_sequence_number(self) -> int | None:
        """A user record's index in its KPL aggregate (set by ``kpl.expand``, never by Lambda)."""
        return self._data.get("subSequenceNumber")

    @property
    def explicit_hash_key(self) -> str | None:
        """A user record's explicit hash key, when its producer gave one (``kpl.expand``)."""
        return self._data.get("explicitHashKey")

    @property
    def approximate_arrival_timestamp(self) -> float | None:
        return self._data.get("approximateArrivalTimestamp")

    @property
    def kinesis_schema_version(self) -> str | None:
        return self._data.get("kinesisSchemaVersion")

    def data_as_bytes(self) -> bytes:
        """Decode the base64 data.

        Raises:
            ValueError: no data, or not valid base64 (``binascii.Error`` is a ValueError).
        """
        data = self.data
        if not isinstance(data, str | bytes):
            raise ValueError("the record has no base64 'data'")
        return b64decode(data)

    def data_as_text(self) -> str:
        """Decode the data as UTF-8 text. Raises ValueError (UnicodeDecodeError) if it is not."""
        return self.data_as_bytes().decode("utf-8")

    def data_as_json(self) -> Any:
        """Decode the data as one JSON document. Raises ValueError if it is not one."""
        return loads(self.data_as_bytes())


class KinesisStreamRecord(EventRecord):
    """One record of a Kinesis event."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any]) -> None:  # per class: see DictWrapper
        self._data = data

    @property
    def kinesis(self) -> KinesisStreamRecordPayload:
        inner = self._data.get("kinesis")
        return KinesisStreamRecordPayload(inner if isinstance(inner, Mapping) else {})


class KinesisStreamEvent(StreamEvent):
    """A Kinesis event: ``{"Records": [...]}``."""

    __slots__ = ()

    @property
    def records(self) -> Iterator[KinesisStreamRecord]:
        for record in self.raw_records:
            yield KinesisStreamRecord(record)

    def decoded_columns(self) -> tuple[list[str], list[str], list[bytes]]:
        """(eventIDs, sequence numbers, base64-decoded data) of every record, in one pass.

        The batch decoder's fast path: a wrapper object per record would cost about as
        much as decoding the record. Raises KeyError / TypeError when a record lacks a
        member and ValueError (binascii.Error) on bad base64; the caller then takes the
        per-record path.
        """
        a2b = binascii.a2b_base64
        event_ids = []
        sequence_numbers = []
        payloads = []
        for record in self.raw_records:
            kinesis = record["kinesis"]
            event_ids.append(record["eventID"])
            sequence_numbers.append(kinesis["sequenceNumber"])
            payloads.append(a2b(kinesis["data"], strict_mode=True))  # as b64decode() does
        return event_ids, sequence_numbers, payloads

    def decoded_json_members(self, key: str) -> tuple[list[str], list[str], list[Any]]:
        """(eventIDs, sequence numbers, member ``key`` of each record's JSON data), in one pass.

        For batches of JSON objects: each payload is dropped as soon as its member is read
        (about 10% faster than decoding every payload first at 10,000 records). Raises
        KeyError / TypeError / ValueError as soon as a record does not fit.
        """
        a2b = binascii.a2b_base64
        parse = fast_loads
        event_ids = []
        sequence_numbers = []
        members = []
        for record in self.raw_records:
            kinesis = record["kinesis"]
            event_ids.append(record["eventID"])
            sequence_numbers.append(kinesis["sequenceNumber"])
            members.append(parse(a2b(kinesis["data"], strict_mode=True))[key])
        return event_ids, sequence_numbers, members


def deaggregate(records: list[Any]) -> Deaggregated | None:
    """Replace each valid, non-empty KPL aggregate of ``records`` by its user records
    (``kpl.expand`` says how), or None when the event holds none.

    The common case costs a string comparison per record, about 0.2 us, and no import:
    Lambda's data is base64, and every aggregate's starts with ``KPL_BASE64_PREFIX``.
    """
    try:
        # In C: no record's data starts like an aggregate.
        datas = [record["kinesis"]["data"] for record in records]
        if not any(map(methodcaller("startswith", KPL_BASE64_PREFIX), datas)):
            return None
    except (KeyError, TypeError, AttributeError):
        pass  # a record of another shape: kpl.expand looks at each with care
    import kpl

    return kpl.expand(records)
