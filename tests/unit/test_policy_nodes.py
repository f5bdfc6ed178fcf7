"""fromNodes / toNodes: parsing (Cilium's examples load), which nodes a node selector
picks (checked as trace verdicts and as resolved datapath entries), that the entities
remote-node, cluster and all still cover every node, that fromEndpoints never picks a
node by a container-like label, and the node identity allocator (same labels, same
number; numbers kept across a restart through the ipcache; released when unused)."""

from __future__ import annotations

import pathlib

import pytest

from ciliumpy.node_identities import NodeIdentities, node_labels
from ciliumpy.nodes import Node, from_json
from policies.engine import Peer, labels_of
from policies.identities import NODE_SCOPE, REMOTE_NODE, is_node_identity
from policies.parser import PolicyError, parse_text
from policies.resolve import Universe, resolve
from policies.trace import Side, offline_side, trace

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "data" / "cilium-examples"
CONTAINERS = {256: ["container:env=dev"], 257: ["container:role=worker"]}
WORKER, CONTROL = NODE_SCOPE + 1, NODE_SCOPE + 2
NODES = {WORKER: ["node:role=worker", "reserved:remote-node", "node:zone=a"],
         CONTROL: ["node:node-role.kubernetes.io/control-plane=", "reserved:remote-node"]}


def rules_of(text: str):
    return [rule for policy in parse_text(text, "case.yaml") for rule in policy.rules]


def allowed_ingress(rules, src: int) -> bool:
    """What the datapath does for a new connection from identity ``src`` to env=dev."""
    universe = Universe(CONTAINERS, {}, nodes=NODES)
    resolved = resolve(rules, labels_of(CONTAINERS[256]), universe, "default")
    if not resolved.enforce_ingress:
        return True
    return any(e.direction == "ingress" and not e.deny and e.identity in (src, 0)
               for e in resolved.entries)


def node_side(number: int) -> Side:
    return Side(Peer(labels_of(NODES[number]), kind="node"), managed=False)


def traced(rules, src: Side) -> str:
    return trace(rules, src, Side(Peer(labels_of(CONTAINERS[256]))), "TCP", 80).verdict


def test_cilium_examples_load():
    for name in ("customnodes.yaml", "from_nodes.yaml"):
        policy, = parse_text((EXAMPLES / "policies/l3/entities" / name).read_text(), name)
        element, = policy.rules[0].ingress
        assert element.nodes and element.endpoints is None and not policy.warnings


def test_to_nodes_with_ports_and_expressions():
    rule, = rules_of("endpointSelector: {}\negress:\n- toNodes:\n"
                     "  - matchExpressions: [{key: zone, operator: In, values: [a, b]}]\n"
                     "  toPorts: [{ports: [{port: '22', protocol: TCP}]}]\n")
    element, = rule.egress
    assert element.nodes[0].match_expressions[0].values == ("a", "b")
    assert element.to_ports[0].ports[0].port == 22


@pytest.mark.parametrize("text, message", [
    ("ingress: [{fromNodes: [{}], fromEndpoints: [{}]}]", "combining fromEndpoints and "
     "fromNodes is not supported"),
    ("ingress: [{fromNodes: {role: worker}}]", "must be a list"),
    ("ingress: [{fromNodes: [{matchExpressions: [{key: a, operator: Near}]}]}]",
     "operator 'Near' is not one of"),
    ("egress: [{toNodes: [{matchLabels: {role: [x]}}]}]", "label keys and values must be "
     "strings"),
])
def test_bad_node_selectors_are_refused(text, message):
    with pytest.raises(PolicyError, match=message):
        rules_of("endpointSelector: {}\n" + text)


def test_from_nodes_selects_nodes_by_label_only():
    rules = rules_of("endpointSelector: {matchLabels: {env: dev}}\n"
                     "ingress: [{fromNodes: [{matchLabels: {role: worker}}]}]\n")
    assert allowed_ingress(rules, WORKER) and traced(rules, node_side(WORKER)) == "ALLOWED"
    for other in (CONTROL, REMOTE_NODE, 257, 1, 2):  # the container role=worker too
        assert not allowed_ingress(rules, other), other
    assert traced(rules, node_side(CONTROL)) == "DENIED"
    assert traced(rules, offline_side("remote-node")) == "DENIED"
    assert traced(rules, Side(Peer(labels_of(CONTAINERS[257])))) == "DENIED"
    assert traced(rules, offline_side("node:role=worker")) == "ALLOWED"


def test_empty_node_selector_selects_every_node_and_no_container():
    rules = rules_of("endpointSelector: {matchLabels: {env: dev}}\n"
                     "ingress: [{fromNodes: [{}]}]\n")
    for node in (WORKER, CONTROL, REMOTE_NODE):
        assert allowed_ingress(rules, node), node
    for other in (257, 1, 2):
        assert not allowed_ingress(rules, other), other


