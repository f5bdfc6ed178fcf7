"""Fuzzing of every plugin method and every agent API route, through the real agent.

This file owns the agent's robustness against bad input on both of its sockets. For
``/Plugin.Activate``, every ``/NetworkDriver.*`` and ``/IpamDriver.*`` method and every
agent route (``/v1/...`` and ``/metrics``), hypothesis sends:

- mutated valid bodies: a body as Docker (or the CLI) sends it, referring to a real
  network, endpoint and pool (``world``: a Docker network and container on ciliumpy),
  with one to three fields broken: dropped, ``null``, a wrong type, a huge value (1 MB
  strings, 2**63 and 10**100, deep nesting), unicode/NUL/control characters, path-like
  names, well-formed ids of nothing;
- raw bodies: empty, truncated JSON, non-JSON bytes, a JSON array or scalar, deep
  nesting, a lone UTF-8 BOM;
- wrong HTTP methods, unknown paths, and each API on the other socket.

Every answer: never a 5xx and never a Python traceback. Invalid input to a plugin
method is a non-2xx ``{"Err": "<clear sentence>"}`` (libnetwork's form); to an API route
a 4xx ``{"Err": ...}`` (``ciliumpy.api_common.api_error``). Read-only and stateless
calls may answer 2xx. The agent's observable state (networks, endpoints, IPAM pools and
allocations, identities, BPF endpoint/ipcache/policy maps, policies and revision, and
the host's lxc/tmp links) is exactly equal before and after each test and the whole file.

Bodies are invalid *by construction*: a mutation always breaks a field the method
validates, so an answer that changed state is a bug, never bad luck. Where the
protocol defines unknown ids as success (releases, deletes, ``Leave``), such a call may
answer 2xx but must change nothing.

Policy text nested deep enough to crash a parser (libyaml's C loader recurses without
a limit and used to take the worker down; json raised RecursionError) is sent to a
scratch agent (``test_policy_text_nesting_is_refused``): it must be refused, the agent
alive.

Determinism and bounds: ``derandomize=True`` and no example database, so CI replays
the same examples; ``max_examples`` per target keeps the file around a minute on two
cores (see ``EXAMPLES``).
"""

from __future__ import annotations

import copy
import http.client
import ipaddress
import json
import os
import re
import socket
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.docker import Docker
from tests.support.wait import wait_for

pytestmark = pytest.mark.docker

# Examples per target (method or route): about 7 ms each on the 2-core CI host, so the
# file takes about a minute. CILIUMPY_FUZZ_EXAMPLES runs a deeper (still seeded) search.
EXAMPLES = int(os.environ.get("CILIUMPY_FUZZ_EXAMPLES", "150"))
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.large_base_example])
PLUGIN_ACCEPT = "application/vnd.docker.plugins.v1.2+json"
MAC_OPT = "com.docker.network.endpoint.macaddress"
# A clear error is a sentence a user can read: not empty, not an echo of a 1 MB input.
MAX_ERR = 1000
SUBNET = "10.231.7.0/24"


