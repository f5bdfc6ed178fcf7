"""The rest of the cluster as this node's datapath sees it.

Publishes this node's endpoints (``ip/v1/<address>`` -> identity and node, under the
node's lease, so they vanish with a dead agent) and follows every other node's
entries and endpoints:
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
Parsed prefixes are memoized: at 30,000 remote endpoints, parsing every address again
(``ipaddress``) cost ~0.7 s per change; the diff itself costs ~50 ms.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from collections.abc import Callable

from ciliumpy import nodes
from ciliumpy.node_identities import NodeIdentities
from datapath.datapath import Datapath
from datapath.links import Links
from driver.model import Endpoint
from policies.identities import RESERVED_BY_NAME, is_node_identity
from state.kvstore.base import Event, KVError, KVStore, LeaseKeeper
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.cluster")
IPS = kv_key("ip", "v1") + "/"
ID_WORLD, ID_REMOTE_NODE = RESERVED_BY_NAME["world"], RESERVED_BY_NAME["remote-node"]
RESYNC_SECONDS = 10.0

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1 << 18)
def tunnel_ip(address: str) -> int:
    """The underlay address as the BPF tunnel key wants it (IPv4, host byte order)."""
    return int(ipaddress.IPv4Address(address))


@functools.lru_cache(maxsize=1 << 18)
def network(text: str) -> Prefix:
    """``ipaddress.ip_network`` memoized (networks are immutable): the whole cluster's
    entries are compared on every change, and parsing dominated that."""
    return ipaddress.ip_network(text)


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
        self._ipcache: dict[Prefix, tuple[int, int]] = {}  # what we programmed
        self._routes: dict[str, str | int] = {}
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
                self._ipcache[ipaddress.ip_network(entry["prefix"])] = (entry["identity"],
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
            if lease != self._published_lease:
                self._published, self._published_lease = {}, lease
            for address, value in wanted.items():
                if self._published.get(address) != value:
                    self.kv.put(IPS + address, value, lease=lease)
                    self._published[address] = value
            for address in set(self._published) - set(wanted):
                pair = self.kv.get(IPS + address)
                if pair is not None and json.loads(pair.value).get("node") == self.node:
                    self.kv.delete(IPS + address, pair.mod_index)
                del self._published[address]
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
                    self._load(prefix)
                    watch = self.kv.watch(prefix, index)
                    self.reprogram()
                if self._apply_events(watch.next(timeout=5.0)):
                    self.reprogram()
            except KVError as exc:
                self.error = f"following the cluster: {exc} (keeping what is programmed)"
                watch = None
                self._stop.wait(1.0)
            except Exception:
                log.exception("cluster sync failed; reloading")
                watch = None
                self._stop.wait(1.0)

    def _load(self, prefix: str) -> None:
        with self._lock:
            self._loaded.add(prefix)
            if prefix == nodes.PREFIX:
                self.nodes = {n.name: n for n in nodes.list_nodes(self.kv)}
            else:
                self.remote_ips = {}
                for pair in self.kv.list(IPS):
                    self._set_ip(pair.key[len(IPS):], pair.value)

    def _set_ip(self, address: str, value: str) -> None:
        item = json.loads(value)
        if item.get("node") != self.node:
            self.remote_ips[address] = item

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
                    address = event.key[len(IPS):]
                    self.remote_ips.pop(address, None)
                    if event.kind == "put":
                        self._set_ip(address, event.value)
        return bool(events)

    # ---- programming -------------------------------------------------------------
    def wanted(self) -> tuple[dict[Prefix, tuple[int, int]], dict[str, str | int]]:
        """The ipcache entries and routes the current cluster view calls for."""
        tunnel = self.mode != "native"
        ipcache: dict[Prefix, tuple[int, int]] = {}
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
                ipcache[network(node.ip)] = (node_ids[name], 0)
                for block in node.blocks:
                    net = network(block)
                    if tunnel:
                        ipcache[net] = (ID_WORLD, underlay)
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
                ipcache[network(address)] = (int(item["identity"]), underlay)
        local = {ipaddress.ip_interface(a).network for e in self.local_endpoints()
                 for a in e.addresses}
        return {p: v for p, v in ipcache.items() if p not in local}, routes

    def reprogram(self) -> None:
        with self._lock:  # both follow threads call this
            if len(self._loaded) < 2:
                # half a view (nodes without their endpoints, or endpoints without their
                # nodes) would withdraw the other half until the other thread's list:
                # after a restart that dropped the pinned entries of every remote node
                return
            ipcache_changed = self._reprogram()
        if ipcache_changed:
            self.on_ipcache_changed()

    def _reprogram(self) -> bool:
        ipcache, routes = self.wanted()
        node_ids = self.node_identities.identities()
        if node_ids != self._node_ids:  # new ones known to the policy before the ipcache
            self.on_node_identities({**self._node_ids, **node_ids})
        ipcache_changed = ipcache != self._ipcache
        for prefix, (identity, underlay) in ipcache.items():
            if self._ipcache.get(prefix) != (identity, underlay):
                self.datapath.set_ipcache(prefix, identity, tunnel_ip=underlay)
        for prefix in set(self._ipcache) - set(ipcache):
            self.datapath.delete_ipcache(prefix)
        self._ipcache = ipcache
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
