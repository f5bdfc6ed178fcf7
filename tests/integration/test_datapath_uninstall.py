"""What an agent leaves on the host's devices once it is gone for good: its
``from_netdev`` filter holds the programs and through them every service map (about
180 MB of kernel memory per agent), so removing the pins alone frees nothing. Found when
test agents had left 205 filters on eth0 and 22 GB of vmalloc behind."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from datapath import datapath as datapath_module
from datapath.datapath import Datapath
from tests.support.agent import new_pin_dir


def bpf_filters(device: str) -> list[str]:
    out = subprocess.run(["tc", "filter", "show", "dev", device, "ingress"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if " bpf " in line and " name " in line]


@pytest.fixture
def host_device():
    """A veth pair in this namespace (this kernel has no dummy devices; nothing is sent)."""
    name = f"cpu{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                   check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_uninstall_removes_only_its_own_netdev_filter(host_device):
    ifindex = int(Path(f"/sys/class/net/{host_device}/ifindex").read_text())
    agents = [Datapath(new_pin_dir()) for _ in range(2)]
    try:
        for agent in agents:
            os.makedirs(agent.pin_dir)
            agent.start()
            agent.attach_netdev(ifindex)
        assert len(bpf_filters(host_device)) == 2, bpf_filters(host_device)
        gone, stays = agents
        prio = datapath_module.netdev_priority(gone.pin_dir)
        assert any(f"pref {prio} " in line for line in bpf_filters(host_device))
        gone.stop()
        assert datapath_module.uninstall(gone.pin_dir) == [ifindex]
        remaining = bpf_filters(host_device)
        assert len(remaining) == 1 and f"pref {prio} " not in remaining[0], remaining
        assert not os.path.exists(gone.pin_dir)
        assert datapath_module.uninstall(gone.pin_dir) == []  # a second time: nothing
    finally:
        for agent in agents:
            datapath_module.uninstall(agent.pin_dir)
    assert bpf_filters(host_device) == []
