"""Published ports (``docker run -p``) as Docker sends them to the driver: the
``com.docker.network.portmap`` option of ProgramExternalConnectivity, validated into
plain records (``Endpoint.published``). Pure: no datapath, no Docker calls."""

from __future__ import annotations

import ipaddress
import reprlib
from typing import Any

PORTMAP = "com.docker.network.portmap"
PROTOCOLS = {6: "TCP", 17: "UDP"}


class PortError(ValueError):
    """A port mapping that cannot be published; the message says why."""


def _number(entry: dict, name: str, low: int, high: int) -> int:
    value = entry.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PortError(f"port mapping {reprlib.repr(entry)}: {name} must be {low}..{high}")
    return value


def parse_portmap(options: dict[str, Any]) -> list[dict[str, Any]]:
    """The published ports in ``options`` (empty when there are none)."""
    raw = options.get(PORTMAP)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise PortError(f"option {PORTMAP} must be a list of port mappings")
    result = []
    for entry in raw:
        proto = entry.get("Proto")
        if proto == 132:
            raise PortError("SCTP ports cannot be published on a ciliumpy network (TCP and "
                            "UDP can)")
        if proto not in PROTOCOLS:
            raise PortError(f"port mapping {reprlib.repr(entry)}: Proto must be 6 (tcp) or "
                            "17 (udp)")
        port = _number(entry, "Port", 1, 65535)
        host_port = _number(entry, "HostPort", 0, 65535)
        host_end = _number(entry, "HostPortEnd", 0, 65535) or host_port
        if host_end < host_port:
            raise PortError(f"port mapping {reprlib.repr(entry)}: HostPortEnd is below "
                            "HostPort")
        host_ip = entry.get("HostIP") or ""
        if not isinstance(host_ip, str):
            raise PortError(f"port mapping {reprlib.repr(entry)}: HostIP must be a string")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise PortError(f"port mapping {reprlib.repr(entry)}: HostIP "
                                f"{reprlib.repr(host_ip)} is not an address") from None
            if ipaddress.ip_address(host_ip).version == 6:
                raise PortError(f"port mapping to {host_ip}: IPv6 host addresses cannot be "
                                "published yet (IPv4 addresses and all addresses can)")
        result.append({"proto": PROTOCOLS[proto], "port": port, "host_ip": host_ip,
                       "host_port": host_port, "host_port_end": host_end})
    return result
