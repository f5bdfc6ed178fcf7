"""Flows as Hubble shows them (ciliumpy.flows): monitor events -> Hubble flow JSON,
Hubble's observe filters, and Hubble's output forms, checked as a user would see them."""

from __future__ import annotations

import json

import pytest

from ciliumpy.flows.filters import FlowFilter, matches, parse_selector
from ciliumpy.flows.flags import filters_from_cli
from ciliumpy.flows.formats import compact, dict_form, json_line, stamp, table
from ciliumpy.flows.model import flow_from_event, flows_from_event, timestamp

CLIENT, WEB, DB = "10.77.0.2", "10.77.0.3", "10.77.0.4"
NAMES = {CLIENT: "client", WEB: "web", DB: "db"}
T0 = 1700771400.123456  # Nov 23 2023 20:30:00.123456 UTC
LABELS = {256: ["container:app=client"], 257: ["container:app=web", "network:tier=front"],
          258: ["container:app=db"], 2: ["reserved:world"]}
IDS = {CLIENT: 256, WEB: 257, DB: 258}


def datapath(kind: str, src: str, dst: str, direction: str, *, reason: str = "forwarded",
             verdict: str = "allowed", proto: str = "TCP", sport: int = 41234,
             dport: int = 80, when: float = T0, **extra: object) -> dict:
    """A monitor event as Monitor.ingest leaves it (datapath/events.py decode + labels)."""
    local = src if direction == "egress" else dst
    src_id, dst_id = IDS.get(src, 2), IDS.get(dst, 2)
    event = {"type": kind, "reason": reason, "direction": direction, "verdict": verdict,
             "ifindex": 11 if local == CLIENT else 12, "src_identity": src_id,
             "dst_identity": dst_id, "src_ip": src, "dst_ip": dst, "src_port": sport,
             "dst_port": dport, "protocol": proto, "length": 60, "ktime_ns": 123456789,
             "time": when, "src_labels": LABELS[src_id], "dst_labels": LABELS[dst_id]}
    if local in NAMES:
        event["endpoint"] = {"endpoint_id": "e" * 64, "container_name": NAMES[local],
                             "identity": IDS[local]}
    event.update(extra)
    return event


def l7(verdict: str = "FORWARDED", *, method: str = "GET", path: str = "/index.html",
       status: int | None = 200, latency_ms: float | None = 7.25, protocol: str = "http",
       kafka: dict | None = None, when: float = T0 + 1, **http: object) -> dict:
    """An L7 event as Monitor.ingest_l7 leaves it (names from the proxy)."""
    event = {"type": "l7", "time": when, "verdict": verdict, "direction": "ingress",
             "protocol": protocol, "reason": "", "src_ip": CLIENT, "src_port": 41234,
             "dst_ip": WEB, "dst_port": 80, "src_identity": 256, "dst_identity": 257,
             "src_labels": LABELS[256], "dst_labels": LABELS[257], "src_name": "client",
             "dst_name": "web", "http": {"method": method, "path": path, "host": "web",
                                         "status": status, "latency_ms": latency_ms, **http},
             "grpc_status": None}
    if kafka is not None:
        event["kafka"] = kafka
    return event


def flow(event: dict) -> dict:
    return flow_from_event(event, "node1", NAMES.get)  # type: ignore[return-value]


def observe(tokens: list[tuple[str, str]], flows: list[dict]) -> list[dict]:
    whitelist, blacklist = filters_from_cli(tokens)
    return [f for f in flows if matches(f, whitelist, blacklist)]


# a small history: the client's drops and allowed traffic, the web's own, L7 requests
DROP_CLIENT = flow(datapath("drop", CLIENT, WEB, "ingress", reason="policy-denied",
                            verdict="denied"))
DROP_WORLD = flow(datapath("drop", "198.51.100.7", WEB, "ingress", reason="policy-deny-rule",
                           verdict="denied", sport=5555, dport=22))
