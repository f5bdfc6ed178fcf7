"""Keeps, for every label set of a local endpoint, the *view* of what the stored
policies resolve to, incrementally; ``ciliumpy/endpoints.py`` writes views into the
datapath (this module writes only the node-local CIDR identities of the ipcache, those
of the rules' CIDRs and those of the addresses the DNS proxy learnt: ``set_fqdns``).

State: the parsed rules of each stored policy item, and one *view* per endpoint label
set (endpoints sharing an identity share a view) holding the rules that select it and
each rule's contribution (its entries). A watch event for one policy item re-parses that
item only and recomputes only its rules' contributions; a new identity adds only the
entries whose peers it matches; then each endpoint gets the difference between what
the datapath holds and what its view says (``on_change`` tells the endpoint owner). A
change of ``fromRequires`` or of the set of CIDRs rebuilds the affected views (rare).
``enforced`` is the highest policy revision fully applied here (``ciliumpy policy wait``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable

from ciliumpy import policy_store as repository
from ciliumpy.collector import collector_paused
from ciliumpy.identities import BASE as IDENTITIES
from ciliumpy.identities import IdentityAllocator
from ciliumpy.policy_view import View
from datapath.datapath import Datapath
from policies import engine, named_ports, to_services
from policies.engine import labels_of
from policies.identities import NODE_SCOPE
from policies.model import Rule
from policies.parser import parse_documents
from policies.resolve import (
    LOCAL_IDENTITY_BASE,
    Entry,
    FQDNPeers,
    Universe,
    cidr_identities,
    fqdn_identities,
    rule_entries,
)
from state.kvstore import KVError
from state.kvstore.base import Event, KVStore

log = logging.getLogger("ciliumpy.policy")
DIRECTIONS = ("ingress", "egress")


class PolicyManager:
    def __init__(self, kv: KVStore, datapath: Datapath, allocator: IdentityAllocator,
                 mode: str, on_change: Callable[[], None]) -> None:
        self.kv, self.datapath = kv, datapath
        self.allocator, self.mode = allocator, mode
        self.on_change = on_change  # called under ``lock`` after views changed
        self.revision = 0
        self.enforced = 0
        self.items: dict[str, list[Rule]] = {}
        self.cidrs: dict = {}
        self.fqdns: FQDNPeers = {}  # addresses learnt from DNS: (identity, names)
        self.identities: dict[int, list[str]] = {}
        # Cluster Mesh: the remote clusters' identities (kept across a refresh)
        self.remote_identities: Callable[[], dict[int, list[str]]] = dict
        self.local_cluster = ""  # its name in a mesh: `cluster` selects its endpoints only
        # toServices: a service's backend selector by name (None: it has none; a name
        # missing from the answer: no such service), set by the agent, and the
        # selectors of the services the rules name
        self.service_selector: Callable[[str], tuple[bool, dict | None]] = \
            lambda name: (False, None)
        self.service_selectors: dict[str, dict | None] = {}
        # other nodes' identities (node-local, ciliumpy/node_identities.py): fromNodes
        self.node_identities: dict[int, list[str]] = {}
        self.universe = Universe({}, {})
        self.views: dict[tuple, View] = {}
        self.error: str | None = None
        self.lock = threading.RLock()
        self._stop = threading.Event()

    @property
    def rules(self) -> list[Rule]:
        return [rule for name in sorted(self.items) for rule in self.items[name]]

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        try:
            start_index = self.kv.index()
        except KVError:
            start_index = 0
        self.refresh()
        for prefix, handler in ((repository.ITEMS, self._policy_events),
                                (IDENTITIES + "/id/", self._identity_events)):
            threading.Thread(target=self._watch, args=(prefix, handler, start_index),
                             name="policy-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, prefix: str, handler, index: int) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                watch = watch or self.kv.watch(prefix, index)
                events = watch.next(timeout=5.0)
                if events:
                    handler(events)
            except KVError as exc:
                self.error = f"kvstore: {exc} (keeping the policy in force)"
                self._stop.wait(1.0)
            except Exception:  # never let the watch die
                log.exception("policy update failed")
                self._stop.wait(1.0)

    # ---- full rebuild ----------------------------------------------------------
    def refresh(self) -> None:
        """Reads everything again and rebuilds every view (start, and after errors)."""
        try:
            revision = repository.revision(self.kv)
            items = {item["name"]: self._parse(item) for item in repository.items(self.kv)}
            identities = {i.number: list(i.labels) for i in self.allocator.list()
                          if not i.reserved}
            identities.update(self.remote_identities())
        except KVError as exc:
            self.error = f"kvstore: {exc} (keeping the policy in force)"
            log.warning("policy refresh failed: %s", exc)
            return
        with self.lock, collector_paused():
            self.items, self.identities = items, identities
            self._rebuild()
            self.revision = self.enforced = max(self.enforced, revision)
            self.error = None

    @staticmethod
    def _parse(item: dict) -> list[Rule]:
        return [rule for policy in parse_documents([item["document"]], "", item["name"])
                for rule in policy.rules]

    def _universe(self) -> Universe:
        return Universe(self.identities, self.cidrs, self.fqdns, self.service_selectors,
                        self.node_identities, self.local_cluster)

    def _named_services(self) -> dict[str, dict | None]:
        """The backend selectors of the services toServices rules name (those that
        exist: a missing one selects nothing)."""
        found = {}
        for name in sorted(to_services.used(self.rules)):
            exists, selector = self.service_selector(name)
            if exists:
                found[name] = selector
        return found

    def services_changed(self, names: set[str] | None) -> None:
        """Services were stored or removed (None: any may have): toServices rules
        naming them follow their selectors. Nothing to do when no rule names them."""
        with self.lock, collector_paused():
            if names is not None and not names & to_services.used(self.rules):
                return
            if self._named_services() != self.service_selectors:
                self._rebuild()

    def _rebuild(self) -> None:
        self.service_selectors = self._named_services()
        self.cidrs = cidr_identities(self.rules)
        self.fqdns = fqdn_identities(self.cidrs, self._learnt(), self.fqdns)
        self.universe = self._universe()
        self._sync_cidrs()
        self.views.clear()
        self._changed()

    def _build_view(self, labels: tuple[str, ...], init: bool, host: bool = False) -> View:
        view = View(list(labels_of(labels)), init, host)
        for name, rules in self.items.items():
            for rule in rules:
                if rule.selects(view.labels, view.host):
                    view.selected[(name, rule.index)] = rule
        self._recompute(view)
        return view

    def _recompute(self, view: View) -> None:
        selected = list(view.selected.values())
        view.reqs = {d: engine.requirements(selected, d) for d in DIRECTIONS}
        view.begin()
        view.version += 1  # endpoints must take a full difference after a recompute
        view.contrib.clear()
        view.counts.clear()
        for key, rule in view.selected.items():
            view.add(key, rule_entries(rule, view.reqs, self.universe, own=view.labels))
        self._update_flags(view)

    # ---- incremental updates ----------------------------------------------------
    def _policy_events(self, events: list[Event]) -> None:
        with self.lock, collector_paused():
            changed: dict[str, tuple[list[Rule], list[Rule]]] = {}
            revision = 0
            for event in events:
                name = event.key[len(repository.ITEMS):]
                old = self.items.get(name, [])
                if event.kind == "put":
                    item = json.loads(event.value)
                    new = self._parse(item)
                    revision = max(revision, int(item.get("revision", 0)))
                    self.items[name] = new
                else:
                    new = []
                    self.items.pop(name, None)
                changed[name] = (changed.get(name, (old, None))[0], new)
            touched_cidrs = any(element.cidrs for old, new in changed.values()
                                for rule in (*old, *new)
                                for element in (*rule.ingress, *rule.ingress_deny,
                                                *rule.egress, *rule.egress_deny))
            if touched_cidrs and cidr_identities(self.rules) != self.cidrs or \
                    self._named_services() != self.service_selectors:
                self._rebuild()
            else:
                for view in self.views.values():
                    self._apply_rule_changes(view, changed)
                self._changed()
            if any(not new for _, new in changed.values()):
                revision = max(revision, repository.revision(self.kv))  # deletions
            self.revision = self.enforced = max(self.enforced, revision)

    def _apply_rule_changes(self, view: View, changed) -> None:
        removed, added = [], []
        for name, (old, new) in changed.items():
            removed += [(name, r.index) for r in old if (name, r.index) in view.selected]
            added += [((name, r.index), r) for r in new
                      if r.selects(view.labels, view.host)]
        if not removed and not added:
            return
        requires_changed = any(e.requires for _, r in added for d in DIRECTIONS
                               for e in (*r.allows(d), *r.denies(d))) or any(
            e.requires for key in removed for d in DIRECTIONS
            for e in (*view.selected[key].allows(d), *view.selected[key].denies(d)))
        view.begin()
        for key in removed:
            view.selected.pop(key, None)
            view.drop(key)
        for key, rule in added:
            view.selected[key] = rule
        if requires_changed:
            self._recompute(view)
            return
        for key, rule in added:
            view.add(key, rule_entries(rule, view.reqs, self.universe, own=view.labels))
        self._update_flags(view)

    def mesh_identity_events(self, events: list[Event]) -> None:
        """Cluster Mesh: a remote cluster's identities came, changed or went (events as
        this store's ``identities/v1/id/<N>``; numbers never collide with ours)."""
        self._identity_events(events)

    def _identity_events(self, events: list[Event]) -> None:
        with self.lock, collector_paused():
            added: dict[int, list[str]] = {}
            removed = False
            for event in events:
                number = int(event.key.rsplit("/", 1)[1])
                if event.kind == "put":
                    labels = json.loads(event.value)
                    if self.identities.get(number) != labels:
                        removed = removed or number in self.identities
                        added[number] = labels
                elif number in self.identities:
                    removed = True
                    self.identities.pop(number)
            # a new peer declaring a named port can widen what an egress rule's named
            # port means for "any peer" (identity 0): recompute rather than add
            declares = any(named_ports.LABEL_PREFIX in text for labels in added.values()
                           for text in labels)
            self.identities.update(added)
            self._identities_changed(added, removed or declares)

    def _identities_changed(self, added: dict[int, list[str]], removed: bool) -> None:
        """Identities came (``added``, already in the universe's sources) or went or
        changed (``removed``: rebuild); call with ``lock`` held."""
        if removed:
            self._rebuild()
            return
        if not added:
            return
        self.universe = self._universe()
        only = {n: self.universe.peers[n] for n in added}
        for view in self.views.values():
            view.begin()
            for key, rule in list(view.selected.items()):
                more = rule_entries(rule, view.reqs, self.universe, only,
                                    own=view.labels) - view.contrib[key]
                if more:
                    view.add(key, more)
        self._changed()

    def set_node_identities(self, identities: dict[int, list[str]]) -> None:
        """The other nodes' identities (number -> labels) changed: fromNodes/toNodes and
        the entities covering nodes follow; returns once the endpoints' maps are written."""
        with self.lock, collector_paused():
            old, self.node_identities = self.node_identities, dict(identities)
            removed = any(identities.get(n) != labels for n, labels in old.items())
            self._identities_changed({n: v for n, v in identities.items() if n not in old},
                                     removed)

    # ---- writing the datapath ------------------------------------------------------
    def _changed(self) -> None:
        """Tells the endpoint owner that views changed. Its policy entries reach the maps
        in batch syscalls at the end (``Datapath.batched``; writes of other maps, such
        as an endpoint's enforcement flags, still come after its entries): an import
        of 100,000 entries took 100,000 bpf() calls through ctypes."""
        with self.datapath.batched():
            self.on_change()

    def _sync_cidrs(self) -> None:
        """The ipcache's local identities: the rules' CIDRs and the addresses learnt
        from DNS."""
        every = {ipaddress.ip_network(e["prefix"]): e["identity"]
                 for e in self.datapath.ipcache()}
        # an address learnt from DNS never replaces an endpoint's, a node's or the host's
        # entry (a DNS answer naming one would turn it into "world"; Cilium's toFQDNs
        # does not select managed endpoints either); node identities (scope 2) are the
        # cluster sync's
        wanted = {prefix: number for prefix, (number, _) in self.fqdns.items()
                  if LOCAL_IDENTITY_BASE <= every.get(prefix, LOCAL_IDENTITY_BASE) < NODE_SCOPE}
        wanted.update(self.cidrs)
        current = {prefix: number for prefix, number in every.items()
                   if LOCAL_IDENTITY_BASE <= number < NODE_SCOPE}
        for prefix, number in wanted.items():
            if current.get(prefix) != number:
                self.datapath.set_ipcache(prefix, number)
        for prefix in set(current) - set(wanted):
            self.datapath.delete_ipcache(prefix)

    # ---- addresses learnt from DNS (toFQDNs) -------------------------------------------
    def _learnt(self) -> dict:
        return {prefix.network_address: names for prefix, (_, names) in self.fqdns.items()}

    def set_fqdns(self, addresses: dict) -> None:
        """The addresses the DNS proxy learnt (address -> names) changed: each gets a
        local identity in the ipcache, and every view is recomputed, so toFQDNs rules
        allow exactly these addresses; returns once the endpoints' maps are written."""
        with self.lock, collector_paused():
            fqdns = fqdn_identities(self.cidrs, addresses, self.fqdns)
            if fqdns == self.fqdns:
                return
            self.fqdns = fqdns
            self.universe = self._universe()
            self._sync_cidrs()
            for view in self.views.values():
                self._recompute(view)
            self._changed()

    def fqdn_labels(self) -> dict[int, list[str]]:
        """Labels of the identities of learnt addresses (for events)."""
        return {number: ["reserved:world", f"cidr:{prefix}", *(f"fqdn:{n}" for n in names)]
                for prefix, (number, names) in self.fqdns.items()}

    def view_of(self, labels: list[str] | None, init: bool, host: bool = False) -> View:
        """The view of a label set (``init``: labels not known yet; ``host``: this node,
        whose labels are its node labels), built on first use; call with ``lock``
        held."""
        labels_key = ("reserved:init",) if init else tuple(sorted(labels or []))
        key = (labels_key, init, host)
        if key not in self.views:
            self.views[key] = self._build_view(labels_key, init, host)
        return self.views[key]

    def _update_flags(self, view: View) -> None:
        """Enforcement per direction, computed once per view change."""
        selected = list(view.selected.values())
        result, open_directions = [], []
        # the host is never default-deny by the mode alone: only once a host policy
        # selects it (--policy-enforcement=always must not lock the operator out)
        mode = "default" if view.host and self.mode == "always" else self.mode
        for direction in DIRECTIONS:
            enforced = engine.enforced(selected, direction, mode, view.init)
            if engine.open_despite_rules(selected, direction, mode):
                enforced = True  # deny entries apply; the wildcard allow keeps the rest
                open_directions.append(direction)
            result.append(enforced)
        view.flags, view.open_directions = (result[0], result[1]), tuple(open_directions)
        for direction in DIRECTIONS:  # the wildcard allow of an open direction
            key = ("__open__", DIRECTIONS.index(direction))
            if direction in open_directions and key not in view.contrib:
                view.add(key, {Entry(direction, 0, 0)})
            elif direction not in open_directions and key in view.contrib:
                view.drop(key)
