"""The key-value store contract every backend honours.

Keys are '/'-separated strings under one prefix (``ciliumpy/state/...``); values are
strings (JSON for structured data). Every write gets a store-wide, increasing index; a
pair's ``mod_index`` is the index of its last write, which compare-and-swap checks.

Leases are how liveness is expressed: keys written with a lease vanish when the lease
is revoked or its owner stops renewing it (embedded: after ``ttl``; Consul: the
session TTL, which Consul enforces within 2 x ttl). A watch reports, in index order,
the changes under a prefix after a given index; the same Watch object resumes after a
store outage without losing changes (Consul may coalesce several writes to one key
into one event carrying the latest value).
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

PREFIX = "ciliumpy/state"


class KVError(Exception):
    """A store operation failed for a reason the caller should report."""


class KVUnavailable(KVError):
    """The store cannot be reached (Consul down, file unreadable)."""


class LeaseExpired(KVError):
    """A write named a lease that no longer exists; the owner must grant a new one."""


@dataclass(frozen=True)
class KVPair:
    key: str
    value: str
    mod_index: int


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    key: str
    value: str | None
    mod_index: int


def key(*parts: str) -> str:
    """Joins parts below the common prefix: key('ipam', 'v1', x) -> ciliumpy/state/ipam/v1/x."""
    return "/".join((PREFIX, *parts))


class Watch(abc.ABC):
    """Changes under one prefix after ``index``, in index order."""

    def __init__(self, prefix: str, index: int) -> None:
        self.prefix, self.index = prefix, index

    @abc.abstractmethod
    def next(self, timeout: float) -> list[Event]:
        """Waits up to ``timeout`` s for changes; [] if none. Raises KVUnavailable when
        the store is down; calling again later resumes where it stopped."""


class KVStore(abc.ABC):
    """Backend-neutral operations. All methods are thread-safe."""

    name = "abstract"

    @abc.abstractmethod
    def get(self, key: str) -> KVPair | None: ...

    @abc.abstractmethod
    def put(self, key: str, value: str, lease: str | None = None) -> None:
        """Writes unconditionally (attached to ``lease`` if given)."""

    @abc.abstractmethod
    def create(self, key: str, value: str, lease: str | None = None) -> bool:
        """Writes only if the key does not exist; True if this call created it."""

    @abc.abstractmethod
    def cas(self, key: str, value: str, mod_index: int) -> bool:
        """Writes only if the key's mod index is still ``mod_index``."""

    @abc.abstractmethod
    def delete(self, key: str, mod_index: int | None = None) -> bool:
        """Deletes (only at ``mod_index`` if given); True if something was deleted."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[KVPair]:
        """Every pair whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def index(self) -> int:
        """The store's current index (start a watch here to see only future changes)."""

    @abc.abstractmethod
    def watch(self, prefix: str, index: int = 0) -> Watch: ...

    @abc.abstractmethod
    def grant_lease(self, ttl: float, name: str = "") -> str:
        """A new lease id; keys attached to it vanish when it expires or is revoked."""

    @abc.abstractmethod
    def keepalive(self, lease: str) -> bool:
        """Renews a lease; False if it already expired (its keys are gone)."""

    @abc.abstractmethod
    def revoke(self, lease: str) -> None: ...

    @contextlib.contextmanager
    def lock(self, name: str, lease: str, timeout: float = 30.0) -> Iterator[None]:
        """A cluster-wide mutex on ``name``, held by ``lease`` (a dead holder's lock
        vanishes with its lease)."""
        lock_key = key("locks", name)
        deadline = time.monotonic() + timeout
        while not self.create(lock_key, lease, lease=lease):
            if time.monotonic() > deadline:
                raise KVError(f"lock {name!r} not acquired within {timeout}s")
            time.sleep(0.02)
        try:
            yield
        finally:
            pair = self.get(lock_key)
            if pair and pair.value == lease:
                self.delete(lock_key, pair.mod_index)

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Releases connections."""


class LeaseKeeper:
    """Holds one lease: renews it every ttl/3 in a thread and, when it is lost (expired
    during a store outage) or could never be granted, grants a new one and calls
    ``on_new_lease`` so the owner re-writes its keys."""

    def __init__(self, store: KVStore, ttl: float, name: str, on_new_lease=None) -> None:
        self.store, self.ttl, self.name = store, ttl, name
        self.on_new_lease = on_new_lease
        self.lease: str | None = None
        self.healthy = False
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)
        self._step()

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def current(self) -> str:
        """The live lease; KVUnavailable while the store cannot grant one."""
        if self.lease is None:
            raise KVUnavailable(f"no kvstore lease ({self.error or 'store unreachable'})")
        return self.lease

    def _step(self) -> None:
        try:
            if self.lease is None or not self.store.keepalive(self.lease):
                self.lease = self.store.grant_lease(self.ttl, self.name)
                if self.on_new_lease:
                    self.on_new_lease(self.lease)
            self.healthy, self.error = True, None
        except Exception as exc:  # store down: keep trying, report unhealthy meanwhile
            self.healthy, self.error = False, str(exc)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3 if self.healthy else 1.0):
            self._step()

    def stop(self, revoke: bool = True) -> None:
        self._stop.set()
        if revoke and self.lease:
            with contextlib.suppress(Exception):
                self.store.revoke(self.lease)
