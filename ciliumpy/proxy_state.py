"""What the L7 proxy needs to judge a request, written for it as one JSON file.

Built from the endpoint owner's views: for every local endpoint, direction and TCP port
(UDP too for DNS) that an L7 rule covers, the entries that apply to that port (an L7
rule's requests, or "all requests" for peers allowed there at L3/L4 only, since allows
are a union), plus the address -> identity map (the ipcache's host entries), identity
labels and container names for events. Written atomically (rename) by a background thread a few
milliseconds after a change (the endpoint owner's writes, the cluster's ipcache), and
rebuilt every half minute as a safety net; the proxy re-reads it within 100 ms. The
format is ``proxy/state.py``'s."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from policies.identities import RESERVED
from policies.resolve import Entry

log = logging.getLogger("ciliumpy.proxy")
TCP = 6
UDP = 17
MAX_PORTS_PER_RULE = 1024  # an L7 rule over a wider port range is judged on its first ports


def l7_entries(addresses: list[str], entries: Iterable[Entry],
               kinds: Iterable[str]) -> list[dict]:
    """The proxy's entries for one endpoint (its ``addresses``) from its view's entries;
    ``kinds``: the L7 kinds redirected to the proxy."""
    kinds = set(kinds)
    allows = [e for e in entries if not e.deny]
    l7 = [e for e in allows if e.l7 and e.l7_kind in kinds
          and e.proto in ((0, TCP, UDP) if e.l7_kind == "dns" else (0, TCP))]
    found: dict[tuple, dict] = {}
    for rule in l7:
        last = min(rule.end_port or rule.port, rule.port + MAX_PORTS_PER_RULE - 1)
        # DNS goes over UDP and TCP; the proxy's entries are per port, not protocol
        protocols = (rule.proto,) if rule.proto else (TCP, UDP)
        for port in range(rule.port, last + 1):
            for entry in allows:
                if entry.direction != rule.direction or not any(
                        entry.covers(proto, port) for proto in protocols):
                    continue
                # a peer allowed at L3/L4 only: every request of the port's protocol
                kind = entry.l7_kind if entry.l7 else rule.l7_kind
                rules = json.loads(entry.l7)["rules"] if entry.l7 else None
                remotes = None if entry.identity == 0 else [entry.identity]
                for address in addresses:
                    key = (rule.direction, address, port, entry.identity, entry.l7)
                    found[key] = {"endpoint": address, "direction": rule.direction,
                                  "port": port, "parser": kind, "remotes": remotes,
                                  kind: rules}
    return [found[key] for key in sorted(found, key=str)]


class ProxyStateWriter:
    """Rebuilds the state with ``build`` and writes it to ``path`` when it changed."""

    def __init__(self, path: str, build: Callable[[], dict], interval: float = 30.0) -> None:
        self.path, self.build, self.interval = path, build, interval
        self.revision = 0
        self._last = ""
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy-state", daemon=True)

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.write_now()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def kick(self) -> None:
        self._kick.set()

    def write_now(self) -> bool:
        """Builds and writes at once if anything changed; True if it wrote."""
        try:
            state = self.build()
        except Exception:  # keep the last state in force; try again next round
            log.exception("building the proxy state failed")
            return False
        text = json.dumps(state, sort_keys=True)
        if text == self._last:
            return False
        self.revision += 1
        state["revision"] = self.revision
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle, sort_keys=True)
        os.replace(tmp, self.path)
        self._last = text
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            self._stop.wait(0.01)  # coalesce a burst of changes
            started = time.monotonic()
            self.write_now()
            # a large cluster makes a build O(its endpoints): at most half the time
            # building, however often the cluster changes
            self._stop.wait(min(time.monotonic() - started, 1.0))


def identities_from_ipcache(rows: Iterable[dict]) -> dict[str, int]:
    """Host entries (/32, /128) of the ipcache: local and remote endpoints, our host."""
    found = {}
    for row in rows:
        network = ipaddress.ip_network(row["prefix"], strict=False)
        if network.prefixlen == network.max_prefixlen:
            found[str(network.network_address)] = row["identity"]
    return found


def labels_by_identity(identities: dict[int, list[str]]) -> dict[str, list[str]]:
    labels = {str(n): [f"reserved:{name}"] for n, name in RESERVED.items()}
    labels.update({str(n): list(v) for n, v in identities.items()})
    return labels
