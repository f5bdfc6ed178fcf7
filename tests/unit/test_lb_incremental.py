"""Service changes cost O(that service) (ciliumpy/lb.py, services/index.py,
datapath/lb.py): a service stored or deleted is the only one resolved; endpoints
appearing or disappearing re-resolve only the services they concern; and whatever the
order of changes, the incremental path ends where a full sync from scratch does.
The datapath is the real ServiceTables over dict-backed maps."""

from __future__ import annotations

import json
import random

import pytest

from ciliumpy import service_store
from ciliumpy.lb import ClusterEndpoint, ServiceManager
from datapath import maps
from datapath.lb import Address, ServiceTables, _IdPool
from services.index import EndpointIndex, SelectorIndex
from services.model import Service
from state.kvstore.base import Event


class FakeMap:
    """A BPF map as a dict of key bytes; counts writes."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple] = {}
        self.writes = 0

    def update(self, key, value) -> None:
        self.writes += 1
        self.data[bytes(key)] = (type(key).from_buffer_copy(bytes(key)),
                                 type(value).from_buffer_copy(bytes(value)))

    def update_batch(self, keys: list, values: list) -> None:
        for key, value in zip(keys, values, strict=True):
            self.update(key, value)

    def delete(self, key) -> bool:
        return self.data.pop(bytes(key), None) is not None

    def items(self) -> list[tuple]:
        return list(self.data.values())


MAP_NAMES = ("cp_lb_services_v1", "cp_lb_maglev_v1", "cp_lb_backends_v1", "cp_lb_netns_v1",
             "cp_lb_config_v1")


def fake_maps() -> dict[str, FakeMap]:
    return {name: FakeMap() for name in MAP_NAMES}


def svc(name: str, vip: str, **fields) -> Service:
    fields.setdefault("maglev_size", 251)
    return Service.from_json({"name": name, "frontend": f"{vip}:80", **fields})


def ep(addr: str, **labels: str) -> ClusterEndpoint:
    return ClusterEndpoint({k.replace("_", "."): v for k, v in labels.items()}, [addr])


class World:
    """A manager, its tables and the cluster's endpoints, driven synchronously."""

    def __init__(self, bpf_maps: dict[str, FakeMap] | None = None) -> None:
        self.maps = bpf_maps or fake_maps()
        self.tables = ServiceTables(self.maps)
        self.endpoints: list[ClusterEndpoint] = []
        self.manager = ServiceManager(None, self.tables, lambda: list(self.endpoints))

    def start(self, services: list[Service]) -> int:
        self.manager.reload({s.name: s for s in services})
        return self.manager.process()

    def store(self, service: Service) -> int:
        self.manager.stored(service)
        return self.manager.process()

    def delete(self, name: str) -> int:
        self.manager.removed(name)
        return self.manager.process()

    def set_endpoints(self, endpoints: list[ClusterEndpoint]) -> int:
        self.endpoints = endpoints
        self.manager.kick()
        return self.manager.process()

    def backends(self, name: str) -> list[str]:
        return [str(b) for b in self.manager.programmed[name].backends]

    def state(self) -> tuple:
        """What the datapath serves: frontend -> backends per slot, by address."""
        by_id = {key.value: (bytes(v.addr), v.port) for key, v in
                 self.maps["cp_lb_backends_v1"].items()}
        slots = {(k.svc_id, k.slot): v.value for k, v in self.maps["cp_lb_maglev_v1"].items()}
        served = {}
        for key, value in self.maps["cp_lb_services_v1"].items():
            table = tuple(by_id[slots[(value.svc_id, n)]] for n in range(value.table_size))
            served[bytes(key)] = (table, value.flags)
        return served, sorted(by_id.values())


