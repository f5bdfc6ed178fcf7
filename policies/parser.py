"""Reading CiliumNetworkPolicy files: a whole ``apiVersion/kind/metadata/spec(s)``
document (several per file allowed), a bare spec, or a list of rules (Cilium's JSON
rule-array import format), validated as Cilium's validator does.

Every rejection names the file, the rule path (``specs[1].ingress[0].toPorts[0].
ports[0].port``) and why; unknown fields get a "did you mean". Nothing is imported
unless every document of a file is valid.

Field names are matched as Go's encoding/json (which Cilium uses) matches them: an
exact name first, otherwise case-insensitively (``HTTP:``, Kafka ``Role:`` load).
What Cilium accepts but a Docker host cannot use loads with a warning (each policy's
``warnings``) and selects nothing: unknown keys inside a label selector (Go ignores
them), the Kubernetes-only entities ``kube-apiserver`` and ``ingress``, ``toServices``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from typing import Any

import yaml

from policies.http_rules import RuleError, check_path
from policies.kafka_rules import KafkaRuleError, check_rule
from policies.model import (
    ENTITIES,
    OPERATORS,
    PROTOCOLS,
    CIDRRule,
    PeerRule,
    Policy,
    PortProtocol,
    PortRule,
    Requirement,
    Rule,
    Selector,
)

UNSUPPORTED = {
    "toFQDNs": "DNS-based egress (toFQDNs) needs the DNS proxy, which ciliumpy does not have",
    "toGroups": "toGroups (cloud provider groups) is not supported",
    "fromGroups": "fromGroups (cloud provider groups) is not supported",
    "fromNodes": "fromNodes needs node labels, which ciliumpy does not have",
    "toNodes": "toNodes needs node labels, which ciliumpy does not have",
    "nodeSelector": "host policies (nodeSelector) are not supported: use endpointSelector",
    "icmps": "ICMP type rules (icmps) are not supported yet: an L3-only rule allows ICMP",
    "authentication": "mutual authentication is not supported",
}


class PolicyError(ValueError):
    """A file that does not hold valid policy; the message is for the author."""


# entities that exist only on Kubernetes: accepted (Cilium's policies use them), no peer
KUBERNETES_ENTITIES = ("kube-apiserver", "ingress")


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}" if path else message)

    def fail(self, path: str, message: str) -> None:
        where = f"{self.source}: " if self.source else ""
        raise PolicyError(f"{where}{path}: {message}" if path else f"{where}{message}")


def _canonical(key: Any, names) -> str | None:
    """Go's encoding/json: the exact field name, else a case-insensitive match."""
    if key in names:
        return key
    folded = str(key).lower()
    return next((name for name in names if name.lower() == folded), None)


def _fields(ctx: _Ctx, obj: Any, path: str, allowed: tuple[str, ...], what: str,
            ignore_unknown: bool = False) -> dict:
    """``obj`` with its keys spelled as ``allowed`` spells them; an unknown key is an
    error (or, with ``ignore_unknown``, a warning: the key is dropped)."""
    if not isinstance(obj, dict):
        ctx.fail(path, f"{what} must be a mapping, not {type(obj).__name__}")
    out: dict = {}
    for key, value in obj.items():
        name = _canonical(key, allowed)
        if name is not None:
            if name not in out or name == key:  # an exact spelling wins, as in Go
                out[name] = value
            continue
        here = f"{path}.{key}" if path else str(key)
        unsupported = _canonical(key, UNSUPPORTED)
        if unsupported is not None:
            ctx.fail(here, UNSUPPORTED[unsupported])
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        if ignore_unknown:
            ctx.warn(here, f"unknown field {key!r} in {what} ignored{suggestion}")
            continue
        ctx.fail(here, f"unknown field {key!r} in {what}{suggestion}")
    return out


def _list(ctx: _Ctx, obj: Any, path: str) -> list:
    if not isinstance(obj, list):
        ctx.fail(path, f"must be a list, not {type(obj).__name__}")
    return obj


