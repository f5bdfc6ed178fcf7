"""HTTP/2 (h2c, prior knowledge) and gRPC proxying: a verdict per stream.

Owns both HTTP/2 connections of one client connection (``h2`` library): the client
side (we are the server) and ONE lazily-opened upstream HTTP/2 connection (we are the
client; gRPC is never downgraded). Denied streams are answered locally: gRPC (content-
type ``application/grpc*``) with a trailers-only response ``:status 200``,
``grpc-status 7``, ``grpc-message Access denied``; anything else with ``403 Access
denied``. Allowed streams are mapped to upstream streams; DATA is relayed under both
sides' flow control (received data is acknowledged only once sent on the other side,
so a slow reader back-pressures the writer), trailers are forwarded and RST_STREAM is
propagated both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from policies.http_rules import Request
from proxy.context import ConnContext, apply_actions
from proxy.state import Decision

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
READ_SIZE = 65536
H2_ERRORS = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError)


@dataclass
class _Stream:
    cid: int
    req: Request
    decision: Decision
    protocol: str
    started: float
    uid: int | None = None
    to_up: deque = field(default_factory=deque)
    to_down: deque = field(default_factory=deque)
    client_ended: bool = False
    up_ended: bool = False
    status: int | None = None
    grpc_status: int | None = None
    reported: bool = False


def _hget(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n == name:
            return v.decode("latin-1")
    return None


def _grpc_status(headers: list[tuple[bytes, bytes]]) -> int | None:
    value = _hget(headers, b"grpc-status")
    return int(value) if value is not None and value.isdigit() else None


class Http2Handler:
    def __init__(self, ctx: ConnContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, initial: bytes) -> None:
        self.ctx = ctx
        self.reader, self.writer = reader, writer
        self.initial = initial
        self.down = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.up: h2.connection.H2Connection | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.up_task: asyncio.Task | None = None
        self.streams: dict[int, _Stream] = {}
        self.by_uid: dict[int, _Stream] = {}

    async def run(self) -> None:
        self.down.initiate_connection()
        self._write()
        data = self.initial
        try:
            while True:
                if data:
                    try:
                        events = self.down.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        self.ctx.emit("ERROR", "http2", reason=f"HTTP/2 protocol error: {exc}")
                        self._write()
                        return
                    for event in events:
                        if isinstance(event, h2.events.ConnectionTerminated):
                            return
                        await self._down_event(event)
                    self._flush()
                    await self.writer.drain()
                timeout = None if self.streams else self.ctx.config.idle_timeout
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    self.down.close_connection()
                    self._write()
                    return
                if not data:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            if self.up_task is not None:
                self.up_task.cancel()
            if self.up_writer is not None:
                self.up_writer.close()

    # ---------------------------------------------------------------- client side

    async def _down_event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            await self._on_request(ev)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None and st.uid is not None and self.up is not None:
                st.to_up.append(("data", ev.data, ev.flow_controlled_length,
                                 ev.stream_ended is not None))
                st.client_ended = st.client_ended or ev.stream_ended is not None
            else:
                self._ack(self.down, ev.flow_controlled_length, ev.stream_id)
                if st is not None and ev.stream_ended is not None:
                    st.client_ended = True
                    self._maybe_forget(st)
        elif isinstance(ev, h2.events.TrailersReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None and st.uid is not None:
                st.to_up.append(("headers", ev.headers, True))
            if st is not None:
                st.client_ended = True
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None and not st.client_ended:
                st.client_ended = True
                if st.uid is not None:
                    st.to_up.append(("end",))
            if st is not None:
                self._maybe_forget(st)
        elif isinstance(ev, h2.events.StreamReset):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                if st.uid is not None and self.up is not None:
                    with contextlib.suppress(*H2_ERRORS):
                        self.up.reset_stream(st.uid, ev.error_code)
                self._finish(st, f"client reset stream ({ev.error_code})")
        elif isinstance(ev, h2.events.WindowUpdated):
            pass  # _flush() after every batch resends what the window now allows

    async def _on_request(self, ev: h2.events.RequestReceived) -> None:
        headers = list(ev.headers)
        regular = [(n.decode("latin-1").lower(), v.decode("latin-1"))
                   for n, v in headers if not n.startswith(b":")]
        host = _hget(headers, b":authority") or _hget(headers, b"host")
        req = Request(_hget(headers, b":method") or "", _hget(headers, b":path") or "",
                      host, regular)
        ctype = _hget(headers, b"content-type") or ""
        protocol = "grpc" if ctype.startswith("application/grpc") else "http2"
        st = _Stream(ev.stream_id, req, self.ctx.judge(req), protocol, time.monotonic())
        st.client_ended = ev.stream_ended is not None
        self.streams[ev.stream_id] = st
        if not st.decision.allowed:
            self._deny(st)
            return
        try:
            await self._ensure_upstream()
            assert self.up is not None
            st.uid = self.up.get_next_available_stream_id()
            out = apply_actions(headers, st.decision.actions)
            out = [(n.lower(), v) for n, v in out]
            self.up.send_headers(st.uid, out, end_stream=st.client_ended)
            self.by_uid[st.uid] = st
        except (OSError, TimeoutError, h2.exceptions.H2Error) as exc:
            st.uid = None
            self._local_response(st, 503, 14, "upstream unavailable")
            self._finish(st, f"upstream failed: {exc!r}", verdict="ERROR")

    def _deny(self, st: _Stream) -> None:
        self._local_response(st, 403, 7, "Access denied")
        st.status = 200 if st.protocol == "grpc" else 403
        st.grpc_status = 7 if st.protocol == "grpc" else None
        st.reported = True
        self._emit(st, "DENIED", st.decision.reason)
        self._maybe_forget(st)

    def _local_response(self, st: _Stream, status: int, grpc_code: int, message: str) -> None:
        with contextlib.suppress(*H2_ERRORS):
            if st.protocol == "grpc":
                self.down.send_headers(st.cid, [
                    (b":status", b"200"), (b"content-type", b"application/grpc"),
                    (b"grpc-status", str(grpc_code).encode()),
                    (b"grpc-message", message.encode())], end_stream=True)
            else:
                body = message.encode()
                self.down.send_headers(st.cid, [
                    (b":status", str(status).encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"text/plain")])
                self.down.send_data(st.cid, body, end_stream=True)
        st.up_ended = True

    # -------------------------------------------------------------- upstream side

    async def _ensure_upstream(self) -> None:
        if self.up is not None:
            return
        reader, writer = await self.ctx.open_upstream()
        self.up = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.up.initiate_connection()
        self.up_writer = writer
        self._write()
        self.up_task = asyncio.create_task(self._up_loop(reader, self.up))

    async def _up_loop(self, reader: asyncio.StreamReader,
                       conn: h2.connection.H2Connection) -> None:
        reason = "upstream closed the connection"
        try:
            while data := await reader.read(READ_SIZE):
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    reason = f"upstream HTTP/2 protocol error: {exc}"
                    break
                for ev in events:
                    self._up_event(ev)
                self._flush()
                await self.writer.drain()
                if self.up_writer is not None:
                    await self.up_writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.up is conn:
                self._up_lost(reason)

    def _up_event(self, ev: h2.events.Event) -> None:
        st = self.by_uid.get(getattr(ev, "stream_id", 0) or 0)
        if isinstance(ev, h2.events.ConnectionTerminated):
            self._up_lost(f"upstream GOAWAY ({ev.error_code})")
        elif st is None:
            if isinstance(ev, h2.events.DataReceived) and self.up is not None:
                self._ack(self.up, ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.ResponseReceived):
            st.status = int(_hget(ev.headers, b":status") or 0)
            st.grpc_status = _grpc_status(ev.headers)
            st.to_down.append(("headers", ev.headers, ev.stream_ended is not None))
            st.up_ended = ev.stream_ended is not None
        elif isinstance(ev, h2.events.DataReceived):
            st.to_down.append(("data", ev.data, ev.flow_controlled_length,
                               ev.stream_ended is not None))
            st.up_ended = st.up_ended or ev.stream_ended is not None
        elif isinstance(ev, h2.events.TrailersReceived):
            st.grpc_status = _grpc_status(ev.headers)
            st.to_down.append(("headers", ev.headers, True))
            st.up_ended = True
        elif isinstance(ev, h2.events.StreamEnded):
            if not st.up_ended:
                st.up_ended = True
                st.to_down.append(("end",))
        elif isinstance(ev, h2.events.StreamReset):
            with contextlib.suppress(*H2_ERRORS):
                self.down.reset_stream(st.cid, ev.error_code)
            self._finish(st, f"upstream reset stream ({ev.error_code})", verdict="ERROR")

    def _up_lost(self, reason: str) -> None:
        self.up = None
        if self.up_writer is not None:
            self.up_writer.close()
            self.up_writer = None
        for st in list(self.by_uid.values()):
            if not st.reported:
                with contextlib.suppress(*H2_ERRORS):
                    self.down.reset_stream(st.cid, h2.errors.ErrorCodes.REFUSED_STREAM
                                           if st.status is None
                                           else h2.errors.ErrorCodes.INTERNAL_ERROR)
                self._finish(st, reason, verdict="ERROR")
        self.by_uid.clear()
        self._write()

    # ---------------------------------------------------------- relaying + books

    def _flush(self) -> None:
        for st in list(self.streams.values()):
            if st.uid is not None and self.up is not None:
                self._drain_queue(self.up, st.uid, st.to_up, self.down, st.cid)
            if st.to_down:
                up = self.up
                self._drain_queue(self.down, st.cid, st.to_down, up, st.uid or 0)
                if not st.to_down and st.up_ended and not st.reported:
                    self._finish(st, st.decision.reason, verdict="FORWARDED")
        self._write()

    def _drain_queue(self, conn: h2.connection.H2Connection, sid: int, queue: deque,
                     src: h2.connection.H2Connection | None, src_sid: int) -> None:
        try:
            while queue:
                item = queue[0]
                if item[0] == "headers":
                    conn.send_headers(sid, item[1], end_stream=item[2])
                elif item[0] == "end":
                    conn.end_stream(sid)
                else:
                    _, data, flow_len, end = item
                    window = min(conn.local_flow_control_window(sid),
                                 conn.max_outbound_frame_size)
                    if data and window <= 0:
                        return
                    chunk, rest = data[:window], data[window:]
                    conn.send_data(sid, chunk, end_stream=end and not rest)
                    if rest:
                        queue[0] = ("data", rest, flow_len, end)
                        continue
                    if src is not None:
                        self._ack(src, flow_len, src_sid)
                queue.popleft()
        except H2_ERRORS:
            queue.clear()

    @staticmethod
    def _ack(conn: h2.connection.H2Connection, length: int, sid: int) -> None:
        if length:
            with contextlib.suppress(*H2_ERRORS):
                conn.acknowledge_received_data(length, sid)

    def _write(self) -> None:
        data = self.down.data_to_send()
        if data:
            self.writer.write(data)
        if self.up is not None and self.up_writer is not None:
            data = self.up.data_to_send()
            if data:
                self.up_writer.write(data)

    def _finish(self, st: _Stream, reason: str, verdict: str = "FORWARDED") -> None:
        if not st.reported:
            st.reported = True
            self._emit(st, verdict, reason)
        if st.uid is not None:
            self.by_uid.pop(st.uid, None)
        st.up_ended = st.client_ended = True
        st.to_up.clear()
        self._maybe_forget(st)

    def _maybe_forget(self, st: _Stream) -> None:
        if st.reported and st.client_ended and not st.to_down and not st.to_up:
            self.streams.pop(st.cid, None)

    def _emit(self, st: _Stream, verdict: str, reason: str) -> None:
        req = st.req
        self.ctx.emit(verdict, st.protocol, direction=st.decision.direction,
                      method=req.method, path=req.path, host=req.host, status=st.status,
                      started=st.started, grpc_status=st.grpc_status, reason=reason)
