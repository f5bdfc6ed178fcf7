"""Chaos through the real components (issue 17): 50 parallel `docker run`s on one
ciliumpy network while the agent is killed with SIGKILL twice and started again. Every
container that started has an address no other has and reaches the others; every
`docker run` that failed said why; the agent's IPAM holds exactly the addresses Docker
holds, and none once the containers are gone."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import threading
import time

import pytest

from tests.support.docker import IMAGE

NETWORK, SUBNET, COUNT = "cpy-chaos", "10.81.0.0/24", 50


def endpoint_addresses(agent) -> set[str]:
    """The addresses the agent's IPAM holds for containers in the chaos subnet."""
    pool = ipaddress.ip_network(SUBNET)
    return {a["address"] for a in agent.api("/v1/ipam")["allocations"]
            if a["kind"] == "endpoint" and ipaddress.ip_address(a["address"]) in pool}


def diagnose(agent, docker, addresses: dict[str, str], prober: str,
             unreachable: list[str]) -> str:
    """What the agent and the kernel hold for the prober and the containers it could not
    reach: enough to tell a missing identity from a missing program or route."""
    import subprocess

    wanted = set(unreachable) | {addresses[prober]}
    lines = [f"unreachable from {addresses[prober]}: {unreachable}"]
    for name in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True
                               ).stdout.split("\n"):
        if ": lxc" in name:
            ifname = name.split(": ")[1].split("@")[0]
            filters = subprocess.run(["tc", "filter", "show", "dev", ifname, "ingress"],
                                     capture_output=True, text=True).stdout
            if "bpf" not in filters:
                lines.append(f"{ifname} has no program on ingress: {name[:200]}")
    for address in wanted:
        lines.append(subprocess.run(["ip", "route", "get", address], capture_output=True,
                                    text=True).stdout.strip())
    for route in ("/endpoints", "/v1/bpf/endpoints", "/v1/bpf/ipcache", "/identities"):
        held = agent.api(route)
        held = held if isinstance(held, list) else list(held.values()) if isinstance(
            held, dict) else []
        lines.append(f"{route}: {[e for e in held if any(w in str(e) for w in wanted)]}"[:3000])
    return "\n".join(lines)


@pytest.mark.timeout(900)
def test_parallel_runs_while_the_agent_is_killed_twice(agent, docker):
    docker.network_create(NETWORK, "--subnet", SUBNET)
    label = f"ciliumpy-chaos={time.monotonic_ns()}"
    started = threading.Event()

    def run(_: int):
        started.set()
        return docker.run_cli("run", "-d", "--network", NETWORK, "-l", label, IMAGE,
                              "sleep", "3600", check=False, timeout=300)

    def chaos() -> list[float]:
        """Kills the agent twice while the runs go on; seconds each restart took."""
        started.wait(30)
        took = []
        for pause in (1.0, 2.0):
            time.sleep(pause)
            began = time.monotonic()
            agent.restart(kill=True)
            took.append(time.monotonic() - began)
        return took

    with concurrent.futures.ThreadPoolExecutor(COUNT + 1) as pool:
        killer = pool.submit(chaos)
        results = list(pool.map(run, range(COUNT)))
        restarts = killer.result()
    assert len(restarts) == 2

    listed = docker.run_cli("ps", "-aq", "--no-trunc", "--filter", f"label={label}"
                            ).stdout.split()
    docker.containers.extend(listed)  # every one is removed at the end, started or not
    failed = [r for r in results if r.returncode != 0]
    for result in failed:  # a failure says what went wrong, it does not hang
        assert result.stderr.strip(), "a failed docker run printed nothing"
    running = [c for c in listed if docker.inspect(c)["State"]["Running"]]
    assert len(running) >= COUNT // 2, (
        f"only {len(running)} of {COUNT} started; failures: "
        f"{[r.stderr.strip()[-200:] for r in failed][:5]}")
    addresses = {c: docker.ip(c, NETWORK) for c in running}
    assert all(addresses.values()), addresses
    assert len(set(addresses.values())) == len(running), "an address was handed out twice"

    # the IPAM holds exactly the running containers' addresses: no leak from the runs
    # that failed or were cut off by the kills (a stopped or never-started container
    # holds none)
    deadline = time.monotonic() + 30
    while endpoint_addresses(agent) != set(addresses.values()):
        if time.monotonic() > deadline:
            held = endpoint_addresses(agent)
            raise AssertionError(
                f"IPAM and Docker differ: only in IPAM {sorted(held - set(addresses.values()))}"
                f", only in Docker {sorted(set(addresses.values()) - held)}")
        agent.api("/v1/reconcile", method="POST")
        time.sleep(1)

    # every running container reaches the others (one prober pings each)
    prober, *others = running
    script = "for ip in " + " ".join(addresses[c] for c in others) + \
        "; do ping -c1 -W2 $ip >/dev/null || ping -c1 -W2 $ip >/dev/null || echo FAIL $ip; done"
    unreachable = docker.exec(prober, "sh", "-c", script, timeout=600).stdout.split()[1::2]
    assert not unreachable, diagnose(agent, docker, addresses, prober, unreachable)

    docker.rm(*listed)
    deadline = time.monotonic() + 30
    while endpoint_addresses(agent):
        assert time.monotonic() < deadline, f"addresses leaked: {endpoint_addresses(agent)}"
        time.sleep(0.5)
    print(f"chaos: {len(running)} of {COUNT} started, {len(failed)} failed, restarts took "
          f"{', '.join(f'{t:.1f} s' for t in restarts)}; failures: "
          f"{[r.stderr.strip()[-160:] for r in failed]}")
