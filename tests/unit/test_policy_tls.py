"""serverNames (TLS SNI) in policy: what loads and what is refused (as Cilium's
validation), the wildcard semantics of Cilium's current ServerName, and the path from a
rule to the proxy's verdict (resolution -> proxy state entries -> ProxyState)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import tempfile

import pytest

from ciliumpy.flows.model import flows_from_event
from ciliumpy.hubble.convert import flow_to_proto
from ciliumpy.monitor import format_l7
from ciliumpy.proxy_state import l7_entries
from policies.engine import labels_of
from policies.parser import PolicyError, parse_file, parse_text
from policies.resolve import Universe, resolve
from policies.tls_rules import SniQuery, TlsRuleError, TlsRuleSet, check_name
from proxy.state import ProxyState
from tests.support.agent import CLI

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "data" / "cilium-examples"

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: sni}
spec:
  endpointSelector: {matchLabels: {role: client}}
  egress:
  - toEndpoints: [{matchLabels: {role: server}}]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
      serverNames: [Allowed.Example, "*.wild.example"]
"""


def port_rule_text(extra: str, port: str = '"443"', protocol: str = "TCP") -> str:
    return ("spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [world]\n"
            f"    toPorts:\n    - ports: [{{port: {port}, protocol: {protocol}}}]\n"
            f"      {extra}\n")


@pytest.mark.parametrize("name", ["l4_sni.yaml", "l4_sni.json"])
def test_cilium_sni_examples_load_as_tls_rules(name):
    (policy,) = parse_file(str(EXAMPLES / "policies" / "l4" / name))
    (port_rule,) = policy.rules[0].egress[0].to_ports
    assert port_rule.l7_kind == "tls"
    assert [dict(r) for r in port_rule.l7_rules] == [{"serverName": "one.one.one.one"}]
    assert not policy.warnings


def test_names_are_canonical_lower_case():
    (policy,) = parse_text(POLICY)
    rules = policy.rules[0].egress[0].to_ports[0].l7_rules
    assert [dict(r)["serverName"] for r in rules] == ["allowed.example", "*.wild.example"]


def test_empty_list_is_no_sni_rule_as_in_cilium():
    (policy,) = parse_text(port_rule_text("serverNames: []"))
    assert policy.rules[0].egress[0].to_ports[0].l7_kind is None


@pytest.mark.parametrize(("extra", "port", "protocol", "words"), [
    ('serverNames: [""]', '"443"', "TCP", "empty server name is not allowed"),
    ("serverNames: [a.example]\n      rules: {http: [{method: GET}]}", '"443"', "TCP",
     "serverNames are not allowed with L7 rules (rules) without TLS termination"),
    ("serverNames: [a.example]\n      rules: {kafka: []}", '"443"', "TCP",
     "without TLS termination"),
    ("serverNames: [a.example]", '"443"', "UDP", "serverNames (TLS) apply to TCP only"),
    ("serverNames: [a.example]", '"443"', "ANY", "TCP only, not ANY"),
    ("serverNames: [a.example]", '"0"', "TCP", "serverNames need a port, not 0"),
    ("serverNames: [a.example, 'a b']", '"443"', "TCP", "serverNames[1]: invalid characters"),
    ("serverNames: ['a..example']", '"443"', "TCP", "empty label"),
    ("serverNames: ['a.**.example']", '"443"', "TCP", "'**' may only be the whole leftmost"),
    ("serverNames: [42]", '"443"', "TCP", "must be a string"),
    ("serverNames: a.example", '"443"', "TCP", "serverNames: must be a list"),
])
def test_refused_with_a_sentence(extra, port, protocol, words):
    with pytest.raises(PolicyError, match=re.escape(words)):
        parse_text(port_rule_text(extra, port, protocol))


def test_deny_rules_cannot_have_server_names():
    text = ("spec:\n  endpointSelector: {}\n  egressDeny:\n  - toEntities: [world]\n"
            "    toPorts:\n    - ports: [{port: '443', protocol: TCP}]\n"
            "      serverNames: [a.example]\n")
    with pytest.raises(PolicyError, match="deny rules cannot have serverNames"):
        parse_text(text)


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("allowed.example", ["allowed.example", "ALLOWED.example"],
     ["a.allowed.example", "allowed.example.evil", "allowedxexample"]),
    ("*.example.com", ["a.example.com", "x-1_y.example.com"],
     ["example.com", "a.b.example.com", "a.example.com.evil", "aexample.com"]),
    ("**.example.com", ["a.example.com", "a.b.c.example.com"], ["example.com", "aexample.com"]),
    ("api-*.example.com", ["api-eu.example.com", "api-.example.com"],
     ["api.example.com", "api-eu.x.example.com", "xapi-eu.example.com"]),
    ("sub*.example.com", ["sub.example.com", "subdomain.example.com"], ["www.example.com"]),
    ("*", ["a", "a.b.c"], []),
    ("**", ["a.b"], []),
    ("a.example.", ["a.example"], ["a.example."]),  # the rule's root dot is dropped
])
def test_wildcards_as_cilium_server_name(pattern, yes, no):
    rules = TlsRuleSet([{"serverName": check_name(pattern)}])
    for name in yes:
        assert rules.match(SniQuery(name)).allowed, (pattern, name)
    for name in no:
        assert not rules.match(SniQuery(name)).allowed, (pattern, name)


