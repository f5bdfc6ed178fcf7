"""Hubble's gRPC APIs as the agent serves them: the node's Observer API over its flow
store (``--hubble-listen-address``) and, with ``--hubble-relay-listen-address``, the
relay's over every node, both with the TLS the options give. Each runs on a gRPC server
and threads of its own, never gunicorn's; grpc is imported only when one is configured,
so agents that serve neither do not load it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ciliumpy.config import Config
from ciliumpy.flows.store import FlowStore

if TYPE_CHECKING:
    from ciliumpy.hubble.server import HubbleServer
    from ciliumpy.hubble.tls import HubbleTLS


class HubbleAPIs:
    """``peers()``: (name, address) of every node serving the API, for the relay."""

    def __init__(self, config: Config, flows: FlowStore, started: float,
                 peers: Callable[[], list[tuple[str, str]]]) -> None:
        self.config, self.flows, self.started, self.peers = config, flows, started, peers
        self.node: HubbleServer | None = None
        self.relay: HubbleServer | None = None
        self.tls: HubbleTLS | None = None
        self.address = ""  # where other nodes reach this node's API ("" = not served)

    def start(self, node_ip: str) -> None:
        listen = self.config.hubble_listen_address
        if not listen:
            return
        from ciliumpy.hubble.server import HubbleServer, ObserverServicer
        from ciliumpy.hubble.tls import HubbleTLS

        self.tls = HubbleTLS.from_files(self.config.hubble_tls_cert_file,
                                        self.config.hubble_tls_key_file,
                                        self.config.hubble_tls_client_ca_files)
        host, _, port = listen.rpartition(":")
        # where clients and other nodes' relays reach it (published with the node)
        address = listen if host not in ("", "0.0.0.0", "[::]") else f"{node_ip}:{port}"
        servicer = ObserverServicer(self.flows, self.config.node_name, address,
                                    started=self.started)
        self.node = HubbleServer(listen, servicer, tls=self.tls)
        self.node.start()
        self.address = address
        if self.config.hubble_relay_listen_address:
            from ciliumpy.hubble.relay_server import RelayServicer

            self.relay = HubbleServer(self.config.hubble_relay_listen_address,
                                      RelayServicer(self.peers, started=self.started,
                                                    tls=self.tls),
                                      name="Hubble Relay API", tls=self.tls)
            self.relay.start()

    def stop(self) -> None:
        for server in (self.relay, self.node):
            if server is not None:
                server.stop()
