"""Cluster Mesh, layer 1: options, the identity layout and the cluster labels.

Allocation runs against the real embedded store (SQLite), as an agent's would."""

from __future__ import annotations

import pytest

from ciliumpy import config as cfg
from ciliumpy.identities import IdentityAllocator, IdentityError
from policies.identities import cluster_of, cluster_range
from policies.labels import LabelFilter, identity_labels, parse
from policies.parser import parse_text
from state.kvstore.embedded import EmbeddedStore

MESH = {"kvstore": "consul", "kvstore_opt": ["consul.address=127.0.0.1:8500"],
        "datapath_mode": "vxlan", "cluster_name": "a", "cluster_id": "1"}


def _load(tmp_path, text: str = "", **flags):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return cfg.load(str(path), flags, environ={})


def test_defaults_are_no_mesh(tmp_path):
    config = _load(tmp_path)
    assert (config.cluster_name, config.cluster_id, config.remote_clusters) == ("default", 0, {})
    assert config.remote_cluster_retention == 300.0


def test_remote_clusters_from_file_and_flag(tmp_path):
    text = ("remote-clusters:\n  b: {consul.address: '127.0.0.1:8501', consul.token: s3cr3t}\n"
            "  c: 127.0.0.1:8502\n")
    config = _load(tmp_path, text, **MESH)
    assert config.remote_clusters == {
        "b": {"consul.address": "127.0.0.1:8501", "consul.token": "s3cr3t"},
        "c": {"consul.address": "127.0.0.1:8502"}}
    flagged = _load(tmp_path, "", **MESH, remote_clusters="b=h1:1, c=h2:2")
    assert flagged.remote_clusters == {"b": {"consul.address": "h1:1"},
                                       "c": {"consul.address": "h2:2"}}
    env = cfg.load(str(tmp_path / "config.yaml"), MESH,
                   environ={"CILIUMPY_REMOTE_CLUSTERS": "b=h:9", "CILIUMPY_CLUSTER_ID": "7"})
    assert (env.cluster_id, env.remote_clusters) == (1, {"b": {"consul.address": "h:9"}})


