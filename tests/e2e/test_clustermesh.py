"""Cluster Mesh through real components: two clusters (tests/support/mesh.py), each
with its own Consul agent and two hosts (network namespaces, dockerd, agent), on one
underlay. Containers reach each other across clusters from and to either host (ping and
TCP, IPv4 and IPv6); a global service defined in both clusters balances a client in a
across a's and b's backends (each answers with its hostname), and still answers from
b's when a's backend is gone; a policy allowing only ``cluster: a`` senders holds on the
receiver in b; the VNI of a cross-cluster packet is the sender's mesh-wide identity
``(1 << 16) | n``; b's Consul stopped, a's local traffic, the path to b and b's backends
of the global service are kept and ``cluster status`` says b is disconnected; b's
Consul back, a container started in b is reachable from both of a's hosts without
restarting anything."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.e2e.test_multihost import HTTPD, cli, http_ok, ping_ok, read_vnis
from tests.e2e.test_services_e2e import SERVE
from tests.support.hosts import in_netns, wait
from tests.support.mesh import Mesh

POOLS = {"a": ("10.71.0.0/16", "fd71::/64"), "b": ("10.72.0.0/16", "fd72::/64")}
VIPS = {"a": "10.96.71.10", "b": "10.96.72.10"}


@pytest.fixture
def mesh(workdir, docker_ready):
    made = Mesh(2, workdir)
    try:
        made.start()
        yield made
    finally:
        made.stop()


def _status(host) -> dict:
    return json.loads(cli(host.agent, "cluster", "status", "-o", "json").stdout)


def _reach(ha, client, address: str, hb, what: str, timeout: float = 90) -> None:
    """Waits until a's client reaches ``address``; a failure says what a's host had
    programmed for it and how both agents saw the mesh."""
    try:
        wait(lambda: http_ok(ha, client, address), timeout, what)
    except RuntimeError as exc:
        entries = [e for e in ha.agent.api("/v1/bpf/ipcache")
                   if e["prefix"].split("/")[0] == address or e.get("tunnel_ip")]
        raise AssertionError(
            f"{exc}\nroutes of a:\n{in_netns(ha.netns, 'ip', 'route').stdout}"
            f"\nipcache of a for {address} and tunnelled prefixes: {entries[:20]}"
            f"\nstatus of a: {_status(ha)}\nstatus of b: {_status(hb)}"
            f"\nagent log of a (end):\n{ha.agent.log()[-3000:]}"
            f"\nagent log of b (end):\n{hb.agent.log()[-2000:]}") from None


def _remote(host) -> dict:
    return _status(host)["clusters"][0]


def _fetch(host, container: str, address: str) -> str:
    return host.exec(container, "timeout", "3", "wget", "-qO-", f"http://{address}/"
                     ).stdout.strip()


def _gweb(host) -> dict:
    return json.loads(cli(host.agent, "service", "get", "gweb", "-o", "json").stdout)


def _answers(host, container: str, vip: str, count: int = 16) -> set[str]:
    return {_fetch(host, container, vip) for _ in range(count)}


def _identity(host, container: str) -> int:
    cid = host.docker.inspect(container)["Id"]
    return next(e["identity"] for e in host.agent.api("/v1/endpoints")
                if e["container_id"] == cid)


@pytest.mark.timeout(420)
def test_two_clusters_each_with_its_own_consul(mesh, tmp_path):
    started = time.monotonic()
    mesh.start_mesh_agents("vxlan")
    (ha, ha2), (hb, hb2) = mesh.cluster_a, mesh.cluster_b
    for host, name in ((ha, "a"), (ha2, "a"), (hb, "b"), (hb2, "b")):
        v4, v6 = POOLS[name]
        host.docker.network_create("cpy-mesh", "--ipv6", "--subnet", v4, "--subnet", v6)
    client = ha.run("cpy-mesh", "-l", "app=client", command=HTTPD)
    peer = ha2.run("cpy-mesh", "-l", "app=peer", command=HTTPD)  # a's second host
    server = hb.run("cpy-mesh", "-l", "app=server", command=HTTPD)
    other = hb.run("cpy-mesh", "-l", "app=other", command=HTTPD)
    server2 = hb2.run("cpy-mesh", "-l", "app=server2", command=HTTPD)  # b's second host
    # backends of the global service gweb: one in each cluster, on the second hosts
    gweb_a = ha2.run("cpy-mesh", "-l", "app=gweb", "--hostname", "gweb-a", command=SERVE)
    gweb_b = hb2.run("cpy-mesh", "-l", "app=gweb", "--hostname", "gweb-b", command=SERVE)
    ip = {c: (h.docker.ip(c, "cpy-mesh"), h.docker.ip(c, "cpy-mesh", v6=True))
          for h, c in ((ha, client), (ha2, peer), (hb, server), (hb, other), (hb2, server2))}
    _reach(ha, client, ip[server][0], hb, "a to reach b")
    wait(lambda: http_ok(ha2, peer, ip[server2][0]), 30, "a's second host to reach b's")
    for src_host, src, dst in ((ha, client, server), (hb, server, client),
                               (ha2, peer, server2), (hb2, server2, peer),
                               (ha, client, server2), (hb2, server2, client)):
        for address in ip[dst]:
            assert ping_ok(src_host, src, address), f"{src_host.name} -> {address}"
            assert http_ok(src_host, src, address), f"{src_host.name} -> {address}"

    # identities: mesh-wide numbers, the cluster labels; status, cluster list, node list
    client_id, server_id = _identity(ha, client), _identity(hb, server)
    assert client_id >> 16 == 1 and server_id >> 16 == 2
    labels = ha.agent.api(f"/v1/identities/{client_id}")["labels"]
    assert {"k8s:cluster=a", "k8s:io.cilium.k8s.policy.cluster=a"} <= set(labels)
    remote = _remote(ha)
    assert (remote["name"], remote["cluster_id"], remote["connected"]) == ("b", 2, True)
    assert remote["nodes"] == 2 and remote["endpoints"] >= 8 and remote["identities"] >= 4
    table = cli(ha.agent, "cluster", "status").stdout
    assert "b" in table and "connected" in table and "LAST UPDATE" in table
    assert "remote" in cli(ha.agent, "cluster", "list").stdout
    rows = json.loads(cli(ha.agent, "node", "list", "-o", "json").stdout)
    assert {(r["cluster"], r["name"]) for r in rows} == {
        ("a", "node1"), ("a", "node2"), ("b", "node3"), ("b", "node4")}
    assert "Cluster Mesh:" in cli(ha.agent, "status").stdout

    # a global service defined in both clusters: a's client reaches b's backend too
    for host, name in ((ha, "a"), (hb, "b")):
        cli(host.agent, "service", "create", "gweb", "--frontend", f"{VIPS[name]}:80",
            "--selector", "app=gweb", "--global", "--maglev-size", "251")
    for host in (ha, ha2):
        wait(lambda host=host: len(_gweb(host)["status"]["backends"]) == 2, 30,
             f"{host.name} to merge b's backend of gweb")
    assert {(b["address"], b["cluster"]) for b in _gweb(ha)["status"]["backends"]} == {
        (ha2.docker.ip(gweb_a, "cpy-mesh"), None), (hb2.docker.ip(gweb_b, "cpy-mesh"), "b")}
    assert "@b" in cli(ha.agent, "service", "list").stdout
    assert _gweb(ha)["global"] is True
    wait(lambda: len(_gweb(hb)["status"]["backends"]) == 2, 30, "b to merge a's backend")
    assert _answers(ha, client, VIPS["a"]) == {"gweb-a", "gweb-b"}
    # a's backend gone: the service still answers, from b's
    ha2.docker.rm(gweb_a)
    wait(lambda: [b["cluster"] for b in _gweb(ha)["status"]["backends"]] == ["b"], 30,
         "a's backend of gweb to leave")
    assert _answers(ha, client, VIPS["a"], 6) == {"gweb-b"}

    # policy in b: only senders of cluster a reach the server; the VNI is the sender's
    capture = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{mesh.underlay}", "tcpdump", "-i", "br0", "-U",
         "-s", "200", "-w", "-", "udp", "port", "4789", "and", "src", ha.ip],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(1)
    policy = tmp_path / "server.yaml"
    policy.write_text("endpointSelector: {matchLabels: {app: server}}\n"
                      "ingress: [{fromEndpoints: [{matchLabels: {cluster: a}}]}]\n")
    revision = cli(hb.agent, "policy", "import", str(policy)).stdout.strip().rsplit(" ", 1)[1]
    cli(hb.agent, "policy", "wait", revision, "--timeout", "15")
    assert http_ok(ha, client, ip[server][0]) and http_ok(ha, client, ip[server][1])
    assert not http_ok(hb, other, ip[server][0]), "b's own app=other is not of cluster a"
    assert not ping_ok(hb, other, ip[server][1])
    time.sleep(1)
    capture.send_signal(signal.SIGINT)
    pcap, _ = capture.communicate(timeout=10)
    vnis = set(read_vnis(pcap))
    assert vnis and vnis <= {client_id, 6}, (sorted(vnis), client_id)
    assert client_id in vnis

    # b's Consul goes away: a's local traffic, the path to b and b's backends are kept
    mesh.stop_consul_b()
    down = wait(lambda: (r := _remote(ha))["connected"] is False and r, 20,
                "a to see b disconnected")
    assert down["error"] and not down["withdrawn"] and down["endpoints"] >= 8
    assert "disconnected" in cli(ha.agent, "status").stdout
    assert http_ok(ha, client, ip[peer][0]) and ping_ok(ha, client, ip[peer][1])
    assert http_ok(ha, client, ip[server][0]), "b's last known state is kept"
    assert _answers(ha, client, VIPS["a"], 3) == {"gweb-b"}, "b's backends are kept"

    # b's Consul back: a container started in b becomes reachable from a, no restart
    mesh.start_consul_b()
    late = hb2.run("cpy-mesh", "-l", "app=late", command=HTTPD)
    late_ip = hb2.docker.ip(late, "cpy-mesh")
    wait(lambda: http_ok(ha, client, late_ip), 60, "a to reach b's new container")
    assert http_ok(ha2, peer, late_ip), "from a's second host too"
    assert _identity(hb2, late) >> 16 == 2
    assert wait(lambda: _remote(ha)["connected"], 20, "b connected again")
    print(f"mesh test body: {time.monotonic() - started:.1f}s")


@pytest.mark.timeout(300)
@pytest.mark.soak  # `make soak` (the 30-minute budget of `make test`): the mesh's VXLAN test stays
def test_native_routing_across_clusters(workdir, docker_ready):
    """Native routing (no overlay): each host routes the other cluster's pools to the
    node that holds them, on the underlay; ping and TCP both ways, IPv4 and IPv6."""
    made = Mesh(1, workdir)
    try:
        made.start()
        made.start_mesh_agents("native")
        (ha,), (hb,) = made.cluster_a, made.cluster_b
        for host, name in ((ha, "a"), (hb, "b")):
            v4, v6 = POOLS[name]
            host.docker.network_create("cpy-mesh", "--ipv6", "--subnet", v4, "--subnet", v6)
        client = ha.run("cpy-mesh", "-l", "app=client", command=HTTPD)
        server = hb.run("cpy-mesh", "-l", "app=server", command=HTTPD)
        ip = {c: (h.docker.ip(c, "cpy-mesh"), h.docker.ip(c, "cpy-mesh", v6=True))
              for h, c in ((ha, client), (hb, server))}
        _reach(ha, client, ip[server][0], hb, "a to reach b natively")
        for src_host, src, dst in ((ha, client, server), (hb, server, client)):
            for address in ip[dst]:
                assert ping_ok(src_host, src, address), f"{src_host.name} -> {address}"
                assert http_ok(src_host, src, address), f"{src_host.name} -> {address}"
        # natively: a route on a's host sends b's block to b's host, no overlay device
        routes = in_netns(ha.netns, "ip", "route").stdout
        assert any(line.startswith("10.72.") and f"via {hb.ip}" in line
                   for line in routes.splitlines()), routes
        assert "cpy_vxlan" not in in_netns(ha.netns, "ip", "link").stdout
    finally:
        made.stop()
