"""Endpoint plumbing through the plugin socket: RequestAddress + CreateEndpoint + Join
(what dockerd calls per container), then the teardown calls, timed per endpoint.

Goal (issue 3): CreateEndpoint+Join p50 <= 50 ms, p99 <= 100 ms. The baseline is the
same plumbing done with ip(8) commands (veth, address, route), as a shell-based
driver would.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from bench.common import (
    API_SOCKET,
    PLUGIN_SOCKET,
    agent_running,
    percentile,
    summary,
    write_table,
)
from tests.support.agent import raw_post

MAC_OPT = "com.docker.network.endpoint.macaddress"


def call(method: str, body: dict) -> dict:
    import json

    status, answer = raw_post(PLUGIN_SOCKET, "/" + method, json.dumps(body).encode())
    if status != 200:
        raise RuntimeError(f"{method}: {answer}")
    return answer


def ip_plumbing(index: int) -> float:
    host, peer = f"bnh{index}", f"bnp{index}"
    address = f"10.252.{index // 250}.{index % 250 + 2}"
    start = time.perf_counter()
    for cmd in (["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
                ["ip", "link", "set", host, "up"],
                ["ip", "addr", "add", "10.252.255.1/32", "dev", host],
                ["ip", "route", "replace", f"{address}/32", "dev", host]):
        subprocess.run(cmd, check=True)
    elapsed = time.perf_counter() - start
    subprocess.run(["ip", "link", "del", host], check=True)
    return elapsed


def _status() -> dict:
    from ciliumpy.apiclient import call

    return call("/v1/status", socket_path=API_SOCKET)["datapath"]


def main(count: int = 100) -> str:
    with agent_running():
        before = _status()
        network_id = uuid.uuid4().hex * 2
        pool = call("IpamDriver.RequestPool", {"Pool": "10.253.0.0/16", "Options": None})
        gateway = call("IpamDriver.RequestAddress", {
            "PoolID": pool["PoolID"], "Address": "",
            "Options": {"RequestAddressType": "com.docker.network.gateway"}})["Address"]
        call("NetworkDriver.CreateNetwork", {
            "NetworkID": network_id, "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "CiliumpyLocal", "Pool": "10.253.0.0/16",
                          "Gateway": gateway}], "IPv6Data": []})
        plumb, total, teardown = [], [], []
        try:
            for i in range(count):
                endpoint_id = uuid.uuid4().hex * 2
                t0 = time.perf_counter()
                address = call("IpamDriver.RequestAddress", {
                    "PoolID": pool["PoolID"], "Address": "",
                    "Options": {MAC_OPT: f"02:42:00:00:{i // 256:02x}:{i % 256:02x}"}})["Address"]
                t1 = time.perf_counter()
                call("NetworkDriver.CreateEndpoint", {
                    "NetworkID": network_id, "EndpointID": endpoint_id,
                    "Interface": {"Address": address, "MacAddress": "02:42:00:00:00:01"},
                    "Options": None})
                call("NetworkDriver.Join", {"NetworkID": network_id, "EndpointID": endpoint_id,
                                            "SandboxKey": "", "Options": None})
                t2 = time.perf_counter()
                call("NetworkDriver.Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})
                call("NetworkDriver.DeleteEndpoint", {"NetworkID": network_id,
                                                      "EndpointID": endpoint_id})
                call("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"],
                                                   "Address": address.split("/")[0]})
                t3 = time.perf_counter()
                plumb.append(t2 - t1)
                total.append(t2 - t0)
                teardown.append(t3 - t2)
        finally:
            call("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"],
                                               "Address": gateway.split("/")[0]})
            call("IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
            call("NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
        after = _status()
    # Every endpoint got the datapath's programs attached: none may have compiled.
    assert after["programs"] == before["programs"], "the programs changed during the run"
    assert after["compiles_in_worker"] == 0, "an endpoint triggered a compile"
    baseline = [ip_plumbing(i) for i in range(min(count, 50))]
    base_p50 = percentile(baseline, 50)
    rows = []
    for label, values in (("CreateEndpoint+Join", plumb),
                          ("RequestAddress+CreateEndpoint+Join", total),
                          ("Leave+DeleteEndpoint+ReleaseAddress", teardown),
                          ("baseline: ip(8) veth+addr+route", baseline)):
        med, low, high = summary(values)
        rows.append([label, f"{med * 1000:.1f}", f"{percentile(values, 99) * 1000:.1f}",
                     f"{low * 1000:.1f}-{high * 1000:.1f}", f"{med / base_p50:.2f}x"])
    return write_table(
        "plumbing", "Endpoint plumbing through the plugin socket (ms)",
        ["operation", "p50", "p99", "min-max", "x ip(8) baseline"], rows,
        [f"{count} sequential endpoints; goal CreateEndpoint+Join p50 <= 50 ms, p99 <= 100 ms",
         "each CreateEndpoint also attaches the BPF programs (tc) and writes the endpoint's "
         f"map entries; compiles during the run: 0 (programs {after['programs']})"])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
