"""Netlink plumbing for endpoints (pyroute2): veth pairs, gateway addresses, host routes.

Every container gets a veth pair: the host side (``lxc`` + endpoint id prefix) stays
in the host namespace and carries the network's gateway addresses, so the container
resolves its gateway to the host side's MAC; the peer (``tmp`` + prefix) is moved into
the container by Docker. The host reaches each local endpoint through a /32 (/128)
route on the host side. Routes we own carry protocol number ``RTPROT_CILIUMPY`` so
they can be told apart from the host's own routes.
"""

from __future__ import annotations

import errno
import ipaddress
import threading
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP, IFF_NOARP = 0x1, 0x80
RTPROT_CILIUMPY = 199
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
AF_INET, AF_INET6 = 2, 10

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LinkError(RuntimeError):
    """A netlink operation failed; the message names the device and the reason."""


@dataclass(frozen=True)
class HostRoute:
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    device: str
    proto: int


def host_ifname(endpoint_id: str) -> str:
    return "lxc" + endpoint_id[:12]


def peer_ifname(endpoint_id: str) -> str:
    return "tmp" + endpoint_id[:12]


class Links:
    """Thread-safe netlink operations on the current network namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ipr = IPRoute()

    def close(self) -> None:
        with self._lock:
            self._ipr.close()

    def index(self, ifname: str) -> int | None:
        with self._lock:
            found = self._ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def exists(self, ifname: str) -> bool:
        return self.index(ifname) is not None

    def create_endpoint_veth(
        self,
        host: str,
        peer: str,
        peer_mac: str,
        gateways: list[IPAddress],
        addresses: list[IPAddress],
        mtu: int | None = None,
    ) -> int:
        """Creates (or completes) the veth pair of one endpoint; returns the host ifindex.

        Idempotent: an existing pair is reused, addresses and routes are replaced.
        """
        with self._lock:
            try:
                if not self._ipr.link_lookup(ifname=host):
                    peer_spec = {"ifname": peer, "address": peer_mac}
                    if mtu:
                        peer_spec["mtu"] = mtu
                    self._ipr.link("add", ifname=host, kind="veth", peer=peer_spec)
                index = self._ipr.link_lookup(ifname=host)[0]
                settings = {"state": "up"}
                if mtu:
                    settings["mtu"] = mtu
                self._ipr.link("set", index=index, **settings)
                for gateway in gateways:
                    self._add_address(index, gateway)
                for address in addresses:
                    self._ipr.route(
                        "replace",
                        dst=f"{address}/{address.max_prefixlen}",
                        oif=index,
                        proto=RTPROT_CILIUMPY,
                        scope=RT_SCOPE_LINK if address.version == 4 else 0,
                        family=AF_INET if address.version == 4 else AF_INET6,
                    )
                return index
            except NetlinkError as exc:
                raise LinkError(f"cannot set up veth {host}/{peer}: {exc.args[-1]}") from None

    def _add_address(self, index: int, address: IPAddress) -> None:
        if address.version == 4:
            spec = {"prefixlen": 32}
        else:
            spec = {"prefixlen": 128, "IFA_FLAGS": IFA_F_NODAD | IFA_F_NOPREFIXROUTE}
        try:
            self._ipr.addr("add", index=index, address=str(address), **spec)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def delete(self, ifname: str) -> bool:
        """Deletes a link (its veth peer and routes go with it); False if absent."""
        with self._lock:
            found = self._ipr.link_lookup(ifname=ifname)
            if not found:
                return False
            try:
                self._ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise LinkError(f"cannot delete {ifname}: {exc.args[-1]}") from None
            return True

    def ensure_tunnel_device(self, kind: str, name: str, port: int) -> int:
        """The node's one overlay device in external (collect_md) mode: the BPF
        programs choose the remote node and the VNI per packet. Returns its ifindex."""
        with self._lock:
            try:
                if not self._ipr.link_lookup(ifname=name):
                    spec = ({"vxlan_collect_metadata": 1, "vxlan_port": port,
                             "vxlan_learning": 0} if kind == "vxlan" else
                            {"geneve_collect_metadata": 1, "geneve_port": port})
                    self._ipr.link("add", ifname=name, kind=kind, **spec)
                index = self._ipr.link_lookup(ifname=name)[0]
                # no ARP: the host routes remote blocks to this device and to_overlay
                # picks the node per packet (the inner MAC is rewritten on arrival)
                self._ipr.link("set", index=index, flags=IFF_NOARP | IFF_UP,
                               change=IFF_NOARP | IFF_UP)
                return index
            except NetlinkError as exc:
                raise LinkError(f"cannot set up the {kind} device {name}: "
                                f"{exc.args[-1]}") from None

    def set_mtu(self, index: int, mtu: int) -> None:
        with self._lock:
            self._ipr.link("set", index=index, mtu=mtu)

    def set_remote_route(self, prefix: str, via: str | int) -> None:
        """A remote node's block: through its underlay address (native routing), or
        onto the overlay device given by ifindex (tunnel modes: the host's own traffic
        to remote endpoints, which to_overlay encapsulates)."""
        net = ipaddress.ip_network(prefix)
        target = {"oif": via, "scope": 253} if isinstance(via, int) else {"gateway": via}
        with self._lock:
            try:
                self._ipr.route("replace", dst=str(net), proto=RTPROT_CILIUMPY,
                                family=AF_INET if net.version == 4 else AF_INET6, **target)
            except NetlinkError as exc:
                raise LinkError(f"cannot route {prefix} via {via}: {exc.args[-1]}") from None

    def delete_route(self, prefix: str) -> bool:
        net = ipaddress.ip_network(prefix)
        with self._lock:
            try:
                self._ipr.route("del", dst=str(net), proto=RTPROT_CILIUMPY,
                                family=AF_INET if net.version == 4 else AF_INET6)
                return True
            except NetlinkError:
                return False

    def routes_via(self, overlay_ifindex: int | None = None) -> dict[str, str | int]:
        """Our routes to remote blocks: prefix -> gateway (native routing), or prefix
        -> ``overlay_ifindex`` for those onto the overlay device (tunnel modes)."""
        result: dict[str, str | int] = {}
        with self._lock:
            for family in (AF_INET, AF_INET6):
                for route in self._ipr.get_routes(family=family, table=MAIN_TABLE,
                                                  proto=RTPROT_CILIUMPY):
                    via, dst = route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_DST")
                    if via and dst:
                        result[f"{dst}/{route['dst_len']}"] = via
                    elif dst and overlay_ifindex and route.get_attr("RTA_OIF") == overlay_ifindex:
                        result[f"{dst}/{route['dst_len']}"] = overlay_ifindex
        return result

    def mtu_of_address(self, address: str) -> int | None:
        """The MTU of the interface that carries ``address`` (the underlay)."""
        with self._lock:
            for item in self._ipr.get_addr():
                if item.get_attr("IFA_ADDRESS") == address:
                    link = self._ipr.get_links(item["index"])[0]
                    return link.get_attr("IFLA_MTU")
        return None

    def index_of_address(self, address: str) -> int | None:
        """The interface that carries ``address`` (the host's own device)."""
        with self._lock:
            for item in self._ipr.get_addr():
                if item.get_attr("IFA_ADDRESS") == address:
                    return item["index"]
        return None

    def list_names(self, prefix: str) -> list[str]:
        with self._lock:
            links = self._ipr.get_links()
        names = [link.get("ifname") for link in links]
        return sorted(n for n in names if n and n.startswith(prefix))

    def local_addresses(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Global addresses configured on this host's interfaces."""
        with self._lock:
            found = [ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) for a in self._ipr.get_addr()]
        return [a for a in found if not a.is_link_local]

    def host_routes(self) -> list[HostRoute]:
        """Non-default routes of the main table that ciliumpy did not install."""
        result = []
        with self._lock:
            names = {link["index"]: link.get("ifname") for link in self._ipr.get_links()}
            for family in (AF_INET, AF_INET6):
                for route in self._ipr.get_routes(family=family, table=MAIN_TABLE):
                    if route["dst_len"] == 0 or route["proto"] == RTPROT_CILIUMPY:
                        continue
                    dst = route.get("dst")
                    if not dst:
                        continue
                    prefix = ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)
                    if prefix.is_link_local or prefix.is_multicast:
                        continue
                    device = names.get(route.get("oif"), "?")
                    result.append(HostRoute(prefix, device, route["proto"]))
        return result


def enable_forwarding() -> None:
    """Routing between containers needs IP forwarding on the host (both families)."""
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            with open(path, "w") as handle:
                handle.write("1")
        except OSError as exc:
            raise LinkError(f"cannot enable forwarding ({path}): {exc.strerror}") from None
