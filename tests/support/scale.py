"""The scale harness: one real agent and many simulated nodes in one real Consul.

A simulated node is exactly what a real agent keeps in the kvstore, written through the
agents' own code (``state/kvstore/consul.py``, ``ciliumpy/identities.py``) and key layout:
- its lease: a Consul session ``ciliumpy-<node>`` (TTL, behavior=delete), kept renewed;
- ``nodes/v1/<node>`` under the lease: underlay IP, ``vxlan``, its block (``nodes.Node``);
- ``ipam/v1/<pool>/blocks/<block>`` -> ``{"node": ...}``, create-only, no lease;
- its identities: allocated by ``IdentityAllocator`` as a real agent allocates them, and
  referenced by ``identities/v1/refs/<N>/<node>`` under the lease;
- ``ip/v2/<node>/<address>`` -> ``{"identity", "node"}`` per endpoint and its revision
  token ``ip/rev/<node>``, under the lease (``ciliumpy/endpoint_records.py``).
Bulk registration uses Consul transactions of 64 operations whose verbs leave the same
state a put with a lease leaves (``lock``: the key acquired by the session).

The real agent (with a dockerd when asked) runs in a host namespace of
``tests.support.hosts.Cluster``; Consul runs on the underlay and logs every HTTP request
(debug level), so the requests of the real agent are counted by its source address. The
simulator talks to Consul from the underlay namespace itself: its threads enter it with
setns(2), which moves only the calling thread, so its requests come from another address.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ciliumpy import endpoint_records as records
from ciliumpy import nodes
from ciliumpy.identities import BASE as IDENTITIES
from ciliumpy.identities import IdentityAllocator
from datapath import maps
from policies.labels import LabelFilter, identity_labels
from state.kvstore.base import key as kv_key
from state.kvstore.consul import ConsulStore
from tests.support.agent import Agent
from tests.support.hosts import Cluster, in_netns, wait

CLONE_NEWNET = 0x40000000
POOL = "10.192.0.0/12"  # the cluster network: the real agent's block first, then ours
BLOCK_OFFSET = 16  # simulated node i leases the (16 + i)-th /24 of the pool
ENDPOINTS_PER_NODE = 30
APPS, APPS_PER_NODE = 100, 10  # 100 label sets; each node runs 3 replicas of 10 of them
TXN_OPS = 64  # Consul's limit per transaction
ID_WORLD = 2
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(netns: str) -> None:
    """Moves the calling thread (only it) into network namespace ``netns``."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
    finally:
        os.close(fd)


def app_labels(app: str, **extra: str) -> list[str]:
    """The canonical identity labels a real agent derives from container labels."""
    return identity_labels({"app": app, **extra}, None, None, [], LabelFilter())


class ScaleCluster(Cluster):
    """``tests.support.hosts.Cluster`` with one real host, its dockerd only when asked,
    and a Consul that logs each HTTP request with its client address."""

    def __init__(self, workdir: Path, docker: bool = False) -> None:
        super().__init__(1, workdir)
        self.with_docker = docker
        self.host = self.hosts[0]

    def start(self) -> ScaleCluster:
        self.start_underlay()
        self.plug(self.host)
        self._start_consul()
        if self.with_docker:
            self.host.start_dockerd()
            self.host.wait_dockerd()
        return self

    @property
    def consul_log(self) -> Path:
        return self.workdir / "consul.log"

    def _start_consul(self) -> None:
        data = self.workdir / "consul"
        data.mkdir()
        with open(self.consul_log, "ab") as log:
            self.consul = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.underlay}", "consul", "agent", "-dev",
                 "-log-level", "debug", "-bind", self.v4(1), "-client", self.v4(1),
                 "-http-port", "8500", "-dns-port", "-1", "-grpc-port", "-1",
                 "-node", f"ul-{self.tag}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.consul.poll() is not None:
                raise RuntimeError("consul exited: " + self.consul_log.read_text()[-2000:])
            probe = in_netns(self.underlay, "consul", "kv", "get",
                             f"-http-addr=http://{self.consul_address}", "ciliumpy-ready",
                             check=False, timeout=10)
            return "No key exists" in probe.stderr
        wait(ready, 30, "consul on the underlay", interval=0.3)

    def stop_with(self, sim: Simulator | None, probe: MapProbe | None) -> None:
        """Everything a scale run made: the probe's map fds, the simulated nodes' leases,
        then the cluster itself."""
        if probe is not None:
            probe.close()
        if sim is not None:
            sim.close()
        self.stop()

    def start_real_agent(self, *extra: str) -> Agent:
        """The real agent in vxlan mode (it follows the other nodes), agent defaults for
        the lease TTL and intervals unless ``extra`` says otherwise."""
        host = self.host
        pin_dir = f"/sys/fs/bpf/ciliumpy-test-{self.tag}-{host.name}"
        self.pin_dirs.append(pin_dir)
        if self.with_docker:
            host.start_agent(self.consul_address, "vxlan", pin_dir, "--lease-ttl", "15",
                             "--gc-interval", "30", *extra)
            return host.agent
        state = host.workdir / "agent"
        state.mkdir(parents=True, exist_ok=True)
        host.agent = Agent(
            state, str(host.workdir / "plugin.sock"), str(host.workdir / "api.sock"),
            ["--node-name", host.name, "--node-ip", host.ip, "--kvstore", "consul",
             "--kvstore-opt", f"consul.address={self.consul_address}",
             "--datapath-mode", "vxlan", "--socket-lb-scope", "own",
             "--docker-host", f"unix://{host.workdir}/no-dockerd.sock", *extra],
            wrapper=["nsenter", f"--net=/run/netns/{host.netns}"], pin_dir=pin_dir)
        host.agent.start(timeout=90)
        return host.agent


