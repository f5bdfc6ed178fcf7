"""Flow times as protojson prints a ``google.protobuf.Timestamp``: RFC 3339 in UTC with
``Z`` and 0, 3, 6 or 9 fractional digits. Every stored flow is dated, so the common
case is made cheap (see :func:`timestamp`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["timestamp"]


def timestamp(seconds: float) -> str:
    """``seconds`` (unix, float) as protojson prints a Timestamp: UTC, ``Z``, and 0, 3, 6
    or 9 fractional digits (the float's shortest decimal form, rounded to nanoseconds)."""
    # every flow is dated: the common case (a positive float with at most 9 fractional
    # digits in its shortest form) takes the digits from repr() as they are, and the
    # date of the whole second is reused; Decimal rounding only for the rest
    text = repr(float(seconds))
    whole_text, dot, frac = text.partition(".")
    if not dot or len(frac) > 9 or not whole_text.isdigit() or not frac.isdigit():
        return _timestamp_exact(seconds)
    frac = frac.rstrip("0")
    return _format_timestamp(int(whole_text), int(frac.ljust(9, "0")) if frac else 0)


def _timestamp_exact(seconds: float) -> str:
    exact = Decimal(repr(float(seconds)))
    whole = int(exact // 1)
    nanos = int(((exact - whole) * 1_000_000_000).to_integral_value(ROUND_HALF_EVEN))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return _format_timestamp(whole, nanos)


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _format_timestamp(whole: int, nanos: int) -> str:
    global _last_second
    cached_whole, text = _last_second  # one tuple: read and replaced atomically
    if whole != cached_whole:
        text = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (whole, text)
    if nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}" if nanos else ""
    elif nanos % 1000 == 0:
        frac = f".{nanos // 1000:06d}"
    else:
        frac = f".{nanos:09d}"
    return f"{text}{frac}Z"
