"""Addresses learnt from DNS answers, for ``toFQDNs``: the agent's end of the DNS proxy's
channel, the cache with its minimum TTL, and expiry.

The proxy (``proxy/dns.py``) tells this module, on a root-only unix stream socket
(``<state-dir>/proxy/fqdn.sock``), each allowed answer as one JSON line ``{"endpoint",
"name", "ips", "ttl"}``, and holds the answer back until it reads ``ok``: by then the
policy manager has given each new address a local identity (ipcache) and the endpoints
whose ``toFQDNs`` rules select the name an allow entry for it (policy maps), so the
client's next connection meets the new policy. A thread forgets addresses when their
TTL (at least ``--tofqdns-min-ttl``) has passed; new connections to them are then
dropped again (established ones keep their conntrack entry, as in Cilium).

What is learnt is kept in ``<state-dir>/proxy/fqdn-cache.json`` (wall-clock expiries,
written atomically at each change) and learnt back at start, as Cilium restores its
DNS cache: a client holding an answer from before an agent restart can still connect.
A change the policy manager failed to apply is retried by the expiry thread every
second until it succeeds (the cache has changed already: never leave the maps behind).

The socket is served by its own threads, never by the gunicorn request handlers."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socketserver
import threading
import time
from collections.abc import Callable

from policies.fqdn import FQDNCache

log = logging.getLogger("ciliumpy.fqdn")
MAX_LINE = 65536
MAX_IPS = 256


class _Handler(socketserver.StreamRequestHandler):
    timeout = 5.0

    def handle(self) -> None:
        manager: FqdnManager = self.server.manager  # type: ignore[attr-defined]
        for line in self.rfile:
            if len(line) > MAX_LINE:
                self.wfile.write(b"error: line too long\n")
                return
            try:
                manager.learn_message(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                self.wfile.write(f"error: {exc}\n".encode())
                continue
            self.wfile.write(b"ok\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FqdnManager:
    """The FQDN cache and its channel; ``apply(addresses)`` is handed every valid
    address with its names whenever that set changes (PolicyManager.set_fqdns)."""

    def __init__(self, path: str, min_ttl: float,
                 apply: Callable[[dict], None]) -> None:
        self.path, self.apply = path, apply
        self.saved_path = os.path.join(os.path.dirname(path), "fqdn-cache.json")
        self.cache = FQDNCache(min_ttl)
        self._unapplied = False  # the cache changed and apply() failed: retry
        self.lock = threading.Lock()
        self.learnt = 0
        self._server: _Server | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._expiry = threading.Thread(target=self._expire_loop, name="fqdn-expiry",
                                        daemon=True)

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._restore()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o077)
        try:
            self._server = _Server(self.path, _Handler)
        finally:
            os.umask(old)
        self._server.manager = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, name="fqdn-server",
                         daemon=True).start()
        self._expiry.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def learn_message(self, message: dict) -> None:
        """One answer from the proxy; ValueError when it is not a valid one (then
        nothing changes)."""
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        name, ips, ttl = message["name"], message["ips"], message["ttl"]
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise ValueError("name must be a DNS name")
        if not isinstance(ips, list) or len(ips) > MAX_IPS:
            raise ValueError(f"ips must be a list of at most {MAX_IPS} addresses")
        addresses = [str(ipaddress.ip_address(ip)) for ip in ips]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ValueError("ttl must be a non-negative integer")
        self.learn(name, addresses, ttl)

    def learn(self, name: str, ips: list[str], ttl: int) -> None:
        """Raises if the policy could not follow: the proxy then drops the answer (its
        client asks again), and the expiry thread retries the change."""
        with self.lock:
            now = time.monotonic()
            self.learnt += 1
            if self.cache.learn(name, ips, ttl, now) or self._unapplied:
                self._apply(now)
                log.info("learnt %s -> %s (ttl %ss)", name, ", ".join(ips),
                         max(ttl, self.cache.min_ttl))
        self._wake.set()

    def _apply(self, now: float) -> None:
        """The cache's valid addresses to the policy, then to disk; with ``lock`` held."""
        self._unapplied = True
        self.apply(self.cache.addresses(now))
        self._unapplied = False
        self._save(now)

    def _save(self, now: float) -> None:
        tmp = self.saved_path + ".tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump({"version": 1, "names": self.cache.export(now, time.time())}, f)
            os.replace(tmp, self.saved_path)
        except OSError as exc:  # the cache still works; only a restart would forget
            log.warning("could not keep the DNS cache in %s: %s", self.saved_path, exc)

    def _restore(self) -> None:
        try:
            with open(self.saved_path) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the saved DNS cache %s: %s", self.saved_path, exc)
            return
        with self.lock:
            now = time.monotonic()
            names = saved.get("names") if isinstance(saved, dict) else None
            restored = self.cache.restore(names, now, time.time())
            if restored:
                log.info("restored %d address(es) learnt from DNS before the restart",
                         restored)
                try:
                    self._apply(now)
                except Exception:  # the expiry thread retries
                    log.exception("applying the restored DNS addresses failed")

    def _expire_loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                following = self.cache.next_expiry()
            delay = 1.0 if following is None else max(0.0, following - time.monotonic())
            self._wake.wait(min(delay, 1.0))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self.lock:
                now = time.monotonic()
                if self.cache.expire(now) or self._unapplied:
                    try:
                        self._apply(now)
                    except Exception:  # keep expiring; retried in a second
                        log.exception("applying the DNS addresses to the policy failed")

    def view(self) -> list[dict]:
        """Every valid (name, address, seconds left), for status and the API."""
        with self.lock:
            return self.cache.dump(time.monotonic())

