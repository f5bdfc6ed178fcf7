"""Hubble's Observer gRPC service over the agent's flow store, so clients written for
Hubble (the ``hubble`` CLI, code generated from ``observer.proto``) read ciliumpy's
flows.

:class:`ObserverServicer` answers as Hubble's local observer does
(``pkg/hubble/observer/local_observer.go``):

* ``GetFlows``: ``first`` and ``follow`` together are refused; ``first`` or ``since``
  read forward from the oldest flow (or ``since``) in the window, ``number`` of them
  (0: all); otherwise the newest ``number`` (0: all, but with ``follow`` none) up to
  ``until``. With ``follow`` the stream then carries every new matching flow until the
  client cancels, the deadline passes or the clock passes ``until``; ``number`` no
  longer limits it (as in Hubble). Filters are Hubble's (``ciliumpy.flows.filters``);
  a filter field ciliumpy cannot answer is INVALID_ARGUMENT naming it. ``field_mask``
  keeps only the named Flow fields. A follower too slow to take the new flows gets a
  ``lost_events`` message (source HUBBLE_RING_BUFFER) saying how many it missed.
* ``ServerStatus``: the store's held/maximum/seen flows, uptime, version, the flow rate
  over the last minute, and, when a node list is given (a relay), the connected and
  unavailable nodes.
* ``GetNodes``: this node (or the list the ``nodes`` callable gives).
* ``GetNamespaces``: none (ciliumpy's endpoints have no namespace).
* ``GetAgentEvents``, ``GetDebugEvents``: UNIMPLEMENTED (ciliumpy records neither).

New flows reach followers through one listener on the store (``FlowStore.listeners``,
called in the event reader's thread): it only appends to each follower's bounded feed.
A follower subscribes before it reads the stored flows, so no flow falls between its
history and its live part; the few seen by both are sent once.

:class:`HubbleServer` runs the servicer on its own ``grpc.server`` and small thread
pool (one thread per RPC in progress, a follow holding its thread), outside gunicorn.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from ciliumpy import __version__
from ciliumpy.flows.filters import FlowFilter, matches
from ciliumpy.flows.store import FlowStore
from ciliumpy.hubble.convert import (
    filters_from_proto,
    flow_to_proto,
    from_timestamp,
    to_timestamp,
)
from ciliumpy.hubble.gen.flow import flow_pb2
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.gen.relay import relay_pb2

if TYPE_CHECKING:
    from ciliumpy.hubble.relay_server import RelayServicer
    from ciliumpy.hubble.tls import HubbleTLS

log = logging.getLogger("ciliumpy.hubble")
VERSION = f"{__version__}+ciliumpy"
FEED_SIZE = 8192  # new flows a follower may fall behind by before they count as lost
KEEPALIVE = 0.5  # a follower checks for cancellation at least this often (seconds)
BIND_RETRY_FOR = 30.0  # a busy port (the previous agent still draining) is retried

NodeList = Callable[[], list[observer_pb2.Node]]


class _Feed:
    """One follower's queue of new flows: the store's listener puts, the RPC takes."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[dict] = collections.deque()
        self._size, self.lost = size, 0
        self._ready = threading.Condition()

    def put(self, flow: dict) -> None:
        with self._ready:
            if len(self._items) < self._size:
                self._items.append(flow)
            else:
                self.lost += 1
            self._ready.notify()

    def take(self, timeout: float) -> tuple[list[dict], int]:
        """(new flows, how many were lost after them); waits up to ``timeout``."""
        with self._ready:
            if not self._items and not self.lost:
                self._ready.wait(timeout)
            items, lost = list(self._items), self.lost
            self._items.clear()
            self.lost = 0
        return items, lost


class _Hub:
    """Fans the store's new flows out to the followers' feeds."""

    def __init__(self, store: FlowStore) -> None:
        self._store, self._feeds = store, ()
        self._lock = threading.Lock()
        store.listeners.append(self._publish)

    def _publish(self, flow: dict) -> None:
        for feed in self._feeds:  # a tuple, replaced (not changed) under the lock
            feed.put(flow)

    def subscribe(self) -> _Feed:
        feed = _Feed(FEED_SIZE)
        with self._lock:
            self._feeds = (*self._feeds, feed)
        return feed

    @property
    def count(self) -> int:
        return len(self._feeds)

    def unsubscribe(self, feed: _Feed) -> None:
        with self._lock:
            self._feeds = tuple(f for f in self._feeds if f is not feed)

    def close(self) -> None:
        try:
            self._store.listeners.remove(self._publish)
        except ValueError:
            pass


