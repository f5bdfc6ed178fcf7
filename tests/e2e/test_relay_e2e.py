"""The relay on the three-host harness: each agent serves Hubble's API on its underlay
address and publishes it with its node; ``ciliumpy observe --cluster`` on one host
merges every node's flows in time order (a drop seen by the server's node, the
sender's own egress seen by its node), and a node whose agent is dead makes the
answer partial, with a warning naming it, within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.e2e.test_multihost import HTTPD, SUBNET_V4, cluster, http_ok  # noqa: F401
from tests.support.agent import CLI
from tests.support.hosts import wait


def observe(agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "observe", "--cluster", *args], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))


def records(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(600)
def test_observe_cluster_merges_every_node_and_survives_a_dead_one(cluster, tmp_path):  # noqa: F811
    cluster.start_agents("vxlan", "--hubble-listen-address", ":4244")
    h1, h2, h3 = cluster.hosts
    for host in cluster.hosts:
        host.docker.network_create("cpy-rl", "--subnet", SUBNET_V4)
    client = h1.run("cpy-rl", "-l", "app=client")
    intruder = h2.run("cpy-rl", "-l", "app=intruder")
    server = h3.run("cpy-rl", "-l", "app=server", command=HTTPD)
    server_ip = h3.docker.ip(server, "cpy-rl")
    nodes = {n["name"]: n for n in h1.agent.api("/v1/nodes")}
    assert nodes[h3.name]["hubble"] == f"{h3.ip}:4244", nodes[h3.name]
    wait(lambda: http_ok(h1, client, server_ip), 20, "the cluster to converge")
    policy = tmp_path / "server.yaml"
    policy.write_text("endpointSelector: {matchLabels: {app: server}}\n"
                      "ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n")
    env = dict(os.environ, CILIUMPY_API_SOCKET=h1.agent.api_socket)
    out = subprocess.run([*CLI, "policy", "import", str(policy)], capture_output=True,
                         text=True, env=env, check=True).stdout
    subprocess.run([*CLI, "--api-socket", h3.agent.api_socket, "policy", "wait",
                    out.strip().rsplit(" ", 1)[1], "--timeout", "15"], check=True,
                   capture_output=True)
    assert http_ok(h1, client, server_ip)
    assert not http_ok(h2, intruder, server_ip)

    # from node1, which saw none of the intruder's packets
    found = records(observe(h1.agent, "--from-label", "app=intruder", "--all", "-o", "json"))
    by_node = {r["node_name"] for r in found}
    assert {h2.name, h3.name} <= by_node, by_node  # its egress on node2, the drop on node3
    drops = [r["flow"] for r in found if r["flow"]["verdict"] == "DROPPED"]
    assert drops and all(f["node_name"] == h3.name for f in drops)
    assert all(f["drop_reason_desc"] == "POLICY_DENIED" for f in drops)
    stamps = [r["flow"]["time"] for r in found]
    assert stamps == sorted(stamps, key=lambda t: (t[:19], float("0." + (t[20:-1] or "0"))))
    allowed = records(observe(h1.agent, "--to-label", "app=server", "--verdict", "FORWARDED",
                              "--all", "-o", "json"))
    assert {r["node_name"] for r in allowed} >= {h1.name, h3.name}
    compact = observe(h1.agent, "--from-label", "app=intruder", "--verdict", "DROPPED",
                      "--last", "1")
    assert compact.returncode == 0 and h3.name in compact.stdout, compact.stdout
    assert len(records(observe(h1.agent, "--from-label", "app=intruder", "--last", "2",
                               "-o", "json"))) == 2

    # node3's agent dies: its flows are gone from the answer, which still comes, promptly
    h3.agent.kill9()
    started = time.monotonic()
    partial = observe(h1.agent, "--from-label", "app=intruder", "--all", "-o", "json")
    assert time.monotonic() - started < 15, "a dead node costs at most the relay's timeout"
    assert partial.returncode == 0, partial.stderr
    assert f"warning: node {h3.name} ({h3.ip}:4244) did not answer" in partial.stderr
    left = {r["node_name"] for r in records(partial)}
    assert h2.name in left and h3.name not in left
