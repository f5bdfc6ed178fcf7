"""``ciliumpy policy trace``: why a connection would be allowed or denied.

The log follows Cilium's ``cilium policy trace`` lines (so it can be compared with
Cilium's documentation), for both directions: the source's egress and the
destination's ingress; the final verdict is ALLOWED only if both allow. It uses the
same matching functions as the resolution into datapath entries, and for L7 ports
the same rule matchers as the proxy (``policies.http_rules``, ``policies.kafka_rules``):
given an HTTP request (method, path, host, headers) or a Kafka request (api key,
version, client id, topics) it predicts the proxy's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies import engine, icmp
from policies.engine import Peer
from policies.http_rules import Request, RuleSet
from policies.kafka_rules import (
    INT16_MAX,
    TOPIC_API_KEYS,
    KafkaRequest,
    KafkaRuleSet,
    api_key_name,
    parse_api_key,
)
from policies.model import PeerRule, Rule


@dataclass
class Side:
    """One end of the traced connection."""

    peer: Peer
    managed: bool = True  # a ciliumpy endpoint (its own policy applies)
    init: bool = False
    # this node (reserved:host): host policies (nodeSelector) select it by its node
    # labels; as a peer it is identity 1, reserved:host only
    host: bool = False
    node_labels: tuple = ()

    @property
    def label_text(self) -> str:
        return "[" + ", ".join(str(label) for label in self.peer.labels) + "]"


@dataclass
class TraceResult:
    ingress: str
    egress: str
    log: list[str] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "ALLOWED" if self.ingress == "ALLOWED" and self.egress == "ALLOWED" else "DENIED"

    def as_dict(self) -> dict:
        return {"ingress": self.ingress, "egress": self.egress, "verdict": self.verdict,
                "rules": self.rules, "log": self.log}


L7List = tuple[str, list[dict]]  # (kind: http | kafka | dns, the port rule's L7 rules)


def _l7_of(element: PeerRule, protocol: str, port: int, dest) -> list[L7List] | None:
    """The L7 rule lists of the element's port rules that cover the port (named ports
    as ``dest``, the destination's labels, declares them); None when a covering port
    rule has no L7 rules (then every request is allowed)."""
    if not element.to_ports:
        return None
    number = engine.PROTO_NUMBERS.get(protocol.upper(), 0)
    found = []
    for port_rule in element.to_ports:
        if not any(proto in (0, number) and (first == 0 or first <= port <= last)
                   for proto, first, last in engine.port_rule_specs(port_rule, dest)):
            continue
        if not port_rule.l7_kind:
            return None
        found.append((port_rule.l7_kind, [dict(r) for r in port_rule.l7_rules]))
    return found


def describe_kafka(request: KafkaRequest) -> str:
    """``produce v3 [client ID 'x'] topics topic1, topic2``, for the log."""
    text = f"{api_key_name(request.api_key)} v{request.api_version}"
    if request.client_id is not None:
        text += f" (client ID {request.client_id!r})"
    if request.topics:
        text += " topics " + ", ".join(request.topics)
    return text


KIND_NAMES = {"http": "HTTP", "kafka": "Kafka", "dns": "DNS", "tls": "TLS serverNames"}


def _l7_verdict(l7: list[L7List], request: Request | KafkaRequest | None,
                log: list[str]) -> bool:
    """Whether the proxy lets the request through (True when no request is given). Each
    port rule's list is judged on its own, as the proxy judges each of its entries."""
    kinds = {kind for kind, _ in l7}
    if request is None:
        hint = (" (trace one with --http-method/--http-path)" if "http" in kinds else
                " (trace one with --kafka-api-key/--kafka-topic)" if "kafka" in kinds else
                " (the TLS ClientHello's server name: serverNames "
                + ", ".join(dict.fromkeys(r.get("serverName", "") for kind, rules in l7
                                          if kind == "tls" for r in rules)) + ")"
                if "tls" in kinds else "")
        log.append(f"L7 rules apply on this port: each request is judged by the L7 proxy{hint}")
        return True
    wanted = "kafka" if isinstance(request, KafkaRequest) else "http"
    label = KIND_NAMES[wanted]
    reasons = []
    for kind, rules in l7:
        if kind != wanted:  # a Kafka request on an HTTP port, or the reverse
            log.append(f"The request kind ({label}) does not match the port's L7 parser "
                       f"({KIND_NAMES.get(kind, kind)}): its rules cannot match it")
            continue
        if isinstance(request, KafkaRequest):
            kafka = KafkaRuleSet(rules).match(request)
            if kafka.allowed:
                shown = rules[kafka.rule_index] if kafka.rule_index is not None else {}
                log.append(f"L7 rule matched: {shown or 'any request'} ({kafka.reason})")
                return True
            reasons.append(kafka.reason)
            continue
        match = RuleSet(rules).match(request)
        if match.allowed:
            shown = rules[match.rule_index] if match.rule_index is not None else {}
            log.append(f"L7 rule matched: {shown or 'any request'}")
            return True
    if wanted not in kinds:
        log.append(f"No L7 rule on this port can judge this {label} request: denied")
    elif isinstance(request, KafkaRequest):
        answer = "TOPIC_AUTHORIZATION_FAILED" if request.topics else "an authorization error"
        log.append(f"No L7 rule matched Kafka {describe_kafka(request)} ("
                   + "; ".join(dict.fromkeys(reasons)) + f"): the proxy answers {answer}")
    else:
        log.append(f"No L7 rule matched {request.method} {request.path}: the proxy answers "
                   "403 Access denied")
    return False


