"""Hubble Relay's Observer API (ciliumpy.hubble.relay_server) in front of two nodes'
Observer services, each a real gRPC server on loopback over its own flow store, called
with the stub generated from Cilium's observer.proto as the ``hubble`` CLI would: the
merged history cut across nodes, follow (history then every node's new flows, each
once, in time order), a node that dies and comes back mid-follow (node_status events,
nothing repeated), a node joining while followed, GetNodes/ServerStatus, refusals."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from ciliumpy import config as cfg
from ciliumpy.flows.store import FlowStore
from ciliumpy.hubble import follow as follow_module
from ciliumpy.hubble import server as hubble
from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2
from ciliumpy.hubble.relay_server import RelayServicer
from tests.support.agent import free_port
from tests.unit.test_flows import CLIENT, NAMES, T0, WEB, datapath


def drop(when: float) -> dict:
    return datapath("drop", CLIENT, WEB, "ingress", reason="policy-denied", verdict="denied",
                    when=when)


def trace(when: float) -> dict:
    return datapath("trace", CLIENT, WEB, "egress", when=when)


class Node:
    """One node's store served on a port of its own (which survives a restart)."""

    def __init__(self, name: str) -> None:
        self.name, self.port = name, free_port()
        self.store = FlowStore(name, NAMES.get, capacity=1000)
        self.server: hubble.HubbleServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = hubble.HubbleServer(self.address, hubble.ObserverServicer(
            self.store, self.name, self.address), workers=4)
        self.server.start()
        assert self.server.port == self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)
            self.server = None


@pytest.fixture
def mesh(monkeypatch):
    """(node2, node3, peers list, relay stub): node2 saw drops at T0+1 and T0+3, node3
    traces at T0+2 and T0+4."""
    monkeypatch.setattr(follow_module, "RETRY", 0.2)
    monkeypatch.setattr(follow_module, "REFRESH", 0.3)
    node2, node3 = Node("node2"), Node("node3")
    for node, events in ((node2, [drop(T0 + 1), drop(T0 + 3)]),
                         (node3, [trace(T0 + 2), trace(T0 + 4)])):
        for event in events:
            node.store.add(event)
        node.start()
    peers = [(node2.name, node2.address), (node3.name, node3.address)]
    relay = hubble.HubbleServer(f"127.0.0.1:{free_port()}",
                                RelayServicer(lambda: list(peers), timeout=2.0), workers=4,
                                name="Hubble Relay API")
    relay.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{relay.port}")
    yield node2, node3, peers, observer_pb2_grpc.ObserverStub(channel)
    channel.close()
    relay.stop(0)
    node2.stop()
    node3.stop()


def flow_times(responses) -> list[float]:
    return [r.flow.time.seconds + r.flow.time.nanos / 1e9 for r in responses
            if r.HasField("flow")]


def test_history_merged_and_cut_across_nodes(mesh):
    _, _, _, stub = mesh
    everything = list(stub.GetFlows(observer_pb2.GetFlowsRequest(), timeout=10))
    assert flow_times(everything) == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    assert [r.node_name for r in everything] == ["node2", "node3", "node2", "node3"]
    newest = list(stub.GetFlows(observer_pb2.GetFlowsRequest(number=3), timeout=10))
    assert flow_times(newest) == [T0 + 2, T0 + 3, T0 + 4]
    oldest = list(stub.GetFlows(observer_pb2.GetFlowsRequest(number=1, first=True),
                                timeout=10))
    assert flow_times(oldest) == [T0 + 1]
    dropped = list(stub.GetFlows(observer_pb2.GetFlowsRequest(whitelist=[
        flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]), timeout=10))
    assert {r.node_name for r in dropped} == {"node2"} and len(dropped) == 2


def test_a_dead_node_is_a_node_status_event_not_a_hang(mesh):
    _, _, peers, stub = mesh
    peers.append(("node4", f"127.0.0.1:{free_port()}"))  # nothing listens there
    started = time.monotonic()
    answer = list(stub.GetFlows(observer_pb2.GetFlowsRequest(), timeout=10))
    assert time.monotonic() - started < 5
    status = [r.node_status for r in answer if r.HasField("node_status")]
    assert len(status) == 1 and list(status[0].node_names) == ["node4"]
    assert status[0].state_change == relay_pb2.NODE_UNAVAILABLE
    assert "UNAVAILABLE" in status[0].message
    assert len(flow_times(answer)) == 4


