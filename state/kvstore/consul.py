"""The Consul backend (py-consul, ``import consul``).

- create-only and compare-and-swap: Consul's ``cas`` (0 = only if absent, N = only at
  ModifyIndex N);
- leases: sessions with a TTL and ``behavior=delete``; a key written with a lease is
  acquired by the session, so Consul deletes it when the session is invalidated (a dead
  agent's keys go within 2 x TTL, Consul's own guarantee);
- watches: blocking queries on the prefix; each answer is diffed against the previous
  snapshot, so a watch that lived through an outage still reports every key that
  changed or vanished meanwhile. Consul answers a prefix query with the whole prefix,
  so a watch reads the answer with orjson and decodes only the values that changed
  (30,000 endpoint keys: ~7 MB per answer), and sends one blocking query per
  ``next(timeout)`` at rest (the agent's request rate does not grow with the cluster).

Options (``--kvstore-opt``): ``consul.address`` (HOST:PORT, required),
``consul.scheme`` (http|https), ``consul.token`` (ACL token), ``consul.tlsca`` /
``consul.tlscert`` / ``consul.tlskey`` (TLS files), ``consul.timeout`` (seconds per
request, default 5).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Mapping

import consul
import orjson
import requests
from consul.callback import CB

from state.kvstore.base import (
    Event,
    KVError,
    KVPair,
    KVStore,
    KVUnavailable,
    LeaseExpired,
    Watch,
)

MIN_TTL = 10  # Consul refuses session TTLs under 10 s


def _decode(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


class ConsulStore(KVStore):
    name = "consul"

    def __init__(self, options: Mapping[str, str]) -> None:
        address = options.get("consul.address", "")
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise KVError(f"consul.address {address!r} must be HOST:PORT")
        self.address = address
        self.timeout = float(options.get("consul.timeout", "5"))
        cert = None
        if options.get("consul.tlscert"):
            cert = (options["consul.tlscert"], options.get("consul.tlskey", ""))
        self._client = consul.Consul(
            host=host, port=int(port), token=options.get("consul.token") or None,
            scheme=options.get("consul.scheme", "http"),
            verify=options.get("consul.tlsca") or True, cert=cert,
            connections_timeout=self.timeout)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise KVUnavailable(f"consul at {self.address} is unreachable: "
                                f"{type(exc).__name__}") from None
        except consul.ConsulException as exc:
            if "invalid session" in str(exc).lower():
                raise LeaseExpired(f"consul: lease expired ({exc})") from None
            raise KVError(f"consul: {exc}") from None

    # ---- contract --------------------------------------------------------------
    def get(self, key: str) -> KVPair | None:
        _, item = self._call(self._client.kv.get, key)
        return KVPair(item["Key"], _decode(item["Value"]), item["ModifyIndex"]) if item else None

    def put(self, key: str, value: str, lease: str | None = None) -> None:
        ok = self._call(self._client.kv.put, key, value.encode(), acquire=lease)
        if not ok:
            raise LeaseExpired(f"consul refused to write {key}: lease {lease} expired")

    def create(self, key: str, value: str, lease: str | None = None) -> bool:
        if lease is None:
            return bool(self._call(self._client.kv.put, key, value.encode(), cas=0))
        # Consul refuses cas together with acquire: one transaction does both.
        ops = [{"KV": {"Verb": "check-not-exists", "Key": key}},
               {"KV": {"Verb": "lock", "Key": key, "Session": lease,
                       "Value": base64.b64encode(value.encode()).decode()}}]
        try:
            self._call(self._client.txn.put, ops)
        except LeaseExpired:
            raise
        except KVError as exc:
            if "409" in str(exc):
                return False
            raise
        return True

    def cas(self, key: str, value: str, mod_index: int) -> bool:
        return bool(self._call(self._client.kv.put, key, value.encode(), cas=mod_index))

    def delete(self, key: str, mod_index: int | None = None) -> bool:
        if mod_index is None:
            if self.get(key) is None:
                return False
            return bool(self._call(self._client.kv.delete, key))
        return bool(self._call(self._client.kv.delete, key, cas=mod_index))

    def _list_raw(self, prefix: str, params: list[tuple[str, str]]) -> tuple[int, list[dict]]:
        """A recursive read as Consul sends it (values still base64): parsed with orjson,
        several times faster than py-consul's json and b64 decoding of every value."""
        def parse(response) -> tuple[int, list[dict]]:
            CB._status(response)
            index = int(response.headers.get("X-Consul-Index", 0))
            return index, (orjson.loads(response.body) if response.code == 200 else [])
        return self._client.http.get(parse, f"/v1/kv/{prefix}", params=[("recurse", "1"),
                                                                        *params],
                                     headers=self._client.prepare_headers(None), raw=True)

    def list(self, prefix: str) -> list[KVPair]:
        _, items = self._call(self._client.kv.get, prefix, recurse=True)
        return [KVPair(i["Key"], _decode(i["Value"]), i["ModifyIndex"]) for i in items or []]

    def index(self) -> int:
        index, _ = self._call(self._client.kv.get, "ciliumpy/", recurse=True)
        return int(index)

    def watch(self, prefix: str, index: int = 0) -> Watch:
        return _ConsulWatch(self, prefix, index)

    def grant_lease(self, ttl: float, name: str = "") -> str:
        seconds = max(MIN_TTL, int(round(ttl)))
        return self._call(self._client.session.create, name=name or None, ttl=seconds,
                          behavior="delete", lock_delay=0)

    def keepalive(self, lease: str) -> bool:
        try:
            return self._call(self._client.session.renew, lease) is not None
        except KVError as exc:
            if isinstance(exc, KVUnavailable):
                raise
            return False

    def revoke(self, lease: str) -> None:
        self._call(self._client.session.destroy, lease)

    def close(self) -> None:
        """Closes the HTTP connections (a follower of a remote cluster that stopped)."""
        session = getattr(self._client.http, "session", None)
        if session is not None:
            session.close()


