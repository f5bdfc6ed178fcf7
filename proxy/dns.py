"""DNS proxying: a verdict per query, over UDP and TCP, for ports with ``rules.dns``.

Owns: the transparent UDP listeners (``IP_TRANSPARENT`` + ``IP_RECVORIGDSTADDR``: the
datapath hands a container's query to this socket with ``bpf_sk_assign``, and the
kernel tells the resolver it was sent to), answering from that resolver's address (a
transparent socket bound to it, so the client's socket accepts the answer), judging
each question by name (``policies.fqdn``), answering a denied one ``REFUSED`` itself
(the resolver never sees it), forwarding an allowed one to the original resolver
(marked with the client's identity) and relaying its answer, TCP DNS (length-prefixed
messages on a redirected connection), the L7 event of each query (name, type, rcode,
addresses, TTL) and telling the agent which addresses an answer gave (``FqdnLearner``)
BEFORE the client sees it, so its next connection to them meets the new policy.

Fail closed: a query that does not parse is dropped (an ERROR event says why); without
state every query is REFUSED; an unanswered forward gets SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import orjson

from policies.fqdn import DnsQuery
from proxy.context import SO_MARK, Config, ConnContext, upstream_mark
from proxy.events import EventEmitter
from proxy.state import StateLoader, normalize_ip

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
IP_RECVORIGDSTADDR = 20  # also IP_ORIGDSTADDR, the control message's type
IPV6_RECVORIGDSTADDR = 74
MAX_REPLY_SOCKETS = 256
Forward = Callable[[bytes], Awaitable[bytes]]


def answer_addresses(response: dns.message.Message) -> tuple[list[str], int | None, list[str]]:
    """(addresses, lowest TTL, CNAME targets) of an answer's A/AAAA/CNAME records."""
    ips: list[str] = []
    ttls: list[int] = []
    cnames: list[str] = []
    for rrset in response.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            ips += [rdata.address for rdata in rrset]
            ttls.append(rrset.ttl)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            cnames += [rdata.target.to_text() for rdata in rrset]
    return ips, min(ttls) if ttls else None, cnames


def local_answer(query: dns.message.Message, rcode: int) -> bytes:
    """Our own answer to ``query``: no records, ``rcode`` (REFUSED, SERVFAIL)."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.flags |= dns.flags.RA
    return response.to_wire()


class FqdnLearner:
    """Tells the agent what an allowed answer resolved (a JSON line on its unix stream
    socket) and waits, at most ``wait`` seconds, for its ``ok``: the agent has then
    written the identities of those addresses into the datapath. Without a socket
    (no agent, the integration tests) it says nothing."""

    def __init__(self, path: str | None, wait: float) -> None:
        self.path, self.wait = path, wait
        self.failures = 0

    async def learn(self, endpoint: str, name: str, ips: list[str], ttl: int) -> bool:
        if not self.path or not ips:
            return False
        writer = None
        try:
            async with asyncio.timeout(self.wait):
                reader, writer = await asyncio.open_unix_connection(self.path)
                writer.write(orjson.dumps({"endpoint": endpoint, "name": name, "ips": ips,
                                           "ttl": ttl}) + b"\n")
                await writer.drain()
                return (await reader.readline()).strip() == b"ok"
        except (OSError, TimeoutError):
            self.failures += 1
            return False
        finally:
            if writer is not None:
                writer.close()


class DnsService:
    """Judges one query and produces the answer the client gets (None: none)."""

    def __init__(self, loader: StateLoader, events: EventEmitter, config: Config,
                 learner: FqdnLearner) -> None:
        self.loader, self.events, self.config, self.learner = loader, events, config, learner

    async def handle(self, ctx: ConnContext, wire: bytes, forward: Forward,
                     transport: str) -> bytes | None:
        started = time.monotonic()
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError) as exc:
            ctx.emit("ERROR", "dns", direction="egress", started=started,
                     reason=f"malformed DNS query: {exc}")
            return None
        if len(query.question) != 1:
            ctx.emit("DENIED", "dns", direction="egress", started=started,
                     reason=f"{len(query.question)} questions in one query",
                     dns=_record("", "", "REFUSED", transport))
            return local_answer(query, dns.rcode.REFUSED)
        question = query.question[0]
        name = question.name.to_text().lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        decision = ctx.judge(DnsQuery(name, qtype))
        if not decision.allowed:
            ctx.emit("DENIED", "dns", direction="egress", started=started,
                     reason=decision.reason, dns=_record(name, qtype, "REFUSED", transport))
            return local_answer(query, dns.rcode.REFUSED)
        try:
            raw = await asyncio.wait_for(forward(wire), self.config.dns_timeout)
            response = dns.message.from_wire(raw)
        except (OSError, TimeoutError, EOFError, dns.exception.DNSException, ValueError) as exc:
            ctx.emit("ERROR", "dns", direction="egress", started=started,
                     reason=f"the resolver {ctx.dst[0]}:{ctx.dst[1]} did not answer: "
                            f"{exc or type(exc).__name__}",
                     dns=_record(name, qtype, "SERVFAIL", transport))
            return local_answer(query, dns.rcode.SERVFAIL)
        ips, ttl, cnames = answer_addresses(response)
        if ips and ttl is not None:
            await self.learner.learn(ctx.src[0], name, ips, ttl)
        rcode = dns.rcode.to_text(response.rcode())
        ctx.emit("FORWARDED", "dns", direction="egress", started=started,
                 dns=_record(name, qtype, rcode, transport, ips, ttl, cnames))
        return raw


def _record(name: str, qtype: str, rcode: str, transport: str, ips: list[str] | None = None,
            ttl: int | None = None, cnames: list[str] | None = None) -> dict:
    return {"query": name, "qtype": qtype, "rcode": rcode, "ips": ips or [], "ttl": ttl,
            "cnames": cnames or [], "transport": transport}


def make_udp_listeners(port: int, binds: list[str] | None) -> list[socket.socket]:
    """Transparent UDP sockets on ``port`` (every worker binds them: SO_REUSEPORT)."""
    socks = []
    for addr in binds or ["0.0.0.0", "::"]:
        v6 = ":" in addr
        try:
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            if v6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
            else:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        except PermissionError:
            print("proxy: IP_TRANSPARENT needs CAP_NET_ADMIN; DNS answers come from the "
                  "proxy's own address", file=sys.stderr)
        try:
            s.bind((addr, port))
        except OSError as exc:
            s.close()
            if v6 and binds is None:
                continue
            raise SystemExit(f"proxy: cannot listen on {addr}:{port}/udp: {exc}") from exc
        s.setblocking(False)
        socks.append(s)
    return socks


def original_destination(ancdata: list) -> tuple[str, int] | None:
    """The address a redirected datagram was sent to (IP_ORIGDSTADDR)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR and len(data) >= 8:
            port = struct.unpack_from("!H", data, 2)[0]
            return socket.inet_ntop(socket.AF_INET, data[4:8]), port
        if level == socket.IPPROTO_IPV6 and kind == IPV6_RECVORIGDSTADDR and len(data) >= 24:
            port = struct.unpack_from("!H", data, 2)[0]
            return normalize_ip(socket.inet_ntop(socket.AF_INET6, data[8:24])), port
    return None


