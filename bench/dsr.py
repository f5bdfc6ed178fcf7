"""Direct server return (issue 13): a service on host1's own address whose backend is
a container on host2, reached by a client on the underlay, against the same container
reached through a port published on host2 itself (no balancing hop), in the same run.

Two hosts-in-namespaces on one underlay bridge (tests/support/hosts.py), agents in
VXLAN and then native-routing mode. Per mode and round (contenders interleaved): a
``BIG_MIB`` MiB download and ``SMALL`` sequential small requests from the underlay
client (Python urllib, one connection each), and the bytes each host's underlay device
sent while the frontend was asked. With DSR, host1 only forwards the client's packets;
host2 answers the client directly, from host1's address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import summary, write_table
from tests.support.hosts import Cluster, in_netns

RUNS, BIG_MIB, SMALL = 5, 8, 100
CLIENT = """
import sys, time, urllib.request as u
url, count = sys.argv[1], int(sys.argv[2])
started = time.perf_counter()
size = len(u.urlopen(url + "/big", timeout=30).read())
big = time.perf_counter() - started
times = []
for _ in range(count):
    t = time.perf_counter()
    u.urlopen(url + "/", timeout=10).read()
    times.append(time.perf_counter() - t)
times.sort()
print(size, big, times[len(times) // 2])
"""


def tx_bytes(netns: str) -> int:
    out = subprocess.run(["ip", "-n", netns, "-j", "-s", "link", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def fetch(cluster: Cluster, url: str) -> tuple[float, float]:
    """(MiB/s of the big download, median ms of a small request) from the underlay."""
    out = in_netns(cluster.underlay, sys.executable, "-c", CLIENT, url, str(SMALL),
                   timeout=300).stdout.split()
    size, big, small = int(out[0]), float(out[1]), float(out[2])
    assert size == BIG_MIB << 20, f"{url}: {size} bytes"
    return size / big / 2**20, small * 1000


def measure(mode: str) -> dict[str, dict[str, list[float]]]:
    cluster = Cluster(2, Path(tempfile.mkdtemp(prefix="ciliumpy-bench-")))
    try:
        cluster.start()
        cluster.start_agents(mode)
        h1, h2 = cluster.hosts
        for host in cluster.hosts:
            host.docker.network_create("cpy-dsr", "--subnet", "10.93.0.0/16")
        backend = h2.run("cpy-dsr", "-l", "app=dsrbench", "-p", "18081:80", command=(
            "sh", "-c", "mkdir -p /tmp/w && echo ok > /tmp/w/index.html && dd if=/dev/urandom "
            f"of=/tmp/w/big bs=1M count={BIG_MIB} 2>/dev/null && exec httpd -f -p 80 -h /tmp/w"))
        env = {"CILIUMPY_API_SOCKET": h1.agent.api_socket}
        subprocess.run([sys.executable, "-m", "ciliumpy", "service", "create", "dsrbench",
                        "--frontend", f"{h1.ip}:18090", "--selector", "app=dsrbench",
                        "--target-port", "80"], check=True, capture_output=True,
                       env={**os.environ, **env})
        contenders = {"DSR: host1's address, backend on host2": f"http://{h1.ip}:18090",
                      "published port on host2 (no balancing hop)": f"http://{h2.ip}:18081"}
        deadline = time.monotonic() + 30
        while True:  # the service and the published port answer
            try:
                for url in contenders.values():
                    fetch(cluster, url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        results = {name: {"mibs": [], "ms": [], "host1": []} for name in contenders}
        for _ in range(RUNS):
            for name, url in contenders.items():
                before = tx_bytes(h1.netns)
                mibs, ms = fetch(cluster, url)
                results[name]["mibs"].append(mibs)
                results[name]["ms"].append(ms)
                results[name]["host1"].append((tx_bytes(h1.netns) - before)
                                              / (BIG_MIB << 20) * 100)
        del backend
        return results
    finally:
        cluster.stop()


def main() -> str:
    rows = []
    for mode in ("vxlan", "native"):
        results = measure(mode)
        direct = "published port on host2 (no balancing hop)"
        for name, values in results.items():
            mibs, ms, host1 = (summary(values[key]) for key in ("mibs", "ms", "host1"))
            ratio = summary([a / b for a, b in zip(values["mibs"], results[direct]["mibs"],
                                                   strict=True)])
            rows.append([mode, name, f"{mibs[0]:.0f} ({mibs[1]:.0f}-{mibs[2]:.0f})",
                         f"{ratio[0]:.2f}x", f"{ms[0]:.2f} ({ms[1]:.2f}-{ms[2]:.2f})",
                         f"{host1[0]:.1f}% ({host1[1]:.1f}-{host1[2]:.1f})"])
    return write_table(
        "dsr", "Direct server return: a frontend on host1, its backend on host2",
        ["mode", "path", f"{BIG_MIB} MiB download MiB/s", "vs published port on host2",
         "small request ms (median of 100)", "bytes host1 sent / bytes served"], rows,
        notes=[f"median (min-max) of {RUNS} rounds, contenders interleaved round by round; "
               "client: Python urllib in a namespace on the underlay bridge; backend: "
               "busybox httpd in a container on host2",
               "DSR path: client -> host1 (from_netdev: Maglev pick, DNAT, IP option, "
               "into the overlay or routed) -> host2 (learns the frontend) -> client "
               "directly, from host1's address; published-port path: client -> host2 -> "
               "client",
               "goal (issue 13): replies go straight back to the client, measured: host1's "
               "share of the bytes is only the client's requests and ACKs it forwards; the "
               "throughput ratio is the cost of that extra hop for the client's packets"])


if __name__ == "__main__":
    main()
