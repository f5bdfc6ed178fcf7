"""HTTP/1.1 proxying: a verdict per request on one client connection.

Owns parsing client requests with ``httptools``, judging each one on its own (keep-alive
continues after a 403), forwarding allowed ones over ONE lazily-opened upstream
connection, relaying the response before the next request is handled (so pipelined
requests are answered in order), streaming bodies (chunked bodies are re-chunked; never
buffered whole), ``Expect: 100-continue`` (answered by the proxy), upgrades (spliced only
when allowed and the backend answers 101), malformed requests (400 and close) and the
idle / header timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httptools

from policies.http_rules import Request
from proxy.context import ConnContext, apply_actions
from proxy.state import Decision

READ_SIZE = 65536


def simple_response(status: str, body: bytes, close: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n"
            "content-type: text/plain\r\n")
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


DENIED = simple_response("403 Forbidden", b"Access denied")
DENIED_CLOSE = simple_response("403 Forbidden", b"Access denied", close=True)
BAD_REQUEST = simple_response("400 Bad Request", b"Bad Request", close=True)
BAD_GATEWAY = simple_response("502 Bad Gateway", b"Bad Gateway", close=True)
TIMEOUT = simple_response("408 Request Timeout", b"Request Timeout", close=True)
GATEWAY_TIMEOUT = simple_response("504 Gateway Timeout", b"Gateway Timeout", close=True)


@dataclass
class _Head:
    method: str
    url: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    upgrade: bool


@dataclass
class _Current:
    head: _Head
    req: Request
    decision: Decision
    started: float
    chunked: bool = False
    failed: str | None = None
    flags: dict = field(default_factory=dict)


class _Collector:
    """httptools callbacks -> a queue of events handled by the (async) handler."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.parser: httptools.HttpRequestParser | None = None
        self.header_deadline: float | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self._url, self._headers = b"", []
        self.header_deadline = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((bytes(name), bytes(value)))

    def on_headers_complete(self) -> None:
        p = self.parser
        assert p is not None
        self.header_deadline = None
        self.events.append(("head", _Head(p.get_method().decode("latin-1"), self._url,
                                          p.get_http_version(), self._headers,
                                          p.should_keep_alive(), p.should_upgrade())))

    def on_body(self, body: bytes) -> None:
        self.events.append(("body", bytes(body)))

    def on_message_complete(self) -> None:
        self.events.append(("end",))


class _Close(Exception):
    """Stop serving this client connection."""


