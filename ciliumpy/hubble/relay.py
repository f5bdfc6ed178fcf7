"""The relay: one query asked of every node's Hubble Observer API (addresses from the
kvstore's node registry), answers merged in time order.

Each node is asked in its own thread with a deadline, so a node that is down or slow
costs at most ``timeout`` seconds and becomes a warning in the answer (a partial
answer), never a hang. The filters go to every node as Hubble's own FlowFilter
messages, so ``--last N`` is the newest N across the cluster."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from ciliumpy.flows.filters import FlowFilter
from ciliumpy.hubble.convert import filter_to_proto, flow_from_proto, to_timestamp
from ciliumpy.hubble.follow import response_time
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.tls import HubbleTLS, channel

DEFAULT_TIMEOUT = 5.0


@dataclass
class Answer:
    flows: list[dict] = field(default_factory=list)  # Hubble's -o json records
    warnings: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # the nodes that answered
    # (node name, response) as the nodes sent them, oldest first (the relay's gRPC form)
    responses: list[tuple[str, observer_pb2.GetFlowsResponse]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (node, why)


def record(name: str, response: observer_pb2.GetFlowsResponse) -> dict:
    """A node's GetFlows response as Hubble's ``-o json`` record."""
    return {"flow": flow_from_proto(response.flow), "node_name": response.node_name or name,
            "time": response.flow.time.ToJsonString()}


def flow_time(record: dict) -> float:
    """Seconds of a record's flow time (RFC 3339 with up to 9 fractional digits)."""
    text = record.get("flow", {}).get("time") or record.get("time") or ""
    whole, _, rest = text.rstrip("Z").partition(".")
    try:
        seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    except ValueError:
        return 0.0
    digits = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (int(digits) / 10 ** len(digits) if digits else 0.0)


def request_for(whitelist: list[FlowFilter], blacklist: list[FlowFilter],
                since: float | None, until: float | None, last: int | None,
                first: int | None) -> observer_pb2.GetFlowsRequest:
    request = observer_pb2.GetFlowsRequest(
        whitelist=[filter_to_proto(f) for f in whitelist],
        blacklist=[filter_to_proto(f) for f in blacklist])
    if first is not None:
        request.first, request.number = True, first
    elif last is not None:
        request.number = last
    if since is not None:
        request.since.CopyFrom(to_timestamp(since))
    if until is not None:
        request.until.CopyFrom(to_timestamp(until))
    return request


def _ask(name: str, address: str, request: observer_pb2.GetFlowsRequest, timeout: float,
         answer: Answer, lock: threading.Lock, tls: HubbleTLS | None) -> None:
    try:
        with channel(address, tls) as channel_:
            stub = observer_pb2_grpc.ObserverStub(channel_)
            responses = [(name, response) for response in stub.GetFlows(request, timeout=timeout)
                         if response.HasField("flow")]
    except grpc.RpcError as exc:
        reason = exc.code().name if exc.code() else "error"
        why = f"{reason}: {exc.details() or ''}".rstrip(": ")
        with lock:
            answer.warnings.append(f"node {name} ({address}) did not answer: {why}")
            answer.failed.append((name, why))
        return
    with lock:
        answer.responses.extend(responses)
        answer.nodes.append(name)


def ask_nodes(peers: list[tuple[str, str]], request: observer_pb2.GetFlowsRequest,
              timeout: float = DEFAULT_TIMEOUT, records: bool = True,
              tls: HubbleTLS | None = None) -> Answer:
    """``peers``: (node name, host:port) pairs. Flows of every node that answered within
    ``timeout``, oldest first (``responses``; also as ``-o json`` records in ``flows``
    when ``records``), and a warning per node that did not."""
    answer, lock = Answer(), threading.Lock()
    threads = [threading.Thread(target=_ask, args=(name, address, request, timeout, answer,
                                                   lock, tls), daemon=True)
               for name, address in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1.0)
    with lock:  # a thread past its join deadline may still add: take a copy
        answer.responses.sort(key=lambda pair: response_time(pair[1]))
        if records:
            answer.flows = [record(name, response) for name, response in answer.responses]
    return answer


def cut(items: list, last: int | None, first: int | None) -> list:
    """The oldest ``first`` or the newest ``last`` of time-ordered items."""
    if first is not None:
        return items[:first]
    if last is not None:
        return items[-last:] if last else []
    return items


def merge(local: list[dict], remote: Answer, last: int | None, first: int | None
          ) -> list[dict]:
    """This node's records and the others', in time order, cut to the newest ``last``
    or the oldest ``first``."""
    return cut(sorted(local + remote.flows, key=flow_time), last, first)
