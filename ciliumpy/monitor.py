"""Datapath and L7 events made readable: each drop or policy verdict gets the labels of
both identities and the endpoint's container, each L7 request (from the proxy, labelled
there) its request fields; all are kept in a bounded ring (the last ``capacity``
events), pushed to every live ``ciliumpy monitor`` stream, and L7 requests are counted
for ``/metrics`` (by verdict, and a latency histogram).

Datapath events arrive in batches (``ingest_batch``: what the event reader process wrote
since the last read): labels and endpoints come from caches, and the listeners, the ring
and the streams take a batch under one lock, so a busy datapath costs a few
microseconds an event here."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator

from policies.identities import RESERVED, Identity, is_node_identity

HOST_EP_KEY = 0xFFFFFFFF  # the host endpoint's events (datapath.maps.HOST_EP_KEY)

# L7 request latency buckets (seconds), as Prometheus histograms spell them
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ENDPOINTS_FOR = 1.0  # seconds an ifindex -> endpoint answer is reused
# an event's kernel time (CLOCK_MONOTONIC) further than this from now is not trusted
CLOCK_SLACK = 60.0


class Monitor:
    def __init__(self, identity_lookup: Callable[[int], Identity | None],
                 endpoint_lookup: Callable[[int], dict | None],
                 node_lookup: Callable[[int], Identity | None] = lambda number: None,
                 capacity: int = 4095) -> None:
        self.identity_lookup, self.endpoint_lookup = identity_lookup, endpoint_lookup
        self.node_lookup = node_lookup  # other nodes' identities (node-local, reassignable)
        self.events: collections.deque[dict] = collections.deque(maxlen=capacity)
        self.lost = 0
        self.seen = 0
        self._subscribers: list[queue.Queue] = []
        self.listeners: list[Callable[[dict], None]] = []  # each event, in the reader thread
        # each batch of events (a list), in the reader thread: the flow store
        self.batch_listeners: list[Callable[[list[dict]], None]] = []
        self._endpoints: tuple[float, dict[int, dict | None]] = (0.0, {})
        self._labels: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self.l7_requests: collections.Counter = collections.Counter()  # (verdict, protocol)
        self.l7_latency = [0] * (len(LATENCY_BUCKETS) + 1)  # counts per bucket, then +Inf
        self.l7_latency_sum = 0.0
        # Kafka requests by (verdict, api key, topic); a request naming several topics
        # counts once per topic, one naming none under topic ""
        self.kafka_requests: collections.Counter = collections.Counter()

    def labels_of(self, number: int) -> list[str]:
        if number in RESERVED:
            return [f"reserved:{RESERVED[number]}"]
        if is_node_identity(number):  # not cached: a released number may come back
            found = self.node_lookup(number)
            return list(found.labels) if found else []
        if number not in self._labels:
            try:
                found = self.identity_lookup(number)
            except Exception:  # kvstore down: show the number alone
                return []
            if found is None:
                return []
            self._labels[number] = list(found.labels)
        return self._labels[number]

    def ingest(self, event: dict) -> None:
        self.ingest_batch([event])

    def ingest_batch(self, events: list[dict]) -> None:
        """Decoded datapath events (``datapath.events``), oldest first: dated, labelled,
        given their endpoint, then published together."""
        wall, mono = time.time(), time.monotonic()
        expires, endpoints = self._endpoints
        if mono > expires:  # the endpoint table changes rarely: asked again each second
            endpoints = {}
            self._endpoints = (mono + ENDPOINTS_FOR, endpoints)
        labels_of = self.labels_of
        for event in events:
            # the kernel's time of the event (bpf_ktime_get_ns is CLOCK_MONOTONIC), not
            # the time this batch was read
            stamp = wall - mono + event.get("ktime_ns", 0) / 1e9
            event["time"] = stamp if abs(stamp - wall) < CLOCK_SLACK else wall
            event["src_labels"] = labels_of(event["src_identity"])
            event["dst_labels"] = labels_of(event["dst_identity"])
            ifindex = event["ifindex"]
            if ifindex in endpoints:
                endpoint = endpoints[ifindex]
            else:
                endpoint = endpoints[ifindex] = self.endpoint_lookup(ifindex)
            if endpoint:
                event["endpoint"] = endpoint
        self._publish(events)

    def ingest_l7(self, raw: dict) -> None:
        """One request as the L7 proxy saw it, in the datapath events' field names."""
        src, dst, http = raw.get("src") or {}, raw.get("dst") or {}, raw.get("http") or {}
        event = {"type": "l7", "time": raw.get("time", time.time()),
                 "verdict": raw.get("verdict"), "direction": raw.get("direction"),
                 "protocol": raw.get("protocol"), "reason": raw.get("reason"),
                 "src_ip": src.get("ip"), "src_port": src.get("port"),
                 "dst_ip": dst.get("ip"), "dst_port": dst.get("port"),
                 "src_identity": src.get("identity"), "dst_identity": dst.get("identity"),
                 "src_labels": src.get("labels") or [], "dst_labels": dst.get("labels") or [],
                 "src_name": src.get("name"), "dst_name": dst.get("name"),
                 "http": http, "grpc_status": raw.get("grpc_status")}
        kafka = raw.get("kafka")
        if kafka:
            event["kafka"] = kafka
        if raw.get("dns"):
            event["dns"] = raw["dns"]
        if raw.get("tls"):
            event["tls"] = raw["tls"]
        latency = http.get("latency_ms")
        with self._lock:
            self.l7_requests[(event["verdict"], event["protocol"])] += 1
            if kafka:
                for topic in kafka.get("topics") or [""]:
                    self.kafka_requests[(event["verdict"], kafka.get("api_key"), topic)] += 1
            if isinstance(latency, (int, float)):
                seconds = latency / 1000.0
                self.l7_latency_sum += seconds
                index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound),
                             len(LATENCY_BUCKETS))
                self.l7_latency[index] += 1
        self._publish([event])

    def kafka_snapshot(self) -> dict:
        """Kafka requests by (verdict, api key, topic)."""
        with self._lock:
            return dict(self.kafka_requests)

    def l7_snapshot(self) -> tuple[dict, list[int], float]:
        """(requests by (verdict, protocol), latency bucket counts, latency sum)."""
        with self._lock:
            return dict(self.l7_requests), list(self.l7_latency), self.l7_latency_sum

    def _publish(self, events: list[dict]) -> None:
        for listener in self.listeners:
            for event in events:
                listener(event)
        for batch_listener in self.batch_listeners:
            batch_listener(events)
        with self._lock:
            self.seen += len(events)
            self.events.extend(events)
            for subscriber in self._subscribers:
                for event in events:
                    try:
                        subscriber.put_nowait(event)
                    except queue.Full:
                        self.lost += 1

    def forget_identity(self, number: int) -> None:
        self._labels.pop(number, None)

    def stream(self, types: set[str] | None, history: bool, stop: threading.Event
               ) -> Iterator[dict]:
        subscriber: queue.Queue = queue.Queue(maxsize=10000)
        with self._lock:
            backlog = list(self.events) if history else []
            self._subscribers.append(subscriber)
        try:
            for event in backlog:
                if not types or event["type"] in types:
                    yield event
            while not stop.is_set():
                try:
                    event = subscriber.get(timeout=1.0)
                except queue.Empty:
                    yield {}  # keep-alive: lets the server notice a closed client
                    continue
                if not types or event["type"] in types:
                    yield event
        finally:
            with self._lock:
                self._subscribers.remove(subscriber)


