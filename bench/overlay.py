"""Throughput between two hosts (issue 7): ciliumpy's VXLAN overlay against a plain
kernel VXLAN device and the bare underlay, measured in the same run.

Two hosts-in-namespaces on one underlay bridge (tests/support/hosts.py), each with its
own dockerd and agent in vxlan mode. Contenders, interleaved round by round:
- underlay: iperf3 between the two hosts' underlay addresses (the limit);
- kernel VXLAN: a classic VXLAN device (fixed VNI and remote) in each host;
- ciliumpy VXLAN: container to container on one ciliumpy network (BPF on both veths,
  encapsulation chosen per packet, identity in the VNI).
Single TCP stream, server on CPU 0, client on CPU 1; median with min-max.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import ratio_rows, write_table
from tests.support.hosts import Cluster, sh

RUNS, SECONDS = 5, 3
KERNEL_VXLAN = ("10.235.0.1", "10.235.0.2")


def iperf(netns_args: list[str], server_ip: str) -> float:
    out = sh(*netns_args, "taskset", "-c", "1", "iperf3", "-c", server_ip, "-t", str(SECONDS),
             "-J", timeout=SECONDS + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def server(netns_args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([*netns_args, "taskset", "-c", "0", "iperf3", "-s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def kernel_vxlan(cluster: Cluster) -> None:
    (h1, h2), (a, b) = cluster.hosts, KERNEL_VXLAN
    for host, peer, address in ((h1, h2, a), (h2, h1, b)):
        ns = ("ip", "-n", host.netns)
        sh(*ns, "link", "add", "kvx0", "type", "vxlan", "id", "4242", "remote", peer.ip,
           "dstport", "4790", "dev", "eth0")
        sh(*ns, "addr", "add", f"{address}/24", "dev", "kvx0")
        sh(*ns, "link", "set", "kvx0", "up")


def main() -> None:
    cluster = Cluster(2, Path(tempfile.mkdtemp(prefix="ciliumpy-bench-")))
    servers = []
    try:
        cluster.start()
        cluster.start_agents("vxlan")
        h1, h2 = cluster.hosts
        for host in cluster.hosts:
            host.docker.network_create("cpy-bench", "--subnet", "10.92.0.0/16")
        client_c, server_c = h1.run("cpy-bench"), h2.run("cpy-bench")
        server_ip = h2.docker.ip(server_c, "cpy-bench")
        pid = {c: str(h.docker.inspect(c)["State"]["Pid"]) for h, c in
               ((h1, client_c), (h2, server_c))}
        kernel_vxlan(cluster)
        h1_ns, h2_ns = (["nsenter", f"--net=/run/netns/{h.netns}"] for h in cluster.hosts)
        contenders = {
            "underlay (limit)": (h1_ns, h2_ns, h2.ip),
            "kernel VXLAN device": (h1_ns, h2_ns, KERNEL_VXLAN[1]),
            "ciliumpy VXLAN (BPF, identity in VNI)": (
                ["nsenter", "-t", pid[client_c], "-n"], ["nsenter", "-t", pid[server_c], "-n"],
                server_ip),
        }
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _client_ns, server_ns, _address in contenders.values():
            servers.append(server(server_ns))
        for _ in range(RUNS):
            for name, (client_ns, _, address) in contenders.items():
                results[name].append(iperf(client_ns, address))
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
        cluster.stop()
    rows = ratio_rows(results, ["underlay (limit)", "kernel VXLAN device"])
    write_table("overlay", "iperf3 across two hosts: ciliumpy VXLAN vs kernel VXLAN vs "
                "underlay (Gbit/s)", ["path", "median", "min-max", "x underlay",
                                      "x kernel VXLAN"], rows,
                [f"{RUNS} interleaved rounds of {SECONDS} s, single TCP stream, server on "
                 "CPU 0, client on CPU 1, hosts are network namespaces on one 2-core VM",
                 "goal: ciliumpy VXLAN >= kernel VXLAN (docs/benchmarks.md: kernel VXLAN = 0.77x "
                 "underlay)",
                 "container MTU 1450 (underlay 1500 minus 50 bytes of encapsulation); the "
                 "kernel VXLAN device also runs at 1450"])


if __name__ == "__main__":
    main()
