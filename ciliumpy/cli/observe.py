"""``ciliumpy observe``: stored and live flows with Hubble's flags and output forms.

Filter flags keep their command-line order (Hubble's ``--not`` negates the flag after
it), so they are read from the raw arguments rather than as click options; the agent
turns them into filters (``ciliumpy.flows.filters``) and answers Hubble-shaped JSON,
which this command prints as ``compact`` (Hubble's one line), ``dict``, ``json`` or
``table``."""

from __future__ import annotations

import json
import sys

import click

from ciliumpy.apiclient import stream_chunks, stream_lines
from ciliumpy.cli.output import agent_errors
from ciliumpy.flows.formats import compact, dict_form, json_line, table

FILTER_FLAGS = ("--from-label", "--to-label", "--label", "--from-ip", "--to-ip", "--ip",
                "--from-pod", "--to-pod", "--pod", "--verdict", "--type", "--protocol",
                "--port", "--from-port", "--to-port", "--http-method", "--http-path",
                "--http-status", "--identity", "--from-identity", "--to-identity",
                "--node-name", "--traffic-direction", "--drop-reason-desc")
SHORT_FLAGS = {"-t": "--type", "-l": "--label"}
HELP = f"""Show flows: what the datapath and the L7 proxy decided, with both sides'
identity, labels and container. Without --since/--last/--follow: the last 20.

\b
Filters (Hubble's): a flag given twice is OR, different flags AND; --not negates
the flag after it.
  {" ".join(FILTER_FLAGS[:6])}
  {" ".join(FILTER_FLAGS[6:12])}
  {" ".join(FILTER_FLAGS[12:18])}
  {" ".join(FILTER_FLAGS[18:22])}
  {" ".join(FILTER_FLAGS[22:])} --not  (-t = --type, -l = --label)
--type: trace | drop | policy-verdict | l7;  --verdict: FORWARDED | DROPPED;
--http-status: 200, 4+ (any 4xx) ...;  labels: app=web or container:app=web.
"""


def filter_tokens(args: list[str]) -> list[list[str]]:
    """``["--not", "--verdict", "DROPPED", "--ip=1.2.3.4"]`` -> flag/value pairs."""
    tokens, items = [], list(args)
    while items:
        item = items.pop(0)
        flag, eq, value = item.partition("=")
        flag = SHORT_FLAGS.get(flag, flag)
        if flag == "--not":
            tokens.append(["--not", ""])
            continue
        if flag not in FILTER_FLAGS:
            raise click.UsageError(f"no such option: {item} (see --help)")
        if not eq:
            if not items:
                raise click.UsageError(f"option {flag} requires a value")
            value = items.pop(0)
        tokens.append([flag, value])
    return tokens


@click.command(help=HELP, context_settings={"ignore_unknown_options": True,
                                            "allow_extra_args": True})
@click.option("--since", help="Flows since a time (RFC 3339) or a duration ago (5m).")
@click.option("--until", help="Flows until a time or a duration ago.")
@click.option("--last", type=click.IntRange(0), help="The last N matching flows.")
@click.option("--first", type=click.IntRange(0), help="The first N matching flows.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new flows.")
@click.option("--all", "all_flows", is_flag=True, help="Every stored flow.")
@click.option("--cluster", is_flag=True,
              help="Every node's flows (their Hubble APIs), merged in time order.")
@click.option("-o", "--output", type=click.Choice(["compact", "dict", "json", "jsonpb",
                                                   "table"]),
              default="compact", show_default=True, help="Output form (Hubble's).")
@click.pass_context
def observe(ctx: click.Context, since: str | None, until: str | None, last: int | None,
            first: int | None, follow: bool, all_flows: bool, cluster: bool,
            output: str) -> None:
    body = {"filters": filter_tokens(ctx.args), "since": since, "until": until,
            "last": last, "first": first, "follow": follow, "cluster": cluster}
    if all_flows:
        body["since"] = "2000-01-01T00:00:00Z"
    rows: list[dict] = []
    lines: list[str] = []
    printed = 0
    try:
        with agent_errors():
            if output in ("json", "jsonpb") and not cluster:
                # one node's lines are Hubble's -o json already: written as they come,
                # undecoded, one write per burst
                for chunk in stream_chunks("/v1/flows", socket_path=ctx.obj["api_socket"],
                                           method="POST", body=body):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                return
            for line in stream_lines("/v1/flows", socket_path=ctx.obj["api_socket"],
                                     method="POST", body=body):
                record = json.loads(line)
                if "warning" in record:  # a node that did not answer: a partial answer
                    click.echo(f"warning: {record['warning']}", err=True)
                    continue
                flow = record.get("flow") or {}
                if output in ("json", "jsonpb"):
                    click.echo(json_line(flow))
                elif output == "dict":
                    click.echo(dict_form(flow, first=printed == 0, node_name=cluster))
                elif output == "table" and not follow:
                    rows.append(flow)
                elif output == "table":
                    click.echo(table([flow], node_name=cluster).splitlines()[-1])
                elif follow:
                    click.echo(compact(flow, node_name=cluster))
                else:  # printed together at the end: one write, not one per flow
                    lines.append(compact(flow, node_name=cluster))
                printed += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop following
    if lines:
        click.echo("\n".join(lines))
    if output == "table" and not follow:
        click.echo(table(rows, node_name=cluster))
