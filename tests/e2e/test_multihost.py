"""Three hosts on one machine (tests/support/hosts.py), one cluster network across
them: containers reach each other over the VXLAN overlay and over native routing, IPv4
and IPv6; policy by identity holds across hosts (the drop names the remote sender's
labels); the VNI on the underlay is the sender's identity; a dead agent's node, blocks
and endpoints leave the others within its lease, and it gets its blocks back."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import struct
import subprocess
import time
import uuid

import pytest

from tests.support.agent import CLI, new_pin_dir
from tests.support.hosts import Cluster, sh, wait

SUBNET_V4, SUBNET_V6 = "10.91.0.0/16", "fd91::/64"
HTTPD = ("sh", "-c", "httpd -f -p 80 -h /var/www & sleep 3600")


def geneve_missing() -> str | None:
    """Why this kernel cannot do Geneve, or None if it can."""
    netns = "cpygp" + uuid.uuid4().hex[:6]
    sh("ip", "netns", "add", netns)
    try:
        proc = sh("ip", "-n", netns, "link", "add", "g0", "type", "geneve", "external",
                  check=False)
        return None if proc.returncode == 0 else proc.stderr.strip() or "no geneve device"
    finally:
        sh("ip", "netns", "del", netns, check=False)


GENEVE_MISSING = geneve_missing()
MODES = ["vxlan", "native", pytest.param("geneve", marks=pytest.mark.skipif(
    GENEVE_MISSING is not None,
    reason=f"this kernel has no Geneve device ({GENEVE_MISSING})"))]


def cli(agent, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def http_ok(host, container, address: str) -> bool:
    target = f"[{address}]" if ":" in address else address
    out = host.exec(container, "timeout", "3", "wget", "-qO-", f"http://{target}/")
    return "ciliumpy test page" in out.stdout


def ping_ok(host, container, address: str) -> bool:
    return any(host.exec(container, "ping", "-c", "1", "-W", "1", address).returncode == 0
               for _ in range(3))


@pytest.fixture
def cluster(workdir, docker_ready):
    made = Cluster(3, workdir)
    try:
        made.start()
        yield made
    finally:
        made.stop()


def start_network(cluster: Cluster, mode: str) -> None:
    cluster.start_agents(mode)
    for host in cluster.hosts:
        host.docker.network_create("cpy-mh", "--ipv6", "--subnet", SUBNET_V4,
                                   "--subnet", SUBNET_V6)


def remote_entries(host) -> dict[str, dict]:
    return {e["prefix"]: e for e in host.agent.api("/v1/bpf/ipcache")
            if e["tunnel_ip"] or e["identity"] == 6}


def read_vnis(pcap: bytes) -> list[int]:
    """VNIs of the VXLAN packets in a pcap (Ethernet / IPv4 / UDP 4789 / VXLAN)."""
    vnis, offset = [], 24
    while offset + 16 <= len(pcap):
        caplen = struct.unpack_from("<I", pcap, offset + 8)[0]
        frame = pcap[offset + 16: offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) < 50 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        if frame[23] != 17 or struct.unpack_from("!H", frame, udp + 2)[0] != 4789:
            continue
        vxlan = udp + 8
        vnis.append(int.from_bytes(frame[vxlan + 4: vxlan + 7], "big"))
    return vnis


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_one_network_across_three_hosts(cluster, mode, tmp_path):
    start_network(cluster, mode)
    h1, h2, h3 = cluster.hosts
    client = h1.run("cpy-mh", "-l", "app=client", command=HTTPD)
    other = h2.run("cpy-mh", "-l", "app=other", command=HTTPD)
    server = h3.run("cpy-mh", "-l", "app=server", command=HTTPD)
    ips = {name: (host.docker.ip(c, "cpy-mh"), host.docker.ip(c, "cpy-mh", v6=True))
           for name, host, c in (("client", h1, client), ("other", h2, other),
                                 ("server", h3, server))}
    # one cluster network: every address in the subnet, each host in its own blocks
    nodes = {n["name"]: n for n in json.loads(cli(h1.agent, "node", "list", "-o", "json").stdout)}
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert nodes["node3"]["ip"] == h3.ip and nodes["node3"]["encapsulation"] == mode
    blocks = [ipaddress.ip_network(b) for n in nodes.values() for b in n["blocks"]]
    assert len(blocks) == len(set(blocks)) == 6, "one IPv4 and one IPv6 block per node"
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    for name, host in (("client", h1), ("other", h2), ("server", h3)):
        v4, v6 = map(ipaddress.ip_address, ips[name])
        mine = [ipaddress.ip_network(b) for b in nodes[host.name]["blocks"]]
        assert any(v4 in b for b in mine) and any(v6 in b for b in mine), name
    # reachability across hosts, both families, ICMP and TCP, every pair of hosts
    wait(lambda: http_ok(h1, client, ips["server"][0]), 15, "the cluster to converge")
    for (src_host, src), dst in (((h1, client), "server"), ((h2, other), "server"),
                                 ((h3, server), "client"), ((h1, client), "other")):
        for address in ips[dst]:
            assert ping_ok(src_host, src, address), f"{src_host.name} -> {dst} {address}"
            assert http_ok(src_host, src, address), f"{src_host.name} -> {dst} {address}"

    # policy by identity across hosts: only app=client may reach the server
    if mode == "vxlan":
        capture = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{cluster.underlay}", "tcpdump", "-i", "br0",
             "-U", "-s", "200", "-w", "-", "udp", "port", "4789"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(1)
    policy = tmp_path / "server.yaml"
    policy.write_text("endpointSelector: {matchLabels: {app: server}}\n"
                      "ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n")
    revision = cli(h1.agent, "policy", "import", str(policy)).stdout.strip().rsplit(" ", 1)[1]
    cli(h3.agent, "policy", "wait", revision, "--timeout", "15")
    assert http_ok(h1, client, ips["server"][0]) and http_ok(h1, client, ips["server"][1])
    assert not http_ok(h2, other, ips["server"][0]), "app=other is not allowed"
    assert not ping_ok(h2, other, ips["server"][1])
    drops = h3.agent.api("/v1/monitor?follow=0&type=drop")
    mine = [d for d in drops if d["dst_labels"] == ["container:app=server"]]
    assert mine and all(d["src_labels"] == ["container:app=other"] for d in mine), drops
    identities = {e["container_id"]: e["identity"] for h in cluster.hosts
                  for e in h.agent.api("/v1/endpoints")}
    other_id = identities[h2.docker.inspect(other)["Id"]]
    assert mine[-1]["src_identity"] == other_id
    if mode == "vxlan":
        time.sleep(1)
        capture.send_signal(signal.SIGINT)
        pcap, _ = capture.communicate(timeout=10)
        vnis = set(read_vnis(pcap))
        client_id = identities[h1.docker.inspect(client)["Id"]]
        server_id = identities[h3.docker.inspect(server)["Id"]]
        assert {client_id, other_id, server_id} <= vnis <= {client_id, other_id, server_id}, (
            f"VNIs on the underlay {sorted(vnis)} are the senders' identities")


@pytest.mark.timeout(600)
def test_dead_agent_leaves_within_its_lease_and_comes_back(cluster):
    """node2's agent is killed (no goodbye): within its lease (Consul: up to 2 x TTL)
    the others drop its node, block routes or tunnel entries and its endpoints; started
    again with its state it gets the same blocks back, and its container is reachable."""
    start_network(cluster, "vxlan")
    h1, h2, h3 = cluster.hosts
    client = h1.run("cpy-mh", "-l", "app=client")
    server = h2.run("cpy-mh", "-l", "app=server", command=HTTPD)
    server_ip = h2.docker.ip(server, "cpy-mh")
    wait(lambda: http_ok(h1, client, server_ip), 15, "the cluster to converge")
    node2 = {n["name"]: n for n in h1.agent.api("/v1/nodes")}["node2"]
    blocks = set(node2["blocks"])
    assert blocks <= set(remote_entries(h1)) and f"{server_ip}/32" in remote_entries(h3)
    h2.agent.kill9()
    killed = time.time()

    def gone() -> bool:
        names = {n["name"] for n in h1.agent.api("/v1/nodes")}
        left = [p for h in (h1, h3) for p in remote_entries(h) if p in blocks
                or p == f"{server_ip}/32" or p == f"{h2.ip}/32"]
        return "node2" not in names and not left
    wait(gone, 35, "node2 to leave the others' view", interval=0.5)
    assert time.time() - killed <= 2 * 10 + 5, "gone within the lease (2 x TTL for Consul)"
    assert not http_ok(h1, client, server_ip)

    cluster.start_agent(h2, "vxlan")
    wait(lambda: http_ok(h1, client, server_ip), 30, "node2 to be back")
    nodes = {n["name"]: n for n in h1.agent.api("/v1/nodes")}
    assert set(nodes["node2"]["blocks"]) == blocks, "the same blocks back"
    everything = [ipaddress.ip_network(b) for n in nodes.values() for b in n["blocks"]]
    assert not any(a.overlaps(b) for i, a in enumerate(everything)
                   for b in everything[i + 1:]), "no block on two nodes"
    fresh = ipaddress.ip_address(h2.docker.ip(h2.run("cpy-mh"), "cpy-mh"))
    assert any(fresh in ipaddress.ip_network(b) for b in blocks), "allocated in its blocks"


def test_geneve_is_refused_in_one_sentence_where_the_kernel_has_none(tmp_path):
    if GENEVE_MISSING is None:
        pytest.skip("this kernel has Geneve: the overlay test covers it")
    netns = "cpygr" + uuid.uuid4().hex[:6]
    sh("ip", "netns", "add", netns)
    pin_dir = new_pin_dir()
    try:
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{netns}", *CLI, "agent", "--datapath-mode",
             "geneve", "--kvstore", "consul", "--kvstore-opt", "consul.address=127.0.0.1:1",
             "--state-dir", str(tmp_path), "--plugin-socket", str(tmp_path / "p.sock"),
             "--api-socket", str(tmp_path / "a.sock"), "--bpf-pin-dir", pin_dir],
            capture_output=True, text=True, timeout=60)
    finally:
        sh("ip", "netns", "del", netns, check=False)
        subprocess.run(["rm", "-rf", pin_dir], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "this kernel cannot create a geneve device" in last and "use --datapath-mode vxlan" \
        in last, proc.stderr


def wget(host, container: str, url: str) -> str:
    """What busybox wget prints: the page, or its error line (403 from the proxy, 404
    from the server itself)."""
    out = host.exec(container, "timeout", "5", "wget", "-qO-", url)
    return out.stdout if out.returncode == 0 else out.stderr.strip()


@pytest.mark.timeout(300)
def test_l7_rules_across_hosts(workdir, docker_ready, tmp_path):
    """VXLAN, two hosts: ingress L7 on the server's host (the overlay device hands the
    connection to that host's proxy) and egress L7 on the client's host (the proxy's
    upstream connection leaves through the overlay device, carrying the client's
    identity as VNI). A request the rules deny gets the proxy's 403, an allowed one the
    server's own answer (its 404 for a missing page)."""
    made = Cluster(2, workdir)
    try:
        made.start()
        made.start_agents("vxlan")
        h1, h2 = made.hosts
        for host in made.hosts:
            host.docker.network_create("cpy-mh7", "--subnet", "10.93.0.0/16")
        client = h1.run("cpy-mh7", "-l", "app=client")
        server = h2.run("cpy-mh7", "-l", "app=server", command=HTTPD)
        address = h2.docker.ip(server, "cpy-mh7")
        wait(lambda: "ciliumpy test page" in wget(h1, client, f"http://{address}/"), 20,
             "the cluster to converge")
        for direction, subject, peer, rule in (
                ("ingress", "server", "fromEndpoints: [{matchLabels: {app: client}}]",
                 "{method: GET, path: /index.html}"),
                ("egress", "client", "toEndpoints: [{matchLabels: {app: server}}]",
                 "{method: GET, path: /missing.html}")):
            policy = tmp_path / f"{direction}.yaml"
            policy.write_text(
                f"endpointSelector: {{matchLabels: {{app: {subject}}}}}\n"
                f"{direction}:\n- {peer}\n  toPorts:\n  - ports: [{{port: '80', protocol: TCP}}]\n"
                f"    rules: {{http: [{rule}]}}\n")
            cli(h1.agent, "policy", "delete", "--all", check=False)
            revision = cli(h1.agent, "policy", "import", str(policy)).stdout.split()[-1]
            for host in made.hosts:
                cli(host.agent, "policy", "wait", revision, "--timeout", "15")
            time.sleep(0.5)  # the proxies re-read their state within 100 ms
            if direction == "ingress":
                assert "ciliumpy test page" in wget(h1, client, f"http://{address}/index.html")
                assert "403 Forbidden" in wget(h1, client, f"http://{address}/other.html")
            else:
                assert "404 Not Found" in wget(h1, client, f"http://{address}/missing.html")
                assert "403 Forbidden" in wget(h1, client, f"http://{address}/index.html")
            proxy_host = h2 if direction == "ingress" else h1

            def denied(proxy_host=proxy_host) -> list[dict]:  # events reach the agent in ms
                return [e for e in proxy_host.agent.api("/v1/monitor?follow=0&type=l7")
                        if e.get("verdict") == "DENIED"]

            wait(denied, 5, "the proxy's DENIED event")
            events = denied()
            assert events[-1]["src_labels"] == ["container:app=client"], events
            assert events[-1]["dst_labels"] == ["container:app=server"]
    finally:
        made.stop()
