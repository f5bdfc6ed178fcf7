"""L7 HTTP policy throughput and latency (issue: the L7 proxy), with wrk over keep-alive
connections from one client container to one server container, in one run:

- no policy; L3/L4 policy only (ingress fromEndpoints role=client, ports 80 and 81);
- ciliumpy L7: the same policy with ``rules.http`` on port 80 (the BPF datapath sends
  those connections to the agent's transparent proxy), with 1 rule and with 1,000 rules
  in two shapes (999 non-matching rules + the matching one LAST): paths with distinct
  literal first segments, and alternations with no literal prefix (the worst case for
  any index by prefix; the proxy matches all paths at once with an RE2 set);
- Debian's nginx as a reverse proxy in the host network namespace (the same host hop
  as our proxy: client -> host -> server), upstream keep-alive: the anchor.

The server is nginx (``return 200 "ok"``, ports 80 and 81) in the server container's
network namespace; wrk runs in the client container's namespace (host binaries through
``nsenter``: the image is busybox only). In the L7 configurations port 81 (no L7 rules)
is measured too, next to the L3/L4 run's port 81: ports without L7 rules must not go
through the proxy. Before every measurement the path is checked: a denied path answers
403 in the L7 configurations (through the proxy) and 200 elsewhere (not proxied).

The bench runs its own agent under the plugin name ``cpybench`` (its own sockets, BPF
pin dir and proxy port), never the real plugin socket, and removes everything it
started, by id, on the way out.

    .venv/bin/python -m bench.l7 [REPETITIONS]
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import ciliumpy, docker, start_agent, summary, tear_down, write_table

DOCKER = "/usr/bin/docker"
IMAGE = "ciliumpy/busybox"
PLUGIN = "cpybench"
PLUGIN_SOCKET = f"/run/docker/plugins/{PLUGIN}.sock"
SUBNET, GATEWAY = "10.95.0.0/16", "10.95.0.1"
ANCHOR_PORT = 18080
REPS, SECONDS, THREADS, CONNECTIONS = 3, 5, 1, 8
PATH_OK, PATH_DENIED = "/bench/x", "/denied/x"
REPO = Path(__file__).resolve().parents[1]

NONE, L3L4, L7_1, L7_1K, L7_1K_RE, NGINX = (
    "no policy", "L3/L4 policy only", "ciliumpy L7, 1 rule",
    "ciliumpy L7, 1,000 rules (literal first segments)",
    "ciliumpy L7, 1,000 rules (regexes, no literal prefix)",
    "nginx reverse proxy (host hop)")
L7_CONFIGS = (L7_1, L7_1K, L7_1K_RE)


# --- policies -------------------------------------------------------------------------

def policy(http_rules: list[str] | None, extra: str = "") -> str:
    rules = ""
    if http_rules is not None:
        rules = "      rules:\n        http:\n" + "".join(
            f"        - {rule}\n" for rule in http_rules)
    return ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
            "metadata: {name: bench-l7}\nspec:\n"
            "  endpointSelector: {matchLabels: {role: server}}\n  ingress:\n"
            "  - fromEndpoints: [{matchLabels: {role: client}}]\n    toPorts:\n"
            '    - ports: [{port: "80", protocol: TCP}]\n' + rules +
            '    - ports: [{port: "81", protocol: TCP}]\n' + extra)


MATCHING = '{method: GET, path: "/bench/.*"}'
POLICIES = {
    L3L4: policy(None),
    # the anchor's hop: the host (nginx) must reach the server too
    NGINX: policy(None, "  - fromEntities: [host]\n"
                        '    toPorts: [{ports: [{port: "80", protocol: TCP}]}]\n'),
    L7_1: policy([MATCHING]),
    # distinct literal first segments
    L7_1K: policy([f'{{method: GET, path: "/other{i}/.*"}}' for i in range(999)]
                  + [MATCHING]),
    # alternations without a literal prefix, the match last
    L7_1K_RE: policy([f'{{method: GET, path: "/(x{i}|y{i})/.*"}}' for i in range(999)]
                     + ['{method: GET, path: "/(x999|bench)/.*"}']),
}


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-l7-"))
        os.chmod(self.tmp, 0o755)
        self.agent = None
        self.network: str | None = None
        self.containers: list[str] = []
        self.nginx: list[subprocess.Popen] = []
        self.revision_file = self.tmp / "policy.yaml"
        self.current: str | None = None

    # --- plumbing ---------------------------------------------------------------------

    def docker(self, *args: str, timeout: float = 120) -> str:
        return docker(*args, timeout=timeout)

    def cli(self, *args: str) -> str:
        return ciliumpy(self.agent.api_socket, *args)

    def start(self) -> None:

        self.agent = start_agent(self.tmp, PLUGIN_SOCKET)
        self.network = self.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                   "--subnet", SUBNET, f"cpybench-l7-{uuid.uuid4().hex[:6]}")
        for role in ("server", "client"):
            self.containers.append(self.docker("run", "-d", "--network", self.network, "-l",
                                               f"role={role}", IMAGE, "sleep", "3600"))
        self.server_id, self.client_id = self.containers
        self.server_pid = int(self.docker("inspect", "-f", "{{.State.Pid}}", self.server_id))
        self.client_pid = int(self.docker("inspect", "-f", "{{.State.Pid}}", self.client_id))
        self.server_ip = self.docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            self.server_id)
        deadline = time.time() + 30
        while True:
            eps = [e for e in self.agent.api("/v1/endpoints")
                   if e.get("labels") in (["container:role=server"], ["container:role=client"])
                   and (e.get("identity") or 0) >= 256]
            if len(eps) >= 2:
                break
            if time.time() > deadline:
                raise RuntimeError(f"endpoints without identities: {eps}")
            time.sleep(0.1)
        self.start_nginx("backend", self.server_pid, self.backend_conf())
        self.wait_listening(self.server_pid, 80)
        self.anchor_conf_path = self.tmp / "anchor" / "nginx.conf"
        self.anchor_conf_path.parent.mkdir()
        self.anchor_conf_path.write_text(self.anchor_conf())

    def stop(self) -> None:
        for proc in self.nginx:
            stop_process(proc)
        tear_down(self.containers, self.network, self.agent, self.tmp)

    # --- nginx ------------------------------------------------------------------------

    def anchor(self, run: bool) -> None:
        """The nginx anchor runs only while it is measured, started afresh each time:
        its idle upstream keep-alive connections would otherwise live through the other
        configurations' policies (which do not allow the host) and hang afterwards."""
        for proc in [p for p in self.nginx if p.args[0] == "nginx"]:
            stop_process(proc)
            self.nginx.remove(proc)
        if run:
            self.start_nginx("anchor", None, self.anchor_conf_path.read_text())
            self.wait_listening(None, ANCHOR_PORT)

    def _common_conf(self, name: str, workers: int) -> str:
        d = self.tmp / name
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        return (f"user root;\nworker_processes {workers};\npid {d}/nginx.pid;\n"
                f"error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n"
                "http {\n  access_log off;\n  keepalive_requests 1000000;\n"
                "  keepalive_timeout 300s;\n" +
                "".join(f"  {kind}_temp_path {d}/tmp/{kind};\n" for kind in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")))

    def backend_conf(self) -> str:
        # one worker: the server is the same in every configuration
        return self._common_conf("backend", 1) + (
            "  server {\n    listen 80;\n    listen 81;\n"
            '    location / { return 200 "ok"; }\n  }\n}\n')

    def anchor_conf(self) -> str:
        # two workers, as our proxy has
        return self._common_conf("anchor", 2) + (
            f"  upstream backend {{ server {self.server_ip}:80; keepalive 32;"
            " keepalive_requests 1000000; }\n"
            f"  server {{\n    listen {GATEWAY}:{ANCHOR_PORT};\n"
            "    location / { proxy_pass http://backend; proxy_http_version 1.1;"
            ' proxy_set_header Connection ""; }\n  }\n}\n')

    def start_nginx(self, name: str, netns_pid: int | None, conf: str) -> None:
        path = self.tmp / name / "nginx.conf"
        path.write_text(conf)
        prefix = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
        # daemon off: the Popen pid is nginx's master (nsenter execs it); stopped by pid
        self.nginx.append(subprocess.Popen(
            [*prefix, "nginx", "-p", str(self.tmp / name), "-e", str(self.tmp / name /
             "error.log"), "-c", str(path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait_listening(self, netns_pid: int | None, port: int) -> None:
        prefix = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
        deadline = time.time() + 15
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.nginx):
                raise RuntimeError("nginx exited: " + "; ".join(
                    (self.tmp / n / "error.log").read_text()
                    for n in ("backend", "anchor") if (self.tmp / n / "error.log").exists()))
            out = subprocess.run([*prefix, "ss", "-ltnH"], capture_output=True,
                                 text=True).stdout
            if f":{port} " in out:
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on port {port}")

    # --- policy and checks ------------------------------------------------------------

    def apply(self, config: str) -> None:
        if config == self.current:
            return
        if config == NONE:
            if self.current is None:  # a new agent: no policy yet
                self.current = config
                return
            out = self.cli("policy", "delete", "bench-l7")
        else:
            self.revision_file.write_text(POLICIES[config])
            out = self.cli("policy", "import", str(self.revision_file))
        self.cli("policy", "wait", out.rsplit(" ", 1)[1])
        self.current = config
        self.anchor(config == NGINX)

    def status(self, host: str, port: int, path: str, timeout: float = 3) -> int:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.client_pid), "-n", "curl", "-s", "-o", "/dev/null",
             "-w", "%{http_code}", "-m", str(timeout), f"http://{host}:{port}{path}"],
            capture_output=True, text=True, timeout=30)
        return int(proc.stdout or 0)

    def expect(self, host: str, port: int, path: str, want: int, timeout: float = 15) -> None:
        """The policy is enforced by the datapath at once, the proxy's state file follows
        within ~0.1 s: poll until the answer is the expected one."""
        deadline = time.time() + timeout
        while (got := self.status(host, port, path)) != want:
            if time.time() > deadline:
                raise RuntimeError(f"{self.current}: {host}:{port}{path} answered {got}, "
                                   f"expected {want}")
            time.sleep(0.1)

    def check(self, config: str) -> None:
        """L7: through the proxy (denied path 403); elsewhere: not proxied (200)."""
        ip = self.server_ip
        if config == NGINX:
            self.expect(GATEWAY, ANCHOR_PORT, PATH_OK, 200)
            self.expect(GATEWAY, ANCHOR_PORT, PATH_DENIED, 200)
            return
        self.expect(ip, 80, PATH_OK, 200)
        self.expect(ip, 80, PATH_DENIED, 403 if config in L7_CONFIGS else 200)
        self.expect(ip, 81, PATH_DENIED, 200)
        # the L3/L4 part is enforced too: port 82 is not allowed (dropped: no answer)
        if config != NONE and self.status(ip, 82, "/", 1) != 0:
            raise RuntimeError(f"{config}: port 82 answered though not allowed")

    # --- wrk --------------------------------------------------------------------------

    def wrk(self, host: str, port: int, seconds: int = SECONDS,
            connections: int = CONNECTIONS) -> dict:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.client_pid), "-n", "wrk", f"-t{THREADS}",
             f"-c{connections}", f"-d{seconds}s", "--latency",
             f"http://{host}:{port}{PATH_OK}"],
            capture_output=True, text=True, timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed: {proc.stderr}")
        return parse_wrk(proc.stdout)

    def measure(self, config: str, port: int = 80, connections: int = CONNECTIONS) -> dict:
        host, port = (GATEWAY, ANCHOR_PORT) if config == NGINX else (self.server_ip, port)
        self.wrk(host, port, 1, connections)  # warm-up
        return self.wrk(host, port, connections=connections)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * UNITS[unit]


