"""The ``ciliumpy`` command line: the root group and its command groups.

Each group lives in its own module (``agent``, ``status``, ``listing`` for the plain
list groups, ``monitor``, ``observe``, ``bpf``, ``policy``, ``service``); this module
only builds the root group,
whose ``--api-socket`` every client command reads from ``ctx.obj``. ``ciliumpy.cli:main``
is the console entry point.
"""

from __future__ import annotations

import click

from ciliumpy.apiclient import DEFAULT_API_SOCKET
from ciliumpy.cli import agent, bpf, listing, monitor, observe, policy, service, status, ui


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-socket", envvar="CILIUMPY_API_SOCKET", default=DEFAULT_API_SOCKET,
              show_default=True, help="The agent API socket the client commands talk to.")
@click.pass_context
def main(ctx: click.Context, api_socket: str) -> None:
    """ciliumpy: Cilium's ideas for plain Docker hosts.

    A Docker network driver and IPAM plugin giving every container an address on a
    flat L3 network. Run `ciliumpy agent` once per host; the other commands ask it.
    """
    ctx.obj = {"api_socket": api_socket}


# click lists commands sorted by name, so the order added here does not show in --help.
for command in (agent.agent, status.status, *listing.GROUPS, monitor.monitor, bpf.bpf,
                policy.policy, observe.observe, service.service, ui.ui):
    main.add_command(command)
del command
