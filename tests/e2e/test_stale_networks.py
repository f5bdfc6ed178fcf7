"""Networks removed while the agent was down: Docker warns and goes on (it cannot reach
the plugin), so DeleteEndpoint, DeleteNetwork and ReleasePool never come. The agent's
reconciliation must remove the network, its endpoints, links, addresses and pool once
Docker says the network is gone, so the same subnet can be created again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.agent import CLI, Agent
from tests.support.docker import Docker

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return set(re.findall(r"\d+: ((?:lxc|tmp)[0-9a-f]+)[@:]", out))


def cli_json(agent: Agent, *args: str):
    env = {**os.environ, "CILIUMPY_API_SOCKET": agent.api_socket}
    proc = subprocess.run([*CLI, *args, "-o", "json"], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(proc.stdout)


def restart_dockerd() -> None:
    pid = int(Path("/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.2)
    subprocess.run([str(SCRIPTS / "start-dockerd.sh")], check=True, timeout=120)


@pytest.mark.timeout(240)
# each takes ~2 minutes (dockerd retries every call to the absent plugin for ~30 s); the
# restarted variant covers the same reconciliation after more forgetting, so the plain
# one runs in `make soak`
@pytest.mark.parametrize("dockerd_restart", [pytest.param(False, marks=pytest.mark.soak), True],
                         ids=["plain", "dockerd-restarted"])
def test_network_removed_while_agent_down_is_cleaned_up(agent: Agent, docker: Docker,
                                                        dockerd_restart: bool):
    subnet = "10.84.0.0/16" if dockerd_restart else "10.83.0.0/16"
    name = f"cpy-stale-{int(dockerd_restart)}-{uuid.uuid4().hex[:4]}"
    links_before = host_links()
    network_id = docker.network_create(name, "--subnet", subnet).stdout.strip()
    containers = [docker.run(name), docker.run(name)]
    ours = [e for e in agent.api("/v1/endpoints") if e["network_id"] == network_id]
    assert len(ours) == 2
    veths = host_links() - links_before
    assert {e["host_ifname"] for e in ours} <= veths

    agent.stop(keep_pins=True)
    docker.rm(*containers)  # Docker cannot reach the plugin: it warns and goes on
    docker.run_cli("network", "rm", name)
    docker.networks.remove(network_id)
    if dockerd_restart:
        restart_dockerd()
    assert docker.run_cli("network", "ls", "-q", "-f", f"id={network_id}").stdout.strip() == ""
    agent.start()

    deadline = time.time() + 30  # a network is judged gone once older than a short grace
    while time.time() < deadline:
        agent.api("/v1/reconcile", method="POST")
        if not any(n["network_id"] == network_id for n in agent.api("/v1/networks")):
            break
        time.sleep(1)
    listed = cli_json(agent, "network", "list")
    assert not any(n["network_id"] == network_id for n in listed), listed
    assert not any(e["network_id"] == network_id for e in cli_json(agent, "endpoint", "list"))
    assert not (veths & host_links()), "the stale endpoints' veth pairs are gone"
    pools = agent.api("/v1/ipam")["pools"]
    assert not any(p["pool"] == subnet for p in pools), pools
    held = [a for a in agent.api("/v1/ipam")["allocations"]
            if a["address"].startswith(subnet.split(".0.0/")[0] + ".")]
    assert held == []
    # The user's next step works: the same subnet again, and a container on it.
    docker.network_create(name, "--subnet", subnet)
    fresh = docker.run(name)
    assert docker.ip(fresh, name).startswith(subnet.split(".0.0/")[0] + ".")
