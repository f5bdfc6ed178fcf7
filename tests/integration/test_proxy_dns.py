"""The real proxy process judging DNS queries from real clients (dig, busybox
nslookup) and forwarding the allowed ones to a real resolver (dnsmasq in a namespace
this test creates), over UDP and TCP.

Without the BPF redirect the clients ask the proxy's port on loopback directly, and
``--test-upstream`` names the resolver (the original destination the redirect would
give). What the resolver saw is read from the resolver's own query log."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.integration.test_proxy_support import Events, Proxy, write_state
from tests.support.netns import BUSYBOX
from tests.support.resolver import Resolver

RESOLVER, GATEWAY = "10.253.53.53", "10.253.53.1"
RECORDS = {"allowed.test": "10.99.0.10", "denied.test": "10.99.0.11",
           "a.wild.test": "10.99.0.12", "wild.test": "10.99.0.13"}
RULES = [{"matchName": "allowed.test"}, {"matchPattern": "*.wild.test"}]


@pytest.fixture(scope="module", autouse=True)
def _dig_installed():
    """scripts/setup-host.sh installs dig: without it the test fails, never skips."""
    assert shutil.which("dig"), "dig (bind9-dnsutils) is missing: run scripts/setup-host.sh"


def dns_state(rules: list | None) -> dict:
    return {"revision": 1, "identities": {"127.0.0.1": 256},
            "labels": {"256": ["container:app=client"]}, "names": {"127.0.0.1": "client-1"},
            "l7": [{"endpoint": "127.0.0.1", "direction": "egress", "port": 53,
                    "parser": "dns", "remotes": None, "dns": rules}]}


@pytest.fixture(scope="module")
def resolver():
    server = Resolver(RESOLVER, GATEWAY, RECORDS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, resolver):
    tmp = tmp_path_factory.mktemp("dnsproxy")
    events = Events(tmp / "events.sock")
    # the second --test-upstream (the resolver) overrides the helper's loopback one
    proc = Proxy(tmp, 53, workers=1, extra=["--dns-timeout", "2", "--test-upstream",
                                            f"{RESOLVER}:53"])
    write_state(proc.state, dns_state(RULES))
    yield proc, events
    proc.stop()
    events.close()


def dig(port: int, name: str, *extra: str) -> dict:
    """status and addresses of dig's answer (status None: no answer at all)."""
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "A", "+tries=1",
                          "+time=3", *extra], capture_output=True, text=True, timeout=15)
    status = next((line.split("status: ")[1].split(",")[0] for line in out.stdout.splitlines()
                   if "status: " in line), None)
    answers = [line.split()[-1] for line in out.stdout.split("ANSWER SECTION:")[-1].splitlines()
               if "\tA\t" in line] if "ANSWER SECTION:" in out.stdout else []
    return {"status": status, "answers": answers}


@pytest.mark.parametrize("transport", [[], ["+tcp"]], ids=["udp", "tcp"])
def test_allowed_names_resolve_through_the_resolver(proxy, resolver, transport):
    proc, events = proxy
    for name, address in (("allowed.test", "10.99.0.10"), ("a.wild.test", "10.99.0.12"),
                          ("ALLOWED.test", "10.99.0.10")):
        before = len(resolver.queries())
        assert dig(proc.port, name, *transport) == {"status": "NOERROR", "answers": [address]}
        assert [q.lower() for q in resolver.queries()[before:]] == [name.lower()]
    event = events.wait(lambda e: (e.get("dns") or {}).get("query") == "allowed.test."
                        and e["dns"]["transport"] == ("tcp" if transport else "udp"))
    assert event["verdict"] == "FORWARDED" and event["protocol"] == "dns"
    assert event["dns"]["rcode"] == "NOERROR" and event["dns"]["ips"] == ["10.99.0.10"]
    assert event["dns"]["ttl"] == 30 and event["dns"]["qtype"] == "A"
    assert event["src"]["identity"] == 256 and event["src"]["name"] == "client-1"


@pytest.mark.parametrize("transport", [[], ["+tcp"]], ids=["udp", "tcp"])
def test_denied_names_get_refused_and_never_reach_the_resolver(proxy, resolver, transport):
    proc, events = proxy
    for name in ("denied.test", "wild.test", "x.a.wild.test"):
        assert dig(proc.port, name, *transport) == {"status": "REFUSED", "answers": []}
    assert not {"denied.test", "wild.test", "x.a.wild.test"} & set(resolver.queries())
    event = events.wait(lambda e: (e.get("dns") or {}).get("query") == "denied.test.")
    assert event["verdict"] == "DENIED" and event["dns"]["rcode"] == "REFUSED"
    assert "no DNS rule matches denied.test." in event["reason"]


def test_busybox_nslookup_sees_the_answer_and_the_refusal(proxy):
    proc, _ = proxy
    good = subprocess.run([BUSYBOX, "nslookup", "allowed.test", f"127.0.0.1:{proc.port}"],
                          capture_output=True, text=True, timeout=15)
    assert "10.99.0.10" in good.stdout, good.stdout + good.stderr
    bad = subprocess.run([BUSYBOX, "nslookup", "denied.test", f"127.0.0.1:{proc.port}"],
                         capture_output=True, text=True, timeout=15)
    assert "10.99.0.11" not in bad.stdout
    assert "REFUSED" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def test_without_state_every_query_is_refused(proxy, resolver):
    proc, _ = proxy
    write_state(proc.state, None)
    try:
        before = len(resolver.queries())
        assert dig(proc.port, "allowed.test")["status"] == "REFUSED"
        assert resolver.queries()[before:] == []
    finally:
        write_state(proc.state, dns_state(RULES))
    assert dig(proc.port, "allowed.test")["status"] == "NOERROR"


def test_l3_l4_only_peer_may_ask_every_name(proxy):
    proc, _ = proxy
    write_state(proc.state, dns_state(None))
    try:
        assert dig(proc.port, "denied.test")["answers"] == ["10.99.0.11"]
    finally:
        write_state(proc.state, dns_state(RULES))
    assert dig(proc.port, "denied.test")["status"] == "REFUSED"


def test_a_malformed_query_gets_no_answer_and_an_error_event(proxy):
    proc, events = proxy
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(b"\x12\x34garbage", ("127.0.0.1", proc.port))
        with pytest.raises(TimeoutError):
            sock.recv(512)
    event = events.wait(lambda e: e["protocol"] == "dns" and e["verdict"] == "ERROR")
    assert "malformed DNS query" in event["reason"]
