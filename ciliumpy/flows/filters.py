"""Hubble's flow filters over flow dicts: owns :class:`FlowFilter` (flow.proto's
FlowFilter, the fields ciliumpy's flows can answer) and :func:`matches`; the ``observe``
flags become filters in :mod:`ciliumpy.flows.flags`.

Semantics follow ``pkg/hubble/filters``: a flow passes when it matches a whitelist filter
(or there is none) and no blacklist filter (``filters.go``); in a filter all set fields
must match, a field when any of its values does. IPs: addresses or CIDRs (``ip.go``);
pods: ``[namespace/]name-prefix`` (``k8s.go``); labels: Kubernetes label selectors
(``a=b,c!=d,e in (f),g notin (h),i,!j``) where a key without source, or ``k8s:`` as
ciliumpy reads policies, means any source (``labels.go``, ``labelparser.go``); ports:
TCP, UDP, SCTP (``port.go``); HTTP status ``NNN`` or ``N+``/``NN+`` on responses, methods
without case, paths as regular expressions searched in the URL's path (``http.go``, with
Python's ``re`` for Go's RE2); node names: ``[cluster/]node`` patterns with ``*``, the
cluster being ``default`` (``patterns.go``); event types ``TYPE[:SUBTYPE]``.

Unlike Hubble, verdicts, drop reasons and event types take any case.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ciliumpy.flows.model import DROP_REASONS, MESSAGE_TYPES, TRACE_POINTS, VERDICTS
from policies.identities import RESERVED_BY_NAME
from policies.labels import Label, parse
from policies.model import selector_key

Predicate = Callable[[dict], bool]
PROTOCOLS = ("icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "dns", "http", "kafka")
_L4_KEYS = {"icmp": ("ICMPv4", "ICMPv6"), "icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",),
            "tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",)}
_FQDN = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)"
_TOKEN = r"[^\s=!(),]+"
_HTTP_FIELDS = ("http_status_code", "http_method", "http_path")


@dataclass
class FlowFilter:
    """One Hubble FlowFilter (flow.proto field names). Values are checked and
    normalized by :meth:`validate`; do not change a filter once it has matched."""
    source_ip: list[str] = field(default_factory=list)
    source_pod: list[str] = field(default_factory=list)
    source_label: list[str] = field(default_factory=list)
    source_port: list[str] = field(default_factory=list)
    source_identity: list[int] = field(default_factory=list)
    destination_ip: list[str] = field(default_factory=list)
    destination_pod: list[str] = field(default_factory=list)
    destination_label: list[str] = field(default_factory=list)
    destination_port: list[str] = field(default_factory=list)
    destination_identity: list[int] = field(default_factory=list)
    traffic_direction: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)
    drop_reason_desc: list[str] = field(default_factory=list)
    event_type: list[dict] = field(default_factory=list)  # {type, match_sub_type, sub_type}
    http_status_code: list[str] = field(default_factory=list)
    protocol: list[str] = field(default_factory=list)
    http_method: list[str] = field(default_factory=list)
    http_path: list[str] = field(default_factory=list)
    node_name: list[str] = field(default_factory=list)
    _compiled: list[Predicate] | None = field(default=None, init=False, repr=False,
                                              compare=False)

    def validate(self) -> FlowFilter:
        """Checks and normalizes every value and compiles the filter; ValueError saying
        what is wrong."""
        for name, (check, _) in _FIELDS.items():
            setattr(self, name, [check(value) for value in getattr(self, name)])
        http = next((n for n in _HTTP_FIELDS if getattr(self, n)), None)
        if http and self.event_type and not any(t.get("type") == MESSAGE_TYPES["l7"]
                                                for t in self.event_type):
            raise ValueError(f"filtering by {http.replace('_', ' ')} requires the event "
                             "type filter to only match 'l7' events")
        self._compiled = [build(getattr(self, name)) for name, (_, build) in _FIELDS.items()
                          if getattr(self, name)]
        return self

    def matches(self, flow: dict) -> bool:
        """Whether every set field matches ``flow``."""
        if self._compiled is None:
            self.validate()
        return all(predicate(flow) for predicate in self._compiled or ())


def matches(flow: dict, whitelist: list[FlowFilter], blacklist: list[FlowFilter]) -> bool:
    """Hubble's Apply: any whitelist filter matches (or none is given), no blacklist
    filter does."""
    return ((not whitelist or any(f.matches(flow) for f in whitelist))
            and not any(f.matches(flow) for f in blacklist))


# --- values: each field's check (normalizing) ---------------------------------------------

def _checker(what: str, ok: Callable[[str], object], hint: str = "") -> Callable[[object], str]:
    """A check that ``ok(text)`` holds (and raises no ValueError), keeping the text."""
    def check(value: object) -> str:
        text = _text(str(value) if type(value) is int else value, what)
        try:
            good = ok(text)
        except (ValueError, re.error) as exc:
            raise ValueError(f"invalid {what} {text!r}: {exc}") from None
        if not good:
            raise ValueError(f"invalid {what} {text!r}{': ' if hint else ''}{hint}")
        return text
    return check


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not a string")
    return value


def _is_ip(text: str) -> bool:
    return bool(ipaddress.ip_network(text, strict=False) if "/" in text
                else ipaddress.ip_address(text)) or True


def _check_identity(value: object) -> int:
    if type(value) is int and 0 <= value < 1 << 32:
        return value
    text = str(value)
    if text in RESERVED_BY_NAME:
        return RESERVED_BY_NAME[text]
    number = int(text, 0) if re.fullmatch(r"0[xX][0-9a-fA-F]+|[0-9]+", text) else -1
    if not 0 <= number < 1 << 32:
        raise ValueError(f"invalid security identity {text!r}, expected one of "
                         f"{sorted(RESERVED_BY_NAME)} or a numeric value")
    return number


def _check_enum(names: tuple[str, ...] | list[str], what: str) -> Callable[[object], str]:
    known = {name.upper(): name for name in names}

    def check(value: object) -> str:
        text = _text(value, what)
        if text.upper() not in known:
            raise ValueError(f"invalid {what} {text!r} (one of {', '.join(known.values())})")
        return known[text.upper()]
    return check


def _check_event_type(value: object) -> dict:
    """``TYPE[:SUBTYPE]`` (names or numbers, as Hubble's ``--type``: ``trace:to-endpoint``,
    ``drop:133``) into an EventTypeFilter dict (kept as it is)."""
    if isinstance(value, dict):
        return value
    name, sep, sub_text = _text(value, "event type").partition(":")
    kind = MESSAGE_TYPES.get(name.lower(), int(name) if name.isdigit() else None)
    if kind is None or kind >= 1 << 31:
        raise ValueError(f"unable to parse type {name!r}, not a known type name "
                         f"({', '.join(MESSAGE_TYPES)}) and not a number")
    if not sep:
        return {"type": kind}
    points = {v: k for k, v in TRACE_POINTS.items()} if kind == MESSAGE_TYPES["trace"] else {}
    sub = points.get(sub_text.lower(), int(sub_text) if sub_text.isdigit() else None)
    if sub is None or sub >= 1 << 31:
        raise ValueError(f"unable to parse event sub-type {sub_text!r}, not a known "
                         "sub-type name and not a number")
    return {"type": kind, "match_sub_type": True, "sub_type": sub}


def _node_regex(pattern: str) -> str:
    """patterns.go: ``[cluster/]node``, each an FQDN pattern with ``*``, empty = any."""
    def element(part: str) -> str:
        part = part.strip().removesuffix(".").lower()
        if not part or part.endswith("."):
            raise ValueError("empty pattern" if not part else "multiple trailing dots in pattern")
        bad = next((c for c in part if not re.fullmatch(r"[-.*_0-9a-z]", c)), None)
        if bad:
            raise ValueError(f"{bad!r}: invalid rune in pattern")
        return part.replace(".", r"\.").replace("*", "[-.0-9a-z]*")
    parts = pattern.split("/")
    if not pattern or len(parts) > 2:
        raise ValueError("empty pattern" if not pattern else "too many slashes in pattern")
    cluster, node = parts if len(parts) == 2 else ("", parts[0])
    return f"{element(cluster) if cluster else _FQDN}/{element(node) if node else _FQDN}"


def parse_selector(text: str) -> list[tuple[str, str, str, frozenset[str]]]:
    """A Kubernetes label selector into (source, key, operator, values) requirements,
    ``source`` being ``any`` for bare and ``k8s:`` keys; ValueError if it does not parse."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise ValueError("unbalanced parentheses")
        if char == "," and depth == 0:
            terms, start = [*terms, text[start:i]], i + 1
    if depth:
        raise ValueError("unbalanced parentheses")
    terms.append(text[start:])
    if len(terms) == 1 and not terms[0].strip():
        return []  # the empty selector selects everything (labels.Parse(""))
    out = []
    for term in (t.strip() for t in terms):
        values: list[str] = []
        if found := re.fullmatch(rf"({_TOKEN})\s+(in|notin)\s*\(([^()]*)\)", term):
            key, op = found[1], "In" if found[2] == "in" else "NotIn"
            values = [v.strip() for v in found[3].split(",")]
            if not all(re.fullmatch(r"[^\s=!(),]*", v) for v in values):
                raise ValueError(f"bad value in {term!r}")
        elif found := re.fullmatch(rf"!\s*({_TOKEN})", term):
            key, op = found[1], "DoesNotExist"
        elif found := re.fullmatch(rf"({_TOKEN})\s*(==|=|!=)\s*([^\s=!(),]*)", term):
            key, op, values = found[1], "NotIn" if found[2] == "!=" else "In", [found[3]]
        elif re.fullmatch(_TOKEN, term):
            key, op = term, "Exists"
        else:
            raise ValueError(f"cannot parse {term!r}")
        out.append((*selector_key(key), op, frozenset(values)))
    return out


