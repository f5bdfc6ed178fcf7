"""Kafka L7 policy end to end: the seed example on real containers. A real
Kafka-protocol broker (librdkafka's mock cluster) serves in the ``app=kafka``
container's network namespace on its address, port 9092; kafka-python and
confluent-kafka (librdkafka) clients run in the ``app=service1`` / ``service2`` /
``service3`` containers' namespaces; the BPF redirect sends their connections to the
agent's proxy, which judges every Kafka request by the sender's identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_l7_e2e import pid_of
from tests.e2e.test_policy_e2e import apply, clear
from tests.support.agent import CLI
from tests.support.docker import Docker
from tests.support.kafka_broker import KafkaBroker

REPO = Path(__file__).resolve().parents[2]
SEED = (REPO / "examples" / "policies" / "l7-kafka.yaml").read_text()
CLIENTS = ("kafka-python", "confluent")
AUTHZ = {"TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED"}


@pytest.fixture(scope="module")
def kafka(agent, docker_ready):
    client = Docker()
    net = "cpy-kafka-" + uuid.uuid4().hex[:6]
    client.network_create(net, "--subnet", "10.93.0.0/16")
    names = {}
    for app in ("kafka", "service1", "service2", "service3"):
        names[app] = f"cpy-{app}-{uuid.uuid4().hex[:4]}"
        client.run(net, "-l", f"app={app}", name=names[app])
    pids = {app: pid_of(client, name) for app, name in names.items()}
    ips = {app: client.ip(name, net) for app, name in names.items()}
    broker = KafkaBroker(pids["kafka"], ips["kafka"], ["topic1", "topic2"]).start()
    deadline = time.time() + 30  # identities known before any policy is judged
    while time.time() < deadline:
        endpoints = [e for e in agent.api("/v1/endpoints") if e.get("network_name") == net]
        if len(endpoints) == 4 and all(e["identity"] >= 256 for e in endpoints):
            break
        time.sleep(0.2)
    try:
        yield {"docker": client, "pid": pids, "ip": ips, "broker": broker}
    finally:
        clear(agent)
        broker.stop()
        client.cleanup()


def run_client(kafka: dict, app: str, cmd: str, kind: str, topic: str, *extra: str) -> dict:
    proc = subprocess.run(
        ["nsenter", "-t", str(kafka["pid"][app]), "-n", sys.executable, "-m",
         "tests.support.kafka_clients", cmd, "--client", kind, "--bootstrap",
         kafka["broker"].bootstrap, "--topic", topic, "--client-id", f"{app}-{kind}",
         *extra], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli(agent, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30,
                          check=check, env=dict(os.environ,
                                                CILIUMPY_API_SOCKET=agent.api_socket))


def test_seed_example_both_clients(agent, kafka, tmp_path):
    """service1 produces to topic1 and service2 consumes it; service1 consuming,
    service2 producing and anything on topic2 are refused with the authorization
    error; service3 cannot connect at all. Afterwards, with the policy gone, the topics
    hold exactly what was allowed: nothing denied reached the broker."""
    apply(agent, tmp_path, SEED)
    produced = 0
    for kind in CLIENTS:
        out = run_client(kafka, "service1", "produce", kind, "topic1", "--count", "25",
                         "--timeout", "15")
        assert out["delivered"] == 25 and not out["errors"], out
        produced += 25
        for args in ((), ("--group", f"e2e-{kind}")):
            out = run_client(kafka, "service2", "consume", kind, "topic1", "--expect",
                             str(produced), "--timeout", "15", *args)
            assert out["consumed"] >= produced and not out["errors"], (args, out)
        out = run_client(kafka, "service1", "consume", kind, "topic1", "--timeout", "8")
        assert out["consumed"] == 0 and AUTHZ & set(out["errors"]), out
        out = run_client(kafka, "service2", "produce", kind, "topic1", "--count", "3",
                         "--timeout", "8")
        assert out["delivered"] == 0 and "TOPIC_AUTHORIZATION_FAILED" in out["errors"], out
        out = run_client(kafka, "service1", "produce", kind, "topic2", "--count", "3",
                         "--timeout", "8")
        assert out["delivered"] == 0 and "TOPIC_AUTHORIZATION_FAILED" in out["errors"], out
        out = run_client(kafka, "service3", "produce", kind, "topic1", "--count", "1",
                         "--timeout", "4")
        assert out["delivered"] == 0, out  # dropped at L3/L4: no connection at all

    # what the user sees: the monitor's Kafka lines, metrics, and trace agreeing
    proc = subprocess.run(["timeout", "3", *CLI, "monitor", "--type", "l7", "--history",
                           "-o", "json"], capture_output=True, text=True, timeout=15,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    denied = [e for e in events if e.get("protocol") == "kafka" and e["verdict"] == "DENIED"
              and (e.get("kafka") or {}).get("api_key") == "produce"
              and e["kafka"]["client_id"].startswith("service2")]
    assert denied and denied[-1]["kafka"]["error_code"] == 29
    assert "container:app=service2" in denied[-1]["src_labels"]
    assert "container:app=kafka" in denied[-1]["dst_labels"]
    text = subprocess.run(["timeout", "3", *CLI, "monitor", "--type", "l7", "--history"],
                          capture_output=True, text=True, timeout=15,
                          env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)).stdout
    assert "(Kafka produce v" in text and "topic topic1" in text
    metrics = subprocess.run(["curl", "-s", "--unix-socket", agent.api_socket,
                              "http://agent/metrics"], capture_output=True, text=True).stdout
    assert ('ciliumpy_kafka_requests_total{api_key="produce",topic="topic1",'
            'verdict="DENIED"}') in metrics
    ips = kafka["ip"]
    for src, key, topic, verdict in (("service1", "produce", "topic1", "ALLOWED"),
                                     ("service2", "produce", "topic1", "DENIED"),
                                     ("service1", "produce", "topic2", "DENIED"),
                                     ("service2", "fetch", "topic1", "ALLOWED")):
        out = cli(agent, "policy", "trace", "--src", ips[src], "--dst", ips["kafka"],
                  "--dport", "9092/tcp", "--kafka-api-key", key, "--kafka-topic", topic,
                  "-o", "json", check=False)
        assert json.loads(out.stdout)["verdict"] == verdict, (src, key, topic, out.stdout)

    clear(agent)  # nothing enforced now: read what the broker holds
    out = run_client(kafka, "service3", "consume", "confluent", "topic1", "--expect",
                     str(produced + 1), "--timeout", "6")
    assert out["consumed"] == produced, out  # exactly service1's messages
    out = run_client(kafka, "service3", "consume", "confluent", "topic2", "--expect", "1",
                     "--timeout", "4")
    assert out["consumed"] == 0, out
