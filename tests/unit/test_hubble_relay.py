"""The relay over real gRPC servers on loopback (two nodes' Observer services over their
own flow stores) and one address where nothing listens: filters travel as Hubble's
messages, answers merge in time order, ``--last``/``--first`` cut the merged list, and
the dead node becomes a warning within the deadline instead of a hang."""

from __future__ import annotations

import json
import time

import pytest

from ciliumpy.flows.flags import filters_from_cli
from ciliumpy.flows.formats import json_line
from ciliumpy.flows.store import FlowStore
from ciliumpy.hubble import relay
from ciliumpy.hubble import server as hubble
from tests.support.agent import free_port
from tests.unit.test_flows import CLIENT, NAMES, T0, WEB, datapath


def drop(when: float, src: str = CLIENT) -> dict:
    return datapath("drop", src, WEB, "ingress", reason="policy-denied", verdict="denied",
                    when=when)


def trace(when: float) -> dict:
    return datapath("trace", CLIENT, WEB, "egress", when=when)


@pytest.fixture
def nodes():
    """Two served nodes: node2 saw drops at T0+1, T0+3; node3 traces at T0+2, T0+4."""
    made = []
    for name, events in (("node2", [drop(T0 + 1), drop(T0 + 3)]),
                         ("node3", [trace(T0 + 2), trace(T0 + 4)])):
        store = FlowStore(name, NAMES.get, capacity=100)
        for event in events:
            store.add(event)
        port = free_port()
        server = hubble.HubbleServer(f"127.0.0.1:{port}", hubble.ObserverServicer(
            store, name, f"127.0.0.1:{port}", started=time.time()), workers=2)
        server.start()
        made.append((name, f"127.0.0.1:{server.port}", server))
    yield [(name, address) for name, address, _ in made]
    for _, _, server in made:
        server.stop()


def ask(peers, *tokens, last=None, first=None, timeout=5.0):
    whitelist, blacklist = filters_from_cli(list(tokens))
    return relay.ask_nodes(peers, relay.request_for(whitelist, blacklist, None, None, last,
                                                    first), timeout=timeout)


def test_flows_of_every_node_in_time_order(nodes):
    answer = ask(nodes)
    assert answer.warnings == [] and sorted(answer.nodes) == ["node2", "node3"]
    assert [r["node_name"] for r in answer.flows] == ["node2", "node3", "node2", "node3"]
    assert [relay.flow_time(r) for r in answer.flows] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]


def test_filters_travel_to_every_node(nodes):
    answer = ask(nodes, ("--verdict", "DROPPED"))
    assert {r["node_name"] for r in answer.flows} == {"node2"} and len(answer.flows) == 2
    answer = ask(nodes, ("--not", ""), ("--verdict", "DROPPED"))
    assert {r["node_name"] for r in answer.flows} == {"node3"}


def test_last_and_first_are_of_the_merged_flows(nodes):
    local = [json.loads(json_line(flow)) for flow in FlowStore(
        "node1", NAMES.get).query([], [])]  # an empty local store
    newest = relay.merge(local, ask(nodes, last=2), last=2, first=None)
    assert [relay.flow_time(r) for r in newest] == [T0 + 3, T0 + 4]
    oldest = relay.merge(local, ask(nodes, first=1), last=None, first=1)
    assert [relay.flow_time(r) for r in oldest] == [T0 + 1]


def test_a_dead_node_is_a_warning_not_a_hang(nodes):
    dead = ("node4", f"127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    answer = ask([*nodes, dead], timeout=2.0)
    assert time.monotonic() - started < 4.0
    assert len(answer.flows) == 4
    assert len(answer.warnings) == 1
    assert answer.warnings[0].startswith(f"node node4 ({dead[1]}) did not answer: UNAVAILABLE")
