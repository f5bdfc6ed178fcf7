"""Hubble flows from the monitor's events: owns the event -> ``flow.Flow`` mapping.

A flow is a plain dict shaped exactly as Hubble prints a ``flow.Flow`` with protojson
(``api/v1/flow/flow.proto``, proto field names, declaration order, zero values left out,
enums by name, uint64 as strings, ``time`` as an RFC 3339 UTC timestamp with 0, 3, 6 or 9
fractional digits), so clients written for Hubble's JSON read it unchanged.

How each event becomes a flow follows Hubble's parsers:

* datapath events (``pkg/hubble/parser/threefour/parser.go``): ``drop`` -> event type 1
  with the drop reason as sub-type, verdict DROPPED; ``trace`` (a new connection) ->
  type 4, FORWARDED, sub-type and ``trace_observation_point`` from-endpoint (egress: the
  packet left the container) or to-endpoint (ingress); ``policy-verdict`` -> type 5,
  FORWARDED or DROPPED (with the drop reason, as Hubble derives it from the verdict).
  ``is_reply`` is false for traces and allowed verdicts (first packet of a connection)
  and absent for drops and denials (unknown), as Hubble sets it. ``Summary`` is the
  packet's top layer: ``TCP Flags: SYN`` when the event carries ``tcp_flags`` (a byte
  as in the TCP header), else ``TCP``; ``UDP``; ``SCTP``; ``ICMPv4 EchoRequest``.
* L7 events (``pkg/hubble/parser/seven``): type 129, ``l7.type`` REQUEST or RESPONSE,
  HTTP ``{code, method, url, protocol}`` / Kafka ``{error_code, api_version, api_key,
  correlation_id, topic}``, summaries as ``http.go``/``kafka.go`` word them. A response
  record is reported from the server to the client with ``is_reply`` true (Hubble's
  printer turns it back round with ``<-``).

Our drop reasons as Hubble's ``DropReason`` (``drop_reason_desc``; ``drop_reason`` keeps
the number): policy-denied -> POLICY_DENIED (133), policy-deny-rule -> POLICY_DENY (181,
"Policy denied by denylist"), malformed -> INVALID_PACKET_DROPPED (134, "Invalid
packet"), proxy-unavailable -> SOCKET_LOOKUP_FAILED (178: the datapath found no proxy
socket to assign, Cilium's DROP_PROXY_LOOKUP_FAILED), bandwidth-limit ->
REACHED_EDT_RATE_LIMITING_DROP_HORIZON (162, the drop of Cilium's bandwidth manager).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from ciliumpy.flows.stamps import timestamp

MESSAGE_TYPES = {"drop": 1, "debug": 2, "capture": 3, "trace": 4, "policy-verdict": 5,
                 "l7": 129, "agent": 130}  # pkg/monitor/api/types.go MessageTypeNames
TRACE_POINTS = {0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack",
                4: "to-overlay", 5: "from-endpoint", 6: "from-proxy", 7: "from-host",
                8: "from-stack", 9: "from-overlay", 10: "from-network", 11: "to-network"}
# flow.proto TraceObservationPoint: 0 is "unknown" there, so to-endpoint is 101
TRACE_POINT_ENUM = {0: "TO_ENDPOINT", 1: "TO_PROXY", 2: "TO_HOST", 3: "TO_STACK",
                    4: "TO_OVERLAY", 5: "FROM_ENDPOINT", 6: "FROM_PROXY", 7: "FROM_HOST",
                    8: "FROM_STACK", 9: "FROM_OVERLAY", 10: "FROM_NETWORK", 11: "TO_NETWORK"}
POLICY_MATCH_TYPES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all"}
VERDICTS = ("VERDICT_UNKNOWN", "FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED",
            "TRACED", "TRANSLATED")
TRAFFIC_DIRECTIONS = ("TRAFFIC_DIRECTION_UNKNOWN", "INGRESS", "EGRESS")
IP_VERSIONS = ("IP_NOT_USED", "IPv4", "IPv6")

# flow.proto DropReason, name -> number (for drop_reason_desc and --drop-reason-desc)
_DROP_REASONS_TEXT = """
DROP_REASON_UNKNOWN=0 INVALID_SOURCE_MAC=130 INVALID_DESTINATION_MAC=131
INVALID_SOURCE_IP=132 POLICY_DENIED=133 INVALID_PACKET_DROPPED=134
CT_TRUNCATED_OR_INVALID_HEADER=135 CT_MISSING_TCP_ACK_FLAG=136 CT_UNKNOWN_L4_PROTOCOL=137
CT_CANNOT_CREATE_ENTRY_FROM_PACKET=138 UNSUPPORTED_L3_PROTOCOL=139 MISSED_TAIL_CALL=140
ERROR_WRITING_TO_PACKET=141 UNKNOWN_L4_PROTOCOL=142 UNKNOWN_ICMPV4_CODE=143
UNKNOWN_ICMPV4_TYPE=144 UNKNOWN_ICMPV6_CODE=145 UNKNOWN_ICMPV6_TYPE=146
ERROR_RETRIEVING_TUNNEL_KEY=147 ERROR_RETRIEVING_TUNNEL_OPTIONS=148 INVALID_GENEVE_OPTION=149
UNKNOWN_L3_TARGET_ADDRESS=150 STALE_OR_UNROUTABLE_IP=151 NO_MATCHING_LOCAL_CONTAINER_FOUND=152
ERROR_WHILE_CORRECTING_L3_CHECKSUM=153 ERROR_WHILE_CORRECTING_L4_CHECKSUM=154
CT_MAP_INSERTION_FAILED=155 INVALID_IPV6_EXTENSION_HEADER=156
IP_FRAGMENTATION_NOT_SUPPORTED=157 SERVICE_BACKEND_NOT_FOUND=158
NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT=160 FAILED_TO_INSERT_INTO_PROXYMAP=161
REACHED_EDT_RATE_LIMITING_DROP_HORIZON=162 UNKNOWN_CONNECTION_TRACKING_STATE=163
LOCAL_HOST_IS_UNREACHABLE=164 NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION=165
UNSUPPORTED_L2_PROTOCOL=166 NO_MAPPING_FOR_NAT_MASQUERADE=167
UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE=168 FIB_LOOKUP_FAILED=169
ENCAPSULATION_TRAFFIC_IS_PROHIBITED=170 INVALID_IDENTITY=171 UNKNOWN_SENDER=172
NAT_NOT_NEEDED=173 IS_A_CLUSTERIP=174 FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND=175
FORBIDDEN_ICMPV6_MESSAGE=176 DENIED_BY_LB_SRC_RANGE_CHECK=177 SOCKET_LOOKUP_FAILED=178
SOCKET_ASSIGN_FAILED=179 PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL=180 POLICY_DENY=181
VLAN_FILTERED=182 INVALID_VNI=183 INVALID_TC_BUFFER=184 NO_SID=185 MISSING_SRV6_STATE=186
NAT46=187 NAT64=188 AUTH_REQUIRED=189 CT_NO_MAP_FOUND=190 SNAT_NO_MAP_FOUND=191
INVALID_CLUSTER_ID=192 UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP=193 NO_EGRESS_GATEWAY=194
TTL_EXCEEDED=196 NO_NODE_ID=197 DROP_HOST_NOT_READY=202 DROP_EP_NOT_READY=203
"""
DROP_REASONS: dict[str, int] = {name: int(number) for name, number in (
    item.split("=") for item in _DROP_REASONS_TEXT.split())}
DROP_REASON_NAMES = {number: name for name, number in DROP_REASONS.items()}
# the monitor's reasons -> Hubble's drop reason numbers (choices: see the module docstring)
REASON_TO_DROP = {"policy-denied": 133, "policy-deny-rule": 181, "malformed": 134,
                  "proxy-unavailable": 178, "bandwidth-limit": 162}
# pkg/monitor/api/drop.go: how Hubble's printer names a drop (TYPE column); others print
# their number, as Hubble does for codes it does not know
DROP_REASON_TEXT = {133: "Policy denied", 134: "Invalid packet", 162:
                    "Reached EDT rate-limiting drop horizon", 178: "Socket lookup failed",
                    179: "Socket assign failed", 181: "Policy denied by denylist"}

# gopacket's ICMP type names (the Summary, e.g. "ICMPv4 EchoRequest")
ICMPV4_TYPES = {0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench",
                5: "Redirect", 8: "EchoRequest", 9: "RouterAdvertisement",
                10: "RouterSolicitation", 11: "TimeExceeded", 12: "ParameterProblem",
                13: "TimestampRequest", 14: "TimestampReply"}
ICMPV6_TYPES = {1: "DestinationUnreachable", 2: "PacketTooBig", 3: "TimeExceeded",
                4: "ParameterProblem", 128: "EchoRequest", 129: "EchoReply",
                133: "RouterSolicitation", 134: "RouterAdvertisement",
                135: "NeighborSolicitation", 136: "NeighborAdvertisement", 137: "Redirect"}
# TCP header flag bits, in flow.proto's TCPFlags order and in the order Hubble's summary
# lists them (threefour getTCPFlags)
TCP_FLAG_BITS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10,
                 "URG": 0x20, "ECE": 0x40, "CWR": 0x80, "NS": 0x100}
TCP_SUMMARY_ORDER = ("SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR", "NS")
HTTP_VERSIONS = {"http": "HTTP/1.1", "http2": "HTTP/2", "grpc": "HTTP/2"}
L7_VERDICTS = {"FORWARDED": "FORWARDED", "DENIED": "DROPPED", "ERROR": "ERROR",
               "allowed": "FORWARDED", "denied": "DROPPED"}

ContainerOf = Callable[[str], "str | None"]


def flow_from_event(event: dict, node_name: str, container_of: ContainerOf) -> dict | None:
    """The one Hubble flow standing for a monitor event: for an L7 exchange that was
    answered, the response record (it carries the status and latency), else the request
    record; see :func:`flows_from_event`. None for an event that is no flow (a type
    other than drop, trace, policy-verdict, l7)."""
    flows = flows_from_event(event, node_name, container_of)
    return flows[-1] if flows else None


def flows_from_event(event: dict, node_name: str, container_of: ContainerOf) -> list[dict]:
    """The Hubble flows of one monitor event, oldest first: one for a datapath event;
    for an L7 exchange the records Cilium's access log gives: a request, and a response
    when it was forwarded and answered (HTTP status, Kafka error code). A denied request
    is its request record (DROPPED) alone; an ERROR is one record (the response when the
    proxy answered with a status). The request of a pair is dated ``latency`` earlier.
    ``container_of(ip)`` names a container by address when the event does not. No
    flows for an event of another type."""
    kind = event.get("type")
    if kind == "l7":
        return _l7_flows(event, node_name, container_of)
    if kind not in ("drop", "trace", "policy-verdict"):
        return []
    return [_l34_flow(event, node_name, container_of)]


# Parts that repeat from flow to flow (both sides' endpoints, the IP block, the event
# type, the TCP flags) are built once and the same dict is shared by every flow that has
# them: a flow is then a few new dicts, not a dozen, which keeps building it and the
# garbage collector's walks over a full store cheap. Flows are never changed after they
# are built (readers copy what they change), so sharing is safe.
@functools.lru_cache(maxsize=4096)
def _ip_block(src: str | None, dst: str | None) -> dict | None:
    if not src and not dst:
        return None
    version = _ip_version(src) or _ip_version(dst)
    block = {"source": src or "", "destination": dst or ""}
    block = {k: v for k, v in block.items() if v}
    if version:
        block["ipVersion"] = IP_VERSIONS[1 if version == 4 else 2]
    return block


@functools.lru_cache(maxsize=4096)
def _ip_version(address: str | None) -> int:
    """4, 6, or 0 for no address; cached: a flow's addresses repeat (parsing one costs
    more than the rest of the flow)."""
    try:
        return ipaddress.ip_address(address or "").version
    except ValueError:
        return 0


def _endpoint(identity: object, labels: object, name: str | None, ep_id: int = 0) -> dict:
    try:
        return _shared_endpoint(identity, tuple(labels or ()), name, ep_id)  # type: ignore
    except TypeError:  # something unhashable: built for this flow alone
        return _make_endpoint(identity, labels, name, ep_id)


@functools.lru_cache(maxsize=4096)
def _shared_endpoint(identity: object, labels: tuple, name: str | None, ep_id: int) -> dict:
    return _make_endpoint(identity, labels, name, ep_id)


def _make_endpoint(identity: object, labels: object, name: str | None, ep_id: int) -> dict:
    out: dict = {}
    if ep_id:
        out["ID"] = int(ep_id)
    if isinstance(identity, int) and identity:
        out["identity"] = identity
    if labels:
        out["labels"] = sorted(str(label) for label in labels)  # type: ignore[union-attr]
    if name:
        out["pod_name"] = str(name).lstrip("/")
    return out


def _name(ip: str | None, given: str | None, container_of: ContainerOf) -> str | None:
    if given:
        return given
    return container_of(ip) if ip else None


def _port(value: object) -> int:
    return value if isinstance(value, int) and 0 < value < 65536 else 0


def _ports(sport: int, dport: int) -> dict:
    out = {}
    if sport:
        out["source_port"] = sport
    if dport:
        out["destination_port"] = dport
    return out


@functools.lru_cache(maxsize=512)
def _tcp_flags(bits: int) -> tuple[dict, str]:
    """(flow.proto's TCPFlags of a header's flag bits, the Summary naming them)."""
    flags = {name: True for name, bit in TCP_FLAG_BITS.items() if bits & bit}
    names = [name for name in TCP_SUMMARY_ORDER if bits & TCP_FLAG_BITS[name]]
    return flags, "TCP Flags: " + ", ".join(names)


@functools.lru_cache(maxsize=1024)
def _event_type(kind: int, sub_type: int) -> dict:
    return {"type": kind, "sub_type": sub_type} if sub_type else {"type": kind}


@functools.lru_cache(maxsize=4096)
def _interface(index: int) -> dict:
    return {"index": index}


def _layer4(event: dict, ip_version: int) -> tuple[dict | None, str]:
    """(the l4 block, the Summary) of a datapath event."""
    proto = str(event.get("protocol") or "").upper()
    sport, dport = _port(event.get("src_port")), _port(event.get("dst_port"))
    if proto == "TCP":
        tcp = _ports(sport, dport)
        bits = event.get("tcp_flags")
        if isinstance(bits, int):
            flags, summary = _tcp_flags(bits)
            if flags:
                tcp["flags"] = flags
            return {"TCP": tcp}, summary
        return {"TCP": tcp}, "TCP"
    if proto in ("UDP", "SCTP"):
        return {proto: _ports(sport, dport)}, proto
    if proto in ("ICMP", "ICMPV4", "ICMPV6"):
        v6 = proto == "ICMPV6" or ip_version == 6
        icmp_type = event.get("icmp_type")
        if not isinstance(icmp_type, int):
            # the datapath puts an echo's id in the source port of a request and the
            # destination port of a reply; with neither, it is a request (new flows are)
            reply = dport and not sport
            icmp_type = (129 if reply else 128) if v6 else (0 if reply else 8)
        key, names = ("ICMPv6", ICMPV6_TYPES) if v6 else ("ICMPv4", ICMPV4_TYPES)
        body = {"type": icmp_type} if icmp_type else {}
        return {key: body}, f"{key} {names.get(icmp_type, f'{icmp_type}(0)')}"
    return None, {4: "IPv4", 6: "IPv6"}.get(ip_version, "")


def _assemble(parts: dict) -> dict:
    """Drop empty members, keeping flow.proto's declaration order."""
    order = ("time", "uuid", "verdict", "drop_reason", "IP", "l4", "source", "destination",
             "Type", "node_name", "l7", "event_type", "traffic_direction",
             "policy_match_type", "trace_observation_point", "drop_reason_desc", "is_reply",
             "interface", "Summary")
    out = {}
    for key in order:
        value = parts.get(key)
        if key in ("source", "destination", "is_reply") and value is not None:
            out[key] = value  # both endpoints always (maybe {}); is_reply: a BoolValue
        elif value is not None and value != "" and value != 0:
            out[key] = value
    return out


