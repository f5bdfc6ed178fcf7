"""DNS names in policy, as Cilium reads them: ``toFQDNs`` selectors and L7 ``rules.dns``
(``matchName``, ``matchPattern``), the name matcher both share, and the cache of what
the DNS proxy learnt (name -> addresses with their expiry).

Semantics (Cilium's ``pkg/fqdn/matchpattern``): names compare lower-cased and fully
qualified (a trailing dot added); ``matchName`` is exact; in ``matchPattern`` a ``*``
stands for zero or more DNS characters (``[-a-zA-Z0-9_]``) within ONE label, so
``*.cilium.io`` matches ``sub.cilium.io`` but neither ``cilium.io`` nor
``a.sub.cilium.io``; a pattern that is only ``*`` matches every name.

The cache is pure: the agent feeds it the answers the proxy saw (``learn``) with the
time, and asks which addresses are still valid (``addresses``) and what ``expire``
removed. An answer's TTL is raised to the configured minimum (Cilium's
``--tofqdns-min-ttl``), so a client that caches a name longer than its TTL still
reaches the address for a while.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import re2

DNS_CHARS = "[-a-zA-Z0-9_]"
NAME_CHARS = re.compile(r"^[-a-zA-Z0-9_.]+$")
PATTERN_CHARS = re.compile(r"^[-a-zA-Z0-9_.*]+$")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def fqdn(name: str) -> str:
    """``name`` lower-cased with its trailing dot (how every comparison sees it)."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def pattern_regex(pattern: str) -> str:
    """The anchored regular expression of a ``matchPattern`` (Cilium's)."""
    pattern = pattern.strip().lower()
    if pattern == "*":
        return rf"(?:^(?:{DNS_CHARS}+[.])+$)|(?:^[.]$)"
    return "^" + re.escape(fqdn(pattern)).replace(r"\*", f"{DNS_CHARS}*") + "$"


def check(match_name: object, match_pattern: object) -> str | None:
    """Why a ``{matchName, matchPattern}`` pair is invalid (None: it is valid)."""
    for field, value in (("matchName", match_name), ("matchPattern", match_pattern)):
        if value is not None and not isinstance(value, str):
            return f"{field} must be a string"
    if match_name and match_pattern:
        return "only one of matchName or matchPattern is allowed"
    if match_name and not NAME_CHARS.match(str(match_name)):
        return (f"invalid characters in matchName {match_name!r}: only a-z, A-Z, 0-9, "
                "'.', '-' and '_' are allowed")
    if match_pattern and not PATTERN_CHARS.match(str(match_pattern)):
        return (f"invalid characters in matchPattern {match_pattern!r}: only a-z, A-Z, "
                "0-9, '.', '-', '_' and '*' are allowed")
    return None


@dataclass(frozen=True)
class FQDNSelector:
    match_name: str = ""
    match_pattern: str = ""

    @property
    def regex(self) -> str:
        if self.match_name:
            return "^" + re.escape(fqdn(self.match_name)) + "$"
        if self.match_pattern:
            return pattern_regex(self.match_pattern)
        return "^$"  # an empty selector selects no name (every name has a dot)

    def matches(self, name: str) -> bool:
        return _compiled(self.regex).search(fqdn(name)) is not None

    def __str__(self) -> str:
        if self.match_name:
            return f"matchName: {self.match_name}"
        return f"matchPattern: {self.match_pattern}" if self.match_pattern else "{}"


_CACHE: dict[str, re.Pattern] = {}


def _compiled(regex: str) -> re.Pattern:
    found = _CACHE.get(regex)
    if found is None:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        found = _CACHE[regex] = re.compile(regex)
    return found


class NameMatcher:
    """Many selectors as ONE RE2 set (the proxy judges every query with it): a name
    matches if any selector does. Built from rule dicts ``{matchName|matchPattern}``."""

    def __init__(self, rules: Iterable[dict]) -> None:
        regexes = [FQDNSelector(str(r.get("matchName") or ""),
                                str(r.get("matchPattern") or "")).regex for r in rules]
        self._set = None
        if not regexes:
            return
        self._set = re2.Set.SearchSet()
        for regex in regexes:
            self._set.Add(regex)
        self._set.Compile()

    def matches(self, name: str) -> bool:
        return self._set is not None and bool(self._set.Match(fqdn(name)))


MAX_IPS_PER_NAME = 50  # Cilium's --tofqdns-endpoint-max-ip-per-hostname default
MAX_NAMES = 10_000  # names kept at once; the soonest to expire goes first


