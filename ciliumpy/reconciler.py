"""How the agent heals: the periodic reconciliation of its own state with the host and
with Docker (after a crash, an unclean dockerd stop, or changes made while the agent
was down).

Each round: endpoints whose host link vanished; veth pairs no endpoint owns; endpoints
Docker no longer knows; **networks** Docker no longer has (removed while the agent was
down: Docker warns and goes on, and never calls DeleteNetwork or ReleasePool again),
with their endpoints, links, addresses and pools; orphan addresses after a grace;
conntrack and identity garbage. Docker is read here (never inside a plugin handler),
and nothing is removed because of Docker's view unless Docker actually answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ciliumpy.docker_view import Container, DockerView, Snapshot
from ciliumpy.identities import IdentityAllocator
from datapath.datapath import Datapath
from datapath.links import Links
from driver.model import Endpoint, Network, Store
from ipam.allocator import IPAM
from state.kvstore import KVError

log = logging.getLogger("ciliumpy.reconciler")
# Docker lists a network only once CreateNetwork has returned: a network younger than
# this may be missing from its list without being gone.
NETWORK_GRACE = 10.0


class Reconciler:
    def __init__(self, store: Store, links: Links, ipam: IPAM, docker: DockerView,
                 datapath: Datapath, allocator: IdentityAllocator,
                 remove_endpoint: Callable[[Endpoint], None],
                 remove_network: Callable[[Network], None],
                 gc_grace: float, identity_gc_grace: float) -> None:
        self.store, self.links, self.ipam, self.docker = store, links, ipam, docker
        self.datapath, self.allocator = datapath, allocator
        self.remove_endpoint, self.remove_network = remove_endpoint, remove_network
        self.grace, self.identity_grace = gc_grace, identity_gc_grace
        self._suspect_links: dict[str, float] = {}

    def run(self) -> dict[str, int]:
        """One round; returns what it removed, by kind."""
        removed_endpoints = self._endpoints_without_link()
        removed_links = self._leaked_links()
        view = self.docker.snapshot()
        removed_networks = 0
        if view is not None:  # only what Docker actually answered counts
            removed_endpoints += self._endpoints_unknown_to_docker(view)
            removed_networks = self._networks_unknown_to_docker(view)
        live = {e.endpoint_id for e in self.store.endpoints()}
        freed = self.ipam.reclaim_orphans(self.grace, live)
        for address in freed:
            log.info("reclaimed orphan address %s", address)
        self.datapath.ct_gc()
        collected: list[int] = []
        try:
            collected = self.allocator.gc(self.identity_grace)
        except KVError as exc:
            log.warning("identity GC skipped: %s", exc)
        for number in collected:
            log.info("garbage-collected identity %d", number)
        return {"endpoints": removed_endpoints, "links": removed_links,
                "networks": removed_networks, "addresses": len(freed),
                "identities": len(collected)}

    def _endpoints_without_link(self) -> int:
        removed = 0
        for endpoint in self.store.endpoints():
            if not self.links.exists(endpoint.host_ifname) and time.time() - endpoint.created > 1.0:
                log.info("endpoint %s lost its link %s: removing", endpoint.endpoint_id[:12],
                         endpoint.host_ifname)
                self.remove_endpoint(endpoint)
                removed += 1
        return removed

    def _leaked_links(self) -> int:
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
            if now - first >= self.grace:
                log.info("removing leaked link %s", name)
                self.links.delete(name)
                self._suspect_links.pop(name, None)
                removed += 1
        return removed

    def _endpoints_unknown_to_docker(self, view: Snapshot) -> int:
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
                    self.store.update_endpoint(endpoint.endpoint_id,
                                               lambda e, c=container: _name_from(e, c))
            elif (endpoint.network_id in view.network_names
                  and time.time() - endpoint.created > self.grace):
                log.info("endpoint %s is unknown to Docker: removing", endpoint.endpoint_id[:12])
                self.remove_endpoint(endpoint)
                removed += 1
        return removed

    def _networks_unknown_to_docker(self, view: Snapshot) -> int:
        """Networks Docker no longer lists: their endpoints go first (links, datapath,
        addresses), then the network and its pools, so the subnet is free again."""
        removed = 0
        for network in self.store.networks():
            if (network.network_id in view.network_names
                    or time.time() - network.created <= NETWORK_GRACE):
                continue
            log.info("network %s (%s) is unknown to Docker: removing it and its endpoints",
                     network.network_id[:12], network.name or "unnamed")
            for endpoint in self.store.endpoints(network.network_id):
                self.remove_endpoint(endpoint)
            self.remove_network(network)
            removed += 1
        return removed


def _name_from(endpoint: Endpoint, container: Container) -> None:
    endpoint.container_id, endpoint.container_name = container.id, container.name
