"""Every malformed policy is rejected with the file, the rule path and the reason; a
file with one bad document imports nothing. Good policies (including Cilium's own
example quirks) load."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.parser import PolicyError, parse_file, parse_text

BAD = Path(__file__).resolve().parents[1] / "data" / "bad_policies"
EXPECTED = {
    "01_not_yaml": "not valid YAML",
    "02_scalar": "must be a mapping or a list",
    "03_no_spec": "a policy needs 'spec' or 'specs'",
    "04_unknown_field": "ingres: unknown field 'ingres' in a rule (did you mean 'ingress'?)",
    "05_no_selector": "spec: a rule needs an endpointSelector",
    "06_node_selector": "a rule has either an endpointSelector (containers) or a nodeSelector",
    "07_two_peers": "spec.ingress[0]: combining fromEndpoints and fromEntities is not supported",
    "08_l7_udp": "spec.ingress[0].toPorts[0].ports[0].protocol: L7 rules can only apply to TCP",
    "09_except_outside": "spec.egress[0].toCIDRSet[0].except[0]: 192.168.0.0/16 is not inside",
    "10_port_text": "spec.ingress[0].toPorts[0].ports[0].port: 'web server' is neither a "
                     "port number nor a port name",
    "11_port_range": "ports[0].port: 70000 is out of range 0..65535",
    "12_endport_below": "ports[0].endPort: endPort 80 is below port 90",
    "13_protocol": "ports[0].protocol: protocol 'ICMP' is not one of TCP, UDP, SCTP, VRRP, "
                   "IGMP, ANY",
    "14_entity": "spec.ingress[0].fromEntities[0]: unsupported entity 'wrld' (did you mean "
                 "'world'?)",
    "15_bad_cidr": "spec.ingress[0].fromCIDR[0]: '10.0.0.300/8' is not a CIDR",
    "16_bad_operator": "spec.endpointSelector.matchExpressions[0].operator: operator 'Equals'",
    "17_in_no_values": "matchExpressions[0].values: operator In needs at least one value",
    "18_exists_values": "matchExpressions[0].values: operator Exists takes no values",
    "19_missing_port": "ports[0].port: port must be specified",
    "20_l7_port_zero": "ports[0].port: L7 rules need a port, not 0",
    "21_bad_regex": "rules.http[0].path: '/a(b' is not a valid regex",
    "22_kafka_role_apikey": "rules.kafka[0]: role and apiKey cannot be combined",
    "23_kafka_role": "rules.kafka[0].role: 'publish' is not produce or consume",
    "24_two_l7": "toPorts[0].rules: only one L7 rule type per port rule",
    "25_fqdn": "spec.egress[0].toFQDNs[0]: only one of matchName or matchPattern is allowed",
    "26_dns_ingress": "rules.dns: DNS rules are not allowed on ingress",
    "27_deny_l7": "spec.ingressDeny[0].toPorts[0].rules: deny rules cannot have L7 rules",
    "28_labels_value": "spec.endpointSelector.matchLabels.app: label keys and values must be",
    "29_empty": "holds no policy",
    "30_kind": "kind: kind 'NetworkPolicy' is not a Cilium policy",
    "31_http_path": "rules.http[0].path: path '/(a)\\\\1' is not a valid RE2 regex",
    "32_second_doc_bad": "documents[1].specs[1].ingress[0].toPorts[0].ports[0].port: '-1' is",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_policy_is_rejected_precisely(name):
    path = BAD / f"{name}.yaml"
    with pytest.raises(PolicyError) as info:
        parse_file(str(path))
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    assert EXPECTED[name] in message, message


def test_corpus_is_complete():
    assert len(list(BAD.glob("*.yaml"))) == len(EXPECTED) >= 25


def test_good_forms_load():
    cnp = parse_text("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
description: top-level description as in Cilium's examples
metadata: {name: l3-rule, labels: {team: blue}}
spec:
  endpointSelector: {matchLabels: {k8s:role: backend}}
  ingress:
  - fromEndpoints:
    - matchExpressions: [{key: role, operator: in, values: [frontend]}]
    toPorts:
    - ports: [{port: "80", protocol: tcp}]
      rules: {http: [{method: GET, path: "/public$"}]}
""", "cnp.yaml")
    assert cnp[0].name == "l3-rule" and cnp[0].labels == ["team=blue"]
    rule = cnp[0].rules[0]
    assert rule.ingress[0].to_ports[0].l7_kind == "http"
    assert rule.ingress[0].endpoints[0].match_expressions[0].operator == "In"
    listed = parse_text('[{"labels": [{"key": "name", "value": "l3-rule"}], '
                        '"endpointSelector": {"matchLabels": {"id": "app1"}}, "ingress": '
                        '[{"fromEndpoints": [{"matchLabels": {"id": "app2"}}], '
                        '"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}]',
                        "demo.json")
    assert listed[0].name == "demo" and listed[0].rules[0].labels == ("unspec:name=l3-rule",)
