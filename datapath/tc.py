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

    def attach_netdev(self, ifindex: int, from_netdev_fd: int, prio: int) -> None:
        """The host device's ingress filter, at a priority of this agent's own: agents
        sharing the device each keep theirs (the program passes what is not its own
        to the next filter)."""
        self._attach(ifindex, ((INGRESS_PARENT, from_netdev_fd, "from_netdev"),), prio)

    def detach_netdev_filters(self, prio: int) -> list[int]:
        """Removes the ``from_netdev`` filter at ``prio`` from every device of this
        namespace; returns the ifindexes it was removed from. Only a filter of that name
        is touched: a filter of anyone else at the same priority stays."""
        removed = []
        with self._lock:
            for link in self._ipr.get_links():
                ifindex = link["index"]
                try:
                    filters = self._ipr.get_filters(index=ifindex, parent=INGRESS_PARENT)
                except NetlinkError:
                    continue
                ours = [f for f in filters if f["info"] >> 16 == prio
                        and f.get_attr("TCA_OPTIONS") is not None
                        and f.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME") == "from_netdev"]
                if not ours:
                    continue
                try:
                    self._ipr.tc("del-filter", "bpf", ifindex, ":1", parent=INGRESS_PARENT,
                                 prio=prio)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise TcError(f"from_netdev filter on ifindex {ifindex}: "
                                      f"{exc.args[-1]}") from None
                removed.append(ifindex)
        return removed

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
