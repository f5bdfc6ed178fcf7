"""Identities from container labels, through the real dockerd, and the identity
allocator shared by two agents through a real Consul."""

from __future__ import annotations

import concurrent.futures
import random
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.consul import ConsulAgent
from tests.support.docker import Docker, ping
from tests.support.wait import wait_for

COMPOSE = Path(__file__).resolve().parents[2] / "examples" / "compose" / "docker-compose.yml"


def endpoint_of(agent, container_id):
    for endpoint in agent.api("/v1/endpoints"):
        if endpoint["container_id"] == container_id:
            return endpoint
    return None


def identity_of(agent, container_id, minimum=256):
    endpoint = endpoint_of(agent, container_id)
    if endpoint and endpoint["identity"] >= minimum:
        return endpoint
    return None


def test_container_labels_become_a_shared_identity_within_2s(agent, docker):
    docker.network_create("cpy-id", "--subnet", "10.71.0.0/16")
    start = time.time()
    first = docker.run("cpy-id", "-l", "app=web", "-l", "tier=front")
    returned = time.time()
    endpoint = wait_for(lambda: identity_of(agent, docker.inspect(first)["Id"]), timeout=5)
    assert endpoint, "no identity for a labelled container"
    assert time.time() - returned <= 2.0, f"identity after {time.time() - start:.2f}s"
    assert endpoint["labels"] == ["container:app=web", "container:tier=front"]
    second = docker.run("cpy-id", "-l", "tier=front", "-l", "app=web")
    other = wait_for(lambda: identity_of(agent, docker.inspect(second)["Id"]), timeout=5)
    assert other["identity"] == endpoint["identity"]
    shown = agent.api(f"/v1/identities/{endpoint['identity']}")
    assert shown["labels"] == endpoint["labels"]
    assert set(shown["endpoints"]) == {endpoint["endpoint_id"], other["endpoint_id"]}
    assert shown["nodes"] == [agent.api("/v1/status")["node"]]


def test_unlabelled_container_leaves_init_and_label_change_moves_identity(agent, docker):
    docker.network_create("cpy-id2", "--subnet", "10.72.0.0/16")
    plain = docker.run("cpy-id2")
    endpoint = wait_for(lambda: identity_of(agent, docker.inspect(plain)["Id"]), timeout=5)
    assert endpoint["labels"] == [] and endpoint["identity"] >= 256
    name = "cpy-relabel-" + uuid.uuid4().hex[:6]
    old = docker.run("cpy-id2", "-l", "app=v1", name=name)
    before = wait_for(lambda: identity_of(agent, docker.inspect(old)["Id"]), timeout=5)
    docker.rm(old)
    new = docker.run("cpy-id2", "-l", "app=v2", name=name)
    after = wait_for(lambda: identity_of(agent, docker.inspect(new)["Id"]), timeout=5)
    assert after["labels"] == ["container:app=v2"]
    assert after["identity"] != before["identity"]
    old_identity = agent.api(f"/v1/identities/{before['identity']}")
    assert old_identity["nodes"] == [] and old_identity["endpoints"] == []


