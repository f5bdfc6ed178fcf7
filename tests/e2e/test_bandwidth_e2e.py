"""Bandwidth limits through the real kernel: containers labelled as Kubernetes pods are
(``kubernetes.io/egress-bandwidth``, ``kubernetes.io/ingress-bandwidth``), a network
default from ``docker network create -o``, iperf3 between two containers measuring what
the limit lets through, ping latency while it is saturated, runtime label changes with
``ciliumpy endpoint labels``, the CLI and metrics views, and the BPF backstop that still
limits a container that removed its own qdisc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from tests.e2e.test_datapath_e2e import cli_json
from tests.support.agent import CLI
from tests.support.wait import wait_for

MBIT = 1_000_000
# iperf3 counts TCP payload: 1448 of every 1514 bytes on the wire at MTU 1500
GOODPUT_SHARE = 1448 / 1514


def pid_of(docker, container: str) -> int:
    return docker.inspect(container)["State"]["Pid"]


def limits(agent, container: str) -> dict:
    full = None
    for item in agent.api("/v1/endpoints"):
        if item["container_id"] and item["container_id"].startswith(container[:12]):
            full = item
    return (full or {}).get("bandwidth") or {}


def wait_limits(agent, container: str, egress: int = 0, ingress: int = 0) -> dict:
    def ready():
        found = limits(agent, container)
        return found if (found.get("egress_bps", 0), found.get("ingress_bps", 0)) == (
            egress, ingress) else None

    found = wait_for(ready, timeout=15)
    assert found is not None or (egress, ingress) == (0, 0), (
        f"limits never became egress={egress} ingress={ingress}: {limits(agent, container)}")
    return found or {}


def iperf(docker, client: str, server: str, server_ip: str, seconds: float = 3,
          streams: int = 1) -> float:
    """TCP goodput (bit/s) the server received from the client."""
    srv = subprocess.Popen(["nsenter", "-t", str(pid_of(docker, server)), "-n", "iperf3",
                            "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(20):
            out = subprocess.run(["nsenter", "-t", str(pid_of(docker, client)), "-n", "iperf3",
                                  "-c", server_ip, "-t", str(seconds), "-P", str(streams),
                                  "-J"], capture_output=True, text=True, timeout=60)
            if out.returncode == 0:
                return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
            if "Connection refused" not in out.stdout + out.stderr:
                raise AssertionError(out.stdout + out.stderr)
        raise AssertionError("iperf3 server never listened")
    finally:
        srv.wait(30)


def qdisc(docker, container: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid_of(docker, container)), "-n", "tc",
                           "qdisc", "show", "dev", "eth0"], capture_output=True, text=True,
                          check=True).stdout


def cli(agent, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def assert_rate(goodput: float, limit: int, what: str) -> None:
    wire = goodput / GOODPUT_SHARE
    assert 0.95 * limit <= wire <= 1.05 * limit, (
        f"{what}: {wire / MBIT:.2f} Mbit/s on the wire for a {limit / MBIT:g} Mbit/s limit")


@pytest.fixture
def pair(agent, docker):
    net = "cpy-bw-" + uuid.uuid4().hex[:6]
    docker.network_create(net, "--subnet", "10.77.0.0/16")
    return net


@pytest.mark.timeout(240)
def test_egress_label_limits_a_container_and_keeps_latency_low(agent, docker, pair):
    net = pair
    server = docker.run(pair)
    client = docker.run(net, "-l", "kubernetes.io/egress-bandwidth=20M", "-l", "app=bw")
    server_ip = docker.ip(server, net)
    wait_limits(agent, client, egress=20 * MBIT)
    assert "htb c1:" in qdisc(docker, client), "the shaper sits on the container's eth0"

    ping = subprocess.Popen(["nsenter", "-t", str(pid_of(docker, client)), "-n", "busybox",
                             "ping", "-i", "0.05", "-c", "50", server_ip],
                            stdout=subprocess.PIPE, text=True)
    assert_rate(iperf(docker, client, server, server_ip, seconds=3), 20 * MBIT, "one stream")
    rtts = sorted(float(x) for x in re.findall(r"time=([0-9.]+)", ping.communicate()[0]))
    assert len(rtts) >= 45, f"pings lost while the limit was saturated: {len(rtts)}/50"
    # a FIFO (TBF as the bandwidth CNI plugin sets it) holds ~25 ms of data here
    assert rtts[int(len(rtts) * 0.98)] < 5.0, f"ping RTTs under load: {rtts[-5:]}"
    assert_rate(iperf(docker, client, server, server_ip, seconds=3, streams=8), 20 * MBIT,
                "eight streams")

    listed = {e["container_id"][:12]: e for e in cli_json(agent, "endpoint", "list")}
    assert listed[client[:12]]["bandwidth"]["egress_bps"] == 20 * MBIT
    table = cli(agent, "endpoint", "list").stdout
    assert "EGRESS LIMIT" in table and "20M" in table
    row = [r for r in cli_json(agent, "bpf", "bandwidth") if r["container_name"]]
    assert [(r["egress_bps"], r["backstop_bps"]) for r in row] == [(20 * MBIT, 20 * MBIT)]
    assert row[0]["backstop_drops"] == 0, "the shaper kept the backstop idle"
    assert "htb-flowqueue" in cli(agent, "status").stdout
    metrics = agent.api_text("/metrics")
    assert re.search(r'ciliumpy_bandwidth_limit_bytes_per_second\{direction="egress",'
                     r'endpoint="[^"]+"\} 2\.5e\+06', metrics), metrics[-2000:]
    promtool = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                              capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    delayed = re.search(r'ciliumpy_bandwidth_delayed_packets_total\{direction="egress",'
                        r'endpoint="[^"]+"\} ([0-9.e+]+)', metrics)
    assert delayed and float(delayed.group(1)) > 0

    # removing the label on the running container removes the limit
    out = cli(agent, "endpoint", "labels", client[:12], "--delete",
              "kubernetes.io/egress-bandwidth")
    assert out.returncode == 0, out.stderr
    assert "egress -" in out.stdout
    assert "htb" not in qdisc(docker, client)
    assert cli_json(agent, "bpf", "bandwidth") == []
    unlimited = iperf(docker, client, server, server_ip, seconds=2)
    assert unlimited > 5 * 20 * MBIT, f"still limited: {unlimited / MBIT:.1f} Mbit/s"

    # and adding one at runtime limits it again
    out = cli(agent, "endpoint", "labels", client[:12], "--add",
              "kubernetes.io/egress-bandwidth=50M")
    assert out.returncode == 0 and "egress 50M" in out.stdout, out.stdout + out.stderr
    assert_rate(iperf(docker, client, server, server_ip, seconds=3), 50 * MBIT, "runtime label")


@pytest.mark.timeout(180)
def test_ingress_label_and_network_default(agent, docker):
    net = "cpy-bwn-" + uuid.uuid4().hex[:6]
    docker.network_create(net, "--subnet", "10.78.0.0/16", "-o",
                          "ciliumpy.egress-bandwidth=30M")
    receiver = docker.run(net, "-l", "kubernetes.io/ingress-bandwidth=15M")
    sender = docker.run(net)
    wait_limits(agent, receiver, egress=30 * MBIT, ingress=15 * MBIT)
    wait_limits(agent, sender, egress=30 * MBIT)
    # the receiver's ingress limit is the tighter one on this path
    assert_rate(iperf(docker, sender, receiver, docker.ip(receiver, net)), 15 * MBIT,
                "ingress limit")
    # the other way the receiver sends, limited by its network's default egress
    assert_rate(iperf(docker, receiver, sender, docker.ip(sender, net)), 30 * MBIT,
                "network default")


@pytest.mark.timeout(120)
def test_the_backstop_limits_a_container_that_removed_its_qdisc(agent, docker, pair):
    net = pair
    server = docker.run(net)
    client = docker.run(net, "-l", "ciliumpy.egress-bandwidth=20M")
    wait_limits(agent, client, egress=20 * MBIT)
    # what a container with NET_ADMIN could do to its own interface
    subprocess.run(["nsenter", "-t", str(pid_of(docker, client)), "-n", "tc", "qdisc", "del",
                    "dev", "eth0", "root"], check=True)
    goodput = iperf(docker, client, server, docker.ip(server, net), seconds=3)
    assert goodput / GOODPUT_SHARE <= 1.05 * 20 * MBIT, f"{goodput / MBIT:.1f} Mbit/s"
    drops = [r["backstop_drops"] for r in cli_json(agent, "bpf", "bandwidth")]
    assert drops and drops[0] > 0, "the backstop dropped what came too fast"
    assert re.search(r'ciliumpy_bandwidth_drops_total\{direction="egress",endpoint="[^"]+",'
                     r'stage="backstop"\} [1-9]', agent.api_text("/metrics"))


def test_bad_bandwidth_values_are_refused_and_change_nothing(agent, docker, pair):
    net = pair
    client = docker.run(net, "-l", "kubernetes.io/egress-bandwidth=lots")
    found = wait_for(lambda: limits(agent, client).get("errors"), timeout=15)
    assert found and "'lots' is not a bandwidth" in found[0], limits(agent, client)
    assert "htb" not in qdisc(docker, client)
    before = agent.api("/v1/endpoints")
    for args, message in (
            (("--add", "kubernetes.io/egress-bandwidth=10X"), "'10X' is not a bandwidth"),
            (("--add", "app=other"), "only the bandwidth labels can"),
            (("--add", "ciliumpy.ingress-bandwidth=5"), "below the smallest limit"),
            (("--add", "novalue"), "is not KEY=VALUE"),
            ((), "nothing to change")):
        out = cli(agent, "endpoint", "labels", client[:12], *args)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    out = cli(agent, "endpoint", "labels", "no-such-endpoint", "--delete",
              "ciliumpy.egress-bandwidth")
    assert out.returncode != 0 and "no endpoint matches" in out.stderr
    assert agent.api("/v1/endpoints") == before, "a refused change changed nothing"
    proc = docker.network_create("cpy-bwbad-" + uuid.uuid4().hex[:6], "--subnet",
                                 "10.79.0.0/16", "-o", "ciliumpy.egress-bandwidth=fast",
                                 check=False)
    assert proc.returncode != 0
    assert "option ciliumpy.egress-bandwidth: 'fast' is not a bandwidth" in proc.stderr


@pytest.mark.timeout(180)
def test_runtime_limits_survive_an_agent_kill(agent, docker, pair):
    net = pair
    server = docker.run(net)
    client = docker.run(net)
    wait_for(lambda: limits(agent, client) == {} and agent.api("/v1/endpoints"), timeout=15)
    out = cli(agent, "endpoint", "labels", client[:12], "--add",
              "ciliumpy.egress-bandwidth=20M", "--add", "ciliumpy.ingress-bandwidth=30M")
    assert out.returncode == 0, out.stderr
    shaped = qdisc(docker, client)
    agent.restart(kill=True)
    wait_limits(agent, client, egress=20 * MBIT, ingress=30 * MBIT)
    assert qdisc(docker, client) == shaped, "the restarted agent left the shaper as it was"
    assert_rate(iperf(docker, client, server, docker.ip(server, net)), 20 * MBIT,
                "after the restart")
    assert_rate(iperf(docker, server, client, docker.ip(client, net)), 30 * MBIT,
                "ingress after the restart")
