"""Named ports (``port: http`` in ``toPorts``), as Docker containers declare them.

On Kubernetes a named port is a container port's name in the pod spec. A Docker
container declares one with a label ``ciliumpy.port.<name>=<port>[/<protocol>]``
(``ciliumpy.port.http=8080``, ``ciliumpy.port.dns=53/udp``); the label is part of the
container's identity labels, so the name resolves per identity without any lookup:
an ingress rule's named port on the endpoint the rule selects, an egress rule's on each
peer it allows (as Cilium resolves egress names on the destination). A name no
container declares matches nothing (the import says so)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from policies.labels import Label, parse

LABEL_PREFIX = "ciliumpy.port."
# Kubernetes' IANA_SVC_NAME: 1-15 of [a-z0-9-], a letter among them, no "--", not at an end
NAME = re.compile(r"(?!.*--)(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}


def is_port_name(text: str) -> bool:
    return bool(NAME.fullmatch(text))


def declared(labels: Iterable[Label]) -> dict[str, tuple[int, int]]:
    """The named ports ``labels`` declare: name -> (protocol number, 0 = any; port).
    A malformed label declares nothing (the container's other ports are unaffected)."""
    found: dict[str, tuple[int, int]] = {}
    for label in labels:
        if not label.key.startswith(LABEL_PREFIX):
            continue
        name = label.key[len(LABEL_PREFIX):]
        port, _, protocol = label.value.partition("/")
        if not is_port_name(name) or not port.isdigit() or not 1 <= int(port) <= 65535:
            continue
        if protocol and protocol.lower() not in PROTOCOL_NUMBERS:
            continue
        found[name] = (PROTOCOL_NUMBERS.get(protocol.lower(), 0), int(port))
    return found


def resolve(name: str, protocol: int, labels: Iterable[Label],
            any_protocol: tuple[int, ...] = (6, 17, 132)) -> list[tuple[int, int]]:
    """(protocol number, port) pairs the rule's ``name`` on ``protocol`` (0: any, that
    is each of ``any_protocol``) means for an endpoint with ``labels``: none when it
    declares no such name, or declares it on another protocol."""
    entry = declared(labels).get(name)
    if entry is None:
        return []
    proto, port = entry
    if protocol and proto and protocol != proto:
        return []
    if protocol:
        return [(protocol, port)]
    if proto:
        return [(proto, port)] if proto in any_protocol else []
    return [(number, port) for number in any_protocol]


def used(rules) -> set[str]:
    """The port names the rules use."""
    return {port.name for rule in rules
            for direction in ("ingress", "egress")
            for element in (*rule.allows(direction), *rule.denies(direction))
            for port_rule in element.to_ports for port in port_rule.ports if port.name}


def undeclared(rules, identity_labels: Iterable[Iterable[str]]) -> list[str]:
    """The names the rules use that no identity's labels (``source:key=value`` texts)
    declare: a warning at import (such a rule matches nothing until a container
    declares the name)."""
    names = used(rules)
    if not names:
        return []
    known: set[str] = set()
    for texts in identity_labels:
        known |= declared(parse(text, default_source="container") for text in texts).keys()
    return sorted(names - known)


def warning(name: str) -> str:
    return (f"named port {name!r}: no container declares it yet (a label "
            f"{LABEL_PREFIX}{name}=PORT): rules using it match nothing until one does")