def _direction(rules: list[Rule], direction: str, subject: Side, other: Side, protocol: str,
               port: int, mode: str, result: TraceResult,
               request: Request | KafkaRequest | None = None) -> str:
    log = result.log
    word = "to" if direction == "egress" else "from"
    log.append(f"Resolving {direction} policy for {subject.label_text}")
    if not subject.managed:
        log.append("The host firewall is off (--enable-host-firewall): no host policy is "
                   "enforced" if subject.host else
                   f"Not a ciliumpy endpoint: no {direction} policy applies")
        return "ALLOWED"
    if subject.host and mode == "always":
        mode = "default"  # the host is default-deny only once a host policy selects it
    selected = engine.selecting(rules, (*subject.node_labels, *subject.peer.labels),
                                subject.host)
    # named ports resolve on the destination: the subject itself on ingress
    dest = subject.peer.labels if direction == "ingress" else other.peer.labels
    relevant = [r for r in selected if r.selects_direction(direction)]
    reqs = engine.requirements(selected, direction)
    if reqs:
        log.append("Enforcing requirements [" + " ".join(map(str, reqs)) + "]")
    allowed = denied = False
    l4_only = False  # an allow without L7 rules: every request passes
    l7: list[L7List] = []
    for rule in rules:
        if rule not in relevant:
            continue
        log.append(f"* Rule {rule.subject}: selected ({rule.policy}, rule {rule.index})")
        record = {"policy": rule.policy, "rule": rule.index, "direction": direction,
                  "selected": True, "matched": False, "denied": False}
        for deny, elements in ((False, rule.allows(direction)), (True, rule.denies(direction))):
            verb = "Denies" if deny else "Allows"
            for element in elements:
                if element.endpoints is not None:
                    for selector in element.endpoints:
                        log.append(f"    {verb} {word} labels "
                                   f"{selector.with_requirements(reqs)}")
                elif element.entities is not None:
                    log.append(f"    {verb} {word} entities {list(element.entities)}")
                elif element.nodes is not None:
                    for selector in element.nodes:
                        log.append(f"    {verb} {word} nodes {selector}")
                elif element.cidrs is not None:
                    log.append(f"    {verb} {word} CIDRs " + str(
                        [f"{c.cidr}" + (f" except {list(map(str, c.excepts))}" if c.excepts
                                        else "") for c in element.cidrs]))
                elif element.to_ports:
                    log.append(f"    {verb} {word} any peer (L4-only)")
                else:
                    log.append(f"    {verb} nothing (an empty rule element)")
                if not engine.peer_matches(element, other.peer, reqs):
                    log.append(f"      No label match for {other.label_text}")
                    continue
                log.append("      Found all required labels")
                if element.to_ports:
                    ports = [p for pr in element.to_ports for p in pr.ports]
                    log.append(f"      {verb} port {engine.describe_ports(ports)}")
                    if not engine.port_matches(element, protocol, port, dest):
                        log.append("        No port match found")
                        continue
                if not deny:
                    found = _l7_of(element, protocol, port, dest)
                    if found is None:
                        l4_only = True
                    else:
                        log.append("        L7 rules present: " + "; ".join(
                            (str(rules) if kind == "http" else f"{kind}: {rules}")
                            for kind, rules in found))
                        l7 += found
                if deny:
                    denied = record["denied"] = True
                else:
                    allowed = record["matched"] = True
        result.rules.append(record)
    log.append(f"{len(relevant)}/{len(rules)} rules selected")
    log.append("Found allow rule" if allowed else "Found no allow rule")
    log.append("Found deny rule" if denied else "Found no deny rule")
    enforced = engine.enforced(selected, direction, mode, subject.init)
    if denied:
        verdict = "DENIED"
    elif allowed and l7 and not l4_only:
        verdict = "ALLOWED" if _l7_verdict(l7, request, log) else "DENIED"
    elif allowed or engine.open_despite_rules(selected, direction, mode):
        verdict = "ALLOWED"
    elif not enforced:
        log.append(f"No rule puts {direction} into default-deny: allowed by default")
        verdict = "ALLOWED"
    else:
        verdict = "DENIED"
    log.append(f"{direction.capitalize()} verdict: {verdict.lower()}")
    log.append("")
    return verdict


