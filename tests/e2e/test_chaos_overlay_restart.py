"""Chaos through the real components (issue 17): both ends' agents killed with SIGKILL
and started again during an established, policy-enforced iperf3 flow across the VXLAN
overlay of the three-host harness. The flow never stops (no half-second without
traffic), and the policy still holds afterwards: the allowed client gets through, an
intruder on the third host does not."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.test_multihost import HTTPD, cli, cluster, http_ok, start_network  # noqa: F401
from tests.support.hosts import wait


def in_container(host, container: str, *command: str, **kwargs) -> subprocess.Popen:
    pid = host.docker.inspect(container)["State"]["Pid"]
    return subprocess.Popen(["nsenter", "-t", str(pid), "-n", *command], **kwargs)


@pytest.mark.timeout(900)
def test_agents_killed_during_an_enforced_overlay_flow(cluster, tmp_path):  # noqa: F811
    start_network(cluster, "vxlan")
    h1, h2, h3 = cluster.hosts
    client = h1.run("cpy-mh", "-l", "app=client")
    server = h2.run("cpy-mh", "-l", "app=server", command=HTTPD)
    intruder = h3.run("cpy-mh", "-l", "app=intruder")
    server_ip = h2.docker.ip(server, "cpy-mh")
    wait(lambda: http_ok(h1, client, server_ip), 30, "the cluster to converge")
    policy = tmp_path / "server.yaml"
    policy.write_text("endpointSelector: {matchLabels: {app: server}}\n"
                      "ingress: [{fromEndpoints: [{matchLabels: {app: client}}],\n"
                      "  toPorts: [{ports: [{port: '80'}, {port: '5201'}]}]}]\n")
    revision = cli(h1.agent, "policy", "import", str(policy)).stdout.strip().rsplit(" ", 1)[1]
    cli(h2.agent, "policy", "wait", revision, "--timeout", "15")
    assert http_ok(h1, client, server_ip) and not http_ok(h3, intruder, server_ip)

    iperf_server = in_container(h2, server, "iperf3", "-s", "-1",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    flow = in_container(h1, client, "iperf3", "-c", server_ip, "-t", "8", "-i", "0.5", "-J",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        h1.agent.kill9()  # the sender's node
        h1.agent.start(timeout=60)
        h2.agent.kill9()  # the receiver's node, whose policy admits the flow
        h2.agent.start(timeout=60)
        out, err = flow.communicate(timeout=120)
    finally:
        if flow.poll() is None:
            flow.kill()
        if iperf_server.poll() is None:
            iperf_server.kill()
        iperf_server.wait(30)
    assert flow.returncode == 0, err or out[-500:]
    intervals = [i["sum"] for i in json.loads(out)["intervals"]]
    stalls = [i for i in intervals if i["bytes"] == 0]
    assert not stalls, f"{len(stalls)} of {len(intervals)} half-second intervals without traffic"
    # the restarted agents enforce the same policy
    assert http_ok(h1, client, server_ip)
    assert not http_ok(h3, intruder, server_ip), "the intruder got in after the restarts"
    sent = json.loads(out)["end"]["sum_sent"]["bytes"]
    print(f"overlay flow across two agent kills: {sent / 2**20:.0f} MiB in "
          f"{len(intervals)} intervals, none empty")
