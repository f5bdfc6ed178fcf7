"""ciliumpy under the real dockerd: containers get unique addresses on a flat L3
network and talk; state survives kill -9; bad requests fail clearly and change nothing.
Items of the checklist in docs/docker-protocol.md that need dockerd itself are marked
with their number."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import re
import subprocess
import time
import uuid

import pytest

from tests.support.agent import CLI, Agent
from tests.support.docker import Docker, ping


def links(prefix="lxc"):
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return sorted(re.findall(rf"\d+: ({prefix}[0-9a-f]+)[@:]", out))


def our_routes():
    out4 = subprocess.run(["ip", "route", "show", "proto", "199"], capture_output=True,
                          text=True).stdout
    out6 = subprocess.run(["ip", "-6", "route", "show", "proto", "199"], capture_output=True,
                          text=True).stdout
    return (out4 + out6).strip().splitlines()


def calls_since(agent: Agent, marker: int) -> list[str]:
    return re.findall(r"ciliumpy\.plugin: (\S+) -> 200", agent.log()[marker:])


def test_dockerd_discovers_a_new_plugin_through_its_socket(workdir, docker_ready):
    """A never-seen plugin name makes dockerd look up the socket and call Plugin.Activate."""
    name = "ciliumpy-disc" + uuid.uuid4().hex[:6]
    state = workdir / name
    state.mkdir()
    instance = Agent(state, f"/run/docker/plugins/{name}.sock", str(state / "api.sock"))
    instance.start()
    client = Docker()
    try:
        proc = client.run_cli("network", "create", "-d", name, "--ipam-driver", name,
                              "--subnet", "10.61.0.0/16", name)
        client.networks.append(proc.stdout.strip())
        calls = calls_since(instance, 0)
        assert calls[:4] == ["Plugin.Activate", "NetworkDriver.GetCapabilities",
                             "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces"]
        assert calls[4:7] == ["IpamDriver.RequestPool", "IpamDriver.RequestAddress",
                              "NetworkDriver.CreateNetwork"]  # item 36, network create
    finally:
        client.cleanup()
        instance.stop()


def test_two_containers_talk_both_ways_and_across_networks(agent, docker):
    # Links and routes left by anything else on this host (another agent, an earlier
    # run) are not this test's: it checks that nothing of its own remains.
    links_before, routes_before = set(links()), set(our_routes())
    net1 = docker.network_create("cpy-net1", "--subnet", "10.62.0.0/16").stdout.strip()
    marker = len(agent.log())
    server = docker.run("cpy-net1", command=("httpd", "-f", "-p", "80", "-h", "/var/www"))
    run_calls = calls_since(agent, marker)
    assert run_calls[:3] == ["IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint",
                             "NetworkDriver.Join"]  # item 36, container start
    assert "NetworkDriver.EndpointOperInfo" in run_calls
    client = docker.run("cpy-net1", command=("sh", "-c",
                                             "httpd -f -p 8080 -h /var/www & sleep 3600"))
    a, b = docker.ip(server, "cpy-net1"), docker.ip(client, "cpy-net1")
    assert a != b and all(ipaddress.ip_address(x) in ipaddress.ip_network("10.62.0.0/16")
                          for x in (a, b))
    # items 30/31: eth0 with the IPAM address and MAC, default route via the on-link
    # gateway, and no docker_gwbridge interface.
    addr = docker.exec(server, "ip", "-o", "addr", "show").stdout
    mac = docker.inspect(server)["NetworkSettings"]["Networks"]["cpy-net1"]["MacAddress"]
    assert f"{a}/32" in addr and "eth1" not in addr
    assert mac in docker.exec(server, "ip", "link", "show", "eth0").stdout
    assert "default via 10.62.0.1 dev eth0" in docker.exec(server, "ip", "route").stdout
    assert ping(docker, client, a) and ping(docker, server, b)
    assert "ciliumpy test page" in docker.exec(client, "wget", "-qO-", f"http://{a}/").stdout
    assert "ciliumpy test page" in docker.exec(server, "wget", "-qO-",
                                               f"http://{b}:8080/").stdout
    docker.network_create("cpy-net2", "--subnet", "10.63.0.0/24")
    third = docker.run("cpy-net2")
    assert ping(docker, third, a) and ping(docker, third, b)
    assert "ciliumpy test page" in docker.exec(third, "wget", "-qO-", f"http://{a}/").stdout
    # teardown: containers stop, networks go, nothing of ours remains
    docker.rm(server, client, third)
    for name in ("cpy-net1", "cpy-net2"):
        docker.network_rm(name)
    assert set(links()) - links_before == set()
    assert set(our_routes()) - routes_before == set()
    state = agent.api("/v1/ipam")
    assert state == {"pools": [], "allocations": []}
    assert net1 not in {n["network_id"] for n in agent.api("/v1/networks")}


def test_dual_stack(agent, docker):
    docker.network_create("cpy-ds", "--ipv6", "--subnet", "10.64.0.0/24",
                          "--subnet", "fd64:1::/64")
    a, b = docker.run("cpy-ds"), docker.run("cpy-ds")
    a6, b6 = docker.ip(a, "cpy-ds", v6=True), docker.ip(b, "cpy-ds", v6=True)
    assert a6 != b6 and a6.startswith("fd64:1::")
    assert ping(docker, a, b6) and ping(docker, b, a6)
    assert ping(docker, a, docker.ip(b, "cpy-ds"))


def test_specific_ip_reaches_ipam(agent, docker):
    """Item 37: --ip on a network with --subnet is the address the container gets."""
    docker.network_create("cpy-ip", "--subnet", "10.65.0.0/16")
    container = docker.run("cpy-ip", "--ip", "10.65.3.3")
    assert docker.ip(container, "cpy-ip") == "10.65.3.3"
    duplicate = "cpy-ip-dup-" + uuid.uuid4().hex[:8]
    docker.containers.append(duplicate)  # created even though it cannot start
    second = docker.run_cli("run", "-d", "--name", duplicate, "--network", "cpy-ip", "--ip",
                            "10.65.3.3", "ciliumpy/busybox", "sleep", "60", check=False)
    assert second.returncode != 0 and "Address already in use" in second.stderr


def test_unsupported_option_is_refused_and_ipam_released(agent, docker):
    """Items 4 and 23: the message reaches the CLI with the method name, Docker then
    releases the gateway and the pool, so nothing is left."""
    before = (agent.api("/v1/networks"), agent.api("/v1/ipam"))
    proc = docker.network_create("cpy-bad", "--subnet", "10.66.0.0/16", "-o", "REJECT=1",
                                 check=False)
    assert proc.returncode != 0
    assert "NetworkDriver.CreateNetwork: ciliumpy does not support the option 'REJECT'" in (
        proc.stderr)
    assert (agent.api("/v1/networks"), agent.api("/v1/ipam")) == before


def test_overlapping_subnet_is_refused(agent, docker):
    docker.network_create("cpy-ov1", "--subnet", "10.67.0.0/16")
    before = (agent.api("/v1/networks"), agent.api("/v1/ipam"))
    proc = docker.network_create("cpy-ov2", "--subnet", "10.67.5.0/24", check=False)
    assert proc.returncode != 0
    assert "IpamDriver.RequestPool: Pool overlaps with other one on this address space" in (
        proc.stderr)
    assert (agent.api("/v1/networks"), agent.api("/v1/ipam")) == before


def test_network_and_endpoint_lists(agent, docker):
    network = docker.network_create("cpy-list", "--subnet", "10.68.0.0/16").stdout.strip()
    container = docker.run("cpy-list", name="cpy-list-c1")
    agent.api("/v1/reconcile", method="POST")  # learn names from Docker now, not in 30 s
    env = {"CILIUMPY_API_SOCKET": agent.api_socket}
    table = subprocess.run([*CLI, "network", "list"], capture_output=True, text=True,
                           env=env).stdout
    assert network[:12] in table and "cpy-list" in table and "10.68.0.0/16" in table
    endpoints = json.loads(subprocess.run([*CLI, "endpoint", "list", "-o", "json"],
                                          capture_output=True, text=True, env=env).stdout)
    mine = [e for e in endpoints if e["network_id"] == network]
    assert len(mine) == 1
    assert mine[0]["container_id"] == docker.inspect(container)["Id"]
    assert mine[0]["container_name"] == "cpy-list-c1"
    assert mine[0]["ipv4"] == docker.ip(container, "cpy-list") + "/32"
    assert mine[0]["state"] == "joined" and mine[0]["link_present"]
    table = subprocess.run([*CLI, "endpoint", "list"], capture_output=True, text=True,
                           env=env).stdout
    assert "cpy-list-c1" in table and mine[0]["host_ifname"] in table


@pytest.mark.timeout(600)
def test_thirty_parallel_containers_survive_kill9(agent, docker):
    docker.network_create("cpy-30", "--subnet", "10.69.0.0/16")
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        containers = list(pool.map(lambda _: docker.run("cpy-30"), range(30)))
    addresses = [docker.ip(c, "cpy-30") for c in containers]
    assert len(set(addresses)) == 30
    prober = docker.run("cpy-30")
    script = "for ip in " + " ".join(addresses) + \
        "; do ping -c1 -W2 $ip >/dev/null || ping -c1 -W2 $ip >/dev/null || echo FAIL $ip; done"
    assert docker.exec(prober, "sh", "-c", script, timeout=300).stdout.strip() == ""

    before = {e["endpoint_id"]: e["ipv4"] for e in agent.api("/v1/endpoints")}
    agent.restart(kill=True)
    after = {e["endpoint_id"]: e["ipv4"] for e in agent.api("/v1/endpoints")}
    assert after == before, "no endpoint or address lost across kill -9"
    assert docker.exec(prober, "sh", "-c", script, timeout=300).stdout.strip() == ""
    newcomer = docker.run("cpy-30")
    fresh = docker.ip(newcomer, "cpy-30")
    assert fresh not in addresses and fresh != docker.ip(prober, "cpy-30")
    assert ping(docker, newcomer, addresses[0])


def test_stop_leaves_no_link(agent, docker):
    """Item 33: after a container stops, its host-side link and route are gone."""
    docker.network_create("cpy-stop", "--subnet", "10.70.0.0/24")
    container = docker.run("cpy-stop")
    ip = docker.ip(container, "cpy-stop")
    assert any(ip in r for r in our_routes())
    docker.run_cli("stop", "-t", "0", container)
    time.sleep(0.2)
    assert not any(ip in r for r in our_routes())
    endpoints = [e for e in agent.api("/v1/endpoints") if e["ipv4"] == ip + "/32"]
    assert endpoints == []
    assert all(a["address"] != ip for a in agent.api("/v1/ipam")["allocations"])


@pytest.mark.timeout(300)
def test_dockerd_restart_with_restart_always_containers(agent, docker):
    """Checklist 34: dockerd stops (containers leave, endpoints are deleted) and boots
    again while ciliumpy serves: restart-policy containers come back on the ciliumpy
    network without a hang (no handler calls Docker), with working addresses, and no
    endpoint, link or address of the old run is left behind."""
    import os
    import signal
    from pathlib import Path

    foreign_links = set(links())  # not this agent's: left alone, and not counted
    docker.network_create("cpy-reboot", "--subnet", "10.79.0.0/16")
    server = docker.run("cpy-reboot", "--restart=always", "-l", "app=reboot",
                        command=("httpd", "-f", "-p", "80", "-h", "/var/www"))
    before = {e["endpoint_id"] for e in agent.api("/v1/endpoints")}
    old_ip = docker.ip(server, "cpy-reboot")
    pid = int(Path("/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.2)
    start = time.time()
    script = Path(__file__).resolve().parents[2] / "scripts" / "start-dockerd.sh"
    subprocess.run([str(script)], check=True, timeout=120)
    deadline = time.time() + 60
    while time.time() < deadline and not docker.inspect(server)["State"]["Running"]:
        time.sleep(0.5)
    assert docker.inspect(server)["State"]["Running"], "the restart=always container is down"
    assert time.time() - start < 60
    after = {e["endpoint_id"]: e for e in agent.api("/v1/endpoints")}
    assert not (before & set(after)), "the old run's endpoints are gone"
    new_ip = docker.ip(server, "cpy-reboot")
    probe = docker.run("cpy-reboot")
    assert "ciliumpy test page" in docker.exec(probe, "wget", "-qO-", f"http://{new_ip}/").stdout
    held = [a["address"] for a in agent.api("/v1/ipam")["allocations"] if a["kind"] == "endpoint"]
    assert len(held) == len(set(held)) and (old_ip == new_ip or old_ip not in held)
    assert set(links()) - foreign_links == {e["host_ifname"] for e in agent.api("/v1/endpoints")}, (
        "no host link without an endpoint")