# ---- the wire ----------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(socket_path: str, method: str, path: str, body: bytes = b"",
              headers: tuple[str, ...] = ()) -> Answer:
    """One raw HTTP/1.1 request: dockerd's header set, any method, path and body."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    try:
        sock.connect(socket_path)
        head = [f"{method} {path} HTTP/1.1", "Host: ciliumpy", f"Accept: {PLUGIN_ACCEPT}",
                f"Content-Length: {len(body)}", "Connection: close", *headers]
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (e.g. 400) before reading a large body
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.read(), response.getheader("Content-Type", ""))
    finally:
        sock.close()


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + f"... ({len(text)} chars)"


def check_clear_error(answer: Answer, what: str) -> None:
    """A non-2xx answer carries {"Err": "<sentence>"} (plugin and API alike)."""
    try:
        data = answer.json()
    except ValueError:
        raise AssertionError(f"{what}: error answer is not JSON: {show(answer.body)}") from None
    assert isinstance(data, dict) and isinstance(data.get("Err"), str), \
        f"{what}: error answer without Err: {show(data)}"
    message = data["Err"]
    assert message.strip(), f"{what}: empty Err"
    assert len(message) <= MAX_ERR, f"{what}: Err of {len(message)} chars: {show(message)}"
    # echoed input must come back escaped (NUL, ESC...); "\n" is allowed: PyYAML's own
    # messages span lines
    control = [c for c in message if unicodedata.category(c) == "Cc" and c != "\n"]
    assert not control, f"{what}: control characters in Err: {show(message)}"
    assert not message.startswith("internal error"), f"{what}: {message}"


def check_common(answer: Answer, what: str) -> None:
    assert answer.status < 500, f"{what}: {answer.status} {show(answer.body)}"
    assert b"Traceback (most recent call last)" not in answer.body, f"{what}: traceback"


def check_plugin(answer: Answer, what: str, expect: str) -> None:
    """expect: "error" (must fail), "any" (may succeed), "ok" (must succeed)."""
    check_common(answer, what)
    data = answer.json()  # Docker fails a call whose answer is not JSON
    assert isinstance(data, dict), f"{what}: answer is not an object: {show(data)}"
    if 200 <= answer.status < 300:
        assert expect != "error", f"{what}: invalid input accepted: {show(data)}"
        assert answer.status == 200 and "Err" not in data, f"{what}: {answer.status} {data}"
    else:
        assert expect != "ok", f"{what}: {answer.status} {show(data)}"
        assert 400 <= answer.status < 500, f"{what}: {answer.status}"
        check_clear_error(answer, what)


def check_api(answer: Answer, what: str, expect: str) -> None:
    check_common(answer, what)
    if answer.status >= 300:
        assert 400 <= answer.status < 500, f"{what}: {answer.status} {show(answer.body)}"
        check_clear_error(answer, what)
    else:
        assert expect != "error", f"{what}: invalid input accepted: {show(answer.body)}"


# ---- values --------------------------------------------------------------------------
DROP = object()  # a mutation that removes the key
DEEP = "__ciliumpy_fuzz_deep_nesting__"  # replaced by 100000 nested arrays on the wire
DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE = "A" * (1 << 20)
PATH_LIKE = ["../../etc/passwd", "/etc/passwd", "..", ".", "a/b", "..\\..\\boot.ini",
             "%2e%2e%2f%2e%2e%2f", "lxc/../../x", "/proc/self/environ", "~root/.ssh"]
ODD_TEXT = ["\x00", "a\x00b", "\r\n", "\x1b[31mred", "\t", "\x7f", "é", "\u202e", "\ufeff",
            "💥", "\ud800", "日本語", " ", "null", "true", "0", "{}", "[]", HUGE]
ID_RE = re.compile(r"[0-9A-Za-z]{1,64}")
HEX = "0123456789abcdef"

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
numbers = st.one_of(st.integers(), st.floats(),
                    st.sampled_from([2**63, -2**63 - 1, 2**64, 10**100, -1, 0]))
odd_text = st.one_of(st.sampled_from(PATH_LIKE + ODD_TEXT), st.text(max_size=24))
lists = st.lists(leaves, max_size=3)
dicts = st.dictionaries(st.text(max_size=6), leaves, max_size=3)
# JSON values that are not strings (DEEP is a string here but an array on the wire)
non_strings = st.one_of(st.booleans(), numbers, lists, dicts, st.just(DEEP))
non_maps = st.one_of(st.booleans(), numbers, lists, st.text(max_size=8), st.just(DEEP))
non_bools = st.one_of(numbers, lists, dicts, st.sampled_from(["true", "false", "", "1"]),
                      st.just(DEEP))
any_json = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=8)
docker_ids = st.text(alphabet=HEX, min_size=64, max_size=64)


def missing() -> st.SearchStrategy:
    return st.sampled_from([DROP, None, ""])


def bad_ids() -> st.SearchStrategy:
    """Not a Docker id (which is 1-64 letters and digits; Docker's are 64 hex)."""
    return st.one_of(missing(), non_strings, odd_text.filter(lambda s: not ID_RE.fullmatch(s)))


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def not_ip(text: str) -> bool:
    return not (_parses(ipaddress.ip_interface, text)
                or _parses(ipaddress.ip_address, text.split("/")[0]))


def not_network(text: str) -> bool:
    return not _parses(lambda t: ipaddress.ip_network(t, strict=False), text)


def _mtu_like(text: str) -> bool:
    """Text that int() reads as an MTU in range (" 1400", "١٤٠٠"): not garbage."""
    try:
        return 1280 <= int(text) <= 65535
    except ValueError:
        return False


garbage_ips = odd_text.filter(lambda s: s != "" and not_ip(s))
garbage_networks = odd_text.filter(lambda s: s != "" and not_network(s))


def encode(body: Any) -> bytes:
    return json.dumps(body).replace(json.dumps(DEEP), DEEP_JSON).encode()


def set_path(body: dict, path: tuple, value: Any) -> None:
    """Sets (or with DROP removes) ``body[path]``; a no-op when an earlier breaker already
    replaced a parent (that breaker alone makes the body invalid)."""
    *parents, last = path
    target: Any = body
    for key in parents:
        if isinstance(target, dict) and key in target or (
                isinstance(target, list) and isinstance(key, int) and key < len(target)):
            target = target[key]
        else:
            return
    if isinstance(target, dict):
        if value is DROP:
            target.pop(last, None)
        else:
            target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        target[last] = value if value is not DROP else None


# A breaker: a strategy of (list of (path, value), tag). Tags say what was broken:
# "bad" (malformed: always an error) or "unknown:<Field>" (well-formed, refers to nothing).
Breaker = st.SearchStrategy


def put(path: tuple, values: st.SearchStrategy, tag: str = "bad") -> Breaker:
    return values.map(lambda v: ([(path, v)], tag))


@st.composite
def mutated(draw: st.DrawFn, base: dict, breakers: dict[str, Breaker]) -> tuple[dict, set]:
    """``base`` with one to three breakers applied, and sometimes an ignored extra key."""
    names = draw(st.lists(st.sampled_from(sorted(breakers)), min_size=1, max_size=3,
                          unique=True))
    body, tags = copy.deepcopy(base), set()
    for name in names:
        changes, tag = draw(breakers[name])
        for path, value in changes:
            set_path(body, path, value)
        tags.add(tag)
    if draw(st.booleans()):
        body["zzUnknownKey"] = draw(any_json)  # unknown keys are ignored by contract
    return body, tags


@st.composite
def raw_bodies(draw: st.DrawFn, base: dict) -> bytes:
    """Bodies that are no JSON object at all."""
    valid = json.dumps(base).encode()
    return draw(st.one_of(
        # (a UTF-8 BOM before valid JSON is not here: RFC 8259 lets parsers accept it)
        st.sampled_from([b"", b"  \r\n", b"\xef\xbb\xbf", DEEP_JSON.encode(),
                         ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(),
                         b'"' + HUGE.encode() + b'"', b"NaN", b"null", b"\x00" * 16]),
        st.integers(1, max(1, len(valid) - 1)).map(lambda n: valid[:n]),  # truncated
        st.binary(min_size=1, max_size=40).filter(_not_an_object),
        st.one_of(leaves, st.lists(any_json, max_size=3)).map(lambda v: json.dumps(v).encode()),
    ))


def _not_an_object(raw: bytes) -> bool:
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return True


# ---- the world: a real network, container, endpoint and pool --------------------------
@dataclass
class World:
    network_id: str
    endpoint_id: str
    container_id: str
    container_name: str
    pool_id: str
    address: str  # the container's IPv4
    gateway: str
    ifindex: int
    baseline: dict = field(default_factory=dict)

    def ids(self) -> set[str]:
        return {self.network_id, self.endpoint_id, self.container_id}

    def names_endpoint(self, text: str) -> bool:
        """Whether the agent's endpoint lookup would find the world's endpoint."""
        text = text.strip()
        return bool(text) and (self.endpoint_id.startswith(text)
                               or self.container_id.startswith(text)
                               or text in (self.container_name, str(self.ifindex), self.address))


SNAPSHOT_ROUTES = ("/v1/networks", "/v1/endpoints", "/v1/ipam", "/v1/identities",
                   "/v1/bpf/endpoints", "/v1/bpf/ipcache", "/v1/bpf/policy", "/v1/policy",
                   "/v1/policy/revision")


def snapshot(agent) -> dict:
    """The agent's state as its own API shows it, plus the host's endpoint links."""
    state = {route: agent.api(route) for route in SNAPSHOT_ROUTES}
    state["links"] = sorted(n for n in os.listdir("/sys/class/net")
                            if n.startswith(("lxc", "tmp")))
    return state


def assert_same(before: dict, after: dict, what: str) -> None:
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, f"{what} changed the agent's state: {show(changed)}"


@pytest.fixture(scope="module")
def world(agent, docker_ready):
    client = Docker()
    name = "cpy-fuzz-" + uuid.uuid4().hex[:6]
    try:
        network_id = client.network_create(name, "--subnet", SUBNET).stdout.strip()
        container_id = client.run(network_id, "--label", "app=fuzz", name=name + "-c")
        settings_ = client.inspect(container_id)["NetworkSettings"]["Networks"][name]

        def labelled():
            found = [e for e in agent.api("/v1/endpoints")
                     if e["endpoint_id"] == settings_["EndpointID"]]
            return found[0] if found and found[0]["labels"] and found[0]["identity"] != 5 \
                else None

        endpoint = wait_for(labelled, timeout=30)
        assert endpoint, "the world's container got no identity"
        pool_id = next(p["pool_id"] for p in agent.api("/v1/ipam")["pools"]
                       if p["pool"] == SUBNET)
        agent.api_post("/v1/reconcile", {})  # settle what earlier tests left to collect
        stable = wait_for(lambda: _stable(agent), timeout=30, interval=0.5)
        assert stable, "the agent's state did not settle"
        yield World(network_id, settings_["EndpointID"], container_id, name + "-c", pool_id,
                    settings_["IPAddress"], settings_["Gateway"], endpoint["ifindex"],
                    baseline=stable)
    finally:
        client.cleanup()


def _stable(agent) -> dict | None:
    first = snapshot(agent)
    time.sleep(0.3)
    return first if snapshot(agent) == first else None


@pytest.fixture(autouse=True)
def state_unchanged(request, agent, world):
    """Every test (one method or route) leaves the agent's state exactly as it was."""
    before = snapshot(agent)
    yield
    assert_same(before, snapshot(agent), request.node.name)


# ---- plugin methods --------------------------------------------------------------------
@dataclass
class Method:
    """A plugin method: its valid body, what breaks it, and what a broken call answers."""

    base: Callable[[World], dict]
    breakers: Callable[[World], dict[str, Breaker]]
    # from the tags of what was broken: "error" (must fail) or "any" (may succeed)
    expect: Callable[[set], str] = lambda tags: "error"


def id_breakers(w: World, *fields: str) -> dict[str, Breaker]:
    """Malformed or well-formed but unknown ids for ``fields``: one breaker per field
    (two on the same field would overwrite each other's values)."""
    # unknown ids include ones sharing the world endpoint's first 12 characters: its
    # interface name (lxc + 12), which no call about another id may touch
    fresh = st.one_of(docker_ids, docker_ids.map(lambda i: w.endpoint_id[:12] + i[12:]))
    return {name: st.one_of(put((name,), bad_ids()),
                            put((name,), fresh.filter(lambda i: i not in w.ids()),
                                "unknown:" + name))
            for name in fields}


def endpoint_expect(tags: set) -> str:
    """Delete/Leave: an unknown endpoint is success (Docker only logs errors and retries
    nothing); the world's endpoint named with another network is an error."""
    return "any" if "bad" not in tags and "unknown:EndpointID" in tags else "error"


def create_network_base(w: World) -> dict:
    return {"NetworkID": "f" * 64,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"},
                        "com.docker.network.internal": False},
            "IPv4Data": [{"AddressSpace": "CiliumpyLocal", "Pool": SUBNET,
                          "Gateway": w.gateway + "/24", "AuxAddresses": None}],
            "IPv6Data": []}


