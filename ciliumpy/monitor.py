"""Datapath events made readable: each drop or policy verdict gets the labels of both
identities and the endpoint's container, is kept in a bounded ring (the last
``capacity`` events) and is pushed to every live ``ciliumpy monitor`` stream."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator

from policies.identities import RESERVED, Identity


class Monitor:
    def __init__(self, identity_lookup: Callable[[int], Identity | None],
                 endpoint_lookup: Callable[[int], dict | None], capacity: int = 4095) -> None:
        self.identity_lookup, self.endpoint_lookup = identity_lookup, endpoint_lookup
        self.events: collections.deque[dict] = collections.deque(maxlen=capacity)
        self.lost = 0
        self.seen = 0
        self._subscribers: list[queue.Queue] = []
        self._labels: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def _labels_of(self, number: int) -> list[str]:
        if number in RESERVED:
            return [f"reserved:{RESERVED[number]}"]
        if number not in self._labels:
            try:
                found = self.identity_lookup(number)
            except Exception:  # kvstore down: show the number alone
                return []
            if found is None:
                return []
            self._labels[number] = list(found.labels)
        return self._labels[number]

    def ingest(self, event: dict) -> None:
        event["time"] = time.time()
        event["src_labels"] = self._labels_of(event["src_identity"])
        event["dst_labels"] = self._labels_of(event["dst_identity"])
        endpoint = self.endpoint_lookup(event["ifindex"])
        if endpoint:
            event["endpoint"] = endpoint
        with self._lock:
            self.seen += 1
            self.events.append(event)
            for subscriber in self._subscribers:
                try:
                    subscriber.put_nowait(event)
                except queue.Full:
                    self.lost += 1

    def forget_identity(self, number: int) -> None:
        self._labels.pop(number, None)

    def stream(self, types: set[str] | None, history: bool, stop: threading.Event
               ) -> Iterator[dict]:
        subscriber: queue.Queue = queue.Queue(maxsize=10000)
        with self._lock:
            backlog = list(self.events) if history else []
            self._subscribers.append(subscriber)
        try:
            for event in backlog:
                if not types or event["type"] in types:
                    yield event
            while not stop.is_set():
                try:
                    event = subscriber.get(timeout=1.0)
                except queue.Empty:
                    yield {}  # keep-alive: lets the server notice a closed client
                    continue
                if not types or event["type"] in types:
                    yield event
        finally:
            with self._lock:
                self._subscribers.remove(subscriber)


def format_event(event: dict) -> str:
    """One line, like Cilium's monitor: what, why, where, and both sides' labels."""
    endpoint = event.get("endpoint") or {}
    where = endpoint.get("container_name") or endpoint.get("endpoint_id", "")[:12] or (
        f"ifindex {event['ifindex']}")
    src = f"{event['src_ip']}:{event['src_port']}"
    dst = f"{event['dst_ip']}:{event['dst_port']}"
    if event["type"] == "drop":
        head = f"xx drop ({event['reason']}) {event['direction']} on {where}"
    elif event["type"] == "trace":
        head = f"-> trace new connection {event['direction']} on {where}"
    else:
        head = f"-> policy-verdict {event['verdict']} {event['direction']} on {where}"
    return (f"{head}: {event['protocol']} {src} -> {dst} "
            f"identity {event['src_identity']}->{event['dst_identity']} "
            f"src labels [{', '.join(event['src_labels'])}] "
            f"dst labels [{', '.join(event['dst_labels'])}]")
