"""Real Kafka clients for the Kafka L7 tests and benchmark, run inside a client's
network namespace with the host's Python::

    nsenter -t PID -n python -m tests.support.kafka_clients <cmd> --client kafka-python|confluent \\
        --bootstrap IP:PORT --topic T ...

Every command prints ONE JSON line on stdout and exits 0, Kafka errors included (errors
are data; only bad arguments exit non-zero). Logs of the clients go to stderr.

- ``produce --count N [--size 1000] [--client-id ID] [--timeout 10]``
  -> ``{"client", "sent", "delivered", "errors": {NAME: n}, "seconds"}``
- ``consume [--group G] [--expect N] [--timeout 10] [--client-id ID]``: with a group,
  subscribe (JoinGroup/SyncGroup, offsets committed on close); without, assign
  partition 0 and start from the beginning (no group coordinator involved). Stops at N
  messages, at the first ``*_AUTHORIZATION_FAILED`` or at the timeout.
  -> ``{"client", "consumed", "errors", "seconds"}``
- ``bench-produce --count N [--size 1000]``: one warm-up message (acked), then N
  messages as fast as the client batches them; times first send -> last ack.
  -> ``{..., "msgs_per_s", "mb_per_s"}``
- ``bench-fetch --count N [--prefill]``: assign partition 0 from the beginning and
  fetch N messages (``--prefill`` produces them first, untimed); the rate is taken
  between the first and the last message so connection setup is not in it.
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
  Fetch v16, Metadata v12+). ``group.id`` is mandatory in confluent-kafka's Consumer,
  so the group-less consumer sets ``group.id=""`` (librdkafka then creates no consumer
  group handler: no FindCoordinator/OffsetFetch) and never commits.
- Both: ``acks=1`` and no idempotence (so no InitProducerId request is needed and
  produce errors come back per message).
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


def confluent_error_name(err: Any) -> str:
    """A confluent_kafka.KafkaError (or KafkaException wrapping one) -> its name."""
    if hasattr(err, "args") and err.args and hasattr(err.args[0], "name"):
        err = err.args[0]
    return err.name()


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
            producer.flush(max(0.1, args.timeout - (time.monotonic() - start)))
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
            _ck_produce(producer, args.topic, value, report)
            sent += 1
        left = producer.flush(max(0.1, args.timeout - (time.monotonic() - start)))
        if left:
            errors["_MSG_TIMED_OUT"] += left
    return {"client": args.client, "sent": sent, "delivered": delivered,
            "errors": dict(errors), "client_errors": dict(client_errors),
            "seconds": round(time.monotonic() - start, 3)}


def _ck_produce(producer: Any, topic: str, value: bytes,
                callback: Callable[[Any, Any], None]) -> None:
    while True:
        try:
            producer.produce(topic, value, on_delivery=callback)
            producer.poll(0)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)


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
                partition = TopicPartition(args.topic, 0)
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
            consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
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
            producer.flush(args.timeout)
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
            _ck_produce(producer, args.topic, value, report)
        left = producer.flush(args.timeout)
        seconds = time.monotonic() - start
        if left:
            errors["_MSG_TIMED_OUT"] += left
    return {"client": args.client, "mode": "bench-produce", "count": args.count,
            "size": args.size, "delivered": delivered, "errors": dict(errors),
            "client_errors": dict(client_errors), "seconds": round(seconds, 4),
            **_rate(delivered, seconds, args.size)}


def bench_fetch(args: argparse.Namespace) -> dict[str, Any]:
    if args.prefill:
        prefill = argparse.Namespace(**{**vars(args), "client": "confluent"})
        filled = produce(prefill)
        if filled["delivered"] < args.count:
            return {"client": args.client, "mode": "bench-fetch", "prefill": filled}
    errors: Counter = Counter()
    stamps: list[float] = []
    start = time.monotonic()
    deadline = start + args.timeout
    if args.client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap,
                                 api_version=KAFKA_PYTHON_API_VERSION, group_id=None,
                                 enable_auto_commit=False)
        partition = TopicPartition(args.topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        try:
            while len(stamps) < args.count and time.monotonic() < deadline:
                try:
                    batches = consumer.poll(timeout_ms=200, max_records=args.count)
                except Exception as exc:
                    errors[kafka_python_error_name(exc)] += 1
                    if _is_authz(kafka_python_error_name(exc)):
                        break
                    continue
                now = time.monotonic()
                stamps += [now] * sum(len(records) for records in batches.values())
        finally:
            consumer.close()
    else:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": args.bootstrap, **CONFLUENT_COMMON,
                             "group.id": ASSIGN_GROUP, "enable.auto.commit": False})
        consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
        try:
            while len(stamps) < args.count and time.monotonic() < deadline:
                # consume() hands back a batch per call: per-message poll() would
                # measure the Python loop more than the network.
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    if msg.error():
                        errors[msg.error().name()] += 1
                    else:
                        stamps.append(time.monotonic())
                if any(_is_authz(name) for name in errors):
                    break
        finally:
            consumer.close()
    stamps = stamps[:args.count]
    window = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    result = {"client": args.client, "mode": "bench-fetch", "count": args.count,
              "size": args.size, "consumed": len(stamps), "errors": dict(errors),
              "seconds": round(time.monotonic() - start, 4),
              "window_seconds": round(window, 4)}
    # Rate over first->last message: excludes bootstrap and the first round trip.
    result.update(_rate(max(len(stamps) - 1, 0), window, args.size))
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
            producer.produce(args.topic, value, on_delivery=report)
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
                             help="consumer group (subscribe); none: assign partition 0")
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
