"""Hubble's output forms for flow dicts: owns how ``ciliumpy observe`` prints a flow.

Follows ``hubble/pkg/printer/printer.go`` (``WriteProtoFlow``) with its defaults:

* ``compact``: ``TIMESTAMP[ [NODE]]: SRC (ID) -> DST (ID) TYPE VERDICT (SUMMARY)``; the
  arrow is ``->``, ``<-`` for replies (both sides swapped back, so the client stays on
  the left) and ``<>`` when the flow does not say (``is_reply`` absent, e.g. drops);
* ``dict``: ``KEY: value`` lines right-aligned on the colon, flows separated by
  ``------------``;
* ``table``: TIMESTAMP [NODE] SOURCE DESTINATION TYPE VERDICT SUMMARY, aligned as Go's
  tabwriter (min width 2, padding 3) aligns them, the last column unpadded;
* ``json``: Hubble's ``-o json`` (jsonpb), a GetFlowsResponse per line:
  ``{"flow":{...},"node_name":"...","time":"..."}``, compact, with Go's HTML escaping.

Endpoints print as the pod (here: container) name when the flow has one and IP
translation is on (Hubble's default), else the IP, with ``:port`` for TCP/UDP/SCTP;
identities as ``(ID:256)`` or a reserved name (``(world)``); times as Go's
``time.StampMilli`` in UTC (``Jan  2 15:04:05.000``); the TYPE column as ``GetFlowType``
words it (``to-endpoint``, ``Policy denied``, ``policy-verdict:none INGRESS``,
``http-request``); policy verdicts print ALLOWED/DENIED. Control characters in printed
fields are escaped (Hubble's terminal escaper: ESC as ``^[``, CR as ``\\r``; ciliumpy also
escapes the other C0/C1 controls) so a request path cannot drive the terminal.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime

from ciliumpy.flows.model import DROP_REASON_TEXT, POLICY_MATCH_TYPES, TRACE_POINTS
from policies.identities import RESERVED

DICT_SEPARATOR = "------------"
# Cilium's reserved identities (pkg/identity), ciliumpy's own names first
IDENTITY_NAMES = {0: "unknown", 7: "kube-apiserver", 8: "ingress", 9: "world-ipv4",
                  10: "world-ipv6", **RESERVED}
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                   r"(Z|[+-]\d\d:\d\d)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GO_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
            "\u2029": "\\u2029"}


def escape(text: str) -> str:
    """A printed field with terminal control characters made visible."""
    return _CONTROL.sub(lambda m: {"\x1b": "^[", "\r": "\\r", "\n": "\\n", "\t": "\\t"}.get(
        m[0], f"\\x{ord(m[0]):02x}"), text)


def stamp(value: object) -> str:
    """An RFC 3339 timestamp as Go's ``time.StampMilli`` in UTC; ``N/A`` if invalid."""
    found = _TIME.fullmatch(value) if isinstance(value, str) else None
    if not found:
        return "N/A"
    second = _second(found[1], found[2], found[3], found[4], found[5], found[6], found[8])
    if second is None:
        return "N/A"
    return f"{second}.{(found[7] or '').ljust(3, '0')[:3]}"


@functools.lru_cache(maxsize=1024)
def _second(year: str, month: str, day: str, hour: str, minute: str, second: str,
            offset: str) -> str | None:
    """``Jan  2 15:04:05`` in UTC for one second of a timestamp (flows printed together
    share their seconds: the date arithmetic is done once per second, not per flow)."""
    try:
        when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        tzinfo=UTC)
        if offset != "Z":
            sign = 1 if offset[0] == "+" else -1
            when -= sign * (datetime(1, 1, 1, int(offset[1:3]), int(offset[4:6]))
                            - datetime(1, 1, 1))
    except ValueError:
        return None
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S}"


def identity(number: object) -> str:
    """``(ID:256)``, or a reserved identity's name: ``(world)``."""
    number = number if isinstance(number, int) else 0
    return f"({IDENTITY_NAMES[number]})" if number in IDENTITY_NAMES else f"(ID:{number})"


def _ports(flow: dict) -> tuple[str, str]:
    l4 = flow.get("l4") or {}
    block = next((l4[k] for k in ("TCP", "UDP", "SCTP") if k in l4), None)
    if block is None:
        return "", ""
    return str(block.get("source_port", 0)), str(block.get("destination_port", 0))


def _host(ip: str, port: str, endpoint: dict, translate: bool) -> str:
    host = ip
    if translate and endpoint.get("pod_name"):
        namespace = endpoint.get("namespace")
        host = f"{namespace}/{endpoint['pod_name']}" if namespace else endpoint["pod_name"]
    if port and port != "0":
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


