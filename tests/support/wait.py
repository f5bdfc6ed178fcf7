"""Polling with a deadline, for state that settles asynchronously (labels, leases)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """The predicate's first truthy value within ``timeout`` s, else its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