class _ConsulWatch(Watch):
    def __init__(self, store: ConsulStore, prefix: str, index: int) -> None:
        super().__init__(prefix, index)
        self.store = store
        self._snapshot: dict[str, int] | None = None  # key -> ModifyIndex
        self._blocking_index = 0
        try:
            # The baseline: keys present now that vanish later are reported as deletes.
            # (Deletes between ``index`` and now cannot be known: Consul keeps no
            # tombstones visible to KV reads; changed keys are reported as puts.)
            current = self._fetch(0)
            self._snapshot = {i["Key"]: i["ModifyIndex"] for i in current
                              if i["ModifyIndex"] <= index}
        except KVUnavailable:
            pass

    def _fetch(self, wait: float) -> list[dict]:
        params: list[tuple[str, str]] = []
        if self._blocking_index and wait > 0:
            # whole seconds, rounded up: a query that returns just before the deadline
            # must not be followed by another one for the rest of a second
            params = [("index", str(self._blocking_index)),
                      ("wait", f"{max(1, math.ceil(wait))}s")]
        index, items = self.store._call(self.store._list_raw, self.prefix, params)
        self._blocking_index = index
        return items

    def next(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            if self._snapshot is None:
                items = self._fetch(0)
                previous: dict[str, int] = {}
            else:
                previous = self._snapshot
                items = self._fetch(deadline - time.monotonic())
            current = {i["Key"]: i["ModifyIndex"] for i in items}
            events = [Event("put", i["Key"], _decode_b64(i["Value"]), i["ModifyIndex"])
                      for i in items if i["ModifyIndex"] > self.index
                      and previous.get(i["Key"], -1) != i["ModifyIndex"]]
            gone = sorted(previous.keys() - current.keys())
            events.sort(key=lambda e: e.mod_index)
            top = max([self.index, self._blocking_index] + [e.mod_index for e in events])
            events += [Event("delete", k, None, top) for k in gone]
            self._snapshot = current
            if events:
                self.index = top
                return events
            if time.monotonic() >= deadline - 1.0:  # no second query for a sliver of time
                return []


def _decode_b64(value: str | None) -> str:
    return base64.b64decode(value).decode() if value else ""
