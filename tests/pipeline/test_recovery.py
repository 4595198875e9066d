"""Where a recovering partition finds its checkpoint (docs/PIPELINE.md): on the last events
message past RocksDB's offset, else in RocksDB's meta, else (logs written before checkpoints
moved onto the events) the last processor-log record; and what a failed transaction leaves
behind (nothing that can hold a reader). Against the real broker and RocksDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from processors.ledger import MemoryState
from processors.partition import PartitionMachine
from processors.service import ProcessorService, ServiceConfig
from processors.setup import ensure_topics
from schemas.codec import encode_checkpoint, encode_event_batch
from schemas.messages import EventBatch
from schemas.topics import CHECKPOINT_HEADER, Topics
from tests.kafka.helpers import read_topic, values

pytestmark = pytest.mark.kafka


def checkpoint_at(commands_offset: int) -> bytes:
    """A fresh partition 0's checkpoint, as if it had read `commands_offset` commands."""
    machine = PartitionMachine(0, 1, MemoryState())
    return encode_checkpoint(machine.checkpoint(commands_offset, -1))


def test_recovery_takes_the_latest_checkpoint_from_wherever_it_is(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def append(topic: str, value: bytes, checkpoint: bytes | None = None) -> None:
        headers: list[tuple[str, str | bytes | None]] = []
        if checkpoint is not None:
            headers.append((CHECKPOINT_HEADER, checkpoint))
        producer.produce(topic, value=value, partition=0, headers=headers)
        assert producer.flush(30) == 0

    def recovered_commands_next(data_dir: Path) -> int:
        service = ProcessorService(ServiceConfig(kafka_bootstrap, data_dir, 1, topics))
        try:
            partition = service._recover_partition(0)
            partition.store.close()
            return partition.commands_next
        finally:
            service.close()

    no_events = encode_event_batch(EventBatch(0, [], -1))
    # An older version's log: events without checkpoints, the checkpoint in processor-log.
    append(topics.events, no_events)
    append(topics.processor_log, checkpoint_at(3))
    assert recovered_commands_next(tmp_path / "a") == 3
    # Then this version's: the last events message carries a later one, which wins.
    append(topics.events, no_events, checkpoint_at(5))
    append(topics.events, no_events, checkpoint_at(7))
    assert recovered_commands_next(tmp_path / "b") == 7
    # Nothing past RocksDB's offset: its own checkpoint (recovery committed it), not the
    # older processor-log record.
    assert recovered_commands_next(tmp_path / "b") == 7
    append(topics.events, no_events, checkpoint_at(9))
    assert recovered_commands_next(tmp_path / "b") == 9


def test_a_failed_transaction_fences_its_producer_instead_of_aborting(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """What spares the embedded broker KIP-890's per-write check: after a failure the processor
    replaces the producer (an epoch bump), so a write of the failed transaction still on its
    way is refused, instead of landing after an abort marker and opening a transaction that
    nobody ends (which would hide everything after it from read_committed readers)."""
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, 1)
    service = ProcessorService(ServiceConfig(kafka_bootstrap, tmp_path, 1, topics))
    try:
        failed = service.producers[0]
        failed.begin_transaction()
        failed.produce(topics.events, value=b"in the failed transaction", partition=0)
        assert failed.flush(30) == 0
        timed_out = KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
        service._transaction_failed(failed, timed_out, rebuild=False)
        assert service.producers[0] is not failed

        # The old producer's late write: refused by the partition (stale epoch), which librdkafka
        # reports as the producer's fatal error.
        with pytest.raises(KafkaException) as refused:
            failed.produce(topics.events, value=b"late", partition=0)
            failed.flush(30)
        assert refused.value.args[0].code() == KafkaError._FENCED, refused.value

        successor = service.producers[0]
        successor.begin_transaction()
        successor.produce(topics.events, value=b"after", partition=0)
        successor.commit_transaction(30)
        assert values(read_topic(kafka_bootstrap, topics.events)) == [b"after"]
    finally:
        service.close()
