"""Bandwidth values as Kubernetes writes them (``10M``, ``1G``, ``500k``, ``1Gi``), in
bits per second, and back. Pure: no I/O."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# the label names (and network options) that carry limits, ciliumpy's own first: when a
# container has both spellings, ciliumpy's wins
EGRESS_KEYS = ("ciliumpy.egress-bandwidth", "kubernetes.io/egress-bandwidth")
INGRESS_KEYS = ("ciliumpy.ingress-bandwidth", "kubernetes.io/ingress-bandwidth")
BANDWIDTH_KEYS = EGRESS_KEYS + INGRESS_KEYS

SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
MIN_RATE = 1000  # 1 kbit/s and 100 Gbit/s: what kubelet calls reasonable, and what
MAX_RATE = 100 * 10**9  # HTB shapes faithfully
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([kMGTP]i?|)\s*$")


class RateError(ValueError):
    pass


def parse_rate(text: str) -> int:
    """``"10M"`` -> 10_000_000 bit/s; RateError with a readable reason otherwise."""
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in SUFFIXES:
        raise RateError(f"{text!r} is not a bandwidth: write it as Kubernetes does "
                        "(10M, 1G, 500k)")
    try:
        value = int(Decimal(match.group(1)) * SUFFIXES[match.group(2)])
    except InvalidOperation:
        raise RateError(f"{text!r} is not a bandwidth") from None
    if value < MIN_RATE:
        raise RateError(f"{text!r} is below the smallest limit, 1k (1 kbit/s)")
    if value > MAX_RATE:
        raise RateError(f"{text!r} is above the largest limit, 100G (100 Gbit/s)")
    return value


def format_rate(bps: int) -> str:
    """10_000_000 -> ``"10M"``; 0 -> ``"-"`` (no limit)."""
    if not bps:
        return "-"
    for suffix in ("G", "M", "k"):
        unit = SUFFIXES[suffix]
        if bps >= unit:
            value = bps / unit
            return f"{value:g}{suffix}" if value == round(value, 3) else f"{value:.3f}{suffix}"
    return str(bps)
