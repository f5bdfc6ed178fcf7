"""The proxy's view of policy: loading the agent's state file and judging requests.

Owns the state-file format (written atomically by the agent, by rename), the reload
logic (stat at most every ``CHECK_INTERVAL`` seconds, or at once after :meth:`StateLoader.
poke`, e.g. on SIGHUP), compiling each revision's rules once, and the per-request
verdict for a connection ``src ip -> dst ip:port``:

* egress entries with ``endpoint == src`` and ``port == dst port`` judge with remote =
  identity(dst); ingress entries with ``endpoint == dst`` and the same port judge with
  remote = identity(src);
* every direction that has entries for that endpoint/port must allow (a direction with
  entries but none for the peer's identity denies); no entries at all denies;
* no state, an unreadable state or an unknown IP (identity 2, world) never widens
  anything: the proxy fails closed.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass, field

from policies.fqdn import DnsQuery, DnsRuleSet
from policies.http_rules import Action, Request, RuleError, RuleSet
from policies.kafka_rules import KafkaRequest, KafkaRuleError, KafkaRuleSet
from policies.tls_rules import SniQuery, TlsRuleSet

WORLD = 2
CHECK_INTERVAL = 0.1
DEFAULT_STATE_PATH = "/run/ciliumpy/proxy/state.json"


@functools.lru_cache(maxsize=65536)
def normalize_ip(ip: str) -> str:
    """Canonical text form; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) becomes IPv4."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


PARSERS = {"http": RuleSet, "kafka": KafkaRuleSet, "dns": DnsRuleSet, "tls": TlsRuleSet}
Query = Request | KafkaRequest | DnsQuery | SniQuery


@dataclass
class Entry:
    remotes: frozenset[int] | None  # None: any identity
    rules: RuleSet | KafkaRuleSet | DnsRuleSet | TlsRuleSet
    parser: str = "http"


@dataclass
class Decision:
    allowed: bool
    reason: str
    direction: str  # ingress | egress (the deciding one)
    actions: list[Action] = field(default_factory=list)