TRACE_CLIENT = flow(datapath("trace", CLIENT, WEB, "egress"))
TRACE_WEB_DB = flow(datapath("trace", WEB, DB, "egress", sport=50000, dport=5432))
VERDICT_DB = flow(datapath("policy-verdict", WEB, DB, "ingress", sport=50000, dport=5432))
GET_OK = flows_from_event(l7(), "node1", NAMES.get)  # request + response
GET_FORBIDDEN = flow(l7(path="/admin", status=403, latency_ms=1.0))  # upstream said 403
DENIED = flow(l7("DENIED", method="DELETE", path="/api/v1/items", status=403))
HISTORY = [DROP_CLIENT, DROP_WORLD, TRACE_CLIENT, TRACE_WEB_DB, VERDICT_DB, *GET_OK,
           GET_FORBIDDEN, DENIED]


# --- model: events -> Hubble flows ----------------------------------------------------------

def test_drop_is_a_hubble_flow_with_hubble_key_names():
    assert DROP_CLIENT == {
        "time": "2023-11-23T20:30:00.123456Z", "verdict": "DROPPED", "drop_reason": 133,
        "IP": {"source": CLIENT, "destination": WEB, "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": 41234, "destination_port": 80}},
        "source": {"identity": 256, "labels": ["container:app=client"], "pod_name": "client"},
        "destination": {"ID": 12, "identity": 257,
                        "labels": ["container:app=web", "network:tier=front"],
                        "pod_name": "web"},
        "Type": "L3_L4", "node_name": "node1", "event_type": {"type": 1, "sub_type": 133},
        "traffic_direction": "INGRESS", "drop_reason_desc": "POLICY_DENIED", "Summary": "TCP"}
    assert "is_reply" not in DROP_CLIENT  # Hubble: unknown for drops


@pytest.mark.parametrize("reason,name,number", [
    ("policy-denied", "POLICY_DENIED", 133), ("policy-deny-rule", "POLICY_DENY", 181),
    ("malformed", "INVALID_PACKET_DROPPED", 134),
    ("proxy-unavailable", "SOCKET_LOOKUP_FAILED", 178),
    ("bandwidth-limit", "REACHED_EDT_RATE_LIMITING_DROP_HORIZON", 162)])
def test_drop_reasons_map_to_hubbles(reason, name, number):
    made = flow(datapath("drop", CLIENT, WEB, "egress", reason=reason, verdict="denied"))
    assert (made["drop_reason_desc"], made["drop_reason"]) == (name, number)
    assert made["event_type"] == {"type": 1, "sub_type": number}


def test_trace_points_follow_the_direction():
    out = flow(datapath("trace", CLIENT, WEB, "egress"))
    assert out["event_type"] == {"type": 4, "sub_type": 5}
    assert out["trace_observation_point"] == "FROM_ENDPOINT"
    assert out["is_reply"] is False and out["verdict"] == "FORWARDED"
    assert out["interface"] == {"index": 11} and out["source"]["ID"] == 11
    inbound = flow(datapath("trace", CLIENT, WEB, "ingress"))
    assert inbound["event_type"] == {"type": 4}  # to-endpoint is sub-type 0
    assert inbound["trace_observation_point"] == "TO_ENDPOINT"
    assert inbound["traffic_direction"] == "INGRESS"


def test_policy_verdicts_allowed_and_denied():
    assert VERDICT_DB["verdict"] == "FORWARDED" and VERDICT_DB["is_reply"] is False
    assert VERDICT_DB["event_type"] == {"type": 5} and "drop_reason" not in VERDICT_DB
    denied = flow(datapath("policy-verdict", CLIENT, DB, "ingress", reason="policy-deny-rule",
                           verdict="denied"))
    assert denied["verdict"] == "DROPPED" and denied["drop_reason_desc"] == "POLICY_DENY"
    assert "is_reply" not in denied


def test_icmp_udp_ipv6_and_tcp_flags():
    ping = flow(datapath("trace", CLIENT, WEB, "egress", proto="ICMP", sport=7, dport=0))
    assert ping["l4"] == {"ICMPv4": {"type": 8}} and ping["Summary"] == "ICMPv4 EchoRequest"
    pong = flow(datapath("trace", "fd00::3", "fd00::2", "egress", proto="ICMPv6", sport=0,
                         dport=7))
    assert pong["l4"] == {"ICMPv6": {"type": 129}} and pong["IP"]["ipVersion"] == "IPv6"
    dns = flow(datapath("trace", CLIENT, DB, "egress", proto="UDP", sport=5353, dport=53))
    assert dns["l4"] == {"UDP": {"source_port": 5353, "destination_port": 53}}
    syn = flow(datapath("trace", CLIENT, WEB, "egress", tcp_flags=0x12))
    assert syn["Summary"] == "TCP Flags: SYN, ACK"
    assert syn["l4"]["TCP"]["flags"] == {"SYN": True, "ACK": True}


