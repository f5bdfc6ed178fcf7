"""The node registry: each agent publishes itself under its lease, so a dead agent's
entry disappears when the lease expires. Key ``ciliumpy/state/nodes/v1/<name>``."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field

from state.kvstore.base import KVStore
from state.kvstore.base import key as kv_key

PREFIX = kv_key("nodes", "v1") + "/"


@dataclass
class Node:
    name: str
    ip: str
    encapsulation: str
    blocks: list[str] = field(default_factory=list)
    api: str = ""
    ipv6: str = ""  # the underlay IPv6 address, for native routing of IPv6 blocks
    hubble: str = ""  # host:port of its Hubble Observer API, for the relay ("" = none)
    # --node-labels: what fromNodes/toNodes select (ciliumpy/node_identities.py)
    labels: dict[str, str] = field(default_factory=dict)


def default_node_ip() -> str:
    """The source address this host would use to reach the outside (no packet is sent:
    connecting a UDP socket only looks up the route)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never contacted
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def register(kv: KVStore, node: Node, lease: str) -> None:
    kv.put(PREFIX + node.name, json.dumps(asdict(node)), lease=lease)


def from_json(text: str) -> Node:
    """Fields this version does not know (a newer agent's) are ignored."""
    data = json.loads(text)
    return Node(**{k: v for k, v in data.items() if k in Node.__dataclass_fields__})


def list_nodes(kv: KVStore) -> list[Node]:
    return [from_json(pair.value) for pair in kv.list(PREFIX)]


def hubble_peers(kv: KVStore, skip: str = "") -> tuple[list[tuple[str, str]], list[str]]:
    """(name, Hubble API address) of every registered node serving that API but
    ``skip``, and a warning naming each node that serves none (what the relay and
    ``observe --cluster`` ask)."""
    peers, warnings = [], []
    for node in list_nodes(kv):
        if node.name == skip:
            continue
        if node.hubble:
            peers.append((node.name, node.hubble))
        else:
            warnings.append(f"node {node.name} serves no Hubble API (hubble-listen-address "
                            "is not set there)")
    return peers, warnings