def test_compose_example(agent, docker_ready, tmp_path):
    project = "cpy" + uuid.uuid4().hex[:6]
    base = ["docker-compose", "-p", project, "-f", str(COMPOSE)]
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "DOCKER_HOST": "unix:///run/docker.sock"}

    def compose(*args):
        return subprocess.run(base + list(args), capture_output=True, text=True, env=env,
                              timeout=300)

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        ids = compose("ps", "-q").stdout.split()
        assert len(ids) == 3
        client = Docker()
        found = {}
        for cid in ids:
            full = client.inspect(cid)["Id"]
            endpoint = wait_for(lambda full=full: identity_of(agent, full), timeout=10)
            assert endpoint, f"container {cid} has no identity"
            found[full] = endpoint
        web = [e for e in found.values() if "container:app=web" in e["labels"]]
        api = [e for e in found.values() if "container:app=api" in e["labels"]]
        assert len(web) == 1 and len(api) == 2
        assert web[0]["labels"] == ["container:app=web", "container:tier=front",
                                    "network:env=demo"]
        assert api[0]["identity"] == api[1]["identity"] != web[0]["identity"]
        assert not any(label.startswith("container:com.docker.compose")
                       for e in found.values() for label in e["labels"])
        again = compose("up", "-d")
        assert again.returncode == 0, again.stderr
        assert "needs to be recreated" not in again.stderr
        assert "Recreating" not in again.stderr
        assert sorted(compose("ps", "-q").stdout.split()) == sorted(ids)
        web_ip = client.inspect(web[0]["container_id"])["NetworkSettings"]["Networks"]
        address = next(iter(web_ip.values()))["IPAddress"]
        assert "ciliumpy test page" in client.exec(api[0]["container_id"], "wget", "-qO-",
                                                   f"http://{address}/").stdout
        # the api replicas join service shop-api by their ciliumpy.service label
        agent.api_put("/v1/services/shop-api", {"frontend": "10.96.88.20:8080"})
        joined = wait_for(lambda: len(agent.api("/v1/services/shop-api")["status"][
            "backends"]) == 2, timeout=5)
        assert joined, agent.api("/v1/services/shop-api")
        assert "ciliumpy test page" in client.exec(web[0]["container_id"], "wget", "-qO-",
                                                   "http://10.96.88.20:8080/").stdout
    finally:
        agent.api_delete("/v1/services/shop-api")
        down = compose("down")
        assert down.returncode == 0, down.stderr


# ---- two agents, one real Consul --------------------------------------------------
@pytest.fixture(scope="module")
def consul_server():
    server = ConsulAgent(persistent=True)
    server.start()
    yield server
    server.stop()


def consul_agent(scratch_agent, consul_server, node, *extra):
    return scratch_agent("--kvstore", "consul", "--kvstore-opt",
                         f"consul.address={consul_server.address}", "--node-name", node,
                         "--lease-ttl", "10", "--gc-interval", "1", *extra)


def allocate_all(agent, label_sets, workers=8):
    def one(labels):
        return agent.api_post("/v1/identities", {"labels": labels})["id"]

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(map(tuple, label_sets), pool.map(one, label_sets), strict=True))


@pytest.mark.timeout(300)
def test_two_agents_race_on_200_label_sets_then_one_dies(scratch_agent, consul_server):
    tag = uuid.uuid4().hex[:6]
    a = consul_agent(scratch_agent, consul_server, f"node-a-{tag}")
    b = consul_agent(scratch_agent, consul_server, f"node-b-{tag}")
    label_sets = [[f"container:app=svc{i}", f"container:run={tag}"] for i in range(200)]
    shuffled = random.sample(label_sets, len(label_sets))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        from_a, from_b = pool.map(lambda args: allocate_all(*args),
                                  [(a, label_sets), (b, shuffled)])
    assert from_a == from_b, "both agents must see the same number for each label set"
    numbers = sorted(from_a.values())
    assert len(set(numbers)) == 200 and numbers[0] >= 256
    listed = [i for i in a.api("/v1/identities") if f"container:run={tag}" in i["labels"]]
    span = max(i["id"] for i in listed) - min(i["id"] for i in listed) + 1
    assert span - 200 <= 2, f"{span - 200} holes; the bound is one per racing node"
    nodes = {n["name"] for n in a.api("/v1/nodes")}
    assert {f"node-a-{tag}", f"node-b-{tag}"} <= nodes
    only_b = b.api_post("/v1/identities", {"labels": [f"container:only=b{tag}"]})["id"]
    shared = from_a[tuple(label_sets[0])]

    b.kill9()
    killed = time.time()
    gone = wait_for(lambda: f"node-b-{tag}" not in {n["name"] for n in a.api("/v1/nodes")},
                    timeout=60, interval=0.5)
    assert gone, "the dead agent's node entry outlived its lease"
    assert time.time() - killed <= 2 * 10 + 5, "Consul expires a session within 2 x TTL"
    refs = a.api(f"/v1/identities/{shared}")["nodes"]
    assert refs == [f"node-a-{tag}"], "the survivor's reference stays, the dead one's goes"
    assert a.api(f"/v1/identities/{only_b}")["nodes"] == []
    assert a.api(f"/v1/identities/{shared}")["labels"] == list(label_sets[0])


