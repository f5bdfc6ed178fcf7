"""Cluster Mesh (issue 18): how fast a container started in cluster b becomes reachable
from cluster a, and how many requests a's agent sends to b's Consul at rest.

Two clusters of one host each (tests/support/mesh.py), each with its own Consul, vxlan.
- Propagation: ``docker run`` in b, then a's agent API polled every 20 ms until a's
  ipcache holds the new address with b's identity and a tunnel to b's host (what a's
  datapath needs to reach it); one sample in ten is also checked with a real ping from
  a's container. p50/p99 over ``SAMPLES`` containers started one after the other.
- Request rate at rest: HTTP requests from a's host to b's Consul, counted by tcpdump on
  the underlay (each GET's first payload bytes), over ``REST_SECONDS`` with few remote
  endpoints and again with ``SAMPLES`` more: watches (blocking queries), not polling,
  so both rates must be about the same.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import percentile, write_table
from tests.support.hosts import wait
from tests.support.mesh import Mesh

SAMPLES, REST_SECONDS = 50, 30
PROPAGATION_GOAL = 5.0  # s: a watch's latency plus docker run, never a resync interval
REST_GOAL = 1.0  # requests/s: four blocking queries of up to 5 s each make 0.8
# TCP payload starting with "GET " to port 8500
GET_FILTER = "tcp dst port 8500 and (tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)"


def requests_at_rest(mesh: Mesh, src: str) -> float:
    """GET requests per second from ``src`` to b's Consul over REST_SECONDS."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{mesh.underlay}", "timeout", str(REST_SECONDS),
         "tcpdump", "-i", "br0", "-n", "-q", "-l", f"src host {src} and dst host "
         f"{mesh.v4(2)} and " + GET_FILTER], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    out, _ = proc.communicate(timeout=REST_SECONDS + 20)
    return len([line for line in out.splitlines() if line.strip()]) / REST_SECONDS


def main() -> None:
    mesh = Mesh(1, Path(tempfile.mkdtemp(prefix="ciliumpy-bench-")))
    times: list[float] = []
    try:
        mesh.start()
        mesh.start_mesh_agents("vxlan")
        (ha,), (hb,) = mesh.cluster_a, mesh.cluster_b
        ha.docker.network_create("cpy-mesh", "--subnet", "10.71.0.0/16")
        hb.docker.network_create("cpy-mesh", "--subnet", "10.72.0.0/16")
        client = ha.run("cpy-mesh")
        first = hb.run("cpy-mesh")
        first_ip = hb.docker.ip(first, "cpy-mesh")
        wait(lambda: ha.exec(client, "ping", "-c1", "-W1", first_ip).returncode == 0, 60,
             "a to reach b")
        time.sleep(5)
        rest_small = requests_at_rest(mesh, ha.ip)
        for i in range(SAMPLES):
            start = time.monotonic()
            container = hb.run("cpy-mesh")
            address = hb.docker.ip(container, "cpy-mesh")

            def programmed(address=address) -> bool:
                return any(e["prefix"] == f"{address}/32" and e["tunnel_ip"]
                           and e["identity"] >> 16 == 2
                           for e in ha.agent.api("/v1/bpf/ipcache"))
            wait(programmed, 30, f"a to program {address}", interval=0.02)
            times.append(time.monotonic() - start)
            if i % 10 == 0:
                assert ha.exec(client, "ping", "-c1", "-W2", address).returncode == 0
        time.sleep(5)
        rest_large = requests_at_rest(mesh, ha.ip)
    finally:
        mesh.stop()
    same = abs(rest_large - rest_small) <= max(0.2, 0.25 * rest_small)
    rows = [["container start in b -> programmed in a (s)", f"{percentile(times, 50):.2f}",
             f"{percentile(times, 99):.2f}", f"{min(times):.2f}-{max(times):.2f}",
             f"p99 < {PROPAGATION_GOAL:.0f} s: "
             + ("met" if percentile(times, 99) < PROPAGATION_GOAL else "NOT met")],
            ["requests/s from a to b's Consul at rest, 2 remote endpoints",
             f"{rest_small:.2f}", "", "", f"<= {REST_GOAL} /s: "
             + ("met" if rest_small <= REST_GOAL else "NOT met")],
            [f"requests/s from a to b's Consul at rest, {SAMPLES + 2} remote endpoints",
             f"{rest_large:.2f}", "", "", "the same as with 2 (watches, not polling): "
             + ("met" if same and rest_large <= REST_GOAL else "NOT met")]]
    write_table("mesh", "Cluster Mesh: propagation across clusters and remote Consul load",
                ["measure", "p50 / value", "p99", "min-max", "goal"], rows,
                [f"{SAMPLES} containers started one after the other in cluster b; the time "
                 "includes `docker run` itself (create, IPAM, endpoint, start), b's identity "
                 "allocation and publication, and a's watch and ipcache write",
                 "one host per cluster, each cluster its own Consul (b's a one-node server), "
                 "hosts are network namespaces on one 2-core VM",
                 f"rest: GET requests counted by tcpdump on the underlay over {REST_SECONDS} s: "
                 "four blocking queries (nodes, endpoints, identities, global services' "
                 "backends), each waiting up to 5 s, independent of the remote cluster's "
                 "size; goal: the same rate with few and with many remote endpoints"])


if __name__ == "__main__":
    main()
