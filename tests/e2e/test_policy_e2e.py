"""Policies end to end: YAML imported through the CLI into the kvstore, resolved by
the agent into BPF entries, and checked with real containers; every probe's verdict is
compared with `ciliumpy policy trace` on the same running workloads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from tests.support.agent import CLI, Agent
from tests.support.consul import ConsulAgent
from tests.support.docker import Docker, ping

HTTPD = ("sh", "-c", "httpd -f -p 80 -h /var/www & httpd -f -p 81 -h /var/www & "
         "httpd -f -p 8080 -h /var/www & sleep 3600")
SERVER = "{matchLabels: {app: server}}"


def cli(agent, *args, check=True):
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def apply(agent, tmp_path, text):
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    out = cli(agent, "policy", "import", str(path)).stdout
    revision = int(out.strip().rsplit(" ", 1)[1])
    cli(agent, "policy", "wait", str(revision))
    return revision


def clear(agent):
    proc = cli(agent, "policy", "delete", "--all", check=False)
    if proc.returncode == 0:
        cli(agent, "policy", "wait", proc.stdout.strip().rsplit(" ", 1)[1])


@pytest.fixture(scope="module")
def world(agent, docker_ready):
    client = Docker()
    net = "cpy-pol-" + uuid.uuid4().hex[:6]
    proc = client.run_cli("network", "create", "-d", "ciliumpy", "--ipam-driver", "ciliumpy",
                          "--subnet", "10.76.0.0/16", net)
    client.networks.append(proc.stdout.strip())
    names = {}
    # the server declares its port 8080 by the name "web" (named ports, "named-port")
    for role, labels in (("server", ["app=server", "ciliumpy.port.web=8080"]),
                         ("prod", ["app=client", "env=prod"]),
                         ("dev", ["app=client", "env=dev"]), ("other", ["app=other"])):
        args = [x for label in labels for x in ("-l", label)]
        name = f"cpy-{role}-{uuid.uuid4().hex[:4]}"
        client.run(net, *args, name=name, command=HTTPD if role == "server" else
                   ("sleep", "3600"))
        names[role] = name
    deadline = time.time() + 15
    while time.time() < deadline:
        eps = {e["container_name"]: e for e in agent.api("/v1/endpoints")}
        if all(n in eps and eps[n]["identity"] >= 256 for n in names.values()):
            break
        time.sleep(0.1)
    ips = {role: client.ip(name, net) for role, name in names.items()}
    yield client, names, ips
    client.cleanup()


def probe(client, names, ips, src, dst, dport):
    """What really happens: TCP through wget, ICMP through ping; 'host' is this
    process (the host's network namespace)."""
    if src == "host":
        port = int(dport.split("/")[0])
        try:
            with socket.create_connection((ips[dst], port), timeout=1.5):
                return "ALLOWED"
        except OSError:
            return "DENIED"
    if dport == "icmp":
        ok = client.exec(names[src], "ping", "-c", "1", "-W", "1", ips[dst],
                         check=False).returncode == 0
    else:
        port = dport.split("/")[0]
        ok = "ciliumpy test page" in client.exec(
            names[src], "timeout", "2", "wget", "-qO-", f"http://{ips[dst]}:{port}/",
            check=False).stdout
    return "ALLOWED" if ok else "DENIED"


def predicted(agent, names, src, dst, dport):
    source = "host" if src == "host" else names[src]
    out = cli(agent, "policy", "trace", "--src", source, "--dst", names[dst], "--dport", dport,
              "-o", "json").stdout
    return json.loads(out)["verdict"]


CASES = {
    "l3": (f"""endpointSelector: {SERVER}
ingress: [{{fromEndpoints: [{{matchLabels: {{app: client}}}}]}}]""",
           [("prod", "80/tcp", "ALLOWED"), ("dev", "icmp", "ALLOWED"),
            ("other", "80/tcp", "DENIED")]),
    "l4": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{matchLabels: {{app: client}}}}]
  toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]""",
           [("prod", "80/tcp", "ALLOWED"), ("prod", "81/tcp", "DENIED"),
            ("prod", "icmp", "DENIED")]),
    "union": (f"""- endpointSelector: {SERVER}
  ingress: [{{fromEndpoints: [{{matchLabels: {{env: dev}}}}],
              toPorts: [{{ports: [{{port: "81"}}]}}]}}]
