"""Fixtures: the real agent (gunicorn on the real plugin socket, so the real dockerd
finds it as driver ``ciliumpy``), scratch agents on private sockets, and a Docker CLI
wrapper that removes what each test created."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ciliumpy.server import socket_in_use
from tests.support.agent import Agent, free_port, sweep_session
from tests.support.docker import DOCKER, IMAGE, Docker

PLUGIN_SOCKET = "/run/docker/plugins/ciliumpy.sock"
API_SOCKET = "/run/ciliumpy/ciliumpy.sock"


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.exit("the ciliumpy tests need root (netlink, netns, dockerd): run `sudo make test`",
                    returncode=2)


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers():
    """Torn down last: whatever this session's agents left behind (a proxy, an event
    reader, a host-device filter) is removed and named, so one test's missed cleanup
    cannot weigh on the next run (each filter holds ~180 MB of kernel memory)."""
    yield
    for leftover in sweep_session():
        print(f"\nciliumpy test session left behind, now removed: {leftover}",
              file=sys.__stderr__)


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="ciliumpy-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def agent(workdir):
    """The agent on Docker's plugin socket, with a fresh state directory, serving Hubble's
    API on loopback (``agent.hubble_port``). Addresses learnt from DNS live only as long
    as their answer's TTL (``--tofqdns-min-ttl 0``), so tests/e2e/test_fqdn_e2e.py sees
    them expire within seconds."""
    for path in (PLUGIN_SOCKET, API_SOCKET):
        if socket_in_use(path):
            pytest.exit(f"another ciliumpy agent is serving {path}: stop it before the tests",
                        returncode=2)
    state = workdir / "agent"
    state.mkdir()
    hubble_port = free_port()  # Hubble's Observer API, for tests/e2e/test_hubble_api.py
    instance = Agent(state, PLUGIN_SOCKET, API_SOCKET,
                     ["--hubble-listen-address", f"127.0.0.1:{hubble_port}",
                      "--tofqdns-min-ttl", "0"])
    instance.hubble_port = hubble_port
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def scratch_agent(workdir, request):
    """Agents on private sockets (invisible to dockerd), for protocol edge cases.
    Call it with extra agent flags; every agent made is stopped at the end."""
    made: list[Agent] = []

    def make(*extra_args: str) -> Agent:
        state = Path(tempfile.mkdtemp(prefix="scratch-", dir=workdir))
        instance = Agent(state, str(state / "plugin.sock"), str(state / "api.sock"),
                         list(extra_args))
        instance.start()
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()


@pytest.fixture(scope="session")
def docker_ready():
    proc = subprocess.run([DOCKER, "image", "inspect", IMAGE], capture_output=True)
    if proc.returncode != 0:
        pytest.fail(f"dockerd or the {IMAGE} image is missing: run scripts/setup-host.sh")


@pytest.fixture
def docker(agent, docker_ready):
    client = Docker()
    yield client
    client.cleanup()
