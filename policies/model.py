"""The policy model: Cilium's rule structure (pkg/policy/api) as frozen dataclasses, with
label matching. Parsing and validation are in ``parser``; turning rules into datapath
entries is ``resolve``; explaining a verdict is ``trace``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from policies.fqdn import FQDNSelector
from policies.labels import Label, parse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
ENTITIES = ("world", "world-ipv4", "world-ipv6", "host", "all", "cluster", "init", "health",
            "remote-node", "unmanaged", "none")
# Cilium's L4Proto (pkg/policy/api/l4.go): VRRP and IGMP carry no ports (port 0 only)
PROTOCOLS = ("TCP", "UDP", "SCTP", "VRRP", "IGMP", "ANY")
PORTLESS_PROTOCOLS = ("VRRP", "IGMP")


def selector_key(key: str) -> tuple[str, str]:
    """(source, key) of a selector key: no source means any; ``k8s:`` is an alias of
    any so policies written for Cilium on Kubernetes load unchanged."""
    label = parse(key + "=x")
    source = "any" if label.source in ("any", "k8s", "unspec") else label.source
    return source, label.key


def _find(labels: list[Label], source: str, key: str) -> list[Label]:
    return [label for label in labels
            if label.key == key and source in ("any", label.source)]


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: list[Label]) -> bool:
        source, key = selector_key(self.key)
        found = _find(labels, source, key)
        if self.operator == "Exists":
            return bool(found)
        if self.operator == "DoesNotExist":
            return not found
        if self.operator == "In":
            return any(label.value in self.values for label in found)
        return not any(label.value in self.values for label in found)  # NotIn

    def __str__(self) -> str:
        return f"{{Key:{self.key} Operator:{self.operator} Values:{list(self.values)}}}"


@dataclass(frozen=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def is_wildcard(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: list[Label]) -> bool:
        for key, value in self.match_labels:
            source, name = selector_key(key)
            if not any(label.value == value for label in _find(labels, source, name)):
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def with_requirements(self, extra: tuple[Requirement, ...]) -> Selector:
        return Selector(self.match_labels, self.match_expressions + extra)

    def __str__(self) -> str:
        parts = []
        if self.match_labels:
            inner = ",".join(f'"{selector_key(k)[0]}:{selector_key(k)[1]}":"{v}"'
                             for k, v in self.match_labels)
            parts.append(f'"matchLabels":{{{inner}}}')
        if self.match_expressions:
            parts.append('"matchExpressions":[' + ",".join(map(str, self.match_expressions))
                         + "]")
        return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class CIDRRule:
    cidr: Network
    excepts: tuple[Network, ...] = ()


@dataclass(frozen=True)
class PortProtocol:
    port: int
    end_port: int = 0
    protocol: str = "ANY"
    # a named port (port 0 here): each endpoint's own number (policies/named_ports.py)
    name: str = ""

    def __str__(self) -> str:
        span = f"{self.port}-{self.end_port}" if self.end_port else str(self.port)
        return f"{self.name or span}/{self.protocol}"


@dataclass(frozen=True)
class PortRule:
    ports: tuple[PortProtocol, ...]
    l7_kind: str | None = None  # http | kafka | dns | tls (serverNames); the L7 proxy enforces
    l7_rules: tuple = ()


@dataclass(frozen=True)
class PeerRule:
    """One element of ingress / ingressDeny / egress / egressDeny."""

    endpoints: tuple[Selector, ...] | None = None
    requires: tuple[Selector, ...] = ()
    cidrs: tuple[CIDRRule, ...] | None = None
    entities: tuple[str, ...] | None = None
    to_ports: tuple[PortRule, ...] = ()
    # toFQDNs: the addresses the DNS proxy learnt for names these select
    fqdns: tuple[FQDNSelector, ...] | None = None
    # toServices: the backends of the ciliumpy services of these names
    services: tuple[str, ...] | None = None
    # fromNodes/toNodes: other nodes, selected by the labels their agents publish
    nodes: tuple[Selector, ...] | None = None

    @property
    def has_peer(self) -> bool:
        return (self.endpoints is not None or self.cidrs is not None
                or self.entities is not None or self.fqdns is not None
                or self.services is not None or self.nodes is not None)


@dataclass(frozen=True)
class Rule:
    endpoint_selector: Selector
    ingress: tuple[PeerRule, ...] = ()
    ingress_deny: tuple[PeerRule, ...] = ()
    egress: tuple[PeerRule, ...] = ()
    egress_deny: tuple[PeerRule, ...] = ()
    labels: tuple[str, ...] = ()
    description: str = ""
    default_deny_ingress: bool | None = None
    default_deny_egress: bool | None = None
    policy: str = ""  # name of the policy it came from
    index: int = 0
    # a host policy: selects this node (the reserved:host endpoint) when the node's
    # labels match; such a rule never selects a container (endpoint_selector unused)
    node_selector: Selector | None = None

    @property
    def is_host(self) -> bool:
        return self.node_selector is not None

    def selects(self, labels: list[Label], host: bool = False) -> bool:
        """Whether the rule applies to an endpoint with ``labels``; ``host``: that
        endpoint is this node (its labels are the node's labels), which only
        nodeSelector rules select."""
        if host:
            return self.node_selector is not None and self.node_selector.matches(labels)
        return self.node_selector is None and self.endpoint_selector.matches(labels)

    @property
    def subject(self) -> Selector:
        return self.node_selector if self.node_selector is not None else self.endpoint_selector

    def selects_direction(self, direction: str) -> bool:
        if direction == "ingress":
            return bool(self.ingress or self.ingress_deny)
        return bool(self.egress or self.egress_deny)

    def default_deny(self, direction: str) -> bool:
        """Whether this rule puts a selected endpoint into default-deny for ``direction``."""
        flag = self.default_deny_ingress if direction == "ingress" else self.default_deny_egress
        return self.selects_direction(direction) and flag is not False

    def allows(self, direction: str) -> tuple[PeerRule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def denies(self, direction: str) -> tuple[PeerRule, ...]:
        return self.ingress_deny if direction == "ingress" else self.egress_deny


@dataclass
class Policy:
    name: str
    rules: list[Rule]
    labels: list[str] = field(default_factory=list)
    source: str = ""
    document: dict = field(default_factory=dict)  # normalized input, for storage
    warnings: list[str] = field(default_factory=list)  # loaded, but not as written
