"""Services on this node: follows their definitions in the kvstore and the cluster's
endpoints, resolves each service's backends (listed, selected by labels, or joined by
the ``ciliumpy.service`` label), builds its Maglev table and programs the datapath's
service maps (``datapath.lb.ServiceTables``); names the network namespaces of this
node's containers to the socket hooks, with their addresses, so a client's backend
can be predicted (``affinity: client``).

Every node computes the same tables from the same inputs (backends sorted, Maglev
deterministic), so a client gets the same backend whichever node it runs on. A change
(a service, a container starting or stopping anywhere) is applied within the time the
kvstore takes to tell us, coalesced; only services whose backends changed are rebuilt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ciliumpy import service_store
from datapath import sock_lb
from datapath.lb import Address, ServiceTables
from datapath.maps import LB_HOST_PORT
from services import maglev
from services.model import Service, resolve_backends
from state.kvstore.base import KVError, KVStore

log = logging.getLogger("ciliumpy.services")
RESYNC_SECONDS = 30.0


@dataclass
class ClusterEndpoint:
    """What backend selection reads of an endpoint anywhere in the cluster."""

    labels: dict[str, str]
    addresses: list[str]
    node: str = ""
    name: str = ""


@dataclass
class Programmed:
    backends: list[Any] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)  # backend -> slots it holds
    signature: tuple = ()
    seconds: float = 0.0


def label_dict(labels: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``source:key=value`` identity labels as key -> value (selectors name keys)."""
    result = {}
    for text in labels or ():
        body, _, value = text.partition("=")
        source, sep, key = body.partition(":")
        result[key if sep and source.isalpha() else body] = value
    return result


