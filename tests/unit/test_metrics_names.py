"""Hubble's and Cilium's metrics as ``/metrics`` exposes them: Cilium's names, labels and
help texts, what each flow counts for, ``promtool check metrics`` on the exposition,
and the example Grafana dashboard referring only to series we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import types
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ciliumpy import metrics_cilium, metrics_hubble
from ciliumpy.api_bandwidth import BandwidthCollector
from ciliumpy.flows.store import FlowStore
from tests.unit.test_flows import CLIENT, DB, WEB, datapath, l7

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "ciliumpy-dashboard.json"
PROMTOOL = shutil.which("promtool")


def fake_agent(flows: FlowStore | None = None) -> types.SimpleNamespace:
    def endpoint(state: str, identity: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(state=state, identity=identity, endpoint_id="e" * 64,
                                     container_name="web")

    rows = [{"reason": "forwarded", "direction": "ingress", "packets": 5, "bytes": 500},
            {"reason": "policy-denied", "direction": "ingress", "packets": 2, "bytes": 120},
            {"reason": "bandwidth-limit", "direction": "egress", "packets": 1, "bytes": 1500}]
    stats = [{"endpoint_id": "e" * 64, "direction": "egress", "limit_bps": 10_000_000,
              "drops": 3, "backstop_drops": 1, "delayed": 9}]
    return types.SimpleNamespace(
        store=types.SimpleNamespace(endpoints=lambda: [endpoint("joined", 300),
                                                       endpoint("created", 5),
                                                       endpoint("left", 301)]),
        identities=types.SimpleNamespace(in_use=lambda: {300, 301}),
        policy=types.SimpleNamespace(cidrs={"10.0.0.0/8": 16777217}, items={"a": [1, 2]},
                                     revision=7),
        datapath=types.SimpleNamespace(metrics=lambda: rows,
                                       pressure=lambda: {"cp_ipcache_v1": 0.25}),
        bandwidth=types.SimpleNamespace(stats=lambda: stats),
        flows=flows or FlowStore("node1", lambda ip: None))


def exposition(*collectors) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def exported_names(*collectors) -> set[str]:
    """Series names of the families the collectors yield (empty ones included)."""
    names: set[str] = set()
    for collector in collectors:
        for family in collector.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return names


def busy_store() -> FlowStore:
    store = FlowStore("node1", lambda ip: None)
    store.add(datapath("trace", CLIENT, WEB, "ingress"))
    store.add(datapath("trace", CLIENT, WEB, "egress", proto="UDP"))
    store.add(datapath("drop", CLIENT, DB, "ingress", reason="policy-denied"))
    store.add(datapath("policy-verdict", CLIENT, DB, "ingress", reason="policy-denied",
                       verdict="denied"))
    store.add(datapath("trace", CLIENT, WEB, "egress", tcp_flags=0x12))  # SYN+ACK
    store.add(l7())
    store.add(l7("DENIED", path="/admin", status=403, latency_ms=None))
    kafka = {"api_key": "produce", "api_version": 7, "correlation_id": 3, "topics": ["a", "b"]}
    store.add(l7(protocol="kafka", kafka=dict(kafka, error_code=0)))
    store.add(l7("DENIED", protocol="kafka", kafka=dict(kafka, topics=["c"], error_code=29)))
    return store


def test_label_sets_and_help_texts_are_ciliums():
    assert metrics_hubble.FLOWS == ("hubble_flows_processed", "Total number of flows processed",
                                    ("protocol", "type", "subtype", "verdict"))
    assert metrics_hubble.DROPS[2] == ("reason", "protocol")
    assert metrics_hubble.TCP_FLAGS[2] == ("flag", "family")
    assert metrics_hubble.HTTP_REQUESTS[2] == ("method", "protocol", "reporter")
    assert metrics_hubble.HTTP_DURATION[2] == ("method", "reporter")
    assert metrics_hubble.KAFKA_REQUESTS[2] == ("topic", "api_key", "error_code", "reporter")
    text = exposition(metrics_hubble.HubbleMetrics(), metrics_cilium.CiliumCollector(fake_agent()))
    for line in ("# HELP hubble_drop_total Number of drops",
                 "# TYPE hubble_http_request_duration_seconds histogram",
                 "# HELP cilium_drop_count_total Total dropped packets, tagged by drop reason "
                 "and ingress/egress direction",
                 "# HELP cilium_policy_import_errors_total Number of times a policy import "
                 "has failed",
                 "# HELP cilium_endpoint_state Count of all endpoints, tagged by different "
                 "endpoint states"):
        assert line in text
    names = exported_names(metrics_hubble.HubbleMetrics(),
                           metrics_cilium.CiliumCollector(fake_agent()))
    assert names == set(metrics_hubble.metric_names()) | set(metrics_cilium.metric_names())


def test_each_flow_counts_as_hubble_counts_it():
    store = busy_store()
    text = exposition(metrics_hubble.listen(store))
    flows = "hubble_flows_processed_total"
    assert value(text, flows, protocol="TCP", type="Trace", subtype="to-endpoint",
                 verdict="FORWARDED") == 1
    assert value(text, flows, protocol="UDP", type="Trace", subtype="from-endpoint",
                 verdict="FORWARDED") == 1
    assert value(text, flows, protocol="TCP", type="Drop", subtype="", verdict="DROPPED") == 1
    assert value(text, flows, protocol="TCP", type="PolicyVerdict", subtype="",
                 verdict="DROPPED") == 1
    # an answered HTTP request is a request and a response record; a denied one a request
    assert value(text, flows, protocol="HTTP", type="L7", subtype="HTTP",
                 verdict="FORWARDED") == 2
    assert value(text, flows, protocol="Unknown L7", type="L7", subtype="",
                 verdict="DROPPED") == 1
    assert value(text, "hubble_drop_total", reason="POLICY_DENIED", protocol="TCP") == 2
    assert value(text, "hubble_drop_total", reason="DROP_REASON_UNKNOWN", protocol="HTTP") == 1
    assert value(text, "hubble_tcp_flags_total", flag="SYN-ACK", family="IPv4") == 1
    assert value(text, "hubble_http_requests_total", method="GET", protocol="HTTP/1.1",
                 reporter="server") == 2
    assert value(text, "hubble_http_responses_total", method="GET", protocol="HTTP/1.1",
                 status="200", reporter="server") == 1
    assert value(text, "hubble_http_request_duration_seconds_bucket", method="GET",
                 reporter="server", le="0.01") == 1  # 7.25 ms
    assert value(text, "hubble_http_request_duration_seconds_bucket", method="GET",
                 reporter="server", le="0.005") == 0
    assert value(text, "hubble_http_request_duration_seconds_sum", method="GET",
                 reporter="server") == pytest.approx(0.00725)
    kafka = "hubble_kafka_requests_total"
    for topic in ("a", "b"):
        assert value(text, kafka, topic=topic, api_key="produce", error_code="0",
                     reporter="server") == 1
    assert value(text, kafka, topic="c", api_key="produce", error_code="29",
                 reporter="server") == 1
    assert value(text, "hubble_kafka_request_duration_seconds_count", topic="a",
                 api_key="produce", reporter="server") == 1


def test_listen_seeds_once_and_then_counts_live():
    store = FlowStore("node1", lambda ip: None)
    store.add(datapath("trace", CLIENT, WEB, "ingress"))
    metrics = metrics_hubble.listen(store)
    assert metrics_hubble.listen(store) is metrics  # registered once
    assert store.listeners == [metrics.observe]
    store.add(datapath("trace", CLIENT, WEB, "ingress"))
    text = exposition(metrics)
    assert value(text, "hubble_flows_processed_total", protocol="TCP", type="Trace",
                 subtype="to-endpoint", verdict="FORWARDED") == 2


def test_cilium_agent_metrics_from_agent_state():
    text = exposition(metrics_cilium.CiliumCollector(fake_agent()))
    assert value(text, "cilium_endpoint") == 3
    assert value(text, "cilium_endpoint_state", endpoint_state="ready") == 1
    assert value(text, "cilium_endpoint_state", endpoint_state="waiting-for-identity") == 1
    assert value(text, "cilium_endpoint_state", endpoint_state="disconnecting") == 1
    assert ("cilium_endpoint_state", frozenset({("endpoint_state", "not-ready")})) in samples(
        text), "every state is present, at 0 when no endpoint is in it"
    assert value(text, "cilium_identity", type="reserved") == 6
    assert value(text, "cilium_identity", type="cluster_local") == 2
    assert value(text, "cilium_identity", type="node_local") == 1
    assert value(text, "cilium_policy") == 2 and value(text, "cilium_policy_max_revision") == 7
    assert value(text, "cilium_drop_count_total", reason="Policy denied",
                 direction="INGRESS") == 2
    assert value(text, "cilium_drop_bytes_total", reason="Reached EDT rate-limiting drop "
                 "horizon", direction="EGRESS") == 1500
    assert value(text, "cilium_forward_count_total", direction="INGRESS") == 5
    assert value(text, "cilium_bpf_map_pressure", map_name="cp_ipcache_v1") == 0.25


def promtool_clean(text: str) -> None:
    assert PROMTOOL, "promtool is missing: scripts/setup-host.sh installs Debian's prometheus"
    proc = subprocess.run([PROMTOOL or "promtool", "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr)


def test_exposition_passes_promtool():
    agent = fake_agent(busy_store())
    promtool_clean(exposition(metrics_hubble.listen(agent.flows),
                              metrics_cilium.CiliumCollector(agent)))


def test_bandwidth_series_pass_promtool():
    """With a limited endpoint, the bandwidth series are in the exposition too."""
    promtool_clean(exposition(BandwidthCollector(fake_agent())))


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_dashboard_refers_only_to_exported_series():
    agent = fake_agent()
    exported = exported_names(metrics_hubble.HubbleMetrics(),
                              metrics_cilium.CiliumCollector(agent), BandwidthCollector(agent))
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\b(?:hubble|cilium|ciliumpy)_[a-z0-9_]+", expr))
        assert names, f"{expr!r} names no metric"
        assert names <= exported, f"{expr!r}: {sorted(names - exported)} not exported"
        used |= names
    for wanted in ("hubble_flows_processed_total", "hubble_drop_total",
                   "hubble_http_requests_total", "hubble_http_request_duration_seconds_bucket",
                   "cilium_endpoint_state", "ciliumpy_bandwidth_drops_total"):
        assert wanted in used
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    assert {v["name"] for v in variables} == {"datasource", "instance"}


def test_dashboard_queries_parse(tmp_path):
    """Every query is valid PromQL (Grafana's variables replaced by plain values)."""
    rules = []
    for index, expr in enumerate(dashboard_exprs()):
        plain = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
                 .replace("$instance", ".*"))
        rules.append({"record": f"ciliumpy:dashboard:{index}", "expr": plain})
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL, "promtool is missing: scripts/setup-host.sh installs Debian's prometheus"
    proc = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
