"""Per-container egress bandwidth limits (issue: bandwidth limits): how close each
shaper holds a saturating TCP sender to the limit, the ping RTT under that load, and
the CPU it costs, at 10 Mbit/s, 100 Mbit/s and 1 Gbit/s, three shapers in one run:

- ``ciliumpy``: the client container runs with the label
  ``kubernetes.io/egress-bandwidth=<limit>`` (10M, 100M, 1G); ciliumpy shapes its
  ``eth0`` with its flow-queued HTB (``htb-flowqueue``, datapath/shaper.py);
- ``tbf``: what the Kubernetes bandwidth CNI plugin installs: TBF with the plugin's
  ``latency 25ms``, ``rate`` = the limit, ``burst`` = limit/8/250 bytes (one 4 ms tick
  at HZ=250, tc-tbf's rule ``burst >= rate/HZ``; 5 kB at 10M, 500 kB at 1G), at least
  two full frames. The CNI puts its egress TBF on the host veth through an ifb, which
  this kernel lacks, so it sits on the client's own ``eth0`` root, the same queue
  position; TBF software-segments GSO packets larger than the burst;
- ``htb``: one HTB class at the limit on the same ``eth0`` (tc's default burst, the
  default pfifo leaf).

The tbf/htb client is one container without a bandwidth label whose qdisc is replaced
per configuration; each ciliumpy limit has its own labelled client. The peer runs a
fresh ``iperf3 -s -1`` per measurement; every tool is a host binary run in a
container's netns (``nsenter``).
Per (limit, streams, shaper), interleaved, ``RUNS`` times: iperf3 ``-t 5 -O 1`` (1 s
omitted, then 5 s) with 1 and 8 streams, and from 1.25 s on a busybox ping every 20 ms
from the client to the peer. Measured over the saturated window (1.25 s after launch
until 0.25 s before iperf3 exits), from samples every 50 ms:

- wire rate: the frames (L2 header, no FCS) that arrived in the peer's netns, from its
  IP counters (/proc/<pid>/net/snmp and netstat: bytes, packets, and segments, which
  count a GSO/GRO packet per segment), i.e. the bytes a shaper counts. A veth's
  ``rx_bytes`` would not do: it counts a GSO packet's headers once, about 4.4% short
  at full rate. Shown as a fraction of the limit, next to iperf3's goodput (receiver
  side, 1448 of every 1514 wire bytes at MTU 1500);
- RTT: each reply's ``time=`` (p50, p99) and the share of pings without a reply;
- CPU: busy jiffies of /proc/stat (user+nice+system+irq+softirq, all CPUs) less the
  idle machine's rate (its quietest second before the runs), per Gbit on the wire, in
  CPU-seconds.

The bench runs its own agent under the plugin name ``cpybench`` (like bench.l7) and
removes what it started, by id, on the way out. Results: results/bandwidth.md.

    .venv/bin/python -m bench.bandwidth [RUNS]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import docker, percentile, start_agent, summary, tear_down, write_table
from bench.l7 import IMAGE, PLUGIN, PLUGIN_SOCKET, stop_process

SUBNET = "10.98.0.0/16"
LIMITS = (10**7, 10**8, 10**9)
STREAMS = (1, 8)
CILIUMPY, TBF, HTB = "ciliumpy", "tbf", "htb"
MODES = (CILIUMPY, TBF, HTB)
RUNS, SECONDS, OMIT = 3, 5, 1
PING_INTERVAL, SAMPLE_INTERVAL, SETTLE = 0.02, 0.05, 0.25
IPERF_PORT = 5201
TBF_LATENCY = "25ms"  # the bandwidth CNI plugin's latencyInMillis
FRAME, ETHERNET, IP_TCP_HEADERS = 1514, 14, 20 + 32
CLK_TCK = os.sysconf("SC_CLK_TCK")


def quantity(bps: int) -> str:
    """10**7 -> "10M": the label value, as Kubernetes writes it."""
    for suffix, unit in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if bps % unit == 0:
            return f"{bps // unit}{suffix}"
    return str(bps)


def tbf_burst(bps: int) -> int:
    """TBF's burst in bytes: one 4 ms tick at the rate, at least two full frames."""
    return max(bps // 8 // 250, 2 * FRAME)


def busy_jiffies() -> int:
    with open("/proc/stat") as handle:
        user, nice, system, _idle, _iowait, irq, softirq = (
            int(x) for x in handle.readline().split()[1:8])
    return user + nice + system + irq + softirq


def counters(path: str, prefix: str) -> dict[str, int]:
    """One protocol's counters of /proc/<pid>/net/snmp or netstat (name -> value)."""
    with open(path) as handle:
        rows = [line.split() for line in handle if line.startswith(prefix)]
    return dict(zip(rows[0][1:], (int(x) for x in rows[1][1:]), strict=True))


def wire_bytes(pid: int) -> int:
    """Every L2 frame (no FCS) received so far in ``pid``'s netns, as a shaper counts
    them: IP bytes, plus the IP and TCP (with timestamps) headers of each segment of a
    GSO/GRO packet but its first, plus an Ethernet header per segment."""
    ext = counters(f"/proc/{pid}/net/netstat", "IpExt:")
    skbs = counters(f"/proc/{pid}/net/snmp", "Ip:")["InReceives"]
    segs = sum(ext[k] for k in ("InNoECTPkts", "InECT1Pkts", "InECT0Pkts", "InCEPkts"))
    return ext["InOctets"] + (segs - skbs) * IP_TCP_HEADERS + segs * ETHERNET


def sampler(pid: int, samples: list[tuple[float, int, int]], stop: threading.Event) -> None:
    """(time, wire bytes into ``pid``'s netns, busy jiffies) every SAMPLE_INTERVAL."""
    while not stop.is_set():
        samples.append((time.monotonic(), wire_bytes(pid), busy_jiffies()))
        stop.wait(SAMPLE_INTERVAL)


def window(samples: list[tuple[float, int, int]], start: float, end: float
           ) -> tuple[float, int, float]:
    """Seconds, wire bytes and busy CPU-seconds between the first and last sample
    inside [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        raise RuntimeError(f"{len(inside)} samples in the measuring window")
    (t0, b0, j0), (t1, b1, j1) = inside[0], inside[-1]
    return t1 - t0, b1 - b0, (j1 - j0) / CLK_TCK


def idle_rate(quiet: float = 0.05, tries: int = 20) -> float:
    """Busy CPU-seconds per second of the machine at rest: the quietest of up to
    ``tries`` 1 s windows, stopping at the first one under ``quiet``."""
    rates = []
    for _ in range(tries):
        start, jiffies = time.monotonic(), busy_jiffies()
        time.sleep(1)
        rates.append((busy_jiffies() - jiffies) / CLK_TCK / (time.monotonic() - start))
        if rates[-1] < quiet:
            break
    return min(rates)


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in ``pid``'s netns (IPv4 or IPv6)."""
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{name}") as handle:
            for line in list(handle)[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def nsenter(pid: int, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["nsenter", "-t", str(pid), "-n", *args], capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-bandwidth-"))
        os.chmod(self.tmp, 0o755)
        self.agent = None
        self.network: str | None = None
        self.containers: list[str] = []
        self.clients: dict[str, int] = {}  # "plain" or "ciliumpy <limit>" -> pid
        self.server_pid = 0
        self.shaper_seen: dict[int, str] = {}  # ciliumpy limit -> root qdisc on eth0
        self.idle_cpu = 0.0  # busy CPU-seconds per second with nothing running

    def start(self) -> None:

        self.agent = start_agent(self.tmp, PLUGIN_SOCKET)
        self.network = docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                              "--subnet", SUBNET, f"cpybench-bw-{uuid.uuid4().hex[:6]}")
        labels = {"server": [], "plain": []}
        for limit in LIMITS:
            labels[f"{CILIUMPY} {limit}"] = [
                "-l", f"kubernetes.io/egress-bandwidth={quantity(limit)}"]
        ids = {}
        for key, extra in labels.items():
            ids[key] = docker("run", "-d", "--network", self.network, "-l",
                              f"app=bw-{key.split()[0]}", *extra, IMAGE, "sleep", "3600")
            self.containers.append(ids[key])
        pids = {key: int(docker("inspect", "-f", "{{.State.Pid}}", cid))
                for key, cid in ids.items()}
        self.server_ip = docker("inspect", "-f",
                                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                ids["server"])
        self.wait_endpoints(set(ids.values()))  # `docker run -d` prints full ids
        self.server_pid = pids.pop("server")
        self.clients = pids
        self.wait_shapers()
        self.idle_cpu = idle_rate()

    def wait_endpoints(self, containers: set[str]) -> None:
        """Until every container's endpoint has an identity."""
        deadline = time.time() + 30
        while True:
            found = {e["container_id"] for e in self.agent.api("/v1/endpoints")
                     if e["container_id"] in containers and (e.get("identity") or 0) >= 256}
            if found == containers:
                return
            if time.time() > deadline:
                raise RuntimeError(f"endpoints without identities: {containers - found}")
            time.sleep(0.1)

    def wait_shapers(self, timeout: float = 10) -> None:
        """Waits (up to ``timeout``) for ciliumpy's HTB on the labelled clients' eth0;
        records each one's root qdisc ("htb c1:", "noqueue 0:", ...), shaper or not."""
        deadline = time.time() + timeout
        for limit in LIMITS:
            while True:
                shown = nsenter(self.clients[f"{CILIUMPY} {limit}"], "tc", "qdisc", "show",
                                "dev", "eth0")
                root = next((" ".join(line.split()[1:3]) for line in shown.splitlines()
                             if " root " in line), "none")
                if root.startswith("htb c1:") or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.shaper_seen[limit] = root

    def stop(self) -> None:
        tear_down(self.containers, self.network, self.agent, self.tmp)

    def shape(self, mode: str, limit: int) -> int:
        """Sets up ``mode`` at ``limit``; the pid of the client to measure."""
        if mode == CILIUMPY:
            return self.clients[f"{CILIUMPY} {limit}"]
        pid = self.clients["plain"]
        nsenter(pid, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        if mode == TBF:
            nsenter(pid, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
                    f"{limit}bit", "burst", str(tbf_burst(limit)), "latency", TBF_LATENCY)
        else:
            nsenter(pid, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb",
                    "default", "1")
            nsenter(pid, "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid",
                    "1:1", "htb", "rate", f"{limit}bit")
        return pid

    def start_server(self) -> subprocess.Popen:
        """A one-test iperf3 server (``-1``) in the peer's netns, once it listens: a
        fresh one per measurement, never one still closing the previous test."""
        with open(self.tmp / "iperf3-server.log", "a") as log:
            server = subprocess.Popen(
                ["nsenter", "-t", str(self.server_pid), "-n", "iperf3", "-s", "-1"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not listening(self.server_pid, IPERF_PORT):
            if server.poll() is not None or time.time() > deadline:
                stop_process(server)
                tail = (self.tmp / "iperf3-server.log").read_text()[-800:]
                raise RuntimeError(f"iperf3 server did not listen: {tail}")
            time.sleep(0.02)
        return server

    def measure(self, pid: int, streams: int) -> dict[str, float]:
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()
        thread = threading.Thread(target=sampler, args=(self.server_pid, samples, stop))
        thread.start()
        count = int((SECONDS - 2 * SETTLE) / PING_INTERVAL)  # the window's length
        ping = server = client = None
        try:
            server = self.start_server()
            launched = time.monotonic()
            client = subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", "iperf3", "-c", self.server_ip, "-t",
                 str(SECONDS), "-O", str(OMIT), "-P", str(streams), "-J"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(OMIT + SETTLE)
            ping = subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", "busybox", "ping", "-i", str(PING_INTERVAL),
                 "-c", str(count), "-W", "2", self.server_ip],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = client.communicate(timeout=SECONDS + OMIT + 60)
            ended = time.monotonic()
            if client.returncode != 0 or ended - launched < SECONDS + OMIT:
                raise RuntimeError(f"iperf3 -P {streams} (rc {client.returncode}, "
                                   f"{ended - launched:.2f} s): {out[-1500:]} {err[-800:]}"
                                   + (self.tmp / "iperf3-server.log").read_text()[-800:])
            pings, _ = ping.communicate(timeout=15)
        finally:
            stop.set()
            thread.join()
            if server is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(3)  # a one-test server exits by itself
            for proc in (client, ping, server):
                if proc is not None:
                    stop_process(proc)
        elapsed, wire, cpu = window(samples, launched + OMIT + SETTLE, ended - SETTLE)
        rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", pings)]
        if not rtts:
            raise RuntimeError(f"no ping replies: {pings[-400:]}")
        gbits = wire * 8 / 1e9
        return {"wire": wire * 8 / elapsed,
                "goodput": json.loads(out)["end"]["sum_received"]["bits_per_second"],
                "p50": percentile(rtts, 50), "p99": percentile(rtts, 99),
                "loss": 100 * (1 - len(rtts) / count),
                "cpu": (cpu - self.idle_cpu * elapsed) / gbits}


@contextlib.contextmanager
def running() -> Iterator[Bench]:
    bench = Bench()
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()


Key = tuple[int, int, str]  # (limit, streams, mode)


def main(runs: int = RUNS) -> str:
    results: dict[Key, list[dict[str, float]]] = {
        (limit, streams, mode): [] for limit in LIMITS for streams in STREAMS
        for mode in MODES}
    started = time.monotonic()
    with running() as bench:
        for _ in range(runs):
            for limit in LIMITS:  # interleaved: drift hits every shaper alike
                for mode in MODES:
                    pid = bench.shape(mode, limit)
                    for streams in STREAMS:
                        results[limit, streams, mode].append(bench.measure(pid, streams))
        shapers, idle = dict(bench.shaper_seen), (bench.idle_cpu, idle_rate(tries=5))
    return report(results, runs, shapers, idle, time.monotonic() - started)


def fmt(runs: list[dict[str, float]], metric: str, scale: float = 1, digits: int = 2) -> str:
    med, low, high = summary([r[metric] / scale for r in runs])
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def report(results: dict[Key, list[dict[str, float]]], runs: int, shapers: dict[int, str],
           idle: tuple[float, float], elapsed: float) -> str:
    def med(key: Key, metric: str) -> float:
        return summary([r[metric] for r in results[key]])[0]

    rows, off, rtt_goal, cpu_goal = [], [], [], []
    for (limit, streams, mode), samples in results.items():
        name, frac = f"{quantity(limit)} x{streams}", med((limit, streams, mode), "wire") / limit
        if abs(frac - 1) > 0.05:
            off.append(f"{name} {mode} {frac:.3f}")
        ratios = ["-", "-"]
        if mode == CILIUMPY:
            x = {(metric, base): med((limit, streams, mode), metric)
                 / med((limit, streams, base), metric)
                 for metric in ("p99", "cpu") for base in (TBF, HTB)}
            ratios = [f"{x[m, TBF]:.2f}x / {x[m, HTB]:.2f}x" for m in ("p99", "cpu")]
            rtt_goal.append(f"{name} {x['p99', TBF]:.2f}x" + " FAIL" * (x["p99", TBF] > 0.5))
            cpu_goal.append(f"{name} {x['cpu', TBF]:.2f}x" + " FAIL" * (x["cpu", TBF] > 1))
        rows.append([quantity(limit), str(streams), mode, fmt(samples, "wire", limit, 3),
                     fmt(samples, "wire", 1e6, 1), fmt(samples, "goodput", 1e6, 1),
                     fmt(samples, "p50"), fmt(samples, "p99"), fmt(samples, "loss", digits=1),
                     fmt(samples, "cpu"), *ratios])

    def goal(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    notes = [
        "goal wire rate within 5% of the limit in every case: "
        + (goal(True) if not off else "FAIL: " + ", ".join(off)),
        "goal ciliumpy RTT p99 under load <= 0.5x TBF's: " + ", ".join(rtt_goal)
        + f" -> {goal(not any('FAIL' in g for g in rtt_goal))}",
        "goal ciliumpy CPU per Gbit <= TBF's: " + ", ".join(cpu_goal)
        + f" -> {goal(not any('FAIL' in g for g in cpu_goal))}",
        "ciliumpy clients' root qdisc on eth0 when the runs began: " + ", ".join(
            f"{quantity(limit)}: {root}" for limit, root in shapers.items())
        + " (ciliumpy's shaper is `htb c1:`; anything else means the label did not shape)",
        f"{runs} runs per configuration, interleaved; median (min-max); ratios are of "
        "medians, x TBF / x HTB",
        f"iperf3 TCP ({cc}, the host's default) client container -> peer container on "
        f"one ciliumpy network, -t {SECONDS} -O {OMIT}; wire rate = L2 frames into "
        "the peer's netns (its IP counters, per segment) over the saturated window (from "
        "1.25 s after launch to 0.25 s before iperf3 exits), Mbit/s; goodput = iperf3's "
        "receiver sum (1448 of every 1514 wire bytes at MTU 1500)",
        f"RTT: busybox ping every {PING_INTERVAL * 1e3:.0f} ms from the client to the "
        "peer during the window, ms; loss = pings without a reply",
        "CPU: busy jiffies in /proc/stat over the window, all CPUs, less the idle "
        f"machine's {idle[0]:.3f} CPU-s/s (its quietest second before the runs; "
        f"{idle[1]:.3f} after them), in CPU-seconds per Gbit on the wire (a window carries "
        "0.045 Gbit at 10M, 0.45 at 100M: those rows are noisy)",
        f"tbf: rate = limit, burst = limit/8/250 bytes (>= {2 * FRAME}), latency "
        f"{TBF_LATENCY}, on the client's eth0 root (no ifb on this kernel); htb: "
        "one class rate = ceil = limit, tc's default burst, default pfifo leaf",
        f"the whole bench took {elapsed:.0f} s",
    ]
    return write_table(
        "bandwidth", "Egress bandwidth limits: ciliumpy vs TBF (bandwidth CNI) vs HTB",
        ["limit", "streams", "shaper", "wire / limit", "wire Mbit/s", "goodput Mbit/s",
         "RTT p50 ms", "RTT p99 ms", "ping loss %", "CPU-s / Gbit",
         "RTT p99 x TBF / x HTB", "CPU x TBF / x HTB"], rows, notes)


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:]))
