"""The host firewall on harness hosts (tests/support/hosts.py: each host a network
namespace with its own dockerd and agent; never the machine's own eth0): host policies
(nodeSelector) guard the host's own device and its containers' way to it, SSH-like
management traffic survives a default-deny host policy that allows it, established
connections survive, the host's egress is enforced, policy-audit-mode reports AUDIT and
drops nothing, and without --enable-host-firewall nothing is enforced and import says so.

The servers standing in for SSH and the rest are plain Python listeners run in the
harness host's namespace (on the host itself, not in a container); each records the
peers it accepted, so a test can tell that a refused connection never reached it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from policies.identities import is_node_identity
from tests.e2e.test_multihost import cli
from tests.support.hosts import Cluster, in_netns, wait

SUBNET = "10.92.0.0/16"
SERVER = r"""
import socket, sys, threading
port, log = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(16)
def serve(conn, peer):
    with open(log, "a") as f:
        f.write(peer[0] + "\n")
    conn.sendall(b"hello %d\n" % port)
    while True:
        data = conn.recv(100)
        if not data:
            break
        conn.sendall(data)
while True:
    conn, peer = srv.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
"""
CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.settimeout(2)
    print(s.recv(100).decode().strip())
except OSError as exc:
    print("failed:", exc)
    sys.exit(1)
"""
# a connection kept open: each line on stdin is sent, the echo printed
KEEP = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.settimeout(3)
print(s.recv(100).decode().strip(), flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    try:
        print(s.recv(100).decode().strip(), flush=True)
    except OSError as exc:
        print("failed:", exc, flush=True)
"""
SSH_ONLY = """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-ssh-only}
spec:
  nodeSelector:
    matchLabels: {node-access: ssh}
  ingress:
  - fromEntities: [world, remote-node]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"""


class Servers:
    """Listeners in harness hosts' namespaces, stopped by pid."""

    def __init__(self, workdir) -> None:
        self.workdir, self.procs = workdir, []

    def start(self, host, port: int) -> str:
        log = str(self.workdir / f"{host.name}-{port}.log")
        open(log, "w").close()
        self.procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.netns}", sys.executable, "-c", SERVER,
             str(port), log], start_new_session=True))
        return log

    def keep(self, host, address: str, port: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.netns}", sys.executable, "-c", KEEP, address,
             str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def reach(host, address: str, port: int) -> bool:
    """Whether a new connection from ``host`` (its own namespace) gets the greeting."""
    out = in_netns(host.netns, sys.executable, "-c", CLIENT, address, str(port), check=False)
    return out.stdout.startswith(f"hello {port}")


def ping(host, address: str) -> bool:
    return any(in_netns(host.netns, "busybox", "ping", "-c", "1", "-W", "1", address,
                        check=False).returncode == 0 for _ in range(2))


def peers(log: str) -> list[str]:
    with open(log) as handle:
        return handle.read().split()


def echo(proc: subprocess.Popen, text: str) -> str:
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def import_policy(host, tmp_path, name: str, text: str, *others
                  ) -> subprocess.CompletedProcess:
    """Imported through ``host``'s agent, enforced by it and by ``others``' agents."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    proc = cli(host.agent, "policy", "import", str(path))
    revision = proc.stdout.strip().rsplit(" ", 1)[1]
    for agent_host in (host, *others):
        cli(agent_host.agent, "policy", "wait", revision, "--timeout", "20")
    return proc


def host_entry(host) -> dict | None:
    found = [e for e in host.agent.api("/v1/bpf/endpoints") if e["ifindex"] == 0xFFFFFFFF]
    return found[0] if found else None


def container_reaches(host, container: str, address: str, port: int) -> bool:
    out = host.exec(container, "sh", "-c", f"echo ping | timeout 3 nc {address} {port}")
    return f"hello {port}" in out.stdout


@pytest.fixture
def servers(workdir):
    made = Servers(workdir)
    yield made
    made.stop()


@pytest.fixture
def cluster(workdir, docker_ready):
    made = Cluster(2, workdir)
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.mark.timeout(600)
def test_host_policy_guards_the_host_and_keeps_management_traffic(cluster, servers, tmp_path):
    h1, h2 = cluster.hosts
    cluster.start_agent(h1, "vxlan", "--enable-host-firewall", "--node-labels",
                        "node-access=ssh")
    cluster.start_agent(h2, "vxlan")
    h1.docker.network_create("cpy-hf", "--subnet", SUBNET)
    client = h1.run("cpy-hf", "-l", "app=client")
    ssh_log, web_log = servers.start(h1, 22), servers.start(h1, 8080)
    wait(lambda: reach(h2, h1.ip, 22) and reach(h2, h1.ip, 8080), 30, "h1's servers")
    # the host firewall on, no host policy yet: the host endpoint exists, nothing enforced
    entry = host_entry(h1)
    assert entry and entry["identity"] == 1
    assert not entry["enforce_ingress"] and not entry["enforce_egress"]
    assert container_reaches(h1, client, h1.ip, 22)
    assert container_reaches(h1, client, h1.ip, 8080)
    assert ping(h2, h1.ip)
    kept = servers.keep(h2, h1.ip, 8080)  # established before the policy
    assert kept.stdout.readline().strip() == "hello 8080"

    import_policy(h1, tmp_path, "ssh-only", SSH_ONLY)
    assert host_entry(h1)["enforce_ingress"] and not host_entry(h1)["enforce_egress"]
    assert "Host firewall: enabled (ingress enforced, egress open)" in " ".join(
        cli(h1.agent, "status").stdout.split())
    seen = len(peers(web_log))
    assert reach(h2, h1.ip, 22), "the policy allows SSH from remote nodes"
    assert not reach(h2, h1.ip, 8080)
    assert len(peers(web_log)) == seen, "the refused connection never reached the server"
    assert echo(kept, "still there") == "still there", "established connections survive"
    # the host's own containers meet the host's ingress policy too (app=client is neither
    # world nor remote-node)
    assert not container_reaches(h1, client, h1.ip, 22)
    ssh_seen = peers(ssh_log)
    assert h2.ip in ssh_seen and ssh_seen.count(h2.ip) >= 2
    assert not ping(h2, h1.ip), "ICMP is not allowed yet"

    import_policy(h1, tmp_path, "ssh-admin", """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-web-from-client}
