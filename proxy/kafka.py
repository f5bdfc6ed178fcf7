"""Kafka proxying: a verdict per request on one client connection.

Owns reading the client's request frames (refusing one larger than the configured
bound before reading its body, closing on a malformed one), judging each request on
its own (api key, version, client id, and its topics when a rule names topics),
forwarding allowed ones over ONE lazily opened upstream connection, answering denied
ones itself with the request's own response type (the broker never sees them), and
keeping responses in request order: Kafka clients match responses to requests by
position (kafka-python raises on a correlation id out of order), so a local answer
waits in one FIFO behind the broker's answers to earlier requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass

from policies.kafka_rules import KafkaRequest, api_key_name
from proxy import kafka_answers as answers
from proxy import kafka_codec as codec
from proxy.context import ConnContext
from proxy.state import Decision

MAX_IN_FLIGHT = 512  # requests awaiting their answer per connection (then reading pauses)
MAX_RESPONSE = 1 << 30  # a broker answer beyond this is treated as a broken stream
# Kafka connections idle for minutes (clients keep them; brokers close them after
# connections.max.idle.ms, 10 minutes) and a JoinGroup may wait for a rebalance (up to
# the 5-minute default rebalance timeout): the HTTP idle timeout would cut both.
IDLE_TIMEOUT = 600.0
_SIZE = struct.Struct(">i")


@dataclass
class _Pending:
    header: codec.Header
    started: float
    kafka: dict
    direction: str
    reason: str
    local: bytes | None = None  # our own answer (denied); None: the broker's
    denied_topics: tuple[str, ...] | None = None  # a Metadata answer to rewrite: denied


class KafkaHandler:
    def __init__(self, ctx: ConnContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, max_frame: int) -> None:
        self.ctx, self.reader, self.writer = ctx, reader, writer
        self.max_frame = max_frame
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.pending: asyncio.Queue[_Pending | None] = asyncio.Queue(MAX_IN_FLIGHT)
        self.closed = False

    async def run(self) -> None:
        responder = asyncio.create_task(self._respond())
        try:
            while not self.closed:
                frame = await self._read_request()
                if frame is None:
                    break
                if not await self._handle(frame):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            if responder.done():
                self.closed = True
            else:
                await self.pending.put(None)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(responder, IDLE_TIMEOUT)
            responder.cancel()
            if self.up_writer is not None:
                with contextlib.suppress(Exception):
                    self.up_writer.close()

    # --- client side -----------------------------------------------------------------

    async def _read_request(self) -> bytes | None:
        try:
            head = await asyncio.wait_for(self.reader.readexactly(4),
                                          IDLE_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        (size,) = _SIZE.unpack(head)
        if size < 10 or size > self.max_frame:
            what = (f"a {size}-byte frame exceeds the limit of {self.max_frame} bytes"
                    if size > self.max_frame else f"invalid frame size {size}")
            self._error(what)  # refused before reading (or buffering) its body
            return None
        return await asyncio.wait_for(self.reader.readexactly(size),
                                      self.ctx.config.header_timeout + size / 1e6)

    def _error(self, reason: str, header: codec.Header | None = None) -> None:
        self.ctx.emit("ERROR", "kafka", kafka=_fields(header, None, None), reason=reason)

    async def _handle(self, frame: bytes) -> bool:
        """Judge and dispatch one request; False: close the connection."""
        started = time.monotonic()
        try:
            header = codec.parse_header(frame)
        except codec.KafkaCodecError as exc:
            self._error(f"malformed request: {exc}")
            return False
        obj = None
        topics: tuple[str, ...] | None = None
        names, ids = codec.topic_shape(header.api_key, header.api_version)
        if (names or ids) and self.ctx.kafka_needs_topics():
            # only when a rule names topics is the body decoded
            try:
                obj = codec.decode_request(header, frame)
            except codec.KafkaCodecError as exc:
                self._error(f"malformed request: {exc}", header)
                return False
            found, by_id = codec.topics_of(obj, header.api_version)
            if by_id:
                return await self._deny(header, frame, obj, started, None, Decision(
                    False, "topics named by id cannot be judged against topic rules",
                    "ingress"))
            topics = tuple(found)
        elif self.ctx.kafka_needs_topics() and not codec.known(header.api_key,
                                                               header.api_version):
            return await self._deny(header, frame, None, started, None, Decision(
                False, f"{api_key_name(header.api_key)} v{header.api_version} is not in "
                "the protocol specification this proxy reads", "ingress"))
        req = KafkaRequest(header.api_key, header.api_version, header.client_id, topics)
        decision = self.ctx.judge(req)
        if not decision.allowed:
            return await self._deny(header, frame, obj, started, topics, decision)
        if not await self._forward(frame, header):
            return False
        info = _fields(header, topics, None)
        if codec.expects_answer(header, frame):
            await self.pending.put(_Pending(header, started, info, decision.direction,
                                            decision.reason))
        else:  # acks=0: the broker will not answer; the verdict is all there is
            self.ctx.emit("FORWARDED", "kafka", direction=decision.direction, kafka=info,
                          started=started, reason=decision.reason)
        return True

    async def _deny(self, header: codec.Header, frame: bytes, obj, started: float,
                    topics: tuple[str, ...] | None, decision: Decision) -> bool:
        if obj is None and codec.known(header.api_key, header.api_version):
            with contextlib.suppress(codec.KafkaCodecError):  # to name its topics back
                obj = codec.decode_request(header, frame)
        if topics is None and obj is not None:
            topics = tuple(codec.topics_of(obj, header.api_version)[0]) or None
        code = answers.error_code_for(header.api_key, bool(topics))
        info = _fields(header, topics, code)
        if not codec.expects_answer(header, frame):
            self.ctx.emit("DENIED", "kafka", direction=decision.direction, kafka=info,
                          started=started, reason=decision.reason)
            return True
        probe = answers.brokers_only_request(header, obj) if topics else None
        if probe is not None:  # see kafka_codec: a Metadata answer needs the brokers
            if not await self._forward(probe[4:], header):
                return False
            await self.pending.put(_Pending(header, started, info, decision.direction,
                                            decision.reason, denied_topics=topics))
            return True
        try:
            answer = answers.error_response(header, obj, code)
        except codec.KafkaCodecError as exc:
            self.ctx.emit("DENIED", "kafka", direction=decision.direction, kafka=info,
                          started=started,
                          reason=f"{decision.reason}; connection closed: {exc}")
            return False
        await self.pending.put(_Pending(header, started, info, decision.direction,
                                        decision.reason, local=answer))
        return True

    async def _forward(self, frame: bytes, header: codec.Header) -> bool:
        if self.up_writer is None:
            try:
                self.up_reader, self.up_writer = await self.ctx.open_upstream()
            except (OSError, TimeoutError) as exc:
                self._error(f"upstream {self.ctx.dst[0]}:{self.ctx.dst[1]}: {exc}", header)
                return False
        self.up_writer.write(_SIZE.pack(len(frame)))
        self.up_writer.write(frame)
        await self.up_writer.drain()
        return True

    # --- answers, in request order ---------------------------------------------------

    async def _respond(self) -> None:
        try:
            while True:
                item = await self.pending.get()
                if item is None:
                    return
                if item.local is not None:
                    self.writer.write(item.local)
                    await self.writer.drain()
                    self.ctx.emit("DENIED", "kafka", direction=item.direction,
                                  kafka=item.kafka, started=item.started,
                                  reason=item.reason)
                    continue
                answer = await self._read_answer(item.header)
                if answer is None:
                    break
                verdict = "FORWARDED"
                if item.denied_topics is not None:
                    verdict = "DENIED"
                    answer = answers.metadata_denied(answer, item.header.api_version,
                                                   item.denied_topics,
                                                   item.kafka["error_code"])
                self.writer.write(answer)
                await self.writer.drain()
                self.ctx.emit(verdict, "kafka", direction=item.direction,
                              kafka=item.kafka, started=item.started, reason=item.reason)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, TimeoutError):
            pass
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()  # the client sees the broker's connection end

    async def _read_answer(self, header: codec.Header) -> bytes | None:
        assert self.up_reader is not None
        head = await asyncio.wait_for(self.up_reader.readexactly(4),
                                      IDLE_TIMEOUT)
        (size,) = _SIZE.unpack(head)
        if not 4 <= size <= MAX_RESPONSE:
            self._error(f"broker sent an invalid {size}-byte frame", header)
            return None
        body = await self.up_reader.readexactly(size)
        (correlation,) = _SIZE.unpack_from(body, 0)
        if correlation != header.correlation_id:
            self._error(f"broker answered correlation id {correlation}, expected "
                        f"{header.correlation_id}", header)
            return None
        answer = head + body
        if header.api_key == codec.API_VERSIONS:
            answer = answers.clamp_api_versions(answer, header.api_version)
        return answer


def _fields(header: codec.Header | None, topics: tuple[str, ...] | None,
            error_code: int | None) -> dict:
    if header is None:
        return {"api_key": None, "api_version": None, "correlation_id": None,
                "client_id": None, "topics": [], "error_code": error_code}
    return {"api_key": api_key_name(header.api_key), "api_version": header.api_version,
            "correlation_id": header.correlation_id, "client_id": header.client_id,
            "topics": sorted(set(topics or ()))[:64], "error_code": error_code}
