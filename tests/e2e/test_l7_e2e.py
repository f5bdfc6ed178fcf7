"""L7 policy end to end: real containers on a ciliumpy network, the BPF redirect to the
agent's proxy, and real clients (curl, busybox wget, grpcio) in the containers' network
namespaces. Every denied request is also checked against the backend's own log: it
must never have arrived there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_policy_e2e import apply, clear
from tests.support.agent import CLI
from tests.support.docker import Docker

REPO = Path(__file__).resolve().parents[2]
BACKEND, FRONTEND, OTHER = "role=backend", "role=frontend", "role=other"

SEED_GET_PUBLIC = (REPO / "examples" / "policies" / "l7-http.yaml").read_text()

SEED_TOKEN_EGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7-token}
spec:
  endpointSelector: {matchLabels: {role: frontend}}
  egress:
  - toEndpoints: [{matchLabels: {role: backend}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - headers: ["X-Token: [0-9]+"]
"""

SEED_GRPC = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7-grpc}
spec:
  endpointSelector: {matchLabels: {role: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {role: frontend}}]
    toPorts:
    - ports: [{port: "50051", protocol: TCP}]
      rules:
        http:
        - {method: POST, path: "/pkg.Service/Allowed"}
"""


def pid_of(docker: Docker, container: str) -> int:
    return docker.inspect(container)["State"]["Pid"]


def in_netns(pid: int, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *command], capture_output=True,
                          text=True, timeout=timeout)


def curl(pid: int, url: str, *extra: str) -> tuple[int, str]:
    """(HTTP status, body) as curl in the container's network namespace saw them."""
    proc = in_netns(pid, "curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
                    *extra, url)
    body, _, status = proc.stdout.rpartition("\n")
    return int(status or 0), body.rstrip("\n")


