"""The host's side of the L7 redirect: a policy-routing rule that delivers packets the
BPF programs marked ``MARK_TO_PROXY`` to the local stack (a table whose default route
is ``local``), where TCP hands them to the proxy socket the program assigned. Both
families; idempotent, so an agent restart finds it in place."""

from __future__ import annotations

import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath.maps import MARK_MAGIC_MASK, MARK_TO_PROXY

TABLE = 2004  # the table Cilium uses for the same purpose
PRIORITY = 9  # before the main table (32766) and Docker's rules


class ProxyRoutingError(RuntimeError):
    """The rule or the route could not be installed; one-line reason."""


def ensure_proxy_routing() -> None:
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for family, default in ((socket.AF_INET, "0.0.0.0/0"), (socket.AF_INET6, "::/0")):
            try:
                if not any(rule.get_attr("FRA_TABLE") == TABLE
                           and rule.get_attr("FRA_FWMARK") == MARK_TO_PROXY
                           for rule in ipr.get_rules(family=family)):
                    ipr.rule("add", family=family, table=TABLE, priority=PRIORITY,
                             fwmark=MARK_TO_PROXY, fwmask=MARK_MAGIC_MASK)
                ipr.route("replace", family=family, dst=default, table=TABLE, type="local",
                          oif=lo, scope=254)
            except NetlinkError as exc:
                raise ProxyRoutingError(
                    f"cannot install the L7 proxy routing (family {family}): {exc}") from None
