"""fromNodes / toNodes across the three-host harness (tests/support/hosts.py): node1
has no labels, node2 is ``--node-labels role=worker``, node3 ``role=db``. A process in
a host's own namespace (not a container) reaches a container that allows
``fromNodes: role=worker`` only from node2 (node3's connection never reaches the
server, and the drop names node3's labels); a container allowed ``toNodes: role=worker``
reaches node2's address and not node3's; ``fromEntities: remote-node`` still admits
every node; ``node list`` shows the labels, ``policy trace`` explains both verdicts.
node1's agent restarted keeps the node identities; node3's agent restarted with
``role=worker`` is admitted without touching the others. VXLAN and native routing.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.test_multihost import SUBNET_V4, SUBNET_V6, cli, cluster  # noqa: F401
from tests.support.hosts import wait

NODE_SCOPE = 0x02000000
# a TCP server that appends what each client sends to /tmp/seen: a persistent nc (a
# loop of `nc -l` lost data when the listener saw its own stdin end before reading)
RECORDER = ("nc", "-ll", "-p", "9000", "-e", "sh", "-c", "cat >> /tmp/seen")


def send_from_host(host, address: str, text: str) -> bool:
    """``text`` to ``address``:9000 from the host's own namespace; True if it connected."""
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", "busybox", "nc",
                           "-w", "2", address, "9000"], input=text + "\n", text=True,
                          capture_output=True, timeout=20)
    return proc.returncode == 0


def seen(host, container: str) -> str:
    return host.exec(container, "cat", "/tmp/seen").stdout


def host_server(host, directory) -> subprocess.Popen:
    """An HTTP server on the host's own address (its namespace), logging each request."""
    directory.mkdir()
    (directory / "index.html").write_text(f"page of {host.name}\n")
    with open(directory.parent / f"{host.name}-http.log", "wb") as log:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{host.netns}", "python3",
                                 "-m", "http.server", "9100", "--bind", host.ip,
                                 "--directory", str(directory)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def fetch(host, container: str, address: str) -> str:
    return host.exec(container, "timeout", "4", "wget", "-qO-",
                     f"http://{address}:9100/").stdout


def ipcache_identity(host, address: str) -> int | None:
    return next((e["identity"] for e in host.agent.api("/v1/bpf/ipcache")
                 if e["prefix"] == f"{address}/32"), None)


def trace_verdict(host, src: str, dst: str, port: str) -> str:
    out = cli(host.agent, "policy", "trace", "--src", src, "--dst", dst, "--dport", port,
              "-o", "json").stdout
    return json.loads(out)["verdict"]


