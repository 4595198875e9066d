"""The ledger's topics (docs/PIPELINE.md, "Topics"): creating them, and reading a partition's
committed messages back (recovery, the clock control, tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # (admin re-exports both untyped)
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic  # defined (and typed) here; admin re-exports it

from schemas.topics import Topics

__all__ = [
    "MESSAGE_BYTES_MAX",
    "TopicsError",
    "broker_setting",
    "ensure_topics",
    "last_committed",
    "partition_count",
    "read_committed",
]

# A full batch (8,189 events) is about 1 MiB of Avro, and an events batch of it 2.5 MiB.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
_KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicsError(RuntimeError):
    pass


def _specs(topics: Topics, partitions: int) -> dict[str, tuple[int, dict[str, str]]]:
    big = {"max.message.bytes": str(MESSAGE_BYTES_MAX)}
    return {
        # The log is the source of truth: commands (one result each, for the audit), events
        # and the processors' changelog are kept forever.
        topics.commands: (partitions, {**big, **_KEEP_FOREVER}),
        topics.events: (partitions, {**big, **_KEEP_FOREVER}),
        topics.processor_log: (partitions, {**big, **_KEEP_FOREVER}),
        # Checkpoints name sequence entries by offset; results prove one answer per command.
        topics.sequence: (1, {**big, **_KEEP_FOREVER}),
        topics.results: (partitions, {**big, **_KEEP_FOREVER}),
        topics.dead_letters: (1, {**big, **_KEEP_FOREVER}),
    }


def partition_count(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> int | None:
    metadata: Any = admin.list_topics(topic=topic, timeout=timeout_s)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return None
    return len(found.partitions)


def ensure_topics(
    bootstrap: str, topics: Topics, partitions: int, timeout_s: float = 30.0
) -> dict[str, int]:
    """Create the ledger's topics that do not exist; refuse existing ones of another shape.
    Returns each topic's partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = _specs(topics, partitions)
    try:
        existing = {name: partition_count(admin, name) for name in specs}
    except KafkaException as exc:
        raise TopicsError(f"cannot reach Kafka at {bootstrap}: {exc.args[0]}") from None
    missing = [
        NewTopic(name, num_partitions=count, replication_factor=1, config=config)
        for name, (count, config) in specs.items()
        if existing[name] is None
    ]
    if missing:
        futures = admin.create_topics(missing, operation_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                # Another process may have created it between our look and our request.
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicsError(f"cannot create topic {name}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    for name, (count, _config) in specs.items():
        while (found := partition_count(admin, name)) is None:
            if time.monotonic() > deadline:
                raise TopicsError(f"topic {name} did not appear within {timeout_s:.0f} s")
            time.sleep(0.1)
        if name in (topics.commands, topics.events, topics.processor_log) and found != count:
            raise TopicsError(
                f"topic {name} has {found} partitions but the ledger runs with {count}: "
                "use the same partition count (LEDGER_PARTITIONS) or another topic prefix"
            )
        counts[name] = found
    return counts


def delete_topics_with_prefix(
    bootstrap: str, prefix: str | tuple[str, ...], timeout_s: float = 30.0
) -> list[str]:
    """Delete every topic whose name starts with `prefix` (or one of them): a benchmark's or
    a test session's own, say (a broker that keeps every run's topics grows slower). Best
    effort; returns what could not be deleted, with the reason."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata: Any = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return [f"listing topics: {exc.args[0]}"]
    names = [name for name in metadata.topics if name.startswith(prefix)]
    failures = []
    if names:
        for name, future in admin.delete_topics(names, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                failures.append(f"{name}: {exc}")
    return failures


def broker_setting(bootstrap: str, name: str, timeout_s: float = 10.0) -> str | None:
    """A setting of the (first) broker as it runs, or None if it cannot be read: what a
    benchmark's figures depend on, reported with them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata: Any = admin.list_topics(timeout=timeout_s)
        broker = ConfigResource(ResourceType.BROKER, str(min(metadata.brokers)))
        entries = admin.describe_configs([broker])[broker].result(timeout=timeout_s)
    except (KafkaException, ValueError, TimeoutError):
        return None
    entry = entries.get(name)
    return None if entry is None else entry.value


# Transaction markers take offsets, so the last committed record is among the last few offsets
# of a partition, not at its high watermark.
_TAIL_OFFSETS = 64


def read_committed(
    bootstrap: str, topic: str, partition: int, start: int | None = 0
) -> Iterator[Message]:
    """The committed messages of one partition from offset `start` (None: only its last few
    offsets) to its end as of now."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ledger-reader",  # assign() only: nothing is ever committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            # A fetch with nothing new waits this long (default 500 ms): a recovery reads
            # three partitions to their end, and the end is where it stops.
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if start is None:
            start = high - _TAIL_OFFSETS
        start = max(start, low)
        if start >= high:
            return
        reader.assign([TopicPartition(topic, partition, start or OFFSET_BEGINNING)])
        while True:
            done = False
            # consume() waits out its whole timeout unless the batch fills: a short one, or
            # every read (three per partition on a takeover) would cost a second.
            for message in reader.consume(10_000, 0.05):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done = True
                        continue
                    raise KafkaException(error)
                yield message
            if done:
                return
    finally:
        reader.close()


def last_committed(bootstrap: str, topic: str, partition: int) -> Message | None:
    """The last committed message of a partition, or None."""
    last = None
    for message in read_committed(bootstrap, topic, partition, None):
        last = message
    return last
