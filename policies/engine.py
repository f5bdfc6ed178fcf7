"""Policy semantics, once: which rules select an endpoint, whether a direction is
default-deny, which peers an element matches. Both ``resolve`` (rules -> datapath
entries over known identities) and ``trace`` (a verdict for label sets or running
workloads) call these functions, so a trace predicts what the datapath does.

Semantics (docs/policy-semantics.md): an endpoint selected by a rule with an ingress or
ingressDeny section is default-deny for ingress (likewise egress) unless that rule sets
``enableDefaultDeny.<dir>: false``; allows are a union; a matching deny always wins;
an element with a peer and no toPorts allows all ports and ICMP (L3-only), one with
toPorts and no peer allows those ports from everyone (L4-only), an empty element allows
nothing; ``fromRequires`` folds into every ``fromEndpoints`` selector of the rules
selecting the endpoint, and into nothing else; a ``toFQDNs`` element's peers are the
addresses the DNS proxy learnt for the names it selects (each a CIDR identity).

Other nodes (``kind`` "node": ``reserved:remote-node`` plus the ``node:`` labels their
agents publish) are what ``fromNodes``/``toNodes`` select, as Cilium's node selector
does (the selector, plus ``reserved:remote-node`` must exist); ``fromEndpoints`` selects
a node only by a key naming the ``reserved:`` or ``node:`` source, so a container label
that happens to equal a node label never lets that node in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from policies import named_ports
from policies.identities import RESERVED_BY_NAME
from policies.labels import Label, parse
from policies.model import (
    PeerRule,
    PortProtocol,
    PortRule,
    Requirement,
    Rule,
    Selector,
    selector_key,
)

ALL_PROTOCOLS = ("TCP", "UDP", "SCTP")
PROXIED_PROTOCOLS = ("TCP", "UDP")
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPV6": 58, "VRRP": 112,
                 "IGMP": 2}
CLUSTER_RESERVED = ("host", "init", "health", "unmanaged", "remote-node")


@dataclass(frozen=True)
class Peer:
    """The other side of a connection: its labels, and its address if known.
    ``kind`` is "endpoint" (labels from an identity), "reserved", "cidr" or "node" (another
    node with labels); ``names`` are the DNS names the proxy learnt the address for (what
    ``toFQDNs`` selects); ``services`` the services whose backends it is (what
    ``toServices`` selects)."""

    labels: tuple[Label, ...]
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    kind: str = "endpoint"
    names: tuple[str, ...] = ()
    services: tuple[str, ...] = ()  # the ciliumpy services it is a backend of (toServices)
    remote_cluster: bool = False  # an endpoint of another cluster of the mesh

    def reserved(self, name: str) -> bool:
        return any(lbl.source == "reserved" and lbl.key == name for lbl in self.labels)


def labels_of(texts: Iterable[str], default_source: str = "container") -> tuple[Label, ...]:
    return tuple(parse(t, default_source=default_source) for t in texts)


def selecting(rules: Iterable[Rule], labels: Iterable[Label], host: bool = False
              ) -> list[Rule]:
    """The rules that apply to an endpoint; ``host``: the endpoint is this node and
    ``labels`` its node labels (only nodeSelector rules select it)."""
    labels = list(labels)
    return [rule for rule in rules if rule.selects(labels, host)]


def enforced(rules: list[Rule], direction: str, mode: str, init: bool = False) -> bool:
    """Default-deny for ``direction`` given the rules selecting the endpoint."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    if init and direction == "ingress":
        return True  # restrictive default for reserved:init (docs/decisions.md)
    return any(rule.default_deny(direction) for rule in rules)


def open_despite_rules(rules: list[Rule], direction: str, mode: str) -> bool:
    """Rules select the direction only with enableDefaultDeny false: everything not
    denied stays allowed (Cilium adds a wildcard allow)."""
    return (mode == "default" and any(r.selects_direction(direction) for r in rules)
            and not any(r.default_deny(direction) for r in rules))


def requirements(rules: list[Rule], direction: str) -> tuple[Requirement, ...]:
    found: list[Requirement] = []
    for rule in rules:
        for element in (*rule.allows(direction), *rule.denies(direction)):
            for selector in element.requires:
                for key, value in selector.match_labels:
                    found.append(Requirement(key, "In", (value,)))
                found.extend(selector.match_expressions)
    return tuple(dict.fromkeys(found))


def _entity_matches(name: str, peer: Peer) -> bool:
    if name == "all":
        return True
    if name == "none":
        return False
    if name in ("world", "world-ipv4", "world-ipv6"):
        return peer.kind == "cidr" or peer.reserved("world")
    if name == "cluster":  # the local cluster only, as Cilium's (other clusters' are not)
        return (peer.kind == "endpoint" and not peer.remote_cluster) or any(
            peer.reserved(n) for n in CLUSTER_RESERVED)
    return peer.reserved(name)


