"""The real proxy process between real HTTP/1.1 clients (curl, raw sockets,
http.client) and a recording backend, on loopback only."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.integration.test_proxy_support import (
    Backend,
    Events,
    Proxy,
    make_state,
    write_state,
)

CURL = shutil.which("curl")
SEED1 = [{"method": "GET", "path": "/public/.*"}, {"method": "POST", "path": "/upload/.*"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy-h1")
    backend = Backend()
    events = Events(tmp / "events.sock")
    proxy = Proxy(tmp, backend.port)
    try:
        yield backend, proxy, events
    finally:
        proxy.stop()
        events.close()
        backend.close()


@pytest.fixture
def seed1(env):
    backend, proxy, events = env
    write_state(proxy.state, make_state(backend.port, SEED1))
    backend.seen.clear()
    events.items.clear()
    return env


def curl(*args: str) -> str:
    assert CURL, "curl is required (apt-get install curl)"
    return subprocess.run([CURL, "-s", *args], check=True, capture_output=True,
                          text=True, timeout=20).stdout


def raw_exchange(port: int, payload: bytes, count: int) -> list[tuple[int, bytes]]:
    """Send raw bytes, read ``count`` responses in order from the same connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        f = sock.makefile("rb")

        class _File:  # HTTPResponse closes its file after each response: keep it open
            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(f, name)

            def close(self) -> None:
                pass

        class _Sock:
            def makefile(self, *a, **k):  # noqa: ANN002, ANN003
                return _File()

        out = []
        for _ in range(count):
            resp = http.client.HTTPResponse(_Sock())  # type: ignore[arg-type]
            resp.begin()
            out.append((resp.status, resp.read()))
        return out


def test_seed1_curl_keepalive(seed1):
    backend, proxy, events = seed1
    out = curl("-w", "%{http_code} %{num_connects}\\n", "-o", "/dev/null",
               proxy.url("/public/a"), "-o", "/dev/null", proxy.url("/private"),
               "-o", "/dev/null", proxy.url("/public/b/c?x=1"))
    assert out.split("\n")[:3] == ["200 1", "403 0", "200 0"]  # one connection, reused
    assert backend.paths() == ["/public/a", "/public/b/c?x=1"]
    denied = events.wait(lambda e: e["verdict"] == "DENIED")
    assert denied["http"] == {**denied["http"], "method": "GET", "path": "/private",
                              "status": 403}
    assert denied["src"]["identity"] == 256 and denied["src"]["name"] == "frontend-1"
    assert denied["dst"]["port"] == backend.port and denied["direction"] == "ingress"
    assert denied["protocol"] == "http"
    ok = events.wait(lambda e: e["verdict"] == "FORWARDED")
    assert ok["http"]["status"] == 200 and ok["http"]["latency_ms"] >= 0


def test_seed1_denied_response_exact(seed1):
    backend, proxy, _ = seed1
    (status, body), = raw_exchange(
        proxy.port, b"POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 1)
    assert (status, body) == (403, b"Access denied")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"Access denied"):
            data += sock.recv(4096)
    head = data.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 403 forbidden\r\n")
    assert b"content-length: 13" in head and b"content-type: text/plain" in head
    assert backend.seen == []


def test_public_exact_does_not_match_subpath(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, [{"path": "/public"}]))
    backend.seen.clear()
    out = curl("-w", "%{http_code}\\n", "-o", "/dev/null", proxy.url("/public"),
               "-o", "/dev/null", proxy.url("/public/a"))
    assert out.split() == ["200", "403"]
    assert backend.paths() == ["/public"]


def test_pipelining_in_order(seed1):
    backend, proxy, _ = seed1
    reqs = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                    for p in ("/public/1", "/private", "/public/2", "/nope"))
    got = raw_exchange(proxy.port, reqs, 4)
    assert [s for s, _ in got] == [200, 403, 200, 403]
    assert json.loads(got[0][1])["path"] == "/public/1"
    assert json.loads(got[2][1])["path"] == "/public/2"
    assert backend.paths() == ["/public/1", "/public/2"]


def test_chunked_upload_streamed(seed1, tmp_path):
    backend, proxy, _ = seed1
    payload = bytes(range(256)) * 20000  # ~5 MB
    src = tmp_path / "blob"
    src.write_bytes(payload)
    out = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{src}",
               proxy.url("/upload/blob"))
    reply = json.loads(out)
    assert reply["len"] == len(payload)
    assert reply["sha"] == hashlib.sha256(payload).hexdigest()
    # an Expect: 100-continue upload with Content-Length
    out = curl("-H", "Expect: 100-continue", "--data-binary", f"@{src}",
               proxy.url("/upload/cl"))
    assert json.loads(out)["len"] == len(payload)


def test_large_response_and_head(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, [{"method": "GET|HEAD",
                                                        "path": "/public/.*"}]))
    size = 20 * 1024 * 1024
    out = curl("-o", "/dev/null", "-w", "%{http_code} %{size_download}",
               proxy.url(f"/public/big?n={size}"))
    assert out == f"200 {size}"
    out = curl("-I", "-w", "%{http_code}", "-o", "/dev/null", proxy.url("/public/h"),
               "-o", "/dev/null", proxy.url("/public/h2"), "-o", "/dev/null", proxy.url("/x"))
    assert out == "200200403"


