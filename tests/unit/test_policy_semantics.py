"""Policy semantics from docs/policy-semantics.md, each case checked two ways: the trace
verdict, and the datapath entries resolution produces (evaluated as the BPF lookup
does: deny first, then identity / any identity / L3-only)."""

from __future__ import annotations

import ipaddress

import pytest

from policies.engine import Peer, labels_of, reserved_peer
from policies.parser import parse_text
from policies.resolve import Universe, cidr_identities, resolve
from policies.trace import Side, trace

IDS = {256: ["container:app=client", "container:env=prod"], 257: ["container:app=server"],
       258: ["container:app=other"], 259: ["container:app=client"]}


def rules_of(text):
    return [rule for policy in parse_text(text, "case.yaml") for rule in policy.rules]


def side(number, managed=True):
    if number in (1, 2):
        return Side(reserved_peer({1: "host", 2: "world"}[number]), managed=False)
    return Side(Peer(labels_of(IDS[number])), managed)


def ip_side(ip):
    return Side(Peer((labels_of(["reserved:world"])), ip=ipaddress.ip_address(ip), kind="cidr"),
                managed=False)


def datapath_allows(rules, src_id, dst_id, proto, port, src_ip=None):
    """What the BPF programs would do for a new connection src -> dst."""
    cidrs = cidr_identities(rules)
    universe = Universe({k: v for k, v in IDS.items()}, cidrs)
    remote_id = src_id
    if src_ip is not None:  # the ipcache's longest prefix match
        matches = [(n.prefixlen, i) for n, i in cidrs.items()
                   if ipaddress.ip_address(src_ip) in n]
        remote_id = max(matches)[1] if matches else 2
    number = {"TCP": 6, "UDP": 17, "ICMP": 1}[proto]

    def allowed(resolved, direction, peer):
        enforced = resolved.enforce_ingress if direction == "ingress" else resolved.enforce_egress
        if not enforced:
            return True
        keys = [(peer, number), (0, number), (peer, 0), (0, 0)]

        def hit(entry):
            if entry.direction != direction or (entry.identity, entry.proto) not in keys:
                return False
            if entry.proto == 0 or entry.port == 0:
                return True
            return entry.port <= port <= (entry.end_port or entry.port)

        if any(hit(e) for e in resolved.entries if e.deny):
            return False
        return any(hit(e) for e in resolved.entries if not e.deny)

    dst = resolve(rules, labels_of(IDS[dst_id]), universe, "default")
    ok = allowed(dst, "ingress", remote_id)
    if src_id in IDS:
        ok = ok and allowed(resolve(rules, labels_of(IDS[src_id]), universe, "default"),
                            "egress", dst_id)
    return ok


def check(text, src, dst, proto, port, expected, src_ip=None):
    rules = rules_of(text)
    src_side = ip_side(src_ip) if src_ip else side(src)
    verdict = trace(rules, src_side, side(dst), proto, port).verdict
    assert verdict == expected, "\n".join(trace(rules, src_side, side(dst), proto, port).log)
    assert datapath_allows(rules, src, dst, proto, port, src_ip) == (expected == "ALLOWED")


L3 = """
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEndpoints: [{matchLabels: {app: client}}]
"""
L4 = """
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEndpoints: [{matchLabels: {app: client}}]
  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""


@pytest.mark.parametrize(("src", "proto", "port", "expected"), [
    (256, "TCP", 9999, "ALLOWED"), (259, "ICMP", 0, "ALLOWED"), (258, "TCP", 80, "DENIED"),
    (1, "TCP", 80, "DENIED")])
def test_l3_rule(src, proto, port, expected):
    check(L3, src, 257, proto, port, expected)


@pytest.mark.parametrize(("src", "proto", "port", "expected"), [
    (256, "TCP", 80, "ALLOWED"), (256, "TCP", 81, "DENIED"), (256, "ICMP", 0, "DENIED"),
    (256, "UDP", 80, "DENIED"), (258, "TCP", 80, "DENIED")])
def test_l4_rule(src, proto, port, expected):
    check(L4, src, 257, proto, port, expected)


def test_union_of_rules():
    text = L4 + """---
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEndpoints: [{matchLabels: {app: other}}]
  toPorts: [{ports: [{port: "8000", endPort: 8100}]}]
"""
    check(text, 258, 257, "TCP", 8050, "ALLOWED")
    check(text, 258, 257, "UDP", 8100, "ALLOWED")
    check(text, 258, 257, "TCP", 80, "DENIED")
    check(text, 256, 257, "TCP", 80, "ALLOWED")


def test_deny_wins_over_allow():
    text = L3 + """ingressDeny:
- toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""
    check(text, 256, 257, "TCP", 80, "DENIED")
    check(text, 256, 257, "TCP", 81, "ALLOWED")


