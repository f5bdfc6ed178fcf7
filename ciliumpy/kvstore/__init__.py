"""The cluster key-value store: one interface (``base.KVStore``), two backends."""

from __future__ import annotations

import os

from ciliumpy.config import Config
from ciliumpy.kvstore.base import Event, KVError, KVPair, KVStore, KVUnavailable, Watch

__all__ = ["Event", "KVError", "KVPair", "KVStore", "KVUnavailable", "Watch", "open_store"]


def open_store(config: Config) -> KVStore:
    """Opens the backend the configuration names (Consul is not contacted yet)."""
    if config.kvstore == "consul":
        from ciliumpy.kvstore.consul import ConsulStore

        return ConsulStore(config.kvstore_opt)
    from ciliumpy.kvstore.embedded import EmbeddedStore

    path = config.kvstore_opt.get("embedded.path") or os.path.join(config.state_dir,
                                                                   "kvstore.db")
    return EmbeddedStore(path)