def _l34_flow(event: dict, node_name: str, container_of: ContainerOf) -> dict:
    kind = event["type"]
    src_ip, dst_ip = event.get("src_ip"), event.get("dst_ip")
    ip = _ip_block(src_ip, dst_ip)
    version = {"IPv4": 4, "IPv6": 6}.get((ip or {}).get("ipVersion", ""), 0)
    l4, summary = _layer4(event, version)
    egress = event.get("direction") == "egress"
    # policy-audit-mode: denied by policy, passed; Hubble's verdict AUDIT, no drop reason
    audited = kind == "policy-verdict" and event.get("verdict") == "audit"
    denied = kind == "drop" or (kind == "policy-verdict" and not audited
                                and event.get("verdict") != "allowed")
    drop = REASON_TO_DROP.get(str(event.get("reason")), 0) if denied else 0

    local = event.get("endpoint") or {}
    ep_id, local_name = int(event.get("ifindex") or 0), local.get("container_name")
    src = _endpoint(event.get("src_identity"), event.get("src_labels"),
                    local_name if egress and local_name else
                    _name(src_ip, None, container_of), ep_id if egress and local else 0)
    dst = _endpoint(event.get("dst_identity"), event.get("dst_labels"),
                    local_name if not egress and local_name else
                    _name(dst_ip, None, container_of), ep_id if not egress and local else 0)

    sub_type, point = 0, None
    if kind == "drop":
        sub_type = drop
    elif kind == "trace":
        sub_type = 5 if egress else 0
        point = TRACE_POINT_ENUM[sub_type]
    event_type = _event_type(MESSAGE_TYPES[kind], sub_type)
    direction = event.get("direction")
    match_type = event.get("policy_match_type") if kind == "policy-verdict" else None
    return _assemble({
        "time": timestamp(event.get("time") or 0),
        "verdict": "DROPPED" if denied else "AUDIT" if audited else "FORWARDED",
        "drop_reason": drop, "IP": ip, "l4": l4, "source": src, "destination": dst,
        "Type": "L3_L4", "node_name": node_name, "event_type": event_type,
        "traffic_direction": {"ingress": "INGRESS", "egress": "EGRESS"}.get(direction),
        "policy_match_type": match_type if isinstance(match_type, int) else None,
        "trace_observation_point": point,
        "drop_reason_desc": DROP_REASON_NAMES.get(drop) if drop else None,
        "is_reply": None if denied else False,
        "interface": _interface(ep_id) if kind == "trace" and ep_id else None,
        "Summary": summary,
    })