def parse_wrk(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors or rps <= 0:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99}


@contextlib.contextmanager
def running() -> Iterator[Bench]:
    bench = Bench()
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()


def fmt(samples: list[float], digits: int) -> tuple[str, str]:
    med, low, high = summary(samples)
    return f"{med:.{digits}f}", f"{low:.{digits}f}-{high:.{digits}f}"


def main(reps: int = REPS) -> str:
    configs = [NONE, L3L4, L7_1, L7_1K, L7_1K_RE, NGINX]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    port81: dict[str, list[dict]] = {c: [] for c in (L3L4, *L7_CONFIGS)}
    # unloaded latency: one connection, request after request
    single: dict[str, list[dict]] = {c: [] for c in (L3L4, L7_1, NGINX)}
    started = time.monotonic()
    with running() as bench:
        for _ in range(reps):
            for config in configs:  # interleaved: drift hits every configuration alike
                bench.apply(config)
                bench.check(config)
                results[config].append(bench.measure(config))
                if config in port81:
                    port81[config].append(bench.measure(config, port=81))
                if config in single:
                    single[config].append(bench.measure(config, connections=1))
        bench.apply(NONE)
    elapsed = time.monotonic() - started
    return report(results, port81, single, reps, elapsed)


def report(results: dict[str, list[dict]], port81: dict[str, list[dict]],
           single: dict[str, list[dict]], reps: int, elapsed: float) -> str:
    def med(rows: list[dict], key: str) -> float:
        return summary([r[key] for r in rows])[0]

    nginx, l3l4 = med(results[NGINX], "rps"), med(results[L3L4], "rps")
    table = []
    for config, rows in results.items():
        rps, rps_range = fmt([r["rps"] for r in rows], 0)
        p50, p50_range = fmt([r["p50"] for r in rows], 3)
        p99, p99_range = fmt([r["p99"] for r in rows], 3)
        table.append([config, rps, rps_range, p50, p50_range, p99, p99_range,
                      f"{med(rows, 'rps') / nginx:.2f}x", f"{med(rows, 'rps') / l3l4:.2f}x"])
    for config, rows in port81.items():
        rps, rps_range = fmt([r["rps"] for r in rows], 0)
        p50, p50_range = fmt([r["p50"] for r in rows], 3)
        p99, p99_range = fmt([r["p99"] for r in rows], 3)
        l3l4_81 = med(port81[L3L4], "rps")
        table.append([f"port 81 (no L7 rules) under: {config}", rps, rps_range, p50, p50_range,
                      p99, p99_range, f"{med(rows, 'rps') / nginx:.2f}x",
                      f"{med(rows, 'rps') / l3l4:.2f}x ({med(rows, 'rps') / l3l4_81:.2f}x "
                      "L3/L4 port 81)"])
    for config, rows in single.items():
        rps, rps_range = fmt([r["rps"] for r in rows], 0)
        p50, p50_range = fmt([r["p50"] for r in rows], 3)
        p99, p99_range = fmt([r["p99"] for r in rows], 3)
        table.append([f"1 connection (unloaded latency): {config}", rps, rps_range, p50,
                      p50_range, p99, p99_range, "-", "-"])

    def goal(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    l7 = med(results[L7_1], "rps")
    added = med(results[L7_1], "p50") - med(results[L3L4], "p50")
    added_single = med(single[L7_1], "p50") - med(single[L3L4], "p50")
    k_seg = med(results[L7_1K], "rps") / l7
    k_re = med(results[L7_1K_RE], "rps") / l7
    unchanged = [med(port81[c], "rps") / med(port81[L3L4], "rps") for c in L7_CONFIGS]
    goals = [
        f"goal ciliumpy L7 (1 rule) >= 0.5x nginx's request rate: {l7 / nginx:.2f}x, "
        f"{goal(l7 / nginx >= 0.5)}",
        f"goal added p50 <= 0.3 ms over L3/L4 ({CONNECTIONS} connections): "
        f"+{added:.3f} ms, {goal(added <= 0.3)}; with 1 connection (unloaded): "
        f"+{added_single:.3f} ms, {goal(added_single <= 0.3)}",
        f"goal 1,000 rules within 10% of 1 rule: literal first segments {k_seg:.2f}x, "
        f"{goal(k_seg >= 0.9)}; regexes without literal prefix (worst case) {k_re:.2f}x, "
        f"{goal(k_re >= 0.9)}",
        "goal ports without L7 rules unchanged: port 81 req/s under the L7 policies vs "
        "under L3/L4 only: " + ", ".join(f"{u:.2f}x" for u in unchanged) +
        f", {goal(all(u >= 0.9 for u in unchanged))} (goal: >= 0.9x, not slower beyond "
        "the run-to-run noise, which is about +-20% for the unproxied rows here)",
    ]
    notes = goals + [
        f"wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s --latency (after a 1 s warm-up) over "
        f"keep-alive connections, GET {PATH_OK}, {reps} repetitions per configuration, "
        "interleaved; median and min-max; latency in ms; ratios are of median req/s",
        "one 2-core VM: wrk (client container's netns), the proxy (2 worker processes) "
        "or nginx (2 workers) and the nginx server (1 worker, server container's netns, "
        '`return 200 "ok"`) share both cores, unpinned',
        "L3/L4: ingress fromEndpoints role=client, ports 80 and 81/TCP (a port 82 probe "
        "is refused); L7: the same with `rules.http` on port 80: 1 rule {GET, /bench/.*}; "
        "1,000 rules = 999 non-matching + the matching one LAST, either {GET, "
        "/other{i}/.*} or {GET, /(x{i}|y{i})/.*} + {GET, /(x999|bench)/.*} (no literal "
        "prefix); the proxy matches every rule's path at once with one RE2 set",
        "checked before every measurement: L7 runs answer 403 for a denied path "
        "(through the proxy), no-policy and L3/L4 runs answer 200 (not proxied), "
        "port 81 answers 200 for the denied path in every run; wrk saw no non-2xx "
        "responses and no socket errors",
        "nginx anchor: Debian nginx in the host netns on the gateway address, "
        "proxy_pass to the server with an upstream keepalive pool, HTTP/1.1, under the "
        "L3/L4 policy plus fromEntities host on port 80 (nginx's upstream connections "
        "come from the host); the same host hop as our proxy; started afresh for each "
        "of its measurements (see Bench.anchor)",
        "1 connection rows: wrk -c1, request after request (no queueing): the latency "
        "one request pays for the hop; with 8 connections on 2 cores p50 is mostly "
        "queueing behind the busiest process (the proxy at 100% of a core)",
        f"the whole bench took {elapsed:.0f} s",
    ]
    return write_table(
        "l7", "HTTP through the L7 proxy vs L3/L4 and nginx (wrk, keep-alive)",
        ["configuration", "req/s", "min-max", "p50 ms", "min-max", "p99 ms", "min-max",
         "x nginx", "x L3/L4"], table, notes)


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:]))
