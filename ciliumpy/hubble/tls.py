"""TLS for Hubble's API and the relay (Cilium's options ``hubble-tls-cert-file``,
``hubble-tls-key-file``, ``hubble-tls-client-ca-files``).

One cluster CA is assumed, as Cilium's own Hubble certificates are issued: it signs
every node's certificate, which the node presents as a server (its Hubble API) and as
a client (its relay asking the other nodes). With client CAs given, the API requires a
client certificate they signed (mutual TLS), and the relay checks the nodes' server
certificates against them; a node's certificate must name the address the others
reach it on (the address its node record publishes) as a subject alternative name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class HubbleTLS:
    cert: bytes
    key: bytes
    client_ca: bytes | None  # concatenated PEM of every CA file; None: no client check

    @classmethod
    def from_files(cls, cert_file: str, key_file: str, ca_files: list[str]
                   ) -> HubbleTLS | None:
        """The TLS settings of the agent's options; None without a certificate."""
        if not cert_file:
            return None
        ca = b"".join(Path(path).read_bytes() for path in ca_files) or None
        return cls(Path(cert_file).read_bytes(), Path(key_file).read_bytes(), ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)],
                                           root_certificates=self.client_ca,
                                           require_client_auth=self.client_ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.client_ca,
                                            private_key=self.key,
                                            certificate_chain=self.cert)


def channel(address: str, tls: HubbleTLS | None) -> grpc.Channel:
    """A channel to a node's Hubble API: TLS when this node uses it (a cluster is
    configured alike), plain otherwise."""
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.channel_credentials())
