"""A real Consul agent in dev mode on loopback, on free ports, for one test session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from state.kvstore.base import KVStore
from state.kvstore.consul import ConsulStore
from state.kvstore.embedded import EmbeddedStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ConsulAgent:
    """``persistent=False``: ``-dev`` (in memory, fast). ``persistent=True``: a one-node
    server with a data directory, so it can be stopped and started with its data."""

    def __init__(self, persistent: bool = False) -> None:
        self.persistent = persistent
        self.http_port = free_port()
        self.ports = {"-http-port": self.http_port, "-serf-lan-port": free_port(),
                      "-serf-wan-port": free_port(), "-server-port": free_port()}
        self.data_dir = tempfile.mkdtemp(prefix="consul-data-")
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="consul-")) / "consul.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        mode = (["-server", "-bootstrap-expect", "1", "-data-dir", self.data_dir]
                if self.persistent else ["-dev"])
        args = ["consul", "agent", *mode, "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-dns-port", "-1", "-grpc-port", "-1", "-node", "ciliumpy-test"]
        for flag, port in self.ports.items():
            args += [flag, str(port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"consul exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v1/status/leader",
                                            timeout=1) as answer:
                    if json.loads(answer.read()) and self._kv_ready():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("consul did not elect a leader in time")

    def _kv_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v1/kv/ciliumpy-ready",
                                        timeout=1):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 404
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)


def open_backend(request, tmp_path) -> KVStore:
    """The backend ``request.param`` names: a SQLite file in ``tmp_path``, or a client of
    the module's Consul agent (the ``consul_agent`` fixture)."""
    if request.param == "embedded":
        return EmbeddedStore(str(tmp_path / "kv.db"))
    return ConsulStore({"consul.address": request.getfixturevalue("consul_agent").address})
