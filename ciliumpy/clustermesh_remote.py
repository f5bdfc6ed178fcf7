"""Cluster Mesh: one remote cluster followed read-only through a Consul client of its
own (``RemoteCluster``), and what it may be trusted with.

The follower checks the remote's config key (the name it was configured with, a
cluster ID other than ours) and then watches four prefixes with blocking queries (no
polling: the request rate does not grow with the remote cluster's size): ``nodes/v1/``
(tunnel peers and routes), ``ip/v2/`` (ipcache entries with the remote identity, read
through the nodes' revision tokens: ``ciliumpy/endpoint_records.py``),
``identities/v1/id/`` (labels, so ``cluster: b`` selects them) and
``globalservices/v1/`` (backends of global services: ``ciliumpy.clustermesh_services``).

Fails closed: identities outside the remote's range (``(ID << 16) | 256..65535``) and
endpoints claiming such an identity are ignored; remote blocks and endpoints inside one
of this cluster's address pools are never programmed, and the overlap is logged at
connect and shown in ``status``; shared backends count only at the remote's accepted
endpoints. A remote that goes away keeps its last known state until
``withdraw_if_expired``; the follower keeps retrying and reloads everything when the
store is back (no restart).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable

from ciliumpy import clustermesh_services as global_services
from ciliumpy import endpoint_records as records
from ciliumpy import nodes
from ciliumpy.identities import BASE as IDENTITIES
from policies.identities import MAX_MESH_CLUSTER_ID, cluster_range
from policies.labels import CLUSTER_KEYS, canonical, cluster_labels, parse
from services.model import Backend
from state.kvstore.base import Event, KVError, KVPair, KVStore
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.clustermesh")
CONFIG_KEY = kv_key("cluster", "v1", "config")
IPS = records.PREFIX
IDS = IDENTITIES + "/id/"
POOLS = kv_key("ipam", "v1") + "/"
WATCH_SECONDS = 5.0  # one blocking query per prefix per this at rest
SERVICES = global_services.PREFIX
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class MeshError(RuntimeError):
    """This cluster's store names another cluster: the message says what to do."""


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

    PREFIXES = (nodes.PREFIX, IPS, IDS, SERVICES)

    def __init__(self, name: str, kv: KVStore, local_id: int, retention: float,
                 local_pools: Callable[[], set[Net]],
                 on_change: Callable[[RemoteCluster, list[Event], set[str]], None]) -> None:
        self.name, self.kv, self.local_id, self.retention = name, kv, local_id, retention
        self.local_pools, self.on_change = local_pools, on_change
        self.cluster_id = 0  # from its config key
        self.nodes: dict[str, nodes.Node] = {}
        self.ips: dict[str, dict] = {}
        self.identities: dict[int, list[str]] = {}
        self.services = global_services.RemoteServices()
        self.overlaps: list[str] = []
        self.rejected = 0  # identities / endpoints outside the remote's range
        self.error: str | None = "not connected yet"
        self.last_update: float | None = None
        self.disconnected_since: float | None = time.time()
        self.withdrawn = False
        self._healthy: dict[str, bool] = dict.fromkeys(self.PREFIXES, False)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def connected(self) -> bool:
        return all(self._healthy.values())

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._follow, args=(prefix,), daemon=True,
                                          name=f"mesh-{self.name}") for prefix in self.PREFIXES]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Asks the followers to end (each within one blocking query, ``join``)."""
        self._stop.set()

    def join(self, deadline: float) -> list[threading.Thread]:
        """Waits for the followers until ``deadline`` (monotonic), then closes the
        client; returns the threads still running (none when they ended in time)."""
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t for t in self._threads if t.is_alive()]
        if not left:
            self.kv.close()
        return left

    # ---- following -------------------------------------------------------------
    def _follow(self, prefix: str) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                if watch is None:
                    self._check_config()
                    index = self.kv.index()
                    listed = self._load(prefix)
                    watch = (records.RecordWatch(self.kv, index, listed) if prefix == IPS
                             else self.kv.watch(prefix, index))
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
            self.on_change(self, [], self.services.names())

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

    def _load(self, prefix: str) -> list[KVPair]:
        """Lists ``prefix`` into the view (as events against it); returns the pairs."""
        pairs = self.kv.list(prefix)
        if prefix == IPS:
            self._check_pools()
        with self._lock:
            if prefix == nodes.PREFIX:
                old = {nodes.PREFIX + k for k in self.nodes}
                self.nodes = {}
            elif prefix == IPS:
                old = {records.record_key(i.get("node", ""), k) for k, i in self.ips.items()}
                self.ips = {}
            elif prefix == SERVICES:
                old = {SERVICES + k for k in self.services.record_keys()}
            else:
                old, self.identities = {IDS + str(k) for k in self.identities}, {}
            events = [Event("put", p.key, p.value, p.mod_index) for p in pairs]
            events += [Event("delete", k, None, 0) for k in old - {p.key for p in pairs}]
            self._apply(prefix, events)
        return pairs

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
        services: set[str] = set()  # global services whose remote backends may change
        with self._lock:
            if prefix == SERVICES:
                services = self.services.apply(events)
            elif prefix == IPS:
                services = self.services.names_using({records.address_of(e.key)
                                                      for e in events})
            for event in events if prefix != SERVICES else ():
                rest = event.key[len(prefix):]
                if prefix == nodes.PREFIX:
                    if event.kind == "put":
                        self.nodes[rest] = nodes.from_json(event.value or "{}")
                    else:
                        self.nodes.pop(rest, None)
                elif prefix == IPS:
                    address = records.address_of(event.key)
                    if self.ips.get(address, {}).get("node") == records.node_of(event.key):
                        del self.ips[address]  # not another node's newer record
                    if event.kind == "put":
                        item = json.loads(event.value or "{}")
                        if self._accept(int(item.get("identity", 0))):
                            self.ips[address] = {**item, "node": records.node_of(event.key)}
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
        self.on_change(self, forward, services)

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

    def global_backends(self, name: str) -> list[Backend]:
        """The backends this cluster shares for global service ``name``: only addresses
        of its accepted endpoints outside this cluster's pools; none while withdrawn."""
        with self._lock:
            if self.withdrawn:
                return []
            local = self.local_pools()

            def accept(address: str) -> bool:
                return address in self.ips and not any(
                    ipaddress.ip_address(address) in p for p in local)
            return self.services.backends(name, accept)

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
                    "identities": len(self.identities),
                    "global_services": self.services.count(),
                    "overlaps": list(self.overlaps),
                    "rejected": self.rejected + self.services.rejected}


def _without(node: nodes.Node, local: set[Net]) -> nodes.Node:
    blocks = [b for b in node.blocks
              if not any(ipaddress.ip_network(b).overlaps(p) for p in local
                         if p.version == ipaddress.ip_network(b).version)]
    return dataclasses.replace(node, blocks=blocks)