class ProxyState:
    """One parsed, compiled revision of the state file."""

    def __init__(self, doc: dict) -> None:
        if not isinstance(doc, dict):
            raise ValueError("state must be a JSON object")
        self.revision = doc.get("revision")
        self.identities = {normalize_ip(k): int(v)
                           for k, v in (doc.get("identities") or {}).items()}
        self.labels = {int(k): list(v) for k, v in (doc.get("labels") or {}).items()}
        self.names = {normalize_ip(k): str(v) for k, v in (doc.get("names") or {}).items()}
        self.entries: dict[tuple[str, str, int], list[Entry]] = {}
        for raw in doc.get("l7") or []:
            direction = raw.get("direction")
            if direction not in ("ingress", "egress"):
                raise ValueError(f"l7 entry direction {direction!r} invalid")
            remotes = raw.get("remotes")
            parser = raw.get("parser", "http")
            if parser not in PARSERS:
                # a protocol this proxy cannot parse: nobody is allowed through, rather
                # than anybody unchecked
                parser, remotes = "http", []
            entry = Entry(None if remotes is None else frozenset(int(r) for r in remotes),
                          PARSERS[parser](raw.get(parser)), parser)
            key = (direction, normalize_ip(str(raw["endpoint"])), int(raw["port"]))
            self.entries.setdefault(key, []).append(entry)

    def identity(self, ip: str) -> int:
        return self.identities.get(normalize_ip(ip), WORLD)

    def describe(self, ip: str, port: int) -> dict:
        ip = normalize_ip(ip)
        ident = self.identity(ip)
        return {"ip": ip, "port": port, "identity": ident,
                "labels": self.labels.get(ident, []), "name": self.names.get(ip)}

    def directions(self, src: str, dst: str, port: int) -> list[tuple[str, list[Entry], int]]:
        """(direction, entries, remote identity) for every direction with entries."""
        src, dst = normalize_ip(src), normalize_ip(dst)
        out = []
        egress = self.entries.get(("egress", src, port))
        if egress:
            out.append(("egress", egress, self.identity(dst)))
        ingress = self.entries.get(("ingress", dst, port))
        if ingress:
            out.append(("ingress", ingress, self.identity(src)))
        return out

    def parser(self, src: str, dst: str, port: int) -> str | None:
        """The L7 protocol of this connection's port: http, kafka, None (no L7 policy)
        or "conflict" (directions disagree: every request is denied)."""
        kinds = {e.parser for _, entries, _ in self.directions(src, dst, port)
                 for e in entries}
        return kinds.pop() if len(kinds) == 1 else ("conflict" if kinds else None)

    def kafka_needs_topics(self, src: str, dst: str, port: int) -> bool:
        return any(getattr(e.rules, "needs_topics", False)
                   for _, entries, _ in self.directions(src, dst, port) for e in entries)

    def evaluate(self, src: str, dst: str, port: int, req: Query) -> Decision:
        dirs = self.directions(src, dst, port)
        if not dirs:
            return Decision(False, f"no L7 policy for {dst}:{port}", "ingress")
        kind = "kafka" if isinstance(req, KafkaRequest) else (
            "dns" if isinstance(req, DnsQuery) else "tls" if isinstance(req, SniQuery)
            else "http")
        actions: list[Action] = []
        for direction, entries, remote in dirs:
            applicable = [e for e in entries if e.remotes is None or remote in e.remotes]
            if not applicable:
                return Decision(False, f"{direction}: identity {remote} not allowed", direction)
            reasons = []
            for entry in applicable:
                if entry.parser != kind:
                    reasons.append(f"the port's L7 parser is {entry.parser}, not {kind}")
                    continue
                match = entry.rules.match(req)
                if match.allowed:
                    actions.extend(getattr(match, "actions", ()))
                    break
                reasons.append(getattr(match, "reason", ""))
            else:
                why = next((r for r in reasons if r), f"no {kind.upper()} rule matched")
                if kind == "http":
                    why = "no HTTP rule matched"
                return Decision(False, f"{direction}: {why}", direction)
        direction = "ingress" if any(d[0] == "ingress" for d in dirs) else "egress"
        reason = "allowed"
        logged = [a.name for a in actions if a.kind == "LOG"]
        if logged:
            reason = "allowed; headerMatches mismatch logged: " + ",".join(logged)
        return Decision(True, reason, direction, actions)


class StateLoader:
    """Keeps the newest good revision of the state file (or ``None``: fail closed)."""

    def __init__(self, path: str, interval: float = CHECK_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.state: ProxyState | None = None
        self.error: str | None = "not loaded"
        self._sig: tuple | None = None
        self._digest: str | None = None
        self._checked = 0.0

    def poke(self) -> None:
        """Re-stat on the next :meth:`current` (SIGHUP)."""
        self._checked = 0.0

    def current(self) -> ProxyState | None:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            self._refresh()
        return self.state

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self.state, self._sig, self._digest = None, None, None
            self.error = f"state file: {exc.strerror}"
            return
        sig = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_dev)
        if sig == self._sig:
            return
        self._sig = sig
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
            digest = hashlib.sha256(raw).hexdigest()
            if digest == self._digest and self.state is not None:
                return
            self.state = ProxyState(json.loads(raw))
            self._digest = digest
            self.error = None
        except (OSError, ValueError, KeyError, TypeError, RuleError, KafkaRuleError) as exc:
            self.state, self._digest = None, None
            self.error = f"state file unusable: {exc}"

    def evaluate(self, src: str, dst: str, port: int, req: Query) -> Decision:
        state = self.current()
        if state is None:
            return Decision(False, self.error or "no state", "ingress")
        return state.evaluate(src, dst, port, req)