def hostnames(flow: dict, ip_translation: bool = True) -> tuple[str, str]:
    """(source, destination) as Hubble prints them: name or IP, and the port."""
    ip = flow.get("IP")
    src, dst = flow.get("source") or {}, flow.get("destination") or {}
    if not ip:  # Hubble prints nothing without an IP layer; a name is more use
        return ((src.get("pod_name", "") if ip_translation else ""),
                (dst.get("pod_name", "") if ip_translation else ""))
    sport, dport = _ports(flow)
    return (_host(ip.get("source", ""), sport, src, ip_translation),
            _host(ip.get("destination", ""), dport, dst, ip_translation))


def flow_type(flow: dict) -> str:
    """The TYPE column (printer.go ``GetFlowType``)."""
    l7 = flow.get("l7")
    if l7 is not None:
        proto = next((p for p in ("http", "dns", "kafka") if p in l7), "l7")
        kind = str(l7.get("type", "UNKNOWN_L7_TYPE")).lower()
        if proto == "dns":
            kind += " " + str(l7["dns"].get("observation_source", ""))
        return f"{proto}-{kind}"
    event = flow.get("event_type") or {}
    kind, sub = event.get("type", 0), event.get("sub_type", 0)
    if kind == 4:
        return TRACE_POINTS.get(sub, str(sub))
    if kind == 1:
        return DROP_REASON_TEXT.get(sub, str(sub))
    if kind == 5:
        match = POLICY_MATCH_TYPES.get(flow.get("policy_match_type", 0), "unknown")
        direction = flow.get("traffic_direction", "TRAFFIC_DIRECTION_UNKNOWN")
        return f"policy-verdict:{match} {direction}"
    return "UNKNOWN"


def verdict(flow: dict) -> str:
    """The VERDICT column: policy verdicts say ALLOWED/DENIED/AUDITED."""
    name = flow.get("verdict", "VERDICT_UNKNOWN")
    if (flow.get("event_type") or {}).get("type") == 5:
        return {"FORWARDED": "ALLOWED", "REDIRECTED": "ALLOWED", "DROPPED": "DENIED",
                "ERROR": "DENIED", "AUDIT": "AUDITED"}.get(name, name)
    return name


def _columns(flow: dict, ip_translation: bool) -> tuple[str, str, str, str, str, str]:
    src, dst = hostnames(flow, ip_translation)
    return (stamp(flow.get("time")), escape(src), escape(dst), escape(flow_type(flow)),
            verdict(flow), escape(str(flow.get("Summary", ""))))


def compact(flow: dict, *, node_name: bool = False, ip_translation: bool = True) -> str:
    """Hubble's ``-o compact`` line (no newline)."""
    when, src, dst, kind, said, summary = _columns(flow, ip_translation)
    src_id = identity((flow.get("source") or {}).get("identity"))
    dst_id = identity((flow.get("destination") or {}).get("identity"))
    node = f" [{escape(str(flow.get('node_name', '')))}]" if node_name else ""
    reply = flow.get("is_reply")
    arrow = "<>" if reply is None else "->"
    if reply is True:
        src, dst, src_id, dst_id, arrow = dst, src, dst_id, src_id, "<-"
    return f"{when}{node}: {src} {src_id} {arrow} {dst} {dst_id} {kind} {said} ({summary})"


def dict_form(flow: dict, *, node_name: bool = False, ip_translation: bool = True,
              first: bool = True) -> str:
    """Hubble's ``-o dict`` block (no trailing newline); ``first=False`` puts the
    ``------------`` separator line before it, as Hubble does before every flow but the
    first."""
    when, src, dst, kind, said, summary = _columns(flow, ip_translation)
    lines = [] if first else [DICT_SEPARATOR]
    lines.append(f"  TIMESTAMP: {when}")
    if node_name:
        lines.append(f"       NODE: {escape(str(flow.get('node_name', '')))}")
    lines += [f"     SOURCE: {src}", f"DESTINATION: {dst}", f"       TYPE: {kind}",
              f"    VERDICT: {said}", f"    SUMMARY: {summary}"]
    return "\n".join(lines)


def table(flows: list[dict], *, node_name: bool = False, ip_translation: bool = True) -> str:
    """Hubble's ``-o table`` (the default in Hubble): a header and a row per flow,
    aligned together (no trailing newline; empty without flows)."""
    if not flows:
        return ""
    header = ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    rows = []
    for flow in flows:
        row = list(_columns(flow, ip_translation))
        if node_name:
            row.insert(1, escape(str(flow.get("node_name", ""))))
        rows.append(row)
    if node_name:
        header.insert(1, "NODE")
    rows.insert(0, header)
    widths = [max(2, max(len(row[i]) for row in rows) + 3) for i in range(len(header) - 1)]
    return "\n".join("".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                     + row[-1] for row in rows)


def json_line(flow: dict) -> str:
    """Hubble's ``-o json`` line for a flow (no newline): a GetFlowsResponse."""
    response = {"flow": flow}
    if flow.get("node_name"):
        response["node_name"] = flow["node_name"]
    if flow.get("time"):
        response["time"] = flow["time"]
    text = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _GO_HTML[m[0]], text)
