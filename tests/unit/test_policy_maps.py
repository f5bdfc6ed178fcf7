"""The batched policy-map writer (datapath/policy_maps.py) against fake maps: packed keys
equal the ctypes ones, writes are deferred and ordered deny-first, shared keys keep
the highest proxy port, and one failing key does not stop the others."""

from __future__ import annotations

import threading

import pytest

from datapath import maps
from datapath.policy_maps import PolicyEntry, PolicyMaps


class FakeMap:
    def __init__(self, name: str, log: list, fail: set[bytes] | None = None) -> None:
        self.name, self.log, self.fail = name, log, fail or set()
        self.data: dict[bytes, bytes] = {}

    def items(self):
        return iter(())

    def update_batch(self, keys, values) -> None:
        self.log.append(("put", self.name, len(keys)))
        for done, (key, value) in enumerate(zip(keys, values, strict=True)):
            if key in self.fail:
                raise maps.BatchError("no room", done)
            self.data[key] = value

    def delete_batch(self, keys) -> int:
        self.log.append(("delete", self.name, len(keys)))
        return sum(self.data.pop(key, None) is not None for key in keys)


@pytest.fixture
def policy():
    log: list = []
    writer = PolicyMaps(threading.RLock())
    writer.load(FakeMap("allow", log), FakeMap("deny", log))
    writer.log = log
    return writer


@pytest.mark.parametrize("first,last", [(0, 0), (80, 80), (8000, 8080), (1, 65535), (0, 65535)])
def test_packed_keys_are_the_ctypes_keys(first, last):
    entry = PolicyEntry(7, "egress", 4242, 6, first, last if last != first else 0)
    expected = [bytes(maps.policy_key(7, maps.DIR_EGRESS, 4242, 6, port, bits))
                for port, bits in maps.port_prefixes(first, last)]
    assert entry.map_keys() == expected
    value = maps.PolicyVal()
    value.flags, value.proxy_port = maps.POLICY_DENY, 15001
    assert maps.policy_value_bytes(True, 15001) == bytes(value)


def test_batched_writes_are_deferred_and_ordered(policy):
    old_allow, old_deny = PolicyEntry(1, "ingress", 5, 6, 80), PolicyEntry(1, "ingress", 6, 6,
                                                                             80, deny=True)
    policy.add(old_allow)
    policy.add(old_deny)
    assert policy.log == [("put", "allow", 1), ("put", "deny", 1)], "unbatched: at once"
    policy.log.clear()
    with policy.batched():
        policy.remove(old_allow)
        policy.remove(old_deny)
        for identity in range(100):
            policy.add(PolicyEntry(1, "ingress", 100 + identity, 6, 80))
        policy.add(PolicyEntry(1, "ingress", 7, 6, 80, deny=True))
        assert policy.log == []
    assert policy.log == [("put", "deny", 1), ("put", "allow", 100),
                          ("delete", "allow", 1), ("delete", "deny", 1)]


def test_shared_key_keeps_the_highest_proxy_port(policy):
    l4, l7 = PolicyEntry(1, "ingress", 5, 6, 80), PolicyEntry(1, "ingress", 5, 6, 80,
                                                                proxy_port=15001)
    (key,) = l4.map_keys()
    allow = policy.tables[False]
    with policy.batched():
        policy.add(l4)
        policy.add(l7)
    assert allow.data[key] == maps.policy_value_bytes(False, 15001)
    policy.remove(l7)
    assert allow.data[key] == maps.policy_value_bytes(False, 0)
    with policy.batched():
        policy.remove(l4)
        policy.add(l4)  # removed and added back within one batch: written once, kept
    assert allow.data[key] == maps.policy_value_bytes(False, 0)
    policy.remove(l4)
    assert key not in allow.data and not policy.entries


def test_a_failing_key_is_reported_after_the_others_are_written(policy):
    bad = PolicyEntry(1, "egress", 9, 17, 53)
    policy.tables[False].fail.add(bad.map_keys()[0])
    with pytest.raises(maps.MapError, match="1 policy map writes failed"), policy.batched():
        for identity in range(5, 15):
            policy.add(PolicyEntry(1, "egress", identity, 17, 53))
    assert len(policy.tables[False].data) == 9
