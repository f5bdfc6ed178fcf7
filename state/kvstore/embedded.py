"""The embedded backend: a SQLite file in WAL mode, for a single host.

A table of pairs, a counter that plays Consul's ModifyIndex, a change log that
watches read (every write appends one event, so a watch sees every change exactly,
in order), and a table of leases. Writes use ``BEGIN IMMEDIATE`` so create-only and
compare-and-swap are atomic across threads and across processes sharing the file;
``synchronous=FULL`` makes every acknowledged write survive a crash. Expired leases
are swept (their keys deleted, with events) at the start of every write, so a dead
owner's keys vanish as soon as anyone else writes after its TTL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid

from state.kvstore.base import Event, KVPair, KVStore, KVUnavailable, LeaseExpired, Watch

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_index INTEGER NOT NULL, lease TEXT);
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('index', 0);
CREATE TABLE IF NOT EXISTS events (
    idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY, name TEXT, ttl REAL NOT NULL, expires REAL NOT NULL);
"""
EVENT_LOG_KEEP = 200_000


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
        # Wakes this process's watches as soon as it writes; writes by other processes
        # sharing the file are seen by the watches' polling.
        self._changed = threading.Condition()
        self._last_sweep = 0.0

    # ---- plumbing ------------------------------------------------------------
    def _write(self, fn):
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise KVUnavailable(f"embedded kvstore {self.path}: {exc}") from None
            try:
                self._sweep_expired()
                result = fn()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        with self._changed:
            self._changed.notify_all()
        return result

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _next_index(self) -> int:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'index'")
        return self._db.execute("SELECT value FROM meta WHERE name = 'index'").fetchone()[0]

    def _log(self, kind: str, key: str, value: str | None, index: int) -> None:
        self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (index, kind, key, value))
        if index % 10_000 == 0:
            self._db.execute("DELETE FROM events WHERE idx < ?", (index - EVENT_LOG_KEEP,))

    def _delete_row(self, key: str) -> None:
        self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
        self._log("delete", key, None, self._next_index())

    def _sweep_expired(self) -> None:
        now = time.time()
        expired = [r[0] for r in self._db.execute("SELECT id FROM leases WHERE expires < ?",
                                                  (now,))]
        for lease in expired:
            self._drop_lease(lease)

    def _drop_lease(self, lease: str) -> None:
        for (key,) in self._db.execute("SELECT key FROM kv WHERE lease = ?", (lease,)).fetchall():
            self._delete_row(key)
        self._db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _check_lease(self, lease: str | None) -> None:
        if lease is not None and not self._db.execute(
                "SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone():
            raise LeaseExpired(f"lease {lease} has expired")

    def _upsert(self, key: str, value: str, lease: str | None) -> None:
        index = self._next_index()
        self._db.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE "
            "SET value = excluded.value, mod_index = excluded.mod_index, lease = excluded.lease",
            (key, value, index, lease))
        self._log("put", key, value, index)

    # ---- contract --------------------------------------------------------------
    def get(self, key: str) -> KVPair | None:
        rows = self._read("SELECT key, value, mod_index FROM kv WHERE key = ?", (key,))
        return KVPair(*rows[0]) if rows else None

    def put(self, key: str, value: str, lease: str | None = None) -> None:
        def op():
            self._check_lease(lease)
            self._upsert(key, value, lease)

        self._write(op)

    def create(self, key: str, value: str, lease: str | None = None) -> bool:
        def op():
            self._check_lease(lease)
            if self._db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone():
                return False
            self._upsert(key, value, lease)
            return True

        return self._write(op)

    def cas(self, key: str, value: str, mod_index: int) -> bool:
        def op():
            row = self._db.execute("SELECT mod_index, lease FROM kv WHERE key = ?",
                                   (key,)).fetchone()
            if row is None or row[0] != mod_index:
                return False
            self._upsert(key, value, row[1])
            return True

        return self._write(op)

    def delete(self, key: str, mod_index: int | None = None) -> bool:
        def op():
            row = self._db.execute("SELECT mod_index FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or (mod_index is not None and row[0] != mod_index):
                return False
            self._delete_row(key)
            return True

        return self._write(op)

    def list(self, prefix: str) -> list[KVPair]:
        rows = self._read(
            "SELECT key, value, mod_index FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\uffff"))
        return [KVPair(*row) for row in rows]

    def index(self) -> int:
        return self._read("SELECT value FROM meta WHERE name = 'index'")[0][0]

    def watch(self, prefix: str, index: int = 0) -> Watch:
        return _EmbeddedWatch(self, prefix, index)

    def grant_lease(self, ttl: float, name: str = "") -> str:
        lease = uuid.uuid4().hex

        def op():
            self._db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)",
                             (lease, name, ttl, time.time() + ttl))

        self._write(op)
        return lease

    def keepalive(self, lease: str) -> bool:
        def op():
            cur = self._db.execute("UPDATE leases SET expires = ? + ttl WHERE id = ?",
                                   (time.time(), lease))
            return cur.rowcount > 0

        return self._write(op)

    def revoke(self, lease: str) -> None:
        self._write(lambda: self._drop_lease(lease))

    def sweep(self) -> None:
        """Deletes the keys of expired leases now (writes do this anyway)."""
        self._last_sweep = time.monotonic()
        self._write(lambda: None)

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _EmbeddedWatch(Watch):
    def __init__(self, store: EmbeddedStore, prefix: str, index: int) -> None:
        super().__init__(prefix, index)
        self.store = store

    def next(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            # Expired leases must show up as deletes even when nobody else writes.
            if time.monotonic() - self.store._last_sweep > 0.5:
                self.store.sweep()
            rows = self.store._read(
                "SELECT idx, kind, key, value FROM events WHERE idx > ? AND key >= ? "
                "AND key < ? ORDER BY idx", (self.index, self.prefix, self.prefix + "\uffff"))
            if rows:
                self.index = rows[-1][0]
                return [Event(kind, key, value, idx) for idx, kind, key, value in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.store.wait_for_change(min(left, 0.05))
