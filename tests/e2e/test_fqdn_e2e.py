"""DNS-aware egress end to end: a container on a ciliumpy network asks a real resolver
(dnsmasq in a namespace this test creates) through the datapath's redirect to the DNS
proxy, with real clients (busybox nslookup in the container, dig in its namespace);
``toFQDNs`` then allows TCP to exactly the addresses the allowed answers gave, for
their TTL (the session agent runs with ``--tofqdns-min-ttl 0``; dnsmasq answers with
TTL 3 s). What the resolver received is read from its own query log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.e2e.test_policy_e2e import apply, clear
from tests.support.agent import CLI
from tests.support.docker import Docker
from tests.support.netns import NetnsEndpoint, echo_server, sh
from tests.support.resolver import Resolver

RESOLVER, RESOLVER_GW = "10.253.54.53", "10.253.54.1"
ALLOWED_IP, OTHER_IP, TARGET_GW = "10.253.55.10", "10.253.55.11", "10.253.55.1"
PEER_IP = "10.92.0.50"  # a container of the network that a DNS answer names
TTL = 3
PORT = 8080

POLICY = f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: fqdn-client}}
spec:
  endpointSelector: {{matchLabels: {{app: fqdn-client}}}}
  egress:
  - toCIDR: [{RESOLVER}/32]
    toPorts:
    - ports: [{{port: "53", protocol: ANY}}]
      rules:
        dns: [{{matchName: allowed.test}}, {{matchPattern: "*.wild.test"}},
              {{matchName: inside.test}}]
  - toFQDNs: [{{matchName: allowed.test}}, {{matchPattern: "*.wild.test"}},
              {{matchName: inside.test}}]
    toPorts: [{{ports: [{{port: "{PORT}", protocol: TCP}}]}}]
"""


@pytest.fixture(scope="module")
def fqdn(agent, docker_ready):
    resolver = Resolver(RESOLVER, RESOLVER_GW, {"allowed.test": ALLOWED_IP,
                                                 "other.test": OTHER_IP,
                                                 "a.wild.test": OTHER_IP,
                                                 "inside.test": PEER_IP}, ttl=TTL)
    target = NetnsEndpoint.create(ALLOWED_IP, TARGET_GW)
    target.run("ip", "addr", "add", f"{OTHER_IP}/32", "dev", "eth0", check=True)
    sh("ip", "route", "replace", f"{OTHER_IP}/32", "dev", target.host_if)
    server = echo_server(target, PORT)
    client = Docker()
    net = "cpy-fqdn-" + uuid.uuid4().hex[:6]
    client.network_create(net, "--subnet", "10.92.0.0/16")
    name = f"cpy-fqdn-{uuid.uuid4().hex[:4]}"
    client.run(net, "-l", "app=fqdn-client", name=name)
    client.run(net, "-l", "app=fqdn-peer", "--ip", PEER_IP)
    deadline = time.time() + 30
    while time.time() < deadline:
        endpoints = [e for e in agent.api("/v1/endpoints") if e.get("network_name") == net]
        if endpoints and all(e["identity"] >= 256 for e in endpoints):
            break
        time.sleep(0.2)
    pid = client.inspect(name)["State"]["Pid"]
    yield {"docker": client, "name": name, "pid": pid, "resolver": resolver}
    clear(agent)
    client.cleanup()
    server.terminate()
    server.wait(5)
    target.delete()
    resolver.stop()


def tcp_ok(world: dict, ip: str) -> bool:
    """A TCP connection and a line of data through busybox nc in the container."""
    proc = world["docker"].exec(world["name"], "sh", "-c", f"echo ping | nc -w 2 {ip} {PORT}",
                                check=False, timeout=15)
    return "ping" in proc.stdout


def dig(world: dict, name: str, *extra: str) -> tuple[str | None, list[str]]:
    """(status, addresses) of dig in the container's network namespace."""
    out = subprocess.run(["nsenter", "-t", str(world["pid"]), "-n", "dig", f"@{RESOLVER}",
                          name, "A", "+tries=1", "+time=3", *extra],
                         capture_output=True, text=True, timeout=15).stdout
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), None)
    answers = [line.split()[-1] for line in out.split("ANSWER SECTION:")[-1].splitlines()
               if "\tA\t" in line] if "ANSWER SECTION:" in out else []
    return status, answers


def nslookup(world: dict, name: str) -> str:
    proc = world["docker"].exec(world["name"], "nslookup", name, RESOLVER, check=False,
                                timeout=20)
    return proc.stdout + proc.stderr


