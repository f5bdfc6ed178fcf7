"""``ciliumpy observe`` on real traffic: containers on a ciliumpy network under the L7
seed policy, real curl requests (allowed, denied by the proxy, dropped at L3/L4), and
the stored flows queried with Hubble's filters and printed in Hubble's forms."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from datetime import UTC, datetime

from tests.e2e.test_l7_e2e import SEED_GET_PUBLIC, curl, l7  # noqa: F401 (fixture)
from tests.e2e.test_policy_e2e import apply
from tests.support.agent import CLI


def observe(agent, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, "observe", *args], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def flows(agent, *args: str) -> list[dict]:
    out = observe(agent, *args, "-o", "json").stdout
    return [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]


def test_observe_filters_and_forms_on_real_traffic(agent, l7, tmp_path):  # noqa: F811
    names, ip = l7["names"], l7["ip"]
    # the store holds every earlier test's flows too: this test's window only
    start = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    apply(agent, tmp_path, SEED_GET_PUBLIC)
    front, other = l7["pid"]["frontend"], l7["pid"]["other"]
    assert curl(front, f"http://{ip['backend']}/public/a") == (200, "ok GET /public/a")
    assert curl(front, f"http://{ip['backend']}/private") == (403, "Access denied")
    assert curl(other, f"http://{ip['backend']}/public/a", "-m", "2")[0] == 0

    dropped = flows(agent, "--from-pod", names["other"], "--verdict", "DROPPED", "--since", start)
    assert dropped, "the intruder's dropped SYNs are stored"
    for flow in dropped:
        assert flow["verdict"] == "DROPPED" and flow["drop_reason_desc"] == "POLICY_DENIED"
        assert flow["source"]["pod_name"] == names["other"]
        assert flow["destination"]["pod_name"] == names["backend"]
        assert "container:role=other" in flow["source"]["labels"]
        assert flow["IP"]["source"] == ip["other"]
        assert flow["l4"]["TCP"]["destination_port"] == 80
        assert flow["l4"]["TCP"]["flags"] == {"SYN": True}, "only SYNs ever got there"
        assert flow["Summary"] == "TCP Flags: SYN"
    # its own egress let the SYNs out (it has no egress policy); the backend's ingress
    # dropped every one: nothing from it was forwarded in
    assert not flows(agent, "--ip", ip["other"], "--traffic-direction", "ingress", "--not",
                     "--verdict", "DROPPED", "--since", start)
    out = flows(agent, "--ip", ip["other"], "--not", "--verdict", "DROPPED", "--since", start)
    assert out and {f["traffic_direction"] for f in out} == {"EGRESS"}

    denied = flows(agent, "--type", "l7", "--to-pod", names["backend"], "--http-method", "GET",
                   "--verdict", "DROPPED", "--since", start)
    assert [f["l7"]["http"]["url"].rsplit("/", 1)[-1] for f in denied] == ["private"]
    assert denied[0]["source"]["pod_name"] == names["frontend"]
    answered = flows(agent, "--type", "l7", "--http-status", "2+", "--since", start)
    assert [f["l7"]["http"]["code"] for f in answered] == [200]
    assert answered[0]["l7"]["http"]["url"].endswith("/public/a")
    assert answered[0]["is_reply"] is True
    assert not flows(agent, "--type", "l7", "--http-status", "5+", "--since", start)

    # Hubble's forms
    line = observe(agent, "--from-pod", names["other"], "--last", "1").stdout.strip()
    assert len(line.splitlines()) == 1
    assert names["other"] in line and "DROPPED" in line and "(ID:" in line, line
    assert "Policy denied" in line or "POLICY_DENIED" in line, line
    table = observe(agent, "--type", "l7", "--since", start, "-o", "table").stdout
    assert table.splitlines()[0].split()[:3] == ["TIMESTAMP", "SOURCE", "DESTINATION"]
    assert "FORWARDED" in table and "DROPPED" in table
    assert "------------" in observe(agent, "--last", "2", "-o", "dict").stdout
    assert len(flows(agent, "--last", "3")) == 3
    time.sleep(1.2)
    assert not flows(agent, "--since", "1s"), "nothing happened in the last second"
    status = agent.api("/v1/flows/status")
    assert status["capacity"] == 65536 and status["flows"] >= len(dropped) + 3

    # bad input: a clear error, exit 1
    for args, message in ((("--verdict", "MAYBE"), "verdict"),
                          (("--since", "yesterday"), "neither a time"),
                          (("--from-ip", "10.0.0.300"), "10.0.0.300"),
                          (("--bogus", "x"), "no such option"),
                          (("--ip", ip["other"], "--from-ip", ip["other"]), "ip")):
        proc = observe(agent, *args, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)

    # --follow prints new flows as they happen
    follower = subprocess.Popen([*CLI, "observe", "-f", "--from-pod", names["other"],
                                 "--verdict", "DROPPED", "-o", "json"],
                                stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket))
    try:
        time.sleep(1.0)
        curl(other, f"http://{ip['backend']}/again", "-m", "1")
        ready, _, _ = select.select([follower.stdout], [], [], 10)
        assert ready, "no live flow within 10 s"
        flow = json.loads(follower.stdout.readline())["flow"]
        assert flow["source"]["pod_name"] == names["other"] and flow["verdict"] == "DROPPED"
    finally:
        follower.terminate()
        follower.wait(10)


def test_a_dead_event_reader_is_restarted_and_loses_nothing(agent, l7):  # noqa: F811
    """The ring buffer is read by a process of the agent's own (ciliumpy.flow_reader):
    killed, its death shows in the status, it is started again, and the events the
    datapath queued meanwhile still become flows."""
    names, ip = l7["names"], l7["ip"]
    other = l7["pid"]["other"]
    reader = agent.api("/v1/status")["datapath"]["event_reader"]
    assert reader["running"] and reader["pid"], reader
    assert agent.worker_pids() and reader["pid"] not in agent.worker_pids(), \
        "the ring is read outside the gunicorn worker"
    restarts = reader["restarts"]
    start = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    os.kill(reader["pid"], 9)
    # traffic while no reader runs: queued in the ring, read by the next reader
    curl(other, f"http://{ip['backend']}/while-dead", "-m", "1")
    deadline = time.time() + 20
    while time.time() < deadline:
        now = agent.api("/v1/status")["datapath"]["event_reader"]
        if now["running"] and now["pid"] != reader["pid"]:
            break
        time.sleep(0.2)
    assert now["restarts"] == restarts + 1 and now["pid"] != reader["pid"], now
    assert now["last_exit"] == -9 and "exited with -9" in now["last_error"], now
    deadline = time.time() + 10
    while not (found := flows(agent, "--from-pod", names["other"], "--since", start)):
        assert time.time() < deadline, "the events queued while the reader was dead are lost"
        time.sleep(0.3)
    assert all(f["source"]["pod_name"] == names["other"] for f in found)
    assert agent.api("/v1/status")["datapath"]["events_lost"] == 0, "the ring never filled"
