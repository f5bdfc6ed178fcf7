"""Hubble's own gRPC API on the real agent: containers on a ciliumpy network under the
L7 seed policy, real requests (allowed, denied by the proxy, dropped at L3/L4), and the
flows read as a Hubble client reads them, with the stub generated from Cilium's
observer.proto over a gRPC channel to the agent's ``--hubble-listen-address``:
GetFlows (filters, number, follow), ServerStatus, GetNodes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import grpc
import pytest

from ciliumpy.hubble.convert import flow_from_proto, to_timestamp
from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2
from tests.e2e.test_l7_e2e import SEED_GET_PUBLIC, curl, l7  # noqa: F401 (fixture)
from tests.e2e.test_observe_e2e import flows as observe_flows
from tests.e2e.test_policy_e2e import apply, clear

L7_EVENT = flow_pb2.EventTypeFilter(type=129)


@pytest.fixture
def stub(agent):
    with grpc.insecure_channel(f"127.0.0.1:{agent.hubble_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield observer_pb2_grpc.ObserverStub(channel)


def get_flows(stub, **request) -> list[observer_pb2.GetFlowsResponse]:
    return list(stub.GetFlows(observer_pb2.GetFlowsRequest(**request), timeout=30))


class Follower:
    """A ``follow`` GetFlows read in a thread, as ``hubble observe -f`` reads it."""

    def __init__(self, stub, **request) -> None:
        self.got: list[observer_pb2.GetFlowsResponse] = []
        self.ended: grpc.StatusCode | None = None
        self.stream = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True, **request),
                                    timeout=120)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.stream:
                self.got.append(response)
        except grpc.RpcError as exc:
            self.ended = exc.code()

    def wait(self, count: int, within: float = 15) -> list[observer_pb2.GetFlowsResponse]:
        deadline = time.time() + within
        while len(self.got) < count and time.time() < deadline:
            time.sleep(0.05)
        return list(self.got)

    def cancel(self) -> None:
        self.stream.cancel()
        self.thread.join(10)


def test_hubble_clients_read_real_flows(agent, l7, stub, tmp_path):  # noqa: F811
    names, ip = l7["names"], l7["ip"]
    since = to_timestamp(time.time())  # the session agent holds other tests' flows too
    apply(agent, tmp_path, SEED_GET_PUBLIC)
    front, other = l7["pid"]["frontend"], l7["pid"]["other"]
    intruder = flow_pb2.FlowFilter(source_pod=[names["other"]], verdict=[flow_pb2.DROPPED])
    follower = Follower(stub, whitelist=[intruder])
    time.sleep(1.0)  # the stream is subscribed (a Hubble client cannot tell either)
    try:
        assert curl(front, f"http://{ip['backend']}/public/a") == (200, "ok GET /public/a")
        assert curl(front, f"http://{ip['backend']}/private") == (403, "Access denied")
        assert curl(other, f"http://{ip['backend']}/public/a", "-m", "2")[0] == 0
        live = follower.wait(1)
    finally:
        follower.cancel()
        clear(agent)
    until = time.time()

    # the follower saw the intruder's drop as it happened, and ended when cancelled
    assert live, "no live flow from the follow stream within 15 s"
    assert live[0].flow.source.pod_name == names["other"]
    assert live[0].flow.verdict == flow_pb2.DROPPED
    assert follower.ended == grpc.StatusCode.CANCELLED

    # GetFlows with a whitelist: every dropped SYN, as Hubble describes a policy drop
    dropped = get_flows(stub, whitelist=[intruder], until=to_timestamp(until))
    assert dropped and len(dropped) >= len(live)
    for response in dropped:
        assert response.WhichOneof("response_types") == "flow"
        flow = response.flow
        assert flow.verdict == flow_pb2.DROPPED
        assert flow.drop_reason_desc == flow_pb2.POLICY_DENIED and flow.drop_reason == 133
        assert flow.Type == flow_pb2.L3_L4 and flow.event_type.type in (1, 5)  # drop, verdict
        assert flow.source.pod_name == names["other"]
        assert flow.destination.pod_name == names["backend"]
        assert "container:role=other" in flow.source.labels and flow.source.identity >= 256
        assert flow.IP.source == ip["other"] and flow.IP.ipVersion == flow_pb2.IPv4
        assert flow.l4.TCP.destination_port == 80
        assert flow.traffic_direction == flow_pb2.INGRESS
        assert response.node_name == flow.node_name != ""
        assert response.time == flow.time and flow.time.seconds > 0
    # ... the same flows `ciliumpy observe -o json` prints
    assert [flow_from_proto(r.flow) for r in dropped] == observe_flows(
        agent, "--from-pod", names["other"], "--verdict", "DROPPED", "--all",
        "--until", datetime.fromtimestamp(until, UTC).isoformat())
    # number: the newest N
    assert get_flows(stub, whitelist=[intruder], number=1)[0].flow == dropped[-1].flow
    everything = get_flows(stub, number=5)
    assert len(everything) == 5

    # L7: the proxy's verdicts, request and response records
    answered = get_flows(stub, since=since, whitelist=[flow_pb2.FlowFilter(
        event_type=[L7_EVENT], source_pod=[names["backend"]], http_status_code=["2+"])])
    assert len(answered) == 1
    response = answered[0].flow
    assert response.Type == flow_pb2.L7 and response.l7.type == flow_pb2.RESPONSE
    assert response.l7.http.code == 200 and response.l7.http.url.endswith("/public/a")
    assert response.is_reply.value is True and response.l7.latency_ns > 0
    assert response.source.pod_name == names["backend"]  # a response comes from the server
    denied = get_flows(stub, since=since, whitelist=[flow_pb2.FlowFilter(
        event_type=[L7_EVENT], destination_pod=[names["backend"]], verdict=[flow_pb2.DROPPED],
        http_method=["GET"])])
    assert [r.flow.l7.http.url.rsplit("/", 1)[-1] for r in denied] == ["private"]
    assert denied[0].flow.source.pod_name == names["frontend"]

    # a blacklist: the intruder's traffic that was not dropped is its own egress
    out = get_flows(stub, since=since,
                    whitelist=[flow_pb2.FlowFilter(source_ip=[ip["other"]])],
                    blacklist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])])
    assert out and {r.flow.traffic_direction for r in out} == {flow_pb2.EGRESS}

    # a filter ciliumpy cannot answer: refused by name, not ignored
    with pytest.raises(grpc.RpcError) as caught:
        get_flows(stub, whitelist=[flow_pb2.FlowFilter(source_fqdn=["*.example.com"])])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source_fqdn" in caught.value.details()

    # ServerStatus and GetNodes, as `hubble status` and `hubble list nodes` show them
    status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    held = agent.api("/v1/flows/status")
    assert status.max_flows == held["capacity"] == 65536
    assert status.num_flows >= len(dropped) + 3 and status.seen_flows >= status.num_flows
    assert status.uptime_ns > 0 and status.version
    nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
    assert len(nodes) == 1
    node = nodes[0]
    assert node.name == dropped[0].flow.node_name
    assert node.state == relay_pb2.NODE_CONNECTED
    assert node.address == f"127.0.0.1:{agent.hubble_port}" and not node.tls.enabled
    assert node.max_flows == 65536 and node.seen_flows >= status.seen_flows
