"""``ciliumpy monitor``: the agent's live stream of datapath events."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import click

from ciliumpy.apiclient import stream
from ciliumpy.cli.output import agent_errors, output_option
from ciliumpy.monitor import format_event


@click.command()
@click.option("--type", "types", multiple=True,
              type=click.Choice(["drop", "policy-verdict", "trace", "l7"]),
              help="Only these event types (repeatable). Default: all.")
@click.option("--history/--no-history", default=False,
              help="Start with the events the agent already holds.")
@output_option
@click.pass_context
def monitor(ctx: click.Context, types: tuple[str, ...], history: bool, output: str) -> None:
    """Stream datapath events live: drops, policy verdicts of new connections,
    traces (each new connection a hook forwards) and L7 requests (method, path,
    status, verdict, latency), with both sides' labels."""
    # safe="," keeps the type list readable in the agent's request log, as it always was
    query = urlencode({"type": ",".join(types), "history": int(history)}, safe=",")
    try:
        with agent_errors():
            for event in stream(f"/v1/monitor?{query}", socket_path=ctx.obj["api_socket"]):
                # one line per event, flushed as it comes, so `| grep` follows live
                click.echo(json.dumps(event) if output == "json" else format_event(event))
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop following
