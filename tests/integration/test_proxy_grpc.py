"""The real proxy process between a real gRPC client/server (grpcio, generic handlers,
raw-bytes messages) and curl --http2-prior-knowledge, on loopback only."""

from __future__ import annotations

import subprocess
from concurrent import futures

import grpc
import pytest

from tests.integration.test_proxy_support import Events, Proxy, make_state, write_state

CURL = "curl"  # installed by scripts/setup-host.sh


class GrpcBackend:
    def __init__(self) -> None:
        self.calls: list[str] = []

        def unary(name: str):  # noqa: ANN202
            def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
                self.calls.append(name)
                return b"echo:" + request[:16] + b":" + str(len(request)).encode()
            return grpc.unary_unary_rpc_method_handler(handler)

        def stream(request: bytes, context: grpc.ServicerContext):  # noqa: ANN202
            self.calls.append("Stream")
            for i in range(int(request or b"1")):
                yield bytes([i % 256]) * 65536

        service = grpc.method_handlers_generic_handler("pkg.Service", {
            "Allowed": unary("Allowed"), "Other": unary("Other"),
            "Stream": grpc.unary_stream_rpc_method_handler(stream)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((service,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy-grpc")
    backend = GrpcBackend()
    events = Events(tmp / "events.sock")
    proxy = Proxy(tmp, backend.port)
    write_state(proxy.state, make_state(backend.port, [
        {"method": "POST", "path": "/pkg.Service/(Allowed|Stream)"},
        {"method": "GET", "path": "/h2/.*"}]))
    channel = grpc.insecure_channel(f"127.0.0.1:{proxy.port}")
    try:
        yield backend, proxy, events, channel
    finally:
        channel.close()
        proxy.stop()
        events.close()
        backend.close()


def call(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    return channel.unary_unary(f"/pkg.Service/{method}")(payload, timeout=10)


def test_grpc_allowed_and_denied(env):
    backend, _, events, channel = env
    backend.calls.clear()
    assert call(channel, "Allowed", b"hi") == b"echo:hi:2"
    with pytest.raises(grpc.RpcError) as err:
        call(channel, "Other", b"x")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "Access denied"
    assert call(channel, "Allowed", b"again") == b"echo:again:5"  # same connection goes on
    assert backend.calls == ["Allowed", "Allowed"]
    denied = events.wait(lambda e: e["verdict"] == "DENIED" and e["protocol"] == "grpc")
    assert denied["grpc_status"] == 7 and denied["http"]["path"] == "/pkg.Service/Other"
    ok = events.wait(lambda e: e["verdict"] == "FORWARDED" and e["protocol"] == "grpc")
    assert ok["grpc_status"] == 0 and ok["http"]["status"] == 200


def test_grpc_flow_control_large_messages(env):
    backend, _, _, channel = env
    big = bytes(range(256)) * 8192  # 2 MiB request, > every default window
    assert call(channel, "Allowed", big) == b"echo:" + big[:16] + b":" + str(len(big)).encode()
    replies = list(channel.unary_stream("/pkg.Service/Stream")(b"64", timeout=20))
    assert len(replies) == 64 and all(len(r) == 65536 for r in replies)
    assert replies[5] == bytes([5]) * 65536


def test_grpc_concurrent_calls(env):
    _, _, _, channel = env
    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: call(channel, "Allowed", str(i).encode()),
                                range(40)))
    assert results == [f"echo:{i}:{len(str(i))}".encode() for i in range(40)]


def test_grpc_policy_change_and_fail_closed(env):
    backend, proxy, _, channel = env
    write_state(proxy.state, make_state(backend.port, [{"path": "/pkg.Service/Other"}]))
    try:
        with pytest.raises(grpc.RpcError) as err:
            call(channel, "Allowed", b"x")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert call(channel, "Other", b"y") == b"echo:y:1"
        write_state(proxy.state, None)
        with pytest.raises(grpc.RpcError) as err:
            call(channel, "Other", b"x")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        write_state(proxy.state, make_state(backend.port, [
            {"method": "POST", "path": "/pkg.Service/(Allowed|Stream)"},
            {"method": "GET", "path": "/h2/.*"}]))


def test_h2c_curl_prior_knowledge(env):
    backend, proxy, events, _ = env
    out = subprocess.run(
        [CURL, "-s", "--http2-prior-knowledge", "-w", "\\n%{http_code} %{http_version}",
         proxy.url("/private")], capture_output=True, text=True, timeout=10).stdout
    assert out == "Access denied\n403 2"
    denied = events.wait(lambda e: e["protocol"] == "http2" and e["verdict"] == "DENIED")
    assert denied["http"]["method"] == "GET" and denied["http"]["status"] == 403
    # allowed: reaches the gRPC backend over h2, which resets a plain GET with
    # INTERNAL_ERROR; the proxy propagates that RST_STREAM (curl: exit 92, err 2)
    url = f"http://127.0.0.1:{backend.port}/h2/x"
    for target in (url, proxy.url("/h2/x")):
        res = subprocess.run([CURL, "-sv", "--http2-prior-knowledge", target],
                             capture_output=True, text=True, timeout=10)
        assert res.returncode == 92 and "INTERNAL_ERROR (err 2)" in res.stderr
    event = events.wait(lambda e: e["protocol"] == "http2" and e["verdict"] == "ERROR")
    assert "upstream reset stream" in event["reason"]
