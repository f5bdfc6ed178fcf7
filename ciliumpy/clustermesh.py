"""Cluster Mesh: follows other clusters' Consul read-only (Cilium's ``clustermesh``).

Each cluster keeps its own Consul and fails alone. With ``--cluster-id`` N > 0 every
agent writes its cluster's name and ID once to its own store (``cluster/v1/config``),
and for each ``--remote-clusters`` entry a ``RemoteCluster`` follower, with a Consul
client of its own, checks the remote's config key (the name it was configured with, a
cluster ID other than ours) and then watches three prefixes with blocking queries (no
polling: the request rate does not grow with the remote cluster's size):
``nodes/v1/`` (tunnel peers and routes), ``ip/v1/`` (ipcache entries with the remote
identity) and ``identities/v1/id/`` (labels, so ``cluster: b`` selects them).

Fails closed: identities outside the remote's range (``(ID << 16) | 256..65535``) and
endpoints claiming such an identity are ignored; remote blocks and endpoints inside one
of this cluster's address pools are never programmed and the overlap is logged at
connect and shown in ``status``. A remote store that goes away keeps its last known
state programmed for ``--remote-cluster-retention`` seconds, then it is withdrawn; the
follower keeps retrying and reloads everything when the store is back (no restart).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

from ciliumpy import nodes
from ciliumpy.identities import BASE as IDENTITIES
from policies.identities import MAX_MESH_CLUSTER_ID, Identity, cluster_of, cluster_range
from policies.labels import CLUSTER_KEYS, canonical, cluster_labels, parse
from state.kvstore.base import Event, KVError, KVStore
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.clustermesh")
CONFIG_KEY = kv_key("cluster", "v1", "config")
IPS = kv_key("ip", "v1") + "/"
IDS = IDENTITIES + "/id/"
POOLS = kv_key("ipam", "v1") + "/"
WATCH_SECONDS = 5.0  # one blocking query per prefix per this at rest
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class MeshError(RuntimeError):
    """This cluster's store names another cluster: the message says what to do."""


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


def pools(kv: KVStore) -> set[Net]:
    """The address pools that have blocks leased in a store."""
    found = set()
    for pair in kv.list(POOLS):
        head = pair.key[len(POOLS):].split("/", 1)[0]
        try:
            found.add(ipaddress.ip_network(head.replace("_", "/")))
        except ValueError:
            continue
    return found


UNTRUSTED_SOURCES = ("reserved", "cidr", "fqdn")


