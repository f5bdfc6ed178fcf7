"""The datapath as the agent sees it: endpoints, ipcache, policy entries, conntrack,
metrics. Every change is an incremental map update; nothing is recompiled per
endpoint or per rule.

Policy entries are kept in a Python mirror (rebuilt from the maps at start) so that an
endpoint's entries can be listed and removed without scanning the whole map; they are
written in batches (``datapath/policy_maps.py``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterable

from datapath import loader, maps, sock_lb
from datapath.events import EventReader
from datapath.policy_maps import PolicyEntry, PolicyMaps
from datapath.tc import TC

log = logging.getLogger("ciliumpy.datapath")
PROTOCOL_NUMBERS = {"any": 0, "tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
SHAPING_FLAGS = maps.EP_SHAPED_EGRESS | maps.EP_SHAPED_INGRESS


def backstop_horizon_ns(egress_bps: int) -> int:
    """The backstop admits what the shaper upstream can legitimately release at once:
    four 64 KiB GSO packets at the limit, and never less than 50 ms of it."""
    return max(50_000_000, 4 * 65536 * 8 * 1_000_000_000 // egress_bps)


# conntrack flags of an adopted connection (bpf/lib/common.h): both sides' policy passed it
CT_ADOPTED = 1 | 2 | 8  # CT_EGRESS_OK | CT_INGRESS_OK | CT_ESTABLISHED
CT_TIMEOUTS_NS = {"closing": 10e9, "established": 21600e9, "syn": 60e9, "other": 60e9}


def interface_mac(ifindex: int) -> str:
    """Through netlink, not /sys/class/net: an agent entered into a network namespace
    with nsenter still sees the host's sysfs."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifindex)
    return links[0].get_attr("IFLA_ADDRESS")


def netdev_priority(pin_dir: str) -> int:
    """The tc priority of the ``from_netdev`` filter of the agent pinning at
    ``pin_dir``: one per agent, so agents sharing a host device each keep theirs."""
    return 100 + zlib.crc32(pin_dir.encode()) % 30000


def uninstall(pin_dir: str) -> list[int]:
    """Everything an agent pinning at ``pin_dir`` leaves on this host once it is gone
    for good: its ``from_netdev`` filter on the host devices of this namespace (the
    filter holds the programs and, through them, every service map: about 180 MB of
    kernel memory that removing the pins alone does not free) and its pins (which
    detach its socket hooks). Returns the ifindexes a filter was removed from."""
    tc = TC()
    try:
        removed = tc.detach_netdev_filters(netdev_priority(pin_dir))
    finally:
        tc.close()
    shutil.rmtree(pin_dir, ignore_errors=True)
    return removed


