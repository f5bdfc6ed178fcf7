"""Two clusters on one underlay, each with its own Consul (Cluster Mesh tests).

Built on ``tests.support.hosts.Cluster``: the same underlay bridge and host namespaces,
the first half of the hosts in cluster ``a`` (its Consul: the harness's own, dev mode,
on ``v4(1)``), the second half in cluster ``b`` with a second Consul on ``v4(2)``, a
one-node server with a data directory so it can be stopped and started with its data.
Each cluster's agents follow the other's Consul (``--remote-clusters``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.hosts import CONSUL_PORT, Cluster, Host, in_netns, sh, wait


class Mesh(Cluster):
    def __init__(self, per_cluster: int, workdir: Path) -> None:
        super().__init__(2 * per_cluster, workdir)
        self.per_cluster = per_cluster
        self.consul_b: subprocess.Popen | None = None
        self.consul_b_address = f"{self.v4(2)}:{CONSUL_PORT}"

    @property
    def cluster_a(self) -> list[Host]:
        return self.hosts[:self.per_cluster]

    @property
    def cluster_b(self) -> list[Host]:
        return self.hosts[self.per_cluster:]

    def start(self) -> Mesh:
        super().start()
        sh("ip", "-n", self.underlay, "addr", "add", f"{self.v4(2)}/24", "dev", "br0")
        self.start_consul_b()
        return self

    def start_consul_b(self) -> None:
        data = self.workdir / "consul-b"
        data.mkdir(exist_ok=True)
        with open(self.workdir / "consul-b.log", "ab") as log:
            self.consul_b = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.underlay}", "consul", "agent",
                 "-server", "-bootstrap-expect", "1", "-data-dir", str(data),
                 "-bind", self.v4(2), "-client", self.v4(2), "-http-port", str(CONSUL_PORT),
                 "-dns-port", "-1", "-grpc-port", "-1", "-node", f"ulb-{self.tag}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready():
            if self.consul_b.poll() is not None:
                raise RuntimeError("consul b exited: "
                                   + (self.workdir / "consul-b.log").read_text()[-2000:])
            probe = in_netns(self.underlay, "consul", "kv", "get",
                             f"-http-addr=http://{self.consul_b_address}", "ciliumpy-ready",
                             check=False, timeout=10)
            return "No key exists" in probe.stderr
        wait(ready, 40, "consul b on the underlay", interval=0.3)

    def stop_consul_b(self) -> None:
        if self.consul_b is not None and self.consul_b.poll() is None:
            os.killpg(self.consul_b.pid, signal.SIGTERM)
            self.consul_b.wait(20)

    def start_mesh_agents(self, mode: str, *extra: str) -> None:
        """Cluster a (ID 1) and b (ID 2), each following the other."""
        sides = ((self.cluster_a, self.consul_address, "a", 1, f"b={self.consul_b_address}"),
                 (self.cluster_b, self.consul_b_address, "b", 2, f"a={self.consul_address}"))
        for hosts, consul, name, number, remote in sides:
            for host in hosts:
                pin_dir = f"/sys/fs/bpf/ciliumpy-test-{self.tag}-{host.name}"
                if pin_dir not in self.pin_dirs:
                    self.pin_dirs.append(pin_dir)
                host.start_agent(consul, mode, pin_dir, "--cluster-name", name,
                                 "--cluster-id", str(number), "--remote-clusters", remote,
                                 *extra)

    def stop(self) -> None:
        try:
            self.stop_consul_b()
        finally:
            super().stop()
