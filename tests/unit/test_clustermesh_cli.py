"""``ciliumpy cluster`` and the status line: how a remote cluster's state reads."""

from __future__ import annotations

from ciliumpy.cli.cluster import ago, state, status_line


def _remote(**changes) -> dict:
    base = {"name": "b", "cluster_id": 2, "address": "10.0.2.5:8500", "connected": True,
            "error": None, "last_update": 1000.0, "withdrawn": False, "nodes": 2,
            "endpoints": 7, "identities": 3, "overlaps": [], "rejected": 0}
    return {**base, **changes}


def test_states_and_ages():
    assert state(_remote()) == "connected"
    assert state(_remote(connected=False)) == "disconnected (keeping last state)"
    assert state(_remote(connected=False, withdrawn=True)) == "disconnected (state withdrawn)"
    assert state(_remote(connected=False, last_update=None)) == "disconnected"
    assert ago(None) == "never" and ago(1000.0, now=1012.0) == "12s ago"
    assert ago(1000.0, now=1000.0 + 600) == "10m ago"


def test_status_line_names_each_remote_cluster():
    assert status_line(None) == "off (--cluster-id 0)"
    line = status_line({"name": "a", "cluster_id": 1, "error": None, "clusters": [
        _remote(), _remote(name="c", connected=False, error="consul at x is unreachable")]})
    assert line.startswith("a (id 1); b: connected, last update ")
    assert "2 nodes, 7 endpoints, 3 identities" in line
    assert "c: disconnected (keeping last state)" in line and line.endswith("unreachable")
    off = status_line({"name": "a", "cluster_id": 1, "error": "store says b", "clusters": []})
    assert off == "a (id 1); OFF: store says b"
