"""Maglev tables (services/maglev.py), pure Python, no Docker: build time, slots per
backend against floor/ceil(M/N), and the share of slots that move when one backend
leaves, beside 1/N (the paper's simulation: 1/N + 0.5 pt at N = 10 and 1/N + 1.3 pt at
N = 100 with M = 16381, 1/N + 0.6 pt at N = 100 with M = 65537). Results:
results/maglev.md.

    .venv/bin/python -m bench.maglev
"""

from __future__ import annotations

import random
import time

from bench.common import summary, write_table
from services import maglev

SIZES = (16381, 65537)
COUNTS = (1, 2, 10, 100, 1000)


def names(n: int) -> list[tuple[str, int]]:
    return [(f"10.{i // 250 % 250}.{i % 250}.9:80", 1) for i in range(n)]


def main() -> None:
    rows = []
    for m in SIZES:
        for n in COUNTS:
            backends = names(n)
            times = []
            for _ in range(5):
                started = time.perf_counter()
                table = maglev.build_table(backends, m)
                times.append(time.perf_counter() - started)
            counts = [0] * n
            for index in table:
                counts[index] += 1
            moved = []
            if n > 1:
                for removed in random.Random(11).sample(range(n), min(n, 10)):
                    after = [b for i, b in enumerate(backends) if i != removed]
                    moved.append(maglev.moved_share(table, maglev.build_table(after, m),
                                                    backends, after))
            med, low, high = summary(times)
            share = sorted(moved)[len(moved) // 2] if moved else 0.0
            rows.append([f"{m:,}", f"{n:,}", f"{med * 1000:.1f} ({low * 1000:.1f}-"
                         f"{high * 1000:.1f})", f"{min(counts)}-{max(counts)}",
                         f"{m // n}-{-(-m // n)}",
                         f"{share * 100:.2f}%" if moved else "-",
                         f"{100 / n:.2f}%" if n > 1 else "-",
                         f"{(share - 1 / n) * 100:+.2f} pt" if moved else "-"])
    write_table("maglev", "Maglev tables: build time, balance, disruption",
                ["M", "backends N", "build ms (min-max)", "slots per backend",
                 "floor-ceil(M/N)", "moved when one leaves (median of 10)", "1/N",
                 "moved - 1/N"], rows,
                ["goal: every backend floor(M/N) or ceil(M/N) slots; moved - 1/N at most "
                 "the paper's simulation (+0.5 pt N=10, +1.3 pt N=100 at M=16381; +0.6 pt "
                 "N=100 at M=65537)"])


if __name__ == "__main__":
    main()
