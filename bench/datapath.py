"""Throughput through the BPF datapath at N policy entries, against every baseline in
the same run (issue 5), and the latency of one policy update at N = 100k.

Topology (docs/benchmarks.md): client netns -- veth -- host -- veth -- server netns,
routed by the host. Contenders:
- direct veth pair between two namespaces (no host hop): the limit;
- routed, no filter: the baseline;
- ciliumpy: our tc programs on both host veths, the server's ingress enforced, one
  matching allow entry among N (the others: other identities and ports);
- iptables-nft with N non-matching FORWARD rules; an nftables set of N addresses.
Each point: iperf3 single stream pinned (server CPU 0, client CPU 1), `RUNS` runs of
`SECONDS` s; median with min-max.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

from bench.common import percentile, ratio_rows, write_table
from datapath.datapath import Datapath, PolicyEntry
from tests.support.netns import NetnsEndpoint, sh

RUNS, SECONDS = 5, 3
CLIENT_ID, SERVER_ID = 5000, 5001


def iperf(client: NetnsEndpoint, server_ip: str) -> float:
    out = client.run("taskset", "-c", "1", "iperf3", "-c", server_ip, "-t", str(SECONDS), "-J",
                     check=True, timeout=SECONDS + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def measure(client: NetnsEndpoint, server_ip: str) -> list[float]:
    return [iperf(client, server_ip) for _ in range(RUNS)]


def direct_pair() -> list[float]:
    a, b = f"cpd{uuid.uuid4().hex[:6]}", f"cpd{uuid.uuid4().hex[:6]}"
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0",
           "netns", b)
        for ns, ip in ((a, "10.96.0.1"), (b, "10.96.0.2")):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", b, "taskset", "-c", "0", "iperf3", "-s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        client = NetnsEndpoint(a, "", "10.96.0.1", "")
        try:
            return measure(client, "10.96.0.2")
        finally:
            server.kill()
            server.wait()
    finally:
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)


def add_filler(dp: Datapath, server_if: int, start: int, count: int) -> None:
    """Non-matching entries: other identities, other ports."""
    for i in range(start, start + count):
        dp.add_policy(PolicyEntry(server_if, "ingress", 10000 + i, 6, 1000 + i % 60000))


def filler_address(i: int) -> str:
    """The i-th address of 172.16.0.0/12: sources that never send here."""
    return str(ipaddress.ip_address(int(ipaddress.ip_address("172.16.0.1")) + i))


def iptables_rules(n: int) -> None:
    lines = ["*filter"] + [f"-A FORWARD -s {filler_address(i)}/32 -p tcp --dport 80 -j DROP"
                           for i in range(n)] + ["COMMIT", ""]
    subprocess.run(["iptables-restore", "--noflush"], input="\n".join(lines), text=True,
                   check=True)


def nft_set(n: int) -> None:
    elements = ", ".join(filler_address(i) for i in range(n))
    script = ("table ip cpbench {\n"
              f"  set blk {{ type ipv4_addr; elements = {{ {elements} }}; }}\n"
              "  chain c { type filter hook forward priority 0; "
              "ip saddr @blk tcp dport 80 drop; }\n}\n")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def update_latency(dp: Datapath, server_if: int, count: int = 300) -> list[float]:
    samples = []
    for i in range(count):
        entry = PolicyEntry(server_if, "ingress", 900000 + i, 17, 7000 + i)
        start = time.perf_counter()
        dp.add_policy(entry)
        samples.append(time.perf_counter() - start)
        dp.remove_policy(entry)
    return samples


def main(sizes=(10, 1000, 10000, 100000), iptables_sizes=(10, 1000, 10000)) -> str:
    pin_dir = f"/sys/fs/bpf/ciliumpy-bench-{uuid.uuid4().hex[:6]}"
    os.makedirs(pin_dir)
    dp = Datapath(pin_dir)
    dp.start()
    client = NetnsEndpoint.create("10.97.0.2", "10.97.0.1")
    server = NetnsEndpoint.create("10.97.0.3", "10.97.0.1")
    iperf_server = server.popen("taskset", "-c", "0", "iperf3", "-s")
    results: dict[str, list[float]] = {}
    latency: list[float] = []
    try:
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        time.sleep(0.5)
        results["direct veth pair (limit)"] = direct_pair()
        results["routed, no filter (baseline)"] = measure(client, server.ip)
        for n in iptables_sizes:
            iptables_rules(n)
            try:
                results[f"iptables-nft, {n} rules"] = measure(client, server.ip)
            finally:
                subprocess.run(["iptables", "-F", "FORWARD"], check=True)
        for n in sizes:
            nft_set(n)
            try:
                results[f"nftables set, {n} elements"] = measure(client, server.ip)
            finally:
                subprocess.run(["nft", "delete", "table", "ip", "cpbench"], check=True)
        for ep, identity, ingress in ((client, CLIENT_ID, False), (server, SERVER_ID, True)):
            dp.attach(ep.ifindex)
            dp.set_endpoint(ep.ifindex, identity, ingress, False, ep.mac,
                            [ipaddress.ip_address(ep.ip)])
        dp.add_policy(PolicyEntry(server.ifindex, "ingress", CLIENT_ID, 6, 5201))
        loaded = 1  # the matching entry
        for n in sizes:
            add_filler(dp, server.ifindex, loaded, n - loaded)
            loaded = n
            results[f"ciliumpy, {n} policy entries"] = measure(client, server.ip)
        latency = update_latency(dp, server.ifindex)
    finally:
        iperf_server.kill()
        iperf_server.wait()
        client.delete()
        server.delete()
        dp.stop()
        shutil.rmtree(pin_dir, ignore_errors=True)
    rows = ratio_rows(results, ["routed, no filter (baseline)", "direct veth pair (limit)"])
    rows.append([f"policy update at N={max(sizes)} (one entry, p50 / p99)",
                 f"{percentile(latency, 50) * 1e3:.3f} ms",
                 f"p99 {percentile(latency, 99) * 1e3:.3f} ms", "-", "-"])
    return write_table(
        "datapath", "iperf3 through the datapath vs baselines (Gbit/s)",
        ["contender", "median", "min-max", "x routed baseline", "x direct veth"], rows,
        [f"{RUNS} runs of {SECONDS} s each, single TCP stream, server on CPU 0, client on "
         "CPU 1, one 2-core VM (run-to-run noise here is about +-10%)",
         "ciliumpy delivers established local flows with bpf_redirect_peer (new "
         "connections go through the host so the destination's ingress policy sees them)",
         "goals: >= 1.0x routed baseline, >= 0.95x direct veth, flat within 2% across N; "
         "update <= 10 ms p99 at N=100k",
         "the update latency is the datapath API call (map update) after which the next "
         "packet sees the entry; iptables-nft stops at 10k rules (loading 100k takes minutes)"])


if __name__ == "__main__":
    main() if len(sys.argv) == 1 else main(tuple(int(x) for x in sys.argv[1:]))
