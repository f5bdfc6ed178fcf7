"""Spelling and tolerance as Cilium (issue 15): field names folded as Go's
encoding/json folds them, ports read as Cilium reads them (``"0"`` is every port, a
leading 0 is octal), what loads with a warning, what is refused with a sentence, and
``policy validate`` (no agent) in both output forms."""

from __future__ import annotations

import json
import subprocess

import pytest

from policies.engine import labels_of
from policies.parser import PolicyError, parse_text
from policies.resolve import Universe, resolve
from tests.support.agent import CLI

BASE = "spec:\n  endpointSelector: {matchLabels: {app: a}}\n"


def ports_of(text: str):
    (policy,) = parse_text(text)
    return policy, policy.rules[0].egress[0].to_ports[0].ports


def egress_port(port: str, extra: str = "") -> str:
    return (BASE + "  egress:\n  - toEntities: [world]\n"
            f"    toPorts: [{{ports: [{{port: {port}, protocol: TCP{extra}}}]}}]\n")


@pytest.mark.parametrize("key", ["toPorts", "ToPorts", "TOPORTS", "toports", "toPort\u017f"])
def test_field_names_fold_as_go_folds_them(key):
    """Go folds ``unicode.ToUpper(unicode.ToLower(r))``: LONG S is an s for it."""
    text = (BASE + f"  egress:\n  - toEntities: [world]\n    {key}: "
            "[{ports: [{port: \"80\", protocol: TCP}]}]\n")
    _, ports = ports_of(text)
    assert ports[0].port == 80


def test_kelvin_sign_and_dotless_i_fold_onto_ascii_and_other_letters_do_not():
    text = (BASE + "  \u0131ngress:\n  - fromEntities: [world]\n    toPorts:\n"
            "    - ports: [{port: \"9092\", protocol: TCP}]\n"
            "      rules: {\u212aafka: [{role: produce, topic: t}]}\n")
    (policy,) = parse_text(text)
    assert policy.rules[0].ingress[0].to_ports[0].l7_kind == "kafka"
    cyrillic = BASE + "  egress:\n  - toEntities: [world]\n    t\u043ePorts: []\n"  # о
    with pytest.raises(PolicyError, match="unknown field"):
        parse_text(cyrillic)


def test_two_spellings_of_one_field_warn_and_the_exact_one_is_used():
    policy, ports = ports_of(egress_port('"80"', ', Port: "81"'))
    assert ports[0].port == 80
    assert policy.warnings == ["spec.egress[0].toPorts[0].ports[0].Port: 'port' and 'Port' "
                               "both set 'port': 'port' is used"]
    policy, ports = ports_of(BASE + "  egress:\n  - toEntities: [world]\n    toPorts: [{ports:"
                             " [{PORT: \"81\", Port: \"82\", protocol: TCP}]}]\n")
    assert ports[0].port == 82  # neither exact: the later, as Go's decoder reads JSON


def test_port_zero_is_every_port_and_an_end_port_beside_it_is_dropped():
    policy, ports = ports_of(egress_port('"0"'))
    assert ports[0].port == 0 and ports[0].end_port == 0 and not policy.warnings
    policy, ports = ports_of(egress_port('"0"', ", endPort: 100"))
    assert (ports[0].port, ports[0].end_port) == (0, 0)
    assert policy.warnings == ["spec.egress[0].toPorts[0].ports[0].endPort: endPort 100 "
                               "ignored: port 0 means every port"]
    # the datapath entry is the wildcard one, the same the trace engine matches
    (entry,) = resolve(policy.rules, labels_of(["container:app=a"]), Universe({}, {}),
                       "default").entries
    assert (entry.port, entry.end_port, entry.proto) == (0, 0, 6)
    assert entry.covers(6, 1) and entry.covers(6, 65535) and not entry.covers(17, 53)


def test_port_zero_with_l7_rules_is_refused_as_cilium_does():
    text = egress_port('"0"').replace("TCP}]}]", "TCP}], rules: {http: [{}]}}]")
    with pytest.raises(PolicyError, match="L7 rules need a port, not 0"):
        parse_text(text)