- endpointSelector: {SERVER}
  ingress: [{{fromEndpoints: [{{matchLabels: {{app: other}}}}]}}]""",
              [("dev", "81/tcp", "ALLOWED"), ("dev", "80/tcp", "DENIED"),
               ("other", "8080/tcp", "ALLOWED"), ("prod", "81/tcp", "DENIED")]),
    "named-port": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{matchLabels: {{app: client}}}}]
  toPorts: [{{ports: [{{port: web, protocol: TCP}}]}}]""",
                   [("prod", "8080/tcp", "ALLOWED"), ("prod", "80/tcp", "DENIED"),
                    ("other", "8080/tcp", "DENIED")]),
    "icmps": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{matchLabels: {{app: client}}}}]
  icmps: [{{fields: [{{type: EchoRequest, family: IPv4}}]}}]
- fromEndpoints: [{{matchLabels: {{env: prod}}}}]
  toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
ingressDeny:
- fromEndpoints: [{{matchLabels: {{env: dev}}}}]
  icmps: [{{fields: [{{type: 8}}]}}]""",
              [("prod", "icmp", "ALLOWED"), ("prod", "80/tcp", "ALLOWED"),
               ("dev", "icmp", "DENIED"), ("dev", "80/tcp", "DENIED"),
               ("other", "icmp", "DENIED")]),
    "icmps-other-type": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{matchLabels: {{app: client}}}}]
  icmps: [{{fields: [{{type: 13}}, {{type: 0}}]}}]""",
                         [("prod", "icmp", "DENIED"), ("prod", "80/tcp", "DENIED")]),
    "deny-wins": (f"""endpointSelector: {SERVER}
ingress: [{{fromEndpoints: [{{}}]}}]
ingressDeny:
- fromEndpoints: [{{matchLabels: {{env: dev}}}}]
  toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]""",
                  [("dev", "80/tcp", "DENIED"), ("dev", "81/tcp", "ALLOWED"),
                   ("prod", "80/tcp", "ALLOWED")]),
    "requires": (f"""endpointSelector: {SERVER}
ingress:
- fromRequires: [{{matchLabels: {{env: prod}}}}]
- fromEndpoints: [{{matchLabels: {{app: client}}}}]""",
                 [("prod", "80/tcp", "ALLOWED"), ("dev", "80/tcp", "DENIED")]),
    "entity-host": (f"""endpointSelector: {SERVER}
ingress: [{{fromEntities: [host]}}]""",
                    [("host", "80/tcp", "ALLOWED"), ("prod", "80/tcp", "DENIED")]),
    "egress": ("""endpointSelector: {matchLabels: {app: client}}
egress:
- toEndpoints: [{matchLabels: {app: server}}]
  toPorts: [{ports: [{port: "8080", protocol: TCP}]}]""",
               [("prod", "8080/tcp", "ALLOWED"), ("prod", "80/tcp", "DENIED"),
                ("other", "80/tcp", "ALLOWED")]),
    "default-deny-off": (f"""endpointSelector: {SERVER}
enableDefaultDeny: {{ingress: false}}
ingressDeny: [{{fromEndpoints: [{{matchLabels: {{app: other}}}}]}}]""",
                         [("other", "80/tcp", "DENIED"), ("prod", "80/tcp", "ALLOWED")]),
    "empty-element": (f"""endpointSelector: {SERVER}
ingress: [{{}}]""", [("prod", "80/tcp", "DENIED"), ("host", "80/tcp", "DENIED")]),
    "l4-only": (f"""endpointSelector: {SERVER}
ingress: [{{toPorts: [{{ports: [{{port: "81", protocol: TCP}}]}}]}}]""",
                [("other", "81/tcp", "ALLOWED"), ("other", "80/tcp", "DENIED")]),
    "expressions": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints:
  - matchExpressions: [{{key: env, operator: NotIn, values: [dev]}},
                       {{key: app, operator: Exists}}]""",
                    [("prod", "80/tcp", "ALLOWED"), ("other", "80/tcp", "ALLOWED"),
                     ("dev", "80/tcp", "DENIED")]),
    "port-range": (f"""endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{}}]
  toPorts: [{{ports: [{{port: "80", endPort: 81, protocol: TCP}}]}}]""",
                   [("dev", "81/tcp", "ALLOWED"), ("dev", "8080/tcp", "DENIED")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_datapath_verdicts_match_trace(case, agent, world, tmp_path):
    client, names, ips = world
    text, probes = CASES[case]
    apply(agent, tmp_path, text)
    try:
        for src, dport, expected in probes:
            assert predicted(agent, names, src, "server", dport) == expected, (src, dport)
            assert probe(client, names, ips, src, "server", dport) == expected, (src, dport)
    finally:
        clear(agent)


def test_a_named_port_no_container_declares_loads_with_a_warning(agent, world, tmp_path):
    path = tmp_path / "metrics.yaml"
    path.write_text(f"""endpointSelector: {SERVER}
