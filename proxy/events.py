"""L7 events: JSON lines in datagrams on a unix datagram socket.

Owns the event format and both ends of the socket: :class:`EventEmitter` (used by the
proxy workers; never blocks, silently drops when nobody listens or the receiver is
slow; inside an event loop it sends the events of each 10 ms in as few datagrams as
fit, one event per line, so a busy worker pays one system call for many requests) and
:class:`EventReceiver` (for the agent: binds the socket and calls a callback per event
from a thread).

Event::

    {"type": "l7", "time": <unix seconds, float>,
     "verdict": "FORWARDED" | "DENIED" | "ERROR",
     "protocol": "http" | "http2" | "grpc", "direction": "ingress" | "egress",
     "src": {"ip", "port", "identity", "labels", "name"}, "dst": {...same...},
     "http": {"method", "path", "host", "status", "latency_ms"},
     "grpc_status": int | null, "reason": str,
     "kafka": null | {"api_key": name, "api_version", "correlation_id", "client_id",
                      "topics": [...], "error_code": int | null},
     "dns": null | {"query": name, "qtype": "A", "rcode": "NOERROR" | "REFUSED" | ...,
                    "ips": [...], "ttl": int | null, "cnames": [...]},
     "tls": null | {"sni": the ClientHello's server name, or null}}

A ``tls`` event is one connection on a ``serverNames`` port (FORWARDED: spliced
through; DENIED: reset, never connected upstream). For Kafka, DNS and TLS events
``http.latency_ms`` carries the latency (request to answer; TLS: accept to verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

# orjson: an event is encoded per request in the proxy's hot path and decoded per
# request in the agent; it is several times faster than json at both, same output.
import orjson

DEFAULT_EVENTS_PATH = "/run/ciliumpy/proxy/events.sock"
MAX_FIELD = 2048
MAX_DATAGRAM = 60000  # below the unix datagram limit (net.core.wmem_default)
FLUSH_DELAY = 0.01  # a busy worker sends its events every 10 ms: one system call for many


def make_event(*, verdict: str, protocol: str, direction: str, src: dict, dst: dict,
               method: str | None = None, path: str | None = None, host: str | None = None,
               status: int | None = None, latency_ms: float | None = None,
               grpc_status: int | None = None, reason: str = "",
               kafka: dict | None = None, dns: dict | None = None,
               tls: dict | None = None) -> dict:
    event = {
        "type": "l7", "time": time.time(), "verdict": verdict, "protocol": protocol,
        "direction": direction, "src": src, "dst": dst,
        "http": {"method": method, "path": (path or "")[:MAX_FIELD] if path else path,
                 "host": host, "status": status,
                 "latency_ms": None if latency_ms is None else round(latency_ms, 3)},
        "grpc_status": grpc_status, "reason": reason[:MAX_FIELD], "kafka": kafka,
    }
    if dns is not None:
        event["dns"] = dns
    if tls is not None:
        event["tls"] = tls
    return event


class EventEmitter:
    """Sends events; every failure (no listener, full buffer) drops the event."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.dropped = 0
        self.pending: list[bytes] = []
        self.sock: socket.socket | None = None
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)

    def emit(self, event: dict) -> bool:
        """Queues the event; sent at the end of this loop iteration (at once outside a
        running loop, returning whether it was delivered). False when there is nowhere
        to send it."""
        if self.sock is None or not self.path:
            return False
        self.pending.append(orjson.dumps(event))
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            except RuntimeError:  # no loop: synchronous caller
                return self.flush()
        return True

    def flush(self) -> bool:
        """Sends what is queued; False if any of it was dropped."""
        dropped = self.dropped
        lines, self.pending = self.pending, []
        batch: list[bytes] = []
        size = 0
        for line in lines:
            if batch and size + len(line) + 1 > MAX_DATAGRAM:
                self._send(batch)
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            self._send(batch)
        return self.dropped == dropped

    def _send(self, batch: list[bytes]) -> None:
        try:
            self.sock.sendto(b"\n".join(batch), self.path)  # type: ignore[union-attr]
        except OSError:
            self.dropped += len(batch)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class EventReceiver:
    """Binds ``path`` (replacing a stale socket) and calls ``callback(event)`` per event
    from a daemon thread. Undecodable datagrams are skipped."""

    def __init__(self, path: str, callback: Callable[[dict], None], mode: int = 0o666) -> None:
        self.path = path
        self.callback = callback
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, mode)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="l7-events", daemon=True)

    def start(self) -> EventReceiver:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.split(b"\n"):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                try:
                    self.callback(event)
                except Exception:  # noqa: BLE001 - a bad callback must not kill the thread
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> EventReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
