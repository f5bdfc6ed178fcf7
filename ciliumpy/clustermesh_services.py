"""Global services across a Cluster Mesh (Cilium's ``service.cilium.io/global`` and
``service.cilium.io/shared``).

Publishing (``BackendPublisher``): every agent of a cluster with a cluster ID writes, for
each global service marked shared that it programs, the backends running on its own
node to its own Consul, ``globalservices/v1/<service>/<node>`` -> ``{"backends": [...]}``,
under the node's lease (they vanish with a dead agent). Each node writes only its own
share: no leader, no contention, one key per node and service. Listed backends
(``--backend``) are not shared: only containers are.

Following (``RemoteServices``): what one remote cluster published, read-only through the
``RemoteCluster``'s client (one more blocking query). A backend counts only if it is one
of that cluster's accepted endpoints (its ipcache, in its identity range, outside this
cluster's pools): a remote cannot send this cluster's clients to an arbitrary address
(this host, the world, a local container).

Merging (``merge``): a global service balances across its local backends and the remote
clusters' backends of the same-named service, sorted, so every node of this cluster
builds the same Maglev table. A disconnected remote's backends stay for the retention
time (``RemoteCluster.withdrawn``), then they are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterable

from services.model import NAME, Backend, Service, parse_backend, resolve_backends
from state.kvstore.base import Event, KVError, KVStore, LeaseExpired
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.clustermesh")
PREFIX = kv_key("globalservices", "v1") + "/"
RESYNC_SECONDS = 10.0


def local_share(service: Service, candidates: Iterable, node: str) -> list[Backend]:
    """The backends of ``service`` running on ``node`` (selected or joined containers;
    listed backends stay in their cluster)."""
    mine = [c for c in candidates if getattr(c, "node", "") == node]
    return resolve_backends(dataclasses.replace(service, backends=()), mine)


def merge(service: Service, local: list[Backend],
          remote: dict[Backend, str]) -> tuple[list[Backend], dict[str, str]]:
    """The backends a global service balances across: its own and the remote clusters'
    of the frontend's family (an address and port once, the local one kept), sorted as
    ``resolve_backends`` sorts; and the remote ones' clusters by ``str(backend)``."""
    found = {(b.address, b.port): b for b in local}
    clusters: dict[str, str] = {}
    family = service.frontend.address.version
    for backend, cluster in sorted((item for item in remote.items()
                                    if item[0].address.version == family),
                                   key=lambda item: item[0]):
        key = (backend.address, backend.port)
        if key not in found:
            found[key] = backend
            clusters[str(backend)] = cluster
    return [found[key] for key in sorted(found)], clusters


