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


def load_all(kv: KVStore) -> dict[str, Service]:
    """Every stored service; one that does not parse (written by a newer agent, or by
    hand) is skipped with a warning rather than stopping the others."""
    result = {}
    for pair in kv.list(PREFIX):
        try:
            service = Service.from_json(json.loads(pair.value))
        except (ValueError, TypeError) as exc:
            log.warning("service %s in the kvstore is invalid, skipped: %s",
                        pair.key[len(PREFIX):], exc)
            continue
        result[service.name] = service
    return result


def put(kv: KVStore, service: Service) -> bool:
    """Stores ``service``; True if it is new. Refuses a frontend another service has."""
    existing = load_all(kv)
    for other in existing.values():
        if other.name != service.name and other.frontend == service.frontend:
            raise ServiceConflict(f"frontend {service.frontend} is already service "
                                  f"{other.name!r}'s: delete it or choose another")
    kv.put(PREFIX + service.name, json.dumps(service.to_json(), sort_keys=True))
    return service.name not in existing


def delete(kv: KVStore, name: str) -> bool:
    return kv.delete(PREFIX + name)
