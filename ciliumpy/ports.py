"""Published ports (``docker run -p``): each mapping Docker sends becomes a node-local
service whose frontend is the host's address (or all of them) and whose one backend is
the container, in the same service maps as the cluster's services (flag
``LB_HOST_PORT``). The socket hooks serve connections from this host (its processes
and containers), ``from_netdev`` those from outside. The agent holds each published
port open (bound and listening, as docker-proxy would) so no host process can take it
later, and a port something already uses is refused with Docker's own message.

Host ports are assigned as Docker's bridge does: the one asked for, the first free one
of a range (``-p 8000-8010:80``), or for ``-p 80`` one from the kernel's ephemeral range;
the assignment is kept with the endpoint, so a restart of the agent keeps it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from typing import Any

from datapath.lb import Address, ServiceTables
from datapath.maps import LB_HOST_PORT
from driver.model import Endpoint, Store
from driver.ports import PortError

log = logging.getLogger("ciliumpy.ports")
TABLE_SIZE = 251  # one backend: the smallest table


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = handle.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _hold(host_ip: str, port: int, proto: str) -> socket.socket:
    """A socket bound to the port (TCP: listening), so nobody else can take it."""
    kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((host_ip or "0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


class PortPublisher:
    def __init__(self, store: Store, tables: ServiceTables) -> None:
        self.store, self.tables = store, tables
        self._held: dict[tuple[str, int, str], socket.socket] = {}
        self._owner: dict[tuple[str, int, str], str] = {}  # -> endpoint id
        self._lock = threading.RLock()

    # ---- lifecycle -------------------------------------------------------------
    def sync_all(self) -> None:
        """At start: every endpoint's ports published again (held, programmed), and
        published-port frontends nobody wants any more removed."""
        for endpoint in self.store.endpoints():
            if endpoint.published:
                try:
                    self.publish(endpoint)
                except PortError as exc:
                    log.warning("endpoint %s: %s", endpoint.endpoint_id[:12], exc)
        wanted = {self._frontend(key) for key in self._owner}
        for frontend, (_, _, flags) in self.tables.frontends().items():
            if flags & LB_HOST_PORT and frontend not in wanted:
                self.tables.delete_service(frontend)

    # ---- changes -------------------------------------------------------------
    def publish(self, endpoint: Endpoint) -> list[dict[str, Any]]:
        """Makes ``endpoint.published`` so (assigning host ports, persisted); raises
        PortError (nothing changed) when a port cannot be had."""
        with self._lock:
            mine = {k for k, owner in self._owner.items() if owner == endpoint.endpoint_id}
            chosen: list[tuple[str, int, str]] = []
            taken: dict[tuple[str, int, str], socket.socket] = {}
            try:
                for mapping in endpoint.published:
                    key, sock = self._assign(mapping, mine | set(chosen))
                    chosen.append(key)
                    mapping["assigned"] = key[1]
                    if sock is not None:
                        taken[key] = sock
            except PortError:
                for sock in taken.values():
                    sock.close()
                raise
            for key, sock in taken.items():
                self._held[key], self._owner[key] = sock, endpoint.endpoint_id
            for key in mine - set(chosen):
                self._release(key)
            for key, mapping in zip(chosen, endpoint.published, strict=True):
                self._program(key, endpoint, mapping["port"])
            self.store.update_endpoint(
                endpoint.endpoint_id, lambda e: setattr(e, "published", endpoint.published))
            return endpoint.published

    def unpublish(self, endpoint_id: str) -> None:
        with self._lock:
            for key in [k for k, owner in self._owner.items() if owner == endpoint_id]:
                self._release(key)

    def _assign(self, mapping: dict, reusable: set) -> tuple[tuple[str, int, str],
                                                             socket.socket | None]:
        host_ip, proto = mapping["host_ip"], mapping["proto"]
        first, last = mapping["host_port"], mapping["host_port_end"]
        if first == 0:
            first, last = ephemeral_range()
        candidates = list(range(first, last + 1))
        if mapping.get("assigned") in candidates:  # keep what it had
            candidates.remove(mapping["assigned"])
            candidates.insert(0, mapping["assigned"])
        reason = ""
        for port in candidates:
            key = (host_ip, port, proto)
            if key in reusable:
                return key, None
            if key in self._owner or self._clashes(key):
                reason = f"port {port}/{proto.lower()} is already published"
                continue
            try:
                return key, _hold(host_ip, port, proto)
            except OSError as exc:
                reason = (f"port {port}/{proto.lower()} is already allocated"
                          if exc.errno == errno.EADDRINUSE else
                          f"cannot bind {host_ip or '0.0.0.0'}:{port}: {exc.strerror}")
        shown = (f"{mapping['host_port']}-{mapping['host_port_end']}"
                 if mapping["host_port_end"] != mapping["host_port"] else
                 str(mapping["host_port"] or "an ephemeral port"))
        raise PortError(f"Bind for {host_ip or '0.0.0.0'}:{shown} failed: {reason}")

    def _clashes(self, key: tuple[str, int, str]) -> bool:
        """0.0.0.0:P and A:P of the same protocol cannot both be published."""
        host_ip, port, proto = key
        return any(p == port and q == proto and (not host_ip or not h or h == host_ip)
                   for h, p, q in self._owner)

    @staticmethod
    def _frontend(key: tuple[str, int, str]) -> Address:
        return Address(ipaddress.ip_address(key[0] or "0.0.0.0"), key[1], key[2])

    def _program(self, key: tuple[str, int, str], endpoint: Endpoint, port: int) -> None:
        if not endpoint.ipv4:
            return
        backend = Address(ipaddress.ip_address(endpoint.ipv4.split("/")[0]), port)
        self.tables.set_service(self._frontend(key), [backend], [0] * TABLE_SIZE,
                                host_port=True)

    def _release(self, key: tuple[str, int, str]) -> None:
        self.tables.delete_service(self._frontend(key))
        sock = self._held.pop(key, None)
        if sock is not None:
            sock.close()
        self._owner.pop(key, None)

    # ---- views --------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        rows = []
        for endpoint in self.store.endpoints():
            for mapping in endpoint.published:
                if mapping.get("assigned"):
                    rows.append({"endpoint_id": endpoint.endpoint_id,
                                 "container_name": endpoint.container_name,
                                 "protocol": mapping["proto"],
                                 "host_ip": mapping["host_ip"] or "0.0.0.0",
                                 "host_port": mapping["assigned"],
                                 "container_ip": (endpoint.ipv4 or "").split("/")[0],
                                 "container_port": mapping["port"]})
        return rows
