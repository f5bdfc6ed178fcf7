"""A real Kafka-protocol broker for the Kafka L7 tests: librdkafka's built-in mock
cluster (the one bundled in the confluent-kafka wheel), driven through ctypes, made
reachable on a namespace's own address by an in-kernel DNAT.

This module owns:

- ``MockCluster``: a thin ctypes wrapper of ``rd_kafka_mock_*`` (create the cluster,
  set each broker's advertised host/port, create topics, inject errors).
- the broker process, run INSIDE the broker's network namespace::

      nsenter -t PID -n python -m tests.support.kafka_broker \\
          --advertise 10.254.77.1:9092 --topics topic1,topic2 [--partitions 1] \\
          [--brokers 1] [--fail-topic T ...] [--push-errors API_KEY:CODE:COUNT ...] \\
          [--partition-errors TOPIC:API_KEY:CODE:COUNT ...]

  It creates the cluster, advertises ``IP:9092`` (``IP:9093``... for broker 2...),
  creates the topics, installs the DNAT (nft table ``ip kafka_harness``) and
  ``route_localnet``, prints ONE line ``READY <ip>:9092 <loopback bootstrap>``
  (flushed) and serves until SIGTERM/SIGINT, then removes its nft table, restores the
  sysctls and exits 0.
- ``KafkaBroker``: the helper the tests use to start/stop that process in a
  container's netns (by pid, ``nsenter -t PID -n``) or an ``ip netns`` (by name).

Why DNAT: the mock ALWAYS listens on 127.0.0.1 with a random port; it cannot bind the
namespace's address. Clients must reach ``<ip>:9092`` (what Metadata advertises, and
what the policy under test is about), so the kernel rewrites ``<ip>:9092`` to
``127.0.0.1:<port>`` in the nat/prerouting hook. Packets that arrive on eth0 for
127.0.0.1 are martians unless ``net.ipv4.conf.{all,<dev>}.route_localnet=1``. The
forwarding stays in the kernel (no user-space relay) because the proxy is benchmarked
through this broker. An nat/output rule does the same for clients inside the broker's
own namespace.

Mock limitations worth knowing (librdkafka 2.16):

- ApiVersions: the mock implements v0..v2 only, and its answer to a v3/v4 request is
  a body kafka-python cannot decode. kafka-python >= 2.1 sends ApiVersions v4 first
  and never recovers (bootstrap times out after 30 s), so kafka-python clients MUST be
  created with ``api_version=(2, 3)``: it then sends ApiVersions v2 and caps every
  request at Kafka-2.3 versions (Produce v7, Fetch v11, Metadata v8, JoinGroup v5...,
  all non-flexible). librdkafka (confluent-kafka) negotiates by itself and uses the
  flexible versions (Metadata v12, Fetch v16, Produce v10...). See kafka_clients.py.
- Error injection, to see what the clients make of a denial without the proxy:
  ``--fail-topic T`` (``rd_kafka_mock_topic_set_error``) only affects Metadata
  responses; ``--partition-errors T:KEY:CODE:N`` answers CODE per partition of T in
  the next N Produce/Fetch (top-level error 0, like a topic-aware proxy);
  ``--push-errors KEY:CODE:N`` fails whole requests (for Fetch v7+ that also sets
  the top-level error_code, which kafka-python silently retries on). Errors pushed
  are consumed one per request: use a large N for "always".
- Consumer groups: the initial rebalance delay is set to 0 (Kafka's default is 3 s).
  But re-using a group id right after its last member LEFT stalls the next member's
  JoinGroup for about the previous session timeout (the mock re-enters "joining" with
  a session.timeout - 1 s timer): ~29 s for kafka-python, ~44 s for librdkafka,
  measured. Use a fresh group id per consume in tests.
- Storage: ~5 MB kept per partition (older batches are dropped), and a Fetch returns
  at most ONE stored batch per partition, so fetch throughput depends on the batch
  size the producer used (see ``bench-fetch --prefill`` in kafka_clients.py).
- No SASL/TLS, no CreateTopics: topics are made here. IPv4 only (the DNAT is ip).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
NFT_TABLE = "kafka_harness"  # ip family; ours alone, so we can delete it whole
TOPIC_AUTHORIZATION_FAILED = 29


def _librdkafka_path() -> str:
    # Locate the wheel's bundled copy without importing confluent_kafka (so this
    # process does not need the Python extension, only the shared library).
    spec = importlib.util.find_spec("confluent_kafka")
    if spec and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        found = sorted(glob.glob(str(pkg.parent / "confluent_kafka.libs" / "librdkafka*.so*")))
        if found:
            return found[0]
    import ctypes.util

    name = ctypes.util.find_library("rdkafka")
    if not name:
        raise RuntimeError("librdkafka not found (install confluent-kafka in the venv)")
    return name


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(_librdkafka_path())
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs: dict[str, tuple[object, list[object]]] = {
        "rd_kafka_conf_new": (vp, []),
        "rd_kafka_conf_set": (i, [vp, cp, cp, cp, ctypes.c_size_t]),
        "rd_kafka_new": (vp, [i, vp, cp, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [vp]),
        "rd_kafka_err2name": (cp, [i]),
        "rd_kafka_mock_cluster_new": (vp, [vp, i]),
        "rd_kafka_mock_cluster_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
        "rd_kafka_mock_broker_set_host_port": (None, [vp, ctypes.c_int32, cp, i]),
        "rd_kafka_mock_topic_create": (i, [vp, cp, i, i]),
        "rd_kafka_mock_topic_set_error": (None, [vp, cp, i]),
        "rd_kafka_mock_push_request_errors_array": (
            None, [vp, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(i)]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [vp, ctypes.c_int32]),
        # variadic: the error codes (ints) follow the fixed arguments
        "rd_kafka_mock_partition_push_request_errors": (
            i, [vp, cp, ctypes.c_int32, ctypes.c_int16, ctypes.c_size_t]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


class MockCluster:
    """librdkafka's mock cluster with ``brokers`` brokers (ids 1..N) on 127.0.0.1."""

    def __init__(self, brokers: int = 1) -> None:
        self.lib = _load()
        conf = self.lib.rd_kafka_conf_new()
        errstr = ctypes.create_string_buffer(512)
        # The mock needs an rd_kafka_t for bookkeeping only; quiet its logs (it has no
        # bootstrap servers and would otherwise warn about it).
        self.lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, len(errstr))
        self.rk = self.lib.rd_kafka_new(0, conf, errstr, len(errstr))  # RD_KAFKA_PRODUCER
        if not self.rk:
            raise RuntimeError(f"rd_kafka_new: {errstr.value.decode()}")
        self.mc = self.lib.rd_kafka_mock_cluster_new(self.rk, brokers)
        if not self.mc:
            self.lib.rd_kafka_destroy(self.rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.brokers = brokers
        self.lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self.mc, 0)

    @property
    def bootstraps(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...`` in broker-id order (the listeners)."""
        return self.lib.rd_kafka_mock_cluster_bootstraps(self.mc).decode()

    def listener_ports(self) -> dict[int, int]:
        """Broker id -> loopback listen port. Asked to the cluster itself (a Metadata
        request before any advertise) rather than trusting the bootstrap list order."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstraps, "log_level": 3})
        meta = admin.list_topics(timeout=10)
        return {b.id: b.port for b in meta.brokers.values()}

    def advertise(self, broker_id: int, host: str, port: int) -> None:
        """What Metadata returns for this broker; the listener does not move."""
        self.lib.rd_kafka_mock_broker_set_host_port(self.mc, broker_id, host.encode(), port)

    def create_topic(self, name: str, partitions: int = 1, replication: int = 1) -> None:
        err = self.lib.rd_kafka_mock_topic_create(self.mc, name.encode(), partitions,
                                                  replication)
        if err:
            raise RuntimeError(f"topic {name}: {self.lib.rd_kafka_err2name(err).decode()}")

    def set_topic_error(self, name: str, code: int = TOPIC_AUTHORIZATION_FAILED) -> None:
        """Metadata for ``name`` answers ``code`` (only Metadata, per librdkafka)."""
        self.lib.rd_kafka_mock_topic_set_error(self.mc, name.encode(), code)

    def push_request_errors(self, api_key: int, codes: Sequence[int]) -> None:
        """The next len(codes) requests of ``api_key`` fail with these codes in turn, for
        every partition in them. For Fetch v7+ the code is ALSO the response's top-level
        error_code, which kafka-python treats as a fetch-session error and retries
        silently: use ``push_partition_errors`` to model a per-topic denial."""
        array = (ctypes.c_int * len(codes))(*codes)
        self.lib.rd_kafka_mock_push_request_errors_array(self.mc, api_key, len(codes), array)

    def push_partition_errors(self, topic: str, partition: int, api_key: int,
                              codes: Sequence[int]) -> None:
        """The next len(codes) ``api_key`` requests (Produce, Fetch) answer these codes
        for this partition only, top-level error_code 0 (what a Kafka-aware proxy that
        denies one topic does)."""
        fn = self.lib.rd_kafka_mock_partition_push_request_errors
        # ctypes caps a call at 1024 arguments; use big chunks all the same: many
        # small pushes onto a long stack are very slow in the mock (100000 errors in
        # chunks of 100 took 60 s, in chunks of 1000 20 ms).
        for at in range(0, len(codes), 1000):
            chunk = [ctypes.c_int(code) for code in codes[at:at + 1000]]
            err = fn(self.mc, topic.encode(), partition, api_key, len(chunk), *chunk)
            if err:
                raise RuntimeError(f"partition errors {topic}[{partition}]: "
                                   f"{self.lib.rd_kafka_err2name(err).decode()}")

    def close(self) -> None:
        self.lib.rd_kafka_mock_cluster_destroy(self.mc)
        self.lib.rd_kafka_destroy(self.rk)


# -- in-kernel forwarding ---------------------------------------------------------------

def _nft(script: str) -> None:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"nft failed: {proc.stderr.strip()}\n{script}")


