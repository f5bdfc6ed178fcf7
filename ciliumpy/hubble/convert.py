"""Between ciliumpy's flows and Hubble's protobuf messages, pure.

A stored flow is already a ``flow.Flow`` in protojson's shape (``ciliumpy.flows.model``),
so it becomes the message by ``json_format.ParseDict`` and comes back, identical, by
``MessageToDict`` with proto field names. A proto ``flow.FlowFilter`` becomes a
:class:`~ciliumpy.flows.filters.FlowFilter` field by field (enums by name, event types as
the dicts the filter keeps); a field ciliumpy's filters cannot answer (``source_fqdn``,
``reply``, ``tcp_flags``, CEL expressions, ...) is refused with a ValueError naming it,
never ignored: ignoring it would return flows the client asked to leave out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from ciliumpy.flows.filters import FlowFilter
from ciliumpy.hubble.gen.flow import flow_pb2

# the FlowFilter fields ciliumpy answers: those of its own FlowFilter (same names)
SUPPORTED_FILTER_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(FlowFilter) if not f.name.startswith("_"))


def flow_to_proto(flow: dict) -> flow_pb2.Flow:
    """A stored flow dict as Hubble's ``flow.Flow`` (ParseError if it does not fit)."""
    return json_format.ParseDict(flow, flow_pb2.Flow(), ignore_unknown_fields=True)


def flow_from_proto(message: flow_pb2.Flow) -> dict:
    """A ``flow.Flow`` as the dict Hubble's ``-o json`` prints (proto field names)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def to_timestamp(seconds: float) -> Timestamp:
    """Unix seconds as a protobuf Timestamp (nanosecond precision)."""
    stamp = Timestamp()
    whole = int(seconds // 1)
    stamp.seconds, stamp.nanos = whole, min(round((seconds - whole) * 1e9), 999_999_999)
    return stamp


def from_timestamp(stamp: Timestamp) -> float:
    """A protobuf Timestamp as unix seconds (ValueError when it is out of range)."""
    if not 0 <= stamp.nanos <= 999_999_999 or not -62135596800 <= stamp.seconds \
            <= 253402300799:
        raise ValueError(f"invalid timestamp {stamp.seconds}s {stamp.nanos}ns")
    return stamp.seconds + stamp.nanos / 1e9


def filter_from_proto(message: flow_pb2.FlowFilter) -> FlowFilter:
    """One proto FlowFilter as ciliumpy's, validated; ValueError saying which field is
    not supported or which value is wrong."""
    values: dict[str, list] = {}
    unsupported = []
    for field, value in message.ListFields():
        name = field.name
        if name == "experimental":
            if value.cel_expression:
                unsupported.append("experimental.cel_expression")
            continue
        if name not in SUPPORTED_FILTER_FIELDS:
            unsupported.append(name)
        elif field.enum_type is not None:
            values[name] = [_enum_name(field.enum_type, name, number) for number in value]
        elif name == "event_type":
            values[name] = [_event_type(item) for item in value]
        else:
            values[name] = list(value)
    if unsupported:
        raise ValueError(
            f"FlowFilter field{'s' if len(unsupported) > 1 else ''} "
            f"{', '.join(unsupported)} not supported by ciliumpy (supported: "
            f"{', '.join(SUPPORTED_FILTER_FIELDS)})")
    return FlowFilter(**values).validate()


def filter_to_proto(flow_filter: FlowFilter) -> flow_pb2.FlowFilter:
    """ciliumpy's (validated) filter as Hubble's message: the relay asks every node with
    the filters the user gave. Field names are the same; enums go by name."""
    values = {f.name: getattr(flow_filter, f.name) for f in fields(FlowFilter)
              if not f.name.startswith("_") and getattr(flow_filter, f.name)}
    return json_format.ParseDict(values, flow_pb2.FlowFilter())


def filters_from_proto(messages: Iterable[flow_pb2.FlowFilter], which: str) -> list[FlowFilter]:
    """A request's whitelist or blacklist (``which`` names it in errors)."""
    out = []
    for index, message in enumerate(messages):
        try:
            out.append(filter_from_proto(message))
        except ValueError as exc:
            raise ValueError(f"{which}[{index}]: {exc}") from None
    return out


def _enum_name(enum_type, field: str, number: int) -> str:
    value = enum_type.values_by_number.get(number)
    if value is None:
        raise ValueError(f"{field}: unknown {enum_type.name} value {number}")
    return value.name


def _event_type(item: flow_pb2.EventTypeFilter) -> dict:
    """As ciliumpy's filter keeps an event type (``filters._check_event_type``)."""
    if item.match_sub_type:
        return {"type": item.type, "match_sub_type": True, "sub_type": item.sub_type}
    return {"type": item.type}
