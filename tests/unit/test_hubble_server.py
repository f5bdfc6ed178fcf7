"""The Hubble Observer service (ciliumpy.hubble.server) over a real FlowStore, served by a
real gRPC server on loopback and called with the stub generated from Cilium's
observer.proto, as a Hubble client would: GetFlows windows, filters, field masks and
follow (no flow lost or sent twice between history and live flows, slow followers told
what they lost), ServerStatus, GetNodes, refusals, and stopping."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from ciliumpy import config as cfg
from ciliumpy.flows.store import FlowStore
from ciliumpy.hubble import server as hubble
from ciliumpy.hubble.convert import flow_from_proto, to_timestamp
from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2
from tests.support.agent import free_port
from tests.unit.test_flows import CLIENT, DB, NAMES, T0, WEB, datapath, l7


def drop(when: float, src: str = CLIENT) -> dict:
    return datapath("drop", src, WEB, "ingress", reason="policy-denied", verdict="denied",
                    when=when)


def trace(when: float) -> dict:
    return datapath("trace", WEB, DB, "egress", sport=50000, dport=5432, when=when)


@pytest.fixture
def served():
    """(store, stub, server): a store with 3 drops, 3 traces and an HTTP exchange."""
    store = FlowStore("node1", NAMES.get, capacity=1000)
    for i in range(3):
        store.add(drop(T0 + i))
        store.add(trace(T0 + i + 0.5))
    store.add(l7(when=T0 + 10))
    servicer = hubble.ObserverServicer(store, "node1", "127.0.0.1:4245", started=time.time())
    server = hubble.HubbleServer(f"127.0.0.1:{free_port()}", servicer, workers=4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield store, observer_pb2_grpc.ObserverStub(channel), server
    channel.close()
    server.stop()


def get(stub, deadline: float = 10, **request) -> list[observer_pb2.GetFlowsResponse]:
    return list(stub.GetFlows(observer_pb2.GetFlowsRequest(**request), timeout=deadline))


def summaries(responses) -> list[str]:
    return [f"{r.flow.verdict}:{r.flow.source.pod_name}" for r in responses]


def test_number_first_and_windows(served):
    _, stub, _ = served
    everything = get(stub)  # number 0: all, as Hubble's server answers
    assert len(everything) == 8
    assert [r.flow.time.ToNanoseconds() for r in everything] == sorted(
        r.flow.time.ToNanoseconds() for r in everything)
    last = get(stub, number=2)
    assert [r.flow.l7.type for r in last] == [flow_pb2.REQUEST, flow_pb2.RESPONSE]
    assert last[1].node_name == "node1" and last[1].time == last[1].flow.time
    first = get(stub, number=2, first=True)
    assert summaries(first) == [f"{flow_pb2.DROPPED}:client", f"{flow_pb2.FORWARDED}:web"]
    since = get(stub, since=to_timestamp(T0 + 1.9), until=to_timestamp(T0 + 2.6))
    assert [r.flow.time.ToMilliseconds() for r in since] == [
        int((T0 + 2) * 1000), int((T0 + 2.5) * 1000)]
    assert len(get(stub, since=to_timestamp(T0 + 0.9), number=1)) == 1  # forward from since


def test_filters_and_field_mask(served):
    _, stub, _ = served
    dropped = get(stub, whitelist=[flow_pb2.FlowFilter(source_pod=["client"],
                                                       verdict=[flow_pb2.DROPPED])])
    assert len(dropped) == 3 and all(r.flow.drop_reason_desc == flow_pb2.POLICY_DENIED
                                     for r in dropped)
    not_l7 = get(stub, blacklist=[flow_pb2.FlowFilter(
        event_type=[flow_pb2.EventTypeFilter(type=129)])])
    assert len(not_l7) == 6 and all(r.flow.Type == flow_pb2.L3_L4 for r in not_l7)
    either = get(stub, whitelist=[flow_pb2.FlowFilter(http_status_code=["200"]),
                                  flow_pb2.FlowFilter(destination_port=["5432"])])
    assert len(either) == 4
    masked = get(stub, number=1, field_mask=field_mask_pb2.FieldMask(
        paths=["verdict", "source.pod_name", "time"]))
    assert flow_from_proto(masked[0].flow) == {
        "time": masked[0].flow.time.ToJsonString(), "verdict": "FORWARDED",
        "source": {"pod_name": "web"}}
    assert masked[0].node_name == ""  # as Hubble: the response's fields come from the mask


@pytest.mark.parametrize("request_fields, message", [
    ({"whitelist": [flow_pb2.FlowFilter(source_fqdn=["x.example"])]},
     "whitelist[0]: FlowFilter field source_fqdn not supported by ciliumpy"),
    ({"blacklist": [flow_pb2.FlowFilter(), flow_pb2.FlowFilter(source_ip=["300.1.1.1"])]},
     "blacklist[1]: invalid IP address or CIDR '300.1.1.1'"),
    ({"first": True, "follow": True}, "first cannot be specified with follow"),
    ({"field_mask": field_mask_pb2.FieldMask(paths=["nope"])}, "invalid field mask"),
    ({"since": Timestamp(nanos=-1)}, "invalid timestamp"),
])
def test_bad_requests_are_invalid_argument(served, request_fields, message):
    _, stub, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        get(stub, **request_fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def following(server: hubble.HubbleServer, count: int = 1) -> None:
    """Waits until ``count`` follow streams are subscribed (a client cannot tell)."""
    deadline = time.time() + 5
    while server.servicer.followers < count and time.time() < deadline:
        time.sleep(0.01)
    assert server.servicer.followers >= count


def test_follow_sends_history_then_every_new_flow_once(served):
    store, stub, _ = served
    adding = threading.Thread(target=lambda: [
        (store.add(drop(T0 + 100 + i, src=CLIENT if i % 2 else DB)), time.sleep(0.001))
        for i in range(300)], daemon=True)
    adding.start()  # flows stored before, while and after the stream reads its history
    stream = stub.GetFlows(observer_pb2.GetFlowsRequest(number=2, follow=True), timeout=30)
    got: list[observer_pb2.GetFlowsResponse] = []

    def read() -> None:
        try:
            for response in stream:
                got.append(response)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    adding.join(10)
    stored = [r.flow.time.ToNanoseconds() for r in get(stub)]
    deadline = time.time() + 10
    while (not got or got[-1].flow.time.ToNanoseconds() != stored[-1]) \
            and time.time() < deadline:
        time.sleep(0.05)
    stream.cancel()
    reader.join(5)
    assert not reader.is_alive(), "cancel ends the stream"
    times = [r.flow.time.ToNanoseconds() for r in got]
    start = stored.index(times[0])
    assert times == stored[start:], "from its start on, every flow once, in order"
    assert len(times) > 2


class _Context:
    """The little of grpc.ServicerContext that GetFlows uses, for calling it directly."""

    def add_callback(self, callback) -> bool:
        return True

    def is_active(self) -> bool:
        return True

    def abort(self, code, details):
        raise AssertionError(f"aborted: {code} {details}")


def test_a_flow_stored_while_the_history_is_read_is_sent_once():
    class RacingStore(FlowStore):
        def query(self, *args, **kwargs):
            self.add(drop(T0 + 50))  # arrives after the follower subscribed
            return super().query(*args, **kwargs)

    store = RacingStore("node1", NAMES.get)
    servicer = hubble.ObserverServicer(store, "node1")
    stream = servicer.GetFlows(observer_pb2.GetFlowsRequest(number=1, follow=True),
                               _Context())
    assert next(stream).flow.time.seconds == int(T0 + 50)  # in the history, and the feed
    store.add(drop(T0 + 51))
    assert next(stream).flow.time.seconds == int(T0 + 51)
    servicer.close()
    assert list(stream) == []


def test_follow_filters_and_only_new_without_number(served):
    store, stub, server = served
    stream = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True, whitelist=[
        flow_pb2.FlowFilter(source_pod=["db"])]), timeout=30)
    following(server)
    store.add(drop(T0 + 200))  # the client's: filtered out
    store.add(drop(T0 + 201, src=DB))
    first = next(stream)
    assert first.flow.source.pod_name == "db" and first.flow.time.seconds == int(T0 + 201)
    stream.cancel()


def test_follow_ends_at_the_deadline_and_at_until(served):
    _, stub, _ = served
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        get(stub, deadline=1.0, follow=True)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    until = get(stub, follow=True, number=1, until=to_timestamp(time.time() + 1.0))
    assert len(until) == 1 and time.monotonic() - started < 8


def test_a_slow_follower_is_told_what_it_lost(served, monkeypatch):
    store, stub, server = served
    monkeypatch.setattr(hubble, "FEED_SIZE", 5)
    stream = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True), timeout=30)
    following(server)
    store.add(drop(T0 + 300))
    assert next(stream).HasField("flow")  # subscribed and reading
    entered, release = threading.Event(), threading.Event()
    original = hubble.ObserverServicer._response

    def slow_response(self, flow, mask):  # the first new flow stalls the stream's thread
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return original(self, flow, mask)
    monkeypatch.setattr(hubble.ObserverServicer, "_response", slow_response)
    store.add(drop(T0 + 301))
    assert entered.wait(5)
    for i in range(12):
        store.add(drop(T0 + 302 + i))
    release.set()
    kinds = [next(stream) for _ in range(7)]
    stream.cancel()
    assert [k.WhichOneof("response_types") for k in kinds] == ["flow"] * 6 + ["lost_events"]
    lost = kinds[-1].lost_events
    assert lost.source == flow_pb2.HUBBLE_RING_BUFFER and lost.num_events_lost == 7


def test_status_nodes_and_the_rest(served):
    store, stub, _ = served
    status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=5)
    assert (status.num_flows, status.max_flows, status.seen_flows) == (8, 1000, 8)
    assert status.uptime_ns > 0 and status.version.endswith("+ciliumpy")
    assert not status.HasField("num_connected_nodes")  # one agent, as Hubble's
    store.add(drop(time.time()))
    assert stub.ServerStatus(observer_pb2.ServerStatusRequest()).flows_rate == 1 / 60
    nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=5).nodes
    assert len(nodes) == 1
    node = nodes[0]
    assert (node.name, node.address, node.state) == ("node1", "127.0.0.1:4245",
                                                     relay_pb2.NODE_CONNECTED)
    assert node.num_flows == 9 and node.max_flows == 1000 and not node.tls.enabled
    assert not stub.GetNamespaces(observer_pb2.GetNamespacesRequest()).namespaces
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GetAgentEvents(observer_pb2.GetAgentEventsRequest(), timeout=5))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_node_list_makes_status_count_nodes():
    store = FlowStore("relay", NAMES.get)
    nodes = [observer_pb2.Node(name="a", state=relay_pb2.NODE_CONNECTED),
             observer_pb2.Node(name="b", state=relay_pb2.NODE_UNAVAILABLE)]
    servicer = hubble.ObserverServicer(store, "relay", nodes=lambda: nodes)
    status = servicer.ServerStatus(observer_pb2.ServerStatusRequest(), None)
    assert status.num_connected_nodes.value == 1 and status.num_unavailable_nodes.value == 1
    assert list(status.unavailable_nodes) == ["b"]
    assert servicer.GetNodes(observer_pb2.GetNodesRequest(), None).nodes == nodes
    servicer.close()
    assert store.listeners == []


def test_stop_ends_follow_streams_and_a_busy_port_is_retried(served, monkeypatch):
    store, stub, server = served
    monkeypatch.setattr(hubble, "BIND_RETRY_FOR", 10.0)
    stream = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True), timeout=30)
    following(server)
    store.add(drop(T0 + 400))
    assert next(stream).HasField("flow")
    successor = hubble.HubbleServer(
        f"127.0.0.1:{server.port}", hubble.ObserverServicer(store, "node1"), workers=2)
    successor.start()  # the port is still ours: it retries in the background
    assert successor.port == 0
    server.stop()
    try:
        assert not list(stream)  # ended by the server: cleanly, or cancelled at the grace
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    deadline = time.time() + 5
    while not successor.port and time.time() < deadline:
        time.sleep(0.1)
    try:
        assert successor.port == server.port
        with grpc.insecure_channel(f"127.0.0.1:{successor.port}") as channel:
            answer = observer_pb2_grpc.ObserverStub(channel).ServerStatus(
                observer_pb2.ServerStatusRequest(), timeout=5)
        assert answer.seen_flows == 8 + 1
    finally:
        successor.stop()


def test_the_agent_option_and_its_address():
    def load(value: str) -> str:
        return cfg.load(None, {"hubble_listen_address": value, "hubble_disable_tls": True},
                        environ={}).hubble_listen_address
    assert cfg.Config().hubble_listen_address == ""  # off unless asked for
    assert load("127.0.0.1:4245") == "127.0.0.1:4245" and load(":4244") == ":4244"
    assert load("[::1]:4245") == "[::1]:4245"
    for bad, why in (("4244", "HOST:PORT"), ("::1:4245", "brackets"), ("a b:1", "host name"),
                     ("127.0.0.1:70000", "1..65535")):
        with pytest.raises(cfg.ConfigError, match=f"hubble-listen-address.*{why}"):
            load(bad)
    assert hubble.grpc_address(":4244") == "[::]:4244"
    assert hubble.grpc_address("127.0.0.1:4245") == "127.0.0.1:4245"
