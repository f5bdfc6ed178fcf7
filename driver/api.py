"""``NetworkDriver.*`` endpoints: validate the wire payload, call the Driver, answer.

No handler ever calls the Docker API (Docker holds the container lock during
CreateEndpoint/Join: a call back would deadlock dockerd). Calls Docker only logs the
errors of (Delete*, Leave, Revoke, Discover*) still answer errors honestly.
"""

from __future__ import annotations

from typing import Protocol

from flask import Blueprint

from driver.model import Endpoint
from driver.ports import PortError, parse_portmap
from driver.service import Driver, DriverError, parse_network
from state.wire import PluginError, docker_id, mapping, payload, reply, text


class EndpointEvents(Protocol):
    """What the driver tells its owner (the agent) after the endpoint store changed:
    program the datapath before Join answers, clean up after DeleteEndpoint."""

    def endpoint_created(self, endpoint: Endpoint) -> None: ...

    def endpoint_deleted(self, endpoint: Endpoint) -> None: ...

    def ports_changed(self, endpoint: Endpoint) -> None:
        """Its published ports (``Endpoint.published``) changed: (un)publish them."""


def _list(data: dict, name: str) -> list:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PluginError(f"field {name!r} must be a list of objects")
    return value


def blueprint(driver: Driver, events: EndpointEvents) -> Blueprint:
    """The ``NetworkDriver.*`` handlers bound to one driver and its event sink."""
    bp = Blueprint("driver", __name__)

    @bp.post("/NetworkDriver.GetCapabilities")
    def get_capabilities():
        return reply({"Scope": "local", "ConnectivityScope": "global"})

    @bp.post("/NetworkDriver.CreateNetwork")
    def create_network():
        data = payload()
        try:
            network = parse_network(docker_id(data, "NetworkID"), mapping(data, "Options"),
                                     _list(data, "IPv4Data"), _list(data, "IPv6Data"))
            driver.create_network(network)
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        return reply()

    @bp.post("/NetworkDriver.DeleteNetwork")
    def delete_network():
        driver.delete_network(docker_id(payload(), "NetworkID"))
        return reply()

    @bp.post("/NetworkDriver.AllocateNetwork")
    def allocate_network():
        data = payload()
        return reply({"Options": mapping(data, "Options")})

    @bp.post("/NetworkDriver.FreeNetwork")
    def free_network():
        payload()
        return reply()

    @bp.post("/NetworkDriver.CreateEndpoint")
    def create_endpoint():
        data = payload()
        interface = mapping(data, "Interface")
        mapping(data, "Options")  # unused, but a malformed payload is refused whole
        try:
            endpoint = driver.create_endpoint(docker_id(data, "NetworkID"),
                                              docker_id(data, "EndpointID"), interface)
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        events.endpoint_created(endpoint)
        # Never echo the addresses (Docker would roll back); a MAC only if Docker had none.
        if interface.get("MacAddress"):
            return reply({"Interface": {}})
        return reply({"Interface": {"MacAddress": endpoint.mac}})

    @bp.post("/NetworkDriver.EndpointOperInfo")
    def endpoint_oper_info():
        payload()
        return reply({"Value": {}})

    @bp.post("/NetworkDriver.DeleteEndpoint")
    def delete_endpoint():
        data = payload()
        try:
            endpoint = driver.delete_endpoint(docker_id(data, "EndpointID"),
                                              docker_id(data, "NetworkID"))
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        if endpoint is not None:
            events.endpoint_deleted(endpoint)
        return reply()

    @bp.post("/NetworkDriver.Join")
    def join():
        data = payload()
        # SandboxKey is never entered (the namespace may not exist yet) and Options are
        # unused, but their types are checked: a malformed payload is refused whole
        text(data, "SandboxKey", required=False)
        mapping(data, "Options")
        try:
            answer = driver.join(docker_id(data, "NetworkID"), docker_id(data, "EndpointID"))
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        return reply(answer)

    @bp.post("/NetworkDriver.Leave")
    def leave():
        data = payload()
        try:
            driver.leave(docker_id(data, "EndpointID"), docker_id(data, "NetworkID"))
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        return reply()

    @bp.post("/NetworkDriver.ProgramExternalConnectivity")
    def program_external_connectivity():
        data = payload()
        endpoint_id, network_id = docker_id(data, "EndpointID"), docker_id(data, "NetworkID")
        try:
            ports = parse_portmap(mapping(data, "Options"))
            before = driver.store.endpoint(endpoint_id)
            endpoint = driver.set_published(endpoint_id, network_id, ports)
            if endpoint is not None:
                try:
                    events.ports_changed(endpoint)
                except PortError:  # not publishable: the endpoint stays as it was
                    driver.set_published(endpoint_id, network_id, before.published)
                    raise
        except (DriverError, PortError) as exc:
            raise PluginError(str(exc)) from None
        return reply()

    @bp.post("/NetworkDriver.RevokeExternalConnectivity")
    def revoke_external_connectivity():
        data = payload()
        try:
            endpoint = driver.set_published(docker_id(data, "EndpointID"),
                                            docker_id(data, "NetworkID"), [])
        except DriverError as exc:
            raise PluginError(str(exc)) from None
        if endpoint is not None:
            events.ports_changed(endpoint)
        return reply()

    @bp.post("/NetworkDriver.DiscoverNew")
    @bp.post("/NetworkDriver.DiscoverDelete")
    def acknowledge():
        payload()
        return reply()

    return bp