def test_names_come_from_the_event_or_container_of():
    made = flow_from_event(datapath("trace", CLIENT, WEB, "egress"), "n", {WEB: "web-1"}.get)
    assert made["source"]["pod_name"] == "client"  # the event's local endpoint
    assert made["destination"]["pod_name"] == "web-1"  # container_of(ip)
    world = flow(datapath("drop", "198.51.100.7", WEB, "ingress", verdict="denied"))
    assert world["source"] == {"identity": 2, "labels": ["reserved:world"]}


def test_timestamps_are_protojson():
    assert timestamp(1234.5678) == "1970-01-01T00:20:34.567800Z"
    assert timestamp(1234) == "1970-01-01T00:20:34Z"
    assert timestamp(1234.5) == "1970-01-01T00:20:34.500Z"
    assert timestamp(1.000000001) == "1970-01-01T00:00:01.000000001Z"


def test_http_exchange_is_a_request_and_a_response():
    request, response = GET_OK
    assert request["l7"] == {"type": "REQUEST", "http": {
        "method": "GET", "url": "http://web/index.html", "protocol": "HTTP/1.1"}}
    assert request["is_reply"] is False and request["source"]["pod_name"] == "client"
    assert request["time"] == "2023-11-23T20:30:01.116206Z"  # latency before the answer
    assert response["l7"] == {"type": "RESPONSE", "latency_ns": "7250000", "http": {
        "code": 200, "method": "GET", "url": "http://web/index.html", "protocol": "HTTP/1.1"}}
    assert response["is_reply"] is True and response["source"]["pod_name"] == "web"
    assert response["l4"] == {"TCP": {"source_port": 80, "destination_port": 41234}}
    assert response["event_type"] == {"type": 129} and response["Type"] == "L7"
    assert response["Summary"] == "HTTP/1.1 200 7ms (GET http://web/index.html)"
    assert flow(l7()) == response


def test_denied_and_failed_requests():
    assert DENIED["verdict"] == "DROPPED" and DENIED["l7"]["type"] == "REQUEST"
    assert "code" not in DENIED["l7"]["http"] and DENIED["is_reply"] is False
    failed = flows_from_event(l7("ERROR", status=502), "node1", NAMES.get)
    assert [(f["verdict"], f["l7"]["type"], f["l7"]["http"]["code"]) for f in failed] == [
        ("ERROR", "RESPONSE", 502)]
    timeout = flow(l7("ERROR", status=None, latency_ms=None))
    assert timeout["verdict"] == "ERROR" and timeout["l7"]["type"] == "REQUEST"


def test_kafka_and_grpc_records():
    produce = flow(l7(protocol="kafka", status=None, kafka={
        "api_key": "produce", "api_version": 7, "correlation_id": 3, "client_id": "c",
        "topics": ["orders"], "error_code": None}))
    assert produce["l7"] == {"type": "REQUEST", "kafka": {
        "api_version": 7, "api_key": "produce", "correlation_id": 3, "topic": "orders"}}
    assert produce["Summary"] == "Kafka request produce correlation id 3 topic 'orders'"
    grpc = flow(l7(protocol="grpc", path="/pkg.Svc/Call", method="POST"))
    assert grpc["l7"]["http"]["protocol"] == "HTTP/2"


def test_other_events_are_no_flows():
    assert flow({"type": "7", "reason": "9"}) is None
    assert flows_from_event({"type": "agent"}, "node1", NAMES.get) == []


# --- filters: Hubble's observe flags --------------------------------------------------------

def test_from_label_and_verdict_keep_only_the_clients_drops():
    # the datapath's drop and the proxy's denied request (DROPPED, as in Hubble)
    assert observe([("--from-label", "app=client"), ("--verdict", "DROPPED")],
                   HISTORY) == [DROP_CLIENT, DENIED]
    assert observe([("--from-label", "app=client"), ("--verdict", "DROPPED"),
                    ("--type", "drop")], HISTORY) == [DROP_CLIENT]


