"""Policy entries written in batches (issue 17) against real BPF maps: a large import
through the policy and endpoint managers leaves exactly the map contents the
one-syscall-per-key writer left (keys built by the ctypes ``maps.policy_key``, each
key's value the highest proxy port of the entries on it), deny keys are written before
allow keys change and removed after, and other maps are written after the pending
policy keys."""

from __future__ import annotations

import collections
import os
import shutil

import pytest

from ciliumpy import policy_store as repository
from ciliumpy.endpoints import EndpointManager
from ciliumpy.identities import IdentityAllocator
from ciliumpy.policy_manager import PolicyManager
from datapath import maps
from datapath.datapath import Datapath, PolicyEntry
from driver.model import Endpoint
from policies.parser import parse_documents
from state.kvstore.base import Event
from state.kvstore.embedded import EmbeddedStore
from tests.support.agent import new_pin_dir

ENDPOINTS, RULES = 5, 1200
HOST_MAC = "02:00:00:00:00:01"


@pytest.fixture(scope="module")
def datapath():
    pin_dir = new_pin_dir()
    os.makedirs(pin_dir)
    dp = Datapath(pin_dir)
    dp.start()
    real_set_endpoint = dp.set_endpoint
    # no veth behind these endpoints: the host MAC cannot be read from an interface
    dp.set_endpoint = lambda *args, **kw: real_set_endpoint(*args, host_mac=HOST_MAC, **kw)
    yield dp
    dp.stop()
    shutil.rmtree(pin_dir, ignore_errors=True)


def expected_maps(entries) -> dict[str, set[tuple[bytes, bytes]]]:
    """What the per-key writer wrote for ``entries``, built with the ctypes structs."""
    ports: dict[tuple[bool, bytes], list[int]] = collections.defaultdict(list)
    for e in entries:
        direction = maps.DIR_INGRESS if e.direction == "ingress" else maps.DIR_EGRESS
        for port, bits in maps.port_prefixes(e.port, e.end_port or e.port):
            key = maps.policy_key(e.ep, direction, e.identity, e.proto, port, bits)
            ports[(e.deny, bytes(key))].append(e.proxy_port)
    result: dict[str, set[tuple[bytes, bytes]]] = {"allow": set(), "deny": set()}
    for (deny, key), proxies in ports.items():
        value = maps.PolicyVal()
        value.flags = maps.POLICY_DENY if deny else 0
        value.proxy_port = max(proxies)
        result["deny" if deny else "allow"].add((key, bytes(value)))
    return result


def map_contents(dp: Datapath) -> dict[str, set[tuple[bytes, bytes]]]:
    return {kind: {(bytes(k), bytes(v)) for k, v in dp.maps[f"cp_policy_{kind}_v1"].items()}
            for kind in ("allow", "deny")}


def big_policy(rules: int, http_every: int) -> dict:
    """Rules allowing the endpoints' own identity on single ports and port ranges; every
    ``http_every``-th also with HTTP rules on its port (an L7 and an L4-only entry on
    one map key: the key redirects to the proxy); deny ranges on egress."""
    specs = []
    for i in range(rules):
        port: dict = {"port": str(1000 + i), "protocol": "TCP"}
        if i % 10 and i % 7:
            port["endPort"] = 1000 + i + i % 7
        ingress = [{"fromEndpoints": [{"matchLabels": {"app": "batch"}}],
                    "toPorts": [{"ports": [port]}]}]
        if i % http_every == 0:
            ingress.append({"fromEndpoints": [{"matchLabels": {"app": "batch"}}],
                            "toPorts": [{"ports": [{"port": str(1000 + i), "protocol": "TCP"}],
                                         "rules": {"http": [{"method": "GET"}]}}]})
        first = 20000 + i % 300
        specs.append({"endpointSelector": {"matchLabels": {"app": "batch"}},
                      "ingress": ingress,
                      "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "batch"}}],
                                      "toPorts": [{"ports": [{"port": str(first),
                                                              "endPort": first + 50,
                                                              "protocol": "UDP"}]}]}]})
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "batch"}, "specs": specs}


