"""The service model (services/model.py): parsing and validation say what is wrong;
backend resolution from labels is the same on every node."""

from __future__ import annotations

import pytest

from services.model import (
    Service,
    membership_warnings,
    parse_backend,
    parse_frontend,
    parse_membership,
    resolve_backends,
)


def test_frontends_and_backends_parse_in_their_canonical_forms():
    assert str(parse_frontend("10.96.0.10:80")) == "10.96.0.10:80/TCP"
    assert str(parse_frontend("[fd00::10]:53/udp")) == "[fd00::10]:53/UDP"
    backend = parse_backend("10.0.1.5:8080,weight=3")
    assert (str(backend), backend.weight, backend.spec()) == (
        "10.0.1.5:8080", 3, "10.0.1.5:8080,weight=3")
    assert parse_backend("[fd00::5]:80,weight=0").weight == 0


@pytest.mark.parametrize("text,says", [
    ("10.96.0.10", "port is required"), ("10.96.0.10:0", "1..65535"),
    ("10.96.0.10:80/sctp", "tcp or udp"), ("fd00::1:80", "brackets"),
    ("web:80", "not an IP address"), ("0.0.0.0:80", "cannot be a service address"),
    (80, "must be a string"),
])
def test_bad_frontends_say_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_frontend(text)


@pytest.mark.parametrize("text,says", [
    ("10.0.0.1:80,weight=-1", "weight=N"), ("10.0.0.1:80,prio=2", "weight=N"),
    ("10.0.0.1:70000", "1..65535"),
])
def test_bad_backends_say_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_backend(text)


def service(**fields) -> Service:
    data = {"name": "web", "frontend": "10.96.0.10:80"}
    data.update(fields)
    return Service.from_json(data)


def test_a_service_round_trips_through_json():
    original = service(backends=["10.0.0.2:80,weight=2"], selector={"app": "web"},
                       target_port=8080, affinity="client", maglev_size=1021)
    assert Service.from_json(original.to_json()) == original


@pytest.mark.parametrize("fields,says", [
    ({"name": "Web"}, "lower-case"), ({"name": "-web"}, "lower-case"),
    ({"maglev_size": 1000}, "16381"), ({"affinity": "sticky"}, "none, client"),
    ({"backends": ["[fd00::2]:80"]}, "family"), ({"backends": "10.0.0.2:80"}, "a list"),
    ({"backends": ["10.0.0.2:80", "10.0.0.2:80"]}, "twice"),
    ({"selector": {"app": 1}}, "string values"), ({"target_port": "x"}, "not 1..65535"),
    ({"vip": "1.2.3.4"}, "unknown service field"),
])
def test_bad_services_say_why(fields, says):
    with pytest.raises(ValueError, match=says):
        service(**fields)


def endpoint(labels: dict, *addresses: str) -> dict:
    return {"labels": labels, "addresses": list(addresses)}


def test_backends_come_from_the_list_the_selector_and_the_membership_label():
    web = service(backends=["10.0.0.9:80,weight=3"], selector={"app": "web"},
                  target_port=8080)
    found = resolve_backends(web, [
        endpoint({"app": "web", "tier": "a"}, "10.0.0.3", "fd00::3"),
        endpoint({"app": "api"}, "10.0.0.4"),
        endpoint({"ciliumpy.service": "web:9090,other"}, "10.0.0.1/24"),
        endpoint({"ciliumpy.service": "web"}, "10.0.0.5"),
        endpoint({"app": "web"}, "10.0.0.9"),  # listed too: keeps the listed weight
        endpoint({"ciliumpy.service": "Bad Name"}, "10.0.0.6"),
    ])
    assert [(b.spec()) for b in found] == [
        "10.0.0.1:9090", "10.0.0.3:8080", "10.0.0.5:8080", "10.0.0.9:80,weight=3",
        "10.0.0.9:8080"]
    assert membership_warnings([endpoint({"ciliumpy.service": "Bad Name"})])


def test_an_empty_selector_selects_nothing_and_order_never_matters():
    web = service()
    assert resolve_backends(web, [endpoint({"app": "web"}, "10.0.0.3")]) == []
    sel = service(selector={"app": "web"})
    eps = [endpoint({"app": "web"}, f"10.0.0.{i}") for i in (5, 3, 4)]
    assert resolve_backends(sel, eps) == resolve_backends(sel, list(reversed(eps)))


def test_membership_labels_parse():
    assert parse_membership("web:80,api") == [("web", 80), ("api", None)]
    with pytest.raises(ValueError, match="not a service name"):
        parse_membership("web:80,")
