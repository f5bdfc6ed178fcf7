"""BPF maps from Python: ctypes twins of the structs in ``bpf/lib/common.h`` and a small
map object over a file descriptor (libbcc's syscall wrappers), so maps opened from
their pins after a restart work exactly like freshly created ones."""

from __future__ import annotations

import ctypes as ct
import errno as errnos
import functools
import ipaddress
import os
import struct
from collections.abc import Iterator, Sequence

from bcc import libbcc

lib = libbcc.lib
lib.bpf_obj_get.argtypes = [ct.c_char_p]
lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]

EP_ENFORCE_INGRESS, EP_ENFORCE_EGRESS, EP_SHAPED_EGRESS, EP_SHAPED_INGRESS = 1, 2, 4, 8
EP_AUDIT = 16  # policy-audit-mode: denials reported as AUDIT, never dropped
# The host endpoint's key in cp_endpoints and its policy entries' ``ep`` (bpf/lib/common.h)
HOST_EP_KEY = 0xFFFFFFFF
VERDICTS = {0: "denied", 1: "allowed", 2: "audit"}  # struct event.verdict
POLICY_DENY = 1
EVENTS_LOST_INDEX = 15  # the cp_metrics slot counting events the ring buffer dropped
DIR_INGRESS, DIR_EGRESS = 0, 1
REASONS = {0: "forwarded", 1: "policy-denied", 2: "policy-deny-rule", 3: "malformed",
           4: "proxy-unavailable", 5: "bandwidth-limit"}
# skb marks of the L7 redirect (bpf/lib/common.h): the low byte tells them apart
MARK_MAGIC_MASK, MARK_TO_PROXY, MARK_FROM_PROXY = 0xFF, 0xA6, 0xA5
CT_FLAGS = {1: "egress-ok", 2: "ingress-ok", 4: "syn", 8: "established", 16: "closing"}


class MapError(RuntimeError):
    pass


class BatchError(MapError):
    """A batch stopped at its element ``done`` (the ones before it were written)."""

    def __init__(self, message: str, done: int) -> None:
        super().__init__(message)
        self.done = done


class EpInfo(ct.Structure):
    _fields_ = [("identity", ct.c_uint32), ("flags", ct.c_uint32), ("mac", ct.c_uint8 * 6),
                ("host_mac", ct.c_uint8 * 6), ("pad", ct.c_uint32)]


class BwState(ct.Structure):
    _fields_ = [("egress_bps", ct.c_uint64), ("horizon_ns", ct.c_uint64),
                ("t_next", ct.c_uint64), ("drops", ct.c_uint64)]


class DpConfig(ct.Structure):
    _fields_ = [("mode", ct.c_uint32), ("tunnel_ifindex", ct.c_uint32)]


MODE_ROUTED, MODE_TUNNEL = 0, 1


class IpcacheKey(ct.Structure):
    _fields_ = [("prefixlen", ct.c_uint32), ("family", ct.c_uint8), ("pad", ct.c_uint8 * 3),
                ("addr", ct.c_uint8 * 16)]


class IpcacheVal(ct.Structure):
    _fields_ = [("identity", ct.c_uint32), ("tunnel_ip", ct.c_uint32), ("ifindex", ct.c_uint32),
                ("flags", ct.c_uint32)]


class PolicyKey(ct.Structure):
    _fields_ = [("prefixlen", ct.c_uint32), ("ep", ct.c_uint32), ("dir", ct.c_uint8),
                ("proto", ct.c_uint8), ("pad", ct.c_uint16), ("identity", ct.c_uint32),
                ("dport", ct.c_uint8 * 2), ("pad2", ct.c_uint16)]


class PolicyVal(ct.Structure):
    _fields_ = [("proxy_port", ct.c_uint16), ("flags", ct.c_uint8), ("pad", ct.c_uint8),
                ("rule", ct.c_uint32)]


class CtKey(ct.Structure):
    _fields_ = [("saddr", ct.c_uint8 * 16), ("daddr", ct.c_uint8 * 16), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("family", ct.c_uint8),
                ("pad", ct.c_uint16)]


class CtVal(ct.Structure):
    _fields_ = [("created", ct.c_uint64), ("last_seen", ct.c_uint64), ("packets", ct.c_uint64),
                ("bytes", ct.c_uint64), ("flags", ct.c_uint32), ("src_identity", ct.c_uint32),
                ("dst_identity", ct.c_uint32), ("proxy_port", ct.c_uint16),
                ("pad", ct.c_uint16)]


class MetricVal(ct.Structure):
    _fields_ = [("packets", ct.c_uint64), ("bytes", ct.c_uint64)]


