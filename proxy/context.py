"""Per-connection context shared by the HTTP/1 and HTTP/2 handlers.

Owns: the worker configuration (:class:`Config`), who the connection is (client
address, original destination), judging a request against the current state,
emitting its event, and opening the upstream socket to the original destination with
``SO_MARK = (source identity << 8) | 0xA5`` (a node-local identity: 0xA8/0xA9, its scope).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from policies.http_rules import Action, Request
from policies.kafka_rules import KafkaRequest
from policies.tls_rules import SniQuery
from proxy.events import EventEmitter, make_event
from proxy.state import Decision, StateLoader, normalize_ip

MARK_MAGIC = 0xA5
SO_MARK = getattr(socket, "SO_MARK", 36)


# node-local identities (CIDR scope 1, node scope 2) do not fit in the mark's 24 bits:
# their scope goes into the magic byte (datapath/bpf/lib/proxy.h)
SCOPE_MAGIC = {0x01000000: 0xA8, 0x02000000: 0xA9}


def upstream_mark(identity: int) -> int:
    magic = SCOPE_MAGIC.get(identity & 0xFF000000, MARK_MAGIC)
    if identity > 0xFFFFFF and magic == MARK_MAGIC:
        identity, magic = 2, MARK_MAGIC  # no such identity: judged as world
    return (((identity & 0xFFFFFF) << 8) | magic) & 0xFFFFFFFF


@dataclass
class Config:
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    connect_timeout: float = 5.0
    upstream_mark: bool = True
    kafka_max_frame: int = 104857600  # Kafka's own socket.request.max.bytes default
    test_upstream: tuple[str, int] | None = None  # TEST ONLY: replaces the original dst
    dns_timeout: float = 5.0  # the resolver's answer to a forwarded query
    fqdn_socket: str | None = None  # the agent's socket for addresses learnt from DNS
    fqdn_wait: float = 1.0  # how long an answer waits for the agent to allow its addresses


class ConnContext:
    """One accepted client connection."""

    def __init__(self, src: tuple[str, int], dst: tuple[str, int], loader: StateLoader,
                 events: EventEmitter, config: Config) -> None:
        self.src = (normalize_ip(src[0]), src[1])
        self.dst = (normalize_ip(dst[0]), dst[1])
        self.loader = loader
        self.events = events
        self.config = config
        self._described: tuple[object, tuple[dict, dict]] | None = None  # per state
        self._needs_topics: tuple[object, bool] | None = None  # per state

    def judge(self, req: Request | KafkaRequest | SniQuery) -> Decision:
        return self.loader.evaluate(self.src[0], self.dst[0], self.dst[1], req)

    def parser(self) -> str | None:
        """The L7 protocol policy expects on this connection (None: no state/policy)."""
        state = self.loader.current()
        return state.parser(self.src[0], self.dst[0], self.dst[1]) if state else None

    def kafka_needs_topics(self) -> bool:
        """Whether a rule on this connection names topics (then bodies are decoded);
        computed once per state revision."""
        state = self.loader.current()
        if self._needs_topics is None or self._needs_topics[0] is not state:
            # no state: nothing is allowed anyway; say yes so nothing is judged half-read
            needs = state.kafka_needs_topics(self.src[0], self.dst[0], self.dst[1]) \
                if state is not None else True
            self._needs_topics = (state, needs)
        return self._needs_topics[1]

    def source_identity(self) -> int:
        state = self.loader.current()
        return state.identity(self.src[0]) if state is not None else 2

    def endpoints(self) -> tuple[dict, dict]:
        """Both sides as events show them, computed once per state revision."""
        state = self.loader.current()
        if self._described is not None and self._described[0] is state:
            return self._described[1]
        self._described = (state, self._describe(state))
        return self._described[1]

    def _describe(self, state) -> tuple[dict, dict]:
        if state is None:
            return ({"ip": self.src[0], "port": self.src[1], "identity": None, "labels": [],
                     "name": None},
                    {"ip": self.dst[0], "port": self.dst[1], "identity": None, "labels": [],
                     "name": None})
        return state.describe(*self.src), state.describe(*self.dst)

    def emit(self, verdict: str, protocol: str, *, direction: str = "ingress",
             method: str | None = None, path: str | None = None, host: str | None = None,
             status: int | None = None, started: float | None = None,
             grpc_status: int | None = None, reason: str = "",
             kafka: dict | None = None, dns: dict | None = None,
             tls: dict | None = None) -> None:
        src, dst = self.endpoints()
        latency = None if started is None else (time.monotonic() - started) * 1000
        self.events.emit(make_event(
            verdict=verdict, protocol=protocol, direction=direction, src=src, dst=dst,
            method=method, path=path, host=host, status=status, latency_ms=latency,
            grpc_status=grpc_status, reason=reason, kafka=kafka, dns=dns, tls=tls))

    async def open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.dst
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.config.upstream_mark:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK,
                                upstream_mark(self.source_identity()))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)),
                                   self.config.connect_timeout)
            return await asyncio.open_connection(sock=sock, limit=1 << 20)
        except BaseException:
            sock.close()
            raise


def apply_actions(headers: list[tuple[bytes, bytes]],
                  actions: list[Action]) -> list[tuple[bytes, bytes]]:
    """Apply ADD/DELETE/REPLACE header actions to a raw header list (LOG is a no-op)."""
    for action in actions:
        name = action.name.encode("latin-1")
        value = (action.value or "").encode("latin-1")
        if action.kind == "ADD":
            headers.append((name, value))
        elif action.kind == "DELETE":
            headers = [(n, v) for n, v in headers if n.lower() != name]
        elif action.kind == "REPLACE":
            headers = [(n, v) for n, v in headers if n.lower() != name]
            headers.append((name, value))
    return headers