def test_a_flag_given_twice_is_or():
    kept = observe([("--ip", CLIENT), ("--ip", DB)], HISTORY)
    assert DROP_CLIENT in kept and TRACE_WEB_DB in kept and VERDICT_DB in kept
    assert DROP_WORLD not in kept
    whitelist, _ = filters_from_cli([("--ip", CLIENT), ("--ip", DB)])
    assert [f.source_ip for f in whitelist] == [[CLIENT, DB], []]  # source OR destination
    assert [f.destination_ip for f in whitelist] == [[], [CLIENT, DB]]


def test_different_flags_are_and():
    assert observe([("--to-pod", "db"), ("--type", "trace")], HISTORY) == [TRACE_WEB_DB]


def test_not_negates_the_next_flag():
    kept = observe([("--not", ""), ("--verdict", "FORWARDED")], HISTORY)
    assert all(f["verdict"] != "FORWARDED" for f in kept) and DROP_CLIENT in kept
    assert observe([("--type", "drop"), ("--not", ""), ("--from-ip", "198.51.100.0/24")],
                   HISTORY) == [DROP_CLIENT]
    # Hubble: negated flags share one blacklist filter: only client->web is removed
    kept = observe([("--not", ""), ("--from-ip", CLIENT), ("--not", ""), ("--to-ip", WEB)],
                   [DROP_CLIENT, TRACE_WEB_DB, flow(datapath("trace", CLIENT, DB, "egress"))])
    assert DROP_CLIENT not in kept and len(kept) == 2


def test_http_status_prefix_and_exact():
    assert observe([("--http-status", "4+")], HISTORY) == [GET_FORBIDDEN]
    assert observe([("--http-status", "200")], HISTORY) == [GET_OK[1]]
    assert observe([("--http-status", "20+"), ("--http-status", "403")],
                   HISTORY) == [GET_OK[1], GET_FORBIDDEN]


def test_http_method_path_and_protocol():
    assert observe([("--http-method", "delete")], HISTORY) == [DENIED]
    assert observe([("--http-path", r"^/api/v[0-9]+/")], HISTORY) == [DENIED]
    spaced = flow(l7(path="/my%20files/a?q=/api/v1/"))  # the decoded path, not the query
    assert observe([("--http-path", "^/my files/")], [spaced]) == [spaced]
    assert observe([("--http-path", "/api/")], [spaced]) == []
    assert observe([("--protocol", "http"), ("--verdict", "DROPPED")], HISTORY) == [DENIED]
    assert len(observe([("--protocol", "TCP")], HISTORY)) == len(HISTORY)  # L7 rides TCP
    assert observe([("--protocol", "kafka")], HISTORY) == []


@pytest.mark.parametrize("tokens,expected", [
    ([("--type", "drop")], [DROP_CLIENT, DROP_WORLD]),
    ([("-t", "trace:from-endpoint")], [TRACE_CLIENT, TRACE_WEB_DB]),
    ([("--type", "policy-verdict")], [VERDICT_DB]),
    ([("--type", "drop:181")], [DROP_WORLD]),
    ([("--type", "l7"), ("--http-status", "403")], [GET_FORBIDDEN]),
])
def test_types(tokens, expected):
    assert observe(tokens, HISTORY) == expected


@pytest.mark.parametrize("selector,expected", [
    ("container:app=web", True), ("k8s:app=web", True), ("app in (web, db)", True),
    ("app notin (web)", False), ("app!=db", True), ("!app", False), ("tier", True),
    ("network:app=web", False), ("app=web,tier=front", True), ("app=web,tier=back", False),
    ("", True)])
def test_label_selectors(selector, expected):
    assert observe([("--to-label", selector)], [TRACE_CLIENT]) == ([TRACE_CLIENT] if expected
                                                                   else [])


