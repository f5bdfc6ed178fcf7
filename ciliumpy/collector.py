"""Pausing Python's cyclic garbage collector around large policy updates (the reason
is in :func:`collector_paused`)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

LARGE_UPDATE = 100_000  # objects made by an update, past which it collects at its end


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for one policy update. Such an update makes
    ~10 objects per map entry, most of them kept (views, the datapath's mirror), and
    each time enough of them survive, the collector walks every object the agent holds:
    half of a 100,000-entry import (0.75 s of 1.5 s) went there, freeing nothing. After
    a large update the young generations are collected at once (as the first allocation
    would, ~80 ms, but also the generation-1 walk that would land ~30 ms later in some
    small change; it also stops tracking the entry tuples). Callers hold ``lock``, so
    updates never nest across threads; a nested call leaves the collector to the outer
    one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            if gc.get_count()[0] > LARGE_UPDATE:
                gc.collect(1)
