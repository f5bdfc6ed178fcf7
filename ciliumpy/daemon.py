"""The agent object: wires the state file, kvstore, netlink, IPAM and driver together,
and runs the background reconciler. Lives in the single gunicorn worker process.

The reconciler is how the agent heals after a crash (protocol.md §6 items 21, 39):
endpoints whose host link vanished, links with no endpoint, addresses with no
endpoint after a grace period, and endpoints Docker no longer knows. It is also where
the Docker API is read (network names, container ids): never inside a handler.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Any

from ciliumpy import __version__, nodes
from ciliumpy.cluster import ClusterSync
from ciliumpy.config import Config
from ciliumpy.docker_view import DockerView
from ciliumpy.docker_watcher import DockerWatcher
from ciliumpy.endpoint_datapath import EndpointDatapath
from ciliumpy.endpoint_identity import EndpointIdentities
from ciliumpy.identities import IdentityAllocator
from ciliumpy.monitor import Monitor
from ciliumpy.policy_manager import PolicyManager
from datapath import loader, overlay
from datapath.datapath import Datapath
from datapath.links import Links, enable_forwarding
from driver.model import Endpoint, Store
from driver.service import Driver
from ipam.allocator import IPAM, Allocation
from policies.labels import LabelFilter
from state.kvstore import KVError, open_store
from state.kvstore.base import LeaseKeeper
from state.localdb import LocalDB

log = logging.getLogger("ciliumpy.agent")


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.db = LocalDB(os.path.join(config.state_dir, "local.db"))
        self.kv = open_store(config.kvstore, config.kvstore_opt, config.state_dir)
        self.links = Links()
        self.store = Store(self.db)
        self.driver = Driver(self.store, self.links)
        self.ipam = IPAM(
            self.db, self.kv, config.node_name,
            block_prefix_v4=config.block_prefix_v4, block_prefix_v6=config.block_prefix_v6,
            default_pool_v4=ipaddress.ip_network(config.default_pool_v4),
            default_pool_prefix_v4=config.default_pool_prefix_v4,
            default_pool_v6=ipaddress.ip_network(config.default_pool_v6),
            default_pool_prefix_v6=config.default_pool_prefix_v6,
            host_prefixes=lambda: [(r.prefix, r.device) for r in self.links.host_routes()],
        )
        self.ipam.bound_pools = self.driver.pools_in_use
        driver_name = os.path.basename(config.plugin_socket).removesuffix(".sock")
        self.docker = DockerView(config.docker_host, driver_name)
        self.node_ip = config.node_ip or nodes.default_node_ip()
        self.underlay_mtu = self.links.mtu_of_address(self.node_ip)
        if overlay.is_tunnel(config.datapath_mode):
            self.driver.default_mtu = overlay.endpoint_mtu(self.underlay_mtu)
        self.cluster: ClusterSync | None = None
        self.allocator = IdentityAllocator(self.kv, config.node_name)
        self.datapath = Datapath(config.bpf_pin_dir)
        self.endpoint_dp = EndpointDatapath(self.datapath, config.policy_enforcement)
        self.monitor = Monitor(self.allocator.get, self._endpoint_view)
        self.policy = PolicyManager(
            self.kv, self.store, self.datapath, self.allocator, config.policy_enforcement,
            program=lambda ep: self.endpoint_dp.program(ep, ep.ifindex, attach=False))
        self.endpoint_dp.policy = self.policy
        self.lease: LeaseKeeper | None = None
        self.identities: EndpointIdentities | None = None
        self.watcher: DockerWatcher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._suspect_links: dict[str, float] = {}

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        enable_forwarding()
        self.datapath.start(on_event=self.monitor.ingest)
        self._start_overlay()
        self._program_host_addresses()
        self._reprogram_endpoints()
        self.policy.start()
        self.lease = LeaseKeeper(self.kv, self.config.lease_ttl,
                                 f"ciliumpy-{self.config.node_name}")
        self.identities = EndpointIdentities(
            self.store, self.allocator, self.lease,
            LabelFilter(self.config.identity_label_filter), self.config.identity_extra_labels)
        self.lease.on_new_lease = self._new_lease
        self.identities.on_identity_changed = self._identity_changed
        self.ipam.on_blocks_changed = self.register_node
        if self.lease.lease:  # granted already: publish the node, re-reference identities
            self._new_lease(self.lease.lease)
        self.lease.start()
        self.identities.start()
        if self.config.datapath_mode != "routed":
            self.cluster = ClusterSync(self.kv, self.config.node_name,
                                       self.config.datapath_mode, self.datapath, self.links,
                                       self.lease, self.store.endpoints)
            self.cluster.start()
            self.cluster.kick()
        self.watcher = DockerWatcher(self.config.docker_host, self.identities.container_seen,
                                     self.config.docker_resync_interval)
        self.watcher.start()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for part in (self.watcher, self.identities, self.cluster):
            if part is not None:
                part.stop()

    # ---- datapath ------------------------------------------------------------
    def _start_overlay(self) -> None:
        """Tunnel modes: the overlay device with from_overlay on its ingress, and the
        datapath told which device to redirect remote traffic to."""
        if not overlay.is_tunnel(self.config.datapath_mode):
            self.datapath.set_mode(None)
            return
        index = overlay.ensure_device(self.config.datapath_mode, self.links,
                                      self.underlay_mtu)
        self.datapath.attach_overlay(index)
        self.datapath.set_mode(index)

    def _program_host_addresses(self) -> None:
        """The host's own addresses and every network's gateway are identity host."""
        for address in self.links.local_addresses() + self._gateways():
            self.datapath.set_ipcache(ipaddress.ip_network(address), 1)

    def _gateways(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(g) for n in self.store.networks()
                for g in (n.gateway_v4, n.gateway_v6) if g]

    def _reprogram_endpoints(self) -> None:
        """After a restart: the same entries again (maps end identical), programs
        re-attached atomically (a no-op when the pinned ones are reused)."""
        for endpoint in self.store.endpoints():
            ifindex = self.links.index(endpoint.host_ifname)
            if ifindex is None:
                continue
            if ifindex != endpoint.ifindex:
                endpoint.ifindex = ifindex
                self.store.put_endpoint(endpoint)
            self.endpoint_dp.program(endpoint, ifindex)

    def _identity_changed(self, endpoint: Endpoint) -> None:
        current = self.store.endpoint(endpoint.endpoint_id)
        if current is not None and current.ifindex:
            self.endpoint_dp.program(current, current.ifindex, attach=False)
            self.policy.sync_endpoint(current)
        if self.cluster is not None:
            self.cluster.kick()

    def _endpoint_view(self, ifindex: int) -> dict | None:
        for endpoint in self.store.endpoints():
            if endpoint.ifindex == ifindex:
                return {"endpoint_id": endpoint.endpoint_id,
                        "container_name": endpoint.container_name,
                        "identity": endpoint.identity}
        return None

    def _new_lease(self, lease: str) -> None:
        self.register_node(lease)
        if self.cluster is not None:
            self.cluster.kick()  # the old lease's keys are gone: publish again
        if self.identities is not None:
            self.identities.new_lease(lease)

    def node_info(self) -> nodes.Node:
        blocks = sorted({row["block"] for row in self.db.query("SELECT block FROM ipam_blocks")})
        return nodes.Node(name=self.config.node_name, ip=self.node_ip,
                          encapsulation=self.config.datapath_mode, blocks=blocks,
                          api=self.config.api_socket, ipv6=self.config.node_ipv6)

    def register_node(self, lease: str | None = None) -> None:
        try:
            lease = lease or (self.lease.current() if self.lease else None)
            if lease:
                nodes.register(self.kv, self.node_info(), lease)
        except KVError as exc:
            log.warning("node registration failed: %s", exc)

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # keep healing on the next round
                log.exception("reconcile failed")
            self._stop.wait(self.config.gc_interval or 30.0)

    # ---- hooks from the handlers --------------------------------------------
    def endpoint_created(self, endpoint: Endpoint) -> None:
        for address in endpoint.addresses:
            self.ipam.bind(ipaddress.ip_interface(address).ip, endpoint.endpoint_id)
        network = self.store.network(endpoint.network_id)
        for gateway in (network.gateway_v4, network.gateway_v6) if network else ():
            if gateway:
                self.datapath.set_ipcache(ipaddress.ip_network(gateway), 1)
        self.endpoint_dp.program(endpoint, endpoint.ifindex)
        self.policy.sync_endpoint(endpoint)
        if self.cluster is not None:
            self.cluster.kick()

    def endpoint_deleted(self, endpoint: Endpoint) -> None:
        # ReleaseAddress normally follows; if it never does, the GC frees the address.
        self.ipam.unbind(endpoint.endpoint_id)
        if endpoint.ifindex:
            self.endpoint_dp.remove(endpoint, endpoint.ifindex)
            self.policy.forget(endpoint)
        if self.identities is not None:
            self.identities.endpoint_removed(endpoint)
        if self.cluster is not None:
            self.cluster.kick()

    def address_released(self, allocation: Allocation) -> None:
        """Docker released an address whose endpoint still exists: after an unclean
        dockerd stop it sends ReleaseAddress without DeleteEndpoint, so clean up."""
        endpoint = self.store.endpoint(allocation.owner) if allocation.owner else None
        if endpoint is not None:
            log.info("endpoint %s released without DeleteEndpoint: removing it",
                     endpoint.endpoint_id[:12])
            self.driver.delete_endpoint(endpoint.endpoint_id)
            self.endpoint_deleted(endpoint)

    # ---- reconciliation ----------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        grace = self.config.gc_grace
        now = time.time()
        removed_endpoints = 0
        for endpoint in self.store.endpoints():
            if not self.links.exists(endpoint.host_ifname) and now - endpoint.created > 1.0:
                log.info("endpoint %s lost its link %s: removing", endpoint.endpoint_id[:12],
                         endpoint.host_ifname)
                self.driver.delete_endpoint(endpoint.endpoint_id)
                self.endpoint_deleted(endpoint)
                removed_endpoints += 1
        removed_links = self._remove_leaked_links(grace)
        removed_endpoints += self._reconcile_with_docker(grace)
        live = {e.endpoint_id for e in self.store.endpoints()}
        freed = self.ipam.reclaim_orphans(grace, live)
        for address in freed:
            log.info("reclaimed orphan address %s", address)
        self.register_node()
        self.datapath.ct_gc()
        collected: list[int] = []
        try:
            collected = self.allocator.gc(self.config.identity_gc_grace)
        except KVError as exc:
            log.warning("identity GC skipped: %s", exc)
        for number in collected:
            log.info("garbage-collected identity %d", number)
        return {"endpoints": removed_endpoints, "links": removed_links, "addresses": len(freed),
                "identities": len(collected)}

    def _remove_leaked_links(self, grace: float) -> int:
        """Veth pairs no endpoint owns whose container side is back in the host
        namespace (Docker moved it back but could not call DeleteEndpoint). A live
        container's side is in its own namespace, so other agents' endpoints on this
        host are never touched; the grace covers CreateEndpoint..Join."""
        known = {e.host_ifname for e in self.store.endpoints()}
        peers = set(self.links.list_names("tmp"))
        now = time.time()
        removed = 0
        for name in self.links.list_names("lxc"):
            if name in known or "tmp" + name[3:] not in peers:
                self._suspect_links.pop(name, None)
                continue
            first = self._suspect_links.setdefault(name, now)
            if now - first >= grace:
                log.info("removing leaked link %s", name)
                self.links.delete(name)
                self._suspect_links.pop(name, None)
                removed += 1
        return removed

    def _reconcile_with_docker(self, grace: float) -> int:
        view = self.docker.snapshot()
        if view is None:
            return 0
        removed = 0
        for network in self.store.networks():
            name = view.network_names.get(network.network_id)
            if name and name != network.name:
                network.name = name
                self.store.put_network(network)
        for endpoint in self.store.endpoints():
            container = view.containers.get(endpoint.endpoint_id)
            if container is not None:
                if (container.id, container.name) != (endpoint.container_id,
                                                      endpoint.container_name):
                    endpoint.container_id, endpoint.container_name = container.id, container.name
                    self.store.put_endpoint(endpoint)
            elif (endpoint.network_id in view.network_names
                  and time.time() - endpoint.created > grace):
                log.info("endpoint %s is unknown to Docker: removing", endpoint.endpoint_id[:12])
                self.driver.delete_endpoint(endpoint.endpoint_id)
                self.endpoint_deleted(endpoint)
                removed += 1
        return removed

    # ---- views ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        endpoints = self.store.endpoints()
        states: dict[str, int] = {}
        for endpoint in endpoints:
            states[endpoint.state] = states.get(endpoint.state, 0) + 1
        return {
            "version": __version__,
            "node": self.config.node_name,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started, 1),
            "kvstore": {"backend": self.kv.name, "healthy": self._kv_healthy(),
                        "lease": bool(self.lease and self.lease.healthy),
                        "error": self.lease.error if self.lease else None},
            "identities_in_use": sorted(self.identities.in_use()) if self.identities else [],
            "datapath": self._datapath_status(),
            "plugin_socket": self.config.plugin_socket,
            "networks": len(self.store.networks()),
            "endpoints": len(endpoints),
            "endpoint_states": states,
            "docker": self.docker.last_status,
            "docker_watcher": {"connected": bool(self.watcher and self.watcher.connected)},
            "cluster": self.cluster.view() if self.cluster else None,
        }

    def _datapath_status(self) -> dict[str, Any]:
        startup = loader.STARTUP
        return {"mode": self.config.datapath_mode,
                "policy_enforcement": self.config.policy_enforcement,
                "programs": startup.source_hash if startup else None,
                "compiled_at_start": bool(startup and startup.compiled),
                "compile_seconds": round(startup.compile_seconds, 3) if startup else None,
                "compiles_in_worker": int(bool(self.datapath.loaded
                                               and self.datapath.loaded.compiled)),
                "policy_entries": len(self.datapath.entries),
                "policy_revision": self.policy.revision,
                "policy_enforced_revision": self.policy.enforced,
                "policy_error": self.policy.error,
                "events_seen": self.monitor.seen}

    def _kv_healthy(self) -> bool:
        try:
            self.kv.get("ciliumpy/state/healthcheck")
            return True
        except Exception:
            return False
