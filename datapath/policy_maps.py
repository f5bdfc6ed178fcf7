"""The policy maps (allow and deny, LPM tries) and their Python mirror, written in
batches.

The mirror (the entries, and per map key the proxy ports of the entries on it) is kept
so that an endpoint's entries can be listed and removed without scanning the maps.
``add``/``remove`` change the mirror and mark the keys whose value must change;
``flush`` writes them as the mirror then says: right away, or at the end of a
``batched`` block, in one BPF_MAP_UPDATE_BATCH/DELETE_BATCH syscall per map and kind
of change. A 100,000-entry import was 100,000 bpf() calls through ctypes (issue 17).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import NamedTuple

from datapath import maps


class _Fields(NamedTuple):
    ep: int
    direction: str  # "ingress" | "egress"
    identity: int
    proto: int
    port: int = 0
    end_port: int = 0
    deny: bool = False
    proxy_port: int = 0


class PolicyEntry(_Fields):
    """One allow or deny entry: endpoint (host ifindex), direction, peer identity
    (0 = any), protocol (0 = any), port range (0-0 = any port).

    A named tuple, not a frozen dataclass: a large import makes and hashes 100,000 of
    them (set and counter operations on every sync), 4x faster as a tuple. ``__dict__``
    (the fields) as the dataclass had, for callers that serialize it so."""

    __slots__ = ()

    @property
    def __dict__(self) -> dict:  # type: ignore[override]
        return self._asdict()

    def map_keys(self) -> list[bytes]:
        """The entry's map keys packed by ``maps.POLICY_KEY`` (a few for a port range): the
        bytes of ``maps.policy_key`` for each ``maps.port_prefixes`` pair."""
        ep, identity, proto = self.ep, self.identity, self.proto
        direction = maps.DIR_INGRESS if self.direction == "ingress" else maps.DIR_EGRESS
        return [maps.POLICY_KEY.pack(prefixlen, ep, direction, proto, identity, port)
                for prefixlen, port in maps.packed_prefixes(self.port, self.end_port or self.port)]


_ONE_PORT = {0: (0,)}  # the proxy ports of most keys, one tuple shared by all of them


class PolicyMaps:
    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock  # the datapath's: a batch excludes its other writers too
        self.tables: dict[bool, maps.BPFMap] = {}  # deny? -> map
        self.entries: set[PolicyEntry] = set()
        # Entries may share map keys (port-range prefixes, an L7 and an L4-only allow of
        # the same peer and port): each key keeps the proxy ports of the entries on it,
        # and its value redirects to the proxy while any of them does. One dict per map
        # keyed by the packed key, values tuples of ints: per key no object the garbage
        # collector has to walk (a large import adds 100,000 keys).
        self._key_refs: dict[bool, dict[bytes, tuple[int, ...]]] = {False: {}, True: {}}
        self._dirty: dict[bool, set[bytes]] = {False: set(), True: set()}  # see flush
        self._batching = 0  # depth of ``batched`` blocks (of the thread holding the lock)

    def load(self, allow: maps.BPFMap, deny: maps.BPFMap) -> None:
        """The maps, and the entries pinned in them by an earlier agent, read back (port
        ranges come back as the prefixes they were written as)."""
        self.tables = {False: allow, True: deny}
        self.entries.clear()
        for deny_map, table in self.tables.items():
            self._key_refs[deny_map].clear()
            self._dirty[deny_map].clear()
            for key, value in table.items():
                bits = key.prefixlen - 96
                port = (key.dport[0] << 8) | key.dport[1]
                end = port + (1 << (16 - bits)) - 1 if bits < 16 else 0
                if bits == 0:
                    port, end = 0, 0
                self.entries.add(PolicyEntry(
                    key.ep, "ingress" if key.dir == maps.DIR_INGRESS else "egress",
                    key.identity, key.proto, port, end, deny_map, value.proxy_port))
                self._key_refs[deny_map][bytes(key)] = (value.proxy_port,)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Writes inside are deferred until the block ends or another map is written
        (``barrier``), so maps still change in the order of the calls: an endpoint's
        entries before its enforcement flags and its conntrack reset. Holds the lock:
        no other thread writes in between."""
        with self.lock:
            self._batching += 1
            try:
                yield
            finally:
                self._batching -= 1
                if not self._batching:
                    self.flush()

    def barrier(self) -> None:
        """Called before any other map is written: the pending keys go first."""
        if self._dirty[False] or self._dirty[True]:
            with self.lock:
                self.flush()

    def add(self, entry: PolicyEntry) -> None:
        with self.lock:
            known = len(self.entries)
            self.entries.add(entry)
            if len(self.entries) == known:  # already there (one hash instead of two)
                return
            refs, dirty = self._key_refs[entry.deny], self._dirty[entry.deny]
            proxy = entry.proxy_port
            for key in entry.map_keys():
                ports = refs.get(key)
                if ports is None:
                    refs[key] = _ONE_PORT.get(proxy) or (proxy,)
                    dirty.add(key)
                else:
                    if proxy > max(ports):  # the key's value redirects to the highest
                        dirty.add(key)
                    refs[key] = (*ports, proxy)
            if not self._batching:
                self.flush()

    def remove(self, entry: PolicyEntry) -> bool:
        with self.lock:
            if entry not in self.entries:
                return False
            self.entries.discard(entry)
            refs, dirty = self._key_refs[entry.deny], self._dirty[entry.deny]
            for key in entry.map_keys():
                ports = list(refs[key])
                ports.remove(entry.proxy_port)
                if not ports:
                    del refs[key]
                    dirty.add(key)
                else:
                    if max(ports) != max(refs[key]):
                        dirty.add(key)
                    refs[key] = tuple(ports)
            if not self._batching:
                self.flush()
            return True

    def flush(self) -> None:
        """Writes the marked keys as the mirror now says (call with the lock). Order:
        deny keys added or changed, allow keys added or changed, allow keys removed,
        deny keys removed. So while a change is being written no packet passes that the
        old and the new entries both deny, nor one that a deny entry of either matches
        (as before the batching, adds go before removes; now also every deny before any
        allow). A key that fails (map full) is reported after the others are written."""
        if not (self._dirty[False] or self._dirty[True]):
            return
        puts: dict[bool, tuple[list[bytes], list[bytes]]] = {}
        removes: dict[bool, list[bytes]] = {}
        for deny in (False, True):
            dirty, self._dirty[deny] = self._dirty[deny], set()
            refs, keys, values, removes[deny] = self._key_refs[deny], [], [], []
            for key in dirty:
                ports = refs.get(key)
                if ports is None:
                    removes[deny].append(key)
                else:
                    keys.append(key)
                    values.append(maps.policy_value_bytes(deny, max(ports)))
            puts[deny] = (keys, values)
        failures: list[str] = []
        for deny in (True, False):
            self._put(deny, *puts[deny], failures)
        for deny in (False, True):
            self._remove(deny, removes[deny], failures)
        if failures:
            raise maps.MapError(f"{len(failures)} policy map writes failed, the first: "
                                f"{failures[0]}")

    def _put(self, deny: bool, keys: list[bytes], values: list[bytes],
             failures: list[str]) -> None:
        while keys:
            try:
                self.tables[deny].update_batch(keys, values)
                return
            except maps.BatchError as exc:
                failures.append(str(exc))
                keys, values = keys[exc.done + 1:], values[exc.done + 1:]

    def _remove(self, deny: bool, keys: list[bytes], failures: list[str]) -> None:
        while keys:
            try:
                self.tables[deny].delete_batch(keys)  # skips keys never written
                return
            except maps.BatchError as exc:
                failures.append(str(exc))
                keys = keys[exc.done + 1:]