class Datapath:
    def __init__(self, pin_dir: str = "/sys/fs/bpf/ciliumpy") -> None:
        self.pin_dir = pin_dir
        self.loaded: loader.Loaded | None = None
        self.tc: TC | None = None
        self.reader: EventReader | None = None
        self._lock = threading.RLock()
        self.policy_maps = PolicyMaps(self._lock)
        self.audit_mode = False  # policy-audit-mode: every endpoint reports, none drops

    # ---- lifecycle -----------------------------------------------------------
    def start(self, on_event: Callable[[dict], None] | None = None) -> None:
        self.loaded = loader.load(self.pin_dir)
        self.tc = TC()
        self.policy_maps.load(self.maps["cp_policy_allow_v1"], self.maps["cp_policy_deny_v1"])
        if on_event is not None:
            self.reader = EventReader(self.loaded.events_fd, on_event)
            self.reader.start()

    def stop(self) -> None:
        if self.reader:
            self.reader.stop()

    @property
    def maps(self) -> dict[str, maps.BPFMap]:
        assert self.loaded is not None, "datapath not started"
        return self.loaded.maps

    # ---- endpoints -------------------------------------------------------------
    def attach(self, ifindex: int) -> None:
        programs = self.loaded.programs
        self.tc.attach(ifindex, programs["from_container"], programs["to_container"])

    def attach_overlay(self, ifindex: int) -> None:
        """from_overlay on the tunnel device's ingress (decapsulated packets), to_overlay
        on its egress (what the host itself routes to remote endpoints)."""
        self.tc.attach_overlay(ifindex, self.loaded.programs["from_overlay"],
                               self.loaded.programs["to_overlay"])

    def attach_netdev(self, ifindex: int, host_firewall: bool = False) -> int:
        """from_netdev on the host device's ingress (published ports from outside; the
        host firewall's ingress), and with ``host_firewall`` to_netdev on its egress, at
        a tc priority derived from the pin dir (one per agent); returns it."""
        prio = netdev_priority(self.pin_dir)
        programs = self.loaded.programs
        self.tc.attach_netdev(ifindex, programs["from_netdev"], prio,
                              programs["to_netdev"] if host_firewall else None)
        return prio

    def attach_socket_hooks(self) -> str:
        """The socket load-balancing hooks at the cgroup v2 root (``sock_lb``)."""
        programs = self.loaded.programs
        return sock_lb.attach(programs, loader.SOCK_PROGRAMS, self.pin_dir)

    def set_mode(self, tunnel_ifindex: int | None) -> None:
        """Tunnel mode with the overlay device, or routed (None): one map entry."""
        self.policy_maps.barrier()
        config = maps.DpConfig()
        config.mode = maps.MODE_TUNNEL if tunnel_ifindex else maps.MODE_ROUTED
        config.tunnel_ifindex = tunnel_ifindex or 0
        self.maps["cp_config_v1"].update(maps.ct.c_uint32(0), config)

    def set_endpoint(self, ifindex: int, identity: int, enforce_ingress: bool,
                     enforce_egress: bool, mac: str,
                     addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
                     host_mac: str | None = None) -> None:
        """``mac``: the container side's; ``host_mac``: the host side's (read from the
        interface when not given). Both are needed to deliver packets directly."""
        self.policy_maps.barrier()  # the endpoint's policy entries before its enforcement flags
        info = maps.EpInfo()
        info.identity = identity
        info.flags = (maps.EP_ENFORCE_INGRESS if enforce_ingress else 0) | (
            maps.EP_ENFORCE_EGRESS if enforce_egress else 0) | self._shaping_flags(ifindex) | (
            maps.EP_AUDIT if self.audit_mode else 0)
        info.mac[:] = [int(part, 16) for part in mac.split(":")]
        host_mac = host_mac or interface_mac(ifindex)
        info.host_mac[:] = [int(part, 16) for part in host_mac.split(":")]
        with self._lock:
            for address in addresses:
                self.set_ipcache(ipaddress.ip_network(address), identity, ifindex=ifindex)
            self.maps["cp_endpoints_v2"].update(maps.ct.c_uint32(ifindex), info)

    def set_host_endpoint(self, enforce_ingress: bool, enforce_egress: bool) -> None:
        """The host endpoint (the host firewall's switch: hooks police and track the
        host's traffic while it exists), identity host, its enforcement per direction."""
        self.policy_maps.barrier()  # the host's policy entries before its flags
        info = maps.EpInfo()
        info.identity = 1  # reserved:host
        info.flags = (maps.EP_ENFORCE_INGRESS if enforce_ingress else 0) | (
            maps.EP_ENFORCE_EGRESS if enforce_egress else 0) | (
            maps.EP_AUDIT if self.audit_mode else 0)
        with self._lock:
            self.maps["cp_endpoints_v2"].update(maps.ct.c_uint32(maps.HOST_EP_KEY), info)

    def ct_adopt(self, connections: Iterable[tuple]) -> int:
        """Connections that exist before the host firewall tracks the host (the agent's
        own to its kvstore, an operator's SSH session), as tracked and established both
        ways, so a host policy never cuts them: (local address, local port, remote
        address, remote port) of TCP sockets. Returns how many were added."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        table, added = self.maps["cp_ct_v1"], 0
        for local, lport, remote, rport in connections:
            key, value = maps.CtKey(), maps.CtVal()
            key.family = 4 if local.version == 4 else 6
            key.saddr[:] = list(local.packed.ljust(16, b"\0"))
            key.daddr[:] = list(remote.packed.ljust(16, b"\0"))
            key.sport, key.dport, key.proto = lport, rport, 6
            if table.lookup(key) is not None:
                continue
            value.created = value.last_seen = now
            value.flags = CT_ADOPTED
            value.src_identity, value.dst_identity = 1, 0
            table.update(key, value)
            added += 1
        return added

    def remove_host_endpoint(self) -> None:
        """The host firewall off: no host entry, no host policy entries."""
        with self._lock:
            self.maps["cp_endpoints_v2"].delete(maps.ct.c_uint32(maps.HOST_EP_KEY))
            with self.batched():
                for entry in [e for e in self.entries if e.ep == maps.HOST_EP_KEY]:
                    self.remove_policy(entry)

    # ---- bandwidth ----------------------------------------------------------------
    def _shaping_flags(self, ifindex: int) -> int:
        current = self.maps["cp_endpoints_v2"].lookup(maps.ct.c_uint32(ifindex))
        return current.flags & SHAPING_FLAGS if current is not None else 0

    def set_bandwidth(self, ifindex: int, egress_bps: int, ingress_shaped: bool) -> None:
        """The egress backstop (``egress_bps``, 0 = none) and whether packets to the
        endpoint must pass its host veth's qdisc. The endpoint entry must exist."""
        table = self.maps["cp_bandwidth_v1"]
        key = maps.ct.c_uint32(ifindex)
        self.policy_maps.barrier()
        with self._lock:
            if egress_bps:
                state = table.lookup(key) or maps.BwState()
                if state.egress_bps != egress_bps:
                    state.egress_bps, state.t_next = egress_bps, 0
                    state.horizon_ns = backstop_horizon_ns(egress_bps)
                    table.update(key, state)
            else:
                table.delete(key)
            info = self.maps["cp_endpoints_v2"].lookup(key)
            if info is None:
                return
            info.flags = (info.flags & ~SHAPING_FLAGS) | (
                maps.EP_SHAPED_EGRESS if egress_bps else 0) | (
                maps.EP_SHAPED_INGRESS if ingress_shaped else 0)
            self.maps["cp_endpoints_v2"].update(key, info)

    def bandwidth(self) -> list[dict]:
        """The backstop map: egress limit, horizon and drops per endpoint."""
        return [{"ifindex": key.value, "egress_bps": value.egress_bps,
                 "horizon_ms": round(value.horizon_ns / 1e6, 3), "drops": value.drops}
                for key, value in self.maps["cp_bandwidth_v1"].items()]

    def remove_endpoint(self, ifindex: int,
                        addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]
                        ) -> None:
        addresses = list(addresses)
        with self._lock:
            self.policy_maps.flush()
            self.maps["cp_endpoints_v2"].delete(maps.ct.c_uint32(ifindex))
            self.maps["cp_bandwidth_v1"].delete(maps.ct.c_uint32(ifindex))
            for address in addresses:
                key = maps.ipcache_key(ipaddress.ip_network(address))
                value = self.maps["cp_ipcache_v1"].lookup(key)
                if value is not None and value.ifindex == ifindex:
                    self.maps["cp_ipcache_v1"].delete(key)
            with self.batched():
                for entry in [e for e in self.entries if e.ep == ifindex]:
                    self.remove_policy(entry)
            self.ct_forget_addresses(addresses)

    def endpoints(self) -> list[dict]:
        return [{"ifindex": key.value, "identity": value.identity,
                 "enforce_ingress": bool(value.flags & maps.EP_ENFORCE_INGRESS),
                 "enforce_egress": bool(value.flags & maps.EP_ENFORCE_EGRESS),
                 "shaped_egress": bool(value.flags & maps.EP_SHAPED_EGRESS),
                 "shaped_ingress": bool(value.flags & maps.EP_SHAPED_INGRESS),
                 "mac": ":".join(f"{b:02x}" for b in value.mac),
                 "host_mac": ":".join(f"{b:02x}" for b in value.host_mac)}
                for key, value in self.maps["cp_endpoints_v2"].items()]

    # ---- ipcache ---------------------------------------------------------------
    def set_ipcache(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, identity: int,
                    ifindex: int = 0, tunnel_ip: int = 0) -> None:
        self.policy_maps.barrier()
        value = maps.IpcacheVal()
        value.identity, value.ifindex, value.tunnel_ip = identity, ifindex, tunnel_ip
        self.maps["cp_ipcache_v1"].update(maps.ipcache_key(prefix), value)

    def delete_ipcache(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        self.policy_maps.barrier()
        return self.maps["cp_ipcache_v1"].delete(maps.ipcache_key(prefix))

    def ipcache(self) -> list[dict]:
        result = []
        for key, value in self.maps["cp_ipcache_v1"].items():
            ip = maps.to_ip(key.family, key.addr)
            result.append({"prefix": f"{ip}/{key.prefixlen - 32}", "identity": value.identity,
                           "ifindex": value.ifindex, "tunnel_ip": value.tunnel_ip})
        return sorted(result, key=lambda item: item["prefix"])

    # ---- policy (datapath/policy_maps.py: the mirror, written in batches) ----------
    @property
    def entries(self) -> set[PolicyEntry]:
        return self.policy_maps.entries

    def batched(self) -> contextlib.AbstractContextManager[None]:
        """Policy writes inside reach the maps in batch syscalls when the block ends,
        or before any other map of this object is written (``PolicyMaps.batched``)."""
        return self.policy_maps.batched()

    def add_policy(self, entry: PolicyEntry) -> None:
        """Writes one entry (a few map keys for a port range); touches nothing else."""
        self.policy_maps.add(entry)

    def remove_policy(self, entry: PolicyEntry) -> bool:
        return self.policy_maps.remove(entry)

    def policy(self, ep: int | None = None) -> list[dict]:
        return [e._asdict() for e in sorted(self.entries, key=lambda e: (
            e.ep, e.direction, e.identity, e.proto, e.port, e.deny)) if ep in (None, e.ep)]

    # ---- conntrack and metrics -------------------------------------------------
    def conntrack(self) -> list[dict]:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        result = []
        for key, value in self.maps["cp_ct_v1"].items():
            result.append({
                "src": maps.to_ip(key.family, key.saddr), "dst": maps.to_ip(key.family, key.daddr),
                "sport": key.sport, "dport": key.dport, "proto": key.proto,
                "flags": [name for bit, name in maps.CT_FLAGS.items() if value.flags & bit],
                "packets": value.packets, "bytes": value.bytes,
                "src_identity": value.src_identity, "dst_identity": value.dst_identity,
                "proxy_port": value.proxy_port,
                "idle_seconds": round((now - value.last_seen) / 1e9, 1)})
        return result

    def ct_forget_port(self, addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
                       direction: str, first: int, last: int) -> int:
        """Deletes the TCP and UDP flows of an endpoint (its ``addresses``; the source for
        egress, the destination for ingress) to ports ``first..last`` whose L7 redirect
        just changed: their next packet is judged anew, so a connection opened before its
        port went through the proxy is reset at once by the proxy's listener instead of
        going on unchecked; one the proxy already holds finds its socket again."""
        self.policy_maps.barrier()  # the new entries first, then the connections judged anew
        wanted = {ip.packed.ljust(16, b"\0") for ip in addresses}
        table = self.maps["cp_ct_v1"]
        removed = 0
        for key, _value in table.items():
            side = bytes(key.saddr if direction == "egress" else key.daddr)
            if (key.proto in (6, 17) and side in wanted and first <= key.dport <= last
                    and table.delete(key)):
                removed += 1
        return removed

    def ct_forget_addresses(self, addresses: Iterable[ipaddress.IPv4Address |
                                                       ipaddress.IPv6Address]) -> int:
        """Deletes every connection from or to ``addresses``: those of an endpoint that
        is gone (its link deleted first, so nothing re-creates them). Its address goes to
        the next container; an entry whose flags say the old endpoint's ingress accepted
        a flow (or that the old endpoint opened it, so the peer's packets are replies)
        would let that flow into the new endpoint without its ingress policy being asked,
        straight through ``bpf_redirect_peer`` (Cilium scrubs a deleted endpoint's
        addresses from its conntrack table likewise). Returns how many went."""
        wanted = {(ip.version, ip.packed.ljust(16, b"\0")) for ip in addresses}
        if not wanted:
            return 0
        table = self.maps["cp_ct_v1"]
        held = table.keys()  # a map, not a dict: keys() walks it with get_next_key
        stale = [key for key in held
                 if (key.family, bytes(key.saddr)) in wanted
                 or (key.family, bytes(key.daddr)) in wanted]
        return table.delete_batch(stale) if stale else 0

    def ct_gc(self) -> int:
        """Deletes expired entries (the datapath ignores them already; this frees room)."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        removed = 0
        table = self.maps["cp_ct_v1"]
        for key, value in table.items():
            state = ("closing" if value.flags & 16 else "established" if value.flags & 8
                     else "syn" if value.flags & 4 else "other")
            if now - value.last_seen > CT_TIMEOUTS_NS[state] and table.delete(key):
                removed += 1
        return removed

    def metrics(self) -> list[dict]:
        result = []
        for key, per_cpu in self.maps["cp_metrics_v1"].items():
            reason, direction = divmod(key.value, 2)
            packets = sum(v.packets for v in per_cpu)
            if reason in maps.REASONS:
                result.append({"reason": maps.REASONS[reason],
                               "direction": "ingress" if direction == 0 else "egress",
                               "packets": packets, "bytes": sum(v.bytes for v in per_cpu)})
        return result

    def events_lost(self) -> int:
        """Events the BPF programs could not queue (the ring buffer was full)."""
        per_cpu = self.maps["cp_metrics_v1"].lookup(maps.ct.c_uint32(maps.EVENTS_LOST_INDEX))
        return sum(v.packets for v in per_cpu) if per_cpu else 0

    def pressure(self) -> dict[str, float]:
        return {name: m.count() / m.max_entries for name, m in self.maps.items()
                if not m.percpu and name not in ("cp_ct_v1", "cp_config_v1")}
