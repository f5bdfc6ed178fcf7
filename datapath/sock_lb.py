"""Attaching the socket load-balancing hooks (``bpf/sock_lb.c``) and naming network
namespaces to them.

The hooks are cgroup programs attached at the root of the cgroup v2 hierarchy, so they
see every socket of the host and of its containers (Docker's cgroupfs driver leaves
containers in the v2 root on a hybrid host). Each attachment is a BPF link pinned
under ``<pin dir>/links/``: it survives an agent restart (the next agent updates it to
its programs in place, no gap), and removing the pin dir detaches it, so a test agent
leaves nothing behind. Links attach with "multi" semantics: several agents on one
machine each run their own hooks, each acting on the namespaces it serves.
"""

from __future__ import annotations

import ctypes as ct
import os
import socket
import threading
from pathlib import Path

from datapath import maps

SYS_BPF = 321  # x86_64
BPF_LINK_CREATE, BPF_LINK_UPDATE = 28, 29
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71
FALLBACK_CGROUP2 = "/run/ciliumpy/cgroupv2"

_libc = ct.CDLL(None, use_errno=True)


class SockLBError(RuntimeError):
    """The hooks cannot be attached or a namespace cannot be read; says why."""


class _LinkCreate(ct.Structure):
    _fields_ = [("prog_fd", ct.c_uint32), ("target_fd", ct.c_uint32),
                ("attach_type", ct.c_uint32), ("flags", ct.c_uint32), ("pad", ct.c_uint8 * 48)]


class _LinkUpdate(ct.Structure):
    _fields_ = [("link_fd", ct.c_uint32), ("new_prog_fd", ct.c_uint32), ("flags", ct.c_uint32),
                ("old_prog_fd", ct.c_uint32)]


def _bpf(cmd: int, attr: ct.Structure) -> int:
    result = _libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if result < 0:
        raise SockLBError(os.strerror(ct.get_errno()))
    return result


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted; mounted by us when nothing is (as
    Cilium does), since the hooks need it."""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == "cgroup2" and fields[3] == "/":
                return fields[4]
    os.makedirs(FALLBACK_CGROUP2, exist_ok=True)
    if not os.path.ismount(FALLBACK_CGROUP2) and os.system(
            f"mount -t cgroup2 none {FALLBACK_CGROUP2}") != 0:
        raise SockLBError("no cgroup v2 hierarchy is mounted and mounting one on "
                          f"{FALLBACK_CGROUP2} failed: socket load balancing needs it")
    return FALLBACK_CGROUP2


def attach(programs: dict[str, int], attach_types: dict[str, int], pin_dir: str) -> str:
    """Every hook attached at the cgroup v2 root through a pinned link: created the first
    time, moved to these programs (atomically) when a link is pinned already. Returns
    the cgroup path."""
    root = cgroup2_root()
    links = Path(pin_dir, "links")
    links.mkdir(parents=True, exist_ok=True)
    cgroup_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, attach_type in attach_types.items():
            path = links / name
            if path.exists():
                link_fd = maps.open_pinned(str(path))
                try:
                    _bpf(BPF_LINK_UPDATE, _LinkUpdate(link_fd, programs[name], 0, 0))
                finally:
                    os.close(link_fd)
                continue
            link_fd = _bpf(BPF_LINK_CREATE,
                           _LinkCreate(programs[name], cgroup_fd, attach_type, 0))
            try:
                maps.pin(link_fd, str(path))
            finally:
                os.close(link_fd)
    except (SockLBError, maps.MapError) as exc:
        raise SockLBError(f"attaching the socket hooks to {root}: {exc}") from None
    finally:
        os.close(cgroup_fd)
    return root


def attached(pin_dir: str, attach_types: dict[str, int]) -> list[str]:
    """The hooks whose link is pinned (for status)."""
    return [name for name in attach_types if Path(pin_dir, "links", name).exists()]


def netns_cookie(path: str) -> int:
    """The kernel's cookie of the network namespace at ``path`` (what the hooks see as
    bpf_get_netns_cookie): read from a socket made inside it, by a thread that enters
    it and ends (setns moves only the calling thread)."""
    result: dict[str, object] = {}

    def inside() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            result["error"] = f"cannot open {path}: {exc.strerror}"
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                result["error"] = f"cannot enter {path}: {os.strerror(ct.get_errno())}"
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
            result["cookie"] = int.from_bytes(raw, "little")
        finally:
            os.close(fd)

    thread = threading.Thread(target=inside, name="netns-cookie", daemon=True)
    thread.start()
    thread.join(5.0)
    if "cookie" not in result:
        raise SockLBError(str(result.get("error", f"reading the cookie of {path} timed out")))
    return int(result["cookie"])
