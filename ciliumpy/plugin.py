"""The plugin handshake and the rule that keeps each socket to its own API.

The same Flask app serves two sockets: Docker's plugin socket answers only the
``Plugin.*``/``NetworkDriver.*``/``IpamDriver.*`` calls, the root-only agent socket only
``/v1/...``. Gunicorn tells which socket a request came in on.
"""

from __future__ import annotations

from flask import Blueprint, request

from state.wire import reply

bp = Blueprint("plugin", __name__)

PLUGIN_PATH_PREFIXES = ("/Plugin.", "/NetworkDriver.", "/IpamDriver.")


@bp.post("/Plugin.Activate")
def activate():
    return reply({"Implements": ["NetworkDriver", "IpamDriver"]})


def listening_path() -> str | None:
    """The path of the unix socket this request arrived on (None outside gunicorn)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None
    try:
        name = sock.getsockname()
    except OSError:
        return None
    return name if isinstance(name, str) else None


def allowed_on(path: str, socket_path: str | None, plugin_socket: str) -> bool:
    if socket_path is None:
        return True
    is_plugin_call = path.startswith(PLUGIN_PATH_PREFIXES)
    return is_plugin_call == (socket_path == plugin_socket)
