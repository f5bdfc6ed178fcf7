"""Named ports (``port: http``): how a container declares one (its
``ciliumpy.port.<name>`` label), what the parser accepts and refuses, and which
numbers the rules resolve to for ingress (the endpoint's own), egress (each
destination's) and the trace."""

from __future__ import annotations

import pytest

from policies import named_ports
from policies.engine import Peer, labels_of
from policies.parser import PolicyError, parse_text
from policies.resolve import Universe, resolve
from policies.trace import Side, trace

SERVER = ["app=server", "ciliumpy.port.web=8080", "ciliumpy.port.dns=53/udp"]
OTHER = ["app=other", "ciliumpy.port.web=9090"]
CLIENT = ["app=client"]
IDENTITIES = {256: SERVER, 257: CLIENT, 258: OTHER}


def rules_of(text: str):
    (policy,) = parse_text(text)
    return policy.rules


INGRESS = """spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: web, protocol: TCP}, {port: dns}]}]
"""
EGRESS = """spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: server}}, {matchLabels: {app: other}}]
    toPorts: [{ports: [{port: web}]}]
  - toPorts: [{ports: [{port: dns, protocol: UDP}]}]
"""


def entries(text: str, labels: list[str], direction: str) -> set[tuple[int, int, int]]:
    resolved = resolve(rules_of(text), labels_of(labels), Universe(IDENTITIES, {}),
                       "default")
    return {(e.identity, e.proto, e.port) for e in resolved.entries
            if e.direction == direction}


@pytest.mark.parametrize("labels, expected", [
    (["container:ciliumpy.port.web=8080"], {"web": (0, 8080)}),
    (["ciliumpy.port.dns=53/UDP"], {"dns": (17, 53)}),
    (["ciliumpy.port.web=0", "ciliumpy.port.x=70000", "ciliumpy.port.y=80/icmp",
      "ciliumpy.port.Bad=80", "ciliumpy.port.a--b=80", "ciliumpy.port.123=80",
      "ciliumpy.port.toolongname12345=80"], {}),  # each malformed: declares nothing
])
def test_containers_declare_named_ports_with_a_label(labels, expected):
    assert named_ports.declared(labels_of(labels)) == expected


def test_names_load_and_bad_names_or_ranges_are_refused():
    port = rules_of(INGRESS)[0].ingress[0].to_ports[0].ports[0]
    assert (port.name, port.port, port.protocol, str(port)) == ("web", 0, "TCP", "web/TCP")
    with pytest.raises(PolicyError, match="endPort cannot be combined with the named port"):
        rules_of(INGRESS.replace("{port: web, protocol: TCP}", "{port: web, endPort: 90}"))
    with pytest.raises(PolicyError, match="'Web_1' is neither a port number nor a port name"):
        rules_of(INGRESS.replace("port: web,", "port: Web_1,"))


def test_ingress_names_resolve_on_the_endpoint_itself():
    # web is TCP 8080 (asked TCP), dns is declared UDP 53 (asked ANY: only UDP)
    assert entries(INGRESS, SERVER, "ingress") == {(257, 6, 8080), (257, 17, 53)}
    # a server without the labels: the rule matches nothing (no port entry at all)
    assert entries(INGRESS, ["app=server"], "ingress") == set()


def test_egress_names_resolve_on_each_destination():
    found = entries(EGRESS, CLIENT, "egress")
    # web: 8080 on the server, 9090 on the other; every protocol for ANY
    assert {(i, p) for i, _, p in found if i} == {(256, 8080), (258, 9090)}
    assert {proto for i, proto, p in found if i == 256} == {6, 17, 132}
    # the L4-only element (any peer): every number any peer declares for dns on UDP
    assert {(proto, p) for i, proto, p in found if i == 0} == {(17, 53)}


def test_undeclared_names_are_reported_for_the_import_warning():
    rules = rules_of(INGRESS.replace("port: dns", "port: metrics"))
    assert named_ports.undeclared(rules, [["container:ciliumpy.port.web=8080"]]) == ["metrics"]
    assert named_ports.undeclared(rules, [["ciliumpy.port.web=1", "ciliumpy.port.metrics=2"]]
                                  ) == []
    assert "no container declares it yet" in named_ports.warning("metrics")


def test_trace_resolves_the_name_on_the_destination():
    rules = rules_of(INGRESS)
    server = Side(Peer(labels_of(SERVER)), managed=True)
    client = Side(Peer(labels_of(CLIENT)), managed=True)
    assert trace(rules, client, server, "TCP", 8080, "default").verdict == "ALLOWED"
    assert trace(rules, client, server, "TCP", 9090, "default").verdict == "DENIED"
    bare = Side(Peer(labels_of(["app=server"])), managed=True)
    assert trace(rules, client, bare, "TCP", 8080, "default").verdict == "DENIED"


def test_to_services_selects_backends_by_selector_or_membership_label():
    from policies import to_services

    selectors = {"web": {"app": "server"}, "db": None, "api": {"app": "server", "v": "2"}}
    server = labels_of(SERVER)
    assert to_services.backing(server, selectors) == ("web",)
    member = labels_of(["app=x", "ciliumpy.service=db:5432,cache"])
    assert to_services.backing(member, selectors) == ("db",)
    assert to_services.backing(labels_of(CLIENT), selectors) == ()
    text = """spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toServices: [{k8sService: {serviceName: web}}, {k8sService: {serviceName: gone}}]
"""
    rules = rules_of(text)
    assert to_services.used(rules) == {"web", "gone"}
    universe = Universe(IDENTITIES, {}, services={"web": {"app": "server"}})
    resolved = resolve(rules, labels_of(CLIENT), universe, "default")
    assert {e.identity for e in resolved.entries if e.direction == "egress"} == {256}
