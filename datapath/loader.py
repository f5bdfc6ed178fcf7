"""Compiles the datapath once (bcc) or reuses what an earlier agent pinned.

Programs are pinned under ``<pin dir>/progs/<source hash>/``, maps under ``<pin
dir>/`` by versioned name. An agent restart with the same sources (and kernel) opens
the pins and compiles nothing; running tc filters never stop. bcc rewrites map calls
only in the main translation unit, so the headers of ``bpf/lib`` are spliced into one
text in dependency order (their include guards make the ``#include`` lines no-ops).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from datapath import maps

log = logging.getLogger("ciliumpy.datapath")

BPF_DIR = Path(__file__).parent / "bpf"
SOURCES = ["lib/common.h", "lib/maps.h", "lib/parse.h", "lib/events.h", "lib/conntrack.h",
           "lib/policy.h", "lib/verdict.h", "lib/ingress.h", "lib/overlay.h", "lib/proxy.h",
           "lib/bandwidth.h", "lib/lb.h", "lib/hostfw.h", "from_container.c", "to_container.c",
           "from_overlay.c", "to_overlay.c", "flow_classify.c", "from_netdev.c", "to_netdev.c",
           "sock_lb.c"]
TC_PROGRAMS = ("from_container", "to_container", "from_overlay", "to_overlay", "flow_classify",
               "from_netdev", "to_netdev")
# cgroup socket hooks (bpf/sock_lb.c) -> their attach type (enum bpf_attach_type)
SOCK_PROGRAMS = {"sock4_connect": 10, "sock6_connect": 11, "sock4_sendmsg": 14,
                 "sock6_sendmsg": 15, "sock4_recvmsg": 19, "sock6_recvmsg": 20,
                 "sock4_getpeername": 29, "sock6_getpeername": 30}
PROGRAMS = TC_PROGRAMS + tuple(SOCK_PROGRAMS)
MAP_SPECS = {  # name -> (key type, value type, max entries, per-cpu)
    "cp_endpoints_v2": (maps.ct.c_uint32, maps.EpInfo, 4096, False),
    "cp_ipcache_v1": (maps.IpcacheKey, maps.IpcacheVal, 512000, False),
    "cp_policy_allow_v1": (maps.PolicyKey, maps.PolicyVal, 1000000, False),
    "cp_policy_deny_v1": (maps.PolicyKey, maps.PolicyVal, 1000000, False),
    "cp_ct_v1": (maps.CtKey, maps.CtVal, 262144, False),
    "cp_metrics_v1": (maps.ct.c_uint32, maps.MetricVal, 16, True),
    "cp_config_v1": (maps.ct.c_uint32, maps.DpConfig, 1, False),
    "cp_bandwidth_v1": (maps.ct.c_uint32, maps.BwState, 4096, False),
    "cp_lb_services_v1": (maps.LbSvcKey, maps.LbSvcVal, 65536, False),
    "cp_lb_maglev_v1": (maps.LbSlotKey, maps.ct.c_uint32, 4194304, False),
    "cp_lb_backends_v1": (maps.ct.c_uint32, maps.LbBackend, 65536, False),
    "cp_lb_revsk_v1": (maps.LbRevskKey, maps.LbSvcKey, 262144, False),
    "cp_lb_netns_v1": (maps.ct.c_uint64, maps.LbNetnsVal, 16384, False),
    "cp_lb_nat_v1": (maps.LbNatKey, maps.LbNatVal, 262144, False),
    "cp_lb_config_v1": (maps.ct.c_uint32, maps.ct.c_uint32, 1, False),
}
EVENTS_PIN = "cp_events_v1"


class CompileError(RuntimeError):
    """The datapath cannot be built here; the message says what is missing."""


@dataclass
class Loaded:
    programs: dict[str, int]
    maps: dict[str, maps.BPFMap]
    events_fd: int
    compiled: bool
    compile_seconds: float
    source_hash: str
    bpf: object | None = field(default=None, repr=False)  # keeps bcc's fds alive


def source_text() -> str:
    return "".join((BPF_DIR / name).read_text() + "\n" for name in SOURCES)


def source_hash(pin_dir: str) -> str:
    digest = hashlib.sha256(source_text().encode())
    digest.update(platform.release().encode())
    digest.update(pin_dir.encode())
    return digest.hexdigest()[:16]


def _check_toolchain() -> None:
    build = Path("/lib/modules") / platform.release() / "build"
    if not build.exists():
        raise CompileError(
            f"kernel headers not found: {build} is missing (install Debian's "
            "linux-headers-amd64 and link it there; scripts/setup-host.sh does both)")
    if not os.path.ismount("/sys/fs/bpf"):
        raise CompileError("bpffs is not mounted on /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise CompileError("bcc is not importable: install python3-bpfcc and use a venv "
                           "made with --system-site-packages") from None


def _open_maps(pin_dir: str) -> dict[str, maps.BPFMap]:
    result = {}
    for name, (key_type, value_type, size, percpu) in MAP_SPECS.items():
        fd = maps.open_pinned(os.path.join(pin_dir, name))
        result[name] = maps.BPFMap(name, fd, key_type, value_type, size, percpu)
    return result


def load(pin_dir: str = "/sys/fs/bpf/ciliumpy") -> Loaded:
    """Reuses pinned programs of the same source hash, or compiles and pins them."""
    _check_toolchain()
    digest = source_hash(pin_dir)
    prog_dir = os.path.join(pin_dir, "progs", digest)
    pinned = [os.path.join(prog_dir, name) for name in PROGRAMS]
    if all(os.path.exists(p) for p in pinned) and os.path.exists(
            os.path.join(prog_dir, EVENTS_PIN)):
        programs = {name: maps.open_pinned(p) for name, p in zip(PROGRAMS, pinned, strict=True)}
        log.info("datapath: reusing pinned programs %s (no compile)", digest)
        return Loaded(programs, _open_maps(pin_dir), maps.open_pinned(
            os.path.join(prog_dir, EVENTS_PIN)), False, 0.0, digest)

    from bcc import BPF

    os.makedirs(prog_dir, exist_ok=True)
    start = time.perf_counter()
    try:
        bpf = BPF(text=source_text().encode(),
                  cflags=[f"-I{BPF_DIR}", f'-DPIN_DIR="{pin_dir}"'])
        programs = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS).fd
                    for name in TC_PROGRAMS}
        programs.update({name: bpf.load_func(name.encode(), BPF.CGROUP_SOCK_ADDR,
                                             attach_type=attach).fd
                         for name, attach in SOCK_PROGRAMS.items()})
    except Exception as exc:
        raise CompileError(f"compiling the datapath failed: {exc} (see the clang/verifier "
                           "output above)") from None
    elapsed = time.perf_counter() - start
    events_fd = bpf[b"cp_events"].map_fd
    for name, fd in programs.items():
        path = os.path.join(prog_dir, name)
        if os.path.exists(path):
            os.unlink(path)
        maps.pin(fd, path)
    maps.pin(events_fd, os.path.join(prog_dir, EVENTS_PIN))
    for old in Path(pin_dir, "progs").iterdir():  # programs of older sources
        if old.name != digest:
            for item in old.iterdir():
                item.unlink()
            old.rmdir()
    log.info("datapath: compiled in %.2fs, pinned as %s", elapsed, digest)
    return Loaded(programs, _open_maps(pin_dir), events_fd, True, elapsed, digest, bpf)


STARTUP: Loaded | None = None  # what the agent's master process did (inherited by fork)


def startup_load(pin_dir: str) -> Loaded:
    """The master's load: compiles at most once per agent start; the worker it forks
    then opens the same pins (see ``load``) and compiles nothing."""
    global STARTUP
    STARTUP = load(pin_dir)
    return STARTUP
