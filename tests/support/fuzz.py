"""Shared parts of the fuzz tests (tests/e2e/fuzz/): the wire (raw HTTP on the agent's
unix sockets), the checks every answer must pass, hypothesis strategies for broken
values and bodies, the ``World`` (a real Docker network and container on ciliumpy, so
mutated bodies name real objects) and the snapshot of the agent's observable state
that a bad request must leave unchanged. What is fuzzed and why:
tests/e2e/fuzz/test_plugin.py."""

from __future__ import annotations

import copy
import http.client
import ipaddress
import json
import os
import re
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
                   "/v1/policy/revision", "/v1/bpf/bandwidth", "/v1/services", "/v1/ports")


def snapshot(agent) -> dict:
    """The agent's state as its own API shows it, plus the host's endpoint links."""
    state = {route: agent.api(route) for route in SNAPSHOT_ROUTES}
    state["links"] = sorted(n for n in os.listdir("/sys/class/net")
                            if n.startswith(("lxc", "tmp")))
    return state


def assert_same(before: dict, after: dict, what: str) -> None:
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, f"{what} changed the agent's state: {show(changed)}"
