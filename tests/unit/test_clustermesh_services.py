"""Global services (ciliumpy/clustermesh_services.py): the model's global/shared fields,
this node's share published to a real embedded store (and withdrawn), a remote
cluster's records followed and trusted only at its own endpoints, and the service
manager merging them into one sorted table that follows remote changes."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ciliumpy import clustermesh_remote as remote_mod
from ciliumpy.clustermesh_services import PREFIX, BackendPublisher, merge
from services.model import Service, parse_backend
from state.kvstore.base import Event
from state.kvstore.embedded import EmbeddedStore
from tests.unit.test_lb_incremental import World, ep, svc


def test_global_and_shared_are_validated_and_round_trip():
    plain = svc("web", "10.96.0.1")
    assert (plain.is_global, plain.shared) == (False, True)
    marked = svc("web", "10.96.0.1", **{"global": True, "shared": False})
    assert Service.from_json(marked.to_json()) == marked
    with pytest.raises(ValueError, match="shared: false needs global: true"):
        svc("web", "10.96.0.1", shared=False)
    with pytest.raises(ValueError, match="global 'yes' must be true or false"):
        svc("web", "10.96.0.1", **{"global": "yes"})


def test_merge_keeps_the_family_sorts_and_prefers_local():
    service = svc("web", "10.96.0.1", **{"global": True})
    local = [parse_backend("10.71.0.5:80")]
    remote = {parse_backend("10.72.0.9:80"): "b", parse_backend("10.71.0.5:80"): "b",
              parse_backend("[fd72::9]:80"): "b", parse_backend("10.70.0.1:80"): "c"}
    backends, clusters = merge(service, local, remote)
    assert [str(b) for b in backends] == ["10.70.0.1:80", "10.71.0.5:80", "10.72.0.9:80"]
    assert clusters == {"10.70.0.1:80": "c", "10.72.0.9:80": "b"}


def test_publisher_writes_this_nodes_share_under_its_lease_and_removes_it(tmp_path):
    kv = EmbeddedStore(str(tmp_path / "kv.db"))
    lease = kv.grant_lease(60)
    # an earlier run of this node left a key for a service it no longer publishes
    kv.put(f"{PREFIX}old/n1", json.dumps({"backends": ["10.71.0.1:80"]}))
    kv.put(f"{PREFIX}old/n2", json.dumps({"backends": ["10.71.1.1:80"]}))
    publisher = BackendPublisher(kv, "n1", lambda: lease)
    service = svc("web", "10.96.0.1", selector={"app": "web"}, **{"global": True},
                  backends=["10.9.9.9:80"])
    here, there = ep("10.71.0.5", app="web"), ep("10.71.1.5", app="web")
    here.node, there.node = "n1", "n2"
    publisher.offer(service, [here, there])
    publisher.offer(svc("local", "10.96.0.2", selector={"app": "web"}), [here])
    publisher.offer(svc("private", "10.96.0.3", selector={"app": "web"},
                        **{"global": True, "shared": False}), [here])
    publisher.publish()
    stored = {p.key[len(PREFIX):]: json.loads(p.value) for p in kv.list(PREFIX)}
    # only containers on this node; listed backends, other nodes, unshared: not shared
    assert stored == {"web/n1": {"backends": ["10.71.0.5:80"]},
                      "old/n2": {"backends": ["10.71.1.1:80"]}}
    publisher.drop("web")
    publisher.publish()
    assert [p.key for p in kv.list(PREFIX)] == [f"{PREFIX}old/n2"]
    publisher.offer(service, [here])
    publisher.publish()
    kv.revoke(lease)
    assert [p.key for p in kv.list(PREFIX)] == [f"{PREFIX}old/n2"], "gone with the lease"


def test_remote_records_count_only_at_the_remotes_own_endpoints(tmp_path):
    kv = EmbeddedStore(str(tmp_path / "b.db"))
    changes = []
    remote = remote_mod.RemoteCluster(
        "b", kv, 1, 60.0, lambda: {ipaddress.ip_network("10.71.0.0/16")},
        lambda cluster, events, services: changes.append(services))
    remote.cluster_id = 2
    kv.put(remote_mod.IPS + "n1/10.72.0.5", json.dumps({"identity": (2 << 16) | 300,
                                                      "node": "n1"}))
    kv.put(remote_mod.IPS + "n1/10.72.0.6", json.dumps({"identity": 2, "node": "n1"}))
    kv.put(f"{PREFIX}web/n1", json.dumps(
        {"backends": ["10.72.0.5:80", "10.72.0.6:80", "10.71.0.7:80", "1.1.1.1:80"]}))
    kv.put(f"{PREFIX}bad/n1", "{not json")
    kv.put(f"{PREFIX}Bad_Name/n1", json.dumps({"backends": []}))
    remote._load(remote_mod.IPS)
    remote._load(remote_mod.SERVICES)
    assert changes[-1] == {"web"}
    # 10.72.0.6 has a reserved identity, 10.71.0.7 is in our pool, 1.1.1.1 no endpoint
    assert [str(b) for b in remote.global_backends("web")] == ["10.72.0.5:80"]
    assert remote.view()["global_services"] == 1 and remote.services.rejected == 2
    # the endpoint going away drops it and names the service to re-resolve
    remote._apply(remote_mod.IPS, [Event("delete", remote_mod.IPS + "n1/10.72.0.5", None, 9)])
    assert changes[-1] == {"web"} and remote.global_backends("web") == []
    remote.withdrawn = True
    assert remote.global_backends("web") == []


def test_manager_merges_remote_backends_of_global_services_only():
    world = World()
    remote = {"web": {parse_backend("10.72.0.5:80"): "b"}}
    world.manager.mesh_backends = lambda name: dict(remote.get(name, {}))
    world.endpoints = [ep("10.71.0.5", app="web")]
    world.start([svc("web", "10.96.0.1", selector={"app": "web"}, **{"global": True}),
                 svc("plain", "10.96.0.2", selector={"app": "web"})])
    assert world.backends("web") == ["10.71.0.5:80", "10.72.0.5:80"]
    assert world.backends("plain") == ["10.71.0.5:80"]
    status = world.manager.describe(world.manager.services["web"])["status"]["backends"]
    assert [b["cluster"] for b in status] == [None, "b"]
    # local backends gone: the service still has b's
    assert world.set_endpoints([]) >= 1
    assert world.backends("web") == ["10.72.0.5:80"]
    # b's backends change: only the named global service is resolved again
    remote["web"] = {parse_backend("10.72.0.6:80"): "b"}
    before = world.manager.resolved
    world.manager.mesh_changed({"web", "unknown"})
    world.manager.process()
    assert world.manager.resolved - before == 1
    assert world.backends("web") == ["10.72.0.6:80"]
