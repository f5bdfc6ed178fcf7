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


