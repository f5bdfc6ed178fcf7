"""What a service is: a frontend (address, port, protocol), backends listed or selected
by container labels (or joined with the ``ciliumpy.service`` label), the hashing mode
and the Maglev table size; parsing and validation with errors that name the field and
the value; and the resolution of a service's backends from the cluster's endpoints,
identical on every node (sorted)."""

from __future__ import annotations

import functools
import ipaddress
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.maglev import ALLOWED_SIZES, DEFAULT_SIZE

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MEMBERSHIP_LABEL = "ciliumpy.service"
AFFINITIES = ("none", "client")
PROTOCOLS = ("TCP", "UDP")
FIELDS = {"name", "frontend", "backends", "selector", "target_port", "affinity",
          "maglev_size", "global", "shared"}


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what}: port {reprlib.repr(value)} is not a number")
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: port {reprlib.repr(value)} is not 1..65535")
    return int(text)


def _host_port(text: str, what: str) -> tuple[IPAddress, int]:
    """``1.2.3.4:80`` or ``[fd00::1]:80``."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{what} {reprlib.repr(text)}: write an IPv6 address in "
                             "brackets, [ADDR]:PORT")
    if not sep or not host:
        raise ValueError(f"{what} {reprlib.repr(text)} needs ADDRESS:PORT (a port is "
                         "required)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} {reprlib.repr(text)}: {reprlib.repr(host)} is not an IP "
                         "address") from None
    return address, _port(port, f"{what} {reprlib.repr(text)}")


def _show(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@dataclass(frozen=True, order=True)
class Frontend:
    address: IPAddress
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{_show(self.address, self.port)}/{self.protocol}"

    @functools.cached_property
    def key(self) -> tuple[bytes, int, str]:
        """Equal exactly when the frontends are, and compared in C: checking a new
        service against 10,000 others calls no Python ``__eq__``."""
        return self.address.packed, self.port, self.protocol


@dataclass(frozen=True, order=True)
class Backend:
    address: IPAddress
    port: int
    weight: int = 1

    def __str__(self) -> str:
        return _show(self.address, self.port)

    def spec(self) -> str:
        return str(self) + (f",weight={self.weight}" if self.weight != 1 else "")


def parse_frontend(text: Any) -> Frontend:
    """``10.96.0.10:80``, ``10.96.0.10:80/tcp``, ``[fd00::10]:53/udp``."""
    if not isinstance(text, str):
        raise ValueError(f"frontend {reprlib.repr(text)} must be a string ADDRESS:PORT[/PROTO]")
    body, sep, protocol = text.partition("/")
    protocol = protocol.upper() if sep else "TCP"
    if protocol not in PROTOCOLS:
        raise ValueError(f"frontend {reprlib.repr(text)}: protocol must be tcp or udp")
    address, port = _host_port(body, "frontend")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"frontend {reprlib.repr(text)}: {address} cannot be a service "
                         "address")
    return Frontend(address, port, protocol)


def parse_backend(text: Any) -> Backend:
    """``10.0.1.5:8080`` or ``10.0.1.5:8080,weight=3`` (weight 0..65535; 0 keeps the
    backend listed but gives it no new connections)."""
    if not isinstance(text, str):
        raise ValueError(f"backend {reprlib.repr(text)} must be a string ADDRESS:PORT")
    body, sep, option = text.partition(",")
    weight = 1
    if sep:
        key, eq, value = option.partition("=")
        if key.strip() != "weight" or not eq or not value.strip().isdigit() or not (
                0 <= int(value) <= 65535):
            raise ValueError(f"backend {reprlib.repr(text)}: the only option is "
                             "weight=N (0..65535)")
        weight = int(value)
    address, port = _host_port(body.strip(), "backend")
    return Backend(address, port, weight)


def parse_membership(value: str) -> list[tuple[str, int | None]]:
    """The ``ciliumpy.service`` label: ``web``, ``web:80`` or ``web:80,api:9090``."""
    result = []
    for item in str(value).split(","):
        name, sep, port = item.strip().partition(":")
        if not NAME.fullmatch(name):
            raise ValueError(f"{MEMBERSHIP_LABEL}={reprlib.repr(value)}: "
                             f"{reprlib.repr(name)} is not a service name")
        result.append((name, _port(port, f"{MEMBERSHIP_LABEL}={value!r}") if sep else None))
    return result


@dataclass(frozen=True)
class Service:
    name: str
    frontend: Frontend
    backends: tuple[Backend, ...] = ()
    selector: dict[str, str] = field(default_factory=dict)
    target_port: int | None = None
    affinity: str = "none"
    maglev_size: int = DEFAULT_SIZE
    # Cluster Mesh (Cilium's service.cilium.io/global and /shared): a global service also
    # balances to the backends other clusters share for a service of the same name;
    # shared=False keeps this cluster's backends to itself
    is_global: bool = False
    shared: bool = True

    @property
    def backend_port(self) -> int:
        return self.target_port or self.frontend.port

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "frontend": str(self.frontend),
                "backends": [b.spec() for b in self.backends],
                "selector": dict(self.selector), "target_port": self.target_port,
                "affinity": self.affinity, "maglev_size": self.maglev_size,
                "global": self.is_global, "shared": self.shared}

    @classmethod
    def from_json(cls, data: Any) -> Service:
        """Validates everything; a ValueError names the field and the value."""
        if not isinstance(data, dict):
            raise ValueError("a service must be a JSON object")
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise ValueError(f"unknown service field {reprlib.repr(unknown[0])} (known: "
                             f"{', '.join(sorted(FIELDS))})")
        name = data.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"service name {reprlib.repr(name)} must be lower-case letters, "
                             "digits and '-', 1-63 characters, starting and ending with a "
                             "letter or digit")
        frontend = parse_frontend(data.get("frontend"))
        raw_backends = data.get("backends") or []
        if not isinstance(raw_backends, list):
            raise ValueError("backends must be a list of ADDRESS:PORT[,weight=N]")
        backends = tuple(parse_backend(b) for b in raw_backends)
        for backend in backends:
            if backend.address.version != frontend.address.version:
                raise ValueError(f"backend {backend} is IPv{backend.address.version}, the "
                                 f"frontend IPv{frontend.address.version}: the address "
                                 "family must match")
        seen = [str(b) for b in backends]
        if len(set(seen)) != len(seen):
            raise ValueError("a backend is listed twice")
        selector = data.get("selector") or {}
        if not isinstance(selector, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in selector.items()):
            raise ValueError("selector must be an object of label names to string values")
        target = data.get("target_port")
        target_port = None if target is None else _port(target, "target_port")
        affinity = data.get("affinity") or "none"
        if affinity not in AFFINITIES:
            raise ValueError(f"affinity {reprlib.repr(affinity)} must be one of "
                             f"{', '.join(AFFINITIES)}")
        size = data.get("maglev_size", DEFAULT_SIZE)
        if isinstance(size, bool) or size not in ALLOWED_SIZES:
            raise ValueError(f"maglev_size {reprlib.repr(size)} must be one of "
                             f"{', '.join(map(str, ALLOWED_SIZES))} (primes)")
        is_global, shared = data.get("global", False), data.get("shared", True)
        for what, value in (("global", is_global), ("shared", shared)):
            if not isinstance(value, bool):
                raise ValueError(f"{what} {reprlib.repr(value)} must be true or false")
        if not shared and not is_global:
            raise ValueError("shared: false needs global: true (a service that is not "
                             "global is never shared with other clusters)")
        return cls(name, frontend, backends, dict(selector), target_port, affinity, size,
                   is_global, shared)


def _fields(endpoint: Any) -> tuple[dict[str, str], list[str]]:
    if isinstance(endpoint, dict):
        return endpoint.get("labels") or {}, endpoint.get("addresses") or []
    return endpoint.labels, endpoint.addresses


def _membership_port(service: Service, labels: dict[str, str]) -> int | None:
    """The port this endpoint joins ``service`` on by its label (None: it does not)."""
    value = labels.get(MEMBERSHIP_LABEL)
    if value is None:
        return None
    try:
        entries = parse_membership(value)
    except ValueError:
        return None  # a bad label joins nothing (membership_warnings says why)
    for name, port in entries:
        if name == service.name:
            return port or service.backend_port
    return None


def resolve_backends(service: Service, endpoints: Iterable[Any]) -> list[Backend]:
    """The listed backends, every endpoint whose labels match the selector (all its
    pairs; an empty selector matches nothing) and every endpoint joining by label; only
    addresses of the frontend's family; each address and port once (a listed backend
    keeps its weight); sorted, so every node builds the same table."""
    found: dict[tuple[IPAddress, int], Backend] = {}
    family = service.frontend.address.version
    for endpoint in endpoints:
        labels, addresses = _fields(endpoint)
        ports = []
        if service.selector and all(labels.get(k) == v for k, v in service.selector.items()):
            ports.append(service.backend_port)
        joined = _membership_port(service, labels)
        if joined is not None:
            ports.append(joined)
        for text in addresses:
            address = ipaddress.ip_address(str(text).split("/")[0])
            if address.version != family:
                continue
            for port in ports:
                found.setdefault((address, port), Backend(address, port))
    for backend in service.backends:
        found[(backend.address, backend.port)] = backend
    return [found[key] for key in sorted(found)]


def membership_warnings(endpoints: Iterable[Any]) -> list[str]:
    """Why an endpoint's ``ciliumpy.service`` label joins nothing."""
    warnings = []
    for endpoint in endpoints:
        labels, _ = _fields(endpoint)
        value = labels.get(MEMBERSHIP_LABEL)
        if value is not None:
            try:
                parse_membership(value)
            except ValueError as exc:
                warnings.append(str(exc))
    return warnings
