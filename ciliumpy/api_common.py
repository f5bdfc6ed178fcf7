"""What every agent API blueprint shares: the agent serving the request, and the one
error shape (``{"Err": message}`` with a non-2xx status, as the plugin calls answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, jsonify

if TYPE_CHECKING:
    from ciliumpy.daemon import Agent


def the_agent() -> Agent:
    return current_app.extensions["ciliumpy"]


def api_error(message: str, status: int = 400):
    return jsonify({"Err": message}), status
