"""The processors' side of the client's wire contract, for the client tests.

Until the real processors exist, a test plays their part: it consumes `commands` and answers
each request with ResultBatch messages produced by a *transactional* producer to the
submitter's results partition, so the client's real read_committed path is exercised. Nothing
of the client is mocked.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.codec import decode_command_batch, encode_result_batch
from schemas.codes import AccountCommandStatus, CreateAccountStatus, CreateTransferStatus
from schemas.messages import CommandBatch, Operation, ResultBatch, ResultEntry
from schemas.topics import Topics, results_partition

TXN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Reply:
    """One message to the results topic, on the partition of `route_as` (a submitter)."""

    value: bytes
    route_as: str
    abort: bool = False  # produced in a transaction that is then aborted


Responder = Callable[[CommandBatch], list[Reply]]


def result_for(
    batch: CommandBatch,
    statuses: list[int] | None = None,
    *,
    submitter: str | None = None,
    timestamp_base: int = 1_000_000,
    version: int = 7,
) -> ResultBatch:
    """A ResultBatch answering `batch`: `statuses` per event (default: all created)."""
    if batch.operation is Operation.ACCOUNT_COMMAND:
        default = [int(AccountCommandStatus.OK)]
    elif batch.operation is Operation.CREATE_ACCOUNTS:
        default = [int(CreateAccountStatus.CREATED)] * len(batch.accounts)
    else:
        default = [int(CreateTransferStatus.CREATED)] * len(batch.transfers)
    entries = [
        ResultEntry(status, timestamp_base + i, version)
        for i, status in enumerate(statuses if statuses is not None else default)
    ]
    return ResultBatch(
        batch.request_id, submitter or batch.submitter, batch.operation, entries, None
    )


def reply(result: ResultBatch, *, route_as: str | None = None, abort: bool = False) -> Reply:
    return Reply(encode_result_batch(result), route_as or result.submitter, abort)


def answer_created(batch: CommandBatch) -> list[Reply]:
    return [reply(result_for(batch))]


@dataclass
class FakeProcessor:
    bootstrap: str
    topics: Topics
    command_partitions: int
    result_partitions: int
    respond: Responder
    received: list[CommandBatch] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> FakeProcessor:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(TXN_TIMEOUT_S):
            raise TimeoutError("fake processor did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TXN_TIMEOUT_S)
        if self.error is not None:
            raise AssertionError(f"fake processor failed: {self.error!r}") from self.error

    def _run(self, ready: threading.Event) -> None:
        consumer: Any = None
        try:
            producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "transactional.id": f"fake-processor-{uuid.uuid4()}",
                    "transaction.timeout.ms": 10_000,
                    "linger.ms": 1,
                }
            )
            producer.init_transactions(TXN_TIMEOUT_S)
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"fake-processor-{uuid.uuid4()}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
            consumer.assign(
                [
                    TopicPartition(self.topics.commands, p, OFFSET_BEGINNING)
                    for p in range(self.command_partitions)
                ]
            )
            ready.set()
            while not self._stop.is_set():
                messages = consumer.consume(500, 0.02)
                replies: list[Reply] = []
                for message in messages:
                    if message.error() is not None:
                        continue
                    batch = decode_command_batch(message.value())
                    self.received.append(batch)
                    replies.extend(self.respond(batch))
                if replies:
                    self._send(producer, replies)
        except BaseException as exc:
            self.error = exc
            ready.set()
        finally:
            if consumer is not None:
                consumer.close()

    def _send(self, producer: Producer, replies: list[Reply]) -> None:
        aborted = [r for r in replies if r.abort]
        committed = [r for r in replies if not r.abort]
        if aborted:
            producer.begin_transaction()
            self._produce(producer, aborted)
            producer.flush(TXN_TIMEOUT_S)  # really on the broker before the abort
            producer.abort_transaction(TXN_TIMEOUT_S)
        if committed:
            producer.begin_transaction()
            self._produce(producer, committed)
            producer.commit_transaction(TXN_TIMEOUT_S)

    def _produce(self, producer: Producer, replies: list[Reply]) -> None:
        for r in replies:
            partition = results_partition(r.route_as, self.result_partitions)
            producer.produce(
                self.topics.results, value=r.value, key=r.route_as.encode(), partition=partition
            )
