"""The endpoint store under concurrent writers (a real SQLite file): each writer's
field survives the others'. Whole-record writes from threads that read earlier lost
updates (a reconciler recording a container name reverted an identity just assigned,
and the container stayed unreachable as reserved:init)."""

from __future__ import annotations

import threading

from driver.model import Endpoint, Store
from state.localdb import LocalDB


def new_store(tmp_path) -> Store:
    store = Store(LocalDB(str(tmp_path / "state.db")))
    store.put_endpoint(Endpoint(endpoint_id="e" * 64, network_id="n" * 64,
                                host_ifname="lxc1", peer_ifname="tmp1", mac="02:00:00:00:00:01",
                                ipv4="10.0.0.2/24"))
    return store


def test_concurrent_writers_of_different_fields_keep_each_others_changes(tmp_path):
    store = new_store(tmp_path)
    rounds = 200

    def set_identity() -> None:
        for number in range(1000, 1000 + rounds):
            store.update_endpoint("e" * 64, lambda e, n=number: setattr(e, "identity", n))

    def set_name() -> None:
        for index in range(rounds):
            store.update_endpoint("e" * 64,
                                  lambda e, i=index: setattr(e, "container_name", f"c{i}"))

    def set_state() -> None:
        for index in range(rounds):
            store.update_endpoint("e" * 64, lambda e, i=index: setattr(
                e, "state", "joined" if i % 2 else "created"))

    threads = [threading.Thread(target=f) for f in (set_identity, set_name, set_state)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.endpoint("e" * 64)
    assert (final.identity, final.container_name, final.state) == (
        1000 + rounds - 1, f"c{rounds - 1}", "joined")
    assert final.ipv4 == "10.0.0.2/24"


def test_update_of_a_removed_endpoint_changes_nothing(tmp_path):
    store = new_store(tmp_path)
    store.delete_endpoint("e" * 64)
    assert store.update_endpoint("e" * 64, lambda e: setattr(e, "identity", 7)) is None
    assert store.endpoints() == []


def test_update_returns_the_written_record(tmp_path):
    store = new_store(tmp_path)
    updated = store.update_endpoint("e" * 64, lambda e: setattr(e, "labels", ["app=web"]))
    assert updated == store.endpoint("e" * 64)
    assert updated.labels == ["app=web"]
