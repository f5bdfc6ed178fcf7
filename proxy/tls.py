"""TLS server-name (SNI) enforcement: a verdict per connection, TLS never terminated.

Owns one redirected connection on a port whose policy has ``serverNames``: reading the
client's first bytes until the ClientHello is complete (``proxy/tls_hello.py``; bounded
in size and by the header timeout), judging its server name, then either splicing the
connection through unchanged to the original destination (the bytes already read
first) or resetting it without ever connecting upstream. Every verdict is one L7 event
(protocol ``tls``) carrying the server name.

A connection whose peer a rule allows on the port at L3/L4 only is spliced at once,
unread (allows are a union): it need not be TLS at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from policies.tls_rules import SniQuery
from proxy.context import ConnContext
from proxy.state import Decision
from proxy.tls_hello import MAX_HELLO, HelloError, parse

# Envoy's tcp_proxy default: a spliced connection silent both ways this long is closed
SPLICE_IDLE = 3600.0
CHUNK = 65536


class TlsHandler:
    def __init__(self, ctx: ConnContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.ctx, self.reader, self.writer = ctx, reader, writer
        self.started = time.monotonic()
        self.last = self.started  # last byte either way (the splice's idle clock)

    async def run(self) -> None:
        first = self.ctx.judge(SniQuery(None, hello=False))
        if first.allowed:  # no serverNames apply to this peer: nothing to read
            await self._forward(b"", None, first)
            return
        try:
            data, hello_name = await self._read_hello()
        except HelloError as exc:
            self._reset("DENIED", None, f"{first.direction}: {exc}", first.direction)
            return
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            what = ("no complete ClientHello within "
                    f"{self.ctx.config.header_timeout:g} s" if isinstance(exc, TimeoutError)
                    else "the client closed before its ClientHello was complete")
            self._reset("ERROR", None, what, first.direction)
            return
        decision = self.ctx.judge(SniQuery(hello_name))
        if not decision.allowed:
            self._reset("DENIED", hello_name, decision.reason, decision.direction)
            return
        await self._forward(data, hello_name, decision)

    async def _read_hello(self) -> tuple[bytes, str | None]:
        data = b""
        deadline = self.started + self.ctx.config.header_timeout
        while True:
            chunk = await asyncio.wait_for(self.reader.read(CHUNK),
                                           deadline - time.monotonic())
            if not chunk:
                raise asyncio.IncompleteReadError(data, None)
            data += chunk
            hello = parse(data)
            if hello is not None:
                return data, hello.server_name
            if len(data) > 6 * MAX_HELLO:  # tiny records: 5 header bytes per byte of hello
                raise HelloError(f"no ClientHello in the first {len(data)} bytes")

    def _event(self, verdict: str, name: str | None, reason: str, direction: str) -> None:
        self.ctx.emit(verdict, "tls", direction=direction, started=self.started,
                      reason=reason, tls={"sni": name})

    def _reset(self, verdict: str, name: str | None, reason: str, direction: str) -> None:
        """The client gets a TCP reset; nothing was (or will be) sent upstream."""
        self._event(verdict, name, reason, direction)
        abort(self.writer)

    async def _forward(self, data: bytes, name: str | None, decision: Decision) -> None:
        try:
            up_reader, up_writer = await self.ctx.open_upstream()
        except (OSError, TimeoutError) as exc:
            self._reset("ERROR", name, f"upstream {self.ctx.dst[0]}:{self.ctx.dst[1]}: "
                        f"{exc or type(exc).__name__}", decision.direction)
            return
        self._event("FORWARDED", name, decision.reason, decision.direction)
        try:
            if data:
                up_writer.write(data)
            pumps = [asyncio.create_task(self._pump(self.reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, self.writer))]
            watchdog = asyncio.create_task(self._idle(pumps))
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            watchdog.cancel()
            failed = [t for t in done if t.cancelled() or t.exception() is not None]
            if failed:
                # one side reset (or went idle): the other side learns it the same way
                for task in pumps:
                    task.cancel()
                abort(self.writer)
                abort(up_writer)
                return
            for task in pumps:
                await task
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copies until end of stream, then half-closes ``sink`` (TLS close_notify and
        the server's last bytes still travel the other way)."""
        while True:
            chunk = await source.read(CHUNK)
            if not chunk:
                if sink.can_write_eof():
                    with contextlib.suppress(OSError):
                        sink.write_eof()
                return
            self.last = time.monotonic()
            sink.write(chunk)
            await sink.drain()

    async def _idle(self, pumps: list[asyncio.Task]) -> None:
        while True:
            await asyncio.sleep(min(SPLICE_IDLE, 30.0))
            if time.monotonic() - self.last > SPLICE_IDLE:
                for task in pumps:
                    task.cancel()
                return


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN: the peer must not mistake a
    refusal for a clean end of stream."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
