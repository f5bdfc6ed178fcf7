"""The agent API (``/v1/...`` on the root-only agent socket), read by the CLI."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify

from ciliumpy import nodes
from ciliumpy.api_common import api_error, json_object, the_agent
from ciliumpy.identities import IdentityError
from ciliumpy.status import agent_status
from policies.labels import canonical, check_text, parse
from state.kvstore import KVError

bp = Blueprint("api", __name__, url_prefix="/v1")


@bp.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@bp.get("/status")
def status():
    return jsonify(agent_status(the_agent()))


@bp.get("/networks")
def networks():
    agent = the_agent()
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
    agent = the_agent()
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
    agent = the_agent()
    allocations = [
        {"address": str(a.address), "pool": str(a.pool), "kind": a.kind, "owner": a.owner}
        for a in agent.ipam.allocations()
    ]
    return jsonify({"pools": agent.ipam.pools(), "allocations": allocations})


@bp.post("/reconcile")
def reconcile():
    return jsonify(the_agent().reconcile())


def _identity_view(identity, refs, users):
    return {"id": identity.number, "labels": list(identity.labels),
            "reserved": identity.reserved, "nodes": sorted(refs.get(identity.number, [])),
            "endpoints": users.get(identity.number, [])}


def _local_users() -> dict[int, list[str]]:
    users: dict[int, list[str]] = {}
    for endpoint in the_agent().store.endpoints():
        users.setdefault(endpoint.identity, []).append(endpoint.endpoint_id)
    return users


@bp.get("/identities")
def identities():
    agent = the_agent()
    try:
        listed, refs = agent.allocator.list(), agent.allocator.references()
    except KVError as exc:
        return jsonify({"Err": f"kvstore: {exc}"}), 503
    users = _local_users()
    return jsonify([_identity_view(i, refs, users) for i in listed])


@bp.get("/identities/<int:number>")
def identity(number: int):
    agent = the_agent()
    try:
        found, refs = agent.allocator.get(number), agent.allocator.references()
    except KVError as exc:
        return jsonify({"Err": f"kvstore: {exc}"}), 503
    if found is None:
        return jsonify({"Err": f"identity {number} does not exist"}), 404
    return jsonify(_identity_view(found, refs, _local_users()))


@bp.post("/identities")
def allocate_identity():
    """Allocates (and holds, from this node) the identity of a label set: for operators
    checking what number a label set gets, and for tests of the allocator."""
    labels = json_object().get("labels")
    # an empty set would get an identity of its own, with no label to select it by
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        return api_error("body must be {\"labels\": [\"source:key=value\", ...]} with at "
                         "least one label")
    try:
        for text in labels:
            check_text(text)
        canonical_labels = canonical(parse(text, default_source="container") for text in labels)
        number = the_agent().identities.allocate_manual(canonical_labels)
    except ValueError as exc:
        return jsonify({"Err": str(exc)}), 400
    except (KVError, IdentityError) as exc:
        return jsonify({"Err": f"kvstore: {exc}"}), 503
    return jsonify({"id": number, "labels": canonical_labels})


@bp.get("/nodes")
def node_list():
    """This cluster's nodes, then every followed remote cluster's (field ``cluster``)."""
    agent = the_agent()
    try:
        local = [{**asdict(n), "cluster": agent.config.cluster_name}
                 for n in nodes.list_nodes(agent.kv)]
    except KVError as exc:
        return jsonify({"Err": f"kvstore: {exc}"}), 503
    return jsonify(local + (agent.mesh.node_rows() if agent.mesh else []))


@bp.get("/cluster")
def cluster_mesh():
    """This cluster and the remote clusters it follows (``ciliumpy cluster``)."""
    agent = the_agent()
    if agent.mesh is not None:
        return jsonify(agent.mesh.view())
    return jsonify({"name": agent.config.cluster_name, "cluster_id": agent.config.cluster_id,
                    "error": None, "clusters": []})


@bp.get("/fqdn/cache")
def fqdn_cache():
    """Addresses the DNS proxy learnt for toFQDNs: name, address, seconds left."""
    return jsonify(the_agent().fqdn.view())
