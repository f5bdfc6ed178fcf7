"""Shared bench plumbing: an agent to measure, machine facts, markdown tables."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ciliumpy.server import socket_in_use

RESULTS = Path(__file__).parent / "results"
PLUGIN_SOCKET = "/run/docker/plugins/ciliumpy.sock"
API_SOCKET = "/run/ciliumpy/ciliumpy.sock"


DOCKER = "/usr/bin/docker"
REPO = Path(__file__).resolve().parents[1]


def docker(*args: str, timeout: float = 120) -> str:
    """The docker CLI's output; RuntimeError with its stderr when it fails."""
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def ciliumpy(api_socket: str, *args: str) -> str:
    """The ciliumpy CLI's output against the agent on ``api_socket``."""
    env = dict(os.environ, CILIUMPY_API_SOCKET=api_socket)
    proc = subprocess.run([sys.executable, "-m", "ciliumpy", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"ciliumpy {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}"


@contextlib.contextmanager
def agent_running() -> Iterator[object | None]:
    """Uses the agent already on the plugin socket, or starts one for the bench."""
    if socket_in_use(PLUGIN_SOCKET):
        yield None
        return
    from tests.support.agent import Agent

    state = Path(tempfile.mkdtemp(prefix="ciliumpy-bench-"))
    agent = Agent(state, PLUGIN_SOCKET, API_SOCKET)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def start_agent(tmp: Path, plugin_socket: str):
    """A bench's own agent on ``plugin_socket`` (the benches' own plugin name), state
    under ``tmp``; refuses to start while another bench holds that socket."""
    from tests.support.agent import Agent

    if socket_in_use(plugin_socket):
        raise RuntimeError(f"{plugin_socket} is in use: another bench is running")
    state = tmp / "agent"
    state.mkdir()
    agent = Agent(state, plugin_socket, str(state / "api.sock"))
    agent.start()
    return agent


def tear_down(containers: Iterable[str], network: str | None, agent, tmp: Path) -> None:
    """Removes what a bench made, by id: containers, network, its agent, its files."""
    containers = list(containers)
    if containers:
        subprocess.run([DOCKER, "rm", "-f", *containers], capture_output=True, timeout=120)
    if network:
        subprocess.run([DOCKER, "network", "rm", network], capture_output=True, timeout=120)
    if agent is not None:
        agent.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def summary(samples: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def percentile(samples: Sequence[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def ratio_rows(results: dict[str, Sequence[float]], baselines: Sequence[str]
               ) -> list[list[str]]:
    """One row per contender: median, min-max, and its ratio to each baseline's median."""
    medians = [summary(results[name])[0] for name in baselines]
    rows = []
    for name, samples in results.items():
        med, low, high = summary(samples)
        rows.append([name, f"{med:.2f}", f"{low:.2f}-{high:.2f}",
                     *(f"{med / base:.2f}x" for base in medians)])
    return rows


SECTION = "<!-- section: {} -->"


def _sections(text: str) -> dict[str, str]:
    """Marked sections (another bench's table kept in the same file), by name."""
    found = {}
    parts = text.split("<!-- section: ")
    for part in parts[1:]:
        name, _, body = part.partition(" -->")
        found[name] = SECTION.format(name) + body.rstrip("\n") + "\n"
    return found


def write_section(name: str, section: str, text: str) -> None:
    """Put ``text`` as the marked section ``section`` of results/<name>.md, replacing
    that section's previous run and keeping everything else."""
    path = RESULTS / f"{name}.md"
    old = path.read_text() if path.exists() else ""
    head = old.split("<!-- section: ")[0].rstrip("\n")
    sections = _sections(old)
    sections[section] = SECTION.format(section) + "\n" + text.rstrip("\n") + "\n"
    path.write_text("\n\n".join([head, *sections.values()]).lstrip("\n"))


def write_table(name: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
                notes: Sequence[str] = (), section: str | None = None) -> str:
    """Prints the table and writes it to results/<name>.md (as the marked ``section``
    of that file when given; a file's marked sections survive its main table's runs)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "", f"Date: {now}  ", f"Machine: {machine()}", "",
             "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    if section is not None:
        write_section(name, section, text)
    else:
        kept = _sections(path.read_text()) if path.exists() else {}
        path.write_text("\n\n".join([text.rstrip("\n"), *kept.values()]) + "\n"
                        if kept else text)
    print(text)
    return text