def _selector(ctx: _Ctx, obj: Any, path: str) -> Selector:
    # Cilium decodes selectors into Kubernetes' LabelSelector, which drops unknown keys
    obj = _fields(ctx, obj or {}, path, ("matchLabels", "matchExpressions"), "a selector",
                  ignore_unknown=True)
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, dict):
        ctx.fail(f"{path}.matchLabels", "must be a mapping of label key to value")
    pairs = []
    for key, value in labels.items():
        if not isinstance(key, str) or not key or not isinstance(value, str | int | bool) \
                or value is None:
            ctx.fail(f"{path}.matchLabels.{key}", "label keys and values must be strings")
        pairs.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    requirements = []
    for i, expr in enumerate(_list(ctx, obj.get("matchExpressions") or [],
                                   f"{path}.matchExpressions")):
        here = f"{path}.matchExpressions[{i}]"
        expr = _fields(ctx, expr, here, ("key", "operator", "values"), "a match expression")
        key, operator = expr.get("key"), expr.get("operator")
        if not isinstance(key, str) or not key:
            ctx.fail(f"{here}.key", "a match expression needs a key")
        if isinstance(operator, str) and operator.lower() in [o.lower() for o in OPERATORS]:
            operator = next(o for o in OPERATORS if o.lower() == operator.lower())
        if operator not in OPERATORS:
            ctx.fail(f"{here}.operator", f"operator {operator!r} is not one of "
                     f"{', '.join(OPERATORS)}")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            ctx.fail(f"{here}.values", "values must be a list of strings")
        if operator in ("In", "NotIn") and not values:
            ctx.fail(f"{here}.values", f"operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            ctx.fail(f"{here}.values", f"operator {operator} takes no values")
        requirements.append(Requirement(key, operator, tuple(values)))
    return Selector(tuple(sorted(pairs)), tuple(requirements))


def _network(ctx: _Ctx, text: Any, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        ctx.fail(path, f"{text!r} is not a CIDR or IP address")
        raise  # unreachable


def _cidr_set(ctx: _Ctx, obj: Any, path: str) -> CIDRRule:
    obj = _fields(ctx, obj, path, ("cidr", "except"), "a CIDR rule")
    if "cidr" not in obj:
        ctx.fail(path, "a CIDR rule needs 'cidr'")
    cidr = _network(ctx, obj["cidr"], f"{path}.cidr")
    excepts = []
    for i, text in enumerate(_list(ctx, obj.get("except") or [], f"{path}.except")):
        prefix = _network(ctx, text, f"{path}.except[{i}]")
        if prefix.version != cidr.version or not prefix.subnet_of(cidr):
            ctx.fail(f"{path}.except[{i}]", f"{prefix} is not inside {cidr}")
        excepts.append(prefix)
    return CIDRRule(cidr, tuple(excepts))


def _port(ctx: _Ctx, obj: Any, path: str) -> PortProtocol:
    obj = _fields(ctx, obj, path, ("port", "endPort", "protocol"), "a port")
    if "port" not in obj or obj["port"] in (None, ""):
        ctx.fail(f"{path}.port", "port must be specified")
    raw = obj["port"]
    if isinstance(raw, bool) or not re.fullmatch(r"\d+", str(raw)):
        ctx.fail(f"{path}.port", f"{raw!r} is not a port number (named ports are not "
                 "supported on Docker hosts)")
    port = int(str(raw))
    if port > 65535:
        ctx.fail(f"{path}.port", f"{port} is out of range 0..65535")
    end = obj.get("endPort") or 0
    if isinstance(end, bool) or not isinstance(end, int) or not 0 <= end <= 65535:
        ctx.fail(f"{path}.endPort", f"{end!r} is not a port number")
    if end and end < port:
        ctx.fail(f"{path}.endPort", f"endPort {end} is below port {port}")
    protocol = str(obj.get("protocol") or "ANY").upper()
    if protocol not in PROTOCOLS:
        ctx.fail(f"{path}.protocol", f"protocol {obj.get('protocol')!r} is not one of "
                 f"{', '.join(PROTOCOLS)}")
    return PortProtocol(port, end if end != port else 0, protocol)


def _l7(ctx: _Ctx, obj: Any, path: str, ports: tuple[PortProtocol, ...], deny: bool,
        direction: str) -> tuple[str | None, tuple]:
    obj = _fields(ctx, obj, path, ("http", "kafka", "dns", "l7proto", "l7"), "L7 rules")
    kinds = [k for k in ("http", "kafka", "dns") if obj.get(k) is not None]
    if obj.get("l7proto") or obj.get("l7"):
        ctx.fail(path, "generic l7proto rules are not supported")
    if not kinds:
        return None, ()
    if len(kinds) > 1:
        ctx.fail(path, f"only one L7 rule type per port rule, found {' and '.join(kinds)}")
    if deny:
        ctx.fail(path, "deny rules cannot have L7 rules")
    kind = kinds[0]
    for i, port in enumerate(ports):
        if kind != "dns" and port.protocol != "TCP":
            ctx.fail(f"{path.rsplit('.', 1)[0]}.ports[{i}].protocol",
                     f"L7 rules can only apply to TCP, not {port.protocol}")
        if port.port == 0:
            ctx.fail(f"{path.rsplit('.', 1)[0]}.ports[{i}].port", "L7 rules need a port, not 0")
    if kind == "dns" and direction == "ingress":
        ctx.fail(f"{path}.dns", "DNS rules are not allowed on ingress")
    rules = []
    for i, rule in enumerate(_list(ctx, obj[kind], f"{path}.{kind}")):
        here = f"{path}.{kind}[{i}]"
        if kind == "http":
            rule = _fields(ctx, rule, here, ("method", "path", "host", "headers",
                                             "headerMatches"), "an HTTP rule")
            for name in ("method", "path", "host"):
                if name in rule:
                    try:
                        re.compile(str(rule[name]))
                    except re.error as exc:
                        ctx.fail(f"{here}.{name}", f"{rule[name]!r} is not a valid regex: {exc}")
            if "path" in rule:
                try:  # what the proxy compiles (RE2, as Envoy): no backreferences
                    check_path(str(rule["path"]))
                except RuleError as exc:
                    ctx.fail(f"{here}.path", str(exc))
            if "path" in rule and not str(rule["path"]).startswith("/"):
                ctx.fail(f"{here}.path", "an HTTP path must start with '/'")
            matches = []
            for j, match in enumerate(_list(ctx, rule.get("headerMatches") or [],
                                            f"{here}.headerMatches")):
                match = _fields(ctx, match, f"{here}.headerMatches[{j}]",
                                ("name", "value", "secret", "mismatch"), "a header match")
                matches.append(match)
                if not match.get("name"):
                    ctx.fail(f"{here}.headerMatches[{j}].name", "a header match needs a name")
                if match.get("mismatch", "") not in ("", "LOG", "ADD", "DELETE", "REPLACE"):
                    ctx.fail(f"{here}.headerMatches[{j}].mismatch",
                             f"{match['mismatch']!r} is not LOG, ADD, DELETE or REPLACE")
            if matches:
                rule["headerMatches"] = matches
        elif kind == "kafka":
            rule = _fields(ctx, rule, here, ("role", "apiKey", "apiVersion", "clientID",
                                             "topic"), "a Kafka rule")
            try:  # what the proxy compiles (policies.kafka_rules, Cilium's Sanitize)
                check_rule(rule)
            except KafkaRuleError as exc:
                ctx.fail(f"{here}.{exc.field}" if exc.field else here, str(exc))
        else:
            rule = _fields(ctx, rule, here, ("matchName", "matchPattern"), "a DNS rule")
        rules.append(rule)
    return kind, tuple(tuple(sorted(r.items())) for r in rules)


PEER_FIELDS = {"ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"),
               "egress": ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities")}


def _peer_rule(ctx: _Ctx, obj: Any, path: str, direction: str, deny: bool) -> PeerRule:
    prefix = "from" if direction == "ingress" else "to"
    peers = PEER_FIELDS[direction] + (("toServices",) if direction == "egress" else ())
    allowed = (*peers, f"{prefix}Requires", "toPorts")
    obj = _fields(ctx, obj, path, allowed, f"an {direction}{'Deny' if deny else ''} rule")
    present = [p for p in peers if obj.get(p) is not None]
    cidr_kinds = [p for p in present if "CIDR" in p]
    if len(present) > 1 and not (len(present) == 2 and len(cidr_kinds) == 2):
        ctx.fail(path, f"combining {present[0]} and {present[1]} is not supported: use two "
                 "rule elements")
    endpoints = cidrs = entities = None
    if obj.get("toServices") is not None:
        # Kubernetes services (k8sService, k8sServiceSelector): none on a Docker host
        _list(ctx, obj["toServices"], f"{path}.toServices")
        ctx.warn(f"{path}.toServices", "toServices selects Kubernetes services, which a "
                 "Docker host does not have: this element selects nothing")
        endpoints = ()
    if obj.get(f"{prefix}Endpoints") is not None:
        endpoints = tuple(_selector(ctx, s, f"{path}.{prefix}Endpoints[{i}]") for i, s in
                          enumerate(_list(ctx, obj[f"{prefix}Endpoints"],
                                          f"{path}.{prefix}Endpoints")))
    if cidr_kinds:
        items = []
        for i, text in enumerate(_list(ctx, obj.get(f"{prefix}CIDR") or [],
                                       f"{path}.{prefix}CIDR")):
            items.append(CIDRRule(_network(ctx, text, f"{path}.{prefix}CIDR[{i}]")))
        for i, item in enumerate(_list(ctx, obj.get(f"{prefix}CIDRSet") or [],
                                       f"{path}.{prefix}CIDRSet")):
            items.append(_cidr_set(ctx, item, f"{path}.{prefix}CIDRSet[{i}]"))
        cidrs = tuple(items)
    if obj.get(f"{prefix}Entities") is not None:
        names = []
        for i, name in enumerate(_list(ctx, obj[f"{prefix}Entities"],
                                       f"{path}.{prefix}Entities")):
            if name in KUBERNETES_ENTITIES:
                ctx.warn(f"{path}.{prefix}Entities[{i}]", f"entity {name!r} exists only on "
                         "Kubernetes: it selects nothing on a Docker host")
                continue
            if name not in ENTITIES:
                hint = difflib.get_close_matches(str(name), ENTITIES, n=1)
                ctx.fail(f"{path}.{prefix}Entities[{i}]", f"unsupported entity {name!r}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            names.append(name)
        entities = tuple(names) or ("none",)
    requires = tuple(_selector(ctx, s, f"{path}.{prefix}Requires[{i}]") for i, s in
                     enumerate(_list(ctx, obj.get(f"{prefix}Requires") or [],
                                     f"{path}.{prefix}Requires")))
    port_rules = []
    for i, item in enumerate(_list(ctx, obj.get("toPorts") or [], f"{path}.toPorts")):
        here = f"{path}.toPorts[{i}]"
        if deny and isinstance(item, dict) and "rules" in item:
            ctx.fail(f"{here}.rules", "deny rules cannot have L7 rules")
        item = _fields(ctx, item, here, ("ports", "rules") if not deny else ("ports",),
                       "a port rule" if not deny else "a deny port rule")
        ports_raw = _list(ctx, item.get("ports") or [], f"{here}.ports")
        if len(ports_raw) > 40:
            ctx.fail(f"{here}.ports", f"at most 40 ports per port rule, found {len(ports_raw)}")
        ports = tuple(_port(ctx, p, f"{here}.ports[{j}]") for j, p in enumerate(ports_raw))
        kind, l7 = (None, ())
        if item.get("rules") is not None:
            kind, l7 = _l7(ctx, item["rules"], f"{here}.rules", ports, deny, direction)
        port_rules.append(PortRule(ports, kind, l7))
    return PeerRule(endpoints, requires, cidrs, entities, tuple(port_rules))


RULE_FIELDS = ("endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "labels",
               "description", "enableDefaultDeny", "log")


def _labels(ctx: _Ctx, obj: Any, path: str) -> tuple[str, ...]:
    result = []
    for i, item in enumerate(_list(ctx, obj or [], path)):
        if isinstance(item, str):
            result.append(item)
            continue
        item = _fields(ctx, item, f"{path}[{i}]", ("key", "value", "source"), "a rule label")
        if not item.get("key"):
            ctx.fail(f"{path}[{i}].key", "a rule label needs a key")
        source = item.get("source") or "unspec"
        result.append(f"{source}:{item['key']}" + (f"={item['value']}" if item.get("value")
                                                    else ""))
    return tuple(result)


def parse_rule(ctx: _Ctx, obj: Any, path: str, policy: str, index: int) -> Rule:
    obj = _fields(ctx, obj, path, RULE_FIELDS, "a rule")
    if "endpointSelector" not in obj:
        ctx.fail(path, "a rule needs an endpointSelector ({} selects every endpoint)")
    selector = _selector(ctx, obj["endpointSelector"], f"{path}.endpointSelector")
    sections = {}
    for name, direction, deny in (("ingress", "ingress", False), ("ingressDeny", "ingress", True),
                                  ("egress", "egress", False), ("egressDeny", "egress", True)):
        items = _list(ctx, obj.get(name) or [], f"{path}.{name}")
        sections[name] = tuple(_peer_rule(ctx, item, f"{path}.{name}[{i}]", direction, deny)
                               for i, item in enumerate(items))
    default_deny = _fields(ctx, obj.get("enableDefaultDeny") or {}, f"{path}.enableDefaultDeny",
                           ("ingress", "egress"), "enableDefaultDeny")
    for key, value in default_deny.items():
        if not isinstance(value, bool):
            ctx.fail(f"{path}.enableDefaultDeny.{key}", "must be true or false")
    return Rule(selector, sections["ingress"], sections["ingressDeny"], sections["egress"],
                sections["egressDeny"], _labels(ctx, obj.get("labels"), f"{path}.labels"),
                str(obj.get("description") or ""), default_deny.get("ingress"),
                default_deny.get("egress"), policy, index)


ENVELOPE = ("apiVersion", "kind", "metadata", "spec", "specs", "description")


def _policy(ctx: _Ctx, doc: Any, path: str, default_name: str) -> Policy:
    """One document's policy, with the warnings its parsing gave."""
    first = len(ctx.warnings)
    policy = _policy_of(ctx, doc, path, default_name)
    policy.warnings = ctx.warnings[first:]
    return policy


def _policy_of(ctx: _Ctx, doc: Any, path: str, default_name: str) -> Policy:
    if isinstance(doc, list):
        rules = [parse_rule(ctx, r, f"{path}[{i}]" if path else f"[{i}]", default_name, i)
                 for i, r in enumerate(doc)]
        return Policy(default_name, rules, [], ctx.source, {"specs": doc})
    if not isinstance(doc, dict):
        ctx.fail(path, f"a policy document must be a mapping or a list, not {type(doc).__name__}")
    envelope_keys = {"apiversion", "kind", "metadata", "spec", "specs"}
    keys = {str(k).lower() for k in doc}
    if "endpointselector" in keys or "nodeselector" in keys or (
            not envelope_keys & keys and keys & {f.lower() for f in RULE_FIELDS}):  # bare spec
        return Policy(default_name, [parse_rule(ctx, doc, path or "spec", default_name, 0)],
                      [], ctx.source, {"spec": doc})
    doc = _fields(ctx, doc, path, ENVELOPE, "a policy document")
    kind = doc.get("kind", "CiliumNetworkPolicy")
    if kind not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
        ctx.fail(f"{path}.kind" if path else "kind", f"kind {kind!r} is not a Cilium policy")
    metadata = _fields(ctx, doc.get("metadata") or {}, f"{path}.metadata" if path else "metadata",
                       ("name", "namespace", "labels", "annotations", "uid"), "metadata")
    name = str(metadata.get("name") or default_name)
    if doc.get("spec") is None and doc.get("specs") is None:
        ctx.fail(path, "a policy needs 'spec' or 'specs'")
    rules = []
    if doc.get("spec") is not None:
        rules.append(parse_rule(ctx, doc["spec"], f"{path}.spec" if path else "spec", name, 0))
    for i, spec in enumerate(_list(ctx, doc.get("specs") or [],
                                   f"{path}.specs" if path else "specs")):
        rules.append(parse_rule(ctx, spec, f"{path}.specs[{i}]" if path else f"specs[{i}]",
                                name, len(rules)))
    labels = [f"{k}={v}" for k, v in (metadata.get("labels") or {}).items()]
    stored = {k: doc[k] for k in ("spec", "specs") if doc.get(k) is not None}
    return Policy(name, rules, labels, ctx.source, stored)


SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~3x faster


def load_documents(text: str) -> list:
    """Documents of a file: JSON is read as JSON (fast: stored policies are JSON)."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            data = json.loads(stripped)
            return [data] if data is not None else []
        except ValueError:
            pass  # YAML flow style: fall through
    return [d for d in yaml.load_all(text, Loader=SafeLoader) if d is not None]


def parse_documents(documents: list, source: str = "", default_name: str = "policy"
                    ) -> list[Policy]:
    """Policies of already-loaded documents (what parse_text does after loading)."""
    ctx = _Ctx(source)
    if not documents:
        ctx.fail("", "holds no policy")
    many = len(documents) > 1
    return [_policy(ctx, doc, f"documents[{i}]" if many else "", default_name +
                    (f"-{i}" if many else "")) for i, doc in enumerate(documents)]


def parse_text(text: str, source: str = "", default_name: str = "") -> list[Policy]:
    """All policies of one file (YAML or JSON, one or more documents)."""
    ctx = _Ctx(source)
    default_name = default_name or (source.rsplit("/", 1)[-1].rsplit(".", 1)[0] if source
                                    else "policy")
    try:
        documents = load_documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        ctx.fail("", f"{where}not valid YAML/JSON ({getattr(exc, 'problem', exc)})")
    return parse_documents(documents, source, default_name)


def parse_file(path: str) -> list[Policy]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from None
    return parse_text(text, path)
