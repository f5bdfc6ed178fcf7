"""serverNames (TLS SNI) end to end: a real TLS server in one container of a ciliumpy
network, real TLS clients (curl, openssl s_client) in another container's network
namespace, the client's egress policy allowing only ``allowed.example`` on port 443.
The BPF datapath redirects the port to the agent's L7 proxy, which reads the
ClientHello and splices or resets. Every refusal is checked against the server's own
log: it must never have accepted a connection for it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.e2e.test_l7_e2e import Apps, in_netns, pid_of, wait_listening
from tests.e2e.test_policy_e2e import apply, clear
from tests.integration.test_proxy_tls import OPENSSL, make_cert
from tests.support.agent import CLI
from tests.support.docker import Docker

SNI_EGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: sni-egress}
spec:
  endpointSelector: {matchLabels: {role: tls-client}}
  egress:
  - toEndpoints: [{matchLabels: {role: tls-server}}]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
      serverNames: [allowed.example]
"""


@pytest.fixture(scope="module")
def sni(agent, docker_ready, tmp_path_factory):
    client = Docker()
    apps = Apps()
    net = "cpy-sni-" + uuid.uuid4().hex[:6]
    client.network_create(net, "--subnet", "10.93.0.0/16")
    names = {}
    for role in ("tls-server", "tls-client"):
        names[role] = f"cpy-{role}-{uuid.uuid4().hex[:4]}"
        client.run(net, "-l", f"role={role}", name=names[role])
    tmp = tmp_path_factory.mktemp("sni")
    cert, key = make_cert(tmp)
    log = tmp / "server.log"
    log.touch()
    server_pid = pid_of(client, names["tls-server"])
    apps.start(server_pid, "tls-server", "--port", "443", "--log", str(log), "--cert",
               str(cert), "--key", str(key))
    try:
        wait_listening(server_pid, 443)
        deadline = time.time() + 30
        while time.time() < deadline:  # identities known before any policy is judged
            endpoints = [e for e in agent.api("/v1/endpoints") if e.get("network_name") == net]
            if len(endpoints) == 2 and all(e["identity"] >= 256 for e in endpoints):
                break
            time.sleep(0.2)
        yield {"log": log, "names": names, "server": client.ip(names["tls-server"], net),
               "client": pid_of(client, names["tls-client"])}
    finally:
        clear(agent)
        apps.stop()
        client.cleanup()


def accepts(world) -> list[str]:
    return [line for line in world["log"].read_text().splitlines()
            if line.startswith("accept ")]


def curl_https(world, name: str, path: str = "/") -> subprocess.CompletedProcess:
    return in_netns(world["client"], "curl", "-sSk", "-m", "10", "--resolve",
                    f"{name}:443:{world['server']}", f"https://{name}{path}")


def l7_history(agent) -> list[dict]:
    proc = subprocess.run(["timeout", "3", *CLI, "monitor", "--type", "l7", "--history",
                           "-o", "json"], capture_output=True, text=True, timeout=15,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_only_the_allowed_server_name_reaches_the_server(agent, sni, tmp_path):
    apply(agent, tmp_path, SNI_EGRESS)
    ok = curl_https(sni, "allowed.example", "/hello")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "ok tls allowed.example /hello\n"
    assert len(accepts(sni)) == 1
    before = sni["log"].read_text()

    denied = curl_https(sni, "other.example", "/hello")
    assert denied.returncode == 35 and "reset by peer" in denied.stderr, denied
    plain = in_netns(sni["client"], "curl", "-sS", "-m", "10",
                     f"http://{sni['server']}:443/plain")
    assert plain.returncode == 56 and "reset by peer" in plain.stderr, plain
    no_sni = subprocess.run(["nsenter", "-t", str(sni["client"]), "-n", OPENSSL, "s_client",
                             "-connect", f"{sni['server']}:443", "-noservername"], input="",
                            capture_output=True, text=True, timeout=20)
    assert "no peer certificate available" in no_sni.stdout, no_sni
    time.sleep(0.5)
    assert sni["log"].read_text() == before, "the server saw a refused connection"

    s_client = subprocess.run(["nsenter", "-t", str(sni["client"]), "-n", OPENSSL,
                               "s_client", "-connect", f"{sni['server']}:443", "-servername",
                               "allowed.example", "-quiet"], input="GET /s HTTP/1.0\r\n\r\n",
                              capture_output=True, text=True, timeout=20)
    assert "ok tls allowed.example /s" in s_client.stdout, s_client.stderr
    assert len(accepts(sni)) == 2

    events = [e for e in l7_history(agent) if e.get("protocol") == "tls"]
    by_sni = {(e["tls"]["sni"], e["verdict"]) for e in events}
    assert {("allowed.example", "FORWARDED"), ("other.example", "DENIED"),
            (None, "DENIED")} <= by_sni, events
    other = next(e for e in events if e["tls"]["sni"] == "other.example")
    assert other["direction"] == "egress" and other["dst_port"] == 443
    assert "container:role=tls-client" in other["src_labels"]
    assert "'other.example' is not in serverNames [allowed.example]" in other["reason"]
    plain_event = next(e for e in events if "first byte is 0x47" in (e.get("reason") or ""))
    assert plain_event["verdict"] == "DENIED"

    observed = subprocess.run([*CLI, "observe", "--type", "l7", "--from-pod",
                               sni["names"]["tls-client"], "-o", "json"],
                              capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    summaries = [json.loads(line)["flow"]["Summary"] for line in observed.stdout.splitlines()
                 if line.strip()]
    assert "TLS ClientHello SNI other.example reset" in summaries, summaries
    assert "TLS ClientHello SNI allowed.example spliced" in summaries, summaries
    clear(agent)


def test_without_the_policy_every_name_passes(agent, sni):
    clear(agent)
    out = curl_https(sni, "other.example", "/free")
    assert out.returncode == 0 and out.stdout == "ok tls other.example /free\n", out.stderr
