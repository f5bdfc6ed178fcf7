"""Bandwidth values as Kubernetes writes them, and which limit an endpoint gets from its
labels, runtime changes and its network's default (pure logic; the e2e tests measure
the limits through the kernel)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciliumpy.bandwidth import effective_labels, limits_of
from datapath.rates import MAX_RATE, MIN_RATE, RateError, format_rate, parse_rate
from driver.model import Endpoint
from policies.labels import LabelFilter, identity_labels


@pytest.mark.parametrize("text,bps", [
    ("10M", 10_000_000), ("1G", 10**9), ("500k", 500_000), ("1.5G", 1_500_000_000),
    ("0.5M", 500_000), ("10Mi", 10 * 2**20), ("1Gi", 2**30), ("2000", 2000),
    (" 10M ", 10_000_000), ("100G", MAX_RATE), ("1k", MIN_RATE)])
def test_kubernetes_quantities(text, bps):
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text,message", [
    ("10X", "is not a bandwidth"), ("", "is not a bandwidth"), ("fast", "is not a bandwidth"),
    ("-5M", "is not a bandwidth"), ("5m", "is not a bandwidth"), ("1ki", "is not a bandwidth"),
    ("0", "below the smallest"), ("999", "below the smallest"),
    ("101G", "above the largest"), ("1P", "above the largest"), (None, "is not a bandwidth"),
    (10, "is not a bandwidth")])
def test_bad_values_say_why(text, message):
    with pytest.raises(RateError, match=message):
        parse_rate(text)


@given(st.integers(MIN_RATE, MAX_RATE))
def test_format_then_parse_is_close(bps):
    assert abs(parse_rate(format_rate(bps)) - bps) <= bps * 0.001


def test_format_of_no_limit():
    assert format_rate(0) == "-"
    assert format_rate(20_000_000) == "20M"


def test_ciliumpy_label_wins_over_kubernetes_and_labels_over_network():
    labels = {"kubernetes.io/egress-bandwidth": "10M", "ciliumpy.egress-bandwidth": "20M"}
    assert limits_of(labels, {"ciliumpy.egress-bandwidth": "5M"}) == (20_000_000, 0, [])
    assert limits_of({}, {"ciliumpy.ingress-bandwidth": "5M"}) == (0, 5_000_000, [])
    assert limits_of({}, {}) == (0, 0, [])


def test_a_bad_label_is_reported_and_the_network_default_applies():
    egress, ingress, errors = limits_of({"kubernetes.io/egress-bandwidth": "lots"},
                                        {"ciliumpy.egress-bandwidth": "5M"})
    assert (egress, ingress) == (5_000_000, 0)
    assert errors == ["kubernetes.io/egress-bandwidth: 'lots' is not a bandwidth: write it "
                      "as Kubernetes does (10M, 1G, 500k)"]


def test_runtime_changes_override_and_remove_docker_labels():
    endpoint = Endpoint("e" * 64, "n" * 64, "lxc", "tmp", "02:00:00:00:00:01",
                        bandwidth_labels={"kubernetes.io/egress-bandwidth": "10M",
                                          "kubernetes.io/ingress-bandwidth": "1M"},
                        label_overrides={"kubernetes.io/egress-bandwidth": None,
                                         "ciliumpy.ingress-bandwidth": "2M"})
    assert effective_labels(endpoint) == {"kubernetes.io/ingress-bandwidth": "1M",
                                          "ciliumpy.ingress-bandwidth": "2M"}
    assert limits_of(effective_labels(endpoint), {}) == (0, 2_000_000, [])


def test_bandwidth_labels_are_not_identity():
    labels = identity_labels({"app": "web", "kubernetes.io/egress-bandwidth": "10M",
                              "ciliumpy.ingress-bandwidth": "1M"}, {}, None, [], LabelFilter())
    assert [str(label) for label in labels] == ["container:app=web"]
