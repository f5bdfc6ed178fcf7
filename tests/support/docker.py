"""The real docker CLI against the dockerd started by scripts/setup-host.sh, with
cleanup of everything a test creates, by id."""

from __future__ import annotations

import json
import subprocess

DOCKER = "/usr/bin/docker"
IMAGE = "ciliumpy/busybox"


class DockerError(RuntimeError):
    pass


class Docker:
    def __init__(self, host: str = "unix:///run/docker.sock") -> None:
        self.host = host
        self.containers: list[str] = []
        self.networks: list[str] = []

    def run_cli(self, *args: str, check: bool = True, timeout: float = 120
                ) -> subprocess.CompletedProcess:
        proc = subprocess.run([DOCKER, "-H", self.host, *args], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DockerError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def network_create(self, name: str, *args: str, check: bool = True
                       ) -> subprocess.CompletedProcess:
        proc = self.run_cli("network", "create", "-d", "ciliumpy", "--ipam-driver", "ciliumpy",
                            *args, name, check=check)
        if proc.returncode == 0:
            self.networks.append(proc.stdout.strip())
        return proc

    def network_rm(self, network: str) -> None:
        self.run_cli("network", "rm", network)
        self.networks = [n for n in self.networks if n != network and not n.startswith(network)]

    def run(self, network: str, *args: str, name: str | None = None,
            command: tuple[str, ...] = ("sleep", "3600")) -> str:
        extra = ["--name", name] if name else []
        proc = self.run_cli("run", "-d", "--network", network, *extra, *args, IMAGE, *command)
        cid = proc.stdout.strip()
        self.containers.append(cid)
        return cid

    def exec(self, container: str, *command: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess:
        return self.run_cli("exec", container, *command, check=check, timeout=timeout)

    def inspect(self, obj: str) -> dict:
        return json.loads(self.run_cli("inspect", obj).stdout)[0]

    def ip(self, container: str, network: str, v6: bool = False) -> str:
        info = self.inspect(container)["NetworkSettings"]["Networks"][network]
        return info["GlobalIPv6Address" if v6 else "IPAddress"]

    def rm(self, *containers: str) -> None:
        if containers:
            self.run_cli("rm", "-f", *containers, check=False)
            self.containers = [c for c in self.containers if c not in containers]

    def cleanup(self) -> None:
        self.rm(*self.containers)
        for network in reversed(self.networks):
            self.run_cli("network", "rm", network, check=False)
        self.networks = []


def ping(docker: Docker, container: str, address: str, tries: int = 3) -> bool:
    """One echo reply within ``tries`` one-second attempts (the very first IPv6
    packet can race the container's link-local DAD)."""
    for _ in range(tries):
        if docker.exec(container, "ping", "-c", "1", "-W", "1", address,
                       check=False).returncode == 0:
            return True
    return False