class BackendPublisher:
    """This node's share of each global, shared service, written to the local store by a
    thread of its own (a store outage never stalls the services' programming)."""

    def __init__(self, kv: KVStore, node: str, lease: Callable[[], str]) -> None:
        self.kv, self.node, self.lease = kv, node, lease
        self.error: str | None = None
        self._wanted: dict[str, str] = {}  # service -> value
        self._published: dict[str, str] = {}
        self._published_lease: str | None = None
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(self, service: Service, candidates: Iterable) -> None:
        """``service`` was resolved from ``candidates``: publish this node's share."""
        backends = local_share(service, candidates, self.node) if (
            service.is_global and service.shared) else []
        self._set(service.name, backends)

    def drop(self, name: str) -> None:
        self._set(name, [])

    def keep(self, names: set[str]) -> None:
        """Only these services are programmed: the others' shares go."""
        with self._lock:
            gone = set(self._wanted) - names
            for name in gone:
                del self._wanted[name]
        if gone:
            self._kick.set()

    def _set(self, name: str, backends: list[Backend]) -> None:
        value = json.dumps({"backends": [b.spec() for b in backends]}) if backends else None
        with self._lock:
            if self._wanted.get(name) == value:
                return
            if value is None:
                del self._wanted[name]
            else:
                self._wanted[name] = value
        self._kick.set()

    def wanted(self) -> dict[str, list[str]]:
        with self._lock:
            return {n: json.loads(v)["backends"] for n, v in self._wanted.items()}

    # ---- the writer ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mesh-services-publish",
                                        daemon=True)
        self._thread.start()
        self._kick.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def kick(self) -> None:
        """The lease changed (its keys are gone): publish again."""
        self._kick.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(RESYNC_SECONDS)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.publish()
                self.error = None
            except KVError as exc:
                self.error = f"publishing global service backends: {exc}"
                self._stop.wait(1.0)
                self._kick.set()
            except Exception:
                log.exception("publishing global service backends failed")
                self._stop.wait(1.0)
                self._kick.set()

    def publish(self) -> None:
        """Writes what changed since the last publication; with a new lease (or at start)
        everything, and this node's keys an earlier run left are removed."""
        lease = self.lease()
        with self._lock:
            wanted = dict(self._wanted)
        if lease != self._published_lease:
            self._published = {}
            for pair in self.kv.list(PREFIX):
                name, _, node = pair.key[len(PREFIX):].partition("/")
                if node == self.node and name not in wanted:
                    self.kv.delete(pair.key)
            self._published_lease = lease
        for name, value in wanted.items():
            if self._published.get(name) != value:
                key = f"{PREFIX}{name}/{self.node}"
                try:
                    self.kv.put(key, value, lease=lease)
                except LeaseExpired:  # held by this node's previous lease (a restart)
                    self.kv.delete(key)
                    self.kv.put(key, value, lease=lease)
                self._published[name] = value
        for name in set(self._published) - set(wanted):
            self.kv.delete(f"{PREFIX}{name}/{self.node}")
            del self._published[name]


class RemoteServices:
    """What one remote cluster publishes: service -> node -> backends. Not thread-safe:
    the owning ``RemoteCluster`` holds its lock around every call."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, tuple[Backend, ...]]] = {}
        self.rejected = 0  # records that do not parse

    def record_keys(self) -> list[str]:
        """Every record as ``<service>/<node>`` (the key below ``PREFIX``)."""
        return [f"{name}/{node}" for name, nodes in self.records.items() for node in nodes]

    def names(self) -> set[str]:
        return set(self.records)

    def apply(self, events: list[Event]) -> set[str]:
        """Watch events (keys below ``PREFIX``); returns the services they changed."""
        changed = set()
        for event in events:
            name, _, node = event.key[len(PREFIX):].partition("/")
            if not NAME.fullmatch(name) or not node:
                self.rejected += 1
                continue
            nodes = self.records.setdefault(name, {})
            old = nodes.pop(node, None)
            new = self._parse(event.value) if event.kind == "put" else None
            if new:
                nodes[node] = new
            elif not nodes:
                del self.records[name]
            if old != new:
                changed.add(name)
        return changed

    def _parse(self, value: str | None) -> tuple[Backend, ...] | None:
        try:
            items = json.loads(value or "{}").get("backends")
            if not isinstance(items, list):
                raise ValueError("backends must be a list")
            return tuple(parse_backend(item) for item in items)
        except (ValueError, TypeError, AttributeError):
            self.rejected += 1
            return None

    def backends(self, name: str, accept: Callable[[str], bool]) -> list[Backend]:
        """The backends published for service ``name`` whose address ``accept`` allows."""
        found = {b for node in self.records.get(name, {}).values() for b in node}
        return sorted((b for b in found if accept(str(b.address))),
                      key=lambda b: (b.address.version, b.address.packed, b.port))

    def names_using(self, addresses: set[str]) -> set[str]:
        """The services with a backend at one of ``addresses`` (an endpoint of the remote
        appeared or went: whether it is accepted may have changed)."""
        return {name for name, nodes in self.records.items()
                if any(str(b.address) in addresses for node in nodes.values() for b in node)}

    def count(self) -> int:
        return len(self.records)


def wire(services, mesh) -> None:
    """Global services on: ``services`` (the agent's ServiceManager, whose publisher was
    set at start) merges what ``mesh`` (a ClusterMesh) follows, and publishes."""
    services.mesh_backends = mesh.global_backends
    mesh.on_services = services.mesh_changed
    if services.publisher is not None:
        services.publisher.start()
