"""The rest of the cluster as this node's datapath sees it.

Publishes this node's endpoints (``ciliumpy/endpoint_records.py``: one record per
address under the node's lease, so they vanish with a dead agent) and follows every
other node's entries and endpoints:
- tunnel mode (vxlan, geneve): each remote block and endpoint address goes into the
  ipcache with the owning node's underlay IP as tunnel endpoint, so from_container
  sends it into the overlay with the sender's identity as VNI;
- native mode: each remote block is routed via the owning node's underlay address
  (IPv6 blocks via its IPv6 address), and the remote endpoints' identities go into the
  ipcache so ingress policy knows who sent a routed packet.
Remote node addresses are identity ``reserved:remote-node``, or, for a node that
publishes labels, its node identity (``ciliumpy/node_identities.py``): the policy
learns a new one (``on_node_identities``) before the ipcache names it, and forgets an
old one only after. Changes are applied as a diff against what was programmed: an
unchanged cluster touches no map entry or route.
Prefixes are kept as canonical text, memoized: at 30,000 remote endpoints, parsing
every address again (``ipaddress``) cost ~0.7 s per change, and hashing ``ipaddress``
networks (pure Python) ~0.25 s more; a memoized string caches its hash.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from collections.abc import Callable

from ciliumpy import endpoint_records as records
from ciliumpy import nodes
from ciliumpy.node_identities import NodeIdentities
from datapath.datapath import Datapath
from datapath.links import Links
from driver.model import Endpoint
from policies.identities import RESERVED_BY_NAME, is_node_identity
from state.kvstore.base import Event, KVError, KVPair, KVStore, LeaseKeeper

log = logging.getLogger("ciliumpy.cluster")
IPS = records.PREFIX
ID_WORLD, ID_REMOTE_NODE = RESERVED_BY_NAME["world"], RESERVED_BY_NAME["remote-node"]
RESYNC_SECONDS = 10.0

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1 << 18)
def tunnel_ip(address: str) -> int:
    """The underlay address as the BPF tunnel key wants it (IPv4, host byte order)."""
    return int(ipaddress.IPv4Address(address))


@functools.lru_cache(maxsize=1 << 18)
def network(text: str) -> Prefix:
    """``ipaddress.ip_network`` memoized (networks are immutable)."""
    return ipaddress.ip_network(text)


@functools.lru_cache(maxsize=1 << 18)
def prefix_text(text: str) -> str:
    """The canonical text of an address or prefix (``10.1.0.5`` -> ``10.1.0.5/32``),
    memoized: the same string object each time, so its hash is computed once."""
    return str(network(text))


class ClusterSync:
    def __init__(self, kv: KVStore, node: str, mode: str, datapath: Datapath, links: Links,
                 lease: LeaseKeeper, local_endpoints: Callable[[], list[Endpoint]],
                 overlay_ifindex: int = 0,
                 on_ipcache_changed: Callable[[], None] = lambda: None,
                 node_identities: NodeIdentities | None = None,
                 on_node_identities: Callable[[dict[int, list[str]]], None] = lambda ids: None
                 ) -> None:
        self.kv, self.node, self.mode = kv, node, mode
        self.overlay_ifindex = overlay_ifindex  # tunnel modes: host routes to remote blocks
        self.on_ipcache_changed = on_ipcache_changed  # remote identities changed
        self.node_identities = node_identities or NodeIdentities()
        self.on_node_identities = on_node_identities  # the policy's view of them
        self._node_ids: dict[int, list[str]] = {}  # what on_node_identities was told
        self._loaded: set[str] = set()  # prefixes listed at least once
        self.datapath, self.links, self.lease = datapath, links, lease
        self.local_endpoints = local_endpoints
        self.nodes: dict[str, nodes.Node] = {}
        self.remote_ips: dict[str, dict] = {}  # address -> {"identity", "node"}
        # Cluster Mesh (ciliumpy.clustermesh): other clusters' nodes ("<cluster>/<node>")
        # and endpoints, programmed as this cluster's own
        self.mesh: Callable[[], tuple[dict[str, nodes.Node], dict[str, dict]]] | None = None
        self.error: str | None = None
        self._published: dict[str, str] = {}
        self._published_lease: str | None = None
        self._ipcache: dict[str, tuple[int, int]] = {}  # what we programmed (prefix_text)
        self._routes: dict[str, str | int] = {}
        self._node_prefixes: set[str] = set()  # nodes' addresses and blocks
        self._lock = threading.RLock()
        self._kick = threading.Event()
        self._stop = threading.Event()

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._adopt_programmed()
        for prefix in (nodes.PREFIX, IPS):
            threading.Thread(target=self._follow, args=(prefix,), name="cluster-follow",
                             daemon=True).start()
        threading.Thread(target=self._publish_loop, name="cluster-publish",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def kick(self) -> None:
        """Local endpoints changed: publish soon (coalesced)."""
        self._kick.set()

    def _adopt_programmed(self) -> None:
        """After a restart, what an earlier run programmed is ours to diff against."""
        rows = self.datapath.ipcache()
        self.node_identities.adopt(rows)
        for entry in rows:
            if entry["tunnel_ip"] or entry["identity"] == ID_REMOTE_NODE or \
                    is_node_identity(entry["identity"]):
                self._ipcache[prefix_text(entry["prefix"])] = (entry["identity"],
                                                              entry["tunnel_ip"])
        self._routes = self.links.routes_via(self.overlay_ifindex or None)

    # ---- publishing this node's endpoints -------------------------------------------
    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(RESYNC_SECONDS)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.publish()
            except KVError as exc:
                self.error = f"publishing endpoints: {exc}"
            except Exception:
                log.exception("publishing endpoints failed")

    def publish(self) -> None:
        lease = self.lease.current()
        wanted = {}
        for endpoint in self.local_endpoints():
            if not endpoint.ifindex:
                continue
            value = json.dumps({"identity": endpoint.identity, "node": self.node})
            for address in endpoint.addresses:
                wanted[str(ipaddress.ip_interface(address).ip)] = value
        with self._lock:
            new_lease = lease != self._published_lease
            if new_lease:  # an earlier run's records are stale, its keys to take over
                self._published = dict.fromkeys(
                    records.stale_addresses(self.kv, self.node, set(wanted)), "")
            puts = {a: v for a, v in wanted.items() if self._published.get(a) != v}
            gone = set(self._published) - set(wanted)
            try:
                records.write(self.kv, self.node, lease, puts, gone, take_over=new_lease)
            except Exception:
                # some may be written: each is rewritten if still wanted, else deleted
                self._published.update(dict.fromkeys(puts, ""))
                raise
            self._published, self._published_lease = wanted, lease
        self.error = None

    # ---- following the others ----------------------------------------------------
    def _follow(self, prefix: str) -> None:
        """One prefix (nodes or endpoint addresses): list it, then follow its changes
        from the index the list was taken at; after an outage, list again."""
        watch = None
        while not self._stop.is_set():
            try:
                if watch is None:
                    index = self.kv.index()
                    listed = self._load(prefix)
                    watch = (records.RecordWatch(self.kv, index, listed) if prefix == IPS
                             else self.kv.watch(prefix, index))
                    self.reprogram()
                events = watch.next(timeout=5.0)
                if self._apply_events(events):
                    self.reprogram({records.address_of(e.key) for e in events}
                                   if prefix == IPS else None)
            except KVError as exc:
                self.error = f"following the cluster: {exc} (keeping what is programmed)"
                watch = None
                self._stop.wait(1.0)
            except Exception:
                log.exception("cluster sync failed; reloading")
                watch = None
                self._stop.wait(1.0)

    def _load(self, prefix: str) -> list[KVPair]:
        """Lists ``prefix`` into the view; returns the endpoint records listed."""
        listed: list[KVPair] = []
        if prefix == nodes.PREFIX:
            found = {n.name: n for n in nodes.list_nodes(self.kv)}
        else:
            listed = records.list_records(self.kv)
        with self._lock:
            self._loaded.add(prefix)
            if prefix == nodes.PREFIX:
                self.nodes = found
            else:
                self.remote_ips = {}
                for pair in listed:
                    self._set_ip(pair.key, pair.value)
        return listed

    def _set_ip(self, key: str, value: str) -> None:
        """A record as the view keeps it: its node is the one whose prefix holds it."""
        item, node = json.loads(value), records.node_of(key)
        if node != self.node:
            self.remote_ips[records.address_of(key)] = {**item, "node": node}

    def _apply_events(self, events: list[Event]) -> bool:
        with self._lock:
            for event in events:
                if event.key.startswith(nodes.PREFIX):
                    name = event.key[len(nodes.PREFIX):]
                    if event.kind == "put":
                        self.nodes[name] = nodes.from_json(event.value)
                    else:
                        self.nodes.pop(name, None)
                else:
                    address = records.address_of(event.key)
                    held = self.remote_ips.get(address)
                    if held is not None and held.get("node") == records.node_of(event.key):
                        del self.remote_ips[address]  # not another node's newer record
                    if event.kind == "put":
                        self._set_ip(event.key, event.value)
        return bool(events)

    # ---- programming -------------------------------------------------------------
    def wanted(self) -> tuple[dict[str, tuple[int, int]], dict[str, str | int]]:
        """The ipcache entries (by ``prefix_text``) and routes the current cluster view
        calls for."""
        tunnel = self.mode != "native"
        ipcache: dict[str, tuple[int, int]] = {}
        routes: dict[str, str | int] = {}
        with self._lock:
            remote = {name: n for name, n in self.nodes.items() if name != self.node}
            remote_ips = self.remote_ips
            if self.mesh is not None:
                mesh_nodes, mesh_ips = self.mesh()
                remote, remote_ips = {**remote, **mesh_nodes}, {**mesh_ips, **remote_ips}
            node_ids = self.node_identities.assign(remote)  # keyed as remote (mesh names)
            for name, node in remote.items():
                underlay = tunnel_ip(node.ip) if tunnel else 0
                ipcache[prefix_text(node.ip)] = (node_ids[name], 0)
                for block in node.blocks:
                    net = network(block)
                    if tunnel:
                        ipcache[prefix_text(block)] = (ID_WORLD, underlay)
                        if self.overlay_ifindex:  # the host's own traffic (L7 proxy)
                            routes[str(net)] = self.overlay_ifindex
                    else:
                        via = node.ip if net.version == 4 else node.ipv6
                        if via:
                            routes[str(net)] = via
            for address, item in remote_ips.items():
                node = remote.get(item.get("node"))
                if node is None:
                    continue  # its node is gone (or not seen yet): no path to it
                underlay = tunnel_ip(node.ip) if tunnel else 0
                ipcache[prefix_text(address)] = (int(item["identity"]), underlay)
        local = self._local_prefixes()
        return {p: v for p, v in ipcache.items() if p not in local}, routes

    def _local_prefixes(self) -> set[str]:
        return {str(ipaddress.ip_interface(a).network) for e in self.local_endpoints()
                for a in e.addresses}

    def reprogram(self, addresses: set[str] | None = None) -> None:
        """Programs what the cluster view calls for; ``addresses``: only these remote
        endpoints changed (their entries alone are compared, when that is exact)."""
        with self._lock:  # both follow threads call this
            if len(self._loaded) < 2:
                # half a view (nodes without their endpoints, or endpoints without their
                # nodes) would withdraw the other half until the other thread's list:
                # after a restart that dropped the pinned entries of every remote node
                return
            ipcache_changed = None
            if addresses is not None:
                ipcache_changed = self._reprogram_addresses(addresses)
            if ipcache_changed is None:
                ipcache_changed = self._reprogram()
        if ipcache_changed:
            self.on_ipcache_changed()

    def _reprogram_addresses(self, addresses: set[str]) -> bool | None:
        """The entries of these endpoint addresses, compared one by one: O(changes)
        where a full pass is O(cluster) (~60 ms at 30,000 endpoints). None when only a
        full pass is exact: other clusters merged in, or an address that is also a
        node's address or block."""
        if self.mesh is not None:
            return None
        prefixes = {address: prefix_text(address) for address in addresses}
        if not self._node_prefixes.isdisjoint(prefixes.values()):
            return None
        tunnel, local, changed = self.mode != "native", self._local_prefixes(), False
        for address, prefix in prefixes.items():
            item = self.remote_ips.get(address)
            node = self.nodes.get(item.get("node")) if item else None
            want = None
            if node is not None and node.name != self.node and prefix not in local:
                want = (int(item["identity"]), tunnel_ip(node.ip) if tunnel else 0)
            if self._ipcache.get(prefix) == want:
                continue
            changed = True
            if want is None:
                self.datapath.delete_ipcache(network(prefix))
                del self._ipcache[prefix]
            else:
                self.datapath.set_ipcache(network(prefix), want[0], tunnel_ip=want[1])
                self._ipcache[prefix] = want
        return changed

    def _reprogram(self) -> bool:
        ipcache, routes = self.wanted()
        node_ids = self.node_identities.identities()
        if node_ids != self._node_ids:  # new ones known to the policy before the ipcache
            self.on_node_identities({**self._node_ids, **node_ids})
        ipcache_changed = ipcache != self._ipcache
        for prefix, (identity, underlay) in ipcache.items():
            if self._ipcache.get(prefix) != (identity, underlay):
                self.datapath.set_ipcache(network(prefix), identity, tunnel_ip=underlay)
        for prefix in set(self._ipcache) - set(ipcache):
            self.datapath.delete_ipcache(network(prefix))
        self._ipcache = ipcache
        self._node_prefixes = {prefix_text(text) for node in self.nodes.values()
                               for text in (node.ip, *node.blocks)}
        for prefix, via in routes.items():
            if self._routes.get(prefix) != via:
                self.links.set_remote_route(prefix, via)
        for prefix in set(self._routes) - set(routes):
            self.links.delete_route(prefix)
        self._routes = routes
        if node_ids != self._node_ids:  # the ipcache names none of the old ones any more
            self.on_node_identities(node_ids)
            self._node_ids = node_ids
        return ipcache_changed

    def remote_node_at(self, address: str) -> nodes.Node | None:
        """The remote node whose underlay address ``address`` is (policy trace)."""
        with self._lock:
            return next((n for n in self.nodes.values() if n.ip == address
                         and n.name != self.node), None)

    def view(self) -> dict:
        with self._lock:
            return {"mode": self.mode, "error": self.error,
                    "remote_nodes": sorted(n for n in self.nodes if n != self.node),
                    "remote_endpoints": len(self.remote_ips),
                    "routes": dict(self._routes),
                    "published": len(self._published)}