# --- predicates: each field's matcher over flow dicts ---------------------------------------

@functools.lru_cache(maxsize=8192)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=8192)
def _labels(texts: tuple[str, ...]) -> tuple[Label, ...]:
    """A flow's labels parsed (those with an empty key, which cannot parse, left out)."""
    return tuple(parse(t) for t in texts if t.partition("=")[0].rpartition(":")[2])


def _by_ip(side: str, values: list[str]) -> Predicate:
    nets = [ipaddress.ip_network(v, strict=False) for v in values if "/" in v]
    addresses = {_address(v) for v in values if "/" not in v}

    def match(flow: dict) -> bool:
        found = _address((flow.get("IP") or {}).get(side) or "")
        return found is not None and (found in addresses or any(found in n for n in nets))
    return match


def _by_pod(side: str, values: list[str]) -> Predicate:
    wanted = [tuple(v.split("/", 1)) if "/" in v else ("", v) for v in values]

    def match(flow: dict) -> bool:
        endpoint = flow.get(side) or {}
        ns, pod = endpoint.get("namespace", ""), endpoint.get("pod_name", "")
        return bool(ns or pod) and any(ns == want_ns and pod.startswith(prefix)
                                       for want_ns, prefix in wanted)
    return match


def _holds(labels: tuple[Label, ...], source: str, key: str, op: str,
           wanted: frozenset[str]) -> bool:
    found = [lb for lb in labels if lb.key == key and source in ("any", lb.source)]
    if op in ("Exists", "DoesNotExist"):
        return bool(found) == (op == "Exists")
    return any(lb.value in wanted for lb in found) == (op == "In")


