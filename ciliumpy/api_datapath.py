"""Agent API for the datapath: map dumps (``ciliumpy bpf``), policy entries written
directly (the datapath API: what policy resolution will write), the live monitor
stream, and Prometheus metrics on ``/metrics``: our own ``ciliumpy_*`` series, Hubble's
flow metrics (``ciliumpy.metrics_hubble``) and Cilium's agent metrics
(``ciliumpy.metrics_cilium``)."""

from __future__ import annotations

import json
import reprlib
import threading
import time

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ciliumpy import metrics_cilium, metrics_hubble
from ciliumpy.api_bandwidth import BandwidthCollector
from ciliumpy.api_common import api_error, json_object, optional_text, the_agent
from ciliumpy.lookup import AmbiguousEndpointError, find_endpoint
from ciliumpy.monitor import LATENCY_BUCKETS
from ciliumpy.status import datapath_status
from datapath.datapath import PROTOCOL_NUMBERS, PolicyEntry

bp = Blueprint("bpf", __name__)


@bp.get("/v1/bpf/endpoints")
def bpf_endpoints():
    agent = the_agent()
    by_ifindex = {e.ifindex: e for e in agent.store.endpoints()}
    rows = agent.datapath.endpoints()
    for row in rows:
        endpoint = by_ifindex.get(row["ifindex"])
        row["endpoint_id"] = endpoint.endpoint_id if endpoint else None
        row["container_name"] = endpoint.container_name if endpoint else None
        row["labels"] = endpoint.labels if endpoint else None
    return jsonify(rows)


@bp.get("/v1/bpf/ipcache")
def bpf_ipcache():
    return jsonify(the_agent().datapath.ipcache())


@bp.get("/v1/bpf/ct")
def bpf_ct():
    return jsonify(the_agent().datapath.conntrack())


@bp.get("/v1/bpf/metrics")
def bpf_metrics():
    return jsonify(the_agent().datapath.metrics())


@bp.get("/v1/bpf/policy")
def bpf_policy():
    agent = the_agent()
    endpoint = None
    if request.args.get("endpoint"):
        try:
            endpoint = _find_endpoint(request.args["endpoint"])
        except AmbiguousEndpointError as exc:
            return api_error(str(exc))
        if endpoint is None:
            return api_error(f"no endpoint matches {reprlib.repr(request.args['endpoint'])}",
                             404)
    rows = agent.datapath.policy(endpoint.ifindex if endpoint else None)
    labels = {}
    for row in rows:
        number = row["identity"]
        if number not in labels:
            found = agent.monitor.labels_of(number) if number else ["(any)"]
            labels[number] = found
        row["labels"] = labels[number]
    return jsonify(rows)


def _find_endpoint(text: str):
    return find_endpoint(the_agent().store.endpoints(), text)


def _integer(body: dict, name: str, high: int) -> int:
    """A JSON integer 0..high (absent: 0). int() used to take "80", 80.7 (as 80), true
    (as 1) and raise OverflowError (a 500) on Infinity."""
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"{name} must be an integer 0..{high}")
    return value


def _entry_from(body: dict, endpoint) -> PolicyEntry:
    direction = body.get("direction", "ingress")
    if direction not in ("ingress", "egress"):
        raise ValueError("direction must be ingress or egress")
    protocol = body.get("protocol", "any")
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOL_NUMBERS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOL_NUMBERS)}")
    protocol = protocol.lower()
    port, end_port = _integer(body, "port", 65535), _integer(body, "end_port", 65535)
    if end_port and end_port < port:
        raise ValueError("ports must be 0..65535 and end_port >= port")
    if port and PROTOCOL_NUMBERS[protocol] == 0:
        raise ValueError("a port needs a protocol (tcp, udp or sctp)")
    identity = _integer(body, "identity", (1 << 24) - 1)
    deny = body.get("deny", False)
    if not isinstance(deny, bool):  # bool("false") is True: a deny nobody asked for
        raise ValueError("deny must be true or false")
    return PolicyEntry(endpoint.ifindex, direction, identity, PROTOCOL_NUMBERS[protocol],
                       port, end_port, deny)


@bp.route("/v1/bpf/policy", methods=["POST", "DELETE"])
def bpf_policy_change():
    body = json_object()
    # a number used to be str()'d and could then match an endpoint id by prefix
    name = optional_text(body, "endpoint")
    try:
        endpoint = _find_endpoint(name)
    except AmbiguousEndpointError as exc:
        return api_error(str(exc))
    if endpoint is None or not endpoint.ifindex:
        return api_error(f"no endpoint matches {reprlib.repr(name)}", 404)
    try:
        entry = _entry_from(body, endpoint)
    except (TypeError, ValueError) as exc:
        return api_error(str(exc))
    agent = the_agent()
    started = time.perf_counter()
    if request.method == "POST":
        agent.endpoints.add_manual(endpoint, entry)
        changed = True
    else:
        changed = agent.endpoints.remove_manual(endpoint, entry)
    return jsonify({"changed": changed, "entry": entry.__dict__,
                    "seconds": round(time.perf_counter() - started, 6)})


