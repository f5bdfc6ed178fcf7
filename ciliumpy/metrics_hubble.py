"""Hubble's flow metrics, counted as flows are processed: a listener on the agent's
:class:`~ciliumpy.flows.store.FlowStore` (``observe(flow)`` for every new flow) and a
Prometheus collector for ``/metrics``.

Names, label sets, help texts and the rules for what counts follow Cilium's
``pkg/hubble/metrics/{flow,drop,tcp,http,kafka}/handler.go`` with no context labels
(Hubble's default) and the ``http`` (v1) handler:

* ``hubble_flows_processed_total{protocol,type,subtype,verdict}`` every flow; ``type``
  ``Drop``/``Trace``/``PolicyVerdict``/``L7``, ``subtype`` the trace observation point
  (``to-endpoint``, ``from-endpoint``) or the L7 kind (``HTTP``), ``protocol`` as
  Hubble's ``FlowProtocol`` (``TCP``, ``UDP``, ``ICMPv4``, ``HTTP``, ``Unknown L7`` for
  Kafka).
* ``hubble_drop_total{reason,protocol}`` every DROPPED flow; ``reason`` the
  ``DropReason`` name (``POLICY_DENIED``; ``DROP_REASON_UNKNOWN`` for a denied L7
  request, as Hubble).
* ``hubble_tcp_flags_total{flag,family}`` FORWARDED/REDIRECTED TCP flows that carry
  flags (``SYN``, ``SYN-ACK``, ``FIN``, ``RST``). Our datapath events carry no TCP flags
  yet, so this family stays empty until they do.
* ``hubble_http_requests_total{method,protocol,reporter}`` HTTP request records,
  ``hubble_http_responses_total{method,protocol,status,reporter}`` and the histogram
  ``hubble_http_request_duration_seconds{method,reporter}`` response records;
  ``reporter`` is ``client`` (egress), ``server`` (ingress) or ``unknown``.
* ``hubble_kafka_requests_total{topic,api_key,error_code,reporter}`` Kafka request
  records; ``hubble_kafka_request_duration_seconds{topic,api_key,reporter}``.

Where our flows differ from Cilium's, the label takes what Cilium emits for the
closest case: ``error_code`` is the decimal code (Cilium's Go writes
``string(int32)``, a rune); a denied Kafka request record carries no code, so it
counts under ``29`` (TOPIC_AUTHORIZATION_FAILED, what Cilium's Kafka proxy answers a
denied request with), a forwarded one under ``0``. Cilium observes the Kafka duration
on the request record, whose latency is always 0 there; we observe it on the response
record, which carries the latency. A Kafka record naming several topics counts once
per topic (as ``ciliumpy_kafka_requests``).

Counting starts when :func:`listen` registers the listener: the agent calls it when it
builds the flow store; ``/metrics`` calls it too, so an agent that did not has its
listener from the first scrape on, seeded with the flows the store still holds.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from ciliumpy.flows.model import TRACE_POINTS

# prometheus.DefBuckets: Hubble's histograms set no buckets of their own
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# monitorAPI message types -> the flow handler's type name
TYPE_NAMES = {1: "Drop", 3: "Capture", 4: "Trace", 5: "PolicyVerdict", 129: "L7"}
L4_PROTOCOLS = ("TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP", "VRRP", "IGMP")
_L4_SET = frozenset(L4_PROTOCOLS)
KAFKA_DENIED_CODE = 29  # TOPIC_AUTHORIZATION_FAILED

# (name without _total, help, labels): exactly as Cilium registers them
FLOWS = ("hubble_flows_processed", "Total number of flows processed",
         ("protocol", "type", "subtype", "verdict"))
DROPS = ("hubble_drop", "Number of drops", ("reason", "protocol"))
TCP_FLAGS = ("hubble_tcp_flags", "TCP flag occurrences", ("flag", "family"))
HTTP_REQUESTS = ("hubble_http_requests", "Count of HTTP requests",
                 ("method", "protocol", "reporter"))
HTTP_RESPONSES = ("hubble_http_responses", "Count of HTTP responses",
                  ("method", "protocol", "status", "reporter"))
HTTP_DURATION = ("hubble_http_request_duration_seconds",
                 "Quantiles of HTTP request duration in seconds", ("method", "reporter"))
KAFKA_REQUESTS = ("hubble_kafka_requests", "Count of Kafka requests",
                  ("topic", "api_key", "error_code", "reporter"))
# Cilium's own help text (copied from the HTTP handler there), kept verbatim
KAFKA_DURATION = ("hubble_kafka_request_duration_seconds",
                  "Quantiles of HTTP request duration in seconds",
                  ("topic", "api_key", "reporter"))
COUNTERS = (FLOWS, DROPS, TCP_FLAGS, HTTP_REQUESTS, HTTP_RESPONSES, KAFKA_REQUESTS)
HISTOGRAMS = (HTTP_DURATION, KAFKA_DURATION)


class FlowSource(Protocol):
    """What :func:`listen` needs of a flow store."""

    listeners: list

    def query(self, whitelist: list, blacklist: list) -> list[dict]: ...


def flow_protocol(flow: dict) -> str:
    """Hubble's ``v1.FlowProtocol``: the L7 protocol of an access-log flow, else the L4
    protocol."""
    kind = (flow.get("event_type") or {}).get("type", 0)
    if kind == 129:
        l7 = flow.get("l7") or {}
        return "HTTP" if "http" in l7 else "Unknown L7"
    if kind in (1, 3, 4, 5):
        l4 = flow.get("l4") or {}
        if len(l4) == 1:  # what the flow model builds: its one key is the protocol
            name = next(iter(l4))
            return name if name in _L4_SET else "Unknown L4"
        return next((name for name in L4_PROTOCOLS if name in l4), "Unknown L4")
    return "Unknown flow"


def flow_type(flow: dict) -> tuple[str, str]:
    """(type, subtype) as the flow handler names them."""
    event_type = flow.get("event_type") or {}
    kind = event_type.get("type", 0)
    if kind == 129:
        return "L7", "HTTP" if "http" in (flow.get("l7") or {}) else ""
    if kind == 4:
        return "Trace", TRACE_POINTS.get(event_type.get("sub_type", 0), "")
    if kind in TYPE_NAMES:
        return TYPE_NAMES[kind], ""
    return "Unknown", str(kind)


def reporter(flow: dict) -> str:
    return {"EGRESS": "client", "INGRESS": "server"}.get(
        str(flow.get("traffic_direction")), "unknown")


def tcp_flag_names(flags: dict) -> list[str]:
    """The tcp handler's flag labels, in its order: FIN, SYN or SYN-ACK, RST."""
    names = ["FIN"] if flags.get("FIN") else []
    if flags.get("SYN"):
        names.append("SYN-ACK" if flags.get("ACK") else "SYN")
    if flags.get("RST"):
        names.append("RST")
    return names