spec:
  nodeSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEntities: [remote-node]
    icmps: [{fields: [{type: EchoRequest, family: IPv4}]}]
""")
    assert ping(h2, h1.ip), "icmps rules apply to the host"
    assert container_reaches(h1, client, h1.ip, 8080)
    assert not container_reaches(h1, client, h1.ip, 22)
    assert not reach(h2, h1.ip, 8080), "still closed to the remote node"

    # the host's egress: only the kvstore (Consul on the underlay, world) and port 7000
    # of the other node
    servers.start(h2, 7000)
    other_log = servers.start(h2, 7001)
    wait(lambda: reach(h1, h2.ip, 7000) and reach(h1, h2.ip, 7001), 30, "h2's servers")
    import_policy(h1, tmp_path, "egress", """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-egress}
spec:
  nodeSelector: {}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "8500", protocol: TCP}]}]
  - toEntities: [remote-node]
    toPorts: [{ports: [{port: "7000", protocol: TCP}]}]
""")
    assert host_entry(h1)["enforce_egress"]
    seen = len(peers(other_log))
    assert reach(h1, h2.ip, 7000)
    assert not reach(h1, h2.ip, 7001)
    assert len(peers(other_log)) == seen
    assert reach(h2, h1.ip, 22), "replies of allowed ingress still leave"
    # the agent still reaches its kvstore: a new import through it works
    cli(h1.agent, "policy", "delete", "host-egress")
    wait(lambda: reach(h1, h2.ip, 7001), 20, "the egress policy's removal")


@pytest.mark.timeout(600)
def test_audit_mode_reports_and_firewall_off_enforces_nothing(cluster, servers, tmp_path):
    h1, h2 = cluster.hosts
    cluster.start_agent(h1, "vxlan", "--enable-host-firewall", "--policy-audit-mode",
                        "--node-labels", "node-access=ssh")
    cluster.start_agent(h2, "vxlan", "--node-labels", "node-access=ssh")  # firewall off
    h1.docker.network_create("cpy-hf", "--subnet", SUBNET)
    client = h1.run("cpy-hf", "-l", "app=client")
    for host in (h1, h2):
        servers.start(host, 22)
    web1, web2 = servers.start(h1, 8080), servers.start(h2, 8080)
    wait(lambda: reach(h2, h1.ip, 8080) and reach(h1, h2.ip, 8080), 30, "the servers")

    # imported through the agent without the host firewall: stored, and it says so
    proc = import_policy(h2, tmp_path, "ssh-only", SSH_ONLY, h1)
    assert "not enforced: this agent runs without --enable-host-firewall" in proc.stderr
    assert host_entry(h1)["enforce_ingress"] and host_entry(h2) is None

    # audit mode: the denied port answers, and the flow says AUDIT
    seen = len(peers(web1))
    assert reach(h2, h1.ip, 8080)
    assert len(peers(web1)) == seen + 1
    flows = [json.loads(line) for line in cli(
        h1.agent, "observe", "--verdict", "AUDIT", "-o", "json").stdout.splitlines() if line]
    audited = [f.get("flow", f) for f in flows]
    # h2 has node labels: it is its node identity here (a node without labels is 6)
    assert any(f["destination"].get("identity") == 1 and f["l4"]["TCP"]["destination_port"]
               == 8080 and is_node_identity(f["source"].get("identity", 0))
               for f in audited), audited[:3]
    # the firewall off on h2: the same policy selects it (same labels), nothing enforced
    seen = len(peers(web2))
    assert reach(h1, h2.ip, 8080)
    assert len(peers(web2)) == seen + 1

    # audit mode holds for containers too: an egress default-deny reports, drops nothing
    import_policy(h1, tmp_path, "client-egress", """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toPorts: [{ports: [{port: "9999", protocol: TCP}]}]
""")
    assert container_reaches(h1, client, h1.ip, 8080)
    deadline = time.time() + 10
    while True:
        flows = [json.loads(line) for line in cli(
            h1.agent, "observe", "--verdict", "AUDIT", "-o", "json").stdout.splitlines()
            if line]
        flows = [f.get("flow", f) for f in flows]
        if any(f.get("traffic_direction") == "EGRESS" and "app=client" in " ".join(
                f["source"].get("labels", [])) for f in flows) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert any(f.get("traffic_direction") == "EGRESS" and "app=client" in " ".join(
        f["source"].get("labels", [])) for f in flows), flows[-3:]
