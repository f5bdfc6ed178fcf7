"""The pure input checks behind the plugin and API handlers (what tests/e2e/fuzz/
found missing): Docker ids and booleans on the wire, CreateNetwork/CreateEndpoint
payloads, label text, policy names, and datapath API entries. Each case is one the
handlers used to accept with a wrong meaning, or to answer with a 500."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ciliumpy.api_datapath import _entry_from
from ciliumpy.policy_store import PolicyNameError, check_name
from driver.service import DriverError, parse_interface, parse_network
from policies.labels import check_text
from state.wire import PluginError, boolean, docker_id

HEX64 = "0123456789abcdef" * 4
V4 = [{"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16", "Gateway": "10.9.0.1/16"}]


# ---- state.wire ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [HEX64, "abc123", "A" * 64])
def test_docker_ids_accepted(value):
    assert docker_id({"NetworkID": value}, "NetworkID") == value


@pytest.mark.parametrize("value", ["../../etc/passwd", "a/b", "a b", "é", "a\x00b", "x" * 65,
                                   "lxc.0", "-1"])
def test_docker_ids_refused(value):
    with pytest.raises(PluginError, match="is not a Docker id") as caught:
        docker_id({"NetworkID": value}, "NetworkID")
    assert "\x00" not in caught.value.message


@pytest.mark.parametrize(("body", "message"), [({}, "missing field"), ({"NetworkID": None},
                         "missing field"), ({"NetworkID": 5}, "must be a string"),
                         ({"NetworkID": ["x"]}, "must be a string")])
def test_docker_id_missing_or_not_a_string(body, message):
    with pytest.raises(PluginError, match=message):
        docker_id(body, "NetworkID")


def test_docker_id_error_does_not_echo_a_huge_value():
    with pytest.raises(PluginError) as caught:
        docker_id({"NetworkID": "/" * 1_000_000}, "NetworkID")
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(("value", "expected"), [(None, False), (True, True), (False, False)])
def test_booleans(value, expected):
    assert boolean({"V6": value}, "V6") is expected
    assert boolean({}, "V6") is False


@pytest.mark.parametrize("value", [0, 1, "", "false", "true", [], {}])
def test_non_booleans_refused(value):
    with pytest.raises(PluginError, match="true or false"):
        boolean({"V6": value}, "V6")


# ---- driver.service: CreateNetwork ----------------------------------------------------
def network(options=None, ipv4=None, ipv6=None):
    return parse_network(HEX64, options or {}, V4 if ipv4 is None else ipv4, ipv6 or [])


@pytest.mark.parametrize(("mtu", "expected"), [("1400", 1400), (1400, 1400), (" 1500 ", 1500),
                                               ("65535", 65535)])
def test_mtu_forms(mtu, expected):
    generic = {"com.docker.network.driver.mtu": mtu}
    assert network({"com.docker.network.generic": generic}).mtu == expected


@pytest.mark.parametrize("mtu", ["1400.5", 1400.5, 1400.0, True, None, [], "١٤٠٠", "1e3", "9",
                                 "70000", ""])
def test_mtu_refused(mtu):
    with pytest.raises(DriverError, match="between 1280 and 65535"):
        network({"com.docker.network.generic": {"com.docker.network.driver.mtu": mtu}})


@pytest.mark.parametrize("value", ["false", "true", 0, 1, [], {}])
@pytest.mark.parametrize("option", ["com.docker.network.internal",
                                    "com.docker.network.enable_ipv6"])
def test_flags_must_be_booleans(option, value):
    with pytest.raises(DriverError, match="true or false"):
        network({option: value})


def test_flags_and_null_generic():
    assert network({"com.docker.network.internal": True}).internal is True
    assert network({"com.docker.network.internal": None,
                    "com.docker.network.generic": None}).internal is False


@pytest.mark.parametrize("generic", [0, "", [], False, "x"])
def test_generic_must_be_an_object(generic):
    with pytest.raises(DriverError, match="must be an object"):
        network({"com.docker.network.generic": generic})


@pytest.mark.parametrize(("entry", "message"), [
    ({"AddressSpace": ["CiliumpyLocal"], "Pool": "10.9.0.0/16"}, "--ipam-driver ciliumpy"),
    ({"AddressSpace": {"a": 1}, "Pool": "10.9.0.0/16"}, "--ipam-driver ciliumpy"),
    ({"AddressSpace": "CiliumpyLocal", "Pool": 167772160}, "Pool must be a string"),
    ({"AddressSpace": "CiliumpyLocal"}, "has no Pool"),
    ({"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16", "Gateway": 5},
     "Gateway must be a string"),
    ({"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16", "Gateway": []},
     "Gateway must be a string"),
    ({"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16", "Gateway": "10.8.0.1/16"},
     "outside the subnet"),
    ({"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16", "Gateway": "x" * 100_000},
     "invalid IPv4 pool or gateway"),
])
def test_bad_ipam_entries(entry, message):
    with pytest.raises(DriverError, match=message) as caught:
        network(ipv4=[entry])
    assert len(str(caught.value)) < 300


def test_gateway_is_optional_and_plain():
    assert network(ipv4=[{"AddressSpace": "CiliumpyLocal", "Pool": "10.9.0.0/16",
                          "Gateway": None}]).gateway_v4 is None
    assert network().gateway_v4 == "10.9.0.1"


# ---- driver.service: CreateEndpoint's Interface ---------------------------------------
def test_interfaces_accepted():
    assert parse_interface({"Address": "10.9.0.2/32", "AddressIPv6": "",
                            "MacAddress": "02:42:0A:09:00:02"}) == (
        "10.9.0.2/32", None, "02:42:0A:09:00:02")
    assert parse_interface({"AddressIPv6": "fd00::2/128", "MacAddress": None}) == (
        None, "fd00::2/128", None)


@pytest.mark.parametrize(("interface", "message"), [
    ({"Address": 5}, "must be a string"),
    ({"Address": ["10.9.0.2"]}, "must be a string"),
    ({"Address": "garbage"}, "is not an IPv4 address"),
    ({"Address": "fd00::2/128"}, "is not an IPv4 address"),
    ({"AddressIPv6": "10.9.0.2/32"}, "is not an IPv6 address"),
    ({"Address": "10.9.0.2/32", "MacAddress": 0}, "is not a MAC address"),
    ({"Address": "10.9.0.2/32", "MacAddress": "zz:zz:zz:zz:zz:zz"}, "is not a MAC address"),
    ({"Address": "10.9.0.2/32", "MacAddress": "02:42:0a:09:00"}, "is not a MAC address"),
    ({"Address": "10.9.0.2/32", "MacAddress": "02:42:0a:09:00:02\n"}, "is not a MAC address"),
])
def test_interfaces_refused(interface, message):
    with pytest.raises(DriverError, match=message):
        parse_interface(interface)


# ---- policies.labels -------------------------------------------------------------------
@pytest.mark.parametrize("text", ["app=web", "container:app=web", "k8s:a.b/c=d e", "名前=値"])
def test_label_text_accepted(text):
    check_text(text)


@pytest.mark.parametrize("text", ["app=web\x00", "\x1b[31m", "a\nb=c", "k8s:\t=v", "\x85",
                                  "a\ud800"])
def test_label_text_refused(text):
    with pytest.raises(ValueError, match="contains the character"):
        check_text(text)


# ---- ciliumpy.policy_store -------------------------------------------------------------
@pytest.mark.parametrize("name", ["web", "allow-http", "My Policy", "policy_l3", "a" * 253])
def test_policy_names_accepted(name):
    check_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../revision", "a/b", "..\\x", "a\x00",
                                  "\x1b[31m", "a\ud800", "a" * 254])
def test_policy_names_refused(name):
    with pytest.raises(PolicyNameError):
        check_name(name)


# ---- ciliumpy.api_datapath: entries written straight into the policy map ---------------
ENDPOINT = SimpleNamespace(ifindex=7)


def entry(**changes):
    body = {"direction": "ingress", "protocol": "tcp", "port": 80, "identity": 300,
            "deny": False, **changes}
    return _entry_from(body, ENDPOINT)


def test_entries_accepted():
    assert entry().port == 80 and entry(protocol="TCP").proto == 6
    assert entry(deny=True).deny is True
    assert entry(port=0, protocol="any").proto == 0


@pytest.mark.parametrize(("changes", "message"), [
    ({"port": "80"}, "port must be an integer"), ({"port": 80.0}, "port must be an integer"),
    ({"port": True}, "port must be an integer"),
    ({"port": float("inf")}, "port must be an integer"),
    ({"port": 2**63}, "port must be an integer"), ({"end_port": -1}, "end_port must be"),
    ({"end_port": 10}, "end_port >= port"), ({"identity": 1 << 24}, "identity must be"),
    ({"identity": "300"}, "identity must be"), ({"deny": "false"}, "deny must be"),
    ({"deny": 0}, "deny must be"), ({"protocol": 6}, "protocol must be"),
    ({"protocol": ["tcp"]}, "protocol must be"), ({"protocol": "any"}, "needs a protocol"),
    ({"direction": ["ingress"]}, "direction must be"),
])
def test_entries_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        entry(**changes)
