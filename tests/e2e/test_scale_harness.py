"""The scale harness, small (issue 17; the 1,000-node run is ``bench/scale.py``).

One real agent in vxlan mode and a real Consul; simulated nodes are written into Consul
as real agents write them (tests/support/scale.py). The agent must program a simulated
node's endpoint into its ipcache map and remove it when the node withdraws it, and its
Consul request rate at rest must not grow with the number of nodes (blocking queries,
not polling)."""

from __future__ import annotations

import time

import pytest

from ciliumpy.cluster import tunnel_ip
from tests.support.scale import (
    ENDPOINTS_PER_NODE,
    ID_WORLD,
    MapProbe,
    ScaleCluster,
    Simulator,
    measure_rest,
    wait_converged,
    wait_until,
)

pytestmark = pytest.mark.kernel
REST_SECONDS = 12.0


def test_agent_follows_simulated_nodes_and_rests_without_polling(tmp_path):
    cluster = ScaleCluster(tmp_path / "scale")
    sim = probe = None
    try:
        cluster.start()
        agent = cluster.start_real_agent("--gc-interval", "5")
        sim = Simulator(cluster)
        probe = MapProbe(agent.pin_dir)
        sim.grow(10)
        wait_converged(probe, sim, 30)
        status = agent.api("/v1/status")["cluster"]
        assert len(status["remote_nodes"]) == 10
        assert status["remote_endpoints"] == 10 * ENDPOINTS_PER_NODE

        node = sim.nodes[4]
        number = sim.apps[sim.app_of(node, 0)]
        address, start = sim.add_endpoint(node, number)
        took = wait_until(lambda: probe.identity_of(address) == number, start, 10)
        entries = {e["prefix"]: e for e in agent.api("/v1/bpf/ipcache")}
        assert entries[f"{address}/32"]["identity"] == number
        assert entries[f"{address}/32"]["tunnel_ip"] == tunnel_ip(node.ip), \
            "the endpoint must be reached through its node's tunnel"
        start = sim.delete_endpoint(node, address)
        wait_until(lambda: probe.identity_of(address) == ID_WORLD, start, 10)
        assert f"{address}/32" not in {e["prefix"] for e in agent.api("/v1/bpf/ipcache")}
        print(f"endpoint of a simulated node in the ipcache after {took * 1000:.0f} ms")

        time.sleep(2)
        small = measure_rest(cluster, REST_SECONDS)
        sim.grow(40)
        wait_converged(probe, sim, 30)
        time.sleep(2)
        large = measure_rest(cluster, REST_SECONDS)
        print(f"at rest: 10 nodes {small.rate:.2f} req/s {dict(small.requests)}; "
              f"40 nodes {large.rate:.2f} req/s {dict(large.requests)}")
        assert small.rate > 0, "no request of the agent was counted: the count is broken"
        assert large.rate <= small.rate * 1.25 + 0.25, (
            f"the agent's Consul requests grew with the cluster: {small.requests} at 10 "
            f"nodes, {large.requests} at 40 nodes in {REST_SECONDS:.0f} s")
    finally:
        if probe is not None:
            probe.close()
        if sim is not None:
            sim.close()
        cluster.stop()
