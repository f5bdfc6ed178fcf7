"""Chaos through the real components (issue 17): Consul stops answering (its process
frozen with SIGSTOP, as a partition or a stuck server looks to its clients) while the
three-host harness runs traffic, `docker run`s and a policy import. Established traffic
across hosts keeps flowing; a new container either starts or fails saying why, within
bounded time; the import fails saying the kvstore is unavailable and changes nothing;
once Consul answers again (SIGCONT) everything converges without restarting an agent: a
container started on host2 afterwards is reachable from host1."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ciliumpy.apiclient import APIError
from tests.e2e.test_multihost import HTTPD, cluster, http_ok, start_network  # noqa: F401
from tests.support.hosts import wait


@pytest.mark.timeout(900)
def test_consul_outage_keeps_traffic_and_converges_after(cluster, tmp_path):  # noqa: F811
    start_network(cluster, "vxlan")
    h1, h2, _ = cluster.hosts
    client = h1.run("cpy-mh", "-l", "app=client")
    server = h2.run("cpy-mh", "-l", "app=server", command=HTTPD)
    server_ip = h2.docker.ip(server, "cpy-mh")
    wait(lambda: http_ok(h1, client, server_ip), 30, "the cluster to converge")
    revision_before = h1.agent.api("/v1/policy/revision")

    os.kill(cluster.consul.pid, signal.SIGSTOP)  # Consul stops answering, sockets stay open
    try:
        # established paths keep working: the datapath does not ask the kvstore
        for _ in range(5):
            assert http_ok(h1, client, server_ip), "traffic stopped with Consul"
        # a new container: started, or refused with a reason, within bounded time
        began = time.monotonic()
        run = h1.docker.run_cli("run", "-d", "--network", "cpy-mh", "-l", "app=late",
                                "ciliumpy/busybox", "sleep", "3600", check=False,
                                timeout=180)
        took = time.monotonic() - began
        if run.returncode == 0:
            h1.docker.containers.append(run.stdout.strip())
        else:
            assert run.stderr.strip(), "a failed docker run printed nothing"
            listed = h1.docker.run_cli("ps", "-aq", "--no-trunc", "--filter", "label=app=late"
                                       ).stdout.split()
            h1.docker.containers.extend(listed)
        assert took < 120, f"docker run took {took:.0f} s with Consul down"
        # a policy import fails with the kvstore named, and nothing changes
        policy = ("endpointSelector: {matchLabels: {app: server}}\n"
                  "ingress: [{fromEndpoints: [{matchLabels: {app: nobody}}]}]\n")
        with pytest.raises(APIError, match="(?i)kvstore|consul|unavailable|timed? ?out"):
            h1.agent.api_post("/v1/policy", {"text": policy, "name": "during-outage"})
        assert http_ok(h1, client, server_ip), "a failed import changed the datapath"
    finally:
        os.kill(cluster.consul.pid, signal.SIGCONT)
    print(f"with Consul frozen: docker run {'started' if run.returncode == 0 else 'failed'}"
          f" in {took:.1f} s: {(run.stderr or run.stdout).strip()[-200:]}")

    # Consul answers again: no agent restarted, state converges
    assert h1.agent.api("/v1/policy/revision")["revision"] == revision_before["revision"]
    late = h2.run("cpy-mh", "-l", "app=server2", command=HTTPD)
    late_ip = h2.docker.ip(late, "cpy-mh")
    wait(lambda: http_ok(h1, client, late_ip), 60,
         "a container started after the outage to be reachable from host1")
    assert http_ok(h1, client, server_ip)