@pytest.mark.parametrize("entity", ["remote-node", "cluster"])
def test_entities_still_select_every_node(entity):
    rules = rules_of("endpointSelector: {matchLabels: {env: dev}}\n"
                     f"ingress: [{{fromEntities: [{entity}]}}]\n")
    for node in (WORKER, CONTROL, REMOTE_NODE):
        assert allowed_ingress(rules, node), node
        assert traced(rules, node_side(node) if node != REMOTE_NODE
                      else offline_side("remote-node")) == "ALLOWED"
    assert not allowed_ingress(rules, 2)


def test_from_endpoints_picks_a_node_only_by_node_or_reserved_keys():
    same_label = rules_of("endpointSelector: {matchLabels: {env: dev}}\n"
                          "ingress: [{fromEndpoints: [{matchLabels: {role: worker}}]}]\n")
    assert allowed_ingress(same_label, 257) and not allowed_ingress(same_label, WORKER)
    by_source = rules_of("endpointSelector: {matchLabels: {env: dev}}\ningress:\n"
                         "- fromEndpoints: [{matchLabels: {'node:role': worker}}]\n"
                         "- fromEndpoints: [{matchLabels: {'reserved:remote-node': ''}}]\n")
    assert all(allowed_ingress(by_source, n) for n in (WORKER, CONTROL, REMOTE_NODE))
    assert not allowed_ingress(by_source, 257)


def test_deny_from_nodes_wins():
    rules = rules_of("endpointSelector: {matchLabels: {env: dev}}\n"
                     "ingress: [{fromEntities: [remote-node]}]\n"
                     "ingressDeny: [{fromNodes: [{matchLabels: {zone: a}}]}]\n")
    assert traced(rules, node_side(WORKER)) == "DENIED"
    assert traced(rules, node_side(CONTROL)) == "ALLOWED"


# ---- node identities ----------------------------------------------------------------
def node(name: str, ip: str, **labels: str) -> Node:
    return Node(name, ip, "vxlan", labels=labels)


def test_node_labels_and_record():
    assert node_labels({"role": "worker", "zone": "a"}) == (
        "node:role=worker", "node:zone=a", "reserved:remote-node")
    assert node_labels({}) == ()
    record = from_json('{"name": "n", "ip": "10.0.0.1", "encapsulation": "vxlan"}')
    assert record.labels == {}, "a record of an agent without labels"


def test_same_labels_same_identity_and_release():
    ids = NodeIdentities()
    a, b = node("a", "10.0.0.1", role="worker"), node("b", "10.0.0.2", role="worker")
    c, d = node("c", "10.0.0.3", role="db"), node("d", "10.0.0.4")
    got = ids.assign([a, b, c, d])
    assert got["a"] == got["b"] != got["c"] and got["d"] == REMOTE_NODE
    assert all(is_node_identity(got[n]) for n in "abc") and got["a"] < 1 << 32
    assert sorted(ids.identities()) == sorted({got["a"], got["c"]})
    assert ids.identities()[got["c"]] == ["node:role=db", "reserved:remote-node"]
    again = ids.assign([a, b, c, d])
    assert again == got, "stable while nothing changes"
    gone = ids.assign([a, d])  # b left, c left: db's identity is released
    assert gone == {"a": got["a"], "d": REMOTE_NODE} and set(ids.identities()) == {got["a"]}
    relabeled = ids.assign([node("a", "10.0.0.1", role="db")])
    assert relabeled["a"] != got["a"] and set(ids.identities()) == {relabeled["a"]}
    # Cluster Mesh: nodes named by the mapping's keys (two clusters may both have "a")
    meshed = ids.assign({"a": node("a", "10.0.0.1", role="db"),
                         "b/a": node("a", "10.1.0.1", role="db")})
    assert meshed == {"a": relabeled["a"], "b/a": relabeled["a"]}


def test_numbers_survive_a_restart_through_the_ipcache():
    first = NodeIdentities()
    nodes = [node("a", "10.0.0.1", role="x"), node("b", "10.0.0.2", role="y"),
             node("c", "10.0.0.3", role="z")]
    first.assign(nodes[:1])
    before = first.assign(nodes)  # c's number is not the lowest free one any more...
    first.assign(nodes[1:])
    before = first.assign(nodes[1:])
    rows = [{"prefix": f"{n.ip}/32", "identity": before[n.name]} for n in nodes[1:]]
    rows.append({"prefix": "10.9.9.9/32", "identity": 256})  # not a node's: ignored
    second = NodeIdentities()
    second.adopt(rows)
    assert second.assign(list(reversed(nodes[1:]))) == before