def test_cidr_with_except():
    text = """
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
"""
    check(text, 2, 257, "TCP", 80, "ALLOWED", src_ip="10.2.3.4")
    check(text, 2, 257, "TCP", 80, "DENIED", src_ip="10.1.2.3")
    check(text, 2, 257, "TCP", 80, "DENIED", src_ip="192.0.2.9")
    check(text, 256, 257, "TCP", 80, "DENIED")  # endpoints never match CIDR rules


def test_entities():
    text = """
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEntities: [host]
"""
    check(text, 1, 257, "TCP", 80, "ALLOWED")
    check(text, 2, 257, "TCP", 80, "DENIED")
    check(text, 256, 257, "TCP", 80, "DENIED")
    world = text.replace("[host]", "[world]")
    check(world, 2, 257, "TCP", 80, "ALLOWED", src_ip="192.0.2.9")
    check(world, 256, 257, "TCP", 80, "DENIED")
    cluster = text.replace("[host]", "[cluster]")
    check(cluster, 256, 257, "TCP", 80, "ALLOWED")
    check(cluster, 1, 257, "TCP", 80, "ALLOWED")
    check(cluster, 2, 257, "TCP", 80, "DENIED", src_ip="192.0.2.9")


def test_requires():
    text = L3.replace("ingress:", "ingress:\n- fromRequires: [{matchLabels: {env: prod}}]")
    check(text, 256, 257, "TCP", 80, "ALLOWED")  # client with env=prod
    check(text, 259, 257, "TCP", 80, "DENIED")  # client without env=prod


def test_default_deny_is_per_direction():
    text = """
endpointSelector: {matchLabels: {app: server}}
egress:
- toEndpoints: [{matchLabels: {app: client}}]
"""
    check(text, 258, 257, "TCP", 80, "ALLOWED")  # ingress not selected: open
    check(text, 257, 258, "TCP", 80, "DENIED")  # the server's egress is default-deny
    check(text, 257, 256, "TCP", 80, "ALLOWED")


def test_enable_default_deny_false():
    text = L3 + """enableDefaultDeny: {ingress: false}
ingressDeny:
- fromEndpoints: [{matchLabels: {app: other}}]
  toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"""
    check(text, 256, 257, "TCP", 80, "ALLOWED")
    check(text, 258, 257, "TCP", 80, "ALLOWED")  # no default deny: others still allowed
    check(text, 258, 257, "TCP", 22, "DENIED")


def test_empty_element_denies_everything_and_empty_list_selects_nothing():
    check("endpointSelector: {matchLabels: {app: server}}\ningress: [{}]\n",
          256, 257, "TCP", 80, "DENIED")
    check("endpointSelector: {matchLabels: {app: server}}\ningress: []\n",
          256, 257, "TCP", 80, "ALLOWED")


def test_l4_only_rule_allows_every_peer():
    text = """
endpointSelector: {matchLabels: {app: server}}
ingress:
- toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""
    check(text, 258, 257, "TCP", 443, "ALLOWED")
    check(text, 2, 257, "TCP", 443, "ALLOWED", src_ip="192.0.2.1")
    check(text, 258, 257, "TCP", 444, "DENIED")


def test_match_expressions():
    text = """
endpointSelector: {matchExpressions: [{key: app, operator: In, values: [server]}]}
ingress:
- fromEndpoints:
  - matchExpressions:
    - {key: app, operator: NotIn, values: [other]}
    - {key: env, operator: DoesNotExist}
"""
    check(text, 259, 257, "TCP", 80, "ALLOWED")
    check(text, 256, 257, "TCP", 80, "DENIED")  # has env
    check(text, 258, 257, "TCP", 80, "DENIED")
    exists = text.replace("operator: DoesNotExist", "operator: Exists")
    check(exists, 256, 257, "TCP", 80, "ALLOWED")


def test_wildcard_selector_and_both_sides():
    text = """
endpointSelector: {}
egress:
- toEndpoints: [{matchLabels: {app: server}}]
  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""
    check(text, 256, 257, "TCP", 80, "ALLOWED")
    check(text, 256, 258, "TCP", 80, "DENIED")  # egress of every endpoint is default-deny
    both = text + """---
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEndpoints: [{matchLabels: {app: other}}]
"""
    check(both, 256, 257, "TCP", 80, "DENIED")  # egress allows, ingress does not


def test_trace_log_lines_follow_cilium():
    result = trace(rules_of(L4), side(258), side(257), "TCP", 80)
    text = "\n".join(result.log)
    assert "Tracing From: [container:app=other] => To: [container:app=server] Ports: [80/TCP]" \
        in text
    assert "Resolving ingress policy for [container:app=server]" in text
    assert "No label match for [container:app=other]" in text
    assert "Ingress verdict: denied" in text and text.endswith("Final verdict: DENIED")
    assert result.as_dict()["ingress"] == "DENIED" and result.as_dict()["egress"] == "ALLOWED"
