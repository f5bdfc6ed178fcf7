"""Following every node at once: the live flows of several sources (each node's Hubble
``GetFlows`` with ``follow``, and this node's own store) merged into one stream.

Each source runs in a thread of its own and puts what it receives on one queue; the
consumer takes the queue in short windows (``WINDOW``) and hands each window's flows
over sorted by flow time, as Hubble Relay's sort buffer does: flows of different nodes
arrive out of order by a few milliseconds, a window puts them back in order without
holding them noticeably.

A node that cannot be reached, or whose stream breaks, becomes a notice (a partial
stream, never a hang) and is asked again every ``RETRY`` seconds; when it answers
again a notice says so and its stream goes on from the time of the last flow it sent,
so nothing is shown twice. The node list is read again every ``REFRESH`` seconds, so a
node that joins while someone follows is followed too.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.tls import HubbleTLS, channel

WINDOW = 0.2  # seconds of arrivals sorted together
RETRY = 2.0  # seconds before a node that failed is asked again
REFRESH = 5.0  # seconds between readings of the node list
CONNECT_TIMEOUT = 5.0  # seconds a node has to accept the connection

Peers = Callable[[], list[tuple[str, str]]]  # (node name, host:port) of every node
Convert = Callable[[str, observer_pb2.GetFlowsResponse], Any]


class _Unreachable(Exception):
    """A node's API did not accept a connection in time."""


@dataclass(frozen=True)
class Notice:
    """A change in what the stream covers: a node became unreachable (``up`` False) or
    answers again (``up`` True)."""

    node: str
    up: bool
    message: str


@dataclass
class Window:
    """What arrived during one window: (flow time, item) oldest first, and notices."""

    items: list[Any]
    notices: list[Notice]


def response_time(response: observer_pb2.GetFlowsResponse) -> float:
    stamp = response.time if response.HasField("time") else response.flow.time
    return stamp.seconds + stamp.nanos / 1e9


class MergedFollow:
    """Follows ``peers()`` (re-read every ``REFRESH`` s) with ``request`` (its
    ``follow`` set here) and, when given, ``local`` (a function that runs until the
    stop event is set, calling ``put(time, item)`` for each new flow). Each remote
    response becomes ``convert(node, response)``; ``None`` drops it."""

    def __init__(self, peers: Peers, request: observer_pb2.GetFlowsRequest, convert: Convert,
                 local: Callable[[Callable[[float, Any], None], threading.Event], None]
                 | None = None, skip: str = "", tls: HubbleTLS | None = None) -> None:
        self.peers, self.convert, self.local, self.skip = peers, convert, local, skip
        self.tls = tls
        self.request = observer_pb2.GetFlowsRequest()
        self.request.CopyFrom(request)
        self.request.follow = True
        self.stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._calls: dict[str, grpc.Future] = {}
        self._lock = threading.Lock()
        self._started: set[str] = set()

    def close(self) -> None:
        """Ends every stream (the consumer went away)."""
        self.stop.set()
        with self._lock:
            calls = list(self._calls.values())
        for call in calls:
            call.cancel()

    def windows(self) -> Iterator[Window]:
        """Windows of merged flows until :meth:`close`; an empty window at least every
        ``WINDOW`` seconds (lets a server notice a client that went away)."""
        if self.local is not None:
            threading.Thread(target=self.local, args=(self._put, self.stop), daemon=True,
                             name="follow-local").start()
        next_refresh = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    self._start_new_peers()
                    next_refresh = now + REFRESH
                yield self._take(now + WINDOW)
        finally:
            self.close()

    # ---- internals ------------------------------------------------------------------
    def _put(self, stamp: float, item: Any) -> None:
        self._queue.put((stamp, item))

    def _take(self, deadline: float) -> Window:
        window = Window([], [])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                stamp, item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(item, Notice):
                window.notices.append(item)
            else:
                window.items.append((stamp, item))
        window.items.sort(key=lambda pair: pair[0])
        window.items = [item for _, item in window.items]
        return window

    def _start_new_peers(self) -> None:
        try:
            peers = self.peers()
        except Exception as exc:  # the registry is unreachable: keep the nodes followed
            self._queue.put((0.0, Notice("", False, f"the node list cannot be read ({exc}): "
                                                    "following the nodes known so far")))
            return
        for name, address in peers:
            if name == self.skip or name in self._started:
                continue
            self._started.add(name)
            threading.Thread(target=self._follow_node, args=(name, address), daemon=True,
                             name=f"follow-{name}").start()

    def _follow_node(self, name: str, address: str) -> None:
        request = self.request
        last = 0.0  # time of the last flow received: a new stream starts after it
        failed = False
        while not self.stop.is_set():
            try:
                with channel(address, self.tls) as channel_:
                    # connected before it is announced: a call is only tried when read
                    try:
                        grpc.channel_ready_future(channel_).result(timeout=CONNECT_TIMEOUT)
                    except grpc.FutureTimeoutError:
                        raise _Unreachable(f"not connected within {CONNECT_TIMEOUT:.0f} s") \
                            from None
                    call = observer_pb2_grpc.ObserverStub(channel_).GetFlows(request)
                    with self._lock:
                        self._calls[name] = call
                    if self.stop.is_set():
                        call.cancel()
                    if failed:
                        failed = False
                        self._queue.put((0.0, Notice(name, True,
                                                     f"node {name} ({address}) answers again")))
                    for response in call:
                        stamp = response_time(response)
                        if response.HasField("flow"):
                            if stamp <= last:
                                continue
                            last = stamp
                        item = self.convert(name, response)
                        if item is not None:
                            self._queue.put((stamp, item))
            except (grpc.RpcError, _Unreachable) as exc:
                if self.stop.is_set():
                    return
                if not failed:
                    failed = True
                    if isinstance(exc, grpc.RpcError):
                        code = exc.code().name if exc.code() else "error"
                        why = f"{code}: {exc.details() or ''}".rstrip(": ")
                    else:
                        why = f"UNAVAILABLE: {exc}"
                    self._queue.put((0.0, Notice(name, False,
                                                 f"node {name} ({address}) did not answer: "
                                                 f"{why}; asked again every {RETRY:g} s")))
            finally:
                with self._lock:
                    self._calls.pop(name, None)
            if self.stop.wait(RETRY):
                return
            # again from the last flow received (history already sent is not repeated)
            request = observer_pb2.GetFlowsRequest()
            request.CopyFrom(self.request)
            request.number = 0
            if last:
                request.since.seconds = int(last)
                request.since.nanos = int(round((last - int(last)) * 1e9))
