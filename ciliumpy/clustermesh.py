"""Cluster Mesh: follows other clusters' Consul read-only (Cilium's ``clustermesh``).

Each cluster keeps its own Consul and fails alone. With ``--cluster-id`` N > 0 every
agent writes its cluster's name and ID once to its own store (``cluster/v1/config``),
and for each ``--remote-clusters`` entry a ``RemoteCluster`` follower
(``ciliumpy.clustermesh_remote``) follows that cluster's nodes, endpoints, identities and
global services' backends. ``ClusterMesh`` merges them for the datapath
(``ClusterSync``), the policy (labels of remote identities), the services (backends of
global services, ``ciliumpy.clustermesh_services``) and the monitor, and withdraws a
remote that stayed disconnected for ``--remote-cluster-retention`` seconds.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping

from ciliumpy import nodes
from ciliumpy.clustermesh_remote import (  # noqa: F401 (re-exported for callers and tests)
    CONFIG_KEY,
    IDS,
    IPS,
    WATCH_SECONDS,
    MeshError,
    Net,
    RemoteCluster,
    log,
    pools,
)
from policies.identities import Identity, cluster_of
from services.model import Backend
from state.kvstore.base import Event, KVError, KVStore


def publish_config(kv: KVStore, name: str, cluster_id: int) -> None:
    """Records this cluster's name and ID in its own store (what followers check).
    An existing record naming another cluster is refused: agents of one store must agree."""
    value = json.dumps({"name": name, "id": cluster_id}, sort_keys=True)
    if kv.create(CONFIG_KEY, value):
        return
    pair = kv.get(CONFIG_KEY)
    if pair is not None and json.loads(pair.value) != {"name": name, "id": cluster_id}:
        raise MeshError(f"this cluster's kvstore says it is {pair.value} but this agent has "
                        f"--cluster-name {name} --cluster-id {cluster_id}: every agent of a "
                        f"cluster needs the same name and ID (to rename, delete {CONFIG_KEY})")


class ClusterMesh:
    """Every remote cluster of this agent, merged for the datapath and the policy."""

    def __init__(self, local_kv: KVStore, name: str, cluster_id: int,
                 remotes: Mapping[str, Mapping[str, str]], retention: float,
                 open_store: Callable[[Mapping[str, str]], KVStore]) -> None:
        self.local_kv, self.name, self.cluster_id = local_kv, name, cluster_id
        self.on_datapath_change: Callable[[], None] = lambda: None
        self.on_identities: Callable[[list[Event]], None] = lambda events: None
        self.on_services: Callable[[set[str]], None] = lambda names: None
        self._pools: tuple[float, set[Net]] = (0.0, set())
        self.remotes = {n: RemoteCluster(n, open_store(opts), cluster_id, retention,
                                         self.local_pools, self._changed)
                        for n, opts in sorted(remotes.items())}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mesh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Records this cluster's config (retried while the local store is down), then
        follows the remotes; a store naming another cluster stops here (fails closed)."""
        while not self._stop.is_set():
            try:
                publish_config(self.local_kv, self.name, self.cluster_id)
                self.error = None
                break
            except MeshError as exc:
                self.error = str(exc)
                log.error("cluster mesh off: %s", exc)
                return
            except KVError as exc:
                self.error = f"recording this cluster's config: {exc}"
                self._stop.wait(1.0)
        for remote in self.remotes.values():
            remote.start()
        self._expire_loop()

    def stop(self, timeout: float = WATCH_SECONDS + 5.0) -> None:
        """Ends every follower (within one blocking query: they run in parallel) and
        closes the remote clients; what is still running at ``timeout`` is logged."""
        deadline = time.monotonic() + timeout
        self.signal_stop()
        left = [self._thread] if self._thread is not None else []
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            left = [self._thread] if self._thread.is_alive() else []
        for remote in self.remotes.values():
            left += remote.join(deadline)
        if left:
            log.warning("cluster mesh: %d threads still running %.0f s after stop",
                        len(left), timeout)

    def signal_stop(self) -> None:
        """Asks every thread to end, without waiting (``stop`` waits)."""
        self._stop.set()
        for remote in self.remotes.values():
            remote.stop()

    def threads(self) -> list[threading.Thread]:
        """Every thread of the mesh that is still running."""
        found = [self._thread] if self._thread is not None else []
        for remote in self.remotes.values():
            found += remote._threads
        return [t for t in found if t.is_alive()]

    def local_pools(self) -> set[Net]:
        at, found = self._pools
        if time.monotonic() - at > 5.0:
            try:
                found = pools(self.local_kv)
                self._pools = (time.monotonic(), found)
            except KVError:
                pass
        return found

    def _changed(self, remote: RemoteCluster, identity_events: list[Event],
                 services: set[str]) -> None:
        if identity_events:
            self.on_identities(identity_events)
        self.on_datapath_change()
        if services:
            self.on_services(services)

    def _expire_loop(self) -> None:
        while not self._stop.wait(1.0):
            for remote in self.remotes.values():
                if remote.withdraw_if_expired(time.time()):
                    gone = [Event("delete", IDS + str(n), None, 0) for n in remote.identities]
                    if gone:
                        self.on_identities(gone)
                    self.on_datapath_change()
                    with remote._lock:
                        names = remote.services.names()
                    if names:
                        self.on_services(names)

    def snapshot(self) -> tuple[dict[str, nodes.Node], dict[str, dict]]:
        all_nodes: dict[str, nodes.Node] = {}
        all_ips: dict[str, dict] = {}
        for remote in self.remotes.values():
            found, ips = remote.snapshot()
            all_nodes.update(found)
            all_ips.update(ips)
        return all_nodes, all_ips

    def global_backends(self, name: str) -> dict[Backend, str]:
        """The backends every followed cluster shares for global service ``name``, with
        the cluster each is in."""
        found: dict[Backend, str] = {}
        for remote in self.remotes.values():
            for backend in remote.global_backends(name):
                found.setdefault(backend, remote.name)
        return found

    def identities(self) -> dict[int, list[str]]:
        """Labels of every followed (not withdrawn) remote identity."""
        found: dict[int, list[str]] = {}
        for remote in self.remotes.values():
            with remote._lock:
                if not remote.withdrawn:
                    found.update(remote.identities)
        return found

    def node_rows(self) -> list[dict]:
        """The followed remote nodes as ``/v1/nodes`` rows (with ``cluster``)."""
        rows = []
        for remote in self.remotes.values():
            with remote._lock:
                if not remote.withdrawn:
                    rows += [{**dataclasses.asdict(n), "cluster": remote.name}
                             for n in remote.nodes.values()]
        return rows

    def view(self) -> dict:
        return {"name": self.name, "cluster_id": self.cluster_id, "error": self.error,
                "clusters": [r.view() for r in self.remotes.values()]}


def start_mesh(config, kv: KVStore, cluster, policy, monitor=None) -> ClusterMesh | None:
    """Wires the mesh into the agent's ClusterSync (datapath), PolicyManager (labels) and
    Monitor (events name remote senders) and starts it; None without a cluster ID.
    ``config`` is the agent's Config."""
    if not config.cluster_id:
        return None
    from state.kvstore.consul import ConsulStore

    mesh = ClusterMesh(kv, config.cluster_name, config.cluster_id, config.remote_clusters,
                       config.remote_cluster_retention, open_store=ConsulStore)
    if cluster is not None:
        cluster.mesh = mesh.snapshot
        mesh.on_datapath_change = cluster.reprogram
    policy.remote_identities = mesh.identities
    if monitor is not None:
        local_lookup = monitor.identity_lookup

        def lookup(number: int) -> Identity | None:
            found = local_lookup(number)
            if found is None and cluster_of(number) not in (0, config.cluster_id):
                labels = mesh.identities().get(number)
                found = Identity(number, tuple(labels)) if labels is not None else None
            return found
        monitor.identity_lookup = lookup
    mesh.on_identities = policy.mesh_identity_events
    mesh.start()
    return mesh