class ServiceManager:
    def __init__(self, kv: KVStore, tables: ServiceTables,
                 endpoints: Callable[[], list[ClusterEndpoint]]) -> None:
        self.kv, self.tables, self.endpoints = kv, tables, endpoints
        self.services: dict[str, Service] = {}
        self.programmed: dict[str, Programmed] = {}
        self.conflicts: dict[str, str] = {}
        self.error: str | None = None
        self.syncs = 0
        self._netns: dict[str, int] = {}  # endpoint id -> its namespace's cookie
        self._lock = threading.RLock()
        self._kick = threading.Event()
        self._stop = threading.Event()

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._follow, name="services-follow", daemon=True).start()
        threading.Thread(target=self._sync_loop, name="services-sync", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def kick(self) -> None:
        """Endpoints changed somewhere: resolve the services again (coalesced)."""
        self._kick.set()

    def _follow(self) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                if watch is None:
                    index = self.kv.index()
                    loaded = service_store.load_all(self.kv)
                    with self._lock:
                        self.services = loaded
                    watch = self.kv.watch(service_store.PREFIX, index)
                    self.kick()
                events = watch.next(timeout=5.0)
                if events:
                    self._apply(events)
                    self.kick()
                self.error = None
            except KVError as exc:
                self.error = f"following services: {exc} (keeping what is programmed)"
                watch = None
                self._stop.wait(1.0)
            except Exception:
                log.exception("following services failed; reloading")
                watch = None
                self._stop.wait(1.0)

    def _apply(self, events: list) -> None:
        """Watch events one by one (a reload would parse every service per change)."""
        with self._lock:
            for event in events:
                name = event.key[len(service_store.PREFIX):]
                if event.kind != "put":
                    self.services.pop(name, None)
                    continue
                service = service_store.parse(event.value, name)
                if service is None:
                    self.services.pop(name, None)
                else:
                    self.services[service.name] = service

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(RESYNC_SECONDS)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception:
                log.exception("programming services failed")

    def stored(self, service: Service) -> None:
        """The API stored ``service``: apply it now rather than at the watch's echo."""
        with self._lock:
            self.services[service.name] = service
        self.kick()

    def removed(self, name: str) -> None:
        with self._lock:
            self.services.pop(name, None)
        self.kick()

    # ---- programming -------------------------------------------------------------
    def sync(self) -> int:
        """Every service resolved and programmed where it changed; frontends of services
        that are gone removed. Returns the number of services rebuilt."""
        with self._lock:
            endpoints = self.endpoints()
            rebuilt = 0
            wanted: dict[Address, str] = {}
            conflicts = {}
            for name in sorted(self.services):
                service = self.services[name]
                frontend = Address(service.frontend.address, service.frontend.port,
                                   service.frontend.protocol)
                if frontend in wanted:
                    conflicts[name] = f"frontend {service.frontend} is {wanted[frontend]}'s"
                    continue
                wanted[frontend] = name
                if self._program(service, frontend, endpoints):
                    rebuilt += 1
            self.conflicts = conflicts
            for frontend, (_, _, flags) in self.tables.frontends().items():
                if frontend not in wanted and not flags & LB_HOST_PORT:  # ports.py's
                    self.tables.delete_service(frontend)
            for name in set(self.programmed) - set(wanted.values()):
                del self.programmed[name]
            if self.syncs == 0:
                self.tables.prune()  # backends only an earlier run's tables used
            self.syncs += 1
            return rebuilt

    def _program(self, service: Service, frontend: Address,
                 endpoints: list[ClusterEndpoint]) -> bool:
        backends = resolve_backends(service, endpoints)
        signature = (frontend, service.affinity, service.maglev_size,
                     tuple((str(b.address), b.port, b.weight) for b in backends))
        current = self.programmed.get(service.name)
        if current is not None and current.signature == signature:
            return False
        start = time.perf_counter()
        names = [(str(b), b.weight) for b in backends]
        table = maglev.build_table(names, service.maglev_size) if backends else []
        self.tables.set_service(frontend, [Address(b.address, b.port) for b in backends],
                                table, service.affinity == "client")
        slots: dict[str, int] = {str(b): 0 for b in backends}
        for index in table:
            slots[names[index][0]] += 1
        self.programmed[service.name] = Programmed(backends, slots, signature,
                                                   time.perf_counter() - start)
        log.info("service %s: %d backends programmed", service.name, len(backends))
        return True

    # ---- namespaces of this node's containers ---------------------------------------
    def register_netns(self, endpoint_id: str, netns_path: str, ipv4: str | None,
                       ipv6: str | None) -> None:
        """The container's namespace named to the socket hooks with its addresses."""
        try:
            cookie = sock_lb.netns_cookie(netns_path)
        except sock_lb.SockLBError as exc:
            log.warning("endpoint %s: %s (its sockets use the fallback scope)",
                        endpoint_id[:12], exc)
            return
        self.tables.set_netns(cookie, ipv4, ipv6)
        with self._lock:
            old = self._netns.get(endpoint_id)
            self._netns[endpoint_id] = cookie
        if old is not None and old != cookie:
            self.tables.delete_netns(old)

    def unregister_netns(self, endpoint_id: str) -> None:
        with self._lock:
            cookie = self._netns.pop(endpoint_id, None)
        if cookie is not None:
            self.tables.delete_netns(cookie)

    # ---- views --------------------------------------------------------------------
    def describe(self, service: Service) -> dict[str, Any]:
        with self._lock:
            done = self.programmed.get(service.name)
            conflict = self.conflicts.get(service.name)
        result = service.to_json()
        backends = done.backends if done else []
        result["status"] = {
            "state": ("conflict: " + conflict) if conflict else (
                "no backends (connections refused)" if done and not backends else
                "programmed" if done else "pending"),
            "backends": [{"address": str(b.address), "port": b.port, "weight": b.weight,
                          "slots": done.slots.get(str(b), 0) if done else 0}
                         for b in backends],
            "build_seconds": round(done.seconds, 4) if done else None,
        }
        return result

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            services = [self.services[name] for name in sorted(self.services)]
        return [self.describe(s) for s in services]

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {"services": len(self.services), "programmed": len(self.programmed),
                    "backends": self.tables.backend_count(), "namespaces": len(self._netns),
                    "conflicts": len(self.conflicts), "error": self.error}
