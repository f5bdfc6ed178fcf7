"""The real proxy process judging TLS server names (serverNames) between real TLS
clients (curl, openssl s_client, Python's ssl) and a real TLS server that logs every
TCP connection it accepts, on loopback only. A refused connection must be reset and
the server must never have accepted a connection for it."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_proxy_support import (
    REPO,
    Events,
    Proxy,
    free_port,
    wait_port,
    write_state,
)
from tests.unit.test_tls_hello import real_hello

CURL, OPENSSL = shutil.which("curl"), shutil.which("openssl")
NAMES = [{"serverName": "allowed.example"}, {"serverName": "*.wild.example"}]


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=allowed.example",
                    "-addext", "subjectAltName=DNS:allowed.example,DNS:*.wild.example,"
                    "DNS:other.example"], check=True, capture_output=True)
    return cert, key


def tls_state(port: int, names: list | None, remotes: list | None = None) -> dict:
    return {"revision": 1, "identities": {"127.0.0.1": 256},
            "labels": {"256": ["container:role=client"]}, "names": {},
            "l7": [{"endpoint": "127.0.0.1", "direction": "egress", "port": port,
                    "parser": "tls", "remotes": remotes, "tls": names}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    assert CURL and OPENSSL, "curl and openssl are required"
    tmp = tmp_path_factory.mktemp("proxy-tls")
    cert, key = make_cert(tmp)
    log, port = tmp / "server.log", free_port()
    log.touch()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.l7apps", "tls-server",
                               "--port", str(port), "--log", str(log), "--cert", str(cert),
                               "--key", str(key)], cwd=REPO)
    events = Events(tmp / "events.sock")
    proxy = Proxy(tmp, port, extra=["--header-timeout", "2"])
    try:
        wait_port(port)
        write_state(proxy.state, tls_state(port, NAMES))
        log.write_text("")  # wait_port's probe connection
        yield {"proxy": proxy, "events": events, "log": log, "port": port}
    finally:
        proxy.stop()
        events.close()
        server.terminate()
        server.wait(5)


@pytest.fixture
def world(env):
    write_state(env["proxy"].state, tls_state(env["port"], NAMES), settle=0.15)
    env["log"].write_text("")
    env["events"].items.clear()
    return env


def accepts(env) -> int:
    return sum(line.startswith("accept ") for line in env["log"].read_text().splitlines())


def curl_https(env, name: str, path: str = "/") -> subprocess.CompletedProcess:
    port = env["proxy"].port
    return subprocess.run([CURL, "-sSk", "-m", "10", "--resolve", f"{name}:{port}:127.0.0.1",
                           f"https://{name}:{port}{path}"], capture_output=True, text=True,
                          timeout=20)


def test_allowed_name_completes_the_handshake_and_gets_the_answer(world):
    out = curl_https(world, "allowed.example", "/hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok tls allowed.example /hello\n"
    assert world["log"].read_text().splitlines() == [
        "accept 127.0.0.1", "sni allowed.example", "GET /hello"]
    event = world["events"].wait(lambda e: e.get("protocol") == "tls")
    assert event["verdict"] == "FORWARDED" and event["tls"] == {"sni": "allowed.example"}
    assert event["direction"] == "egress" and event["src"]["identity"] == 256


def test_wildcard_and_case(world):
    out = curl_https(world, "API.Wild.Example", "/w")
    assert out.returncode == 0, out.stderr
    assert out.stdout.lower() == "ok tls api.wild.example /w\n"
    assert curl_https(world, "a.b.wild.example").returncode != 0  # one label only


def test_other_name_is_reset_and_never_reaches_the_server(world):
    out = curl_https(world, "other.example")
    assert out.returncode == 35, out  # curl: SSL connect error
    assert "reset by peer" in out.stderr
    event = world["events"].wait(lambda e: e.get("protocol") == "tls")
    assert event["verdict"] == "DENIED" and event["tls"] == {"sni": "other.example"}
    assert "'other.example' is not in serverNames" in event["reason"]
    time.sleep(0.2)
    assert accepts(world) == 0


def test_openssl_s_client_both_ways(world):
    port = world["proxy"].port
    ok = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
                         "-servername", "allowed.example", "-quiet"],
                        input="GET /s HTTP/1.0\r\n\r\n", capture_output=True, text=True,
                        timeout=20)
    assert "ok tls allowed.example /s" in ok.stdout, ok.stderr
    denied = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
                             "-servername", "evil.example"], input="", capture_output=True,
                            text=True, timeout=20)
    assert "errno=104" in denied.stderr or "reset" in denied.stderr.lower(), denied.stderr
    assert "no peer certificate available" in denied.stdout
    assert accepts(world) == 1


def reset_seen(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the proxy reset the connection (a clean close or bytes: False)."""
    sock.settimeout(timeout)
    try:
        sock.recv(100)
    except ConnectionResetError:
        return True
    return False


