"""Programs endpoints into the BPF datapath and decides their enforcement.

Enforcement modes, as Cilium's ``--policy-enforcement``:
- ``default``: a direction is enforced (default-deny) only once some policy selects
  the endpoint in that direction (here: it has policy entries in that direction);
- ``always``: both directions always enforced; ``never``: nothing enforced.
Restrictive default for ``reserved:init`` endpoints (labels not known yet): ingress
is enforced in ``default`` mode, so nothing can open a connection to a container
before its identity, and so its policy, is known; its own egress stays open.
"""

from __future__ import annotations

import ipaddress
import logging

from datapath.datapath import Datapath, PolicyEntry
from driver.model import Endpoint
from policies.identities import INIT

log = logging.getLogger("ciliumpy.datapath")
MODES = ("default", "always", "never")


class EndpointDatapath:
    def __init__(self, datapath: Datapath, mode: str) -> None:
        self.datapath, self.mode = datapath, mode
        self.policy = None  # the PolicyManager, once the agent has wired it

    def enforcement(self, ifindex: int, identity: int) -> tuple[bool, bool]:
        """Policy decides (default-deny per selected direction); entries written
        directly through the datapath API also select their direction."""
        if self.mode == "always":
            return True, True
        if self.mode == "never":
            return False, False
        produced = self.policy.produced.get(ifindex, set()) if self.policy else set()
        ingress, egress = self.policy.flags.get(ifindex, (identity == INIT, False)) if (
            self.policy) else (identity == INIT, False)
        manual = {e.direction for e in self.datapath.entries
                  if e.ep == ifindex and e not in produced}
        return ingress or "ingress" in manual, egress or "egress" in manual

    def program(self, endpoint: Endpoint, ifindex: int, attach: bool = True) -> None:
        """Writes the endpoint's entry (identity, enforcement, MAC) and its ipcache
        entries, and attaches the programs: done before Join answers."""
        if attach:
            self.datapath.attach(ifindex)
        ingress, egress = self.enforcement(ifindex, endpoint.identity)
        self.datapath.set_endpoint(ifindex, endpoint.identity, ingress, egress, endpoint.mac,
                                   [ipaddress.ip_interface(a).ip for a in endpoint.addresses])

    def remove(self, endpoint: Endpoint, ifindex: int) -> None:
        self.datapath.remove_endpoint(
            ifindex, [ipaddress.ip_interface(a).ip for a in endpoint.addresses])

    def add_entry(self, endpoint: Endpoint, ifindex: int, entry: PolicyEntry) -> None:
        self.datapath.add_policy(entry)
        self.program(endpoint, ifindex, attach=False)

    def remove_entry(self, endpoint: Endpoint, ifindex: int, entry: PolicyEntry) -> bool:
        removed = self.datapath.remove_policy(entry)
        self.program(endpoint, ifindex, attach=False)
        return removed
