"""`docker run --rm` wall time: ciliumpy vs a bridge network vs --network none.

Runs are interleaved (one of each per round) so drift hits all three alike. The
bridge baseline is a user-defined bridge network (the test dockerd runs with
--bridge=none, and with --iptables=false no NAT rules are involved in either case).
Goal (issue 3): ciliumpy <= 1.1x bridge.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import agent_running, summary, write_table

DOCKER = "/usr/bin/docker"
IMAGE = "ciliumpy/busybox"


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True)


def _timed_run(network: str) -> float:
    start = time.perf_counter()
    _docker("run", "--rm", "--network", network, IMAGE, "true")
    return time.perf_counter() - start


def main(rounds: int = 12) -> str:
    with agent_running():
        _docker("network", "create", "-d", "ciliumpy", "--ipam-driver", "ciliumpy",
                "--subnet", "10.250.0.0/16", "cpybench-cp")
        _docker("network", "create", "-d", "bridge", "--subnet", "10.251.0.0/16", "cpybench-br")
        try:
            for network in ("cpybench-cp", "cpybench-br", "none"):
                _timed_run(network)  # warm-up: plugin activation, page cache
            samples: dict[str, list[float]] = {"cpybench-cp": [], "cpybench-br": [], "none": []}
            for _ in range(rounds):
                for network in samples:
                    samples[network].append(_timed_run(network))
        finally:
            _docker("network", "rm", "cpybench-cp", "cpybench-br")
    bridge = summary(samples["cpybench-br"])[0]
    none = summary(samples["none"])[0]
    labels = {"cpybench-cp": "ciliumpy", "cpybench-br": "bridge", "none": "--network none"}
    rows = []
    for network, values in samples.items():
        med, low, high = summary(values)
        rows.append([labels[network], f"{med * 1000:.0f} ms", f"{low * 1000:.0f}-{high * 1000:.0f}",
                     f"{med / bridge:.2f}x", f"{med / none:.2f}x"])
    return write_table(
        "docker_run", "docker run --rm: ciliumpy vs bridge vs none",
        ["network", "median", "min-max (ms)", "x bridge", "x none"], rows,
        [f"{rounds} interleaved rounds after one warm-up each; goal ciliumpy <= 1.10x bridge"])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
