"""Flow events under load (issue: flows / ``ciliumpy observe``): events per second that
reach the flow store and a ``ciliumpy observe -f -o json`` follower, and how many are
lost, at 1k, 5k, 10k and 20k events/s of real traffic; then ``observe --last 1000``
with filters over a full store.

Traffic: a client and a server container (busybox) on a ciliumpy network, an ingress
policy on the server (app=client may reach it, every port) so each new connection
gives the datapath's events: the client's egress trace, the server's ingress policy
verdict and trace. The server is a host-Python accept-and-close loop on 32 ports in
the server's netns; the client is one or more host-Python processes in the client's
netns (``nsenter -n``) opening short TCP connections paced to the target rate, each
closed with a RST (SO_LINGER 0: no TIME_WAIT, no source-port exhaustion; 32 ports keep
5-tuples, hence new conntrack entries, distinct).

The expected count is connections made x events per connection (measured first at 300
connections/s) and lost = expected - delivered, for the store (``/v1/flows/status``
``seen``) and the follower (lines it printed); the datapath's own count of events its
ring buffer had no room for (``/v1/status`` ``datapath.events_lost``) is shown beside
it. Like bench.l7, the bench runs its own agent under the
plugin name ``cpybench`` and removes what it started, by id.

    .venv/bin/python -m bench.flows [SECONDS_PER_RATE]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import ciliumpy, docker, start_agent, summary, tear_down, write_table
from bench.l7 import IMAGE, PLUGIN, PLUGIN_SOCKET

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.99.0.0/16"
RATES = (1000, 5000, 10000, 20000)  # target events/s
SECONDS = 20  # per rate (the issue asks 60 s; 20 s keeps the bench near 3 minutes)
PORTS = [9000 + i for i in range(32)]
CONNS_PER_PROC = 2000  # paced connections/s one generator process is given at most
# Source ports the clients bind, in turn: the kernel's own choice repeats 5-tuples within
# conntrack's lifetime, and a repeated tuple is no new connection (no events), which
# looked like lost events. Each run starts where the last one ended.
SPORT_FIRST, SPORT_COUNT = 20000, 40000
OBSERVE_RUNS, OBSERVE_LAST = 5, 1000
OBSERVE_FILTER = ["--from-label", "app=client", "--verdict", "FORWARDED"]
POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench-flows}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
"""
SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1].split(",")):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        while True:
            try:
                conn, _ = key.fileobj.accept()
            except (BlockingIOError, ConnectionError):
                break
            conn.close()
