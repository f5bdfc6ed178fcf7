"""Throughput between two hosts (issue 7): ciliumpy's VXLAN overlay against a plain
kernel VXLAN device and the bare underlay, measured in the same run.

Two hosts-in-namespaces on one underlay bridge (tests/support/hosts.py), each with its
own dockerd and agent in vxlan mode. Contenders, interleaved round by round:
- underlay: iperf3 between the two hosts' underlay addresses (the limit);
- kernel VXLAN: a classic VXLAN device (fixed VNI and remote) in each host;
- kernel VXLAN + veth hop: the same device, reached from a namespace behind a routed
  veth pair in each host (what a container on a plain routed network pays: the
  like-for-like baseline for the container hop);
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
HOP_NETS = ("10.236.1", "10.236.2")  # .1 host side, .2 the namespace behind the veth


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


def veth_hops(cluster: Cluster) -> list[str]:
    """A namespace behind a routed veth pair in each host, routed to the other one's
    through kvx0; returns the namespaces (removed by the caller)."""
    made = []
    for i, (host, net, peer_net, peer_vx) in enumerate(
            ((cluster.hosts[0], HOP_NETS[0], HOP_NETS[1], KERNEL_VXLAN[1]),
             (cluster.hosts[1], HOP_NETS[1], HOP_NETS[0], KERNEL_VXLAN[0]))):
        name, ns = f"kvc{i}{cluster.tag}", ("ip", "-n", host.netns)
        sh("ip", "netns", "add", name)
        made.append(name)
        sh(*ns, "link", "add", "kvh0", "mtu", "1450", "type", "veth", "peer", "name",
           "eth0", "mtu", "1450", "netns", name)
        sh(*ns, "addr", "add", f"{net}.1/24", "dev", "kvh0")
        sh(*ns, "link", "set", "kvh0", "up")
        sh(*ns, "route", "add", f"{peer_net}.0/24", "via", peer_vx, "dev", "kvx0")
        sh("ip", "-n", name, "addr", "add", f"{net}.2/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "route", "add", "default", "via", f"{net}.1")
        sh("ip", "netns", "exec", host.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    return made


def main() -> None:
    cluster = Cluster(2, Path(tempfile.mkdtemp(prefix="ciliumpy-bench-")))
    servers, hop_ns = [], []
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
        hop_ns = veth_hops(cluster)
        h1_ns, h2_ns = (["nsenter", f"--net=/run/netns/{h.netns}"] for h in cluster.hosts)
        contenders = {
            "underlay (limit)": (h1_ns, h2_ns, h2.ip),
            "kernel VXLAN device": (h1_ns, h2_ns, KERNEL_VXLAN[1]),
            "kernel VXLAN + veth hop each side": (
                ["nsenter", f"--net=/run/netns/{hop_ns[0]}"],
                ["nsenter", f"--net=/run/netns/{hop_ns[1]}"], f"{HOP_NETS[1]}.2"),
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
        for name in hop_ns:
            sh("ip", "netns", "del", name, check=False)
        cluster.stop()
    rows = ratio_rows(results, ["underlay (limit)", "kernel VXLAN device",
                                "kernel VXLAN + veth hop each side"])
    write_table("overlay", "iperf3 across two hosts: ciliumpy VXLAN vs kernel VXLAN vs "
                "underlay (Gbit/s)", ["path", "median", "min-max", "x underlay",
                                      "x kernel VXLAN", "x kernel VXLAN + veth hop"], rows,
                [f"{RUNS} interleaved rounds of {SECONDS} s, single TCP stream, server on "
                 "CPU 0, client on CPU 1, hosts are network namespaces on one 2-core VM",
                 "goal: ciliumpy VXLAN >= kernel VXLAN (docs/benchmarks.md: kernel VXLAN = 0.77x "
                 "underlay); the device's iperf3 runs in the host itself, ciliumpy's in "
                 "containers: the veth-hop row is the same device reached from behind a "
                 "routed veth pair, what the container hop costs without ciliumpy",
                 "container MTU 1450 (underlay 1500 minus 50 bytes of encapsulation); the "
                 "kernel VXLAN device also runs at 1450"])


if __name__ == "__main__":
    main()