class FQDNCache:
    """Addresses learnt per name, each with its expiry (monotonic seconds). Bounded:
    at most MAX_IPS_PER_NAME addresses per name and MAX_NAMES names (a ``*`` rule
    would otherwise let every answer grow it, and every new address costs a
    recomputation of the policy views)."""

    def __init__(self, min_ttl: float, max_ips_per_name: int = MAX_IPS_PER_NAME,
                 max_names: int = MAX_NAMES) -> None:
        self.min_ttl = min_ttl
        self.max_ips_per_name, self.max_names = max_ips_per_name, max_names
        self.names: dict[str, dict[Address, float]] = {}

    def learn(self, name: str, ips: Iterable[str], ttl: float, now: float) -> bool:
        """Records an answer; True if an address became valid that was not."""
        name = fqdn(name)
        expiry = now + max(float(ttl), self.min_ttl)
        known = self.names.setdefault(name, {})
        new = False
        for text in ips:
            ip = ipaddress.ip_address(text)
            if ip not in known or known[ip] <= now:
                new = True
            known[ip] = max(known.get(ip, 0.0), expiry)
        for ip in sorted(known, key=known.get)[:max(0, len(known) - self.max_ips_per_name)]:
            del known[ip]  # the soonest to expire make room
        if not known:
            del self.names[name]
        while len(self.names) > self.max_names:
            soonest = min((n for n in self.names if n != name),
                          key=lambda n: max(self.names[n].values()))
            del self.names[soonest]
        return new

    def expire(self, now: float) -> bool:
        """Forgets every address past its expiry; True if any was forgotten."""
        gone = False
        for name in list(self.names):
            known = self.names[name]
            for ip in [ip for ip, expiry in known.items() if expiry <= now]:
                del known[ip]
                gone = True
            if not known:
                del self.names[name]
        return gone

    def next_expiry(self) -> float | None:
        return min((e for known in self.names.values() for e in known.values()), default=None)

    def addresses(self, now: float) -> dict[Address, tuple[str, ...]]:
        """Every valid address with the names it was learnt for (sorted)."""
        found: dict[Address, set[str]] = {}
        for name, known in self.names.items():
            for ip, expiry in known.items():
                if expiry > now:
                    found.setdefault(ip, set()).add(name)
        return {ip: tuple(sorted(names)) for ip, names in found.items()}

    def export(self, now: float, wall: float) -> dict[str, dict[str, float]]:
        """The valid addresses with their expiry as wall-clock time (``wall`` is the
        wall clock at monotonic ``now``), to keep across an agent restart."""
        return {name: {str(ip): round(wall + expiry - now, 3)
                       for ip, expiry in known.items() if expiry > now}
                for name, known in self.names.items()
                if any(expiry > now for expiry in known.values())}

    def restore(self, saved: object, now: float, wall: float) -> int:
        """Learns back what ``export`` gave, dropping what expired meanwhile and anything
        malformed; returns how many addresses came back."""
        restored = 0
        if not isinstance(saved, dict):
            return 0
        for name, known in saved.items():
            if not isinstance(name, str) or not isinstance(known, dict):
                continue
            for ip, expiry in known.items():
                try:
                    left = float(expiry) - wall
                    ipaddress.ip_address(ip)
                except (TypeError, ValueError):
                    continue
                if left > 0:
                    # no minimum TTL here: what was learnt keeps its own expiry
                    address = ipaddress.ip_address(ip)
                    entry = self.names.setdefault(fqdn(name), {})
                    entry[address] = max(entry.get(address, 0.0), now + left)
                    restored += 1
        for name in list(self.names):  # the same bounds as learn()
            known = self.names[name]
            for ip in sorted(known, key=known.get)[:max(0, len(known) - self.max_ips_per_name)]:
                del known[ip]
        while len(self.names) > self.max_names:
            del self.names[min(self.names, key=lambda n: max(self.names[n].values()))]
        return restored

    def dump(self, now: float) -> list[dict]:
        """For ``ciliumpy fqdn cache``-style listings: one row per name and address."""
        return [{"name": name, "ip": str(ip), "expires_in": round(expiry - now, 1)}
                for name, known in sorted(self.names.items())
                for ip, expiry in sorted(known.items(), key=lambda kv: str(kv[0]))
                if expiry > now]


@dataclass(frozen=True)
class DnsQuery:
    """One question the DNS proxy judges: its name and type (``A``, ``AAAA``, ...)."""

    name: str
    qtype: str = "A"


@dataclass(frozen=True)
class DnsMatch:
    allowed: bool
    reason: str = ""


class DnsRuleSet:
    """A compiled ``dns:`` list: a query passes if one rule's name or pattern matches its
    name (every query type alike, as Cilium). ``None`` and ``[]`` allow every query (as
    Cilium, for which an empty list is no L7 rule at all)."""

    def __init__(self, rules: list[dict] | None) -> None:
        if rules is not None and not isinstance(rules, list | tuple):
            raise ValueError(f"DNS rules must be a list, not {type(rules).__name__}")
        for rule in rules or ():
            problem = check(rule.get("matchName"), rule.get("matchPattern")) \
                if isinstance(rule, dict) else "a DNS rule must be a mapping"
            if problem:
                raise ValueError(f"DNS rule {rule!r}: {problem}")
        self.allow_all = not rules
        self.matcher = NameMatcher(rules or ())

    def match(self, query: DnsQuery) -> DnsMatch:
        if self.allow_all or self.matcher.matches(query.name):
            return DnsMatch(True, "allowed")
        return DnsMatch(False, f"no DNS rule matches {fqdn(query.name)}")