class Apps:
    """Servers started in containers' namespaces with the host's Python, by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, pid: int, *args: str) -> None:
        self.procs.append(subprocess.Popen(
            ["nsenter", "-t", str(pid), "-n", sys.executable, "-m", "tests.support.l7apps",
             *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_listening(pid: int, port: int) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        out = in_netns(pid, "ss", "-ltnH").stdout
        if f":{port} " in out:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} in netns of pid {pid}")


@pytest.fixture(scope="module")
def l7(agent, docker_ready, tmp_path_factory):
    client = Docker()
    apps = Apps()
    net = "cpy-l7-" + uuid.uuid4().hex[:6]
    client.network_create(net, "--ipv6", "--subnet", "10.91.0.0/16", "--subnet", "fd91:7::/64")
    names = {}
    for role in ("backend", "frontend", "other"):
        name = f"cpy-{role}-{uuid.uuid4().hex[:4]}"
        client.run(net, "-l", f"role={role}", name=name)
        names[role] = name
    logs = tmp_path_factory.mktemp("l7logs")
    backend_pid = pid_of(client, names["backend"])
    http_log, grpc_log = logs / "http.log", logs / "grpc.log"
    http_log.touch()
    grpc_log.touch()
    apps.start(backend_pid, "http-server", "--port", "80", "--log", str(http_log))
    apps.start(backend_pid, "grpc-server", "--port", "50051", "--log", str(grpc_log))
    wait_listening(backend_pid, 80)
    wait_listening(backend_pid, 50051)
    # identities known (labels read from Docker) before any policy is judged
    deadline = time.time() + 30
    while time.time() < deadline:
        endpoints = [e for e in agent.api("/v1/endpoints") if e.get("network_name") == net]
        if len(endpoints) == 3 and all(e["identity"] >= 256 for e in endpoints):
            break
        time.sleep(0.2)
    world = {
        "docker": client, "net": net, "names": names, "http_log": http_log,
        "grpc_log": grpc_log,
        "pid": {role: pid_of(client, name) for role, name in names.items()},
        "ip": {role: client.ip(name, net) for role, name in names.items()},
        "ip6": {role: client.ip(name, net, v6=True) for role, name in names.items()},
    }
    yield world
    clear(agent)
    apps.stop()
    client.cleanup()


def seen(log: Path) -> list[str]:
    return log.read_text().splitlines()


def _history(agent) -> list[dict]:
    """The L7 events the agent holds, as ``ciliumpy monitor --type l7 --history -o json``
    prints them (the command streams on: ``timeout`` ends it)."""
    proc = subprocess.run(["timeout", "3", *CLI, "monitor", "--type", "l7", "--history",
                           "-o", "json"], capture_output=True, text=True, timeout=15,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_seed_get_public_ingress(agent, l7, tmp_path):
    """Seed 1: only GET /public/.* from frontend; everything else gets 403 Access denied
    and never reaches the backend."""
    apply(agent, tmp_path, SEED_GET_PUBLIC)
    front, backend = l7["pid"]["frontend"], l7["ip"]["backend"]
    before = len(seen(l7["http_log"]))
    assert curl(front, f"http://{backend}/public/a") == (200, "ok GET /public/a")
    assert curl(front, f"http://{backend}/private") == (403, "Access denied")
    assert curl(front, f"http://{backend}/public/a", "-X", "POST", "-d", "x=1") == (
        403, "Access denied")
    assert curl(front, f"http://{backend}/public") == (403, "Access denied")  # full match
    backend6 = f"[{l7['ip6']['backend']}]"  # IPv6 takes the same path
    assert curl(front, f"http://{backend6}/public/6") == (200, "ok GET /public/6")
    assert curl(front, f"http://{backend6}/private") == (403, "Access denied")
    assert seen(l7["http_log"])[before:] == ["GET /public/a -", "GET /public/6 -"]
    # busybox wget, the image's own client, sees the same verdicts
    wget = l7["docker"].exec(l7["names"]["frontend"], "wget", "-qO-",
                             f"http://{backend}/public/b", check=False)
    assert wget.returncode == 0 and wget.stdout == "ok GET /public/b\n"
    denied = l7["docker"].exec(l7["names"]["frontend"], "wget", "-qO-",
                               f"http://{backend}/admin", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    # a peer the rule does not name is dropped at L3/L4, before any proxy
    status, _ = curl(l7["pid"]["other"], f"http://{backend}/public/a", "-m", "2")
    assert status == 0
    assert seen(l7["http_log"])[before:] == ["GET /public/a -", "GET /public/6 -",
                                             "GET /public/b -"]
    # every request became an L7 event with both sides' labels
    events = _history(agent)
    private = [e for e in events if (e.get("http") or {}).get("path") == "/private"]
    assert private and private[-1]["verdict"] == "DENIED"
    assert "container:role=frontend" in private[-1]["src_labels"]
    assert "container:role=backend" in private[-1]["dst_labels"]
    assert private[-1]["http"]["status"] == 403
    metrics = subprocess.run(["curl", "-s", "--unix-socket", agent.api_socket,
                              "http://agent/metrics"], capture_output=True, text=True).stdout
    assert 'ciliumpy_l7_requests_total{protocol="http",verdict="DENIED"}' in metrics
    assert "ciliumpy_l7_request_duration_seconds_bucket" in metrics
    clear(agent)


def test_seed_token_header_egress(agent, l7, tmp_path):
    """Seed 2 on egress: X-Token must match [0-9]+ (a regex, full match)."""
    apply(agent, tmp_path, SEED_TOKEN_EGRESS)
    front, backend = l7["pid"]["frontend"], l7["ip"]["backend"]
    before = len(seen(l7["http_log"]))
    assert curl(front, f"http://{backend}/x", "-H", "X-Token: 42")[0] == 200
    assert curl(front, f"http://{backend}/x", "-H", "X-Token: abc") == (403, "Access denied")
    assert curl(front, f"http://{backend}/x") == (403, "Access denied")
    assert seen(l7["http_log"])[before:] == ["GET /x 42"]
    # ports without L7 rules stay in BPF: the frontend's egress to port 50051 is denied
    # (selected by the egress rule, nothing allows 50051)
    status, _ = curl(front, f"http://{backend}:50051/", "-m", "2")
    assert status == 0
    clear(agent)


def test_grpc_method_rule(agent, l7, tmp_path):
    """Seed 3: the allowed method succeeds; another method of the same service gets
    PERMISSION_DENIED and the server never sees it."""
    apply(agent, tmp_path, SEED_GRPC)
    target = f"{l7['ip']['backend']}:50051"
    front = l7["pid"]["frontend"]
    before = len(seen(l7["grpc_log"]))

    def call(method: str) -> str:
        proc = in_netns(front, sys.executable, "-m", "tests.support.l7apps", "grpc-call",
                        "--target", target, "--method", method)
        return proc.stdout.strip()

    assert call("/pkg.Service/Allowed") == "OK echo:hello"
    assert call("/pkg.Service/Other").startswith("PERMISSION_DENIED")
    assert seen(l7["grpc_log"])[before:] == ["/pkg.Service/Allowed"]
    clear(agent)


def test_proxy_death_fails_closed_and_recovers(agent, l7, tmp_path):
    """Kill the proxy: no request passes unchecked meanwhile, the agent restarts it and
    enforcement resumes."""
    apply(agent, tmp_path, SEED_GET_PUBLIC)
    front, backend = l7["pid"]["frontend"], l7["ip"]["backend"]
    status = json.loads(subprocess.run(
        ["curl", "-s", "--unix-socket", agent.api_socket, "http://agent/v1/status"],
        capture_output=True, text=True).stdout)
    pid = status["proxy"]["pid"]
    before = len(seen(l7["http_log"]))
    os.killpg(pid, signal.SIGKILL)
    # while it is down: the private path never reaches the backend
    curl(front, f"http://{backend}/private", "-m", "2")
    deadline = time.time() + 20
    result = (0, "")
    while time.time() < deadline:
        result = curl(front, f"http://{backend}/public/again", "-m", "3")
        if result[0] == 200:
            break
        time.sleep(0.5)
    assert result == (200, "ok GET /public/again")
    assert curl(front, f"http://{backend}/private") == (403, "Access denied")
    assert "/private" not in "".join(seen(l7["http_log"])[before:])
    clear(agent)
