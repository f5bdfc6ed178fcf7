"""Kafka through the L7 proxy (issue: API-aware security for Kafka): produce and fetch
rates of 1 KB messages and the round trip of one produce, from real clients in client
containers to a real Kafka-protocol broker (librdkafka's mock cluster) in a broker
container, in one run:

- no policy; L3/L4 policy only (ingress fromEndpoints app=service1 and app=service2 on
  9092/TCP, no L7 rules: BPF alone);
- the seed example's Kafka rules (examples/policies/l7-kafka.yaml): service1 may
  produce to topic1, service2 may consume it; every connection goes through the proxy,
  which decodes each request's topics (the rules name one).

Clients: confluent-kafka (librdkafka, batching, the fast one) for the rates, and both
confluent-kafka and kafka-python for the latency (one message at a time, each waited
for). Before each configuration the verdicts are checked (the seed's denial answers
TOPIC_AUTHORIZATION_FAILED only under the Kafka rules). Like bench.l7, the bench runs
its own agent under the plugin name ``cpybench`` and removes what it started, by id.

    .venv/bin/python -m bench.kafka [REPETITIONS]
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import ciliumpy, docker, start_agent, summary, tear_down, write_table
from bench.l7 import IMAGE, PLUGIN, PLUGIN_SOCKET

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.96.0.0/16"
REPS, MESSAGES, LATENCY_COUNT = 3, 500000, 300
NONE, L3L4, KAFKA = "no policy", "L3/L4 policy only", "Kafka rules (seed example)"
L3L4_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7-kafka}
spec:
  endpointSelector: {matchLabels: {app: kafka}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: service1}}, {matchLabels: {app: service2}}]
    toPorts: [{ports: [{port: "9092", protocol: TCP}]}]
"""
POLICIES = {L3L4: L3L4_POLICY,
            KAFKA: (REPO / "examples" / "policies" / "l7-kafka.yaml").read_text()}


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-kafka-"))
        os.chmod(self.tmp, 0o755)
        self.agent = None
        self.network: str | None = None
        self.containers: dict[str, str] = {}
        self.broker = None
        self.current: str | None = None

    def docker(self, *args: str, timeout: float = 120) -> str:
        return docker(*args, timeout=timeout)

    def cli(self, *args: str) -> str:
        return ciliumpy(self.agent.api_socket, *args)

    def start(self) -> None:
        from tests.support.kafka_broker import KafkaBroker

        self.agent = start_agent(self.tmp, PLUGIN_SOCKET)
        self.network = self.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN,
                                   "--subnet", SUBNET, f"cpybench-kafka-{uuid.uuid4().hex[:6]}")
        for app in ("kafka", "service1", "service2"):
            self.containers[app] = self.docker("run", "-d", "--network", self.network, "-l",
                                               f"app={app}", IMAGE, "sleep", "3600")
        self.pid = {app: int(self.docker("inspect", "-f", "{{.State.Pid}}", cid))
                    for app, cid in self.containers.items()}
        ip = self.docker("inspect", "-f",
                         "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         self.containers["kafka"])
        self.broker = KafkaBroker(self.pid["kafka"], ip, ["topic1"]).start()
        deadline = time.time() + 30
        while len([e for e in self.agent.api("/v1/endpoints")
                   if (e.get("identity") or 0) >= 256]) < 3:
            if time.time() > deadline:
                raise RuntimeError("endpoints without identities")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        tear_down(self.containers.values(), self.network, self.agent, self.tmp)

    def client(self, app: str, cmd: str, kind: str, *extra: str) -> dict:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid[app]), "-n", sys.executable, "-m",
             "tests.support.kafka_clients", cmd, "--client", kind, "--bootstrap",
             self.broker.bootstrap, "--topic", "topic1", "--client-id", app, *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} {kind}: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def apply(self, config: str) -> None:
        if config == self.current:
            return
        if config == NONE and self.current is None:  # a new agent: no policy yet
            self.current = config
            self.check(config)
            return
        if config == NONE:
            out = self.cli("policy", "delete", "l7-kafka")
        else:
            path = self.tmp / "policy.yaml"
            path.write_text(POLICIES[config])
            out = self.cli("policy", "import", str(path))
        self.cli("policy", "wait", out.rsplit(" ", 1)[1])
        self.current = config
        self.check(config)

    def check(self, config: str) -> None:
        """service2 producing is refused by the proxy only under the Kafka rules."""
        deadline = time.time() + 15
        want = config == KAFKA
        while True:
            out = self.client("service2", "produce", "confluent", "--count", "1",
                              "--timeout", "5")
            denied = "TOPIC_AUTHORIZATION_FAILED" in out["errors"]
            if denied == want and (want or out["delivered"] == 1):
                return
            if time.time() > deadline:
                raise RuntimeError(f"{config}: service2 produce gave {out}")
            time.sleep(0.2)

    def measure(self) -> dict:
        produce = self.client("service1", "bench-produce", "confluent", "--count",
                              str(MESSAGES), "--timeout", "120")
        fetch = self.client("service2", "bench-fetch", "confluent", "--count", str(MESSAGES),
                            "--timeout", "120")
        out = {"produce": produce["msgs_per_s"], "fetch": fetch["msgs_per_s"]}
        for kind in ("confluent", "kafka-python"):
            lat = self.client("service1", "latency", kind, "--count", str(LATENCY_COUNT),
                              "--timeout", "120")
            out[f"p50 {kind}"], out[f"p99 {kind}"] = lat["p50_ms"], lat["p99_ms"]
        return out


