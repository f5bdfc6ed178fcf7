"""The plain list groups: ``network``, ``endpoint``, ``identity``, ``node`` and ``fqdn``.

Each command is one agent API GET shown by :func:`~ciliumpy.cli.output.show_list`; only
the columns differ. ``endpoint labels`` is the one change: a running container's
bandwidth labels.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import click

from ciliumpy.cli.output import api, emit_json, list_command, output_option, show_list
from datapath.rates import format_rate


@click.group()
def network() -> None:
    """ciliumpy networks on this host."""


list_command(network, "list", "/v1/networks",
             ["NETWORK ID", "NAME", "IPV4 SUBNET", "IPV6 SUBNET", "GATEWAYS", "MTU",
              "ENDPOINTS"],
             lambda n: (n["network_id"][:12], n.get("name") or "-", n.get("pool_v4") or "-",
                        n.get("pool_v6") or "-",
                        ",".join(g for g in (n.get("gateway_v4"), n.get("gateway_v6")) if g)
                        or "-",
                        n.get("mtu") or "default", n["endpoints"]),
             "List networks: id, name, subnets, gateways, endpoint count.")


@click.group()
def endpoint() -> None:
    """Container endpoints on this host."""


def _endpoint_row(e: dict[str, Any]) -> tuple:
    return (e["endpoint_id"][:12], e.get("network_name") or e["network_id"][:12],
            e.get("container_name") or (e.get("container_id") or "")[:12] or "-",
            e.get("ipv4") or "-", e.get("ipv6") or "-",
            e["host_ifname"] + ("" if e["link_present"] else " (missing)"), e["state"],
            f"{e['identity']}" + (" (retrying)" if e.get("identity_error") else ""),
            # None: the container's labels are not read yet; [] is "no labels"
            ", ".join(e["labels"]) if e.get("labels") is not None else "(not yet known)",
            _limit(e, "egress"), _limit(e, "ingress"), f"{int(time.time() - e['created'])}s")


def _limit(e: dict[str, Any], direction: str) -> str:
    bandwidth = e.get("bandwidth") or {}
    text = format_rate(bandwidth.get(f"{direction}_bps") or 0)
    return text + (" (!)" if bandwidth.get("errors") else "")


list_command(endpoint, "list", "/v1/endpoints",
             ["ENDPOINT ID", "NETWORK", "CONTAINER", "IPV4", "IPV6", "INTERFACE", "STATE",
              "IDENTITY", "LABELS", "EGRESS LIMIT", "INGRESS LIMIT", "AGE"], _endpoint_row,
             "List endpoints: id, network, container, addresses, host interface, state, "
             "identity, bandwidth limits ((!): see errors in -o json).")


@endpoint.command("labels")
@click.argument("endpoint_name", metavar="ENDPOINT")
@click.option("--add", "add", multiple=True, metavar="KEY=VALUE",
              help="Set a bandwidth label (kubernetes.io/egress-bandwidth=10M, ...).")
@click.option("--delete", "delete", multiple=True, metavar="KEY",
              help="Remove a label (even one the container was started with).")
@output_option
@click.pass_context
def endpoint_labels(ctx: click.Context, endpoint_name: str, add: tuple[str, ...],
                    delete: tuple[str, ...], output: str) -> None:
    """Change a running container's bandwidth labels (ENDPOINT: id prefix, container
    name, IP or ifindex). Docker cannot change labels without re-creating the container;
    these changes apply at once and survive agent restarts."""
    pairs = {}
    for item in add:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--add")
        pairs[key] = value
    data = api(ctx, f"/v1/endpoints/{quote(endpoint_name, safe='')}/labels", "POST",
               {"add": pairs, "delete": list(delete)})
    if output == "json":
        emit_json(data)
        return
    limits = data["bandwidth"]
    click.echo(f"endpoint {data['endpoint_id'][:12]}: egress "
               f"{format_rate(limits.get('egress_bps') or 0)}, ingress "
               f"{format_rate(limits.get('ingress_bps') or 0)}")
    for error in limits.get("errors") or ():
        click.echo(f"  warning: {error}")


@click.group()
def identity() -> None:
    """Security identities (cluster-wide, from the kvstore)."""


IDENTITY_HEADERS = ["ID", "LABELS", "NODES", "LOCAL ENDPOINTS"]


def _identity_row(i: dict[str, Any]) -> tuple:
    return (i["id"], ", ".join(i["labels"]) or "(no labels)", ",".join(i["nodes"]) or "-",
            len(i["endpoints"]))


list_command(identity, "list", "/v1/identities", IDENTITY_HEADERS, _identity_row,
             "List identities: number, labels, nodes referencing it, local endpoints.")


@identity.command("get")
@click.argument("number", type=int)
@output_option
@click.pass_context
def identity_get(ctx: click.Context, number: int, output: str) -> None:
    """Show one identity and the local endpoints that use it."""
    show_list(ctx, f"/v1/identities/{number}", output, IDENTITY_HEADERS, _identity_row,
              items=lambda data: [data],
              footer=lambda data: (f"  endpoint {e[:12]}" for e in data["endpoints"]))


@click.group()
def node() -> None:
    """Nodes of the cluster (agents registered in the kvstore)."""


list_command(node, "list", "/v1/nodes",
             ["CLUSTER", "NAME", "IP", "IPV6", "ENCAPSULATION", "BLOCKS", "LABELS"],
             lambda n: (n.get("cluster") or "-", n["name"], n["ip"], n.get("ipv6") or "-",
                        n["encapsulation"], ",".join(n["blocks"]) or "-",
                        ",".join(f"{k}={v}" for k, v in sorted((n.get("labels") or {})
                                                               .items())) or "-"),
             "List nodes (this cluster's, then the remote clusters'): cluster, name, IP "
             "(and IPv6), encapsulation, address blocks, labels (--node-labels: what "
             "fromNodes and toNodes select).")


GROUPS = (network, endpoint, identity, node)


@click.group()
def fqdn() -> None:
    """What the DNS proxy learnt for toFQDNs rules."""


list_command(fqdn, "cache", "/v1/fqdn/cache", ["NAME", "ADDRESS", "EXPIRES IN"],
             lambda e: (e["name"], e["ip"], f"{e['expires_in']:.0f}s"),
             "List the addresses learnt from allowed DNS answers, with the time left.")
