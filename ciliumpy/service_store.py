"""Services in the kvstore: ``services/v1/<name>`` holds a service's definition as
JSON (``services.model.Service.to_json``), so every node programs the same set."""

from __future__ import annotations

import json
import logging

from services.model import Service
from state.kvstore.base import KVStore
from state.kvstore.base import key as kv_key

log = logging.getLogger("ciliumpy.services")
PREFIX = kv_key("services", "v1") + "/"


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


def put(kv: KVStore, service: Service, existing: dict[str, Service] | None = None) -> bool:
    """Stores ``service``; True if it is new. Refuses a frontend another service has
    (among ``existing``: the caller's view of the stored services; read from the kvstore
    when not given, which costs a parse of every service)."""
    existing = load_all(kv) if existing is None else existing
    for other in existing.values():
        if other.name != service.name and other.frontend == service.frontend:
            raise ServiceConflict(f"frontend {service.frontend} is already service "
                                  f"{other.name!r}'s: delete it or choose another")
    kv.put(PREFIX + service.name, json.dumps(service.to_json(), sort_keys=True))
    return service.name not in existing


def delete(kv: KVStore, name: str) -> bool:
    return kv.delete(PREFIX + name)