@contextlib.contextmanager
def running() -> Iterator[Bench]:
    bench = Bench()
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()


COLUMNS = ("produce", "fetch", "p50 confluent", "p99 confluent", "p50 kafka-python",
           "p99 kafka-python")


def main(reps: int = REPS) -> str:
    configs = [NONE, L3L4, KAFKA]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    started = time.monotonic()
    with running() as bench:
        for _ in range(reps):
            for config in configs:  # interleaved: drift hits every configuration alike
                bench.apply(config)
                results[config].append(bench.measure())
    return report(results, reps, time.monotonic() - started)


def report(results: dict[str, list[dict]], reps: int, elapsed: float) -> str:
    def med(config: str, key: str) -> float:
        return summary([r[key] for r in results[config]])[0]

    rows = []
    for config, runs in results.items():
        row = [config]
        for key in COLUMNS:
            m, low, high = summary([r[key] for r in runs])
            digits = 0 if key in ("produce", "fetch") else 3
            row.append(f"{m:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})")
        for base in (NONE, L3L4):
            row.append(f"{med(config, 'produce') / med(base, 'produce'):.2f}x / "
                       f"{med(config, 'fetch') / med(base, 'fetch'):.2f}x")
        rows.append(row)

    def goal(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    produce = med(KAFKA, "produce") / med(L3L4, "produce")
    fetch = med(KAFKA, "fetch") / med(L3L4, "fetch")
    added = {kind: med(KAFKA, f"p50 {kind}") - med(L3L4, f"p50 {kind}")
             for kind in ("confluent", "kafka-python")}
    notes = [
        f"goal Kafka rules >= 0.5x the L3/L4 rate: produce {produce:.2f}x "
        f"{goal(produce >= 0.5)}, fetch {fetch:.2f}x {goal(fetch >= 0.5)}",
        "goal added p50 <= 0.5 ms over L3/L4: " + ", ".join(
            f"{kind} +{value:.3f} ms {goal(value <= 0.5)}" for kind, value in added.items()),
        f"produce/fetch: {MESSAGES} messages of 1,000 bytes, confluent-kafka (librdkafka "
        "2.16, acks=1, default batching), messages/s between the first send and the last "
        "ack (fetch: first to last message); latency: {LATENCY_COUNT} produces one at a "
        "time, each acked before the next, ms".replace("{LATENCY_COUNT}",
                                                       str(LATENCY_COUNT)),
        f"{reps} repetitions per configuration, interleaved; median (min-max); ratios "
        "are of medians, produce / fetch",
        "broker: librdkafka's mock cluster (1 broker) in the kafka container's netns, "
        "reached through an in-kernel DNAT; clients in the service1 (produce) and "
        "service2 (fetch) containers' netns; one 2-core VM: clients, proxy (2 workers) "
        "and broker share both cores, unpinned",
        "checked before each configuration: service2's produce is refused with "
        "TOPIC_AUTHORIZATION_FAILED under the Kafka rules and delivered otherwise",
        f"the whole bench took {elapsed:.0f} s",
    ]
    return write_table(
        "l7", "Kafka through the L7 proxy vs L3/L4 (real clients, 1 KB messages)",
        ["configuration", "produce msg/s", "fetch msg/s", "p50 ms confluent",
         "p99 ms confluent", "p50 ms kafka-python", "p99 ms kafka-python",
         "x no policy (produce / fetch)", "x L3/L4 (produce / fetch)"],
        rows, notes, section="kafka")


if __name__ == "__main__":
    main(*(int(x) for x in sys.argv[1:]))
