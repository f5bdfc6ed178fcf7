"""A real DNS resolver for the DNS tests: Debian's dnsmasq in a network namespace the
test creates (tests.support.netns), serving only the names the test defines, logging
every query it receives, forwarding nothing."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time

from tests.support.netns import NetnsEndpoint
from tests.support.processes import stop_process

DNSMASQ = "/usr/sbin/dnsmasq"


class Resolver:
    """dnsmasq on ``ip``:53 (UDP and TCP) in its own namespace. ``records``: name ->
    address (a name also answers for its subdomains: dnsmasq's --address)."""

    def __init__(self, ip: str, gateway: str, records: dict[str, str], ttl: int = 30) -> None:
        self.ip = ip
        self.ns = NetnsEndpoint.create(ip, gateway)
        self.dir = tempfile.mkdtemp(prefix="ciliumpy-dns-")
        self.log = os.path.join(self.dir, "queries.log")
        command = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                   "--no-hosts", "--no-poll", f"--listen-address={ip}", "--bind-interfaces",
                   "--port=53", f"--local-ttl={ttl}", "--log-queries",
                   f"--log-facility={self.log}", "--user=root", "--pid-file="]
        command += [f"--address=/{name}/{address}" for name, address in records.items()]
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, *command],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read().decode()}")
            with contextlib.suppress(FileNotFoundError), open(self.log) as handle:
                if "started" in handle.read():
                    return
            time.sleep(0.05)
        raise TimeoutError("dnsmasq did not start")

    def queries(self) -> list[str]:
        """Every name asked of this resolver so far (from its own log)."""
        with contextlib.suppress(FileNotFoundError), open(self.log) as handle:
            return re.findall(r"query\[\w+\] (\S+) from", handle.read())
        return []

    def stop(self) -> None:
        stop_process(self.proc)  # ip netns exec execs dnsmasq: this pid is dnsmasq's own
        self.ns.delete()
        with contextlib.suppress(OSError):
            os.unlink(self.log)
            os.rmdir(self.dir)