def install_dnat(ip: str, forwards: dict[int, int]) -> None:
    """``ip:public -> 127.0.0.1:loopback`` for every (public, loopback) in forwards."""
    rules = "".join(f"        ip daddr {ip} tcp dport {public} dnat to 127.0.0.1:{loop}\n"
                    for public, loop in sorted(forwards.items()))
    # "add table; delete table; table {...}" replaces a leftover of a killed broker
    # atomically (one nft transaction) instead of failing or duplicating rules.
    _nft(f"add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n"
         f"table ip {NFT_TABLE} {{\n"
         f"    chain prerouting {{\n"
         f"        type nat hook prerouting priority dstnat; policy accept;\n{rules}"
         f"    }}\n"
         # Clients in the broker's own netns never traverse prerouting.
         f"    chain output {{\n"
         f"        type nat hook output priority -100; policy accept;\n{rules}"
         f"    }}\n"
         f"}}\n")


def remove_dnat() -> None:
    _nft(f"add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")


def _device_of(ip: str) -> str | None:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", f"{ip}/32"],
                         capture_output=True, text=True).stdout.split()
    return out[1] if len(out) > 1 else None


def enable_route_localnet(ip: str) -> dict[str, str]:
    """Let packets DNATed to 127.0.0.1 be routed in from a non-loopback device.
    Returns the previous values (path -> value) for ``restore_sysctls``. /proc/sys/net
    is per network namespace, so this only touches the broker's namespace."""
    names = ["all"]
    dev = _device_of(ip)
    if dev:
        names.append(dev)
    previous = {}
    for name in names:
        path = f"/proc/sys/net/ipv4/conf/{name}/route_localnet"
        previous[path] = Path(path).read_text().strip()
        Path(path).write_text("1\n")
    return previous


