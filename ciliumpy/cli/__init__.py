"""The ``ciliumpy`` command line: the agent, and views of its state through the agent API."""

from __future__ import annotations

import json
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
    """List nodes: name, IP (and IPv6), encapsulation, address blocks."""
    data = _api(ctx, "/v1/nodes")
    if output == "json":
        emit_json(data)
        return
    emit_table(["NAME", "IP", "IPV6", "ENCAPSULATION", "BLOCKS"],
               [(n["name"], n["ip"], n.get("ipv6") or "-", n["encapsulation"],
                 ",".join(n["blocks"]) or "-") for n in data])


@main.command()
@click.option("--type", "types", multiple=True,
              type=click.Choice(["drop", "policy-verdict", "trace"]),
              help="Only these event types (repeatable). Default: all.")
@click.option("--history/--no-history", default=False,
              help="Start with the events the agent already holds.")
@output_option
@click.pass_context
def monitor(ctx: click.Context, types: tuple[str, ...], history: bool, output: str) -> None:
    """Stream datapath events live: drops, policy verdicts of new connections, and
    traces (each new connection a hook forwards), with both sides' labels."""
    from ciliumpy.apiclient import stream
    from ciliumpy.monitor import format_event

    query = f"/v1/monitor?type={','.join(types)}&history={int(history)}"
    try:
        for event in stream(query, socket_path=ctx.obj["api_socket"]):
            click.echo(json.dumps(event) if output == "json" else format_event(event))
    except APIError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.group()
def bpf() -> None:
    """Read the datapath's BPF maps directly."""


def _dump(ctx, path: str, output: str, headers: list[str], row) -> None:
    data = _api(ctx, path)
    if output == "json":
        emit_json(data)
    else:
        emit_table(headers, [row(item) for item in data])


@bpf.command("endpoint")
@output_option
@click.pass_context
def bpf_endpoint(ctx: click.Context, output: str) -> None:
    """The endpoints map: ifindex -> identity, enforcement, MAC."""
    _dump(ctx, "/v1/bpf/endpoints", output,
          ["IFINDEX", "ENDPOINT", "CONTAINER", "IDENTITY", "INGRESS", "EGRESS", "MAC"],
          lambda e: (e["ifindex"], (e["endpoint_id"] or "-")[:12], e["container_name"] or "-",
                     e["identity"], "enforced" if e["enforce_ingress"] else "open",
                     "enforced" if e["enforce_egress"] else "open", e["mac"]))


@bpf.command("ipcache")
@output_option
@click.pass_context
def bpf_ipcache(ctx: click.Context, output: str) -> None:
    """The ipcache: prefix -> identity (and local interface)."""
    _dump(ctx, "/v1/bpf/ipcache", output, ["PREFIX", "IDENTITY", "IFINDEX", "TUNNEL"],
          lambda e: (e["prefix"], e["identity"], e["ifindex"] or "-", e["tunnel_ip"] or "-"))


@bpf.command("policy")
@click.argument("endpoint", required=False)
@output_option
@click.pass_context
def bpf_policy(ctx: click.Context, endpoint: str | None, output: str) -> None:
    """Policy entries (of one endpoint: id prefix, container name or ifindex)."""
    path = "/v1/bpf/policy" + (f"?endpoint={endpoint}" if endpoint else "")
    _dump(ctx, path, output,
          ["ENDPOINT", "DIRECTION", "VERDICT", "IDENTITY", "LABELS", "PROTO", "PORTS"],
          lambda e: (e["ep"], e["direction"], "deny" if e["deny"] else "allow",
                     e["identity"] or "any", ", ".join(e["labels"]) or "-",
                     {0: "any", 6: "TCP", 17: "UDP", 132: "SCTP"}.get(e["proto"], e["proto"]),
                     "any" if not e["port"] else (
                         f"{e['port']}-{e['end_port']}" if e["end_port"] else e["port"])))


@bpf.command("ct")
@output_option
@click.pass_context
def bpf_ct(ctx: click.Context, output: str) -> None:
    """Connection tracking entries."""
    _dump(ctx, "/v1/bpf/ct", output,
          ["SRC", "DST", "PROTO", "FLAGS", "IDENTITIES", "PACKETS", "IDLE"],
          lambda e: (f"{e['src']}:{e['sport']}", f"{e['dst']}:{e['dport']}", e["proto"],
                     ",".join(e["flags"]), f"{e['src_identity']}->{e['dst_identity']}",
                     e["packets"], f"{e['idle_seconds']}s"))


@bpf.command("metrics")
@output_option
@click.pass_context
def bpf_metrics(ctx: click.Context, output: str) -> None:
    """Datapath counters by reason and direction."""
    _dump(ctx, "/v1/bpf/metrics", output, ["REASON", "DIRECTION", "PACKETS", "BYTES"],
          lambda e: (e["reason"], e["direction"], e["packets"], e["bytes"]))


@main.group()
def policy() -> None:
    """Cilium-compatible network policies: validate, import, list, delete, trace."""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


@policy.command("validate")
@click.argument("files", nargs=-1, required=True)
def policy_validate(files: tuple[str, ...]) -> None:
    """Check policy files without importing them (exit 1 on the first error)."""
    from policies.parser import PolicyError, parse_text

    for path in files:
        try:
            found = parse_text(_read(path), path)
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from None
        rules = sum(len(p.rules) for p in found)
        click.echo(f"{path}: valid ({len(found)} policies, {rules} rules)")


