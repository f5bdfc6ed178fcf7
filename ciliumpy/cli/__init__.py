"""The ``ciliumpy`` command line: the root group and its command groups.

Each group lives in its own module (``agent``, ``status``, ``listing`` for the plain
list groups, ``monitor``, ``observe``, ``bpf``, ``policy``, ``service``, ``ui``); this
module only builds the root group, whose ``--api-socket`` every client command reads
from ``ctx.obj``. ``ciliumpy.cli:main`` is the console entry point.

Commands are imported when they are run, not when the CLI starts: the agent command
alone imports the configuration and YAML, ``ui`` an HTTP server; a client command such
as ``ciliumpy observe`` pays only for its own module (the CLI's start is most of a
short query's time; see bench/results/flows.md).
"""

from __future__ import annotations

import importlib

import click

# the socket's default is repeated here, not imported from ciliumpy.apiclient, so that
# commands that never call the agent (agent, --help) do not import the HTTP client
DEFAULT_API_SOCKET = "/run/ciliumpy/ciliumpy.sock"

# command name -> "module:attribute" (click lists commands sorted by name)
COMMANDS = {
    "agent": "ciliumpy.cli.agent:agent",
    "cleanup": "ciliumpy.cli.cleanup:cleanup",
    "status": "ciliumpy.cli.status:status",
    "network": "ciliumpy.cli.listing:network",
    "endpoint": "ciliumpy.cli.listing:endpoint",
    "identity": "ciliumpy.cli.listing:identity",
    "node": "ciliumpy.cli.listing:node",
    "fqdn": "ciliumpy.cli.listing:fqdn",
    "cluster": "ciliumpy.cli.cluster:cluster",
    "monitor": "ciliumpy.cli.monitor:monitor",
    "bpf": "ciliumpy.cli.bpf:bpf",
    "policy": "ciliumpy.cli.policy:policy",
    "observe": "ciliumpy.cli.observe:observe",
    "service": "ciliumpy.cli.service:service",
    "ui": "ciliumpy.cli.ui:ui",
}


class LazyGroup(click.Group):
    """A group whose commands (``COMMANDS``) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-socket", envvar="CILIUMPY_API_SOCKET", default=DEFAULT_API_SOCKET,
              show_default=True, help="The agent API socket the client commands talk to.")
@click.pass_context
def main(ctx: click.Context, api_socket: str) -> None:
    """ciliumpy: Cilium's ideas for plain Docker hosts.

    A Docker network driver and IPAM plugin giving every container an address on a
    flat L3 network. Run `ciliumpy agent` once per host; the other commands ask it.
    """
    ctx.obj = {"api_socket": api_socket}
