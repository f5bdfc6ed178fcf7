"""The agent skeleton through its real sockets: handshake, socket separation and
modes, status, configuration errors, and systemd socket activation."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from datapath import datapath
from tests.support.agent import CLI, SESSION_STATE_DIRS, new_pin_dir, raw_post

ACTIVATE = {"Implements": ["NetworkDriver", "IpamDriver"]}


def cli(*args, agent=None):
    env = dict(os.environ)
    if agent is not None:
        env["CILIUMPY_API_SOCKET"] = agent.api_socket
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env, timeout=60)


def test_plugin_activate_on_the_plugin_socket(agent):
    status, answer = raw_post(agent.plugin_socket, "/Plugin.Activate", b"")
    assert (status, answer) == (200, ACTIVATE)


def test_socket_modes(agent):
    assert stat.S_IMODE(os.stat(agent.plugin_socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(agent.api_socket).st_mode) == 0o600


def test_each_socket_serves_only_its_own_api(agent):
    status, answer = raw_post(agent.api_socket, "/Plugin.Activate", b"")
    assert status == 404 and "not served on this socket" in answer["Err"]
    status, answer = raw_post(agent.plugin_socket, "/v1/status", b"")
    assert status == 404


def test_requests_gunicorn_refuses_get_a_json_error_too(agent):
    """A request line over gunicorn's 4094-byte limit and a malformed header are refused
    before the application: still in the API's shape, not as an HTML page."""
    for sock in (agent.plugin_socket, agent.api_socket):
        status, answer = raw_post(sock, "/v1/identities/" + "a" * 5000, b"")
        assert status == 414 and answer["Err"].startswith("URI Too Long"), (status, answer)
    status, answer = raw_post(agent.api_socket, "/v1/status\x01", b"")
    assert status == 400 and "Invalid" in answer["Err"], (status, answer)
    assert raw_post(agent.plugin_socket, "/Plugin.Activate", b"") == (200, ACTIVATE)


def test_status_table_and_json(agent):
    table = cli("status", agent=agent)
    assert table.returncode == 0, table.stderr
    assert "KVStore:" in table.stdout and "embedded (healthy)" in table.stdout
    assert "Datapath:" in table.stdout
    reader = [line for line in table.stdout.splitlines() if line.startswith("Event reader:")]
    assert reader and "running (pid " in reader[0], table.stdout
    data = json.loads(cli("status", "-o", "json", agent=agent).stdout)
    assert data["kvstore"]["backend"] == "embedded"
    assert data["kvstore"]["healthy"] and data["kvstore"]["lease"]
    assert data["pid"] in agent.worker_pids()
    assert {"networks", "endpoints", "datapath", "node"} <= set(data)


def test_lists_print_a_table_or_the_agents_whole_answer(agent, tmp_path):
    """Every list goes through one helper: a table of rows, or the agent's answer as it
    came (with -o json), and a footer only under the table."""
    answer = agent.api("/v1/identities")
    as_json = json.loads(cli("identity", "list", "-o", "json", agent=agent).stdout)
    assert as_json == answer
    table = cli("identity", "list", agent=agent).stdout.splitlines()
    assert table[0].split() == ["ID", "LABELS", "NODES", "LOCAL", "ENDPOINTS"]
    assert len(table) == 1 + len(answer)
    assert any(line.split()[:2] == ["1", "reserved:host"] for line in table[1:])
    policies = agent.api("/v1/policy")  # rows picked out of an object, and a footer
    table = cli("policy", "list", agent=agent).stdout.splitlines()
    assert table[0].split() == ["NAME", "LABELS", "RULES", "REVISION", "SOURCE"]
    assert table[-1] == f"Revision: {policies['revision']}"
    assert len(table) == 2 + len(policies["policies"])
    assert json.loads(cli("policy", "list", "-o", "json", agent=agent).stdout) == policies


def test_status_without_agent_says_so(tmp_path):
    result = cli("--api-socket", str(tmp_path / "none.sock"), "status")
    assert result.returncode != 0
    assert "the agent is not running" in result.stderr


def test_help_lists_command_groups():
    result = cli("--help")
    assert result.returncode == 0
    for group in ("agent", "status", "network", "endpoint"):
        assert f"  {group} " in result.stdout