@dataclass
class SimNode:
    index: int
    name: str
    ip: str
    block: ipaddress.IPv4Network
    lease: str = ""
    endpoints: dict[str, int] = field(default_factory=dict)  # address -> identity
    identities: set[int] = field(default_factory=set)  # referenced by this node

    def free_address(self) -> str:
        hosts = self.block.hosts()
        next(hosts)  # .1: the network's gateway on every node
        return next(str(a) for a in hosts if str(a) not in self.endpoints)


class Simulator:
    """Simulated nodes: registered in bulk (``grow``), then changed one at a time. Every
    Consul call runs in a thread inside the underlay namespace (``call``)."""

    def __init__(self, cluster: ScaleCluster, ttl: float = 60.0, workers: int = 4) -> None:
        self.pool = ipaddress.ip_network(POOL)
        self.ttl = ttl
        self.netns = cluster.underlay
        self.kv = ConsulStore({"consul.address": cluster.consul_address, "consul.timeout": "30"})
        self._executor = ThreadPoolExecutor(workers, initializer=enter_netns,
                                            initargs=(self.netns,))
        self.nodes: list[SimNode] = []
        self.apps: dict[str, int] = {}  # app label -> identity number
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="sim-renew",
                                         daemon=True)
        self._renewer.start()

    def call(self, fn: Callable, *args):
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        self._stop.set()
        self._renewer.join(5)
        self._executor.shutdown(wait=True)

    # ---- registration -----------------------------------------------------------
    def _node(self, i: int) -> SimNode:
        block = ipaddress.ip_network((int(self.pool.network_address) + (BLOCK_OFFSET + i) * 256,
                                      24))
        ip = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("172.30.0.1")) + i))
        return SimNode(i, f"sim{i:04d}", ip, block)

    def app_of(self, node: SimNode, j: int) -> str:
        return f"sim-app-{(node.index * APPS_PER_NODE + j % APPS_PER_NODE) % APPS}"

    def identity(self, app: str, node: SimNode) -> int:
        """The cluster identity of ``app``, allocated by ``node`` as an agent would."""
        if app not in self.apps:
            allocator = IdentityAllocator(self.kv, node.name)
            self.apps[app] = self.call(allocator.allocate, app_labels(app), node.lease).number
        return self.apps[app]

    def grow(self, total: int) -> list[SimNode]:
        """Registers nodes until there are ``total``, each with its lease, block,
        identities' references and endpoints; returns the new ones."""
        new = [self._node(i) for i in range(len(self.nodes), total)]
        leases = self._executor.map(lambda n: self.kv.grant_lease(self.ttl, f"ciliumpy-{n.name}"),
                                    new)
        for node, lease in zip(new, leases, strict=True):
            node.lease = lease
        ops: list[dict] = []
        tokens: list[dict] = []  # written after every record (as an agent writes them)
        for node in new:
            block_key = kv_key("ipam", "v1", str(self.pool).replace("/", "_"), "blocks",
                               str(node.block).replace("/", "_"))  # as ipam/allocator.py
            ops.append(_txn("cas", block_key, json.dumps({"node": node.name}), index=0))
            for j in range(ENDPOINTS_PER_NODE):
                number = self.identity(self.app_of(node, j), node)
                address = str(node.block.network_address + 2 + j)
                node.endpoints[address] = number
                if number not in node.identities:
                    node.identities.add(number)
                    ops.append(_txn("lock", f"{IDENTITIES}/refs/{number}/{node.name}", "",
                                    session=node.lease))
                ops.append(_txn("lock", records.record_key(node.name, address),
                                _ip_value(number, node.name), session=node.lease))
            tokens.append(_txn("lock", records.REVISIONS + node.name, str(time.time_ns()),
                               session=node.lease))
            record = nodes.Node(node.name, node.ip, "vxlan", [str(node.block)],
                                "/run/ciliumpy/ciliumpy.sock")
            ops.append(_txn("lock", nodes.PREFIX + node.name, json.dumps(asdict(record)),
                            session=node.lease))
        for group in (ops, tokens):
            batches = [group[i:i + TXN_OPS] for i in range(0, len(group), TXN_OPS)]
            list(self._executor.map(self._txn, batches))
        self.nodes += new
        return new

    def _txn(self, ops: list[dict]) -> None:
        self.kv._call(self.kv._client.txn.put, ops)

    def _renew_loop(self) -> None:
        """Every lease renewed each ttl/3, spread evenly (what 1,000 agents do)."""
        enter_netns(self.netns)
        while not self._stop.is_set():
            leases = [n.lease for n in list(self.nodes) if n.lease]
            period = self.ttl / 3
            pause = period / max(1, len(leases))
            start = time.monotonic()
            for lease in leases:
                if self._stop.is_set():
                    return
                with contextlib.suppress(Exception):
                    self.kv.keepalive(lease)
                self._stop.wait(pause)
            self._stop.wait(max(0.0, period - (time.monotonic() - start)))

    # ---- changes, as a remote agent makes them; each returns when it was started ----
    def add_endpoint(self, node: SimNode, number: int) -> tuple[str, float]:
        address = node.free_address()
        node.endpoints[address] = number

        def write() -> float:
            start = time.monotonic()
            records.write(self.kv, node.name, node.lease,
                          {address: _ip_value(number, node.name)}, set())
            return start
        return address, self.call(write)

    def delete_endpoint(self, node: SimNode, address: str) -> float:
        """As ``ClusterSync.publish`` withdraws an endpoint."""
        node.endpoints.pop(address, None)

        def delete() -> float:
            start = time.monotonic()
            records.write(self.kv, node.name, node.lease, {}, {address})
            return start
        return self.call(delete)

    def relabel_endpoint(self, node: SimNode, address: str, labels: list[str]
                         ) -> tuple[int, float]:
        """The endpoint's container re-created with new labels: a new identity allocated
        (and referenced) by its node, then the endpoint published with it."""
        allocator = IdentityAllocator(self.kv, node.name)

        def change() -> tuple[int, float]:
            start = time.monotonic()
            number = allocator.allocate(labels, node.lease).number
            records.write(self.kv, node.name, node.lease,
                          {address: _ip_value(number, node.name)}, set())
            return number, start
        number, start = self.call(change)
        node.endpoints[address] = number
        node.identities.add(number)
        return number, start

    def release_identity(self, node: SimNode, number: int) -> None:
        node.identities.discard(number)
        self.call(IdentityAllocator(self.kv, node.name).release, number)


