"""Load balancing (issue: load balancing in BPF): new TCP connections per second through
a service VIP with N = 1, 100, 1,000 and 10,000 services, in one run:

- ``ciliumpy``: N services created through the agent API (``ciliumpy service``; the
  measured one has two backends, the others one each, Maglev size 251 so that 10,000
  tables fit the slot map); connect() is translated by the socket hooks;
- ``iptables``: the chains kube-proxy writes in iptables mode (``KUBE-SERVICES`` with
  one rule per service jumping to a ``KUBE-SVC-*`` chain whose ``statistic --mode
  random`` rules pick a ``KUBE-SEP-*`` chain that DNATs), loaded with iptables-restore
  into the nat table of the client's namespace (OUTPUT: the client's own connections
  walk them as a pod's would in the host's PREROUTING); the measured service sits in
  the middle of ``KUBE-SERVICES``, where a service lands on average. OUTPUT jumps to
  ``KUBE-SERVICES`` only while iptables is measured: the other contenders' connections
  would walk the N rules too (the first runs measured ciliumpy and direct at 10,000
  services 40% slower for that), a cost that a node without kube-proxy does not pay;
- ``direct``: the client connects to one backend's address (no load balancing);
- ``ipvs``: reported as unavailable when the kernel has no IP_VS (this one: not set).

The load generator is one process in the client container's namespace making short
connections for ``SECONDS`` (connect, wait for the server's close, close); each backend
runs an accept-and-close server in its namespace. Contenders are interleaved round by
round, ``RUNS`` rounds. Results: results/lb.md. The bench runs its own agent under the
plugin name ``cpybench`` and removes what it made, by id.

    .venv/bin/python -m bench.lb [RUNS] [N,N,...]
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import docker, start_agent, summary, tear_down, write_table
from bench.l7 import IMAGE, PLUGIN, PLUGIN_SOCKET, stop_process
from ciliumpy.apiclient import call

COUNTS = (1, 100, 1000, 10000)
SECONDS = 4.0
PORT = 8080
VIP = "10.97.0.1"
IPT_VIP = "10.98.0.1"

SERVER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(4096)
while True:
    try:
        c, _ = s.accept()
        c.close()
    except OSError:
        pass
"""

CLIENT = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
done = failed = 0
end = time.perf_counter() + seconds
start = time.perf_counter()
while time.perf_counter() < end:
    s = socket.socket()
    try:
        s.connect((host, port))
        s.recv(1)
        done += 1
    except OSError:
        failed += 1
    finally:
        s.close()
print(done / (time.perf_counter() - start), failed)
"""


def pid_of(container: str) -> int:
    return json.loads(docker("inspect", container))[0]["State"]["Pid"]


def in_netns(pid: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *args], capture_output=True,
                          text=True, **kwargs)


def kernel_has_ipvs() -> bool:
    try:
        with gzip.open("/proc/config.gz", "rt") as handle:
            return any(line.startswith("CONFIG_IP_VS=") for line in handle)
    except OSError:
        return Path("/proc/net/ip_vs").exists()


def iptables_rules(count: int, backends: list[str]) -> str:
    """kube-proxy's nat chains for ``count`` services; the measured one in the middle."""
    lines = ["*nat", ":KUBE-SERVICES - [0:0]"]
    rules = []
    for index in range(count):
        vip = IPT_VIP if index == count // 2 else (
            f"10.99.{(index >> 8) & 255}.{index & 255}")
        chosen = backends if vip == IPT_VIP else backends[:1]
        svc = f"KUBE-SVC-{index:08d}"
        lines.append(f":{svc} - [0:0]")
        rules.append(f"-A KUBE-SERVICES -d {vip}/32 -p tcp -m tcp --dport {PORT} -j {svc}")
        for position, backend in enumerate(chosen):
            sep = f"KUBE-SEP-{index:08d}{position}"
            lines.append(f":{sep} - [0:0]")
            left = len(chosen) - position
            pick = (f"-m statistic --mode random --probability {1 / left:.11f} "
                    if left > 1 else "")
            rules.append(f"-A {svc} {pick}-j {sep}")
            rules.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {backend}:{PORT}")
    return "\n".join(lines + rules + ["COMMIT", ""])  # OUTPUT's jump: see kube_proxy()


