"""The node's overlay device: one VXLAN (or Geneve) device in external mode whose
ingress carries from_overlay; the BPF programs pick remote node and VNI per packet.

Encapsulation costs 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN/Geneve 8),
so endpoints of a tunnel-mode node get the underlay MTU minus 50 unless the network
sets its own.
"""

from __future__ import annotations

from datapath.links import LinkError, Links

DEVICES = {"vxlan": ("cpy_vxlan", 4789), "geneve": ("cpy_geneve", 6081)}
OVERHEAD = 50
DEFAULT_UNDERLAY_MTU = 1500


class OverlayError(RuntimeError):
    """The overlay cannot work on this node; one sentence says why and what to do."""


def is_tunnel(mode: str) -> bool:
    return mode in DEVICES


def ensure_device(mode: str, links: Links, underlay_mtu: int | None) -> int:
    """Creates (or reuses) the device of ``mode`` and returns its ifindex."""
    name, port = DEVICES[mode]
    try:
        index = links.ensure_tunnel_device(mode, name, port)
    except LinkError as exc:
        other = "vxlan" if mode == "geneve" else "native"
        raise OverlayError(f"datapath-mode {mode}: this kernel cannot create a {mode} "
                           f"device ({exc}); use --datapath-mode {other}") from None
    links.set_mtu(index, endpoint_mtu(underlay_mtu))
    return index


def endpoint_mtu(underlay_mtu: int | None) -> int:
    return (underlay_mtu or DEFAULT_UNDERLAY_MTU) - OVERHEAD