"""
CLIENT = """
import json, socket, struct, sys, time
dst, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
rate, seconds, row0 = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
linger = struct.pack("ii", 1, 0)
ok = fail = i = 0
start = time.monotonic(); end = start + seconds
while True:
    now = time.monotonic()
    if now >= end:
        break
    due = start + i / rate
    if due > now:
        time.sleep(due - now)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(2)
    try:
        # a source port of our own: every 5-tuple of the bench is new to conntrack
        s.bind(("0.0.0.0", SPORT_FIRST + (row0 + i // len(ports)) % SPORT_COUNT))
        s.connect((dst, ports[i % len(ports)])); ok += 1
    except OSError:
        fail += 1
    s.close(); i += 1
print(json.dumps({"ok": ok, "fail": fail, "elapsed": time.monotonic() - start}))
"""


class Follower:
    """``ciliumpy observe -f -o json`` against the bench agent, its lines counted."""

    def __init__(self, api_socket: str) -> None:
        env = dict(os.environ, CILIUMPY_API_SOCKET=api_socket)
        self.proc = subprocess.Popen([sys.executable, "-m", "ciliumpy", "observe", "-f", "-o",
                                      "json"], stdout=subprocess.PIPE, cwd=REPO, env=env)
        self.lines = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.lines += 1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-flows-"))
        os.chmod(self.tmp, 0o755)
        self.agent = None
        self.network: str | None = None
        self.containers: dict[str, str] = {}
        self.server: subprocess.Popen | None = None
        self.follower: Follower | None = None
        self.row = 0  # source port row the next run starts at

    def cli(self, *args: str) -> str:
        return ciliumpy(self.agent.api_socket, *args)

    def start(self) -> None:

        self.agent = start_agent(self.tmp, PLUGIN_SOCKET)
        self.network = docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                              "--subnet", SUBNET, f"cpybench-flows-{uuid.uuid4().hex[:6]}")
        for app in ("server", "client"):
            self.containers[app] = docker("run", "-d", "--network", self.network, "-l",
                                          f"app={app}", IMAGE, "sleep", "3600")
        self.pid = {app: int(docker("inspect", "-f", "{{.State.Pid}}", cid))
                    for app, cid in self.containers.items()}
        self.server_ip = docker("inspect", "-f",
                                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                self.containers["server"])
        deadline = time.time() + 30
        while len([e for e in self.agent.api("/v1/endpoints")
                   if (e.get("identity") or 0) >= 256]) < 2:
            if time.time() > deadline:
                raise RuntimeError("endpoints without identities")
            time.sleep(0.1)
        path = self.tmp / "policy.yaml"
        path.write_text(POLICY)
        self.cli("policy", "wait", self.cli("policy", "import", str(path)).rsplit(" ", 1)[1])
        (self.tmp / "server.py").write_text(SERVER)
        (self.tmp / "client.py").write_text(CLIENT.replace("SPORT_FIRST", str(SPORT_FIRST))
                                            .replace("SPORT_COUNT", str(SPORT_COUNT)))
        self.server = subprocess.Popen(
            ["nsenter", "-t", str(self.pid["server"]), "-n", sys.executable,
             str(self.tmp / "server.py"), ",".join(map(str, PORTS))],
            stdout=subprocess.PIPE, text=True)
        if self.server.stdout.readline().strip() != "ready":
            raise RuntimeError("the server did not start")
        self.follower = Follower(self.agent.api_socket)

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(10)
        tear_down(self.containers.values(), self.network, self.agent, self.tmp)

    def counters(self) -> dict[str, float]:
        flows = self.agent.api("/v1/flows/status")
        status = self.agent.api("/v1/status")
        return {"seen": flows["seen"], "held": flows["flows"], "capacity": flows["capacity"],
                "events": status["datapath"]["events_seen"],
                "ring_lost": status["datapath"].get("events_lost", 0),
                "follower": self.follower.lines,
                "cpu": self.cpu_seconds(status["datapath"].get("event_reader"))}

    def cpu_seconds(self, reader: dict | None = None) -> float:
        """user + system CPU of the agent's processes (master, workers and the event
        reader process)."""
        ticks = 0
        extra = [reader["pid"]] if reader and reader.get("pid") else []
        for pid in [self.agent.proc.pid, *self.agent.worker_pids(), *extra]:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def load(self, conns_per_s: float, seconds: float) -> dict:
        """Connections at ``conns_per_s`` for ``seconds``, spread over processes."""
        procs = max(1, math.ceil(conns_per_s / CONNS_PER_PROC))
        cmd = ["nsenter", "-t", str(self.pid["client"]), "-n", sys.executable,
               str(self.tmp / "client.py"), self.server_ip]
        running = [subprocess.Popen(cmd + [",".join(map(str, PORTS[i::procs])),
                                           str(conns_per_s / procs), str(seconds),
                                           str(self.row)],
                                    stdout=subprocess.PIPE, text=True)
                   for i in range(procs)]
        # rows (one source port each, across a process's ports) this run may use
        self.row += math.ceil(conns_per_s / procs * seconds * 1.2 / len(PORTS[::procs])) + 1
        outs = [json.loads(p.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1])
                for p in running]
        return {"ok": sum(o["ok"] for o in outs), "fail": sum(o["fail"] for o in outs),
                "elapsed": max(o["elapsed"] for o in outs), "procs": procs}

    def settle(self, timeout: float = 20.0) -> float:
        """Waits until the store and the follower stop growing; seconds it took."""
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            now = self.counters()
            now = (now["seen"], now["follower"])
            if now == last:
                break
            last = now
            time.sleep(1.0)
        return time.monotonic() - started

    def run(self, conns_per_s: float, seconds: float) -> dict:
        before = self.counters()
        made = self.load(conns_per_s, seconds)
        after_load = self.counters()
        settled = self.settle()
        after = self.counters()
        delta = {key: after[key] - before[key] for key in ("seen", "events", "follower",
                                                          "ring_lost")}
        return {**made, **delta, "settle": settled, "held": after["held"],
                "capacity": after["capacity"],
                "cpu": (after_load["cpu"] - before["cpu"]) / made["elapsed"] * 100}

    def observe_times(self) -> dict:
        """``observe --last 1000`` with filters: the CLI run, then the API call alone."""
        from ciliumpy.apiclient import _UnixConnection

        cli = [sys.executable, "-m", "ciliumpy", "observe", "--last", str(OBSERVE_LAST),
               *OBSERVE_FILTER]
        env = dict(os.environ, CILIUMPY_API_SOCKET=self.agent.api_socket)
        cli_ms, api_ms, counts = [], [], []
        for _ in range(OBSERVE_RUNS):
            started = time.perf_counter()
            out = subprocess.run(cli, capture_output=True, cwd=REPO, env=env, check=True)
            cli_ms.append((time.perf_counter() - started) * 1000)
            counts.append(len(out.stdout.splitlines()))
        filters = [[OBSERVE_FILTER[i], OBSERVE_FILTER[i + 1]] for i in (0, 2)]
        body = json.dumps({"filters": filters, "last": OBSERVE_LAST}).encode()
        for _ in range(OBSERVE_RUNS):
            started = time.perf_counter()
            conn = _UnixConnection(self.agent.api_socket, 30)
            conn.request("POST", "/v1/flows", body=body,
                         headers={"Content-Type": "application/json"})
            data = conn.getresponse().read()
            conn.close()
            api_ms.append((time.perf_counter() - started) * 1000)
            counts.append(data.count(b"\n"))
        starts = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ciliumpy", "observe", "--help"],
                           capture_output=True, cwd=REPO, env=env, check=True)
            starts.append((time.perf_counter() - started) * 1000)
        startup = summary(starts)[0]
        return {"cli": cli_ms, "api": api_ms, "counts": counts, "startup": startup}


@contextlib.contextmanager
def running() -> Iterator[Bench]:
    bench = Bench()
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()


def main(seconds: float = SECONDS) -> str:
    started = time.monotonic()
    with running() as bench:
        bench.settle(5)
        calib = bench.run(300, 1.0)
        per_conn = calib["seen"] / max(1, calib["ok"])
        results = {rate: bench.run(rate / per_conn, seconds) for rate in RATES}
        status = bench.counters()
        fill = None
        if status["held"] < status["capacity"]:  # top up so the query sees a full ring
            missing = status["capacity"] - status["held"]
            fill = bench.run(3000, missing / per_conn / 3000 + 2)
            status = bench.counters()
        observe = bench.observe_times()
    return report(results, calib, per_conn, observe, status, fill, seconds,
                  time.monotonic() - started)


def report(results: dict[int, dict], calib: dict, per_conn: float, observe: dict,
           status: dict, fill: dict | None, seconds: float, elapsed: float) -> str:
    def goal(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = []
    zero_lost = []
    for rate, r in results.items():
        expected = round(r["ok"] * per_conn)
        lost_store, lost_follow = expected - r["seen"], expected - r["follower"]
        if lost_store <= 0 and lost_follow <= 0 and r["seen"] / r["elapsed"] >= 0.98 * rate:
            zero_lost.append(rate)  # the target rate, delivered (a rounding is no failure)
        rows.append([
            f"{rate:,}", f"{r['ok'] / r['elapsed']:,.0f} ({r['fail']} failed, "
            f"{r['procs']} proc)", f"{expected / r['elapsed']:,.0f}",
            f"{r['seen'] / r['elapsed']:,.0f}", f"{r['follower'] / r['elapsed']:,.0f}",
            f"{lost_store:,} ({100 * lost_store / max(1, expected):.1f}%)",
            f"{lost_follow:,} ({100 * lost_follow / max(1, expected):.1f}%)",
            f"{r['ring_lost']:,}", f"{r['cpu']:.0f}%", f"{r['settle']:.0f}"])
    best = max(zero_lost, default=0.0)
    cli_med, cli_low, cli_high = summary(observe["cli"])
    api_med, api_low, api_high = summary(observe["api"])
    counts = sorted(set(observe["counts"]))
    notes = [
        f"goal 0 lost at >= 10,000 events/s: highest target rate delivered with 0 lost "
        f"(store and follower) {best:,.0f} events/s {goal(best >= 10000)} (anchor: Hubble users "
        "report 84% lost at 4.3k events/s)",
        f"goal `observe --last {OBSERVE_LAST} {' '.join(OBSERVE_FILTER)}` over a full "
        f"store <= 100 ms: CLI {cli_med:.0f} ms ({cli_low:.0f}-{cli_high:.0f}) "
        f"{goal(cli_med <= 100)}, API call alone {api_med:.0f} ms ({api_low:.0f}-"
        f"{api_high:.0f}) {goal(api_med <= 100)}; median (min-max) of {OBSERVE_RUNS}; "
        f"flows returned {counts}; store {status['held']:,}/{status['capacity']:,} "
        f"flows ({status['seen']:,} seen); the CLI's own start (`ciliumpy observe "
        "--help`, median of 5) takes "
        f"{observe['startup']:.0f} ms",
        f"{seconds:.0f} s per rate (the issue asks 60 s; shortened to keep the bench "
        "short), rates one after the other, one agent, default store (65,536 flows, "
        "full after the first rates" + (", topped up with traffic" if fill else "") + ")",
        f"events per connection {per_conn:.2f} (measured at 300 connections/s: client "
        "egress trace, server ingress policy verdict + trace); expected = connections "
        "made x that; lost = expected - delivered (store: `/v1/flows/status` seen; "
        "follower: lines of `ciliumpy observe -f -o json` running throughout); ring full = "
        "events the BPF programs could not queue (4 MiB ring), counted by the datapath; "
        "a few events more than expected (a retransmitted SYN, a calibration rounding) "
        "show as a small negative loss",
        "connections: host Python in the client's netns, connect + RST close, paced, "
        f"up to {CONNS_PER_PROC}/s per process, each from a source port of its own (bound: "
        "no 5-tuple of the bench repeats, so each is a new connection to conntrack), to a "
        f"host-Python accept-and-close server on {len(PORTS)} ports in the server's netns; "
        "one 2-core VM shared by load, server, agent and follower, unpinned; agent CPU = "
        "its processes' (master, worker, event reader) user+system "
        "time during the load, % of one core; settle = seconds after the load until the "
        "counts stopped growing",
        f"the whole bench took {elapsed:.0f} s",
    ]
    return write_table(
        "flows", "Flow events delivered under load (store and `observe -f` follower)",
        ["target events/s", "connections/s made", "expected events/s", "store events/s",
         "follower events/s", "lost (store)", "lost (follower)", "ring full",
         "agent CPU", "settle s"],
        rows, notes)


if __name__ == "__main__":
    main(*(float(x) for x in sys.argv[1:]))
