"""Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights, and the flow
hash the BPF socket hooks compute (``datapath/bpf/lib/lb.h``), so that Python can
predict which backend a connection gets.

Each backend has a permutation of the table's slots from two hashes of its name
(offset and skip); backends take turns claiming their next free slot until the table
is full. With equal weights every backend ends with floor(M/N) or ceil(M/N) slots, and
removing one backend moves little more than its own slots. Weights: a backend of
weight w takes w turns per round (Cilium's weighted Maglev gives turns in proportion
to weight the same way); weight 0 takes none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

MASK = 0xFFFFFFFF
JHASH_INITVAL = 0xDEADBEEF
ALLOWED_SIZES = (251, 1021, 4093, 16381, 65537)  # primes: every skip is coprime with M
DEFAULT_SIZE = 16381


def backend_offsets(name: str, m: int) -> tuple[int, int]:
    """(offset, skip) of a backend's permutation: from a stable hash of its name (never
    Python's hash(), which changes per process), so every node builds the same table."""
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    h1, h2 = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")
    return h1 % m, h2 % (m - 1) + 1


def build_table(backends: Sequence[tuple[str, int]], m: int) -> list[int]:
    """The lookup table: ``m`` entries, each an index into ``backends`` (name, weight).
    Empty when no backend has a weight."""
    turns = [(index, weight) for index, (_, weight) in enumerate(backends) if weight > 0]
    if not turns:
        return []
    params = {index: backend_offsets(backends[index][0], m) for index, _ in turns}
    nexts = {index: 0 for index, _ in turns}
    table = [-1] * m
    filled = 0
    while True:
        for index, weight in turns:
            offset, skip = params[index]
            for _ in range(weight):
                position = nexts[index]
                slot = (offset + position * skip) % m
                while table[slot] >= 0:
                    position += 1
                    slot = (offset + position * skip) % m
                table[slot] = index
                nexts[index] = position + 1
                filled += 1
                if filled == m:
                    return table


def _rol32(word: int, shift: int) -> int:
    return ((word << shift) | (word >> (32 - shift))) & MASK


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    """Linux's jhash_3words (include/linux/jhash.h), as lib/lb.h has it."""
    initval = (initval + JHASH_INITVAL + (3 << 2)) & MASK
    a, b, c = (a + initval) & MASK, (b + initval) & MASK, (c + initval) & MASK
    c ^= b
    c = (c - _rol32(b, 14)) & MASK
    a ^= c
    a = (a - _rol32(c, 11)) & MASK
    b ^= a
    b = (b - _rol32(a, 25)) & MASK
    c ^= b
    c = (c - _rol32(b, 16)) & MASK
    a ^= c
    a = (a - _rol32(c, 4)) & MASK
    b ^= a
    b = (b - _rol32(a, 14)) & MASK
    c ^= b
    c = (c - _rol32(b, 24)) & MASK
    return c


def fold(address: int) -> int:
    """An address as the hash takes it: IPv4 as is, IPv6 the XOR of its four words."""
    if address <= MASK:
        return address
    return (address >> 96 ^ address >> 64 ^ address >> 32 ^ address) & MASK


def flow_hash(saddr: int, daddr: int, sport: int, dport: int, proto: int) -> int:
    """The hash the socket hooks compute for a new connection: addresses as integers
    (``int(ipaddress.ip_address(x))``), ports in host order; sport 0 for client
    affinity."""
    return jhash_3words(fold(saddr), fold(daddr), ((sport & 0xFFFF) << 16) | dport, proto)


def table_predicts(table: Sequence[int], backends: Sequence[tuple[str, int]], saddr: int,
                   daddr: int, sport: int, dport: int, proto: int) -> str | None:
    """The name of the backend this connection gets (None: no backend)."""
    if not table:
        return None
    return backends[table[flow_hash(saddr, daddr, sport, dport, proto) % len(table)]][0]


def moved_share(old_table: Sequence[int], new_table: Sequence[int],
                old_backends: Sequence[tuple[str, int]],
                new_backends: Sequence[tuple[str, int]]) -> float:
    """The share of slots whose backend (by name) differs between two tables."""
    moved = sum(1 for a, b in zip(old_table, new_table, strict=True)
                if old_backends[a][0] != new_backends[b][0])
    return moved / len(old_table)
