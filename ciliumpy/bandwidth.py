"""Per-endpoint bandwidth limits: which limit an endpoint has and making it so.

A limit comes from the container's labels (Cilium's ``kubernetes.io/egress-bandwidth``
and ``kubernetes.io/ingress-bandwidth``, or ``ciliumpy.egress-bandwidth`` /
``ciliumpy.ingress-bandwidth``), as changed at runtime through the API (Docker cannot
change a running container's labels), else from its network's option of the same name.
Egress is shaped on the container's own interface (inside its namespace) with the
datapath's backstop on the host veth; ingress on the host veth. Called from the Docker
watcher's thread and the API, never from a plugin handler.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from datapath.datapath import Datapath
from datapath.rates import BANDWIDTH_KEYS, EGRESS_KEYS, INGRESS_KEYS, RateError, parse_rate
from datapath.shaper import Shaper, ShaperError, fq_available, peer_ifindex
from driver.model import Endpoint, Store

log = logging.getLogger("ciliumpy.bandwidth")
MODE = "htb-flowqueue"


class LabelError(ValueError):
    """A runtime label change the agent refuses; nothing was changed."""


def effective_labels(endpoint: Endpoint) -> dict[str, str]:
    labels = dict(endpoint.bandwidth_labels)
    for key, value in endpoint.label_overrides.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    return labels


def limits_of(labels: dict[str, str], network_options: dict[str, str]
              ) -> tuple[int, int, list[str]]:
    """(egress bit/s, ingress bit/s, errors): 0 is no limit. A label that does not parse
    is reported and the network's default applies instead."""
    errors: list[str] = []
    result = {}
    for direction, keys in (("egress", EGRESS_KEYS), ("ingress", INGRESS_KEYS)):
        result[direction] = 0
        for values in (labels, network_options):
            key = next((k for k in keys if k in values), None)
            if key is None:
                continue
            try:
                result[direction] = parse_rate(values[key])
                break
            except RateError as exc:
                errors.append(f"{key}: {exc}")
    return result["egress"], result["ingress"], errors