def test_malformed_request_400(seed1):
    backend, proxy, events = seed1
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /public/a HTTP/1.1\r\nHost: x\r\nBad Header\x01\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert backend.seen == []
    error = events.wait(lambda e: e["verdict"] == "ERROR")
    assert "malformed" in error["reason"]


def test_seed2_header_regex(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, [{"headers": ["X-Token: [0-9]+"]}]))
    backend.seen.clear()
    codes = [curl("-o", "/dev/null", "-w", "%{http_code}", *h, proxy.url("/x"))
             for h in (["-H", "X-Token: 42"], ["-H", "X-Token: abc"], [])]
    assert codes == ["200", "403", "403"]
    assert len(backend.seen) == 1 and backend.seen[0]["headers"]["X-Token"] == "42"


def test_header_matches_actions_applied(env):
    backend, proxy, events = env
    rule = {"headerMatches": [
        {"name": "X-Add", "value": "added", "mismatch": "ADD"},
        {"name": "X-Del", "value": "keep", "mismatch": "DELETE"},
        {"name": "X-Rep", "value": "new", "mismatch": "REPLACE"},
        {"name": "X-Log", "value": "yes", "mismatch": "LOG"}]}
    write_state(proxy.state, make_state(backend.port, [rule]))
    backend.seen.clear()
    events.items.clear()
    out = curl("-H", "X-Del: other", "-H", "X-Rep: old", proxy.url("/h"))
    headers = {k.lower(): v for k, v in json.loads(out)["headers"].items()}
    assert headers["x-add"] == "added" and headers["x-rep"] == "new" and "x-del" not in headers
    event = events.wait(lambda e: e["verdict"] == "FORWARDED")
    assert "x-log" in event["reason"]


def test_fail_closed(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port + 1, None))  # entry for another port
    backend.seen.clear()
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/public/a")) == "403"
    write_state(proxy.state, make_state(backend.port, None, remotes=[999]))  # other peer
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/public/a")) == "403"
    write_state(proxy.state, None)  # no state file at all
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/public/a")) == "403"
    proxy.state.write_text("{not json")  # unreadable state
    time.sleep(0.25)
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/public/a")) == "403"
    assert backend.seen == []
    write_state(proxy.state, make_state(backend.port, None))  # L4-only allow
    assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/anything")) == "200"


def test_policy_change_applies_to_live_connection(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, SEED1, revision=1))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/public/a")
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read()
    sock = conn.sock
    write_state(proxy.state, make_state(backend.port, [{"path": "/other"}], revision=2))
    conn.request("GET", "/public/a")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (403, b"Access denied")
    conn.request("GET", "/other")
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read()
    assert conn.sock is sock  # same keep-alive connection throughout
    conn.close()


def test_upgrade_only_when_allowed(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, [{"path": "/ws/ok"}]))
    backend.seen.clear()
    upgrade = "GET {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(upgrade.format("/ws/ok").encode() + b"hello")
        data = b""
        while b"HELLO" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101")
        sock.sendall(b"more bytes")
        data = b""
        while b"MORE BYTES" not in data:
            data += sock.recv(4096)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(upgrade.format("/ws/no").encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 403 Forbidden") and data.endswith(b"Access denied")
    assert backend.paths() == ["/ws/ok"]


@pytest.fixture(scope="module")
def short_timeouts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy-timeouts")
    backend = Backend()
    proxy = Proxy(tmp, backend.port, workers=1,
                  extra=["--idle-timeout", "0.6", "--header-timeout", "0.3"])
    write_state(proxy.state, make_state(backend.port, None))
    try:
        yield backend, proxy
    finally:
        proxy.stop()
        backend.close()


def test_header_and_idle_timeouts(short_timeouts):
    _, proxy = short_timeouts
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408") and 0.2 < time.monotonic() - start < 2
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and 0.5 < time.monotonic() - start < 2.5


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_supervisor_restarts_dead_worker(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, None))
    workers = _children(proxy.proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = _children(proxy.proc.pid)
        if len(now) == 2 and workers[0] not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the dead worker was not replaced")
    for _ in range(6):  # both workers (SO_REUSEPORT) answer
        assert curl("-o", "/dev/null", "-w", "%{http_code}", proxy.url("/x")) == "200"


def test_upstream_socket_carries_identity_mark(env):
    backend, proxy, _ = env
    write_state(proxy.state, make_state(backend.port, None))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/mark")
    conn.getresponse().read()
    out = subprocess.run(["ss", "-tnoe", "state", "established", f"dport = :{backend.port}"],
                         capture_output=True, text=True, timeout=5).stdout
    conn.close()
    assert "fwmark:0x100a5" in out  # (identity 256 << 8) | 0xA5


def test_silent_backend_gets_504_after_the_idle_timeout(tmp_path):
    """A backend that accepts and never answers: the client gets 504 once the idle
    timeout passes, not a hang or a bare close."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    proxy = Proxy(tmp_path, silent.getsockname()[1], workers=1,
                  extra=["--idle-timeout", "0.6"])
    try:
        write_state(proxy.state, make_state(silent.getsockname()[1], None))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 504") and 0.5 < time.monotonic() - start < 2.5
    finally:
        proxy.stop()
        silent.close()
