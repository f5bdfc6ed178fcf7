"""TLS server-name rules: Cilium's ``toPorts[].serverNames``, validated and compiled.

A port rule with ``serverNames`` allows a connection only if it starts with a TLS
ClientHello whose server_name (SNI) one of the names matches ("If not empty, TLS must
be present and one of the provided SNIs must be indicated in the TLS handshake").

Names compare case-insensitively. Wildcards follow Cilium's current ``ServerName``
(cilium/cilium#43674, the same as ``toFQDNs`` ``matchPattern``):

* ``*`` stands for zero or more DNS characters (``[-a-zA-Z0-9_]``) inside ONE label and
  may appear anywhere: ``*.example.com`` matches ``a.example.com``, neither
  ``example.com`` nor ``a.b.example.com``; ``api-*.example.com`` matches
  ``api-eu.example.com``. A label that is only ``*`` needs at least one character.
* ``**`` as the whole leftmost label stands for one or more labels:
  ``**.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
  ``example.com``.
* ``*`` or ``**`` alone matches every server name (but a ClientHello without one, or a
  connection that is not TLS, still does not pass).

Pure logic: no I/O; the proxy (``proxy/tls.py``) parses the ClientHello and asks
:class:`TlsRuleSet` for the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

LABEL = "[-a-z0-9_]"
NAME = rf"{LABEL}+(?:[.]{LABEL}+)*"
VALID = re.compile(r"^[-a-zA-Z0-9_.*]+$")
MAX_NAME = 253  # the longest DNS name, in text


class TlsRuleError(ValueError):
    """A server name that cannot be a rule; the message is for the policy author."""


def check_name(value: object) -> str:
    """``value`` as a canonical server-name rule (lower case, no trailing dot), or
    :class:`TlsRuleError` saying what is wrong."""
    if not isinstance(value, str):
        raise TlsRuleError(f"a server name must be a string, not {type(value).__name__}")
    if value == "":
        raise TlsRuleError("empty server name is not allowed")  # Cilium's own refusal
    name = value.lower()
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]  # an SNI never carries the root dot (RFC 6066 section 3)
    if len(name) > MAX_NAME:
        raise TlsRuleError(f"server name {value[:64]!r}... is longer than {MAX_NAME} "
                           "characters")
    if not VALID.match(name):
        raise TlsRuleError(f"invalid characters in server name {value!r}: only a-z, A-Z, "
                           "0-9, '.', '-', '_' and the wildcard '*' are allowed")
    labels = name.split(".")
    if any(not label for label in labels):
        raise TlsRuleError(f"server name {value!r} has an empty label ('..' or a "
                           "leading '.')")
    for i, label in enumerate(labels):
        if "**" in label and (label != "**" or i != 0):
            raise TlsRuleError(f"server name {value!r}: '**' may only be the whole "
                               "leftmost label (as in '**.example.com')")
    return name


def name_regex(name: str) -> str:
    """The (fully matched) regular expression of a canonical server-name rule."""
    if name in ("*", "**"):
        return NAME
    labels = name.split(".")
    head = ""
    if labels[0] == "**":
        head, labels = rf"{NAME}[.]", labels[1:]
    parts = []
    for label in labels:
        if label == "*":
            parts.append(f"{LABEL}+")
        else:
            parts.append(f"{LABEL}*".join(re.escape(piece) for piece in label.split("*")))
    return head + "[.]".join(parts)


@dataclass(frozen=True)
class SniQuery:
    """What the rules judge: the ClientHello's server name. ``hello`` False means the
    ClientHello has not been read yet (only a peer allowed at L3/L4 passes then)."""

    name: str | None
    hello: bool = True


@dataclass(frozen=True)
class TlsMatch:
    allowed: bool
    reason: str
    rule_index: int | None = None


class TlsRuleSet:
    """A compiled ``serverNames`` list. ``None`` (a peer allowed on the port at L3/L4
    only, allows being a union) lets every connection through unread, TLS or not."""

    def __init__(self, rules: list[dict] | None) -> None:
        if rules is not None and not isinstance(rules, list | tuple):
            raise TlsRuleError(f"TLS rules must be a list, not {type(rules).__name__}")
        self.allow_all = rules is None
        self.names: list[str] = []
        for rule in rules or ():
            if not isinstance(rule, dict) or set(rule) != {"serverName"}:
                raise TlsRuleError(f"a TLS rule must be {{serverName: ...}}, not {rule!r}")
            self.names.append(check_name(rule["serverName"]))
        self._exact = {name: i for i, name in reversed(list(enumerate(self.names)))
                       if "*" not in name}
        self._patterns = [(i, re2.compile(name_regex(name)))
                          for i, name in enumerate(self.names) if "*" in name]

    def match(self, query: SniQuery) -> TlsMatch:
        if self.allow_all:
            return TlsMatch(True, "allowed (this peer is allowed on the port at L3/L4)")
        if not query.hello:
            return TlsMatch(False, "serverNames need the TLS ClientHello")
        if query.name is None:
            return TlsMatch(False, "the ClientHello names no server (no SNI), and "
                            "serverNames require one")
        name = query.name.lower()
        index = self._exact.get(name)
        if index is None:
            index = next((i for i, regex in self._patterns if regex.fullmatch(name)), None)
        if index is None:
            shown = ", ".join(self.names[:8]) + (", ..." if len(self.names) > 8 else "")
            return TlsMatch(False, f"server name {name!r} is not in serverNames [{shown}]")
        return TlsMatch(True, f"server name matches {self.names[index]!r}", index)

    def __repr__(self) -> str:
        return f"TlsRuleSet({'*' if self.allow_all else self.names})"
