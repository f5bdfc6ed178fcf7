"""The host firewall's control side: this node as an endpoint (identity reserved:host,
key ``HOST_EP_KEY`` in the datapath), selected by host policies (``nodeSelector``)
through its node labels (``--node-labels``).

Alone writes the host's endpoint entry and its policy entries, from the policy manager's
view for the host (as ``EndpointManager`` does for containers, incrementally). With
``--enable-host-firewall`` off there is no host entry: the hooks neither police nor
track the host's traffic, and host policies are stored but not enforced.

Safe default (the operator cannot be locked out by turning the feature on): a direction
of the host is enforced only once a host policy selects the host in that direction
(never by ``--policy-enforcement=always``); with ``--policy-audit-mode`` verdicts are
reported (AUDIT) and nothing is dropped.
"""

from __future__ import annotations

import collections
import ipaddress
import logging

from ciliumpy.endpoints import EndpointManager, _Written
from ciliumpy.policy_manager import PolicyManager
from datapath import maps
from datapath.datapath import Datapath

log = logging.getLogger("ciliumpy.hostfw")


def host_labels(node_labels: dict[str, str]) -> list[str]:
    """The labels host policies select the host by: reserved:host and the node labels
    (source ``node``; a nodeSelector key without a source matches them)."""
    return ["reserved:host", *(f"node:{k}={v}" for k, v in sorted(node_labels.items()))]


class HostFirewall:
    def __init__(self, datapath: Datapath, policy: PolicyManager, endpoints: EndpointManager,
                 node_labels: dict[str, str]) -> None:
        self.datapath, self.policy, self.endpoints = datapath, policy, endpoints
        self.labels = host_labels(node_labels)
        self._written = _Written()

    def start(self) -> None:
        """The host endpoint, if an earlier agent did not leave one (its enforcement
        stays until the first sync: a restart never opens the host), and the host's
        entries pinned by that agent, so the first sync removes what no policy says."""
        with self.policy.lock:
            current = self.datapath.maps["cp_endpoints_v2"].lookup(
                maps.ct.c_uint32(maps.HOST_EP_KEY))
            if current is None:
                self.datapath.set_host_endpoint(False, False)
            self._written.produced = collections.Counter(
                e for e in self.datapath.entries if e.ep == maps.HOST_EP_KEY)
        adopted = self.datapath.ct_adopt(established_tcp())
        log.info("host firewall on: host labels %s; %d established connections adopted",
                 ", ".join(self.labels), adopted)

    def sync(self) -> None:
        """Brings the host's policy entries and enforcement to its view."""
        with self.policy.lock:
            view = self.policy.view_of(self.labels, False, host=True)
            add, remove = self.endpoints.difference(view, self._written, maps.HOST_EP_KEY)
            for entry in add:
                self.datapath.add_policy(entry)
            for entry in remove:
                self.datapath.remove_policy(entry)
            self._written.view = (view.serial, view.version)
            if add or remove or self._written.flags != view.flags:
                self._written.flags = view.flags
                self.datapath.set_host_endpoint(*view.flags)

    def status(self) -> dict:
        """What ``ciliumpy status`` shows of the host firewall."""
        ingress, egress = self._written.flags or (False, False)
        return {"enabled": True, "labels": self.labels, "enforce_ingress": ingress,
                "enforce_egress": egress, "entries": sum(1 for _ in self._written.produced)}


def established_tcp(proc_net: str = "/proc/self/net") -> list[tuple]:
    """The host's established TCP connections in this network namespace, from
    /proc/net/tcp and tcp6: (local address, local port, remote address, remote port)."""
    found = []
    for name, size in (("tcp", 4), ("tcp6", 16)):
        try:
            with open(f"{proc_net}/{name}", encoding="ascii") as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "01":  # TCP_ESTABLISHED
                continue
            (local, lport), (remote, rport) = (_endpoint(fields[1], size),
                                               _endpoint(fields[2], size))
            if not local.is_loopback:  # loopback never meets the host firewall
                found.append((local, lport, remote, rport))
    return found


def _endpoint(text: str, size: int) -> tuple:
    """``0100007F:0016`` (the kernel's u32 words in host byte order) -> (address, port)."""
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed[:size])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def disable(datapath: Datapath) -> None:
    """The host firewall off: an earlier agent's host entry and host policy entries go,
    so the hooks pass the host's traffic untouched."""
    datapath.remove_host_endpoint()
