"""Helpers for the proxy integration tests (no tests here): a recording HTTP/1.1
backend, the real proxy process, state files and an event collector. Loopback only."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from proxy.events import EventReceiver
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
IDENTITY = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        if (self.headers.get("Upgrade") or "").lower() == "echo":
            self.server.seen.append({"method": self.command, "path": self.path,  # type: ignore[attr-defined]
                                     "headers": dict(self.headers.items()), "len": 0})
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "echo")
            self.end_headers()
            self.wfile.flush()
            while data := self.connection.recv(65536):
                self.connection.sendall(data.upper())
            self.close_connection = True
            return
        body = self._body()
        self.server.seen.append({"method": self.command, "path": self.path,  # type: ignore[attr-defined]
                                 "headers": dict(self.headers.items()), "len": len(body)})
        if self.path.startswith("/public/big"):
            size = int(self.path.rsplit("=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            while sent < size:
                n = min(len(chunk), size - sent)
                self.wfile.write(chunk[:n])
                sent += n
            return
        reply = json.dumps({"path": self.path, "len": len(body),
                            "sha": hashlib.sha256(body).hexdigest(),
                            "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class Backend:
    """Threaded HTTP/1.1 server on 127.0.0.1 recording every request it sees."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.seen = []  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[dict]:
        return self.server.seen  # type: ignore[attr-defined]

    def paths(self) -> list[str]:
        return [r["path"] for r in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_state(port: int, http: list | None, *, revision: int = 1,
               remotes: list | None = None, direction: str = "ingress") -> dict:
    return {
        "revision": revision,
        "identities": {"127.0.0.1": IDENTITY},
        "labels": {str(IDENTITY): ["container:role=frontend"]},
        "names": {"127.0.0.1": "frontend-1"},
        "l7": [{"endpoint": "127.0.0.1", "direction": direction, "port": port,
                "parser": "http", "remotes": [IDENTITY] if remotes is None else remotes,
                "http": http}],
    }


def write_state(path: Path, doc: dict | None, settle: float = 0.25) -> None:
    """Atomically replace (or remove) the state file, then let the workers notice."""
    if doc is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    time.sleep(settle)


class Events:
    def __init__(self, path: Path) -> None:
        self.items: list[dict] = []
        self.receiver = EventReceiver(str(path), self.items.append).start()

    def wait(self, pred, timeout: float = 3.0) -> dict:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.items):
                if pred(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no matching event in {self.items!r}")

    def close(self) -> None:
        self.receiver.stop()


class Proxy:
    """The real ``python -m proxy`` process tree on 127.0.0.1 (supervisor + workers)."""

    def __init__(self, tmp: Path, upstream_port: int, workers: int = 2,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.state = tmp / "state.json"
        self.events_path = tmp / "events.sock"
        cmd = [sys.executable, "-m", "proxy", "--port", str(self.port), "--bind", "127.0.0.1",
               "--state", str(self.state), "--events", str(self.events_path),
               "--workers", str(workers), "--test-upstream", f"127.0.0.1:{upstream_port}",
               *(extra or [])]
        self.proc = subprocess.Popen(cmd, cwd=REPO)
        wait_port(self.port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        stop_process(self.proc)
