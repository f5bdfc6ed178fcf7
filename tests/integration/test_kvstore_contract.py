"""One contract, run unchanged against both backends: the embedded SQLite store and a
real Consul agent (``consul agent -dev`` on loopback, started by the fixture)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid

import pytest

from state.kvstore.base import LeaseExpired, LeaseKeeper
from state.kvstore.consul import ConsulStore
from tests.support.consul import open_backend


@pytest.fixture(params=["embedded", "consul"])
def store(request, tmp_path):
    backend = open_backend(request, tmp_path)
    backend.test_prefix = f"ciliumpy/state/test/{uuid.uuid4().hex[:8]}/"
    yield backend
    for pair in backend.list(backend.test_prefix):
        backend.delete(pair.key)
    backend.close()


def k(store, name):
    return store.test_prefix + name


def test_get_put_delete(store):
    assert store.get(k(store, "a")) is None
    store.put(k(store, "a"), "1")
    pair = store.get(k(store, "a"))
    assert (pair.key, pair.value) == (k(store, "a"), "1") and pair.mod_index > 0
    store.put(k(store, "a"), "2")
    assert store.get(k(store, "a")).value == "2"
    assert store.get(k(store, "a")).mod_index > pair.mod_index
    assert store.delete(k(store, "a")) is True
    assert store.delete(k(store, "a")) is False
    assert store.get(k(store, "a")) is None


def test_list_by_prefix_is_sorted_and_exact(store):
    for name in ("b/2", "b/1", "bc", "a"):
        store.put(k(store, name), name)
    assert [p.value for p in store.list(k(store, "b/"))] == ["b/1", "b/2"]
    assert [p.value for p in store.list(store.test_prefix)] == ["a", "b/1", "b/2", "bc"]


def test_create_only_has_exactly_one_winner(store):
    key = k(store, "race")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: store.create(key, str(i)), range(10)))
    assert results.count(True) == 1
    assert store.get(key).value == str(results.index(True))


def test_compare_and_swap(store):
    key = k(store, "cas")
    store.put(key, "v1")
    index = store.get(key).mod_index
    assert store.cas(key, "v2", index) is True
    assert store.cas(key, "v3", index) is False, "a stale index must not win"
    assert store.get(key).value == "v2"
    assert store.delete(key, mod_index=index) is False
    assert store.delete(key, mod_index=store.get(key).mod_index) is True


def test_watch_sees_every_change_in_order_and_resumes(store):
    prefix = k(store, "w/")
    store.put(prefix + "before", "x")
    watch = store.watch(prefix, store.index())
    for i in range(5):
        store.put(prefix + f"key{i}", str(i))
    store.delete(prefix + "before")
    seen = []
    deadline = time.time() + 15
    while len(seen) < 6 and time.time() < deadline:
        seen += watch.next(timeout=2)
    assert [(e.kind, e.key.rsplit("/", 1)[1]) for e in seen] == (
        [("put", f"key{i}") for i in range(5)] + [("delete", "before")])
    assert [e.mod_index for e in seen] == sorted(e.mod_index for e in seen)
    assert seen[0].value == "0"
    # resume: changes made while nobody was reading are reported next time
    store.put(prefix + "later", "y")
    store.delete(prefix + "key0")
    more = []
    deadline = time.time() + 15
    while len(more) < 2 and time.time() < deadline:
        more += watch.next(timeout=2)
    assert {(e.kind, e.key.rsplit("/", 1)[1]) for e in more} == {("put", "later"),
                                                                  ("delete", "key0")}
    assert watch.next(timeout=0.5) == []


def test_watch_ignores_other_prefixes(store):
    watch = store.watch(k(store, "mine/"), store.index())
    store.put(k(store, "other/x"), "1")
    store.put(k(store, "mine/x"), "2")
    events = []
    deadline = time.time() + 15
    while not events and time.time() < deadline:
        events = watch.next(timeout=2)
    assert [e.key for e in events] == [k(store, "mine/x")]


def test_lease_revoke_deletes_its_keys(store):
    lease = store.grant_lease(15, "contract")
    store.put(k(store, "leased"), "1", lease=lease)
    assert store.create(k(store, "leased2"), "1", lease=lease)
    store.put(k(store, "kept"), "1")
    assert store.keepalive(lease) is True
    store.revoke(lease)
    deadline = time.time() + 10
    while store.get(k(store, "leased")) and time.time() < deadline:
        time.sleep(0.1)
    assert store.get(k(store, "leased")) is None and store.get(k(store, "leased2")) is None
    assert store.get(k(store, "kept")) is not None
    assert store.keepalive(lease) is False


@pytest.mark.timeout(120)
def test_lease_expires_when_its_owner_stops_renewing(store):
    ttl = 1 if store.name == "embedded" else 10  # Consul's minimum session TTL
    lease = store.grant_lease(ttl, "expiring")
    store.put(k(store, "ephemeral"), "1", lease=lease)
    keeper_lease = LeaseKeeper(store, ttl, "kept-alive").start()
    store.put(k(store, "renewed"), "1", lease=keeper_lease.lease)
    start = time.time()
    while store.get(k(store, "ephemeral")) is not None and time.time() - start < 3 * ttl + 5:
        time.sleep(0.2)
        if store.name == "embedded":
            store.sweep()
    elapsed = time.time() - start
    assert store.get(k(store, "ephemeral")) is None, "the key outlived its lease"
    assert elapsed <= 2 * ttl + 2, f"expired after {elapsed:.1f}s for a ttl of {ttl}s"
    assert store.get(k(store, "renewed")) is not None, "a renewed lease keeps its keys"
    keeper_lease.stop()


def test_put_with_an_expired_lease_fails(store):
    lease = store.grant_lease(15, "gone")
    store.revoke(lease)
    with pytest.raises(LeaseExpired):
        store.put(k(store, "x"), "1", lease=lease)


def test_lock_is_mutually_exclusive(store):
    lease = store.grant_lease(15, "locker")
    inside, overlaps = [], []
    guard = threading.Lock()

    def worker(i):
        with store.lock(store.test_prefix.strip("/").replace("/", "_") + "-lock", lease):
            with guard:
                inside.append(i)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
            time.sleep(0.02)
            with guard:
                inside.remove(i)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(8)))
    store.revoke(lease)
    assert overlaps == []


def test_consul_watch_at_rest_sends_one_query_per_wait(consul_agent):
    """The agent's request rate at rest must not depend on timing slivers: a Consul watch
    with nothing to report sends one blocking query per ``next`` (not a second one for
    the remainder of its timeout), and still reports a change with its decoded value."""
    class Counting(ConsulStore):
        blocking = 0

        def _list_raw(self, prefix, params):
            if params:
                type(self).blocking += 1
            return super()._list_raw(prefix, params)

    store = Counting({"consul.address": consul_agent.address})
    prefix = f"ciliumpy/state/test/{uuid.uuid4().hex[:8]}/"
    try:
        store.put(prefix + "a", "1")
        watch = store.watch(prefix, store.index())
        started = time.monotonic()
        assert watch.next(timeout=2.0) == []
        assert time.monotonic() - started >= 1.9
        assert Counting.blocking == 1
        store.put(prefix + "b", "ünï ✓")
        events = watch.next(timeout=5.0)
        assert [(e.kind, e.key, e.value) for e in events] == [("put", prefix + "b", "ünï ✓")]
    finally:
        for pair in store.list(prefix):
            store.delete(pair.key)
