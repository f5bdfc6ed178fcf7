"""Kafka's wire format, as far as the proxy needs it.

Owns: the request header (api key, version, correlation id, client id; header v2's
tagged fields for flexible versions), the topic names a request carries (any request
type, any version), the error response the proxy sends for a denied request (the
request's own response type and version, correlation id preserved), and clamping a
broker's ApiVersions answer to the versions the proxy can judge.

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
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
# requests about a consumer group rather than topics (a denial says "group")
GROUP_APIS = frozenset({8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47})
PARTITION_FIELDS = ("partition_index", "partition", "index", "partition_id")
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

def _versioned(fields, version: int):
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
        for field in _versioned(fields, version):
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
        for field in _versioned(fields, version):
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


# --- error responses ---------------------------------------------------------------

def _partitions(element, fields, version: int) -> list[int]:
    """Partition indexes inside one topic element of a request."""
    out: list[int] = []
    for field in _versioned(fields, version):
        value = getattr(element, field.name, None)
        if value is None:
            continue
        if field.is_struct_array():
            for sub in value:
                for name in PARTITION_FIELDS:
                    index = getattr(sub, name, None) if name in field.fields else None
                    if isinstance(index, int):
                        out.append(index)
                        break
        elif field.is_array() and field.name.startswith("partition") and value and \
                isinstance(value[0], int):
            out.extend(value)
    return out


def _request_topics(obj, version: int) -> list[tuple[str, list[int]]]:
    """(topic, partitions) for every topic element of a decoded request."""
    out: list[tuple[str, list[int]]] = []

    def walk(value, fields) -> None:
        for field in _versioned(fields, version):
            item = getattr(value, field.name, None)
            if item is None:
                continue
            if field._entity_type == "topicName" and not isinstance(item, str):
                out.extend((str(t), []) for t in item)  # e.g. DeleteTopics v0-5: [string]
            elif field.is_struct_array():
                names = [f for f in _versioned(field.fields, version)
                         if f._entity_type == "topicName"]
                for element in item:
                    if names:
                        out.append((str(getattr(element, names[0].name)),
                                    _partitions(element, field.fields, version)))
                    else:
                        walk(element, field.fields)
            elif field.is_struct():
                walk(item, field.fields)
    walk(obj, obj._struct.fields)
    return out


def _fill(field, version: int, values: dict, code: int):
    """A response struct with defaults, ``values`` set, and ``code`` in its error_code."""
    present = {f.name for f in _versioned(field.fields, version)}
    kwargs = {k: v for k, v in values.items() if k in present}
    if "error_code" in present:
        kwargs["error_code"] = code
    for name, default in (("node_id", -1), ("committed_offset", -1), ("high_watermark", -1),
                          ("offset", -1), ("base_offset", -1), ("leader_id", -1),
                          ("port", -1), ("log_start_offset", -1), ("last_stable_offset", -1)):
        if name in present and name not in kwargs:
            kwargs[name] = default
    return field.data_class(version=version, **kwargs)


def _topic_array(response_fields, version: int):
    """The response's struct array whose elements are per-topic (named by the spec)."""
    for field in _versioned(response_fields, version):
        if field.is_struct_array() and any(
                f._entity_type == "topicName" or f.name == "topic_id"
                for f in _versioned(field.fields, version)):
            return field
    return None


def error_code_for(api_key: int, has_topics: bool) -> int:
    if has_topics:
        return TOPIC_AUTHORIZATION_FAILED
    if api_key in GROUP_APIS:
        return GROUP_AUTHORIZATION_FAILED
    return CLUSTER_AUTHORIZATION_FAILED


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


