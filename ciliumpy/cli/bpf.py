"""``ciliumpy bpf``: dumps of the datapath's BPF maps, as the agent reads them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from ciliumpy.cli.output import list_command, output_option, show_list
from datapath.rates import format_rate
from policies import icmp

# Protocol numbers as the policy map stores them; 0 is an L3-only (any protocol) entry.
_PROTOCOL_NAMES = {0: "any", 6: "TCP", 17: "UDP", 132: "SCTP"}


@click.group()
def bpf() -> None:
    """Read the datapath's BPF maps directly."""


list_command(bpf, "endpoint", "/v1/bpf/endpoints",
             ["IFINDEX", "ENDPOINT", "CONTAINER", "IDENTITY", "INGRESS", "EGRESS", "MAC"],
             lambda e: (e["ifindex"], (e["endpoint_id"] or "-")[:12],
                        e["container_name"] or "-", e["identity"],
                        "enforced" if e["enforce_ingress"] else "open",
                        "enforced" if e["enforce_egress"] else "open", e["mac"]),
             "The endpoints map: ifindex -> identity, enforcement, MAC.")
list_command(bpf, "ipcache", "/v1/bpf/ipcache", ["PREFIX", "IDENTITY", "IFINDEX", "TUNNEL"],
             lambda e: (e["prefix"], e["identity"], e["ifindex"] or "-", e["tunnel_ip"] or "-"),
             "The ipcache: prefix -> identity (and local interface).")


def _policy_row(e: dict[str, Any]) -> tuple:
    ports = "any" if not e["port"] else (
        f"{e['port']}-{e['end_port']}" if e["end_port"] else e["port"])
    if e["proto"] in (1, 58) and e["port"]:  # an ICMP rule: the port carries the type
        ports = icmp.describe(e["port"])
    return (e["ep"], e["direction"], "deny" if e["deny"] else "allow", e["identity"] or "any",
            ", ".join(e["labels"]) or "-", _PROTOCOL_NAMES.get(e["proto"], e["proto"]), ports,
            e.get("proxy_port") or "-")


@bpf.command("policy")
@click.argument("endpoint", required=False)
@output_option
@click.pass_context
def bpf_policy(ctx: click.Context, endpoint: str | None, output: str) -> None:
    """Policy entries (of one endpoint: id prefix, container name or ifindex)."""
    # The agent resolves ENDPOINT (ciliumpy.lookup.find_endpoint): it alone knows them.
    path = "/v1/bpf/policy" + (f"?{urlencode({'endpoint': endpoint})}" if endpoint else "")
    show_list(ctx, path, output,
              ["ENDPOINT", "DIRECTION", "VERDICT", "IDENTITY", "LABELS", "PROTO", "PORTS",
               "L7 PROXY"],
              _policy_row)


list_command(bpf, "ct", "/v1/bpf/ct",
             ["SRC", "DST", "PROTO", "FLAGS", "IDENTITIES", "PACKETS", "IDLE", "L7 PROXY"],
             lambda e: (f"{e['src']}:{e['sport']}", f"{e['dst']}:{e['dport']}", e["proto"],
                        ",".join(e["flags"]), f"{e['src_identity']}->{e['dst_identity']}",
                        e["packets"], f"{e['idle_seconds']}s", e.get("proxy_port") or "-"),
             "Connection tracking entries.")
list_command(bpf, "metrics", "/v1/bpf/metrics", ["REASON", "DIRECTION", "PACKETS", "BYTES"],
             lambda e: (e["reason"], e["direction"], e["packets"], e["bytes"]),
             "Datapath counters by reason and direction.")
list_command(bpf, "bandwidth", "/v1/bpf/bandwidth",
             ["IFINDEX", "ENDPOINT", "CONTAINER", "EGRESS", "INGRESS", "BACKSTOP", "HORIZON",
              "BACKSTOP DROPS"],
             lambda e: (e["ifindex"], e["endpoint_id"][:12], e["container_name"] or "-",
                        format_rate(e["egress_bps"]), format_rate(e["ingress_bps"]),
                        format_rate(e["backstop_bps"]), f"{e['horizon_ms']}ms",
                        e["backstop_drops"]),
             "Bandwidth limits per endpoint and the datapath's egress backstop map.")
