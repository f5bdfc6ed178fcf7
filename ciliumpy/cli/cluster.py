"""``ciliumpy cluster``: this cluster and the remote clusters of its Cluster Mesh.

``list`` names every cluster (this one first) with its ID and Consul address;
``status`` shows, per remote cluster, whether its Consul is followed, when its state
last changed, and how many nodes, endpoints, identities and global services (with
shared backends) of it are followed. Both
read ``GET /v1/cluster``; ``-o json`` prints that answer unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ciliumpy.cli.output import api, emit_json, emit_table, output_option


@click.group()
def cluster() -> None:
    """Cluster Mesh: this cluster and the remote clusters it follows."""


def ago(stamp: float | None, now: float | None = None) -> str:
    """``12s ago`` (or ``never``) for a Unix time."""
    if not stamp:
        return "never"
    seconds = max(0.0, (now or time.time()) - stamp)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def state(remote: dict[str, Any]) -> str:
    """One word for a remote cluster's connection, for tables and ``status``."""
    if remote.get("connected"):
        return "connected"
    if remote.get("withdrawn"):
        return "disconnected (state withdrawn)"
    if remote.get("last_update"):
        return "disconnected (keeping last state)"
    return "disconnected"


@cluster.command("list")
@output_option
@click.pass_context
def cluster_list(ctx: click.Context, output: str) -> None:
    """List the clusters: name, ID, Consul address, role."""
    data = api(ctx, "/v1/cluster")
    if output == "json":
        emit_json(data)
        return
    rows = [(data["name"], data["cluster_id"] or "0 (no mesh)", "(this cluster's kvstore)",
             "local")]
    rows += [(r["name"], r["cluster_id"] or "?", r["address"], "remote")
             for r in data["clusters"]]
    emit_table(["NAME", "ID", "CONSUL", "ROLE"], rows)
    if data.get("error"):
        click.echo(f"Cluster mesh off: {data['error']}")


@cluster.command("status")
@output_option
@click.pass_context
def cluster_status(ctx: click.Context, output: str) -> None:
    """Per remote cluster: connected, last update, nodes, endpoints, identities, global
    services."""
    data = api(ctx, "/v1/cluster")
    if output == "json":
        emit_json(data)
        return
    now = time.time()
    emit_table(["CLUSTER", "ID", "STATE", "LAST UPDATE", "NODES", "ENDPOINTS", "IDENTITIES",
                "GLOBAL SERVICES", "ERROR"],
               [(r["name"], r["cluster_id"] or "?", state(r), ago(r["last_update"], now),
                 r["nodes"], r["endpoints"], r["identities"], r.get("global_services", 0),
                 "; ".join(filter(None, [r.get("error"), *r.get("overlaps", [])])) or "-")
                for r in data["clusters"]])
    if data.get("error"):
        click.echo(f"Cluster mesh off: {data['error']}")


def status_line(mesh: dict[str, Any] | None) -> str:
    """The ``Cluster Mesh`` line of ``ciliumpy status``."""
    if not mesh:
        return "off (--cluster-id 0)"
    parts = [f"{mesh['name']} (id {mesh['cluster_id']})"]
    if mesh.get("error"):
        parts.append(f"OFF: {mesh['error']}")
    for r in mesh["clusters"]:
        line = (f"{r['name']}: {state(r)}, last update {ago(r['last_update'])}, "
                f"{r['nodes']} nodes, {r['endpoints']} endpoints, "
                f"{r['identities']} identities")
        if r.get("error") and not r.get("connected"):
            line += f" - {r['error']}"
        parts.append(line)
    return "; ".join(parts)
