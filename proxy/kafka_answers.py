"""Kafka answers the proxy writes: the response to a denied request (the request's own
response type and version, correlation id preserved, every topic and partition it named
carrying the error), the Metadata answer that keeps the broker list, and a broker's
ApiVersions answer capped to the versions the proxy can judge. Built with kafka-python's
classes, generated from Apache Kafka's JSON message specifications (see kafka_codec)."""

from __future__ import annotations

import functools

from proxy.kafka_codec import (
    API_VERSIONS,
    FIND_COORDINATOR,
    METADATA,
    REQUESTS,
    RESPONSES,
    Header,
    KafkaCodecError,
    known,
    topic_shape,
    versioned,
)

TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
# requests about a consumer group rather than topics (a denial says "group")
GROUP_APIS = frozenset({8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47})
PARTITION_FIELDS = ("partition_index", "partition", "index", "partition_id")


# --- error responses ---------------------------------------------------------------

def _partitions(element, fields, version: int) -> list[int]:
    """Partition indexes inside one topic element of a request."""
    out: list[int] = []
    for field in versioned(fields, version):
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
        for field in versioned(fields, version):
            item = getattr(value, field.name, None)
            if item is None:
                continue
            if field._entity_type == "topicName" and not isinstance(item, str):
                out.extend((str(t), []) for t in item)  # e.g. DeleteTopics v0-5: [string]
            elif field.is_struct_array():
                names = [f for f in versioned(field.fields, version)
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
    present = {f.name for f in versioned(field.fields, version)}
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
    for field in versioned(response_fields, version):
        if field.is_struct_array() and any(
                f._entity_type == "topicName" or f.name == "topic_id"
                for f in versioned(field.fields, version)):
            return field
    return None


def error_code_for(api_key: int, has_topics: bool) -> int:
    if has_topics:
        return TOPIC_AUTHORIZATION_FAILED
    if api_key in GROUP_APIS:
        return GROUP_AUTHORIZATION_FAILED
    return CLUSTER_AUTHORIZATION_FAILED


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
    top = {f.name: f for f in versioned(cls._struct.fields, version)}
    values: dict = {}
    array = _topic_array(cls._struct.fields, version)
    if array is not None:
        name_field = next((f.name for f in versioned(array.fields, version)
                           if f._entity_type == "topicName"), None)
        parts = next((f for f in versioned(array.fields, version) if f.is_struct_array()),
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
