"""The Kafka transaction guarantees the ledger's exactly-once design relies on (SPEC §2)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.kafka.helpers import read_topic, values

pytestmark = pytest.mark.kafka

# Short, so a transaction left open by a dead producer could not block readers for long even
# if nobody fenced it; every test below fences explicitly anyway.
TRANSACTION_TIMEOUT_MS = 10_000
TXN_CALL_TIMEOUT_S = 30.0


def transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(TXN_CALL_TIMEOUT_S)
    return producer


def test_read_committed_sees_committed_and_never_aborted(
    kafka_bootstrap: str, create_topic: Callable[..., str]
) -> None:
    topic = create_topic("events", partitions=2)
    producer = transactional_producer(kafka_bootstrap, f"txn-{uuid.uuid4()}")

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=f"k{i}", value=f"committed-1-{i}", partition=i % 2)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=f"k{i}", value=f"aborted-{i}", partition=i % 2)
    producer.flush(TXN_CALL_TIMEOUT_S)  # on the broker, not just buffered, before the abort
    producer.abort_transaction(TXN_CALL_TIMEOUT_S)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=f"k{i}", value=f"committed-2-{i}", partition=i % 2)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)

    committed = read_topic(kafka_bootstrap, topic, partitions=2)
    uncommitted = read_topic(kafka_bootstrap, topic, partitions=2, isolation="read_uncommitted")

    expected = {f"committed-1-{i}".encode() for i in range(5)} | {
        f"committed-2-{i}".encode() for i in range(3)
    }
    assert sorted(v for v in values(committed) if v is not None) == sorted(expected)
    assert len(committed) == 8
    # The aborted records really are in the log; only read_committed hides them.
    aborted = {f"aborted-{i}".encode() for i in range(5)}
    assert aborted <= set(values(uncommitted))
    assert not aborted & set(values(committed))
    # Order within a partition is preserved across transactions.
    p0 = [r.value for r in committed if r.partition == 0]
    assert p0 == [
        b"committed-1-0",
        b"committed-1-2",
        b"committed-1-4",
        b"committed-2-0",
        b"committed-2-2",
    ]


def test_zombie_producer_is_fenced_and_its_writes_never_land(
    kafka_bootstrap: str, create_topic: Callable[..., str]
) -> None:
    topic = create_topic("events")
    transactional_id = f"txn-{uuid.uuid4()}"
    zombie = transactional_producer(kafka_bootstrap, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"from-zombie")
    zombie.flush(TXN_CALL_TIMEOUT_S)

    successor = transactional_producer(kafka_bootstrap, transactional_id)  # bumps the epoch

    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(TXN_CALL_TIMEOUT_S)
    error = raised.value.args[0]
    assert error.fatal() or error.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    ), error

    successor.begin_transaction()
    successor.produce(topic, value=b"from-successor")
    successor.commit_transaction(TXN_CALL_TIMEOUT_S)

    assert values(read_topic(kafka_bootstrap, topic)) == [b"from-successor"]


KILLED_PRODUCER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Producer

    bootstrap, topic, transactional_id, count, timeout_ms = sys.argv[1:6]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": int(timeout_ms),
    })
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(int(count)):
        producer.produce(topic, key=str(i), value=f"uncommitted-{i}")
    remaining = producer.flush(30)
    if remaining:
        sys.exit(f"{remaining} messages not delivered")
    print("READY", flush=True)
    time.sleep(120)  # the test SIGKILLs us here, mid-transaction
    sys.exit("not killed")
    """
)


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout_s: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"child did not print {expected!r} within {timeout_s} s")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"child exited ({proc.wait()}) before {expected!r}: {stderr}")
        if line.strip() == expected:
            return


def test_producer_killed_mid_transaction_leaves_nothing_and_is_fenced(
    kafka_bootstrap: str, create_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = create_topic("events")
    transactional_id = f"txn-{uuid.uuid4()}"
    script = tmp_path / "producer.py"
    script.write_text(KILLED_PRODUCER_SCRIPT)
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            kafka_bootstrap,
            topic,
            transactional_id,
            "10",
            str(TRANSACTION_TIMEOUT_MS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_line(child, "READY", timeout_s=60)
        child.send_signal(signal.SIGKILL)  # no chance to commit, abort or say goodbye
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

    # The ten records are in the log, but inside a transaction that never committed.
    assert len(read_topic(kafka_bootstrap, topic, isolation="read_uncommitted")) == 10
    assert read_topic(kafka_bootstrap, topic) == []

    # A successor with the same transactional.id fences the dead one and aborts its transaction.
    successor = transactional_producer(kafka_bootstrap, transactional_id)
    assert read_topic(kafka_bootstrap, topic) == []

    successor.begin_transaction()
    for i in range(3):
        successor.produce(topic, key=str(i), value=f"committed-{i}")
    successor.commit_transaction(TXN_CALL_TIMEOUT_S)

    committed = read_topic(kafka_bootstrap, topic)
    assert values(committed) == [b"committed-0", b"committed-1", b"committed-2"]
    # They follow the ten aborted records and the abort marker in the log.
    assert min(r.offset for r in committed) > 10


def consume_n(consumer: Consumer, n: int, timeout_s: float = 60.0) -> list[Any]:
    """Poll until `n` messages arrived (the first poll also waits for the group assignment)."""
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < n:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"got {len(messages)} of {n} messages in {timeout_s} s")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            raise AssertionError(f"consume error: {msg.error()}")
        messages.append(msg)
    return messages


def group_consumer(bootstrap: str, group_id: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,  # offsets are committed by the producer's transaction
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    return consumer


def test_offsets_committed_in_transaction_survive_consumer_restart(
    kafka_bootstrap: str, create_topic: Callable[..., str]
) -> None:
    source = create_topic("commands")
    sink = create_topic("events")
    group_id = f"group-{uuid.uuid4()}"

    plain = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        plain.produce(source, value=f"cmd-{i}")
    assert plain.flush(TXN_CALL_TIMEOUT_S) == 0

    consumer = group_consumer(kafka_bootstrap, group_id, source)
    producer = transactional_producer(kafka_bootstrap, f"txn-{uuid.uuid4()}")
    try:
        # Process 4 commands; their outputs and the input offsets commit together.
        producer.begin_transaction()
        for msg in consume_n(consumer, 4):
            producer.produce(sink, value=b"event-for-" + msg.value())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()),
            consumer.consumer_group_metadata(),
            TXN_CALL_TIMEOUT_S,
        )
        producer.commit_transaction(TXN_CALL_TIMEOUT_S)

        # Process 3 more, then abort: neither their outputs nor their offsets may stick.
        producer.begin_transaction()
        for msg in consume_n(consumer, 3):
            producer.produce(sink, value=b"event-for-" + msg.value())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()),
            consumer.consumer_group_metadata(),
            TXN_CALL_TIMEOUT_S,
        )
        producer.abort_transaction(TXN_CALL_TIMEOUT_S)
    finally:
        consumer.close()  # no auto-commit: closing commits nothing

    restarted = group_consumer(kafka_bootstrap, group_id, source)
    try:
        resumed = consume_n(restarted, 1)
        assert (resumed[0].offset(), resumed[0].value()) == (4, b"cmd-4")
        committed = restarted.committed([TopicPartition(source, 0)], timeout=10)
        assert committed[0].offset == 4
    finally:
        restarted.close()

    assert values(read_topic(kafka_bootstrap, sink)) == [
        f"event-for-cmd-{i}".encode() for i in range(4)
    ]
