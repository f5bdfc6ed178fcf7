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

from ciliumpy import __version__
from ciliumpy.config import Config
from ciliumpy.docker_view import DockerView
from ciliumpy.kvstore import open_store
from ciliumpy.localdb import LocalDB
from datapath.links import Links, enable_forwarding
from driver.model import Endpoint, Store
from driver.service import Driver
from ipam.allocator import IPAM, Allocation

log = logging.getLogger("ciliumpy.agent")


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.db = LocalDB(os.path.join(config.state_dir, "local.db"))
        self.kv = open_store(config)
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        enable_forwarding()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

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

    def endpoint_deleted(self, endpoint: Endpoint) -> None:
        # ReleaseAddress normally follows; if it never does, the GC frees the address.
        self.ipam.unbind(endpoint.endpoint_id)

    def address_released(self, allocation: Allocation) -> None:
        """Docker released an address whose endpoint still exists: after an unclean
        dockerd stop it sends ReleaseAddress without DeleteEndpoint, so clean up."""
        endpoint = self.store.endpoint(allocation.owner) if allocation.owner else None
        if endpoint is not None:
            log.info("endpoint %s released without DeleteEndpoint: removing it",
                     endpoint.endpoint_id[:12])
            self.driver.delete_endpoint(endpoint.endpoint_id)

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
                self.ipam.unbind(endpoint.endpoint_id)
                removed_endpoints += 1
        known = {e.host_ifname for e in self.store.endpoints()}
        removed_links = 0
        for name in self.links.list_names("lxc"):
            if name not in known:
                log.info("removing leaked link %s", name)
                self.links.delete(name)
                removed_links += 1
        removed_endpoints += self._reconcile_with_docker(grace)
        live = {e.endpoint_id for e in self.store.endpoints()}
        freed = self.ipam.reclaim_orphans(grace, live)
        for address in freed:
            log.info("reclaimed orphan address %s", address)
        return {"endpoints": removed_endpoints, "links": removed_links, "addresses": len(freed)}

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
                self.ipam.unbind(endpoint.endpoint_id)
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
            "kvstore": {"backend": self.kv.name, "healthy": self._kv_healthy()},
            "datapath": {"mode": self.config.datapath_mode},
            "plugin_socket": self.config.plugin_socket,
            "networks": len(self.store.networks()),
            "endpoints": len(endpoints),
            "endpoint_states": states,
            "docker": self.docker.last_status,
        }

    def _kv_healthy(self) -> bool:
        try:
            self.kv.get("ciliumpy/state/healthcheck")
            return True
        except Exception:
            return False
