"""toFQDNs and rules.dns: Cilium's name matching, what the parser accepts and refuses,
and how addresses learnt from DNS become peers (identities) of toFQDNs rules."""

from __future__ import annotations

import ipaddress
import re
import time

import pytest

from policies.engine import labels_of
from policies.fqdn import FQDNCache, FQDNSelector, NameMatcher
from policies.parser import PolicyError, parse_text
from policies.resolve import (
    FQDN_IDENTITY_BASE,
    Entry,
    Universe,
    cidr_identities,
    fqdn_identities,
    resolve,
)

BASE = "spec:\n  endpointSelector: {matchLabels: {app: client}}\n"
FQDN_RULE = BASE + """  egress:
  - toFQDNs: [{matchName: allowed.test}, {matchPattern: "*.wild.test"}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toEntities: [world]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*"}]}
"""


@pytest.mark.parametrize("selector, name, expected", [
    (FQDNSelector(match_name="cilium.io"), "cilium.io", True),
    (FQDNSelector(match_name="cilium.io"), "CILIUM.io.", True),
    (FQDNSelector(match_name="cilium.io"), "sub.cilium.io", False),
    (FQDNSelector(match_name="cilium.io"), "ciliumXio", False),  # the dot is literal
    (FQDNSelector(match_pattern="*.cilium.io"), "sub.cilium.io", True),
    (FQDNSelector(match_pattern="*.cilium.io"), "cilium.io", False),
    (FQDNSelector(match_pattern="*.cilium.io"), "a.sub.cilium.io", False),
    (FQDNSelector(match_pattern="*cilium.io"), "cilium.io", True),  # zero characters
    (FQDNSelector(match_pattern="sub*.cilium.io"), "sub-1.cilium.io", True),
    (FQDNSelector(match_pattern="*"), "anything.at.all", True),
    (FQDNSelector(match_pattern="*"), "x", True),
    (FQDNSelector(), "cilium.io", False),
])
def test_names_match_as_in_cilium(selector, name, expected):
    assert selector.matches(name) is expected
    matcher = NameMatcher([{"matchName": selector.match_name,
                            "matchPattern": selector.match_pattern}])
    assert matcher.matches(name) is expected


def test_name_matcher_is_a_union_and_empty_allows_nothing():
    matcher = NameMatcher([{"matchName": "a.test"}, {"matchPattern": "*.b.test"}])
    assert matcher.matches("a.test") and matcher.matches("x.b.test")
    assert not matcher.matches("b.test") and not matcher.matches("evil.test")
    assert not NameMatcher([]).matches("a.test")


def test_to_fqdns_and_dns_rules_load():
    (policy,) = parse_text(FQDN_RULE)
    assert policy.warnings == []
    fqdn_element, dns_element = policy.rules[0].egress
    assert fqdn_element.fqdns == (FQDNSelector("allowed.test"), FQDNSelector("", "*.wild.test"))
    assert fqdn_element.has_peer
    assert dns_element.to_ports[0].l7_kind == "dns"
    assert dns_element.to_ports[0].l7_rules == ((("matchPattern", "*"),),)


@pytest.mark.parametrize("element, message", [
    ("{toFQDNs: [{matchName: a.test}], toEndpoints: [{}]}",
     "combining toEndpoints and toFQDNs is not supported"),
    ("{toFQDNs: [{matchName: a.test, matchPattern: '*.test'}]}",
     "toFQDNs[0]: only one of matchName or matchPattern is allowed"),
    ("{toFQDNs: [{matchName: 'a b.test'}]}", "invalid characters in matchName"),
    ("{toFQDNs: [{matchPattern: 'a?.test'}]}", "invalid characters in matchPattern"),
    ("{toFQDNs: [{matchname: a.test, bogus: 1}]}", "unknown field 'bogus' in an FQDN selector"),
    ("{toPorts: [{ports: [{port: '53', endPort: 54, protocol: UDP}], "
     "rules: {dns: [{matchName: a.test}]}}]}", "DNS rules need one port (53), not a range"),
    ("{toPorts: [{ports: [{port: '53', protocol: UDP}], "
     "rules: {dns: [{matchName: 'a/b'}]}}]}", "rules.dns[0]: invalid characters in matchName"),
])
def test_bad_fqdn_rules_are_refused_precisely(element, message):
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_text(BASE + f"  egress:\n  - {element}\n")


