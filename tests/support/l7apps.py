"""Real servers and clients for the L7 end-to-end tests, run inside a container's
network namespace with the host's Python (``nsenter -t PID -n python -m
tests.support.l7apps ...``), so the tests need no image with Python in it.

- ``http-server --port P --log FILE``: HTTP/1.1, answers every request with 200 and
  ``ok <method> <path>``, and appends ``<method> <path> <x-token>`` to FILE per request
  it sees (what the tests assert the backend never saw).
- ``grpc-server --port P --log FILE``: any unary method, echoes the request bytes;
  logs the method path per call.
- ``tls-server --port P --log FILE --cert PEM --key PEM``: HTTPS (a real TLS
  handshake, Python's ``ssl``); appends ``accept <peer ip>`` per TCP connection it
  accepts (before any TLS byte), ``sni <name>`` per handshake and ``<method> <path>``
  per request, and answers ``ok tls <sni> <path>``.
- ``grpc-call --target HOST:PORT --method /pkg.Service/Method``: prints ``OK <reply>``
  or the status code name and details, exit 0 either way.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_log_lock = threading.Lock()


def _append(path: str, line: str) -> None:
    with _log_lock, open(path, "a") as handle:
        handle.write(line + "\n")


def http_server(port: int, log: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            _append(log, f"{self.command} {self.path} {self.headers.get('X-Token', '-')}")
            body = f"ok {self.command} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

    class Server(ThreadingHTTPServer):
        address_family = __import__("socket").AF_INET6
        daemon_threads = True

        def server_bind(self) -> None:
            import socket

            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    Server(("::", port), Handler).serve_forever()


def tls_server(port: int, log: str, cert: str, key: str) -> None:
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: dict[int, str] = {}

    def on_sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        _append(log, f"sni {name}")
        names[id(sock)] = name or "-"

    context.sni_callback = on_sni

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            _append(log, f"GET {self.path}")
            body = f"ok tls {names.get(id(self.connection), '-')} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

        def server_bind(self) -> None:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def get_request(self):  # noqa: ANN202
            sock, peer = self.socket.accept()
            _append(log, f"accept {peer[0].removeprefix('::ffff:')}")
            # the handshake runs in the handler's thread, on its first read
            return context.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False), peer

        def handle_error(self, request, client_address) -> None:  # noqa: ANN001
            pass  # a reset or a failed handshake: the log already says what arrived

    Server(("::", port), Handler).serve_forever()


def grpc_server(port: int, log: str) -> None:
    import grpc

    def echo(request: bytes, context) -> bytes:
        return b"echo:" + request

    class Any(grpc.GenericRpcHandler):
        def service(self, details):
            _append(log, details.method)
            return grpc.unary_unary_rpc_method_handler(echo)

    server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[Any()])
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    server.wait_for_termination()


def grpc_call(target: str, method: str) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None,
                                   response_deserializer=None)
        try:
            reply = call(b"hello", timeout=10)
            print("OK", reply.decode())
        except grpc.RpcError as exc:
            print(exc.code().name, exc.details())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l7apps")
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("http-server", "grpc-server"):
        one = sub.add_parser(name)
        one.add_argument("--port", type=int, required=True)
        one.add_argument("--log", required=True)
    tls = sub.add_parser("tls-server")
    for flag in ("--log", "--cert", "--key"):
        tls.add_argument(flag, required=True)
    tls.add_argument("--port", type=int, required=True)
    call = sub.add_parser("grpc-call")
    call.add_argument("--target", required=True)
    call.add_argument("--method", required=True)
    args = parser.parse_args(argv)
    if args.what == "http-server":
        http_server(args.port, args.log)
    elif args.what == "tls-server":
        tls_server(args.port, args.log, args.cert, args.key)
    elif args.what == "grpc-server":
        grpc_server(args.port, args.log)
    else:
        grpc_call(args.target, args.method)


if __name__ == "__main__":
    sys.exit(main())
