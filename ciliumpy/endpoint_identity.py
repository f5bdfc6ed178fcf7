"""Gives each endpoint the identity of its container's labels.

Endpoints start as ``reserved:init`` (Docker's CreateEndpoint/Join carry no labels).
When the Docker watcher reports the container, its identity-relevant labels are
computed and the cluster identity allocated; a label change (container re-created)
moves the endpoint to the new identity and drops this node's reference to the old one
when no local endpoint uses it any more. If the kvstore is unreachable the endpoint
keeps the identity it has (never a wrong one), records the error, and the allocation
is retried every ``retry_interval`` seconds until it succeeds.
"""

from __future__ import annotations

import logging
import threading

from ciliumpy.docker_watcher import ContainerInfo
from ciliumpy.identities import IdentityAllocator, IdentityError
from driver.model import Endpoint, Store
from policies.identities import INIT, MIN_CLUSTER_ID
from policies.labels import LabelFilter, identity_labels
from state.kvstore.base import KVError, LeaseKeeper

log = logging.getLogger("ciliumpy.identity")


class EndpointIdentities:
    def __init__(self, store: Store, allocator: IdentityAllocator, lease: LeaseKeeper,
                 label_filter: LabelFilter, extra_labels: list[str],
                 retry_interval: float = 1.0, cluster: str = "") -> None:
        self.store, self.allocator, self.lease = store, allocator, lease
        self.cluster = cluster  # Cluster Mesh: the name every identity is labelled with
        self.label_filter, self.extra_labels = label_filter, extra_labels
        self.retry_interval = retry_interval
        self.manual: set[int] = set()  # identities held through the API
        self.on_identity_changed = lambda endpoint: None  # the datapath re-programs it
        self._lock = threading.RLock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._retry_loop, name="identity-retry", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def in_use(self) -> set[int]:
        local = {e.identity for e in self.store.endpoints() if e.identity >= MIN_CLUSTER_ID}
        return local | self.manual

    def container_seen(self, info: ContainerInfo) -> None:
        for endpoint_id, network_id in info.endpoints.items():
            with self._lock:
                endpoint = self.store.endpoint(endpoint_id)
                if endpoint is None:
                    continue
                labels = identity_labels(info.labels, info.image_labels,
                                         info.network_labels.get(network_id),
                                         self.extra_labels, self.label_filter,
                                         cluster=self.cluster)
                if (endpoint.container_id, endpoint.container_name) != (info.id, info.name):
                    endpoint = self.store.update_endpoint(
                        endpoint_id, lambda e, i=info: _named(e, i.id, i.name))
                if endpoint is None or (endpoint.labels == labels and endpoint.identity != INIT
                                        and not endpoint.identity_error):
                    continue
                endpoint = self.store.update_endpoint(
                    endpoint_id, lambda e, labels=labels: setattr(e, "labels", labels))
                if endpoint is not None:
                    self._assign(endpoint)

    def _assign(self, endpoint: Endpoint) -> None:
        old = endpoint.identity
        try:
            identity = self.allocator.allocate(list(endpoint.labels or []),
                                               self.lease.current())
        except (KVError, IdentityError) as exc:
            reason = str(exc)
            self.store.update_endpoint(endpoint.endpoint_id,
                                       lambda e: setattr(e, "identity_error", reason))
            log.warning("endpoint %s keeps identity %d: %s", endpoint.endpoint_id[:12], old, exc)
            return
        updated = self.store.update_endpoint(
            endpoint.endpoint_id, lambda e: _identified(e, identity.number))
        if updated is None:  # deleted meanwhile: the reference goes back
            self._release_if_unused(identity.number)
            return
        endpoint = updated
        if old != identity.number:
            self.on_identity_changed(endpoint)
        log.info("endpoint %s has identity %d %s", endpoint.endpoint_id[:12], identity.number,
                 list(identity.labels))
        if old != identity.number:
            self._release_if_unused(old)

    def endpoint_removed(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._release_if_unused(endpoint.identity)

    def _release_if_unused(self, number: int) -> None:
        if number < MIN_CLUSTER_ID or number in self.in_use():
            return
        try:
            self.allocator.release(number)
        except KVError as exc:  # the reference goes with our lease anyway
            log.warning("could not release identity %d: %s", number, exc)

    def allocate_manual(self, labels: list[str]) -> int:
        identity = self.allocator.allocate(labels, self.lease.current())
        self.manual.add(identity.number)
        return identity.number

    def new_lease(self, lease: str) -> None:
        """The lease was re-granted (store restarted, outage longer than the TTL)."""
        try:
            self.allocator.refresh(self.in_use(), lease)
        except KVError as exc:
            log.warning("could not refresh identity references: %s", exc)

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_interval):
            for endpoint in self.store.endpoints():
                if endpoint.labels is not None and (endpoint.identity_error
                                                    or endpoint.identity == INIT):
                    with self._lock:
                        current = self.store.endpoint(endpoint.endpoint_id)
                        if current is not None and current.labels is not None:
                            self._assign(current)


def _named(endpoint: Endpoint, container_id: str, container_name: str) -> None:
    endpoint.container_id, endpoint.container_name = container_id, container_name


def _identified(endpoint: Endpoint, number: int) -> None:
    endpoint.identity, endpoint.identity_error = number, None