class Http1Handler:
    def __init__(self, ctx: ConnContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, initial: bytes) -> None:
        self.ctx = ctx
        self.reader, self.writer = reader, writer
        self.initial = initial
        self.col = _Collector()
        self.parser = httptools.HttpRequestParser(self.col)
        self.col.parser = self.parser
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.cur: _Current | None = None
        self.upgrade_rest: bytes | None = None
        self.up_state: dict = {}
        self.active = time.monotonic()  # last read from either side (idle timeout)
        self.timed_out: str | None = None
        self.awaiting: _Current | None = None  # forwarded, no response byte back yet
        self.relay_error: str | None = None

    async def run(self) -> None:
        serving = asyncio.ensure_future(self._serve())
        watchdog = asyncio.ensure_future(self._watchdog(serving))
        try:
            await serving
        except (_Close, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if self.timed_out is None:
                raise  # cancelled from outside (worker stopping)
            if self.timed_out == "header":
                self.ctx.emit("ERROR", "http", reason="request header timeout", status=408)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._send(TIMEOUT)
            elif self.awaiting is not None:  # the backend stayed silent: say so
                req = self.awaiting.req
                self.ctx.emit("ERROR", "http", direction=self.awaiting.decision.direction,
                              method=req.method, path=req.path, host=req.host, status=504,
                              started=self.awaiting.started,
                              reason="upstream did not answer within the idle timeout")
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._send(GATEWAY_TIMEOUT)
        finally:
            watchdog.cancel()
            self._close_upstream()

    async def _watchdog(self, serving: asyncio.Future) -> None:
        """One timer per connection instead of one per read: reads only note the time
        (``self.active``); this wakes at the nearest deadline and cancels the serving
        task when a header took too long or nothing moved for the idle timeout."""
        cfg = self.ctx.config
        while not serving.done():
            started = self.col.header_deadline
            if started is not None:
                deadline, kind = started + cfg.header_timeout, "header"
            else:
                deadline, kind = self.active + cfg.idle_timeout, "idle"
            now = time.monotonic()
            if now >= deadline:
                self.timed_out = kind
                serving.cancel()
                return
            await asyncio.sleep(deadline - now)

    async def _serve(self) -> None:
        data = self.initial
        while True:
            if data:
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade as exc:
                    self.upgrade_rest = data[exc.args[0]:]
                except httptools.HttpParserError as exc:
                    await self._process()
                    self.ctx.emit("ERROR", "http", reason=f"malformed request: {exc}",
                                  status=400)
                    await self._send(BAD_REQUEST)
                    return
                await self._process()
                if self.upgrade_rest is not None:
                    return  # an upgrade that was not spliced: the parser cannot go on
            data = await self.reader.read(READ_SIZE)
            self.active = time.monotonic()
            if not data:
                return

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _process(self) -> None:
        while self.col.events:
            event = self.col.events.pop(0)
            if event[0] == "head":
                await self._on_head(event[1])
            elif event[0] == "body":
                await self._on_body(event[1])
            else:
                await self._on_end()

    async def _on_head(self, head: _Head) -> None:
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in head.headers]
        host = next((v for n, v in headers if n == "host"), None)
        req = Request(head.method, head.url.decode("latin-1"), host, headers)
        cur = self.cur = _Current(head, req, self.ctx.judge(req), time.monotonic())
        cur.chunked = any(n == "transfer-encoding" and "chunked" in v.lower()
                          for n, v in headers)
        expect = any(n == "expect" and v.lower() == "100-continue" for n, v in headers)
        if not cur.decision.allowed:
            if expect or head.upgrade:
                # the client waits for 100 / cannot continue after a refused upgrade
                self._emit_denied(cur)
                await self._send(DENIED_CLOSE)
                raise _Close
            return
        try:
            await self._ensure_upstream()
        except (OSError, TimeoutError) as exc:
            cur.failed = f"upstream connect failed: {exc!r}"
            return
        raw = apply_actions(list(head.headers), cur.decision.actions)
        if expect:
            raw = [(n, v) for n, v in raw if n.lower() != b"expect"]
        out = [f"{head.method} ".encode("latin-1"), head.url,
               f" HTTP/{head.version}\r\n".encode()]
        for n, v in raw:
            out += [n, b": ", v, b"\r\n"]
        out.append(b"\r\n")
        assert self.up_writer is not None
        self.up_writer.write(b"".join(out))
        await self.up_writer.drain()
        if expect:
            await self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _on_body(self, data: bytes) -> None:
        cur = self.cur
        if cur is None or not cur.decision.allowed or cur.failed or self.up_writer is None:
            return
        if cur.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.up_writer.write(data)
        await self.up_writer.drain()

    async def _on_end(self) -> None:
        cur = self.cur
        if cur is None:
            return
        self.cur = None
        req = cur.req
        if not cur.decision.allowed:
            self._emit_denied(cur)
            await self._send(DENIED if cur.head.keep_alive else DENIED_CLOSE)
            if not cur.head.keep_alive:
                raise _Close
            return
        if cur.failed:
            self.ctx.emit("ERROR", "http", direction=cur.decision.direction,
                          method=req.method, path=req.path, host=req.host, status=502,
                          started=cur.started, reason=cur.failed)
            await self._send(BAD_GATEWAY)
            raise _Close
        assert self.up_writer is not None
        if cur.chunked:
            self.up_writer.write(b"0\r\n\r\n")
            await self.up_writer.drain()
        self.awaiting = cur
        status, keep_alive, upgraded = await self._relay_response(req.method == "HEAD")
        self.awaiting = None
        error, self.relay_error = self.relay_error, None
        self.ctx.emit("ERROR" if error else "FORWARDED", "http",
                      direction=cur.decision.direction, method=req.method, path=req.path,
                      host=req.host, status=status, started=cur.started,
                      reason=error or cur.decision.reason)
        if upgraded and cur.head.upgrade:
            await self._splice(self.upgrade_rest or b"")
            raise _Close
        if not keep_alive:
            self._close_upstream()
            raise _Close
        if not cur.head.keep_alive:
            raise _Close

    def _emit_denied(self, cur: _Current) -> None:
        req = cur.req
        self.ctx.emit("DENIED", "http", direction=cur.decision.direction, method=req.method,
                      path=req.path, host=req.host, status=403, started=cur.started,
                      reason=cur.decision.reason)

    async def _relay_response(self, head_only: bool) -> tuple[int | None, bool, bool]:
        """Forward one final response. Returns (status, keep-alive, upgraded)."""
        assert self.up_reader is not None
        # one response parser per upstream connection: responses follow each other on it
        state, parser = self.up_state, self.up_state["parser"]
        state.update(status=None, done=False, keep=False)
        buf = b""
        forwarded = False
        while True:
            data = await self.up_reader.read(READ_SIZE)  # the watchdog bounds the wait
            self.active = time.monotonic()
            self.awaiting = None
            if not data:
                self._close_upstream()
                if not forwarded:
                    self.relay_error = "upstream closed before responding"
                    await self._send(BAD_GATEWAY)
                    return 502, False, False
                return state["status"], False, False
            forwarded = True
            if head_only:
                buf += data
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    head, buf = buf[:end + 4], buf[end + 4:]
                    await self._send(head)
                    status = int(head.split(b" ", 2)[1])
                    if status >= 200:
                        keep = b"connection: close" not in head.lower()
                        return status, keep, False
                continue
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                await self._send(data)
                return state["status"], False, True
            except httptools.HttpParserError:
                await self._send(data)
                self._close_upstream()
                return state["status"], False, False
            await self._send(data)
            if state["done"]:
                return state["status"], state["keep"], False

    async def _ensure_upstream(self) -> None:
        if self.up_writer is None or self.up_writer.is_closing():
            self.up_reader, self.up_writer = await self.ctx.open_upstream()
            self.up_state = {"status": None, "done": False, "keep": False}
            self.up_state["parser"] = httptools.HttpResponseParser(_RespCollector(self.up_state))

    def _close_upstream(self) -> None:
        if self.up_writer is not None:
            self.up_writer.close()
        self.up_reader = self.up_writer = None

    async def _splice(self, rest: bytes) -> None:
        up_r, up_w = self.up_reader, self.up_writer
        assert up_r is not None and up_w is not None
        if rest:
            up_w.write(rest)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(READ_SIZE):
                    self.active = time.monotonic()
                    w.write(data)
                    await w.drain()
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    if w.can_write_eof():
                        w.write_eof()

        await asyncio.gather(pipe(self.reader, up_w), pipe(up_r, self.writer),
                             return_exceptions=True)


class _RespCollector:
    def __init__(self, state: dict) -> None:
        self.state = state

    def on_headers_complete(self) -> None:
        self.state["status"] = self.state["parser"].get_status_code()

    def on_message_complete(self) -> None:
        parser = self.state["parser"]
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim response: the final one follows
        self.state["done"] = True
        self.state["keep"] = parser.should_keep_alive()