def _by_label(side: str, values: list[str]) -> Predicate:
    selectors = [parse_selector(v) for v in values]

    def match(flow: dict) -> bool:
        labels = _labels(tuple((flow.get(side) or {}).get("labels") or ()))
        return any(all(_holds(labels, *req) for req in selector) for selector in selectors)
    return match


def _by_port(side: str, values: list[str]) -> Predicate:
    ports = {int(v) for v in values}

    def match(flow: dict) -> bool:
        l4 = flow.get("l4") or {}
        block = next((l4[k] for k in ("TCP", "UDP", "SCTP") if k in l4), None)
        return block is not None and block.get(f"{side}_port", 0) in ports
    return match


def _by_identity(side: str, values: list[int]) -> Predicate:
    wanted = set(values)
    return lambda flow: (flow.get(side) or {}).get("identity", 0) in wanted


def _by_key(key: str, default: str) -> Callable[[list[str]], Predicate]:
    def build(values: list[str]) -> Predicate:
        wanted = set(values)
        return lambda flow: flow.get(key, default) in wanted
    return build


def _by_event_type(values: list[dict]) -> Predicate:
    def one(event: dict, want: dict) -> bool:
        return ((not want.get("type") or event.get("type", 0) == want["type"]) and
                (not want.get("match_sub_type") or event.get("sub_type", 0) == want["sub_type"]))
    return lambda flow: "event_type" in flow and any(one(flow["event_type"], w) for w in values)


