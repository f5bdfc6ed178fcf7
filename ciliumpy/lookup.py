"""How users name an endpoint and a destination port, read the same way everywhere.

This module owns the two user-input forms that the CLI and the agent API both accept:

* :func:`find_endpoint`: an endpoint named by its endpoint id (or a prefix of it), its
  container's name, its container id (or a prefix of it), one of its IP addresses, or
  the ifindex of its host-side interface (``ciliumpy bpf policy``, the datapath API and
  ``ciliumpy policy trace --src/--dst``).
* :func:`parse_dport`: the ``--dport`` of ``ciliumpy policy trace`` (``80``, ``80/tcp``,
  ``53/udp``, ``icmp``), for the offline trace in the CLI and for the agent's trace.

It is pure on purpose (no Flask, no agent, no I/O) so that both sides import it and unit
tests exercise every form without an agent. Endpoints are anything shaped like
``driver.model.Endpoint`` (see :class:`EndpointLike`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol, TypeVar

from policies import icmp

__all__ = ["AmbiguousEndpointError", "DPortError", "EndpointLike", "TRACE_PROTOCOLS",
           "find_endpoint", "parse_dport"]


class EndpointLike(Protocol):
    """The attributes of ``driver.model.Endpoint`` that a lookup reads."""

    endpoint_id: str
    container_id: str | None
    container_name: str | None
    ifindex: int

    @property
    def addresses(self) -> list[str]: ...


E = TypeVar("E", bound=EndpointLike)


class AmbiguousEndpointError(ValueError):
    """The text is a prefix of more than one endpoint's (or container's) id."""


def find_endpoint(endpoints: Iterable[E], text: str) -> E | None:
    """The endpoint that ``text`` names, or None when none does.

    An IP address only ever matches an endpoint's addresses (an IP is never an id or a
    name). Otherwise an exact endpoint id, container name, container id or ifindex wins
    over a prefix, so that a container named like another endpoint's id prefix is still
    found; a prefix shared by several endpoints raises :class:`AmbiguousEndpointError`
    rather than silently picking whichever the store listed first. Empty text matches
    nothing (every id starts with "").
    """
    text = text.strip()
    if not text:
        return None
    candidates = list(endpoints)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        for endpoint in candidates:
            if any(ipaddress.ip_interface(a).ip == ip for a in endpoint.addresses):
                return endpoint
        return None
    exact = [e for e in candidates
             if text in (e.endpoint_id, e.container_name, e.container_id)
             or (e.ifindex and str(e.ifindex) == text)]
    if exact:
        return _only(exact, text)
    prefixed = [e for e in candidates
                if e.endpoint_id.startswith(text) or (e.container_id or "").startswith(text)]
    return _only(prefixed, text) if prefixed else None


def _only(matches: list[E], text: str) -> E:
    distinct = {e.endpoint_id: e for e in matches}
    if len(distinct) > 1:
        shown = ", ".join(sorted(i[:12] for i in distinct))
        raise AmbiguousEndpointError(f"{text!r} matches several endpoints ({shown}): "
                                     "give more of the id, the container name or an IP")
    return matches[0]


# What a trace can be asked about. "any" is accepted as a protocol but a trace follows
# one connection, so like `cilium policy trace` it means TCP (the default).
TRACE_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ICMP = {"icmp": "ICMP", "icmpv6": "ICMPV6"}


class DPortError(ValueError):
    """A ``--dport`` that is not PORT, PORT/PROTO, icmp or icmpv6. The message names
    the faulty part only: callers prefix where it came from (option or API field)."""


def parse_dport(text: str) -> tuple[str, int]:
    """``--dport`` text -> (protocol, port), protocol one of TCP, UDP, SCTP, ICMP, ICMPV6.

    Accepted (case and surrounding blanks ignored): ``PORT`` (TCP), ``PORT/tcp``,
    ``PORT/udp``, ``PORT/sctp``, ``PORT/any`` (TCP), ``icmp``, ``icmpv6`` (an echo
    request), ``icmp/TYPE``, ``icmpv6/TYPE`` (number or Cilium's name; the port is then
    the type as policies/icmp.py carries it); PORT is
    0..65535, 0 (or empty text) meaning no particular port. A range (``80-90``) is
    refused: a trace follows one connection, so it has one destination port.
    """
    value = (text or "0").strip().lower()
    if value in _ICMP:  # a ping: the echo request of that family
        return _ICMP[value], icmp.as_port(icmp.ECHO_REQUEST[_ICMP[value]])
    kind, slash, icmp_type = value.partition("/")
    if kind.strip() in _ICMP and slash:  # icmp/TYPE: a type by number or Cilium's name
        protocol = _ICMP[kind.strip()]
        try:
            return protocol, icmp.as_port(icmp.type_number(icmp_type.strip(), protocol))
        except ValueError as exc:
            raise DPortError(str(exc)) from None
    port_text, slash, protocol = value.partition("/")
    protocol = protocol.strip()
    if slash and not protocol:
        raise DPortError("no protocol after '/' (tcp, udp, sctp or any)")
    if protocol in _ICMP:
        raise DPortError(f"{protocol} has no ports: give '{protocol}' (an echo request) or "
                         f"'{protocol}/TYPE'")
    protocol = (protocol or "tcp").upper()
    if protocol == "ANY":
        protocol = "TCP"
    if protocol not in TRACE_PROTOCOLS:
        raise DPortError(f"unknown protocol {protocol.lower()!r} "
                         "(tcp, udp, sctp, any, or icmp/icmpv6 alone)")
    port_text = port_text.strip()
    if "-" in port_text.lstrip("-"):
        raise DPortError(f"port range {port_text!r}: a trace follows one connection, "
                         "give one port")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise DPortError(f"port {port_text!r} is not a number 0..65535")
    return protocol, int(port_text)
