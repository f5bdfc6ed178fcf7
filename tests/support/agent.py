"""Runs a real ``ciliumpy agent`` process (gunicorn on unix sockets) for tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ciliumpy.apiclient import APIError, call
from datapath import datapath
from tests.support.processes import stop_process

CLI = [sys.executable, "-m", "ciliumpy"]


def raw_post(socket_path: str, path: str, body: bytes | None, timeout: float = 30.0
             ) -> tuple[int, dict]:
    """POSTs like dockerd does: no Content-Type, only the plugin Accept header."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(socket_path)
    body = body or b""
    head = (f"POST {path} HTTP/1.1\r\nHost: plugin\r\n"
            "Accept: application/vnd.docker.plugins.v1.2+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sock.sendall(head + body)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    sock.close()
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(payload) if payload else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


# What this test session's agents were given: swept at the end of the session
# (sweep_session) in case a test's own cleanup missed something.
SESSION_PIN_DIRS: set[str] = set()
SESSION_STATE_DIRS: set[str] = set()


def new_pin_dir() -> str:
    path = f"/sys/fs/bpf/ciliumpy-test-{uuid.uuid4().hex[:8]}"
    SESSION_PIN_DIRS.add(path)
    return path


def _proxy_processes(state_dirs: set[str]) -> list[int]:
    """Pids of L7 proxies started by this session's agents: their command line names
    one of the agents' state directories. (The event reader dies with its agent.)"""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if words[1:3] != ["-m", "proxy"]:
            continue
        if any(word.startswith(tuple(state_dirs)) for word in words):
            found.append(int(entry))
    return found


def sweep_session() -> list[str]:
    """The safety net at the end of a test session: L7 proxies still running for an
    agent of this session, and the pins and host-device filters of this session's pin
    directories (each agent's hold ~180 MB of kernel memory).
    Returns what it had to remove: each is a test whose cleanup missed something."""
    swept = []
    states = {str(s) for s in SESSION_STATE_DIRS}
    for pid in _proxy_processes(states) if states else []:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if os.getpgid(pid) == pid:  # a proxy leads its workers' group
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
            swept.append(f"process {pid}: {cmdline.decode(errors='replace')[:200]}")
        except OSError:
            pass
    for pin_dir in sorted(SESSION_PIN_DIRS):
        pinned = os.path.isdir(pin_dir)  # its maps and socket hooks stay while pinned
        removed = datapath.uninstall(pin_dir)
        if removed:
            swept.append(f"host-device filters of {pin_dir} on ifindex {removed}")
        if pinned:
            swept.append(f"pins under {pin_dir}")
    return swept


@dataclass
class Agent:
    """One agent process; ``restart``/``kill9`` keep the same state directory."""

    state_dir: Path
    plugin_socket: str
    api_socket: str
    extra_args: list[str] = field(default_factory=list)
    # a command prefix (nsenter into a test host's namespaces) for the agent process
    wrapper: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    # Each test agent pins its own maps: agents sharing pins would share one ring
    # buffer and steal each other's events.
    pin_dir: str = field(default_factory=lambda: new_pin_dir())
    # Each test agent's L7 proxy on a port of its own: proxies of two agents in one
    # network namespace must never share a port (SO_REUSEPORT would mix them).
    proxy_port: int = field(default_factory=lambda: free_port())

    def start(self, timeout: float = 20.0) -> None:
        SESSION_PIN_DIRS.add(self.pin_dir)
        SESSION_STATE_DIRS.add(str(self.state_dir))
        self.log_path = self.log_path or self.state_dir / "agent.log"
        args = self.wrapper + CLI + ["agent", "--state-dir", str(self.state_dir),
                      "--plugin-socket", self.plugin_socket, "--api-socket", self.api_socket,
                      "--log-level", "info", "--bpf-pin-dir", self.pin_dir,
                      "--proxy-port", str(self.proxy_port), *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.api("/v1/healthz").get("ok"):
                    return
            except APIError:
                pass
            time.sleep(0.1)
        log = self.log()
        self.stop()  # the caller may never reach a teardown that would stop it
        raise RuntimeError(f"agent did not answer within {timeout}s:\n{log}")

    def api(self, path: str, method: str = "GET"):
        return call(path, method=method, socket_path=self.api_socket, timeout=30)

    def api_text(self, path: str) -> str:
        """A non-JSON answer (``/metrics``) as text."""
        from ciliumpy.apiclient import _UnixConnection

        conn = _UnixConnection(self.api_socket, 10)
        conn.request("GET", path)
        return conn.getresponse().read().decode()

    def api_post(self, path: str, body: dict):
        return call(path, method="POST", body=body, socket_path=self.api_socket, timeout=60)

    def api_put(self, path: str, body: dict):
        return call(path, method="PUT", body=body, socket_path=self.api_socket, timeout=60)

    def api_delete(self, path: str) -> None:
        """A DELETE whose 404 (nothing to delete) is fine."""
        try:
            call(path, method="DELETE", socket_path=self.api_socket, timeout=60)
        except APIError:
            pass

    def plugin(self, method: str, body: dict | None = None, raw: bytes | None = None
               ) -> tuple[int, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else b"")
        return raw_post(self.plugin_socket, "/" + method, data)

    def ok(self, method: str, body: dict | None = None) -> dict:
        """A call that must succeed: HTTP 200 with a JSON object."""
        status, answer = self.plugin(method, body)
        assert status == 200, f"{method} -> {status} {answer}"
        assert isinstance(answer, dict), f"{method} answered {answer!r}"
        return answer

    def err(self, method: str, body: dict | None = None, raw: bytes | None = None) -> str:
        """A call that must fail: non-2xx with {"Err": "..."}; returns the message."""
        status, answer = self.plugin(method, body, raw)
        assert status >= 400, f"{method} unexpectedly succeeded: {answer}"
        assert isinstance(answer, dict) and answer.get("Err"), answer
        return answer["Err"]

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, keep_pins: bool = False) -> None:
        if self.proc:
            stop_process(self.proc, 20)
        if keep_pins:
            return
        self._end_proxy()
        if self.wrapper:  # in a test host's namespace: its devices go with the namespace
            shutil.rmtree(self.pin_dir, ignore_errors=True)
        else:  # on this host's devices: the filter would hold ~180 MB of maps forever
            datapath.uninstall(self.pin_dir)

    def _end_proxy(self) -> None:
        """The L7 proxy outlives an agent killed with -9 (the next agent adopts it); when
        no next agent will come, it is ended here, by the pid its agent recorded and only
        if that process is still this agent's proxy."""
        pid_file = self.state_dir / "proxy" / "proxy.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if "proxy" in cmdline and str(self.state_dir) in cmdline:
            try:
                os.killpg(pid, signal.SIGTERM)  # the proxy leads its workers' group
            except OSError:
                return
            deadline = time.time() + 10
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL the master, as a crash would; its worker follows (PDEATHSIG)."""
        workers = self.worker_pids()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        deadline = time.time() + 10
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.05)

    def restart(self, kill: bool = False) -> None:
        self.kill9() if kill else self.stop(keep_pins=True)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False