@pytest.mark.timeout(300)
def test_consul_outage_keeps_identities_and_recovers_without_restart(consul_server,
                                                                     workdir, docker_ready):
    """An agent on a Docker-visible socket with the Consul backend: while Consul is
    stopped, running endpoints keep identity and connectivity, a new container waits at
    reserved:init with a clear error; Consul back, it gets its identity, no restart."""
    name = "ciliumpy-kv" + uuid.uuid4().hex[:6]
    state = workdir / name
    state.mkdir()
    instance = Agent(state, f"/run/docker/plugins/{name}.sock", str(state / "api.sock"),
                     ["--kvstore", "consul", "--kvstore-opt",
                      f"consul.address={consul_server.address}", "--kvstore-opt",
                      "consul.timeout=2", "--lease-ttl", "10", "--node-name", name])
    instance.start()
    client = Docker()
    try:
        proc = client.run_cli("network", "create", "-d", name, "--ipam-driver", name,
                              "--subnet", "10.73.0.0/16", name)
        client.networks.append(proc.stdout.strip())
        first = client.run(name, "-l", "app=kept")
        second = client.run(name, "-l", "app=peer")
        kept = wait_for(lambda: identity_of(instance, client.inspect(first)["Id"]), timeout=10)
        assert kept
        # both running endpoints settle before the outage (the ping below is between them)
        assert wait_for(lambda: identity_of(instance, client.inspect(second)["Id"]), timeout=10)

        consul_server.stop()
        late = client.run(name, "-l", "app=late")
        late_id = client.inspect(late)["Id"]
        waiting = wait_for(lambda: (endpoint_of(instance, late_id) or {}).get("identity_error"),
                           timeout=30)
        assert waiting and "unreachable" in waiting
        assert endpoint_of(instance, late_id)["identity"] == 5, "init until labels resolve"
        assert identity_of(instance, client.inspect(first)["Id"])["identity"] == kept["identity"]
        assert ping(client, second, client.ip(first, name))
        assert instance.api("/v1/status")["kvstore"]["healthy"] is False

        consul_server.start()
        recovered = wait_for(lambda: identity_of(instance, late_id), timeout=60, interval=0.5)
        assert recovered and recovered["labels"] == ["container:app=late"]
        assert recovered["identity_error"] is None
        assert instance.proc.poll() is None, "recovered without a restart"
        assert wait_for(lambda: instance.api("/v1/status")["kvstore"]["lease"], timeout=30)
    finally:
        if consul_server.proc is None or consul_server.proc.poll() is not None:
            consul_server.start()
        client.cleanup()
        instance.stop()


def test_unused_identity_is_garbage_collected_after_grace(workdir, docker_ready):
    """A container's identity loses this node's reference when the container goes;
    after the grace period the GC removes it from the kvstore; one in use stays."""
    name = "ciliumpy-gc" + uuid.uuid4().hex[:6]
    state = workdir / name
    state.mkdir()
    instance = Agent(state, f"/run/docker/plugins/{name}.sock", str(state / "api.sock"),
                     ["--identity-gc-grace", "1", "--gc-interval", "0.5", "--node-name", name])
    instance.start()
    client = Docker()
    try:
        proc = client.run_cli("network", "create", "-d", name, "--ipam-driver", name,
                              "--subnet", "10.78.0.0/16", name)
        client.networks.append(proc.stdout.strip())
        gone = client.run(name, "-l", "app=short-lived")
        kept = client.run(name, "-l", "app=kept")
        short = wait_for(lambda: identity_of(instance, client.inspect(gone)["Id"]))
        stays = wait_for(lambda: identity_of(instance, client.inspect(kept)["Id"]))
        assert short and stays
        client.rm(gone)
        from ciliumpy.apiclient import APIError

        def collected():
            try:
                instance.api(f"/v1/identities/{short['identity']}")
                return False
            except APIError as exc:
                return "does not exist" in str(exc)

        assert wait_for(collected, timeout=20, interval=0.2), "unused identity not collected"
        assert instance.api(f"/v1/identities/{stays['identity']}")["nodes"] == [name]
        assert "garbage-collected identity" in instance.log()
    finally:
        client.cleanup()
        instance.stop()