def restore_sysctls(previous: dict[str, str]) -> None:
    for path, value in previous.items():
        try:
            Path(path).write_text(value + "\n")
        except OSError:
            pass  # the device went away with its veth: nothing to restore


# -- the broker process -------------------------------------------------------------------

def _push_spec(text: str) -> tuple[int, int, int]:
    api_key, code, count = (int(x) for x in text.split(":"))
    return api_key, code, count


def _partition_spec(text: str) -> tuple[str, int, int, int]:
    topic, api_key, code, count = text.rsplit(":", 3)
    return topic, int(api_key), int(code), int(count)


def serve(advertise: str, topics: Iterable[str], partitions: int = 1, brokers: int = 1,
          fail_topics: Iterable[str] = (),
          push_errors: Iterable[tuple[int, int, int]] = (),
          partition_errors: Iterable[tuple[str, int, int, int]] = ()) -> int:
    ip, _, port_text = advertise.rpartition(":")
    base_port = int(port_text)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    cluster = MockCluster(brokers)
    sysctls: dict[str, str] = {}
    try:
        ports = cluster.listener_ports()
        forwards = {}
        for broker_id in range(1, brokers + 1):
            cluster.advertise(broker_id, ip, base_port + broker_id - 1)
            forwards[base_port + broker_id - 1] = ports[broker_id]
        for topic in topics:
            cluster.create_topic(topic, partitions, min(brokers, 3))
        for topic in fail_topics:
            cluster.set_topic_error(topic, TOPIC_AUTHORIZATION_FAILED)
        for api_key, code, count in push_errors:
            cluster.push_request_errors(api_key, [code] * count)
        for topic, api_key, code, count in partition_errors:
            for partition in range(partitions):
                cluster.push_partition_errors(topic, partition, api_key, [code] * count)
        sysctls = enable_route_localnet(ip)
        install_dnat(ip, forwards)
        print(f"READY {ip}:{base_port} {cluster.bootstraps}", flush=True)
        # wait() with a timeout so the Python-level signal handler gets to run promptly.
        while not stop.wait(0.5):
            pass
    finally:
        try:
            remove_dnat()
        finally:
            restore_sysctls(sysctls)
            cluster.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--advertise", required=True, help="IP:PORT of broker 1")
    parser.add_argument("--topics", default="", help="comma-separated topics to create")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--fail-topic", action="append", default=[],
                        help="Metadata answers TOPIC_AUTHORIZATION_FAILED for this topic")
    parser.add_argument("--push-errors", action="append", default=[], type=_push_spec,
                        metavar="API_KEY:CODE:COUNT",
                        help="the next COUNT requests of API_KEY fail with CODE, request-"
                             "wide (e.g. 11:30:5 = five JoinGroup answered "
                             "GROUP_AUTHORIZATION_FAILED)")
    parser.add_argument("--partition-errors", action="append", default=[],
                        type=_partition_spec, metavar="TOPIC:API_KEY:CODE:COUNT",
                        help="the next COUNT Produce (0) / Fetch (1) of TOPIC answer CODE "
                             "for each of its partitions (e.g. topic2:1:29:1000)")
    args = parser.parse_args(argv)
    if args.brokers < 1 or args.partitions < 1:
        parser.error("--brokers and --partitions must be >= 1")
    topics = [t for t in args.topics.split(",") if t]
    return serve(args.advertise, topics, args.partitions, args.brokers, args.fail_topic,
                 args.push_errors, args.partition_errors)


