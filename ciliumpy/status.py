"""The agent's health and counts as ``ciliumpy status`` and ``GET /v1/status`` show them;
read-only views over the parts the agent wires together."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ciliumpy import __version__
from datapath import loader

if TYPE_CHECKING:
    from ciliumpy.daemon import Agent


def agent_status(agent: Agent) -> dict[str, Any]:
    endpoints = agent.store.endpoints()
    states: dict[str, int] = {}
    for endpoint in endpoints:
        states[endpoint.state] = states.get(endpoint.state, 0) + 1
    return {
        "version": __version__,
        "node": agent.config.node_name,
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - agent.started, 1),
        "kvstore": {"backend": agent.kv.name, "healthy": kv_healthy(agent),
                    "lease": bool(agent.lease and agent.lease.healthy),
                    "error": agent.lease.error if agent.lease else None},
        "identities_in_use": sorted(agent.identities.in_use()) if agent.identities else [],
        "datapath": datapath_status(agent),
        "plugin_socket": agent.config.plugin_socket,
        "networks": len(agent.store.networks()),
        "endpoints": len(endpoints),
        "endpoint_states": states,
        "docker": agent.docker.last_status,
        "docker_watcher": {"connected": bool(agent.watcher and agent.watcher.connected)},
        "cluster": agent.cluster.view() if agent.cluster else None,
        "clustermesh": agent.mesh.view() if agent.mesh else None,
        "proxy": agent.proxy.view(),
        "bandwidth": agent.bandwidth.view(),
        "services": services_status(agent),
        "host_firewall": dict(agent.host_firewall.status() if agent.host_firewall else
                              {"enabled": False},
                              policy_audit_mode=agent.config.policy_audit_mode),
        "hubble": {"address": agent.hubble_address or None,
                   "relay": agent.config.hubble_relay_listen_address or None,
                   "tls": agent.hubble_tls is not None},
    }


def services_status(agent: Agent) -> dict[str, Any] | None:
    if agent.services is None:
        return None
    view = agent.services.view()
    view["published_ports"] = len(agent.ports.list()) if agent.ports else 0
    view["socket_lb_scope"] = agent.config.socket_lb_scope
    return view


def datapath_status(agent: Agent) -> dict[str, Any]:
    startup = loader.STARTUP
    return {"mode": agent.config.datapath_mode,
            "policy_enforcement": agent.config.policy_enforcement,
            "programs": startup.source_hash if startup else None,
            "compiled_at_start": bool(startup and startup.compiled),
            "compile_seconds": round(startup.compile_seconds, 3) if startup else None,
            "compiles_in_worker": int(bool(agent.datapath.loaded
                                           and agent.datapath.loaded.compiled)),
            "policy_entries": len(agent.datapath.entries),
            "policy_revision": agent.policy.revision,
            "policy_enforced_revision": agent.policy.enforced,
            "policy_error": agent.policy.error,
            "events_seen": agent.monitor.seen,
            "events_lost": agent.datapath.events_lost(),
            "event_reader": agent.event_reader.view() if agent.event_reader else None}


def kv_healthy(agent: Agent) -> bool:
    try:
        agent.kv.get("ciliumpy/state/healthcheck")
        return True
    except Exception:
        return False
