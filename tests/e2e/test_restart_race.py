"""Restarting the agent as a user does (``kill $old; ciliumpy agent &``): the old agent
drains for a while after SIGTERM, the new one starts meanwhile. The new agent must wait
for the old one to let go of the sockets, take them over, and the old one must not
unlink its successor's socket files on its way out (issue 10, item 5).

Real agent processes on private sockets only (never Docker's plugin socket)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from ciliumpy.apiclient import APIError
from tests.support.agent import CLI, Agent, raw_post

ACTIVATE = {"Implements": ["NetworkDriver", "IpamDriver"]}


def successor(old: Agent, name: str) -> Agent:
    """A second agent as a user restarting would run it: same state directory, same
    sockets, same pinned maps."""
    return Agent(old.state_dir, old.plugin_socket, old.api_socket, list(old.extra_args),
                 log_path=old.state_dir / f"{name}.log", pin_dir=old.pin_dir)


def keepalive_connection(path: str) -> socket.socket:
    """One answered request on a connection left open, as dockerd's HTTP client keeps
    it: the old agent then lingers on shutdown instead of closing at once."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(path)
    conn.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n"
                 b"Accept: application/vnd.docker.plugins.v1.2+json\r\n"
                 b"Content-Length: 0\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return conn


def assert_serves_alone(new: Agent, old: Agent) -> None:
    """After the old agent has fully exited, the socket files exist and are the new
    agent's: both answer, and the new agent is the only one left to answer."""
    assert old.proc.wait(20) == 0, old.log()
    assert new.proc.poll() is None, f"the new agent exited:\n{new.log()}"
    for path in (new.plugin_socket, new.api_socket):
        assert os.path.exists(path), f"{path} vanished:\n{old.log()}\n{new.log()}"
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert raw_post(new.plugin_socket, "/Plugin.Activate", b"", timeout=10) == (200, ACTIVATE)
    assert new.api("/v1/healthz").get("ok")
    assert stat.S_IMODE(os.stat(new.plugin_socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(new.api_socket).st_mode) == 0o600


@pytest.mark.parametrize("held", [True, False], ids=["dockerd-connected", "idle"])
def test_restart_right_after_sigterm_keeps_the_sockets(scratch_agent, held):
    """``kill $old; ciliumpy agent &``. With dockerd holding a kept-alive connection the
    old agent lingers ~2 s and the new one must wait for it; idle, the old agent lets go
    at once and its exit races with the new agent binding the same paths."""
    old = scratch_agent()
    new = successor(old, "new")
    conn = keepalive_connection(old.plugin_socket) if held else None
    try:
        began = time.monotonic()
        os.kill(old.proc.pid, signal.SIGTERM)
        launch(new)
        wait_healthy(new, timeout=15)
        assert_serves_alone(new, old)
        # And it stays so: nothing unlinks the files a moment later.
        time.sleep(0.5)
        assert_serves_alone(new, old)
        print(f"handover in {time.monotonic() - began:.2f}s")
    finally:
        if conn is not None:
            conn.close()
        new.stop()


def test_new_agent_waits_for_a_slow_shutdown_then_takes_over(scratch_agent):
    """The old agent's worker is stuck (SIGSTOP) after SIGTERM, still holding the
    listening sockets: the new agent says once that it waits, keeps waiting, and takes
    over as soon as the old worker lets go."""
    old = scratch_agent()
    new = successor(old, "new")
    worker = old.worker_pids()[0]
    os.kill(worker, signal.SIGSTOP)
    try:
        try:
            os.kill(old.proc.pid, signal.SIGTERM)
            launch(new)
            waiting = f"waiting for the previous agent to release {new.plugin_socket}"
            deadline = time.monotonic() + 8
            while waiting not in new.log() and time.monotonic() < deadline:
                assert new.proc.poll() is None, new.log()
                time.sleep(0.05)
            assert waiting in new.log(), new.log()
            time.sleep(1.0)  # the old agent still holds the sockets: the new one waits
            assert new.proc.poll() is None and "serving plugin" not in new.log(), new.log()
        finally:
            os.kill(worker, signal.SIGCONT)
        resumed = time.monotonic()
        wait_healthy(new, timeout=15)
        print(f"took over {time.monotonic() - resumed:.2f}s after the old worker resumed")
        assert_serves_alone(new, old)
        assert new.log().count("waiting for the previous agent") == 1, new.log()
    finally:
        new.stop()


def launch(agent: Agent) -> None:
    """Starts the agent process without waiting for it (``Agent.start`` waits)."""
    with open(agent.log_path, "wb") as log:
        agent.proc = subprocess.Popen(
            CLI + ["agent", "--state-dir", str(agent.state_dir), "--plugin-socket",
                   agent.plugin_socket, "--api-socket", agent.api_socket, "--log-level",
                   "info", "--bpf-pin-dir", agent.pin_dir, *agent.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(agent: Agent, timeout: float) -> None:
    """Waits until this agent (not a predecessor) serves: it has logged that it
    serves, and its API answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.proc.poll() is None, f"agent exited:\n{agent.log()}"
        if "serving plugin on" in agent.log():
            try:
                if agent.api("/v1/healthz").get("ok"):
                    return
            except APIError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"agent not healthy within {timeout}s:\n{agent.log()}")


def test_second_agent_against_a_healthy_one_gives_up_and_changes_nothing(scratch_agent):
    first = scratch_agent()
    before = {path: os.lstat(path) for path in (first.plugin_socket, first.api_socket)}
    began = time.monotonic()
    result = subprocess.run(
        CLI + ["agent", "--state-dir", str(first.state_dir), "--plugin-socket",
               first.plugin_socket, "--api-socket", first.api_socket,
               "--bpf-pin-dir", first.pin_dir],
        capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - began
    print(f"second agent gave up after {elapsed:.2f}s")
    assert result.returncode == 1, result.stderr
    assert (f"ciliumpy agent: another process is already serving {first.plugin_socket}; "
            "stop it first") in result.stderr
    assert result.stderr.count("waiting for the previous agent") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert 9.5 <= elapsed < 15
    for path, st in before.items():
        now = os.lstat(path)
        assert (now.st_ino, now.st_ctime_ns) == (st.st_ino, st.st_ctime_ns), path
    assert first.proc.poll() is None
    assert raw_post(first.plugin_socket, "/Plugin.Activate", b"") == (200, ACTIVATE)
    assert first.api("/v1/healthz").get("ok")