def _http_url(event: dict, http: dict) -> str:
    host = http.get("host") or http.get("authority")
    if not host:
        dst, port = event.get("dst_ip") or "", _port(event.get("dst_port"))
        host = f"[{dst}]" if ":" in dst else dst
        if port and port != 80:
            host = f"{host}:{port}"
    url = http.get("url")
    return url if url else f"http://{host}{http.get('path') or ''}"


# DNS response codes by name (RFC 1035/6895), as Hubble's DNS.rcode carries the number
DNS_RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4,
              "REFUSED": 5, "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9,
              "NOTZONE": 10}


def _l7_flows(event: dict, node_name: str, container_of: ContainerOf) -> list[dict]:
    verdict = L7_VERDICTS.get(str(event.get("verdict")), "VERDICT_UNKNOWN")
    http, kafka = event.get("http") or {}, event.get("kafka")
    proto = str(event.get("protocol") or "").lower()
    status = http.get("status")
    error_code = (kafka or {}).get("error_code")
    answered = isinstance(error_code, int) if proto == "kafka" else (
        bool((event.get("dns") or {}).get("rcode")) if proto == "dns" else isinstance(status, int))
    latency_ms = http.get("latency_ms")
    latency_ns = int(latency_ms * 1_000_000) if isinstance(latency_ms, (int, float)) else 0
    when = float(event.get("time") or 0)
    if verdict == "DROPPED" or not answered:
        return [_l7_flow(event, node_name, container_of, verdict, False, 0, when)]
    response = _l7_flow(event, node_name, container_of, verdict, True, latency_ns, when)
    if verdict == "ERROR":
        return [response]
    request = _l7_flow(event, node_name, container_of, "FORWARDED", False, 0,
                       when - latency_ns / 1e9)
    return [request, response]