@pytest.mark.parametrize(("flags", "expected"), [
    ({"cluster_id": "256"}, "option 'cluster-id' = '256': must be 0..255"),
    ({"cluster_id": "-1"}, "must be 0..255"),
    ({"cluster_id": "one"}, "must be an integer 0..255"),
    ({"cluster_name": "Prod_1"}, "option 'cluster-name' = 'Prod_1': must be 1..32 lowercase"),
    ({"cluster_name": "x" * 33}, "must be 1..32"),
    ({"remote_clusters": "b"}, "'b' is not NAME=HOST:PORT"),
    ({"remote_clusters": "b=nohost"}, "cluster 'b': consul.address 'nohost' must be HOST:PORT"),
    ({"remote_clusters": "b=h:1,b=h:2"}, "cluster 'b' is listed twice"),
    ({"remote_clusters": "B=h:1"}, "cluster name 'B' must be 1..32"),
    ({"remote_clusters": "b=h:1", "cluster_id": "0"}, "needs 'cluster-id' 1..255"),
    ({"remote_clusters": "a=h:1"}, "lists this cluster's own name 'a'"),
    ({"remote_cluster_retention": "-5"}, "option 'remote-cluster-retention'"),
])
def test_bad_mesh_options_are_refused(tmp_path, flags, expected):
    with pytest.raises(cfg.ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        _load(tmp_path, "", **{**MESH, **flags})


def test_unknown_remote_option_and_embedded_store(tmp_path):
    with pytest.raises(cfg.ConfigError, match="unknown option 'consul.tokn'"):
        _load(tmp_path, "remote-clusters:\n  b: {consul.address: 'h:1', consul.tokn: x}\n",
              **MESH)
    with pytest.raises(cfg.ConfigError, match="needs --kvstore consul"):
        _load(tmp_path, "", cluster_id="2", remote_clusters="b=h:1")


def test_identity_layout():
    assert cluster_range(0) == (256, (1 << 24) - 1)
    assert cluster_range(1) == (65536 + 256, 2 * 65536 - 1)
    assert cluster_range(255) == ((255 << 16) | 256, (1 << 24) - 1)
    assert cluster_of((7 << 16) | 300) == 7 and cluster_of(300) == 0
    with pytest.raises(ValueError):
        cluster_range(256)


def test_allocation_in_the_cluster_range(tmp_path):
    kv = EmbeddedStore(str(tmp_path / "kv.db"))
    lease = kv.grant_lease(30)
    a = IdentityAllocator(kv, "n1", cluster_id=3)
    first = a.allocate(["container:app=web"], lease)
    assert first.number == (3 << 16) | 256
    assert a.allocate(["container:app=db"], lease).number == (3 << 16) | 257
    assert a.allocate(["container:app=web"], lease).number == first.number
    # an agent of the same store configured with another cluster ID: refused, not shared
    other = IdentityAllocator(kv, "n2", cluster_id=4)
    with pytest.raises(IdentityError, match="outside this cluster's range .*same cluster-id"):
        other.allocate(["container:app=web"], lease)
    assert f"refs/{first.number}/n2" not in " ".join(p.key for p in kv.list(""))
    assert IdentityAllocator(kv, "n3").allocate(["x:y"], lease).number == 256  # no mesh


def test_cluster_labels_are_added_and_cannot_be_spoofed():
    spoof = {"app": "web", "cluster": "a", "io.cilium.k8s.policy.cluster": "a"}
    labels = identity_labels(spoof, None, {"cluster": "a"}, ["extra:cluster=a"],
                             LabelFilter(), cluster="b")
    assert labels == ["container:app=web", "k8s:cluster=b",
                      "k8s:io.cilium.k8s.policy.cluster=b"]
    # without the mesh nothing changes: a container's own `cluster` label stays
    assert identity_labels({"app": "web", "cluster": "x"}, None, None, [], LabelFilter()) == [
        "container:app=web", "container:cluster=x"]


@pytest.mark.parametrize("key", ["cluster", "io.cilium.k8s.policy.cluster",
                                 "k8s:io.cilium.k8s.policy.cluster", "k8s:cluster"])
def test_selectors_select_by_cluster(key):
    rule = parse_text(f"endpointSelector: {{matchLabels: {{app: db}}}}\n"
                      f"ingress:\n- fromEndpoints:\n  - matchLabels: {{'{key}': a}}\n")[0].rules[0]
    selector = rule.ingress[0].endpoints[0]
    in_a = [parse(t) for t in identity_labels({"app": "web"}, None, None, [], LabelFilter(),
                                              cluster="a")]
    in_b = [parse(t) for t in identity_labels({"app": "web"}, None, None, [], LabelFilter(),
                                              cluster="b")]
    assert selector.matches(in_a) and not selector.matches(in_b)


def test_a_remote_cluster_cannot_spoof_labels_identities_or_local_addresses(tmp_path):
    """What a remote cluster's store says is trusted only within its own range and name:
    its identities' reserved/CIDR labels and foreign cluster labels are dropped, its
    endpoints with a reserved or out-of-range identity are not programmed, and nothing
    inside this cluster's pools is taken from it (overlap reported or not)."""
    import ipaddress
    import json

    from ciliumpy import clustermesh, nodes

    remote_kv = EmbeddedStore(str(tmp_path / "b.db"))
    changes = []
    remote = clustermesh.RemoteCluster(
        "b", remote_kv, 1, 60.0, lambda: {ipaddress.ip_network("10.71.0.0/16")},
        lambda cluster, events, services: changes.append(events))
    remote.cluster_id = 2  # as its config key says (checked by _check_config)
    own = (2 << 16) | 300
    remote_kv.put(clustermesh.IDS + str(own), json.dumps(
        ["container:app=x", "k8s:cluster=a", "reserved:host", "cidr:0.0.0.0/0"]))
    remote_kv.put(clustermesh.IDS + str((1 << 16) | 300), json.dumps(["container:app=y"]))
    remote_kv.put(clustermesh.IDS + "1", json.dumps(["reserved:host"]))
    remote._load(clustermesh.IDS)
    assert remote.identities == {own: ["container:app=x", "k8s:cluster=b",
                                       "k8s:io.cilium.k8s.policy.cluster=b"]}
    forwarded = [json.loads(e.value) for e in changes[-1]]
    assert forwarded == [remote.identities[own]], "the policy gets the sanitized labels"

    remote_kv.put(nodes.PREFIX + "n1", json.dumps(
        {"name": "n1", "ip": "192.0.2.9", "encapsulation": "vxlan",
         "blocks": ["10.72.1.0/24", "10.71.5.0/24"]}))
    for address, identity in (("10.72.1.5", own), ("10.72.1.6", 1), ("10.72.1.7", 6),
                              ("10.72.1.8", (1 << 16) | 300), ("10.71.5.5", own)):
        remote_kv.put(clustermesh.IPS + "n1/" + address, json.dumps({"identity": identity,
                                                                    "node": "n1"}))
    remote._load(nodes.PREFIX)
    remote._load(clustermesh.IPS)
    named, ips = remote.snapshot()
    assert set(ips) == {"10.72.1.5"}, ips
    assert named["b/n1"].blocks == ["10.72.1.0/24"]
    assert remote.rejected >= 3


def test_the_cluster_entity_is_the_local_clusters_endpoints_only():
    """As Cilium's (its `cluster` entity selects the local cluster's name label): an
    endpoint of another cluster is no part of `cluster`, though label selectors still
    select it."""
    from policies.engine import labels_of
    from policies.resolve import Universe, resolve

    local, remote = (1 << 16) | 300, (2 << 16) | 300
    identities = {local: ["k8s:io.cilium.k8s.policy.cluster=a", "app=x"],
                  remote: ["k8s:io.cilium.k8s.policy.cluster=b", "app=x"]}
    text = """spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEntities: [cluster]
  - fromEndpoints: [{matchLabels: {app: x}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""
    (policy,) = parse_text(text)
    for cluster, expected in (("a", {local}), ("", {local, remote})):  # "": no mesh
        universe = Universe(identities, {}, local_cluster=cluster)
        found = resolve(policy.rules, labels_of(["app=server"]), universe, "default")
        l3 = {e.identity for e in found.entries if e.proto == 0}
        assert l3 & {local, remote} == expected, cluster
        assert {e.identity for e in found.entries if e.port == 80} == {local, remote}
