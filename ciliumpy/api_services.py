"""Agent API for services (``ciliumpy service``): definitions are stored in the kvstore
(every node programs them); answers add this node's view (backends resolved, Maglev
slots per backend, state)."""

from __future__ import annotations

import reprlib

from flask import Blueprint, jsonify

from ciliumpy import service_store
from ciliumpy.api_common import APIInputError, api_error, json_object, the_agent
from services.model import Service
from state.kvstore import KVError

bp = Blueprint("services", __name__)


def _manager():
    agent = the_agent()
    if agent.services is None:
        raise APIInputError("services are not running yet (the agent is starting)")
    return agent.services


@bp.get("/v1/services")
def list_services():
    return jsonify(_manager().list())


@bp.get("/v1/ports")
def published_ports():
    """This node's published ports (docker run -p): node-local, not in the kvstore."""
    ports = the_agent().ports
    return jsonify(ports.list() if ports is not None else [])


@bp.get("/v1/services/<name>")
def get_service(name: str):
    manager = _manager()
    service = manager.services.get(name)
    if service is None:
        return api_error(f"no service {reprlib.repr(name)}", 404)
    return jsonify(manager.describe(service))


@bp.put("/v1/services/<name>")
def put_service(name: str):
    body = json_object()
    if body.setdefault("name", name) != name:
        raise APIInputError(f"the body names service {reprlib.repr(body['name'])}, the path "
                            f"{reprlib.repr(name)}")
    try:
        service = Service.from_json(body)
    except (ValueError, TypeError) as exc:
        raise APIInputError(str(exc)) from None
    manager = _manager()
    try:
        created = service_store.put(manager.kv, service, manager.services,
                                    claimants=manager.claimants)
    except service_store.ServiceConflict as exc:
        return api_error(str(exc), 409)
    except KVError as exc:
        return api_error(f"the kvstore is unavailable, nothing was stored: {exc}", 503)
    manager.stored(service)
    return jsonify(manager.describe(service)), 201 if created else 200


@bp.delete("/v1/services/<name>")
def delete_service(name: str):
    manager = _manager()
    try:
        deleted = service_store.delete(manager.kv, name)
    except KVError as exc:
        return api_error(f"the kvstore is unavailable, nothing was deleted: {exc}", 503)
    if not deleted:
        return api_error(f"no service {reprlib.repr(name)}", 404)
    manager.removed(name)
    return jsonify({"deleted": name})
