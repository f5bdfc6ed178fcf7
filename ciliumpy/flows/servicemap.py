"""The service map: stored flows folded into a graph whose nodes are services (containers
grouped by their app or service label, or by name without the replica number; the
reserved identities world, host, ... as themselves) and whose edges count what went
from one to the other, by protocol and port: forwarded, dropped (with reasons), and L7
requests by status class. ``delivered`` counts what the destination's own ingress let
in: an edge with drops and nothing delivered is drawn as dropped even though the
sender's egress forwarded it. Pure: flows in, a JSON-ready dict out."""

from __future__ import annotations

import re
from collections.abc import Iterable

# label keys naming what a container is part of, most specific first
GROUP_KEYS = ("app", "app.kubernetes.io/name", "k8s-app", "com.docker.compose.service",
              "service", "role")
_REPLICA = re.compile(r"[-_]\d+$")


def group_of(endpoint: dict | None) -> str:
    """The node a flow's source or destination belongs to."""
    endpoint = endpoint or {}
    labels = endpoint.get("labels") or []
    values = {}
    for label in labels:
        source, _, pair = label.partition(":")
        key, _, value = (pair if pair else source).partition("=")
        if source == "reserved":
            return key  # world, host, remote-node, ...
        values.setdefault(key, value)
    for key in GROUP_KEYS:
        if values.get(key):
            return values[key]
    name = endpoint.get("pod_name")
    if name:
        return _REPLICA.sub("", name)
    identity = endpoint.get("identity")
    return f"identity {identity}" if identity else "unknown"


def _port_of(flow: dict) -> str:
    """The server's port: a reply comes from it."""
    layer4 = flow.get("l4") or {}
    side = "source_port" if flow.get("is_reply") else "destination_port"
    for proto, fields in layer4.items():
        port = (fields or {}).get(side)
        return f"{proto}/{port}" if port else proto
    return "IP"


def build(flows: Iterable[dict]) -> dict:
    """``{"nodes": [...], "edges": [...]}``, sorted for stable output."""
    nodes: dict[str, dict] = {}
    edges: dict[tuple[str, str, str], dict] = {}
    for flow in flows:
        # a reply travels the edge of the request it answers: client -> server
        client, server = (("destination", "source") if flow.get("is_reply")
                          else ("source", "destination"))
        src, dst = group_of(flow.get(client)), group_of(flow.get(server))
        for name, endpoint in ((src, flow.get(client) or {}), (dst, flow.get(server) or {})):
            node = nodes.setdefault(name, {"id": name, "containers": set(),
                                           "identities": set()})
            if endpoint.get("pod_name"):
                node["containers"].add(endpoint["pod_name"])
            if endpoint.get("identity"):
                node["identities"].add(endpoint["identity"])
        edge = edges.setdefault((src, dst, _port_of(flow)), {
            "source": src, "target": dst, "port": _port_of(flow), "forwarded": 0,
            "delivered": 0, "dropped": 0, "drop_reasons": {}, "l7_requests": 0, "l7_status": {}})
        _count(edge, flow)
    return {"nodes": [{**n, "containers": sorted(n["containers"]),
                       "identities": sorted(n["identities"])}
                      for _, n in sorted(nodes.items())],
            "edges": [edges[key] for key in sorted(edges)]}


def _count(edge: dict, flow: dict) -> None:
    http = (flow.get("l7") or {}).get("http")
    if http is not None:
        if flow.get("is_reply") and http.get("code"):
            status = f"{int(http['code']) // 100}xx"
            edge["l7_status"][status] = edge["l7_status"].get(status, 0) + 1
        elif not flow.get("is_reply"):
            edge["l7_requests"] += 1
    if flow.get("verdict") == "DROPPED":
        edge["dropped"] += 1
        reason = flow.get("drop_reason_desc") or (
            "L7_DENIED" if flow.get("Type") == "L7" else "UNKNOWN")
        edge["drop_reasons"][reason] = edge["drop_reasons"].get(reason, 0) + 1
    elif flow.get("verdict") == "FORWARDED" and not flow.get("is_reply"):
        edge["forwarded"] += 1
        if flow.get("traffic_direction") == "INGRESS":  # let in by the destination itself
            edge["delivered"] += 1