class Unrecorded:
    """The Observer methods ciliumpy has nothing for, the same on a node and the relay:
    no namespaces (endpoints have none), no agent or debug events (not recorded)."""

    def GetNamespaces(self, request: observer_pb2.GetNamespacesRequest,
                      context: grpc.ServicerContext) -> observer_pb2.GetNamespacesResponse:
        return observer_pb2.GetNamespacesResponse()

    def GetAgentEvents(self, request: observer_pb2.GetAgentEventsRequest,
                       context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "ciliumpy records no agent events")

    def GetDebugEvents(self, request: observer_pb2.GetDebugEventsRequest,
                       context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "ciliumpy records no debug events")


class ObserverServicer(Unrecorded, observer_pb2_grpc.ObserverServicer):
    """The Observer service over ``store``. ``address`` is where clients reach it (for
    GetNodes); ``nodes``, when given, lists the nodes (a relay's view) instead of this
    one alone."""

    def __init__(self, store: FlowStore, node_name: str, address: str = "",
                 nodes: NodeList | None = None, started: float | None = None) -> None:
        self.store, self.node_name, self.address = store, node_name, address
        self.nodes = nodes
        self.started = time.time() if started is None else started
        self._hub = _Hub(store)
        self._closed = threading.Event()

    @property
    def followers(self) -> int:
        """Follow streams in progress (subscribed to new flows)."""
        return self._hub.count

    def close(self) -> None:
        """Ends every follow stream and detaches from the store."""
        self._closed.set()
        self._hub.close()

    # ---- GetFlows (the methods bear the service's names, as grpc dispatches them) ----
    def GetFlows(self, request: observer_pb2.GetFlowsRequest,
                 context: grpc.ServicerContext) -> Iterator[observer_pb2.GetFlowsResponse]:
        try:
            whitelist = filters_from_proto(request.whitelist, "whitelist")
            blacklist = filters_from_proto(request.blacklist, "blacklist")
            since = from_timestamp(request.since) if request.HasField("since") else None
            until = from_timestamp(request.until) if request.HasField("until") else None
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.first and request.follow:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "first cannot be specified with follow")
        mask = request.field_mask if request.field_mask.paths else None
        if mask is not None and not mask.IsValidForDescriptor(flow_pb2.Flow.DESCRIPTOR):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"invalid field mask {list(mask.paths)} for flow.Flow")
        # subscribe first: a flow stored while the history is read is in the feed too
        feed = self._hub.subscribe() if request.follow else None
        try:
            history = self._history(request, whitelist, blacklist, since, until)
            for flow in history:
                response = self._response(flow, mask)
                if response is not None:
                    yield response
            if feed is not None:
                # only the newest flows can be in the feed too: keep those (alive, so
                # their ids stay theirs) until the first take, and let go of the rest
                recent = history[-FEED_SIZE:]
                del history
                yield from self._follow(feed, recent, whitelist, blacklist, until, mask,
                                        context)
        finally:
            if feed is not None:
                self._hub.unsubscribe(feed)

    def _history(self, request: observer_pb2.GetFlowsRequest, whitelist: list[FlowFilter],
                 blacklist: list[FlowFilter], since: float | None,
                 until: float | None) -> list[dict]:
        number = request.number or None
        if request.first or since is not None:
            # forward from the oldest (or since); with follow, number does not cap it
            return self.store.query(whitelist, blacklist, since, until,
                                    first=None if request.follow else number)
        if request.follow and number is None:
            return []
        return self.store.query(whitelist, blacklist, None, until, last=number)

    def _follow(self, feed: _Feed, recent: list[dict], whitelist: list[FlowFilter],
                blacklist: list[FlowFilter], until: float | None, mask: FieldMask | None,
                context: grpc.ServicerContext) -> Iterator[observer_pb2.GetFlowsResponse]:
        ended = threading.Event()
        context.add_callback(ended.set)  # the client cancelled, the deadline passed
        # the flows both sent from the history and in the feed were put before the
        # history was read, so all of them come with the first take
        overlap = {id(flow) for flow in recent}
        while not ended.is_set() and not self._closed.is_set() and context.is_active():
            if until is not None and time.time() > until:
                return
            flows, lost = feed.take(KEEPALIVE)
            for flow in flows:
                if overlap and id(flow) in overlap:
                    continue
                if matches(flow, whitelist, blacklist):
                    response = self._response(flow, mask)
                    if response is not None:
                        yield response
            if overlap:
                overlap.clear()
                recent.clear()
            if lost:
                yield self._lost(lost)

    def _response(self, flow: dict, mask: FieldMask | None
                  ) -> observer_pb2.GetFlowsResponse | None:
        try:
            message = flow_to_proto(flow)
        except json_format.ParseError as exc:  # a flow the proto cannot hold: skip it
            log.warning("flow not sent on the Hubble API: %s", exc)
            return None
        if mask is not None:
            masked = flow_pb2.Flow()
            mask.MergeMessage(message, masked)
            message = masked
        response = observer_pb2.GetFlowsResponse(flow=message, node_name=message.node_name)
        if message.HasField("time"):
            response.time.CopyFrom(message.time)
        return response

    def _lost(self, count: int) -> observer_pb2.GetFlowsResponse:
        log.warning("a Hubble follower fell behind: %d flows lost", count)
        return observer_pb2.GetFlowsResponse(
            lost_events=flow_pb2.LostEvent(source=flow_pb2.HUBBLE_RING_BUFFER,
                                           num_events_lost=count),
            node_name=self.node_name, time=to_timestamp(time.time()))

    # ---- status, nodes -------------------------------------------------------------
    def ServerStatus(self, request: observer_pb2.ServerStatusRequest,
                     context: grpc.ServicerContext) -> observer_pb2.ServerStatusResponse:
        view = self.store.view()
        now = time.time()
        last_minute = len(self.store.query([], [], since=now - 60))
        response = observer_pb2.ServerStatusResponse(
            num_flows=view["flows"], max_flows=view["capacity"], seen_flows=view["seen"],
            uptime_ns=self._uptime_ns(now), version=VERSION, flows_rate=last_minute / 60)
        if self.nodes is not None:
            nodes = self.nodes()
            down = [n.name for n in nodes if n.state != relay_pb2.NODE_CONNECTED]
            response.num_connected_nodes.value = len(nodes) - len(down)
            response.num_unavailable_nodes.value = len(down)
            response.unavailable_nodes.extend(down)
        return response

    def GetNodes(self, request: observer_pb2.GetNodesRequest,
                 context: grpc.ServicerContext) -> observer_pb2.GetNodesResponse:
        if self.nodes is not None:
            return observer_pb2.GetNodesResponse(nodes=self.nodes())
        return observer_pb2.GetNodesResponse(nodes=[self.this_node()])

    def this_node(self) -> observer_pb2.Node:
        """This agent as GetNodes lists it."""
        view = self.store.view()
        return observer_pb2.Node(
            name=self.node_name, version=VERSION, address=self.address,
            state=relay_pb2.NODE_CONNECTED, tls=observer_pb2.TLS(enabled=False),
            uptime_ns=self._uptime_ns(time.time()), num_flows=view["flows"],
            max_flows=view["capacity"], seen_flows=view["seen"])

    def _uptime_ns(self, now: float) -> int:
        return max(0, int((now - self.started) * 1e9))