def _ip_value(number: int, node: str) -> str:
    return json.dumps({"identity": number, "node": node})  # as ClusterSync.publish


def _txn(verb: str, key: str, value: str, session: str = "", index: int | None = None
         ) -> dict:
    op: dict = {"Verb": verb, "Key": key, "Value": base64.b64encode(value.encode()).decode()}
    if session:
        op["Session"] = session
    if index is not None:
        op["Index"] = index
    return {"KV": op}


class MapProbe:
    """The real agent's pinned maps, opened by this process: one lookup per poll, so
    polling costs microseconds and nothing of the agent's time."""

    def __init__(self, pin_dir: str) -> None:
        specs = {"cp_ipcache_v1": (maps.IpcacheKey, maps.IpcacheVal),
                 "cp_policy_allow_v1": (maps.PolicyKey, maps.PolicyVal)}
        self.maps = {name: maps.BPFMap(name, maps.open_pinned(os.path.join(pin_dir, name)),
                                       key, value, 0) for name, (key, value) in specs.items()}

    def identity_of(self, address: str) -> int:
        """The identity the datapath gives ``address`` (longest prefix; 0 = none)."""
        value = self.maps["cp_ipcache_v1"].lookup(maps.ipcache_key(ipaddress.ip_network(address)))
        return value.identity if value is not None else 0

    def remote_entries(self) -> int:
        """Entries pointing into the overlay (remote blocks and endpoints)."""
        return sum(1 for _, v in self.maps["cp_ipcache_v1"].items() if v.tunnel_ip)

    def allows(self, ifindex: int, identity: int, port: int, proto: int = 6) -> bool:
        key = maps.policy_key(ifindex, maps.DIR_INGRESS, identity, proto, port, 16)
        return self.maps["cp_policy_allow_v1"].lookup(key) is not None

    def close(self) -> None:
        for bpf_map in self.maps.values():
            os.close(bpf_map.fd)


