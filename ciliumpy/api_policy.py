"""Agent API for the policy repository and trace: import, list, get, delete, wait for a
revision, and trace a verdict for running workloads or arbitrary label sets."""

from __future__ import annotations

import ipaddress

from flask import Blueprint, current_app, jsonify, request

from ciliumpy import policy_store as repository
from policies.engine import Peer, labels_of
from policies.parser import PolicyError, parse_documents, parse_text
from policies.trace import Side, offline_side, trace
from state.kvstore import KVError

bp = Blueprint("policy", __name__, url_prefix="/v1/policy")


def _agent():
    return current_app.extensions["ciliumpy"]


def _error(message: str, status: int = 400):
    return jsonify({"Err": message}), status


@bp.post("")
def import_policy():
    body = request.get_json(force=True, silent=True) or {}
    source, name = str(body.get("source", "")), str(body.get("name", ""))
    try:
        if isinstance(body.get("documents"), list):  # already loaded by the CLI
            default = name or (source.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "policy")
            policies = parse_documents(body["documents"], source, default)
        else:
            policies = parse_text(str(body.get("text", "")), source, name)
    except PolicyError as exc:
        return _error(str(exc))
    try:
        revision = repository.store(_agent().kv, policies)
    except KVError as exc:
        return _error(f"kvstore: {exc}", 503)
    return jsonify({"revision": revision, "policies": [p.name for p in policies],
                    "rules": sum(len(p.rules) for p in policies)})


@bp.get("")
def list_policies():
    try:
        return jsonify({"revision": repository.revision(_agent().kv),
                        "policies": repository.items(_agent().kv)})
    except KVError as exc:
        return _error(f"kvstore: {exc}", 503)


@bp.get("/<name>")
def get_policy(name: str):
    found = [p for p in repository.items(_agent().kv) if p["name"] == name]
    return jsonify(found[0]) if found else _error(f"no policy named {name!r}", 404)


@bp.delete("")
def delete_policies():
    kv = _agent().kv
    names = request.args.getlist("name")
    labels = request.args.getlist("label")
    if request.args.get("all") == "1":
        names = [p["name"] for p in repository.items(kv)]
    elif labels:
        names = repository.matching(kv, labels)
    if not names:
        return _error("nothing matches: give a name, labels or all", 404)
    revision = repository.delete(kv, names)
    if revision is None:
        return _error(f"no policy named {', '.join(names)}", 404)
    return jsonify({"revision": revision, "deleted": names})


@bp.get("/revision")
def revision():
    policy = _agent().policy
    return jsonify({"revision": repository.revision(_agent().kv), "enforced": policy.enforced,
                    "error": policy.error})


def side_of(text: str) -> Side:
    """labels (a=b,c=d), an IP, 'host', 'world', a container name/id or an endpoint id."""
    agent = _agent()
    text = text.strip()
    if text in ("host", "world"):
        return offline_side(text)
    endpoints = agent.store.endpoints()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    for endpoint in endpoints:
        addresses = [ipaddress.ip_interface(a).ip for a in endpoint.addresses]
        if (ip is not None and ip in addresses) or (ip is None and text and (
                endpoint.endpoint_id.startswith(text) or endpoint.container_name == text
                or (endpoint.container_id or "").startswith(text))):
            labels = endpoint.labels or []
            init = endpoint.identity == 5
            return Side(Peer(labels_of(labels if not init else ["reserved:init"])), True, init)
    if ip is not None:
        local = set(agent.links.local_addresses())
        if ip in local:
            return offline_side("host")
    return offline_side(text)


def parse_dport(text: str) -> tuple[str, int]:
    text = (text or "0").strip().lower()
    if text in ("icmp", "icmpv6"):
        return text.upper(), 0
    port, _, proto = text.partition("/")
    return (proto or "any").upper(), int(port)


@bp.post("/trace")
def trace_policy():
    body = request.get_json(force=True, silent=True) or {}
    agent = _agent()
    try:
        protocol, port = parse_dport(str(body.get("dport", "0")))
        src, dst = side_of(str(body.get("src", ""))), side_of(str(body.get("dst", "")))
    except ValueError as exc:
        return _error(f"bad trace input: {exc}")
    result = trace(agent.policy.rules, src, dst, protocol if protocol != "ANY" else "TCP", port,
                   agent.config.policy_enforcement)
    return jsonify(result.as_dict())