def test_pods_ports_identities_and_nodes():
    assert observe([("--pod", "d")], HISTORY) == [TRACE_WEB_DB, VERDICT_DB]  # a prefix
    assert observe([("--from-pod", "web"), ("--to-port", "5432")], HISTORY) == [
        TRACE_WEB_DB, VERDICT_DB]
    assert observe([("--port", "22")], HISTORY) == [DROP_WORLD]
    assert observe([("--identity", "world")], HISTORY) == [DROP_WORLD]
    assert observe([("--from-identity", "258")], HISTORY) == []
    assert len(observe([("--node-name", "node*")], HISTORY)) == len(HISTORY)
    assert len(observe([("--node-name", "default/node1")], HISTORY)) == len(HISTORY)
    assert observe([("--node-name", "other/node1")], HISTORY) == []
    assert observe([("--traffic-direction", "egress")], HISTORY) == [TRACE_CLIENT, TRACE_WEB_DB]
    assert observe([("--drop-reason-desc", "POLICY_DENY")], HISTORY) == [DROP_WORLD]


def test_no_filters_keep_everything():
    assert filters_from_cli([]) == ([], [])
    assert observe([], HISTORY) == HISTORY


@pytest.mark.parametrize("tokens,message", [
    ([("--from-ip", "10.0.0.300")], "--from-ip: invalid IP address or CIDR"),
    ([("--ip", "10.0.0.0/33")], "invalid IP address or CIDR"),
    ([("--verdict", "MAYBE")], "invalid verdict 'MAYBE'"),
    ([("--type", "nonsense")], "unable to parse type"),
    ([("--type", "trace:sideways")], "unable to parse event sub-type"),
    ([("--http-status", "4xx")], "invalid HTTP status code prefix"),
    ([("--http-status", "600")], "invalid HTTP status code prefix"),
    ([("--http-path", "(")], "invalid HTTP path regular expression"),
    ([("--port", "70000")], "invalid port"),
    ([("--identity", "nobody")], "invalid security identity"),
    ([("--from-label", "app in (a")], "invalid label selector"),
    ([("--protocol", "quic")], "invalid protocol"),
    ([("--node-name", "a/b/c")], "too many slashes"),
    ([("--namespace", "x")], "unknown filter flag"),
    ([("--ip", CLIENT), ("--from-ip", WEB)], "cannot be combined"),
    ([("--label", "a=b"), ("--to-label", "c=d")], "cannot be combined"),
    ([("--not", ""), ("--not", "")], "consecutive --not"),
    ([("--verdict", "DROPPED"), ("--not", "")], "--not must be followed"),
    ([("--type", "drop"), ("--http-status", "200")], "only match 'l7' events"),
])
def test_bad_values_say_what_is_wrong(tokens, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        filters_from_cli(tokens)


def test_flow_filter_direct_use_and_selector_parse():
    direct = FlowFilter(verdict=["dropped"], source_identity=["host"]).validate()
    assert direct.verdict == ["DROPPED"] and direct.source_identity == [1]
    assert parse_selector("k8s:app=web, !debug") == [
        ("any", "app", "In", frozenset({"web"})), ("any", "debug", "DoesNotExist", frozenset())]


# --- formats: Hubble's output forms ---------------------------------------------------------

def test_compact_lines():
    assert compact(DROP_CLIENT) == ("Nov 23 20:30:00.123: client:41234 (ID:256) <> web:80 "
                                    "(ID:257) Policy denied DROPPED (TCP)")
    assert compact(VERDICT_DB) == ("Nov 23 20:30:00.123: web:50000 (ID:257) -> db:5432 "
                                   "(ID:258) policy-verdict:none INGRESS ALLOWED (TCP)")
    assert compact(DROP_WORLD, node_name=True) == (
        "Nov 23 20:30:00.123 [node1]: 198.51.100.7:5555 (world) <> web:22 (ID:257) "
        "Policy denied by denylist DROPPED (TCP)")
    assert compact(TRACE_CLIENT, ip_translation=False).startswith(
        f"Nov 23 20:30:00.123: {CLIENT}:41234 (ID:256) -> {WEB}:80 (ID:257) from-endpoint")


def test_compact_l7_request_and_response():
    assert compact(DENIED) == ("Nov 23 20:30:01.123: client:41234 (ID:256) -> web:80 (ID:257) "
                               "http-request DROPPED (HTTP/1.1 DELETE http://web/api/v1/items)")
    assert compact(GET_OK[1]) == (
        "Nov 23 20:30:01.123: client:41234 (ID:256) <- web:80 (ID:257) http-response "
        "FORWARDED (HTTP/1.1 200 7ms (GET http://web/index.html))")


# printer_test.go's flow, as protojson gives it: the same text as Hubble's own tests
HUBBLE_FLOW = {"time": "1970-01-01T00:20:34.567800Z", "verdict": "DROPPED",
               "IP": {"source": "1.1.1.1", "destination": "2.2.2.2"},
               "l4": {"TCP": {"source_port": 31793, "destination_port": 8080}},
               "source": {"identity": 4}, "destination": {"identity": 12345},
               "Type": "L3_L4", "node_name": "k8s1", "event_type": {"type": 1, "sub_type": 133},
               "is_reply": False, "Summary": "TCP Flags: SYN"}


def test_forms_match_hubbles_printer_tests():
    assert compact(HUBBLE_FLOW) == (
        "Jan  1 00:20:34.567: 1.1.1.1:31793 (health) -> "
        "2.2.2.2:8080 (ID:12345) Policy denied DROPPED (TCP Flags: SYN)")
    assert table([HUBBLE_FLOW]) == (
        "TIMESTAMP             SOURCE          DESTINATION    TYPE            VERDICT   SUMMARY\n"
        "Jan  1 00:20:34.567   1.1.1.1:31793   2.2.2.2:8080   Policy denied   DROPPED   "
        "TCP Flags: SYN")
    assert table([HUBBLE_FLOW], node_name=True).splitlines()[0] == (
        "TIMESTAMP             NODE   SOURCE          DESTINATION    TYPE            "
        "VERDICT   SUMMARY")
    assert dict_form(HUBBLE_FLOW) == ("  TIMESTAMP: Jan  1 00:20:34.567\n"
                                      "     SOURCE: 1.1.1.1:31793\n"
                                      "DESTINATION: 2.2.2.2:8080\n"
                                      "       TYPE: Policy denied\n"
                                      "    VERDICT: DROPPED\n"
                                      "    SUMMARY: TCP Flags: SYN")
    assert json_line(HUBBLE_FLOW).startswith(
        '{"flow":{"time":"1970-01-01T00:20:34.567800Z","verdict":"DROPPED",'
        '"IP":{"source":"1.1.1.1","destination":"2.2.2.2"},"l4":{"TCP":{"source_port":31793,'
        '"destination_port":8080}},"source":{"identity":4},"destination":{"identity":12345},'
        '"Type":"L3_L4","node_name":"k8s1","event_type":{"type":1,"sub_type":133},'
        '"is_reply":false,"Summary":"TCP Flags: SYN"}')


def test_dict_separator_and_node():
    second = dict_form(DROP_CLIENT, first=False, node_name=True).splitlines()
    assert second[:3] == ["------------", "  TIMESTAMP: Nov 23 20:30:00.123", "       NODE: node1"]


def test_table_aligns_all_rows():
    lines = table([DROP_CLIENT, GET_OK[1]]).splitlines()
    assert all(line[19:22] == "   " and line[22] != " " for line in lines)  # SOURCE at 22
    assert lines[2][22:].startswith("web:80 ")  # the table does not turn replies round
    assert lines[2].split()[-7:] == ["http-response", "FORWARDED", "HTTP/1.1", "200", "7ms",
                                     "(GET", "http://web/index.html)"]
    assert table([]) == ""


def test_json_line_round_trips_with_hubbles_keys():
    record = json.loads(json_line(DROP_CLIENT))
    assert record == {"flow": DROP_CLIENT, "node_name": "node1",
                      "time": "2023-11-23T20:30:00.123456Z"}
    assert {"IP", "l4", "Type", "Summary", "event_type", "drop_reason_desc",
            "traffic_direction", "node_name"} <= set(record["flow"])
    odd = flow(l7(path="/a?b=1&c=<x>"))
    line = json_line(odd)
    assert "\\u0026" in line and "\\u003c" in line and "\n" not in line  # Go's escaping
    assert json.loads(line)["flow"] == odd


def test_control_characters_do_not_reach_the_terminal():
    evil = flow(l7(path="/\x1b[2J\r\nx"))
    line = compact(evil)
    assert "\x1b" not in line and "\r" not in line and "\n" not in line
    assert "^[[2J\\r\\nx" in line


def test_bad_times_print_as_hubble_does():
    assert stamp("not a time") == "N/A" and stamp(None) == "N/A"
    assert stamp("2023-11-23T21:30:00.5+01:00") == "Nov 23 20:30:00.500"