def error_response(header: Header, obj, code: int) -> bytes:
    """The framed response to a denied request: its own type and version, every topic
    (and partition) it named answered with ``code``; requests without topics get
    ``code`` in their top-level error. KafkaCodecError if the spec has no such response."""
    cls = RESPONSES.get(header.api_key)
    version = header.api_version
    if cls is None or not known(header.api_key, version):
        raise KafkaCodecError(f"no response defined for api key {header.api_key} "
                              f"v{version}")
    if header.api_key == API_VERSIONS:
        version = 0  # an ApiVersions error is always answered in v0's layout (KIP-511)
    topics = _request_topics(obj, version) if obj is not None else []
    top = {f.name: f for f in _versioned(cls._struct.fields, version)}
    values: dict = {}
    array = _topic_array(cls._struct.fields, version)
    if array is not None:
        name_field = next((f.name for f in _versioned(array.fields, version)
                           if f._entity_type == "topicName"), None)
        parts = next((f for f in _versioned(array.fields, version) if f.is_struct_array()),
                     None)
        elements = []
        for topic, partitions in topics:
            vals: dict = {name_field: topic} if name_field else {}
            if parts is not None:
                pname = next((n for n in PARTITION_FIELDS if n in parts.fields), None)
                vals[parts.name] = [_fill(parts, version, {pname: p} if pname else {}, code)
                                    for p in partitions]
            elements.append(_fill(array, version, vals, code))
        values[array.name] = elements
    if header.api_key == FIND_COORDINATOR and "coordinators" in top:  # v4+: batched keys
        keys = list(getattr(obj, "coordinator_keys", None) or [])
        values["coordinators"] = [_fill(top["coordinators"], version, {"key": k}, code)
                                  for k in keys]
    top_code = 0 if array is not None and topics else code
    if "error_code" in top:
        values["error_code"] = top_code
    for name, default in (("throttle_time_ms", 0), ("controller_id", -1), ("node_id", -1),
                          ("port", -1), ("generation_id", -1)):
        if name in top and name not in values:
            values[name] = default
    try:
        response = cls(version=version, **values)
        response.with_header(correlation_id=header.correlation_id)
        return bytes(response.encode(header=True, framed=True))
    except Exception as exc:
        raise KafkaCodecError(f"cannot encode {cls.__name__} v{version}: {exc}") from exc


# --- Metadata ----------------------------------------------------------------------
# Clients discard a Metadata answer without brokers (kafka-python: "No broker metadata
# found ... ignoring", then retries until its timeout), so a denied Metadata request is
# not answered from nothing: the broker is asked for the brokers only (no topics, so
# nothing it is asked reveals a denied topic) and the denied topics are put back with
# the error code.

def brokers_only_request(header: Header, obj) -> bytes | None:
    """The framed request, same header, asking for no topics (None for v0, where an
    empty list means every topic)."""
    if header.api_key != METADATA or header.api_version < 1 or obj is None:
        return None
    obj.topics = []
    obj.with_header(correlation_id=header.correlation_id, client_id=header.client_id)
    return bytes(obj.encode(version=header.api_version, header=True, framed=True))


def metadata_denied(answer: bytes, version: int, topics: tuple[str, ...], code: int
                    ) -> bytes:
    """The broker's brokers-only Metadata answer with ``topics`` put back, denied."""
    cls = RESPONSES[METADATA]
    resp = cls.decode(memoryview(answer)[4:], version=version, header=True)
    array = cls._struct.fields["topics"]
    resp.topics = [_fill(array, version, {"name": topic, "partitions": []}, code)
                   for topic in topics]
    resp.with_header(correlation_id=resp.header.correlation_id)
    return bytes(resp.encode(header=True, framed=True))


# --- ApiVersions -------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def highest_named_version(api_key: int, broker_max: int) -> int | None:
    """The highest version <= broker_max whose topics travel by name (None: none does).
    Versions that name topics only by id (Fetch v13+, Produce v13+) cannot be judged
    against topic rules, so the proxy does not offer them."""
    for version in range(broker_max, -1, -1):
        names, ids = topic_shape(api_key, version)
        if names or not ids:
            return version
    return None


def clamp_api_versions(frame: bytes, version: int) -> bytes:
    """Rewrite an ApiVersions response (framed bytes) so no API is offered beyond the
    versions the proxy can judge; the frame is returned unchanged if nothing changes."""
    cls = RESPONSES[API_VERSIONS]
    try:
        resp = cls.decode(memoryview(frame)[4:], version=version, header=True)
    except Exception:
        return frame  # an answer we cannot read is passed on as is (e.g. an error)
    changed = False
    kept = []
    for entry in resp.api_keys or []:
        if entry.api_key in REQUESTS and topic_shape(entry.api_key, entry.max_version)[1]:
            high = highest_named_version(entry.api_key, entry.max_version)
            if high is None or high < entry.min_version:
                changed = True
                continue
            if high != entry.max_version:
                entry.max_version = high
                changed = True
        kept.append(entry)
    if not changed:
        return frame
    resp.api_keys = kept
    resp.with_header(correlation_id=resp.header.correlation_id)
    return bytes(resp.encode(header=True, framed=True))
