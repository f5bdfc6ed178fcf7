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

:class:`RuleSet` compiles a list once; matching 1,000 rules costs about what one costs:
one RE2 set match finds every rule whose path matches, whatever their number, and only
those are checked further (method, host, headers), in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

try:  # google-re2: a set of regexes matched in one pass (see _path_set)
    import re2
except ImportError:  # pragma: no cover - the package is a dependency
    re2 = None

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


def _path_set(rules: list[CompiledRule]):
    """An RE2 set of every rule's path (a rule without one matches any path), or None
    where RE2 is missing. One ``Match`` tells every rule whose path fully matches, in
    time independent of the number of rules; RE2 is also the regex dialect Envoy, and
    so Cilium, uses for these fields."""
    if re2 is None:
        return None
    paths = re2.Set.FullMatchSet()
    for rule in rules:
        try:
            paths.Add(rule.path_src or ".*")
        except Exception as exc:  # re2 raises a bare error: say which rule
            raise RuleError(f"path {rule.path_src!r} is not a valid RE2 regex "
                            "(backreferences and lookarounds are not supported)") from exc
    paths.Compile()
    return paths


def check_path(pattern: str) -> None:
    """Raises RuleError when ``pattern`` cannot be an HTTP rule path (used by the policy
    parser, so what imports is what the proxy compiles)."""
    _compile(pattern, "path")
    _path_set([CompiledRule(0, {"path": pattern})])


class RuleSet:
    """A compiled ``http:`` list. ``None``/``[]`` means every request is allowed."""

    def __init__(self, rules: list[dict] | None) -> None:
        self.allow_all = not rules
        self.rules = [CompiledRule(i, r) for i, r in enumerate(rules or [])]
        self.paths = _path_set(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, path: str) -> list[CompiledRule]:
        """The rules whose path fully matches ``path``, in rule order."""
        if self.paths is not None:
            return [self.rules[i] for i in sorted(self.paths.Match(path) or ())]
        return [r for r in self.rules if r.path is None or r.path.fullmatch(path)]

    def match(self, req: Request) -> Match:
        """The first rule (in list order) that matches decides; no match -> denied."""
        if self.allow_all:
            return Match(True)
        for rule in self.candidates(req.path):
            ok, actions = rule.match(req)
            if ok:
                return Match(True, actions, rule.index)
        return Match(False)
