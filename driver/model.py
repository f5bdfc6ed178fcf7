"""Networks and endpoints of this node, and their persistence in the local state file.

Docker does not replay CreateNetwork or CreateEndpoint after a plugin restart, so
every record is written before the handler answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from state.localdb import LocalDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (network_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id TEXT PRIMARY KEY, network_id TEXT NOT NULL, record TEXT NOT NULL);
"""


@dataclass
class Network:
    network_id: str
    pool_v4: str | None = None
    gateway_v4: str | None = None
    pool_v6: str | None = None
    gateway_v6: str | None = None
    mtu: int | None = None
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # learned from Docker outside the handlers
    created: float = field(default_factory=time.time)

    @property
    def pools(self) -> list[str]:
        return [p for p in (self.pool_v4, self.pool_v6) if p]


@dataclass
class Endpoint:
    endpoint_id: str
    network_id: str
    host_ifname: str
    peer_ifname: str
    mac: str
    ipv4: str | None = None
    ipv6: str | None = None
    state: str = "created"  # created -> joined -> left
    container_id: str | None = None
    container_name: str | None = None
    created: float = field(default_factory=time.time)
    ifindex: int = 0  # of the host-side veth (the datapath's endpoint key)
    identity: int = 5  # reserved:init until the container's labels are known
    labels: list[str] | None = None
    identity_error: str | None = None
    # bandwidth: the container's own limit labels (from Docker), the ones changed at
    # runtime through the API (None = removed), and what is applied
    bandwidth_labels: dict[str, str] = field(default_factory=dict)
    label_overrides: dict[str, str | None] = field(default_factory=dict)
    bandwidth: dict[str, Any] = field(default_factory=dict)
    # published ports (docker run -p), from ProgramExternalConnectivity: each
    # {"proto": "TCP"|"UDP", "port", "host_ip", "host_port", "host_port_end"} as Docker
    # asked, plus "assigned" (the host port chosen) once the agent has published it
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]


class Store:
    """Persistent maps network_id -> Network and endpoint_id -> Endpoint."""

    def __init__(self, db: LocalDB) -> None:
        self.db = db
        db.declare(SCHEMA)

    def put_network(self, network: Network) -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO networks VALUES (?, ?)",
                       (network.network_id, json.dumps(asdict(network))))

    def network(self, network_id: str) -> Network | None:
        rows = self.db.query("SELECT record FROM networks WHERE network_id = ?", (network_id,))
        return Network(**json.loads(rows[0]["record"])) if rows else None

    def networks(self) -> list[Network]:
        rows = self.db.query("SELECT record FROM networks")
        return sorted((Network(**json.loads(r["record"])) for r in rows), key=lambda n: n.created)

    def delete_network(self, network_id: str) -> bool:
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM networks WHERE network_id = ?",
                              (network_id,)).rowcount > 0

    def put_endpoint(self, endpoint: Endpoint) -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?)",
                       (endpoint.endpoint_id, endpoint.network_id,
                        json.dumps(asdict(endpoint))))

    def update_endpoint(self, endpoint_id: str,
                        change: Callable[[Endpoint], object]) -> Endpoint | None:
        """Reads the endpoint, applies ``change`` to it and writes it back in one
        transaction: the caller's fields change, every other writer's stay as they are.
        (Threads that read, changed and wrote whole records lost each other's updates:
        the reconciler recording a container id reverted a just-assigned identity.)
        ``change`` must be quick and touch nothing but the record. None if gone."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT record FROM endpoints WHERE endpoint_id = ?",
                             (endpoint_id,)).fetchone()
            if row is None:
                return None
            endpoint = Endpoint(**json.loads(row["record"]))
            change(endpoint)
            tx.execute("UPDATE endpoints SET record = ? WHERE endpoint_id = ?",
                       (json.dumps(asdict(endpoint)), endpoint_id))
            return endpoint

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = self.db.query("SELECT record FROM endpoints WHERE endpoint_id = ?",
                             (endpoint_id,))
        return Endpoint(**json.loads(rows[0]["record"])) if rows else None

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        if network_id is None:
            rows = self.db.query("SELECT record FROM endpoints")
        else:
            rows = self.db.query("SELECT record FROM endpoints WHERE network_id = ?",
                                 (network_id,))
        return sorted((Endpoint(**json.loads(r["record"])) for r in rows),
                      key=lambda e: e.created)

    def delete_endpoint(self, endpoint_id: str) -> bool:
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM endpoints WHERE endpoint_id = ?",
                              (endpoint_id,)).rowcount > 0