class Event(ct.Structure):
    _fields_ = [("type", ct.c_uint8), ("reason", ct.c_uint8), ("dir", ct.c_uint8),
                ("family", ct.c_uint8), ("ifindex", ct.c_uint32), ("src_identity", ct.c_uint32),
                ("dst_identity", ct.c_uint32), ("saddr", ct.c_uint8 * 16),
                ("daddr", ct.c_uint8 * 16), ("sport", ct.c_uint16), ("dport", ct.c_uint16),
                ("proto", ct.c_uint8), ("verdict", ct.c_uint8), ("len", ct.c_uint16),
                ("ts", ct.c_uint64), ("tcp_flags", ct.c_uint8), ("icmp_type", ct.c_uint8),
                ("pad", ct.c_uint8 * 6)]


# ---- services (bpf/lib/lb.h) ---------------------------------------------------------
LB_AFFINITY_CLIENT, LB_HOST_PORT = 1, 2


class LbSvcKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint8 * 16), ("port", ct.c_uint16), ("proto", ct.c_uint8),
                ("family", ct.c_uint8)]


class LbSvcVal(ct.Structure):
    _fields_ = [("svc_id", ct.c_uint32), ("table_size", ct.c_uint32), ("flags", ct.c_uint32),
                ("pad", ct.c_uint32)]


class LbSlotKey(ct.Structure):
    _fields_ = [("svc_id", ct.c_uint32), ("slot", ct.c_uint32)]


class LbBackend(ct.Structure):
    _fields_ = [("addr", ct.c_uint8 * 16), ("port", ct.c_uint16), ("family", ct.c_uint8),
                ("pad", ct.c_uint8)]


class LbRevskKey(ct.Structure):
    _fields_ = [("cookie", ct.c_uint64), ("addr", ct.c_uint8 * 16), ("port", ct.c_uint16),
                ("family", ct.c_uint8), ("pad", ct.c_uint8), ("pad2", ct.c_uint32)]


class LbNatKey(ct.Structure):
    _fields_ = [("saddr", ct.c_uint32), ("daddr", ct.c_uint32), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("pad", ct.c_uint8 * 3)]


class LbNatVal(ct.Structure):
    _fields_ = [("addr", ct.c_uint32), ("port", ct.c_uint16), ("flags", ct.c_uint16),
                ("ifindex", ct.c_uint32)]


class LbNetnsVal(ct.Structure):
    _fields_ = [("addr4", ct.c_uint32), ("addr6", ct.c_uint8 * 16)]


def possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as handle:
        text = handle.read().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class BPFMap:
    """Lookup/update/delete/iterate on a map fd with fixed ctypes key/value types."""

    def __init__(self, name: str, fd: int, key_type, value_type, max_entries: int,
                 percpu: bool = False) -> None:
        self.name, self.fd = name, fd
        self.key_type, self.value_type = key_type, value_type
        self.max_entries, self.percpu = max_entries, percpu
        self.cpus = possible_cpus() if percpu else 1

    def _value_buffer(self):
        return (self.value_type * self.cpus)() if self.percpu else self.value_type()

    def lookup(self, key):
        value = self._value_buffer()
        if lib.bpf_lookup_elem(self.fd, ct.byref(key), ct.byref(value)) != 0:
            return None
        return list(value) if self.percpu else value

    def update(self, key, value) -> None:
        if lib.bpf_update_elem(self.fd, ct.byref(key), ct.byref(value), 0) != 0:
            errno = ct.get_errno()
            raise MapError(f"update of {self.name} failed: {os.strerror(errno) if errno else '?'}")

    def _array(self, item_type, items: Sequence):
        """A C array of ``items``: ctypes instances, or their bytes (packed layout), which
        are joined and copied at once instead of converted one by one."""
        if items and isinstance(items[0], bytes):
            return (item_type * len(items)).from_buffer_copy(b"".join(items))
        return (item_type * len(items))(*items)

    def update_batch(self, keys: Sequence, values: Sequence) -> None:
        """Many entries in one syscall (hash, array and LPM trie maps; kernel 5.6+);
        BatchError tells how many were written before the one that failed."""
        if not keys:
            return
        key_array = self._array(self.key_type, keys)
        value_array = self._array(self.value_type, values)
        count = ct.c_uint32(len(keys))
        if lib.bpf_update_batch(self.fd, key_array, value_array, ct.byref(count)) != 0:
            errno = ct.get_errno()
            raise BatchError(f"batch update of {self.name} failed after {count.value} of "
                             f"{len(keys)}: {os.strerror(errno) if errno else '?'}", count.value)

    def delete_batch(self, keys: Sequence) -> int:
        """Deletes ``keys`` (ctypes instances or bytes) in as few syscalls as possible;
        returns how many were present. The kernel stops a batch at a missing key
        (ENOENT): it is skipped and the rest go on in the next syscall, as ``delete``
        of a missing key is not an error either."""
        array = self._array(self.key_type, keys)
        size, start, deleted = ct.sizeof(self.key_type), 0, 0
        while start < len(keys):
            count = ct.c_uint32(len(keys) - start)
            ret = lib.bpf_delete_batch(self.fd, ct.c_void_p(ct.addressof(array) + start * size),
                                       ct.byref(count))
            deleted += count.value
            if ret == 0:
                break
            errno = ct.get_errno()
            if errno != errnos.ENOENT:
                raise BatchError(f"batch delete of {self.name} failed after "
                                 f"{start + count.value} of {len(keys)}: "
                                 f"{os.strerror(errno) if errno else '?'}", start + count.value)
            start += count.value + 1
        return deleted

    def delete(self, key) -> bool:
        return lib.bpf_delete_elem(self.fd, ct.byref(key)) == 0

    def keys(self) -> Iterator:
        key = self.key_type()
        next_key = self.key_type()
        first = True
        while True:
            ret = lib.bpf_get_next_key(self.fd, None if first else ct.byref(key),
                                       ct.byref(next_key))
            if ret != 0:
                return
            first = False
            ct.memmove(ct.byref(key), ct.byref(next_key), ct.sizeof(key))
            yield self.key_type.from_buffer_copy(key)

    def items(self) -> Iterator[tuple]:
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def count(self) -> int:
        return sum(1 for _ in self.keys())