def create_network_breakers(w: World) -> dict[str, Breaker]:
    generic = ("Options", "com.docker.network.generic")
    entry = ("IPv4Data", 0)
    return {
        "NetworkID": put(("NetworkID",), bad_ids()),
        "Options": put(("Options",), non_maps),
        "generic": put(generic, non_maps),
        "generic key": st.tuples(odd_text, leaves).map(
            lambda kv: ([(generic + (kv[0],), kv[1])], "bad")),
        "mtu": put(generic + ("com.docker.network.driver.mtu",), st.one_of(
            st.integers().filter(lambda n: not 1280 <= n <= 65535).map(str),
            st.integers().filter(lambda n: not 1280 <= n <= 65535),
            st.sampled_from([None, True, [], {}, 1400.5, "1400.0", "1e3", " ", "mtu", DEEP]),
            odd_text.filter(lambda s: not _mtu_like(s)))),
        "enable_ipv6": put(("Options", "com.docker.network.enable_ipv6"), non_bools),
        "internal": put(("Options", "com.docker.network.internal"), non_bools),
        "IPv4Data": put(("IPv4Data",), st.one_of(non_maps.filter(lambda v: v is not None),
                                                 st.just([]), st.lists(non_maps, min_size=1,
                                                                       max_size=2))),
        "two pools": st.just(([(("IPv4Data",), [
            {"AddressSpace": "CiliumpyLocal", "Pool": SUBNET},
            {"AddressSpace": "CiliumpyLocal", "Pool": "10.231.8.0/24"}])], "bad")),
        "AddressSpace": put(entry + ("AddressSpace",), st.one_of(
            missing(), non_strings, odd_text.filter(
                lambda s: s not in ("CiliumpyLocal", "CiliumpyGlobal")))),
        "Pool": put(entry + ("Pool",), st.one_of(missing(), non_strings, garbage_networks,
                                                 st.sampled_from(["fd00::/64", "::/0"]))),
        "Gateway": put(entry + ("Gateway",), st.one_of(
            non_strings, garbage_ips, st.sampled_from(["10.9.9.9/24", "fd00::1/64"]))),
        "IPv6Data": put(("IPv6Data",), st.one_of(  # not [] nor null: those are valid
            non_maps.filter(lambda v: v is not None and v != []),
            st.lists(non_maps, min_size=1, max_size=2),
            st.just([{"AddressSpace": "CiliumpyLocal", "Pool": "10.231.9.0/24"}]))),
    }


