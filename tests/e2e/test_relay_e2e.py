"""The relay on the three-host harness: each agent serves Hubble's API on its underlay
address and publishes it with its node; ``ciliumpy observe --cluster`` on one host
merges every node's flows in time order (a drop seen by the server's node, the
sender's own egress seen by its node), and a node whose agent is dead makes the
answer partial, with a warning naming it, within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from ciliumpy.hubble import relay
from tests.e2e.test_multihost import HTTPD, SUBNET_V4, cluster, http_ok  # noqa: F401
from tests.support.agent import CLI
from tests.support.hosts import ROOT, wait


def observe(agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "observe", "--cluster", *args], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))


def records(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(600)
def test_observe_cluster_merges_every_node_and_survives_a_dead_one(cluster, tmp_path):  # noqa: F811
    cluster.start_agents("vxlan", "--hubble-listen-address", ":4244",
                         "--hubble-relay-listen-address", ":4245",
                         "--hubble-disable-tls")  # the harness's underlay is private
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

    # following every node: `observe --cluster -f` and the relay's gRPC API (from a
    # Hubble client in node1's namespace) both see the intruder's new flows of node2
    # (its egress) and node3 (the drop), history first
    follower = subprocess.Popen([*CLI, "observe", "--cluster", "-f", "-o", "json",
                                 "--from-label", "app=intruder"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, CILIUMPY_API_SOCKET=h1.agent.api_socket))
    relay_follow = hubble_client(h1, "flows", "--follow", "12", "--number", "1",
                                 "--from-label", "app=intruder")
    time.sleep(3)  # both streams are open
    sent_at = time.time()
    assert not http_ok(h2, intruder, server_ip)
    relay_lines = [json.loads(line) for line in relay_follow.communicate(timeout=60)[0]
                   .splitlines()]
    assert relay_follow.returncode == 0
    time.sleep(1)
    follower.terminate()
    out, err = follower.communicate(timeout=20)
    followed = [json.loads(line) for line in out.splitlines() if line.strip()]
    new = [r for r in followed if relay.flow_time(r) >= sent_at]
    assert {h2.name, h3.name} <= {r["node_name"] for r in new}, (followed, err)
    assert [relay.flow_time(r) for r in followed] == sorted(relay.flow_time(r)
                                                             for r in followed)
    relay_flows = [r for r in relay_lines if "verdict" in r]
    assert relay_flows[0]["time"] < datetime.fromtimestamp(sent_at, UTC).isoformat(), \
        "the newest stored flow first (number 1)"
    assert {h2.name, h3.name} <= {r["node_name"] for r in relay_flows[1:]}, relay_lines
    assert "DROPPED" in {r["verdict"] for r in relay_flows if r["node_name"] == h3.name}
    nodes_seen = {n["name"]: n for n in map(json.loads,
                                            hubble_client(h1, "nodes").communicate(
                                                timeout=60)[0].splitlines())}
    assert set(nodes_seen) == {h1.name, h2.name, h3.name}
    assert {n["state"] for n in nodes_seen.values()} == {"NODE_CONNECTED"}

    # the service map of every node, asked on node1 (which saw none of the intruder's
    # packets): the intruder -> server edge, dropped (node3 dropped it)
    local_map = h1.agent.api("/v1/servicemap")
    whole = h1.agent.api("/v1/servicemap?cluster=1")
    assert whole["warnings"] == [] and whole["flows"] > local_map["flows"]
    edges = {(e["source"], e["target"]): e for e in whole["edges"]}
    assert ("intruder", "server") not in {(e["source"], e["target"])
                                          for e in local_map["edges"]}
    assert edges[("intruder", "server")]["dropped"] > 0, whole["edges"]
    assert edges[("intruder", "server")]["delivered"] == 0
    assert edges[("client", "server")]["delivered"] > 0

    # node3's agent dies: its flows are gone from the answer, which still comes, promptly
    h3.agent.kill9()
    started = time.monotonic()
    partial = observe(h1.agent, "--from-label", "app=intruder", "--all", "-o", "json")
    assert time.monotonic() - started < 15, "a dead node costs at most the relay's timeout"
    assert partial.returncode == 0, partial.stderr
    assert f"warning: node {h3.name} ({h3.ip}:4244) did not answer" in partial.stderr
    left = {r["node_name"] for r in records(partial)}
    assert h2.name in left and h3.name not in left

    # the relay says the same in Hubble's terms: a node_status event, node3 unavailable
    answer = [json.loads(line) for line in hubble_client(h1, "flows", "--from-label",
                                                         "app=intruder").communicate(
        timeout=60)[0].splitlines()]
    status = [r["node_status"] for r in answer if "node_status" in r]
    assert status and status[0]["state"] == "NODE_UNAVAILABLE", answer
    assert status[0]["nodes"] == [h3.name]
    assert h2.name in {r["node_name"] for r in answer if "verdict" in r}
    nodes_seen = {n["name"]: n["state"] for n in map(json.loads, hubble_client(
        h1, "nodes").communicate(timeout=60)[0].splitlines())}
    assert nodes_seen[h3.name] == "NODE_UNAVAILABLE" and nodes_seen[h2.name] == "NODE_CONNECTED"


def hubble_client(host, *args: str) -> subprocess.Popen:
    """The test Hubble client (tests.support.hubble_client) in ``host``'s namespace,
    asking the relay on that host."""
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{host.netns}", sys.executable, "-m",
                             "tests.support.hubble_client", f"{host.ip}:4245", *args],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
