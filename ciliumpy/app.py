"""The Flask app factory: one app, plugin and agent blueprints, uniform errors."""

from __future__ import annotations

import logging
import reprlib
import time

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from ciliumpy import (
    api,
    api_bandwidth,
    api_datapath,
    api_flows,
    api_policy,
    api_services,
    plugin,
)
from ciliumpy.api_common import APIInputError, api_error
from ciliumpy.config import Config
from ciliumpy.daemon import Agent
from driver.api import blueprint as driver_blueprint
from ipam.api import blueprint as ipam_blueprint
from state.wire import PluginError, error_reply

log = logging.getLogger("ciliumpy.plugin")


def create_app(config: Config, agent: Agent | None = None, start: bool = True) -> Flask:
    """Builds the app; ``start`` launches the agent's background threads."""
    app = Flask("ciliumpy")
    # "/v1/policy//x" is a 404, not a 308 to http://<Host>/v1/policy/x: no client of a
    # unix socket can follow a redirect to an http URL
    app.url_map.merge_slashes = False
    agent = agent or Agent(config)
    app.extensions["ciliumpy"] = agent
    for blueprint in (plugin.bp, driver_blueprint(agent.driver, agent),
                      ipam_blueprint(agent.ipam, agent), api.bp, api_datapath.bp,
                      api_bandwidth.bp, api_flows.bp, api_policy.bp, api_services.bp):
        app.register_blueprint(blueprint)

    @app.before_request
    def check_socket_and_time():
        g.started = time.perf_counter()
        if not plugin.allowed_on(request.path, plugin.listening_path(), config.plugin_socket):
            # reprlib: the path is the client's, control characters and all
            return error_reply(f"{reprlib.repr(request.path)} is not served on this socket",
                               404)
        return None

    @app.after_request
    def log_call(response):
        if request.path.startswith(plugin.PLUGIN_PATH_PREFIXES):
            elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
            log.info("%s -> %d (%.1f ms)", request.path[1:], response.status_code, elapsed)
        return response

    @app.errorhandler(PluginError)
    def plugin_error(exc: PluginError):
        log.warning("%s refused: %s", request.path[1:], exc.message)
        return error_reply(exc.message, exc.status)

    @app.errorhandler(APIInputError)
    def api_input_error(exc: APIInputError):
        return api_error(str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_reply(f"{reprlib.repr(request.path)}: {exc.name}", exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("%s failed", request.path[1:])
        return error_reply(f"internal error: {exc}", 500)

    if start:
        agent.start()
    return app
