"""Services in the kvstore: ``services/v1/<name>`` holds a service's definition as
JSON (``services.model.Service.to_json``), so every node programs the same set."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from operator import attrgetter

from services.model import Service
from state.kvstore.base import KVStore
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.services")
PREFIX = kv_key("services", "v1") + "/"
_FRONTEND_KEY = attrgetter("frontend.key")


class ServiceConflict(ValueError):
    """Another service already uses this frontend."""


def parse(value: str, name: str) -> Service | None:
    """A stored service; None (with a warning) when it does not parse (written by a
    newer agent, or by hand), so that it never stops the others."""
    try:
        return Service.from_json(json.loads(value))
    except (ValueError, TypeError) as exc:
        log.warning("service %s in the kvstore is invalid, skipped: %s", name, exc)
        return None


def load_all(kv: KVStore) -> dict[str, Service]:
    """Every stored service that parses."""
    result = {}
    for pair in kv.list(PREFIX):
        service = parse(pair.value, pair.key[len(PREFIX):])
        if service is not None:
            result[service.name] = service
    return result


def put(kv: KVStore, service: Service, existing: dict[str, Service] | None = None,
        claimants: Callable[[Service], set[str]] | None = None) -> bool:
    """Stores ``service``; True if it is new. Refuses a frontend another service has:
    ``claimants(service)`` names the services using its frontend (the agent's index,
    O(1)); without it, ``existing`` (the caller's view of the stored services, read from
    the kvstore when not given, which costs a parse of every service) is searched."""
    existing = load_all(kv) if existing is None else existing
    if claimants is not None:
        other = min((name for name in claimants(service) if name != service.name),
                    default=None)
    else:
        # one pass in C over every service's frontend key (a Python loop calling each
        # Frontend's __eq__ cost ~2 ms at 10,000 services, more under the agent's threads)
        key = service.frontend.key
        same = existing.get(service.name)
        other = None
        if list(map(_FRONTEND_KEY, existing.values())).count(key) > (
                same is not None and same.frontend.key == key):
            other = next((o.name for o in existing.values()
                          if o.name != service.name and o.frontend == service.frontend), None)
    if other is not None:
        raise ServiceConflict(f"frontend {service.frontend} is already service "
                              f"{other!r}'s: delete it or choose another")
    kv.put(PREFIX + service.name, json.dumps(service.to_json(), sort_keys=True))
    return service.name not in existing


def delete(kv: KVStore, name: str) -> bool:
    return kv.delete(PREFIX + name)
