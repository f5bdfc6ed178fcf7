"""Several "hosts" on one machine, for multi-host tests.

Each host is a network namespace plugged into one underlay bridge (itself in a
namespace of its own, so nothing touches the machine's real network), with its own
dockerd (own data-root, exec-root and socket, in a private mount namespace whose
/run/docker/plugins is a tmpfs of its own, so each dockerd finds its own ciliumpy) and
its own agent, entered into the host's network and mount namespaces. One real Consul
agent runs on the underlay. Everything is removed by name and pid at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.agent import Agent
from tests.support.docker import Docker
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
UNDERLAY_V4 = "10.233.{tag}.{n}"
UNDERLAY_V6 = "fd00:233:{tag}::{n}"
CONSUL_PORT = 8500


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc


def in_netns(netns: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return sh("nsenter", f"--net=/run/netns/{netns}", *args, **kwargs)


def wait(predicate, timeout: float, what: str, interval: float = 0.2):
    """``wait_for`` that fails loudly, naming what never happened."""
    result = wait_for(predicate, timeout, interval)
    if not result:
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
    return result


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    ipv6: str
    workdir: Path
    dockerd: subprocess.Popen | None = None
    agent: Agent | None = None
    docker: Docker | None = None
    containers: list[str] = field(default_factory=list)

    @property
    def docker_sock(self) -> str:
        return f"/run/{self.netns}.sock"

    @property
    def exec_root(self) -> str:
        return f"/run/{self.netns}-x"

    @property
    def wrapper(self) -> list[str]:
        # entering a mount namespace moves the working directory to its root, and
        # ``python -m ciliumpy`` imports from the working directory: without --wd the
        # agents ran the venv's installed checkout, not the one under test
        return ["nsenter", f"--net=/run/netns/{self.netns}",
                f"--mount=/proc/{self.dockerd.pid}/ns/mnt", f"--wd={ROOT}"]

    def start_dockerd(self) -> None:
        data = self.workdir / "docker"
        data.mkdir(parents=True, exist_ok=True)
        exec_root = self.exec_root
        script = ("mount -t tmpfs tmpfs /run/docker/plugins && exec /usr/sbin/dockerd "
                  f"--data-root {data} --exec-root {exec_root} -H unix://{self.docker_sock} "
                  f"--pidfile {self.workdir}/docker.pid --bridge=none --iptables=false "
                  "--ip-masq=false")
        os.makedirs("/run/docker/plugins", exist_ok=True)
        with open(self.workdir / "dockerd.log", "ab") as log:
            self.dockerd = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "-m", "--propagation",
                 "private", "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.docker = Docker(f"unix://{self.docker_sock}")

    def wait_dockerd(self) -> None:
        def up():
            if self.dockerd.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited: "
                                   f"{(self.workdir / 'dockerd.log').read_text()[-1500:]}")
            return self.docker.run_cli("version", check=False, timeout=10).returncode == 0
        wait(up, 60, f"dockerd of {self.name}")
        sh(str(ROOT / "scripts" / "build-busybox-image.sh"), "ciliumpy/busybox",
           self.docker_sock, timeout=120)

    def start_agent(self, consul: str, mode: str, pin_dir: str, *extra: str) -> None:
        state = self.workdir / "agent"
        state.mkdir(exist_ok=True)
        self.agent = Agent(
            state, "/run/docker/plugins/ciliumpy.sock", str(self.workdir / "api.sock"),
            ["--node-name", self.name, "--node-ip", self.ip, "--node-ipv6", self.ipv6,
             "--kvstore", "consul", "--kvstore-opt", f"consul.address={consul}",
             "--datapath-mode", mode, "--docker-host", f"unix://{self.docker_sock}",
             "--lease-ttl", "10", "--gc-interval", "5",
             # the hosts share this machine's cgroup root: each agent's socket hooks
             # translate only its own containers' and host's sockets
             "--socket-lb-scope", "own", *extra],
            # nsenter --mount starts the agent in dockerd's working directory (/), where
            # ``python -m ciliumpy`` would import the installed checkout, not this one
            wrapper=[*self.wrapper, "env", f"PYTHONPATH={ROOT}"], pin_dir=pin_dir)
        self.agent.start(timeout=150)

    def run(self, network: str, *args: str, command=("sleep", "3600")) -> str:
        return self.docker.run(network, *args, command=command)

    def exec(self, container: str, *command: str, timeout: float = 30):
        return self.docker.exec(container, *command, check=False, timeout=timeout)

    def _revive_agent(self) -> None:
        """A test that left this host's agent dead (killed, stopped): started again before
        its containers and networks are removed, since dockerd retries each call to an
        absent plugin for ~30 s (a dead node cost its test ~2 minutes of teardown)."""
        if self.agent is None or self.agent.proc is None or self.agent.proc.poll() is None:
            return
        if not (self.docker.containers or self.docker.networks):
            return
        try:
            self.agent.start(timeout=30)
        except Exception as exc:  # cleanup goes on the slow way
            print(f"{self.name}: agent not revived for cleanup: {exc}", file=sys.stderr)

    def stop(self) -> None:
        if self.docker is not None and self.dockerd is not None and self.dockerd.poll() is None:
            self._revive_agent()
            self.docker.cleanup()
        if self.agent is not None:
            self.agent.stop()
        if self.dockerd is not None and self.dockerd.poll() is None:
            os.kill(self.dockerd.pid, signal.SIGTERM)
            try:
                self.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.dockerd.pid, signal.SIGKILL)
                self.dockerd.wait(10)
        shutil.rmtree(self.exec_root, ignore_errors=True)


class Cluster:
    """``count`` hosts on one underlay with a Consul agent; ``stop`` removes it all."""

    def __init__(self, count: int, workdir: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        subnet = int(self.tag[:2], 16) % 200 + 20
        self.v4 = lambda n: UNDERLAY_V4.format(tag=subnet, n=n)
        self.v6 = lambda n: UNDERLAY_V6.format(tag=subnet, n=n)
        self.workdir = workdir / f"cluster-{self.tag}"
        self.underlay = f"cpyul{self.tag}"
        self.consul: subprocess.Popen | None = None
        self.consul_address = f"{self.v4(1)}:{CONSUL_PORT}"
        self.pin_dirs: list[str] = []
        self.hosts = [Host(f"node{i}", f"cpyh{i}{self.tag}", self.v4(10 + i), self.v6(10 + i),
                           self.workdir / f"node{i}") for i in range(1, count + 1)]

    # ---- underlay ------------------------------------------------------------------
    def start(self) -> Cluster:
        self.start_underlay()
        for host in self.hosts:
            self.plug(host)
        self._start_consul()
        for host in self.hosts:
            host.start_dockerd()
        for host in self.hosts:
            host.wait_dockerd()
        return self

    def start_underlay(self) -> None:
        """The work directory and the underlay namespace with its bridge."""
        self.workdir.mkdir(parents=True)
        sh("ip", "netns", "add", self.underlay)
        ul = ("ip", "-n", self.underlay)
        sh(*ul, "link", "set", "lo", "up")
        sh(*ul, "link", "add", "br0", "type", "bridge")
        sh(*ul, "link", "set", "br0", "up")
        sh(*ul, "addr", "add", f"{self.v4(1)}/24", "dev", "br0")

    def plug(self, host: Host) -> None:
        """The host's namespace, its underlay link (eth0) and addresses."""
        sh("ip", "netns", "add", host.netns)
        port = f"ul{host.netns[4]}{self.tag}"
        sh("ip", "-n", self.underlay, "link", "add", port, "type", "veth", "peer", "name",
           "eth0", "netns", host.netns)
        sh("ip", "-n", self.underlay, "link", "set", port, "master", "br0", "up")
        h = ("ip", "-n", host.netns)
        sh(*h, "link", "set", "lo", "up")
        sh(*h, "link", "set", "eth0", "up")
        sh(*h, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        sh(*h, "-6", "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")

    def _start_consul(self) -> None:
        data = self.workdir / "consul"
        data.mkdir()
        with open(self.workdir / "consul.log", "ab") as log:
            self.consul = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.underlay}", "consul", "agent", "-dev",
                 "-bind", self.v4(1), "-client", self.v4(1), "-http-port", str(CONSUL_PORT),
                 "-dns-port", "-1", "-grpc-port", "-1", "-node", f"ul-{self.tag}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            if self.consul.poll() is not None:
                raise RuntimeError("consul exited: " + (self.workdir / "consul.log").read_text())
            probe = in_netns(self.underlay, "consul", "kv", "get",
                             f"-http-addr=http://{self.consul_address}", "ciliumpy-ready",
                             check=False, timeout=10)
            return "No key exists" in probe.stderr
        wait(ready, 30, "consul on the underlay", interval=0.3)

    def start_agents(self, mode: str, *extra: str) -> None:
        for host in self.hosts:
            self.start_agent(host, mode, *extra)

    def start_agent(self, host: Host, mode: str, *extra: str) -> None:
        pin_dir = f"/sys/fs/bpf/ciliumpy-test-{self.tag}-{host.name}"
        if pin_dir not in self.pin_dirs:
            self.pin_dirs.append(pin_dir)
        host.start_agent(self.consul_address, mode, pin_dir, *extra)

    def remove_host(self, host: Host) -> None:
        """The host goes away: its containers, agent, dockerd and namespace."""
        host.stop()
        sh("ip", "netns", "del", host.netns, check=False)

    def stop(self) -> None:
        def stop_host(host: Host) -> None:
            try:
                host.stop()
            except Exception as exc:  # keep cleaning the others
                print(f"cleanup of {host.name}: {exc}", file=sys.stderr)
        # hosts are independent: stopped together (each mostly waits on its dockerd)
        with ThreadPoolExecutor(max_workers=len(self.hosts) or 1) as pool:
            list(pool.map(stop_host, self.hosts))
        for host in self.hosts:
            sh("ip", "netns", "del", host.netns, check=False)
        if self.consul is not None and self.consul.poll() is None:
            os.killpg(self.consul.pid, signal.SIGTERM)
            self.consul.wait(20)
        sh("ip", "netns", "del", self.underlay, check=False)
        for pin_dir in self.pin_dirs:
            shutil.rmtree(pin_dir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
