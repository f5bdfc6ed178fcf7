"""Cilium's own spellings load (field names matched as Go's encoding/json matches
them), and what Cilium accepts that a Docker host cannot use loads with a warning and
selects nothing, rather than refusing a file a user copied from Cilium."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile

import pytest

from ciliumpy.proxy_state import l7_entries
from policies.engine import labels_of
from policies.parser import PolicyError, parse_text
from policies.resolve import Universe, resolve
from tests.support.agent import CLI

CAPITALISED = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
Metadata: {Name: caps}
spec:
  EndpointSelector: {MatchLabels: {app: kafka}}
  Ingress:
  - FromEndpoints: [{matchLabels: {app: web}}]
    ToPorts:
    - Ports: [{Port: "80", Protocol: TCP}]
      Rules:
        HTTP:
        - {Method: GET, Path: "/public/.*"}
    - ports: [{port: "9092", protocol: TCP}]
      rules:
        kafka:
        - {Role: Produce, Topic: topic1}
"""


def trace(text: str, *args: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(text)
        handle.flush()
        out = subprocess.run([*CLI, "policy", "trace", "-f", handle.name, *args, "-o", "json"],
                             capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_capitalised_fields_load_and_mean_what_they_say():
    (policy,) = parse_text(CAPITALISED)
    assert policy.name == "caps" and not policy.warnings
    rule = policy.rules[0]
    http, kafka = rule.ingress[0].to_ports
    assert http.l7_kind == "http" and dict(http.l7_rules[0]) == {"method": "GET",
                                                                   "path": "/public/.*"}
    assert kafka.l7_kind == "kafka" and dict(kafka.l7_rules[0]) == {"role": "Produce",
                                                                     "topic": "topic1"}
    base = ["--src", "app=web", "--dst", "app=kafka"]
    assert trace(CAPITALISED, *base, "--dport", "80/tcp", "--http-method", "GET",
                 "--http-path", "/public/a")["verdict"] == "ALLOWED"
    assert trace(CAPITALISED, *base, "--dport", "80/tcp", "--http-method", "GET",
                 "--http-path", "/private")["verdict"] == "DENIED"
    assert trace(CAPITALISED, *base, "--dport", "9092/tcp", "--kafka-api-key", "produce",
                 "--kafka-topic", "topic2")["verdict"] == "DENIED"


def test_capitalised_kafka_rule_reaches_the_proxy_in_canonical_spelling():
    (policy,) = parse_text(CAPITALISED)
    universe = Universe({300: ["container:app=web"]}, {})
    resolved = resolve(policy.rules, labels_of(["container:app=kafka"]), universe,
                       "default")
    entries = [e for e in l7_entries(["10.0.0.9"], resolved.entries, ["http", "kafka"])
               if e["parser"] == "kafka"]
    assert entries and entries[0]["kafka"] == [{"role": "Produce", "topic": "topic1"}]


def test_exact_spelling_wins_over_a_case_insensitive_twin():
    text = """
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: "80", Port: "81"}]}]
"""
    (policy,) = parse_text(text)
    assert policy.rules[0].ingress[0].to_ports[0].ports[0].port == 80


def test_unknown_selector_keys_are_ignored_with_a_warning():
    text = """
spec:
  endpointSelector: {matchLabels: {app: a}, namespaceSelector: {}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}, podSelector: {x: y}}]
"""
    (policy,) = parse_text(text, "f.yaml")
    assert len(policy.warnings) == 2
    assert "spec.endpointSelector.namespaceSelector: unknown field 'namespaceSelector' in a " \
           "selector ignored" in policy.warnings[0]
    assert policy.rules[0].ingress[0].endpoints[0].match_labels == (("app", "b"),)


def test_kubernetes_only_peers_select_nothing_with_a_warning():
    text = """
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEntities: [kube-apiserver]
  - toServices: [{k8sServiceSelector: {selector: {matchLabels: {app: db}}}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - toEntities: [world, ingress]
"""
    (policy,) = parse_text(text)
    assert [w.split(":")[0] for w in policy.warnings] == [
        "spec.egress[0].toEntities[0]", "spec.egress[1].toServices[0].k8sServiceSelector",
        "spec.egress[2].toEntities[1]"]
    egress = policy.rules[0].egress
    assert egress[0].entities == ("none",) and egress[1].services == ()
    assert egress[2].entities == ("world",)
    for dst, port in (("host", "443/tcp"), ("app=db", "5432/tcp")):
        assert trace(text, "--src", "app=a", "--dst", dst, "--dport", port)["verdict"] == \
            "DENIED"
    assert trace(text, "--src", "app=a", "--dst", "198.51.100.1", "--dport",
                 "443/tcp")["verdict"] == "ALLOWED"


@pytest.mark.parametrize("key", ["toFQDNs", "ToFQDNs", "tofqdns"])
def test_to_fqdns_loads_whatever_its_case(key):
    text = f"""
spec:
  endpointSelector: {{}}
  egress:
  - {key}: [{{MatchName: example.com}}]
"""
    (policy,) = parse_text(text)
    assert policy.rules[0].egress[0].fqdns[0].match_name == "example.com"


@pytest.mark.parametrize("key", ["toGroups", "ToGroups", "togroups"])
def test_unsupported_fields_refused_whatever_their_case(key):
    text = f"""
spec:
  endpointSelector: {{}}
  egress:
  - {key}: [{{aws: {{securityGroupsIds: [sg-1]}}}}]
"""
    with pytest.raises(PolicyError, match="toGroups"):
        parse_text(text)


@pytest.mark.parametrize("key", ["nodeSelector", "NodeSelector", "nodeselector"])
def test_node_selector_loads_whatever_its_case(key):
    text = f"""
spec:
  {key}: {{}}
  egress:
  - toEntities: [world]
"""
    rule = parse_text(text)[0].rules[0]
    assert rule.is_host and rule.node_selector.is_wildcard


def test_validate_reports_each_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("spec:\n  endpointSelector: {}\n  ingress: [{fromEntities: [host]}]\n")
    warned = tmp_path / "warned.yaml"
    warned.write_text("spec:\n  endpointSelector: {}\n  egress: [{toEntities: "
                      "[kube-apiserver]}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  endpointSelector: {}\n  ingress: [{fromEntitys: [host]}]\n")
    out = subprocess.run([*CLI, "policy", "validate", str(good), str(bad), str(warned)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{good}: valid (1 policies, 1 rules)" in out.stdout
    assert f"{warned}: valid (1 policies, 1 rules, 1 warning)" in out.stdout
    assert "warning: spec.egress[0].toEntities[0]: entity 'kube-apiserver'" in out.stdout
    assert f"refused: {bad}: spec.ingress[0].fromEntitys: unknown field" in out.stderr
    assert "did you mean 'fromEntities'?" in out.stderr
    assert "1 of 3 files refused" in out.stderr


ICMPS = """
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps:
    - fields:
      - {type: 8, family: IPv4}
      - {type: EchoRequest, family: IPv6}
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {env: dev}}]
    icmps: [{fields: [{type: 8}]}]
"""


@pytest.mark.parametrize(("src", "dport", "verdict"), [
    ("app=client", "icmp", "ALLOWED"),  # IPv4 echo request: type 8 allowed
    ("app=client", "icmpv6", "ALLOWED"),  # IPv6 echo request by name
    ("app=client", "icmp/13", "DENIED"),  # a timestamp request: no rule for type 13
    ("app=client", "icmp/0", "DENIED"),  # type 0 is a type, not "any"
    ("app=client", "80/tcp", "ALLOWED"),
    ("app=client", "81/tcp", "DENIED"),
    ("app=client,env=dev", "icmp", "DENIED"),  # the deny names type 8 (IPv4 by default)
    ("app=client,env=dev", "icmpv6", "ALLOWED"),
    ("app=other", "icmp", "DENIED"),
])
def test_icmp_rules_by_type_and_family(src, dport, verdict):
    assert trace(ICMPS, "--src", src, "--dst", "app=server", "--dport", dport)["verdict"] \
        == verdict


@pytest.mark.parametrize(("fields", "message"), [
    ("[{type: 300}]", "ICMP type 300 is out of range"),
    ("[{type: PacketTooBig}]", "not an IPv4 ICMP type"),
    ("[{type: 8, family: IPv5}]", "family 'IPv5' is not IPv4 or IPv6"),
    ("[{family: IPv4}]", "an ICMP field needs a type"),
    ("[{type: 8, code: 0}]", "unknown field 'code' in an ICMP field"),
])
def test_bad_icmp_fields_are_refused_precisely(fields, message):
    text = ("spec:\n  endpointSelector: {}\n  ingress:\n  - fromEntities: [world]\n"
            f"    icmps: [{{fields: {fields}}}]\n")
    with pytest.raises(PolicyError, match=message):
        parse_text(text)


def test_icmps_with_to_ports_in_one_element_is_refused_as_cilium_does():
    text = """
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [world]
    icmps: [{fields: [{type: 8}]}]
    toPorts: [{ports: [{port: "80"}]}]
"""
    with pytest.raises(PolicyError, match="icmps and toPorts cannot be combined"):
        parse_text(text)


def test_kubectl_output_and_anchored_paths_load():
    """What `kubectl get cnp -o yaml` prints (server-side metadata, status) and Cilium's
    own kubernetes-es example (an anchored path regex) load."""
    text = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: es
  resourceVersion: "4242"
  generation: 3
  creationTimestamp: "2026-01-01T00:00:00Z"
  description: pruned by Kubernetes
spec:
  endpointSelector: {matchLabels: {app: es}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "9200", protocol: TCP}]
      rules: {http: [{method: GET, path: "^/_search/??[^/]*$"}]}
status: {conditions: []}
"""
    (policy,) = parse_text(text)
    assert policy.name == "es"
    assert policy.warnings == ["metadata.description: unknown field 'description' in "
                               "metadata ignored"]
    base = ["--src", "app=client", "--dst", "app=es", "--dport", "9200/tcp",
            "--http-method", "GET", "--http-path"]
    assert trace(text, *base, "/_search")["verdict"] == "ALLOWED"
    assert trace(text, *base, "/_search/x")["verdict"] == "ALLOWED"
    assert trace(text, *base, "/_delete")["verdict"] == "DENIED"


@pytest.mark.parametrize(("field", "words"), [
    ("listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, name: l}",
     "Envoy listeners (listener) are not supported"),
    ("serverNames: [example.com]\n      rules: {http: [{}]}",
     "serverNames are not allowed with L7 rules (rules) without TLS termination"),
    ("terminatingTLS: {secret: {name: s}}", "TLS interception"),
])
def test_cilium_fields_we_lack_get_their_own_sentence(field, words):
    text = ("spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [world]\n"
            f"    toPorts:\n    - ports: [{{port: \"443\", protocol: TCP}}]\n      {field}\n")
    with pytest.raises(PolicyError, match=re.escape(words)):
        parse_text(text)


@pytest.mark.parametrize("text", ["{" * 100_000, "[" * 100_000, "- " * 100_000 + "x",
                                  "".join(" " * (2 * i) + "a:\n" for i in range(500))])
def test_deep_nesting_is_refused_before_any_parser_recurses(text):
    with pytest.raises(PolicyError, match="nests deeper than 100 levels"):
        parse_text(text, "deep.yaml")


def test_error_messages_are_printable_and_bounded():
    key = "a\x1b[31m" + "x" * 100_000
    with pytest.raises(PolicyError) as info:
        parse_text(json.dumps({"spec": {"endpointSelector": {}, key: 1}}))
    message = str(info.value)
    assert "\x1b" not in message and "\\x1b" in message
    assert len(message) < 2100 and "more characters)" in message


def test_a_label_beside_match_labels_warns_that_the_selector_selects_everything():
    text = """
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints:
    - role: frontend
"""
    (policy,) = parse_text(text)
    assert policy.rules[0].ingress[0].endpoints[0].is_wildcard
    assert any("it selects EVERY endpoint" in w for w in policy.warnings), policy.warnings
    assert trace(text, "--src", "app=anything", "--dst", "app=db", "--dport",
                 "80/tcp")["verdict"] == "ALLOWED"  # as Cilium reads it: every peer
