"""The one owner of each local endpoint's datapath state.

For every endpoint this object decides, and alone writes: its endpoint entry (identity,
enforcement per direction, MAC, addresses), the programs on its host veth, and its
policy entries. The policy manager only computes *views* (what the stored policies say
for a label set); this object asks it for the view of an endpoint and writes the
difference. Entries in the maps that no view produced (written by hand through the
agent API, or pinned by an earlier agent and not yet re-derived after a restart) select
their direction as policy entries do, so a restart never opens an endpoint.

Enforcement modes, as Cilium's ``--policy-enforcement``:
- ``default``: a direction is enforced (default-deny) only once some policy selects
  the endpoint in that direction;
- ``always``: both directions always enforced; ``never``: nothing enforced.
Restrictive default for ``reserved:init`` endpoints (labels not known yet): ingress
is enforced in ``default`` mode, so nothing can open a connection to a container
before its identity, and so its policy, is known; its own egress stays open.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ciliumpy.policy_manager import PolicyManager
from ciliumpy.policy_view import View
from datapath.datapath import Datapath, PolicyEntry
from driver.model import Endpoint
from policies.identities import INIT
from policies.resolve import Entry

log = logging.getLogger("ciliumpy.endpoints")
MODES = ("default", "always", "never")


@dataclass
class _Written:
    """What the datapath holds for one endpoint (by ifindex)."""

    # from policy views: several view entries can become one datapath entry (the same
    # port allowed by an L7 rule and by another one), hence a count per datapath entry
    produced: collections.Counter = field(default_factory=collections.Counter)
    view: tuple[int, int] | None = None  # (serial, version) of the view last applied
    flags: tuple[bool, bool] | None = None  # the view's (ingress, egress) enforcement


class EndpointManager:
    def __init__(self, datapath: Datapath, policy: PolicyManager, mode: str,
                 endpoints: Callable[[], Iterable[Endpoint]],
                 proxy_ports: Mapping[str, int] | None = None,
                 on_written: Callable[[], None] = lambda: None,
                 lookup: Callable[[str], Endpoint | None] | None = None) -> None:
        self.datapath, self.policy, self.mode = datapath, policy, mode
        # the stored record of one endpoint, read again under the policy lock before
        # anything is written: a caller's copy may be older than another thread's
        # update (an identity assigned meanwhile), and writing it would undo that
        self._lookup = lookup
        self._endpoints = endpoints
        # L7 kind -> the proxy port its connections are redirected to; a kind with no
        # port here is enforced at L4 only
        self.proxy_ports = dict(proxy_ports or {})
        self.on_written = on_written  # the L7 proxy's state follows what was written
        self._written: dict[int, _Written] = {}

    # ---- lifecycle of one endpoint ------------------------------------------------
    def created(self, endpoint: Endpoint, attach: bool = True) -> None:
        """Programs, attaches and applies policy: done before Join answers (and again
        for every stored endpoint after an agent restart: maps end identical)."""
        if not endpoint.ifindex:
            return
        if attach:
            self.datapath.attach(endpoint.ifindex)
        self.sync(endpoint, force_entry=True)

    def removed(self, endpoint: Endpoint) -> None:
        if not endpoint.ifindex:
            return
        with self.policy.lock:
            written = self._written.pop(endpoint.ifindex, None)
        self.datapath.remove_endpoint(endpoint.ifindex, _ips(endpoint))
        for entry in written.produced if written else ():
            self.datapath.remove_policy(entry)
        self.on_written()

    def sync(self, endpoint: Endpoint, force_entry: bool = False) -> None:
        """Brings the endpoint's policy entries to its view (the view's last delta when
        one version behind, else the full difference), then its endpoint entry when its
        identity or enforcement changed."""
        if not endpoint.ifindex:
            return
        with self.policy.lock:
            if self._lookup is not None:
                current = self._lookup(endpoint.endpoint_id)
                if current is None or current.ifindex != endpoint.ifindex:
                    return  # removed (or re-created) meanwhile: its own calls follow
                endpoint = current
            ifindex = endpoint.ifindex
            view = self.policy.view_of(endpoint.labels, endpoint.identity == INIT)
            written = self._written.setdefault(ifindex, _Written())
            add, remove = self.difference(view, written, ifindex)
            for entry in add:
                self.datapath.add_policy(entry)
            for entry in remove:
                self.datapath.remove_policy(entry)
            self._reset_redirected(endpoint, written.produced, add, remove)
            written.view = (view.serial, view.version)
            changed = written.flags != view.flags
            written.flags = view.flags
            if changed or force_entry:
                self._write_entry(endpoint)
        if add or remove or changed or force_entry:
            self.on_written()

    def sync_all(self) -> None:
        for endpoint in self._endpoints():
            self.sync(endpoint)

    def identity_changed(self, endpoint: Endpoint) -> None:
        self.sync(endpoint, force_entry=True)

    # ---- entries written by hand (agent API) ----------------------------------------
    def add_manual(self, endpoint: Endpoint, entry: PolicyEntry) -> None:
        with self.policy.lock:
            self.datapath.add_policy(entry)
            self._write_entry(endpoint)

    def remove_manual(self, endpoint: Endpoint, entry: PolicyEntry) -> bool:
        with self.policy.lock:
            removed = self.datapath.remove_policy(entry)
            self._write_entry(endpoint)
        return removed

    # ---- decisions ----------------------------------------------------------------
    def enforcement(self, endpoint: Endpoint) -> tuple[bool, bool]:
        """(ingress, egress) default-deny for the endpoint, from the mode, its view's
        flags and the directions of entries in the maps that no view produced."""
        if self.mode == "always":
            return True, True
        if self.mode == "never":
            return False, False
        written = self._written.get(endpoint.ifindex)
        ingress, egress = (written.flags if written and written.flags is not None
                           else (endpoint.identity == INIT, False))
        produced = written.produced if written else set()
        manual = {e.direction for e in self.datapath.entries
                  if e.ep == endpoint.ifindex and e not in produced}
        return ingress or "ingress" in manual, egress or "egress" in manual

    def _write_entry(self, endpoint: Endpoint) -> None:
        with self.policy.lock:  # entries may not change while enforcement is decided
            ingress, egress = self.enforcement(endpoint)
        self.datapath.set_endpoint(endpoint.ifindex, endpoint.identity, ingress, egress,
                                   endpoint.mac, _ips(endpoint))

    def difference(self, view: View, written: _Written, ifindex: int
                    ) -> tuple[set[PolicyEntry], set[PolicyEntry]]:
        """Datapath entries to add and to remove, updating ``written.produced``: the
        view's last delta when one version behind, else the full difference."""
        produced = written.produced
        if written.view == (view.serial, view.version):
            return set(), set()
        if written.view == (view.serial, view.version - 1):
            add, remove = set(), set()
            for entry in view.added:
                datapath_entry = self._datapath_entry(entry, ifindex)
                produced[datapath_entry] += 1
                if produced[datapath_entry] == 1:
                    add.add(datapath_entry)
            for entry in view.removed:
                datapath_entry = self._datapath_entry(entry, ifindex)
                produced[datapath_entry] -= 1
                if produced[datapath_entry] <= 0:
                    del produced[datapath_entry]
                    remove.add(datapath_entry)
            return add - remove, remove - add
        wanted = collections.Counter(self._datapath_entry(e, ifindex) for e in view.counts)
        add, remove = set(wanted) - set(produced), set(produced) - set(wanted)
        written.produced = wanted
        return add, remove

    def _reset_redirected(self, endpoint: Endpoint, produced: collections.Counter,
                          add: set[PolicyEntry], remove: set[PolicyEntry]) -> None:
        """Where a port starts or stops going through the L7 proxy (not merely gains
        another peer), connections the datapath tracks for it are judged again (see
        ``Datapath.ct_forget_port``). ``produced``: the entries after the change."""
        def redirected(key: tuple, entries) -> bool:
            return any(e.proxy_port and (e.direction, e.port, e.end_port) == key
                       for e in entries)

        keys = {(e.direction, e.port, e.end_port)
                for e in add | remove if e.proxy_port and e.proto in (0, 6, 17)}
        before = (set(produced) - add) | remove if keys else set()
        for key in keys:
            if redirected(key, before) != redirected(key, produced):
                direction, first, end = key
                self.datapath.ct_forget_port(_ips(endpoint), direction, first, end or first)

    def _datapath_entry(self, entry: Entry, ifindex: int) -> PolicyEntry:
        proxy = self.proxy_ports.get(entry.l7_kind, 0) if entry.l7 and not entry.deny else 0
        return PolicyEntry(ifindex, entry.direction, entry.identity, entry.proto, entry.port,
                           entry.end_port, entry.deny, proxy)


def _ips(endpoint: Endpoint) -> list:
    return [ipaddress.ip_interface(a).ip for a in endpoint.addresses]
