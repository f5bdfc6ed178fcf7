"""Fuzzing of every agent API route (``/v1/...`` and ``/metrics``) through the real
agent, wrong methods and unknown paths on both sockets, and deep policy text on a
scratch agent. The rules every answer must follow and why: test_plugin.py."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.fuzz.plugin_methods import (
    PLUGIN_METHODS,
    STATIC_METHODS,
)
from tests.support.fuzz import (
    DEEP,
    DROP,
    FUZZ,
    HUGE,
    PATH_LIKE,
    Answer,
    Breaker,
    World,
    any_json,
    assert_same,
    check_api,
    check_clear_error,
    check_common,
    check_plugin,
    dicts,
    encode,
    http_call,
    leaves,
    lists,
    missing,
    mutated,
    non_bools,
    non_strings,
    numbers,
    odd_text,
    put,
    raw_bodies,
    show,
    snapshot,
)

pytestmark = pytest.mark.docker


# ---- agent API routes ------------------------------------------------------------------
READ_ROUTES = ["/v1/healthz", "/v1/status", "/v1/networks", "/v1/endpoints", "/v1/ipam",
               "/v1/identities", "/v1/nodes", "/v1/bpf/endpoints", "/v1/bpf/ipcache",
               "/v1/bpf/ct", "/v1/bpf/metrics", "/v1/bpf/bandwidth", "/metrics", "/v1/policy",
               "/v1/policy/revision", "/v1/monitor?follow=0"]

query_pairs = st.lists(st.tuples(st.sampled_from(["endpoint", "type", "history", "follow",
                                                  "name", "label", "all", "x", ""]),
                                 odd_text.filter(lambda s: len(s) < 200)), max_size=3)


def query_string(pairs: list[tuple[str, str]]) -> str:
    return urllib.parse.urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])


def api(agent, method: str, path: str, body: bytes = b"") -> Answer:
    return http_call(agent.api_socket, method, path, body)


@pytest.mark.parametrize("route", READ_ROUTES)
@FUZZ
@given(pairs=query_pairs, raw=st.one_of(st.just(b""), any_json.map(encode)))
def test_read_routes_ignore_queries_and_bodies(agent, world, route, pairs, raw):
    # never follow=1 on the monitor: that is an endless stream
    pairs = [(k, v) for k, v in pairs if k != "follow"]
    path = route + ("&" if "?" in route else "?") + query_string(pairs) if pairs else route
    answer = api(agent, "GET", path, raw)
    check_api(answer, f"GET {path} {show(raw)}", "any")


@FUZZ
@given(number=st.one_of(st.integers(min_value=0), st.sampled_from([2**63, 2**64, 10**100])),
       junk=odd_text.filter(lambda s: len(s) < 1000))  # longer: gunicorn's own 414
def test_identity_by_number(agent, world, number, junk):
    answer = api(agent, "GET", f"/v1/identities/{number}")
    check_api(answer, f"identity {number}", "any")
    assert answer.status in (200, 404), answer.status
    path = "/v1/identities/" + urllib.parse.quote(junk.encode("utf-8", "surrogatepass"), safe="")
    check_api(api(agent, "GET", path), f"GET {path[:300]}", "any")


@FUZZ
@given(text=st.one_of(odd_text.filter(lambda s: len(s) < 1000), st.sampled_from(
    ["0", "-1", "1e9", "127.0.0.1", "::1", "10.231.7.0/24", "lxc", "a", "0" * 100])))
def test_bpf_policy_dump_by_endpoint(agent, world, text):
    path = "/v1/bpf/policy?" + query_string([("endpoint", text)])
    answer = api(agent, "GET", path)
    expect = "any" if world.names_endpoint(text) or not text.strip() else "error"
    check_api(answer, f"GET {path[:300]}", expect)


@FUZZ
@given(name=odd_text.filter(lambda s: len(s) < 1000))
def test_policy_by_name(agent, world, name):
    path = "/v1/policy/" + urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
    answer = api(agent, "GET", path)
    known = {p["name"] for p in world.baseline["/v1/policy"]["policies"]}
    check_api(answer, f"GET {path[:300]}", "any" if name in known else "error")


@FUZZ
@given(raw=st.one_of(st.just(b""), any_json.map(encode), raw_bodies({"all": True})))
def test_reconcile_ignores_bodies(agent, world, raw):
    check_api(api(agent, "POST", "/v1/reconcile", raw), f"reconcile {show(raw)}", "any")


def bad_labels() -> st.SearchStrategy:
    return st.one_of(
        missing(), non_strings.filter(lambda v: not isinstance(v, list)), st.just([]),
        st.lists(non_strings, min_size=1, max_size=3),
        st.lists(st.sampled_from(["=x", "", "container:", "container:=v", "any:=",
                                  "app=fuzz\x00", "\x00", "a\nb=c", "k8s:\t=v"]),
                 min_size=1, max_size=3),
        st.tuples(st.just("app=ok"), non_strings).map(list))


@FUZZ
@given(data=st.data())
def test_identity_allocation_refuses_bad_labels(agent, world, data):
    body = data.draw(st.one_of(
        st.builds(lambda v: {"labels": v} if v is not DROP else {}, bad_labels()).map(encode),
        raw_bodies({"labels": ["app=fuzz"]})), label="body")
    answer = api(agent, "POST", "/v1/identities", body)
    check_api(answer, f"POST /v1/identities {show(body)}", "error")


def bpf_entry_base(w: World) -> dict:
    return {"endpoint": w.endpoint_id, "direction": "ingress", "identity": 0,
            "protocol": "tcp", "port": 80, "end_port": 0, "deny": False}


def bad_ints(lo: int, hi: int) -> st.SearchStrategy:
    return st.one_of(
        st.integers().filter(lambda n: not lo <= n <= hi),
        st.sampled_from([2**63, -2**63 - 1, 10**100, "80", "", "0x50", None, True, False, 80.0,
                         80.5, float("inf"), float("nan"), [80], {"port": 80}, DEEP]))


def bpf_entry_breakers(w: World) -> dict[str, Breaker]:
    return {
        "endpoint": put(("endpoint",), st.one_of(
            missing(), non_strings, odd_text.filter(lambda s: not w.names_endpoint(s)))),
        "direction": put(("direction",), st.one_of(
            non_strings, odd_text.filter(lambda s: s not in ("ingress", "egress")))),
        "protocol": put(("protocol",), st.one_of(
            st.sampled_from([None, True, 6, [], {}, DEEP]),
            odd_text.filter(lambda s: s.lower() not in ("any", "tcp", "udp", "sctp", "icmp",
                                                        "icmpv6")))),
        "port": put(("port",), bad_ints(0, 65535)),
        "end_port": put(("end_port",), st.one_of(bad_ints(0, 65535), st.integers(1, 79))),
        "any with port": st.just(([(("protocol",), "any")], "bad")),
        "identity": put(("identity",), bad_ints(0, (1 << 24) - 1)),
        "deny": put(("deny",), non_bools),
    }


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@FUZZ
@given(data=st.data())
def test_bpf_policy_entries_refuse_bad_input(agent, world, method, data):
    """The datapath API writes map entries directly: a bad entry must write nothing."""
    body, _ = data.draw(mutated(bpf_entry_base(world), bpf_entry_breakers(world)),
                        label="body")
    raw = data.draw(st.one_of(st.just(encode(body)), raw_bodies(body)), label="raw")
    answer = api(agent, method, "/v1/bpf/policy", raw)
    check_api(answer, f"{method} /v1/bpf/policy {show(raw)}", "error")


BANDWIDTH_KEYS = ["kubernetes.io/egress-bandwidth", "kubernetes.io/ingress-bandwidth",
                  "ciliumpy.egress-bandwidth", "ciliumpy.ingress-bandwidth"]
bad_rates = st.one_of(non_strings, st.sampled_from(["", "0", "999", "10X", "-1M", "1P", "5m",
                                                    "1e9", "\x00", HUGE[:300]]),
                      odd_text.filter(lambda s: not s.strip()[:1].isdigit()))


def label_breakers() -> dict[str, Breaker]:
    return {
        "rate": put(("add", "kubernetes.io/egress-bandwidth"), bad_rates),
        "key": st.builds(lambda k: ([(("add", k), "10M")], "bad"), st.one_of(
            st.sampled_from(["app", "", "kubernetes.io/egress", "Ciliumpy.egress-bandwidth"]),
            odd_text.filter(lambda s: s not in BANDWIDTH_KEYS))),
        "add": put(("add",), st.one_of(non_strings.filter(lambda v: v not in ({}, None)),
                                       st.just(["kubernetes.io/egress-bandwidth=10M"]))),
        "delete": put(("delete",), st.one_of(
            st.sampled_from(["ciliumpy.egress-bandwidth", 7, {"k": 1}, [None], [["x"]]]),
            st.lists(odd_text.filter(lambda s: s not in BANDWIDTH_KEYS), min_size=1,
                     max_size=2))),
    }


@FUZZ
@given(data=st.data())
def test_endpoint_label_changes_refuse_bad_input(agent, world, data):
    """A refused runtime label change leaves limits, overrides and qdiscs as they were
    (the snapshot includes /v1/endpoints and /v1/bpf/bandwidth)."""
    base = {"add": {"kubernetes.io/egress-bandwidth": "10M"}, "delete": []}
    body, _ = data.draw(mutated(base, label_breakers()), label="body")
    raw = data.draw(st.one_of(st.just(encode(body)), raw_bodies(body)), label="raw")
    name = data.draw(st.one_of(st.just(world.endpoint_id[:12]), odd_text.filter(
        lambda s: s.strip() and len(s) < 200 and "/" not in s and not world.names_endpoint(s))),
        label="name")
    quoted = urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
    path = f"/v1/endpoints/{quoted}/labels"
    answer = api(agent, "POST", path, raw)
    check_api(answer, f"POST {path} {show(raw)}", "error")


POLICY_DOC = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
              "metadata": {"name": "fuzz-policy"},
              "spec": {"endpointSelector": {"matchLabels": {"app": "fuzz"}},
                       "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                                    "toPorts": [{"ports": [{"port": "80",
                                                            "protocol": "TCP"}]}]}]}}
# names no store key can hold safely: separators, dot names, control characters, too long
bad_names = st.one_of(st.sampled_from([p for p in PATH_LIKE if "/" in p or "\\" in p or
                                       p in (".", "..")] +
                                      ["a\x00b", "\x00", "\r\n", "\x1b[31m", "tab\there",
                                       HUGE[:300], "\ud800"]),
                      st.text(min_size=1, max_size=10).map(lambda s: s + "/" + s))


def policy_breakers() -> dict[str, Breaker]:
    doc = ("documents", 0)
    return {
        "documents": put(("documents",), st.one_of(
            st.just([]), st.lists(st.one_of(leaves.filter(lambda v: v is not None),
                                            st.just(DEEP)), min_size=1, max_size=2))),
        "text instead": st.one_of(non_strings, st.just(POLICY_DOC), st.just([POLICY_DOC]))
        .map(lambda v: ([(("documents",), DROP), (("text",), v)], "bad")),
        "bad text": st.sampled_from(["", "{", "- : -\n  x", "5", "kind: Pod\nspec: {}",
                                     "\x00", "a: b: c"]).map(
            lambda v: ([(("documents",), DROP), (("text",), v)], "bad")),
        "name": put(("name",), st.one_of(non_strings.filter(lambda v: v not in (0, False)),
                                         bad_names)),
        "source": put(("source",), st.one_of(lists, dicts, numbers.filter(bool))),
        "metadata.name": put(doc + ("metadata", "name"), bad_names),
        "unknown field": put(doc + ("spec", "zzFuzzUnknown"), any_json),
        "selector": put(doc + ("spec", "endpointSelector"), st.sampled_from(
            [[1], "app=fuzz", 5, True, {"matchLabels": [1]}, {"matchLabels": {"": "x"}}])),
    }


@FUZZ
@given(data=st.data())
def test_policy_import_refuses_bad_input(agent, world, data):
    base = {"documents": [POLICY_DOC], "source": "fuzz.yaml", "name": "fuzz-policy"}
    body, _ = data.draw(mutated(base, policy_breakers()), label="body")
    raw = data.draw(st.one_of(st.just(encode(body)), raw_bodies(body)), label="raw")
    answer = api(agent, "POST", "/v1/policy", raw)
    check_api(answer, f"POST /v1/policy {show(raw)}", "error")


DEEP_TEXTS = {
    # libyaml (CSafeLoader) recursed in C per nesting level: the worker process died
    "yaml flow nesting": "{" * 100_000,
    "yaml sequence nesting": "- " * 100_000 + "x",
    "yaml block nesting": "".join(" " * (2 * i) + "a:\n" for i in range(2000)),
    # load_documents caught ValueError only: json's RecursionError escaped as a 500
    "json nesting": "[" * 100_000,
}


@pytest.mark.parametrize("text", list(DEEP_TEXTS.values()), ids=list(DEEP_TEXTS))
def test_policy_text_nesting_is_refused(scratch_agent, text):
    """On a scratch agent: the segfault takes the worker down with it."""
    scratch = scratch_agent()
    try:
        answer = http_call(scratch.api_socket, "POST", "/v1/policy",
                           encode({"text": text, "source": "deep.yaml"}))
    except (ConnectionError, http.client.HTTPException) as exc:
        raise AssertionError(f"the agent died: {exc!r}") from None
    check_api(answer, "POST /v1/policy deep text", "error")


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(["name", "label", "all"]),
                                odd_text.filter(lambda s: s != "1" and len(s) < 200)),
                      max_size=3),
       raw=st.one_of(st.just(b""), any_json.map(encode)))
def test_policy_delete_of_nothing(agent, world, pairs, raw):
    existing = world.baseline["/v1/policy"]["policies"]
    names = {p["name"] for p in existing}
    labels = {label for p in existing for label in p["labels"]} | {f"name={n}" for n in names}
    pairs = [(k, v) for k, v in pairs
             if not (k == "name" and v in names) and not (k == "label" and v in labels)]
    path = "/v1/policy?" + query_string(pairs)
    check_api(api(agent, "DELETE", path, raw), f"DELETE {path[:300]}", "error")


trace_values = st.one_of(odd_text.filter(lambda s: len(s) < 2000), non_strings, st.none())


@FUZZ
@given(data=st.data())
def test_policy_trace(agent, world, data):
    """Read-only: any answer but a 5xx; a body that is no JSON object is a 400."""
    base = {"src": "app=client", "dst": world.endpoint_id, "dport": "80/tcp",
            "http": {"method": "GET", "path": "/", "host": None, "headers": ["X-A: b"]},
            "kafka": None}
    breakers = {name: put(path, trace_values) for name, path in (
        ("src", ("src",)), ("dst", ("dst",)), ("dport", ("dport",)), ("http", ("http",)),
        ("method", ("http", "method")), ("path", ("http", "path")),
        ("host", ("http", "host")), ("headers", ("http", "headers")), ("kafka", ("kafka",)))}
    breakers["kafka request"] = st.fixed_dictionaries({
        "apiKey": trace_values, "apiVersion": trace_values, "topics": trace_values,
        "clientID": trace_values}).map(lambda k: ([(("http",), None), (("kafka",), k)], "bad"))
    body, _ = data.draw(mutated(base, breakers), label="body")
    answer = api(agent, "POST", "/v1/policy/trace", encode(body))
    check_api(answer, f"trace {show(body)}", "any")
    raw = data.draw(raw_bodies(base), label="raw")
    check_api(api(agent, "POST", "/v1/policy/trace", raw), f"trace {show(raw)}", "error")


# ---- methods, paths and sockets ------------------------------------------------------
ROUTE_METHODS = {
    **{route.split("?")[0]: {"GET"} for route in READ_ROUTES},
    "/v1/monitor": {"GET"}, "/v1/identities/7": {"GET"}, "/v1/policy/x": {"GET"},
    "/v1/reconcile": {"POST"}, "/v1/identities": {"GET", "POST"},
    "/v1/bpf/policy": {"GET", "POST", "DELETE"}, "/v1/policy": {"GET", "POST", "DELETE"},
    "/v1/policy/trace": {"POST"}, "/v1/endpoints/x/labels": {"POST"},
}
HTTP_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def test_wrong_http_methods_are_405(agent, world):
    for route, allowed in ROUTE_METHODS.items():
        for method in HTTP_METHODS:
            if method in allowed:
                continue
            answer = api(agent, method, route, b'{"labels": ["app=x"], "all": 1}')
            check_api(answer, f"{method} {route}", "error")
            # GET /v1/policy/trace is GET /v1/policy/<name> of a policy named "trace"
            assert answer.status in (404, 405), (method, route, answer.status)
    for method in list(PLUGIN_METHODS) + list(STATIC_METHODS):
        for verb in ("GET", "PUT", "DELETE", "PATCH"):
            answer = http_call(agent.plugin_socket, verb, "/" + method,
                               encode(PLUGIN_METHODS[method].base(world))
                               if method in PLUGIN_METHODS else b"")
            check_plugin(answer, f"{verb} {method}", "error")
            assert answer.status == 405, (verb, method, answer.status)


def test_each_api_is_absent_from_the_other_socket(agent, world):
    """Valid, state-changing calls on the wrong socket are 404 and change nothing."""
    for method in PLUGIN_METHODS:
        answer = api(agent, "POST", "/" + method, encode(PLUGIN_METHODS[method].base(world)))
        check_api(answer, f"{method} on the API socket", "error")
        assert answer.status == 404
    for route, allowed in ROUTE_METHODS.items():
        for method in allowed:
            answer = http_call(agent.plugin_socket, method, route, b"{}")
            check_plugin(answer, f"{method} {route} on the plugin socket", "error")
            assert answer.status == 404


@FUZZ
@given(prefix=st.sampled_from(["/v1/zz", "/NetworkDriver.Zz", "/IpamDriver.Zz", "/Plugin.Zz",
                               "/zz", "/v1/bpf/zz", "/v1/identities/-", "/v1/policy/x/"]),
       tail=odd_text, method=st.sampled_from(HTTP_METHODS + ["OPTIONS", "BREW", "HEAD"]),
       raw=st.one_of(st.just(b""), any_json.map(encode)))
def test_unknown_paths_are_404(agent, world, prefix, tail, method, raw):
    path = prefix + urllib.parse.quote(tail.encode("utf-8", "surrogatepass"), safe="/")
    for sock in (agent.plugin_socket, agent.api_socket):
        answer = http_call(sock, method, path[:3000], raw)
        check_common(answer, f"{method} {path[:300]}")
        if method != "HEAD":
            assert answer.status == 404, (method, path[:300], answer.status)
            check_clear_error(answer, f"{method} {path[:300]}")


def test_odd_request_lines_never_crash(agent, world):
    """Paths the router should never reach a handler with, and an over-long one that
    gunicorn refuses itself."""
    paths = ["/v1/../v1/status", "//v1/status", "/v1/status/", "/%00", "/v1/policy/%2e%2e",
             "/v1/policy/..%2f..%2fetc%2fpasswd", "/NetworkDriver.CreateNetwork/../x",
             "/" + "a" * 8000, "/v1/identities/99999999999999999999999999999", "*"]
    for sock in (agent.plugin_socket, agent.api_socket):
        for path in paths:
            answer = http_call(sock, "GET", path)
            check_common(answer, f"GET {path[:60]}")


def test_zz_whole_run_left_the_state_unchanged(agent, world):
    """Last in the file: everything above, together, changed nothing."""
    assert_same(world.baseline, snapshot(agent), "the whole fuzz run")
