"""The host firewall adopts the host's established TCP connections when it starts: the
reading of /proc/net/tcp and tcp6 (a fake proc directory with the kernel's format)."""

from __future__ import annotations

import ipaddress

from ciliumpy.host_firewall import established_tcp, host_labels

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0A00000A:0016 0200000A:C350 01 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0
   2: 0A00000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000A00000A:2134 0000000000000000FFFF00000300000A:D000 01 0
   1: 000080FE00000000FF0000020100A0FE:0016 000080FE00000000FF0000020200A0FE:E000 01 0
"""


def test_established_connections_are_read_from_proc(tmp_path):
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "tcp6").write_text(TCP6)
    found = established_tcp(str(tmp_path))
    v4 = ipaddress.ip_address
    assert (v4("10.0.0.10"), 22, v4("10.0.0.2"), 50000) in found  # an SSH session
    assert all(not local.is_loopback for local, *_ in found)  # loopback: never policed
    assert all(port != 8080 or remote != v4("0.0.0.0") for _, port, remote, _ in found)
    assert (v4("10.0.0.10"), 0x2134, v4("10.0.0.3"), 0xD000) in found  # v4-mapped
    assert (v4("fe80::200:ff:fea0:1"), 22, v4("fe80::200:ff:fea0:2"), 0xE000) in found
    assert len(found) == 3


def test_host_labels():
    assert host_labels({"zone": "a", "node-access": "ssh"}) == [
        "reserved:host", "node:node-access=ssh", "node:zone=a"]
