"""The agent API (``/v1/...`` on the root-only agent socket), read by the CLI."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, current_app, jsonify

bp = Blueprint("api", __name__, url_prefix="/v1")


def _agent():
    return current_app.extensions["ciliumpy"]


@bp.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@bp.get("/status")
def status():
    return jsonify(_agent().status())


@bp.get("/networks")
def networks():
    agent = _agent()
    counts: dict[str, int] = {}
    for endpoint in agent.store.endpoints():
        counts[endpoint.network_id] = counts.get(endpoint.network_id, 0) + 1
    result = []
    for network in agent.store.networks():
        item = asdict(network)
        item["endpoints"] = counts.get(network.network_id, 0)
        result.append(item)
    return jsonify(result)


@bp.get("/endpoints")
def endpoints():
    agent = _agent()
    names = {n.network_id: n.name for n in agent.store.networks()}
    result = []
    for endpoint in agent.store.endpoints():
        item = asdict(endpoint)
        item["network_name"] = names.get(endpoint.network_id)
        item["link_present"] = agent.links.exists(endpoint.host_ifname)
        result.append(item)
    return jsonify(result)


@bp.get("/ipam")
def ipam():
    agent = _agent()
    allocations = [
        {"address": str(a.address), "pool": str(a.pool), "kind": a.kind, "owner": a.owner}
        for a in agent.ipam.allocations()
    ]
    return jsonify({"pools": agent.ipam.pools(), "allocations": allocations})


@bp.post("/reconcile")
def reconcile():
    return jsonify(_agent().reconcile())