class RemoteCluster:
    """One remote cluster, followed read-only through its own kvstore client."""

    PREFIXES = (nodes.PREFIX, IPS, IDS)

    def __init__(self, name: str, kv: KVStore, local_id: int, retention: float,
                 local_pools: Callable[[], set[Net]],
                 on_change: Callable[[RemoteCluster, list[Event]], None]) -> None:
        self.name, self.kv, self.local_id, self.retention = name, kv, local_id, retention
        self.local_pools, self.on_change = local_pools, on_change
        self.cluster_id = 0  # from its config key
        self.nodes: dict[str, nodes.Node] = {}
        self.ips: dict[str, dict] = {}
        self.identities: dict[int, list[str]] = {}
        self.overlaps: list[str] = []
        self.rejected = 0  # identities / endpoints outside the remote's range
        self.error: str | None = "not connected yet"
        self.last_update: float | None = None
        self.disconnected_since: float | None = time.time()
        self.withdrawn = False
        self._healthy: dict[str, bool] = dict.fromkeys(self.PREFIXES, False)
        self._lock = threading.RLock()
        self._stop = threading.Event()

    @property
    def connected(self) -> bool:
        return all(self._healthy.values())

    def start(self) -> None:
        for prefix in self.PREFIXES:
            threading.Thread(target=self._follow, args=(prefix,), daemon=True,
                             name=f"mesh-{self.name}").start()

    def stop(self) -> None:
        self._stop.set()

    # ---- following -------------------------------------------------------------
    def _follow(self, prefix: str) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                if watch is None:
                    self._check_config()
                    index = self.kv.index()
                    self._load(prefix)
                    watch = self.kv.watch(prefix, index)
                    self._mark(prefix, True)
                events = watch.next(timeout=WATCH_SECONDS)
                self._mark(prefix, True)
                if events:
                    self._apply(prefix, events)
            except (KVError, MeshError) as exc:
                self._mark(prefix, False, str(exc))
                watch = None
                self._stop.wait(1.0)
            except Exception as exc:  # never let a follower die
                log.exception("cluster %s: following %s failed", self.name, prefix)
                self._mark(prefix, False, f"{type(exc).__name__}: {exc}")
                watch = None
                self._stop.wait(1.0)

    def _mark(self, prefix: str, healthy: bool, error: str | None = None) -> None:
        with self._lock:
            was = self.connected
            self._healthy[prefix] = healthy
            back = healthy and self.connected and not was
            if healthy and self.connected:
                self.error, self.disconnected_since, self.withdrawn = None, None, False
                if back:
                    log.info("cluster %s: connected (id %d)", self.name, self.cluster_id)
            elif not healthy:
                if was or self.error != error:
                    log.warning("cluster %s: %s (keeping its last state for %.0f s)",
                                self.name, error, self.retention)
                self.error = error
                if self.disconnected_since is None:
                    self.disconnected_since = time.time()
        if back:  # programmed again if it had been withdrawn
            self.on_change(self, [])

    def _check_config(self) -> None:
        pair = self.kv.get(CONFIG_KEY)
        if pair is None:
            raise MeshError(f"cluster {self.name}'s kvstore has no cluster config: are its "
                            "agents running with --cluster-id?")
        config = json.loads(pair.value)
        if config.get("name") != self.name:
            raise MeshError(f"the kvstore configured as cluster {self.name} belongs to "
                            f"cluster {config.get('name')!r}")
        if config.get("id") == self.local_id:
            raise MeshError(f"cluster {self.name} has this cluster's ID {self.local_id}: "
                            "every cluster of a mesh needs its own --cluster-id")
        if not isinstance(config.get("id"), int) or not 1 <= config["id"] <= MAX_MESH_CLUSTER_ID:
            raise MeshError(f"cluster {self.name} records cluster ID {config.get('id')!r}: "
                            f"a mesh member's ID is 1..{MAX_MESH_CLUSTER_ID}")
        self.cluster_id = int(config["id"])

    def _load(self, prefix: str) -> None:
        pairs = self.kv.list(prefix)
        if prefix == IPS:
            self._check_pools()
        with self._lock:
            if prefix == nodes.PREFIX:
                old = {nodes.PREFIX + k for k in self.nodes}
                self.nodes = {}
            elif prefix == IPS:
                old, self.ips = {IPS + k for k in self.ips}, {}
            else:
                old, self.identities = {IDS + str(k) for k in self.identities}, {}
            events = [Event("put", p.key, p.value, p.mod_index) for p in pairs]
            events += [Event("delete", k, None, 0) for k in old - {p.key for p in pairs}]
            self._apply(prefix, events)

    def _check_pools(self) -> None:
        local = self.local_pools()
        overlaps = sorted(f"{remote} (cluster {self.name}) overlaps {mine} (this cluster)"
                          for remote in pools(self.kv) for mine in local
                          if remote.version == mine.version and remote.overlaps(mine))
        if overlaps and overlaps != self.overlaps:
            log.error("cluster %s: address pools overlap, its endpoints there are not "
                      "reachable (give each cluster its own pools): %s", self.name,
                      "; ".join(overlaps))
        self.overlaps = overlaps

    def _accept(self, number: int) -> bool:
        """Only numbers of the remote's own range: a remote cluster cannot hand out a
        reserved identity (host, world, remote-node), a local one or another cluster's."""
        first, last = cluster_range(self.cluster_id)
        ok = self.cluster_id > 0 and first <= number <= last
        self.rejected += 0 if ok else 1
        return ok

    def _sanitized(self, raw: str | None) -> list[str]:
        """A remote identity's labels as this cluster trusts them: no reserved, CIDR or
        FQDN labels (a remote cannot make its endpoints look like this host, the world
        or a name), and the cluster labels always the remote's own name."""
        try:
            labels = [parse(text) for text in json.loads(raw or "[]") if isinstance(text, str)]
        except ValueError:
            labels = []
        kept = [label for label in labels if label.source not in UNTRUSTED_SOURCES
                and label.key not in CLUSTER_KEYS]
        return canonical(kept + cluster_labels(self.name))

    def _apply(self, prefix: str, events: list[Event]) -> None:
        forward = []  # identity events the policy gets (accepted ones only)
        with self._lock:
            for event in events:
                rest = event.key[len(prefix):]
                if prefix == nodes.PREFIX:
                    if event.kind == "put":
                        self.nodes[rest] = nodes.from_json(event.value or "{}")
                    else:
                        self.nodes.pop(rest, None)
                elif prefix == IPS:
                    self.ips.pop(rest, None)
                    if event.kind == "put":
                        item = json.loads(event.value or "{}")
                        if self._accept(int(item.get("identity", 0))):
                            self.ips[rest] = item
                elif rest.isdigit():
                    number = int(rest)
                    known = self.identities.pop(number, None) is not None
                    if event.kind == "put" and self._accept(number):
                        labels = self._sanitized(event.value)
                        self.identities[number] = labels
                        forward.append(Event("put", event.key, json.dumps(labels),
                                             event.mod_index))
                    elif known:
                        forward.append(Event("delete", event.key, None, event.mod_index))
            self.last_update = time.time()
        self.on_change(self, forward)

    # ---- what the datapath and policy get ----------------------------------------
    def snapshot(self) -> tuple[dict[str, nodes.Node], dict[str, dict]]:
        """(nodes, endpoints) keyed for the local ClusterSync: node names become
        ``<cluster>/<node>``; nothing while withdrawn or inside a local pool."""
        with self._lock:
            if self.withdrawn:
                return {}, {}
            # never a remote address or block inside this cluster's pools, overlap
            # reported or not (a remote cannot take over a local endpoint's address)
            local = self.local_pools()
            named = {f"{self.name}/{n}": node for n, node in self.nodes.items()}
            if local:
                named = {k: _without(node, local) for k, node in named.items()}
            ips = {}
            for address, item in self.ips.items():
                if local and any(ipaddress.ip_address(address) in p for p in local):
                    continue
                ips[address] = {**item, "node": f"{self.name}/{item.get('node')}"}
            return named, ips

    def withdraw_if_expired(self, now: float) -> bool:
        """Past the retention time while disconnected: stop programming its state."""
        with self._lock:
            if (self.withdrawn or self.disconnected_since is None
                    or now - self.disconnected_since < self.retention):
                return False
            self.withdrawn = True
            log.warning("cluster %s: disconnected for %.0f s, withdrawing its state",
                        self.name, now - self.disconnected_since)
            return True

    def view(self) -> dict:
        with self._lock:
            return {"name": self.name, "cluster_id": self.cluster_id,
                    "address": getattr(self.kv, "address", ""),
                    "connected": self.connected, "error": self.error,
                    "last_update": self.last_update,
                    "disconnected_since": self.disconnected_since,
                    "withdrawn": self.withdrawn,
                    "nodes": len(self.nodes), "endpoints": len(self.ips),
                    "identities": len(self.identities), "overlaps": list(self.overlaps),
                    "rejected": self.rejected}


