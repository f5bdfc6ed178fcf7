"""Fixtures of the fuzz tests: the ``world`` every mutated body refers to, and the check
that each test leaves the agent's state exactly as it found it (autouse here only)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.docker import Docker
from tests.support.fuzz import (
    SUBNET,
    World,
    assert_same,
    snapshot,
)
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def world(agent, docker_ready):
    client = Docker()
    name = "cpy-fuzz-" + uuid.uuid4().hex[:6]
    try:
        network_id = client.network_create(name, "--subnet", SUBNET).stdout.strip()
        container_id = client.run(network_id, "--label", "app=fuzz", name=name + "-c")
        settings_ = client.inspect(container_id)["NetworkSettings"]["Networks"][name]

        def labelled():
            found = [e for e in agent.api("/v1/endpoints")
                     if e["endpoint_id"] == settings_["EndpointID"]]
            return found[0] if found and found[0]["labels"] and found[0]["identity"] != 5 \
                else None

        endpoint = wait_for(labelled, timeout=30)
        assert endpoint, "the world's container got no identity"
        pool_id = next(p["pool_id"] for p in agent.api("/v1/ipam")["pools"]
                       if p["pool"] == SUBNET)
        agent.api_post("/v1/reconcile", {})  # settle what earlier tests left to collect
        stable = wait_for(lambda: _stable(agent), timeout=30, interval=0.5)
        assert stable, "the agent's state did not settle"
        yield World(network_id, settings_["EndpointID"], container_id, name + "-c", pool_id,
                    settings_["IPAddress"], settings_["Gateway"], endpoint["ifindex"],
                    baseline=stable)
    finally:
        client.cleanup()


def _stable(agent) -> dict | None:
    first = snapshot(agent)
    time.sleep(0.3)
    return first if snapshot(agent) == first else None


@pytest.fixture(autouse=True)
def state_unchanged(request, agent, world):
    """Every test (one method or route) leaves the agent's state exactly as it was."""
    before = snapshot(agent)
    yield
    assert_same(before, snapshot(agent), request.node.name)