def test_no_sni_and_no_hello_never_pass_a_name_rule():
    rules = TlsRuleSet([{"serverName": "*"}])
    assert "no SNI" in rules.match(SniQuery(None)).reason
    assert not rules.match(SniQuery(None, hello=False)).allowed
    # a peer allowed at L3/L4 on the port: every connection, read or not
    assert TlsRuleSet(None).match(SniQuery(None, hello=False)).allowed


def test_the_proxy_state_refuses_a_bad_name():
    with pytest.raises(TlsRuleError):
        TlsRuleSet([{"serverName": "a b"}])
    with pytest.raises(TlsRuleError):
        TlsRuleSet([{"serverName": "a", "x": 1}])


def state_for(text: str, extra_peer_rule: bool = False) -> ProxyState:
    (policy,) = parse_text(text)
    universe = Universe({300: ["container:role=server"], 301: ["container:role=other"]}, {})
    resolved = resolve(policy.rules, labels_of(["container:role=client"]), universe,
                       "default")
    entries = l7_entries(["10.0.0.1"], resolved.entries, ["http", "kafka", "dns", "tls"])
    return ProxyState({"identities": {"10.0.0.1": 400, "10.0.0.2": 300, "10.0.0.3": 301},
                       "l7": entries})


def test_rule_to_verdict_through_the_proxy_state():
    state = state_for(POLICY)
    assert state.parser("10.0.0.1", "10.0.0.2", 443) == "tls"
    assert state.evaluate("10.0.0.1", "10.0.0.2", 443, SniQuery("allowed.example")).allowed
    assert state.evaluate("10.0.0.1", "10.0.0.2", 443, SniQuery("x.wild.example")).allowed
    denied = state.evaluate("10.0.0.1", "10.0.0.2", 443, SniQuery("other.example"))
    assert not denied.allowed and denied.direction == "egress"
    assert "'other.example' is not in serverNames" in denied.reason
    assert not state.evaluate("10.0.0.1", "10.0.0.2", 443, SniQuery(None, False)).allowed


def test_a_peer_allowed_at_l4_on_the_same_port_passes_unread():
    text = POLICY + ("  - toEndpoints: [{matchLabels: {role: other}}]\n"
                     "    toPorts: [{ports: [{port: '443', protocol: TCP}]}]\n")
    state = state_for(text)
    assert state.parser("10.0.0.1", "10.0.0.3", 443) == "tls"
    assert state.evaluate("10.0.0.1", "10.0.0.3", 443, SniQuery(None, False)).allowed
    assert not state.evaluate("10.0.0.1", "10.0.0.2", 443, SniQuery(None, False)).allowed


EVENT = {"type": "l7", "time": 1.0, "verdict": "DENIED", "direction": "egress",
         "protocol": "tls", "reason": "egress: server name 'other.example' is not in "
         "serverNames [allowed.example]", "src_ip": "10.0.0.1", "src_port": 40000,
         "dst_ip": "10.0.0.2", "dst_port": 443, "src_identity": 400, "dst_identity": 300,
         "src_labels": ["container:role=client"], "dst_labels": ["container:role=server"],
         "http": {"latency_ms": 0.4}, "tls": {"sni": "other.example"}}


def test_monitor_and_flow_show_the_sni():
    line = format_l7(EVENT)
    assert "(TLS SNI other.example) -> reset" in line and "10.0.0.2:443" in line
    (flow,) = flows_from_event(EVENT, "node1", lambda ip: None)
    assert flow["verdict"] == "DROPPED" and flow["Type"] == "L7"
    assert flow["Summary"] == "TLS ClientHello SNI other.example reset"
    message = flow_to_proto(flow)  # what Hubble clients receive
    assert message.Summary == flow["Summary"] and message.l7.type == 1  # REQUEST
    allowed = dict(EVENT, verdict="FORWARDED", tls={"sni": "allowed.example"})
    assert flows_from_event(allowed, "node1", lambda ip: None)[0]["Summary"] == \
        "TLS ClientHello SNI allowed.example spliced"


def test_trace_names_the_server_names():
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(POLICY)
        handle.flush()
        out = subprocess.run([*CLI, "policy", "trace", "-f", handle.name, "--src",
                              "role=client", "--dst", "role=server", "--dport", "443/tcp",
                              "-o", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "ALLOWED"
    assert any("serverNames allowed.example, *.wild.example" in line
               for line in result["log"]), result["log"]