def open_pinned(path: str) -> int:
    fd = lib.bpf_obj_get(path.encode())
    if fd < 0:
        raise MapError(f"cannot open pinned object {path}")
    return fd


def pin(fd: int, path: str) -> None:
    if lib.bpf_obj_pin(fd, path.encode()) != 0:
        raise MapError(f"cannot pin to {path}")


# ---- key/value builders -------------------------------------------------------
def addr_bytes(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return ip.packed.ljust(16, b"\0")


def to_ip(family: int, raw) -> str:
    data = bytes(raw)
    return str(ipaddress.ip_address(data[:4] if family == 4 else data[:16]))


def ipcache_key(prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> IpcacheKey:
    key = IpcacheKey()
    key.prefixlen = 32 + prefix.prefixlen
    key.family = prefix.version
    key.addr[:] = list(addr_bytes(prefix.network_address))
    return key


def policy_key(ep: int, direction: int, identity: int, proto: int, port: int,
               port_prefix: int) -> PolicyKey:
    key = PolicyKey()
    key.prefixlen = 96 + port_prefix
    key.ep, key.dir, key.proto, key.identity = ep, direction, proto, identity
    key.dport[0], key.dport[1] = port >> 8, port & 0xFF
    return key


# The policy map's key and value packed by struct, not built field by field as ctypes
# objects: a large import writes 100,000 keys, and a ctypes key costs ~5 us in Python.
POLICY_KEY = struct.Struct("=IIBBxxI2sxx")  # prefixlen ep dir proto pad identity dport pad2
POLICY_VAL = struct.Struct("=HBxI")  # proxy_port flags pad rule
assert POLICY_KEY.size == ct.sizeof(PolicyKey) and POLICY_VAL.size == ct.sizeof(PolicyVal)


@functools.lru_cache(maxsize=65536)
def packed_prefixes(first: int, last: int) -> tuple[tuple[int, bytes], ...]:
    """(key prefixlen, port in network order) of each ``port_prefixes`` pair of a range,
    for ``POLICY_KEY``; cached, as policies repeat ports."""
    return tuple((96 + bits, port.to_bytes(2, "big")) for port, bits in port_prefixes(first, last))


@functools.lru_cache(maxsize=1024)
def policy_value_bytes(deny: bool, proxy_port: int) -> bytes:
    return POLICY_VAL.pack(proxy_port, POLICY_DENY if deny else 0, 0)


def port_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """A port range as the fewest (port, prefix bits) pairs covering exactly it."""
    if first == 0 and last in (0, 65535):
        return [(0, 0)]
    result = []
    while first <= last:
        size = first & -first if first else 1 << 16
        while size > last - first + 1:
            size >>= 1
        bits = 16 - (size.bit_length() - 1)
        result.append((first, bits))
        first += size
    return result
