"""DynamoDB Streams events: thin typed accessors over the raw event dict.

In the manner of Powertools' ``dynamo_db_stream_event.py``: properties read the dict,
conversion from the attribute-value form (``{"S": "x"}``, ``{"N": "1.5"}``, ...) to Python
values happens in explicit methods (``new_image_as_python``, ``keys_as_python``).

The same shape arrives two ways:

- DynamoDB Streams: ``{"eventSource": "aws:dynamodb", "eventID", "eventName":
  "INSERT"|"MODIFY"|"REMOVE", "dynamodb": {"Keys", "NewImage", "OldImage",
  "SequenceNumber", "SizeBytes", "StreamViewType", "ApproximateCreationDateTime"}}``;
- Kinesis Data Streams for DynamoDB: the base64 ``data`` of a Kinesis record decodes to the
  same change record with ``"recordFormat": "application/json"``, ``"tableName"`` and
  ``"userIdentity"``, and without ``SequenceNumber`` (the Kinesis record carries it).

Numbers become ``int`` when the text is integral and ``float`` otherwise (the model wants
numbers, not ``Decimal``); ``B`` / ``BS`` become ``bytes``.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Mapping
from typing import Any

from stream_event import DictWrapper, EventRecord, StreamEvent

EVENT_SOURCE = "aws:dynamodb"
SCORED_EVENT_NAMES = frozenset({"INSERT", "MODIFY"})


class AttributeValueError(ValueError):
    """An attribute value that is not in DynamoDB's attribute-value form."""


def number(text: str) -> int | float:
    """A DynamoDB ``N`` string as ``int`` when integral, else ``float``."""
    if not isinstance(text, str):
        raise AttributeValueError(f"N value {text!r} is not a string")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise AttributeValueError(f"N value {text!r} is not a number") from None


def deserialize(value: Any) -> Any:
    """One attribute value (``{"S": "x"}``, ``{"M": {...}}``, ...) as a Python value.

    Raises:
        AttributeValueError: the value is not a one-key mapping of a known type.
    """
    if not isinstance(value, Mapping) or len(value) != 1:
        raise AttributeValueError(f"{value!r} is not an attribute value (one type key)")
    ((kind, inner),) = value.items()
    if kind == "S":
        if not isinstance(inner, str):
            raise AttributeValueError(f"S value {inner!r} is not a string")
        return inner
    if kind == "N":
        return number(inner)
    if kind == "BOOL":
        if not isinstance(inner, bool):
            raise AttributeValueError(f"BOOL value {inner!r} is not a boolean")
        return inner
    if kind == "NULL":
        return None
    if kind == "M":
        if not isinstance(inner, Mapping):
            raise AttributeValueError(f"M value {inner!r} is not a mapping")
        return {key: deserialize(item) for key, item in inner.items()}
    if kind == "L":
        if not isinstance(inner, list):
            raise AttributeValueError(f"L value {inner!r} is not a list")
        return [deserialize(item) for item in inner]
    if kind == "B":
        return _binary(inner)
    if kind in ("SS", "NS", "BS"):
        if not isinstance(inner, list):
            raise AttributeValueError(f"{kind} value {inner!r} is not a list")
        if kind == "NS":
            return [number(item) for item in inner]
        if kind == "BS":
            return [_binary(item) for item in inner]
        return list(inner)
    raise AttributeValueError(f"unknown attribute type {kind!r}")


def _binary(inner: Any) -> bytes:
    # The stream JSON carries binary attributes base64-encoded.
    if not isinstance(inner, str | bytes):
        raise AttributeValueError(f"B value {inner!r} is not base64 text")
    try:
        return binascii.a2b_base64(inner, strict_mode=True)
    except binascii.Error as exc:
        raise AttributeValueError(f"B value is not valid base64 ({exc})") from None


def deserialize_image(image: Any) -> dict[str, Any]:
    """An item image (``{"name": {"S": ...}, ...}``) as a plain dict."""
    if not isinstance(image, Mapping):
        raise AttributeValueError(f"the image {image!r} is not a mapping")
    return {key: deserialize(value) for key, value in image.items()}


class StreamRecord(DictWrapper):
    """The ``dynamodb`` member of a change record."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any]) -> None:  # per class: see DictWrapper
        self._data = data

    @property
    def keys(self) -> Mapping[str, Any] | None:
        return self._data.get("Keys")

    @property
    def new_image(self) -> Mapping[str, Any] | None:
        """The item after the change, in attribute-value form (absent for REMOVE / KEYS_ONLY)."""
        return self._data.get("NewImage")

    @property
    def old_image(self) -> Mapping[str, Any] | None:
        return self._data.get("OldImage")

    @property
    def sequence_number(self) -> str | None:
        """Absent in Kinesis Data Streams for DynamoDB records (the Kinesis record has one)."""
        return self._data.get("SequenceNumber")

    @property
    def size_bytes(self) -> int | None:
        return self._data.get("SizeBytes")

    @property
    def stream_view_type(self) -> str | None:
        return self._data.get("StreamViewType")

    @property
    def approximate_creation_date_time(self) -> float | None:
        return self._data.get("ApproximateCreationDateTime")

    def new_image_as_python(self) -> dict[str, Any]:
        """NewImage as plain Python values. Raises AttributeValueError when malformed."""
        return deserialize_image(self.new_image)

    def keys_as_python(self) -> dict[str, Any]:
        return deserialize_image(self.keys)


class DynamoDBStreamRecord(EventRecord):
    """One change record (from DynamoDB Streams, or decoded from a Kinesis record)."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any]) -> None:  # per class: see DictWrapper
        self._data = data

    @property
    def table_name(self) -> str | None:
        """Set in Kinesis Data Streams for DynamoDB records only."""
        return self._data.get("tableName")

    @property
    def dynamodb(self) -> StreamRecord:
        inner = self._data.get("dynamodb")
        return StreamRecord(inner if isinstance(inner, Mapping) else {})

    @staticmethod
    def is_change_record(payload: Any) -> bool:
        """Whether a decoded Kinesis payload is a DynamoDB change record (KDS for DynamoDB)."""
        return (
            isinstance(payload, Mapping)
            and payload.get("eventSource") == EVENT_SOURCE
            and isinstance(payload.get("dynamodb"), Mapping)
        )


class DynamoDBStreamEvent(StreamEvent):
    """A DynamoDB Streams event: ``{"Records": [...]}``."""

    __slots__ = ()

    @property
    def records(self) -> Iterator[DynamoDBStreamRecord]:
        for record in self.raw_records:
            yield DynamoDBStreamRecord(record)