@pytest.mark.parametrize(
    ("content", "reason"),
    [("threads: many\n", "option 'threads'"), ("bogus: 1\n", "unknown option 'bogus'"),
     ("kvstore: [\n", "not valid YAML")],
)
def test_agent_bad_config_is_one_line_and_nonzero(tmp_path, content, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = cli("agent", "--config", str(path), "--state-dir", str(tmp_path / "s"),
                 "--plugin-socket", str(tmp_path / "p.sock"),
                 "--api-socket", str(tmp_path / "a.sock"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p.sock").exists()


def test_bad_flag_value_is_one_line(tmp_path):
    result = cli("agent", "--datapath-mode", "warp", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ciliumpy agent: flag: option 'datapath-mode' = 'warp': must be one of "
        "routed, vxlan, geneve, native")


def test_second_agent_refuses_a_live_socket(agent, tmp_path):
    result = cli("agent", "--state-dir", str(tmp_path / "s"), "--plugin-socket",
                 agent.plugin_socket, "--api-socket", str(tmp_path / "a.sock"))
    assert result.returncode == 1
    assert "another process is already serving /run/docker/plugins/ciliumpy.sock" in (
        result.stderr)
    assert raw_post(agent.plugin_socket, "/Plugin.Activate", b"")[0] == 200


def test_systemd_socket_activation(tmp_path):
    """systemd-socket-activate binds the socket and passes it as fd 3 (LISTEN_FDS), as
    ciliumpy.socket does; the agent must serve on it and never unlink it."""
    plugin = str(tmp_path / "activated.sock")
    api = str(tmp_path / "api.sock")
    pin_dir = new_pin_dir()
    SESSION_STATE_DIRS.add(str(tmp_path / "state"))  # its L7 proxy, for the session's sweep
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", plugin, sys.executable, "-m", "ciliumpy", "agent",
         "--state-dir", str(tmp_path / "state"), "--api-socket", api, "--bpf-pin-dir", pin_dir],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 10
        while not os.path.exists(plugin) and time.time() < deadline:
            time.sleep(0.05)
        # The first connection is what launches the agent; it queues until gunicorn serves.
        status, answer = raw_post(plugin, "/Plugin.Activate", b"", timeout=30)
        assert (status, answer) == (200, ACTIVATE)
        status, answer = raw_post(plugin, "/NetworkDriver.GetCapabilities", b"")
        assert answer["Scope"] == "local"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
        datapath.uninstall(pin_dir)
    assert "socket activation: plugin socket " + plugin in output
    assert os.path.exists(plugin), "the systemd-owned socket must survive the agent"


def host_device_filters(pin_dir: str) -> list[str]:
    """The ``from_netdev`` filters of the agent pinning at ``pin_dir`` on the host's
    devices (every agent attaches one to the device of its node address)."""
    prio = datapath.netdev_priority(pin_dir)
    found = []
    for device in os.listdir("/sys/class/net"):
        out = subprocess.run(["tc", "filter", "show", "dev", device, "ingress"],
                             capture_output=True, text=True).stdout
        found += [f"{device}: {line}" for line in out.splitlines()
                  if f"pref {prio} " in line and "from_netdev" in line]
    return found


def test_cleanup_removes_a_stopped_agents_datapath_and_refuses_a_running_one(scratch_agent):
    agent = scratch_agent()
    assert host_device_filters(agent.pin_dir), "the agent attached no host-device filter"
    refused = cli("cleanup", "--bpf-pin-dir", agent.pin_dir, agent=agent)
    assert refused.returncode != 0 and "stop it first" in refused.stderr, refused
    assert host_device_filters(agent.pin_dir) and os.path.isdir(agent.pin_dir)

    agent.stop(keep_pins=True)  # as systemd stops it: the datapath stays for the next one
    assert host_device_filters(agent.pin_dir), "a stopped agent must keep its datapath"
    done = cli("cleanup", "--bpf-pin-dir", agent.pin_dir, agent=agent)
    assert done.returncode == 0, done.stderr
    assert "removed the host-device filter from 1 device(s)" in done.stdout, done.stdout
    assert host_device_filters(agent.pin_dir) == []
    assert not os.path.exists(agent.pin_dir)
