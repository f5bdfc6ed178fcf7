"""Docker plugin wire format (libnetwork v1 remote driver and IPAM protocol).

Facts from docs/docker-protocol.md (Transport, Errors): Docker 20.10 POSTs JSON
without a Content-Type, sends empty bodies for capability calls, encodes empty maps as
``null``, treats only HTTP 200 with a JSON object as success, and shows ``Err`` of a
non-2xx answer to the user as ``<Method>: <Err>``. A call whose connection died is
retried with an empty body, so payload methods must refuse empty bodies instead of
applying defaults.
"""

from __future__ import annotations

import ipaddress
import json
import re
import reprlib
from typing import Any

from flask import Response, request

PLUGIN_CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class PluginError(Exception):
    """A request Docker should fail with ``{"Err": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def reply(body: dict[str, Any] | None = None, status: int = 200) -> Response:
    """A JSON object response (never an empty body: Docker cannot decode one)."""
    return Response(json.dumps(body or {}), status=status, mimetype=PLUGIN_CONTENT_TYPE)


def error_reply(message: str, status: int) -> Response:
    return reply({"Err": message}, status)


def json_object(raw: bytes, empty: str) -> dict[str, Any]:
    """A request body's JSON object, for the plugin and the agent API alike; ValueError
    with the sentence to answer (``empty`` for an empty body) otherwise."""
    if not raw.strip():
        raise ValueError(empty)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed JSON body: {exc}") from None
    except RecursionError:
        # json's decoder recurses per nesting level: 100000 "[" is a RecursionError,
        # not a ValueError, and used to escape as a 500
        raise ValueError("malformed JSON body: nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    return data


def payload() -> dict[str, Any]:
    """The request's JSON object; empty, malformed or non-object bodies are a 400."""
    try:
        return json_object(request.get_data(cache=True),
                           "empty request body: this call needs a JSON payload (Docker "
                           "resends a call whose connection dropped with an empty body; "
                           "retry the operation)")
    except ValueError as exc:
        raise PluginError(str(exc)) from None


def text(data: dict[str, Any], name: str, required: bool = True) -> str:
    """A string field; ``null`` counts as missing."""
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise PluginError(f"missing field {name!r}")
        return ""
    if not isinstance(value, str):
        raise PluginError(f"field {name!r} must be a string")
    try:
        # JSON may escape a lone surrogate ("\ud800"); no UTF-8 store (SQLite) can bind
        # it, which used to be a 500. Docker's Go encoder never sends one.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PluginError(f"field {name!r} is not valid Unicode text") from None
    return value


# Docker's ids are 64 hex characters (stringid.GenerateRandomID); letters and digits
# are all that may reach an interface name (endpoint ids name the veths) or a log line.
DOCKER_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def docker_id(data: dict[str, Any], name: str) -> str:
    """A required Docker object id (NetworkID, EndpointID)."""
    value = text(data, name)
    if not DOCKER_ID.fullmatch(value):
        # reprlib: a 1 MB or escape-laden value is never echoed back whole in Err
        raise PluginError(f"field {name!r} is not a Docker id (1 to 64 letters and digits): "
                          f"{reprlib.repr(value)}")
    return value


def boolean(data: dict[str, Any], name: str) -> bool:
    """A boolean field; ``null`` or absent is false. Strings such as "false" are refused
    rather than read as true."""
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PluginError(f"field {name!r} must be true or false")
    return value


def mapping(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A map field; Docker sends ``null`` for an empty map."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PluginError(f"field {name!r} must be an object or null")
    return value


def ip_field(value: Any, name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A plain IP or the address part of a CIDR string."""
    try:
        return ipaddress.ip_interface(str(value)).ip
    except ValueError:
        raise PluginError(f"field {name!r}: {reprlib.repr(value)} is not an IP address") from None
