"""Reading CiliumNetworkPolicy files: a whole ``apiVersion/kind/metadata/spec(s)``
document (several per file allowed), a bare spec, or a list of rules (Cilium's JSON
rule-array import format), validated as Cilium's validator does.

Every rejection names the file, the rule path (``specs[1].ingress[0].toPorts[0].
ports[0].port``) and why; unknown fields get a "did you mean". Nothing is imported
unless every document of a file is valid.

The parts of a rule (selectors, CIDRs, ports, L7 and ICMP rules) are read by
``policies/parse_parts.py``, field names matched as Go's encoding/json matches them.
What Cilium accepts but a Docker host cannot use loads with a warning (each policy's
``warnings``) and selects nothing: unknown keys inside a label selector (Go ignores
them), the Kubernetes-only entities ``kube-apiserver`` and ``ingress``, ``toServices``.
``toFQDNs`` and ``rules.dns`` load and are enforced through the DNS proxy
(docs/decisions.md, "DNS-aware egress").
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

from policies.model import ENTITIES, CIDRRule, PeerRule, Policy, PortRule, Rule, Selector
from policies.parse_l7 import l7_rules, server_names
from policies.parse_parts import (
    KUBERNETES_ENTITIES,
    UNSUPPORTED,
    Ctx,
    PolicyError,
    as_list,
    canonical,
    cidr_set,
    fields,
    fqdn_selector,
    go_fold,
    icmp_rules,
    network,
    port_protocol,
    selector,
)
from policies.to_services import service_name

__all__ = ["UNSUPPORTED", "PolicyError", "load_documents", "parse_documents", "parse_file",
           "parse_rule", "parse_text"]

PEER_FIELDS = {"ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities",
                           "fromNodes"),
               "egress": ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toNodes")}


def _peer_rule(ctx: Ctx, obj: Any, path: str, direction: str, deny: bool) -> PeerRule:
    prefix = "from" if direction == "ingress" else "to"
    peers = PEER_FIELDS[direction] + (("toServices",) if direction == "egress" else ())
    if direction == "egress" and not deny:
        peers += ("toFQDNs",)
    elif deny and isinstance(obj, dict) and any(canonical(k, ("toFQDNs",)) for k in obj):
        ctx.fail(f"{path}.toFQDNs", "toFQDNs cannot deny (as in Cilium: an FQDN rule only "
                 "allows); deny the addresses with toCIDR instead")
    allowed = (*peers, f"{prefix}Requires", "toPorts", "icmps")
    obj = fields(ctx, obj, path, allowed, f"an {direction}{'Deny' if deny else ''} rule")
    present = [p for p in peers if obj.get(p) is not None]
    cidr_kinds = [p for p in present if "CIDR" in p]
    if len(present) > 1 and not (len(present) == 2 and len(cidr_kinds) == 2):
        ctx.fail(path, f"combining {present[0]} and {present[1]} is not supported: use two "
                 "rule elements")
    endpoints = cidrs = entities = fqdns = services = nodes = None
    if obj.get("toFQDNs") is not None:
        fqdns = tuple(fqdn_selector(ctx, item, f"{path}.toFQDNs[{i}]") for i, item in
                      enumerate(as_list(ctx, obj["toFQDNs"], f"{path}.toFQDNs")))
    if obj.get("toServices") is not None:
        services = tuple(name for i, item in enumerate(
            as_list(ctx, obj["toServices"], f"{path}.toServices"))
            if (name := service_name(ctx, item, f"{path}.toServices[{i}]")))
    if obj.get(f"{prefix}Endpoints") is not None:
        endpoints = tuple(selector(ctx, s, f"{path}.{prefix}Endpoints[{i}]") for i, s in
                          enumerate(as_list(ctx, obj[f"{prefix}Endpoints"],
                                          f"{path}.{prefix}Endpoints")))
    if obj.get(f"{prefix}Nodes") is not None:  # selectors of node labels (--node-labels)
        nodes = tuple(selector(ctx, s, f"{path}.{prefix}Nodes[{i}]") for i, s in
                      enumerate(as_list(ctx, obj[f"{prefix}Nodes"], f"{path}.{prefix}Nodes")))
    if cidr_kinds:
        items = []
        for i, text in enumerate(as_list(ctx, obj.get(f"{prefix}CIDR") or [],
                                       f"{path}.{prefix}CIDR")):
            items.append(CIDRRule(network(ctx, text, f"{path}.{prefix}CIDR[{i}]")))
        for i, item in enumerate(as_list(ctx, obj.get(f"{prefix}CIDRSet") or [],
                                       f"{path}.{prefix}CIDRSet")):
            items.append(cidr_set(ctx, item, f"{path}.{prefix}CIDRSet[{i}]"))
        cidrs = tuple(items)
    if obj.get(f"{prefix}Entities") is not None:
        names = []
        for i, name in enumerate(as_list(ctx, obj[f"{prefix}Entities"],
                                       f"{path}.{prefix}Entities")):
            if name in KUBERNETES_ENTITIES:
                ctx.warn(f"{path}.{prefix}Entities[{i}]", f"entity {name!r} exists only on "
                         f"Kubernetes ({KUBERNETES_ENTITIES[name]}): it selects nothing on a "
                         "Docker host")
                continue
            if name not in ENTITIES:
                hint = difflib.get_close_matches(str(name), ENTITIES, n=1)
                ctx.fail(f"{path}.{prefix}Entities[{i}]", f"unsupported entity {name!r}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            names.append(name)
        entities = tuple(names) or ("none",)
    requires = tuple(selector(ctx, s, f"{path}.{prefix}Requires[{i}]") for i, s in
                     enumerate(as_list(ctx, obj.get(f"{prefix}Requires") or [],
                                     f"{path}.{prefix}Requires")))
    port_rules = []
    for i, item in enumerate(as_list(ctx, obj.get("toPorts") or [], f"{path}.toPorts")):
        here = f"{path}.toPorts[{i}]"
        if deny and isinstance(item, dict):
            for key, what in (("rules", "L7 rules"), ("serverNames", "serverNames")):
                if any(canonical(k, (key,)) for k in item):
                    ctx.fail(f"{here}.{key}", f"deny rules cannot have {what}")
        item = fields(ctx, item, here, ("ports", "rules", "serverNames") if not deny
                       else ("ports",), "a port rule" if not deny else "a deny port rule")
        ports_raw = as_list(ctx, item.get("ports") or [], f"{here}.ports")
        if len(ports_raw) > 40:
            ctx.fail(f"{here}.ports", f"at most 40 ports per port rule, found {len(ports_raw)}")
        ports = tuple(port_protocol(ctx, p, f"{here}.ports[{j}]") for j, p in enumerate(ports_raw))
        kind, l7 = (None, ())
        if item.get("rules") is not None:
            kind, l7 = l7_rules(ctx, item["rules"], f"{here}.rules", ports, deny, direction)
        if item.get("serverNames") is not None:
            names = server_names(ctx, item["serverNames"], f"{here}.serverNames", ports,
                                 kind is not None)
            if names[0] is not None:
                kind, l7 = names
        port_rules.append(PortRule(ports, kind, l7))
    if obj.get("icmps") is not None:
        if port_rules:
            ctx.fail(f"{path}.icmps", "icmps and toPorts cannot be combined in one rule "
                     "element (as in Cilium): write two elements")
        port_rules.append(icmp_rules(ctx, obj["icmps"], f"{path}.icmps"))
    return PeerRule(endpoints, requires, cidrs, entities, tuple(port_rules), fqdns, services,
                    nodes)


RULE_FIELDS = ("endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress",
               "egressDeny", "labels", "description", "enableDefaultDeny", "log")


def _labels(ctx: Ctx, obj: Any, path: str) -> tuple[str, ...]:
    result = []
    for i, item in enumerate(as_list(ctx, obj or [], path)):
        if isinstance(item, str):
            result.append(item)
            continue
        item = fields(ctx, item, f"{path}[{i}]", ("key", "value", "source"), "a rule label")
        if not item.get("key"):
            ctx.fail(f"{path}[{i}].key", "a rule label needs a key")
        source = item.get("source") or "unspec"
        result.append(f"{source}:{item['key']}" + (f"={item['value']}" if item.get("value")
                                                    else ""))
    return tuple(result)


def parse_rule(ctx: Ctx, obj: Any, path: str, policy: str, index: int) -> Rule:
    obj = fields(ctx, obj, path, RULE_FIELDS, "a rule")
    if "endpointSelector" in obj and "nodeSelector" in obj:
        ctx.fail(path, "a rule has either an endpointSelector (containers) or a nodeSelector "
                 "(hosts), not both")
    if "endpointSelector" not in obj and "nodeSelector" not in obj:
        ctx.fail(path, "a rule needs an endpointSelector ({} selects every endpoint) or a "
                 "nodeSelector (a host policy; {} selects every node)")
    node = None
    if "nodeSelector" in obj:
        node = selector(ctx, obj["nodeSelector"], f"{path}.nodeSelector")
        subject = Selector()
    else:
        subject = selector(ctx, obj["endpointSelector"], f"{path}.endpointSelector")
    sections = {}
    for name, direction, deny in (("ingress", "ingress", False), ("ingressDeny", "ingress", True),
                                  ("egress", "egress", False), ("egressDeny", "egress", True)):
        items = as_list(ctx, obj.get(name) or [], f"{path}.{name}")
        sections[name] = tuple(_peer_rule(ctx, item, f"{path}.{name}[{i}]", direction, deny)
                               for i, item in enumerate(items))
    default_deny = fields(ctx, obj.get("enableDefaultDeny") or {}, f"{path}.enableDefaultDeny",
                           ("ingress", "egress"), "enableDefaultDeny")
    for key, value in default_deny.items():
        if not isinstance(value, bool):
            ctx.fail(f"{path}.enableDefaultDeny.{key}", "must be true or false")
    if node is not None:
        _check_host_rule(ctx, sections, path)
    return Rule(subject, sections["ingress"], sections["ingressDeny"], sections["egress"],
                sections["egressDeny"], _labels(ctx, obj.get("labels"), f"{path}.labels"),
                str(obj.get("description") or ""), default_deny.get("ingress"),
                default_deny.get("egress"), policy, index, node)


def _check_host_rule(ctx: Ctx, sections: dict, path: str) -> None:
    """What a host policy cannot hold here. L7 rules: Cilium allows only DNS rules on
    hosts, and ciliumpy's proxies see containers' connections only, so an L7 port of
    the host would be open at L4 (refused rather than enforced less than written)."""
    for name, elements in sections.items():
        for i, element in enumerate(elements):
            for j, port_rule in enumerate(element.to_ports):
                if port_rule.l7_kind:
                    ctx.fail(f"{path}.{name}[{i}].toPorts[{j}].rules",
                             f"L7 rules ({port_rule.l7_kind}) are not supported in host "
                             "policies (nodeSelector): the L7 proxy sees containers' "
                             "connections only, not the host's")


ENVELOPE = ("apiVersion", "kind", "metadata", "spec", "specs", "description", "status")
METADATA = ("name", "namespace", "labels", "annotations", "uid", "resourceVersion",
            "generation", "creationTimestamp", "deletionTimestamp", "managedFields",
            "selfLink", "finalizers", "ownerReferences", "generateName")


def _policy(ctx: Ctx, doc: Any, path: str, default_name: str) -> Policy:
    """One document's policy, with the warnings its parsing gave."""
    first = len(ctx.warnings)
    policy = _policy_of(ctx, doc, path, default_name)
    policy.warnings = ctx.warnings[first:]
    return policy


