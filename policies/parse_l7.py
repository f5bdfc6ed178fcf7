"""Readers of a port rule's L7 parts: ``rules`` (``http``, ``kafka``, ``dns``) and
``serverNames`` (TLS SNI), each validated as Cilium validates it, into the port rule's
L7 kind and its rules in a canonical, hashable form."""

from __future__ import annotations

import re
from typing import Any

from policies.http_rules import RuleError, check_path
from policies.kafka_rules import KafkaRuleError, check_rule
from policies.model import PortProtocol
from policies.parse_parts import Ctx, as_list, fields, fqdn_selector
from policies.tls_rules import TlsRuleError, check_name


def l7_rules(ctx: Ctx, obj: Any, path: str, ports: tuple[PortProtocol, ...], deny: bool,
        direction: str) -> tuple[str | None, tuple]:
    obj = fields(ctx, obj, path, ("http", "kafka", "dns", "l7proto", "l7"), "L7 rules")
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
        if port.port == 0 and not port.name:
            ctx.fail(f"{path.rsplit('.', 1)[0]}.ports[{i}].port", "L7 rules need a port, not 0")
    if kind == "dns" and direction == "ingress":
        ctx.fail(f"{path}.dns", "DNS rules are not allowed on ingress")
    for i, port in enumerate(ports):
        here = f"{path.rsplit('.', 1)[0]}.ports[{i}]"
        if kind == "dns" and port.end_port:
            ctx.fail(f"{here}.endPort", "DNS rules need one port (53), not a range")
        if kind == "dns" and port.protocol == "SCTP":
            ctx.fail(f"{here}.protocol", "DNS rules apply to UDP and TCP, not SCTP")
    rules = []
    for i, rule in enumerate(as_list(ctx, obj[kind], f"{path}.{kind}")):
        here = f"{path}.{kind}[{i}]"
        if kind == "http":
            rule = fields(ctx, rule, here, ("method", "path", "host", "headers",
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
            matches = []
            for j, match in enumerate(as_list(ctx, rule.get("headerMatches") or [],
                                            f"{here}.headerMatches")):
                match = fields(ctx, match, f"{here}.headerMatches[{j}]",
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
            rule = fields(ctx, rule, here, ("role", "apiKey", "apiVersion", "clientID",
                                             "topic"), "a Kafka rule")
            try:  # what the proxy compiles (policies.kafka_rules, Cilium's Sanitize)
                check_rule(rule)
            except KafkaRuleError as exc:
                ctx.fail(f"{here}.{exc.field}" if exc.field else here, str(exc))
        else:
            found = fqdn_selector(ctx, rule, here, "a DNS rule")
            rule = {k: v for k, v in (("matchName", found.match_name),
                                      ("matchPattern", found.match_pattern)) if v}
        rules.append(rule)
    return kind, tuple(tuple(sorted(r.items())) for r in rules)


def server_names(ctx: Ctx, obj: Any, path: str, ports: tuple[PortProtocol, ...],
                 has_l7: bool) -> tuple[str | None, tuple]:
    """``serverNames``: the L7 kind "tls" with one rule per name (``[]``: none, as in
    Cilium). Each port must be TCP and not 0: the proxy reads the ClientHello."""
    names = as_list(ctx, obj, path)
    if not names:
        return None, ()
    if has_l7:
        # Cilium: "ServerNames are not allowed with L7 rules without TLS termination";
        # ciliumpy does not terminate TLS, so the HTTP/Kafka inside cannot be read
        ctx.fail(path, "serverNames are not allowed with L7 rules (rules) without TLS "
                 "termination, and ciliumpy does not terminate TLS (terminatingTLS): the "
                 "proxy cannot read requests inside TLS. Use serverNames alone, or L7 "
                 "rules on a plain-text port")
    for i, port in enumerate(ports):
        where = f"{path.rsplit('.', 1)[0]}.ports[{i}]"
        if port.protocol != "TCP":
            ctx.fail(f"{where}.protocol", f"serverNames (TLS) apply to TCP only, not "
                     f"{port.protocol}: write protocol: TCP")
        if port.port == 0:
            ctx.fail(f"{where}.port", "serverNames need a port, not 0")
    rules = []
    for i, name in enumerate(names):
        try:
            rules.append((("serverName", check_name(name)),))
        except TlsRuleError as exc:
            ctx.fail(f"{path}[{i}]", str(exc))
    if not ports:
        ctx.fail(path, "serverNames need ports (the proxy reads the TLS handshake on a "
                 "given TCP port)")
    return "tls", tuple(dict.fromkeys(rules))
