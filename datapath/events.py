"""Reads the datapath's ring buffer (drop, policy-verdict and trace events). One reader
per agent: a ring buffer is consumed by whoever polls it.

Two ways to read it: :class:`EventReader`, a thread handing each decoded event to a
callback (tests, tools); and the agent's way, this module run as its own process
(``python -m datapath.events FD``, started by ``ciliumpy.flow_reader``): it only copies
each raw record (``RECORD_SIZE`` bytes, ``maps.Event``) and writes them in batches to its
standard output, so polling the ring never waits for the agent's Python threads, and the
agent decodes a whole batch at once (:func:`decode_batch`)."""

from __future__ import annotations

import ctypes as ct
import ipaddress
import logging
import os
import socket
import struct
import sys
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
        "verdict": maps.VERDICTS.get(raw.verdict, "denied"),
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


# maps.Event field by field (natural alignment, so no padding but the tail's)
_RECORD = struct.Struct("=BBBBIII16s16sHHBBHQBB6x")
RECORD_SIZE = _RECORD.size
assert ct.sizeof(maps.Event) == RECORD_SIZE
_ADDRESSES: dict[bytes, str] = {}  # raw address -> text: a flow's addresses repeat


def _address(raw: bytes) -> str:
    """The text of a raw address: 4 bytes IPv4, 16 IPv6 (ipaddress's form, as decode)."""
    found = _ADDRESSES.get(raw)
    if found is None:
        if len(_ADDRESSES) > 65536:  # bounded: many distinct peers start it over
            _ADDRESSES.clear()
        found = _ADDRESSES[raw] = (socket.inet_ntop(socket.AF_INET, raw) if len(raw) == 4
                                   else str(ipaddress.IPv6Address(raw)))
    return found


def decode_batch(data: bytes | memoryview) -> list[dict]:
    """The events of whole ``RECORD_SIZE`` records back to back, decoded as
    :func:`decode` decodes one (the same keys and values)."""
    out = []
    types, reasons, dirs, protos = EVENT_TYPES, maps.REASONS, DIRECTIONS, PROTOCOLS
    for (kind, reason, direction, family, ifindex, src_identity, dst_identity, saddr,
         daddr, sport, dport, proto, verdict, length, ts, tcp_flags,
         icmp_type) in _RECORD.iter_unpack(data):
        event = {
            "type": types.get(kind, str(kind)),
            "reason": reasons.get(reason, str(reason)),
            "direction": dirs.get(direction, str(direction)),
            "verdict": maps.VERDICTS.get(verdict, "denied"),
            "ifindex": ifindex, "src_identity": src_identity, "dst_identity": dst_identity,
            "src_ip": _address(saddr if family == 6 else saddr[:4]) if family else None,
            "dst_ip": _address(daddr if family == 6 else daddr[:4]) if family else None,
            "src_port": sport, "dst_port": dport,
            "protocol": protos.get(proto, str(proto)),
            "length": length, "ktime_ns": ts,
        }
        if proto == 6:
            event["tcp_flags"] = tcp_flags
        elif proto in (1, 58):
            event["icmp_type"] = icmp_type
        out.append(event)
    return out


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


def copy_records(ring_fd: int, out_fd: int, poll_ms: int = 200) -> int:
    """The reader process's loop: each record of the ring at ``ring_fd`` copied as it is
    (``RECORD_SIZE`` bytes; a record of another size is counted and skipped) and written
    to ``out_fd`` once per poll, all records of the poll in one write. Returns when the
    agent is gone (``out_fd`` closed, or this process re-parented)."""
    chunks: list[bytes] = []
    skipped = [0]

    def handle(_ctx, data, size) -> int:
        if size == RECORD_SIZE:
            chunks.append(ct.string_at(data, size))
        else:
            skipped[0] += 1
        return 0

    callback = _CALLBACK(handle)
    ring = libbcc.lib.bpf_new_ringbuf(ring_fd, callback, None)
    if not ring:
        raise RuntimeError("cannot open the events ring buffer")
    parent = os.getppid()
    while True:
        libbcc.lib.bpf_poll_ringbuf(ring, poll_ms)
        if chunks:
            data = memoryview(b"".join(chunks))
            chunks.clear()
            try:
                while data:  # blocks while the agent is behind: the ring holds the rest
                    data = data[os.write(out_fd, data):]
            except BrokenPipeError:
                return skipped[0]
        elif os.getppid() != parent:
            return skipped[0]


def main(argv: list[str]) -> int:
    """``python -m datapath.events RING_FD``: records to standard output."""
    logging.basicConfig(level=logging.INFO, format="ciliumpy event reader: %(message)s")
    skipped = copy_records(int(argv[0]), sys.stdout.fileno())
    if skipped:
        log.warning("%d records of an unexpected size skipped", skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
