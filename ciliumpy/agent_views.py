"""What the agent's readers see of its state: the L7 proxy's state (each endpoint's L7
entries, identities and their labels, container names), the endpoint behind an
ifindex (the monitor) and the container holding an address (flows, read in the event
reader's thread from a table refreshed at most once a second)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ciliumpy.proxy_state import identities_from_ipcache, l7_entries, labels_by_identity
from policies.identities import INIT

if TYPE_CHECKING:
    from ciliumpy.daemon import Agent

L7_KINDS = ("http", "kafka", "dns", "tls")  # what the L7 proxy parses


class AgentViews:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._names: tuple[float, dict[str, str]] = (0.0, {})

    def proxy_state(self) -> dict:
        """What the L7 proxy judges with (``ciliumpy.proxy_state``)."""
        agent, l7 = self.agent, []
        with agent.policy.lock:
            for endpoint in agent.store.endpoints():
                if not endpoint.ifindex:
                    continue
                view = agent.policy.view_of(endpoint.labels, endpoint.identity == INIT)
                addresses = [a.split("/")[0] for a in endpoint.addresses]
                l7 += l7_entries(addresses, view.counts, L7_KINDS)
            if not l7:
                # nothing is redirected to the proxy, so it judges nothing: the rest is
                # O(cluster) to build (30,000 remote endpoints: ~0.2 s per change)
                return {"identities": {}, "labels": {}, "names": {}, "l7": []}
            labels = labels_by_identity({**agent.policy.fqdn_labels(),
                                         **agent.policy.node_identities,
                                         **agent.policy.identities})
        return {"identities": identities_from_ipcache(agent.datapath.ipcache()),
                "labels": labels, "names": self._names_now(), "l7": l7}

    def endpoint(self, ifindex: int) -> dict | None:
        for endpoint in self.agent.store.endpoints():
            if endpoint.ifindex == ifindex:
                return {"endpoint_id": endpoint.endpoint_id,
                        "container_name": endpoint.container_name,
                        "identity": endpoint.identity}
        return None

    def container_of(self, address: str) -> str | None:
        """The name of the local container holding ``address``."""
        expires, names = self._names
        if time.monotonic() > expires:
            names = self._names_now()
            self._names = (time.monotonic() + 1.0, names)
        return names.get(address)

    def _names_now(self) -> dict[str, str]:
        return {a.split("/")[0]: e.container_name for e in self.agent.store.endpoints()
                for a in e.addresses if e.container_name}
