"""L7 rules in the pure policy code: resolution keeps each port rule's HTTP rules with
its entries, trace predicts the proxy's verdict for an HTTP or a Kafka request, and the
proxy's state lists, per L7 port, the L7 rules and the peers allowed there without
them."""

from __future__ import annotations

import json
import subprocess

import pytest

from ciliumpy.proxy_state import l7_entries
from policies.engine import labels_of
from policies.parser import parse_text
from policies.resolve import Universe, resolve
from policies.trace import Side, http_request, kafka_request, offline_side, trace
from tests.support.agent import CLI

SEED = """
endpointSelector: {matchLabels: {role: backend}}
ingress:
- fromEndpoints: [{matchLabels: {role: frontend}}]
  toPorts:
  - ports: [{port: "80", protocol: TCP}]
    rules:
      http:
      - {method: GET, path: "/public/.*"}
- fromEndpoints: [{matchLabels: {role: admin}}]
  toPorts:
  - ports: [{port: "80", protocol: TCP}]
"""


def rules():
    return [r for p in parse_text(SEED, "seed.yaml") for r in p.rules]


def side(text: str) -> Side:
    return offline_side(text)


def verdict(method: str, path: str, src: str = "role=frontend", headers=()) -> str:
    return trace(rules(), side(src), side("role=backend"), "TCP", 80, "default",
                 http_request(method, path, None, headers)).verdict


def test_trace_predicts_the_proxy_verdict():
    assert verdict("GET", "/public/a") == "ALLOWED"
    assert verdict("GET", "/private") == "DENIED"
    assert verdict("POST", "/public/a") == "DENIED"
    assert verdict("GET", "/public") == "DENIED"  # full match, as Cilium
    # a peer allowed at L4 on the same port is not limited by the other rule's L7
    assert verdict("DELETE", "/anything", src="role=admin") == "ALLOWED"
    # without a request, the L4 verdict and a note
    result = trace(rules(), side("role=frontend"), side("role=backend"), "TCP", 80)
    assert result.verdict == "ALLOWED"
    assert any("judged by the L7 proxy" in line for line in result.log)


def test_trace_header_regex():
    text = """
endpointSelector: {}
ingress:
- toPorts:
  - ports: [{port: "80", protocol: TCP}]
    rules: {http: [{headers: ["X-Token: [0-9]+"]}]}
"""
    found = [r for p in parse_text(text, "t.yaml") for r in p.rules]

    def one(*headers: str) -> str:
        return trace(found, side("a=b"), side("c=d"), "TCP", 80, "default",
                     http_request("GET", "/", None, headers)).verdict

    assert one("X-Token: 42") == "ALLOWED"
    assert one("X-Token: abc") == "DENIED"
    assert one() == "DENIED"


def test_bad_trace_header_is_refused():
    with pytest.raises(ValueError, match="Name: value"):
        http_request("GET", "/", None, ["no-colon"])


def test_proxy_entries_name_l7_rules_and_l4_peers():
    universe = Universe({300: ["container:role=frontend"], 301: ["container:role=admin"]}, {})
    resolved = resolve(rules(), labels_of(["container:role=backend"]), universe, "default")
    entries = l7_entries(["10.0.0.3"], resolved.entries, ["http"])
    by_remote = {tuple(e["remotes"] or ()): e for e in entries}
    assert set(by_remote) == {(300,), (301,)}
    assert by_remote[(300,)]["http"] == [{"method": "GET", "path": "/public/.*"}]
    assert by_remote[(301,)]["http"] is None  # L4-only: every request
    assert all(e["port"] == 80 and e["direction"] == "ingress" and e["endpoint"] == "10.0.0.3"
               for e in entries)
    json.dumps(entries)  # the proxy reads it as JSON


KAFKA_SEED = """
endpointSelector: {matchLabels: {app: kafka}}
ingress:
- fromEndpoints: [{matchLabels: {app: service1}}]
  toPorts:
  - ports: [{port: "9092", protocol: TCP}]
    rules: {kafka: [{role: produce, topic: topic1}]}
- fromEndpoints: [{matchLabels: {app: service2}}]
  toPorts:
  - ports: [{port: "9092", protocol: TCP}]
    rules: {kafka: [{role: consume, topic: topic1}]}
"""


def kafka_rules_of(text: str | None = None) -> list:
    source = text if text is not None else KAFKA_SEED
    return [r for p in parse_text(source, "kafka.yaml") for r in p.rules]


def kafka_trace(src: str, key: str | None, topics=(), version=None, client=None, rules=None,
                port: int = 9092):
    return trace(rules if rules is not None else kafka_rules_of(), side(src),
                 side("app=kafka"), "TCP", port, "default",
                 kafka_request(key, version, topics, client))


@pytest.mark.parametrize(("src", "key", "topics", "verdict"), [
    ("app=service1", "produce", ["topic1"], "ALLOWED"),
    ("app=service1", "fetch", ["topic1"], "DENIED"),
    ("app=service1", "produce", ["topic2"], "DENIED"),
    ("app=service1", "produce", ["topic1", "topic2"], "DENIED"),
    ("app=service1", "metadata", [], "ALLOWED"),
    ("app=service1", "apiversions", [], "ALLOWED"),
    ("app=service1", "0", ["topic1"], "ALLOWED"),  # a key by number
    ("app=service2", "fetch", ["topic1"], "ALLOWED"),
    ("app=service2", "Heartbeat", [], "ALLOWED"),
    ("app=service2", "produce", ["topic1"], "DENIED"),
    ("app=other", "produce", ["topic1"], "DENIED"),  # no L3 allow at all
])
def test_kafka_trace_predicts_the_proxy_verdict(src, key, topics, verdict):
    assert kafka_trace(src, key, topics).verdict == verdict


