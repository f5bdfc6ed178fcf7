"""The documentation's commands, run as printed: the README's quick start ("With the
agent running, from another shell:") and the fenced ``sh`` blocks of
``examples/README.md``. The blocks are parsed out of the Markdown, so the test follows
the docs; each block runs in one bash session started in the repository root (as a
user's shell would be), with the CLI found only the way the docs say (the venv's
``bin`` is taken off ``PATH`` first) and the session agent of ``tests/conftest.py`` on
the real plugin and API sockets. Everything the commands create (the printed names:
network ``net1``, container ``web``, compose project ``shop``) is removed by id at the
end, also on failure; the test skips if one of those names already exists."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support.docker import DOCKER, Docker

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(REPO / ".venv" / "bin")
QUICK_START_INTRO = "With the agent running, from another shell"


# ---- the docs ----------------------------------------------------------------------
def sh_blocks(text: str) -> list[tuple[int, str]]:
    """The fenced ``sh`` blocks of a Markdown text (also indented ones, inside a list
    item), dedented, with the offset where each starts."""
    return [(m.start(), textwrap.dedent(m.group(2)))
            for m in re.finditer(r"^( *)```sh\n(.*?)^\1```", text, re.M | re.S)]


def commands(block: str) -> list[str]:
    """One entry per shell command: continuation lines joined, blank lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        current += line + "\n"
        if line.endswith("\\"):
            continue
        if current.strip():
            out.append(current.rstrip("\n"))
        current = ""
    if current.strip():
        out.append(current.rstrip("\n"))
    return out


def quick_start() -> list[str]:
    text = (REPO / "README.md").read_text()
    where = text.index(QUICK_START_INTRO)
    block = next(body for start, body in sh_blocks(text) if start > where)
    return commands(block)


def examples() -> list[str]:
    blocks = sh_blocks((REPO / "examples" / "README.md").read_text())
    assert blocks, "examples/README.md has no ```sh block"
    return [c for _, body in blocks for c in commands(body)]


def bare(command: str) -> str:
    """The command without its trailing comment and continuation breaks."""
    return " ".join(re.sub(r"\s+#[^'\"]*$", "", command).replace("\\\n", " ").split())


