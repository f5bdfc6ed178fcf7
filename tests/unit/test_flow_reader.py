"""The datapath event path outside the BPF parts: batch decoding of raw ring records, the
reader process's supervision (a child that dies is noticed, counted and started again;
a record cut short is counted as lost), and the monitor and flow store taking batches."""

from __future__ import annotations

import os
import random
import sys
import textwrap
import threading
import time

from ciliumpy.flow_reader import EventReaderProcess
from ciliumpy.flows.store import FlowStore
from ciliumpy.monitor import Monitor
from datapath import events, maps


def record(i: int, family: int = 4, proto: int = 6) -> maps.Event:
    e = maps.Event()
    e.type, e.reason, e.dir, e.family = (1, 2, 3)[i % 3], i % 6, i % 2, family
    e.ifindex, e.src_identity, e.dst_identity = 10 + i % 3, 300, 301
    for j in range(16):
        e.saddr[j], e.daddr[j] = (j * 7 + i) % 256, (j * 11) % 256
    e.sport, e.dport, e.proto, e.verdict = 30000 + i, 80, proto, i % 2
    e.len, e.ts, e.tcp_flags, e.icmp_type = 60, time.monotonic_ns(), 0x12, 8
    return e


def test_decode_batch_decodes_as_decode_does():
    rng = random.Random(7)
    raw = [record(i, rng.choice([0, 4, 6]), rng.choice([1, 6, 17, 58, 132, 99]))
           for i in range(500)]
    assert events.decode_batch(b"".join(bytes(r) for r in raw)) == [events.decode(r)
                                                                     for r in raw]
    assert events.RECORD_SIZE == 72


class ScriptedReader(EventReaderProcess):
    """The real supervisor with a stand-in child (no BPF in unit tests): the first child
    writes whole records and half of one, then dies; the next ones write and idle."""

    def __init__(self, ring_fd: int, on_batch, data: bytes) -> None:
        super().__init__(ring_fd, on_batch)
        self.data = data

    def command(self) -> list[str]:
        first = self.restarts == 0
        script = textwrap.dedent(f"""
            import os, sys, time
            data = bytes.fromhex({self.data.hex()!r})
            os.write(1, data)
            if {first}:
                os.write(1, data[:30])
                sys.exit(3)
            time.sleep(60)
        """)
        return [sys.executable, "-c", script]


def test_a_dead_reader_is_counted_and_started_again():
    batches: list[list[dict]] = []
    raw = b"".join(bytes(record(i)) for i in range(20))
    ring = os.open(os.devnull, os.O_RDONLY)
    reader = ScriptedReader(ring, batches.append, raw)
    try:
        reader.start()
        deadline = time.time() + 15
        while sum(map(len, batches)) < 40 or not reader.alive():
            assert time.time() < deadline, reader.view()
            time.sleep(0.05)
        view = reader.view()
        assert view["restarts"] == 1 and view["last_exit"] == 3, view
        assert "exited with 3" in view["last_error"]
        assert view["lost_partial"] == 1, "the half record is counted, not decoded"
        assert view["records"] == 40 and view["running"] and view["pid"]
        got = [e for batch in batches for e in batch]
        assert got[:20] == got[20:] == events.decode_batch(raw)
        pid = view["pid"]
    finally:
        reader.stop()
        os.close(ring)
    assert not os.path.exists(f"/proc/{pid}") or _zombie_or_gone(pid)
    assert reader.view()["running"] is False


def _zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_failing_batch_does_not_end_the_intake():
    calls = []

    def on_batch(batch: list[dict]) -> None:
        calls.append(len(batch))
        raise RuntimeError("boom")

    ring = os.open(os.devnull, os.O_RDONLY)
    reader = ScriptedReader(ring, on_batch, bytes(record(1)))
    try:
        reader.start()
        deadline = time.time() + 15
        while len(calls) < 2:
            assert time.time() < deadline
            time.sleep(0.05)
        assert reader._thread.is_alive()
    finally:
        reader.stop()
        os.close(ring)


def test_monitor_batches_reach_the_store_labelled_and_dated():
    asked: list[int] = []

    def endpoint(ifindex: int) -> dict | None:
        asked.append(ifindex)
        return {"endpoint_id": "e1", "container_name": f"c{ifindex}", "identity": 300}

    class Identity:
        labels = ["container:app=b", "container:app=a"]

    monitor = Monitor(lambda n: Identity(), endpoint)
    store = FlowStore("node1", lambda ip: None)
    monitor.batch_listeners.append(store.add_events)
    seen: list[dict] = []
    monitor.listeners.append(seen.append)
    stop = threading.Event()
    follow = store.follow([], [], stop, keepalive=0.1)
    assert next(follow) is None
    batch = events.decode_batch(b"".join(bytes(record(i)) for i in range(30)))
    monitor.ingest_batch(batch)
    assert monitor.seen == 30 and len(seen) == 30 and store.seen == 30
    assert sorted(asked) == [10, 11, 12], "one lookup per endpoint, not per event"
    for event in batch:
        assert event["src_labels"] == ["container:app=b", "container:app=a"]
        assert event["endpoint"]["container_name"] == f"c{event['ifindex']}"
        assert abs(event["time"] - time.time()) < 5, "dated by the kernel's clock"
    followed = [next(follow) for _ in range(30)]
    assert followed == store.query([], [])
    assert followed[0]["source"]["labels"] == ["container:app=a", "container:app=b"]
    stop.set()