def test_large_import_writes_what_the_per_key_writer_wrote(datapath, tmp_path):
    kv = EmbeddedStore(str(tmp_path / "kv.db"))
    allocator = IdentityAllocator(kv, "node")
    identity = allocator.allocate(["container:app=batch"], kv.grant_lease(600))
    endpoints = [Endpoint(f"ep{i}", "net", f"h{i}", f"p{i}", f"02:00:00:00:01:{i:02x}",
                          ipv4=f"10.77.0.{i + 2}/24", ifindex=60000 + i,
                          identity=identity.number, labels=["container:app=batch"])
                 for i in range(ENDPOINTS)]
    owner: list[EndpointManager] = []
    manager = PolicyManager(kv, datapath, allocator, "default",
                            on_change=lambda: owner[0].sync_all())
    owner.append(EndpointManager(datapath, manager, "default", lambda: endpoints,
                                 proxy_ports={"http": 15001}))
    manager.refresh()
    for endpoint in endpoints:
        owner[0].created(endpoint, attach=False)

    def put(document: dict | None) -> None:
        if document is None:
            repository.delete(kv, ["batch"])
            manager._policy_events([Event("delete", repository.ITEMS + "batch", None, 0)])
            return
        repository.store(kv, parse_documents([document], "test", "batch"))
        value = kv.get(repository.ITEMS + "batch").value
        manager._policy_events([Event("put", repository.ITEMS + "batch", value, 0)])

    put(big_policy(RULES, http_every=10))
    entries = set(datapath.entries)
    assert len(entries) >= ENDPOINTS * RULES
    assert any(e.proxy_port for e in entries) and any(e.deny for e in entries)
    assert map_contents(datapath) == expected_maps(entries)

    # most entries removed; half of the HTTP rules go, so their keys stop redirecting
    put(big_policy(RULES // 3, http_every=20))
    assert map_contents(datapath) == expected_maps(datapath.entries)
    assert len(datapath.entries) < len(entries)
    redirected = {v for _k, v in map_contents(datapath)["allow"]
                  if maps.PolicyVal.from_buffer_copy(v).proxy_port}
    assert redirected and len(redirected) < len(expected_maps(entries)["allow"])

    datapath.stop()  # a restart reads the same entries back from the pins
    again = Datapath(datapath.pin_dir)
    again.start()
    assert map_contents(again) == map_contents(datapath)

    put(None)
    assert map_contents(datapath) == {"allow": set(), "deny": set()}
    assert not datapath.entries


def test_flush_order_denies_first_and_other_maps_after(datapath, monkeypatch):
    ep = 61000
    old_allow = PolicyEntry(ep, "ingress", 7, 6, 80)
    old_deny = PolicyEntry(ep, "ingress", 8, 6, 80, deny=True)
    for entry in (old_allow, old_deny):
        datapath.add_policy(entry)
    calls = []
    for kind in ("allow", "deny"):
        table = datapath.maps[f"cp_policy_{kind}_v1"]
        for method in ("update_batch", "delete_batch"):
            real = getattr(table, method)
            monkeypatch.setattr(table, method, lambda *a, _r=real, _n=(method, kind): (
                calls.append(_n), _r(*a))[1])
    monkeypatch.setattr(datapath.maps["cp_endpoints_v2"], "update", lambda *a: calls.append(
        ("update", "endpoint")))
    with datapath.batched():
        datapath.remove_policy(old_allow)
        datapath.remove_policy(old_deny)
        datapath.add_policy(PolicyEntry(ep, "ingress", 9, 6, 80))
        datapath.add_policy(PolicyEntry(ep, "ingress", 10, 6, 80, deny=True))
        assert calls == [], "deferred until the block ends or another map is written"
        datapath.set_endpoint(ep, 5, True, False, "02:00:00:00:02:01", [])
        datapath.add_policy(PolicyEntry(ep, "egress", 9, 6, 80))
    assert calls == [("update_batch", "deny"), ("update_batch", "allow"),
                     ("delete_batch", "allow"), ("delete_batch", "deny"),
                     ("update", "endpoint"), ("update_batch", "allow")]
    monkeypatch.undo()
    with datapath.batched():
        for entry in list(datapath.entries):
            if entry.ep == ep:
                datapath.remove_policy(entry)
    assert not [e for e in datapath.entries if e.ep == ep]


def test_added_and_removed_in_one_batch_never_reaches_the_map(datapath):
    entry, kept = PolicyEntry(62000, "egress", 11, 17, 53), PolicyEntry(62000, "egress", 12, 17, 53)
    with datapath.batched():
        datapath.add_policy(entry)
        datapath.remove_policy(entry)  # a delete of a key never written: skipped
        datapath.add_policy(kept)
    allow = map_contents(datapath)["allow"]
    assert expected_maps([kept])["allow"] <= allow
    assert not expected_maps([entry])["allow"] & allow
    datapath.remove_policy(kept)
    assert not expected_maps([kept])["allow"] & map_contents(datapath)["allow"]


def test_delete_batch_skips_missing_keys(datapath):
    table = datapath.maps["cp_policy_allow_v1"]
    keys = [bytes(maps.policy_key(63000, maps.DIR_EGRESS, n, 17, 53, 16)) for n in range(5)]
    table.update_batch(keys[1::2], [maps.policy_value_bytes(False, 0)] * 2)
    assert table.delete_batch(keys) == 2  # 1 and 3; 0, 2 and 4 were never there
    assert not {k for k, _v in map_contents(datapath)["allow"]} & set(keys)
