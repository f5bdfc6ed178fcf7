"""Cilium's agent metrics for ``/metrics``: endpoint, identity and policy state, and the
datapath's per-reason/direction packet counters, under Cilium's names, labels and help
texts (``pkg/metrics/metrics.go``, ``pkg/maps/metricsmap``, the endpoint manager's
``cilium_endpoint``, ``cilium_bpf_map_pressure``).

What our agent has is mapped to what Cilium would report for the closest case:

* ``cilium_endpoint_state{endpoint_state}``: Docker's endpoint life as Cilium's states:
  an endpoint still on ``reserved:init`` (its container's labels not read yet) is
  ``waiting-for-identity``; joined to its container ``ready``; created but not joined
  ``not-ready``; leaving ``disconnecting``. All four series are always present.
* ``cilium_identity{type}``: ``reserved`` (the reserved identities), ``cluster_local``
  (cluster identities this node's endpoints hold: Cilium counts the ones its allocator
  uses locally), ``node_local`` (the CIDR identities of the loaded policies: node-local
  in Cilium too).
* ``cilium_policy``: rules loaded (each spec of a ``CiliumNetworkPolicy``, as Cilium
  counts them); ``cilium_policy_max_revision`` the policy revision enforced here;
  ``cilium_policy_import_errors_total`` refused ``POST /v1/policy`` calls (counted by
  :func:`count_policy_import`, an after-request hook).
* ``cilium_drop_count_total{reason,direction}`` / ``cilium_drop_bytes_total`` and
  ``cilium_forward_count_total{direction}`` / ``cilium_forward_bytes_total`` from the
  BPF metrics map; ``reason`` is Cilium's drop reason text (``Policy denied``,
  ``Policy denied by denylist``, ``Invalid packet``, ``Socket lookup failed``,
  ``Reached EDT rate-limiting drop horizon``), ``direction`` ``INGRESS``/``EGRESS``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ciliumpy.flows.model import DROP_REASON_TEXT, REASON_TO_DROP
from policies.identities import INIT, RESERVED

ENDPOINT_STATES = ("waiting-for-identity", "not-ready", "ready", "disconnecting")
IDENTITY_TYPES = ("reserved", "cluster_local", "node_local")

GAUGES = {
    "cilium_endpoint": "Number of endpoints managed by this agent",
    "cilium_endpoint_state": "Count of all endpoints, tagged by different endpoint states",
    "cilium_identity": "Number of identities currently allocated",
    "cilium_policy": "Number of policies currently loaded",
    "cilium_policy_max_revision": "Highest policy revision number in the agent",
    "cilium_bpf_map_pressure": "Fill percentage of map, tagged by map name",
}
COUNTERS = {
    "cilium_policy_import_errors": "Number of times a policy import has failed",
    "cilium_drop_count": "Total dropped packets, tagged by drop reason and ingress/egress "
                         "direction",
    "cilium_drop_bytes": "Total dropped bytes, tagged by drop reason and ingress/egress "
                         "direction",
    "cilium_forward_count": "Total forwarded packets, tagged by ingress/egress direction",
    "cilium_forward_bytes": "Total forwarded bytes, tagged by ingress/egress direction",
}

_import_errors = 0
_import_lock = threading.Lock()


def count_policy_import(response: Response) -> Response:
    """After-request hook: counts a policy import the agent refused (any error answer
    to ``POST /v1/policy``), as Cilium counts a failed PolicyAdd."""
    global _import_errors
    if (request.method == "POST" and request.path == "/v1/policy"
            and response.status_code >= 400):
        with _import_lock:
            _import_errors += 1
    return response


def policy_import_errors() -> int:
    with _import_lock:
        return _import_errors


def endpoint_state(endpoint: Any) -> str:
    """The Cilium state closest to a Docker endpoint's (see the module docstring)."""
    if endpoint.state == "left":
        return "disconnecting"
    if endpoint.identity == INIT or not endpoint.identity:
        return "waiting-for-identity"
    return "ready" if endpoint.state == "joined" else "not-ready"


