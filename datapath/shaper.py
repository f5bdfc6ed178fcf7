"""Shaping one device to a rate: a flow-queued HTB tree whose classes are picked by the
``flow_classify`` BPF program (pyroute2, in process; a device in another network
namespace is reached through that namespace's path).

The tree, under the root qdisc ``c1:``::

    c1:1          rate = ceil = the limit
    ├─ c1:2       sparse: small packets, prio 0 (served first), pfifo
    └─ c1:10..1f  bulk: one per flow hash, prio 1, each its own short pfifo

Every child may borrow up to the whole limit. A bulk flow queues only behind itself
and small packets skip the bulk queues, so pings and ACKs keep a low latency while the
limit is saturated. On a container's own interface, the kernel's TCP small queues push
back on the sending socket instead of dropping. The default class is the first bulk
class: a packet the classifier could not place is still shaped, never let through.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

MAJOR = 0xC1
ROOT, LIMIT_CLASS, SPARSE_CLASS, FIRST_BULK = 0xC10000, 0xC10001, 0xC10002, 0xC10010
BULK_QUEUES = 16  # keep in step with SHAPER_BULK_QUEUES in bpf/flow_classify.c
BULK_QUEUE_PACKETS = 16  # packets, which may be 64 KiB GSO packets
SPARSE_QUEUE_PACKETS = 64
BULK_QUANTUM = 8192


class ShaperError(RuntimeError):
    pass


def fq_available() -> tuple[bool, str]:
    """Whether the kernel has the fq qdisc, with the evidence in words."""
    import glob
    import gzip
    import platform

    release = platform.release()
    if glob.glob(f"/lib/modules/{release}/kernel/net/sched/sch_fq.ko*"):
        return True, "the kernel has the fq qdisc (module sch_fq)"
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{release}", open)):
        try:
            with opener(path, "rt") as handle:
                config = handle.read()
        except OSError:
            continue
        if "CONFIG_NET_SCH_FQ=y" in config or "CONFIG_NET_SCH_FQ=m" in config:
            return True, "the kernel has the fq qdisc"
        return False, "the kernel has no fq qdisc (CONFIG_NET_SCH_FQ is not set)"
    return False, "the kernel's configuration is unreadable, fq assumed absent"


def peer_ifindex(host_ifindex: int) -> int:
    """The index of a veth's other end (in the namespace it lives in), 0 if unknown."""
    with IPRoute() as ipr:
        links = ipr.get_links(host_ifindex)
    return (links[0].get_attr("IFLA_LINK") or 0) if links else 0


@dataclass
class ShaperStats:
    rate_bps: int  # the limit installed, 0 when the device is not shaped by us
    sent_bytes: int = 0
    sent_packets: int = 0
    drops: int = 0
    overlimits: int = 0  # packets that had to wait for tokens: the limiter's delays
    backlog_bytes: int = 0


def _burst_bytes(rate_bps: int) -> int:
    """One millisecond at the rate, at least two full-size frames (as tc's default)."""
    return max(rate_bps // 8 // 1000, 2 * 1514)


class Shaper:
    def __init__(self, classifier_fd: int) -> None:
        self.classifier_fd = classifier_fd

    def apply(self, ifindex: int, rate_bps: int, netns: str | None = None) -> bool:
        """Shapes ``ifindex`` to ``rate_bps``; False when it already was (no change)."""
        if rate_bps <= 0:
            raise ShaperError(f"a rate must be positive, not {rate_bps}")
        try:
            with IPRoute(netns=netns) if netns else IPRoute() as ipr:
                if _installed_rate(ipr, ifindex) == rate_bps:
                    return False
                _delete_root(ipr, ifindex)
                self._install(ipr, ifindex, rate_bps)
        except (NetlinkError, OSError) as exc:
            where = f" in {netns}" if netns else ""
            raise ShaperError(f"shaping ifindex {ifindex}{where} to {rate_bps} bit/s: "
                              f"{exc}") from None
        return True

    def _install(self, ipr: IPRoute, ifindex: int, rate_bps: int) -> None:
        burst = _burst_bytes(rate_bps)
        rate = f"{rate_bps}bit"
        share = f"{max(rate_bps // (BULK_QUEUES + 1), 8000)}bit"
        ipr.tc("add", "htb", ifindex, ROOT, default=FIRST_BULK & 0xFFFF)
        ipr.tc("add-class", "htb", ifindex, LIMIT_CLASS, parent=ROOT, rate=rate, ceil=rate,
               burst=burst, cburst=burst, quantum=BULK_QUANTUM)
        leaves = [(SPARSE_CLASS, 0, SPARSE_QUEUE_PACKETS)] + [
            (FIRST_BULK + i, 1, BULK_QUEUE_PACKETS) for i in range(BULK_QUEUES)]
        for classid, prio, queue in leaves:
            ipr.tc("add-class", "htb", ifindex, classid, parent=LIMIT_CLASS, rate=share,
                   ceil=rate, burst=burst, cburst=burst, prio=prio, quantum=BULK_QUANTUM)
            ipr.tc("add", "pfifo", ifindex, (classid & 0xFFFF) << 16, parent=classid,
                   limit=queue)
        ipr.tc("add-filter", "bpf", ifindex, ":1", fd=self.classifier_fd,
               name="flow_classify", parent=ROOT, prio=1)

    def clear(self, ifindex: int, netns: str | None = None) -> bool:
        """Removes our tree from ``ifindex``; False when it had none (or is gone)."""
        try:
            with IPRoute(netns=netns) if netns else IPRoute() as ipr:
                if _installed_rate(ipr, ifindex) is None:
                    return False
                return _delete_root(ipr, ifindex)
        except (NetlinkError, OSError):
            return False

    def stats(self, ifindex: int, netns: str | None = None) -> ShaperStats:
        try:
            with IPRoute(netns=netns) if netns else IPRoute() as ipr:
                rate = _installed_rate(ipr, ifindex)
                if rate is None:
                    return ShaperStats(0)
                root = _root_qdisc(ipr, ifindex)
        except (NetlinkError, OSError):
            return ShaperStats(0)
        stats = (root.get_attr("TCA_STATS") if root is not None else None) or {}
        return ShaperStats(rate, sent_bytes=stats.get("bytes", 0),
                           sent_packets=stats.get("packets", 0), drops=stats.get("drops", 0),
                           overlimits=stats.get("overlimits", 0),
                           backlog_bytes=stats.get("backlog", 0))


def _root_qdisc(ipr: IPRoute, ifindex: int):
    for qdisc in ipr.get_qdiscs(index=ifindex):
        if qdisc["parent"] == 0xFFFFFFFF:
            return qdisc
    return None


def _installed_rate(ipr: IPRoute, ifindex: int) -> int | None:
    """The limit of our tree on ``ifindex``, or None when its root is not ours."""
    root = _root_qdisc(ipr, ifindex)
    if root is None or root["handle"] != ROOT or root.get_attr("TCA_KIND") != "htb":
        return None
    for klass in ipr.get_classes(index=ifindex):
        if klass["handle"] == LIMIT_CLASS:
            params = klass.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
            rate64 = klass.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_RATE64")
            return (rate64 or params["rate"]) * 8
    return None


def _delete_root(ipr: IPRoute, ifindex: int) -> bool:
    root = _root_qdisc(ipr, ifindex)
    if root is None or not root["handle"]:  # the device's default (noqueue)
        return False
    try:
        ipr.tc("del", root.get_attr("TCA_KIND"), ifindex, root["handle"])
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return False
        raise
    return True
