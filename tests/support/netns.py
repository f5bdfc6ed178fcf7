"""Container-like endpoints made of a network namespace and a veth pair, routed by the
host exactly like ciliumpy's (a /32 on the peer, the gateway on the host side)."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass

BUSYBOX = "/bin/busybox"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          timeout=timeout)


@dataclass
class NetnsEndpoint:
    name: str
    host_if: str
    ip: str
    gateway: str

    @classmethod
    def create(cls, ip: str, gateway: str) -> NetnsEndpoint:
        tag = uuid.uuid4().hex[:8]
        ep = cls(f"cpt{tag}", f"cph{tag}", ip, gateway)
        sh("ip", "netns", "add", ep.name)
        sh("ip", "link", "add", ep.host_if, "type", "veth", "peer", "name", "eth0", "netns",
           ep.name)
        sh("ip", "link", "set", ep.host_if, "up")
        sh("ip", "addr", "add", f"{gateway}/32", "dev", ep.host_if)
        sh("ip", "route", "replace", f"{ip}/32", "dev", ep.host_if)
        ns = ("ip", "netns", "exec", ep.name)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "link", "set", "eth0", "up")
        sh(*ns, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        sh(*ns, "ip", "route", "add", f"{gateway}/32", "dev", "eth0")
        sh(*ns, "ip", "route", "add", "default", "via", gateway)
        return ep

    @property
    def ifindex(self) -> int:
        return int(open(f"/sys/class/net/{self.host_if}/ifindex").read())

    @property
    def mac(self) -> str:
        return sh("ip", "netns", "exec", self.name, "cat",
                  "/sys/class/net/eth0/address").stdout.strip()

    def run(self, *command: str, check: bool = False, timeout: float = 30
            ) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *command, check=check, timeout=timeout)

    def popen(self, *command: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *command],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def delete(self) -> None:
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.name, check=False)


def tcp_ok(client: NetnsEndpoint, server_ip: str, port: int, timeout: int = 2) -> bool:
    """A TCP connection and a line of data through busybox nc (server must echo)."""
    result = client.run(BUSYBOX, "sh", "-c",
                        f"echo ping | {BUSYBOX} nc -w {timeout} {server_ip} {port}",
                        timeout=timeout + 5)
    return "ping" in result.stdout


def echo_server(endpoint: NetnsEndpoint, port: int) -> subprocess.Popen:
    """A persistent TCP echo server on ``port`` (busybox nc -ll -e cat)."""
    return endpoint.popen(BUSYBOX, "nc", "-ll", "-p", str(port), "-e", BUSYBOX, "cat")


def pings(client: NetnsEndpoint, ip: str) -> bool:
    return client.run(BUSYBOX, "ping", "-c", "1", "-W", "1", ip).returncode == 0
