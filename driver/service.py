"""The network driver's behaviour, behind the thin ``NetworkDriver.*`` handlers.

Networks: validated and persisted (Docker sends no name, only the IPAM data).
Endpoints: a veth pair per endpoint, created in CreateEndpoint so that Join can name
an existing link; the container gets a /32 (/128) address and reaches everything
through the on-link gateway, whose address the host side carries.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
import threading
from typing import Any

from datapath.links import Links, host_ifname, peer_ifname
from datapath.rates import BANDWIDTH_KEYS, RateError, parse_rate
from driver.model import Endpoint, Network, Store

MTU_OPTION = "com.docker.network.driver.mtu"
GENERIC = "com.docker.network.generic"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"
SUPPORTED_OPTIONS = {MTU_OPTION, *BANDWIDTH_KEYS}
ADDRESS_SPACES = {"CiliumpyLocal", "CiliumpyGlobal"}
ROUTE_CONNECTED = 1


class DriverError(ValueError):
    """A request the driver refuses; the message is shown to the Docker user."""


def _flag(options: dict[str, Any], name: str) -> bool:
    """A boolean network option (Docker sends JSON booleans): the string "false" must not
    silently mean true, as ``bool()`` would read it."""
    value = options.get(name)
    if value is not None and not isinstance(value, bool):
        raise DriverError(f"option {name!r} must be true or false")
    return bool(value)


def _mtu(value: Any) -> int:
    """-o values are strings ("1400"); a JSON integer is accepted too. int() used to
    truncate 1400.5, read true as 1 and accept non-ASCII digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit() and 1280 <= int(text) <= 65535):
        raise DriverError(f"option {MTU_OPTION!r} must be an integer between 1280 and 65535")
    return int(text)


def _ip_text(entry: dict[str, Any], name: str, family: int, required: bool) -> str | None:
    """A CIDR or address string of ``family`` from an IPAM data entry (or None)."""
    value = entry.get(name)
    if value is None or value == "":
        if required:
            raise DriverError(f"IPv{family} data has no {name}")
        return None
    if not isinstance(value, str):
        raise DriverError(f"IPv{family} {name} must be a string, not {type(value).__name__}")
    return value


def _parse_ipam_entry(entry: dict[str, Any], family: int) -> tuple[str, str | None]:
    """(pool, gateway) of one IPv4Data/IPv6Data entry; the gateway inside the pool."""
    space = entry.get("AddressSpace")
    # unhashable values (lists, objects) must not reach the set lookup
    if not isinstance(space, str) or space not in ADDRESS_SPACES:
        raise DriverError("ciliumpy networks need ciliumpy's IPAM: add --ipam-driver ciliumpy")
    pool_text = _ip_text(entry, "Pool", family, required=True)
    gateway_text = _ip_text(entry, "Gateway", family, required=False)
    try:
        pool = ipaddress.ip_network(pool_text, strict=False)
        gateway = ipaddress.ip_interface(gateway_text).ip if gateway_text else None
    except ValueError:
        raise DriverError(f"invalid IPv{family} pool or gateway in "
                          f"{reprlib.repr(entry)}") from None
    if pool.version != family:
        raise DriverError(f"pool {pool} is not IPv{family}")
    # Join hands the gateway out as on-link: one outside the subnet could not be
    if gateway is not None and gateway not in pool:
        raise DriverError(f"gateway {gateway} is outside the subnet {pool}")
    return str(pool), str(gateway) if gateway else None


def parse_network(network_id: str, options: dict[str, Any], ipv4: list, ipv6: list) -> Network:
    """Validates CreateNetwork's payload into a Network (no side effects)."""
    generic = options.get(GENERIC)
    if generic is None:  # only null means "no options": a falsy 0, "" or [] is a bad type
        generic = {}
    if not isinstance(generic, dict):
        raise DriverError(f"option {GENERIC!r} must be an object")
    unknown = sorted(set(generic) - SUPPORTED_OPTIONS)
    if unknown:
        raise DriverError(
            f"ciliumpy does not support the option {reprlib.repr(unknown[0])} "
            f"(supported: {', '.join(sorted(SUPPORTED_OPTIONS))})"
        )
    mtu = _mtu(generic[MTU_OPTION]) if MTU_OPTION in generic else None
    for key in set(BANDWIDTH_KEYS) & set(generic):  # the default limit of its endpoints
        try:
            parse_rate(generic[key])
        except RateError as exc:
            raise DriverError(f"option {key}: {exc}") from None
    _flag(options, ENABLE_IPV6)
    network = Network(network_id=network_id, mtu=mtu, internal=_flag(options, INTERNAL),
                      options={str(k): str(v) for k, v in generic.items()})
    for family, entries in ((4, ipv4), (6, ipv6)):
        entries = entries or []
        if len(entries) > 1:
            raise DriverError(f"ciliumpy supports one IPv{family} subnet per network")
        for entry in entries:
            pool, gateway = _parse_ipam_entry(entry, family)
            if family == 4:
                network.pool_v4, network.gateway_v4 = pool, gateway
            else:
                network.pool_v6, network.gateway_v6 = pool, gateway
    if not network.pools:
        raise DriverError("a ciliumpy network needs a subnet (IPAM data is empty)")
    return network


MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def parse_interface(interface: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(IPv4 CIDR, IPv6 CIDR, MAC) of CreateEndpoint's Interface, each None when absent.

    Checked before anything is stored or created: a malformed address or MAC used to
    fail deep in netlink (a 500) after the endpoint record had been written."""
    result: list[str | None] = []
    for name, family in (("Address", 4), ("AddressIPv6", 6)):
        value = interface.get(name)
        if value is None or value == "":
            result.append(None)
            continue
        if not isinstance(value, str):
            raise DriverError(f"Interface.{name} must be a string")
        try:
            address = ipaddress.ip_interface(value)
        except ValueError:
            raise DriverError(f"Interface.{name} {reprlib.repr(value)} is not an IPv{family} "
                              "address") from None
        if address.version != family:
            raise DriverError(f"Interface.{name} {value} is not an IPv{family} address")
        result.append(value)
    mac = interface.get("MacAddress")
    if mac is None or mac == "":
        mac = None
    elif not isinstance(mac, str) or not MAC.fullmatch(mac):
        raise DriverError(f"Interface.MacAddress {reprlib.repr(mac)} is not a MAC address "
                          "(xx:xx:xx:xx:xx:xx)")
    return result[0], result[1], mac


def mac_for(address: str | None, endpoint_id: str) -> str:
    """A locally administered MAC derived from the IPv4 address (Docker's own scheme),
    or from the endpoint id when the endpoint has no IPv4 address."""
    if address:
        ip = ipaddress.ip_interface(address).ip
        if ip.version == 4:
            return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
    raw = bytes.fromhex(endpoint_id[:8].ljust(8, "0"))
    return "02:43:" + ":".join(f"{b:02x}" for b in raw)


class Driver:
    def __init__(self, store: Store, links: Links, default_mtu: int | None = None) -> None:
        self.store, self.links = store, links
        # an overlay node lowers every endpoint's MTU by the encapsulation overhead
        self.default_mtu = default_mtu
        self._lock = threading.RLock()

    # ---- networks ----------------------------------------------------------
    def create_network(self, network: Network) -> None:
        with self._lock:
            existing = self.store.network(network.network_id)
            if existing is not None:
                if existing.pools != network.pools:
                    raise DriverError(f"network {network.network_id} already exists with "
                                      f"other subnets {existing.pools}")
                return
            self.store.put_network(network)

    def delete_network(self, network_id: str) -> None:
        with self._lock:
            for endpoint in self.store.endpoints(network_id):
                self.delete_endpoint(endpoint.endpoint_id)
            self.store.delete_network(network_id)

    def pools_in_use(self) -> set[str]:
        return {pool for net in self.store.networks() for pool in net.pools}

    # ---- endpoints ---------------------------------------------------------
    def create_endpoint(self, network_id: str, endpoint_id: str,
                        interface: dict[str, Any]) -> Endpoint:
        network = self.store.network(network_id)
        if network is None:
            raise DriverError(
                f"unknown network {network_id[:12]}: ciliumpy has no record of it "
                "(it was created before ciliumpy's state was lost); recreate the network")
        ipv4, ipv6, given_mac = parse_interface(interface)
        if not ipv4 and not ipv6:
            raise DriverError("the endpoint has no address: use --ipam-driver ciliumpy")
        for cidr, pool in ((ipv4, network.pool_v4), (ipv6, network.pool_v6)):
            if cidr and (not pool or ipaddress.ip_interface(cidr).ip
                         not in ipaddress.ip_network(pool)):
                raise DriverError(f"address {cidr} is outside the network's subnet {pool}")
        with self._lock:
            existing = self.store.endpoint(endpoint_id)
            if existing is not None and existing.addresses != [a for a in (ipv4, ipv6) if a]:
                raise DriverError(f"endpoint {endpoint_id[:12]} exists with other addresses")
            mac = given_mac or (existing.mac if existing else None) or mac_for(ipv4, endpoint_id)
            endpoint = existing or Endpoint(
                endpoint_id=endpoint_id, network_id=network_id,
                host_ifname=host_ifname(endpoint_id), peer_ifname=peer_ifname(endpoint_id),
                mac=mac, ipv4=ipv4, ipv6=ipv6)
            self.store.put_endpoint(endpoint)
        gateways = [ipaddress.ip_address(g) for g in (network.gateway_v4, network.gateway_v6)
                    if g]
        addresses = [ipaddress.ip_interface(a).ip for a in endpoint.addresses]
        ifindex = self.links.create_endpoint_veth(endpoint.host_ifname, endpoint.peer_ifname,
                                                  endpoint.mac, gateways, addresses,
                                                  network.mtu or self.default_mtu)
        if endpoint.ifindex != ifindex:
            endpoint = self.store.update_endpoint(
                endpoint_id, lambda e: setattr(e, "ifindex", ifindex)) or endpoint
            endpoint.ifindex = ifindex
        return endpoint

    def join(self, network_id: str, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.store.endpoint(endpoint_id)
        network = self.store.network(network_id)
        if endpoint is None or network is None or endpoint.network_id != network_id:
            raise DriverError(f"unknown endpoint {endpoint_id[:12]} on network {network_id[:12]}")
        if not self.links.exists(endpoint.host_ifname):
            raise DriverError(f"the endpoint's interface {endpoint.host_ifname} is gone; "
                              "restart the container")
        routes = []
        answer: dict[str, Any] = {
            "InterfaceName": {"SrcName": endpoint.peer_ifname, "DstPrefix": "eth"},
            "DisableGatewayService": True,
        }
        if endpoint.ipv4 and network.gateway_v4:
            answer["Gateway"] = network.gateway_v4
            routes.append({"Destination": f"{network.gateway_v4}/32",
                           "RouteType": ROUTE_CONNECTED})
        if endpoint.ipv6 and network.gateway_v6:
            answer["GatewayIPv6"] = network.gateway_v6
            routes.append({"Destination": f"{network.gateway_v6}/128",
                           "RouteType": ROUTE_CONNECTED})
        answer["StaticRoutes"] = routes
        self.store.update_endpoint(endpoint_id, lambda e: setattr(e, "state", "joined"))
        return answer

    @staticmethod
    def _check_network(endpoint: Endpoint, network_id: str | None) -> None:
        # Docker names the endpoint's own network; a call naming another one is not about
        # this endpoint and must not leave or delete it
        if network_id is not None and endpoint.network_id != network_id:
            raise DriverError(f"endpoint {endpoint.endpoint_id[:12]} is not on network "
                              f"{network_id[:12]}")

    def set_published(self, endpoint_id: str, network_id: str,
                      ports: list[dict]) -> Endpoint | None:
        """Records the endpoint's published ports (ProgramExternalConnectivity; [] on
        RevokeExternalConnectivity). An unknown endpoint is nothing to do (as Leave)."""
        endpoint = self.store.endpoint(endpoint_id)
        if endpoint is None:
            return None
        self._check_network(endpoint, network_id)
        if endpoint.published != ports:
            endpoint = self.store.update_endpoint(
                endpoint_id, lambda e: setattr(e, "published", ports))
        return endpoint

    def leave(self, endpoint_id: str, network_id: str | None = None) -> None:
        endpoint = self.store.endpoint(endpoint_id)
        if endpoint is not None:
            self._check_network(endpoint, network_id)
            self.store.update_endpoint(endpoint_id, lambda e: setattr(e, "state", "left"))

    def delete_endpoint(self, endpoint_id: str, network_id: str | None = None
                        ) -> Endpoint | None:
        with self._lock:
            endpoint = self.store.endpoint(endpoint_id)
            if endpoint is None:
                # Docker may have moved the peer back under its SrcName: remove it too;
                # unless the name (12 characters of the id) is a known endpoint's link.
                name = host_ifname(endpoint_id)
                if all(e.host_ifname != name for e in self.store.endpoints()):
                    self.links.delete(name)
                return None
            self._check_network(endpoint, network_id)
            self.links.delete(endpoint.host_ifname)
            self.links.delete(endpoint.peer_ifname)
            self.store.delete_endpoint(endpoint_id)
            return endpoint

    def endpoint_for_address(self, address: str) -> Endpoint | None:
        ip = ipaddress.ip_interface(address).ip
        for endpoint in self.store.endpoints():
            if any(ipaddress.ip_interface(a).ip == ip for a in endpoint.addresses):
                return endpoint
        return None
