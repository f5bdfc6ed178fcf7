"""TLS on Hubble's API and the relay, with certificates made by openssl for the test
(a cluster CA, two nodes' certificates naming 127.0.0.1, an outsider's from another
CA), real gRPC servers on loopback and the stub generated from observer.proto: a plain
or unknown client is refused, a node's certificate is let in, the relay reaches TLS
nodes; and the agent refuses to serve flows over plain TCP beyond loopback unless told
to."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest

from ciliumpy import config as cfg
from ciliumpy.flows.store import FlowStore
from ciliumpy.hubble import server as hubble
from ciliumpy.hubble.gen.observer import observer_pb2, observer_pb2_grpc
from ciliumpy.hubble.relay_server import RelayServicer
from ciliumpy.hubble.tls import HubbleTLS, channel
from tests.support.agent import free_port
from tests.unit.test_flows import CLIENT, NAMES, T0, WEB, datapath


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}")
    return cert, key


def make_cert(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, HubbleTLS]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca(directory, "cluster-ca"), make_ca(directory, "other-ca")
    made = {}
    for name, signer, trusted in (("node2", ca, ca), ("node3", ca, ca),
                                  ("outsider", other_ca, ca)):
        cert, key = make_cert(directory, name, signer)
        made[name] = HubbleTLS.from_files(str(cert), str(key), [str(trusted[0])])
    made["files"] = directory  # type: ignore[assignment]
    return made


def serve(name: str, tls: HubbleTLS, when: float) -> hubble.HubbleServer:
    store = FlowStore(name, NAMES.get, capacity=100)
    store.add(datapath("drop", CLIENT, WEB, "ingress", reason="policy-denied",
                       verdict="denied", when=when))
    address = f"127.0.0.1:{free_port()}"
    server = hubble.HubbleServer(address, hubble.ObserverServicer(store, name, address),
                                 workers=2, tls=tls)
    server.start()
    return server


def flows(address: str, tls: HubbleTLS | None) -> list[str]:
    with channel(address, tls) as chan:
        stub = observer_pb2_grpc.ObserverStub(chan)
        return [r.node_name for r in stub.GetFlows(observer_pb2.GetFlowsRequest(), timeout=5)]


def test_only_a_certificate_of_the_cluster_ca_gets_flows(pki):
    node2 = serve("node2", pki["node2"], T0)
    try:
        address = f"127.0.0.1:{node2.port}"
        assert flows(address, pki["node3"]) == ["node2"]  # another node of the cluster
        for client in (None, pki["outsider"]):  # plain TCP; a certificate of another CA
            with pytest.raises(grpc.RpcError) as refused:
                flows(address, client)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        node2.stop()


def test_the_relay_asks_tls_nodes(pki):
    nodes = [serve("node2", pki["node2"], T0 + 1), serve("node3", pki["node3"], T0 + 2)]
    peers = [(f"node{i}", f"127.0.0.1:{s.port}") for i, s in zip((2, 3), nodes, strict=True)]
    relay = hubble.HubbleServer(f"127.0.0.1:{free_port()}",
                                RelayServicer(lambda: peers, timeout=5, tls=pki["node2"]),
                                workers=2, name="relay", tls=pki["node2"])
    relay.start()
    try:
        assert flows(f"127.0.0.1:{relay.port}", pki["node3"]) == ["node2", "node3"]
        with channel(f"127.0.0.1:{relay.port}", pki["node3"]) as chan:
            stub = observer_pb2_grpc.ObserverStub(chan)
            status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
        assert status.num_connected_nodes.value == 2 and status.num_flows == 2
    finally:
        relay.stop()
        for node in nodes:
            node.stop()
        time.sleep(0.1)


def test_plain_tcp_beyond_loopback_needs_to_be_asked_for(pki):
    directory = pki["files"]
    files = {"hubble_tls_cert_file": str(directory / "node2.pem"),
             "hubble_tls_key_file": str(directory / "node2.key")}

    def load(**flags):
        return cfg.load(None, flags, environ={})

    with pytest.raises(cfg.ConfigError, match="plain TCP to anyone"):
        load(hubble_listen_address=":4244")
    with pytest.raises(cfg.ConfigError, match="plain TCP to anyone"):
        load(hubble_listen_address="10.0.0.1:4244")
    assert load(hubble_listen_address="127.0.0.1:4244").hubble_listen_address
    assert load(hubble_listen_address="[::1]:4244").hubble_listen_address
    assert load(hubble_listen_address=":4244", hubble_disable_tls="true").hubble_disable_tls
    assert load(hubble_listen_address=":4244", **files).hubble_tls_cert_file
    with pytest.raises(cfg.ConfigError, match="go together"):
        load(hubble_listen_address=":4244", hubble_tls_cert_file=files["hubble_tls_cert_file"])
    with pytest.raises(cfg.ConfigError, match="contradicts"):
        load(hubble_listen_address=":4244", hubble_disable_tls=True, **files)
    with pytest.raises(cfg.ConfigError, match="checks the other nodes' certificates"):
        load(hubble_listen_address=":4244", hubble_relay_listen_address=":4245", **files)
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        load(hubble_listen_address=":4244", hubble_tls_cert_file="/nonexistent.pem",
             hubble_tls_key_file="/nonexistent.key")
    with pytest.raises(cfg.ConfigError, match="true or false"):
        load(hubble_disable_tls="maybe")
