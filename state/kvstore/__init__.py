"""The cluster key-value store: one interface (``base.KVStore``), two backends."""

from __future__ import annotations

import os
from collections.abc import Mapping

from state.kvstore.base import Event, KVError, KVPair, KVStore, KVUnavailable, Watch

__all__ = ["Event", "KVError", "KVPair", "KVStore", "KVUnavailable", "Watch", "open_store"]


def open_store(backend: str, options: Mapping[str, str], state_dir: str) -> KVStore:
    """Opens the named backend (Consul is not contacted yet); ``options`` are the
    agent's ``--kvstore-opt`` pairs, ``state_dir`` holds the embedded store's file."""
    if backend == "consul":
        from state.kvstore.consul import ConsulStore

        return ConsulStore(options)
    from state.kvstore.embedded import EmbeddedStore

    path = options.get("embedded.path") or os.path.join(state_dir, "kvstore.db")
    return EmbeddedStore(path)
