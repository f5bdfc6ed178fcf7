"""The service map page through a real browser: the compose example running (web, two
api replicas), a policy letting only web reach api, web's requests and a stranger's
dropped SYNs, ``ciliumpy ui`` bridging a loopback port to the agent, and headless
Chromium running the page's script. The rendered DOM must show the services and the
edges with their counts and colours, the page's verdict filter must narrow it, and a
screenshot is kept as a test artifact (``test-artifacts/``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.test_identities import COMPOSE
from tests.e2e.test_policy_e2e import apply, clear
from tests.support.agent import CLI
from tests.support.docker import Docker

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(os.environ.get("CILIUMPY_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))
API_POLICY = """
endpointSelector: {matchLabels: {app: api}}
ingress:
- fromEndpoints: [{matchLabels: {app: web}}]
  toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"""


def chromium(url: str, *mode: str) -> str:
    """The page after its script ran: ``--dump-dom`` output, or a ``--screenshot``."""
    assert CHROMIUM, "chromium is missing: scripts/setup-host.sh installs Debian's package"
    profile = f"/tmp/cpy-chromium-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-dev-shm-usage", "--no-first-run",
                               f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                               "--window-size=1000,900", *mode, url],
                              capture_output=True, text=True, timeout=90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rows(dom: str) -> dict[tuple[str, str, str], list[str]]:
    table = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    found = [re.findall(r"<td>(.*?)</td>", row) for row in table.split("</tr>")
             if "<td>" in row]
    return {(r[0], r[1], r[2]): r for r in found}


@pytest.fixture
def shop(agent, docker_ready):
    project = "cpyui" + uuid.uuid4().hex[:6]
    base = ["docker-compose", "-p", project, "-f", str(COMPOSE)]
    docker = Docker()
    up = subprocess.run([*base, "up", "-d"], capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        yield project, docker
    finally:
        clear(agent)
        docker.cleanup()
        subprocess.run([*base, "down"], capture_output=True, text=True, timeout=180)


@pytest.mark.timeout(300)
def test_service_map_of_the_compose_example_in_a_browser(agent, shop, tmp_path):
    project, docker = shop
    # look at this test's flows only (other tests' containers may share labels)
    since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    network = f"{project}_shopnet"
    names = {c.split()[0]: c.split()[1] for c in docker.run_cli(
        "ps", "--filter", f"label=com.docker.compose.project={project}", "--format",
        "{{.Names}} {{.ID}}").stdout.splitlines()}
    web = next(cid for name, cid in names.items() if "_web_" in name or "-web-" in name)
    apis = [cid for name, cid in names.items() if "_api_" in name or "-api-" in name]
    assert len(apis) == 2, names
    apply(agent, tmp_path, API_POLICY)
    stranger = docker.run(network, "-l", "app=stranger")
    for api in apis:
        address = docker.ip(api, network)
        got = docker.exec(web, "wget", "-qO-", f"http://{address}:8080/", check=False)
        assert got.returncode == 0, got.stderr
        refused = docker.exec(stranger, "timeout", "2", "wget", "-qO-",
                              f"http://{address}:8080/", check=False)
        assert refused.returncode != 0

    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    server = subprocess.Popen([*CLI, "ui", "--port", "0"], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        match = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
        assert match
        url = f"{match.group(0)}?since={since}"
        dom = chromium(url, "--dump-dom")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "servicemap.png"
        shot.unlink(missing_ok=True)
        chromium(url, f"--screenshot={shot}")
        dropped_only = chromium(f"{url}&verdict=DROPPED", "--dump-dom")
    finally:
        server.terminate()
        server.wait(10)

    for node in ("web", "api", "stranger"):
        assert f'data-node="{node}"' in dom, node
    edges = rows(dom)
    allowed, denied = edges[("web", "api", "TCP/8080")], edges[("stranger", "api", "TCP/8080")]
    assert int(allowed[3]) >= 2 and allowed[4] == "0", allowed  # both replicas answered
    assert allowed[6:] == ["0", "-"]  # no L7 rules here: no L7 records
    assert int(denied[4]) >= 2 and "POLICY_DENIED" in denied[5], denied
    colours = dict((src, kind) for kind, src in re.findall(
        r'class="edge (\w+)" data-edge="(\w+)-(?:>|&gt;)api"', dom))
    assert colours == {"web": "forwarded", "stranger": "dropped"}, colours
    status = re.search(r'<p id="status">(.*?)</p>', dom).group(1)
    assert re.match(r"\d+ services, \d+ edges, from \d+ flows", status), status
    # the page's verdict filter: only the stranger's drops are left
    assert set(rows(dropped_only)) == {("stranger", "api", "TCP/8080")}
    assert shot.stat().st_size > 10_000, "a screenshot of the drawn map"
