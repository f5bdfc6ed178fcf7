"""What every agent API blueprint shares: the agent serving the request, the one
error shape (``{"Err": message}`` with a non-2xx status, as the plugin calls answer),
and the reading of a JSON object body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, jsonify, request

from state.wire import json_object as wire_json_object

if TYPE_CHECKING:
    from ciliumpy.daemon import Agent


class APIInputError(ValueError):
    """A request an API route refuses with a 400 ``{"Err": message}`` (the app's error
    handler answers it, so handlers can raise it from helpers)."""


def the_agent() -> Agent:
    return current_app.extensions["ciliumpy"]


def api_error(message: str, status: int = 400):
    return jsonify({"Err": message}), status


def json_object() -> dict[str, Any]:
    """The request's body as a JSON object, or APIInputError.

    ``get_json(silent=True) or {}`` used to turn a malformed body into ``{}`` (which
    then ran as a request with every default) and let arrays, scalars and deep nesting
    (a RecursionError, not a ValueError) through to the handlers as 500s."""
    try:
        return wire_json_object(request.get_data(cache=True),
                                "this call needs a JSON object body")
    except ValueError as exc:
        raise APIInputError(str(exc)) from None


def optional_text(body: dict[str, Any], name: str) -> str:
    """A string field, "" when absent or null; another type is refused, not str()'d
    (str() of an object or list used to yield text that parsed as something else)."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise APIInputError(f"field {name!r} must be a string")
    try:
        value.encode("utf-8")  # a lone surrogate ("\ud800") cannot be stored or shown
    except UnicodeEncodeError:
        raise APIInputError(f"field {name!r} is not valid Unicode text") from None
    return value
