"""Real Kafka clients for the Kafka L7 tests and benchmark, run inside a client's
network namespace with the host's Python::

    nsenter -t PID -n python -m tests.support.kafka_clients <cmd> --client kafka-python|confluent \\
        --bootstrap IP:PORT --topic T ...

Every command prints ONE JSON line on stdout and exits 0, Kafka errors included (errors
are data; only bad arguments exit non-zero). Logs of the clients go to stderr.

- ``produce --count N [--size 1000] [--client-id ID] [--timeout 10]``
  -> ``{"client", "sent", "delivered", "errors": {NAME: n}, "seconds"}``
- ``consume [--group G | --partition 0] [--expect N] [--timeout 10] [--client-id ID]``:
  with a group, subscribe (JoinGroup/SyncGroup..., offsets committed on close); without,
  assign one partition (default 0) from its beginning, nothing committed. Stops at N
  messages, at the first ``*_AUTHORIZATION_FAILED`` or at the timeout.
  -> ``{"client", "consumed", "errors", "seconds"}``
- ``bench-produce --count N [--size 1000]``: one warm-up message (acked), then N
  messages as fast as the client batches them; times first send -> last ack.
  -> ``{..., "msgs_per_s", "mb_per_s"}``
- ``bench-fetch --count N [--prefill]``: assign partition 0 and fetch N messages,
  re-reading the retained log from its start as often as needed (the mock keeps only
  ~5 MB per partition); ``--prefill`` first produces min(N, 4 MB) messages with
  librdkafka in ~1 MB batches (untimed). The rate is taken from the first batch
  received to the last, so bootstrap and ListOffsets are not in it.
- ``latency --count N``: one warm-up, then N messages one at a time, each waited for
  (acked) before the next; ``p50_ms``/``p99_ms``/``mean_ms``/``max_ms`` of send->ack.

Error names are Kafka's protocol names, upper case, the same for both clients:
``TOPIC_AUTHORIZATION_FAILED`` etc. (kafka-python's ``TopicAuthorizationFailedError``
is mapped through its ``.message``; librdkafka's ``KafkaError.name()`` already is).
Client-local errors start with ``_``: librdkafka's own (``_MSG_TIMED_OUT``,
``_TRANSPORT``...) and kafka-python's exception class names made upper snake case
(``KafkaTimeoutError`` -> ``_KAFKA_TIMEOUT``). confluent's global ``error_cb`` errors
(connection refused/reset...) are reported apart, in ``client_errors``, since they are
not per message.

Client configuration (see kafka_broker.py for why):

- kafka-python: ``api_version=(2, 3)`` is REQUIRED against the mock broker (it answers
  ApiVersions v3+ in a way kafka-python cannot decode). This pins Kafka-2.3 request
  versions: Produce v7, Fetch v11, Metadata v8..., all non-flexible encodings.
- confluent (librdkafka 2.16): negotiates itself, flexible versions (Produce v10+,
  Fetch v16, Metadata v12+). ``group.id`` is mandatory in confluent-kafka's Consumer
  (and ``""`` aborts the process), so the group-less consumer uses
  ``group.id=kafka-clients-assign`` with assign() and no commits: librdkafka still
  sends FindCoordinator for it, but no JoinGroup/SyncGroup/OffsetFetch/OffsetCommit.
  KIP-714 telemetry is turned off (``enable.metrics.push=false``).
- Both: ``acks=1`` and no idempotence (so no InitProducerId request is needed and
  produce errors come back per message).

Requests each command sends (measured against the mock, 1 broker):

- produce: ApiVersions, Metadata, Produce (both clients).
- consume, no group: kafka-python ApiVersions, Metadata, ListOffsets, Fetch;
  confluent the same plus FindCoordinator.
- consume --group: + FindCoordinator, JoinGroup, SyncGroup, OffsetFetch, Heartbeat
  (confluent; kafka-python if the run is long enough), OffsetCommit, LeaveGroup.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

KAFKA_PYTHON_API_VERSION = (2, 3)  # see module docstring: the mock needs ApiVersions <= v2
CLIENTS = ("kafka-python", "confluent")
ASSIGN_GROUP = "kafka-clients-assign"  # confluent's Consumer insists on a group.id
# KIP-714 telemetry (GetTelemetrySubscriptions, PushTelemetry) is on by default in
# librdkafka 2.x; it is not what the Kafka policy tests are about, so keep it off.
CONFLUENT_COMMON: dict[str, Any] = {"enable.metrics.push": False}


# -- error names ---------------------------------------------------------------------------

def kafka_python_error_name(exc: BaseException | type[BaseException]) -> str:
    """``TopicAuthorizationFailedError`` -> ``TOPIC_AUTHORIZATION_FAILED``; client-local
    ones -> ``_`` + upper snake case of the class name without ``Error``."""
    import kafka.errors as errors

    cls = exc if isinstance(exc, type) else type(exc)
    if issubclass(cls, errors.BrokerResponseError) and cls.message:
        return cls.message
    name = cls.__name__.removesuffix("Error")
    return "_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _is_authz(name: str) -> bool:
    return name.endswith("AUTHORIZATION_FAILED")


# -- client construction -------------------------------------------------------------------

def _kp_producer(args: argparse.Namespace, **extra: Any) -> Any:
    from kafka import KafkaProducer

    timeout_ms = int(args.timeout * 1000)
    config: dict[str, Any] = dict(
        bootstrap_servers=args.bootstrap, api_version=KAFKA_PYTHON_API_VERSION,
        acks=1, enable_idempotence=False,
        max_block_ms=timeout_ms,  # bounds the metadata wait inside send()
        request_timeout_ms=timeout_ms, delivery_timeout_ms=timeout_ms,
    )
    if args.client_id:
        config["client_id"] = args.client_id
    config.update(extra)
    return KafkaProducer(**config)


def _ck_producer(args: argparse.Namespace, client_errors: Counter,
                 **extra: Any) -> Any:
    from confluent_kafka import Producer

    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap, "acks": 1, **CONFLUENT_COMMON,
        "message.timeout.ms": int(args.timeout * 1000),
        "error_cb": lambda err: client_errors.update([err.name()]),
    }
    if args.client_id:
        config["client.id"] = args.client_id
    config.update(extra)
    return Producer(config)


def _payload(size: int) -> bytes:
    return (b"x" * size)[:size]


# -- produce -------------------------------------------------------------------------------

def produce(args: argparse.Namespace) -> dict[str, Any]:
    errors: Counter = Counter()
    client_errors: Counter = Counter()
    value = _payload(args.size)
    start = time.monotonic()
    sent = delivered = 0
    if args.client == "kafka-python":
        producer = None
        try:
            producer = _kp_producer(args)
            futures = []
            for _ in range(args.count):
                sent += 1
                try:
                    futures.append(producer.send(args.topic, value))
                except Exception as exc:  # metadata refused/timed out: client unusable
                    errors[kafka_python_error_name(exc)] += 1
                    break
            try:
                producer.flush(max(0.1, args.timeout - (time.monotonic() - start)))
            except Exception:
                pass  # a flush timeout: each message's outcome is in its future below
            for future in futures:
                try:
                    future.get(timeout=max(0.1, args.timeout - (time.monotonic() - start)))
                    delivered += 1
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
        except Exception as exc:  # bootstrap failure in the constructor
            errors[kafka_python_error_name(exc)] += 1
        finally:
            if producer is not None:
                producer.close(timeout=2)
    else:
        producer = _ck_producer(args, client_errors)

        def report(err: Any, _msg: Any) -> None:
            nonlocal delivered
            if err is None:
                delivered += 1
            else:
                errors[err.name()] += 1

        for _ in range(args.count):
            refused = _ck_produce(producer, args.topic, value, report)
            if refused:
                errors[refused] += 1
            sent += 1
        left = producer.flush(max(0.1, args.timeout - (time.monotonic() - start)))
        if left:
            errors["_MSG_TIMED_OUT"] += left
    return {"client": args.client, "sent": sent, "delivered": delivered,
            "errors": dict(errors), "client_errors": dict(client_errors),
            "seconds": round(time.monotonic() - start, 3)}


def _ck_produce(producer: Any, topic: str, value: bytes,
                callback: Callable[[Any, Any], None]) -> str | None:
    """Queue one message. Returns the error name when librdkafka refuses it up front:
    once a topic got TOPIC_AUTHORIZATION_FAILED, produce() raises it synchronously."""
    from confluent_kafka import KafkaException

    while True:
        try:
            producer.produce(topic, value, on_delivery=callback)
            producer.poll(0)
            return None
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)
        except KafkaException as exc:
            return exc.args[0].name()


# -- consume -------------------------------------------------------------------------------

def consume(args: argparse.Namespace) -> dict[str, Any]:
    errors: Counter = Counter()
    client_errors: Counter = Counter()
    start = time.monotonic()
    deadline = start + args.timeout
    consumed = 0

    def done() -> bool:
        return (args.expect is not None and consumed >= args.expect) or \
            any(_is_authz(name) for name in errors) or time.monotonic() >= deadline

    if args.client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = None
        try:
            config: dict[str, Any] = dict(
                bootstrap_servers=args.bootstrap, api_version=KAFKA_PYTHON_API_VERSION,
                group_id=args.group, auto_offset_reset="earliest",
                enable_auto_commit=args.group is not None,
            )
            if args.client_id:
                config["client_id"] = args.client_id
            consumer = KafkaConsumer(**config)
            if args.group:
                consumer.subscribe([args.topic])
            else:
                partition = TopicPartition(args.topic, args.partition)
                consumer.assign([partition])
                consumer.seek_to_beginning(partition)
            while not done():
                try:
                    batches = consumer.poll(timeout_ms=200)
                    consumed += sum(len(records) for records in batches.values())
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
                    time.sleep(0.1)  # don't spin on a persistent error
        except Exception as exc:
            errors[kafka_python_error_name(exc)] += 1
        finally:
            if consumer is not None:
                try:
                    consumer.close()  # commits (group case) and leaves the group
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
    else:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        config = {
            "bootstrap.servers": args.bootstrap, **CONFLUENT_COMMON,
            "group.id": args.group or ASSIGN_GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": args.group is not None,
            "error_cb": lambda err: client_errors.update([err.name()]),
        }
        if args.client_id:
            config["client.id"] = args.client_id
        consumer = Consumer(config)
        if args.group:
            consumer.subscribe([args.topic])
        else:
            # Learn the leader first: assign() before it is known parks the offset
            # lookup on librdkafka's 500 ms retry timer.
            # A topic-level error in that Metadata (a denial) is surfaced here.
            try:
                meta = consumer.list_topics(args.topic, timeout=args.timeout)
                topic_error = meta.topics[args.topic].error
                if topic_error is not None:
                    errors[topic_error.name()] += 1
            except Exception as exc:
                errors[exc.args[0].name() if exc.args else "_EXCEPTION"] += 1
            consumer.assign([TopicPartition(args.topic, args.partition, OFFSET_BEGINNING)])
        try:
            while not done():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    errors[msg.error().name()] += 1
                else:
                    consumed += 1
        finally:
            consumer.close()
    return {"client": args.client, "consumed": consumed, "errors": dict(errors),
            "client_errors": dict(client_errors),
            "seconds": round(time.monotonic() - start, 3)}


# -- benchmarks ----------------------------------------------------------------------------

def _rate(count: int, seconds: float, size: int) -> dict[str, Any]:
    seconds = max(seconds, 1e-9)
    return {"msgs_per_s": round(count / seconds, 1),
            "mb_per_s": round(count * size / seconds / 1e6, 2)}


def bench_produce(args: argparse.Namespace) -> dict[str, Any]:
    errors: Counter = Counter()
    client_errors: Counter = Counter()
    value = _payload(args.size)
    delivered = 0
    if args.client == "kafka-python":
        producer = _kp_producer(args)
        try:
            producer.send(args.topic, value).get(timeout=args.timeout)  # warm-up
            start = time.monotonic()
            futures = [producer.send(args.topic, value) for _ in range(args.count)]
            try:
                producer.flush(args.timeout)
            except Exception:
                pass  # a flush timeout: each message's outcome is in its future below
            for future in futures:
                try:
                    future.get(timeout=args.timeout)
                    delivered += 1
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
            seconds = time.monotonic() - start
        except Exception as exc:
            errors[kafka_python_error_name(exc)] += 1
            seconds = 0.0
        finally:
            producer.close(timeout=2)
    else:
        producer = _ck_producer(args, client_errors)

        def report(err: Any, _msg: Any) -> None:
            nonlocal delivered
            if err is None:
                delivered += 1
            else:
                errors[err.name()] += 1

        _ck_produce(producer, args.topic, value, lambda *_: None)  # warm-up
        producer.flush(args.timeout)
        start = time.monotonic()
        for _ in range(args.count):
            refused = _ck_produce(producer, args.topic, value, report)
            if refused:
                errors[refused] += 1
        left = producer.flush(args.timeout)
        seconds = time.monotonic() - start
        if left:
            errors["_MSG_TIMED_OUT"] += left
    return {"client": args.client, "mode": "bench-produce", "count": args.count,
            "size": args.size, "delivered": delivered, "errors": dict(errors),
            "client_errors": dict(client_errors), "seconds": round(seconds, 4),
            **_rate(delivered, seconds, args.size)}


PREFILL_BYTES = 4_000_000  # the mock keeps ~5 MB per partition and drops older batches


def _prefill(args: argparse.Namespace) -> dict[str, Any]:
    # Always with librdkafka and ~1 MB batches: the mock answers each Fetch with at
    # most ONE stored batch per partition, so the batch size set here bounds what a
    # fetch carries (kafka-python's 16 KB batches would make fetch 60x slower).
    count = max(1, min(args.count, PREFILL_BYTES // max(args.size, 1)))
    client_errors: Counter = Counter()
    producer = _ck_producer(args, client_errors, **{"linger.ms": 100,
                                                    "batch.size": 1_000_000})
    delivered = 0
    value = _payload(args.size)

    def report(err: Any, _msg: Any) -> None:
        nonlocal delivered
        delivered += err is None

    for _ in range(count):
        _ck_produce(producer, args.topic, value, report)
    producer.flush(args.timeout)
    return {"count": count, "delivered": delivered}


def bench_fetch(args: argparse.Namespace) -> dict[str, Any]:
    """Fetch ``--count`` messages of partition 0, re-reading the retained log from its
    start as often as needed (the mock keeps only ~5 MB). Fetch max-wait is 0 so the
    fetch already in flight when the end is reached comes back at once instead of
    parking for 500 ms in the mock before the rewind takes effect."""
    result: dict[str, Any] = {"client": args.client, "mode": "bench-fetch",
                              "count": args.count, "size": args.size}
    if args.prefill:
        result["prefill"] = _prefill(args)
    errors: Counter = Counter()
    consumed = first_batch = 0
    first = last = 0.0
    start = time.monotonic()
    deadline = start + args.timeout

    def seen(n: int) -> None:
        nonlocal consumed, first_batch, first, last
        if not n:
            return
        last = time.monotonic()
        if not consumed:
            first, first_batch = last, n
        consumed += n

    if args.client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap,
                                 api_version=KAFKA_PYTHON_API_VERSION, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=0)
        try:
            tp = TopicPartition(args.topic, 0)
            consumer.assign([tp])
            low = consumer.beginning_offsets([tp])[tp]
            high = consumer.end_offsets([tp])[tp]
            if high <= low:
                errors["_NO_MESSAGES"] += 1
            consumer.seek(tp, low)
            while high > low and consumed < args.count and time.monotonic() < deadline:
                try:
                    batches = consumer.poll(timeout_ms=200, max_records=args.count - consumed)
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
                    if _is_authz(kafka_python_error_name(exc)):
                        break
                    continue
                records = batches.get(tp, [])
                seen(len(records))
                if records and records[-1].offset >= high - 1:
                    consumer.seek(tp, low)
        except Exception as exc:  # offsets lookup refused or timed out
            errors[kafka_python_error_name(exc)] += 1
        finally:
            consumer.close()
    else:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer({"bootstrap.servers": args.bootstrap, **CONFLUENT_COMMON,
                             "group.id": ASSIGN_GROUP, "enable.auto.commit": False,
                             "fetch.wait.max.ms": 0})
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, 0),
                                                       timeout=args.timeout)
            if high <= low:
                errors["_NO_MESSAGES"] += 1
            else:
                consumer.assign([TopicPartition(args.topic, 0, low)])
            while high > low and consumed < args.count and time.monotonic() < deadline:
                # Wait for one message, then take what is already there in one call:
                # consume(n, timeout) would block until n arrive or the timeout, and
                # per-message poll() would measure the Python loop, not the network.
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                batch = [msg, *consumer.consume(
                    num_messages=max(1, min(10_000, args.count - consumed - 1)), timeout=0)]
                good = [msg for msg in batch if not msg.error()]
                for msg in batch:
                    if msg.error():
                        errors[msg.error().name()] += 1
                seen(len(good))
                if any(_is_authz(name) for name in errors):
                    break
                if good and good[-1].offset() >= high - 1:
                    consumer.seek(TopicPartition(args.topic, 0, low))
        except KafkaException as exc:  # watermarks lookup refused or timed out
            errors[exc.args[0].name()] += 1
        finally:
            consumer.close()
    window = last - first
    result.update(consumed=consumed, errors=dict(errors),
                  seconds=round(time.monotonic() - start, 4), window_seconds=round(window, 4))
    # Rate from the first batch received to the last one: bootstrap, ListOffsets and
    # the first round trip are not in it.
    result.update(_rate(consumed - first_batch, window, args.size))
    return result


def latency(args: argparse.Namespace) -> dict[str, Any]:
    errors: Counter = Counter()
    client_errors: Counter = Counter()
    value = _payload(args.size)
    samples: list[float] = []
    if args.client == "kafka-python":
        producer = _kp_producer(args, linger_ms=0)
        try:
            producer.send(args.topic, value).get(timeout=args.timeout)  # warm-up
            for _ in range(args.count):
                t0 = time.perf_counter()
                try:
                    producer.send(args.topic, value).get(timeout=args.timeout)
                    samples.append(time.perf_counter() - t0)
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
        except Exception as exc:
            errors[kafka_python_error_name(exc)] += 1
        finally:
            producer.close(timeout=2)
    else:
        # linger.ms=0: librdkafka's default 5 ms linger would be most of the latency.
        producer = _ck_producer(args, client_errors, **{"linger.ms": 0})
        outcome: list[Any] = []

        def report(err: Any, _msg: Any) -> None:
            outcome.append(err)

        for i in range(args.count + 1):  # i == 0 is the warm-up
            outcome.clear()
            t0 = time.perf_counter()
            refused = _ck_produce(producer, args.topic, value, report)
            if refused:
                errors[refused] += 1
                continue
            end = time.monotonic() + args.timeout
            # poll() returns as soon as the delivery report is served; flush() might
            # add its own wake-up granularity.
            while not outcome and time.monotonic() < end:
                producer.poll(args.timeout)
            if not outcome:
                errors["_MSG_TIMED_OUT"] += 1
            elif outcome[0] is not None:
                errors[outcome[0].name()] += 1
            elif i:
                samples.append(time.perf_counter() - t0)
        producer.flush(1)
    result: dict[str, Any] = {"client": args.client, "mode": "latency", "count": args.count,
                              "size": args.size, "acked": len(samples),
                              "errors": dict(errors), "client_errors": dict(client_errors)}
    if samples:
        ms = sorted(s * 1000 for s in samples)
        result.update(p50_ms=round(statistics.median(ms), 3),
                      p99_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
                      mean_ms=round(statistics.fmean(ms), 3), max_ms=round(ms[-1], 3))
    return result


# -- CLI -----------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "produce": produce, "consume": consume, "bench-produce": bench_produce,
    "bench-fetch": bench_fetch, "latency": latency,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in COMMANDS:
        one = sub.add_parser(name)
        one.add_argument("--client", choices=CLIENTS, required=True)
        one.add_argument("--bootstrap", required=True, help="IP:PORT[,IP:PORT...]")
        one.add_argument("--topic", required=True)
        one.add_argument("--timeout", type=float, default=10.0, help="seconds, overall")
        one.add_argument("--client-id", default=None)
        one.add_argument("--size", type=int, default=1000, help="message bytes")
        if name == "consume":
            one.add_argument("--group", default=None,
                             help="consumer group (subscribe); none: assign --partition")
            one.add_argument("--partition", type=int, default=0,
                             help="without --group: the partition read from its start")
            one.add_argument("--expect", type=int, default=None)
        else:
            one.add_argument("--count", type=int, required=True)
        if name == "bench-fetch":
            one.add_argument("--prefill", action="store_true",
                             help="produce --count messages first (untimed)")
    args = parser.parse_args(argv)
    try:
        result = COMMANDS[args.cmd](args)
    except Exception as exc:  # a crash is data too: the caller asserts on the JSON
        result = {"client": args.client, "errors": {"_EXCEPTION": 1},
                  "exception": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
