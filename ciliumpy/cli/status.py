"""``ciliumpy status``: the agent's health as ``Key: value`` lines (or ``-o json``)."""

from __future__ import annotations

import click

from ciliumpy.cli.cluster import status_line
from ciliumpy.cli.output import api, emit_json, output_option


@click.command()
@output_option
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """Show the agent's health."""
    data = api(ctx, "/v1/status")
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
        ("L7 proxy", _proxy_line(data.get("proxy"))),
        ("Event reader", _reader_line(data["datapath"])),
        ("Bandwidth", _bandwidth_line(data.get("bandwidth"))),
        ("Services", _services_line(data.get("services"))),
        ("Host firewall", _host_firewall_line(data.get("host_firewall"))),
        ("Hubble", _hubble_line(data.get("hubble"))),
        ("Cluster Mesh", status_line(data.get("clustermesh"))),
        ("Networks", data["networks"]),
        ("Endpoints", f"{data['endpoints']} "
                      + " ".join(f"{k}={v}" for k, v in sorted(data["endpoint_states"].items()))),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")


def _host_firewall_line(state: dict | None) -> str:
    """``enabled (ingress enforced, egress open)``; ``audit mode`` when nothing drops."""
    if not state:
        return "unknown"
    audit = ", audit mode" if state.get("policy_audit_mode") else ""
    if not state.get("enabled"):
        return "disabled" + (" (audit mode)" if audit else "")
    words = [f"{d} {'enforced' if state.get('enforce_' + d) else 'open'}"
             for d in ("ingress", "egress")]
    return f"enabled ({', '.join(words)}{audit})"


def _services_line(services: dict | None) -> str:
    if not services:
        return "starting"
    line = (f"{services['services']} ({services['programmed']} programmed, "
            f"{services['backends']} backends), {services['published_ports']} published "
            f"ports, socket LB scope {services['socket_lb_scope']}")
    if services.get("error"):
        line += f" - {services['error']}"
    return line


def _bandwidth_line(bandwidth: dict | None) -> str:
    if not bandwidth:
        return "-"
    return (f"{bandwidth['mode']} ({bandwidth['kernel']}), "
            f"{bandwidth['limited_endpoints']} limited endpoints")


def _hubble_line(hubble: dict | None) -> str:
    """Where Hubble's API (and the relay's) is served."""
    if not hubble or not hubble.get("address"):
        return "off (--hubble-listen-address)"
    line = f"Observer API on {hubble['address']} ({'TLS' if hubble.get('tls') else 'plain TCP'})"
    if hubble.get("relay"):
        line += f", relay (every node) on {hubble['relay']}"
    return line


def _reader_line(datapath: dict) -> str:
    """The process reading the datapath's ring buffer, and the events lost."""
    reader = datapath.get("event_reader")
    if not reader:
        return "-"
    state = "running" if reader.get("running") else "DOWN (no new flows)"
    line = (f"{state} (pid {reader.get('pid')}, restarts {reader.get('restarts', 0)}), "
            f"{datapath.get('events_seen', 0)} events, {datapath.get('events_lost', 0)} lost "
            "(ring full)")
    if reader.get("last_error"):
        line += f" - last: {reader['last_error']}"
    return line


def _proxy_line(proxy: dict | None) -> str:
    if not proxy:
        return "-"
    state = "running" if proxy.get("running") else "DOWN (L7 ports refuse connections)"
    return (f"{state} (port {proxy.get('port')}, {proxy.get('workers')} workers, "
            f"pid {proxy.get('pid')}, restarts {proxy.get('restarts', 0)})")
