"""Rules -> datapath policy entries for one endpoint.

The identity universe is every identity known in the cluster (reserved ones, cluster
identities from the kvstore) plus node-local CIDR identities: each CIDR (and each
``except``) mentioned by a rule gets a local identity (bit 24 set, never on the wire)
and an ipcache entry, so the longest-prefix match of a packet's address tells which
CIDR rules apply; each address the DNS proxy learnt gets one too (``toFQDNs`` selects
it by the names it was learnt for). A wildcard peer selector becomes identity 0 (any),
entities become reserved identities. Results are cached per (rule set, endpoint
labels), so endpoints sharing an identity share the work.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policies import engine, to_services
from policies.engine import Peer
from policies.labels import CLUSTER_LABEL, Label, parse
from policies.model import PortRule, Rule, selector_key

LOCAL_IDENTITY_BASE = 0x01000000
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Entry:
    direction: str
    identity: int  # 0 = any
    proto: int  # 0 = L3-only
    port: int = 0
    end_port: int = 0
    deny: bool = False
    # L7 rules of the allowing port rule, as canonical JSON {"kind", "rules"} ("" = none):
    # such an entry sends its connections through the L7 proxy.
    l7: str = ""

    @functools.cached_property  # read per entry on every sync: parse the JSON once
    def l7_kind(self) -> str | None:
        return json.loads(self.l7)["kind"] if self.l7 else None

    def covers(self, proto: int, port: int) -> bool:
        """Whether this entry applies to ``port``/``proto`` (L3-only ones to all)."""
        if self.proto == 0:
            return True
        return self.proto == proto and (
            self.port == 0 or self.port <= port <= (self.end_port or self.port))


def l7_key(port_rule: PortRule) -> str:
    """The canonical text of a port rule's L7 rules ("" when it has none)."""
    if not port_rule.l7_kind:
        return ""
    rules = [dict(rule) for rule in port_rule.l7_rules]
    return json.dumps({"kind": port_rule.l7_kind, "rules": rules}, sort_keys=True)


@dataclass
class Resolved:
    entries: set[Entry]
    enforce_ingress: bool
    enforce_egress: bool