class _Histogram:
    """Bucket counts (the last is +Inf), sum and count of one label set."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DEFAULT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        index = next((i for i, bound in enumerate(DEFAULT_BUCKETS) if seconds <= bound),
                     len(DEFAULT_BUCKETS))
        self.counts[index] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*DEFAULT_BUCKETS, None), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound is None else repr(bound), running))
        return out


class HubbleMetrics:
    """Hubble's flow counters and histograms, fed one flow at a time (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, collections.Counter] = {
            spec[0]: collections.Counter() for spec in COUNTERS}
        self._histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {
            spec[0]: {} for spec in HISTOGRAMS}
        self._fresh: set[int] | None = None  # ids of flows seen while seeding

    def observe(self, flow: dict) -> None:
        """Counts one flow (the flow store's listener)."""
        with self._lock:
            if self._fresh is not None:
                self._fresh.add(id(flow))
            self._count(flow)

    def seed(self, store: FlowSource) -> None:
        """Registers :meth:`observe` on ``store`` and counts the flows it already holds
        (each once: a flow added while seeding is counted by the listener alone)."""
        with self._lock:
            self._fresh = set()
        store.listeners.append(self.observe)
        held = store.query([], [])
        with self._lock:
            fresh, self._fresh = self._fresh or set(), None
            for flow in held:
                if id(flow) not in fresh:
                    self._count(flow)

    def _add(self, spec: tuple, *labels: Any) -> None:
        self._counters[spec[0]][tuple(str(v) for v in labels)] += 1

    def _observe(self, spec: tuple, seconds: float, *labels: Any) -> None:
        key = tuple(str(v) for v in labels)
        self._histograms[spec[0]].setdefault(key, _Histogram()).observe(seconds)

    def _count(self, flow: dict) -> None:
        verdict = str(flow.get("verdict") or "VERDICT_UNKNOWN")
        protocol = flow_protocol(flow)
        self._add(FLOWS, protocol, *flow_type(flow), verdict)
        if verdict == "DROPPED":
            self._add(DROPS, flow.get("drop_reason_desc") or "DROP_REASON_UNKNOWN", protocol)
        tcp = (flow.get("l4") or {}).get("TCP") or {}
        family = (flow.get("IP") or {}).get("ipVersion")
        if verdict in ("FORWARDED", "REDIRECTED") and tcp.get("flags") and family:
            for name in tcp_flag_names(tcp["flags"]):
                self._add(TCP_FLAGS, name, family)
        l7 = flow.get("l7") or {}
        if "http" in l7:
            self._count_http(flow, l7)
        elif "kafka" in l7:
            self._count_kafka(flow, l7, verdict)

    def _count_http(self, flow: dict, l7: dict) -> None:
        http, side = l7["http"], reporter(flow)
        method, protocol = http.get("method", ""), http.get("protocol", "")
        if l7.get("type") == "REQUEST":
            self._add(HTTP_REQUESTS, method, protocol, side)
        elif l7.get("type") == "RESPONSE":
            self._add(HTTP_RESPONSES, method, protocol, http.get("code", 0), side)
            self._observe(HTTP_DURATION, _seconds(l7), method, side)

    def _count_kafka(self, flow: dict, l7: dict, verdict: str) -> None:
        kafka, side = l7["kafka"], reporter(flow)
        api_key = kafka.get("api_key", "")
        topics = str(kafka.get("topic") or "").split(",")
        if l7.get("type") == "REQUEST":
            code = kafka.get("error_code")
            if code is None:
                code = KAFKA_DENIED_CODE if verdict == "DROPPED" else 0
            for topic in topics:
                self._add(KAFKA_REQUESTS, topic, api_key, code, side)
        elif l7.get("type") == "RESPONSE":
            for topic in topics:
                self._observe(KAFKA_DURATION, _seconds(l7), topic, api_key, side)

    def collect(self) -> Iterator[Metric]:
        """The families, every one present (empty until something counted)."""
        with self._lock:
            counters = {name: dict(counts) for name, counts in self._counters.items()}
            histograms = {name: {key: (h.cumulative(), h.total) for key, h in found.items()}
                          for name, found in self._histograms.items()}
        for name, text, labels in COUNTERS:
            family = CounterMetricFamily(name, text, labels=list(labels))
            for key, value in sorted(counters[name].items()):
                family.add_metric(list(key), value)
            yield family
        for name, text, labels in HISTOGRAMS:
            histogram = HistogramMetricFamily(name, text, labels=list(labels))
            for key, (buckets, total) in sorted(histograms[name].items()):
                histogram.add_metric(list(key), buckets, sum_value=total)
            yield histogram


def _seconds(l7: dict) -> float:
    try:
        return int(l7.get("latency_ns") or 0) / 1e9  # uint64: a string in protojson
    except (TypeError, ValueError):
        return 0.0


_listening: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_listening_lock = threading.Lock()


def listen(store: FlowSource) -> HubbleMetrics:
    """The metrics counting ``store``'s flows: made, registered as its listener and
    seeded with the flows it holds on the first call, the same object after."""
    with _listening_lock:
        found = _listening.get(store)
        if found is None:
            found = _listening[store] = HubbleMetrics()
            found.seed(store)
        return found


def metric_names() -> Iterable[str]:
    """Every series name this module exposes (``_total``, ``_bucket``/``_sum``/
    ``_count`` included), for checks of dashboards and docs."""
    for name, _, _ in COUNTERS:
        yield f"{name}_total"
    for name, _, _ in HISTOGRAMS:
        yield from (f"{name}_bucket", f"{name}_sum", f"{name}_count")
