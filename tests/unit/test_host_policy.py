"""Host policies (nodeSelector): which rules select this node, what they are refused
for, and what ``policy trace`` says for the host (pure logic, no agent)."""

from __future__ import annotations

import pytest

from policies import engine
from policies.engine import labels_of, reserved_peer
from policies.parser import PolicyError, parse_text
from policies.resolve import Universe, rule_entries
from policies.trace import Side, offline_side, trace

HOST_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: ssh-only}
spec:
  nodeSelector:
    matchLabels: {node-access: ssh}
  ingress:
  - fromEntities: [world, remote-node]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"""
CONTAINERS = """
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [cluster]
"""


def rules_of(*texts: str):
    return [rule for text in texts for policy in parse_text(text) for rule in policy.rules]


def node(**labels: str):
    return [*labels_of(["reserved:host"]), *labels_of([f"node:{k}={v}" for k, v in
                                                       labels.items()])]


def test_node_selector_selects_the_host_by_its_node_labels_only():
    rules = rules_of(HOST_POLICY, CONTAINERS)
    host_rule, container_rule = rules
    assert engine.selecting(rules, node(**{"node-access": "ssh"}), host=True) == [host_rule]
    assert engine.selecting(rules, node(**{"node-access": "none"}), host=True) == []
    assert engine.selecting(rules, node(), host=True) == []
    # an endpointSelector {} selects every container, never the host; a host rule never
    # selects a container, even one carrying the same label
    container = labels_of(["node-access=ssh", "app=web"])
    assert engine.selecting(rules, container) == [container_rule]


def test_empty_node_selector_selects_every_node():
    rules = rules_of("spec: {nodeSelector: {}, ingress: [{fromEntities: [world]}]}")
    assert engine.selecting(rules, node(), host=True) == rules
    assert engine.selecting(rules, node(type="worker"), host=True) == rules


def test_clusterwide_and_namespaced_kinds_both_load_host_rules():
    for kind in ("CiliumClusterwideNetworkPolicy", "CiliumNetworkPolicy"):
        text = HOST_POLICY.replace("CiliumClusterwideNetworkPolicy", kind)
        assert rules_of(text)[0].is_host


def test_host_rule_entries_use_reserved_identities():
    rule = rules_of(HOST_POLICY)[0]
    universe = Universe({}, {})
    reqs = {"ingress": (), "egress": ()}
    entries = {(e.direction, e.identity, e.proto, e.port) for e in
               rule_entries(rule, reqs, universe)}
    assert entries == {("ingress", 2, 6, 22), ("ingress", 6, 6, 22)}


@pytest.mark.parametrize(("text", "words"), [
    ("spec: {nodeSelector: {}, endpointSelector: {}}", "not both"),
    ("""
spec:
  nodeSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
""", "spec.ingress[0].toPorts[0].rules: L7 rules (http) are not supported in host policies"),
    ("spec: {nodeSelector: {}, egress: [{toPorts: [{ports: [{port: '5', protocol: VRRP}]}]}]}",
     "VRRP has no ports"),
])
def test_refused_precisely(text, words):
    with pytest.raises(PolicyError) as info:
        parse_text(text)
    assert words in str(info.value)


def test_vrrp_and_igmp_load_without_a_port():
    rule = rules_of("""
spec:
  nodeSelector: {}
  egress:
  - toPorts: [{ports: [{protocol: VRRP}, {protocol: igmp}, {port: "443", protocol: TCP}]}]
""")[0]
    specs = engine.port_specs(rule.egress[0])
    assert (112, 0, 0) in specs and (2, 0, 0) in specs and (6, 443, 443) in specs


def host_side(managed=True, **labels):
    return Side(reserved_peer("host"), managed=managed, host=True,
                node_labels=tuple(labels_of([f"node:{k}={v}" for k, v in labels.items()])))


def test_trace_to_the_host():
    rules = rules_of(HOST_POLICY)
    world = offline_side("192.0.2.7")
    ssh_node = host_side(**{"node-access": "ssh"})
    assert trace(rules, world, ssh_node, "TCP", 22).verdict == "ALLOWED"
    denied = trace(rules, world, ssh_node, "TCP", 8080)
    assert denied.verdict == "DENIED" and denied.ingress == "DENIED"
    # a node the policy does not select: nothing enforced
    assert trace(rules, world, host_side(**{"node-access": "no"}), "TCP", 8080
                 ).verdict == "ALLOWED"
    # the host firewall off: stored, not enforced, and the log says why
    off = trace(rules, world, host_side(managed=False, **{"node-access": "ssh"}), "TCP", 8080)
    assert off.verdict == "ALLOWED"
    assert any("--enable-host-firewall" in line for line in off.log)


def test_trace_from_the_host_egress_and_always_mode():
    rules = rules_of("""
spec:
  nodeSelector: {}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
""")
    world = offline_side("198.51.100.1")
    assert trace(rules, offline_side("host"), world, "TCP", 443).verdict == "ALLOWED"
    assert trace(rules, offline_side("host"), world, "TCP", 80).verdict == "DENIED"
    # policy-enforcement=always never makes an unselected host default-deny
    assert trace([], host_side(), world, "TCP", 80, "always").verdict == "ALLOWED"
