"""The helpers the CLI and the agent API share (ciliumpy.lookup): every accepted form
of ``--dport`` and of an endpoint name, and the error for what is not one of them; plus
the CLI's single list printer (ciliumpy.cli.output.show_list)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ciliumpy import lookup
from ciliumpy.cli import output
from ciliumpy.lookup import AmbiguousEndpointError, DPortError, find_endpoint, parse_dport


@pytest.mark.parametrize(("text", "expected"), [
    ("80", ("TCP", 80)),
    ("80/tcp", ("TCP", 80)),
    ("80/TCP", ("TCP", 80)),
    (" 443/tcp ", ("TCP", 443)),
    ("53/udp", ("UDP", 53)),
    ("9/sctp", ("SCTP", 9)),
    ("8080/any", ("TCP", 8080)),  # a trace follows one connection: any means TCP
    ("0", ("TCP", 0)),  # the --dport default: no particular port
    ("", ("TCP", 0)),
    ("65535/udp", ("UDP", 65535)),
    ("icmp", ("ICMP", 256 + 8)),  # a ping: ICMP types travel as 256 + type
    ("ICMP", ("ICMP", 256 + 8)),
    ("icmpv6", ("ICMPV6", 256 + 128)),
    ("icmp/0", ("ICMP", 256)),
    ("icmp/EchoReply", ("ICMP", 256)),
    ("icmpv6/NeighborSolicitation", ("ICMPV6", 256 + 135)),
])
def test_parse_dport_accepts(text, expected):
    assert parse_dport(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("80x", "port '80x' is not a number 0..65535"),
    ("http", "port 'http' is not a number"),
    ("/tcp", "port '' is not a number"),
    ("-1", "port '-1' is not a number"),
    ("65536", "port '65536' is not a number 0..65535"),
    ("٨٠", "is not a number"),  # non-ASCII digits: int() would take them, ports do not
    ("80-90", "port range '80-90'"),
    ("80-90/udp", "port range '80-90'"),
    ("80/", "no protocol after '/'"),
    ("80/foo", "unknown protocol 'foo'"),
    ("80/icmp", "icmp has no ports: give 'icmp'"),
    ("0/icmpv6", "icmpv6 has no ports"),
    ("icmp/300", "ICMP type 300 is out of range"),
    ("icmp/PacketTooBig", "not an IPv4 ICMP type"),
])
def test_parse_dport_refuses_with_a_clear_message(text, message):
    with pytest.raises(DPortError, match=message.replace(".", r"\.")):
        parse_dport(text)


def test_dport_error_is_a_value_error():
    # the agent API answers every ValueError of a trace request with 400
    assert issubclass(DPortError, ValueError)
    assert issubclass(AmbiguousEndpointError, ValueError)


@dataclass
class _Endpoint:
    endpoint_id: str
    container_id: str | None = None
    container_name: str | None = None
    ifindex: int = 0
    ipv4: str | None = None
    ipv6: str | None = None

    @property
    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]


WEB = _Endpoint("a1" * 32, "c1" * 32, "web", 7, "10.0.0.2/16", "fd00::2/64")
DB = _Endpoint("a2" * 32, "c2" * 32, "db", 8, "10.0.0.3/16")
NEW = _Endpoint("b3" * 32)  # created, not joined: no container, no ifindex, no address
ENDPOINTS = [WEB, DB, NEW]


@pytest.mark.parametrize(("text", "expected"), [
    ("a1" * 32, WEB),  # endpoint id
    ("a1a1a1a1a1a1", WEB),  # endpoint id prefix (what the tables show)
    ("b3", NEW),
    ("web", WEB),  # container name
    (" db ", DB),
    ("c1" * 32, WEB),  # container id
    ("c2c2c2", DB),  # container id prefix
    ("10.0.0.2", WEB),  # IPv4, the address without its prefix length
    ("fd00::2", WEB),  # IPv6
    ("10.0.0.3", DB),
    ("7", WEB),  # ifindex of the host-side interface
    ("8", DB),
])
def test_find_endpoint_accepts(text, expected):
    assert find_endpoint(ENDPOINTS, text) is expected


@pytest.mark.parametrize("text", [
    "", "  ",  # every id starts with "": empty must not pick the first endpoint
    "nope", "10.0.0.9", "fd00::9",
    "0",  # ifindex 0 is "not set yet", not an interface
    "9",
    "a1" * 33,  # longer than any id
])
def test_find_endpoint_finds_nothing(text):
    assert find_endpoint(ENDPOINTS, text) is None


def test_find_endpoint_refuses_an_ambiguous_prefix():
    with pytest.raises(AmbiguousEndpointError, match=r"'a' matches several endpoints "
                       r"\(a1a1a1a1a1a1, a2a2a2a2a2a2\)"):
        find_endpoint(ENDPOINTS, "a")
    with pytest.raises(AmbiguousEndpointError):
        find_endpoint(ENDPOINTS, "c")  # container id prefixes


def test_find_endpoint_exact_beats_prefix():
    # a container named like the start of another endpoint's id is still found by name
    named = _Endpoint("d4" * 32, container_name="a1")
    assert find_endpoint([WEB, named], "a1") is named
    # an ifindex beats an id that happens to start with the same digits
    digits = _Endpoint("71" + "0" * 62, ifindex=3)
    assert find_endpoint([digits, WEB], "7") is WEB


def test_find_endpoint_ip_matches_addresses_only():
    # an IP text never matches a name or id, even a container named like it
    odd = _Endpoint("e5" * 32, container_name="10.0.0.7")
    assert find_endpoint([odd], "10.0.0.7") is None


def test_find_endpoint_one_match_on_two_forms_is_not_ambiguous():
    same = _Endpoint("f6" * 32, "f6" * 32)  # endpoint id == container id prefix
    assert find_endpoint([same], "f6f6") is same


def test_lookup_is_pure():
    # shared by the CLI and the agent API: importing it must not pull in either side
    tree = ast.parse(Path(lookup.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    # (policies is the pure policy package: it imports neither the CLI nor the agent)
    assert imported <= {"__future__", "ipaddress", "collections.abc", "typing", "policies"}, \
        imported


def test_api_errors_become_click_errors(tmp_path):
    @click.command()
    @click.pass_context
    def ask(ctx):
        ctx.obj = {"api_socket": str(tmp_path / "none.sock")}
        output.api(ctx, "/v1/status")

    result = CliRunner().invoke(ask, [])
    assert result.exit_code == 1
    assert "the agent is not running" in result.output


def test_every_command_loads_lazily_and_help_lists_them_all():
    """The root group imports a command only when it runs; --help still lists every
    command, each resolves to a click command, and the default socket is the client's."""
    import subprocess
    import sys

    import click
    from click.testing import CliRunner

    from ciliumpy import apiclient, cli
    from ciliumpy.cli import listing

    assert cli.DEFAULT_API_SOCKET == apiclient.DEFAULT_API_SOCKET
    for group in listing.GROUPS:
        assert group.name in cli.COMMANDS
    ctx = click.Context(cli.main)
    for name in cli.COMMANDS:
        assert isinstance(cli.main.get_command(ctx, name), click.Command), name
    assert cli.main.get_command(ctx, "no-such-command") is None
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for name in cli.COMMANDS:
        assert f"  {name} " in result.output, (name, result.output)
    # a fresh interpreter: starting the CLI imports no command module
    probe = ("import sys, ciliumpy.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('ciliumpy.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]", loaded