def test_to_fqdns_cannot_deny_nor_appear_on_ingress():
    with pytest.raises(PolicyError, match="toFQDNs cannot deny"):
        parse_text(BASE + "  egressDeny:\n  - toFQDNs: [{matchName: a.test}]\n")
    with pytest.raises(PolicyError, match="unknown field 'toFQDNs' in an ingress rule"):
        parse_text(BASE + "  ingress:\n  - toFQDNs: [{matchName: a.test}]\n")


def test_an_empty_fqdn_selector_loads_with_a_warning():
    (policy,) = parse_text(BASE + "  egress:\n  - toFQDNs: [{}]\n")
    assert policy.warnings == ["spec.egress[0].toFQDNs[0]: an FQDN selector without "
                               "matchName or matchPattern selects no name"]


def universe_with(rules, addresses: dict[str, tuple[str, ...]]) -> tuple[Universe, dict]:
    cidrs = cidr_identities(rules)
    learnt = {ipaddress.ip_address(ip): names for ip, names in addresses.items()}
    fqdns = fqdn_identities(cidrs, learnt, {})
    return Universe({256: ["container:app=client"]}, cidrs, fqdns), fqdns


def egress_of(rules, universe) -> set[Entry]:
    resolved = resolve(rules, labels_of(["app=client"]), universe, "default")
    return {e for e in resolved.entries if e.direction == "egress"}


def test_to_fqdns_allows_exactly_the_addresses_learnt_for_its_names():
    (policy,) = parse_text(FQDN_RULE)
    universe, fqdns = universe_with(policy.rules, {
        "10.99.0.10": ("allowed.test.",), "10.99.0.11": ("x.wild.test.",),
        "10.99.0.12": ("denied.test.",), "10.99.0.13": ("a.b.wild.test.",)})
    numbers = {str(prefix.network_address): number for prefix, (number, _) in fqdns.items()}
    tcp80 = {e.identity for e in egress_of(policy.rules, universe) if e.port == 80}
    assert tcp80 == {numbers["10.99.0.10"], numbers["10.99.0.11"]}
    # the DNS element (toEntities world) selects every learnt address too: they are world
    dns = {e.identity for e in egress_of(policy.rules, universe) if e.port == 53}
    assert set(numbers.values()) <= dns
    assert all(e.l7_kind == "dns" for e in egress_of(policy.rules, universe) if e.port == 53)


def test_dns_rules_on_protocol_any_open_tcp_and_udp_never_sctp():
    (policy,) = parse_text(FQDN_RULE)
    universe, _ = universe_with(policy.rules, {})
    dns = [e for e in egress_of(policy.rules, universe) if e.port == 53]
    assert {e.proto for e in dns} == {6, 17}, dns  # SCTP (132) could not be proxied


def test_nothing_learnt_allows_nothing():
    (policy,) = parse_text(FQDN_RULE)
    universe, _ = universe_with(policy.rules, {})
    assert not [e for e in egress_of(policy.rules, universe) if e.port == 80]


