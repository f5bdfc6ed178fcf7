"""Indexes that make a change cost O(what it touches) rather than O(every service):
which services an endpoint can be a backend of (``SelectorIndex``), and which endpoints
can be a service's backends (``EndpointIndex``).

A selector matches an endpoint only if the endpoint has every one of its pairs, so a
service is filed under one pair of its selector (the smallest: deterministic) and an
endpoint need only look under its own pairs; joining by the ``ciliumpy.service`` label
files an endpoint under the names it joins. Both give candidates, never a verdict:
``resolve_backends`` still decides, so the indexes cannot change what is selected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.model import MEMBERSHIP_LABEL, Service, parse_membership

Pair = tuple[str, str]
# what resolution reads of an endpoint: its labels and its addresses (equal
# fingerprints resolve to the same backends, so one copy of each is enough)
Fingerprint = tuple[frozenset, tuple[str, ...]]


def _labels(endpoint: Any) -> dict[str, str]:
    if isinstance(endpoint, dict):
        return endpoint.get("labels") or {}
    return endpoint.labels


def _addresses(endpoint: Any) -> list[str]:
    if isinstance(endpoint, dict):
        return endpoint.get("addresses") or []
    return endpoint.addresses


def joined_names(labels: dict[str, str]) -> set[str]:
    """The services an endpoint joins by label (none for a bad label: it joins nothing,
    as in ``resolve_backends``)."""
    value = labels.get(MEMBERSHIP_LABEL)
    if value is None:
        return set()
    try:
        return {name for name, _ in parse_membership(value)}
    except ValueError:
        return set()


def selector_key(service: Service) -> Pair | None:
    """The pair a service is filed under; None: its selector is empty (matches nothing)."""
    return min(service.selector.items()) if service.selector else None


def fingerprint(endpoint: Any) -> Fingerprint:
    return (frozenset(_labels(endpoint).items()), tuple(sorted(map(str, _addresses(endpoint)))))


class SelectorIndex:
    """Services by the pair they are filed under, for ``affected``."""

    def __init__(self) -> None:
        self._by_pair: dict[Pair, set[str]] = {}
        self._services: dict[str, Service] = {}

    def __len__(self) -> int:
        return len(self._services)

    def add(self, service: Service) -> None:
        self.remove(service.name)  # a changed selector files it elsewhere
        self._services[service.name] = service
        pair = selector_key(service)
        if pair is not None:
            self._by_pair.setdefault(pair, set()).add(service.name)

    def remove(self, name: str) -> None:
        service = self._services.pop(name, None)
        pair = selector_key(service) if service is not None else None
        if pair is not None:
            names = self._by_pair[pair]
            names.discard(name)
            if not names:
                del self._by_pair[pair]

    def affected(self, endpoints: Iterable[Any]) -> set[str]:
        """The services whose backends these endpoints (appearing or disappearing)
        can change: selectors they match, names they join. O(their labels), not
        O(services)."""
        names: set[str] = set()
        for endpoint in endpoints:
            labels = _labels(endpoint)
            for pair in labels.items():
                for name in self._by_pair.get(pair, ()):
                    selector = self._services[name].selector
                    if all(labels.get(k) == v for k, v in selector.items()):
                        names.add(name)
            names.update(n for n in joined_names(labels) if n in self._services)
        return names


class EndpointIndex:
    """The cluster's endpoints by fingerprint, filed under their label pairs and the
    names they join; ``update`` says which ones appeared or disappeared."""

    def __init__(self) -> None:
        self._endpoints: dict[Fingerprint, Any] = {}
        self._by_pair: dict[Pair, set[Fingerprint]] = {}
        self._by_name: dict[str, set[Fingerprint]] = {}

    def __len__(self) -> int:
        return len(self._endpoints)

    def update(self, endpoints: Iterable[Any]) -> list[Any]:
        """Replaces the set with ``endpoints``; returns those that appeared and those
        that disappeared (a changed endpoint is both: its old and new labels)."""
        current = {fingerprint(e): e for e in endpoints}
        gone = [fp for fp in self._endpoints if fp not in current]
        new = [fp for fp in current if fp not in self._endpoints]
        changed = [self._endpoints[fp] for fp in gone] + [current[fp] for fp in new]
        for fp in gone:
            self._file(fp, self._endpoints.pop(fp), remove=True)
        for fp in new:
            self._endpoints[fp] = current[fp]
            self._file(fp, current[fp], remove=False)
        return changed

    def _file(self, fp: Fingerprint, endpoint: Any, remove: bool) -> None:
        labels = _labels(endpoint)
        keys = [(self._by_pair, pair) for pair in labels.items()] + [
            (self._by_name, name) for name in joined_names(labels)]
        for index, key in keys:
            if remove:
                group = index.get(key)
                if group is not None:
                    group.discard(fp)
                    if not group:
                        del index[key]
            else:
                index.setdefault(key, set()).add(fp)

    def candidates(self, service: Service) -> list[Any]:
        """The endpoints that can be ``service``'s backends: those with the pair its
        selector is filed under, and those joining it by name. O(those endpoints)."""
        pair = selector_key(service)
        found = set(self._by_pair.get(pair, ())) if pair is not None else set()
        found |= self._by_name.get(service.name, set())
        return [self._endpoints[fp] for fp in found]