ingress: [{{toPorts: [{{ports: [{{port: metrics}}, {{port: web}}]}}]}}]""")
    try:
        proc = cli(agent, "policy", "import", str(path))
        assert "named port 'metrics': no container declares it yet" in proc.stderr + proc.stdout
        assert "named port 'web'" not in proc.stderr + proc.stdout  # the server declares it
    finally:
        clear(agent)


def test_policy_change_keeps_unrelated_connections(agent, world, tmp_path):
    client, names, ips = world
    apply(agent, tmp_path, CASES["l4"][0])
    session = client.run_cli("exec", "-d", names["prod"], "sh", "-c",
                             f"(echo first; sleep 3; echo second) | nc {ips['server']} 80 "
                             "> /tmp/session.out")
    assert session.returncode == 0
    time.sleep(1)
    apply(agent, tmp_path, """endpointSelector: {matchLabels: {app: nothing-here}}
ingress: [{}]""")
    time.sleep(3)
    out = client.exec(names["prod"], "cat", "/tmp/session.out").stdout
    assert "HTTP/1.0 400" in out or "HTTP/1.1 400" in out, out
    clear(agent)


@pytest.mark.timeout(300)
def test_policy_imported_on_one_agent_is_enforced_by_another(workdir, docker_ready, tmp_path):
    consul = ConsulAgent()
    consul.start()
    name = "ciliumpy-p" + uuid.uuid4().hex[:6]
    opts = ["--kvstore", "consul", "--kvstore-opt", f"consul.address={consul.address}",
            "--lease-ttl", "10"]
    state_a, state_b = workdir / (name + "a"), workdir / (name + "b")
    state_a.mkdir()
    state_b.mkdir()
    enforcer = Agent(state_a, f"/run/docker/plugins/{name}.sock", str(state_a / "api.sock"),
                     [*opts, "--node-name", name + "-a"])
    importer = Agent(state_b, str(state_b / "plugin.sock"), str(state_b / "api.sock"),
                     [*opts, "--node-name", name + "-b"])
    client = Docker()
    try:
        enforcer.start()
        importer.start()
        proc = client.run_cli("network", "create", "-d", name, "--ipam-driver", name,
                              "--subnet", "10.77.0.0/16", name)
        client.networks.append(proc.stdout.strip())
        server = client.run(name, "-l", "app=server", command=HTTPD)
        peer = client.run(name, "-l", "app=client")
        ip = client.ip(server, name)
        time.sleep(1)
        assert "ciliumpy test page" in client.exec(peer, "timeout", "2", "wget", "-qO-",
                                                   f"http://{ip}/", check=False).stdout
        revision = apply(importer, tmp_path, f"""endpointSelector: {SERVER}
ingress: [{{fromEndpoints: [{{matchLabels: {{app: nobody}}}}]}}]""")
        cli(enforcer, "policy", "wait", str(revision), "--timeout", "10")
        assert "ciliumpy test page" not in client.exec(peer, "timeout", "2", "wget", "-qO-",
                                                       f"http://{ip}/", check=False).stdout
    finally:
        client.cleanup()
        enforcer.stop()
        importer.stop()
        consul.stop()


def test_icmp_rules_per_family(agent, docker_ready, tmp_path):
    """icmps names a family: an IPv6 echo request rule lets ping6 through and leaves
    IPv4 ping dropped, through the real datapath."""
    client = Docker()
    net = "cpy-icmp-" + uuid.uuid4().hex[:6]
    client.network_create(net, "--ipv6", "--subnet", "10.77.0.0/24", "--subnet",
                          "fd77:1::/64")
    try:
        server = client.run(net, "-l", "app=server")
        pinger = client.run(net, "-l", "app=client")
        apply(agent, tmp_path, f"""
endpointSelector: {SERVER}
ingress:
- fromEndpoints: [{{matchLabels: {{app: client}}}}]
  icmps: [{{fields: [{{type: EchoRequest, family: IPv6}}]}}]""")
        v6, v4 = client.ip(server, net, v6=True), client.ip(server, net)
        deadline = time.time() + 10  # the identities may still be settling
        while not ping(client, pinger, v6, tries=1) and time.time() < deadline:
            time.sleep(0.2)
        assert ping(client, pinger, v6, tries=1), "IPv6 echo request allowed by type"
        assert not ping(client, pinger, v4, tries=1), "no IPv4 ICMP rule: dropped"
    finally:
        clear(agent)
        client.cleanup()
