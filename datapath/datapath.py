"""The datapath as the agent sees it: endpoints, ipcache, policy entries, conntrack,
metrics. Every change is an incremental map update; nothing is recompiled per
endpoint or per rule.

Policy entries are kept in a Python mirror (rebuilt from the maps at start) so that an
endpoint's entries can be listed and removed without scanning the whole map.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from datapath import loader, maps, sock_lb
from datapath.events import EventReader
from datapath.tc import TC

log = logging.getLogger("ciliumpy.datapath")
PROTOCOL_NUMBERS = {"any": 0, "tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
SHAPING_FLAGS = maps.EP_SHAPED_EGRESS | maps.EP_SHAPED_INGRESS


def backstop_horizon_ns(egress_bps: int) -> int:
    """The backstop admits what the shaper upstream can legitimately release at once:
    four 64 KiB GSO packets at the limit, and never less than 50 ms of it."""
    return max(50_000_000, 4 * 65536 * 8 * 1_000_000_000 // egress_bps)


CT_TIMEOUTS_NS = {"closing": 10e9, "established": 21600e9, "syn": 60e9, "other": 60e9}


@dataclass(frozen=True)
class PolicyEntry:
    """One allow or deny entry: endpoint (host ifindex), direction, peer identity
    (0 = any), protocol (0 = any), port range (0-0 = any port)."""

    ep: int
    direction: str  # "ingress" | "egress"
    identity: int
    proto: int
    port: int = 0
    end_port: int = 0
    deny: bool = False
    proxy_port: int = 0

    def map_keys(self) -> list[maps.PolicyKey]:
        last = self.end_port or self.port
        direction = maps.DIR_INGRESS if self.direction == "ingress" else maps.DIR_EGRESS
        return [maps.policy_key(self.ep, direction, self.identity, self.proto, port, bits)
                for port, bits in maps.port_prefixes(self.port, last)]


def _policy_value(deny: bool, proxy_port: int) -> maps.PolicyVal:
    value = maps.PolicyVal()
    value.flags = maps.POLICY_DENY if deny else 0
    value.proxy_port = proxy_port
    return value


def interface_mac(ifindex: int) -> str:
    """Through netlink, not /sys/class/net: an agent entered into a network namespace
    with nsenter still sees the host's sysfs."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifindex)
    return links[0].get_attr("IFLA_ADDRESS")