# -- test helper ---------------------------------------------------------------------------

def netns_prefix(netns: int | str | None) -> list[str]:
    """The command prefix that enters a network namespace: a pid (a container's task,
    ``nsenter -t PID -n``), an ``ip netns`` name, or None for the current one."""
    if netns is None:
        return []
    if isinstance(netns, int):
        return ["nsenter", "-t", str(netns), "-n"]
    return ["ip", "netns", "exec", netns]


class KafkaBroker:
    """The broker process in another netns. ``start()`` returns once it printed READY;
    ``stop()`` SIGTERMs it (nsenter and ``ip netns exec`` exec, so the pid we hold is
    the Python process itself) so it removes its nft table.

        broker = KafkaBroker(pid_or_netns_name, "10.254.77.1", ["topic1"])
        broker.start()          # broker.bootstrap == "10.254.77.1:9092"
        ...
        broker.stop()
    """

    def __init__(self, netns: int | str | None, ip: str, topics: Sequence[str], *,
                 port: int = 9092, partitions: int = 1, brokers: int = 1,
                 fail_topics: Sequence[str] = (), push_errors: Sequence[str] = (),
                 partition_errors: Sequence[str] = (), python: str = sys.executable) -> None:
        self.netns = netns
        self.ip = ip
        self.port = port
        self.command = [*netns_prefix(netns), python, "-m", "tests.support.kafka_broker",
                        "--advertise", f"{ip}:{port}", "--topics", ",".join(topics),
                        "--partitions", str(partitions), "--brokers", str(brokers)]
        for topic in fail_topics:
            self.command += ["--fail-topic", topic]
        for spec in push_errors:
            self.command += ["--push-errors", spec]
        for spec in partition_errors:
            self.command += ["--partition-errors", spec]
        self.proc: subprocess.Popen | None = None
        self.loopback = ""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the broker

    @property
    def bootstrap(self) -> str:
        return f"{self.ip}:{self.port}"

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def start(self, timeout: float = 15) -> KafkaBroker:
        # stderr to a file, not a pipe: nobody drains it while the broker serves.
        self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise TimeoutError(f"kafka broker not READY in {timeout} s: "
                                       f"{self.command}\n{self.stderr()}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait(5)
                        raise RuntimeError(f"kafka broker exited {self.proc.returncode}: "
                                           f"{self.command}\n{self.stderr()}")
                    buffer += chunk
        line = buffer.decode().splitlines()[0].split()
        if line[:1] != ["READY"]:
            self.stop()
            raise RuntimeError(f"kafka broker said {line!r}\n{self.stderr()}")
        self.loopback = line[2]
        return self

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs. Returns the exit status."""
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
