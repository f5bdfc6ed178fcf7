"""Security identities as values: the reserved numbers (Cilium's), the cluster range,
and the canonical encoding of a label set. Pure: allocation in the kvstore lives in
``ciliumpy/identities.py``."""

from __future__ import annotations

import base64
from dataclasses import dataclass

RESERVED = {1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node"}
RESERVED_BY_NAME = {name: number for number, name in RESERVED.items()}
HOST = RESERVED_BY_NAME["host"]
WORLD = RESERVED_BY_NAME["world"]
INIT = RESERVED_BY_NAME["init"]
REMOTE_NODE = RESERVED_BY_NAME["remote-node"]
MIN_CLUSTER_ID = 256
MAX_CLUSTER_ID = (1 << 24) - 1
# Cluster Mesh (Cilium's layout): the upper 8 of the 24 bits name the cluster that
# allocated an identity, so clusters allocate without coordination and the VNI still
# carries the sender's identity across clusters. Cluster ID 0 = no mesh.
CLUSTER_ID_SHIFT = 16
MAX_MESH_CLUSTER_ID = 255
# Other nodes with labels (fromNodes/toNodes): node-local identities in Cilium's
# remote-node scope (bits 24..31 = 2), never on the wire; a node without labels is
# reserved:remote-node (6). CIDR identities are scope 1 (policies/resolve.py).
NODE_SCOPE = 0x02000000
SCOPE_MASK = 0xFF000000


def is_node_identity(number: int) -> bool:
    """A node identity of the remote-node scope (not reserved:remote-node itself)."""
    return number & SCOPE_MASK == NODE_SCOPE


@dataclass(frozen=True)
class Identity:
    number: int
    labels: tuple[str, ...]

    @property
    def reserved(self) -> bool:
        return self.number in RESERVED


def reserved_identity(number: int) -> Identity:
    return Identity(number, (f"reserved:{RESERVED[number]}",))


def encode(labels: list[str]) -> str:
    text = "".join(f"{label};" for label in labels)
    return base64.urlsafe_b64encode(text.encode()).decode() or "-"




def cluster_range(cluster_id: int) -> tuple[int, int]:
    """The identity numbers (first, last) cluster ``cluster_id`` allocates: ``(N << 16) |
    local`` with local 256..65535 for N in 1..255; the whole 256..2^24-1 without mesh (0)."""
    if not 0 <= cluster_id <= MAX_MESH_CLUSTER_ID:
        raise ValueError(f"cluster ID {cluster_id} is not in 0..{MAX_MESH_CLUSTER_ID}")
    if cluster_id == 0:
        return MIN_CLUSTER_ID, MAX_CLUSTER_ID
    base = cluster_id << CLUSTER_ID_SHIFT
    return base | MIN_CLUSTER_ID, base | ((1 << CLUSTER_ID_SHIFT) - 1)


def cluster_of(number: int) -> int:
    """The cluster ID encoded in a cluster identity's number (0 for reserved ones)."""
    return (number >> CLUSTER_ID_SHIFT) & MAX_MESH_CLUSTER_ID if number <= MAX_CLUSTER_ID else 0
