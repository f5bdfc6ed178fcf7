"""The real proxy process between real Kafka clients (kafka-python and confluent-kafka /
librdkafka) and a real Kafka-protocol broker (librdkafka's mock cluster), on loopback.

Without the BPF redirect every client has the same address, so these tests tell the
seed example's services apart by client id (``clientID`` in the rules); the end-to-end
test (tests/e2e/test_kafka_e2e.py) does it by container identity. The broker
advertises the proxy's address, so every connection a client opens goes through it.
What the broker saw is read from the broker itself (librdkafka's request tracking)."""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import subprocess
import sys

import pytest

from proxy import kafka_answers as answers
from proxy import kafka_codec as codec
from tests.integration.test_proxy_support import REPO, Events, Proxy, write_state
from tests.support.kafka_broker import MockCluster

IDENTITY = 256
SEED = [{"role": "produce", "topic": "topic1", "clientID": "service1"},
        {"role": "consume", "topic": "topic1", "clientID": "service2"}]
CLIENTS = ("kafka-python", "confluent")
AUTHZ = {"TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED"}


class Broker:
    """The mock cluster in this process, advertising the proxy, tracking requests."""

    def __init__(self) -> None:
        self.cluster = MockCluster(1)
        self.port = int(self.cluster.bootstraps.split(",")[0].rsplit(":", 1)[1])
        for topic in ("topic1", "topic2"):
            self.cluster.create_topic(topic)
        lib = self.cluster.lib
        lib.rd_kafka_mock_get_requests.restype = ctypes.POINTER(ctypes.c_void_p)
        lib.rd_kafka_mock_get_requests.argtypes = [ctypes.c_void_p,
                                                   ctypes.POINTER(ctypes.c_size_t)]
        lib.rd_kafka_mock_request_api_key.restype = ctypes.c_int16
        lib.rd_kafka_mock_request_api_key.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_request_destroy_array.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                                            ctypes.c_size_t]
        for name in ("rd_kafka_mock_start_request_tracking", "rd_kafka_mock_clear_requests"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_start_request_tracking(self.cluster.mc)

    def advertise(self, port: int) -> None:
        self.cluster.advertise(1, "127.0.0.1", port)

    def seen(self) -> list[int]:
        """Api keys of the requests the broker received since the last clear()."""
        lib = self.cluster.lib
        count = ctypes.c_size_t()
        array = lib.rd_kafka_mock_get_requests(self.cluster.mc, ctypes.byref(count))
        keys = [lib.rd_kafka_mock_request_api_key(array[i]) for i in range(count.value)]
        if count.value:
            lib.rd_kafka_mock_request_destroy_array(array, count)
        return keys

    def clear(self) -> None:
        self.cluster.lib.rd_kafka_mock_clear_requests(self.cluster.mc)

    def close(self) -> None:
        self.cluster.close()


def state(port: int, rules: list | None) -> dict:
    return {"revision": 1, "identities": {"127.0.0.1": IDENTITY},
            "labels": {str(IDENTITY): ["container:app=service"]}, "names": {},
            "l7": [{"endpoint": "127.0.0.1", "direction": "ingress", "port": port,
                    "parser": "kafka", "remotes": [IDENTITY], "kafka": rules}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy-kafka")
    broker = Broker()
    events = Events(tmp / "events.sock")
    proxy = Proxy(tmp, broker.port, extra=["--kafka-max-frame", str(8 << 20)])
    broker.advertise(proxy.port)
    write_state(proxy.state, state(broker.port, SEED))
    try:
        yield broker, proxy, events
    finally:
        proxy.stop()
        events.close()
        broker.close()


def client(cmd: str, kind: str, port: int, topic: str, client_id: str, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.kafka_clients", cmd, "--client", kind,
         "--bootstrap", f"127.0.0.1:{port}", "--topic", topic, "--client-id", client_id,
         "--timeout", "12", *extra], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", CLIENTS)
def test_seed_example(env, kind):
    """service1 produces to topic1, service2 consumes it; service1 consuming, service2
    producing and service1 producing to topic2 get TOPIC_AUTHORIZATION_FAILED, and none
    of those requests reaches the broker."""
    broker, proxy, events = env
    broker.clear()
    out = client("produce", kind, proxy.port, "topic1", "service1", "--count", "20")
    assert out["delivered"] == 20 and not out["errors"], out
    assert codec.PRODUCE in broker.seen()

    for args in ((), ("--group", f"g-{kind}")):
        out = client("consume", kind, proxy.port, "topic1", "service2", "--expect", "20", *args)
        assert out["consumed"] >= 20 and not out["errors"], (args, out)

    broker.clear()
    out = client("consume", kind, proxy.port, "topic1", "service1")
    # librdkafka asks for its group's coordinator first: a group request, so a group
    # authorization error (kafka-python without a group goes straight to the topic)
    assert out["consumed"] == 0 and AUTHZ & set(out["errors"]), out
    seen = broker.seen()
    assert codec.FETCH not in seen and 2 not in seen, seen  # no Fetch, no ListOffsets

    broker.clear()
    out = client("produce", kind, proxy.port, "topic1", "service2", "--count", "3")
    assert out["delivered"] == 0 and "TOPIC_AUTHORIZATION_FAILED" in out["errors"], out
    out = client("produce", kind, proxy.port, "topic2", "service1", "--count", "3")
    assert out["delivered"] == 0 and "TOPIC_AUTHORIZATION_FAILED" in out["errors"], out
    assert codec.PRODUCE not in broker.seen()

    # (the clients ask Metadata for topic2 first: that is where the denial comes)
    denied = events.wait(lambda e: e["verdict"] == "DENIED" and e["kafka"]["api_key"] in
                         ("metadata", "produce") and e["kafka"]["topics"] == ["topic2"])
    assert denied["protocol"] == "kafka" and denied["kafka"]["client_id"] == "service1"
    assert denied["kafka"]["error_code"] == answers.TOPIC_AUTHORIZATION_FAILED
    assert denied["src"]["labels"] == ["container:app=service"]
    ok = events.wait(lambda e: e["verdict"] == "FORWARDED" and e["kafka"]["api_key"] ==
                     "fetch" and e["kafka"]["client_id"] == "service2")
    assert ok["kafka"]["topics"] == ["topic1"] and ok["http"]["latency_ms"] >= 0
    if kind == "confluent":  # librdkafka speaks the flexible versions: Fetch capped at
        # v12 by the proxy (v13+ names topics by id), Produce v9+ as the broker offers
        fetch = [e for e in events.items if e["kafka"]["api_key"] == "fetch"
                 and e["kafka"]["client_id"] == "service2"]
        assert max(e["kafka"]["api_version"] for e in fetch) == 12
        produce = [e for e in events.items if e["kafka"]["api_key"] == "produce"
                   and e["verdict"] == "FORWARDED" and e["kafka"]["client_id"] == "service1"]
        assert max(e["kafka"]["api_version"] for e in produce) >= 9


def test_unknown_client_rejected_entirely(env):
    broker, proxy, _ = env
    broker.clear()
    for kind in CLIENTS:
        out = client("produce", kind, proxy.port, "topic1", "service3", "--count", "2",
                     "--timeout", "6")
        assert out["delivered"] == 0, out
    assert broker.seen() == []  # not even ApiVersions or Metadata got through


def frame(api_key: int, version: int, correlation: int, client_id: str, **fields) -> bytes:
    req = codec.REQUESTS[api_key](version=version, **fields)
    req.with_header(correlation_id=correlation, client_id=client_id)
    return bytes(req.encode(header=True, framed=True))


def produce_frame(correlation: int, client_id: str, topic: str) -> bytes:
    cls = codec.REQUESTS[codec.PRODUCE]
    topic_data = cls._struct.fields["topic_data"]
    partition = topic_data.fields["partition_data"].data_class(version=7, index=0,
                                                               records=None)
    return frame(codec.PRODUCE, 7, correlation, client_id, transactional_id=None, acks=1,
                 timeout_ms=1000, topic_data=[topic_data.data_class(
                     version=7, name=topic, partition_data=[partition])])


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    out = []
    buf = sock.makefile("rb")
    for _ in range(count):
        head = buf.read(4)
        assert len(head) == 4, "connection closed"
        out.append(buf.read(struct.unpack(">i", head)[0]))
    return out


def test_denied_answer_in_order_and_connection_stays_usable(env):
    """Pipelined: allowed Metadata, denied Produce(topic2), allowed ApiVersions. The
    answers come back in request order with their own correlation ids, the denial is a
    ProduceResponse v7 with error 29 on topic2 partition 0, and the connection goes on."""
    broker, proxy, _ = env
    broker.clear()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(frame(3, 8, 11, "service1", topics=[], allow_auto_topic_creation=False,
                           include_cluster_authorized_operations=False,
                           include_topic_authorized_operations=False)
                     + produce_frame(12, "service1", "topic2")
                     + frame(codec.API_VERSIONS, 2, 13, "service1"))
        answers = read_frames(sock, 3)
        assert [struct.unpack_from(">i", a)[0] for a in answers] == [11, 12, 13]
        resp = codec.RESPONSES[codec.PRODUCE].decode(answers[1], version=7, header=True)
        assert [(t.name, [(p.index, p.error_code) for p in t.partition_responses])
                for t in resp.responses] == [("topic2", [(0, 29)])]
        # ApiVersions through the proxy: Fetch offered up to v12 (topics by name), not
        # the broker's v16 (topics by id, which topic rules cannot judge)
        versions = codec.RESPONSES[codec.API_VERSIONS].decode(answers[2], version=2,
                                                              header=True)
        fetch = [a for a in versions.api_keys if a.api_key == codec.FETCH][0]
        assert fetch.max_version == 12
        sock.sendall(frame(codec.API_VERSIONS, 2, 14, "service1"))
        assert struct.unpack_from(">i", read_frames(sock, 1)[0])[0] == 14
    assert codec.PRODUCE not in broker.seen()


def test_oversized_frame_refused_unread(env):
    """A frame above --kafka-max-frame (8 MiB here) closes the connection as soon as
    its size is read: the proxy never waits for (or buffers) the body."""
    _, proxy, events = env
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", 64 << 20) + b"\0" * 1000)
        assert sock.recv(10) == b""
    event = events.wait(lambda e: e["verdict"] == "ERROR" and "exceeds" in e["reason"])
    assert str(8 << 20) in event["reason"]


def test_malformed_frame_closes_and_is_recorded(env):
    _, proxy, events = env
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        body = struct.pack(">hhih", 0, 7, 5, 50) + b"short"  # client id runs past the end
        sock.sendall(struct.pack(">i", len(body)) + body)
        assert sock.recv(10) == b""
    events.wait(lambda e: e["verdict"] == "ERROR" and "malformed" in e["reason"])


def test_no_rules_fail_closed_and_rule_free_entry_allows(env):
    """No state: every request denied. A peer allowed at L3/L4 only (rules None):
    everything passes, including other topics."""
    broker, proxy, _ = env
    try:
        write_state(proxy.state, None)
        out = client("produce", "confluent", proxy.port, "topic2", "service1", "--count", "1",
                     "--timeout", "5")
        assert out["delivered"] == 0
        write_state(proxy.state, state(broker.port, None))
        out = client("produce", "confluent", proxy.port, "topic2", "anyone", "--count", "2")
        assert out["delivered"] == 2, out
    finally:
        write_state(proxy.state, state(broker.port, SEED))
