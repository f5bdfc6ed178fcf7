"""The BPF datapath on the running kernel, without the agent: programs compiled once,
attached by tc to veths of real network namespaces, policy entries written through
the datapath API, real packets."""

from __future__ import annotations

import ipaddress
import os
import shutil
import time

import pytest

from datapath import loader
from datapath.datapath import Datapath, PolicyEntry
from tests.support.agent import new_pin_dir
from tests.support.netns import NetnsEndpoint, echo_server, pings, tcp_ok

CLIENT_ID, SERVER_ID, OTHER_ID = 1000, 1001, 1002


@pytest.fixture(scope="module")
def pin_dir():
    path = new_pin_dir()
    os.makedirs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def datapath(pin_dir):
    events = []
    dp = Datapath(pin_dir)
    dp.start(on_event=events.append)
    dp.events = events
    yield dp
    dp.stop()


@pytest.fixture(scope="module")
def topology(datapath):
    eps = {name: NetnsEndpoint.create(f"10.91.0.{i}", "10.91.0.1")
           for i, name in ((2, "client"), (3, "server"), (4, "other"))}
    servers = [echo_server(eps["server"], port) for port in (8080, 8081)]
    time.sleep(0.3)
    yield eps
    for proc in servers:
        proc.kill()
        proc.wait()
    for ep in eps.values():
        ep.delete()


def program(datapath, ep, identity, ingress=False, egress=False):
    datapath.attach(ep.ifindex)
    datapath.set_endpoint(ep.ifindex, identity, ingress, egress, ep.mac,
                          [ipaddress.ip_address(ep.ip)])


def test_compiles_once_then_reuses_pins(datapath, pin_dir):
    assert datapath.loaded.compiled is True
    again = loader.load(pin_dir)
    assert again.compiled is False and again.source_hash == datapath.loaded.source_hash


def test_identity_and_port_policy_with_replies(datapath, topology):
    client, server, other = topology["client"], topology["server"], topology["other"]
    program(datapath, client, CLIENT_ID)
    program(datapath, other, OTHER_ID)
    program(datapath, server, SERVER_ID, ingress=True)
    entry = PolicyEntry(server.ifindex, "ingress", CLIENT_ID, 6, 8080)
    datapath.add_policy(entry)

    assert tcp_ok(client, server.ip, 8080), "allowed identity and port"
    assert not tcp_ok(client, server.ip, 8081), "same identity, other port"
    assert not tcp_ok(other, server.ip, 8080), "other identity"
    assert not pings(client, server.ip), "an L4 rule does not allow ICMP"
    assert pings(server, client.ip), "the server may start connections (egress open)"

    drops = [e for e in datapath.events if e["type"] == "drop"]
    assert any(e["src_identity"] == OTHER_ID and e["dst_port"] == 8080
               and e["reason"] == "policy-denied" for e in drops)
    verdicts = [e for e in datapath.events if e["type"] == "policy-verdict"
                and e["verdict"] == "allowed"]
    assert any(e["src_identity"] == CLIENT_ID and e["dst_port"] == 8080 for e in verdicts)
    flows = datapath.conntrack()
    assert any(f["dport"] == 8080 and "ingress-ok" in f["flags"] for f in flows)
    datapath.remove_policy(entry)
    assert not tcp_ok(client, server.ip, 8080), "removing the entry closes new connections"


def test_l3_port_range_deny_and_wildcards(datapath, topology):
    client, server, other = topology["client"], topology["server"], topology["other"]
    program(datapath, server, SERVER_ID, ingress=True)
    l3 = PolicyEntry(server.ifindex, "ingress", CLIENT_ID, 0)  # L3-only: every port, ICMP
    datapath.add_policy(l3)
    assert tcp_ok(client, server.ip, 8081) and pings(client, server.ip)
    deny = PolicyEntry(server.ifindex, "ingress", 0, 6, 8000, 8080, deny=True)  # any identity
    datapath.add_policy(deny)
    assert not tcp_ok(client, server.ip, 8080), "deny wins over a broader allow"
    assert tcp_ok(client, server.ip, 8081), "outside the denied range"
    datapath.remove_policy(deny)
    l4 = PolicyEntry(server.ifindex, "ingress", 0, 6, 8081, 8090)  # L4-only: any identity
    datapath.add_policy(l4)
    assert tcp_ok(other, server.ip, 8081) and not tcp_ok(other, server.ip, 8080)
    for entry in (l3, l4):
        datapath.remove_policy(entry)


def test_egress_policy_and_established_flows_survive_changes(datapath, topology):
    client, server = topology["client"], topology["server"]
    program(datapath, server, SERVER_ID)
    program(datapath, client, CLIENT_ID, egress=True)
    allow = PolicyEntry(client.ifindex, "egress", SERVER_ID, 6, 8080)
    datapath.add_policy(allow)
    long_lived = client.popen("/bin/busybox", "sh", "-c",
                              "(echo first; sleep 2; echo second) | /bin/busybox nc -w 4 "
                              f"{server.ip} 8080")
    time.sleep(0.5)
    datapath.remove_policy(allow)  # policy recomputed while the connection is open
    output = long_lived.communicate(timeout=15)[0].decode()
    assert "first" in output and "second" in output
    assert not tcp_ok(client, server.ip, 8080), "new connections follow the new policy"
    program(datapath, client, CLIENT_ID)


def test_metrics_count_forwarded_and_dropped(datapath, topology):
    metrics = {(m["reason"], m["direction"]): m for m in datapath.metrics()}
    assert metrics[("forwarded", "ingress")]["packets"] > 0
    assert metrics[("policy-denied", "ingress")]["packets"] > 0
    assert metrics[("forwarded", "egress")]["bytes"] > 0


def test_a_removed_endpoints_connections_do_not_pass_to_the_next_owner(datapath, topology):
    """The next endpoint at a removed endpoint's address must not inherit its conntrack
    entries (a flow its ingress accepted would reach the newcomer unjudged): removal
    deletes every entry from or to the address, and only those (issue 17)."""
    client, server = topology["client"], topology["server"]
    program(datapath, client, CLIENT_ID)
    program(datapath, server, SERVER_ID)
    leaving = NetnsEndpoint.create("10.91.0.5", "10.91.0.1")
    try:
        program(datapath, leaving, OTHER_ID)  # selected by nothing: accepts the client
        assert pings(client, leaving.ip) and pings(leaving, client.ip)
        assert tcp_ok(client, server.ip, 8080)
        address = ipaddress.ip_address(leaving.ip)

        def held() -> list[dict]:
            return [f for f in datapath.conntrack() if address in (
                ipaddress.ip_address(f["src"]), ipaddress.ip_address(f["dst"]))]

        assert any("ingress-ok" in f["flags"] for f in held())  # client -> leaving
        assert any(ipaddress.ip_address(f["src"]) == address for f in held())  # and back
        def flows() -> set[tuple]:
            return {(f["src"], f["dst"], f["sport"], f["dport"], f["proto"])
                    for f in datapath.conntrack()}

        others = flows() - {(f["src"], f["dst"], f["sport"], f["dport"], f["proto"])
                            for f in held()}
        assert others  # the client's connection to the server at least
        ifindex = leaving.ifindex
        leaving.delete()  # its link first, as the driver does
        datapath.remove_endpoint(ifindex, [address])
        assert held() == []
        assert others <= flows()
    finally:
        leaving.delete()
