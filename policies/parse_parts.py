"""Readers of the parts of a policy rule: label selectors, CIDRs, ports, FQDN selectors
and ICMP fields (L7 rules: parse_l7.py), each validated as Cilium validates it, and the
context every reader reports to (errors with the rule path, warnings for what loads but
selects nothing).

Field names are matched as Go's encoding/json (which Cilium uses) matches them: an
exact name first, otherwise case-insensitively with Go's folding (``HTTP:``, Kafka
``Role:``, ``ToPorts`` load); ports are read as Cilium reads them (``"0"`` is every
port, a leading 0 is octal).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any

from policies import fqdn, icmp, named_ports
from policies.fqdn import FQDNSelector
from policies.model import (
    OPERATORS,
    PORTLESS_PROTOCOLS,
    PROTOCOLS,
    CIDRRule,
    PortProtocol,
    PortRule,
    Requirement,
    Selector,
)

UNSUPPORTED = {
    "toGroups": "toGroups (cloud provider groups) is not supported",
    "fromGroups": "fromGroups (cloud provider groups) is not supported",
    "authentication": "mutual authentication (authentication) is not supported: it needs "
                      "Cilium's SPIFFE identities and auth handshake, which ciliumpy does "
                      "not have, and loading the rule without it would allow traffic the "
                      "policy requires to be authenticated",
    "auth": "mutual authentication (auth, now authentication) is not supported: it needs "
            "Cilium's SPIFFE identities and auth handshake, which ciliumpy does not have, "
            "and loading the rule without it would allow unauthenticated traffic",
    "listener": "Envoy listeners (listener) are not supported: they hand the connection to "
                "an Envoy listener of a CiliumEnvoyConfig, and ciliumpy's L7 proxy is not "
                "Envoy and has no such configuration",
    "terminatingTLS": "TLS interception (terminatingTLS/originatingTLS) is not supported",
    "originatingTLS": "TLS interception (terminatingTLS/originatingTLS) is not supported",
}


class PolicyError(ValueError):
    """A file that does not hold valid policy; the message is for the author."""


MAX_MESSAGE = 2000


def readable(message: str) -> str:
    """A message fit to print: control characters escaped (a key can hold any), and a
    huge echoed value cut (a 1 MB unknown key must not make a 1 MB error)."""
    if any(ord(c) < 32 and c != "\n" or 0xD800 <= ord(c) <= 0xDFFF for c in message):
        message = "".join(c if (ord(c) >= 32 or c == "\n") and not 0xD800 <= ord(c) <= 0xDFFF
                          else repr(c)[1:-1] for c in message)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE} more characters)"
    return message


# entities that exist only on Kubernetes: accepted (Cilium's policies use them), no peer
KUBERNETES_ENTITIES = {"kube-apiserver": "the cluster's API server",
                       "ingress": "the Envoy of Cilium's Kubernetes Ingress"}


class Ctx:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(readable(f"{path}: {message}" if path else message))

    def fail(self, path: str, message: str) -> None:
        where = f"{self.source}: " if self.source else ""
        raise PolicyError(readable(f"{where}{path}: {message}" if path else
                                   f"{where}{message}"))


# Go's encoding/json folds a key rune by rune as unicode.ToUpper(unicode.ToLower(r)).
# Field names are ASCII, so only runes that fold onto an ASCII letter can match one:
# ASCII itself, and these four (KELVIN SIGN, LONG S, dotted capital I, dotless small i).
GO_FOLD = {"\u212a": "k", "\u017f": "s", "\u0130": "i", "\u0131": "i"}


def go_fold(key: Any) -> str:
    """``key`` folded as Go folds it when comparing with an ASCII field name."""
    return "".join(GO_FOLD.get(c, c.lower() if c.isascii() else c) for c in str(key))


def canonical(key: Any, names) -> str | None:
    """Go's encoding/json: the exact field name, else a case-insensitive match."""
    if key in names:
        return key
    folded = go_fold(key)
    return next((name for name in names if name.lower() == folded), None)


