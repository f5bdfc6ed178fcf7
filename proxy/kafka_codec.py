"""Kafka's wire format, as far as the proxy needs it.

Owns reading requests: the request header (api key, version, correlation id, client
id; header v2's tagged fields for flexible versions), the topic names a request carries
(any request type, any version) and whether the broker will answer it (Produce acks=0).
What the proxy writes back is ``proxy/kafka_answers.py``.

The schemas are not ours: kafka-python's protocol module builds its decoders and
encoders from Apache Kafka's own JSON message specifications (every API, every
version, flexible versions and tagged fields). Topic names are found the way the spec
marks them (``entityType: topicName``), so a new request type needs no table here.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import kafka.protocol.admin  # noqa: F401  (registers the API classes)
import kafka.protocol.consumer  # noqa: F401
import kafka.protocol.metadata  # noqa: F401
import kafka.protocol.producer  # noqa: F401
from kafka.protocol.api_message import ApiMessage

PRODUCE, FETCH, METADATA, API_VERSIONS, FIND_COORDINATOR = 0, 1, 3, 18, 10
_HEAD = struct.Struct(">hhi")


class KafkaCodecError(ValueError):
    """A frame that is not a well-formed Kafka request (the connection is closed)."""


def _classes() -> tuple[dict[int, type], dict[int, type]]:
    requests: dict[int, type] = {}
    responses: dict[int, type] = {}
    pending = list(ApiMessage.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is not None:
            continue  # a per-version wrapper of a class already seen
        (requests if cls.is_request() else responses)[cls.API_KEY] = cls
    return requests, responses


REQUESTS, RESPONSES = _classes()


@dataclass(frozen=True)
class Header:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: int  # offset of the request body in the frame


def _uvarint(frame: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(frame) or shift > 28:
            raise KafkaCodecError("truncated or oversized varint in the request header")
        byte = frame[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


@functools.lru_cache(maxsize=4096)
def known(api_key: int, version: int) -> bool:
    """Whether the spec defines this request version (so its body can be read)."""
    cls = REQUESTS.get(api_key)
    if cls is None:
        return False
    low, high = cls._struct._versions
    json_low = int(str(cls.json["validVersions"]).split("-")[0].rstrip("+"))
    return max(low, json_low) <= version <= high


def parse_header(frame: bytes) -> Header:
    """The request header of one frame (the 4-byte size already removed)."""
    if len(frame) < 10:
        raise KafkaCodecError(f"a {len(frame)}-byte frame is shorter than a request header")
    api_key, version, correlation = _HEAD.unpack_from(frame, 0)
    if api_key < 0 or version < 0:
        raise KafkaCodecError(f"negative api key or version ({api_key}, {version})")
    (length,) = struct.unpack_from(">h", frame, 8)
    pos = 10
    client_id = None
    if length >= 0:
        if pos + length > len(frame):
            raise KafkaCodecError("client id runs past the end of the frame")
        try:
            client_id = frame[pos:pos + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KafkaCodecError("client id is not UTF-8") from exc
        pos += length
    elif length != -1:
        raise KafkaCodecError(f"invalid client id length {length}")
    cls = REQUESTS.get(api_key)
    if cls is not None and cls.flexible_version_q(version) and api_key != API_VERSIONS or (
            api_key == API_VERSIONS and version >= 3):
        count, pos = _uvarint(frame, pos)  # header v2: tagged fields
        for _ in range(count):
            _tag, pos = _uvarint(frame, pos)
            size, pos = _uvarint(frame, pos)
            pos += size
        if pos > len(frame):
            raise KafkaCodecError("tagged header fields run past the end of the frame")
    return Header(api_key, version, correlation, client_id, pos)


# --- topics ------------------------------------------------------------------------

def versioned(fields, version: int) -> list:
    """The fields (of a struct, or a list of them) present in this version."""
    return [f for f in (fields.values() if isinstance(fields, dict) else fields or ())
            if f.for_version_q(version)]


@functools.lru_cache(maxsize=4096)
def topic_shape(api_key: int, version: int) -> tuple[bool, bool]:
    """(carries topic names, carries topic ids) for this request version, from the spec."""
    cls = REQUESTS.get(api_key)
    if cls is None or not known(api_key, version):
        return False, False
    names = ids = False

    def walk(fields) -> None:
        nonlocal names, ids
        for field in versioned(fields, version):
            if field._entity_type == "topicName":
                names = True
            elif field.type_str == "uuid" and field.name == "topic_id":
                ids = True
            if field.fields:
                walk(field.fields)
    walk(cls._struct.fields)
    return names, ids


def decode_request(header: Header, frame: bytes):
    """The request body as kafka-python's object; KafkaCodecError if it does not parse."""
    cls = REQUESTS[header.api_key]
    try:
        return cls.decode(memoryview(frame)[header.body:], version=header.api_version)
    except Exception as exc:  # the library raises struct.error, ValueError, IndexError...
        raise KafkaCodecError(f"{cls.__name__} v{header.api_version} does not parse: "
                              f"{exc}") from exc


def topics_of(obj, version: int) -> tuple[list[str], bool]:
    """The topic names in a decoded request and whether it names topics by id only."""
    found: list[str] = []
    by_id = False

    def walk(value, fields) -> None:
        nonlocal by_id
        for field in versioned(fields, version):
            item = getattr(value, field.name, None)
            if item is None:
                continue
            if field._entity_type == "topicName":
                if isinstance(item, str):
                    found.append(item)
                else:
                    found.extend(str(t) for t in item)
            elif field.type_str == "uuid" and field.name == "topic_id":
                if int(getattr(item, "int", 0) or 0):
                    by_id = True
            elif field.is_struct_array():
                for element in item:
                    walk(element, field.fields)
            elif field.is_struct():
                walk(item, field.fields)
    walk(obj, obj._struct.fields)
    return found, by_id


def expects_answer(header: Header, frame: bytes) -> bool:
    """Produce with acks=0 is the one request the broker never answers. Read from the
    bytes (v3+: transactional id, then acks) so no Produce body is decoded for it."""
    if header.api_key != PRODUCE:
        return True
    pos = header.body
    try:
        if header.api_version >= 3:
            if REQUESTS[PRODUCE].flexible_version_q(header.api_version):
                length, pos = _uvarint(frame, pos)  # compact nullable string: len + 1
                pos += max(length - 1, 0)
            else:
                (length,) = struct.unpack_from(">h", frame, pos)
                pos += 2 + max(length, 0)
        (acks,) = struct.unpack_from(">h", frame, pos)
    except (struct.error, KafkaCodecError):
        return True
    return acks != 0
