"""``IpamDriver.*`` endpoints: thin handlers that validate the wire payload and call IPAM.

Capability calls are static (they must never fail: Docker registers a plugin once per
daemon lifetime). Errors become non-2xx ``{"Err": ...}`` answers, which Docker shows as
``IpamDriver.<Method>: <Err>`` (a 200 with Err would be taken as success).
"""

from __future__ import annotations

import reprlib
from typing import Protocol

from flask import Blueprint

from ipam.allocator import IPAM, Allocation
from ipam.pools import PoolError
from state.wire import PluginError, boolean, ip_field, mapping, payload, reply, text

LOCAL_SPACE = "CiliumpyLocal"
GLOBAL_SPACE = "CiliumpyGlobal"



class AddressEvents(Protocol):
    """What IPAM tells its owner: Docker released an address whose endpoint still
    exists (an unclean dockerd stop sends ReleaseAddress without DeleteEndpoint)."""

    def address_released(self, allocation: Allocation) -> None: ...


def blueprint(ipam: IPAM, events: AddressEvents) -> Blueprint:
    """The ``IpamDriver.*`` handlers bound to one IPAM and its event sink."""
    bp = Blueprint("ipam", __name__)

    @bp.post("/IpamDriver.GetCapabilities")
    def get_capabilities():
        # RequiresMACAddress makes Docker put the MAC in every endpoint RequestAddress,
        # which is how an --ip request is told apart from an --aux-address one.
        return reply({"RequiresMACAddress": True, "RequiresRequestReplay": False})

    @bp.post("/IpamDriver.GetDefaultAddressSpaces")
    def get_default_address_spaces():
        return reply({"LocalDefaultAddressSpace": LOCAL_SPACE,
                      "GlobalDefaultAddressSpace": GLOBAL_SPACE})

    @bp.post("/IpamDriver.RequestPool")
    def request_pool():
        data = payload()
        space = text(data, "AddressSpace", required=False)
        if space and space not in (LOCAL_SPACE, GLOBAL_SPACE):
            raise PluginError(f"unknown address space {reprlib.repr(space)}")
        v6 = boolean(data, "V6")  # `or False` let 0, "" and [] through as IPv4
        try:
            spec = ipam.request_pool(text(data, "Pool", required=False),
                                     text(data, "SubPool", required=False), v6,
                                     mapping(data, "Options"))
        except PoolError as exc:
            raise PluginError(str(exc)) from None
        return reply({"PoolID": spec.pool_id, "Pool": str(spec.pool), "Data": {}})

    @bp.post("/IpamDriver.ReleasePool")
    def release_pool():
        data = payload()
        ipam.release_pool(text(data, "PoolID"))
        return reply()

    @bp.post("/IpamDriver.RequestAddress")
    def request_address():
        data = payload()
        options = mapping(data, "Options")
        try:
            address, _kind = ipam.request_address(
                text(data, "PoolID"), text(data, "Address", required=False), options)
        except PoolError as exc:
            raise PluginError(str(exc)) from None
        return reply({"Address": address, "Data": {}})

    @bp.post("/IpamDriver.ReleaseAddress")
    def release_address():
        data = payload()
        pool_id, address = text(data, "PoolID"), text(data, "Address")
        # an unknown pool or address is success (idempotent), a malformed one is not
        ip_field(address.split("/")[0], "Address")
        released = ipam.release_address(pool_id, address)
        if released is not None and released.owner:
            events.address_released(released)
        return reply()

    return bp
