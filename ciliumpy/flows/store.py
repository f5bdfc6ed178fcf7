"""The agent's flow store: a bounded ring of Hubble flows built from every monitor event
(datapath drops, policy verdicts, new connections, L7 requests) as it arrives, in the
event intake's thread (a batch at a time: one lock, one wake-up of the followers), and
the queries ``ciliumpy observe`` and ``/v1/flows`` make:
time window, first/last N, Hubble filters, and following new flows."""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from ciliumpy.flows.filters import FlowFilter, matches
from ciliumpy.flows.model import flows_from_event

DEFAULT_CAPACITY = 65536
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_time(text: str, now: float | None = None) -> float:
    """Hubble's ``--since``/``--until``: RFC 3339 (``2026-11-23T20:30:00Z``) or a
    duration back from now (``90s``, ``5m``, ``1h30m``). Unix seconds; ValueError else."""
    text = text.strip()
    match = _DURATION.match(text)
    if text and match and any(match.groups()):
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        return (now if now is not None else time.time()) - (hours * 3600 + minutes * 60
                                                              + seconds)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a time (2026-11-23T20:30:00Z) nor a duration "
                         "(90s, 5m, 1h30m)") from None
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} needs a time zone (Z or +01:00)")
    return stamp.timestamp()


class FlowStore:
    def __init__(self, node_name: str, container_of: Callable[[str], str | None],
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self.node_name, self.container_of = node_name, container_of
        self.capacity = capacity
        self._ring: collections.deque[tuple[float, dict]] = collections.deque(maxlen=capacity)
        self._seen = 0  # flows ever added: the ring holds the last ``capacity`` of them
        self._changed = threading.Condition()
        self.listeners: list[Callable[[dict], None]] = []  # each new flow (metrics)

    @property
    def seen(self) -> int:
        return self._seen

    def add(self, event: dict) -> None:
        """One monitor event: no flow, one, or two (an answered L7 request is a request
        and a response record, as in Hubble)."""
        self.add_events([event])

    def add_events(self, events: list[dict]) -> None:
        """Monitor events, oldest first: their flows stored and handed to the listeners."""
        now = time.time()
        node, container_of = self.node_name, self.container_of
        fresh: list[tuple[float, dict]] = []
        for event in events:
            stamp = event.get("time") or now
            for flow in flows_from_event(event, node, container_of):
                fresh.append((stamp, flow))
        if not fresh:
            return
        for listener in self.listeners:
            for _, flow in fresh:
                listener(flow)
        with self._changed:
            self._ring.extend(fresh)
            self._seen += len(fresh)
            self._changed.notify_all()

    def view(self) -> dict:
        with self._changed:
            held = len(self._ring)
            oldest = self._ring[0][0] if held else None
        return {"capacity": self.capacity, "flows": held, "seen": self._seen,
                "oldest": oldest}

    def query(self, whitelist: list[FlowFilter], blacklist: list[FlowFilter],
              since: float | None = None, until: float | None = None,
              last: int | None = None, first: int | None = None) -> list[dict]:
        """Stored flows in time order matching the filters and window; ``last``/``first``
        keep only the newest/oldest N of those."""
        with self._changed:
            held = list(self._ring)

        def wanted(stamp: float, flow: dict) -> bool:
            return (since is None or stamp >= since) and (until is None or stamp <= until) \
                and matches(flow, whitelist, blacklist)

        if last is not None and first is None:  # newest first, stop at N: no full scan
            found = []
            for stamp, flow in reversed(held):
                if len(found) >= last or (since is not None and stamp < since):
                    break
                if wanted(stamp, flow):
                    found.append(flow)
            return found[::-1]
        found = []
        for stamp, flow in held:
            if wanted(stamp, flow):
                found.append(flow)
                if first is not None and len(found) >= first:
                    break
        return found[-last:] if last is not None and last < len(found) else found

    def follow(self, whitelist: list[FlowFilter], blacklist: list[FlowFilter],
               stop: threading.Event, keepalive: float = 1.0) -> Iterator[dict | None]:
        """New matching flows as they arrive; None every ``keepalive`` seconds without
        one (lets a server notice a closed client)."""
        for batch in self.follow_batches(whitelist, blacklist, stop, keepalive):
            if not batch:
                yield None
            yield from batch

    def follow_batches(self, whitelist: list[FlowFilter], blacklist: list[FlowFilter],
                       stop: threading.Event, keepalive: float = 1.0,
                       after: float | None = None) -> Iterator[list[dict]]:
        """New matching flows as they arrive, in the batches they were stored in (one
        write to a client for many flows); an empty list every ``keepalive`` seconds
        without any new flow. A follower more than ``capacity`` flows behind skips
        those the ring no longer holds. ``after``: start with the stored flows newer
        than this time (a follower that read the history up to it misses nothing)."""
        with self._changed:
            position = self._seen
            if after is not None:  # from the newest back to the first one not after it
                newer = 0
                for stamp, _ in reversed(self._ring):
                    if stamp <= after:
                        break
                    newer += 1
                position -= newer
        while not stop.is_set():
            with self._changed:
                if self._seen == position:
                    self._changed.wait(keepalive)
                fresh = min(self._seen - position, len(self._ring))
                # only the new tail, never the whole ring: add() waits on this lock
                held = [self._ring[-i] for i in range(fresh, 0, -1)]
                position = self._seen
            if not held:
                yield []
                continue
            found = [flow for _, flow in held if matches(flow, whitelist, blacklist)]
            if found:
                yield found
