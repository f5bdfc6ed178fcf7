"""The plugin methods as the fuzz tests see them: each one's valid body (naming the
world's real network, endpoint and pool), the breakers that make it invalid, and what
a broken call must answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.support.fuzz import (
    DEEP,
    DROP,
    MAC_OPT,
    SUBNET,
    Breaker,
    World,
    _mtu_like,
    bad_ids,
    docker_ids,
    garbage_ips,
    garbage_networks,
    leaves,
    missing,
    non_bools,
    non_maps,
    non_strings,
    odd_text,
    put,
)


# ---- plugin methods --------------------------------------------------------------------
@dataclass
class Method:
    """A plugin method: its valid body, what breaks it, and what a broken call answers."""

    base: Callable[[World], dict]
    breakers: Callable[[World], dict[str, Breaker]]
    # from the tags of what was broken: "error" (must fail) or "any" (may succeed)
    expect: Callable[[set], str] = lambda tags: "error"


def id_breakers(w: World, *fields: str) -> dict[str, Breaker]:
    """Malformed or well-formed but unknown ids for ``fields``: one breaker per field
    (two on the same field would overwrite each other's values)."""
    # unknown ids include ones sharing the world endpoint's first 12 characters: its
    # interface name (lxc + 12), which no call about another id may touch
    fresh = st.one_of(docker_ids, docker_ids.map(lambda i: w.endpoint_id[:12] + i[12:]))
    return {name: st.one_of(put((name,), bad_ids()),
                            put((name,), fresh.filter(lambda i: i not in w.ids()),
                                "unknown:" + name))
            for name in fields}


def endpoint_expect(tags: set) -> str:
    """Delete/Leave: an unknown endpoint is success (Docker only logs errors and retries
    nothing); the world's endpoint named with another network is an error."""
    return "any" if "bad" not in tags and "unknown:EndpointID" in tags else "error"


def create_network_base(w: World) -> dict:
    return {"NetworkID": "f" * 64,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"},
                        "com.docker.network.internal": False},
            "IPv4Data": [{"AddressSpace": "CiliumpyLocal", "Pool": SUBNET,
                          "Gateway": w.gateway + "/24", "AuxAddresses": None}],
            "IPv6Data": []}


def create_network_breakers(w: World) -> dict[str, Breaker]:
    generic = ("Options", "com.docker.network.generic")
    entry = ("IPv4Data", 0)
    return {
        "NetworkID": put(("NetworkID",), bad_ids()),
        "Options": put(("Options",), non_maps),
        "generic": put(generic, non_maps),
        "generic key": st.tuples(odd_text, leaves).map(
            lambda kv: ([(generic + (kv[0],), kv[1])], "bad")),
        "mtu": put(generic + ("com.docker.network.driver.mtu",), st.one_of(
            st.integers().filter(lambda n: not 1280 <= n <= 65535).map(str),
            st.integers().filter(lambda n: not 1280 <= n <= 65535),
            st.sampled_from([None, True, [], {}, 1400.5, "1400.0", "1e3", " ", "mtu", DEEP]),
            odd_text.filter(lambda s: not _mtu_like(s)))),
        "enable_ipv6": put(("Options", "com.docker.network.enable_ipv6"), non_bools),
        "internal": put(("Options", "com.docker.network.internal"), non_bools),
        "IPv4Data": put(("IPv4Data",), st.one_of(non_maps.filter(lambda v: v is not None),
                                                 st.just([]), st.lists(non_maps, min_size=1,
                                                                       max_size=2))),
        "two pools": st.just(([(("IPv4Data",), [
            {"AddressSpace": "CiliumpyLocal", "Pool": SUBNET},
            {"AddressSpace": "CiliumpyLocal", "Pool": "10.231.8.0/24"}])], "bad")),
        "AddressSpace": put(entry + ("AddressSpace",), st.one_of(
            missing(), non_strings, odd_text.filter(
                lambda s: s not in ("CiliumpyLocal", "CiliumpyGlobal")))),
        "Pool": put(entry + ("Pool",), st.one_of(missing(), non_strings, garbage_networks,
                                                 st.sampled_from(["fd00::/64", "::/0"]))),
        "Gateway": put(entry + ("Gateway",), st.one_of(
            non_strings, garbage_ips, st.sampled_from(["10.9.9.9/24", "fd00::1/64"]))),
        "IPv6Data": put(("IPv6Data",), st.one_of(  # not [] nor null: those are valid
            non_maps.filter(lambda v: v is not None and v != []),
            st.lists(non_maps, min_size=1, max_size=2),
            st.just([{"AddressSpace": "CiliumpyLocal", "Pool": "10.231.9.0/24"}]))),
    }


