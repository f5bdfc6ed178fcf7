"""Cluster Mesh, layer 2: following a remote cluster's real Consul read-only.

Two real Consul agents, one per cluster. Cluster b's state is written the way b's agents
write it (``nodes.register``, ``IdentityAllocator`` with b's cluster ID, ``ip/v2/``
entries, the cluster config record); cluster a's ``ClusterMesh`` follows it: nodes,
endpoints and identities arrive through blocking queries, identities outside b's range
are refused, overlapping pools are reported, backends b shares for a global service
count only at b's own endpoints, b's Consul going away keeps the last state (backends
included) for the retention time and then withdraws it, and b coming back restores
everything and shows what changed meanwhile, without restarting anything. ``stop`` ends
every follower thread and closes the client's connections to b's Consul."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ciliumpy import endpoint_records as records
from ciliumpy import nodes
from ciliumpy.clustermesh import CONFIG_KEY, ClusterMesh, MeshError, publish_config
from ciliumpy.clustermesh_services import PREFIX as GLOBAL_SERVICES
from ciliumpy.identities import IdentityAllocator
from policies.labels import LabelFilter, identity_labels, parse
from policies.parser import parse_text
from services.model import parse_backend
from state.kvstore.consul import ConsulStore
from tests.support.consul import ConsulAgent
from tests.support.hosts import wait


@pytest.fixture
def consuls():
    a, b = ConsulAgent(), ConsulAgent(persistent=True)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _b_endpoint(kv, allocator, lease, address: str, app: str, node: str = "b1",
                new_lease: bool = False) -> int:
    labels = identity_labels({"app": app}, None, None, [], LabelFilter(), cluster="b")
    number = allocator.allocate(labels, lease).number
    records.write(kv, node, lease, {address: json.dumps({"identity": number, "node": node})},
                  set(), take_over=new_lease)  # as b1's agent restarted with a new lease
    return number


@pytest.mark.timeout(120)
def test_follow_remote_cluster_through_an_outage(consuls):
    consul_a, consul_b = consuls
    kv_a, kv_b = ConsulStore({"consul.address": consul_a.address}), ConsulStore(
        {"consul.address": consul_b.address})
    publish_config(kv_b, "b", 2)
    with pytest.raises(MeshError, match="every agent of a cluster needs the same name and ID"):
        publish_config(kv_b, "b", 3)
    lease_b = kv_b.grant_lease(60)
    nodes.register(kv_b, nodes.Node("b1", "10.9.0.2", "vxlan", ["10.72.0.0/26"]), lease_b)
    web = _b_endpoint(kv_b, IdentityAllocator(kv_b, "b1", cluster_id=2), lease_b,
                      "10.72.0.5", "web")
    assert web == (2 << 16) | 256
    # an endpoint claiming an identity of cluster a (1 << 16 | 256): refused, fails closed
    records.write(kv_b, "b1", lease_b, {"10.72.0.6": json.dumps(
        {"identity": (1 << 16) | 256, "node": "b1"})}, set())
    kv_b.put("ciliumpy/state/identities/v1/id/65792", json.dumps(["k8s:cluster=a"]))
    # a pool of b overlapping one of a's
    kv_a.put("ciliumpy/state/ipam/v1/10.71.0.0_16/blocks/10.71.0.0_26", "a1")
    kv_b.put("ciliumpy/state/ipam/v1/10.71.5.0_24/blocks/10.71.5.0_26", "b1")
    # b's node b1 shares its backends of global service web (one is no endpoint of b's)
    kv_b.put(GLOBAL_SERVICES + "web/b1", json.dumps(
        {"backends": ["10.72.0.5:80", "10.72.0.99:80"]}), lease=lease_b)

    mesh = ClusterMesh(kv_a, "a", 1, {"b": {"consul.address": consul_b.address}},
                       retention=4.0, open_store=ConsulStore)
    policy: dict[int, list[str]] = {}

    def identity_events(events):
        for event in events:
            number = int(event.key.rsplit("/", 1)[1])
            if event.kind == "put":
                policy[number] = json.loads(event.value)
            else:
                policy.pop(number, None)

    mesh.on_identities = identity_events
    services: list[set[str]] = []
    mesh.on_services = services.append
    mesh.start()
    try:
        status = wait(lambda: (v := mesh.view()["clusters"][0])["connected"] and v, 15,
                      "cluster b to be followed")
        assert json.loads(kv_a.get(CONFIG_KEY).value) == {"id": 1, "name": "a"}
        assert (status["cluster_id"], status["nodes"], status["endpoints"],
                status["identities"]) == (2, 1, 1, 1)
        assert status["rejected"] >= 2
        assert status["overlaps"] == ["10.71.5.0/24 (cluster b) overlaps 10.71.0.0/16 "
                                      "(this cluster)"]
        found_nodes, ips = mesh.snapshot()
        assert list(found_nodes) == ["b/b1"] and found_nodes["b/b1"].ip == "10.9.0.2"
        assert ips == {"10.72.0.5": {"identity": web, "node": "b/b1"}}
        assert policy == {web: ["container:app=web", "k8s:cluster=b",
                                "k8s:io.cilium.k8s.policy.cluster=b"]}
        assert [r["cluster"] for r in mesh.node_rows()] == ["b"]
        assert {"web"} in services and status["global_services"] == 1
        assert mesh.global_backends("web") == {parse_backend("10.72.0.5:80"): "b"}
        # the labels select by cluster, as a policy on a's side would
        rule = parse_text("endpointSelector: {}\ningress:\n- fromEndpoints:\n"
                          "  - matchLabels: {cluster: b, app: web}\n")[0].rules[0]
        assert rule.ingress[0].endpoints[0].matches([parse(t) for t in policy[web]])

        # a change in b arrives through the watch
        db = _b_endpoint(kv_b, IdentityAllocator(kv_b, "b1", cluster_id=2), lease_b,
                         "10.72.0.7", "db")
        wait(lambda: "10.72.0.7" in mesh.snapshot()[1] and db in policy, 10,
             "b's new endpoint and identity")

        # b's Consul goes away: last state kept, status says so
        consul_b.stop()
        stopped = time.monotonic()
        down = wait(lambda: (v := mesh.view()["clusters"][0])["connected"] is False and v,
                    10, "b to show as disconnected")
        assert down["error"] and not down["withdrawn"]
        assert "10.72.0.7" in mesh.snapshot()[1] and db in policy
        assert list(mesh.global_backends("web")) == [parse_backend("10.72.0.5:80")]
        services.clear()
        # after the retention time: withdrawn, identities gone from the policy
        wait(lambda: mesh.view()["clusters"][0]["withdrawn"], 10, "b's state to be withdrawn")
        assert time.monotonic() - stopped >= 3.0
        assert mesh.snapshot() == ({}, {}) and policy == {} and mesh.node_rows() == []
        assert mesh.identities() == {}
        assert mesh.global_backends("web") == {} and {"web"} in services

        # b's Consul back with its data, and a new endpoint: followed again, no restart
        consul_b.start()
        kv_b2 = ConsulStore({"consul.address": consul_b.address})
        lease_b2 = wait(lambda: _try_lease(kv_b2), 20, "b's Consul to take writes")
        cache = _b_endpoint(kv_b2, IdentityAllocator(kv_b2, "b2", cluster_id=2), lease_b2,
                            "10.72.0.9", "cache", node="b1", new_lease=True)
        back = wait(lambda: (v := mesh.view()["clusters"][0])["connected"]
                    and "10.72.0.9" in mesh.snapshot()[1] and v, 30, "b to be followed again")
        assert not back["withdrawn"] and cache in policy and web in policy
    finally:
        mesh.stop()
    # stopped: no follower thread left, no connection to b's Consul open
    assert mesh.threads() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("mesh")]
    for client in (kv_b, kv_b2):
        client.close()
    assert _connections_to(int(consul_b.address.rsplit(":", 1)[1])) == 0


def _connections_to(port: int) -> int:
    """This process's TCP connections to ``port`` on loopback (its sockets' inodes
    matched against /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] == "01":
                count += 1
    return count


def _try_lease(kv):
    try:
        return kv.grant_lease(60)
    except Exception:
        return None
