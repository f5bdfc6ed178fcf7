"""Services through the real kernel on one host: containers reach a frontend (VIP) and
get a backend at connect() time from the socket hooks; backends follow container
labels; the backend a connection gets is the one the Maglev table predicts (computed
here in Python from the same backends: the BPF flow hash and Python's agree), with
--affinity client every connection of a client goes to one backend; a stopped backend
leaves the table at once; a service with no backends refuses connections; UDP replies
and getpeername() show the frontend; policy applies to the backend's identity."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from services import maglev
from tests.support.agent import CLI
from tests.support.wait import wait_for

SUBNET = "10.78.0.0/16"
# each backend serves a page naming itself; busybox httpd forks per connection
SERVE = ("sh", "-c", "mkdir -p /tmp/w && hostname > /tmp/w/index.html && "
         "exec httpd -f -p 80 -h /tmp/w")


def cli(agent, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def service_json(agent, name: str) -> dict:
    return json.loads(cli(agent, "service", "get", name, "-o", "json").stdout)


def wait_backends(agent, name: str, count: int, timeout: float = 5.0) -> dict:
    def ready():
        found = service_json(agent, name)
        return found if len(found["status"]["backends"]) == count else None

    found = wait_for(ready, timeout=timeout)
    assert found, f"{name} never had {count} backends: {service_json(agent, name)}"
    return found


def pid_of(docker, container: str) -> int:
    return docker.inspect(container)["State"]["Pid"]


def in_netns(docker, container: str, code: str, *args: str, timeout: float = 120) -> str:
    """Python run in the container's network namespace (its sockets pass the hooks as
    the container's own do)."""
    proc = subprocess.run(["nsenter", "-t", str(pid_of(docker, container)), "-n",
                           "python3", "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


SWEEP = r"""
import socket, sys, json
vip, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = {}
for port in range(first, first + count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:  # held by something else: skip it (the test counts the answers)
        s.close()
        continue
    s.settimeout(5)
    s.connect((vip, 80))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    seen[port] = data.split(b"\r\n\r\n", 1)[1].decode().strip()
print(json.dumps(seen))
"""


@pytest.fixture
def web(agent, docker):
    """A network, three labelled backends and a client; the service is the test's."""
    tag = uuid.uuid4().hex[:6]
    net = "cpy-lb-" + tag
    docker.network_create(net, "--subnet", SUBNET)
    backends = {}
    for i in range(3):
        name = f"lbweb-{tag}-{i}"
        cid = docker.run(net, "-l", f"app=lbweb-{tag}", "--hostname", name, name=name,
                         command=SERVE)
        backends[name] = (cid, docker.ip(cid, net))
    client = docker.run(net, "-l", f"app=lbclient-{tag}")
    created: list[str] = []
    yield {"tag": tag, "net": net, "backends": backends, "client": client,
           "client_ip": docker.ip(client, net), "services": created}
    for name in created:
        cli(agent, "service", "delete", name, check=False)


def predicted(service: dict, client_ip: str, vip: str, sport: int) -> str:
    """The backend address the Maglev table gives this connection."""
    backends = service["status"]["backends"]
    names = [(f"{b['address']}:{b['port']}", b["weight"]) for b in backends]
    table = maglev.build_table(names, service["maglev_size"])
    port = int(service["frontend"].rsplit("/", 1)[0].rsplit(":", 1)[1])
    digest = maglev.flow_hash(int(ipaddress.ip_address(client_ip)),
                              int(ipaddress.ip_address(vip)), sport, port, 6)
    return backends[table[digest % service["maglev_size"]]]["address"]


@pytest.mark.timeout(240)
def test_vip_balances_over_labelled_backends_as_maglev_predicts(agent, docker, web):
    vip = "10.96.78.10"
    name = f"web-{web['tag']}"
    web["services"].append(name)
    cli(agent, "service", "create", name, "--frontend", f"{vip}:80",
        "--selector", f"app=lbweb-{web['tag']}", "--maglev-size", "1021")
    service = wait_backends(agent, name, 3)
    by_ip = {ip: host for host, (_, ip) in web["backends"].items()}
    assert {b["address"] for b in service["status"]["backends"]} == set(by_ip)
    slots = [b["slots"] for b in service["status"]["backends"]]
    assert sum(slots) == 1021 and max(slots) - min(slots) <= 1, slots
    table = cli(agent, "service", "list").stdout
    assert name in table and "programmed" in table and f"{vip}:80/TCP" in table

    # busybox wget in the client: unbound sockets spread over every backend
    seen = set()
    for _ in range(30):
        out = docker.exec(web["client"], "wget", "-qO-", f"http://{vip}/")
        seen.add(out.stdout.strip())
    assert seen == set(web["backends"]), f"answers came from {seen}"

    # 1,000 bound client ports (below the kernel's ephemeral range, so no other socket
    # of the client holds them): each lands where the table says
    sweep = json.loads(in_netns(docker, web["client"], SWEEP, vip, "21000", "1000"))
    assert len(sweep) >= 990, f"only {len(sweep)} of 1000 ports could be bound"
    wrong = {p: host for p, host in sweep.items()
             if by_ip[predicted(service, web["client_ip"], vip, int(p))] != host}
    assert not wrong, f"{len(wrong)} of 1000 ports not on the predicted backend"
    counts = {host: list(sweep.values()).count(host) for host in web["backends"]}
    assert min(counts.values()) > 200, counts

    # removing one backend: its ports move; the same ports again each land where the
    # new table says, and (Maglev) nearly all ports of the other backends stay put
    gone = sorted(web["backends"])[0]
    docker.rm(web["backends"][gone][0])
    started = time.monotonic()
    after = wait_backends(agent, name, 2)
    assert time.monotonic() - started < 2.0, "the stopped backend stayed in the table"
    again = json.loads(in_netns(docker, web["client"], SWEEP, vip, "21000", "1000"))
    wrong = {p: host for p, host in again.items()
             if by_ip[predicted(after, web["client_ip"], vip, int(p))] != host}
    assert not wrong, f"{len(wrong)} of 1000 ports not on the new table's backend"
    assert gone not in again.values()
    survivors = [p for p, host in sweep.items() if host != gone and p in again]
    kept = sum(1 for p in survivors if again[p] == sweep[p])
    assert kept >= 0.9 * len(survivors), f"only {kept} of {len(survivors)} stayed"


@pytest.mark.timeout(120)
def test_client_affinity_gives_one_backend_per_client(agent, docker, web):
    vip = "10.96.78.11"
    name = f"aff-{web['tag']}"
    web["services"].append(name)
    cli(agent, "service", "create", name, "--frontend", f"{vip}:80", "--affinity", "client",
        "--selector", f"app=lbweb-{web['tag']}")
    service = wait_backends(agent, name, 3)
    answers = {docker.exec(web["client"], "wget", "-qO-", f"http://{vip}/").stdout.strip()
               for _ in range(12)}
    expected = predicted(service, web["client_ip"], vip, 0)
    by_ip = {ip: host for host, (_, ip) in web["backends"].items()}
    assert answers == {by_ip[expected]}, f"one client reached {answers}"


@pytest.mark.timeout(120)
def test_a_backend_reaches_its_own_service(agent, docker, web):
    """Hairpin: the service's only backend connects to the service's VIP and reaches
    itself; every backend of a balanced service reaches the one the table predicts."""
    (name0, (cid0, ip0)), *_ = web["backends"].items()
    alone, vip = f"self-{web['tag']}", "10.96.78.14"
    web["services"].append(alone)
    cli(agent, "service", "create", alone, "--frontend", f"{vip}:80", "--backend", f"{ip0}:80")
    wait_backends(agent, alone, 1)
    assert docker.exec(cid0, "wget", "-qO-", f"http://{vip}/").stdout.strip() == name0
    shared, vip2 = f"hair-{web['tag']}", "10.96.78.15"
    web["services"].append(shared)
    cli(agent, "service", "create", shared, "--frontend", f"{vip2}:80", "--affinity",
        "client", "--selector", f"app=lbweb-{web['tag']}")
    service = wait_backends(agent, shared, 3)
    by_ip = {ip: host for host, (_, ip) in web["backends"].items()}
    for host, (cid, ip) in web["backends"].items():
        answer = docker.exec(cid, "wget", "-qO-", f"http://{vip2}/").stdout.strip()
        assert answer == by_ip[predicted(service, ip, vip2, 0)], (host, answer)


@pytest.mark.timeout(120)
def test_no_backend_refuses_and_host_sockets_see_the_frontend(agent, docker, web):
    vip = "10.96.78.12"
    name = f"empty-{web['tag']}"
    web["services"].append(name)
    cli(agent, "service", "create", name, "--frontend", f"{vip}:80",
        "--selector", "app=nobody-has-this")
    assert "no backends" in wait_for(
        lambda: service_json(agent, name)["status"]["state"] if "no backends" in
        service_json(agent, name)["status"]["state"] else None, timeout=5)
    refused = docker.exec(web["client"], "nc", "-w", "2", vip, "80", check=False)
    assert refused.returncode != 0 and "refused" in (refused.stderr + refused.stdout).lower()

    # a host process (the agent's scope "all"): connected to a backend, peer is the VIP
    backend_ip = next(iter(web["backends"].values()))[1]
    listed = f"host-{web['tag']}"
    web["services"].append(listed)
    cli(agent, "service", "create", listed, "--frontend", "10.96.78.13:8080",
        "--backend", f"{backend_ip}:80")
    wait_backends(agent, listed, 1)
    with socket.create_connection(("10.96.78.13", 8080), timeout=5) as sock:
        assert sock.getpeername() == ("10.96.78.13", 8080)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"lbweb-" in sock.recv(4096) + sock.recv(4096)


UDP_ECHO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5300))
s.settimeout(20)
for _ in range(3):
    data, peer = s.recvfrom(100)
    s.sendto(b"echo:" + data, peer)
