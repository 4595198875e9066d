"""Malformed commands are never fatal (SPEC §7): each goes to the dead-letter topic with its
reason, its submitter (when the headers name one) gets a rejection, and processing goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from processors.setup import MESSAGE_BYTES_MAX
from producers import LedgerClient
from schemas import Account, Transfer
from schemas.codec import decode_result_batch, encode_command_batch
from schemas.messages import CommandBatch, Operation
from schemas.topics import Topics, results_partition
from tests.pipeline.harness import Pipeline, Tail, headers_of
from tests.pipeline.malformed import avro_string, encode_fields

pytestmark = pytest.mark.kafka

PARTITIONS = 2


@pytest.fixture
def running(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Topics]:
    pipeline = Pipeline.open(kafka_bootstrap, topic_prefix, tmp_path, PARTITIONS)
    pipeline.processor("a")
    try:
        yield pipeline.topics
    finally:
        pipeline.stop()


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


# Regressions of what the fuzzer (test_fuzz_commands.py) found.


def _produce(
    bootstrap: str, topics: Topics, value: bytes, headers: list[tuple[str, str | bytes | None]]
) -> int:
    """Produce one message to commands[0]; its offset."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": MESSAGE_BYTES_MAX})
    offsets: list[int | None] = []
    producer.produce(
        topics.commands,
        value=value,
        partition=0,
        headers=headers,
        on_delivery=lambda error, message: offsets.append(None if error else message.offset()),
    )
    assert producer.flush(30) == 0
    (offset,) = offsets
    assert offset is not None, "not delivered"
    return offset


def _dead_letter_of(bootstrap: str, topics: Topics, offset: int) -> Message:
    source = f"{topics.commands}[0]@{offset}".encode()
    tail = Tail(bootstrap, topics.dead_letters, 0)
    try:

        def found() -> list[Message]:
            return [m for m in tail.messages if ("source", source) in headers_of(m)]

        assert tail.read(lambda: bool(found()), 60), "no dead letter"
        (letter,) = found()
        return letter
    finally:
        tail.close()


def _still_answers(bootstrap: str, topics: Topics, account_id: int) -> None:
    with LedgerClient(bootstrap, topics.prefix, timeout_s=60) as client:
        (result,) = client.create_accounts([Account(account_id, ledger=1, code=1)])
        assert result.status.name == "CREATED"


@pytest.mark.parametrize("request_id", [b"-5", str(1 << 128).encode(), b"9" * 60, b" 12 "])
def test_a_request_id_header_the_results_cannot_carry_does_not_stop_the_processor(
    kafka_bootstrap: str, running: Topics, request_id: bytes
) -> None:
    # Was: the rejection's request id (int() of the header) failed to encode inside the
    # transaction, and the processor died.
    offset = _produce(
        kafka_bootstrap, running, b"garbage", [("submitter", b"s"), ("request-id", request_id)]
    )
    letter = _dead_letter_of(kafka_bootstrap, running, offset)
    assert letter.value() == b"garbage"
    _still_answers(kafka_bootstrap, running, 11)


def test_the_senders_headers_cannot_forge_a_dead_letters_reason_or_source(
    kafka_bootstrap: str, running: Topics
) -> None:
    # Was: the sender's headers were copied after the processor's own, so a reader taking the
    # last `reason` or `source` read the sender's.
    forged: list[tuple[str, str | bytes | None]] = [
        ("reason", b"forged"),
        ("source", b"elsewhere"),
        ("x", b"kept"),
    ]
    offset = _produce(kafka_bootstrap, running, b"garbage", forged)
    headers = headers_of(_dead_letter_of(kafka_bootstrap, running, offset))
    assert [name for name, _ in headers].count("reason") == 1
    assert [name for name, _ in headers].count("source") == 1
    assert dict(headers)["reason"] != b"forged"
    assert dict(headers)["x"] == b"kept"


def test_a_malformed_message_at_the_size_limit_is_kept_cut(
    kafka_bootstrap: str, running: Topics
) -> None:
    # Was: its dead letter (the message plus a reason) exceeded the topic's limit, every
    # transaction failed on it, and the processor retried it forever.
    value = b"\x00" * (MESSAGE_BYTES_MAX - 160)
    offset = _produce(kafka_bootstrap, running, value, [("submitter", b"s"), ("request-id", b"1")])
    letter = _dead_letter_of(kafka_bootstrap, running, offset)
    kept = letter.value() or b""
    assert value.startswith(kept) and len(kept) > MESSAGE_BYTES_MAX // 2
    assert dict(headers_of(letter))["truncated"] == str(len(value)).encode()
    _still_answers(kafka_bootstrap, running, 12)


def test_a_request_refused_whole_is_dead_lettered_and_rejected(
    kafka_bootstrap: str, running: Topics
) -> None:
    # Was: rejected, but not kept in the dead letters.
    submitter = "refused-whole-test"
    batch = CommandBatch(
        77, submitter, Operation.CREATE_ACCOUNTS, [Account(5, ledger=1, code=1)], [Transfer(1)]
    )
    offset = _produce(kafka_bootstrap, running, encode_command_batch(batch), [])
    letter = _dead_letter_of(kafka_bootstrap, running, offset)
    assert dict(headers_of(letter))["reason"].startswith(b"operation: ")
    results = Tail(kafka_bootstrap, running.results, results_partition(submitter, PARTITIONS))
    try:
        assert results.read(lambda: bool(results.messages), 60), "no rejection"
        (message,) = results.messages
        rejection = decode_result_batch(message.value() or b"")
        assert rejection.request_id == 77 and rejection.rejection
        assert rejection.rejection.startswith("operation: ")
    finally:
        results.close()
    # Nothing of it was created.
    with LedgerClient(kafka_bootstrap, running.prefix, timeout_s=60) as client:
        (result,) = client.create_accounts([Account(5, ledger=1, code=1)])
        assert result.status.name == "CREATED"


def test_a_request_with_a_submitter_too_big_to_answer_is_dead_lettered(
    kafka_bootstrap: str, running: Topics
) -> None:
    # Was: decoded and decided; its result, keyed and stamped with a 16 MiB submitter, did not
    # fit the results topic, and the processor retried that transaction forever.
    batch = CommandBatch(5, "", Operation.CREATE_ACCOUNTS, [Account(21, ledger=1, code=1)])
    value = encode_fields(batch)
    value.top = [
        (name, avro_string("s" * (MESSAGE_BYTES_MAX // 2)) if name == "submitter" else raw)
        for name, raw in value.top
    ]
    offset = _produce(kafka_bootstrap, running, value.encode(), [])
    letter = _dead_letter_of(kafka_bootstrap, running, offset)
    assert dict(headers_of(letter))["reason"].startswith(b"submitter: ")
    _still_answers(kafka_bootstrap, running, 21)  # and the account was not created before
