"""Published ports (docker run -p) on a ciliumpy network, on one host: reachable from
host processes on loopback and on the node address and from containers, as Docker's
bridge publishes them (a fixed port, a range, an ephemeral port, UDP, a host address);
a port already taken refuses docker run with Docker's message and leaves the first
container's port working; the port is free again once the container is gone. (From
outside the host: tests/e2e/test_services_multihost.py, on the harness's underlay.)"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
import uuid

import pytest

from ciliumpy import nodes
from tests.e2e.test_services_e2e import SERVE, UDP_ECHO, cli, pid_of
from tests.support.wait import wait_for

IMAGE = "ciliumpy/busybox"


def page(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=3) as answer:
            return answer.read().decode().strip()
    except OSError as exc:
        return f"error: {exc}"


def run(docker, net: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = docker.run_cli("run", "-d", "--network", net, *args, IMAGE, *SERVE, check=False)
    if proc.returncode == 0:
        docker.containers.append(proc.stdout.strip())
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def published(agent) -> dict[str, dict]:
    return {f"{p['host_ip']}:{p['host_port']}/{p['protocol']}": p
            for p in json.loads(cli(agent, "service", "ports", "-o", "json").stdout)}


@pytest.fixture
def net(agent, docker):
    name = "cpy-pp-" + uuid.uuid4().hex[:6]
    docker.network_create(name, "--subnet", "10.79.0.0/16")
    return name


@pytest.mark.timeout(240)
def test_published_ports_reach_the_container_like_dockers_bridge(agent, docker, net):
    node_ip = nodes.default_node_ip()
    web = run(docker, net, "--hostname", "pp-web", "-p", "18080:80").stdout.strip()
    assert wait_for(lambda: page("127.0.0.1", 18080) == "pp-web", timeout=5), page(
        "127.0.0.1", 18080)
    assert page(node_ip, 18080) == "pp-web"
    listed = published(agent)["0.0.0.0:18080/TCP"]
    assert listed["container_port"] == 80 and listed["container_ip"] == docker.ip(web, net)
    assert "0.0.0.0:18080" in cli(agent, "service", "ports").stdout
    client = docker.run(net)
    out = docker.exec(client, "wget", "-qO-", f"http://{node_ip}:18080/")
    assert out.stdout.strip() == "pp-web", "a container reaches the host's published port"

    # taken: by another container, by a host process; the first one keeps working
    again = run(docker, net, "-p", "18080:80", check=False)
    assert again.returncode != 0 and "18080" in again.stderr and "already" in again.stderr
    holder = socket.socket()
    holder.bind(("0.0.0.0", 18081))
    holder.listen(1)
    try:
        busy = run(docker, net, "-p", "18081:80", check=False)
        assert busy.returncode != 0 and "already allocated" in busy.stderr, busy.stderr
    finally:
        holder.close()
    assert page("127.0.0.1", 18080) == "pp-web"
    sctp = run(docker, net, "-p", "18094:80/sctp", check=False)
    assert sctp.returncode != 0 and "SCTP" in sctp.stderr

    # a range, an ephemeral port, a host address
    first = run(docker, net, "--hostname", "pp-r1", "-p", "18090-18092:80").stdout.strip()
    second = run(docker, net, "--hostname", "pp-r2", "-p", "18090-18092:80").stdout.strip()
    ports = published(agent)
    assert {ports["0.0.0.0:18090/TCP"]["container_ip"],
            ports["0.0.0.0:18091/TCP"]["container_ip"]} == {docker.ip(first, net),
                                                            docker.ip(second, net)}
    assert {page("127.0.0.1", 18090), page("127.0.0.1", 18091)} == {"pp-r1", "pp-r2"}
    run(docker, net, "--hostname", "pp-eph", "-p", "80")
    ephemeral = [p for p in published(agent).values() if p["container_port"] == 80
                 and p["host_port"] > 30000]
    assert len(ephemeral) == 1 and page("127.0.0.1", ephemeral[0]["host_port"]) == "pp-eph"
    run(docker, net, "--hostname", "pp-lo", "-p", "127.0.0.1:18093:80")
    assert page("127.0.0.1", 18093) == "pp-lo"
    assert page(node_ip, 18093).startswith("error"), "published on 127.0.0.1 only"

    # gone with the container: the port is free, nothing answers
    docker.rm(web)
    assert wait_for(lambda: "0.0.0.0:18080/TCP" not in published(agent), timeout=5)
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 18080))
    assert page("127.0.0.1", 18080).startswith("error")


@pytest.mark.timeout(120)
def test_udp_port_is_published_and_answers_from_it(agent, docker, net):
    server = run(docker, net, "-p", "15353:5300/udp").stdout.strip()
    echo = subprocess.Popen(["nsenter", "-t", str(pid_of(docker, server)), "-n", "python3",
                             "-c", UDP_ECHO])
    try:
        assert wait_for(lambda: "0.0.0.0:15353/UDP" in published(agent), timeout=5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            for _ in range(3):
                sock.sendto(b"ping", ("127.0.0.1", 15353))
                try:
                    data, peer = sock.recvfrom(100)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("no UDP answer through the published port")
        assert (data, peer) == (b"echo:ping", ("127.0.0.1", 15353))
    finally:
        echo.kill()
        echo.wait(5)