def grpc_address(listen: str) -> str:
    """A ``hubble-listen-address`` as gRPC binds it: ``:4244`` (every address, as
    Hubble writes it) -> ``[::]:4244``."""
    return f"[::]{listen}" if listen.startswith(":") else listen


class HubbleServer:
    """The Observer service on ``listen`` (``host:port``, ``:port``), plain TCP."""

    def __init__(self, listen: str, servicer: ObserverServicer | RelayServicer,
                 workers: int = 8, name: str = "Hubble API",
                 tls: HubbleTLS | None = None) -> None:
        self.listen, self.servicer, self.workers = listen, servicer, workers
        self.name, self.tls = name, tls
        self.port = 0  # the bound port, once serving
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        """Serves now, or (port busy: a previous agent still draining) from a thread
        that retries for ``BIND_RETRY_FOR`` seconds. Never raises for a busy port."""
        try:
            self._bind()
        except RuntimeError as exc:
            log.warning("%s: cannot listen on %s yet (%s); retrying", self.name, self.listen,
                        exc)
            threading.Thread(target=self._retry, name="hubble-bind", daemon=True).start()

    def _bind(self) -> None:
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hubble"),
            maximum_concurrent_rpcs=self.workers,  # beyond: RESOURCE_EXHAUSTED, not a hang
            options=[("grpc.so_reuseport", 0)])  # never share the port with another agent
        observer_pb2_grpc.add_ObserverServicer_to_server(self.servicer, server)
        address = grpc_address(self.listen)
        port = (server.add_secure_port(address, self.tls.server_credentials()) if self.tls
                else server.add_insecure_port(address))  # RuntimeError if busy
        if not port:
            raise RuntimeError("bind failed")
        with self._lock:
            if self._stopped.is_set():
                return
            server.start()
            self._server, self.port = server, port
        log.info("%s (Observer) on %s%s", self.name, self.listen,
                 " (TLS)" if self.tls else "")

    def _retry(self) -> None:
        deadline = time.monotonic() + BIND_RETRY_FOR
        while not self._stopped.wait(0.5):
            try:
                self._bind()
                return
            except RuntimeError as exc:
                if time.monotonic() > deadline:
                    log.error("%s off: cannot listen on %s: %s", self.name, self.listen, exc)
                    return

    def stop(self, grace: float = 1.0) -> None:
        """Ends the follow streams and stops serving (waits up to ``grace`` + 1 s)."""
        self._stopped.set()
        self.servicer.close()
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(grace + 1.0)