def test_plain_text_is_refused(world):
    with socket.create_connection(("127.0.0.1", world["proxy"].port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: allowed.example\r\n\r\n")
        assert reset_seen(sock)
    event = world["events"].wait(lambda e: e.get("protocol") == "tls")
    assert event["verdict"] == "DENIED" and event["tls"] == {"sni": None}
    assert "not a TLS handshake: the first byte is 0x47" in event["reason"]
    assert CURL and subprocess.run([CURL, "-sS", "-m", "5", "http://127.0.0.1:"
                                    f"{world['proxy'].port}/"], capture_output=True,
                                   text=True).returncode == 56  # recv failure: reset
    assert accepts(world) == 0


def test_no_sni_is_refused(world):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", world["proxy"].port)) as raw, \
            pytest.raises((ConnectionResetError, ssl.SSLError)):
        context.wrap_socket(raw, server_hostname=None)  # Python sends no SNI then
    event = world["events"].wait(lambda e: e.get("protocol") == "tls")
    assert "no SNI" in event["reason"] and event["verdict"] == "DENIED"
    assert accepts(world) == 0


def test_hello_split_into_tiny_tcp_segments_and_records(world):
    """One byte per TCP segment (Nagle off, a pause between): the proxy waits for the
    whole ClientHello, then the real handshake completes over the same connection."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="allowed.example")
    with socket.create_connection(("127.0.0.1", world["proxy"].port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10)
        first = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outgoing.read()
                if first:  # the ClientHello, byte by byte
                    for i in range(len(data)):
                        sock.sendall(data[i:i + 1])
                        if i % 50 == 0:
                            time.sleep(0.005)
                    first = False
                elif data:
                    sock.sendall(data)
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        tls.write(b"GET /split HTTP/1.0\r\n\r\n")
        sock.sendall(outgoing.read())
        answer = b""
        while b"ok tls" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            incoming.write(chunk)
            while True:  # every record the chunk completed
                try:
                    answer += tls.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
    assert b"ok tls allowed.example /split" in answer


def test_bogus_length_is_refused_at_once_and_a_stall_times_out(world):
    with socket.create_connection(("127.0.0.1", world["proxy"].port)) as sock:
        started = time.monotonic()
        sock.sendall(b"\x16\x03\x01\xff\xff")
        assert reset_seen(sock)
        assert time.monotonic() - started < 1.0  # judged from the header, not waited out
    with socket.create_connection(("127.0.0.1", world["proxy"].port)) as sock:
        sock.sendall(real_hello("allowed.example")[:100])  # then silence
        started = time.monotonic()
        assert reset_seen(sock)
        assert 1.5 < time.monotonic() - started < 5  # --header-timeout 2
    bogus = world["events"].wait(lambda e: "bogus TLS record length 65535" in e["reason"])
    stall = world["events"].wait(lambda e: "no complete ClientHello within 2 s" in e["reason"])
    assert bogus["verdict"] == "DENIED" and stall["verdict"] == "ERROR"
    assert accepts(world) == 0


def test_a_peer_allowed_at_l4_passes_unread_and_state_changes_apply(world):
    proxy, port = world["proxy"], world["port"]
    write_state(proxy.state, tls_state(port, None))  # no serverNames for this peer
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"not tls at all\r\n")
        time.sleep(0.3)
    assert accepts(world) == 1  # spliced through, the server saw it
    assert curl_https(world, "other.example").returncode == 0
    write_state(proxy.state, tls_state(port, NAMES))
    assert curl_https(world, "other.example").returncode == 35
    write_state(proxy.state, None)  # no state: fail closed
    assert curl_https(world, "allowed.example").returncode != 0
    assert accepts(world) == 2


def test_server_closing_first_and_large_transfers_pass_unchanged(world):
    out = subprocess.run([CURL, "-sSk", "-m", "10", "--resolve",
                          f"allowed.example:{world['proxy'].port}:127.0.0.1",
                          *[f"https://allowed.example:{world['proxy'].port}/{i}"
                            for i in range(20)]], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok tls allowed.example") == 20