# ---- a user's shell ----------------------------------------------------------------
class Shell:
    """One bash process fed the commands one by one (so ``export``/``cd`` carry over),
    stdout and stderr merged, each command's exit code read back after a marker."""

    def __init__(self) -> None:
        path = ":".join(p for p in os.environ.get("PATH", "").split(":")
                        if p and os.path.realpath(p) != os.path.realpath(VENV_BIN))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CILIUMPY_", "VIRTUAL_ENV", "DOCKER_", "COMPOSE_"))}
        env["PATH"] = path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        self.transcript: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str]:
        marker = f"__quickstart_{uuid.uuid4().hex}__"
        self.proc.stdin.write(f"{command}\necho; echo {marker} $?\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                self.transcript.append(f"$ {command}\n{''.join(lines)}[no answer in {timeout} s]")
                raise AssertionError(f"`{command}` gave no answer in {timeout} s:\n"
                                     + "\n\n".join(self.transcript)) from None
            if line is None:
                raise AssertionError(f"the shell died during: {command}\n" + "".join(lines))
            if line.startswith(marker):
                code = int(line.split()[1])
                output = "".join(lines)[:-1]  # the echo's blank line
                self.transcript.append(f"$ {command}\n{output}[exit {code}]")
                return code, output
            lines.append(line)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def close(self) -> None:
        """Ends the shell and whatever a command left running in its process group (a
        hung ``docker run`` client; its container goes with the test's cleanup)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def docker_ids(*args: str) -> list[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True,
                          timeout=60).stdout.split()


def existing(kind: str, name: str) -> bool:
    return subprocess.run([DOCKER, kind, "inspect", name], capture_output=True,
                          timeout=60).returncode == 0


def retry(shell: Shell, command: str, ok, timeout: float = 10.0) -> tuple[int, str]:
    """Runs the printed command again until ``ok(output)`` (labels and names arrive
    asynchronously, as the docs say), at most ``timeout`` s."""
    deadline = time.time() + timeout
    while True:
        code, out = shell.run(command)
        if (code == 0 and ok(out)) or time.time() > deadline:
            return code, out
        time.sleep(0.5)


@pytest.fixture
def shell():
    instance = Shell()
    yield instance
    instance.close()


def _explain(shell: Shell) -> str:
    return "\n\n".join(shell.transcript)


# ---- README.md ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_readme_quick_start_runs_as_printed(agent, docker: Docker, shell: Shell):
    steps = quick_start()
    printed = [bare(c) for c in steps]
    assert any(p.startswith("docker network create") and p.endswith(" net1") for p in printed)
    for kind, name in (("network", "net1"), ("container", "web")):
        if existing(kind, name):
            pytest.skip(f"a {kind} named {name!r} exists already (not made by this test); "
                        "the quick start needs that name")
    network_id = None
    try:
        for command, plain in zip(steps, printed, strict=True):
            if plain.startswith("ciliumpy endpoint list"):
                code, out = retry(shell, command, lambda o: '"web"' in o)
            elif plain.startswith("ciliumpy network list"):
                code, out = retry(shell, command, lambda o: "net1" in o)
            else:
                code, out = shell.run(command)
            assert code == 0, f"`{plain}` failed:\n{_explain(shell)}"
            if plain.startswith("docker network create"):
                network_id = out.strip().splitlines()[-1]
                docker.networks.append(network_id)
            elif plain.startswith("docker run -d") and "--name web" in plain:
                docker.containers.append(out.strip().splitlines()[-1])
            elif "wget" in plain:
                assert "ciliumpy test page" in out, _explain(shell)
            elif plain.startswith("ciliumpy status"):
                assert "docker" in out.lower(), _explain(shell)
            elif plain.startswith("ciliumpy network list"):
                assert "net1" in out and "10.10.0.0/16" in out, _explain(shell)
            elif plain.startswith("ciliumpy endpoint list") and "-o json" in plain:
                endpoints = json.loads(out)
                web = [e for e in endpoints if e.get("container_name") == "web"]
                assert len(web) == 1, _explain(shell)
                assert web[0]["network_id"] == network_id
                assert web[0]["container_id"] == docker.containers[-1] or \
                    web[0]["container_id"].startswith(docker.containers[-1][:12])
                ip = docker.ip("web", "net1")
                assert web[0]["ipv4"] == ip + "/32"
    finally:
        if network_id:  # every container on our net1 is ours (the --rm wget included)
            docker.containers += docker_ids("ps", "-aq", "--no-trunc", "--filter",
                                            f"network={network_id}")
        docker.cleanup()
    assert network_id, "the quick start created no network"


# ---- examples/README.md ------------------------------------------------------------
@pytest.mark.timeout(180)
def test_examples_readme_runs_as_printed(agent, docker: Docker, shell: Shell):
    steps = examples()
    printed = [bare(c) for c in steps]
    assert any("docker-compose" in p and " up" in p for p in printed)
    project = "shop"
    for kind, name in (("network", f"{project}_shopnet"), ("container", f"{project}_web_1")):
        if existing(kind, name):
            pytest.skip(f"a {kind} named {name!r} exists already (not made by this test); "
                        "the example needs that name")
    ups = 0
    try:
        for command, plain in zip(steps, printed, strict=True):
            if plain.startswith("ciliumpy endpoint list"):
                code, out = retry(shell, command, lambda o: "app=web" in o and "app=api" in o)
            elif plain.startswith("ciliumpy identity list"):
                code, out = retry(shell, command,
                                  lambda o: "container:app=web" in o and "network:env=demo" in o)
            else:
                code, out = shell.run(command)
            assert code == 0, f"`{plain}` failed:\n{_explain(shell)}"
            if "docker-compose" in plain and " up" in plain:
                ups += 1
                if ups > 1:
                    assert "Recreating" not in out and "Creating" not in out, _explain(shell)
                    assert "up-to-date" in out, _explain(shell)
            elif plain.startswith("ciliumpy endpoint list"):
                assert out.count("app=api") == 2 and out.count("app=web") == 1, \
                    _explain(shell)
            elif plain.startswith("ciliumpy identity list"):
                assert "container:app=api" in out and "network:env=demo" in out, \
                    _explain(shell)
            elif "docker-compose" in plain and " down" in plain:
                assert not docker_ids("ps", "-aq", "--filter",
                                      f"label=com.docker.compose.project={project}")
                assert not existing("network", f"{project}_shopnet")
        assert ups >= 1
    finally:
        docker.containers += docker_ids("ps", "-aq", "--no-trunc", "--filter",
                                        f"label=com.docker.compose.project={project}")
        docker.networks += docker_ids("network", "ls", "-q", "--no-trunc", "--filter",
                                      f"label=com.docker.compose.project={project}")
        docker.cleanup()