def cidr_identities(rules: Iterable[Rule]) -> dict[Network, int]:
    """A stable local identity for every prefix the rules mention."""
    prefixes: set[Network] = set()
    for rule in rules:
        for element in (*rule.ingress, *rule.ingress_deny, *rule.egress, *rule.egress_deny):
            for cidr_rule in element.cidrs or ():
                if cidr_rule.cidr.prefixlen:
                    prefixes.add(cidr_rule.cidr)
                prefixes.update(cidr_rule.excepts)
    ordered = sorted(prefixes, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return {prefix: LOCAL_IDENTITY_BASE + i + 1 for i, prefix in enumerate(ordered)}


FQDN_IDENTITY_BASE = LOCAL_IDENTITY_BASE + 0x800000  # addresses learnt from DNS
FQDNPeers = dict[Network, tuple[int, tuple[str, ...]]]  # prefix -> (identity, names)


def fqdn_identities(cidrs: dict[Network, int], addresses: dict, previous: FQDNPeers
                    ) -> FQDNPeers:
    """A local identity for every address the DNS proxy learnt (``addresses``: address
    -> names): the identity of a CIDR rule's prefix when a rule names exactly that
    address, else the one it had before, else a new one from FQDN_IDENTITY_BASE."""
    used = {number for number, _ in previous.values()}
    result: FQDNPeers = {}
    following = FQDN_IDENTITY_BASE
    for ip, names in sorted(addresses.items(), key=lambda kv: (kv[0].version, int(kv[0]))):
        prefix = ipaddress.ip_network(ip)
        number = cidrs.get(prefix) or (previous.get(prefix) or (0, ()))[0]
        if not number or number < FQDN_IDENTITY_BASE and prefix not in cidrs:
            while following in used:
                following += 1
            number = following
            used.add(number)
        result[prefix] = (number, tuple(names))
    return result


class Universe:
    """Everything a peer selector can resolve to, indexed by label (key, value) so a
    selector with matchLabels only examines identities that carry them. ``fqdns``:
    the addresses the DNS proxy learnt, each with its identity and names; ``services``:
    the selectors of the services toServices rules name (policies/to_services.py);
    ``nodes``: the node identities (``ciliumpy/node_identities.py``), with their labels;
    ``local_cluster``: this cluster's name in a mesh (the ``cluster`` entity is its own
    endpoints only)."""

    def __init__(self, identities: dict[int, Iterable[str]], cidrs: dict[Network, int],
                 fqdns: FQDNPeers | None = None,
                 services: Mapping[str, Mapping[str, str] | None] | None = None,
                 nodes: dict[int, Iterable[str]] | None = None,
                 local_cluster: str = "") -> None:
        self.peers: dict[int, Peer] = dict(engine.RESERVED_PEERS)
        for number, texts in identities.items():
            if number not in self.peers:
                labels = tuple(parse(t, default_source="container") for t in texts)
                self.peers[number] = Peer(labels, services=to_services.backing(
                    labels, services) if services else (), remote_cluster=bool(
                    local_cluster) and any(label.key == CLUSTER_LABEL and label.value !=
                                           local_cluster for label in labels))
        for number, labels in (nodes or {}).items():
            self.peers[number] = Peer(tuple(parse(t, default_source="node") for t in labels),
                                      kind="node")
        for prefix, number in cidrs.items():
            self.peers[number] = Peer((Label("reserved", "world"),
                                       Label("cidr", str(prefix))), cidr=prefix, kind="cidr")
        for prefix, (number, names) in (fqdns or {}).items():
            self.peers[number] = Peer((Label("reserved", "world"), Label("cidr", str(prefix)),
                                       *(Label("fqdn", name) for name in names)),
                                      cidr=prefix, kind="cidr", names=names)
        self.index: dict[tuple[str, str], set[int]] = {}
        for number, peer in self.peers.items():
            for label in peer.labels:
                self.index.setdefault((label.key, label.value), set()).add(number)

    def candidates(self, element) -> Iterable[int]:
        """Identities worth checking against an element's endpoint selectors."""
        if element.endpoints is None or any(not s.match_labels for s in element.endpoints):
            return self.peers.keys()
        found: set[int] = set()
        for selector in element.endpoints:
            sets = [self.index.get((selector_key(k)[1], v), set())
                    for k, v in selector.match_labels]
            found |= set.intersection(*sets) if sets else set()
        return found


def resolve(rules: list[Rule], labels: Iterable[Label], universe: Universe, mode: str,
            init: bool = False) -> Resolved:
    labels = list(labels)
    selected = engine.selecting(rules, labels)
    reqs = {d: engine.requirements(selected, d) for d in ("ingress", "egress")}
    entries: set[Entry] = set()
    for rule in selected:
        entries |= rule_entries(rule, reqs, universe, own=labels)
    flags = {}
    for direction in ("ingress", "egress"):
        enforced = engine.enforced(selected, direction, mode, init)
        if engine.open_despite_rules(selected, direction, mode):
            enforced = True  # so deny entries apply; everything else stays allowed
            entries.add(Entry(direction, 0, 0))
        flags[direction] = enforced
    return Resolved(entries, flags["ingress"], flags["egress"])


def rule_entries(rule: Rule, reqs: dict[str, tuple], universe: Universe,
                 only: dict[int, Peer] | None = None, own: Iterable[Label] = ()
                 ) -> set[Entry]:
    """The entries one rule contributes to an endpoint it selects, whose labels are
    ``own`` (what an ingress rule's named ports resolve on; ``only``: restrict to these
    identities, for adding new identities incrementally)."""
    own = list(own)
    entries: set[Entry] = set()
    for direction in ("ingress", "egress"):
        for deny, elements in ((False, rule.allows(direction)), (True, rule.denies(direction))):
            for element in elements:
                peers = _peer_identities(element, universe, reqs[direction], only)
                if not peers:
                    continue
                shared = _specs(element, own) if direction == "ingress" or not \
                    engine.has_named_port(element) else None
                for identity in peers:
                    # egress named ports resolve on each destination (identity 0: any
                    # peer, so every number any peer declares for the name)
                    specs = shared if shared is not None else _egress_specs(
                        element, identity, universe, only)
                    for proto, first, last, l7 in specs:
                        entries.add(Entry(direction, identity, proto, first,
                                          last if last != first else 0, deny, l7))
    return entries


def _specs(element, dest: Iterable[Label] | None) -> list[tuple[int, int, int, str]]:
    if not element.to_ports:
        return [(0, 0, 0, "")]
    return [(*spec, l7_key(port_rule)) for port_rule in element.to_ports
            for spec in engine.port_rule_specs(port_rule, dest)]


def _egress_specs(element, identity: int, universe: Universe,
                  only: dict[int, Peer] | None) -> list[tuple[int, int, int, str]]:
    if identity:
        peer = (only or {}).get(identity) or universe.peers.get(identity)
        return _specs(element, peer.labels if peer is not None else ())
    found: dict = {}
    for peer in universe.peers.values():
        found.update(dict.fromkeys(_specs(element, peer.labels)))
    return list(found)


def _peer_identities(element, universe: Universe, reqs, only=None) -> set[int]:
    wildcard = (not element.has_peer and element.to_ports) or (
        element.endpoints is not None and any(engine.wildcard(s, reqs)
                                              for s in element.endpoints)) or (
        element.entities is not None and "all" in element.entities)
    if wildcard:
        return {0} if only is None else set()
    if not element.has_peer:
        return set()
    if only is not None:
        return {n for n, peer in only.items() if engine.peer_matches(element, peer, reqs)}
    return {number for number in universe.candidates(element)
            if engine.peer_matches(element, universe.peers[number], reqs)}
