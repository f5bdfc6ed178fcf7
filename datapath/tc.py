"""Attaching the programs with tc: a clsact qdisc and one direct-action cls_bpf filter
per direction on an endpoint's host-side veth (pyroute2, in process)."""

from __future__ import annotations

import errno
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

INGRESS_PARENT = "ffff:fff2"  # packets from the container
EGRESS_PARENT = "ffff:fff3"  # packets to the container


class TcError(RuntimeError):
    pass


class TC:
    def __init__(self) -> None:
        self._ipr = IPRoute()
        self._lock = threading.Lock()

    def attach(self, ifindex: int, from_container_fd: int, to_container_fd: int) -> None:
        """Installs (or atomically replaces) both filters on ``ifindex``."""
        self._attach(ifindex, ((INGRESS_PARENT, from_container_fd, "from_container"),
                               (EGRESS_PARENT, to_container_fd, "to_container")))

    def attach_overlay(self, ifindex: int, from_overlay_fd: int, to_overlay_fd: int) -> None:
        """Both filters of the overlay device."""
        self._attach(ifindex, ((INGRESS_PARENT, from_overlay_fd, "from_overlay"),
                               (EGRESS_PARENT, to_overlay_fd, "to_overlay")))

    def attach_netdev(self, ifindex: int, from_netdev_fd: int, prio: int,
                      to_netdev_fd: int | None = None) -> None:
        """The host device's ingress filter (and, with the host firewall, its egress
        filter ``to_netdev``), at a priority of this agent's own: agents sharing the
        device each keep theirs (the programs pass what is not their own to the next
        filter)."""
        filters = [(INGRESS_PARENT, from_netdev_fd, "from_netdev")]
        if to_netdev_fd is not None:
            filters.append((EGRESS_PARENT, to_netdev_fd, "to_netdev"))
        self._attach(ifindex, tuple(filters), prio)
        if to_netdev_fd is None:  # an earlier agent's, run with the host firewall
            with self._lock:
                self._detach_named(ifindex, EGRESS_PARENT, "to_netdev", prio)

    def detach_netdev_filters(self, prio: int) -> list[int]:
        """Removes the ``from_netdev`` and ``to_netdev`` filters at ``prio`` from every
        device of this namespace; returns the ifindexes they were removed from. Only
        filters of those names are touched: anyone else's at the same priority stay."""
        removed = []
        with self._lock:
            for link in self._ipr.get_links():
                ifindex = link["index"]
                for parent, name in ((INGRESS_PARENT, "from_netdev"),
                                     (EGRESS_PARENT, "to_netdev")):
                    if self._detach_named(ifindex, parent, name, prio) and \
                            ifindex not in removed:
                        removed.append(ifindex)
        return removed

    def _detach_named(self, ifindex: int, parent: str, name: str, prio: int) -> bool:
        try:
            filters = self._ipr.get_filters(index=ifindex, parent=parent)
        except NetlinkError:
            return False
        ours = [f for f in filters if f["info"] >> 16 == prio
                and f.get_attr("TCA_OPTIONS") is not None
                and f.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME") == name]
        if not ours:
            return False
        try:
            self._ipr.tc("del-filter", "bpf", ifindex, ":1", parent=parent, prio=prio)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise TcError(f"{name} filter on ifindex {ifindex}: {exc.args[-1]}") from None
        return True

    def close(self) -> None:
        self._ipr.close()

    def _attach(self, ifindex: int, filters, prio: int = 1) -> None:
        with self._lock:
            try:
                self._ipr.tc("add", "clsact", ifindex)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise TcError(f"clsact on ifindex {ifindex}: {exc.args[-1]}") from None
            for parent, fd, name in filters:
                spec = {"fd": fd, "name": name, "parent": parent, "classid": 1, "prio": prio,
                        "direct_action": True}
                try:
                    self._ipr.tc("replace-filter", "bpf", ifindex, ":1", **spec)
                except NetlinkError as exc:
                    raise TcError(f"{name} filter on ifindex {ifindex}: {exc.args[-1]}") from None

    def attached(self, ifindex: int) -> list[str]:
        """Names of the bpf programs attached to ``ifindex`` (both directions)."""
        names = []
        with self._lock:
            for parent in (INGRESS_PARENT, EGRESS_PARENT):
                try:
                    filters = self._ipr.get_filters(index=ifindex, parent=parent)
                except NetlinkError:
                    continue
                for item in filters:
                    options = item.get_attr("TCA_OPTIONS")
                    if options is not None and options.get_attr("TCA_BPF_NAME"):
                        names.append(options.get_attr("TCA_BPF_NAME"))
        return names