@pytest.mark.timeout(900)
# native routing in `make soak` (the 30-minute budget of `make test`): vxlan exercises
# more of the path (from_overlay refines the remote-node VNI by the outer source)
@pytest.mark.parametrize("mode", ["vxlan", pytest.param("native", marks=pytest.mark.soak)])
def test_from_nodes_and_to_nodes(cluster, mode, tmp_path):  # noqa: F811
    h1, h2, h3 = cluster.hosts
    cluster.start_agent(h1, mode)
    cluster.start_agent(h2, mode, "--node-labels", "role=worker")
    cluster.start_agent(h3, mode, "--node-labels", "role=db", "--node-labels", "zone=b")
    for host in cluster.hosts:
        host.docker.network_create("cpy-mh", "--ipv6", "--subnet", SUBNET_V4,
                                   "--subnet", SUBNET_V6)
    servers = [host_server(h, tmp_path / h.name) for h in (h2, h3)]
    try:
        web = h1.run("cpy-mh", "-l", "app=web", command=RECORDER)
        anynode = h1.run("cpy-mh", "-l", "app=anynode", command=RECORDER)
        client = h1.run("cpy-mh", "-l", "app=client")
        web_ip, any_ip = h1.docker.ip(web, "cpy-mh"), h1.docker.ip(anynode, "cpy-mh")

        # the node records carry the labels; node1 gives node2 and node3 node identities
        nodes = {n["name"]: n for n in
                 json.loads(cli(h1.agent, "node", "list", "-o", "json").stdout)}
        assert nodes["node2"]["labels"] == {"role": "worker"}
        assert nodes["node3"]["labels"] == {"role": "db", "zone": "b"}
        assert nodes["node1"]["labels"] == {}
        assert "role=db,zone=b" in cli(h1.agent, "node", "list").stdout
        wait(lambda: all((ipcache_identity(h1, h.ip) or 0) & 0xFF000000 == NODE_SCOPE
                         for h in (h2, h3)), 20, "node identities on node1")
        worker_id, db_id = ipcache_identity(h1, h2.ip), ipcache_identity(h1, h3.ip)
        assert worker_id != db_id
        assert ipcache_identity(h2, h1.ip) == 6, "a node without labels: remote-node"
        # no policy yet: both hosts reach the container
        wait(lambda: send_from_host(h3, web_ip, "db-before"), 20, "node3 to reach web")
        wait(lambda: "db-before" in seen(h1, web), 5, "web to record node3")

        policy = tmp_path / "nodes.yaml"
        policy.write_text(
            "- endpointSelector: {matchLabels: {app: web}}\n"
            "  ingress: [{fromNodes: [{matchLabels: {role: worker}}]}]\n"
            "- endpointSelector: {matchLabels: {app: anynode}}\n"
            "  ingress: [{fromEntities: [remote-node]}]\n"
            "- endpointSelector: {matchLabels: {app: client}}\n"
            "  egress:\n"
            "  - toNodes: [{matchLabels: {role: worker}}]\n"
            "    toPorts: [{ports: [{port: '9100', protocol: TCP}]}]\n")
        revision = cli(h1.agent, "policy", "import", str(policy)).stdout.strip().rsplit(
            " ", 1)[1]
        cli(h1.agent, "policy", "wait", revision, "--timeout", "15")

        # fromNodes: the worker host is let in, the db host is not (never seen)
        assert send_from_host(h2, web_ip, "from-worker")
        wait(lambda: "from-worker" in seen(h1, web), 5, "web to record node2")
        assert not send_from_host(h3, web_ip, "from-db")
        time.sleep(1)
        assert "from-db" not in seen(h1, web), "node3's connection reached the server"
        drops = [d for d in h1.agent.api("/v1/monitor?follow=0&type=drop")
                 if d["dst_labels"] == ["container:app=web"]]
        assert drops and drops[-1]["src_identity"] == db_id, drops
        assert set(drops[-1]["src_labels"]) == {"reserved:remote-node", "node:role=db",
                                                "node:zone=b"}, drops[-1]
        assert trace_verdict(h1, h2.ip, web[:12], "9000/tcp") == "ALLOWED"
        assert trace_verdict(h1, h3.ip, web[:12], "9000/tcp") == "DENIED"

        # fromEntities remote-node: every node, labels or not
        for host, text in ((h2, "any-worker"), (h3, "any-db")):
            assert send_from_host(host, any_ip, text), host.name
        wait(lambda: {"any-worker", "any-db"} <= set(seen(h1, anynode).split()), 5,
             "anynode to record both nodes")

        # toNodes: the client reaches node2's own address, not node3's
        assert f"page of {h2.name}" in fetch(h1, client, h2.ip)
        assert fetch(h1, client, h3.ip) == ""
        client_ip = h1.docker.ip(client, "cpy-mh")
        assert client_ip not in (tmp_path / f"{h3.name}-http.log").read_text(), \
            "node3's server saw the client"

        # node1's agent restarted: the same node identities at once (the pinned ipcache)
        h1.agent.stop(keep_pins=True)
        h1.agent.start(timeout=150)
        wait(lambda: len(h1.agent.api("/v1/status")["cluster"]["remote_nodes"]) == 2, 20,
             "node1 to follow the others again")
        time.sleep(1)  # its first reprogram
        assert (ipcache_identity(h1, h2.ip), ipcache_identity(h1, h3.ip)) == (worker_id,
                                                                              db_id)
        assert send_from_host(h2, web_ip, "worker-after-restart")
        wait(lambda: "worker-after-restart" in seen(h1, web), 5,
             f"web to record node2 after node1's restart (web saw {seen(h1, web)!r}; drops "
             f"{h1.agent.api('/v1/monitor?follow=0&type=drop')[-3:]})")
        assert not send_from_host(h3, web_ip, "db-after-restart")

        # node3 restarted with role=worker: let in, nobody else restarted
        h1_pid, h2_pid = h1.agent.proc.pid, h2.agent.proc.pid
        h3.agent.stop(keep_pins=True)
        cluster.start_agent(h3, mode, "--node-labels", "role=worker")
        wait(lambda: ipcache_identity(h1, h3.ip) == ipcache_identity(h1, h2.ip), 30,
             "node1 to see node3 as a worker")
        assert send_from_host(h3, web_ip, "db-now-worker")
        wait(lambda: "db-now-worker" in seen(h1, web), 5, "web to record node3")
        assert f"page of {h3.name}" in fetch(h1, client, h3.ip)
        assert (h1.agent.proc.pid, h2.agent.proc.pid) == (h1_pid, h2_pid)
        assert h1.agent.proc.poll() is None and h2.agent.proc.poll() is None
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
