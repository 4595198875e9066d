"""`ledger bench broker`: what the broker costs per request of the kinds the ledger sends it.

On the configured broker (the local one when none is), with topics of its own that it deletes
at the end, three probes, each for `--duration` seconds:

- produce: an idempotent producer (the client's settings) sends small messages at `--rate` a
  second round-robin over `--partitions` partitions, which librdkafka sends as one
  ProduceRequest per partition;
- fetch: the same, read by a read_committed consumer with the processor's fetch settings
  (the broker gathers up to `fetch.wait.max.ms` of messages per fetch) and, for comparison,
  one answering each fetch as soon as there is a message (`fetch.min.bytes` 1);
- transaction: back-to-back transactions of the processor's shape (a message to each of
  `--partitions` partitions, one to a results partition, `send_offsets_to_transaction`,
  commit), rotated over three transactional producers as the processor does.

For each: the broker's CPU per message or transaction (when the broker runs on this machine),
and for transactions the commit's wall time (p50, p99). The last line printed is one JSON
object with the figures and the parameters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.bench_pipeline import cpu_seconds
from processors.kafka_broker import bootstrap_pid, ensure_broker
from processors.service import COMMANDS_FETCH_WAIT_MS, TRANSACTION_PRODUCERS
from processors.setup import delete_topics_with_prefix
from schemas.topics import Topics

__all__ = ["BrokerBenchParams", "add_arguments", "run", "run_broker_bench"]


@dataclass(frozen=True)
class BrokerBenchParams:
    partitions: int = 8
    rate_per_s: int = 2_000
    duration_s: float = 10.0
    # The processor's commands consumer: the broker gathers this long per fetch.
    fetch_wait_ms: int = COMMANDS_FETCH_WAIT_MS


class _BrokerCpu:
    """CPU seconds the broker process has used, when it runs on this machine."""

    def __init__(self, bootstrap: str) -> None:
        pid = bootstrap_pid(bootstrap)
        self.process = psutil.Process(pid) if pid is not None else None

    def seconds(self) -> float:
        return 0.0 if self.process is None else cpu_seconds([self.process])

    def per_unit_us(self, since_s: float, count: int) -> float | None:
        if self.process is None:
            return None
        return round((self.seconds() - since_s) * 1e6 / max(1, count), 1)


def _produce_at_rate(producer: Producer, topic: str, params: BrokerBenchParams) -> int:
    """Small messages round-robin over the partitions at the rate; returns how many."""
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < params.duration_s:
        producer.produce(topic, value=b"x" * 200, partition=sent % params.partitions)
        producer.poll(0)
        sent += 1
        delay_s = started + sent / params.rate_per_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
    producer.flush(30)
    return sent


def _client_producer(bootstrap: str) -> Producer:
    # The ledger client's settings (producers/_core.py).
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "socket.nagle.disable": True,
        }
    )


def _probe_produce(bootstrap: str, topic: str, params: BrokerBenchParams) -> dict[str, Any]:
    broker = _BrokerCpu(bootstrap)
    producer = _client_producer(bootstrap)
    since_s = broker.seconds()
    sent = _produce_at_rate(producer, topic, params)
    return {
        "produce_messages": sent,
        "produce_broker_cpu_us_per_message": broker.per_unit_us(since_s, sent),
    }


def _probe_fetch(
    bootstrap: str, topic: str, params: BrokerBenchParams, min_bytes: int, label: str
) -> dict[str, Any]:
    """Produce at the rate while a read_committed consumer reads; the broker's CPU per
    message covers both, so the produce probe's figure is the baseline to subtract."""
    broker = _BrokerCpu(bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.{label}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": params.fetch_wait_ms,
            "fetch.min.bytes": min_bytes,
        }
    )
    consumer.assign([TopicPartition(topic, p, -1) for p in range(params.partitions)])
    done = threading.Event()
    read = 0

    def drain() -> None:
        nonlocal read
        while not done.is_set():
            read += sum(m.error() is None for m in consumer.consume(2000, 0.05))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    time.sleep(1)  # assigned and fetching
    producer = _client_producer(bootstrap)
    since_s = broker.seconds()
    sent = _produce_at_rate(producer, topic, params)
    deadline = time.monotonic() + 10
    while read < sent and time.monotonic() < deadline:
        time.sleep(0.01)  # the last fetches belong to the figure too
    cpu_us = broker.per_unit_us(since_s, sent)
    done.set()
    reader.join()
    consumer.close()
    return {f"{label}_read": read, f"{label}_broker_cpu_us_per_message": cpu_us}


