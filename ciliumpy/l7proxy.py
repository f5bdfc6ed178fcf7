"""Supervises the L7 proxy (``proxy/``): its processes, its routing rule and its events.

The proxy runs as its own process group (``python -m proxy``: a parent that keeps N
workers on one ``SO_REUSEPORT`` port), never in the gunicorn worker. It outlives an
agent killed with -9 (the next agent adopts it through the pid file, so established
proxied connections survive a crash); a clean agent stop stops it. A watchdog thread
restarts it when it dies; meanwhile connections to L7 ports are dropped by the
datapath (fail closed), never passed on unchecked. Events arrive as datagrams on
a unix socket and go to ``on_event``."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from proxy.events import EventReceiver

log = logging.getLogger("ciliumpy.proxy")


class ProxyError(RuntimeError):
    """The proxy cannot be started; one-line reason."""


class ProxySupervisor:
    def __init__(self, directory: str, port: int, workers: int,
                 on_event: Callable[[dict], None], kafka_max_frame: int = 104857600) -> None:
        self.directory, self.port, self.workers = directory, port, workers
        self.kafka_max_frame = kafka_max_frame
        self.state_path = os.path.join(directory, "state.json")
        self.events_path = os.path.join(directory, "events.sock")
        self.fqdn_path = os.path.join(directory, "fqdn.sock")  # served by ciliumpy.fqdn
        self.pid_path = os.path.join(directory, "proxy.pid")
        self.log_path = os.path.join(directory, "proxy.log")
        self.on_event = on_event
        self.pid: int | None = None
        self.restarts = 0
        self._child: subprocess.Popen | None = None  # the proxy we started: reaped by poll()
        self._receiver: EventReceiver | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="proxy-watchdog", daemon=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "proxy", "--port", str(self.port), "--state",
                self.state_path, "--events", self.events_path, "--workers", str(self.workers),
                "--kafka-max-frame", str(self.kafka_max_frame), "--fqdn-socket",
                self.fqdn_path]

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self._receiver = EventReceiver(self.events_path, self.on_event, mode=0o600).start()
        self.pid = self._adopt()
        if self.pid is None:
            self._check_port_free()
            self.pid = self._spawn()
        self._thread.start()

    def stop(self) -> None:
        """A clean agent stop: the proxy goes too (its connections close)."""
        self._stop.set()
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.time() + 5
            while _alive(self.pid) and time.time() < deadline:
                time.sleep(0.05)
        if os.path.exists(self.pid_path):
            os.unlink(self.pid_path)
        if self._receiver is not None:
            self._receiver.stop()

    def view(self) -> dict:
        return {"pid": self.pid, "running": bool(self.pid and _alive(self.pid)),
                "port": self.port, "workers": self.workers, "restarts": self.restarts,
                "state": self.state_path}

    def _adopt(self) -> int | None:
        """The proxy an earlier agent (killed) left running with this configuration."""
        try:
            with open(self.pid_path) as handle:
                pid = int(handle.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().split(b"\0")
        except (OSError, ValueError):
            return None
        if [part.decode() for part in cmdline if part] == self.command() and _alive(pid):
            log.info("adopted the running L7 proxy (pid %d)", pid)
            return pid
        return None

    def _check_port_free(self) -> None:
        """Another process on our port would join the proxy's SO_REUSEPORT group (same
        user) and get a share of the redirected connections: refuse to start instead."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("0.0.0.0", self.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ProxyError(f"the L7 proxy port {self.port} is in use by another "
                                 "process: pick another with --proxy-port") from None
            raise
        finally:
            probe.close()

    def _spawn(self) -> int:
        with open(self.log_path, "ab") as output:
            proc = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self.pid_path, "w") as handle:
            handle.write(str(proc.pid))
        self._child = proc
        log.info("started the L7 proxy on port %d (pid %d, %d workers)", self.port, proc.pid,
                 self.workers)
        return proc.pid

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if self._child is not None:
                self._child.poll()
            if self.pid and not _alive(self.pid) and not self._stop.is_set():
                log.warning("the L7 proxy (pid %d) died: restarting it", self.pid)
                self.restarts += 1
                self.pid = self._spawn()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
