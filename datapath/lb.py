"""The service maps (``bpf/lib/lb.h``) from Python: frontends, their Maglev tables,
backends, and the namespaces this agent serves.

Every change is incremental: a backend set that changes rewrites only the table slots
whose backend changed; a service whose table size changes gets a new table id, fully
written before its frontend points at it, so a connect() never meets half a table.
Backends are shared between services by (address, port) with reference counts. The
mirrors are rebuilt from the maps after a restart. Table and backend ids come from
free lists, so adding the 10,000th service costs what adding the first did.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from datapath import maps

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}


@dataclass(frozen=True, order=True)
class Address:
    """An address and port: a frontend's (with its protocol) or a backend's."""

    ip: IPAddress
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        host = f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)
        return f"{host}:{self.port}"


def _svc_key(frontend: Address) -> maps.LbSvcKey:
    key = maps.LbSvcKey()
    key.addr[:] = list(maps.addr_bytes(frontend.ip))
    key.port = socket.htons(frontend.port)
    key.proto = PROTOCOLS[frontend.protocol]
    key.family = frontend.ip.version
    return key


def _frontend_of(key: maps.LbSvcKey) -> Address:
    ip = ipaddress.ip_address(bytes(key.addr)[:4] if key.family == 4 else bytes(key.addr))
    return Address(ip, socket.ntohs(key.port), PROTOCOL_NAMES.get(key.proto, str(key.proto)))


def _backend_value(backend: Address) -> maps.LbBackend:
    value = maps.LbBackend()
    value.addr[:] = list(maps.addr_bytes(backend.ip))
    value.port = socket.htons(backend.port)
    value.family = backend.ip.version
    return value


class ServiceTables:
    def __init__(self, bpf_maps: dict[str, maps.BPFMap]) -> None:
        self.services = bpf_maps["cp_lb_services_v1"]
        self.slots = bpf_maps["cp_lb_maglev_v1"]
        self.backends = bpf_maps["cp_lb_backends_v1"]
        self.netns = bpf_maps["cp_lb_netns_v1"]
        self.config = bpf_maps["cp_lb_config_v1"]
        self._programmed: dict[Address, tuple[int, int, int]] = {}  # -> (id, size, flags)
        self._tables: dict[int, list[int]] = {}  # table id -> backend id per slot
        self._uses: dict[int, set[Address]] = {}  # table id -> its backends
        self._backend_ids: dict[Address, int] = {}
        self._refs: dict[int, int] = {}
        self._table_ids = _IdPool()
        self._backend_id_pool = _IdPool()
        self._lock = threading.Lock()
        self._rebuild()

    def _rebuild(self) -> None:
        for key, value in self.services.items():
            self._programmed[_frontend_of(key)] = (value.svc_id, value.table_size, value.flags)
        for key, value in self.backends.items():
            ip = ipaddress.ip_address(bytes(value.addr)[:4] if value.family == 4
                                      else bytes(value.addr))
            self._backend_ids[Address(ip, socket.ntohs(value.port))] = key.value
        self._table_ids.adopt(entry[0] for entry in self._programmed.values())
        self._backend_id_pool.adopt(self._backend_ids.values())
        # slot contents are not read back (millions of entries): the first change of a
        # service after a restart rewrites its whole table; until then it stays as is.
        # Backends start unreferenced: the agent's first sync re-references the ones its
        # services use, then ``prune`` removes the rest.

    # ---- services --------------------------------------------------------------
    def frontends(self) -> dict[Address, tuple[int, int, int]]:
        with self._lock:
            return dict(self._programmed)

    def frontend(self, frontend: Address) -> tuple[int, int, int] | None:
        """One frontend's (table id, size, flags), or None: O(1), unlike ``frontends``."""
        with self._lock:
            return self._programmed.get(frontend)

    def set_service(self, frontend: Address, backends: list[Address], table: list[int],
                    affinity_client: bool = False, host_port: bool = False) -> int:
        """Points ``frontend`` at a Maglev ``table`` (slot -> index into ``backends``);
        an empty table refuses connections. ``host_port``: a published port (the
        frontend's address is one of the host's, or 0.0.0.0 / :: for all of them).
        Returns the number of slots written."""
        flags = (maps.LB_AFFINITY_CLIENT if affinity_client else 0) | (
            maps.LB_HOST_PORT if host_port else 0)
        with self._lock:
            ids = [self._backend_id(b) for b in backends]
            wanted = [ids[i] for i in table]
            old = self._programmed.get(frontend)
            if old is not None and old[1] == len(wanted) and old[0] in self._tables:
                table_id, written = old[0], self._write_slots(old[0], wanted)
            else:
                table_id = self._new_table_id()
                written = self._write_slots(table_id, wanted)
            value = maps.LbSvcVal()
            value.svc_id, value.table_size, value.flags = table_id, len(wanted), flags
            self.services.update(_svc_key(frontend), value)
            self._programmed[frontend] = (table_id, len(wanted), flags)
            if old is not None and old[0] != table_id:
                self._drop_table(old[0], old[1])
            previous = self._uses.pop(old[0], set()) if old is not None else set()
            self._uses[table_id] = set(backends)
            for backend in previous:
                self._release(backend)
            return written

    def delete_service(self, frontend: Address) -> bool:
        with self._lock:
            old = self._programmed.pop(frontend, None)
            if old is None:
                return False
            self.services.delete(_svc_key(frontend))  # first: no connect() reads on
            self._drop_table(old[0], old[1])
            for backend in self._uses.pop(old[0], set()):
                self._release(backend)
            return True

    def _new_table_id(self) -> int:
        return self._table_ids.take()

    def _write_slots(self, table_id: int, wanted: list[int]) -> int:
        current = self._tables.get(table_id)
        changed = [slot for slot, backend in enumerate(wanted)
                   if current is None or current[slot] != backend]
        for start in range(0, len(changed), 65536):
            chunk = changed[start:start + 65536]
            keys = [maps.LbSlotKey(table_id, slot) for slot in chunk]
            self.slots.update_batch(keys, [maps.ct.c_uint32(wanted[s]) for s in chunk])
        self._tables[table_id] = wanted
        return len(changed)

    def _drop_table(self, table_id: int, size: int) -> None:
        for slot in range(size):
            self.slots.delete(maps.LbSlotKey(table_id, slot))
        self._tables.pop(table_id, None)
        self._table_ids.give(table_id)  # no frontend points at it any more

    # ---- backends ---------------------------------------------------------------
    def _backend_id(self, backend: Address) -> int:
        """The backend's id, referenced once more (written to the map when new)."""
        backend = Address(backend.ip, backend.port)
        backend_id = self._backend_ids.get(backend)
        if backend_id is None:
            backend_id = self._backend_id_pool.take()
            self.backends.update(maps.ct.c_uint32(backend_id), _backend_value(backend))
            self._backend_ids[backend] = backend_id
        self._refs[backend_id] = self._refs.get(backend_id, 0) + 1
        return backend_id

    def _release(self, backend: Address) -> None:
        backend = Address(backend.ip, backend.port)
        backend_id = self._backend_ids.get(backend)
        if backend_id is None:
            return
        self._refs[backend_id] = self._refs.get(backend_id, 0) - 1
        if self._refs[backend_id] <= 0:
            self.backends.delete(maps.ct.c_uint32(backend_id))
            del self._backend_ids[backend], self._refs[backend_id]
            self._backend_id_pool.give(backend_id)

    def prune(self) -> int:
        """Removes backends no service references (after a restart's first sync)."""
        with self._lock:
            unused = [b for b, n in self._backend_ids.items() if not self._refs.get(n)]
            for backend in unused:
                backend_id = self._backend_ids.pop(backend)
                self.backends.delete(maps.ct.c_uint32(backend_id))
                self._backend_id_pool.give(backend_id)
            return len(unused)

    def backend_count(self) -> int:
        with self._lock:
            return len(self._backend_ids)

    # ---- namespaces ---------------------------------------------------------------
    def set_scope_all(self, translate_all: bool) -> None:
        """Whether sockets of namespaces not named here are translated too."""
        self.config.update(maps.ct.c_uint32(0), maps.ct.c_uint32(1 if translate_all else 0))

    def set_netns(self, cookie: int, ipv4: str | None, ipv6: str | None) -> None:
        value = maps.LbNetnsVal()
        if ipv4:
            value.addr4 = int.from_bytes(ipaddress.IPv4Address(ipv4).packed, "little")
        if ipv6:
            value.addr6[:] = list(ipaddress.IPv6Address(ipv6).packed)
        self.netns.update(maps.ct.c_uint64(cookie), value)

    def delete_netns(self, cookie: int) -> None:
        self.netns.delete(maps.ct.c_uint64(cookie))



class _IdPool:
    """Ids from 1, the smallest free one first (ids stay dense, as the maps' sizes
    assume) in O(log n), rather than a scan of every id in use per new one."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._free: list[int] = []  # a heap of freed ids, all below _next
        self._next = 1  # every id from here up is free unless in _used

    def adopt(self, ids: Iterable[int]) -> None:
        """Ids an earlier run left in the maps are in use (the gaps between them are
        found by ``take`` as it passes them: no range is built, whatever the ids)."""
        self._used, self._free, self._next = set(ids), [], 1

    def take(self) -> int:
        if self._free:
            number = heapq.heappop(self._free)
        else:
            while self._next in self._used:
                self._next += 1
            number, self._next = self._next, self._next + 1
        self._used.add(number)
        return number

    def give(self, number: int) -> None:
        if number not in self._used:  # given twice: it would be handed out twice
            return
        self._used.discard(number)
        if number < self._next:  # from _next up, ``take`` finds it free by itself
            heapq.heappush(self._free, number)
