"""Identities of the other nodes, for ``fromNodes``/``toNodes`` (Cilium's
``enable-node-selector-labels``): a node whose agent publishes labels (``--node-labels``)
gets the identity of the label set ``reserved:remote-node`` + ``node:<key>=<value>``;
nodes with the same labels share it; a node without labels stays ``reserved:remote-node``
(6). The numbers are node-local, in Cilium's remote-node scope (``NODE_SCOPE | n``), like
the CIDR identities: never sent on the wire (the overlay still carries 6 for a host's
own packets and the receiver refines it by the outer source address, datapath/bpf/
from_overlay.c), so they need no coordination in the kvstore.

They live in the ipcache (the node's address -> its identity), which is pinned: after
an agent restart ``adopt`` reads them back and a node keeps its number, so the policy
entries that survived in the pinned maps stay right. A label set no node has any more
is released; numbers are handed out in a rising sequence (wrapping at the end of the
scope), so a released number is not given to another label set at once: an event or a
flow in flight still names the label set it was about.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping

from ciliumpy.nodes import Node, list_nodes
from policies.identities import NODE_SCOPE, REMOTE_NODE, Identity, is_node_identity
from policies.labels import Label, canonical
from state.kvstore.base import KVError, KVStore

MAX_NODE_IDENTITY = NODE_SCOPE | 0xFFFFFF


def node_labels(labels: Mapping[str, str] | None) -> tuple[str, ...]:
    """The identity labels of a node with ``labels`` (none: no identity of its own)."""
    if not labels:
        return ()
    return tuple(canonical([Label("reserved", "remote-node"),
                            *(Label("node", str(k), str(v)) for k, v in labels.items())]))


class NodeIdentities:
    """Label set -> node identity, for the nodes the cluster sync follows."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, ...], int] = {}
        self._adopted: dict[str, int] = {}  # node address -> number the pinned ipcache held
        self._next = NODE_SCOPE + 1
        self._lock = threading.Lock()

    def adopt(self, rows: Iterable[dict]) -> None:
        """The node identities an earlier run programmed (ipcache rows): preferred for
        the same node's address."""
        with self._lock:
            for row in rows:
                network = ipaddress.ip_network(row["prefix"], strict=False)
                if is_node_identity(row["identity"]) and \
                        network.prefixlen == network.max_prefixlen:
                    self._adopted[str(network.network_address)] = row["identity"]
                    self._next = max(self._next, row["identity"] + 1)

    def assign(self, nodes: Mapping[str, Node] | Iterable[Node]) -> dict[str, int]:
        """Name -> identity for ``nodes`` (all the remote nodes there are; a mapping
        names them by its keys, as Cluster Mesh's ``<cluster>/<node>``): label sets
        nobody has any more are released first."""
        named = dict(nodes) if isinstance(nodes, Mapping) else {n.name: n for n in nodes}
        with self._lock:
            wanted = {name: node_labels(node.labels) for name, node in named.items()}
            live = set(wanted.values())
            for labels in [k for k in self._numbers if k not in live]:
                del self._numbers[labels]
            used = set(self._numbers.values())
            for name, node in named.items():  # first the numbers they had before a restart
                labels, number = wanted[name], self._adopted.get(node.ip)
                if labels and labels not in self._numbers and number and number not in used:
                    self._numbers[labels] = number
                    used.add(number)
            reserved = used | set(self._adopted.values())
            for name in named:
                labels = wanted[name]
                if labels and labels not in self._numbers:
                    number = self._following(reserved)
                    if number:  # else 16 million label sets: it stays remote-node
                        self._numbers[labels] = number
                        reserved.add(number)
            return {name: self._numbers.get(labels, REMOTE_NODE) if labels else REMOTE_NODE
                    for name, labels in wanted.items()}

    def _following(self, reserved: set[int]) -> int:
        """The next free number of the sequence (0: none left)."""
        for _ in range(MAX_NODE_IDENTITY - NODE_SCOPE):
            number = self._next
            self._next = number + 1 if number < MAX_NODE_IDENTITY else NODE_SCOPE + 1
            if number not in reserved:
                return number
        return 0

    def identities(self) -> dict[int, list[str]]:
        """Number -> labels of every node identity in use."""
        with self._lock:
            return {number: list(labels) for labels, number in self._numbers.items()}

    def get(self, number: int) -> Identity | None:
        with self._lock:
            found = next((labels for labels, n in self._numbers.items() if n == number), None)
        return Identity(number, found) if found is not None else None


def restore(ids: NodeIdentities, rows: Iterable[dict], kv: KVStore, own: str
            ) -> dict[int, list[str]]:
    """At agent start, before the first policy views: the node identities the pinned
    ipcache (``rows``) holds, for the remote nodes registered in ``kv`` (all but
    ``own``), so the endpoints' pinned entries for them stay until the cluster sync
    takes over (which also does it when the store does not answer now)."""
    ids.adopt(rows)
    try:
        ids.assign(n for n in list_nodes(kv) if n.name != own)
    except KVError:
        return {}
    return ids.identities()
