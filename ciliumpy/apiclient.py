"""A small client for the agent API over its unix socket (used by the CLI and tests)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

DEFAULT_API_SOCKET = "/run/ciliumpy/ciliumpy.sock"


class APIError(RuntimeError):
    """The agent could not be reached or refused the request."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _unreachable(exc: OSError, socket_path: str) -> APIError:
    """One wording of "cannot reach the agent" for requests and streams alike (the CLI
    prints it as is, and tests look for "the agent is not running")."""
    if isinstance(exc, FileNotFoundError):
        return APIError(f"the agent is not running (no socket at {socket_path})")
    if isinstance(exc, ConnectionRefusedError):
        return APIError(f"the agent is not running (nothing listens on {socket_path})")
    if isinstance(exc, PermissionError):
        return APIError(f"permission denied on {socket_path} (the agent API is root-only)")
    return APIError(f"cannot talk to the agent on {socket_path}: {exc}")


def _refused(status: int, decoded: Any) -> APIError:
    message = decoded.get("Err") if isinstance(decoded, dict) else None
    return APIError(message or f"the agent answered HTTP {status}")


def call(path: str, method: str = "GET", body: Any = None,
         socket_path: str = DEFAULT_API_SOCKET, timeout: float = 30.0) -> Any:
    """Sends one request and decodes the JSON answer; errors raise APIError."""
    conn = _UnixConnection(socket_path, timeout)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data)
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise _unreachable(exc, socket_path) from None
    finally:
        conn.close()
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        raise APIError(f"the agent answered {response.status} with a non-JSON body") from None
    if response.status >= 400:
        raise _refused(response.status, decoded)
    return decoded


def stream(path: str, socket_path: str = DEFAULT_API_SOCKET, method: str = "GET",
           body: Any = None):
    """Yields the JSON objects of a newline-delimited stream (keep-alive blank lines
    are skipped) until the agent closes it."""
    for line in stream_lines(path, socket_path, method, body):
        yield json.loads(line)


def stream_lines(path: str, socket_path: str = DEFAULT_API_SOCKET, method: str = "GET",
                 body: Any = None):
    """The lines of a newline-delimited stream as text, without their newline and
    undecoded (a caller printing them as they are skips decoding and re-encoding);
    keep-alive blank lines are skipped."""
    for chunk in stream_chunks(path, socket_path, method, body):
        yield from chunk.decode().splitlines()


def stream_chunks(path: str, socket_path: str = DEFAULT_API_SOCKET, method: str = "GET",
                  body: Any = None):
    """A newline-delimited stream as it arrives: each item is whole lines (bytes, each
    ending in a newline, blank keep-alive lines removed), as many as had come, so a
    caller can write a burst with one write."""
    conn = _UnixConnection(socket_path, timeout=None)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None)
        response = conn.getresponse()
        if response.status >= 400:
            raw = response.read()
            try:
                decoded = json.loads(raw) if raw else {}
            except ValueError:
                decoded = {}
            raise _refused(response.status, decoded)
        pending = b""
        while True:
            data = response.read1(1 << 16)
            if not data:
                break
            data = pending + data
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for more
            whole, pending = data[:cut], data[cut:]
            lines = whole
            if b"\n\n" in whole or whole.startswith(b"\n"):  # keep-alive blank lines
                lines = b"".join(line + b"\n" for line in whole.split(b"\n") if line.strip())
            if lines:
                yield lines
        if pending.strip():
            yield pending.strip() + b"\n"
    except OSError as exc:
        raise _unreachable(exc, socket_path) from None
    finally:
        conn.close()