class BandwidthManager:
    def __init__(self, store: Store, datapath: Datapath) -> None:
        self.store, self.datapath = store, datapath
        self.fq, self.kernel_note = fq_available()
        self.shaper: Shaper | None = None
        self._netns: dict[str, str] = {}  # endpoint id -> its container's namespace path
        self._lock = threading.RLock()

    def start(self) -> None:
        self.shaper = Shaper(self.datapath.loaded.programs["flow_classify"])
        log.info("bandwidth manager: %s (%s; EDT needs fq, see docs/decisions.md)",
                 MODE, self.kernel_note)

    def view(self) -> dict[str, Any]:
        return {"mode": MODE, "kernel": self.kernel_note,
                "limited_endpoints": sum(1 for e in self.store.endpoints()
                                         if e.bandwidth.get("egress_bps")
                                         or e.bandwidth.get("ingress_bps"))}

    # ---- inputs ---------------------------------------------------------------
    def container_seen(self, info) -> None:
        """The Docker watcher's report of a started container (``ContainerInfo``)."""
        labels = {k: str(v) for k, v in info.labels.items() if k in BANDWIDTH_KEYS}
        for endpoint_id in info.endpoints:
            with self._lock:
                endpoint = self.store.endpoint(endpoint_id)
                if endpoint is None:
                    continue
                if info.pid:
                    self._netns[endpoint_id] = f"/proc/{info.pid}/ns/net"
                if endpoint.bandwidth_labels != labels:
                    endpoint = self.store.update_endpoint(
                        endpoint_id, lambda e, labels=labels: setattr(e, "bandwidth_labels",
                                                                      labels))
                if endpoint is not None:
                    self.sync(endpoint)

    def change_labels(self, endpoint: Endpoint, add: dict[str, str],
                      delete: list[str]) -> Endpoint:
        """``ciliumpy endpoint labels``: validated as a whole before anything changes."""
        for key in [*add, *delete]:
            if key not in BANDWIDTH_KEYS:
                raise LabelError(
                    f"label {key!r} cannot change on a running container: only the "
                    f"bandwidth labels can ({', '.join(BANDWIDTH_KEYS)}); the others make "
                    "its identity, re-create the container to change them")
        for key, value in add.items():
            try:
                parse_rate(value)
            except RateError as exc:
                raise LabelError(f"{key}: {exc}") from None
        def override(current: Endpoint) -> None:
            current.label_overrides.update({k: str(v) for k, v in add.items()})
            current.label_overrides.update(dict.fromkeys(delete))

        with self._lock:
            current = self.store.update_endpoint(endpoint.endpoint_id, override)
            if current is None:
                raise LabelError(f"endpoint {endpoint.endpoint_id[:12]} is gone")
            self.sync(current)
            return current

    def endpoint_removed(self, endpoint: Endpoint) -> None:
        """Its veth and namespace (and so both qdiscs) are gone with it; the datapath
        drops its backstop entry with the endpoint's."""
        self._netns.pop(endpoint.endpoint_id, None)

    # ---- applying -------------------------------------------------------------
    def sync(self, endpoint: Endpoint) -> None:
        network = self.store.network(endpoint.network_id)
        egress, ingress, errors = limits_of(effective_labels(endpoint),
                                            network.options if network else {})
        if not endpoint.ifindex or self.shaper is None:
            return
        applied = {"egress_bps": egress, "ingress_bps": ingress}
        errors += self._shape_egress(endpoint, egress)
        errors += self._shape(endpoint.ifindex, ingress, None, "ingress")
        self.datapath.set_bandwidth(endpoint.ifindex, egress, bool(ingress))
        state = {**applied, "errors": errors} if egress or ingress or errors else {}
        if state != endpoint.bandwidth:
            log.info("endpoint %s: egress %s, ingress %s%s", endpoint.endpoint_id[:12],
                     egress or "unlimited", ingress or "unlimited",
                     f" ({'; '.join(errors)})" if errors else "")
            endpoint.bandwidth = state
            self.store.update_endpoint(endpoint.endpoint_id,
                                       lambda e: setattr(e, "bandwidth", state))

    def _shape_egress(self, endpoint: Endpoint, egress: int) -> list[str]:
        netns = self._netns.get(endpoint.endpoint_id)
        if netns is None:
            if egress:  # the backstop limits it until the container is seen
                return ["egress shaper waits for the container's namespace"]
            return []
        try:
            peer = peer_ifindex(endpoint.ifindex)
        except OSError as exc:
            return [f"egress: {exc}"]
        return self._shape(peer, egress, netns, "egress")

    def _shape(self, ifindex: int, rate: int, netns: str | None, direction: str) -> list[str]:
        try:
            if rate:
                self.shaper.apply(ifindex, rate, netns)
            else:
                self.shaper.clear(ifindex, netns)
        except ShaperError as exc:
            return [f"{direction}: {exc}"]
        return []

    # ---- observing ------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        """Per limited endpoint and direction: limit, sent, drops and delays (from the
        qdiscs), and the backstop's drops."""
        backstop = {row["ifindex"]: row["drops"] for row in self.datapath.bandwidth()}
        rows = []
        for endpoint in self.store.endpoints():
            for direction in ("egress", "ingress"):
                limit = endpoint.bandwidth.get(f"{direction}_bps")
                if not limit or self.shaper is None:
                    continue
                if direction == "egress":
                    netns = self._netns.get(endpoint.endpoint_id)
                    stats = self.shaper.stats(peer_ifindex(endpoint.ifindex), netns) \
                        if netns else None
                else:
                    stats = self.shaper.stats(endpoint.ifindex)
                rows.append({"endpoint_id": endpoint.endpoint_id, "direction": direction,
                             "limit_bps": limit, "shaped": bool(stats and stats.rate_bps),
                             "sent_bytes": stats.sent_bytes if stats else 0,
                             "drops": stats.drops if stats else 0,
                             "delayed": stats.overlimits if stats else 0,
                             "backstop_drops": backstop.get(endpoint.ifindex, 0)
                             if direction == "egress" else 0})
        return rows