def test_nodes_and_status_of_the_whole_cluster(mesh):
    node2, _, peers, stub = mesh
    peers.append(("node4", f"127.0.0.1:{free_port()}"))
    nodes = {n.name: n for n in stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes}
    assert set(nodes) == {"node2", "node3", "node4"}
    assert nodes["node2"].state == relay_pb2.NODE_CONNECTED
    assert nodes["node2"].address == node2.address and nodes["node2"].num_flows == 2
    assert nodes["node4"].state == relay_pb2.NODE_UNAVAILABLE
    status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    assert status.num_flows == 4 and status.max_flows == 2000
    assert status.num_connected_nodes.value == 2 and status.num_unavailable_nodes.value == 1
    assert list(status.unavailable_nodes) == ["node4"]


def test_refusals_come_from_the_relay(mesh):
    _, _, _, stub = mesh
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GetFlows(observer_pb2.GetFlowsRequest(first=True, follow=True), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.GetFlows(observer_pb2.GetFlowsRequest(whitelist=[
            flow_pb2.FlowFilter(source_fqdn=["x.example"])]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source_fqdn" in caught.value.details()


class Reader:
    """A follow call read in a thread."""

    def __init__(self, stub, **request) -> None:
        self.call = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True, **request),
                                  timeout=30)
        self.got: list[observer_pb2.GetFlowsResponse] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.got.append(response)
        except grpc.RpcError:
            pass

    def wait_for(self, predicate, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.got):
            assert time.monotonic() < deadline, f"{what}: {self.got}"
            time.sleep(0.05)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def test_follow_merges_history_then_new_flows_of_every_node_once(mesh):
    node2, node3, _, stub = mesh
    reader = Reader(stub, number=2)
    try:
        reader.wait_for(lambda got: len(flow_times(got)) == 2, "the history")
        assert flow_times(reader.got) == [T0 + 3, T0 + 4]
        time.sleep(0.3)  # the live streams are open
        now = time.time()
        node3.store.add(trace(now + 0.02))
        node2.store.add(drop(now + 0.01))
        reader.wait_for(lambda got: len(flow_times(got)) == 4, "the new flows")
        time.sleep(0.5)
        assert flow_times(reader.got)[2:] == [now + 0.01, now + 0.02]  # in time order
        assert [r.node_name for r in reader.got[2:]] == ["node2", "node3"]
    finally:
        reader.close()


def test_a_node_that_dies_and_returns_mid_follow(mesh):
    node2, node3, peers, stub = mesh
    reader = Reader(stub)  # follow alone: new flows only
    try:
        time.sleep(0.3)
        first = time.time()
        node2.store.add(drop(first))
        reader.wait_for(lambda got: len(flow_times(got)) == 1, "node2's first new flow")
        node2.stop()
        reader.wait_for(lambda got: any(r.HasField("node_status") for r in got),
                        "a node_status event for node2")
        down = [r.node_status for r in reader.got if r.HasField("node_status")][0]
        assert down.state_change == relay_pb2.NODE_UNAVAILABLE
        assert list(down.node_names) == ["node2"]
        node3.store.add(trace(time.time()))  # the others still stream
        reader.wait_for(lambda got: len(flow_times(got)) == 2, "node3's flow meanwhile")
        node2.store.add(drop(time.time()))  # stored while node2's API was down
        node2.start()
        reader.wait_for(lambda got: len(flow_times(got)) == 3, "node2's flow after its return")
        states = [r.node_status.state_change for r in reader.got if r.HasField("node_status")]
        assert states == [relay_pb2.NODE_UNAVAILABLE, relay_pb2.NODE_CONNECTED]
        time.sleep(0.5)
        names = [r.node_name for r in reader.got if r.HasField("flow")]
        assert names == ["node2", "node3", "node2"], "none repeated after the return"
        # a node registered while following is followed too
        node5 = Node("node5")
        node5.start()
        try:
            peers.append((node5.name, node5.address))
            time.sleep(0.8)  # the node list is read again (REFRESH, 0.3 s here)
            node5.store.add(trace(time.time()))
            reader.wait_for(lambda got: any(r.node_name == "node5" for r in got),
                            "the new node's flow")
        finally:
            reader.close()
            node5.stop()
    finally:
        reader.close()


def test_the_relay_option_needs_the_node_api():
    plain = {"hubble_disable_tls": "true"}
    with pytest.raises(cfg.ConfigError, match="needs 'hubble-listen-address'"):
        cfg.load(flags={"hubble_relay_listen_address": ":4245", **plain}, environ={})
    with pytest.raises(cfg.ConfigError, match="must be different"):
        cfg.load(flags={"hubble_relay_listen_address": ":4245",
                        "hubble_listen_address": ":4245", **plain}, environ={})
    loaded = cfg.load(flags={"hubble_relay_listen_address": ":4245",
                             "hubble_listen_address": ":4244", **plain}, environ={})
    assert loaded.hubble_relay_listen_address == ":4245" and loaded.hubble_disable_tls
