"""The proxy process: command line, supervisor and asyncio workers.

Owns: the command line (``python -m proxy``), the parent that starts N worker processes
and restarts any that dies, and the worker itself: transparent listening sockets
(``SO_REUSEPORT`` + ``IP_TRANSPARENT``; IPv4 ``0.0.0.0:P`` and IPv6 ``[::]:P`` with
``IPV6_V6ONLY``) shared by all workers, the original destination of an accepted
connection (``getsockname()``, because the datapath redirects with ``bpf_sk_assign``),
and choosing the protocol handler: Kafka, DNS (over TCP) or TLS (``serverNames``) when
the port's L7 policy says so, otherwise HTTP/2 (client preface) or HTTP/1 from the
first bytes. The same
port number also takes redirected DNS over UDP (``proxy/dns.py``).

``--test-upstream HOST:PORT`` is TEST-ONLY: it replaces the original destination (for
the upstream connection AND the policy lookup), because without the BPF redirect a
loopback connection's ``getsockname()`` is the proxy itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time

from proxy.context import Config, ConnContext
from proxy.dns import DnsService, DnsTcpHandler, FqdnLearner, UdpServer, make_udp_listeners
from proxy.events import DEFAULT_EVENTS_PATH, EventEmitter
from proxy.http1 import Http1Handler
from proxy.http2 import PREFACE, Http2Handler
from proxy.kafka import KafkaHandler
from proxy.state import DEFAULT_STATE_PATH, StateLoader
from proxy.tls import TlsHandler

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxy",
                                description="ciliumpy transparent L7 (HTTP/gRPC/Kafka) proxy")
    p.add_argument("--port", type=int, required=True, help="transparent listening port")
    p.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="listen address (repeatable; default 0.0.0.0 and ::)")
    p.add_argument("--state", default=DEFAULT_STATE_PATH, help="proxy state file (JSON)")
    p.add_argument("--events", default=DEFAULT_EVENTS_PATH, help="L7 event datagram socket")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes (0: serve in this process, no supervisor)")
    p.add_argument("--upstream-mark", action=argparse.BooleanOptionalAction, default=True,
                   help="set SO_MARK=(identity<<8)|0xA5 on upstream sockets")
    p.add_argument("--idle-timeout", type=float, default=60.0)
    p.add_argument("--header-timeout", type=float, default=10.0)
    p.add_argument("--kafka-max-frame", type=int, default=104857600,
                   help="largest Kafka request accepted, bytes (refused unread beyond)")
    p.add_argument("--dns-timeout", type=float, default=5.0,
                   help="seconds to wait for the resolver's answer (then SERVFAIL)")
    p.add_argument("--fqdn-socket", default=None,
                   help="the agent's socket told the addresses of every allowed DNS answer")
    p.add_argument("--fqdn-wait", type=float, default=1.0,
                   help="seconds an answer waits for the agent to allow its addresses")
    p.add_argument("--test-upstream", type=parse_hostport, default=None, metavar="HOST:PORT",
                   help="TEST ONLY: use HOST:PORT as the original destination")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def make_listeners(port: int, binds: list[str] | None) -> list[socket.socket]:
    socks = []
    for addr in binds or ["0.0.0.0", "::"]:
        v6 = ":" in addr
        try:
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            if v6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except PermissionError:
            print("proxy: IP_TRANSPARENT needs CAP_NET_ADMIN; listening non-transparently",
                  file=sys.stderr)
        try:
            s.bind((addr, port))
        except OSError as exc:
            s.close()
            if v6 and binds is None:
                continue
            raise SystemExit(f"proxy: cannot listen on {addr}:{port}: {exc}") from exc
        s.listen(1024)
        s.setblocking(False)
        socks.append(s)
    if not socks:
        raise SystemExit("proxy: no listening socket")
    return socks


async def read_preface(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Read until the bytes can no longer be (or fully are) the HTTP/2 preface."""
    buf = b""
    deadline = time.monotonic() + timeout
    while len(buf) < len(PREFACE) and PREFACE.startswith(buf):
        data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        if not data:
            break
        buf += data
    return buf


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loader = StateLoader(args.state)
        self.events = EventEmitter(args.events)
        self.config = Config(idle_timeout=args.idle_timeout,
                             header_timeout=args.header_timeout,
                             upstream_mark=args.upstream_mark,
                             kafka_max_frame=args.kafka_max_frame,
                             test_upstream=args.test_upstream,
                             dns_timeout=args.dns_timeout, fqdn_socket=args.fqdn_socket,
                             fqdn_wait=args.fqdn_wait)
        self.dns = DnsService(self.loader, self.events, self.config,
                              FqdnLearner(args.fqdn_socket, args.fqdn_wait))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            local = writer.get_extra_info("sockname")
            dst = self.config.test_upstream or (local[0], local[1])
            ctx = ConnContext((peer[0], peer[1]), dst, self.loader, self.events, self.config)
            parser = ctx.parser()  # the port's policy says what protocol to expect
            if parser == "kafka":
                await KafkaHandler(ctx, reader, writer, self.config.kafka_max_frame).run()
                return
            if parser == "dns":
                await DnsTcpHandler(ctx, self.dns, reader, writer).run()
                return
            if parser == "tls":  # serverNames: the ClientHello's SNI, TLS not terminated
                await TlsHandler(ctx, reader, writer).run()
                return
            try:
                initial = await read_preface(reader, self.config.header_timeout)
            except TimeoutError:
                return
            if not initial:
                return
            if initial.startswith(PREFACE):
                await Http2Handler(ctx, reader, writer, initial).run()
            else:
                await Http1Handler(ctx, reader, writer, initial).run()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.loader.poke)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        servers = [await asyncio.start_server(self.handle, sock=s, limit=1 << 20,
                                                   backlog=1024)
                   for s in make_listeners(self.args.port, self.args.bind)]
        udp = [UdpServer(s, self.dns) for s in make_udp_listeners(self.args.port,
                                                                   self.args.bind)]
        for server in udp:
            server.start()
        self.loader.current()
        await stop.wait()
        for server in servers:
            server.close()
        for server in udp:
            server.close()


def run_worker(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(Worker(args).serve())
    else:
        uvloop.run(Worker(args).serve())


def supervise(argv: list[str], workers: int) -> int:
    """Start ``workers`` children and restart any that exits until SIGTERM/SIGINT."""
    cmd = [sys.executable, "-m", "proxy", "--worker", *argv]
    children: list[subprocess.Popen | None] = [None] * workers
    started = [0.0] * workers
    stopping = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: object) -> None:
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    while not stopping:
        for i, child in enumerate(children):
            if child is not None and child.poll() is None:
                continue
            if child is not None:
                print(f"proxy: worker {child.pid} exited ({child.returncode}); restarting",
                      file=sys.stderr)
                if time.monotonic() - started[i] < 1.0:
                    continue  # crash loop: retry once it has been down a second
            children[i] = subprocess.Popen(cmd)
            started[i] = time.monotonic()
        time.sleep(0.1)
    for child in children:
        if child is not None and child.poll() is None:
            child.terminate()
    for child in children:
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker or args.workers <= 0:
        run_worker(args)
        return 0
    return supervise([a for a in argv if a != "--worker"], args.workers)


if __name__ == "__main__":
    sys.exit(main())