def test_a_leading_zero_is_octal_as_in_cilium():
    policy, ports = ports_of(egress_port('"010"'))
    assert ports[0].port == 8
    assert "port '010' is octal for Cilium (a leading 0): read as 8" in policy.warnings[0]
    with pytest.raises(PolicyError, match="8 and 9 are not octal digits"):
        parse_text(egress_port('"080"'))
    _, ports = ports_of(egress_port("80"))  # a YAML number is a number
    assert ports[0].port == 80


def test_dns_rules_load_without_warning_now_that_the_dns_proxy_enforces_them():
    dns = (BASE + "  egress:\n  - toEntities: [world]\n    toPorts:\n"
           "    - ports: [{port: \"53\", protocol: ANY}]\n      rules: {dns: [%s]}\n")
    for rule in ("{matchPattern: '*'}", "{matchName: cilium.io}"):
        (policy,) = parse_text(dns % rule)
        assert not policy.warnings


@pytest.mark.parametrize(("field", "words"), [
    ("authentication: {mode: required}", "mutual authentication (authentication) is not "
     "supported: it needs Cilium's SPIFFE identities and auth handshake"),
    ("Authentication: {mode: required}", "would allow traffic the policy requires to be "
     "authenticated"),
    ("auth: {type: spire}", "mutual authentication (auth, now authentication)"),
])
def test_mutual_authentication_is_refused_with_the_reason(field, words):
    text = BASE + f"  egress:\n  - toEntities: [world]\n    {field}\n"
    with pytest.raises(PolicyError) as info:
        parse_text(text)
    assert words in str(info.value)


def test_listener_is_refused_with_the_reason():
    text = egress_port('"80"').replace(
        "TCP}]}]", "TCP}], listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, "
        "name: l}}]")
    with pytest.raises(PolicyError, match="ciliumpy's L7 proxy is not Envoy and has no "
                                          "such configuration"):
        parse_text(text)


def test_capitalised_rules_in_a_deny_rule_get_the_deny_sentence():
    text = (BASE + "  egressDeny:\n  - toEntities: [world]\n    toPorts:\n"
            "    - {ports: [{port: \"80\", protocol: TCP}], Rules: {http: [{}]}}\n")
    with pytest.raises(PolicyError, match="deny rules cannot have L7 rules"):
        parse_text(text)


def test_ingress_entity_warns_with_what_it_is():
    (policy,) = parse_text(BASE + "  ingress:\n  - fromEntities: [ingress, host]\n")
    assert policy.warnings == ["spec.ingress[0].fromEntities[0]: entity 'ingress' exists "
                               "only on Kubernetes (the Envoy of Cilium's Kubernetes "
                               "Ingress): it selects nothing on a Docker host"]
    assert policy.rules[0].ingress[0].entities == ("host",)


def test_validate_json_reports_each_file_without_an_agent(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "  ingress: [{fromEntities: [host]}]\n")
    warned = tmp_path / "warned.yaml"
    warned.write_text(BASE + "  egress: [{toServices: [{k8sServiceSelector: {selector: {}}}]}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "  egress: [{toFQDNs: [{matchName: 'cilium io'}]}]\n")
    # an API socket that does not exist: validation must not need the agent
    out = subprocess.run([*CLI, "--api-socket", str(tmp_path / "none.sock"), "policy",
                          "validate", "-o", "json", str(good), str(warned), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert (report["refused"], report["total"]) == (1, 3)
    by_file = {r["file"]: r for r in report["files"]}
    assert by_file[str(good)]["status"] == "valid"
    assert by_file[str(good)]["policies"] == [{"name": "good", "rules": 1, "warnings": []}]
    assert by_file[str(warned)]["status"] == "warnings"
    assert "selects services by their labels" in \
        by_file[str(warned)]["policies"][0]["warnings"][0]
    assert by_file[str(bad)]["status"] == "refused"
    assert "invalid characters in matchName" in by_file[str(bad)]["error"]
    ok = subprocess.run([*CLI, "policy", "validate", "-o", "json", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["refused"] == 0