@policy.command("import")
@click.argument("files", nargs=-1, required=True)
@click.pass_context
def policy_import(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Import (add or replace by name) policies into the cluster; prints the revision."""
    from ciliumpy.apiclient import call
    from policies.parser import PolicyError, load_documents, parse_documents

    loaded = {}
    for path in files:  # validate every file before importing any
        try:
            documents = load_documents(_read(path))
            parse_documents(documents, path, path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # YAML errors: let the parser word them
            raise click.ClickException(f"{path}: not valid YAML/JSON ({exc})") from None
        loaded[path] = documents
    revision = 0
    for path, documents in loaded.items():
        try:  # the agent receives the documents already loaded: no second YAML parse
            answer = call("/v1/policy", "POST", {"documents": documents, "source": path},
                          socket_path=ctx.obj["api_socket"], timeout=120)
        except APIError as exc:
            raise click.ClickException(str(exc)) from None
        revision = answer["revision"]
        click.echo(f"{path}: imported {', '.join(answer['policies'])}")
    click.echo(f"Revision: {revision}")


@policy.command("list")
@output_option
@click.pass_context
def policy_list(ctx: click.Context, output: str) -> None:
    """List imported policies."""
    data = _api(ctx, "/v1/policy")
    if output == "json":
        emit_json(data)
        return
    emit_table(["NAME", "LABELS", "RULES", "REVISION", "SOURCE"],
               [(p["name"], ",".join(p["labels"]) or "-",
                 len(p["document"].get("specs") or []) + (1 if p["document"].get("spec") else 0),
                 p["revision"], p["source"] or "-") for p in data["policies"]])
    click.echo(f"Revision: {data['revision']}")


@policy.command("get")
@click.argument("name")
@click.pass_context
def policy_get(ctx: click.Context, name: str) -> None:
    """Show one policy as stored (YAML)."""
    import yaml

    data = _api(ctx, f"/v1/policy/{name}")
    click.echo(yaml.safe_dump({"name": data["name"], "labels": data["labels"],
                               "revision": data["revision"], **data["document"]},
                              sort_keys=False).rstrip())


@policy.command("delete")
@click.argument("names", nargs=-1)
@click.option("--label", "labels", multiple=True, help="Delete policies with this key=value.")
@click.option("--all", "everything", is_flag=True, help="Delete every policy.")
@click.pass_context
def policy_delete(ctx: click.Context, names: tuple[str, ...], labels: tuple[str, ...],
                  everything: bool) -> None:
    """Delete policies by name, by labels, or all."""
    from urllib.parse import urlencode

    query = urlencode([("name", n) for n in names] + [("label", x) for x in labels]
                      + ([("all", "1")] if everything else []))
    if not query:
        raise click.UsageError("give policy names, --label or --all")
    data = _api(ctx, f"/v1/policy?{query}", method="DELETE")
    click.echo(f"Deleted {', '.join(data['deleted'])}\nRevision: {data['revision']}")


@policy.command("wait")
@click.argument("revision", type=int)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds.")
@click.pass_context
def policy_wait(ctx: click.Context, revision: int, timeout: float) -> None:
    """Return once this node's datapath enforces policy revision REVISION."""
    deadline = time.monotonic() + timeout
    while True:
        data = _api(ctx, "/v1/policy/revision")
        if data["enforced"] >= revision:
            click.echo(f"Revision {data['enforced']} enforced")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"revision {revision} not enforced after {timeout}s "
                                       f"(enforced: {data['enforced']}; {data['error'] or ''})")
        time.sleep(0.02)


@policy.command("trace")
@click.option("-f", "--file", "files", multiple=True,
              help="Trace against these files instead of the agent's policies.")
@click.option("--src", required=True, help="labels a=b,c=d | IP | host | world | container "
                                           "| endpoint id")
@click.option("--dst", required=True, help="same forms as --src")
@click.option("--dport", default="0", show_default=True, help="PORT[/PROTO] or icmp")
@click.option("--policy-enforcement", "mode", default="default",
              type=click.Choice(["default", "always", "never"]), show_default=True,
              help="Enforcement mode for offline traces.")
@output_option
@click.pass_context
def policy_trace(ctx: click.Context, files: tuple[str, ...], src: str, dst: str, dport: str,
                 mode: str, output: str) -> None:
    """Explain the verdict for a connection, rule by rule, in both directions."""
    if files:
        from policies.parser import PolicyError, parse_text
        from policies.trace import offline_side, trace

        rules = []
        for path in files:
            try:
                rules += [r for p in parse_text(_read(path), path) for r in p.rules]
            except PolicyError as exc:
                raise click.ClickException(str(exc)) from None
        text = dport.strip().lower()
        protocol, _, port = (("ICMP", "", "0") if text in ("icmp", "icmpv6")
                             else (text.partition("/")[2] or "tcp", "", text.partition("/")[0]))
        try:
            result = trace(rules, offline_side(src), offline_side(dst),
                           protocol.upper() if protocol.upper() != "ANY" else "TCP", int(port),
                           mode).as_dict()
        except ValueError as exc:
            raise click.ClickException(f"bad --dport {dport!r}: {exc}") from None
    else:
        from ciliumpy.apiclient import call

        try:
            result = call("/v1/policy/trace", "POST", {"src": src, "dst": dst, "dport": dport},
                          socket_path=ctx.obj["api_socket"])
        except APIError as exc:
            raise click.ClickException(str(exc)) from None
    if output == "json":
        emit_json(result)
    else:
        click.echo("\n".join(result["log"]))
