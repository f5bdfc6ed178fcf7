"""``ciliumpy cleanup``: removes what a stopped agent leaves on the host, as
``cilium-dbg cleanup`` does.

A stopped agent keeps its datapath on purpose (the next agent takes it over without a
gap), but once ciliumpy is removed for good, its filter on the host device would keep
the programs and every service map (about 180 MB of kernel memory) forever."""

from __future__ import annotations

import os

import click

from ciliumpy.config import Config
from ciliumpy.server import socket_in_use


@click.command()
@click.option("--bpf-pin-dir", default=Config.bpf_pin_dir, show_default=True,
              help="The pin directory of the agent whose datapath is removed.")
@click.option("--force", is_flag=True,
              help="Remove it even though an agent answers on the API socket.")
@click.pass_context
def cleanup(ctx: click.Context, bpf_pin_dir: str, force: bool) -> None:
    """Remove a stopped agent's datapath: its filter on the host devices, its socket
    load-balancing hooks and its pinned maps."""
    from datapath import datapath  # bcc and pyroute2 only for this command

    api_socket = ctx.obj["api_socket"]
    if not force and os.path.exists(api_socket) and socket_in_use(api_socket):
        raise click.ClickException(
            f"an agent is serving {api_socket}: stop it first (or pass --force); "
            "removing its datapath would cut its containers off")
    if not os.path.isdir(bpf_pin_dir):
        click.echo(f"nothing pinned at {bpf_pin_dir}")
    removed = datapath.uninstall(bpf_pin_dir)
    click.echo(f"removed the host-device filter from {len(removed)} device(s) and the "
               f"pins at {bpf_pin_dir}")
