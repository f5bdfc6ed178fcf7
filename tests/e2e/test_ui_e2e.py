"""The service map page through a real browser: real traffic under the L7 seed policy
(allowed and denied requests, SYNs dropped at L3/L4), ``ciliumpy ui`` bridging a
loopback port to the agent, and headless Chromium running the page's script; the
rendered DOM must show the services and the edges with their counts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from tests.e2e.test_l7_e2e import SEED_GET_PUBLIC, curl, l7  # noqa: F401 (fixture)
from tests.e2e.test_policy_e2e import apply
from tests.support.agent import CLI

CHROMIUM = shutil.which("chromium")


def rendered(url: str) -> str:
    """The page's DOM after its script ran, as Chromium serialises it."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" +
                           os.path.join("/tmp", f"cpy-chromium-{os.getpid()}"),
                           "--virtual-time-budget=5000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rows(dom: str) -> list[list[str]]:
    table = dom.split('<tbody>', 1)[1].split('</tbody>', 1)[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in table.split("</tr>") if "<td>" in row]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup-host.sh)")
@pytest.mark.timeout(240)
def test_service_map_page_in_a_browser(agent, l7, tmp_path):  # noqa: F811
    ip = l7["ip"]
    # other modules' containers carry the same role labels: look at this test's flows only
    since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    apply(agent, tmp_path, SEED_GET_PUBLIC)
    front, other = l7["pid"]["frontend"], l7["pid"]["other"]
    for _ in range(3):
        assert curl(front, f"http://{ip['backend']}/public/a")[0] == 200
    assert curl(front, f"http://{ip['backend']}/private")[0] == 403
    assert curl(other, f"http://{ip['backend']}/", "-m", "2")[0] == 0

    graph = agent.api(f"/v1/servicemap?since={since}")
    ids = {n["id"] for n in graph["nodes"]}
    assert {"frontend", "backend", "other"} <= ids, ids
    env = dict(os.environ, CILIUMPY_API_SOCKET=agent.api_socket)
    server = subprocess.Popen([*CLI, "ui", "--port", "0"], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        first = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert match, first
        dom = rendered(f"{match.group(0)}?since={since}")
    finally:
        server.terminate()
        server.wait(10)
    assert 'data-node="frontend"' in dom and 'data-node="backend"' in dom
    assert 'data-node="other"' in dom
    table = {(r[0], r[1], r[2]): r for r in rows(dom)}
    allowed = table[("frontend", "backend", "TCP/80")]
    assert int(allowed[3]) >= 4, allowed  # four connections forwarded
    # four requests, three answered 2xx, the fourth denied by the proxy (never answered)
    assert int(allowed[6]) == 4 and allowed[7] == "2xx 3", allowed
    intruder = table[("other", "backend", "TCP/80")]
    assert int(intruder[4]) >= 1 and "POLICY_DENIED" in intruder[5], intruder
    assert 'class="edge mixed"' in dom or 'class="edge dropped"' in dom
    status = re.search(r'<p id="status">(.*?)</p>', dom).group(1)
    assert re.match(r"\d+ services, \d+ edges, from \d+ flows", status), status
