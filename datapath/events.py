"""Reads the datapath's ring buffer (drop and policy-verdict events) in a thread and
hands each decoded event to a callback. One reader per agent: a ring buffer is
consumed by whoever polls it."""

from __future__ import annotations

import ctypes as ct
import logging
import threading
from collections.abc import Callable

from bcc import libbcc

from datapath import maps

log = logging.getLogger("ciliumpy.datapath")
_CALLBACK = libbcc._RINGBUF_CB_TYPE  # the exact type bcc declared for the C function
EVENT_TYPES = {1: "drop", 2: "policy-verdict", 3: "trace"}
DIRECTIONS = {0: "ingress", 1: "egress"}
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


def decode(raw: maps.Event) -> dict:
    return {
        "type": EVENT_TYPES.get(raw.type, str(raw.type)),
        "reason": maps.REASONS.get(raw.reason, str(raw.reason)),
        "direction": DIRECTIONS.get(raw.dir, str(raw.dir)),
        "verdict": "allowed" if raw.verdict else "denied",
        "ifindex": raw.ifindex,
        "src_identity": raw.src_identity,
        "dst_identity": raw.dst_identity,
        "src_ip": maps.to_ip(raw.family, raw.saddr) if raw.family else None,
        "dst_ip": maps.to_ip(raw.family, raw.daddr) if raw.family else None,
        "src_port": raw.sport,
        "dst_port": raw.dport,
        "protocol": PROTOCOLS.get(raw.proto, str(raw.proto)),
        "length": raw.len,
        "ktime_ns": raw.ts,
        **({"tcp_flags": raw.tcp_flags} if raw.proto == 6 else {}),
        **({"icmp_type": raw.icmp_type} if raw.proto in (1, 58) else {}),
    }


class EventReader:
    def __init__(self, map_fd: int, on_event: Callable[[dict], None]) -> None:
        self.on_event = on_event
        self.lost = 0
        self._callback = _CALLBACK(self._handle)  # referenced for the C side's lifetime
        self._ring = libbcc.lib.bpf_new_ringbuf(map_fd, self._callback, None)
        if not self._ring:
            raise RuntimeError("cannot open the events ring buffer")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bpf-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _handle(self, _ctx, data, size) -> int:
        try:
            raw = ct.cast(data, ct.POINTER(maps.Event)).contents
            self.on_event(decode(raw))
        except Exception:  # never let an exception unwind into C
            log.exception("event handling failed")
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            libbcc.lib.bpf_poll_ringbuf(self._ring, 200)
