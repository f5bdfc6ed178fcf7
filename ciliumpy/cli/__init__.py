"""The ``ciliumpy`` command line: the agent, and views of its state through the agent API."""

from __future__ import annotations

import logging
import sys
import time

import click

from ciliumpy import config as cfg
from ciliumpy.apiclient import DEFAULT_API_SOCKET, APIError, call
from ciliumpy.cli.output import emit_json, emit_table, output_option


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


def _api(ctx: click.Context, path: str, method: str = "GET"):
    try:
        return call(path, method=method, socket_path=ctx.obj["api_socket"])
    except APIError as exc:
        raise click.ClickException(str(exc)) from None


def _agent_options(func):
    """One flag per configuration option, so flags, env and file share one list."""
    for name in reversed(cfg.OPTION_NAMES):
        flag = "--" + cfg.option_flag(name)
        if name == "kvstore_opt":
            func = click.option(flag, multiple=True, metavar="KEY=VALUE",
                                help="Backend option, e.g. consul.address=HOST:PORT "
                                     "(repeatable).")(func)
        else:
            default = cfg.Config.__dataclass_fields__[name].default
            shown = "" if callable(default) or default is None else f" [default: {default}]"
            func = click.option(flag, default=None, help=f"Option {cfg.option_flag(name)}."
                                + shown)(func)
    return click.option("--config", "config_file", default=None,
                        help=f"YAML config file [default: {cfg.DEFAULT_CONFIG_FILE} if present]."
                        )(func)


@main.command()
@_agent_options
def agent(config_file: str | None, **flags) -> None:
    """Run the agent in the foreground (plugin socket + agent API).

    Precedence: defaults < config file < CILIUMPY_* environment < flags.
    """
    flags["kvstore_opt"] = list(flags.get("kvstore_opt") or ()) or None
    try:
        config = cfg.load(config_file, flags)
    except cfg.ConfigError as exc:
        click.echo(f"ciliumpy agent: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ciliumpy.server import ServeError, serve

    try:
        serve(config)
    except ServeError as exc:
        click.echo(f"ciliumpy agent: {exc}", err=True)
        sys.exit(1)


@main.command()
@output_option
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """Show the agent's health."""
    data = _api(ctx, "/v1/status")
    if output == "json":
        emit_json(data)
        return
    docker = data.get("docker") or {}
    reachable = {True: "reachable", False: "unreachable", None: "not checked yet"}[
        docker.get("reachable")]
    kv = data["kvstore"]
    rows = [
        ("Agent", f"ok (version {data['version']}, pid {data['pid']}, "
                  f"up {data['uptime_seconds']}s)"),
        ("Node", data["node"]),
        ("KVStore", f"{kv['backend']} ({'healthy' if kv['healthy'] else 'UNHEALTHY'})"),
        ("Datapath", data["datapath"]["mode"]),
        ("Plugin socket", data["plugin_socket"]),
        ("Docker", reachable),
        ("Networks", data["networks"]),
        ("Endpoints", f"{data['endpoints']} "
                      + " ".join(f"{k}={v}" for k, v in sorted(data["endpoint_states"].items()))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


@main.group()
def network() -> None:
    """ciliumpy networks on this host."""


@network.command("list")
@output_option
@click.pass_context
def network_list(ctx: click.Context, output: str) -> None:
    """List networks: id, name, subnets, gateways, endpoint count."""
    data = _api(ctx, "/v1/networks")
    if output == "json":
        emit_json(data)
        return
    emit_table(
        ["NETWORK ID", "NAME", "IPV4 SUBNET", "IPV6 SUBNET", "GATEWAYS", "MTU", "ENDPOINTS"],
        [(n["network_id"][:12], n.get("name") or "-", n.get("pool_v4") or "-",
          n.get("pool_v6") or "-",
          ",".join(g for g in (n.get("gateway_v4"), n.get("gateway_v6")) if g) or "-",
          n.get("mtu") or "default", n["endpoints"]) for n in data],
    )


@main.group()
def endpoint() -> None:
    """Container endpoints on this host."""


@endpoint.command("list")
@output_option
@click.pass_context
def endpoint_list(ctx: click.Context, output: str) -> None:
    """List endpoints: id, network, container, addresses, host interface, state."""
    data = _api(ctx, "/v1/endpoints")
    if output == "json":
        emit_json(data)
        return
    emit_table(
        ["ENDPOINT ID", "NETWORK", "CONTAINER", "IPV4", "IPV6", "INTERFACE", "STATE",
         "IDENTITY", "LABELS", "AGE"],
        [(e["endpoint_id"][:12], e.get("network_name") or e["network_id"][:12],
          e.get("container_name") or (e.get("container_id") or "")[:12] or "-",
          e.get("ipv4") or "-", e.get("ipv6") or "-",
          e["host_ifname"] + ("" if e["link_present"] else " (missing)"), e["state"],
          f"{e['identity']}" + (" (retrying)" if e.get("identity_error") else ""),
          ", ".join(e["labels"]) if e.get("labels") is not None else "(not yet known)",
          f"{int(time.time() - e['created'])}s") for e in data],
    )


@main.group()
def identity() -> None:
    """Security identities (cluster-wide, from the kvstore)."""


def _identity_rows(items):
    return [(i["id"], ", ".join(i["labels"]) or "(no labels)", ",".join(i["nodes"]) or "-",
             len(i["endpoints"])) for i in items]


@identity.command("list")
@output_option
@click.pass_context
def identity_list(ctx: click.Context, output: str) -> None:
    """List identities: number, labels, nodes referencing it, local endpoints."""
    data = _api(ctx, "/v1/identities")
    if output == "json":
        emit_json(data)
        return
    emit_table(["ID", "LABELS", "NODES", "LOCAL ENDPOINTS"], _identity_rows(data))


@identity.command("get")
@click.argument("number", type=int)
@output_option
@click.pass_context
def identity_get(ctx: click.Context, number: int, output: str) -> None:
    """Show one identity and the local endpoints that use it."""
    data = _api(ctx, f"/v1/identities/{number}")
    if output == "json":
        emit_json(data)
        return
    emit_table(["ID", "LABELS", "NODES", "LOCAL ENDPOINTS"], _identity_rows([data]))
    for endpoint_id in data["endpoints"]:
        click.echo(f"  endpoint {endpoint_id[:12]}")


@main.group()
def node() -> None:
    """Nodes of the cluster (agents registered in the kvstore)."""


@node.command("list")
@output_option
@click.pass_context
def node_list(ctx: click.Context, output: str) -> None:
    """List nodes: name, IP, encapsulation, address blocks."""
    data = _api(ctx, "/v1/nodes")
    if output == "json":
        emit_json(data)
        return
    emit_table(["NAME", "IP", "ENCAPSULATION", "BLOCKS"],
               [(n["name"], n["ip"], n["encapsulation"], ",".join(n["blocks"]) or "-")
                for n in data])
