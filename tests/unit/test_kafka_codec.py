"""proxy/kafka_codec.py and kafka_answers.py: headers, topics, denial answers and
ApiVersions capping, for every request type and version the protocol specification
defines (pure logic; the proxy with real clients and a real broker is
tests/integration/test_proxy_kafka.py)."""

from __future__ import annotations

import random
import struct

import pytest

from proxy import kafka_answers as answers
from proxy import kafka_codec as codec


def encoded(api_key: int, version: int, correlation: int = 7, client_id: str | None = "c",
            **fields) -> bytes:
    req = codec.REQUESTS[api_key](version=version, **fields)
    req.with_header(correlation_id=correlation, client_id=client_id)
    return bytes(req.encode(header=True, framed=True))[4:]


def every_version():
    for key, cls in sorted(codec.REQUESTS.items()):
        for version in range(cls.max_version + 1):
            if codec.known(key, version):
                yield key, version


def test_header_every_api_and_version():
    count = 0
    for key, version in every_version():
        frame = encoded(key, version, correlation=1234, client_id="svc-1")
        header = codec.parse_header(frame)
        assert (header.api_key, header.api_version, header.correlation_id,
                header.client_id) == (key, version, 1234, "svc-1")
        codec.decode_request(header, frame)  # the body starts where the header ends
        count += 1
    assert count > 200  # every API of the spec, every version


def test_error_answer_every_api_and_version_decodes_as_its_response():
    for key, version in every_version():
        frame = encoded(key, version, correlation=99)
        header = codec.parse_header(frame)
        if not codec.expects_answer(header, frame):
            continue
        obj = codec.decode_request(header, frame)
        answer = answers.error_response(header, obj, answers.error_code_for(key, False))
        (size,) = struct.unpack_from(">i", answer)
        assert size == len(answer) - 4
        resp = codec.RESPONSES[key].decode(answer[4:], version=version, header=True)
        assert resp.header.correlation_id == 99, (key, version)


def produce(version: int, topics: dict[str, list[int]], acks: int = 1) -> bytes:
    cls = codec.REQUESTS[codec.PRODUCE]
    data = cls._struct.fields["topic_data"]
    parts = data.fields["partition_data"].data_class
    return encoded(codec.PRODUCE, version, transactional_id=None, acks=acks, timeout_ms=5,
                   topic_data=[data.data_class(version=version, name=name, partition_data=[
                       parts(version=version, index=i, records=b"x") for i in indexes])
                       for name, indexes in topics.items()])


@pytest.mark.parametrize("version", [3, 7, 9, 12])  # 9+: flexible (tagged fields)
def test_produce_topics_and_denial_per_partition(version):
    frame = produce(version, {"topic1": [0, 2], "topic2": [1]})
    header = codec.parse_header(frame)
    obj = codec.decode_request(header, frame)
    assert codec.topics_of(obj, version) == (["topic1", "topic2"], False)
    answer = answers.error_response(header, obj, answers.TOPIC_AUTHORIZATION_FAILED)
    resp = codec.RESPONSES[codec.PRODUCE].decode(answer[4:], version=version, header=True)
    assert [(t.name, [(p.index, p.error_code, p.base_offset) for p in t.partition_responses])
            for t in resp.responses] == [("topic1", [(0, 29, -1), (2, 29, -1)]),
                                         ("topic2", [(1, 29, -1)])]


@pytest.mark.parametrize("version", [3, 8, 9, 10])
def test_produce_acks_zero_expects_no_answer(version):
    for acks, answered in ((0, False), (1, True), (-1, True)):
        frame = produce(version, {"t": [0]}, acks=acks)
        assert codec.expects_answer(codec.parse_header(frame), frame) is answered