def test_kafka_trace_log_names_the_rule_or_the_reason():
    allowed = kafka_trace("app=service1", "produce", ["topic1"], version=7, client="svc")
    assert "Kafka request: produce v7 (client ID 'svc') topics topic1" in allowed.log
    assert "L7 rule matched: {'role': 'produce', 'topic': 'topic1'} (allowed by Kafka " \
        "rule #0)" in allowed.log
    denied = kafka_trace("app=service1", "produce", ["topic1", "topic2"]).log
    assert "No L7 rule matched Kafka produce v0 topics topic1, topic2 (topic topic2 not " \
        "allowed): the proxy answers TOPIC_AUTHORIZATION_FAILED" in denied
    fetch = kafka_trace("app=service1", "fetch", ["topic1"]).log
    assert any("(no Kafka rule allows apiKey fetch)" in line for line in fetch)
    # without a request: the L4 verdict, and how to trace a Kafka request
    plain = trace(kafka_rules_of(), side("app=service1"), side("app=kafka"), "TCP", 9092)
    assert plain.verdict == "ALLOWED"
    assert any("judged by the L7 proxy (trace one with --kafka-api-key" in line
               for line in plain.log)


def test_kafka_trace_version_client_and_empty_rules():
    text = """
endpointSelector: {matchLabels: {app: kafka}}
ingress:
- fromEndpoints: [{matchLabels: {app: a}}]
  toPorts:
  - ports: [{port: "9092", protocol: TCP}]
    rules: {kafka: [{apiKey: produce, apiVersion: "5", clientID: good}]}
- fromEndpoints: [{matchLabels: {app: b}}]
  toPorts:
  - ports: [{port: "9092", protocol: TCP}]
    rules: {kafka: []}
"""
    found = kafka_rules_of(text)
    assert kafka_trace("app=a", "produce", ["t"], 5, "good", found).verdict == "ALLOWED"
    assert kafka_trace("app=a", "produce", ["t"], 4, "good", found).verdict == "DENIED"
    assert kafka_trace("app=a", "produce", ["t"], 5, "bad", found).verdict == "DENIED"
    assert kafka_trace("app=a", "produce", ["t"], 5, None, found).verdict == "DENIED"
    # kafka: [] is no L7 restriction (Cilium attaches no Kafka rules then)
    assert kafka_trace("app=b", "deletetopics", ["t"], rules=found).verdict == "ALLOWED"


def test_request_kind_must_match_the_ports_parser():
    kafka_on_http = trace(rules(), side("role=frontend"), side("role=backend"), "TCP", 80,
                          "default", kafka_request("produce", None, ["t"]))
    assert kafka_on_http.verdict == "DENIED"
    assert "The request kind (Kafka) does not match the port's L7 parser (HTTP): its rules " \
        "cannot match it" in kafka_on_http.log
    assert "No L7 rule on this port can judge this Kafka request: denied" in kafka_on_http.log
    http_on_kafka = trace(kafka_rules_of(), side("app=service1"), side("app=kafka"), "TCP",
                          9092, "default", http_request("GET", "/"))
    assert http_on_kafka.verdict == "DENIED"
    assert any("does not match the port's L7 parser (Kafka)" in line
               for line in http_on_kafka.log)
    # a peer allowed at L4 on the Kafka port is not limited by the L7 rules
    text = KAFKA_SEED + """- fromEndpoints: [{matchLabels: {app: admin}}]
  toPorts:
  - ports: [{port: "9092", protocol: TCP}]
"""
    assert kafka_trace("app=admin", "deletetopics", ["topic1"],
                       rules=kafka_rules_of(text)).verdict == "ALLOWED"


@pytest.mark.parametrize(("args", "message"), [
    (("prodce", None, (), None), "unknown Kafka apiKey 'prodce'"),
    ((None, None, ("t",), None), "needs an api key"),
    (("produce", -1, (), None), "api version -1 is not an integer 0..32767"),
    (("produce", "x", (), None), "api version 'x' is not an integer"),
    (("produce", None, ("",), None), "topic cannot be empty"),
])
def test_bad_kafka_trace_input_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        kafka_request(*args)


def test_kafka_request_from_options():
    assert kafka_request(None) is None
    produce = kafka_request("Produce", "3", ["a", "b"], "c")
    assert (produce.api_key, produce.api_version, produce.client_id, produce.topics) == \
        (0, 3, "c", ("a", "b"))
    assert kafka_request("metadata").topics == ()  # carries topics: an empty list
    assert kafka_request("heartbeat").topics is None  # carries none


def test_kafka_trace_cli_offline(tmp_path):
    seed = tmp_path / "kafka.yaml"
    seed.write_text(KAFKA_SEED)
    base = [*CLI, "policy", "trace", "-f", str(seed), "--src", "app=service1",
            "--dst", "app=kafka", "--dport", "9092"]
    ok = subprocess.run([*base, "--kafka-api-key", "produce", "--kafka-topic", "topic1",
                         "-o", "json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "ALLOWED"
    denied = subprocess.run([*base, "--kafka-api-key", "produce", "--kafka-topic", "topic1",
                             "--kafka-topic", "topic2"], capture_output=True, text=True)
    assert denied.returncode == 0 and "Final verdict: DENIED" in denied.stdout
    bad = subprocess.run([*base, "--kafka-api-key", "prodce"], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "bad --kafka-* option: unknown Kafka apiKey 'prodce'" in bad.stderr
    assert "did you mean 'produce'?" in bad.stderr
    both = subprocess.run([*base, "--kafka-api-key", "produce", "--http-method", "GET"],
                          capture_output=True, text=True)
    assert both.returncode == 1 and "not both" in both.stderr
