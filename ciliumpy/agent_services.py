"""The agent's load-balancing wiring: the socket hooks and the host device's filter
attached, published ports and services followed from the kvstore, toServices rules
told when services change, and the cluster's endpoints as backend selection reads them
(this node's from its store, the others' from the cluster view, each with its
identity's labels)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ciliumpy.clustermesh_services import BackendPublisher
from ciliumpy.lb import ClusterEndpoint, ServiceManager, label_dict
from ciliumpy.ports import PortPublisher
from datapath.lb import ServiceTables
from policies.identities import INIT

if TYPE_CHECKING:
    from ciliumpy.daemon import Agent

log = logging.getLogger("ciliumpy.agent")


def start(agent: Agent) -> tuple[PortPublisher, ServiceManager]:
    """The socket hooks attached, the service maps followed from the kvstore, and the
    agent's own namespace (host processes) named to the hooks."""
    tables = ServiceTables(agent.datapath.maps)
    tables.set_scope_all(agent.config.socket_lb_scope == "all")
    agent.datapath.attach_socket_hooks()
    device = agent.links.index_of_address(agent.node_ip)
    if device:  # published ports reached from outside the host
        agent.datapath.attach_netdev(device, host_firewall=agent.host_firewall is not None)
    elif agent.host_firewall is not None:
        log.warning("host firewall: no device holds %s; only containers' connections "
                    "to the host are policed", agent.node_ip)
    ports = PortPublisher(agent.store, tables)
    ports.sync_all()  # before the services' first sync prunes unused backends
    labels_of: dict[int, dict[str, str]] = {}  # identity -> labels (immutable: cached)
    services = ServiceManager(agent.kv, tables, lambda: cluster_endpoints(agent, labels_of))
    if agent.config.cluster_id:  # publishes this node's backends of global services
        services.publisher = BackendPublisher(agent.kv, agent.config.node_name,
                                              lambda: agent.lease.current())
    # toServices rules follow the services they name
    agent.policy.service_selector = services.selector_of
    services.on_services_changed = agent.policy.services_changed
    services.netns.register("host", "/proc/self/ns/net", agent.node_ip,
                            agent.config.node_ipv6 or None)
    services.start()
    return ports, services


def cluster_endpoints(agent: Agent, labels_of: dict[int, dict[str, str]]
                      ) -> list[ClusterEndpoint]:
    """Every endpoint of the cluster with its identity's labels (backend selection)."""
    result = [ClusterEndpoint(label_dict(e.labels), [a.split("/")[0] for a in e.addresses],
                              agent.config.node_name, e.container_name or "")
              for e in agent.store.endpoints() if e.ifindex and e.identity != INIT]
    remote = dict(agent.cluster.remote_ips) if agent.cluster is not None else {}
    for address, item in remote.items():
        number = int(item.get("identity", 0))
        if number not in labels_of:
            found = agent.allocator.get(number)
            if found is None:
                continue
            labels_of[number] = label_dict(found.labels)
        result.append(ClusterEndpoint(labels_of[number], [address], item.get("node", "")))
    return result
