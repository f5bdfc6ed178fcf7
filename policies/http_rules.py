"""Compiling and matching Cilium HTTP rules (pure: no I/O, no state).

Owns the semantics of one ``PortRuleHTTP`` list: ``method``/``path``/``host`` are
regexes matched against the WHOLE value (``re.fullmatch``, as Envoy's ``safe_regex``);
``host`` is case-insensitive, method/path/header values are case-sensitive; header
names are case-insensitive.  ``headers`` entries are ``"Name: value"`` or ``"Name"``
(presence).  ciliumpy extension: a ``headers`` value is matched as a regex (full
match); a plain literal without metacharacters matches only itself, so Cilium's
literal behaviour is preserved (a value that does not compile is compared literally).
``headerMatches`` values are literal; ``mismatch`` decides what a mismatch does:
absent → the rule does not match, ``LOG`` → allowed and logged, ``ADD``/``DELETE``/
``REPLACE`` → allowed and the request header is changed before forwarding.

:class:`RuleSet` compiles a list once; matching 1,000 rules costs about what one costs
because candidate rules are found by index: exact-literal paths in a dict, paths with
a literal first segment (``/api/.*``) by that segment, the rest checked in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

META = set(".^$*+?{}[]\\|()")
ACTIONS = ("LOG", "ADD", "DELETE", "REPLACE")


class RuleError(ValueError):
    """A rule that cannot be compiled (bad regex, bad field)."""


@dataclass
class Request:
    """What the rules look at. Header names must be lower-case."""

    method: str
    path: str
    host: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


@dataclass(frozen=True)
class Action:
    """A header change (or log line) owed to a ``headerMatches`` mismatch."""

    kind: str  # LOG | ADD | DELETE | REPLACE
    name: str  # lower-case header name
    value: str | None


@dataclass
class Match:
    allowed: bool
    actions: list[Action] = field(default_factory=list)
    rule_index: int | None = None


def is_literal(pattern: str) -> bool:
    return not any(c in META for c in pattern)


def _compile(pattern: str, what: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise RuleError(f"{what} {pattern!r} is not a valid regex: {exc}") from exc


def literal_prefix(pattern: str) -> str:
    """The literal text every full match of ``pattern`` starts with ('' if unknown)."""
    if "|" in pattern:
        return ""
    out = []
    for c in pattern:
        if c in META:
            if c in "*?{" and out:
                out.pop()  # the previous character is optional/repeated
            return "".join(out)
        out.append(c)
    return "".join(out)


def segment_key(path: str) -> str | None:
    """``/api/v1/x`` -> ``/api/``: the first path segment including both slashes."""
    if not path.startswith("/"):
        return None
    end = path.find("/", 1)
    return path[: end + 1] if end > 0 else None


class CompiledRule:
    """One ``PortRuleHTTP``."""

    def __init__(self, index: int, rule: dict) -> None:
        if not isinstance(rule, dict):
            raise RuleError(f"HTTP rule #{index} must be an object")
        self.index = index
        self.path_src: str | None = rule.get("path") or None
        self.method = _compile(rule["method"], "method") if rule.get("method") else None
        self.path = _compile(self.path_src, "path") if self.path_src else None
        self.host = _compile(rule["host"], "host", re.IGNORECASE) if rule.get("host") else None
        self.headers: list[tuple[str, re.Pattern[str] | str | None]] = []
        for spec in rule.get("headers") or []:
            self.headers.append(_parse_header(spec))
        self.header_matches: list[tuple[str, str | None, bool, str | None]] = []
        for hm in rule.get("headerMatches") or []:
            if not isinstance(hm, dict) or not hm.get("name"):
                raise RuleError(f"headerMatches entry {hm!r} needs a name")
            mismatch = hm.get("mismatch") or None
            if mismatch is not None:
                mismatch = str(mismatch).upper()
                if mismatch not in ACTIONS:
                    raise RuleError(f"headerMatches mismatch {hm.get('mismatch')!r} unknown")
            value = hm.get("value")
            has_secret = bool(hm.get("secret"))
            self.header_matches.append((hm["name"].lower(), value, has_secret, mismatch))

    def match(self, req: Request) -> tuple[bool, list[Action]]:
        if self.method is not None and not self.method.fullmatch(req.method):
            return False, []
        if self.path is not None and not self.path.fullmatch(req.path):
            return False, []
        if self.host is not None and not self.host.fullmatch(req.host or ""):
            return False, []
        for name, want in self.headers:
            values = req.header_values(name)
            if not values:
                return False, []
            if want is None:
                continue
            if isinstance(want, str):
                if want not in values:
                    return False, []
            elif not any(want.fullmatch(v) for v in values):
                return False, []
        actions: list[Action] = []
        for name, value, has_secret, mismatch in self.header_matches:
            values = req.header_values(name)
            if value is None and has_secret:
                ok = False  # the agent must resolve secrets into ``value``: fail closed
            elif value is None:
                ok = bool(values)
            else:
                ok = value in values
            if ok:
                continue
            if mismatch is None:
                return False, []
            actions.append(Action(mismatch, name, value))
        return True, actions


def _parse_header(spec: str) -> tuple[str, re.Pattern[str] | str | None]:
    if not isinstance(spec, str) or not spec.strip():
        raise RuleError(f"headers entry {spec!r} must be a non-empty string")
    name, _, value = spec.strip().partition(" ")
    name = name.rstrip(":").lower()
    value = value.strip()
    if not value:
        return name, None
    if is_literal(value):
        return name, value
    try:
        return name, re.compile(value)
    except re.error:
        return name, value  # not a regex after all: literal


class RuleSet:
    """A compiled ``http:`` list. ``None``/``[]`` means every request is allowed."""

    def __init__(self, rules: list[dict] | None) -> None:
        self.allow_all = not rules
        self.rules = [CompiledRule(i, r) for i, r in enumerate(rules or [])]
        self.exact: dict[str, list[CompiledRule]] = {}
        self.by_segment: dict[str, list[CompiledRule]] = {}
        self.generic: list[CompiledRule] = []
        for rule in self.rules:
            src = rule.path_src
            if src is not None and is_literal(src):
                self.exact.setdefault(src, []).append(rule)
                continue
            key = segment_key(literal_prefix(src)) if src else None
            if key is not None:
                self.by_segment.setdefault(key, []).append(rule)
            else:
                self.generic.append(rule)

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, path: str) -> list[CompiledRule]:
        found = self.exact.get(path, [])
        key = segment_key(path)
        seg = self.by_segment.get(key, []) if key is not None else []
        if not seg and not self.generic:
            return found
        out = [*found, *seg, *self.generic]
        out.sort(key=lambda r: r.index)
        return out

    def match(self, req: Request) -> Match:
        """The first rule (in list order) that matches decides; no match -> denied."""
        if self.allow_all:
            return Match(True)
        for rule in self.candidates(req.path):
            ok, actions = rule.match(req)
            if ok:
                return Match(True, actions, rule.index)
        return Match(False)
