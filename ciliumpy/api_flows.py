"""Agent API for stored flows (``ciliumpy observe``): ``POST /v1/flows`` with Hubble's
filters as the command line gave them, a time window, first/last N, and follow; the
answer is newline-delimited JSON in Hubble's ``-o json`` shape. Also the service map:
``GET /v1/servicemap`` (the graph) and ``GET /ui/`` (the page that draws it)."""

from __future__ import annotations

import json
import threading
import time
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ciliumpy.api_common import APIInputError, json_object, the_agent
from ciliumpy.flows import servicemap
from ciliumpy.flows.flags import filters_from_cli
from ciliumpy.flows.formats import json_line
from ciliumpy.flows.store import parse_time

bp = Blueprint("flows", __name__)
CLUSTER_MAP_WINDOW = 300.0  # seconds of flows the cluster-wide map shows by default
CLUSTER_MAP_FLOWS = 20000  # newest flows taken from each node for it


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
    store = the_agent().flows
    if last is None and first is None and since is None and not follow:
        last = 20  # Hubble's default without a window
    asked_at = time.time()
    if cluster and follow and until is None:
        until = asked_at  # the history; what comes after is followed
    stored = store.query(whitelist, blacklist, since, until, last, first)
    if cluster:
        history = _cluster(stored, whitelist, blacklist, since, until, last, first)
        if not follow:
            return Response("".join(history), mimetype="application/x-ndjson")
        return Response(_cluster_follow(the_agent(), history, whitelist, blacklist, asked_at),
                        mimetype="application/x-ndjson")
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


def _peers(agent) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, Hubble API address) of every other registered node, and a warning for
    each node that cannot be asked."""
    from ciliumpy import nodes

    try:
        return nodes.hubble_peers(agent.kv, skip=agent.config.node_name)
    except Exception as exc:  # the kvstore is down: this node's flows only
        return [], [f"the node registry is unreachable ({exc}): this node's flows only"]


def _warning(text: str) -> str:
    return json.dumps({"warning": text}) + "\n"


def _cluster(stored: list[dict], whitelist: list, blacklist: list, since: float | None,
             until: float | None, last: int | None, first: int | None) -> list[str]:
    """This node's flows and every other registered node's (asked through their Hubble
    API), merged in time order, as lines; a ``{"warning": ...}`` line per node that
    could not answer, before the flows."""
    from ciliumpy.hubble import relay

    peers, warnings = _peers(the_agent())
    remote = relay.ask_nodes(peers, relay.request_for(whitelist, blacklist, since, until,
                                                        last, first),
                             tls=the_agent().hubble_tls)
    local = [json.loads(json_line(flow)) for flow in stored]
    merged = relay.merge(local, remote, last, first)
    return ([_warning(w) for w in warnings + remote.warnings]
            + [json.dumps(record) + "\n" for record in merged])


def _cluster_follow(agent, history: list[str], whitelist: list, blacklist: list,
                    asked_at: float):
    """The merged history, then every node's new flows (this node's from its store, the
    others' through their Hubble API with ``follow``), merged in short windows; a
    warning line when a node stops or starts answering."""
    from ciliumpy.hubble import relay
    from ciliumpy.hubble.follow import MergedFollow

    store = agent.flows  # this runs after the handler returned: no the_agent() here

    def local(put, stop: threading.Event) -> None:
        for batch in store.follow_batches(whitelist, blacklist, stop, after=asked_at):
            for flow in batch:
                put(relay.flow_time(flow) or time.time(), json_line(flow) + "\n")

    def remote(name: str, response) -> str | None:
        if response.HasField("flow"):
            return json.dumps(relay.record(name, response)) + "\n"
        if response.HasField("lost_events"):
            return _warning(f"node {name}: {response.lost_events.num_events_lost} flows lost "
                            "(this stream fell behind)")
        return None

    follow = MergedFollow(lambda: _peers(agent)[0],
                          relay.request_for(whitelist, blacklist, asked_at, None, None, None),
                          remote, local=local, skip=agent.config.node_name,
                          tls=agent.hubble_tls)
    try:
        yield from history
        for window in follow.windows():
            lines = [_warning(n.message) for n in window.notices] + window.items
            yield "".join(lines) if lines else "\n"  # a blank line: is the client there?
    finally:
        follow.close()


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
    warnings: list[str] = []
    if request.args.get("cluster") in ("1", "true"):
        stored, warnings = _cluster_flows(stored, whitelist, blacklist, since)
    return jsonify({**servicemap.build(stored), "flows": len(stored), "warnings": warnings})


def _cluster_flows(stored: list[dict], whitelist: list, blacklist: list, since: float | None
                   ) -> tuple[list[dict], list[str]]:
    """This node's flows and every other node's (the service map of the whole cluster):
    the last ``CLUSTER_MAP_WINDOW`` unless a window is given, at most
    ``CLUSTER_MAP_FLOWS`` per node, so a page refreshing every 2 s stays cheap."""
    from ciliumpy.hubble import relay

    if since is None:
        since = time.time() - CLUSTER_MAP_WINDOW
        stored = [f for f in stored if relay.flow_time(f) >= since]
    peers, warnings = _peers(the_agent())
    remote = relay.ask_nodes(peers, relay.request_for(whitelist, blacklist, since, None,
                                                        CLUSTER_MAP_FLOWS, None),
                             tls=the_agent().hubble_tls)
    return stored[-CLUSTER_MAP_FLOWS:] + [r["flow"] for r in remote.flows], \
        warnings + remote.warnings


@bp.get("/ui/")
def ui_page():
    page = resources.files("ciliumpy.ui").joinpath("servicemap.html").read_text()
    return Response(page, mimetype="text/html")
