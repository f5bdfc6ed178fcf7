"""Agent API for bandwidth limits: the backstop map joined with each endpoint's limits
(``ciliumpy bpf bandwidth``), runtime label changes (``ciliumpy endpoint labels``), and
the limiter's Prometheus metrics."""

from __future__ import annotations

import reprlib

from flask import Blueprint, jsonify
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ciliumpy.api_common import APIInputError, api_error, json_object, the_agent
from ciliumpy.bandwidth import LabelError, effective_labels
from ciliumpy.lookup import AmbiguousEndpointError, find_endpoint

bp = Blueprint("bandwidth", __name__)


@bp.get("/v1/bpf/bandwidth")
def bpf_bandwidth():
    agent = the_agent()
    backstop = {row["ifindex"]: row for row in agent.datapath.bandwidth()}
    rows = []
    for endpoint in agent.store.endpoints():
        row = backstop.get(endpoint.ifindex)
        limits = endpoint.bandwidth
        if row is None and not limits:
            continue
        rows.append({"ifindex": endpoint.ifindex, "endpoint_id": endpoint.endpoint_id,
                     "container_name": endpoint.container_name,
                     "egress_bps": limits.get("egress_bps", 0),
                     "ingress_bps": limits.get("ingress_bps", 0),
                     "backstop_bps": row["egress_bps"] if row else 0,
                     "horizon_ms": row["horizon_ms"] if row else 0,
                     "backstop_drops": row["drops"] if row else 0,
                     "errors": limits.get("errors", [])})
    return jsonify(rows)


def _label_changes(body: dict) -> tuple[dict[str, str], list[str]]:
    add, delete = body.get("add") or {}, body.get("delete") or []
    if not isinstance(add, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in add.items()):
        raise APIInputError("add must be an object of label names to string values")
    if not isinstance(delete, list) or not all(isinstance(k, str) for k in delete):
        raise APIInputError("delete must be a list of label names")
    if not add and not delete:
        raise APIInputError("nothing to change: give add and/or delete")
    if set(add) & set(delete):
        raise APIInputError(f"label {sorted(set(add) & set(delete))[0]!r} is both added "
                            "and deleted")
    return add, delete


@bp.post("/v1/endpoints/<path:name>/labels")
def endpoint_labels(name: str):
    agent = the_agent()
    add, delete = _label_changes(json_object())
    try:
        endpoint = find_endpoint(agent.store.endpoints(), name)
    except AmbiguousEndpointError as exc:
        return api_error(str(exc))
    if endpoint is None:
        return api_error(f"no endpoint matches {reprlib.repr(name)}", 404)
    try:
        endpoint = agent.bandwidth.change_labels(endpoint, add, delete)
    except LabelError as exc:
        return api_error(str(exc))
    return jsonify({"endpoint_id": endpoint.endpoint_id, "labels": effective_labels(endpoint),
                    "bandwidth": endpoint.bandwidth})


class BandwidthCollector:
    """Limits, and what the limiter did: packets dropped (by the qdisc, or by the
    backstop) and packets delayed (that waited for tokens)."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def collect(self):
        limits = GaugeMetricFamily("ciliumpy_bandwidth_limit_bytes_per_second",
                                   "Bandwidth limit of an endpoint (the label's bits / 8)",
                                   labels=["endpoint", "direction"])
        drops = CounterMetricFamily("ciliumpy_bandwidth_drops",
                                    "Packets dropped by the bandwidth limiter",
                                    labels=["endpoint", "direction", "stage"])
        delayed = CounterMetricFamily("ciliumpy_bandwidth_delayed_packets",
                                      "Packets the bandwidth limiter held back for tokens",
                                      labels=["endpoint", "direction"])
        names = {e.endpoint_id: e.container_name or e.endpoint_id[:12]
                 for e in self.agent.store.endpoints()}
        for row in self.agent.bandwidth.stats():
            name = names.get(row["endpoint_id"], row["endpoint_id"][:12])
            limits.add_metric([name, row["direction"]], row["limit_bps"] / 8)
            drops.add_metric([name, row["direction"], "qdisc"], row["drops"])
            if row["direction"] == "egress":
                drops.add_metric([name, row["direction"], "backstop"], row["backstop_drops"])
            delayed.add_metric([name, row["direction"]], row["delayed"])
        yield limits
        yield drops
        yield delayed