def create_endpoint_base(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": "e" * 64,
            "Interface": {"Address": "10.231.7.200/32", "AddressIPv6": "",
                          "MacAddress": "02:42:0a:e7:07:c8"},
            "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                        MAC_OPT: "AkIK5wfI"}}


def create_endpoint_breakers(w: World) -> dict[str, Breaker]:
    iface = ("Interface",)
    return {
        **id_breakers(w, "NetworkID"),
        "EndpointID": put(("EndpointID",), bad_ids()),
        "Interface": put(iface, st.one_of(st.none(), st.just(DROP), non_maps)),
        "Address": put(iface + ("Address",), st.one_of(
            missing(), non_strings, garbage_ips,
            st.sampled_from(["10.9.9.9/32", "fd00::5/128", "10.231.8.1/32"]))),
        "AddressIPv6": put(iface + ("AddressIPv6",), st.one_of(
            non_strings, garbage_ips, st.sampled_from(["fd00::5/128", "10.231.7.9/32"]))),
        "MacAddress": put(iface + ("MacAddress",), st.one_of(
            non_strings, odd_text.filter(lambda s: s != ""),
            st.sampled_from(["02:42", "zz:zz:zz:zz:zz:zz", "02:42:0a:e7:07:c8:00", "0242.0ae7"]))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def join_base(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": w.endpoint_id,
            "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": None}


def endpoint_pair(w: World) -> dict:
    return {"NetworkID": w.network_id, "EndpointID": w.endpoint_id}


def request_pool_base(w: World) -> dict:
    # the world holds this pool: even unbroken, the request is refused (overlap)
    return {"AddressSpace": "CiliumpyLocal", "Pool": SUBNET, "SubPool": "", "Options": None,
            "V6": False}


def request_pool_breakers(w: World) -> dict[str, Breaker]:
    return {
        "AddressSpace": put(("AddressSpace",), st.one_of(
            non_strings, odd_text.filter(lambda s: s not in ("", "CiliumpyLocal",
                                                             "CiliumpyGlobal")))),
        # never "" or missing: that is a request for a fresh default pool
        "Pool": put(("Pool",), st.one_of(non_strings, garbage_networks, st.sampled_from(
            ["fd00::/64", "10.231.7.0/31", "10.231.7.1/32", "10.231.0.0/16"]))),
        "no Pool but SubPool": st.just(([(("Pool",), ""), (("SubPool",), "10.77.0.0/24")],
                                        "bad")),
        "SubPool": put(("SubPool",), st.one_of(non_strings, garbage_networks, st.sampled_from(
            ["10.9.0.0/24", "fd00::/64", "10.231.7.0/25"]))),
        "V6": put(("V6",), st.one_of(non_bools, st.just(True))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def request_address_base(w: World) -> dict:
    return {"PoolID": w.pool_id, "Address": "", "Options": {MAC_OPT: "02:42:0a:e7:07:c9"}}


def request_address_breakers(w: World) -> dict[str, Breaker]:
    return {
        "PoolID": put(("PoolID",), st.one_of(
            missing(), non_strings, odd_text, st.just("ciliumpy:10.77.0.0/16")).filter(
            lambda s: s != w.pool_id)),
        # taken (gateway, the container), reserved, outside the pool, or not an address
        "Address": put(("Address",), st.one_of(non_strings, garbage_ips, st.sampled_from(
            [w.gateway, w.address, w.address + "/24", "10.231.7.0", "10.231.7.255",
             "10.9.9.9", "fd00::9"]))),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None)),
    }


def release_address_base(w: World) -> dict:
    return {"PoolID": w.pool_id, "Address": w.address}


def release_address_breakers(w: World) -> dict[str, Breaker]:
    return {
        "PoolID": unknown_pool_id(w),
        "Address": st.one_of(
            put(("Address",), st.one_of(missing(), non_strings, garbage_ips)),
            put(("Address",), st.sampled_from(["10.231.7.250", "10.9.9.9", "fd00::9"]),
                "unknown:Address")),
    }


def unknown_pool_id(w: World) -> Breaker:
    """Releases: no PoolID is an error; a string naming no pool of ours is success."""
    return st.one_of(put(("PoolID",), st.one_of(missing(), non_strings)),
                     put(("PoolID",), odd_text.filter(lambda s: s not in ("", w.pool_id)),
                         "unknown:PoolID"))


def release_expect(tags: set) -> str:
    return "error" if "bad" in tags else "any"


def stateless(base: Callable[[World], dict], *fields: str) -> Method:
    """Acknowledged calls (swarm, discovery, external connectivity): may succeed."""
    def breakers(w: World) -> dict[str, Breaker]:
        return {name: put((name,), st.one_of(missing(), non_strings, odd_text))
                for name in fields}
    return Method(base, breakers, lambda tags: "any")


PLUGIN_METHODS: dict[str, Method] = {
    "NetworkDriver.CreateNetwork": Method(create_network_base, create_network_breakers),
    "NetworkDriver.DeleteNetwork": Method(
        lambda w: {"NetworkID": w.network_id}, lambda w: id_breakers(w, "NetworkID"),
        release_expect),
    "NetworkDriver.CreateEndpoint": Method(create_endpoint_base, create_endpoint_breakers),
    "NetworkDriver.Join": Method(join_base, lambda w: {
        **id_breakers(w, "NetworkID", "EndpointID"),
        "SandboxKey": put(("SandboxKey",), non_strings),
        "Options": put(("Options",), non_maps.filter(lambda v: v is not None))}),
    "NetworkDriver.Leave": Method(endpoint_pair, lambda w: id_breakers(
        w, "NetworkID", "EndpointID"), endpoint_expect),
    "NetworkDriver.DeleteEndpoint": Method(endpoint_pair, lambda w: id_breakers(
        w, "NetworkID", "EndpointID"), endpoint_expect),
    "NetworkDriver.EndpointOperInfo": stateless(endpoint_pair, "NetworkID", "EndpointID"),
    "NetworkDriver.AllocateNetwork": stateless(
        lambda w: {"NetworkID": "a" * 64, "IPv4Data": [], "IPv6Data": [], "Options": {}},
        "NetworkID", "IPv4Data", "Options"),
    "NetworkDriver.FreeNetwork": stateless(lambda w: {"NetworkID": "a" * 64}, "NetworkID"),
    "NetworkDriver.DiscoverNew": stateless(
        lambda w: {"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9"}},
        "DiscoveryType", "DiscoveryData"),
    "NetworkDriver.DiscoverDelete": stateless(
        lambda w: {"DiscoveryType": 1, "DiscoveryData": {"Address": "192.0.2.9"}},
        "DiscoveryType", "DiscoveryData"),
    "NetworkDriver.ProgramExternalConnectivity": stateless(
        lambda w: {**endpoint_pair(w), "Options": None}, "NetworkID", "EndpointID", "Options"),
    "NetworkDriver.RevokeExternalConnectivity": stateless(
        endpoint_pair, "NetworkID", "EndpointID"),
    "IpamDriver.RequestPool": Method(request_pool_base, request_pool_breakers),
    "IpamDriver.ReleasePool": Method(lambda w: {"PoolID": w.pool_id},
                                     lambda w: {"PoolID": unknown_pool_id(w)}, release_expect),
    "IpamDriver.RequestAddress": Method(request_address_base, request_address_breakers),
    "IpamDriver.ReleaseAddress": Method(release_address_base, release_address_breakers,
                                        release_expect),
}

STATIC_METHODS = {
    "Plugin.Activate": {"Implements": ["NetworkDriver", "IpamDriver"]},
    "NetworkDriver.GetCapabilities": {"Scope": "local", "ConnectivityScope": "global"},
    "IpamDriver.GetCapabilities": {"RequiresMACAddress": True, "RequiresRequestReplay": False},
    "IpamDriver.GetDefaultAddressSpaces": {"LocalDefaultAddressSpace": "CiliumpyLocal",
                                           "GlobalDefaultAddressSpace": "CiliumpyGlobal"},
}