def _policy_of(ctx: Ctx, doc: Any, path: str, default_name: str) -> Policy:
    if isinstance(doc, list):
        rules = [parse_rule(ctx, r, f"{path}[{i}]" if path else f"[{i}]", default_name, i)
                 for i, r in enumerate(doc)]
        return Policy(default_name, rules, [], ctx.source, {"specs": doc})
    if not isinstance(doc, dict):
        ctx.fail(path, f"a policy document must be a mapping or a list, not {type(doc).__name__}")
    envelope_keys = {"apiversion", "kind", "metadata", "spec", "specs"}
    keys = {go_fold(k) for k in doc}
    if "endpointselector" in keys or "nodeselector" in keys or (
            not envelope_keys & keys and keys & {f.lower() for f in RULE_FIELDS}):  # bare spec
        return Policy(default_name, [parse_rule(ctx, doc, path or "spec", default_name, 0)],
                      [], ctx.source, {"spec": doc})
    doc = fields(ctx, doc, path, ENVELOPE, "a policy document")
    kind = doc.get("kind", "CiliumNetworkPolicy")
    if kind not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
        ctx.fail(f"{path}.kind" if path else "kind", f"kind {kind!r} is not a Cilium policy")
    # what Kubernetes keeps in metadata (kubectl get -o yaml output loads); any other
    # key is one Kubernetes would prune: ignored with a warning
    metadata = fields(ctx, doc.get("metadata") or {}, f"{path}.metadata" if path else "metadata",
                      METADATA, "metadata", ignore_unknown=True)
    name = str(metadata.get("name") or default_name)
    if doc.get("spec") is None and doc.get("specs") is None:
        ctx.fail(path, "a policy needs 'spec' or 'specs'")
    rules = []
    if doc.get("spec") is not None:
        rules.append(parse_rule(ctx, doc["spec"], f"{path}.spec" if path else "spec", name, 0))
    for i, spec in enumerate(as_list(ctx, doc.get("specs") or [],
                                   f"{path}.specs" if path else "specs")):
        rules.append(parse_rule(ctx, spec, f"{path}.specs[{i}]" if path else f"specs[{i}]",
                                name, len(rules)))
    labels = [f"{k}={v}" for k, v in (metadata.get("labels") or {}).items()]
    stored = {k: doc[k] for k in ("spec", "specs") if doc.get(k) is not None}
    return Policy(name, rules, labels, ctx.source, stored)


SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~3x faster


MAX_NESTING = 100  # far beyond any policy; libyaml's C loader recurses without a limit


def nesting_depth(text: str) -> int:
    """An upper bound of how deep the document nests: open brackets (flow style) plus
    sequence dashes on one line and indentation (block style), so that a hostile
    document is refused before a parser recurses into it."""
    depth = worst = 0
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        dashes = 0
        while stripped.startswith("- ") or stripped == "-":
            dashes += 1
            stripped = stripped[2:].lstrip(" ")
        for char in stripped:
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth = max(depth - 1, 0)
        worst = max(worst, depth + dashes + (len(line) - len(line.lstrip(" "))) // 2)
        if worst > MAX_NESTING:
            break
    return worst


def load_documents(text: str) -> list:
    """Documents of a file: JSON is read as JSON (fast: stored policies are JSON)."""
    if nesting_depth(text) > MAX_NESTING:
        raise PolicyError(f"nests deeper than {MAX_NESTING} levels: not a policy")
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
    ctx = Ctx(source)
    if not documents:
        ctx.fail("", "holds no policy")
    many = len(documents) > 1
    return [_policy(ctx, doc, f"documents[{i}]" if many else "", default_name +
                    (f"-{i}" if many else "")) for i, doc in enumerate(documents)]


def parse_text(text: str, source: str = "", default_name: str = "") -> list[Policy]:
    """All policies of one file (YAML or JSON, one or more documents)."""
    ctx = Ctx(source)
    default_name = default_name or (source.rsplit("/", 1)[-1].rsplit(".", 1)[0] if source
                                    else "policy")
    try:
        documents = load_documents(text)
    except PolicyError as exc:
        ctx.fail("", str(exc))
    except RecursionError:
        ctx.fail("", f"nests deeper than {MAX_NESTING} levels: not a policy")
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
