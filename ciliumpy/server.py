"""Serving: the two unix sockets and the gunicorn master with one threaded worker.

The agent binds its sockets itself (so it controls their modes and can tell a stale
socket from a live agent) and hands them to gunicorn as ``fd://N``. Under systemd
socket activation (``LISTEN_FDS``/``LISTEN_PID``) the plugin socket is the one systemd
passed; it is never unlinked, so dockerd keeps finding the plugin across restarts.
One worker process holds all state (maps, watchers); threads give concurrency.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import stat
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ciliumpy.config import Config

log = logging.getLogger("ciliumpy.server")
SD_LISTEN_FDS_START = 3
PR_SET_PDEATHSIG = 1


class ServeError(RuntimeError):
    """The agent cannot serve (socket busy, directory missing); one-line reason."""


def systemd_fds(environ=os.environ) -> list[int]:
    """File descriptors passed by systemd socket activation, consuming the variables."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def socket_in_use(path: str) -> bool:
    """True when a process accepts connections on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_unix(path: str, mode: int) -> socket.socket:
    """Binds a listening unix socket at ``path``, replacing a stale socket file but
    refusing to steal one a live process still answers on."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ServeError(f"{path} exists and is not a socket")
        if socket_in_use(path):
            raise ServeError(f"another process is already serving {path}; stop it first")
        os.unlink(path)  # stale: nobody listens
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """The worker exits when the master dies (kill -9), freeing the state file."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class AgentApplication(BaseApplication):
    def __init__(self, config: Config, fds: list[int]) -> None:
        self.agent_config = config
        self.fds = fds
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": [f"fd://{fd}" for fd in self.fds],
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.agent_config.threads,
            "timeout": 120,
            "graceful_timeout": 10,
            "loglevel": self.agent_config.log_level,
            "proc_name": "ciliumpy-agent",
            "post_fork": lambda server, worker: _die_with_parent(),
        }
        if "control_socket_disable" in self.cfg.settings:
            settings["control_socket_disable"] = True  # gunicorn >= 24 opens one in $HOME
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self):
        from ciliumpy.app import create_app

        return create_app(self.agent_config)

    def run(self) -> None:
        arbiter = Arbiter(self)
        arbiter.systemd = True  # sockets are ours or systemd's: gunicorn must not unlink them
        arbiter.run()


def _check_overlay(config: Config) -> None:
    """A tunnel mode this kernel cannot do stops the agent here, in one sentence."""
    from datapath import overlay
    from datapath.links import Links

    if overlay.is_tunnel(config.datapath_mode):
        links = Links()
        try:
            overlay.ensure_device(config.datapath_mode, links, None)
        except overlay.OverlayError as exc:
            raise ServeError(str(exc)) from None
        finally:
            links.close()


def serve(config: Config) -> None:
    """Binds (or inherits) the sockets and runs gunicorn until a signal stops it."""
    inherited = systemd_fds()
    owned: list[str] = []
    if inherited:
        plugin_fd = inherited[0]
        probe = socket.socket(fileno=os.dup(plugin_fd))
        name = probe.getsockname()
        probe.close()
        if isinstance(name, str) and name:
            config.plugin_socket = name
        log.info("socket activation: plugin socket %s from systemd (fd %d)",
                 config.plugin_socket, plugin_fd)
        os.set_inheritable(plugin_fd, True)
    else:
        plugin_sock = bind_unix(config.plugin_socket, 0o660)
        plugin_fd = plugin_sock.detach()
        owned.append(config.plugin_socket)
    from datapath import loader

    try:  # compile (or reuse pins) here, so a failure is one clear line before serving
        loader.startup_load(config.bpf_pin_dir)
    except loader.CompileError as exc:
        raise ServeError(str(exc)) from None
    _check_overlay(config)
    api_sock = bind_unix(config.api_socket, 0o600)
    api_fd = api_sock.detach()
    owned.append(config.api_socket)
    log.info("serving plugin on %s and agent API on %s", config.plugin_socket, config.api_socket)
    try:
        AgentApplication(config, [plugin_fd, api_fd]).run()
    finally:
        for path in owned:
            try:
                os.unlink(path)
            except OSError:
                pass
    sys.exit(0)