def test_fqdn_identities_are_stable_and_shared_with_a_cidr_rule():
    (policy,) = parse_text(BASE + "  egress:\n  - toCIDR: [10.99.0.10/32]\n"
                           "  - toFQDNs: [{matchName: allowed.test}]\n")
    cidrs = cidr_identities(policy.rules)
    first = fqdn_identities(cidrs, {ipaddress.ip_address("10.99.0.10"): ("allowed.test.",),
                                    ipaddress.ip_address("10.99.0.20"): ("allowed.test.",)}, {})
    net = ipaddress.ip_network
    assert first[net("10.99.0.10/32")][0] == cidrs[net("10.99.0.10/32")]
    assert first[net("10.99.0.20/32")][0] == FQDN_IDENTITY_BASE
    again = fqdn_identities(cidrs, {ipaddress.ip_address("10.99.0.30"): ("allowed.test.",),
                                    ipaddress.ip_address("10.99.0.20"): ("allowed.test.",)},
                            first)
    assert again[net("10.99.0.20/32")][0] == FQDN_IDENTITY_BASE  # kept
    assert again[net("10.99.0.30/32")][0] == FQDN_IDENTITY_BASE + 1  # never reused
    universe = Universe({}, cidrs, first)
    entries = egress_of(policy.rules, universe)
    shared = cidrs[net("10.99.0.10/32")]
    assert {e.identity for e in entries} == {shared, FQDN_IDENTITY_BASE}


def test_cache_applies_the_minimum_ttl_and_expires():
    cache = FQDNCache(min_ttl=5)
    assert cache.learn("Allowed.test", ["10.99.0.10"], ttl=1, now=100.0)
    assert not cache.learn("allowed.test.", ["10.99.0.10"], ttl=1, now=101.0)  # known
    assert cache.addresses(104.0) == {ipaddress.ip_address("10.99.0.10"): ("allowed.test.",)}
    assert cache.next_expiry() == 106.0
    assert not cache.expire(105.9)
    assert cache.expire(106.0)
    assert cache.addresses(106.0) == {} and cache.names == {}
    cache.learn("a.test", ["10.99.0.1"], ttl=60, now=0.0)
    cache.learn("b.test", ["10.99.0.1"], ttl=10, now=0.0)
    assert cache.addresses(1.0) == {ipaddress.ip_address("10.99.0.1"): ("a.test.", "b.test.")}
    assert cache.addresses(30.0) == {ipaddress.ip_address("10.99.0.1"): ("a.test.",)}
    with pytest.raises(ValueError):
        cache.learn("c.test", ["not-an-ip"], ttl=1, now=0.0)


def test_cache_export_and_restore_keep_expiries_across_clocks():
    cache = FQDNCache(min_ttl=0)
    cache.learn("a.test", ["10.99.0.1", "fd00::1"], ttl=60, now=100.0)
    cache.learn("b.test", ["10.99.0.2"], ttl=5, now=100.0)
    saved = cache.export(now=110.0, wall=5000.0)  # a.test: 50 s left, b.test: expired
    assert saved == {"a.test.": {"10.99.0.1": 5050.0, "fd00::1": 5050.0}}
    again = FQDNCache(min_ttl=300)  # a restart: another monotonic clock, 20 s later
    assert again.restore(saved, now=7.0, wall=5020.0) == 2
    assert again.next_expiry() == 37.0  # its own 30 s left, not the minimum TTL
    assert set(again.addresses(8.0)) == {ipaddress.ip_address("10.99.0.1"),
                                         ipaddress.ip_address("fd00::1")}
    # malformed or expired entries are skipped, never raised
    junk = {"x.test": {"not-an-ip": 9e9, "10.0.0.9": "soon", "10.0.0.8": 1.0}, "y": [1],
            7: {}}
    assert FQDNCache(0).restore(junk, now=0.0, wall=100.0) == 0
    assert FQDNCache(0).restore(None, now=0.0, wall=100.0) == 0


def test_manager_keeps_the_cache_across_a_restart_and_retries_a_failed_apply(tmp_path):
    from ciliumpy.fqdn import FqdnManager

    applied: list[dict] = []
    fail = [True]

    def apply(addresses: dict) -> None:
        if fail[0]:
            raise RuntimeError("policy manager busy")
        applied.append(addresses)

    first = FqdnManager(str(tmp_path / "fqdn.sock"), 300, apply)
    first.start()
    try:
        with pytest.raises(RuntimeError):
            first.learn("a.test", ["10.99.0.1"], 60)
        fail[0] = False  # the expiry thread retries within about a second
        deadline = time.time() + 5
        while not applied and time.time() < deadline:
            time.sleep(0.05)
        assert applied and ipaddress.ip_address("10.99.0.1") in applied[-1]
    finally:
        first.stop()
    applied.clear()
    second = FqdnManager(str(tmp_path / "fqdn.sock"), 300, apply)
    second.start()
    try:
        assert applied and set(applied[0]) == {ipaddress.ip_address("10.99.0.1")}
        assert [row["name"] for row in second.view()] == ["a.test."]
    finally:
        second.stop()


