"""Fuzzing of the agent API routes added for services and flows (the rules every answer
must follow and why: test_plugin.py): ``PUT``/``DELETE /v1/services/<name>`` with
mutated valid bodies and odd names, ``POST /v1/flows`` with mutated queries, and the
read routes ``/v1/services``, ``/v1/ports``, ``/v1/flows/status``, ``/v1/servicemap``
with odd queries and bodies. Each answer is a clear ``{"Err": ...}`` (or a success for
reads) and the agent's state, services included, is unchanged afterwards."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import (
    DROP,
    FUZZ,
    Breaker,
    any_json,
    check_api,
    encode,
    http_call,
    mutated,
    non_bools,
    non_strings,
    numbers,
    odd_text,
    put,
    raw_bodies,
    show,
)

pytestmark = pytest.mark.docker

SERVICE = {"frontend": "10.96.250.1:80/tcp", "backends": ["10.250.0.1:8080,weight=2"],
           "selector": {"app": "fuzz"}, "target_port": 8080, "affinity": "client",
           "maglev_size": 251}
FLOWS = {"filters": [["--verdict", "DROPPED"], ["--from-label", "app=x"]], "last": 5,
         "since": "5m", "follow": False, "cluster": False}


def quoted(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


def service_breakers() -> dict[str, Breaker]:
    bad_addresses = st.one_of(non_strings, st.sampled_from(
        ["10.96.250.1", "10.96.250.1:0", "10.96.250.1:70000", "999.1.1.1:80", ":80",
         "10.96.250.1:80/sctp", "[fd00::1]:80", "10.96.250.1:80/tcp/x", "", "host:80"]))
    return {
        "frontend": put(("frontend",), st.one_of(bad_addresses, st.just(DROP))),
        "backends": put(("backends",), st.one_of(
            non_strings.filter(lambda v: v not in ([], {}, None, 0, False)),
            st.lists(bad_addresses, min_size=1, max_size=3),
            st.just(["10.250.0.1:80", "10.250.0.1:80"]), st.just(["[fd00::2]:80"]),
            st.just(["10.250.0.1:80,weight=0"]), st.just(["10.250.0.1:80,weight=x"]))),
        "selector": put(("selector",), st.one_of(
            st.sampled_from([[1], "app=fuzz", 5, True, {"": "x"}, {"app": 1},
                             {"app": None}]))),
        "target_port": put(("target_port",), st.one_of(
            st.sampled_from([0, -1, 65536, 2**64, "80", 8.5, True, [80]]))),
        "affinity": put(("affinity",), st.one_of(
            non_strings.filter(lambda v: v not in (None, 0, False, [], {}, "")),
            st.sampled_from(["sticky", "Client", "none "]))),
        "maglev_size": put(("maglev_size",), st.one_of(
            numbers.filter(lambda v: v not in (251, 1021, 4093, 16381, 65537)),
            st.sampled_from(["251", True, None, [251]]).filter(lambda v: v is not None))),
        "unknown": put(("sessionAffinity",), st.just("ClientIP")),
        "name": put(("name",), st.sampled_from(["Other", "other", "x" * 64, "-a", ""])),
    }


def flow_breakers() -> dict[str, Breaker]:
    return {
        "filters": put(("filters",), st.one_of(
            st.sampled_from([{"--verdict": "DROPPED"}, "--verdict DROPPED", [["--verdict"]],
                             [["--verdict", 1]], [["--no-such-flag", "x"]],
                             [["--verdict", "MAYBE"]], [["--from-label", ""]],
                             [["--port", "70000"]], [["--not", ""]], [[1, 2]]]),
            st.lists(st.lists(odd_text, min_size=3, max_size=3), min_size=1, max_size=2))),
        "last": put(("last",), st.one_of(
            st.sampled_from([-1, True, "5", 1.5, [5], {}]))),
        "first": put(("first",), st.sampled_from([-3, False, "1", 2.5])),
        "since": put(("since",), st.one_of(
            non_strings.filter(lambda v: v is not None),
            st.sampled_from(["yesterday", "5x", "2026-13-01T00:00:00Z", "-5m", "1e400s"]))),
        "until": put(("until",), st.sampled_from([3, "soon", "2026-02-30T00:00:00Z"])),
        "follow": put(("follow",), non_bools),
        "cluster": put(("cluster",), non_bools),
        "follow+first": st.just(([(("follow",), True), (("first",), 3)], "bad")),
    }


def api(agent, method: str, path: str, body: bytes = b""):
    return http_call(agent.api_socket, method, path, body)


@FUZZ
@given(data=st.data())
def test_service_writes_refuse_bad_input(agent, world, data):
    body, _ = data.draw(mutated(SERVICE, service_breakers()), label="body")
    raw = data.draw(st.one_of(st.just(encode(body)), raw_bodies(body)), label="raw")
    answer = api(agent, "PUT", "/v1/services/fuzz-svc", raw)
    check_api(answer, f"PUT /v1/services/fuzz-svc {show(raw)}", "error")


@FUZZ
@given(name=odd_text.filter(lambda s: len(s) < 200),
       raw=st.one_of(st.just(b""), any_json.map(encode)))
def test_service_names_in_paths(agent, world, name, raw):
    path = f"/v1/services/{quoted(name)}"
    for method in ("GET", "DELETE"):
        answer = api(agent, method, path, raw)
        check_api(answer, f"{method} {path}", "error")
    answer = api(agent, "PUT", path, encode({**SERVICE, "frontend": 7}))
    check_api(answer, f"PUT {path}", "error")


@FUZZ
@given(data=st.data())
def test_flow_queries_refuse_bad_input(agent, world, data):
    body, _ = data.draw(mutated(FLOWS, flow_breakers()), label="body")
    raw = data.draw(st.one_of(st.just(encode(body)), raw_bodies(body)), label="raw")
    answer = api(agent, "POST", "/v1/flows", raw)
    check_api(answer, f"POST /v1/flows {show(raw)}", "error")


@pytest.mark.parametrize("route", ["/v1/services", "/v1/ports", "/v1/flows/status",
                                   "/v1/servicemap"])
@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(["since", "verdict", "label", "cluster",
                                                 "x", ""]),
                                 odd_text.filter(lambda s: len(s) < 200)), max_size=3),
       raw=st.one_of(st.just(b""), any_json.map(encode)))
def test_service_and_flow_reads(agent, world, route, pairs, raw):
    query = urllib.parse.urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])
    answer = api(agent, "GET", f"{route}?{query}", raw)
    check_api(answer, f"GET {route}?{query}", "any")