def _http(flow: dict) -> dict:
    return (flow.get("l7") or {}).get("http") or {}


def _by_status(values: list[str]) -> Predicate:
    full = {v for v in values if not v.endswith("+")}
    prefixes = tuple(v[:-1] for v in values if v.endswith("+"))

    def match(flow: dict) -> bool:
        code = _http(flow).get("code", 0)
        return type(code) is int and code > 0 and (
            f"{code:03d}" in full or f"{code:03d}".startswith(prefixes))
    return match


def _by_protocol(values: list[str]) -> Predicate:
    wanted = {v.lower() for v in values}

    def match(flow: dict) -> bool:
        l4, l7 = flow.get("l4") or {}, flow.get("l7") or {}
        return any(any(k in l4 for k in _L4_KEYS[p]) if p in _L4_KEYS else p in l7
                   for p in wanted)
    return match


def _by_method(values: list[str]) -> Predicate:
    wanted = {v.casefold() for v in values}
    return lambda flow: (_http(flow).get("method") or "").casefold() in wanted - {""}


def _path(url: str) -> str | None:
    try:
        return unquote(urlsplit(url).path) if url else None  # Go's URL.Path: decoded
    except ValueError:  # Hubble drops what url.ParseRequestURI refuses
        return None


def _by_path(values: list[str]) -> Predicate:
    patterns = [re.compile(v) for v in values]

    def match(flow: dict) -> bool:
        path = _path(_http(flow).get("url") or "")
        return path is not None and any(p.search(path) for p in patterns)
    return match


def _by_node(values: list[str]) -> Predicate:
    pattern = re.compile("(?:" + "|".join(_node_regex(v) for v in values) + ")")

    def match(flow: dict) -> bool:
        name = flow.get("node_name") or ""
        return bool(name) and bool(pattern.fullmatch(name if "/" in name else f"default/{name}"))
    return match


_SIDED = {"ip": (_checker("IP address or CIDR", _is_ip), _by_ip),
          "pod": (_checker("pod", lambda t: t not in ("", "/"), "must be [namespace/][<name>]"),
                  _by_pod),
          "label": (_checker("label selector", lambda t: parse_selector(t) is not None),
                    _by_label),
          "port": (_checker("port", lambda t: re.fullmatch(r"[0-9]{1,5}", t) and int(t) < 65536,
                            "expected a number from 0 to 65535"), _by_port),
          "identity": (_check_identity, _by_identity)}
# field -> (check, predicate builder)
_FIELDS: dict[str, tuple[Callable[[object], object], Callable[[list], Predicate]]] = {
    **{f"{side}_{kind}": (check, functools.partial(build, side))
       for kind, (check, build) in _SIDED.items() for side in ("source", "destination")},
    "traffic_direction": (_check_enum(("INGRESS", "EGRESS"), "traffic direction"),
                          _by_key("traffic_direction", "TRAFFIC_DIRECTION_UNKNOWN")),
    "verdict": (_check_enum(VERDICTS, "verdict"), _by_key("verdict", "VERDICT_UNKNOWN")),
    "drop_reason_desc": (_check_enum(list(DROP_REASONS), "drop reason"),
                         _by_key("drop_reason_desc", "DROP_REASON_UNKNOWN")),
    "event_type": (_check_event_type, _by_event_type),
    "http_status_code": (_checker("HTTP status code prefix", lambda t: re.fullmatch(
        r"[1-5][0-9]{2}|[1-5][0-9]?\+", t), "expected e.g. 404, 4+, 50+"), _by_status),
    "protocol": (_checker("protocol", lambda t: t.lower() in PROTOCOLS,
                          f"one of {', '.join(PROTOCOLS)}"), _by_protocol),
    "http_method": (_checker("HTTP method", bool), _by_method),
    "http_path": (_checker("HTTP path regular expression", re.compile), _by_path),
    "node_name": (_checker("node name pattern", _node_regex), _by_node),
}