"""


@pytest.mark.timeout(120)
def test_udp_service_answers_from_the_frontend(agent, docker, web):
    backend_cid, backend_ip = next(iter(web["backends"].values()))
    server = subprocess.Popen(["nsenter", "-t", str(pid_of(docker, backend_cid)), "-n",
                               "python3", "-c", UDP_ECHO])
    try:
        vip = "10.96.78.14"
        name = f"udp-{web['tag']}"
        web["services"].append(name)
        cli(agent, "service", "create", name, "--frontend", f"{vip}:53/udp",
            "--backend", f"{backend_ip}:5300")
        wait_backends(agent, name, 1)
        out = in_netns(docker, web["client"], r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for attempt in range(3):
    s.sendto(b"ping", ("10.96.78.14", 53))
    try:
        data, peer = s.recvfrom(100)
        print(data.decode(), peer[0], peer[1])
        break
    except socket.timeout:
        pass
""")
        assert out.split() == ["echo:ping", vip, "53"], out
    finally:
        server.kill()
        server.wait(5)


@pytest.mark.timeout(60)
def test_bad_services_are_refused_and_change_nothing(agent):
    before = agent.api("/v1/services")
    for args, says in [
        (("--frontend", "10.96.78.20"), "port"),
        (("--frontend", "10.96.78.20:80", "--backend", "[fd00::1]:80"), "family"),
        (("--frontend", "10.96.78.20:80", "--maglev-size", "1000"), "16381"),
        (("--frontend", "10.96.78.20:99999"), "port"),
        (("--frontend", "10.96.78.20:80", "--backend", "fd00::1:80"), "brackets"),
    ]:
        proc = cli(agent, "service", "create", "bad-svc", *args, check=False)
        assert proc.returncode != 0 and says in proc.stderr, (args, proc.stderr)
    proc = cli(agent, "service", "create", "Bad_Name", "--frontend", "10.96.78.20:80",
               check=False)
    assert proc.returncode != 0 and "name" in proc.stderr
    assert agent.api("/v1/services") == before
    assert cli(agent, "service", "delete", "no-such-svc", check=False).returncode != 0


