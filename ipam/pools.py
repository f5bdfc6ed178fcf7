"""Pure address arithmetic for IPAM: pool ids, gateways, node blocks, free-address search.

No I/O here, so the rules can be unit-tested alone:
- A pool is the user's ``--subnet`` (the cluster-wide key of a network), optionally
  narrowed by ``--ip-range`` (a sub-pool). Its PoolID is derived from both, so the
  same request on any host names the same pool.
- A pool is cut into blocks; each node leases whole blocks and allocates inside them
  with no coordination. Block size: the configured prefix (/26, /112 by default), but
  never more than a quarter of the pool, and at least 16 addresses.
- The gateway is the pool's first host unless ``--gateway`` names another.
"""

from __future__ import annotations

import ipaddress
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

POOL_ID_PREFIX = "ciliumpy:"


class PoolError(ValueError):
    """A request that names an impossible pool or address."""


@dataclass(frozen=True)
class PoolSpec:
    pool: Network
    sub_pool: Network | None

    @property
    def pool_id(self) -> str:
        suffix = f"|{self.sub_pool}" if self.sub_pool else ""
        return f"{POOL_ID_PREFIX}{self.pool}{suffix}"

    @property
    def range(self) -> Network:
        """Where endpoint addresses come from."""
        return self.sub_pool or self.pool


def parse_network(text: str, what: str) -> Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        # reprlib: a 1 MB input is not echoed back whole in the error
        raise PoolError(f"{what} {reprlib.repr(text)} is not a valid CIDR") from None
    return network


def pool_spec(pool: str, sub_pool: str, v6: bool) -> PoolSpec:
    """Validates a RequestPool's Pool/SubPool pair."""
    if not pool:
        if sub_pool:
            raise PoolError("an ip-range (SubPool) needs a subnet (Pool)")
        raise PoolError("internal: pool_spec needs a pool")
    network = parse_network(pool, "subnet")
    if (network.version == 6) != v6:
        family = "IPv6" if v6 else "IPv4"
        raise PoolError(f"subnet {network} is not an {family} prefix")
    max_len = network.max_prefixlen
    if network.prefixlen > max_len - 2:
        raise PoolError(f"subnet {network} is too small (at most /{max_len - 2})")
    sub = None
    if sub_pool:
        sub = parse_network(sub_pool, "ip-range")
        if sub.version != network.version or not sub.subnet_of(network):
            raise PoolError(f"ip-range {sub} is not inside subnet {network}")
    return PoolSpec(network, sub)


def parse_pool_id(pool_id: str) -> PoolSpec:
    if not pool_id.startswith(POOL_ID_PREFIX):
        raise PoolError(f"unknown pool id {reprlib.repr(pool_id)}")
    body = pool_id[len(POOL_ID_PREFIX):]
    pool, _, sub = body.partition("|")
    network = parse_network(pool, "pool")
    return PoolSpec(network, parse_network(sub, "ip-range") if sub else None)


def default_gateway(pool: Network) -> Address:
    return pool.network_address + 1


def block_prefix(pool: Network, configured: int) -> int:
    """Prefix length of the blocks a node leases from ``pool``."""
    max_len = pool.max_prefixlen
    at_least_four = pool.prefixlen + 2
    at_least_sixteen_addresses = max_len - 4
    return max(configured, min(at_least_four, at_least_sixteen_addresses))


def blocks(pool: Network, prefix: int, within: Network | None = None) -> Iterator[Network]:
    """The pool's blocks in address order, only those overlapping ``within``."""
    for block in pool.subnets(new_prefix=prefix) if prefix > pool.prefixlen else [pool]:
        if within is None or block.overlaps(within):
            yield block


def is_reserved(pool: Network, address: Address) -> bool:
    """Network and broadcast addresses of an IPv4 pool, and IPv6's subnet-router anycast."""
    if address == pool.network_address:
        return True
    return pool.version == 4 and address == pool.broadcast_address


def free_address(
    pool: Network, block: Network, within: Network, used: set[Address]
) -> Address | None:
    """The lowest usable address of ``block`` inside ``within`` that is not ``used``."""
    start = max(int(block.network_address), int(within.network_address))
    end = min(int(block.broadcast_address), int(within.broadcast_address))
    cls = type(pool.network_address)
    for value in range(start, end + 1):
        candidate = cls(value)
        if candidate not in used and not is_reserved(pool, candidate):
            return candidate
    return None


def pick_default_pool(
    space: Network, prefix: int, taken: Iterable[Network]
) -> Network | None:
    """The first ``/prefix`` of ``space`` that overlaps nothing in ``taken``."""
    taken = list(taken)
    for candidate in space.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    return None


def with_prefix(address: Address, prefixlen: int) -> str:
    return f"{address}/{prefixlen}"
