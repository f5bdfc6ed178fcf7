"""The network namespaces of this node's containers (and the agent's own), named to the
socket hooks with their addresses (``datapath.lb.ServiceTables.set_netns``): what lets
the hooks translate only this agent's sockets (``--socket-lb-scope own``) and predict a
client's backend by its address (``affinity: client``)."""

from __future__ import annotations

import logging
import threading

from datapath import sock_lb
from datapath.lb import ServiceTables

log = logging.getLogger("ciliumpy.services")


class NetnsRegistry:
    def __init__(self, tables: ServiceTables) -> None:
        self.tables = tables
        self._cookies: dict[str, int] = {}  # endpoint id -> its namespace's cookie
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cookies)

    def register(self, endpoint_id: str, netns_path: str, ipv4: str | None,
                 ipv6: str | None) -> None:
        """The container's namespace named to the socket hooks with its addresses."""
        try:
            cookie = sock_lb.netns_cookie(netns_path)
        except sock_lb.SockLBError as exc:
            log.warning("endpoint %s: %s (its sockets use the fallback scope)",
                        endpoint_id[:12], exc)
            return
        self.tables.set_netns(cookie, ipv4, ipv6)
        with self._lock:
            old = self._cookies.get(endpoint_id)
            self._cookies[endpoint_id] = cookie
        if old is not None and old != cookie:
            self.tables.delete_netns(old)

    def unregister(self, endpoint_id: str) -> None:
        with self._lock:
            cookie = self._cookies.pop(endpoint_id, None)
        if cookie is not None:
            self.tables.delete_netns(cookie)
