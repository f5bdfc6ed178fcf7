"""``ciliumpy service create|list|get|delete``: load-balanced services (a frontend and
its backends, listed or selected by container labels), stored cluster-wide."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from ciliumpy.cli.output import api, emit_json, output_option, show_list

HEADERS = ["NAME", "FRONTEND", "BACKENDS", "SELECTOR", "AFFINITY", "M", "GLOBAL", "STATE"]


def _backends(service: dict[str, Any]) -> str:
    resolved = service["status"]["backends"]
    if not resolved:
        return "-"
    shown = [f"{'[' + b['address'] + ']' if ':' in b['address'] else b['address']}:{b['port']}"
             + (f" (w{b['weight']})" if b["weight"] != 1 else "")
             + (f" @{b['cluster']}" if b.get("cluster") else "") for b in resolved[:4]]
    return ", ".join(shown) + (f" +{len(resolved) - 4}" if len(resolved) > 4 else "")


def _row(service: dict[str, Any]) -> tuple:
    selector = ",".join(f"{k}={v}" for k, v in sorted(service["selector"].items())) or "-"
    return (service["name"], service["frontend"], _backends(service), selector,
            service["affinity"], service["maglev_size"], _scope(service),
            service["status"]["state"])


def _scope(service: dict[str, Any]) -> str:
    if not service.get("global"):
        return "-"
    return "yes" if service.get("shared", True) else "yes (not shared)"


@click.group()
def service() -> None:
    """Load-balanced services: a frontend (VIP:port/protocol) and its backends.

    Containers reach a frontend by connect()/sendto() and get a backend at that moment
    (socket-level load balancing, Maglev consistent hashing); every node of the cluster
    programs the same services. Backends are listed (--backend), selected by container
    labels (--selector app=web), or join with the container label
    ciliumpy.service=NAME[:PORT].
    """


@service.command("create")
@click.argument("name")
@click.option("--frontend", required=True, metavar="VIP:PORT[/tcp|udp]",
              help="Address and port clients connect to ([v6]:port for IPv6).")
@click.option("--backend", "backends", multiple=True, metavar="IP:PORT[,weight=N]",
              help="A backend (repeatable).")
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="Containers whose labels have all these (repeatable) are backends.")
@click.option("--target-port", type=int, default=None,
              help="Port of the selected containers (default: the frontend's).")
@click.option("--affinity", type=click.Choice(["none", "client"]), default="none",
              show_default=True, help="none: hash the connection's 5-tuple; client: hash "
              "the client address and the service only (one backend per client).")
@click.option("--maglev-size", type=int, default=16381, show_default=True,
              help="Maglev table size M (a prime: 251, 1021, 4093, 16381, 65537).")
@click.option("--global", "is_global", is_flag=True,
              help="Cluster Mesh: also balance to the backends other clusters share for "
              "a global service of the same name (Cilium's service.cilium.io/global).")
@click.option("--shared/--no-shared", default=True, show_default=True,
              help="With --global: share this cluster's backends with the other clusters "
              "(Cilium's service.cilium.io/shared).")
@click.option("--update", is_flag=True, help="Replace an existing service of this name.")
@output_option
@click.pass_context
def create(ctx: click.Context, name: str, frontend: str, backends: tuple[str, ...],
           selectors: tuple[str, ...], target_port: int | None, affinity: str,
           maglev_size: int, is_global: bool, shared: bool, update: bool,
           output: str) -> None:
    """Create (or with --update replace) service NAME."""
    selector = {}
    for item in selectors:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--selector")
        selector[key] = value
    if not update and name in {s["name"] for s in api(ctx, "/v1/services")}:
        raise click.ClickException(f"service {name!r} exists: use --update to replace it")
    body = {"name": name, "frontend": frontend, "backends": list(backends),
            "selector": selector, "target_port": target_port, "affinity": affinity,
            "maglev_size": maglev_size, "global": is_global, "shared": shared}
    data = api(ctx, f"/v1/services/{quote(name, safe='')}", "PUT", body)
    if output == "json":
        emit_json(data)
        return
    click.echo(f"service {data['name']}: {data['frontend']} ({data['status']['state']})")


@service.command("list")
@output_option
@click.pass_context
def list_services(ctx: click.Context, output: str) -> None:
    """List services: frontend, backends resolved on this node, selector, state."""
    show_list(ctx, "/v1/services", output, HEADERS, _row)


@service.command("get")
@click.argument("name")
@output_option
@click.pass_context
def get(ctx: click.Context, name: str, output: str) -> None:
    """Show one service with each backend's share of the Maglev table."""
    show_list(ctx, f"/v1/services/{quote(name, safe='')}", output, HEADERS, _row,
              items=lambda data: [data],
              footer=lambda data: (
                  f"  backend {b['address']}:{b['port']} weight {b['weight']}: "
                  f"{b['slots']} of {data['maglev_size']} slots"
                  + (f" (cluster {b['cluster']})" if b.get("cluster") else "")
                  for b in data["status"]["backends"]))


@service.command("ports")
@output_option
@click.pass_context
def ports(ctx: click.Context, output: str) -> None:
    """Published ports of this host's containers (docker run -p): host address and port,
    the container's. Docker cannot show a plugin's ports in `docker port`."""
    show_list(ctx, "/v1/ports", output,
              ["CONTAINER", "PROTO", "HOST", "CONTAINER ADDRESS"],
              lambda p: (p.get("container_name") or p["endpoint_id"][:12], p["protocol"],
                         f"{p['host_ip']}:{p['host_port']}",
                         f"{p['container_ip']}:{p['container_port']}"))


@service.command("delete")
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete service NAME on every node."""
    api(ctx, f"/v1/services/{quote(name, safe='')}", "DELETE")
    click.echo(f"service {name} deleted")
