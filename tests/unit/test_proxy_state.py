"""proxy.state verdicts (both directions, fail closed, reload), proxy.events
(emitter/receiver round trip, no listener), and the upstream mark."""

from __future__ import annotations

import json
import os
import time

from policies.http_rules import Request
from proxy.context import upstream_mark
from proxy.events import EventEmitter, EventReceiver, make_event
from proxy.state import ProxyState, StateLoader

GET = Request("GET", "/public/a", "web", [])

DOC = {
    "revision": 7,
    "identities": {"10.200.0.2": 256, "10.200.0.3": 257, "10.200.0.4": 258},
    "labels": {"256": ["container:role=frontend"], "257": ["container:role=backend"]},
    "names": {"10.200.0.2": "frontend-1"},
    "l7": [
        {"endpoint": "10.200.0.3", "direction": "ingress", "port": 80, "parser": "http",
         "remotes": [256], "http": [{"method": "GET", "path": "/public/.*"}]},
        {"endpoint": "10.200.0.3", "direction": "ingress", "port": 80, "parser": "http",
         "remotes": [258], "http": None},
        {"endpoint": "10.200.0.2", "direction": "egress", "port": 8080, "parser": "http",
         "remotes": None, "http": [{"path": "/out/.*"}]},
        {"endpoint": "10.200.0.2", "direction": "egress", "port": 80, "parser": "http",
         "remotes": [257], "http": [{"path": "/public/a"}]},
    ],
}


def test_ingress_verdicts():
    st = ProxyState(DOC)
    assert st.evaluate("10.200.0.2", "10.200.0.3", 80, GET).allowed
    d = st.evaluate("10.200.0.2", "10.200.0.3", 80, Request("POST", "/public/a"))
    assert not d.allowed and d.direction == "ingress"
    # identity 258 has an L4-only (http: null) entry
    assert st.evaluate("10.200.0.4", "10.200.0.3", 80, Request("DELETE", "/x")).allowed
    # unknown source -> world (2) -> not among the remotes
    d = st.evaluate("10.9.9.9", "10.200.0.3", 80, GET)
    assert not d.allowed and "identity 2" in d.reason
    # IPv4-mapped addresses are normalized
    assert st.evaluate("::ffff:10.200.0.2", "::ffff:10.200.0.3", 80, GET).allowed


def test_both_directions_must_allow():
    st = ProxyState(DOC)
    # 10.200.0.2 -> 10.200.0.3:80 has egress (path /public/a only) and ingress entries
    assert st.evaluate("10.200.0.2", "10.200.0.3", 80, GET).allowed
    d = st.evaluate("10.200.0.2", "10.200.0.3", 80, Request("GET", "/public/b"))
    assert not d.allowed and d.direction == "egress"
    # egress only (remotes null = any identity), to an unknown destination
    assert st.evaluate("10.200.0.2", "1.2.3.4", 8080, Request("GET", "/out/x")).allowed
    assert not st.evaluate("10.200.0.2", "1.2.3.4", 8080, Request("GET", "/in")).allowed


def test_fail_closed_without_entries_or_state(tmp_path):
    st = ProxyState(DOC)
    d = st.evaluate("10.200.0.2", "10.200.0.3", 81, GET)
    assert not d.allowed and "no L7 policy" in d.reason
    loader = StateLoader(str(tmp_path / "missing.json"))
    assert not loader.evaluate("10.200.0.2", "10.200.0.3", 80, GET).allowed
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert not StateLoader(str(bad)).evaluate("10.200.0.2", "10.200.0.3", 80, GET).allowed
    bad.write_text(json.dumps({"l7": [{"endpoint": "1.1.1.1", "direction": "ingress",
                                       "port": 1, "http": [{"path": "(("}]}]}))
    assert StateLoader(str(bad)).current() is None  # a bad regex poisons the revision


def test_reload_on_change_and_poke(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(DOC))
    loader = StateLoader(str(path), interval=0.05)
    first = loader.current()
    assert first is not None and first.revision == 7
    assert loader.current() is first  # no re-parse without a change
    doc = {**DOC, "revision": 8, "l7": []}
    tmp = tmp_path / "state.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    loader.poke()
    assert loader.current().revision == 8
    assert not loader.evaluate("10.200.0.2", "10.200.0.3", 80, GET).allowed
    path.unlink()
    time.sleep(0.06)
    assert loader.current() is None


def test_describe():
    st = ProxyState(DOC)
    assert st.describe("10.200.0.2", 5555) == {
        "ip": "10.200.0.2", "port": 5555, "identity": 256,
        "labels": ["container:role=frontend"], "name": "frontend-1"}
    assert st.describe("8.8.8.8", 53)["identity"] == 2


def test_upstream_mark():
    assert upstream_mark(256) == 0x100A5
    assert upstream_mark(2) == 0x2A5
    # node-local identities keep their scope (a plain shift lost it: 0x02000001 << 8
    # truncated to 32 bits named identity 1, the host)
    assert upstream_mark(0x02000001) == 0x1A9, "a node identity (fromNodes)"
    assert upstream_mark(0x01000003) == 0x3A8, "a CIDR identity"
    assert upstream_mark(0x05000001) == 0x2A5, "no such scope: world"


def test_events_round_trip(tmp_path):
    path = str(tmp_path / "ev.sock")
    emitter = EventEmitter(path)
    event = make_event(verdict="DENIED", protocol="http", direction="ingress",
                       src={"ip": "a"}, dst={"ip": "b"}, method="GET", path="/x",
                       status=403, latency_ms=1.23456, reason="no")
    assert not emitter.emit(event)  # nobody listens: dropped, no exception
    got: list[dict] = []
    with EventReceiver(path, got.append):
        assert emitter.emit(event)
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
    assert got and got[0]["verdict"] == "DENIED" and got[0]["http"]["latency_ms"] == 1.235
    assert set(got[0]) == {"type", "time", "verdict", "protocol", "direction", "src", "dst",
                           "http", "grpc_status", "reason", "kafka"}
    assert not os.path.exists(path)
    emitter.close()
