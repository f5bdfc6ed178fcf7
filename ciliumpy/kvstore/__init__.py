"""The cluster key-value store: one interface (``base.KVStore``), chosen backend."""

from __future__ import annotations

import os

from ciliumpy.config import Config
from ciliumpy.kvstore.base import KVError, KVPair, KVStore, KVUnavailable

__all__ = ["KVError", "KVPair", "KVStore", "KVUnavailable", "open_store"]


def open_store(config: Config) -> KVStore:
    """Opens the backend the configuration names."""
    if config.kvstore == "embedded":
        from ciliumpy.kvstore.embedded import EmbeddedStore

        path = config.kvstore_opt.get("embedded.path") or os.path.join(
            config.state_dir, "kvstore.db"
        )
        return EmbeddedStore(path)
    raise KVUnavailable(f"kvstore backend {config.kvstore!r} is not available in this build")
