"""Hubble Relay's Observer API: the same gRPC service as one node's
(``ciliumpy.hubble.server``), answered for the whole cluster, so the ``hubble`` CLI and
code generated from ``observer.proto`` pointed at the relay see every node's flows.

Every method fans out to each node's own Hubble API (the addresses the node registry
publishes, this node's included), as Hubble Relay does (``pkg/hubble/relay/observer``):

* ``GetFlows``: the request goes to every node as it came (filters, ``number``,
  ``first``, ``since``/``until``, ``field_mask``); the answers are merged in time order
  and cut to the newest ``number`` (or the oldest with ``first``) across the cluster.
  With ``follow``, the merged history up to the moment of the request comes first, then
  every node's new flows, merged (``ciliumpy.hubble.follow``). A node that does not
  answer within the timeout is reported in the stream as Hubble Relay reports it, a
  ``node_status`` event (``NODE_UNAVAILABLE``, with the reason), and the answer goes on
  without it: partial, never a hang. One that answers again is announced with
  ``NODE_CONNECTED``.
* ``ServerStatus``: the sums of every node's flow counts and the connected and
  unavailable nodes.
* ``GetNodes``: every registered node, with its state as its own ServerStatus says
  (``NODE_CONNECTED``) or could not (``NODE_UNAVAILABLE``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from ciliumpy import __version__
from ciliumpy.hubble import relay
from ciliumpy.hubble.convert import filters_from_proto, to_timestamp
from ciliumpy.hubble.follow import MergedFollow, Notice
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2
from ciliumpy.hubble.server import Unrecorded
from ciliumpy.hubble.tls import HubbleTLS, channel

VERSION = f"ciliumpy-relay {__version__}"
STATUS_TIMEOUT = 2.0  # seconds a node has to answer ServerStatus for GetNodes
Peers = Callable[[], list[tuple[str, str]]]


def node_status(name: str, up: bool, message: str) -> observer_pb2.GetFlowsResponse:
    """Hubble Relay's notice in a flow stream that a node left or joined the answer."""
    state = relay_pb2.NODE_CONNECTED if up else relay_pb2.NODE_UNAVAILABLE
    return observer_pb2.GetFlowsResponse(
        node_status=relay_pb2.NodeStatusEvent(state_change=state, node_names=[name],
                                              message=message),
        time=to_timestamp(time.time()))


class RelayServicer(Unrecorded, observer_pb2_grpc.ObserverServicer):
    """The Observer service over every node that ``peers()`` lists (name, host:port)."""

    def __init__(self, peers: Peers, timeout: float = relay.DEFAULT_TIMEOUT,
                 started: float | None = None, tls: HubbleTLS | None = None) -> None:
        self.peers, self.timeout, self.tls = peers, timeout, tls
        self.started = time.time() if started is None else started
        self._closed = threading.Event()
        self._follows: set[MergedFollow] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Ends every follow stream."""
        self._closed.set()
        with self._lock:
            follows = list(self._follows)
        for follow in follows:
            follow.close()

    def GetFlows(self, request: observer_pb2.GetFlowsRequest,
                 context: grpc.ServicerContext) -> Iterator[observer_pb2.GetFlowsResponse]:
        try:  # refused here as a node would, not once per node
            filters_from_proto(request.whitelist, "whitelist")
            filters_from_proto(request.blacklist, "blacklist")
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.first and request.follow:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "first cannot be specified with follow")
        asked_at = time.time()
        history = observer_pb2.GetFlowsRequest()
        history.CopyFrom(request)
        history.follow = False
        if request.follow:
            if not request.number and not request.HasField("since"):
                history = None  # follow alone: new flows only, as a node answers it
            elif not request.HasField("until"):
                history.until.CopyFrom(to_timestamp(asked_at))
        peers = self.peers()
        if history is not None:
            answer = relay.ask_nodes(peers, history, self.timeout, records=False,
                                     tls=self.tls)
            for name, why in answer.failed:
                yield node_status(name, False, f"node {name} did not answer: {why}")
            number = request.number or None
            chosen = relay.cut(answer.responses, None if request.first else number,
                               number if request.first else None)
            for _, response in chosen:
                yield response
        if request.follow:
            yield from self._follow(request, asked_at, context)

    def _follow(self, request: observer_pb2.GetFlowsRequest, asked_at: float,
                context: grpc.ServicerContext) -> Iterator[observer_pb2.GetFlowsResponse]:
        live = observer_pb2.GetFlowsRequest()
        live.CopyFrom(request)
        live.number = 0
        if not request.HasField("since") or request.since.ToNanoseconds() < asked_at * 1e9:
            live.since.CopyFrom(to_timestamp(asked_at))
        follow = MergedFollow(self.peers, live, lambda _name, response: response,
                              tls=self.tls)
        with self._lock:
            self._follows.add(follow)
        context.add_callback(follow.close)  # the client cancelled or the deadline passed
        try:
            for window in follow.windows():
                if self._closed.is_set() or not context.is_active():
                    return
                for notice in window.notices:
                    if notice.node:
                        yield node_status(notice.node, notice.up, notice.message)
                yield from window.items
        finally:
            follow.close()
            with self._lock:
                self._follows.discard(follow)

    # ---- status and nodes ----------------------------------------------------------
    def _statuses(self) -> list[tuple[str, str, observer_pb2.ServerStatusResponse | None]]:
        """(name, address, its ServerStatus or None) of every node, asked in parallel."""
        peers = self.peers()
        found: dict[str, observer_pb2.ServerStatusResponse] = {}

        def ask(name: str, address: str) -> None:
            try:
                with channel(address, self.tls) as channel_:
                    found[name] = observer_pb2_grpc.ObserverStub(channel_).ServerStatus(
                        observer_pb2.ServerStatusRequest(), timeout=STATUS_TIMEOUT)
            except grpc.RpcError:
                pass

        threads = [threading.Thread(target=ask, args=peer, daemon=True) for peer in peers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STATUS_TIMEOUT + 1.0)
        return [(name, address, found.get(name)) for name, address in peers]

    def ServerStatus(self, request: observer_pb2.ServerStatusRequest,
                     context: grpc.ServicerContext) -> observer_pb2.ServerStatusResponse:
        statuses = self._statuses()
        up = [status for _, _, status in statuses if status is not None]
        down = [name for name, _, status in statuses if status is None]
        response = observer_pb2.ServerStatusResponse(
            num_flows=sum(s.num_flows for s in up), max_flows=sum(s.max_flows for s in up),
            seen_flows=sum(s.seen_flows for s in up), flows_rate=sum(s.flows_rate for s in up),
            uptime_ns=max(0, int((time.time() - self.started) * 1e9)), version=VERSION)
        response.num_connected_nodes.value = len(up)
        response.num_unavailable_nodes.value = len(down)
        response.unavailable_nodes.extend(down)
        return response

    def GetNodes(self, request: observer_pb2.GetNodesRequest,
                 context: grpc.ServicerContext) -> observer_pb2.GetNodesResponse:
        nodes = []
        for name, address, status in self._statuses():
            node = observer_pb2.Node(name=name, address=address,
                                     tls=observer_pb2.TLS(enabled=False))
            if status is None:
                node.state = relay_pb2.NODE_UNAVAILABLE
            else:
                node.state = relay_pb2.NODE_CONNECTED
                node.version, node.uptime_ns = status.version, status.uptime_ns
                node.num_flows, node.max_flows = status.num_flows, status.max_flows
                node.seen_flows = status.seen_flows
            nodes.append(node)
        return observer_pb2.GetNodesResponse(nodes=nodes)


__all__ = ["RelayServicer", "Notice", "node_status"]