def test_creating_service_k_plus_one_resolves_only_that_service():
    world = World()
    world.endpoints = [ep("10.0.0.5", app="web")]
    assert world.start([]) == 0
    costs = [world.store(svc(f"s{k}", f"10.96.1.{k}", selector={"app": "web"}))
             for k in range(1, 60)]
    assert costs == [1] * 59
    slot_writes = world.maps["cp_lb_maglev_v1"].writes
    assert world.store(svc("s60", "10.96.1.60", backends=["10.0.9.9:80"])) == 1
    assert world.maps["cp_lb_maglev_v1"].writes - slot_writes == 251  # its table only
    assert world.backends("s60") == ["10.0.9.9:80"]
    assert world.delete("s7") == 0
    assert "s7" not in world.manager.programmed
    assert world.tables.frontend(Address(svc("x", "10.96.1.7").frontend.address, 80)) is None


def test_watch_events_apply_one_by_one_and_the_echo_costs_nothing():
    world = World()
    world.start([svc(f"s{k}", f"10.96.2.{k}", backends=[f"10.0.2.{k}:80"])
                 for k in range(1, 30)])
    resolved = world.manager.resolved
    stored = svc("s5", "10.96.2.5", backends=["10.0.2.5:80"])  # unchanged: the echo
    changed = svc("s6", "10.96.2.6", backends=["10.0.2.66:80"])
    world.manager._apply([
        Event("put", service_store.PREFIX + "s5", json.dumps(stored.to_json()), 1),
        Event("put", service_store.PREFIX + "s6", json.dumps(changed.to_json()), 2),
        Event("delete", service_store.PREFIX + "s7", None, 3),
        Event("put", service_store.PREFIX + "s8", "{not json", 4)])
    world.manager.process()
    assert world.manager.resolved - resolved == 1  # s6; deletes resolve nothing
    assert world.backends("s6") == ["10.0.2.66:80"]
    assert not {"s7", "s8"} & set(world.manager.programmed)
    assert len(world.manager.programmed) == 27


def test_endpoints_reresolve_only_the_services_they_concern():
    world = World()
    world.start([svc("web", "10.96.3.1", selector={"app": "web"}),
                 svc("web-eu", "10.96.3.2", selector={"app": "web", "zone": "eu"}),
                 svc("db", "10.96.3.3", selector={"app": "db"}),
                 svc("api", "10.96.3.4", target_port=8080)] +
                [svc(f"other{k}", f"10.96.4.{k}", selector={"app": f"o{k}"})
                 for k in range(50)])
    assert world.set_endpoints([]) == 0  # a kick that changed nothing
    assert world.set_endpoints([ep("10.0.0.1", app="web")]) == 1
    assert world.backends("web") == ["10.0.0.1:80"]
    assert world.set_endpoints([ep("10.0.0.1", app="web"),
                                ep("10.0.0.2", app="web", zone="eu")]) == 2
    assert world.backends("web-eu") == ["10.0.0.2:80"]
    assert world.backends("web") == ["10.0.0.1:80", "10.0.0.2:80"]
    # joining by label: only the service named (port: its target port)
    assert world.set_endpoints(world.endpoints + [ep("10.0.0.3", ciliumpy_service="api")]) == 1
    assert world.backends("api") == ["10.0.0.3:8080"]
    # a container stops: the services it was in follow, nothing else is resolved
    assert world.set_endpoints([ep("10.0.0.2", app="web", zone="eu")]) == 2
    assert world.backends("web") == ["10.0.0.2:80"] and world.backends("api") == []
    # labels change: old and new services both follow
    assert world.set_endpoints([ep("10.0.0.2", app="db", zone="eu")]) == 3
    assert world.backends("db") == ["10.0.0.2:80"] and world.backends("web") == []


def test_a_frontend_named_twice_goes_to_the_first_by_name_and_passes_on():
    world = World()
    world.start([svc("b", "10.96.5.1", backends=["10.0.5.2:80"])])
    assert world.store(svc("a", "10.96.5.1", backends=["10.0.5.1:80"])) == 1
    assert "b" in world.manager.conflicts and "b" not in world.manager.programmed
    assert world.store(svc("c", "10.96.5.1")) == 0  # a conflict costs no resolution
    assert world.delete("a") == 1
    assert world.backends("b") == ["10.0.5.2:80"] and "b" not in world.manager.conflicts
    assert world.store(svc("b", "10.96.5.9", backends=["10.0.5.2:80"])) == 2  # moves: c gets .1
    assert world.manager.conflicts == {} and set(world.manager.programmed) == {"b", "c"}


