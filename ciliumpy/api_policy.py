"""Agent API for the policy repository and trace: import, list, get, delete, wait for a
revision, and trace a verdict for running workloads or arbitrary label sets."""

from __future__ import annotations

import dataclasses
import ipaddress
import reprlib

from flask import Blueprint, jsonify, request

from ciliumpy import policy_store as repository
from ciliumpy.api_common import api_error, json_object, optional_text, the_agent
from ciliumpy.lookup import find_endpoint, parse_dport
from ciliumpy.node_identities import node_labels
from policies import named_ports, to_services
from policies.engine import Peer, labels_of, reserved_peer
from policies.identities import INIT
from policies.parser import PolicyError, parse_documents, parse_text
from policies.trace import Side, http_request, kafka_request, offline_side, trace
from state.kvstore import KVError

bp = Blueprint("policy", __name__, url_prefix="/v1/policy")


@bp.post("")
def import_policy():
    body = json_object()
    # str() of a non-string used to be parsed: {"text": {...}} became YAML flow text
    source, name = optional_text(body, "source"), optional_text(body, "name")
    documents = body.get("documents")
    if documents is not None and not isinstance(documents, list):
        return api_error("field 'documents' must be a list of policy documents")
    try:
        if name:
            repository.check_name(name)
        if documents is not None:  # already loaded by the CLI
            default = name or (source.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "policy")
            policies = parse_documents(documents, source, default)
        else:
            policies = parse_text(optional_text(body, "text"), source, name)
        revision = repository.store(the_agent().kv, policies)
    except (PolicyError, repository.PolicyNameError) as exc:
        return api_error(str(exc))
    except KVError as exc:
        return api_error(f"kvstore: {exc}", 503)
    warnings = [w for p in policies for w in p.warnings]
    with the_agent().policy.lock:
        known = list(the_agent().policy.identities.values())
    warnings += [named_ports.warning(name) for name in named_ports.undeclared(
        [rule for p in policies for rule in p.rules], known)]
    if not the_agent().config.enable_host_firewall:
        warnings += [f"{p.name}: {HOST_POLICY_OFF}" for p in policies
                     if any(rule.is_host for rule in p.rules)]
    return jsonify({"revision": revision, "policies": [p.name for p in policies],
                    "rules": sum(len(p.rules) for p in policies), "warnings": warnings})


HOST_POLICY_OFF = ("host policy (nodeSelector) stored, but not enforced: this agent runs "
                   "without --enable-host-firewall")


@bp.get("")
def list_policies():
    try:
        return jsonify({"revision": repository.revision(the_agent().kv),
                        "policies": repository.items(the_agent().kv)})
    except KVError as exc:
        return api_error(f"kvstore: {exc}", 503)


@bp.get("/<name>")
def get_policy(name: str):
    found = [p for p in repository.items(the_agent().kv) if p["name"] == name]
    return jsonify(found[0]) if found else api_error(f"no policy named {name!r}", 404)


@bp.delete("")
def delete_policies():
    kv = the_agent().kv
    names = request.args.getlist("name")
    labels = request.args.getlist("label")
    if request.args.get("all") == "1":
        names = [p["name"] for p in repository.items(kv)]
    elif labels:
        names = repository.matching(kv, labels)
    if not names:
        return api_error("nothing matches: give a name, labels or all", 404)
    revision = repository.delete(kv, names)
    if revision is None:
        return api_error(f"no policy named {', '.join(map(reprlib.repr, names))}", 404)
    return jsonify({"revision": revision, "deleted": names})


@bp.get("/revision")
def revision():
    policy = the_agent().policy
    return jsonify({"revision": repository.revision(the_agent().kv), "enforced": policy.enforced,
                    "error": policy.error})


def side_of(text: str) -> Side:
    """labels (a=b,c=d), an IP (a remote node's: that node), 'host', 'world',
    'remote-node', a container name/id or an endpoint id, with the services whose
    backends its labels make it (what toServices selects)."""
    side = _side_of(text)
    if side.peer.kind != "endpoint":
        return side
    selectors = the_agent().policy.service_selectors
    peer = dataclasses.replace(side.peer, services=to_services.backing(side.peer.labels,
                                                                       selectors))
    return dataclasses.replace(side, peer=peer)


def _side_of(text: str) -> Side:
    agent = the_agent()
    text = text.strip()
    if text == "host":
        return host_side(agent)
    if text in ("world", "remote-node"):
        return offline_side(text)
    endpoint = find_endpoint(agent.store.endpoints(), text)  # ambiguous: ValueError
    if endpoint is not None:
        labels = endpoint.labels or []
        init = endpoint.identity == INIT
        return Side(Peer(labels_of(labels if not init else ["reserved:init"])), True, init)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        local = set(agent.links.local_addresses())
        if ip in local:
            return host_side(agent)
        node = _remote_node(str(ip))
        if node is not None:  # another node: its labels, as fromNodes/toNodes see it
            return offline_side(",".join(node_labels(node.labels)) or "remote-node")
    return offline_side(text)


def host_side(agent) -> Side:
    """This node: selected by host policies through its node labels, enforced only with
    the host firewall on."""
    return Side(reserved_peer("host"), managed=agent.config.enable_host_firewall, host=True,
                node_labels=labels_of([f"node:{k}={v}"
                                       for k, v in sorted(agent.config.node_labels.items())]))


def _remote_node(address: str):
    """The remote node (of this cluster) whose address this is, if any."""
    cluster = the_agent().cluster
    return cluster.remote_node_at(address) if cluster is not None else None


def _object(body: dict, name: str) -> dict:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):  # `or {}` let 0, "" and [] pass as "no request"
        raise ValueError(f"{name!r} must be an object")
    return value


def _http_text(http: dict, name: str) -> str | None:
    value = http.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'http.{name}' must be a string")
    return value


def _strings(parent: dict, name: str, what: str) -> list[str]:
    """A list of strings (null: empty); `for h in value` crashed on numbers (a 500) and
    walked the keys of an object."""
    value = parent.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name!r} must be a list of {what}")
    return value


@bp.post("/trace")
def trace_policy():
    body = json_object()
    agent = the_agent()
    try:
        protocol, port = parse_dport(str(body.get("dport", "0")))
        src, dst = side_of(optional_text(body, "src")), side_of(optional_text(body, "dst"))
        http = _object(body, "http")
        wanted = http_request(*(_http_text(http, name) for name in ("method", "path", "host")),
                              _strings(http, "headers", "'Name: value' strings"))
        kafka = _object(body, "kafka")
        _strings(kafka, "topics", "topics")
        if kafka and wanted is not None:
            raise ValueError("trace either an HTTP or a Kafka request, not both")
        if wanted is None:
            wanted = kafka_request(kafka.get("apiKey"), kafka.get("apiVersion"),
                                   [str(t) for t in kafka.get("topics") or []],
                                   None if kafka.get("clientID") is None
                                   else str(kafka["clientID"]))
    except ValueError as exc:
        return api_error(f"bad trace input: {exc}")
    result = trace(agent.policy.rules, src, dst, protocol, port, agent.config.policy_enforcement,
                   wanted)
    return jsonify(result.as_dict())
