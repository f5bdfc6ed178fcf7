"""Services on this node: follows their definitions in the kvstore and the cluster's
endpoints, resolves each service's backends (listed, selected by labels, or joined by
the ``ciliumpy.service`` label), builds its Maglev table and programs the datapath's
service maps (``datapath.lb.ServiceTables``); names the network namespaces of this
node's containers to the socket hooks (``ciliumpy.lb_netns``), with their addresses, so
a client's backend can be predicted (``affinity: client``).

Every node computes the same tables from the same inputs (backends sorted, Maglev
deterministic), so a client gets the same backend whichever node it runs on. A change
costs O(what it touches), not O(every service): a service stored or deleted is
resolved alone; endpoints appearing or disappearing re-resolve only the services whose
selector they match or that they join (``services.index``); a frontend claimed by
several services is settled among those. Everything is resolved at start and after a
kvstore outage (the watch may have missed changes); the resync timer only diffs the
endpoints, which catches a change nobody kicked us for. A global service (Cluster Mesh)
also balances to other clusters' backends (``ciliumpy.clustermesh_services``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ciliumpy import service_store
from ciliumpy.clustermesh_services import BackendPublisher, merge
from ciliumpy.lb_netns import NetnsRegistry
from ciliumpy.lb_types import (  # noqa: F401 (ClusterEndpoint, label_dict: for callers)
    ClusterEndpoint,
    Programmed,
    frontend_address,
    label_dict,
)
from datapath.lb import Address, ServiceTables
from datapath.maps import LB_HOST_PORT
from services import maglev
from services.index import EndpointIndex, SelectorIndex
from services.model import Backend, Service, resolve_backends
from state.kvstore.base import KVError, KVStore

log = logging.getLogger("ciliumpy.services")
RESYNC_SECONDS = 30.0


class ServiceManager:
    def __init__(self, kv: KVStore, tables: ServiceTables,
                 endpoints: Callable[[], list[ClusterEndpoint]]) -> None:
        self.kv, self.tables, self.endpoints = kv, tables, endpoints
        self.services: dict[str, Service] = {}
        self.programmed: dict[str, Programmed] = {}
        self.conflicts: dict[str, str] = {}
        self.error: str | None = None
        self.syncs = 0  # full syncs
        self.resolved = 0  # services resolved: what changes cost (the tests count it)
        self._selectors = SelectorIndex()
        self._endpoints = EndpointIndex()
        self._claims: dict[Address, set[str]] = {}  # frontend -> services naming it
        self._claimed: dict[str, Address] = {}  # service -> the frontend it was filed under
        self._owners: dict[Address, str] = {}  # frontend -> the service programmed there
        # pending work, taken by ``process``
        self._loaded = False  # the kvstore was read: never prune against a partial set
        self._full = False
        self._dirty: set[str] = set()
        self._endpoints_changed = False
        self.netns = NetnsRegistry(tables)  # this node's namespaces, for the socket hooks
        # Cluster Mesh (ciliumpy.clustermesh_services): other clusters' backends of a
        # global service, and where this node's own share is published
        self.mesh_backends: Callable[[str], dict[Backend, str]] | None = None
        self.publisher: BackendPublisher | None = None
        self._mesh_dirty: set[str] = set()
        self._mesh_lock = threading.Lock()
        self._lock = threading.RLock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        # told, outside this manager's lock, the names of services stored or removed
        # (None: possibly any, after a reload): toServices rules follow them
        self.on_services_changed: Callable[[set[str] | None], None] | None = None
        self._told: set[str] | None = set()

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._follow, name="services-follow", daemon=True).start()
        threading.Thread(target=self._sync_loop, name="services-sync", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self.publisher is not None:
            self.publisher.stop()

    def kick(self) -> None:
        """Endpoints changed somewhere: the services they concern follow (coalesced)."""
        # no lock: callers may hold theirs, and a flag set before the event is never lost
        self._endpoints_changed = True
        self._kick.set()

    def _follow(self) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                if watch is None:
                    index = self.kv.index()
                    self.reload(service_store.load_all(self.kv))
                    watch = self.kv.watch(service_store.PREFIX, index)
                events = watch.next(timeout=5.0)
                if events:
                    self._apply(events)
                    self._kick.set()
                self.error = None
            except KVError as exc:
                self.error = f"following services: {exc} (keeping what is programmed)"
                watch = None
                self._stop.wait(1.0)
            except Exception:
                log.exception("following services failed; reloading")
                watch = None
                self._stop.wait(1.0)

    def reload(self, services: dict[str, Service]) -> None:
        """Every stored service, read at start or after an outage (the watch may have
        missed changes): everything is resolved again."""
        with self._lock:
            self.services = services
            self._loaded = self._full = True
            self._told = None
        self._kick.set()

    def selector_of(self, name: str) -> tuple[bool, dict[str, str] | None]:
        """Whether service ``name`` exists, and its backend selector (None: it has
        none, its backends are listed or join by label). No lock: a dict read, and
        the policy manager calls it holding its own lock."""
        service = self.services.get(name)
        if service is None:
            return False, None
        return True, dict(service.selector) or None

    def _tell(self, names: set[str]) -> None:
        with self._lock:
            if self._told is not None:
                self._told |= names

    def _announce(self) -> None:
        """Tells ``on_services_changed`` what changed since last time; never under
        this manager's lock (the policy manager takes its own)."""
        with self._lock:
            told, self._told = self._told, set()
        if self.on_services_changed is not None and (told is None or told):
            self.on_services_changed(told)

    def _apply(self, events: list) -> None:
        """Watch events one by one (a reload would parse every service per change); only
        the services named are resolved again."""
        with self._lock:
            for event in events:
                name = event.key[len(service_store.PREFIX):]
                service = (service_store.parse(event.value, name)
                           if event.kind == "put" else None)
                if service is not None and self.services.get(name) == service:
                    continue  # the echo of what the API stored: applied already
                self.services.pop(name, None)
                self._dirty.add(name)
                self._tell({name})
                if service is not None:
                    self.services[service.name] = service
                    self._dirty.add(service.name)

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            woken = self._kick.wait(RESYNC_SECONDS)
            self._kick.clear()
            if self._stop.is_set():
                return
            if not woken:  # a change nobody told us about: diffing endpoints is O(them)
                with self._lock:
                    self._endpoints_changed = True
            try:
                self.process()
                self._announce()
            except Exception:
                log.exception("programming services failed; everything again next time")
                with self._lock:
                    self._full = True
                self._stop.wait(1.0)
                self._kick.set()

    def stored(self, service: Service) -> None:
        """The API stored ``service``: apply it now rather than at the watch's echo."""
        with self._lock:
            self.services[service.name] = service
            self._dirty.add(service.name)
        self._tell({service.name})
        self._kick.set()

    def claimants(self, service: Service) -> set[str]:
        """The services naming ``service``'s frontend, as this agent knows them now
        (changes not yet processed included): what a new service's conflict check needs,
        in O(pending changes) rather than a pass over every service."""
        frontend = frontend_address(service)
        with self._lock:
            names = set(self._claims.get(frontend, ()))
            for name in self._dirty:  # stored or removed, not processed yet
                pending = self.services.get(name)
                if pending is not None and frontend_address(pending) == frontend:
                    names.add(name)
                else:
                    names.discard(name)
            return names

    def mesh_changed(self, names: set[str]) -> None:
        """Other clusters' backends of these services changed: the global ones follow.
        Never takes the manager's lock: a follower calls it holding its own, which
        ``_program`` takes (through ``mesh_backends``) under the manager's."""
        with self._mesh_lock:
            self._mesh_dirty |= names
        self._kick.set()

    def removed(self, name: str) -> None:
        with self._lock:
            self.services.pop(name, None)
            self._dirty.add(name)
        self._tell({name})
        self._kick.set()

    # ---- programming -------------------------------------------------------------
    def process(self) -> int:
        """What is pending: everything after a (re)load, otherwise the services that
        changed and those whose endpoints changed. Returns the services resolved."""
        with self._lock:
            if not self._loaded:
                return 0
            before = self.resolved
            if self._full or self.syncs == 0:
                self._full, self._endpoints_changed = False, False
                self._dirty.clear()
                self.sync()
                return self.resolved - before
            names, self._dirty = self._dirty, set()
            with self._mesh_lock:
                names |= {n for n in self._mesh_dirty if n in self.services}
                self._mesh_dirty = set()
            if self._endpoints_changed and self.services:
                # (with no service, listing the cluster's endpoints, O(them), waits for
                # the first one: the flag stays set until then)
                self._endpoints_changed = False
                names |= self._selectors.affected(self._endpoints.update(self.endpoints()))
            for name in sorted(names):
                self._update(name)
            return self.resolved - before

    def sync(self) -> int:
        """Every service resolved and programmed where it changed; frontends of services
        that are gone removed; the indexes rebuilt. Returns the number of services
        rebuilt. At start and after a kvstore outage: O(services)."""
        with self._lock:
            self._endpoints = EndpointIndex()
            self._endpoints.update(self.endpoints())
            self._selectors = SelectorIndex()
            self._claims, self._claimed, self._owners = {}, {}, {}
            for name, service in self.services.items():
                self._selectors.add(service)
                self._claim(name, frontend_address(service))
            self.conflicts, rebuilt = {}, 0
            for frontend, names in self._claims.items():
                owner = self._owners[frontend] = min(names)  # the same choice on every node
                for other in names - {owner}:
                    self.conflicts[other] = self._conflict(other, owner)
                if self._program(self.services[owner], frontend):
                    rebuilt += 1
            for frontend, (_, _, flags) in self.tables.frontends().items():
                if frontend not in self._owners and not flags & LB_HOST_PORT:  # ports.py's
                    self.tables.delete_service(frontend)
            for name in set(self.programmed) - set(self._owners.values()):
                del self.programmed[name]
            if self.publisher is not None:
                self.publisher.keep(set(self._owners.values()))
            if self.syncs == 0:
                self.tables.prune()  # backends only an earlier run's tables used
            self.syncs += 1
            return rebuilt

    def _claim(self, name: str, frontend: Address) -> None:
        self._claims.setdefault(frontend, set()).add(name)
        self._claimed[name] = frontend

    def _conflict(self, name: str, owner: str) -> str:
        return f"frontend {self.services[name].frontend} is {owner}'s"

    def _update(self, name: str) -> None:
        """One service stored, deleted, or its endpoints changed: re-filed, and the
        frontends it left or names settled. O(that service and its frontend's)."""
        service = self.services.get(name)
        old = self._claimed.pop(name, None)
        new = frontend_address(service) if service is not None else None
        if service is None:
            self._selectors.remove(name)
            self.conflicts.pop(name, None)
        else:
            self._selectors.add(service)
        if old is not None and old != new:
            self._claims[old].discard(name)
            if not self._claims[old]:
                del self._claims[old]
        if new is not None:
            self._claim(name, new)
        for frontend in (old, new) if old != new else (new,):  # the old one first
            if frontend is not None:
                self._settle(frontend, name)
        if new is None or self._owners.get(new) != name:
            self.programmed.pop(name, None)
            if self.publisher is not None:
                self.publisher.drop(name)

    def _settle(self, frontend: Address, changed: str) -> None:
        """``frontend`` goes to the first of the services naming it by name (the full
        sync's choice); the others are conflicts. Its owner is resolved only if it is
        new or is the service that ``changed``."""
        names = self._claims.get(frontend)
        previous = self._owners.get(frontend)
        if not names:
            if previous is not None:
                del self._owners[frontend]
                entry = self.tables.frontend(frontend)
                if entry is not None and not entry[2] & LB_HOST_PORT:  # ports.py's
                    self.tables.delete_service(frontend)
            return
        owner = self._owners[frontend] = min(names)
        if previous is not None and previous != owner:
            self.programmed.pop(previous, None)  # it named only this frontend
        for other in names - {owner}:
            self.conflicts[other] = self._conflict(other, owner)
        self.conflicts.pop(owner, None)
        if owner != previous or owner == changed:
            self._program(self.services[owner], frontend)

    def _program(self, service: Service, frontend: Address) -> bool:
        candidates = self._endpoints.candidates(service)
        backends = resolve_backends(service, candidates)
        clusters: dict[str, str] = {}
        if service.is_global and self.mesh_backends is not None:
            backends, clusters = merge(service, backends, self.mesh_backends(service.name))
        if self.publisher is not None:
            self.publisher.offer(service, candidates)
        self.resolved += 1
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
        self.programmed[service.name] = Programmed(backends, slots, clusters, signature,
                                                   time.perf_counter() - start)
        log.info("service %s: %d backends programmed", service.name, len(backends))
        return True

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
                          "slots": done.slots.get(str(b), 0) if done else 0,
                          "cluster": done.clusters.get(str(b)) if done else None}
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
                    "backends": self.tables.backend_count(), "namespaces": len(self.netns),
                    "conflicts": len(self.conflicts), "error": self.error}