def test_topic_shapes_from_the_spec():
    assert codec.topic_shape(codec.FETCH, 12) == (True, False)
    assert codec.topic_shape(codec.FETCH, 13) == (False, True)  # topic ids only
    assert codec.topic_shape(codec.METADATA, 12) == (True, True)  # names (and ids)
    assert codec.topic_shape(codec.API_VERSIONS, 3) == (False, False)
    assert codec.topic_shape(12, 4) == (False, False)  # heartbeat
    assert answers.highest_named_version(codec.FETCH, 16) == 12
    assert answers.highest_named_version(codec.PRODUCE, 10) == 10


def test_delete_topics_string_array_and_group_error_codes():
    frame = encoded(20, 3, topic_names=["a", "b"], timeout_ms=5)  # v0-5: [string]
    header = codec.parse_header(frame)
    obj = codec.decode_request(header, frame)
    assert codec.topics_of(obj, 3) == (["a", "b"], False)
    resp = codec.RESPONSES[20].decode(answers.error_response(header, obj, 29)[4:], version=3,
                                      header=True)
    assert [(r.name, r.error_code) for r in resp.responses] == [("a", 29), ("b", 29)]
    assert answers.error_code_for(11, False) == answers.GROUP_AUTHORIZATION_FAILED  # joingroup
    assert answers.error_code_for(18, False) == answers.CLUSTER_AUTHORIZATION_FAILED
    assert answers.error_code_for(0, True) == answers.TOPIC_AUTHORIZATION_FAILED


def test_denied_api_versions_answers_in_v0_layout():
    frame = encoded(codec.API_VERSIONS, 3, client_software_name="x",
                    client_software_version="1")
    header = codec.parse_header(frame)
    answer = answers.error_response(header, codec.decode_request(header, frame), 31)
    resp = codec.RESPONSES[codec.API_VERSIONS].decode(answer[4:], version=3, header=True)
    assert resp.error_code == 31 and resp.header.correlation_id == 7


def test_api_versions_capped_to_named_topic_versions():
    cls = codec.RESPONSES[codec.API_VERSIONS]
    entry = cls._struct.fields["api_keys"].data_class
    resp = cls(version=2, error_code=0, throttle_time_ms=0, api_keys=[
        entry(version=2, api_key=0, min_version=0, max_version=10),
        entry(version=2, api_key=1, min_version=0, max_version=16),
        entry(version=2, api_key=12, min_version=0, max_version=4)])
    resp.with_header(correlation_id=5)
    capped = answers.clamp_api_versions(bytes(resp.encode(header=True, framed=True)), 2)
    out = cls.decode(capped[4:], version=2, header=True)
    assert [(a.api_key, a.max_version) for a in out.api_keys] == [(0, 10), (1, 12), (12, 4)]
    assert out.header.correlation_id == 5


@pytest.mark.parametrize("frame, words", [
    (b"\x00" * 5, "shorter than a request header"),
    (struct.pack(">hhih", -1, 0, 1, -1), "negative"),
    (struct.pack(">hhih", 0, 7, 1, 40) + b"abc", "past the end"),
    (struct.pack(">hhih", 0, 7, 1, -5), "invalid client id length"),
    (struct.pack(">hhih", 0, 9, 1, -1) + b"\xff\xff\xff\xff\xff\xff", "varint"),
])
def test_malformed_headers_are_refused_with_a_reason(frame, words):
    with pytest.raises(codec.KafkaCodecError, match=words):
        codec.parse_header(frame)


def test_random_bytes_never_raise_anything_but_codec_errors():
    rng = random.Random(20261123)
    valid = produce(9, {"topic1": [0]})
    for _ in range(3000):
        if rng.random() < 0.5:
            frame = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:  # a valid frame with a few bytes flipped or cut
            data = bytearray(valid[:rng.randrange(10, len(valid) + 1)])
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            frame = bytes(data)
        try:
            header = codec.parse_header(frame)
            if codec.known(header.api_key, header.api_version):
                codec.topics_of(codec.decode_request(header, frame), header.api_version)
            codec.expects_answer(header, frame)
        except codec.KafkaCodecError:
            pass
