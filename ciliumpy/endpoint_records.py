"""Every node's endpoint records in the kvstore, and the watch that reads only the nodes
whose records changed.

Layout (all under the writing node's lease, so a dead agent's records vanish with it):
- ``ip/v2/<node>/<address>`` -> ``{"identity", "node"}``, one per endpoint address;
- ``ip/rev/<node>`` -> a token rewritten after each batch of changes the node makes.

Why the revision keys: a Consul blocking query on a prefix answers with the whole prefix.
With one prefix of endpoints, every change anywhere woke each agent with every endpoint
of the cluster (1,000 nodes x 30 endpoints: ~7 MB per answer, p99 ~730 ms until the
ipcache showed a change; bench/results/scale.md). Followers now block on ``ip/rev/``
(one small key per node) and list only the prefix of the node whose token moved (its
30 records), so the cost of a change does not grow with the cluster.
A writer bumps its token *after* its records, so a follower that lists on a token sees
at least that batch; a batch still being written is listed again on its own token.
"""

from __future__ import annotations

import time

from state.kvstore.base import Event, KVPair, KVStore, LeaseExpired, Watch
from state.kvstore.base import key as kv_key

PREFIX = kv_key("ip", "v2") + "/"
REVISIONS = kv_key("ip", "rev") + "/"
# more changed nodes than this in one answer (a cluster starting): one list of the
# whole prefix instead of one per node
FULL_LIST_ABOVE = 64


def record_key(node: str, address: str) -> str:
    return f"{PREFIX}{node}/{address}"


def address_of(key: str) -> str:
    """The endpoint address a record key names."""
    return key.rsplit("/", 1)[1]


def node_of(key: str) -> str:
    """The node whose prefix a record key is in."""
    return key[len(PREFIX):].rsplit("/", 1)[0]


def list_records(kv: KVStore) -> list[KVPair]:
    return kv.list(PREFIX)


def write(kv: KVStore, node: str, lease: str, puts: dict[str, str], deletes: set[str],
          take_over: bool = False) -> None:
    """Writes ``node``'s changed records (address -> value), deletes the ``deletes``
    addresses, then moves its revision token so followers read the node again.
    ``take_over``: ``lease`` is new (an agent restarted within its previous lease's
    TTL): keys Consul refuses to let it acquire, held by that previous lease, are
    taken over (before, such an agent republished nothing for up to 2 x TTL)."""
    for address, value in puts.items():
        _put_own(kv, record_key(node, address), value, lease, take_over)
    for address in deletes:
        kv.delete(record_key(node, address))
    if puts or deletes:
        _put_own(kv, REVISIONS + node, str(time.time_ns()), lease, take_over)


def _put_own(kv: KVStore, key: str, value: str, lease: str, take_over: bool) -> None:
    """A key only ``node`` writes (its own prefix). Refused again after a take-over:
    ``lease`` itself is gone (``LeaseExpired``)."""
    try:
        kv.put(key, value, lease=lease)
    except LeaseExpired:
        if not take_over:
            raise
        kv.delete(key)
        kv.put(key, value, lease=lease)


def stale_addresses(kv: KVStore, node: str, wanted: set[str]) -> set[str]:
    """Addresses ``node`` has records for that it no longer wants (an earlier run's,
    kept by its old lease until it expires: deleted now, with a token, so followers
    do not wait for the old lease)."""
    return {address_of(p.key) for p in kv.list(f"{PREFIX}{node}/")} - wanted


class RecordWatch(Watch):
    """Changes under ``ip/v2/`` after ``index``, as puts and deletes of record keys,
    read through the revision tokens (one blocking query per ``next`` at rest)."""

    def __init__(self, kv: KVStore, index: int, baseline: list[KVPair]) -> None:
        """``baseline``: the records the caller listed after ``index`` (its view: changes
        are reported against it; a node's token moving after ``index`` re-reads it)."""
        super().__init__(PREFIX, index)
        self.kv = kv
        self._tokens = kv.watch(REVISIONS, index)
        self._known: dict[str, dict[str, int]] = {}  # node -> record key -> mod index
        for pair in baseline:
            self._known.setdefault(node_of(pair.key), {})[pair.key] = pair.mod_index
        # nodes whose token moved or vanished, not listed yet (a vanished token is
        # listed too: a node taking over its keys deletes and rewrites it)
        self._pending: set[str] = set()

    def next(self, timeout: float) -> list[Event]:
        if not self._pending:
            self._pending = {e.key[len(REVISIONS):] for e in self._tokens.next(timeout)}
        return self._read_changed()

    def _read_changed(self) -> list[Event]:
        known = self._known
        listed: dict[str, list[KVPair]] = {}
        if len(self._pending) > FULL_LIST_ABOVE:
            for pair in self.kv.list(PREFIX):
                listed.setdefault(node_of(pair.key), []).append(pair)
            listed = {node: listed.get(node, []) for node in self._pending}
        else:
            for node in sorted(self._pending):
                listed[node] = self.kv.list(f"{PREFIX}{node}/")
        puts, deletes = [], []
        for node, pairs in listed.items():
            before = known.pop(node, {})
            now = {p.key: p.mod_index for p in pairs}
            puts += [Event("put", p.key, p.value, p.mod_index) for p in pairs
                     if before.get(p.key) != p.mod_index]
            deletes += [k for k in before if k not in now]
            if now:
                known[node] = now
        self._pending = set()
        puts.sort(key=lambda e: e.mod_index)
        top = max([self.index, self._tokens.index] + [e.mod_index for e in puts])
        self.index = top
        return puts + [Event("delete", k, None, top) for k in sorted(deletes)]