@pytest.mark.timeout(180)
def test_to_services_allows_the_backends_of_the_named_service(agent, docker, web, tmp_path):
    """toServices (Cilium's k8sService, by name) allows egress to the backends of the
    ciliumpy service of that name, through its VIP and directly; never to another
    container; a service that does not exist (yet, or any more) selects nothing."""
    tag = web["tag"]
    name, vip = f"svc-{tag}", "10.96.78.20"
    other = docker.run(web["net"], "-l", f"app=lbother-{tag}", command=SERVE)
    other_ip = docker.ip(other, web["net"])
    backend_ip = next(iter(web["backends"].values()))[1]

    def reach(address: str) -> bool:
        return docker.exec(web["client"], "timeout", "3", "wget", "-qO-",
                           f"http://{address}/", check=False).returncode == 0

    policy = tmp_path / f"to-services-{tag}.yaml"
    policy.write_text(f"""endpointSelector: {{matchLabels: {{app: lbclient-{tag}}}}}
egress:
- toServices: [{{k8sService: {{serviceName: {name}, namespace: default}}}}]
  toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
""")
    revision = cli(agent, "policy", "import", str(policy)).stdout.strip().rsplit(" ", 1)[1]
    cli(agent, "policy", "wait", revision)
    try:
        assert not reach(backend_ip), "no such service yet: the rule must select nothing"
        web["services"].append(name)
        cli(agent, "service", "create", name, "--frontend", f"{vip}:80",
            "--selector", f"app=lbweb-{tag}")
        wait_backends(agent, name, 3)
        assert wait_for(lambda: reach(backend_ip), timeout=10), "backend still refused"
        assert reach(vip), "the service's VIP leads to its backends"
        assert not reach(other_ip), "a container that is no backend was reached"
        backend = next(iter(web["backends"].values()))[0]
        for dst, verdict in ((backend, "ALLOWED"), (other, "DENIED")):
            out = cli(agent, "policy", "trace", "--src", web["client"], "--dst", dst,
                      "--dport", "80/tcp", "-o", "json").stdout
            assert json.loads(out)["verdict"] == verdict, (dst, out)
        cli(agent, "service", "delete", name)
        assert wait_for(lambda: not reach(backend_ip), timeout=10), \
            "the service is gone but its backends are still allowed"
    finally:
        cli(agent, "policy", "delete", policy.stem, check=False)