def test_backends_shared_by_services_are_counted():
    world = World()
    world.start([svc("a", "10.96.6.1", backends=["10.0.6.1:80"]),
                 svc("b", "10.96.6.2", backends=["10.0.6.1:80", "10.0.6.2:80"])])
    assert world.tables.backend_count() == 2
    world.delete("b")
    assert world.tables.backend_count() == 1
    world.delete("a")
    assert world.tables.backend_count() == 0 and not world.maps["cp_lb_backends_v1"].data


def test_a_restart_prunes_after_its_first_sync_and_not_before_the_load():
    first = World()
    first.start([svc("a", "10.96.7.1", backends=["10.0.7.1:80"]),
                 svc("b", "10.96.7.2", backends=["10.0.7.2:80"])])
    again = World(first.maps)  # a new agent over the same pinned maps
    again.manager.stored(svc("z", "10.96.7.9"))
    again.manager.kick()
    assert again.manager.process() == 0  # the kvstore not read yet: nothing touched
    assert again.tables.backend_count() == 2
    again.start([svc("a", "10.96.7.1", backends=["10.0.7.1:80"])])
    assert again.tables.backend_count() == 1  # b's backend, referenced by nobody now
    assert again.tables.frontend(Address(svc("b", "10.96.7.2").frontend.address, 80)) is None
    assert again.backends("a") == ["10.0.7.1:80"] and "z" not in again.manager.services


def test_id_pool_reuses_the_smallest_free_id():
    pool = _IdPool()
    pool.adopt([2, 5])
    assert [pool.take(), pool.take(), pool.take(), pool.take()] == [1, 3, 4, 6]
    pool.give(3)
    pool.give(3)
    assert [pool.take(), pool.take()] == [3, 7]
    pool.give(5)  # adopted, given back after the scan passed it: the smallest free
    assert pool.take() == 5
    huge = _IdPool()
    huge.adopt([2, 2**32 - 1])  # a stray id far away builds nothing
    assert [huge.take(), huge.take()] == [1, 3]


def test_indexes_give_candidates_resolution_decides():
    selectors, index = SelectorIndex(), EndpointIndex()
    web = svc("web", "10.96.8.1", selector={"app": "web", "tier": "fe"})
    selectors.add(web)
    assert selectors.affected([ep("10.0.8.1", app="web")]) == set()
    assert selectors.affected([ep("10.0.8.1", app="web", tier="fe")]) == {"web"}
    changed = index.update([ep("10.0.8.1", app="web", tier="fe"), ep("10.0.8.2", app="db")])
    assert len(changed) == 2 and index.update(list(reversed(index._endpoints.values()))) == []
    assert [e.addresses for e in index.candidates(web)] == [["10.0.8.1"]]
    selectors.remove("web")
    assert len(selectors) == 0 and not selectors._by_pair