def test_proxy_state_judges_dns_queries_for_udp_and_tcp_entries():
    from ciliumpy.proxy_state import l7_entries
    from policies.fqdn import DnsQuery
    from proxy.state import ProxyState

    (policy,) = parse_text(FQDN_RULE.replace("toEntities: [world]", "toCIDR: [10.0.0.53/32]")
                           .replace('{matchPattern: "*"}', "{matchName: allowed.test}"))
    universe, _ = universe_with(policy.rules, {})
    resolved = resolve(policy.rules, labels_of(["app=client"]), universe, "default")
    entries = l7_entries(["10.1.0.5"], resolved.entries, ("http", "kafka", "dns"))
    assert [(e["port"], e["parser"], e["dns"]) for e in entries] == [
        (53, "dns", [{"matchName": "allowed.test"}])]
    cidr_identity = entries[0]["remotes"][0]
    state = ProxyState({"identities": {"10.1.0.5": 256, "10.0.0.53": cidr_identity},
                        "l7": entries})
    assert state.parser("10.1.0.5", "10.0.0.53", 53) == "dns"
    assert state.evaluate("10.1.0.5", "10.0.0.53", 53, DnsQuery("allowed.test.")).allowed
    denied = state.evaluate("10.1.0.5", "10.0.0.53", 53, DnsQuery("other.test."))
    assert not denied.allowed and "no DNS rule matches other.test." in denied.reason
    # another resolver is not the rule's peer: denied although the name is allowed
    assert not state.evaluate("10.1.0.5", "10.0.0.54", 53, DnsQuery("allowed.test.")).allowed


def test_fqdn_manager_validates_what_the_proxy_says_and_changes_nothing_on_error():
    from ciliumpy.fqdn import FqdnManager

    applied: list[dict] = []
    manager = FqdnManager("/nonexistent/fqdn.sock", 60, applied.append)
    for bad in ({"name": "a.test", "ips": ["300.1.1.1"], "ttl": 5},
                {"name": "a.test", "ips": ["10.0.0.1"], "ttl": -1},
                {"name": "", "ips": ["10.0.0.1"], "ttl": 5},
                {"name": "a.test", "ips": "10.0.0.1", "ttl": 5},
                {"ips": [], "ttl": 5}):
        with pytest.raises((ValueError, KeyError)):
            manager.learn_message(bad)
    assert applied == [] and manager.cache.names == {}
    manager.learn_message({"name": "a.test", "ips": ["10.0.0.1"], "ttl": 5})
    manager.learn_message({"name": "a.test", "ips": ["10.0.0.1"], "ttl": 5})  # known
    assert applied == [{ipaddress.ip_address("10.0.0.1"): ("a.test.",)}]
    assert [row["ip"] for row in manager.view()] == ["10.0.0.1"]


def test_the_cache_is_bounded_per_name_and_in_names():
    cache = FQDNCache(min_ttl=0, max_ips_per_name=3, max_names=2)
    cache.learn("a.test", [f"192.0.2.{i}" for i in range(1, 6)], ttl=10, now=0)
    assert len(cache.names["a.test."]) == 3
    cache.learn("a.test", ["192.0.2.9"], ttl=100, now=1)  # the newest stays
    assert ipaddress.ip_address("192.0.2.9") in cache.names["a.test."]
    assert len(cache.names["a.test."]) == 3
    cache.learn("b.test", ["198.51.100.1"], ttl=5, now=1)
    cache.learn("c.test", ["198.51.100.2"], ttl=50, now=1)
    assert set(cache.names) == {"a.test.", "c.test."}  # b expired soonest: it went