def fields(ctx: Ctx, obj: Any, path: str, allowed: tuple[str, ...], what: str,
            ignore_unknown: bool = False) -> dict:
    """``obj`` with its keys spelled as ``allowed`` spells them; an unknown key is an
    error (or, with ``ignore_unknown``, a warning: the key is dropped)."""
    if not isinstance(obj, dict):
        ctx.fail(path, f"{what} must be a mapping, not {type(obj).__name__}")
    out: dict = {}
    given: dict[str, Any] = {}  # field -> the key that set it
    for key, value in obj.items():
        name = canonical(key, allowed)
        if name is not None:
            if name in given:
                # Go would decode both into one field, the later overwriting (or, for a
                # mapping, merging into) the earlier; the order depends on how the file
                # reached Cilium, so ciliumpy keeps the exact spelling and says so
                kept = name if name in (key, given[name]) else key
                ctx.warn(f"{path}.{key}" if path else str(key),
                         f"{given[name]!r} and {key!r} both set {name!r}: {kept!r} is used")
                if given[name] == name:
                    continue
            out[name], given[name] = value, key
            continue
        here = f"{path}.{key}" if path else str(key)
        unsupported = canonical(key, UNSUPPORTED)
        if unsupported is not None:
            ctx.fail(here, UNSUPPORTED[unsupported])
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        if ignore_unknown:
            ctx.warn(here, f"unknown field {key!r} in {what} ignored{suggestion}")
            continue
        ctx.fail(here, f"unknown field {key!r} in {what}{suggestion}")
    return out


def as_list(ctx: Ctx, obj: Any, path: str) -> list:
    if not isinstance(obj, list):
        ctx.fail(path, f"must be a list, not {type(obj).__name__}")
    return obj


def selector(ctx: Ctx, obj: Any, path: str) -> Selector:
    # Cilium decodes selectors into Kubernetes' LabelSelector, which drops unknown keys
    raw = obj or {}
    obj = fields(ctx, raw, path, ("matchLabels", "matchExpressions"), "a selector",
                 ignore_unknown=True)
    dropped = isinstance(raw, dict) and len(obj) < len(raw)
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
    for i, expr in enumerate(as_list(ctx, obj.get("matchExpressions") or [],
                                   f"{path}.matchExpressions")):
        here = f"{path}.matchExpressions[{i}]"
        expr = fields(ctx, expr, here, ("key", "operator", "values"), "a match expression")
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
    found = Selector(tuple(sorted(pairs)), tuple(requirements))
    if dropped and found.is_wildcard:
        # e.g. a label written beside matchLabels instead of under it: in Cilium too the
        # selector is then empty, and an empty selector selects every endpoint
        ctx.warn(path, "after the ignored fields this selector is empty: it selects EVERY "
                 "endpoint (did you mean to put the labels under matchLabels?)")
    return found


