"""Docker's port map as ProgramExternalConnectivity sends it (driver/ports.py): what is
accepted and what is refused, with the reason a user sees from docker run."""

from __future__ import annotations

import pytest

from driver.ports import PORTMAP, PortError, parse_portmap


def portmap(*entries: dict) -> dict:
    return {PORTMAP: list(entries)}


def test_mappings_become_plain_records():
    assert parse_portmap({}) == [] == parse_portmap({PORTMAP: None})
    assert parse_portmap(portmap(
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 0},
        {"Proto": 17, "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353},
        {"Proto": 6, "Port": 80, "HostPort": 9000, "HostPortEnd": 9010},
        {"Proto": 6, "Port": 81, "HostPort": 0})) == [
        {"proto": "TCP", "port": 80, "host_ip": "", "host_port": 8080, "host_port_end": 8080},
        {"proto": "UDP", "port": 53, "host_ip": "127.0.0.1", "host_port": 5353,
         "host_port_end": 5353},
        {"proto": "TCP", "port": 80, "host_ip": "", "host_port": 9000, "host_port_end": 9010},
        {"proto": "TCP", "port": 81, "host_ip": "", "host_port": 0, "host_port_end": 0}]


@pytest.mark.parametrize("entry,says", [
    ({"Proto": 132, "Port": 80, "HostPort": 1}, "SCTP"),
    ({"Proto": 1, "Port": 80}, "Proto must be"),
    ({"Proto": 6, "Port": 0, "HostPort": 1}, "Port must be 1..65535"),
    ({"Proto": 6, "Port": 80, "HostPort": 70000}, "HostPort must be"),
    ({"Proto": 6, "Port": 80, "HostPort": 90, "HostPortEnd": 80}, "below HostPort"),
    ({"Proto": 6, "Port": 80, "HostIP": "nope"}, "not an address"),
    ({"Proto": 6, "Port": 80, "HostIP": "::1"}, "IPv6 host addresses"),
    ({"Proto": 6, "Port": True}, "Port must be"),
])
def test_unpublishable_mappings_say_why(entry, says):
    with pytest.raises(PortError, match=says):
        parse_portmap(portmap(entry))


def test_a_portmap_that_is_not_a_list_is_refused():
    with pytest.raises(PortError, match="list of port mappings"):
        parse_portmap({PORTMAP: "8080:80"})