def kube_proxy(client_pid: int, on: bool) -> None:
    """Whether the client's connections walk ``KUBE-SERVICES`` (only iptables' rounds)."""
    proc = in_netns(client_pid, "iptables", "-t", "nat", "-A" if on else "-D", "OUTPUT",
                    "-j", "KUBE-SERVICES", timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables: {proc.stderr[-500:]}")


# Each contender's client ports come from its own range. The servers close first, so
# they keep a TIME_WAIT socket per client port; a SYN reusing that port is accepted only
# if its TCP timestamp is newer, and the kernel offsets timestamps per (source,
# destination) address: the same for direct and ciliumpy connections (the socket hook
# rewrites the destination before connect() picks the offset), another for iptables'
# (DNAT after it). A port last used by another contender could be refused until its
# TIME_WAIT ended: 1 s SYN retransmits, once a 63 s stall of a whole round.
PORT_RANGES = {"direct": (10000, 29999), "ciliumpy": (30000, 49999),
               "iptables": (50000, 64999)}


def measure(client_pid: int, host: str, contender: str) -> float:
    low, high = PORT_RANGES[contender]
    ports = in_netns(client_pid, "sysctl", "-w", f"net.ipv4.ip_local_port_range={low} {high}",
                     timeout=60)
    if ports.returncode != 0:
        raise RuntimeError(f"sysctl: {ports.stderr[-500:]}")
    proc = in_netns(client_pid, "python3", "-c", CLIENT, host, str(PORT), str(SECONDS),
                    timeout=SECONDS + 60)
    rate, failed = proc.stdout.split()
    if int(failed) > int(float(rate) * SECONDS * 0.01):
        raise RuntimeError(f"{failed} connections to {host} failed: {proc.stderr[-500:]}")
    return float(rate)


def create_services(api: str, start: int, stop: int, backends: list[str]) -> None:
    """Through the agent API (the CLI's own call; starting the CLI 10,000 times would
    measure Python's start-up)."""
    for index in range(start, stop):
        listed = backends if index == 0 else backends[:1]
        vip = VIP if index == 0 else f"10.95.{(index >> 8) & 255}.{index & 255}"
        call(f"/v1/services/lb-{index}", "PUT",
             {"name": f"lb-{index}", "frontend": f"{vip}:{PORT}",
              "backends": [f"{b}:{PORT}" for b in listed], "maglev_size": 251},
             socket_path=api, timeout=60)


def wait_programmed(api: str, count: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 600:
        services = call("/v1/status", socket_path=api, timeout=60).get("services") or {}
        if services.get("programmed") == count:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"{count} services never programmed")


def main(runs: int = 3, counts: tuple[int, ...] = COUNTS) -> None:
    # a SIGTERM (timeout, Ctrl-C of make) still removes the agent and containers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-lb-"))
    agent, network, containers, servers = None, None, [], []
    try:
        agent = start_agent(tmp, PLUGIN_SOCKET)
        api = agent.api_socket
        network = "cpybench-lb-" + uuid.uuid4().hex[:6]
        docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
               "--subnet", "10.96.200.0/24", network)
        containers = [docker("run", "-d", "--network", network, IMAGE, "sleep", "3600")
                      for _ in range(3)]
        backend_ids, client = containers[:2], containers[2]
        backends = [json.loads(docker("inspect", c))[0]["NetworkSettings"]["Networks"][
            network]["IPAddress"] for c in backend_ids]
        for container in backend_ids:
            servers.append(subprocess.Popen(["nsenter", "-t", str(pid_of(container)), "-n",
                                             "python3", "-c", SERVER]))
        client_pid = pid_of(client)
        time.sleep(1)
        ipvs = kernel_has_ipvs()
        rows, setup = [], {}
        created = 0
        for count in counts:
            started = time.monotonic()
            create_services(api, created, count, backends)
            created = count
            setup[count] = time.monotonic() - started + wait_programmed(api, count)
            rules = iptables_rules(count, backends)
            loaded = in_netns(client_pid, "iptables-restore", input=rules, timeout=300)
            if loaded.returncode != 0:
                raise RuntimeError(f"iptables-restore: {loaded.stderr[-500:]}")
            results: dict[str, list[float]] = {"direct": [], "ciliumpy": [], "iptables": []}
            for _ in range(runs):
                results["direct"].append(measure(client_pid, backends[0], "direct"))
                results["ciliumpy"].append(measure(client_pid, VIP, "ciliumpy"))
                kube_proxy(client_pid, True)
                try:
                    results["iptables"].append(measure(client_pid, IPT_VIP, "iptables"))
                finally:
                    kube_proxy(client_pid, False)
            med = {name: summary(values) for name, values in results.items()}
            rows.append([f"{count:,}"] + [
                f"{med[n][0]:,.0f} ({med[n][1]:,.0f}-{med[n][2]:,.0f})"
                for n in ("direct", "ciliumpy", "iptables")] + [
                "available" if ipvs else "n/a (no IP_VS)",
                f"{med['ciliumpy'][0] / med['iptables'][0]:.2f}x",
                f"{med['ciliumpy'][0] / med['direct'][0]:.2f}x",
                f"{setup[count]:.1f} s"])
            print(rows[-1], flush=True)
        base = float(rows[0][2].split()[0].replace(",", ""))
        flat = [float(r[2].split()[0].replace(",", "")) / base for r in rows]
        # the same against direct, measured in the same rounds: less of the machine's drift
        base_direct = float(rows[0][6].rstrip("x"))
        flat_direct = [float(r[6].rstrip("x")) / base_direct for r in rows]
        write_table(
            "lb", "New TCP connections per second through a service (socket LB)",
            ["services", "direct conn/s", "ciliumpy conn/s", "iptables (kube-proxy) conn/s",
             "ipvs", "ciliumpy / iptables", "ciliumpy / direct", "ciliumpy setup"], rows,
            [f"medians of {runs} interleaved rounds of {SECONDS:g} s (min-max); one Python "
             "client in a container making short connections (connect, server's close, "
             "close) to two backends' accept-and-close servers",
             "ciliumpy at N relative to N=1: " + ", ".join(
                 f"{c:,}: {f:.2f}" for c, f in zip(counts, flat, strict=True)),
             "ciliumpy / direct at N relative to N=1: " + ", ".join(
                 f"{c:,}: {f:.2f}" for c, f in zip(counts, flat_direct, strict=True)),
             "iptables: OUTPUT jumps to KUBE-SERVICES only during its own rounds; each "
             "contender's client uses its own range of source ports (TIME_WAIT reuse "
             "across contenders stalled connections)",
             "goals: >= 1.7x iptables at 10,000 services; flat within 5% from 1 to 10,000; "
             ">= direct-to-backend within 5%",
             "ipvs: this kernel is built without CONFIG_IP_VS, so it cannot be measured"
             if not ipvs else "ipvs: not measured by this bench yet",
             "setup: creating the services through the API until every one is programmed"])
    finally:
        for server in servers:
            stop_process(server)
        tear_down(containers, network, agent, tmp)  # the services go with its state


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
         tuple(int(n) for n in sys.argv[2].split(",")) if len(sys.argv) > 2 else COUNTS)
