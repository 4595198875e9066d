"""Malformed commands are never fatal (SPEC §7): each goes to the dead-letter topic with its
reason, its submitter (when the headers name one) gets a rejection, and processing goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from processors.setup import ensure_topics
from producers import LedgerClient
from schemas import Account
from schemas.codec import decode_result_batch, encode_command_batch
from schemas.messages import CommandBatch, Operation
from schemas.topics import Topics, results_partition
from tests.pipeline.harness import ProcessorProcess, pipeline_env

pytestmark = pytest.mark.kafka

PARTITIONS = 2


@pytest.fixture
def running(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Topics]:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    env = pipeline_env(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path / "data")
    processor = ProcessorProcess("a", env, tmp_path / "processor.log").start()
    try:
        yield topics
    finally:
        processor.stop()


def _read_all(bootstrap: str, topic: str, partition: int, want: int, timeout_s: float) -> list:  # type: ignore[type-arg]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bad-input-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    found: list = []  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < want and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    found.append(message)
        return found
    finally:
        consumer.close()


def test_malformed_commands_are_dead_lettered_and_rejected(
    kafka_bootstrap: str, running: Topics
) -> None:
    topics = running
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    submitter = "bad-input-test"
    garbage = [
        b"",  # empty
        b"\x00garbage",  # wrong magic
        b"L" + bytes(8) + b"\x01\x02",  # unknown schema fingerprint
        encode_command_batch(CommandBatch(1, submitter, Operation.CREATE_ACCOUNTS))[:-3],  # cut
    ]
    for number, value in enumerate(garbage):
        producer.produce(
            topics.commands,
            value=value,
            partition=number % PARTITIONS,
            headers=[
                ("submitter", submitter.encode()),
                ("request-id", str(1000 + number).encode()),
            ],
        )
    producer.flush(30)

    letters = _read_all(kafka_bootstrap, topics.dead_letters, 0, len(garbage), 60)
    assert len(letters) == len(garbage)
    reasons = [dict(m.headers())["reason"].decode() for m in letters]
    assert all(reasons), reasons
    assert sorted(m.value() or b"" for m in letters) == sorted(garbage)

    rejections = _read_all(
        kafka_bootstrap,
        topics.results,
        results_partition(submitter, PARTITIONS),
        len(garbage),
        60,
    )
    decoded = [decode_result_batch(m.value()) for m in rejections]
    assert sorted(r.request_id for r in decoded) == [1000, 1001, 1002, 1003]
    assert all(r.rejection and r.rejection.startswith("malformed request: ") for r in decoded)

    # The processor is still there and answers valid requests.
    with LedgerClient(kafka_bootstrap, topics.prefix, timeout_s=60) as client:
        (result,) = client.create_accounts([Account(7, ledger=1, code=1)])
        assert result.status.name == "CREATED"
