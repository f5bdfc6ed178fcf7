"""Endpoint records and their watch (``ciliumpy/endpoint_records.py``), run unchanged
against the embedded store and a real Consul agent: what a follower sees when nodes
add, change and withdraw endpoints, when a node's lease ends, and when a cluster starts
(many nodes at once)."""

from __future__ import annotations

import json

import pytest

from ciliumpy import endpoint_records as records
from state.kvstore.base import LeaseExpired
from tests.support.consul import open_backend


@pytest.fixture(params=["embedded", "consul"])
def kv(request, tmp_path):
    store = open_backend(request, tmp_path)
    yield store
    for prefix in (records.PREFIX, records.REVISIONS):
        for pair in store.list(prefix):
            store.delete(pair.key)
    store.close()


def value(identity: int, node: str) -> str:
    return json.dumps({"identity": identity, "node": node})


def seen(events) -> list[tuple[str, str, str, int | None]]:
    return [(e.kind, records.node_of(e.key), records.address_of(e.key),
             json.loads(e.value)["identity"] if e.value else None) for e in events]


def follow(kv) -> records.RecordWatch:
    """A follower as ClusterSync starts one: the index, then its list, then the watch."""
    index = kv.index()
    return records.RecordWatch(kv, index, records.list_records(kv))


def drain(watch, until: int, timeout: float = 10.0) -> list:
    """Events until ``until`` of them came (a Consul answer may split a batch)."""
    got: list = []
    for _ in range(int(timeout)):
        got += watch.next(timeout=1.0)
        if len(got) >= until:
            break
    return got


def test_a_follower_sees_each_nodes_changes_and_nothing_older(kv):
    lease = kv.grant_lease(30, "n1")
    records.write(kv, "n1", lease, {"10.1.0.5": value(300, "n1")}, set())
    watch = follow(kv)
    assert watch.next(timeout=1.0) == []  # written before the watch's index
    records.write(kv, "n1", lease, {"10.1.0.6": value(301, "n1"),
                                    "10.1.0.5": value(302, "n1")}, set())
    records.write(kv, "n2", lease, {"fd00::6": value(303, "n2")}, set())
    assert sorted(seen(drain(watch, 3))) == [
        ("put", "n1", "10.1.0.5", 302), ("put", "n1", "10.1.0.6", 301),
        ("put", "n2", "fd00::6", 303)]
    records.write(kv, "n1", lease, {}, {"10.1.0.5"})
    assert seen(drain(watch, 1)) == [("delete", "n1", "10.1.0.5", None)]
    assert watch.next(timeout=1.0) == []  # nothing changed: nothing reported again


def test_records_written_between_the_index_and_the_first_read_are_reported(kv):
    lease = kv.grant_lease(30, "n1")
    watch = follow(kv)
    records.write(kv, "n1", lease, {"10.1.0.7": value(310, "n1")}, set())
    assert seen(drain(watch, 1)) == [("put", "n1", "10.1.0.7", 310)]


def test_a_nodes_records_go_with_its_lease(kv):
    lease_1, lease_2 = kv.grant_lease(30, "n1"), kv.grant_lease(30, "n2")
    records.write(kv, "n1", lease_1, {"10.1.0.5": value(300, "n1"),
                                      "10.1.0.6": value(300, "n1")}, set())
    records.write(kv, "n2", lease_2, {"10.2.0.5": value(300, "n2")}, set())
    watch = follow(kv)
    kv.revoke(lease_1)
    assert sorted(seen(drain(watch, 2))) == [("delete", "n1", "10.1.0.5", None),
                                             ("delete", "n1", "10.1.0.6", None)]
    assert [records.address_of(p.key) for p in records.list_records(kv)] == ["10.2.0.5"]


def test_a_restarted_node_withdraws_what_its_earlier_run_left(kv):
    """A node killed and restarted gets a new lease; the records its old lease still
    holds for endpoints that are gone are deleted at once, and followers see it."""
    old = kv.grant_lease(30, "n1")
    records.write(kv, "n1", old, {"10.1.0.5": value(300, "n1"),
                                  "10.1.0.6": value(300, "n1")}, set())
    watch = follow(kv)
    new = kv.grant_lease(30, "n1")
    stale = records.stale_addresses(kv, "n1", {"10.1.0.5"})
    assert stale == {"10.1.0.6"}
    records.write(kv, "n1", new, {"10.1.0.5": value(300, "n1")}, stale, take_over=True)
    assert sorted(seen(drain(watch, 2))) == [("delete", "n1", "10.1.0.6", None),
                                             ("put", "n1", "10.1.0.5", 300)]


def test_a_lease_that_expired_is_not_taken_over(kv, request):
    """Without ``take_over`` (a lease the node has written under), a key Consul refuses
    means this node's lease is gone: nothing is deleted, the writer learns it."""
    if "consul" not in request.node.name:
        pytest.skip("the embedded store has no per-key lock to refuse a write")
    old = kv.grant_lease(30, "n1")
    records.write(kv, "n1", old, {"10.1.0.5": value(300, "n1")}, set())
    other = kv.grant_lease(30, "n1")
    with pytest.raises(LeaseExpired):
        records.write(kv, "n1", other, {"10.1.0.5": value(301, "n1")}, set())
    assert [(p.key, json.loads(p.value)["identity"]) for p in records.list_records(kv)] == [
        (records.record_key("n1", "10.1.0.5"), 300)]


def test_a_cluster_starting_is_read_in_one_list(kv):
    lease = kv.grant_lease(30, "many")
    watch = follow(kv)
    count = records.FULL_LIST_ABOVE + 6
    for i in range(count):
        records.write(kv, f"n{i}", lease, {f"10.3.{i}.5": value(400 + i, f"n{i}")}, set())
    got = drain(watch, count, timeout=20)
    assert sorted(seen(got)) == sorted(("put", f"n{i}", f"10.3.{i}.5", 400 + i)
                                       for i in range(count))


def test_bad_node_or_address_text_stays_in_its_own_prefix(kv):
    """A node name is a path segment of its own: n1 never lists n10's records."""
    lease = kv.grant_lease(30, "n1")
    records.write(kv, "n10", lease, {"10.4.0.5": value(300, "n10")}, set())
    assert records.stale_addresses(kv, "n1", set()) == set()
    assert records.stale_addresses(kv, "n10", set()) == {"10.4.0.5"}
