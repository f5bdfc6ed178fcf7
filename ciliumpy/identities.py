"""Cluster identities allocated in the kvstore (the numbers themselves: ``policies.identities``).

Key layout (under ``ciliumpy/state/identities/v1``), after Cilium's allocator:
- ``id/<N>``            -> JSON list of labels (master key, no lease)
- ``value/<b64labels>`` -> N: which number a label set has (create-only: the authority)
- ``refs/<N>/<node>``   -> "" under the node's lease: who still uses N

Allocation: reuse ``value/`` if present; otherwise claim the lowest free ``id/<N>``
(N >= 256) with a create-only write, then create ``value/`` create-only. If another node
won the label set meanwhile, our claim is deleted and theirs used, so racing nodes end
with the same number; a lost claim frees its number at once, so holes stay below the
number of nodes racing at any moment. Identities without references are deleted by
the GC only after they were seen unreferenced for ``grace`` seconds (two rounds).
Numbers stay below 2^24: the VXLAN VNI carries them. With a cluster ID N (Cluster
Mesh) this cluster allocates only ``(N << 16) | 256..65535`` (``cluster_range``), so
clusters never coordinate and never collide; a label set found with a number outside
that range (allocated under another cluster ID, or by an agent configured with another
one on the same store) is refused with an error rather than used.
"""

from __future__ import annotations

import json
import threading
import time

from policies.identities import (
    MIN_CLUSTER_ID,
    RESERVED,
    Identity,
    cluster_range,
    encode,
    reserved_identity,
)
from state.kvstore.base import KVStore
from state.kvstore.base import key as kv_key

BASE = kv_key("identities", "v1")


class IdentityError(RuntimeError):
    """Allocation failed (store down, space exhausted); the endpoint keeps its identity."""


class IdentityAllocator:
    def __init__(self, kv: KVStore, node: str, attempts: int = 64,
                 cluster_id: int = 0) -> None:
        self.kv, self.node, self.attempts = kv, node, attempts
        self.cluster_id = cluster_id
        self.first, self.last = cluster_range(cluster_id)
        self._lock = threading.Lock()
        self._unreferenced_since: dict[int, float] = {}

    def allocate(self, labels: list[str], lease: str) -> Identity:
        """The cluster identity of ``labels`` (canonical form), referenced by this node."""
        labels = sorted(set(labels))
        with self._lock:
            for _ in range(self.attempts):
                number = self._lookup(labels)
                if number is None:
                    number = self._claim(labels)
                    if number is None:
                        continue
                self._check_range(number, labels)
                self.kv.put(f"{BASE}/refs/{number}/{self.node}", "", lease=lease)
                # The GC may have removed the identity between lookup and reference.
                if self._lookup(labels) == number:
                    return Identity(number, tuple(labels))
                self.kv.delete(f"{BASE}/refs/{number}/{self.node}")
            raise IdentityError(f"could not allocate an identity for {labels} "
                                f"after {self.attempts} attempts")

    def _check_range(self, number: int, labels: list[str]) -> None:
        if not self.first <= number <= self.last:
            raise IdentityError(
                f"labels {labels} have identity {number}, outside this cluster's range "
                f"{self.first}..{self.last} (cluster-id {self.cluster_id}): every agent "
                "sharing one kvstore must use the same cluster-id")

    def _lookup(self, labels: list[str]) -> int | None:
        pair = self.kv.get(f"{BASE}/value/{encode(labels)}")
        return int(pair.value) if pair else None

    def _claim(self, labels: list[str]) -> int | None:
        used = {int(p.key.rsplit("/", 1)[1]) for p in self.kv.list(f"{BASE}/id/")}
        number = next((n for n in range(self.first, self.last + 1) if n not in used), None)
        if number is None:
            raise IdentityError(f"the identity space ({self.first}..{self.last}) is exhausted")
        id_key = f"{BASE}/id/{number}"
        if not self.kv.create(id_key, json.dumps(labels)):
            return None  # another node took this number: look again
        if self.kv.create(f"{BASE}/value/{encode(labels)}", str(number)):
            return number
        pair = self.kv.get(id_key)  # someone else won these labels: free our number
        if pair:
            self.kv.delete(id_key, pair.mod_index)
        return self._lookup(labels)

    def release(self, number: int) -> None:
        if number >= MIN_CLUSTER_ID:
            self.kv.delete(f"{BASE}/refs/{number}/{self.node}")

    def refresh(self, numbers: set[int], lease: str) -> None:
        """Re-creates this node's references (after a new lease, e.g. a store restart)."""
        for number in numbers:
            if number >= MIN_CLUSTER_ID:
                self.kv.put(f"{BASE}/refs/{number}/{self.node}", "", lease=lease)

    def get(self, number: int) -> Identity | None:
        if number in RESERVED:
            return reserved_identity(number)
        pair = self.kv.get(f"{BASE}/id/{number}")
        return Identity(number, tuple(json.loads(pair.value))) if pair else None

    def list(self) -> list[Identity]:
        found = [Identity(int(p.key.rsplit("/", 1)[1]), tuple(json.loads(p.value)))
                 for p in self.kv.list(f"{BASE}/id/")]
        return [reserved_identity(n) for n in sorted(RESERVED)] + sorted(
            found, key=lambda i: i.number)

    def references(self) -> dict[int, list[str]]:
        refs: dict[int, list[str]] = {}
        for pair in self.kv.list(f"{BASE}/refs/"):
            number, node = pair.key[len(f"{BASE}/refs/"):].split("/", 1)
            refs.setdefault(int(number), []).append(node)
        return refs

    def gc(self, grace: float) -> list[int]:
        """Deletes identities nobody referenced for ``grace`` seconds."""
        refs = self.references()
        now = time.time()
        deleted = []
        for identity in self.list():
            number = identity.number
            if identity.reserved or number in refs:
                self._unreferenced_since.pop(number, None)
                continue
            first = self._unreferenced_since.setdefault(number, now)
            if now - first < grace:
                continue
            value_key = f"{BASE}/value/{encode(list(identity.labels))}"
            pair = self.kv.get(value_key)
            if pair and pair.value == str(number):
                self.kv.delete(value_key, pair.mod_index)
            if self.references().get(number):  # referenced meanwhile: restore
                self.kv.create(value_key, str(number))
                continue
            self.kv.delete(f"{BASE}/id/{number}")
            self._unreferenced_since.pop(number, None)
            deleted.append(number)
        return deleted
