"""Agent API for stored flows (``ciliumpy observe``): ``POST /v1/flows`` with Hubble's
filters as the command line gave them, a time window, first/last N, and follow; the
answer is newline-delimited JSON in Hubble's ``-o json`` shape. Also the service map:
``GET /v1/servicemap`` (the graph) and ``GET /ui/`` (the page that draws it)."""

from __future__ import annotations

import json
import threading
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ciliumpy.api_common import APIInputError, json_object, the_agent
from ciliumpy.flows import servicemap
from ciliumpy.flows.flags import filters_from_cli
from ciliumpy.flows.formats import json_line
from ciliumpy.flows.store import parse_time

bp = Blueprint("flows", __name__)


def _count(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise APIInputError(f"{name} must be a non-negative integer")
    return value


def _time(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise APIInputError(f"{name} must be a string (RFC 3339 time or a duration)")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise APIInputError(f"{name}: {exc}") from None


def _filters(body: dict) -> tuple[list, list]:
    tokens = body.get("filters") or []
    if not isinstance(tokens, list) or not all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t)
            for t in tokens):
        raise APIInputError("filters must be a list of [flag, value] string pairs")
    try:
        return filters_from_cli([(flag, value) for flag, value in tokens])
    except ValueError as exc:
        raise APIInputError(str(exc)) from None


@bp.post("/v1/flows")
def flows():
    body: dict[str, Any] = json_object()
    whitelist, blacklist = _filters(body)
    since, until = _time(body, "since"), _time(body, "until")
    last, first = _count(body, "last"), _count(body, "first")
    follow = body.get("follow", False)
    if not isinstance(follow, bool):
        raise APIInputError("follow must be true or false")
    if follow and (until is not None or first is not None):
        raise APIInputError("follow cannot be combined with until or first")
    cluster = body.get("cluster", False)
    if not isinstance(cluster, bool):
        raise APIInputError("cluster must be true or false")
    if cluster and follow:
        raise APIInputError("follow is not supported with cluster yet: ask one node")
    store = the_agent().flows
    if last is None and first is None and since is None and not follow:
        last = 20  # Hubble's default without a window
    stored = store.query(whitelist, blacklist, since, until, last, first)
    if cluster:
        return _cluster(stored, whitelist, blacklist, since, until, last, first)
    if not follow:
        return Response("".join(json_line(flow) + "\n" for flow in stored),
                        mimetype="application/x-ndjson")
    stop = threading.Event()

    def generate():
        try:
            for flow in stored:
                yield json_line(flow) + "\n"
            # a batch of new flows is one write to the client, not one per flow
            for batch in store.follow_batches(whitelist, blacklist, stop):
                yield "".join(json_line(flow) + "\n" for flow in batch) if batch else "\n"
        finally:
            stop.set()

    return Response(generate(), mimetype="application/x-ndjson")


def _cluster(stored: list[dict], whitelist: list, blacklist: list, since: float | None,
             until: float | None, last: int | None, first: int | None) -> Response:
    """This node's flows and every other registered node's (asked through their Hubble
    API), merged in time order; a ``{"warning": ...}`` line per node that could not
    answer, before the flows."""
    from ciliumpy import nodes
    from ciliumpy.hubble import relay

    agent = the_agent()
    peers, warnings = [], []
    try:
        registered = nodes.list_nodes(agent.kv)
    except Exception as exc:  # the kvstore is down: this node's flows only
        registered = []
        warnings.append(f"the node registry is unreachable ({exc}): this node's flows only")
    for node in registered:
        if node.name == agent.config.node_name:
            continue
        if node.hubble:
            peers.append((node.name, node.hubble))
        else:
            warnings.append(f"node {node.name} serves no Hubble API (hubble-listen-address "
                            "is not set there)")
    remote = relay.ask_nodes(peers, relay.request_for(whitelist, blacklist, since, until,
                                                        last, first))
    local = [json.loads(json_line(flow)) for flow in stored]
    merged = relay.merge(local, remote, last, first)
    lines = [json.dumps({"warning": w}) for w in warnings + remote.warnings]
    lines += [json.dumps(record) for record in merged]
    return Response("".join(line + "\n" for line in lines), mimetype="application/x-ndjson")


@bp.get("/v1/flows/status")
def flows_status():
    return jsonify(the_agent().flows.view())


@bp.get("/v1/servicemap")
def service_map():
    """The graph of the stored flows: ``?since=5m`` for a window, ``verdict=DROPPED`` and
    ``label=app=web`` (either side, repeatable) to narrow it, as ``observe`` would."""
    since = _time(dict(request.args), "since")
    tokens = [("--verdict", v) for v in request.args.getlist("verdict") if v] + [
        ("--label", label) for label in request.args.getlist("label") if label]
    try:
        whitelist, blacklist = filters_from_cli(tokens)
    except ValueError as exc:
        raise APIInputError(str(exc)) from None
    stored = the_agent().flows.query(whitelist, blacklist, since=since)
    return jsonify({**servicemap.build(stored), "flows": len(stored)})


@bp.get("/ui/")
def ui_page():
    page = resources.files("ciliumpy.ui").joinpath("servicemap.html").read_text()
    return Response(page, mimetype="text/html")