@pytest.mark.parametrize("seed", range(12))
def test_any_order_of_changes_ends_where_a_full_sync_does(seed):
    rng = random.Random(seed)
    labels = [{"app": "web"}, {"app": "web", "zone": "eu"}, {"app": "db"},
              {"ciliumpy.service": "s1,s2:9090"}, {"ciliumpy.service": "bad name"}, {}]
    vips = [f"10.96.9.{n}" for n in range(1, 6)]  # few: frontends collide

    def random_service() -> Service:
        kind = rng.randrange(3)
        fields: dict = {"maglev_size": rng.choice([251, 1021])}
        if kind == 0:
            fields["selector"] = dict(rng.choice(labels[:3]))
        elif kind == 1:
            fields["backends"] = [f"10.0.9.{rng.randrange(1, 6)}:80"]
        return svc(f"s{rng.randrange(6)}", rng.choice(vips), **fields)

    world = World()
    world.start([random_service() for _ in range(3)])
    for _ in range(60):
        action = rng.randrange(4)
        if action == 0:
            world.store(random_service())
        elif action == 1:
            world.delete(f"s{rng.randrange(6)}")
        else:
            world.set_endpoints([ep(f"10.0.9.{n}", **{k.replace(".", "_"): v for k, v in
                                                       rng.choice(labels).items()})
                                 for n in rng.sample(range(1, 8), rng.randrange(5))])
    fresh = World()
    fresh.endpoints = world.endpoints
    fresh.start(list(world.manager.services.values()))
    assert world.state() == fresh.state()
    ours, theirs = world.manager, fresh.manager
    assert ours.conflicts == theirs.conflicts
    assert {n: p.signature for n, p in ours.programmed.items()} == {
        n: p.signature for n, p in theirs.programmed.items()}
    # and the incremental one's own full sync changes nothing
    assert world.manager.sync() == 0 and world.state() == fresh.state()


def test_maps_written_are_real_structures():
    world = World()
    world.start([svc("a", "10.96.10.1", backends=["10.0.10.1:80"])])
    (key, value), = world.maps["cp_lb_services_v1"].items()
    assert isinstance(key, maps.LbSvcKey) and value.table_size == 251


def test_storing_checks_the_frontend_against_the_others(tmp_path):
    from state.kvstore.embedded import EmbeddedStore

    kv = EmbeddedStore(str(tmp_path / "kv.db"))
    existing = {f"s{k}": svc(f"s{k}", f"10.96.11.{k}") for k in range(1, 200)}
    assert service_store.put(kv, svc("new", "10.96.12.1"), existing) is True
    assert service_store.put(kv, svc("s5", "10.96.11.5", target_port=81), existing) is False
    with pytest.raises(service_store.ServiceConflict, match="already service 's7'"):
        service_store.put(kv, svc("s5", "10.96.11.7"), existing)
    with pytest.raises(service_store.ServiceConflict):
        service_store.put(kv, svc("other", "10.96.11.9"), existing)
    assert set(service_store.load_all(kv)) == {"new", "s5"}


def test_frontend_keys_are_equal_exactly_when_frontends_are():
    from services.model import parse_frontend

    texts = ["10.0.0.1:80", "10.0.0.1:80/udp", "10.0.0.1:81", "10.0.0.2:80",
             "[::ffff:10.0.0.1]:80", "[fd00::1]:80", "10.0.0.1:80/tcp"]
    fronts = [parse_frontend(t) for t in texts]
    for a in fronts:
        for b in fronts:
            assert (a.key == b.key) == (a == b)


def test_the_api_conflict_check_sees_changes_not_processed_yet(tmp_path):
    """The API asks the manager who names a frontend (O(1)), including services stored
    or removed a moment ago and not yet programmed."""
    from state.kvstore.embedded import EmbeddedStore

    kv = EmbeddedStore(str(tmp_path / "kv.db"))
    world = World()
    world.start([svc("a", "10.96.13.1")])
    manager = world.manager
    assert manager.claimants(svc("x", "10.96.13.1")) == {"a"}
    manager.stored(svc("b", "10.96.13.2"))  # pending: not processed
    with pytest.raises(service_store.ServiceConflict, match="already service 'b'"):
        service_store.put(kv, svc("c", "10.96.13.2"), manager.services,
                          claimants=manager.claimants)
    assert service_store.put(kv, svc("b", "10.96.13.2", target_port=81), manager.services,
                             claimants=manager.claimants) is False  # its own frontend
    manager.removed("a")  # pending too: its frontend is free at once
    assert service_store.put(kv, svc("c", "10.96.13.1"), manager.services,
                             claimants=manager.claimants) is True
    manager.stored(svc("b", "10.96.13.3"))  # b moved: its old frontend is free
    assert manager.claimants(svc("x", "10.96.13.2")) == set()
    assert set(service_store.load_all(kv)) == {"b", "c"}
