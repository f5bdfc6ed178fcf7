"""Serving: the two unix sockets and the gunicorn master with one threaded worker.

The agent binds its sockets itself (so it controls their modes and can tell a stale
socket from a live agent) and hands them to gunicorn as ``fd://N``. Under systemd
socket activation (``LISTEN_FDS``/``LISTEN_PID``) the plugin socket is the one systemd
passed; it is never unlinked, so dockerd keeps finding the plugin across restarts.
One worker process holds all state (maps, watchers); threads give concurrency.

Restarts (``kill $old; ciliumpy agent``) overlap: the old agent answers on its sockets
for ~2 s after SIGTERM while it drains. The new agent waits (``TAKEOVER_WAIT``) for
the old one to stop answering, then replaces the socket files. On exit an agent
unlinks a socket path only if it is still the file that agent bound and nobody
answers on it; gunicorn and the worker never unlink. So a stopping agent cannot remove
its successor's socket. The file identity includes ``st_ctime_ns``: ext4 hands a
just-freed inode number to the next file created, so ``(st_dev, st_ino)`` alone can
match the successor's socket. Both steps hold an ``flock`` on the socket's directory,
so the check and the unlink/bind of two agents never interleave.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import time

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ciliumpy.config import Config

log = logging.getLogger("ciliumpy.server")
SD_LISTEN_FDS_START = 3
PR_SET_PDEATHSIG = 1
# How long a new agent waits for a previous agent (still draining after SIGTERM) to
# stop answering on a socket path before giving up with "already serving".
TAKEOVER_WAIT = 10.0
TAKEOVER_POLL = 0.1

SocketId = tuple[int, int, int]  # (st_dev, st_ino, st_ctime_ns) of a socket file


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
    """True when a process accepts connections on the unix socket ``path``.

    A listener whose backlog is full (a draining agent no longer accepting) counts as
    in use: connect() then fails with EAGAIN, or times out, instead of ECONNREFUSED."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
        return True
    except (BlockingIOError, TimeoutError):
        return True
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    finally:
        probe.close()


def socket_id(path: str) -> SocketId | None:
    """The identity of the file at ``path`` (not following links), None if absent.
    The inode number alone is not enough: ext4 reuses a freed one at once."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


@contextlib.contextmanager
def _directory_lock(path: str):
    """An exclusive flock on the directory holding ``path``: serialises the
    probe/unlink/bind of a starting agent with the check/unlink of a stopping one.
    Best effort: a filesystem without flock just runs unlocked."""
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def bind_unix(path: str, mode: int, wait: float = TAKEOVER_WAIT
              ) -> tuple[socket.socket, SocketId]:
    """Binds a listening unix socket at ``path`` and returns it with the identity of
    the socket file it created. A stale socket file (nobody answers) is replaced; one a
    live process answers on is waited for (a previous agent still shutting down) for up
    to ``wait`` seconds, then refused."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        with _directory_lock(path):
            busy = False
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise ServeError(f"{path} exists and is not a socket")
                busy = socket_in_use(path)
                if not busy:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # stale: nobody listens
            if not busy:
                return _bind_new(path, mode)
        if time.monotonic() >= deadline:
            raise ServeError(f"another process is already serving {path}; stop it first")
        if not waiting:
            log.info("waiting for the previous agent to release %s", path)
            waiting = True
        time.sleep(TAKEOVER_POLL)


def _bind_new(path: str, mode: int) -> tuple[socket.socket, SocketId]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    ident = socket_id(path)  # after chmod, which changes st_ctime
    sock.listen(128)
    sock.set_inheritable(True)
    return sock, ident


def release_socket(path: str, ident: SocketId | None) -> bool:
    """Unlinks ``path`` only if it is still the socket file this agent bound
    (``ident``) and nobody answers on it (this agent's listeners are closed by now); a
    successor's socket at the same path is left alone. Holds the directory lock, under
    which a successor binds and listens in one step."""
    with _directory_lock(path):
        current = socket_id(path)
        if current is None:
            return False
        if current != ident or socket_in_use(path):
            log.info("%s now belongs to another agent; leaving it", path)
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True


def _die_with_parent() -> None:
    """The worker exits when the master dies (kill -9), freeing the state file."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _stop_agent(worker) -> None:
    """A clean stop (the master asked the worker to exit): the agent stops what it
    supervises (the L7 proxy). When the master died instead (kill -9: the worker got
    its parent-death signal and has been re-parented), this is a crash: the proxy keeps
    running and the next agent adopts it."""
    if os.getppid() != worker.ppid:
        return
    app = getattr(worker, "wsgi", None)
    agent = app.extensions.get("ciliumpy") if app is not None else None
    if agent is not None:
        agent.stop(stop_proxy=True)


class AgentApplication(BaseApplication):
    def __init__(self, config: Config, fds: list[int]) -> None:
        self.agent_config = config
        self.fds = fds
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": [f"fd://{fd}" for fd in self.fds],
            "workers": 1,
            "worker_class": "ciliumpy.http_worker.JSONErrorWorker",
            "threads": self.agent_config.threads,
            "timeout": 120,
            "graceful_timeout": 10,
            "loglevel": self.agent_config.log_level,
            "proc_name": "ciliumpy-agent",
            "post_fork": lambda server, worker: _die_with_parent(),
            "worker_exit": lambda server, worker: _stop_agent(worker),
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
        # Sockets are ours or systemd's: gunicorn must never unlink them. Arbiter.stop()
        # unlinks its unix listeners unless it believes they came from systemd.
        arbiter.systemd = True
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
    master = os.getpid()
    owned: list[tuple[str, SocketId]] = []  # socket files this agent bound itself
    unserved: list[int] = []  # their listening fds, until gunicorn takes them over
    try:
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
            plugin_sock, ident = bind_unix(config.plugin_socket, 0o660)
            plugin_fd = plugin_sock.detach()
            owned.append((config.plugin_socket, ident))
            unserved.append(plugin_fd)
        from datapath import loader

        try:  # compile (or reuse pins) here, so a failure is one clear line before serving
            loader.startup_load(config.bpf_pin_dir)
        except loader.CompileError as exc:
            raise ServeError(str(exc)) from None
        _check_overlay(config)
        api_sock, ident = bind_unix(config.api_socket, 0o600)
        api_fd = api_sock.detach()
        owned.append((config.api_socket, ident))
        unserved.append(api_fd)
        log.info("serving plugin on %s and agent API on %s", config.plugin_socket,
                 config.api_socket)
        unserved.clear()  # gunicorn owns (and closes) them from here
        AgentApplication(config, [plugin_fd, api_fd]).run()
    finally:
        # The worker leaves through here too (gunicorn's sys.exit in the forked child):
        # only the master, once its worker is gone, releases the socket files, and only
        # those still its own. A systemd-passed socket is never in ``owned``.
        if os.getpid() == master:
            for fd in unserved:  # failed before serving: stop listening, then unlink
                with contextlib.suppress(OSError):
                    os.close(fd)
            for path, ident in owned:
                release_socket(path, ident)
    sys.exit(0)