class Datapath:
    def __init__(self, pin_dir: str = "/sys/fs/bpf/ciliumpy") -> None:
        self.pin_dir = pin_dir
        self.loaded: loader.Loaded | None = None
        self.tc: TC | None = None
        self.reader: EventReader | None = None
        self.entries: set[PolicyEntry] = set()
        # Entries may share map keys (port-range prefixes, an L7 and an L4-only allow of
        # the same peer and port): each key keeps the proxy ports of the entries on it,
        # and its value redirects to the proxy while any of them does.
        self._key_refs: dict[tuple[bool, bytes], list[int]] = {}
        self._lock = threading.RLock()

    # ---- lifecycle -----------------------------------------------------------
    def start(self, on_event: Callable[[dict], None] | None = None) -> None:
        self.loaded = loader.load(self.pin_dir)
        self.tc = TC()
        self._rebuild_mirror()
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

    def attach_netdev(self, ifindex: int) -> int:
        """from_netdev on the host device's ingress (published ports from outside), at
        a tc priority derived from the pin dir (one per agent); returns it."""
        prio = 100 + zlib.crc32(self.pin_dir.encode()) % 30000
        self.tc.attach_netdev(ifindex, self.loaded.programs["from_netdev"], prio)
        return prio

    def attach_socket_hooks(self) -> str:
        """The socket load-balancing hooks at the cgroup v2 root (``sock_lb``)."""
        programs = self.loaded.programs
        return sock_lb.attach(programs, loader.SOCK_PROGRAMS, self.pin_dir)

    def set_mode(self, tunnel_ifindex: int | None) -> None:
        """Tunnel mode with the overlay device, or routed (None): one map entry."""
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
        info = maps.EpInfo()
        info.identity = identity
        info.flags = (maps.EP_ENFORCE_INGRESS if enforce_ingress else 0) | (
            maps.EP_ENFORCE_EGRESS if enforce_egress else 0) | self._shaping_flags(ifindex)
        info.mac[:] = [int(part, 16) for part in mac.split(":")]
        host_mac = host_mac or interface_mac(ifindex)
        info.host_mac[:] = [int(part, 16) for part in host_mac.split(":")]
        with self._lock:
            for address in addresses:
                self.set_ipcache(ipaddress.ip_network(address), identity, ifindex=ifindex)
            self.maps["cp_endpoints_v2"].update(maps.ct.c_uint32(ifindex), info)

    # ---- bandwidth ----------------------------------------------------------------
    def _shaping_flags(self, ifindex: int) -> int:
        current = self.maps["cp_endpoints_v2"].lookup(maps.ct.c_uint32(ifindex))
        return current.flags & SHAPING_FLAGS if current is not None else 0

    def set_bandwidth(self, ifindex: int, egress_bps: int, ingress_shaped: bool) -> None:
        """The egress backstop (``egress_bps``, 0 = none) and whether packets to the
        endpoint must pass its host veth's qdisc. The endpoint entry must exist."""
        table = self.maps["cp_bandwidth_v1"]
        key = maps.ct.c_uint32(ifindex)
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
        with self._lock:
            self.maps["cp_endpoints_v2"].delete(maps.ct.c_uint32(ifindex))
            self.maps["cp_bandwidth_v1"].delete(maps.ct.c_uint32(ifindex))
            for address in addresses:
                key = maps.ipcache_key(ipaddress.ip_network(address))
                value = self.maps["cp_ipcache_v1"].lookup(key)
                if value is not None and value.ifindex == ifindex:
                    self.maps["cp_ipcache_v1"].delete(key)
            for entry in [e for e in self.entries if e.ep == ifindex]:
                self.remove_policy(entry)

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
        value = maps.IpcacheVal()
        value.identity, value.ifindex, value.tunnel_ip = identity, ifindex, tunnel_ip
        self.maps["cp_ipcache_v1"].update(maps.ipcache_key(prefix), value)

    def delete_ipcache(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return self.maps["cp_ipcache_v1"].delete(maps.ipcache_key(prefix))

    def ipcache(self) -> list[dict]:
        result = []
        for key, value in self.maps["cp_ipcache_v1"].items():
            ip = maps.to_ip(key.family, key.addr)
            result.append({"prefix": f"{ip}/{key.prefixlen - 32}", "identity": value.identity,
                           "ifindex": value.ifindex, "tunnel_ip": value.tunnel_ip})
        return sorted(result, key=lambda item: item["prefix"])

    # ---- policy ------------------------------------------------------------------
    def add_policy(self, entry: PolicyEntry) -> None:
        """Writes one entry (a few map keys for a port range); touches nothing else."""
        table = self.maps["cp_policy_deny_v1" if entry.deny else "cp_policy_allow_v1"]
        with self._lock:
            if entry in self.entries:
                return
            for key in entry.map_keys():
                ports = self._key_refs.setdefault((entry.deny, bytes(key)), [])
                before = max(ports, default=None)
                ports.append(entry.proxy_port)
                if max(ports) != before:
                    table.update(key, _policy_value(entry.deny, max(ports)))
            self.entries.add(entry)

    def remove_policy(self, entry: PolicyEntry) -> bool:
        table = self.maps["cp_policy_deny_v1" if entry.deny else "cp_policy_allow_v1"]
        with self._lock:
            if entry not in self.entries:
                return False
            self.entries.discard(entry)
            for key in entry.map_keys():
                ref = (entry.deny, bytes(key))
                ports = self._key_refs[ref]
                before = max(ports)
                ports.remove(entry.proxy_port)
                if not ports:
                    del self._key_refs[ref]
                    table.delete(key)
                elif max(ports) != before:
                    table.update(key, _policy_value(entry.deny, max(ports)))
            return True

    def policy(self, ep: int | None = None) -> list[dict]:
        return [asdict(e) for e in sorted(self.entries, key=lambda e: (
            e.ep, e.direction, e.identity, e.proto, e.port, e.deny)) if ep in (None, e.ep)]

    def _rebuild_mirror(self) -> None:
        """Entries pinned by an earlier agent, read back (port ranges come back as the
        prefixes they were written as)."""
        self.entries.clear()
        self._key_refs.clear()
        for name, deny in (("cp_policy_allow_v1", False), ("cp_policy_deny_v1", True)):
            for key, value in self.maps[name].items():
                bits = key.prefixlen - 96
                port = (key.dport[0] << 8) | key.dport[1]
                end = port + (1 << (16 - bits)) - 1 if bits < 16 else 0
                if bits == 0:
                    port, end = 0, 0
                entry = PolicyEntry(
                    key.ep, "ingress" if key.dir == maps.DIR_INGRESS else "egress",
                    key.identity, key.proto, port, end, deny, value.proxy_port)
                self.entries.add(entry)
                self._key_refs[(deny, bytes(key))] = [value.proxy_port]

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
        """Deletes the TCP connections of an endpoint (its ``addresses``; the source for
        egress, the destination for ingress) to ports ``first..last`` whose L7 redirect
        just changed: their next packet is judged anew, so a connection opened before its
        port went through the proxy is reset at once by the proxy's listener instead of
        going on unchecked; one the proxy already holds finds its socket again."""
        wanted = {ip.packed.ljust(16, b"\0") for ip in addresses}
        table = self.maps["cp_ct_v1"]
        removed = 0
        for key, _value in table.items():
            side = bytes(key.saddr if direction == "egress" else key.daddr)
            if (key.proto == 6 and side in wanted and first <= key.dport <= last
                    and table.delete(key)):
                removed += 1
        return removed

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