def wait_until(predicate: Callable[[], bool], start: float, timeout: float = 30.0,
               interval: float = 0.001) -> float:
    """Seconds from ``start`` (time.monotonic) until ``predicate`` first held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not converged within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


# ---- what the agent costs ------------------------------------------------------------
_REQUEST = re.compile(r"^\s*(\S+) \[DEBUG\] agent\.http: Request finished: method=(\S+) "
                      r"url=(\S+) from=([^:\s]+):")


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def consul_requests(log_path: Path, client_ip: str, start: datetime.datetime,
                    end: datetime.datetime) -> Counter:
    """Requests ``client_ip`` sent that Consul finished in [start, end), by kind."""
    found: Counter = Counter()
    with open(log_path, errors="replace") as log:
        for line in log:
            match = _REQUEST.match(line)
            if not match or match.group(4) != client_ip:
                continue
            when = datetime.datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
            if start <= when < end:
                found[request_kind(match.group(2), match.group(3))] += 1
    return found


def request_kind(method: str, url: str) -> str:
    path, _, query = url.partition("?")
    parts = path.split("/")
    kind = f"{method} /{'/'.join(parts[1:3])}"
    if parts[2:3] == ["kv"]:
        kind += " watch" if "index=" in query else (" list" if "recurse" in query else "")
    return kind


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Rest:
    """The agent left alone for ``seconds``: its Consul requests, CPU and memory."""
    seconds: float
    requests: Counter
    cpu: float
    rss: int

    @property
    def rate(self) -> float:
        return sum(self.requests.values()) / self.seconds


def measure_rest(cluster: ScaleCluster, seconds: float) -> Rest:
    agent = cluster.host.agent
    pids = process_tree(agent.proc.pid)
    cpu0, start = cpu_seconds(pids), now_utc()
    time.sleep(seconds)
    end, cpu1 = now_utc(), cpu_seconds(pids)
    time.sleep(1.5)  # Consul logs a request when it finishes: let the window's lines land
    requests = consul_requests(cluster.consul_log, cluster.host.ip, start, end)
    return Rest(seconds, requests, cpu1 - cpu0, rss_bytes(process_tree(agent.proc.pid)))


def wait_converged(probe: MapProbe, sim: Simulator, timeout: float) -> float:
    """Seconds until the agent's ipcache holds every simulated node's block and endpoints
    (with their identities): checked on the last node written, then counted."""
    start = time.monotonic()
    last = sim.nodes[-1]
    address, number = list(last.endpoints.items())[-1]
    wait_until(lambda: probe.identity_of(address) == number, start, timeout, 0.05)
    expected = sum(1 + len(n.endpoints) for n in sim.nodes)
    wait_until(lambda: probe.remote_entries() >= expected, start, timeout, 0.5)
    return time.monotonic() - start