def _without(node: nodes.Node, local: set[Net]) -> nodes.Node:
    blocks = [b for b in node.blocks
              if not any(ipaddress.ip_network(b).overlaps(p) for p in local
                         if p.version == ipaddress.ip_network(b).version)]
    return dataclasses.replace(node, blocks=blocks)


class ClusterMesh:
    """Every remote cluster of this agent, merged for the datapath and the policy."""

    def __init__(self, local_kv: KVStore, name: str, cluster_id: int,
                 remotes: Mapping[str, Mapping[str, str]], retention: float,
                 open_store: Callable[[Mapping[str, str]], KVStore]) -> None:
        self.local_kv, self.name, self.cluster_id = local_kv, name, cluster_id
        self.on_datapath_change: Callable[[], None] = lambda: None
        self.on_identities: Callable[[list[Event]], None] = lambda events: None
        self._pools: tuple[float, set[Net]] = (0.0, set())
        self.remotes = {n: RemoteCluster(n, open_store(opts), cluster_id, retention,
                                         self.local_pools, self._changed)
                        for n, opts in sorted(remotes.items())}
        self.error: str | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="mesh", daemon=True).start()

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

    def stop(self) -> None:
        self._stop.set()
        for remote in self.remotes.values():
            remote.stop()

    def local_pools(self) -> set[Net]:
        at, found = self._pools
        if time.monotonic() - at > 5.0:
            try:
                found = pools(self.local_kv)
                self._pools = (time.monotonic(), found)
            except KVError:
                pass
        return found

    def _changed(self, remote: RemoteCluster, identity_events: list[Event]) -> None:
        if identity_events:
            self.on_identities(identity_events)
        self.on_datapath_change()

    def _expire_loop(self) -> None:
        while not self._stop.wait(1.0):
            for remote in self.remotes.values():
                if remote.withdraw_if_expired(time.time()):
                    gone = [Event("delete", IDS + str(n), None, 0) for n in remote.identities]
                    if gone:
                        self.on_identities(gone)
                    self.on_datapath_change()

    def snapshot(self) -> tuple[dict[str, nodes.Node], dict[str, dict]]:
        all_nodes: dict[str, nodes.Node] = {}
        all_ips: dict[str, dict] = {}
        for remote in self.remotes.values():
            found, ips = remote.snapshot()
            all_nodes.update(found)
            all_ips.update(ips)
        return all_nodes, all_ips

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