def create_endpoint_base(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": "e" * 64,
            "Interface": {"Address": "10.231.7.200/32", "AddressIPv6": "",
                          "MacAddress": "02:42:0a:e7:07:c8"},
            "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                        MAC_OPT: "AkIK5wfI"}}


def create_endpoint_breakers(w: World) -> dict[str, Breaker]:
    iface = ("Interface",)
    return {
        **id_breakers(w, "NetworkID"),
        "EndpointID": put(("EndpointID",), bad_ids()),
        "Interface": put(iface, st.one_of(st.none(), st.just(DROP), non_maps)),
        "Address": put(iface + ("Address",), st.one_of(
            missing(), non_strings, garbage_ips,
            st.sampled_from(["10.9.9.9/32", "fd00::5/128", "10.231.8.1/32"]))),
        "AddressIPv6": put(iface + ("AddressIPv6",), st.one_of(
            non_strings, garbage_ips, st.sampled_from(["fd00::5/128", "10.231.7.9/32"]))),
        "MacAddress": put(iface + ("MacAddress",), st.one_of(
            non_strings, odd_text.filter(lambda s: s != ""),
            st.sampled_from(["02:42", "zz:zz:zz:zz:zz:zz", "02:42:0a:e7:07:c8:00", "0242.0ae7"]))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def join_base(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": w.endpoint_id,
            "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": None}


def endpoint_pair(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": w.endpoint_id}


def request_pool_base(w: World) -> dict:
    # the world holds this pool: even unbroken, the request is refused (overlap)
    return {"AddressSpace": "CiliumpyLocal", "Pool": SUBNET, "SubPool": "", "Options": None,
            "V6": False}


def request_pool_breakers(w: World) -> dict[str, Breaker]:
    return {
        "AddressSpace": put(("AddressSpace",), st.one_of(
            non_strings, odd_text.filter(lambda s: s not in ("", "CiliumpyLocal",
                                                             "CiliumpyGlobal")))),
        # never "" or missing: that is a request for a fresh default pool
        "Pool": put(("Pool",), st.one_of(non_strings, garbage_networks, st.sampled_from(
            ["fd00::/64", "10.231.7.0/31", "10.231.7.1/32", "10.231.0.0/16"]))),
        "no Pool but SubPool": st.just(([(("Pool",), ""), (("SubPool",), "10.77.0.0/24")],
                                        "bad")),
        "SubPool": put(("SubPool",), st.one_of(non_strings, garbage_networks, st.sampled_from(
            ["10.9.0.0/24", "fd00::/64", "10.231.7.0/25"]))),
        "V6": put(("V6",), st.one_of(non_bools, st.just(True))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def request_address_base(w: World) -> dict:
    return {"PoolID": w.pool_id, "Address": "", "Options": {MAC_OPT: "02:42:0a:e7:07:c9"}}


def request_address_breakers(w: World) -> dict[str, Breaker]:
    return {
        "PoolID": put(("PoolID",), st.one_of(
            missing(), non_strings, odd_text, st.just("ciliumpy:10.77.0.0/16")).filter(
            lambda s: s != w.pool_id)),
        # taken (gateway, the container), reserved, outside the pool, or not an address
        "Address": put(("Address",), st.one_of(non_strings, garbage_ips, st.sampled_from(
            [w.gateway, w.address, w.address + "/24", "10.231.7.0", "10.231.7.255",
             "10.9.9.9", "fd00::9"]))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def release_address_base(w: World) -> dict:
    return {"PoolID": w.pool_id, "Address": w.address}


def release_address_breakers(w: World) -> dict[str, Breaker]:
    return {
        "PoolID": unknown_pool_id(w),
        "Address": st.one_of(
            put(("Address",), st.one_of(missing(), non_strings, garbage_ips)),
            put(("Address",), st.sampled_from(["10.231.7.250", "10.9.9.9", "fd00::9"]),
                "unknown:Address")),
    }


def unknown_pool_id(w: World) -> Breaker:
    """Releases: no PoolID is an error; a string naming no pool of ours is success."""
    return st.one_of(put(("PoolID",), st.one_of(missing(), non_strings)),
                     put(("PoolID",), odd_text.filter(lambda s: s not in ("", w.pool_id)),
                         "unknown:PoolID"))


def release_expect(tags: set) -> str:
    return "error" if "bad" in tags else "any"


def stateless(base: Callable[[World], dict], *fields: str) -> Method:
    """Acknowledged calls (swarm, discovery, external connectivity): may succeed."""
    def breakers(w: World) -> dict[str, Breaker]:
        return {name: put((name,), st.one_of(missing(), non_strings, odd_text))
                for name in fields}
    return Method(base, breakers, lambda tags: "any")


PLUGIN_METHODS: dict[str, Method] = {
    "NetworkDriver.CreateNetwork": Method(create_network_base, create_network_breakers),
    "NetworkDriver.DeleteNetwork": Method(
        lambda w: {"NetworkID": w.network_id}, lambda w: id_breakers(w, "NetworkID"),
        release_expect),
    "NetworkDriver.CreateEndpoint": Method(create_endpoint_base, create_endpoint_breakers),
    "NetworkDriver.Join": Method(join_base, lambda w: {
        **id_breakers(w, "NetworkID", "EndpointID"),
        "SandboxKey": put(("SandboxKey",), non_strings),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None))}),
    "NetworkDriver.Leave": Method(endpoint_pair, lambda w: id_breakers(
        w, "NetworkID", "EndpointID"), endpoint_expect),
    "NetworkDriver.DeleteEndpoint": Method(endpoint_pair, lambda w: id_breakers(
        w, "NetworkID", "EndpointID"), endpoint_expect),
    "NetworkDriver.EndpointOperInfo": stateless(endpoint_pair, "NetworkID", "EndpointID"),
    "NetworkDriver.AllocateNetwork": stateless(
        lambda w: {"NetworkID": "a" * 64, "IPv4Data": [], "IPv6Data": [], "Options": {}},
        "NetworkID", "IPv4Data", "Options"),
    "NetworkDriver.FreeNetwork": stateless(lambda w: {"NetworkID": "a" * 64}, "NetworkID"),
    "NetworkDriver.DiscoverNew": stateless(
        lambda w: {"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9"}},
        "DiscoveryType", "DiscoveryData"),
    "NetworkDriver.DiscoverDelete": stateless(
        lambda w: {"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9"}},
        "DiscoveryType", "DiscoveryData"),
    "NetworkDriver.ProgramExternalConnectivity": stateless(
        lambda w: {**endpoint_pair(w), "Options": None}, "NetworkID", "EndpointID", "Options"),
    "NetworkDriver.RevokeExternalConnectivity": stateless(
        endpoint_pair, "NetworkID", "EndpointID"),
    "IpamDriver.RequestPool": Method(request_pool_base, request_pool_breakers),
    "IpamDriver.ReleasePool": Method(lambda w: {"PoolID": w.pool_id},
                                     lambda w: {"PoolID": unknown_pool_id(w)}, release_expect),
    "IpamDriver.RequestAddress": Method(request_address_base, request_address_breakers),
    "IpamDriver.ReleaseAddress": Method(release_address_base, release_address_breakers,
                                        release_expect),
}

STATIC_METHODS = {
    "Plugin.Activate": {"Implements": ["NetworkDriver", "IpamDriver"]},
    "NetworkDriver.GetCapabilities": {"Scope": "local", "ConnectivityScope": "global"},
    "IpamDriver.GetCapabilities": {"RequiresMACAddress": True, "RequiresRequestReplay": False},
    "IpamDriver.GetDefaultAddressSpaces": {"LocalDefaultAddressSpace": "CiliumpyLocal",
                                           "GlobalDefaultAddressSpace": "CiliumpyGlobal"},
}


@pytest.mark.parametrize("method", list(PLUGIN_METHODS))
@FUZZ
@given(data=st.data())
def test_plugin_mutated_bodies(agent, world, method, data):
    spec = PLUGIN_METHODS[method]
    body, tags = data.draw(mutated(spec.base(world), spec.breakers(world)), label="body")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, encode(body))
    check_plugin(answer, f"{method} {show(body)}", spec.expect(tags))


@pytest.mark.parametrize("method", list(PLUGIN_METHODS))
@FUZZ
@given(data=st.data())
def test_plugin_raw_bodies(agent, world, method, data):
    raw = data.draw(raw_bodies(PLUGIN_METHODS[method].base(world)), label="raw")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, raw)
    check_plugin(answer, f"{method} {show(raw)}", "error")


@pytest.mark.parametrize("method", list(STATIC_METHODS))
@FUZZ
@given(data=st.data())
def test_static_methods_ignore_any_body(agent, world, method, data):
    """Registration calls never fail (Docker registers a driver once per lifetime)."""
    raw = data.draw(st.one_of(raw_bodies({"a": 1}), any_json.map(encode)), label="raw")
    answer = http_call(agent.plugin_socket, "POST", "/" + method, raw)
    check_plugin(answer, f"{method} {show(raw)}", "ok")
    assert answer.json() == STATIC_METHODS[method]


# ---- agent API routes ------------------------------------------------------------------
READ_ROUTES = ["/v1/healthz", "/v1/status", "/v1/networks", "/v1/endpoints", "/v1/ipam",
               "/v1/identities", "/v1/nodes", "/v1/bpf/endpoints", "/v1/bpf/ipcache",
               "/v1/bpf/ct", "/v1/bpf/metrics", "/metrics", "/v1/policy",
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
    "/v1/policy/trace": {"POST"},
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
