"""Bounded-wait helpers shared by the Kafka tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    isolation: str = "read_committed",
    partitions: int = 1,
    timeout_s: float = 30.0,
) -> list[Record]:
    """Everything readable in `topic` from the beginning up to its current end.

    The end is the last stable offset for read_committed (so an open transaction hides what
    follows its first message) and the high watermark for read_uncommitted. Reading stops when
    every partition reported end-of-partition; it fails after `timeout_s`.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",  # required by librdkafka, never joined
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records: list[Record] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < partitions:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{topic}: end not reached in {timeout_s} s ({records!r})")
            msg: Any = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise AssertionError(f"consume error: {error}")
            at_end.discard(msg.partition())
            records.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value()))
        return records
    finally:
        consumer.close()


def values(records: list[Record]) -> list[bytes | None]:
    return [r.value for r in records]
