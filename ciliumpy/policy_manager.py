"""Keeps every local endpoint's datapath entries equal to what the stored policies
resolve to. Watches the policy items and the identities in the kvstore; on a change it
re-resolves and writes only the difference (entries added or removed), so a one-rule
change touches only its entries. Resolution is cached per endpoint label set, so
endpoints sharing an identity share the work. ``enforced`` is the last policy revision
fully applied to the datapath (``ciliumpy policy wait``)."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

from ciliumpy.kvstore import KVError
from ciliumpy.kvstore.base import KVStore
from datapath.datapath import Datapath, PolicyEntry
from driver.model import Endpoint, Store
from policies import repository
from policies.engine import labels_of
from policies.identities import BASE as IDENTITIES
from policies.identities import INIT, IdentityAllocator
from policies.resolve import Resolved, Universe, cidr_identities, resolve

log = logging.getLogger("ciliumpy.policy")


class PolicyManager:
    def __init__(self, kv: KVStore, store: Store, datapath: Datapath,
                 allocator: IdentityAllocator, mode: str,
                 program: Callable[[Endpoint], None]) -> None:
        self.kv, self.store, self.datapath = kv, store, datapath
        self.allocator, self.mode, self.program = allocator, mode, program
        self.revision = 0
        self.enforced = 0
        self.rules: list = []
        self.cidrs: dict = {}
        self.universe = Universe({}, {})
        self.flags: dict[int, tuple[bool, bool]] = {}  # ifindex -> (ingress, egress)
        self.produced: dict[int, set[PolicyEntry]] = {}
        self.error: str | None = None
        self._cache: dict[tuple, Resolved] = {}
        self._lock = threading.RLock()
        self._dirty = threading.Event()
        self._stop = threading.Event()

    def start(self) -> None:
        self.refresh()
        for prefix in (repository.ITEMS, IDENTITIES + "/id/"):
            threading.Thread(target=self._watch, args=(prefix,), name="policy-watch",
                             daemon=True).start()
        threading.Thread(target=self._apply_loop, name="policy-apply", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    def _watch(self, prefix: str) -> None:
        watch = None
        while not self._stop.is_set():
            try:
                watch = watch or self.kv.watch(prefix, self.kv.index())
                if watch.next(timeout=5.0):
                    self._dirty.set()
            except KVError as exc:
                self.error = str(exc)
                self._stop.wait(1.0)

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(5.0)
            if self._stop.is_set():
                return
            self._dirty.clear()
            self.refresh()

    # ---- resolution ----------------------------------------------------------
    def refresh(self) -> None:
        """Re-reads policies and identities, then syncs every local endpoint."""
        try:
            revision, rules = repository.rules(self.kv)
            identities = {i.number: list(i.labels) for i in self.allocator.list()
                          if not i.reserved}
        except KVError as exc:
            self.error = f"kvstore: {exc} (keeping the policy in force)"
            log.warning("policy refresh failed: %s", exc)
            return
        except Exception as exc:  # a stored policy that no longer parses
            self.error = f"policy: {exc}"
            log.exception("policy refresh failed")
            return
        with self._lock:
            self.rules, self.revision = rules, revision
            self.cidrs = cidr_identities(rules)
            self.universe = Universe(identities, self.cidrs)
            self._cache.clear()
            self._sync_cidrs()
            for endpoint in self.store.endpoints():
                self.sync_endpoint(endpoint)
            self.enforced = revision
            self.error = None

    def _sync_cidrs(self) -> None:
        wanted = {prefix: number for prefix, number in self.cidrs.items()}
        current = {ipaddress.ip_network(e["prefix"]): e["identity"]
                   for e in self.datapath.ipcache() if e["identity"] >= 0x01000000}
        for prefix, number in wanted.items():
            if current.get(prefix) != number:
                self.datapath.set_ipcache(prefix, number)
        for prefix in set(current) - set(wanted):
            self.datapath.delete_ipcache(prefix)

    def resolved_for(self, endpoint: Endpoint) -> Resolved:
        init = endpoint.identity == INIT
        labels = tuple(sorted(endpoint.labels or [])) if not init else ("reserved:init",)
        key = (labels, init)
        if key not in self._cache:
            self._cache[key] = resolve(self.rules, labels_of(labels), self.universe, self.mode,
                                       init)
        return self._cache[key]

    def sync_endpoint(self, endpoint: Endpoint) -> None:
        """Writes the difference between what is in the datapath and what the policy
        says for one endpoint, then its enforcement flags."""
        if not endpoint.ifindex:
            return
        with self._lock:
            resolved = self.resolved_for(endpoint)
            wanted = {PolicyEntry(endpoint.ifindex, e.direction, e.identity, e.proto, e.port,
                                  e.end_port, e.deny) for e in resolved.entries}
            have = self.produced.get(endpoint.ifindex, set())
            for entry in wanted - have:
                self.datapath.add_policy(entry)
            for entry in have - wanted:
                self.datapath.remove_policy(entry)
            self.produced[endpoint.ifindex] = wanted
            self.flags[endpoint.ifindex] = (resolved.enforce_ingress, resolved.enforce_egress)
        self.program(endpoint)

    def forget(self, endpoint: Endpoint) -> None:
        with self._lock:
            self.produced.pop(endpoint.ifindex, None)
            self.flags.pop(endpoint.ifindex, None)