def format_event(event: dict) -> str:
    """One line, like Cilium's monitor: what, why, where, and both sides' labels."""
    if event["type"] == "l7":
        return format_l7(event)
    endpoint = event.get("endpoint") or {}
    where = endpoint.get("container_name") or endpoint.get("endpoint_id", "")[:12] or (
        "host" if event["ifindex"] == HOST_EP_KEY else f"ifindex {event['ifindex']}")
    src = f"{event['src_ip']}:{event['src_port']}"
    dst = f"{event['dst_ip']}:{event['dst_port']}"
    if event["type"] == "drop":
        head = f"xx drop ({event['reason']}) {event['direction']} on {where}"
    elif event["type"] == "trace":
        head = f"-> trace new connection {event['direction']} on {where}"
    else:
        head = f"-> policy-verdict {event['verdict']} {event['direction']} on {where}"
    return (f"{head}: {event['protocol']} {src} -> {dst} "
            f"identity {event['src_identity']}->{event['dst_identity']} "
            f"src labels [{', '.join(event['src_labels'])}] "
            f"dst labels [{', '.join(event['dst_labels'])}]")


def _l7_tail(event: dict) -> str:
    """What every L7 line ends with: addresses, identities, latency, reason, labels."""
    http = event.get("http") or {}
    return (f"{event['src_ip']}:{event['src_port']} -> {event['dst_ip']}:{event['dst_port']} "
            f"identity {event['src_identity']}->{event['dst_identity']} "
            f"{http.get('latency_ms')} ms{' ' + event['reason'] if event.get('reason') else ''} "
            f"src labels [{', '.join(event['src_labels'])}] "
            f"dst labels [{', '.join(event['dst_labels'])}]")