def drop_reason_text(reason: str) -> str:
    """Cilium's ``monitorAPI.DropReason`` text for one of the datapath's reasons."""
    code = REASON_TO_DROP.get(reason)
    return DROP_REASON_TEXT.get(code, reason) if code else reason


class CiliumCollector:
    """Collects the agent's state at scrape time."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._endpoints()
        yield from self._identities()
        yield from self._policy()
        yield from self._datapath()

    def _endpoints(self) -> Iterator[Metric]:
        endpoints = self.agent.store.endpoints()
        yield GaugeMetricFamily("cilium_endpoint", GAUGES["cilium_endpoint"],
                                value=len(endpoints))
        counts = dict.fromkeys(ENDPOINT_STATES, 0)
        for endpoint in endpoints:
            state = endpoint_state(endpoint)
            counts[state] = counts.get(state, 0) + 1
        states = GaugeMetricFamily("cilium_endpoint_state", GAUGES["cilium_endpoint_state"],
                                   labels=["endpoint_state"])
        for state, value in counts.items():
            states.add_metric([state], value)
        yield states

    def _identities(self) -> Iterator[Metric]:
        agent = self.agent
        cluster = len(agent.identities.in_use()) if agent.identities else 0
        counts = {"reserved": len(RESERVED), "cluster_local": cluster,
                  "node_local": len(agent.policy.cidrs)}
        family = GaugeMetricFamily("cilium_identity", GAUGES["cilium_identity"],
                                   labels=["type"])
        for kind in IDENTITY_TYPES:
            family.add_metric([kind], counts[kind])
        yield family

    def _policy(self) -> Iterator[Metric]:
        policy = self.agent.policy
        rules = sum(len(found) for found in list(policy.items.values()))
        yield GaugeMetricFamily("cilium_policy", GAUGES["cilium_policy"], value=rules)
        yield GaugeMetricFamily("cilium_policy_max_revision",
                                GAUGES["cilium_policy_max_revision"], value=policy.revision)
        yield CounterMetricFamily("cilium_policy_import_errors",
                                  COUNTERS["cilium_policy_import_errors"],
                                  value=policy_import_errors())

    def _datapath(self) -> Iterator[Metric]:
        families = {name: CounterMetricFamily(name, COUNTERS[name], labels=labels)
                    for name, labels in (("cilium_drop_count", ["reason", "direction"]),
                                         ("cilium_drop_bytes", ["reason", "direction"]),
                                         ("cilium_forward_count", ["direction"]),
                                         ("cilium_forward_bytes", ["direction"]))}
        drops: dict[tuple[str, str], list[int]] = {}
        forwards: dict[str, list[int]] = {}
        for row in self.agent.datapath.metrics():
            direction = str(row["direction"]).upper()
            if row["reason"] == "forwarded":
                total = forwards.setdefault(direction, [0, 0])
            else:
                total = drops.setdefault((drop_reason_text(row["reason"]), direction), [0, 0])
            total[0] += row["packets"]
            total[1] += row["bytes"]
        for (reason, direction), (packets, octets) in sorted(drops.items()):
            families["cilium_drop_count"].add_metric([reason, direction], packets)
            families["cilium_drop_bytes"].add_metric([reason, direction], octets)
        for direction, (packets, octets) in sorted(forwards.items()):
            families["cilium_forward_count"].add_metric([direction], packets)
            families["cilium_forward_bytes"].add_metric([direction], octets)
        yield from families.values()
        pressure = GaugeMetricFamily("cilium_bpf_map_pressure",
                                     GAUGES["cilium_bpf_map_pressure"], labels=["map_name"])
        for name, value in sorted(self.agent.datapath.pressure().items()):
            pressure.add_metric([name], value)
        yield pressure


def metric_names() -> Iterator[str]:
    """Every series name this module exposes (counters with ``_total``)."""
    yield from GAUGES
    for name in COUNTERS:
        yield f"{name}_total"