def _probe_transactions(
    bootstrap: str, topics: Topics, params: BrokerBenchParams
) -> dict[str, Any]:
    broker = _BrokerCpu(bootstrap)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topics.prefix}group"})
    consumer.subscribe([topics.commands])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)  # joined: the offsets are committed under a live generation
    metadata = consumer.consumer_group_metadata()
    producers = []
    for index in range(TRANSACTION_PRODUCERS):
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": f"{topics.prefix}probe-{index}",
                "enable.idempotence": True,
                "linger.ms": 1,
                "compression.type": "lz4",
            }
        )
        producer.init_transactions(30)
        producers.append(producer)
    commits_s: list[float] = []
    since_s = broker.seconds()
    started = time.monotonic()
    while time.monotonic() - started < params.duration_s:
        producer = producers[len(commits_s) % len(producers)]
        began = time.perf_counter()
        producer.begin_transaction()
        for partition in range(params.partitions):
            producer.produce(topics.events, value=b"e" * 300, partition=partition)
        producer.produce(topics.results, value=b"r" * 100, partition=0)
        offsets = [
            TopicPartition(topics.commands, p, len(commits_s)) for p in range(params.partitions)
        ]
        producer.send_offsets_to_transaction(offsets, metadata, 30)
        producer.commit_transaction(30)
        commits_s.append(time.perf_counter() - began)
    count = len(commits_s)
    cpu_us = broker.per_unit_us(since_s, count)
    consumer.close()
    commits_s.sort()
    return {
        "transactions": count,
        "transactions_per_s": round(count / (time.monotonic() - started)),
        "transaction_ms_p50": round(1000 * statistics.median(commits_s), 2),
        "transaction_ms_p99": round(1000 * commits_s[int(count * 0.99)], 2),
        "transaction_broker_cpu_ms": None if cpu_us is None else round(cpu_us / 1000, 2),
    }


def run_broker_bench(params: BrokerBenchParams) -> dict[str, Any]:
    from processors.setup import ensure_topics

    bootstrap = ensure_broker()
    topics = Topics(f"bench-broker-{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, params.partitions)
    try:
        figures: dict[str, Any] = {"benchmark": "broker"}
        figures.update(_probe_produce(bootstrap, topics.commands, params))
        print(f"produce: {figures}", file=sys.stderr)
        figures.update(_probe_fetch(bootstrap, topics.commands, params, 1 << 20, "fetch_gathered"))
        figures.update(_probe_fetch(bootstrap, topics.commands, params, 1, "fetch_at_once"))
        print(f"fetch: {figures}", file=sys.stderr)
        figures.update(_probe_transactions(bootstrap, topics, params))
        return {**figures, **asdict(params)}
    finally:
        for failure in delete_topics_with_prefix(bootstrap, topics.prefix):
            print(f"(could not delete a bench topic: {failure})", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BrokerBenchParams()
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--rate", type=int, default=defaults.rate_per_s)
    parser.add_argument("--duration", type=float, default=defaults.duration_s)
    parser.add_argument("--fetch-wait-ms", type=int, default=defaults.fetch_wait_ms)


def run(args: argparse.Namespace) -> int:
    params = BrokerBenchParams(args.partitions, args.rate, args.duration, args.fetch_wait_ms)
    if params.partitions < 1 or params.rate_per_s < 1 or params.duration_s <= 0:
        raise ValueError("--partitions and --rate must be at least 1, --duration above 0")
    print(json.dumps(run_broker_bench(params)), flush=True)
    return 0
