"""Host-scope IPAM: pools held by this node, blocks leased cluster-wide, local allocations.

Blocks are leased through the kvstore with create-only writes (key
``ipam/v1/<pool>/blocks/<block>`` → this node), so two nodes never share a block; every
address is then allocated locally, inside the node's blocks, and written to the local
state file before it is returned. The gateway and ``--aux-address`` reservations are
recorded per node (Docker sends them on every host that creates the network).
"""

from __future__ import annotations

import ipaddress
import json
import reprlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ipam import pools
from ipam.pools import Address, Network, PoolError, PoolSpec
from state.kvstore import KVStore
from state.kvstore.base import key as kv_key
from state.localdb import LocalDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS ipam_pools (
    pool_id TEXT PRIMARY KEY, pool TEXT NOT NULL UNIQUE, sub_pool TEXT, v6 INTEGER NOT NULL,
    options TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ipam_blocks (
    pool TEXT NOT NULL, block TEXT NOT NULL, PRIMARY KEY (pool, block));
CREATE TABLE IF NOT EXISTS ipam_addresses (
    address TEXT PRIMARY KEY, pool TEXT NOT NULL, kind TEXT NOT NULL,
    created REAL NOT NULL, owner TEXT);
"""

GATEWAY_TYPE = "com.docker.network.gateway"
REQUEST_TYPE = "RequestAddressType"
MAC_OPTION = "com.docker.network.endpoint.macaddress"
KIND_GATEWAY, KIND_AUX, KIND_ENDPOINT = "gateway", "aux", "endpoint"


def request_kind(address: str, options: dict) -> str:
    """What a RequestAddress is for. We advertise RequiresMACAddress, so Docker puts
    the endpoint's MAC in every endpoint call's Options; the gateway call says so in
    RequestAddressType; an address with no options is an ``--aux-address``."""
    if options.get(REQUEST_TYPE) == GATEWAY_TYPE:
        return KIND_GATEWAY
    if MAC_OPTION in options or not address:
        return KIND_ENDPOINT
    return KIND_AUX


@dataclass(frozen=True)
class Allocation:
    address: Address
    pool: Network
    kind: str
    created: float
    owner: str | None


def _block_key(pool: Network, block: Network | None = None) -> str:
    base = kv_key("ipam", "v1", str(pool).replace("/", "_"), "blocks")
    return f"{base}/{str(block).replace('/', '_')}" if block else base + "/"


class IPAM:
    """All IPAM state of this node. Methods raise PoolError for bad requests."""

    def __init__(
        self,
        db: LocalDB,
        kv: KVStore,
        node: str,
        *,
        block_prefix_v4: int,
        block_prefix_v6: int,
        default_pool_v4: Network,
        default_pool_prefix_v4: int,
        default_pool_v6: Network,
        default_pool_prefix_v6: int,
        host_prefixes: Callable[[], list[tuple[Network, str]]],
    ) -> None:
        self.db, self.kv, self.node = db, kv, node
        self._block_prefix = {4: block_prefix_v4, 6: block_prefix_v6}
        self._default_space = {4: (default_pool_v4, default_pool_prefix_v4),
                               6: (default_pool_v6, default_pool_prefix_v6)}
        self._host_prefixes = host_prefixes
        self._lock = threading.RLock()
        # The driver tells us which pools its networks use (set when the agent is wired).
        self.bound_pools: Callable[[], set[str]] = set
        # Called after this node leased or released blocks (the node entry lists them).
        self.on_blocks_changed: Callable[[], None] = lambda: None
        db.declare(SCHEMA)

    # ---- pools -------------------------------------------------------------
    def request_pool(self, pool: str, sub_pool: str, v6: bool, options: dict) -> PoolSpec:
        with self._lock:
            held = self._held_pools()
            if not pool and sub_pool:
                raise PoolError("an ip-range (SubPool) needs a subnet (Pool)")
            if not pool:
                spec = self._choose_default(v6, held)
            else:
                spec = pools.pool_spec(pool, sub_pool, v6)
                self._check_free(spec, held)
            if spec.pool_id in held:
                return spec  # an orphan from an earlier attempt: hand it out again
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO ipam_pools VALUES (?, ?, ?, ?, ?, ?)",
                    (spec.pool_id, str(spec.pool), str(spec.sub_pool or "") or None,
                     int(v6), json.dumps(options), time.time()),
                )
            return spec

    def _held_pools(self) -> dict[str, PoolSpec]:
        return {row["pool_id"]: pools.parse_pool_id(row["pool_id"])
                for row in self.db.query("SELECT pool_id FROM ipam_pools")}

    def _check_free(self, spec: PoolSpec, held: dict[str, PoolSpec]) -> None:
        for other in held.values():
            if other.pool.overlaps(spec.pool) and other.pool_id != spec.pool_id:
                raise PoolError(
                    f"Pool overlaps with other one on this address space: {spec.pool} "
                    f"overlaps {other.pool}, already used by another ciliumpy network on this host"
                )
            if other.pool_id == spec.pool_id and self.pool_in_use(other.pool):
                raise PoolError(
                    f"Pool overlaps with other one on this address space: {spec.pool} is "
                    "already used by another ciliumpy network on this host"
                )
        for prefix, device in self._host_prefixes():
            if prefix.version == spec.pool.version and prefix.overlaps(spec.pool):
                raise PoolError(
                    f"subnet {spec.pool} overlaps the host route {prefix} on {device}; "
                    "choose a subnet that is not in use on this host"
                )

    def _choose_default(self, v6: bool, held: dict[str, PoolSpec]) -> PoolSpec:
        space, prefix = self._default_space[6 if v6 else 4]
        taken = [spec.pool for spec in held.values()]
        taken += [p for p, _ in self._host_prefixes()]
        chosen = pools.pick_default_pool(space, prefix, [t for t in taken
                                                          if t.version == space.version])
        if chosen is None:
            raise PoolError(f"no free default pool left in {space}; pass --subnet")
        return PoolSpec(chosen, None)

    def pool_in_use(self, pool: Network) -> bool:
        """True when a network of this node uses ``pool`` (the driver tells us which)."""
        return str(pool) in self.bound_pools()

    def release_pool(self, pool_id: str) -> None:
        with self._lock:
            rows = self.db.query("SELECT pool FROM ipam_pools WHERE pool_id = ?", (pool_id,))
            if not rows:
                return
            pool = rows[0]["pool"]
            with self.db.transaction() as tx:
                tx.execute("DELETE FROM ipam_pools WHERE pool_id = ?", (pool_id,))
                tx.execute("DELETE FROM ipam_addresses WHERE pool = ?", (pool,))
                blocks = [r[0] for r in tx.execute(
                    "SELECT block FROM ipam_blocks WHERE pool = ?", (pool,))]
                tx.execute("DELETE FROM ipam_blocks WHERE pool = ?", (pool,))
            network = ipaddress.ip_network(pool)
            for block in blocks:
                self._release_block_lease(network, ipaddress.ip_network(block))
            if blocks:
                self.on_blocks_changed()

    def pool(self, pool_id: str) -> PoolSpec:
        rows = self.db.query("SELECT pool_id FROM ipam_pools WHERE pool_id = ?", (pool_id,))
        if not rows:
            raise PoolError(f"unknown pool {reprlib.repr(pool_id)} (released, or never "
                            "requested here)")
        return pools.parse_pool_id(pool_id)

    # ---- addresses ---------------------------------------------------------
    def request_address(self, pool_id: str, address: str, options: dict) -> tuple[str, str]:
        """Returns (CIDR string for Docker, kind)."""
        with self._lock:
            spec = self.pool(pool_id)
            kind = request_kind(address, options)
            if kind == KIND_GATEWAY:
                wanted = (self._parse_in_pool(spec, address) if address
                          else pools.default_gateway(spec.pool))
                self._claim(spec, wanted, kind, allow_same_kind=True)
                return pools.with_prefix(wanted, spec.pool.prefixlen), kind
            if kind == KIND_AUX:
                wanted = self._parse_in_pool(spec, address)
                self._claim(spec, wanted, kind, allow_same_kind=True)
                return pools.with_prefix(wanted, spec.pool.prefixlen), kind
            if address:
                wanted = self._parse_in_pool(spec, address)
                self._ensure_block_for(spec, wanted)
                self._claim(spec, wanted, kind)
            else:
                wanted = self._allocate(spec)
            return pools.with_prefix(wanted, spec.pool.max_prefixlen), kind

    def _parse_in_pool(self, spec: PoolSpec, text: str) -> Address:
        try:
            address = ipaddress.ip_address(text.split("/")[0])
        except ValueError:
            raise PoolError(f"{reprlib.repr(text)} is not an IP address") from None
        if address not in spec.pool:
            raise PoolError(f"address {address} is not in pool {spec.pool}")
        if pools.is_reserved(spec.pool, address):
            raise PoolError(f"address {address} is the network or broadcast address of "
                            f"{spec.pool}")
        return address

    def _claim(self, spec: PoolSpec, address: Address, kind: str,
               allow_same_kind: bool = False) -> None:
        with self.db.transaction() as tx:
            row = tx.execute("SELECT kind FROM ipam_addresses WHERE address = ?",
                             (str(address),)).fetchone()
            if row:
                if allow_same_kind and row["kind"] == kind:
                    return
                raise PoolError(f"Address already in use: {address} ({row['kind']})")
            tx.execute("INSERT INTO ipam_addresses VALUES (?, ?, ?, ?, NULL)",
                       (str(address), str(spec.pool), kind, time.time()))

    def _used(self, pool: Network) -> set[Address]:
        rows = self.db.query("SELECT address FROM ipam_addresses WHERE pool = ?", (str(pool),))
        return {ipaddress.ip_address(r["address"]) for r in rows}

    def _my_blocks(self, pool: Network) -> list[Network]:
        rows = self.db.query("SELECT block FROM ipam_blocks WHERE pool = ?", (str(pool),))
        return sorted((ipaddress.ip_network(r["block"]) for r in rows),
                      key=lambda n: int(n.network_address))

    def _allocate(self, spec: PoolSpec) -> Address:
        used = self._used(spec.pool)
        for block in self._my_blocks(spec.pool):
            if not block.overlaps(spec.range):
                continue
            found = pools.free_address(spec.pool, block, spec.range, used)
            if found is not None:
                self._claim(spec, found, KIND_ENDPOINT)
                return found
        while True:
            block = self._lease_new_block(spec)
            if block is None:
                raise PoolError(
                    f"no free address in {spec.range}: the pool is exhausted "
                    "(release addresses or use a larger subnet)"
                )
            found = pools.free_address(spec.pool, block, spec.range, used)
            if found is not None:
                self._claim(spec, found, KIND_ENDPOINT)
                return found

    def _block_size(self, pool: Network) -> int:
        return pools.block_prefix(pool, self._block_prefix[pool.version])

    def _leased_elsewhere(self, pool: Network) -> dict[str, str]:
        prefix = _block_key(pool)
        return {pair.key[len(prefix):]: json.loads(pair.value).get("node", "?")
                for pair in self.kv.list(prefix)}

    def _lease_new_block(self, spec: PoolSpec) -> Network | None:
        leased = self._leased_elsewhere(spec.pool)
        mine = set(self._my_blocks(spec.pool))
        for block in pools.blocks(spec.pool, self._block_size(spec.pool), spec.range):
            if block in mine:
                continue
            owner = leased.get(str(block).replace("/", "_"))
            if owner == self.node:
                self._record_block(spec.pool, block)  # ours from before a state loss
                return block
            if owner is not None:
                continue
            if self.kv.create(_block_key(spec.pool, block), json.dumps({"node": self.node})):
                self._record_block(spec.pool, block)
                return block
        return None

    def _ensure_block_for(self, spec: PoolSpec, address: Address) -> None:
        """A user-chosen address must lie in one of our blocks, or in a free one we lease."""
        size = self._block_size(spec.pool)
        block = ipaddress.ip_network(f"{address}/{size}", strict=False)
        if block in self._my_blocks(spec.pool):
            return
        leased = self._leased_elsewhere(spec.pool)
        owner = leased.get(str(block).replace("/", "_"))
        if owner not in (None, self.node) or (
            owner is None and not self.kv.create(_block_key(spec.pool, block),
                                                 json.dumps({"node": self.node}))
        ):
            raise PoolError(f"address {address} is in block {block} of node "
                            f"{owner or 'another node'}; request it on that host")
        self._record_block(spec.pool, block)

    def _record_block(self, pool: Network, block: Network) -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT OR IGNORE INTO ipam_blocks VALUES (?, ?)", (str(pool), str(block)))
        self.on_blocks_changed()

    def _release_block_lease(self, pool: Network, block: Network) -> None:
        pair = self.kv.get(_block_key(pool, block))
        if pair and json.loads(pair.value).get("node") == self.node:
            self.kv.delete(pair.key, pair.mod_index)

    def release_address(self, pool_id: str, address: str) -> Allocation | None:
        """Frees an address; unknown pools or addresses are not an error (idempotent)."""
        with self._lock:
            try:
                spec = self.pool(pool_id)
                ip = ipaddress.ip_address(address.split("/")[0])
            except (PoolError, ValueError):
                return None
            with self.db.transaction() as tx:
                row = tx.execute(
                    "SELECT * FROM ipam_addresses WHERE address = ? AND pool = ?",
                    (str(ip), str(spec.pool))).fetchone()
                if row is None:
                    return None
                tx.execute("DELETE FROM ipam_addresses WHERE address = ?", (str(ip),))
            return Allocation(ip, spec.pool, row["kind"], row["created"], row["owner"])

    def bind(self, address: Address, owner: str) -> None:
        """Marks an endpoint address as owned by an endpoint (the GC keeps it)."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE ipam_addresses SET owner = ? WHERE address = ?",
                       (owner, str(address)))

    def unbind(self, owner: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE ipam_addresses SET owner = NULL, created = ? WHERE owner = ?",
                       (time.time(), owner))

    def allocations(self) -> list[Allocation]:
        rows = self.db.query("SELECT * FROM ipam_addresses ORDER BY pool, address")
        return [Allocation(ipaddress.ip_address(r["address"]), ipaddress.ip_network(r["pool"]),
                           r["kind"], r["created"], r["owner"]) for r in rows]

    def reclaim_orphans(self, grace: float, live_owners: set[str]) -> list[Address]:
        """Frees endpoint addresses with no live endpoint, older than ``grace`` seconds.

        They come from calls whose connection dropped after we committed (Docker's
        retry then fails with an empty body) or from endpoints lost in a crash.
        """
        cutoff = time.time() - grace
        freed = []
        with self._lock, self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT address, owner FROM ipam_addresses WHERE kind = ? AND created < ?",
                (KIND_ENDPOINT, cutoff)).fetchall()
            for row in rows:
                if row["owner"] is None or row["owner"] not in live_owners:
                    tx.execute("DELETE FROM ipam_addresses WHERE address = ?", (row["address"],))
                    freed.append(ipaddress.ip_address(row["address"]))
        return freed

    def blocks(self) -> list[str]:
        """The address blocks this node leases, in every pool (published with the node)."""
        return sorted({r["block"] for r in self.db.query("SELECT block FROM ipam_blocks")})

    def release_pools(self, pool_cidrs: list[str]) -> list[str]:
        """Releases every pool request held for these CIDRs (a network Docker no longer
        has, removed while the agent was down, so ReleasePool never came)."""
        released = []
        for row in self.pools():
            if row["pool"] in pool_cidrs:
                self.release_pool(row["pool_id"])
                released.append(row["pool_id"])
        return released

    def pools(self) -> list[dict]:
        rows = self.db.query("SELECT * FROM ipam_pools ORDER BY pool")
        return [dict(r) for r in rows]