def _l7_flow(event: dict, node_name: str, container_of: ContainerOf, verdict: str,
             response: bool, latency_ns: int, when: float) -> dict:
    src_ip, dst_ip = event.get("src_ip"), event.get("dst_ip")
    sport, dport = _port(event.get("src_port")), _port(event.get("dst_port"))
    src = _endpoint(event.get("src_identity"), event.get("src_labels"),
                    _name(src_ip, event.get("src_name"), container_of))
    dst = _endpoint(event.get("dst_identity"), event.get("dst_labels"),
                    _name(dst_ip, event.get("dst_name"), container_of))
    http, kafka, dns = event.get("http") or {}, event.get("kafka"), event.get("dns")
    proto = str(event.get("protocol") or "").lower()
    l4_proto = "UDP" if proto == "dns" and (dns or {}).get("transport") != "tcp" else "TCP"
    l4 = {l4_proto: _ports(sport, dport)}
    if response:  # Cilium logs a response from the server to the client
        src, dst, src_ip, dst_ip = dst, src, dst_ip, src_ip
        l4 = {l4_proto: _ports(dport, sport)}
    l7: dict = {"type": "RESPONSE" if response else "REQUEST"}
    if latency_ns:
        l7["latency_ns"] = str(latency_ns)  # uint64: a string in protojson
    if proto == "dns" and dns is not None:
        record = {"query": dns.get("query"), "ips": dns.get("ips") if response else None,
                  "ttl": dns.get("ttl") if response else None,
                  "cnames": dns.get("cnames") if response else None,
                  "rcode": DNS_RCODES.get(str(dns.get("rcode")), 2) if response else None,
                  "qtypes": [dns.get("qtype")] if dns.get("qtype") else None,
                  "rrtypes": ([dns.get("qtype")] if dns.get("ips") else None)
                  if response else None, "observation_source": "proxy"}
        l7["dns"] = {k: v for k, v in record.items() if v not in (None, "", 0, [])}
        summary = (f"DNS {'Answer' if response else 'Query'} {dns.get('query')} "
                   f"{dns.get('qtype')}")
        if response:
            ips = ",".join(dns.get("ips") or [])
            summary += f" {dns.get('rcode')}" + (f" ({ips}) TTL: {dns.get('ttl')}" if ips
                                                  else "")
    elif proto == "tls":
        # Hubble's Layer7 record has no TLS kind: the flow carries the SNI in its summary
        sni = (event.get("tls") or {}).get("sni") or "-"
        summary = (f"TLS ClientHello SNI {sni} "
                   f"{'spliced' if verdict == 'FORWARDED' else 'reset'}")
    elif proto == "kafka" and kafka is not None:
        topic = ",".join(kafka.get("topics") or [])
        record = {"error_code": kafka.get("error_code") if response else None,
                  "api_version": kafka.get("api_version"), "api_key": kafka.get("api_key"),
                  "correlation_id": kafka.get("correlation_id"), "topic": topic}
        l7["kafka"] = {k: v for k, v in record.items() if v not in (None, "", 0)}
        summary = (f"Kafka {'response' if response else 'request'} {kafka.get('api_key') or ''} "
                   f"correlation id {kafka.get('correlation_id') or 0} topic '{topic}'")
        if response:
            summary += f" return code {kafka.get('error_code') or 0}"
    else:
        version = HTTP_VERSIONS.get(proto, proto.upper())
        method, url, code = http.get("method") or "", _http_url(event, http), http.get("status")
        record = {"code": code if response and isinstance(code, int) else None,
                  "method": method, "url": url, "protocol": version}
        l7["http"] = {k: v for k, v in record.items() if v not in (None, "", 0)}
        if response:
            summary = (f"{version} {code or 0} {latency_ns // 1_000_000}ms "
                       f"({method} {url})")
        else:
            summary = f"{version} {method} {url}"
    direction = event.get("direction")
    return _assemble({
        "time": timestamp(when), "verdict": verdict, "IP": _ip_block(src_ip, dst_ip),
        "l4": l4, "source": src, "destination": dst, "Type": "L7", "node_name": node_name,
        "l7": l7, "event_type": {"type": MESSAGE_TYPES["l7"]},
        "traffic_direction": {"ingress": "INGRESS", "egress": "EGRESS"}.get(direction),
        "is_reply": response, "Summary": summary,
    })
