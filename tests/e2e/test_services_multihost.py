"""Services across the three-host harness (tests/support/hosts.py), VXLAN and native
routing: a service defined once is programmed on every node with the same Maglev
table; a client on one host reaches backends on the others through the VIP; a client
keeps one backend with --affinity client (the one the table predicts for its address,
whichever host it runs on); policy applies to the backend's identity after the socket
hooks translated the VIP; a backend stopped on one host leaves the other hosts' tables
within a second or two."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.test_multihost import cli, cluster, start_network  # noqa: F401 (fixture)
from tests.e2e.test_services_e2e import SERVE, predicted
from tests.support.hosts import wait

VIP = "10.96.91.10"


def service(host, name: str) -> dict:
    return json.loads(cli(host.agent, "service", "get", name, "-o", "json").stdout)


def fetch(host, container: str, address: str) -> str:
    return host.exec(container, "timeout", "3", "wget", "-qO-", f"http://{address}/"
                     ).stdout.strip()


@pytest.mark.timeout(600)
# native routing in `make soak` (the 30-minute budget of `make test`); both modes'
# cross-host paths stay in test_multihost.py
@pytest.mark.parametrize("mode", ["vxlan", pytest.param("native", marks=pytest.mark.soak)])
def test_service_spans_hosts(cluster, mode, tmp_path):  # noqa: F811
    start_network(cluster, mode)
    h1, h2, h3 = cluster.hosts
    b2 = h2.docker.run("cpy-mh", "-l", "app=mhweb", "--hostname", "web-on-2", command=SERVE)
    b3 = h3.docker.run("cpy-mh", "-l", "app=mhweb", "--hostname", "web-on-3", command=SERVE)
    client = h1.run("cpy-mh", "-l", "app=client")
    other = h3.run("cpy-mh", "-l", "app=other")
    backend_ips = {h2.docker.ip(b2, "cpy-mh"), h3.docker.ip(b3, "cpy-mh")}
    wait(lambda: fetch(h1, client, h2.docker.ip(b2, "cpy-mh")) == "web-on-2", 20,
         "the cluster to converge")

    cli(h1.agent, "service", "create", "mhweb", "--frontend", f"{VIP}:80",
        "--selector", "app=mhweb", "--maglev-size", "1021")
    cli(h1.agent, "service", "create", "mhaff", "--frontend", f"{VIP}:8080",
        "--selector", "app=mhweb", "--target-port", "80", "--affinity", "client")
    for host in cluster.hosts:  # every node resolves both backends, the same table
        wait(lambda host=host: {b["address"] for b in service(host, "mhweb")["status"][
            "backends"]} == backend_ips, 10, f"{host.name} to program the service")
    slots = {h.name: [b["slots"] for b in service(h, "mhweb")["status"]["backends"]]
             for h in cluster.hosts}
    assert len({tuple(s) for s in slots.values()}) == 1, slots

    answers = {fetch(h1, client, VIP) for _ in range(20)}
    assert answers == {"web-on-2", "web-on-3"}, f"from host1 through the VIP: {answers}"

    for host, container in ((h1, client), (h3, other)):
        mine = {host.exec(container, "timeout", "3", "wget", "-qO-", f"http://{VIP}:8080/"
                          ).stdout.strip() for _ in range(6)}
        address = predicted(service(host, "mhaff"), host.docker.ip(container, "cpy-mh"),
                            VIP, 0)
        by_ip = {h2.docker.ip(b2, "cpy-mh"): "web-on-2", h3.docker.ip(b3, "cpy-mh"): "web-on-3"}
        assert mine == {by_ip[address]}, f"{host.name}: affinity client gave {mine}"

    # policy on the backends' identity: only app=client may reach them, VIP or not
    policy = tmp_path / "web.yaml"
    policy.write_text("endpointSelector: {matchLabels: {app: mhweb}}\n"
                      "ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n")
    revision = cli(h1.agent, "policy", "import", str(policy)).stdout.strip().rsplit(" ", 1)[1]
    for host in (h2, h3):
        cli(host.agent, "policy", "wait", revision, "--timeout", "15")
    assert fetch(h1, client, VIP) in ("web-on-2", "web-on-3")
    assert fetch(h3, other, VIP) == "", "app=other reached a backend through the VIP"

    h3.docker.rm(b3)
    stopped = time.monotonic()
    wait(lambda: {b["address"] for b in service(h1, "mhweb")["status"]["backends"]}
         == {h2.docker.ip(b2, "cpy-mh")}, 10, "host1 to drop the stopped backend",
         interval=0.1)
    assert time.monotonic() - stopped < 3.0, "the remote backend lingered"
    assert {fetch(h1, client, VIP) for _ in range(6)} == {"web-on-2"}

    # a published port of host1 (docker run -p), from outside every host (a client on
    # the underlay) and from a container on host3: from_netdev on host1's device
    h1.docker.run("cpy-mh", "--hostname", "pub-on-1", "-p", "18080:80", command=SERVE)
    outside = ("import urllib.request as u; print(u.urlopen('http://" + h1.ip + ":18080/', "
               "timeout=3).read().decode().strip())")

    def from_underlay() -> str:
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{cluster.underlay}", "python3",
                               "-c", outside], capture_output=True, text=True, timeout=30)
        return proc.stdout.strip()

    wait(lambda: from_underlay() == "pub-on-1", 10, "the published port from the underlay")
    assert {from_underlay() for _ in range(5)} == {"pub-on-1"}
    assert fetch(h3, other, f"{h1.ip}:18080") == "pub-on-1"

    # direct server return: a service on host1's own address whose only backend is on
    # host2, reached from the underlay. host1 balances and forwards; host2 answers the
    # client itself, from host1's address, so the reply bytes never cross host1.
    big = h2.docker.run("cpy-mh", "-l", "app=dsrbig", command=(
        "sh", "-c", "mkdir -p /tmp/w && dd if=/dev/urandom of=/tmp/w/big bs=1024 "
        f"count={DSR_KIB} 2>/dev/null && md5sum /tmp/w/big > /tmp/w/sum && "
        "exec httpd -f -p 80 -h /tmp/w"))
    cli(h1.agent, "service", "create", "dsrweb", "--frontend", f"{h1.ip}:18090",
        "--selector", "app=dsrbig", "--target-port", "80")
    wait(lambda: [b["address"] for b in service(h1, "dsrweb")["status"]["backends"]]
         == [h2.docker.ip(big, "cpy-mh")], 10, "host1 to program the DSR service")
    expected = h2.exec(big, "cat", "/tmp/w/sum").stdout.split()[0]
    script = ("import hashlib, time, urllib.request as u; t = time.perf_counter(); "
              f"body = u.urlopen('http://{h1.ip}:18090/big', timeout=10).read(); "
              "print(hashlib.md5(body).hexdigest(), len(body), time.perf_counter() - t)")

    def download() -> list[str]:
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{cluster.underlay}", "python3",
                               "-c", script], capture_output=True, text=True, timeout=30)
        return proc.stdout.split() or [proc.stderr.strip()[-300:]]

    wait(lambda: download()[0] == expected, 10, "the DSR service from the underlay")
    sent1, sent2 = tx_bytes(h1), tx_bytes(h2)
    for _ in range(DSR_ROUNDS):
        digest, size, _seconds = download()
        assert digest == expected and int(size) == DSR_KIB * 1024
    through1, through2 = tx_bytes(h1) - sent1, tx_bytes(h2) - sent2
    served = DSR_ROUNDS * DSR_KIB * 1024
    assert through2 >= served, f"host2 sent {through2} bytes for {served} served"
    assert through1 < served * 0.1, f"host1 sent {through1} bytes: the replies crossed it"
    print(f"DSR {mode}: {served} bytes served from host2; host1 sent {through1} "
          f"({through1 / served:.1%}), host2 sent {through2}")


DSR_KIB, DSR_ROUNDS = 1024, 4


def tx_bytes(host) -> int:
    """Bytes the host's underlay device (eth0) has sent."""
    out = subprocess.run(["ip", "-n", host.netns, "-j", "-s", "link", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]
