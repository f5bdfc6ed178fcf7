"""The key-value store contract every backend honours.

Keys are '/'-separated strings under one prefix (``ciliumpy/state/...``); values are
strings (JSON for structured data). Every write bumps a store-wide index; a pair's
``mod_index`` is the index of its last write, which compare-and-swap checks.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

PREFIX = "ciliumpy/state"


class KVError(Exception):
    """A store operation failed for a reason the caller should report."""


class KVUnavailable(KVError):
    """The store cannot be reached (Consul down, file unreadable)."""


@dataclass(frozen=True)
class KVPair:
    key: str
    value: str
    mod_index: int


def key(*parts: str) -> str:
    """Joins parts below the common prefix: key('ipam', 'v1', x) -> ciliumpy/state/ipam/v1/x."""
    return "/".join((PREFIX, *parts))


class KVStore(abc.ABC):
    """Backend-neutral operations. All methods are thread-safe."""

    name = "abstract"

    @abc.abstractmethod
    def get(self, key: str) -> KVPair | None: ...

    @abc.abstractmethod
    def put(self, key: str, value: str) -> int:
        """Writes unconditionally; returns the new mod index."""

    @abc.abstractmethod
    def create(self, key: str, value: str) -> bool:
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

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Releases connections."""