def network(ctx: Ctx, text: Any, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        ctx.fail(path, f"{text!r} is not a CIDR or IP address")
        raise  # unreachable


def cidr_set(ctx: Ctx, obj: Any, path: str) -> CIDRRule:
    obj = fields(ctx, obj, path, ("cidr", "except"), "a CIDR rule")
    if "cidr" not in obj:
        ctx.fail(path, "a CIDR rule needs 'cidr'")
    cidr = network(ctx, obj["cidr"], f"{path}.cidr")
    excepts = []
    for i, text in enumerate(as_list(ctx, obj.get("except") or [], f"{path}.except")):
        prefix = network(ctx, text, f"{path}.except[{i}]")
        if prefix.version != cidr.version or not prefix.subnet_of(cidr):
            ctx.fail(f"{path}.except[{i}]", f"{prefix} is not inside {cidr}")
        excepts.append(prefix)
    return CIDRRule(cidr, tuple(excepts))


def port_protocol(ctx: Ctx, obj: Any, path: str) -> PortProtocol:
    obj = fields(ctx, obj, path, ("port", "endPort", "protocol"), "a port")
    protocol = str(obj.get("protocol") or "ANY").upper()
    portless = protocol in PORTLESS_PROTOCOLS
    if ("port" not in obj or obj["port"] in (None, "")) and not portless:
        ctx.fail(f"{path}.port", "port must be specified")
    raw = obj.get("port") or 0
    if isinstance(raw, str) and named_ports.is_port_name(raw):
        return _named_port(ctx, obj, path, raw)
    port = _port_number(ctx, raw, f"{path}.port")
    end = obj.get("endPort") or 0
    if isinstance(end, bool) or not isinstance(end, int) or not 0 <= end <= 65535:
        ctx.fail(f"{path}.endPort", f"{end!r} is not a port number")
    if port == 0 and end:
        # Cilium's datapath wildcards the whole port when it is 0 (an endPort only
        # narrows a non-zero port): the range must not reach the BPF map as 0..end
        ctx.warn(f"{path}.endPort", f"endPort {end} ignored: port 0 means every port")
        end = 0
    if end and end < port:
        ctx.fail(f"{path}.endPort", f"endPort {end} is below port {port}")
    if protocol not in PROTOCOLS:
        ctx.fail(f"{path}.protocol", f"protocol {obj.get('protocol')!r} is not one of "
                 f"{', '.join(PROTOCOLS)}")
    if portless and port:
        ctx.fail(f"{path}.port", f"{protocol} has no ports: leave port out (or 0)")
    return PortProtocol(port, end if end != port else 0, protocol)


def _named_port(ctx: Ctx, obj: dict, path: str, name: str) -> PortProtocol:
    """``port: http``: each endpoint's port of that name (its ``ciliumpy.port.http``
    label); Cilium refuses a range on a named port."""
    if obj.get("endPort"):
        ctx.fail(f"{path}.endPort", f"endPort cannot be combined with the named port {name!r}")
    protocol = str(obj.get("protocol") or "ANY").upper()
    if protocol not in PROTOCOLS:
        ctx.fail(f"{path}.protocol", f"protocol {obj.get('protocol')!r} is not one of "
                 f"{', '.join(PROTOCOLS)}")
    return PortProtocol(0, 0, protocol, name=name)


def _port_number(ctx: Ctx, raw: Any, path: str) -> int:
    """A port as Cilium reads it: ``strconv.ParseUint(port, 0, 16)``, so "0" is every
    port and a leading 0 makes the digits octal ("010" is 8)."""
    text = str(raw)
    if isinstance(raw, bool) or not re.fullmatch(r"\d+", text):
        ctx.fail(path, f"{raw!r} is neither a port number nor a port name (a name is 1-15 "
                 "lowercase letters, digits and single dashes, with a letter)")
    if isinstance(raw, str) and len(text) > 1 and text.startswith("0"):
        if re.search("[89]", text):
            ctx.fail(path, f"{raw!r} is not a port number: Cilium reads a leading 0 as "
                     "octal, and 8 and 9 are not octal digits")
        port = int(text, 8)
        if port <= 65535:  # a user who wrote "010" most likely meant 10: say so
            ctx.warn(path, f"port {raw!r} is octal for Cilium (a leading 0): read as {port}")
    else:
        port = int(text)
    if port > 65535:
        ctx.fail(path, f"{text} is out of range 0..65535")
    return port


def fqdn_selector(ctx: Ctx, obj: Any, path: str, what: str = "an FQDN selector"
                  ) -> FQDNSelector:
    """``{matchName}`` or ``{matchPattern}`` (toFQDNs items and DNS rules alike)."""
    obj = fields(ctx, obj, path, ("matchName", "matchPattern"), what)
    name, pattern = obj.get("matchName"), obj.get("matchPattern")
    problem = fqdn.check(name, pattern)
    if problem:
        ctx.fail(path, problem)
    if not name and not pattern:
        ctx.warn(path, f"{what} without matchName or matchPattern selects no name")
    return FQDNSelector(str(name or ""), str(pattern or ""))


def icmp_rules(ctx: Ctx, obj: Any, path: str) -> PortRule:
    """``icmps: [{fields: [{type, family}]}]`` as one port rule whose "ports" are ICMP
    types (policies/icmp.py says how a type travels as a port)."""
    ports = []
    for i, item in enumerate(as_list(ctx, obj, path)):
        item = fields(ctx, item, f"{path}[{i}]", ("fields",), "an ICMP rule")
        entries = as_list(ctx, item.get("fields") or [], f"{path}[{i}].fields")
        if len(entries) > 40:
            ctx.fail(f"{path}[{i}].fields", f"at most 40 ICMP fields, found {len(entries)}")
        for j, field in enumerate(entries):
            here = f"{path}[{i}].fields[{j}]"
            field = fields(ctx, field, here, ("type", "family"), "an ICMP field")
            if field.get("type") in (None, ""):
                ctx.fail(f"{here}.type", "an ICMP field needs a type")
            try:
                protocol = icmp.family_protocol(field.get("family"))
                number = icmp.type_number(field["type"], protocol)
            except ValueError as exc:
                ctx.fail(here, str(exc))
            ports.append(PortProtocol(icmp.as_port(number), 0, protocol))
    if not ports:
        ctx.fail(path, "icmps needs at least one field (type and family)")
    return PortRule(tuple(dict.fromkeys(ports)), None, ())
