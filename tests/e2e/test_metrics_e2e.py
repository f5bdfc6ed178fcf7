"""``/metrics`` under real containers, as Prometheus would scrape it: Hubble's flow
metrics and Cilium's agent metrics count what the traffic did (connections forwarded,
a policy drop, HTTP requests judged by the L7 proxy, a refused policy import), and the
whole exposition passes ``promtool check metrics`` without a lint problem."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable

import pytest

from ciliumpy.apiclient import APIError, call
from tests.e2e.test_policy_e2e import apply, clear
from tests.support.wait import wait_for

HTTPD = ("httpd", "-f", "-p", "80", "-h", "/var/www")
L7_POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: metrics-l7}
spec:
  endpointSelector: {matchLabels: {app: metrics-server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: metrics-client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/"}
"""
Series = dict[tuple[str, frozenset], float]


def scrape(agent) -> tuple[str, Series]:
    from prometheus_client.parser import text_string_to_metric_families

    text = agent.api_text("/metrics")
    found = {(s.name, frozenset(s.labels.items())): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
    return text, found


def total(series: Series, name: str, **labels: str) -> float:
    """The sum over the series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in series.items() if n == name and wanted <= have)


def grows(agent, name: str, before: Series, by: float = 1, **labels: str
          ) -> Callable[[], float]:
    """A predicate: the growth of ``name{labels}`` since ``before`` once it is >= ``by``
    (events reach the agent asynchronously), else 0."""
    def check() -> float:
        delta = total(scrape(agent)[1], name, **labels) - total(before, name, **labels)
        return delta if delta >= by else 0
    return check


def promtool_clean(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup-host.sh installs Debian's prometheus"
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (proc.stdout + proc.stderr).strip(), f"lint problems:\n{proc.stdout}{proc.stderr}"


def endpoint(agent, docker, container: str) -> dict:
    full = docker.inspect(container)["Id"]
    found = wait_for(lambda: next((e for e in agent.api("/v1/endpoints")
                                   if e["container_id"] == full and e["identity"] >= 256),
                                  None), timeout=20)
    assert found, f"container {container[:12]} got no identity"
    return found


def wget(docker, client: str, url: str) -> bool:
    proc = docker.exec(client, "timeout", "3", "wget", "-qO-", url, check=False)
    return "ciliumpy test page" in proc.stdout


@pytest.fixture
def world(agent, docker):
    """A server (busybox httpd), a client and an intruder on a fresh network."""
    net = "cpy-met-" + uuid.uuid4().hex[:6]
    docker.network_create(net, "--subnet", "10.86.0.0/16")
    names = {"server": docker.run(net, "-l", "app=metrics-server", command=HTTPD),
             "client": docker.run(net, "-l", "app=metrics-client"),
             "intruder": docker.run(net, "-l", "app=metrics-intruder")}
    eps = {role: endpoint(agent, docker, cid) for role, cid in names.items()}
    return names, eps, docker.ip(names["server"], net)


def test_flows_and_drops_under_hubble_and_cilium_names(agent, docker, world):
    names, eps, server_ip = world
    _, before = scrape(agent)  # the first scrape also starts the flow listener if needed
    call("/v1/bpf/policy", method="POST", socket_path=agent.api_socket,
         body={"endpoint": eps["server"]["endpoint_id"], "direction": "ingress",
               "identity": eps["client"]["identity"], "protocol": "tcp", "port": 80})
    try:
        assert wget(docker, names["client"], f"http://{server_ip}/"), "allowed"
        assert wget(docker, names["client"], f"http://{server_ip}/"), "allowed again"
        assert not wget(docker, names["intruder"], f"http://{server_ip}/"), "denied"
    finally:
        call("/v1/bpf/policy", method="DELETE", socket_path=agent.api_socket,
             body={"endpoint": eps["server"]["endpoint_id"], "direction": "ingress",
                   "identity": eps["client"]["identity"], "protocol": "tcp", "port": 80})
    # Hubble: two new connections traced to the server, the intruder's SYNs dropped
    assert wait_for(grows(agent, "hubble_flows_processed_total", before, by=2,
                          protocol="TCP", type="Trace", subtype="to-endpoint",
                          verdict="FORWARDED"))
    assert wait_for(grows(agent, "hubble_flows_processed_total", before, protocol="TCP",
                          type="Drop", subtype="", verdict="DROPPED"))
    assert wait_for(grows(agent, "hubble_drop_total", before, reason="POLICY_DENIED",
                          protocol="TCP"))
    assert wait_for(grows(agent, "hubble_tcp_flags_total", before, by=2, flag="SYN",
                          family="IPv4")), "each new connection's SYN"
    # Cilium: the BPF counters under Cilium's reason text and direction
    assert wait_for(grows(agent, "cilium_drop_count_total", before, reason="Policy denied",
                          direction="INGRESS"))
    assert wait_for(grows(agent, "cilium_drop_bytes_total", before, by=40,
                          reason="Policy denied", direction="INGRESS"))
    assert wait_for(grows(agent, "cilium_forward_count_total", before, by=10,
                          direction="INGRESS")), "two HTTP exchanges: 10+ packets in"
    text, after = scrape(agent)
    forwarded = total(after, "hubble_flows_processed_total", verdict="FORWARDED")
    dropped = total(after, "hubble_flows_processed_total", verdict="DROPPED")
    assert forwarded >= 2 and dropped >= 1
    assert dropped == total(after, "hubble_drop_total"), "every DROPPED flow is a drop"
    assert total(after, "cilium_endpoint_state", endpoint_state="ready") >= 3
    assert total(after, "cilium_endpoint") >= 3
    assert total(after, "cilium_identity", type="reserved") == 6
    assert total(after, "cilium_identity", type="cluster_local") >= 3, "three label sets"
    assert total(after, "cilium_bpf_map_pressure", map_name="cp_ipcache_v1") > 0
    assert total(after, "ciliumpy_datapath_packets_total", reason="forwarded") > 0, (
        "our own series stay")
    promtool_clean(text)


def test_http_requests_policy_state_and_import_errors(agent, docker, world, tmp_path):
    names, eps, server_ip = world
    _, before = scrape(agent)
    revision = apply(agent, tmp_path, L7_POLICY)
    try:
        assert wget(docker, names["client"], f"http://{server_ip}/"), "GET / is allowed"
        assert not wget(docker, names["client"], f"http://{server_ip}/secret"), "403"
        with pytest.raises(APIError):
            agent.api_post("/v1/policy", {"text": "spec: {endpointSelector: 5}"})
        # two requests (one denied), one response with its latency, at the server side
        assert wait_for(grows(agent, "hubble_http_requests_total", before, by=2,
                              method="GET", protocol="HTTP/1.1", reporter="server")) == 2
        assert wait_for(grows(agent, "hubble_http_responses_total", before, method="GET",
                              protocol="HTTP/1.1", status="200", reporter="server")) == 1
        assert wait_for(grows(agent, "hubble_http_request_duration_seconds_count", before,
                              method="GET", reporter="server")) == 1
        assert wait_for(grows(agent, "hubble_flows_processed_total", before, protocol="HTTP",
                              type="L7", subtype="HTTP", verdict="DROPPED")) == 1
        assert wait_for(grows(agent, "hubble_drop_total", before, protocol="HTTP",
                              reason="DROP_REASON_UNKNOWN")) == 1
        text, after = scrape(agent)
        assert total(after, "cilium_policy") >= 1
        assert total(after, "cilium_policy_max_revision") >= revision
        assert (total(after, "cilium_policy_import_errors_total")
                - total(before, "cilium_policy_import_errors_total")) == 1
        promtool_clean(text)
    finally:
        clear(agent)