class UdpServer:
    """Reads queries from one listening socket and answers each from the address the
    client sent it to."""

    def __init__(self, sock: socket.socket, service: DnsService) -> None:
        self.sock, self.service = sock, service
        self.local = sock.getsockname()[:2]
        self.replies: dict[tuple[str, int], socket.socket] = {}
        self.tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for sock in self.replies.values():
            sock.close()

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            dst = original_destination(ancdata) or self.local
            task = asyncio.ensure_future(self._serve(data, addr[:2], dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, data: bytes, client: tuple[str, int], dst: tuple[str, int]) -> None:
        config = self.service.config
        upstream = config.test_upstream or dst
        ctx = ConnContext(client, upstream, self.service.loader, self.service.events, config)

        async def forward(wire: bytes) -> bytes:
            return await udp_exchange(upstream, wire, ctx.source_identity(), config)

        reply = await self.service.handle(ctx, data, forward, "udp")
        if reply is not None:
            with contextlib.suppress(OSError):
                self._reply_socket(dst).sendto(reply, client)

    def _reply_socket(self, dst: tuple[str, int]) -> socket.socket:
        """The listener itself for a query sent to it, else a transparent socket bound to
        the resolver's address the client sent its query to."""
        dst = (normalize_ip(dst[0]), dst[1])
        if dst == (normalize_ip(self.local[0]), self.local[1]):
            return self.sock
        sock = self.replies.get(dst)
        if sock is None:
            if len(self.replies) >= MAX_REPLY_SOCKETS:
                for old in self.replies.values():
                    old.close()
                self.replies.clear()
            v6 = ipaddress.ip_address(dst[0]).version == 6
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind(dst)
            sock.setblocking(False)
            self.replies[dst] = sock
        return sock


async def udp_exchange(upstream: tuple[str, int], wire: bytes, identity: int,
                       config: Config) -> bytes:
    """One query to the resolver from a socket of its own (marked with the client's
    identity); the first datagram from the resolver with the query's ID is its answer."""
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if config.upstream_mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, upstream_mark(identity))
        sock.setblocking(False)
        sock.connect(upstream)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, wire)
        while True:  # only an answer with the query's ID (the caller bounds the wait)
            answer = await loop.sock_recv(sock, 65535)
            if answer[:2] == wire[:2]:
                return answer
    finally:
        sock.close()


class DnsTcpHandler:
    """DNS over one redirected TCP connection: length-prefixed queries, each judged; the
    allowed ones go over one upstream connection, in order."""

    def __init__(self, ctx: ConnContext, service: DnsService, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.ctx, self.service, self.reader, self.writer = ctx, service, reader, writer
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(self.reader.readexactly(2),
                                                  self.service.config.idle_timeout)
                    wire = await asyncio.wait_for(
                        self.reader.readexactly(struct.unpack("!H", head)[0]),
                        self.service.config.header_timeout)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return
                reply = await self.service.handle(self.ctx, wire, self._forward, "tcp")
                if reply is None:
                    return  # malformed: close, as a resolver would
                self.writer.write(struct.pack("!H", len(reply)) + reply)
                await self.writer.drain()
        finally:
            if self.upstream is not None:
                self.upstream[1].close()

    async def _forward(self, wire: bytes) -> bytes:
        if self.upstream is None:
            self.upstream = await self.ctx.open_upstream()
        reader, writer = self.upstream
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            answer = await reader.readexactly(size)
            if answer[:2] != wire[:2]:
                raise ConnectionError("the resolver answered another query")
            return answer
        except BaseException:
            # timed out or broken: a late answer on this connection would be read as
            # the next query's (and its addresses learnt under the wrong name)
            writer.close()
            self.upstream = None
            raise
