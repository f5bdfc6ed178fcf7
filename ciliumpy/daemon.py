"""The agent object: wires the parts together and nothing more. Lives in the single
gunicorn worker process.

It owns the objects (local store, kvstore, netlink, IPAM, driver, datapath, policy
views, the endpoint owner, identities, cluster sync, the Docker watcher, the
reconciler) and routes the driver's and IPAM's events to them. Decisions live in the
parts: an endpoint's datapath state in ``endpoints.EndpointManager``, healing in
``reconciler.Reconciler``, health in ``status``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from ciliumpy import agent_services, host_firewall, metrics_hubble, node_identities, nodes
from ciliumpy import clustermesh_services as global_services
from ciliumpy.agent_views import L7_KINDS, AgentViews
from ciliumpy.bandwidth import BandwidthManager
from ciliumpy.cluster import ClusterSync
from ciliumpy.clustermesh import ClusterMesh, start_mesh
from ciliumpy.config import Config
from ciliumpy.docker_view import DockerView
from ciliumpy.docker_watcher import ContainerInfo, DockerWatcher
from ciliumpy.endpoint_identity import EndpointIdentities
from ciliumpy.endpoints import EndpointManager
from ciliumpy.flow_reader import EventReaderProcess
from ciliumpy.flows.store import FlowStore
from ciliumpy.fqdn import FqdnManager
from ciliumpy.host_firewall import HostFirewall
from ciliumpy.hubble_apis import HubbleAPIs
from ciliumpy.identities import IdentityAllocator
from ciliumpy.l7proxy import ProxySupervisor
from ciliumpy.lb import ServiceManager
from ciliumpy.monitor import Monitor
from ciliumpy.policy_manager import PolicyManager
from ciliumpy.ports import PortPublisher
from ciliumpy.proxy_state import (
    ProxyStateWriter,
)
from ciliumpy.reconciler import Reconciler
from datapath import overlay
from datapath.datapath import Datapath
from datapath.links import Links, enable_forwarding
from datapath.proxy_routing import ensure_proxy_routing
from driver.model import Endpoint, Network, Store
from driver.service import Driver
from ipam.allocator import IPAM, Allocation
from policies.identities import HOST
from policies.labels import LabelFilter
from state.kvstore import KVError, open_store
from state.kvstore.base import LeaseKeeper
from state.localdb import LocalDB

if TYPE_CHECKING:
    from ciliumpy.hubble.tls import HubbleTLS

log = logging.getLogger("ciliumpy.agent")
# L7 rule kinds whose connections go to the proxy. HTTP (and gRPC) are enforced there;
# Kafka rules too (the proxy reads Kafka's wire protocol), DNS rules (UDP and TCP) and
# serverNames ("tls": the proxy reads the ClientHello's server name).


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
        self.mesh: ClusterMesh | None = None  # Cluster Mesh (--cluster-id)
        self.overlay_ifindex = 0  # tunnel modes: the overlay device
        self.allocator = IdentityAllocator(self.kv, config.node_name,
                                           cluster_id=config.cluster_id)
        self.datapath = Datapath(config.bpf_pin_dir)
        self.datapath.audit_mode = config.policy_audit_mode
        self.node_ids = node_identities.NodeIdentities()  # other nodes' (fromNodes)
        self.views = AgentViews(self)  # what the monitor, flows and the proxy read
        self.monitor = Monitor(self.allocator.get, self.views.endpoint, self.node_ids.get)
        self.flows = FlowStore(config.node_name, self.views.container_of,
                               config.flow_store_size)
        self.monitor.batch_listeners.append(self.flows.add_events)
        self.hubble_metrics = metrics_hubble.listen(self.flows)
        self.policy = PolicyManager(self.kv, self.datapath, self.allocator,
                                    config.policy_enforcement,
                                    on_change=self._policy_changed)
        self.policy.local_cluster = config.cluster_name if config.cluster_id else ""
        self.proxy = ProxySupervisor(os.path.join(config.state_dir, "proxy"), config.proxy_port,
                                     config.proxy_workers, on_event=self.monitor.ingest_l7,
                                     kafka_max_frame=config.kafka_max_frame)
        self.proxy_state = ProxyStateWriter(self.proxy.state_path, self.views.proxy_state)
        self.fqdn = FqdnManager(self.proxy.fqdn_path, config.tofqdns_min_ttl,
                                self.policy.set_fqdns)
        self.endpoints = EndpointManager(self.datapath, self.policy, config.policy_enforcement,
                                         self.store.endpoints,
                                         proxy_ports={k: config.proxy_port for k in L7_KINDS},
                                         on_written=self.proxy_state.kick,
                                         lookup=self.store.endpoint)
        self.host_firewall = HostFirewall(self.datapath, self.policy, self.endpoints,
                                          config.node_labels) \
            if config.enable_host_firewall else None
        self.reconciler = Reconciler(self.store, self.links, self.ipam, self.docker,
                                     self.datapath, self.allocator,
                                     remove_endpoint=self._remove_endpoint,
                                     remove_network=self._remove_network,
                                     gc_grace=config.gc_grace,
                                     identity_gc_grace=config.identity_gc_grace)
        self.bandwidth = BandwidthManager(self.store, self.datapath)
        self.lease: LeaseKeeper | None = None
        self.identities: EndpointIdentities | None = None
        self.watcher: DockerWatcher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hubble_apis = HubbleAPIs(config, self.flows, self.started, self.hubble_peers)
        self.event_reader: EventReaderProcess | None = None  # at start
        self.services: ServiceManager | None = None  # at start: needs the datapath's maps
        self.ports: PortPublisher | None = None

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        enable_forwarding()
        ensure_proxy_routing()
        self.datapath.start()
        # the ring is read by a process of its own (ciliumpy.flow_reader), not a thread here
        self.event_reader = EventReaderProcess(self.datapath.loaded.events_fd,
                                               self.monitor.ingest_batch)
        self.event_reader.start()
        self.bandwidth.start()
        self._start_overlay()
        self._program_host_addresses()
        self._reprogram_endpoints()
        self._start_services()
        if self.host_firewall is not None:
            self.host_firewall.start()
        else:
            host_firewall.disable(self.datapath)
        if self.config.datapath_mode != "routed":  # other nodes' identities, as pinned
            self.policy.node_identities = node_identities.restore(
                self.node_ids, self.datapath.ipcache(), self.kv, self.config.node_name)
        self.policy.start()
        self.proxy_state.start()
        self.fqdn.start()
        self.proxy.start()
        self.lease = LeaseKeeper(self.kv, self.config.lease_ttl,
                                 f"ciliumpy-{self.config.node_name}")
        self.identities = EndpointIdentities(
            self.store, self.allocator, self.lease,
            LabelFilter(self.config.identity_label_filter), self.config.identity_extra_labels,
            cluster=self.config.cluster_name if self.config.cluster_id else "")
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
                                       self.lease, self.store.endpoints,
                                       overlay_ifindex=self.overlay_ifindex,
                                       on_ipcache_changed=self._ipcache_changed,
                                       node_identities=self.node_ids,
                                       on_node_identities=self.policy.set_node_identities)
            self.cluster.start()
            self.cluster.kick()
        self.mesh = start_mesh(self.config, self.kv, self.cluster, self.policy, self.monitor)
        if self.mesh is not None:
            global_services.wire(self.services, self.mesh)
        self.watcher = DockerWatcher(self.config.docker_host, self._container_seen,
                                     self.config.docker_resync_interval)
        self.watcher.start()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()
        self._start_hubble()

    def stop(self, stop_proxy: bool = False) -> None:
        """Stops the background work; ``stop_proxy`` (a clean agent stop) also ends the
        L7 proxy, which otherwise keeps serving for the next agent to adopt."""
        self._stop.set()
        if self.mesh is not None:  # its followers end within a blocking query: joined last
            self.mesh.signal_stop()
        for part in (self.event_reader, self.hubble_apis, self.watcher,
                     self.identities, self.cluster, self.services, self.proxy_state,
                     self.fqdn, self.proxy if stop_proxy else None):
            if part is not None:
                part.stop()
        if self.mesh is not None:
            self.mesh.stop(timeout=3.0)  # within gunicorn's graceful timeout (10 s)

    def _start_hubble(self) -> None:
        """Hubble's APIs (ciliumpy.hubble_apis), when configured; the node record then
        publishes where the others reach this one."""
        self.hubble_apis.start(self.node_ip)
        if self.hubble_apis.address:
            self.register_node()

    @property
    def hubble_address(self) -> str:
        return self.hubble_apis.address

    @property
    def hubble_tls(self) -> HubbleTLS | None:
        return self.hubble_apis.tls

    def hubble_peers(self) -> list[tuple[str, str]]:
        """(name, Hubble API address) of every registered node serving one, this one
        included: what the relay asks."""
        return nodes.hubble_peers(self.kv)[0]

    # ---- services --------------------------------------------------------------
    def _start_services(self) -> None:
        self.ports, self.services = agent_services.start(self)

    def _ipcache_changed(self) -> None:
        """Remote endpoints changed: the proxy's state and the services follow."""
        self.proxy_state.kick()
        if self.services is not None:
            self.services.kick()

    # ---- datapath ------------------------------------------------------------
    def _start_overlay(self) -> None:
        """Tunnel modes: the overlay device with from_overlay on its ingress, and the
        datapath told which device to redirect remote traffic to."""
        if not overlay.is_tunnel(self.config.datapath_mode):
            self.datapath.set_mode(None)
            return
        index = overlay.ensure_device(self.config.datapath_mode, self.links,
                                      self.underlay_mtu)
        self.overlay_ifindex = index
        self.datapath.attach_overlay(index)
        self.datapath.set_mode(index)

    def _program_host_addresses(self) -> None:
        """The host's own addresses and every network's gateway are identity host."""
        for address in self.links.local_addresses() + self._gateways():
            self.datapath.set_ipcache(ipaddress.ip_network(address), HOST)

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
                endpoint = self.store.update_endpoint(
                    endpoint.endpoint_id, lambda e, i=ifindex: setattr(e, "ifindex", i))
                if endpoint is None:
                    continue
            self.endpoints.created(endpoint)

    def _policy_changed(self) -> None:
        """Policies or identities changed: endpoints take the new views; the proxy's
        state follows (identity labels may be new even where no entry changed)."""
        self.endpoints.sync_all()
        if self.host_firewall is not None:
            self.host_firewall.sync()
        self.proxy_state.kick()

    def _container_seen(self, info: ContainerInfo) -> None:
        """A container on our networks started: its networks' names (known to Docker
        only, so learnt here rather than in CreateNetwork), then its identity."""
        for network_id, name in info.network_names.items():
            network = self.store.network(network_id)
            if network is not None and name and network.name != name:
                network.name = name
                self.store.put_network(network)
        if self.identities is not None:
            self.identities.container_seen(info)
        self.bandwidth.container_seen(info)
        if self.services is not None and info.pid:
            for endpoint_id in info.endpoints:
                endpoint = self.store.endpoint(endpoint_id)
                if endpoint is not None:
                    self.services.netns.register(
                        endpoint_id, f"/proc/{info.pid}/ns/net",
                        endpoint.ipv4 and endpoint.ipv4.split("/")[0],
                        endpoint.ipv6 and endpoint.ipv6.split("/")[0])

    def _identity_changed(self, endpoint: Endpoint) -> None:
        current = self.store.endpoint(endpoint.endpoint_id)
        if current is not None:
            self.endpoints.identity_changed(current)
        if self.cluster is not None:
            self.cluster.kick()
        if self.services is not None:
            self.services.kick()

    def _new_lease(self, lease: str) -> None:
        self.register_node(lease)
        if self.cluster is not None:
            self.cluster.kick()  # the old lease's keys are gone: publish again
        if self.identities is not None:
            self.identities.new_lease(lease)
        if self.services is not None and self.services.publisher is not None:
            self.services.publisher.kick()

    def node_info(self) -> nodes.Node:
        return nodes.Node(name=self.config.node_name, ip=self.node_ip,
                          encapsulation=self.config.datapath_mode, blocks=self.ipam.blocks(),
                          api=self.config.api_socket, ipv6=self.config.node_ipv6,
                          hubble=self.hubble_address, labels=dict(self.config.node_labels))

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
                self.datapath.set_ipcache(ipaddress.ip_network(gateway), HOST)
        self.endpoints.created(endpoint)
        if self.cluster is not None:
            self.cluster.kick()

    def ports_changed(self, endpoint: Endpoint) -> None:
        """ProgramExternalConnectivity/Revoke: publish (or withdraw) its ports; a port
        that cannot be had raises driver.ports.PortError (the handler refuses)."""
        if self.ports is None:
            return
        if endpoint.published:
            self.ports.publish(endpoint)
        else:
            self.ports.unpublish(endpoint.endpoint_id)

    def endpoint_deleted(self, endpoint: Endpoint) -> None:
        # ReleaseAddress normally follows; if it never does, the GC frees the address.
        self.ipam.unbind(endpoint.endpoint_id)
        if self.ports is not None:
            self.ports.unpublish(endpoint.endpoint_id)
        self.endpoints.removed(endpoint)
        self.bandwidth.endpoint_removed(endpoint)
        if self.identities is not None:
            self.identities.endpoint_removed(endpoint)
        if self.cluster is not None:
            self.cluster.kick()
        if self.services is not None:
            self.services.netns.unregister(endpoint.endpoint_id)
            self.services.kick()

    def address_released(self, allocation: Allocation) -> None:
        """Docker released an address whose endpoint still exists: after an unclean
        dockerd stop it sends ReleaseAddress without DeleteEndpoint, so clean up."""
        endpoint = self.store.endpoint(allocation.owner) if allocation.owner else None
        if endpoint is not None:
            log.info("endpoint %s released without DeleteEndpoint: removing it",
                     endpoint.endpoint_id[:12])
            self._remove_endpoint(endpoint)

    def _remove_endpoint(self, endpoint: Endpoint) -> None:
        """An endpoint Docker will never delete (gone while we or dockerd were down)."""
        self.driver.delete_endpoint(endpoint.endpoint_id)
        self.endpoint_deleted(endpoint)

    def _remove_network(self, network: Network) -> None:
        """A network Docker no longer has: forget it and free its pools (subnets)."""
        self.driver.delete_network(network.network_id)
        for pool_id in self.ipam.release_pools(network.pools):
            log.info("released pool %s of removed network %s", pool_id,
                     network.name or network.network_id[:12])

    # ---- reconciliation ----------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        result = self.reconciler.run()
        self.register_node()
        return result
