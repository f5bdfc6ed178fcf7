"""The service map's graph from flows built the way the agent builds them: grouping by
app label (and by reserved identity), replies on their request's edge, forwarded vs
delivered vs dropped, L7 requests and answers by status class."""

from __future__ import annotations

from ciliumpy.flows import servicemap
from ciliumpy.flows.model import flows_from_event
from tests.unit.test_flows import CLIENT, NAMES, WEB, datapath, l7


def flows(*events: dict) -> list[dict]:
    return [f for e in events for f in flows_from_event(e, "node1", NAMES.get)]


def edge(graph: dict, src: str, dst: str) -> dict:
    return next(e for e in graph["edges"] if (e["source"], e["target"]) == (src, dst))


def test_groups_by_app_label_and_reserved_identity():
    assert servicemap.group_of({"labels": ["container:app=web", "network:env=x"]}) == "web"
    assert servicemap.group_of({"labels": ["reserved:world"]}) == "world"
    assert servicemap.group_of({"labels": ["container:tier=x"], "pod_name": "shop-api-2"}) \
        == "shop-api"
    assert servicemap.group_of({"identity": 300}) == "identity 300"


def test_forwarded_delivered_dropped_and_l7():
    graph = servicemap.build(flows(
        datapath("trace", CLIENT, WEB, "egress"),   # the client's egress let it out
        datapath("policy-verdict", CLIENT, WEB, "ingress"),  # web's ingress let it in
        l7(), l7("DENIED", status=None, path="/admin"),
        datapath("drop", CLIENT, WEB, "ingress", reason="policy-denied", verdict="denied",
                 dport=22)))
    assert {n["id"] for n in graph["nodes"]} == {"client", "web"}
    http = edge(graph, "client", "web")
    ports = {e["port"] for e in graph["edges"]}
    assert ports == {"TCP/80", "TCP/22"}, "a reply lands on its request's port"
    web80 = next(e for e in graph["edges"] if e["port"] == "TCP/80")
    assert web80["delivered"] >= 1 and web80["l7_requests"] == 2
    assert web80["l7_status"] == {"2xx": 1} and web80["drop_reasons"] == {"L7_DENIED": 1}
    ssh = next(e for e in graph["edges"] if e["port"] == "TCP/22")
    assert (ssh["dropped"], ssh["delivered"]) == (1, 0)
    assert ssh["drop_reasons"] == {"POLICY_DENIED": 1}
    assert http["source"] == "client"
