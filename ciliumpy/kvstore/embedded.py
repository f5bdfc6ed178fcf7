"""The embedded backend: a SQLite file in WAL mode, for a single host.

One table of pairs plus a counter that plays Consul's ModifyIndex. Writes use
``BEGIN IMMEDIATE`` so create-only and compare-and-swap are atomic across threads
and processes sharing the file; ``synchronous=FULL`` makes every acknowledged write
survive a crash of the agent or the host.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from ciliumpy.kvstore.base import KVPair, KVStore, KVUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('index', 0);
"""


class EmbeddedStore(KVStore):
    name = "embedded"

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise KVUnavailable(f"embedded kvstore {path}: {exc}") from None
        self._lock = threading.Lock()

    def _write(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _next_index(self) -> int:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'index'")
        return self._db.execute("SELECT value FROM meta WHERE name = 'index'").fetchone()[0]

    def get(self, key: str) -> KVPair | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, value, mod_index FROM kv WHERE key = ?", (key,)
            ).fetchone()
        return KVPair(*row) if row else None

    def put(self, key: str, value: str) -> int:
        def op():
            index = self._next_index()
            self._db.execute(
                "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = excluded.value, mod_index = excluded.mod_index",
                (key, value, index),
            )
            return index

        return self._write(op)

    def create(self, key: str, value: str) -> bool:
        def op():
            if self._db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone():
                return False
            self._db.execute("INSERT INTO kv VALUES (?, ?, ?)", (key, value, self._next_index()))
            return True

        return self._write(op)

    def cas(self, key: str, value: str, mod_index: int) -> bool:
        def op():
            row = self._db.execute("SELECT mod_index FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or row[0] != mod_index:
                return False
            self._db.execute(
                "UPDATE kv SET value = ?, mod_index = ? WHERE key = ?",
                (value, self._next_index(), key),
            )
            return True

        return self._write(op)

    def delete(self, key: str, mod_index: int | None = None) -> bool:
        def op():
            if mod_index is None:
                cur = self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                cur = self._db.execute(
                    "DELETE FROM kv WHERE key = ? AND mod_index = ?", (key, mod_index)
                )
            if cur.rowcount:
                self._next_index()
            return cur.rowcount > 0

        return self._write(op)

    def list(self, prefix: str) -> list[KVPair]:
        upper = prefix + "\uffff"
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, mod_index FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, upper),
            ).fetchall()
        return [KVPair(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