def offline_side(text: str) -> Side:
    """A side given without an agent: 'host' (this node, with no node labels: only
    ``nodeSelector: {}`` rules select it), 'world', 'remote-node', an IP (outside every
    endpoint: world, matched by CIDR rules) or labels ``key=value,source:key=value``
    (with ``node:`` labels or ``reserved:remote-node``: another node, as ``fromNodes``
    and ``toNodes`` see it, with no policy of its own)."""
    import ipaddress

    from policies.engine import labels_of, reserved_peer

    text = text.strip()
    if text == "host":  # selected by host policies (nodeSelector; no node labels here)
        return Side(reserved_peer(text), host=True)
    if text in ("world", "remote-node"):
        return Side(reserved_peer(text), managed=False)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        labels = labels_of([t for t in text.split(",") if t])
        if any(lbl.source == "node" or (lbl.source, lbl.key) == ("reserved", "remote-node")
               for lbl in labels):
            labels = tuple(sorted(set(labels) | set(labels_of(["reserved:remote-node"]))))
            return Side(Peer(labels, kind="node"), managed=False)
        return Side(Peer(labels))
    return Side(Peer(labels_of(["reserved:world"]), ip=ip, kind="cidr"), managed=False)


def trace(rules: list[Rule], src: Side, dst: Side, protocol: str, port: int,
          mode: str = "default", request: Request | KafkaRequest | None = None
          ) -> TraceResult:
    result = TraceResult("", "")
    shown = (f"{protocol.upper()} {icmp.describe(port)}" if protocol.upper() in
             ("ICMP", "ICMPV6") else f"{port}/{protocol.upper()}")
    result.log.append(f"Tracing From: {src.label_text} => To: {dst.label_text} "
                      f"Ports: [{shown}]")
    result.log.append("")
    if isinstance(request, KafkaRequest):
        result.log.append(f"Kafka request: {describe_kafka(request)}")
    elif request is not None:
        result.log.append(f"HTTP request: {request.method} {request.path}"
                          + (f" (host {request.host})" if request.host else "")
                          + "".join(f" [{n}: {v}]" for n, v in request.headers))
    result.egress = _direction(rules, "egress", src, dst, protocol, port, mode, result,
                               request)
    result.ingress = _direction(rules, "ingress", dst, src, protocol, port, mode, result,
                                request)
    result.log.append(f"Final verdict: {result.verdict}")
    return result


def http_request(method: str | None, path: str | None, host: str | None = None,
                 headers: list[str] | tuple[str, ...] = ()) -> Request | None:
    """The request to trace from ``--http-*`` options (None when none are given);
    headers are ``"Name: value"``."""
    if not (method or path or host or headers):
        return None
    parsed = []
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {header!r} is not 'Name: value'")
        parsed.append((name.strip().lower(), value.strip()))
    return Request(method or "GET", path or "/", host, parsed)


def kafka_request(api_key: str | None, api_version: int | str | None = None,
                  topics: list[str] | tuple[str, ...] = (), client_id: str | None = None
                  ) -> KafkaRequest | None:
    """The request to trace from ``--kafka-*`` options (None when none are given). The
    api key is a name (``produce``) or a number; without ``--kafka-topic`` a request of
    a type that carries topics has an empty topic list (judged on key, version and
    client id, as the proxy judges e.g. a Metadata request for no topics)."""
    if api_key is None and api_version is None and not topics and client_id is None:
        return None
    if api_key is None or not str(api_key).strip():
        raise ValueError("a Kafka request needs an api key (--kafka-api-key produce, "
                         "fetch, metadata, ... or a number)")
    key = parse_api_key(str(api_key))
    version = 0
    if api_version is not None:
        text = str(api_version).strip()
        if isinstance(api_version, bool) or not text.isdigit() or int(text) > INT16_MAX:
            raise ValueError(f"api version {api_version!r} is not an integer 0..{INT16_MAX}")
        version = int(text)
    for topic in topics:
        if not str(topic).strip():
            raise ValueError("a Kafka topic cannot be empty")
    shown = tuple(str(t).strip() for t in topics)
    if not shown and key in TOPIC_API_KEYS:
        return KafkaRequest(key, version, client_id, ())
    return KafkaRequest(key, version, client_id, shown or None)
