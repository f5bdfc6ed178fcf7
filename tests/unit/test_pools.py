"""IPAM arithmetic: pool ids, blocks, free-address search (pure logic)."""

import ipaddress

import pytest

from ipam import pools


def net(text):
    return ipaddress.ip_network(text)


def test_pool_id_round_trips_and_is_deterministic():
    spec = pools.pool_spec("10.10.0.0/16", "10.10.1.0/24", False)
    assert spec.pool_id == "ciliumpy:10.10.0.0/16|10.10.1.0/24"
    assert pools.parse_pool_id(spec.pool_id) == spec
    assert pools.pool_spec("10.10.0.5/16", "", False).pool == net("10.10.0.0/16")


@pytest.mark.parametrize(
    ("pool", "sub", "v6", "message"),
    [
        ("", "10.0.0.0/24", False, "needs a subnet"),
        ("10.0.0.0/16", "10.1.0.0/24", False, "not inside subnet"),
        ("nonsense", "", False, "not a valid CIDR"),
        ("fd00::/64", "", False, "not an IPv4"),
        ("10.0.0.0/16", "", True, "not an IPv6"),
        ("10.0.0.0/31", "", False, "too small"),
    ],
)
def test_bad_pool_requests(pool, sub, v6, message):
    with pytest.raises(pools.PoolError, match=message):
        pools.pool_spec(pool, sub, v6)


def test_block_prefix_keeps_at_least_four_blocks_and_sixteen_addresses():
    assert pools.block_prefix(net("10.0.0.0/16"), 26) == 26
    assert pools.block_prefix(net("10.0.0.0/24"), 24) == 26
    assert pools.block_prefix(net("10.0.0.0/28"), 26) == 28
    assert pools.block_prefix(net("fd00::/64"), 112) == 112


def test_blocks_only_overlapping_the_range():
    found = list(pools.blocks(net("10.0.0.0/24"), 26, net("10.0.0.64/27")))
    assert found == [net("10.0.0.64/26")]


def test_free_address_skips_network_broadcast_and_used():
    pool = net("10.0.0.0/30")
    used = {ipaddress.ip_address("10.0.0.1")}
    assert pools.free_address(pool, pool, pool, used) == ipaddress.ip_address("10.0.0.2")
    used.add(ipaddress.ip_address("10.0.0.2"))
    assert pools.free_address(pool, pool, pool, used) is None


def test_default_pool_avoids_taken_prefixes():
    space = net("10.200.0.0/22")
    taken = [net("10.200.0.0/24"), net("10.200.1.128/25")]
    assert pools.pick_default_pool(space, 24, taken) == net("10.200.2.0/24")
    assert pools.pick_default_pool(space, 24, [space]) is None