def format_kafka(event: dict) -> str:
    """Hubble's Kafka wording: ``(Kafka produce v7 topic1 corr 3) -> 29``."""
    kafka = event.get("kafka") or {}
    topics = ",".join(kafka.get("topics") or []) or "-"
    code = kafka.get("error_code")
    return (f"<> l7 {event['verdict']} {event['direction']} (Kafka {kafka.get('api_key')} "
            f"v{kafka.get('api_version')} topic {topics} client {kafka.get('client_id')} "
            f"corr {kafka.get('correlation_id')}) -> "
            f"{'error ' + str(code) if code is not None else 'broker'} "
            + _l7_tail(event))


def format_dns(event: dict) -> str:
    """``(DNS A allowed.test.) -> NOERROR [10.99.0.10] ttl 30``."""
    dns = event.get("dns") or {}
    ips = f" [{', '.join(dns.get('ips') or [])}] ttl {dns.get('ttl')}" if dns.get("ips") else ""
    return (f"<> l7 {event['verdict']} {event['direction']} (DNS {dns.get('qtype')} "
            f"{dns.get('query')}) -> {dns.get('rcode')}{ips} "
            + _l7_tail(event))


def format_tls(event: dict) -> str:
    """``(TLS SNI allowed.example) -> spliced`` / ``-> reset``: one connection."""
    tls = event.get("tls") or {}
    outcome = "spliced" if event["verdict"] == "FORWARDED" else "reset"
    return (f"<> l7 {event['verdict']} {event['direction']} (TLS SNI "
            f"{tls.get('sni') or '-'}) -> {outcome} "
            + _l7_tail(event))


def format_l7(event: dict) -> str:
    """Hubble's L7 wording: ``(HTTP/1.1 GET http://host/path) -> 403``."""
    if event.get("protocol") == "kafka":
        return format_kafka(event)
    if event.get("protocol") == "tls":
        return format_tls(event)
    if event.get("protocol") == "dns":
        return format_dns(event)
    http = event.get("http") or {}
    version = {"http": "HTTP/1.1", "http2": "HTTP/2", "grpc": "gRPC"}.get(
        event.get("protocol"), event.get("protocol"))
    url = f"http://{http.get('host') or event['dst_ip']}{http.get('path') or ''}"
    grpc = f" grpc-status {event['grpc_status']}" if event.get("grpc_status") is not None else ""
    return (f"<> l7 {event['verdict']} {event['direction']} ({version} {http.get('method')} "
            f"{url}) -> {http.get('status')}{grpc} "
            f"{event['src_ip']}:{event['src_port']} -> {event['dst_ip']}:{event['dst_port']} "
            f"identity {event['src_identity']}->{event['dst_identity']} "
            f"{http.get('latency_ms')} ms "
            f"src labels [{', '.join(event['src_labels'])}] "
            f"dst labels [{', '.join(event['dst_labels'])}]")