@bp.get("/v1/monitor")
def monitor_stream():
    types = {t for t in request.args.get("type", "").split(",") if t} or None
    history = request.args.get("history", "0") == "1"
    follow = request.args.get("follow", "1") == "1"
    monitor = the_agent().monitor
    if not follow:
        events = [e for e in monitor.events if not types or e["type"] in types]
        return jsonify(events)
    stop = threading.Event()

    def generate():
        try:
            for event in monitor.stream(types, history, stop):
                yield (json.dumps(event) + "\n") if event else "\n"
        finally:
            stop.set()

    return Response(generate(), mimetype="application/x-ndjson")


class _Collector:
    def __init__(self, agent) -> None:
        self.agent = agent

    def collect(self):
        agent = self.agent
        packets = CounterMetricFamily("ciliumpy_datapath_packets",
                                      "Packets seen by the BPF programs",
                                      labels=["reason", "direction"])
        octets = CounterMetricFamily("ciliumpy_datapath_bytes", "Bytes seen by the BPF programs",
                                     labels=["reason", "direction"])
        for row in agent.datapath.metrics():
            packets.add_metric([row["reason"], row["direction"]], row["packets"])
            octets.add_metric([row["reason"], row["direction"]], row["bytes"])
        yield packets
        yield octets
        verdicts = CounterMetricFamily("ciliumpy_policy_verdicts",
                                       "Policy verdicts of new connections",
                                       labels=["verdict", "direction"])
        counts: dict[tuple[str, str], int] = {}
        for event in list(agent.monitor.events):
            if event["type"] == "policy-verdict":
                key = (event["verdict"], event["direction"])
                counts[key] = counts.get(key, 0) + 1
        for (verdict, direction), value in counts.items():
            verdicts.add_metric([verdict, direction], value)
        yield verdicts
        states = GaugeMetricFamily("ciliumpy_endpoints", "Endpoints by state", labels=["state"])
        by_state: dict[str, int] = {}
        for endpoint in agent.store.endpoints():
            by_state[endpoint.state] = by_state.get(endpoint.state, 0) + 1
        for state, value in by_state.items():
            states.add_metric([state], value)
        yield states
        yield GaugeMetricFamily("ciliumpy_identities_in_use",
                                "Identities used by local endpoints",
                                value=len(agent.identities.in_use()) if agent.identities else 0)
        pressure = GaugeMetricFamily("ciliumpy_bpf_map_pressure",
                                     "Fill level of each BPF map (0..1)", labels=["map"])
        for name, value in agent.datapath.pressure().items():
            pressure.add_metric([name], value)
        yield pressure
        status = datapath_status(agent)
        yield GaugeMetricFamily("ciliumpy_bpf_compile_seconds",
                                "Seconds spent compiling the datapath at agent start",
                                value=status["compile_seconds"] or 0.0)
        requests = CounterMetricFamily("ciliumpy_l7_requests",
                                       "Requests judged by the L7 proxy",
                                       labels=["verdict", "protocol"])
        l7_counts, buckets, total = agent.monitor.l7_snapshot()
        for (verdict, protocol), value in l7_counts.items():
            requests.add_metric([str(verdict), str(protocol)], value)
        yield requests
        kafka = CounterMetricFamily("ciliumpy_kafka_requests",
                                    "Kafka requests judged by the L7 proxy",
                                    labels=["verdict", "api_key", "topic"])
        for (verdict, api_key, topic), value in agent.monitor.kafka_snapshot().items():
            kafka.add_metric([str(verdict), str(api_key), str(topic)], value)
        yield kafka
        cumulative, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        latency = HistogramMetricFamily("ciliumpy_l7_request_duration_seconds",
                                        "Time from a request to its response, at the proxy")
        latency.add_metric([], cumulative, sum_value=total)
        yield latency
        yield CounterMetricFamily("ciliumpy_datapath_events_lost",
                                  "Datapath events dropped because the ring buffer was full",
                                  value=agent.datapath.events_lost())
        yield CounterMetricFamily("ciliumpy_monitor_events_lost",
                                  "Events dropped because a monitor client was too slow",
                                  value=agent.monitor.lost)


# cilium_policy_import_errors_total: every refused policy import, whichever blueprint
bp.after_app_request(metrics_cilium.count_policy_import)


@bp.get("/metrics")
def metrics():
    agent = the_agent()
    registry = CollectorRegistry()
    registry.register(_Collector(agent))
    registry.register(BandwidthCollector(agent))
    # the agent registers the flow listener when it builds its flow store; if it did
    # not, this registers it now (seeded with the flows the store still holds)
    registry.register(metrics_hubble.listen(agent.flows))
    registry.register(metrics_cilium.CiliumCollector(agent))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
