"""ClusterSync's per-address path (``reprogram(addresses)``) must program exactly what a
full pass would: random sequences of endpoint changes, node changes and local endpoints
are applied through the incremental path, and after each the programmed ipcache equals
``wanted()`` and what the datapath was told (the datapath here is a dict: the maps'
behaviour is covered by tests/e2e/test_multihost.py)."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ciliumpy import endpoint_records as records
from ciliumpy import nodes
from ciliumpy.cluster import ClusterSync
from driver.model import Endpoint
from state.kvstore.base import Event


class MapsAsDict:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, int]] = {}

    def ipcache(self) -> list[dict]:
        return []

    def set_ipcache(self, prefix, identity: int, tunnel_ip: int = 0) -> None:
        self.entries[str(prefix)] = (identity, tunnel_ip)

    def delete_ipcache(self, prefix) -> None:
        del self.entries[str(prefix)]


class NoRoutes:
    def routes_via(self, ifindex):
        return {}

    def set_remote_route(self, prefix, via) -> None:
        pass

    def delete_route(self, prefix) -> None:
        pass


NODES = ["me", "n1", "n2", "n3"]
ADDRESSES = [f"10.70.{n}.{h}" for n in range(4) for h in (5, 6, 7)] + ["10.70.9.1"]
change = st.one_of(
    st.tuples(st.just("ip"), st.sampled_from(ADDRESSES), st.sampled_from(NODES),
              st.sampled_from([None, 300, 301])),
    st.tuples(st.just("node"), st.sampled_from(NODES[1:]), st.booleans(),
              st.sampled_from(["10.9.0.2", "10.9.0.3", "10.70.9.1"])),
    st.tuples(st.just("local"), st.sampled_from([None, "10.70.1.6/32"]), st.none(),
              st.none()))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(change, min_size=1, max_size=25), st.sampled_from(["vxlan", "native"]))
def test_per_address_changes_program_what_a_full_pass_would(changes, mode):
    maps, local = MapsAsDict(), []
    sync = ClusterSync(None, "me", mode, maps, NoRoutes(), None, lambda: list(local),
                       overlay_ifindex=7)
    sync._loaded = {nodes.PREFIX, records.PREFIX}
    for i, name in enumerate(NODES):
        sync.nodes[name] = nodes.Node(name, f"10.9.0.{10 + i}", mode, [f"10.70.{i}.0/24"])
    sync.reprogram()
    for kind, a, b, c in changes:
        if kind == "ip":
            address, node, identity = a, b, c
            key = records.record_key(node, address)
            event = (Event("delete", key, None, 0) if identity is None else
                     Event("put", key, json.dumps({"identity": identity, "node": node}), 0))
            sync._apply_events([event])
            sync.reprogram({address})
        elif kind == "node":
            name, present, ip = a, b, c
            if present:
                i = NODES.index(name)
                sync.nodes[name] = nodes.Node(name, ip, mode, [f"10.70.{i}.0/24"])
            else:
                sync.nodes.pop(name, None)
            sync.reprogram()
        else:
            local[:] = [Endpoint("e", "n", "h", "p", "m", ipv4=a, ifindex=3)] if a else []
            sync.reprogram(set(ADDRESSES))
        wanted, _ = sync.wanted()
        assert sync._ipcache == wanted
        assert maps.entries == {str(ipaddress.ip_network(p)): v for p, v in wanted.items()}
