"""L7 rules in the pure policy code: resolution keeps each port rule's HTTP rules with
its entries, trace predicts the proxy's verdict for a request, and the proxy's state
lists, per L7 port, the L7 rules and the peers allowed there without them."""

from __future__ import annotations

import json

from ciliumpy.proxy_state import l7_entries
from policies.engine import labels_of
from policies.parser import parse_text
from policies.resolve import Universe, resolve
from policies.trace import Side, http_request, offline_side, trace

SEED = """
endpointSelector: {matchLabels: {role: backend}}
ingress:
- fromEndpoints: [{matchLabels: {role: frontend}}]
  toPorts:
  - ports: [{port: "80", protocol: TCP}]
    rules:
      http:
      - {method: GET, path: "/public/.*"}
- fromEndpoints: [{matchLabels: {role: admin}}]
  toPorts:
  - ports: [{port: "80", protocol: TCP}]
"""


def rules():
    return [r for p in parse_text(SEED, "seed.yaml") for r in p.rules]


def side(text: str) -> Side:
    return offline_side(text)


def verdict(method: str, path: str, src: str = "role=frontend", headers=()) -> str:
    return trace(rules(), side(src), side("role=backend"), "TCP", 80, "default",
                 http_request(method, path, None, headers)).verdict


def test_trace_predicts_the_proxy_verdict():
    assert verdict("GET", "/public/a") == "ALLOWED"
    assert verdict("GET", "/private") == "DENIED"
    assert verdict("POST", "/public/a") == "DENIED"
    assert verdict("GET", "/public") == "DENIED"  # full match, as Cilium
    # a peer allowed at L4 on the same port is not limited by the other rule's L7
    assert verdict("DELETE", "/anything", src="role=admin") == "ALLOWED"
    # without a request, the L4 verdict and a note
    result = trace(rules(), side("role=frontend"), side("role=backend"), "TCP", 80)
    assert result.verdict == "ALLOWED"
    assert any("judged by the L7 proxy" in line for line in result.log)


def test_trace_header_regex():
    text = """
endpointSelector: {}
ingress:
- toPorts:
  - ports: [{port: "80", protocol: TCP}]
    rules: {http: [{headers: ["X-Token: [0-9]+"]}]}
"""
    found = [r for p in parse_text(text, "t.yaml") for r in p.rules]

    def one(*headers: str) -> str:
        return trace(found, side("a=b"), side("c=d"), "TCP", 80, "default",
                     http_request("GET", "/", None, headers)).verdict

    assert one("X-Token: 42") == "ALLOWED"
    assert one("X-Token: abc") == "DENIED"
    assert one() == "DENIED"


def test_bad_trace_header_is_refused():
    import pytest

    with pytest.raises(ValueError, match="Name: value"):
        http_request("GET", "/", None, ["no-colon"])


def test_proxy_entries_name_l7_rules_and_l4_peers():
    universe = Universe({300: ["container:role=frontend"], 301: ["container:role=admin"]}, {})
    resolved = resolve(rules(), labels_of(["container:role=backend"]), universe, "default")
    entries = l7_entries(["10.0.0.3"], resolved.entries, ["http"])
    by_remote = {tuple(e["remotes"] or ()): e for e in entries}
    assert set(by_remote) == {(300,), (301,)}
    assert by_remote[(300,)]["http"] == [{"method": "GET", "path": "/public/.*"}]
    assert by_remote[(301,)]["http"] is None  # L4-only: every request
    assert all(e["port"] == 80 and e["direction"] == "ingress" and e["endpoint"] == "10.0.0.3"
               for e in entries)
    json.dumps(entries)  # the proxy reads it as JSON