def l7_history(agent) -> list[dict]:
    proc = subprocess.run(["timeout", "3", *CLI, "monitor", "--type", "l7", "--history",
                           "-o", "json"], capture_output=True, text=True, timeout=15,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def test_to_fqdns_allows_what_the_allowed_answer_resolved_until_its_ttl(agent, fqdn, tmp_path):
    apply(agent, tmp_path, POLICY)
    resolver = fqdn["resolver"]
    # nothing resolved yet: the target is just another address
    assert not tcp_ok(fqdn, ALLOWED_IP)
    # a denied name: REFUSED by the proxy, never asked of the resolver (busybox and dig)
    out = nslookup(fqdn, "other.test")
    assert "REFUSED" in out and OTHER_IP not in out, out
    assert dig(fqdn, "other.test") == ("REFUSED", [])
    assert "other.test" not in resolver.queries()
    # the allowed name resolves through the resolver ...
    assert dig(fqdn, "allowed.test") == ("NOERROR", [ALLOWED_IP])
    assert "allowed.test" in resolver.queries()
    # ... and its address is now allowed on the toFQDNs port; the neighbour is not
    cache = json.loads(subprocess.run(
        [*CLI, "fqdn", "cache", "-o", "json"], capture_output=True, text=True, timeout=30,
        env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)).stdout)
    assert {(e["name"], e["ip"]) for e in cache} >= {("allowed.test.", ALLOWED_IP)}, cache
    assert tcp_ok(fqdn, ALLOWED_IP)
    assert not tcp_ok(fqdn, OTHER_IP)
    # busybox's own client gets the answer too (and renews the address)
    assert ALLOWED_IP in nslookup(fqdn, "allowed.test")
    # the DNS queries are L7 flows with name, type, rcode and addresses
    events = [e for e in l7_history(agent) if e.get("protocol") == "dns"]
    refused = [e for e in events if (e.get("dns") or {}).get("query") == "other.test."]
    assert refused and refused[-1]["verdict"] == "DENIED"
    assert refused[-1]["dns"]["rcode"] == "REFUSED"
    answered = [e for e in events if (e.get("dns") or {}).get("query") == "allowed.test."
                and e["verdict"] == "FORWARDED"]
    assert answered and answered[-1]["dns"]["ips"] == [ALLOWED_IP]
    assert answered[-1]["dns"]["ttl"] == TTL
    assert "container:app=fqdn-client" in answered[-1]["src_labels"]
    # after the TTL, new connections are dropped again
    assert wait_until(lambda: not tcp_ok(fqdn, ALLOWED_IP), TTL + 6)
    clear(agent)


def test_dns_over_tcp_and_patterns(agent, fqdn, tmp_path):
    apply(agent, tmp_path, POLICY)
    assert dig(fqdn, "allowed.test", "+tcp") == ("NOERROR", [ALLOWED_IP])
    assert dig(fqdn, "other.test", "+tcp") == ("REFUSED", [])
    # *.wild.test: one label before wild.test
    assert dig(fqdn, "a.wild.test") == ("NOERROR", [OTHER_IP])
    assert tcp_ok(fqdn, OTHER_IP)
    assert dig(fqdn, "wild.test")[0] == "REFUSED"
    clear(agent)


def test_proxy_death_fails_closed_and_recovers(agent, fqdn, tmp_path):
    """Kill the proxy: no query passes unchecked meanwhile (the datapath has no socket
    to hand it to: dropped), the agent restarts it and DNS works again."""
    apply(agent, tmp_path, POLICY)
    resolver = fqdn["resolver"]
    pid = agent.api("/v1/status")["proxy"]["pid"]
    os.killpg(pid, signal.SIGKILL)
    status, _ = dig(fqdn, "other.test", "+time=1")
    assert status in (None, "REFUSED")  # dropped while down; REFUSED once back
    assert wait_until(lambda: dig(fqdn, "allowed.test", "+time=1")[0] == "NOERROR", 20)
    assert dig(fqdn, "other.test")[0] == "REFUSED"
    assert "other.test" not in resolver.queries()
    clear(agent)


def test_an_answer_naming_a_container_does_not_replace_its_ipcache_entry(agent, fqdn,
                                                                          tmp_path):
    """A DNS answer may name any address; an endpoint's (or the host's) ipcache entry
    stays its own: otherwise a container allowed to query DNS could turn another into
    "world" for every policy (Cilium's toFQDNs does not select managed endpoints)."""
    apply(agent, tmp_path, POLICY)

    def entry() -> dict:
        return next(e for e in agent.api("/v1/bpf/ipcache") if e["prefix"] == f"{PEER_IP}/32")

    before = entry()
    assert 256 <= before["identity"] < 1 << 24 and before["ifindex"], before
    assert dig(fqdn, "inside.test") == ("NOERROR", [PEER_IP])
    time.sleep(0.5)
    assert entry() == before
    clear(agent)