def _names_nodes(selector: Selector) -> bool:
    """Whether a ``fromEndpoints`` selector names a key only a node carries."""
    keys = [k for k, _ in selector.match_labels] + [r.key for r in selector.match_expressions]
    return any(selector_key(k)[0] in ("reserved", "node") for k in keys)


def node_selected(selectors: Iterable[Selector], peer: Peer) -> bool:
    """``fromNodes``/``toNodes``: a node (or ``reserved:remote-node``, a node without
    labels) whose labels one of the selectors matches."""
    labels = list(peer.labels)
    return peer.reserved("remote-node") and any(s.matches(labels) for s in selectors)


def _cidr_matches(element: PeerRule, peer: Peer) -> bool:
    where = peer.cidr or (ipaddress.ip_network(peer.ip) if peer.ip is not None else None)
    if where is None or peer.kind == "endpoint":
        return False  # CIDR rules never select managed endpoints (docs/policy-semantics.md)
    for rule in element.cidrs or ():
        if rule.cidr.prefixlen == 0 and peer.reserved("world"):
            return True
        if where.version == rule.cidr.version and where.subnet_of(rule.cidr) and not any(
                where.version == e.version and where.subnet_of(e) for e in rule.excepts):
            return True
    return False


def peer_matches(element: PeerRule, peer: Peer, reqs: tuple[Requirement, ...]) -> bool:
    """Whether ``peer`` is one of the element's peers (ports not considered)."""
    if not element.has_peer:
        return bool(element.to_ports)  # L4-only: every peer; an empty element: none
    if element.endpoints is not None:
        labels = list(peer.labels)
        return any(s.with_requirements(reqs).matches(labels) for s in element.endpoints
                   if peer.kind != "node" or _names_nodes(s))
    if element.nodes is not None:
        return node_selected(element.nodes, peer)
    if element.entities is not None:
        return any(_entity_matches(name, peer) for name in element.entities)
    if element.fqdns is not None:
        return peer.kind == "cidr" and any(s.matches(name) for s in element.fqdns
                                           for name in peer.names)
    if element.services is not None:
        return any(name in peer.services for name in element.services)
    return _cidr_matches(element, peer)


def port_specs(element: PeerRule, dest: Iterable[Label] | None = None
               ) -> list[tuple[int, int, int]]:
    """(protocol number, first port, last port) triples; protocol 0 = L3-only. Named
    ports resolve on ``dest``, the destination's labels (none given: they match
    nothing)."""
    if not element.to_ports:
        return [(0, 0, 0)]
    return [spec for port_rule in element.to_ports
            for spec in port_rule_specs(port_rule, dest)]


def port_rule_specs(port_rule: PortRule, dest: Iterable[Label] | None = None
                    ) -> list[tuple[int, int, int]]:
    """The (protocol number, first port, last port) triples of one ``toPorts`` item;
    a named port gives the number ``dest`` (the destination's labels) declares."""
    specs = []
    # the L7 proxy takes TCP (and UDP for DNS): an L7 rule on protocol ANY must not open
    # SCTP at L4, where nothing would ever judge it (Cilium's proxy has no SCTP either)
    any_protocol = PROXIED_PROTOCOLS if port_rule.l7_kind else ALL_PROTOCOLS
    dest = list(dest) if dest is not None else None
    for port in port_rule.ports:
        if port.name:
            wanted = 0 if port.protocol == "ANY" else PROTO_NUMBERS[port.protocol]
            numbers = tuple(PROTO_NUMBERS[p] for p in any_protocol)
            specs += [(proto, number, number) for proto, number in
                      named_ports.resolve(port.name, wanted, dest or (), numbers)]
            continue
        protocols = any_protocol if port.protocol == "ANY" else (port.protocol,)
        for protocol in protocols:
            specs.append((PROTO_NUMBERS[protocol], port.port, port.end_port or port.port))
    return specs


def has_named_port(element: PeerRule) -> bool:
    return any(port.name for port_rule in element.to_ports for port in port_rule.ports)


def port_matches(element: PeerRule, protocol: str, port: int,
                 dest: Iterable[Label] | None = None) -> bool:
    number = PROTO_NUMBERS.get(protocol.upper(), 0)
    for proto, first, last in port_specs(element, dest):
        if proto == 0:
            return True
        if proto == number and (first == 0 or first <= port <= last):
            return True
    return False


def wildcard(selector: Selector, reqs: tuple[Requirement, ...]) -> bool:
    return selector.is_wildcard and not reqs


def reserved_peer(name: str) -> Peer:
    return Peer((Label("reserved", name),), kind="reserved")


RESERVED_PEERS = {number: reserved_peer(name) for name, number in RESERVED_BY_NAME.items()}


def describe_ports(ports: Iterable[PortProtocol]) -> str:
    return "[" + " ".join(f"{{{p.port} {p.protocol}}}" if not p.end_port else
                          f"{{{p.port}-{p.end_port} {p.protocol}}}" for p in ports) + "]"
