"""ciliumpy's flows and filters as Hubble's protobuf messages (ciliumpy.hubble.convert),
checked against the code generated from Cilium's own flow.proto: every flow shape the
model makes parses into ``flow.Flow`` with no field lost and comes back identical, and
proto FlowFilters become ciliumpy's filters with the same meaning."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from ciliumpy.flows.filters import FlowFilter, matches
from ciliumpy.flows.flags import filters_from_cli
from ciliumpy.flows.model import (
    DROP_REASONS,
    REASON_TO_DROP,
    TRACE_POINT_ENUM,
    VERDICTS,
    flows_from_event,
)
from ciliumpy.hubble.convert import (
    SUPPORTED_FILTER_FIELDS,
    filter_from_proto,
    filters_from_proto,
    flow_from_proto,
    flow_to_proto,
    from_timestamp,
    to_timestamp,
)
from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2
from tests.unit.test_flows import CLIENT, DB, HISTORY, NAMES, T0, WEB, datapath, l7

V6_CLIENT, V6_WEB = "fd00::2", "fd00::3"


def _flows(event: dict) -> list[dict]:
    return flows_from_event(event, "node1", NAMES.get)


# every kind of flow the model makes (ciliumpy/flows/model.py)
SHAPES: dict[str, list[dict]] = {
    **{f"drop {reason}": _flows(datapath("drop", CLIENT, WEB, "ingress", reason=reason,
                                         verdict="denied")) for reason in REASON_TO_DROP},
    "drop unknown reason": _flows(datapath("drop", CLIENT, WEB, "ingress", reason="odd",
                                           verdict="denied")),
    "trace egress": _flows(datapath("trace", CLIENT, WEB, "egress")),
    "trace ingress": _flows(datapath("trace", CLIENT, WEB, "ingress")),
    "trace TCP flags": _flows(datapath("trace", CLIENT, WEB, "egress", tcp_flags=0x1FF)),
    "verdict allowed": _flows(datapath("policy-verdict", WEB, DB, "ingress",
                                       policy_match_type=2)),
    "verdict denied": _flows(datapath("policy-verdict", WEB, DB, "ingress", verdict="denied",
                                      reason="policy-denied", policy_match_type=0)),
    "UDP": _flows(datapath("trace", CLIENT, WEB, "egress", proto="UDP", dport=53)),
    "SCTP": _flows(datapath("trace", CLIENT, WEB, "egress", proto="SCTP", dport=9899)),
    "ICMPv4 request": _flows(datapath("trace", CLIENT, WEB, "egress", proto="ICMP",
                                      sport=7, dport=0)),
    "ICMPv4 reply": _flows(datapath("trace", WEB, CLIENT, "ingress", proto="ICMP",
                                    sport=0, dport=7)),
    "ICMPv4 typed": _flows(datapath("drop", CLIENT, WEB, "egress", proto="ICMP",
                                    icmp_type=3, verdict="denied", reason="policy-denied")),
    "ICMPv6": _flows(datapath("trace", V6_CLIENT, V6_WEB, "egress", proto="ICMPV6",
                              sport=7, dport=0)),
    "IPv6 TCP": _flows(datapath("trace", V6_CLIENT, V6_WEB, "egress")),
    "other protocol": _flows(datapath("drop", CLIENT, WEB, "ingress", proto="GRE",
                                      verdict="denied", reason="malformed")),
    "world source": _flows(datapath("drop", "198.51.100.7", WEB, "ingress",
                                    verdict="denied", reason="policy-deny-rule")),
    "HTTP request+response": _flows(l7()),
    "HTTP denied": _flows(l7("DENIED", method="DELETE", status=403)),
    "HTTP error": _flows(l7("ERROR", status=502)),
    "HTTP unanswered": _flows(l7(status=None, latency_ms=None)),
    "gRPC": _flows(l7(protocol="grpc", method="POST", path="/pkg.Svc/Get")),
    "HTTP url given": _flows(l7(url="http://web:8080/a?b=c", host="web:8080")),
    "Kafka": _flows(l7(protocol="kafka", http=None, kafka={
        "api_key": "produce", "api_version": 7, "correlation_id": 12, "error_code": 0,
        "topics": ["topic1", "topic2"]})),
    "Kafka denied": _flows(l7("DENIED", protocol="kafka", kafka={
        "api_key": "fetch", "api_version": 11, "correlation_id": 3, "topics": ["t"]})),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_flow_shape_parses_and_comes_back_identical(shape):
    flows = SHAPES[shape]
    assert flows, shape
    for flow in flows:
        strict = json_format.ParseDict(flow, flow_pb2.Flow())  # no unknown key either
        message = flow_to_proto(flow)
        assert message == strict
        assert flow_from_proto(message) == flow
        # and over the wire, as a GetFlowsResponse
        wire = observer_pb2.GetFlowsResponse(flow=message).SerializeToString()
        assert flow_from_proto(observer_pb2.GetFlowsResponse.FromString(wire).flow) == flow


def test_fields_land_where_hubble_clients_read_them():
    drop = flow_to_proto(SHAPES["drop policy-denied"][0])
    assert drop.verdict == flow_pb2.DROPPED
    assert drop.drop_reason_desc == flow_pb2.POLICY_DENIED and drop.drop_reason == 133
    assert drop.IP.source == CLIENT and drop.IP.ipVersion == flow_pb2.IPv4
    assert drop.l4.WhichOneof("protocol") == "TCP" and drop.l4.TCP.destination_port == 80
    assert drop.source.pod_name == "client" and drop.source.identity == 256
    assert list(drop.destination.labels) == ["container:app=web", "network:tier=front"]
    assert drop.Type == flow_pb2.L3_L4 and drop.event_type.type == 1
    assert drop.traffic_direction == flow_pb2.INGRESS and not drop.HasField("is_reply")
    assert drop.node_name == "node1"
    assert abs(from_timestamp(drop.time) - T0) < 1e-6

    trace = flow_to_proto(SHAPES["trace egress"][0])
    assert trace.trace_observation_point == flow_pb2.FROM_ENDPOINT
    assert trace.HasField("is_reply") and trace.is_reply.value is False
    assert trace.interface.index == 11
    flags = flow_to_proto(SHAPES["trace TCP flags"][0]).l4.TCP.flags
    assert flags.SYN and flags.ACK and flags.NS

    request, response = (flow_to_proto(f) for f in SHAPES["HTTP request+response"])
    assert request.Type == flow_pb2.L7 and request.l7.type == flow_pb2.REQUEST
    assert response.l7.type == flow_pb2.RESPONSE and response.l7.http.code == 200
    assert response.l7.latency_ns == 7_250_000 and response.is_reply.value is True
    assert response.source.pod_name == "web"  # a response goes from the server
    kafka = flow_to_proto(SHAPES["Kafka"][-1])
    assert kafka.l7.kafka.api_key == "produce" and kafka.l7.kafka.topic == "topic1,topic2"
    v6 = flow_to_proto(SHAPES["ICMPv6"][0])
    assert v6.IP.ipVersion == flow_pb2.IPv6 and v6.l4.ICMPv6.type == 128


def test_the_model_names_only_what_flow_proto_knows():
    drop_reasons = flow_pb2.DropReason.DESCRIPTOR.values_by_name
    assert all(drop_reasons[name].number == number for name, number in DROP_REASONS.items())
    assert set(VERDICTS) <= set(flow_pb2.Verdict.DESCRIPTOR.values_by_name)
    assert set(TRACE_POINT_ENUM.values()) <= set(
        flow_pb2.TraceObservationPoint.DESCRIPTOR.values_by_name)


def test_timestamps():
    for seconds in (0.0, T0, 1700000000.5, 1700000000.999999999):
        assert abs(from_timestamp(to_timestamp(seconds)) - seconds) < 1e-6
    stamp = to_timestamp(1700000000.25)
    assert (stamp.seconds, stamp.nanos) == (1700000000, 250_000_000)
    with pytest.raises(ValueError):
        from_timestamp(type(stamp)(seconds=1, nanos=-5))


# --- filters ------------------------------------------------------------------------------

def test_every_supported_field_converts():
    message = flow_pb2.FlowFilter(
        source_ip=["10.0.0.0/8"], source_pod=["client"], source_label=["app=client"],
        source_port=["41234"], source_identity=[256], destination_ip=[WEB],
        destination_pod=["web"], destination_label=["container:app=web"],
        destination_port=["80"], destination_identity=[257],
        traffic_direction=[flow_pb2.INGRESS], verdict=[flow_pb2.DROPPED, flow_pb2.FORWARDED],
        drop_reason_desc=[flow_pb2.POLICY_DENIED],
        event_type=[flow_pb2.EventTypeFilter(type=129),
                    flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)],
        http_status_code=["4+"], protocol=["tcp"], http_method=["GET"],
        http_path=["/a.*"], node_name=["node1"])
    assert {f.name for f, _ in message.ListFields()} == set(SUPPORTED_FILTER_FIELDS)
    converted = filter_from_proto(message)
    assert converted == FlowFilter(
        source_ip=["10.0.0.0/8"], source_pod=["client"], source_label=["app=client"],
        source_port=["41234"], source_identity=[256], destination_ip=[WEB],
        destination_pod=["web"], destination_label=["container:app=web"],
        destination_port=["80"], destination_identity=[257], traffic_direction=["INGRESS"],
        verdict=["DROPPED", "FORWARDED"], drop_reason_desc=["POLICY_DENIED"],
        event_type=[{"type": 129}, {"type": 4, "match_sub_type": True, "sub_type": 0}],
        http_status_code=["4+"], protocol=["tcp"], http_method=["GET"],
        http_path=["/a.*"], node_name=["node1"])


@pytest.mark.parametrize("proto, tokens", [
    (flow_pb2.FlowFilter(source_pod=["client"], verdict=[flow_pb2.DROPPED]),
     [("--from-pod", "client"), ("--verdict", "DROPPED")]),
    (flow_pb2.FlowFilter(event_type=[flow_pb2.EventTypeFilter(type=129)],
                         http_status_code=["2+"]),
     [("--type", "l7"), ("--http-status", "2+")]),
    (flow_pb2.FlowFilter(destination_label=["app=db"]), [("--to-label", "app=db")]),
    (flow_pb2.FlowFilter(event_type=[flow_pb2.EventTypeFilter(
        type=4, match_sub_type=True, sub_type=5)]), [("--type", "trace:from-endpoint")]),
    (flow_pb2.FlowFilter(drop_reason_desc=[flow_pb2.POLICY_DENY]),
     [("--drop-reason-desc", "POLICY_DENY")]),
])
def test_proto_filters_mean_what_the_cli_flags_mean(proto, tokens):
    whitelist, _ = filters_from_cli(tokens)
    expected = [f for f in HISTORY if matches(f, whitelist, [])]
    assert expected, "the case must select something"
    converted = filters_from_proto([proto], "whitelist")
    assert [f for f in HISTORY if matches(f, converted, [])] == expected
    assert [f for f in HISTORY if matches(f, [], converted)] == [
        f for f in HISTORY if f not in expected]


@pytest.mark.parametrize("message, named", [
    (flow_pb2.FlowFilter(source_fqdn=["*.example.com"]), "source_fqdn"),
    (flow_pb2.FlowFilter(reply=[True]), "reply"),
    (flow_pb2.FlowFilter(tcp_flags=[flow_pb2.TCPFlags(SYN=True)], uuid=["x"]),
     "fields tcp_flags, uuid"),
    (flow_pb2.FlowFilter(experimental=flow_pb2.FlowFilter.Experimental(
        cel_expression=["true"])), "experimental.cel_expression"),
    (flow_pb2.FlowFilter(verdict=[42]), "verdict: unknown Verdict value 42"),
    (flow_pb2.FlowFilter(source_ip=["10.0.0.300"]), "10.0.0.300"),
    (flow_pb2.FlowFilter(http_status_code=["4"]), "HTTP status code"),
])
def test_what_cannot_be_answered_is_refused_by_name(message, named):
    with pytest.raises(ValueError, match="whitelist\\[1\\]: .*" + named.replace("[", "\\[")
                       .replace(".", "\\.")):
        filters_from_proto([flow_pb2.FlowFilter(), message], "whitelist")


def test_empty_filter_and_empty_experimental_match_everything():
    loose = filters_from_proto([flow_pb2.FlowFilter(),
                                flow_pb2.FlowFilter(experimental={})], "blacklist")
    assert all(f.matches(flow) for f in loose for flow in HISTORY)
