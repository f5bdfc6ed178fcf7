"""The event reader process (ciliumpy.flow_reader, ``python -m datapath.events``) on a
real BPF ring buffer: a socket filter on ``lo`` submits one datapath-shaped record per
packet; every record the ring took reaches the agent's side, decoded; what the ring had
no room for is counted by the program; a reader killed with SIGKILL is started again
and reads what was queued meanwhile; one that stalls leaves the ring to fill and count
its drops."""

from __future__ import annotations

import os
import signal
import socket
import time

from bcc import BPF

from ciliumpy.flow_reader import EventReaderProcess

PROGRAM = r"""
BPF_RINGBUF_OUTPUT(ring, 64);
BPF_ARRAY(counts, u64, 2); /* 0: submitted, 1: no room in the ring */
struct rec { u8 type; u8 reason; u8 dir; u8 family; u32 ifindex; u32 src; u32 dst;
  u8 saddr[16]; u8 daddr[16]; u16 sport; u16 dport; u8 proto; u8 verdict; u16 len; u64 ts;
  u8 tcp_flags; u8 icmp; u8 pad[6]; };
int filt(struct __sk_buff *skb) {
  int k = 0;
  struct rec *r = ring.ringbuf_reserve(sizeof(struct rec));
  if (!r)
    k = 1;
  u64 *c = counts.lookup(&k);
  if (c)
    __sync_fetch_and_add(c, 1);
  if (!r)
    return 0;
  __builtin_memset(r, 0, sizeof(*r));
  r->type = 3; r->family = 4; r->saddr[0] = 10; r->saddr[3] = 7; r->daddr[0] = 10;
  r->sport = 1234; r->dport = 80; r->proto = 6; r->verdict = 1; r->tcp_flags = 2;
  r->ts = bpf_ktime_get_ns();
  ring.ringbuf_submit(r, 0);
  return 0;
}
"""


def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline
        time.sleep(0.05)


def test_every_queued_record_is_read_and_a_killed_reader_restarts():
    bpf = BPF(text=PROGRAM)
    BPF.attach_raw_socket(bpf.load_func("filt", BPF.SOCKET_FILTER), "lo")
    counts = bpf[b"counts"]

    def counted(index: int) -> int:
        return counts[counts.Key(index)].value

    got: list[dict] = []
    reader = EventReaderProcess(bpf[b"ring"].map_fd, got.extend)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(n: int) -> None:
        for _ in range(n):
            sender.sendto(b"x", ("127.0.0.1", 9))

    try:
        send(200)  # queued in the ring before any reader runs
        reader.start()
        send(20000)
        # every record read (other traffic on lo may add more: counted alike)
        wait_for(lambda: len(got) == counted(0) == reader.view()["records"]
                 and counted(0) >= 20200)
        event = got[0]
        assert (event["type"], event["src_ip"], event["src_port"], event["protocol"],
                event["tcp_flags"]) == ("trace", "10.0.0.7", 1234, "TCP", 2)
        first = reader.view()
        assert first["running"] and first["restarts"] == 0

        os.kill(first["pid"], 9)
        send(300)  # while no reader may run: waits in the ring
        wait_for(lambda: reader.view()["restarts"] == 1 and reader.alive())
        wait_for(lambda: len(got) == counted(0))
        view = reader.view()
        assert view["pid"] != first["pid"] and view["last_exit"] == -9
        assert "exited with -9" in view["last_error"]
        assert len(got) + counted(1) >= 20500 * 2 - 10, "read or counted as lost"

        # a reader that stalls (stopped, not dead): the ring fills, and what it has no
        # room for is counted where it happened; everything it took is read after
        os.kill(view["pid"], signal.SIGSTOP)
        lost_before = counted(1)
        try:
            send(5000)  # 10,000 records: three times what the 256 KiB ring holds
        finally:
            os.kill(view["pid"], signal.SIGCONT)
        assert counted(1) > lost_before, "a full ring counts what it drops"
        wait_for(lambda: len(got) == counted(0))
        assert reader.view()["restarts"] == 1, "a stalled reader is not a dead one"
    finally:
        reader.stop()
        sender.close()
    assert not reader.alive()
