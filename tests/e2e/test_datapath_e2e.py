"""The BPF datapath under real Docker containers: policy entries written through the
agent's datapath API, verdicts seen by busybox clients, drops in `ciliumpy monitor`
with both label sets, `ciliumpy bpf` dumps, Prometheus metrics, no compile per
container, and an agent kill -9 in the middle of an iperf3 transfer."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid

import pytest

from tests.support.agent import CLI, Agent
from tests.support.docker import Docker, ping
from tests.support.wait import wait_for

HTTPD = ("sh", "-c", "httpd -f -p 80 -h /var/www & httpd -f -p 81 -h /var/www & sleep 3600")


def endpoint(agent, docker, container):
    full = docker.inspect(container)["Id"]

    def ready():
        for item in agent.api("/v1/endpoints"):
            if item["container_id"] == full and item["identity"] >= 256:
                return item
        return None

    found = wait_for(ready)
    assert found, f"container {container[:12]} got no identity"
    return found


def http(docker, client, address, port=80) -> bool:
    result = docker.exec(client, "timeout", "3", "wget", "-qO-", f"http://{address}:{port}/",
                         check=False)
    return "ciliumpy test page" in result.stdout


def policy(agent, method, **body):
    from ciliumpy.apiclient import call

    return call("/v1/bpf/policy", method=method, body=body, socket_path=agent.api_socket)


def cli_json(agent, *args):
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    out = subprocess.run([*CLI, *args, "-o", "json"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def trio(agent, docker):
    net = "cpy-dp-" + uuid.uuid4().hex[:6]
    docker.network_create(net, "--subnet", "10.74.0.0/16")
    server = docker.run(net, "-l", "app=server", command=HTTPD)
    client = docker.run(net, "-l", "app=client")
    intruder = docker.run(net, "-l", "app=intruder")
    eps = {name: endpoint(agent, docker, cid) for name, cid in
           (("server", server), ("client", client), ("intruder", intruder))}
    return net, {"server": server, "client": client, "intruder": intruder}, eps


def test_policy_entries_decide_reachability_and_drops_carry_labels(agent, docker, trio):
    net, containers, eps = trio
    server_ip = docker.ip(containers["server"], net)
    assert http(docker, containers["intruder"], server_ip), "no policy: open (default mode)"
    policy(agent, "POST", endpoint=eps["server"]["endpoint_id"], direction="ingress",
           identity=eps["client"]["identity"], protocol="tcp", port=80)
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    monitor = subprocess.Popen([*CLI, "monitor", "--type", "drop"], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        time.sleep(0.5)
        assert http(docker, containers["client"], server_ip), "allowed identity and port"
        assert not http(docker, containers["client"], server_ip, 81), "other port"
        assert not http(docker, containers["intruder"], server_ip), "other identity"
        assert not ping(docker, containers["client"], server_ip, tries=1), "L4 rule: no ICMP"
        assert ping(docker, containers["server"], docker.ip(containers["client"], net)), (
            "egress of the server is not enforced; replies of its ping pass")
        ready, _, _ = select.select([monitor.stdout], [], [], 10)
        assert ready, "no drop event reached `ciliumpy monitor`"
        line = monitor.stdout.readline()
    finally:
        monitor.terminate()
        monitor.wait(10)
    assert "drop (policy-denied) ingress" in line
    assert "container:app=server" in line
    assert "container:app=client" in line or "container:app=intruder" in line
    drops = [e for e in agent.api("/v1/monitor?follow=0&type=drop")
             if e["dst_identity"] == eps["server"]["identity"]]
    traces = agent.api("/v1/monitor?follow=0&type=trace")
    assert any(e["src_identity"] == eps["client"]["identity"] and e["dst_port"] == 80
               and e["direction"] == "ingress" and e["dst_labels"] == ["container:app=server"]
               for e in traces), "the allowed connection is traced"
    intruder = [e for e in drops if e["src_identity"] == eps["intruder"]["identity"]]
    assert intruder and intruder[-1]["src_labels"] == ["container:app=intruder"]
    assert intruder[-1]["dst_labels"] == ["container:app=server"]
    assert intruder[-1]["reason"] == "policy-denied" and intruder[-1]["dst_port"] == 80


def test_deny_entries_and_egress_policy(agent, docker, trio):
    net, containers, eps = trio
    server_ip = docker.ip(containers["server"], net)
    policy(agent, "POST", endpoint=eps["client"]["endpoint_id"], direction="egress",
           identity=eps["server"]["identity"], protocol="any")
    assert http(docker, containers["client"], server_ip, 81), "L3 egress allow: every port"
    assert not ping(docker, containers["client"], docker.ip(containers["intruder"], net),
                    tries=1), "egress now enforced: other destinations drop"
    policy(agent, "POST", endpoint=eps["client"]["endpoint_id"], direction="egress",
           identity=0, protocol="tcp", port=81, deny=True)
    assert not http(docker, containers["client"], server_ip, 81), "deny wins"
    assert http(docker, containers["client"], server_ip, 80)
    drops = agent.api("/v1/monitor?follow=0&type=drop")
    assert any(e["reason"] == "policy-deny-rule" and e["direction"] == "egress" for e in drops)
    policy(agent, "DELETE", endpoint=eps["client"]["endpoint_id"], direction="egress",
           identity=0, protocol="tcp", port=81, deny=True)
    assert http(docker, containers["client"], server_ip, 81), "the deny is gone"


def test_bpf_dumps_metrics_and_no_compile_per_container(agent, docker, trio):
    net, containers, eps = trio
    before = agent.api("/v1/status")["datapath"]
    policy(agent, "POST", endpoint=eps["server"]["endpoint_id"], direction="ingress",
           identity=eps["client"]["identity"], protocol="tcp", port=80, end_port=90)
    assert http(docker, containers["client"], docker.ip(containers["server"], net))
    endpoints = {e["ifindex"]: e for e in cli_json(agent, "bpf", "endpoint")}
    server = endpoints[eps["server"]["ifindex"]]
    assert server["identity"] == eps["server"]["identity"] and server["enforce_ingress"]
    assert server["labels"] == ["container:app=server"]
    ipcache = {e["prefix"]: e["identity"] for e in cli_json(agent, "bpf", "ipcache")}
    assert ipcache[docker.ip(containers["client"], net) + "/32"] == eps["client"]["identity"]
    assert ipcache["10.74.0.1/32"] == 1, "the gateway is the host"
    entries = cli_json(agent, "bpf", "policy", eps["server"]["endpoint_id"][:12])
    assert entries == [dict(entries[0], direction="ingress", identity=eps["client"]["identity"],
                            proto=6, port=80, end_port=90, deny=False,
                            labels=["container:app=client"])]
    flows = cli_json(agent, "bpf", "ct")
    assert any(f["dport"] == 80 and "ingress-ok" in f["flags"] for f in flows)
    counters = {(m["reason"], m["direction"]): m["packets"]
                for m in cli_json(agent, "bpf", "metrics")}
    assert counters[("forwarded", "ingress")] > 0
    text = agent.api_text("/metrics")
    assert 'ciliumpy_datapath_packets_total{direction="ingress",reason="forwarded"}' in text
    assert "ciliumpy_bpf_map_pressure" in text and "ciliumpy_endpoints" in text
    after = agent.api("/v1/status")["datapath"]
    assert after["programs"] == before["programs"]
    assert after["compiles_in_worker"] == 0, "containers never trigger a compile"
    assert agent.log().count("datapath: compiled in") <= 1


@pytest.mark.timeout(300)
def test_kill9_during_iperf3_keeps_traffic_and_maps(agent, docker, trio):
    net, containers, eps = trio
    server_ip = docker.ip(containers["server"], net)
    policy(agent, "POST", endpoint=eps["server"]["endpoint_id"], direction="ingress",
           identity=eps["client"]["identity"], protocol="tcp", port=5201)
    pid = {name: docker.inspect(c)["State"]["Pid"] for name, c in containers.items()}
    server = subprocess.Popen(["nsenter", "-t", str(pid["server"]), "-n", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    dumps = ("/v1/bpf/endpoints", "/v1/bpf/ipcache", "/v1/bpf/policy")
    before = [agent.api(path) for path in dumps]
    client = subprocess.Popen(["nsenter", "-t", str(pid["client"]), "-n", "iperf3", "-c",
                               server_ip, "-t", "6", "-i", "0.5", "-J"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    agent.kill9()
    time.sleep(1)
    agent.start()
    out, err = client.communicate(timeout=60)
    server.wait(30)
    assert client.returncode == 0, err
    intervals = [i["sum"] for i in json.loads(out)["intervals"]]
    stalls = [i for i in intervals if i["bytes"] == 0]
    assert not stalls, f"{len(stalls)} half-second intervals without traffic"
    assert "reusing pinned programs" in agent.log().split("Booting worker")[-1]
    after = [agent.api(path) for path in dumps]
    assert after == before, "the restarted agent ends with identical maps"


@pytest.mark.parametrize("mode", ["always", "never"])
def test_enforcement_modes(mode, workdir, docker_ready):
    name = f"ciliumpy-{mode}{uuid.uuid4().hex[:4]}"
    state = workdir / name
    state.mkdir()
    instance = Agent(state, f"/run/docker/plugins/{name}.sock", str(state / "api.sock"),
                     ["--policy-enforcement", mode])
    instance.start()
    client = Docker()
    try:
        proc = client.run_cli("network", "create", "-d", name, "--ipam-driver", name,
                              "--subnet", "10.75.0.0/16", name)
        client.networks.append(proc.stdout.strip())
        server = client.run(name, "-l", "app=server", command=HTTPD)
        peer = client.run(name, "-l", "app=peer")
        for container in (server, peer):
            endpoint(instance, client, container)
        server_ip = client.ip(server, name)
        if mode == "always":
            assert not http(client, peer, server_ip), "always: default-deny without entries"
        else:
            eps = {e["container_id"]: e for e in instance.api("/v1/endpoints")}
            target = eps[client.inspect(server)["Id"]]
            policy(instance, "POST", endpoint=target["endpoint_id"], direction="ingress",
                   identity=1, protocol="tcp", port=9)
            assert http(client, peer, server_ip), "never: entries exist but are not enforced"
        flags = instance.api("/v1/bpf/endpoints")
        assert all(e["enforce_ingress"] == e["enforce_egress"] == (mode == "always")
                   for e in flags)
    finally:
        client.cleanup()
        instance.stop()
