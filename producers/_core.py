"""The client's transport: one idempotent producer to `commands`, one read_committed consumer of
the submitter's own `results` partition, and two background threads that resolve futures.

Both front ends (LedgerClient, AsyncLedgerClient) sit on one `ClientCore`; every request is a
`RequestHandle` (a concurrent.futures.Future), so many can be in flight at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from producers._errors import (
    ClientClosed,
    DeliveryFailed,
    LedgerUnavailable,
    OutcomeUnknown,
    ProduceError,
    RequestRejected,
)
from schemas.codec import DecodeError, decode_result_batch, encode_command_batch
from schemas.codes import BATCH_EVENTS_MAX
from schemas.messages import CommandBatch, Operation, ResultBatch
from schemas.topics import (
    DEFAULT_TOPIC_PREFIX,
    ENV_TOPIC_PREFIX,
    Topics,
    home_key,
    home_partition,
    results_partition,
)

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "ENV_BOOTSTRAP",
    "ClientCore",
    "RequestHandle",
    "event_count",
    "event_ids",
]

log = logging.getLogger("producers")

ENV_BOOTSTRAP: Final = "LEDGER_KAFKA_BOOTSTRAP"
# The port `ledger kafka start` uses (processors.kafka_broker.DEFAULT_PORT); not imported, so the
# client does not depend on the processors package.
DEFAULT_BOOTSTRAP: Final = "127.0.0.1:19092"

METADATA_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.05  # wake-up period of the background threads (deadlines, close)
_DRAIN_MAX: Final = 1000  # results taken per consume() once one has arrived
_BUFFER_FULL_WAIT_S: Final = 0.001
# A broker's default max.message.bytes (1 MiB + 12): a full 8,189-event batch is ~1.0 MB, above
# librdkafka's default of 1,000,000, so the producer must allow it and let the broker decide.
_MESSAGE_MAX_BYTES: Final = 1_048_588
_LEADER_MOVING: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)
# If the background thread is somehow wedged, a synchronous caller still returns this much later
# than the request's deadline.
WAIT_GRACE_S: Final = 5.0


def event_count(batch: CommandBatch) -> int:
    return len(batch.accounts) + len(batch.transfers) + (batch.account_command is not None)


def event_ids(batch: CommandBatch) -> list[int]:
    """The ids whose outcome a request decides (for OutcomeUnknown)."""
    if batch.operation is Operation.CREATE_ACCOUNTS:
        return [a.id for a in batch.accounts]
    if batch.operation is Operation.CREATE_TRANSFERS:
        return [t.id for t in batch.transfers]
    return [] if batch.account_command is None else [batch.account_command.account_id]


class RequestHandle(Future[ResultBatch]):
    """One request in flight: a Future of its ResultBatch, plus what was sent and where.

    Resolves to the ResultBatch, or fails with RequestRejected, OutcomeUnknown (no result
    within the timeout, or the client closed) or DeliveryFailed.
    """

    def __init__(self, batch: CommandBatch, partition: int, deadline: float) -> None:
        super().__init__()
        self.batch = batch  # exactly what was encoded (request_id, submitter, time stamped)
        self.request_id = batch.request_id
        self.partition = partition  # the commands partition (home_partition)
        self.offset: int | None = None  # its commands offset, once Kafka confirmed delivery
        self.deadline = deadline  # time.monotonic() after which the outcome is unknown
        self.sent_ns = time.perf_counter_ns()
        self.resolved_ns: int | None = None  # when the result (or failure) arrived

    @property
    def latency_s(self) -> float | None:
        """Submit-to-result time, once resolved (what a benchmark measures per request)."""
        if self.resolved_ns is None:
            return None
        return (self.resolved_ns - self.sent_ns) / 1e9

    def _resolve(self, result: ResultBatch) -> None:
        self.resolved_ns = time.perf_counter_ns()
        # The caller may have cancelled (asyncio cancels the wrapped future): not an error.
        with contextlib.suppress(InvalidStateError):
            self.set_result(result)

    def _fail(self, error: BaseException) -> None:
        self.resolved_ns = time.perf_counter_ns()
        with contextlib.suppress(InvalidStateError):
            self.set_exception(error)


class ClientCore:
    """Shared machinery of LedgerClient and AsyncLedgerClient (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str | None = None,
        topic_prefix: str | None = None,
        *,
        timeout_s: float = 30.0,
        submitter: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.bootstrap = bootstrap or os.environ.get(ENV_BOOTSTRAP, "").strip() or DEFAULT_BOOTSTRAP
        prefix = topic_prefix
        if prefix is None:
            prefix = os.environ.get(ENV_TOPIC_PREFIX, DEFAULT_TOPIC_PREFIX)
        self.topics = Topics(prefix)
        self.timeout_s = timeout_s
        self.submitter = submitter or f"client-{uuid.uuid4()}"

        self._lock = threading.Lock()
        self._pending: dict[int, RequestHandle] = {}
        self._deadlines: list[tuple[float, int, int]] = []  # (deadline, seq, request_id) heap
        self._seq = 0
        self._closed = False
        self._stop = threading.Event()

        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "client.id": self.submitter,
                "enable.idempotence": True,
                "acks": "all",
                # Concurrent small requests share a Kafka batch without delaying a lone one much.
                "linger.ms": 1,
                "message.max.bytes": _MESSAGE_MAX_BYTES,
                "socket.nagle.disable": True,
                "error_cb": _log_kafka_error,
            }
        )
        self.command_partitions, self.result_partitions = self._read_metadata()
        self.results_partition = results_partition(self.submitter, self.result_partitions)
        self._consumer = self._start_consumer()

        self._result_thread = threading.Thread(
            target=self._run_results, name=f"ledger-results-{self.submitter}", daemon=True
        )
        self._delivery_thread = threading.Thread(
            target=self._run_deliveries, name=f"ledger-deliveries-{self.submitter}", daemon=True
        )
        self._result_thread.start()
        self._delivery_thread.start()

    # -- start ---------------------------------------------------------------------------------

    def _read_metadata(self) -> tuple[int, int]:
        # All topics, not list_topics(topic=...): asking for one topic by name can make a broker
        # with auto.create.topics.enable create it, which would hide a missing ledger.
        try:
            metadata: Any = self._producer.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            raise LedgerUnavailable(
                f"cannot read topic metadata from the Kafka broker at {self.bootstrap}: {exc}"
            ) from exc
        counts = []
        for name in (self.topics.commands, self.topics.results):
            topic = metadata.topics.get(name)
            if topic is None:
                raise LedgerUnavailable(
                    f"topic {name} does not exist; is the ledger up? (broker {self.bootstrap})"
                )
            if not topic.partitions:
                raise LedgerUnavailable(f"topic {name} is not available: {topic.error}")
            counts.append(len(topic.partitions))
        return counts[0], counts[1]

    def _start_consumer(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # librdkafka requires a group.id; assign() never joins the group, and nothing is
                # ever committed: each client starts at the partition's end.
                "group.id": f"{self.topics.prefix}client.{self.submitter}",
                "client.id": self.submitter,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                # Only if our start offset vanished (topic truncated): re-reading old results is
                # harmless (unknown request ids), skipping ours would not be.
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "socket.nagle.disable": True,
                "error_cb": _log_kafka_error,
            }
        )
        try:
            # Taken before any request is sent, so every result of ours lies at or after it.
            end = self._results_end(consumer)
            consumer.assign([TopicPartition(self.topics.results, self.results_partition, end)])
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _results_end(self, consumer: Consumer) -> int:
        tp = TopicPartition(self.topics.results, self.results_partition)
        deadline = time.monotonic() + METADATA_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            try:
                _, end = consumer.get_watermark_offsets(
                    tp, timeout=max(remaining, 0.1), cached=False
                )
                return int(end)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                # A just-created or moving partition answers "not leader" for a moment.
                retriable = isinstance(error, KafkaError) and (
                    error.retriable() or error.code() in _LEADER_MOVING
                )
                if not retriable or time.monotonic() >= deadline:
                    raise LedgerUnavailable(
                        f"cannot read the end of {self.topics.results}[{self.results_partition}] "
                        f"at {self.bootstrap}: {exc}"
                    ) from exc
                time.sleep(0.1)

    # -- requests ------------------------------------------------------------------------------

    def submit(self, batch: CommandBatch, *, timeout_s: float | None = None) -> RequestHandle:
        """Send one request; return its handle at once (the result arrives on it).

        The client stamps the copy it sends: `submitter` (the batch's must be empty or this
        client's), `submitted_at_ns`, and a fresh random `request_id` unless the batch has one.
        The batch itself is not modified.
        """
        count = event_count(batch)
        if count > BATCH_EVENTS_MAX:
            raise ValueError(
                f"a request holds at most {BATCH_EVENTS_MAX} events; this one has {count}"
            )
        if batch.submitter and batch.submitter != self.submitter:
            raise ValueError(
                f"batch.submitter is {batch.submitter!r} but this client is {self.submitter!r}: "
                "its results would go to another client"
            )
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        stamped = dataclasses.replace(
            batch,
            request_id=batch.request_id or _fresh_request_id(),
            submitter=self.submitter,
            submitted_at_ns=time.time_ns(),
        )
        value = encode_command_batch(stamped)  # EncodeError (a ValueError) names the field
        key = home_key(stamped).to_bytes(16, "big")
        partition = home_partition(stamped, self.command_partitions)
        handle = RequestHandle(stamped, partition, time.monotonic() + wait_s)

        with self._lock:
            if self._closed:
                raise ClientClosed("the ledger client is closed")
            if stamped.request_id in self._pending:
                raise ValueError(f"request {stamped.request_id:032x} is already in flight")
            # Registered before producing: the result may arrive before the delivery report.
            self._pending[stamped.request_id] = handle
            self._seq += 1
            heapq.heappush(self._deadlines, (handle.deadline, self._seq, stamped.request_id))
        try:
            self._produce(value, key, partition, handle)
        except BaseException:
            with self._lock:
                self._pending.pop(stamped.request_id, None)
            raise
        return handle

    def _produce(self, value: bytes, key: bytes, partition: int, handle: RequestHandle) -> None:
        on_delivery = self._delivery_callback(handle)
        while True:
            try:
                self._producer.produce(
                    self.topics.commands,
                    value=value,
                    key=key,
                    partition=partition,
                    on_delivery=on_delivery,
                    # Who waits, outside the body: a processor that cannot decode the body
                    # can still send this request a rejection.
                    headers=[
                        ("submitter", handle.batch.submitter.encode()),
                        ("request-id", str(handle.batch.request_id).encode()),
                    ],
                )
                return
            except BufferError:
                # librdkafka's local queue is full: the delivery thread drains it; wait a little.
                if time.monotonic() >= handle.deadline:
                    raise ProduceError(
                        f"request {handle.request_id:032x} not sent: the producer queue stayed "
                        "full until its deadline"
                    ) from None
                time.sleep(_BUFFER_FULL_WAIT_S)
            except KafkaException as exc:
                raise ProduceError(f"request {handle.request_id:032x} not sent: {exc}") from exc

    def _delivery_callback(
        self, handle: RequestHandle
    ) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                handle.offset = message.offset()
                return
            with self._lock:
                mine = self._pending.get(handle.request_id) is handle
                if mine:
                    del self._pending[handle.request_id]
            if mine:
                batch = handle.batch
                handle._fail(
                    DeliveryFailed(batch.request_id, batch.operation, event_ids(batch), error),
                )

        return delivered

    # -- background threads --------------------------------------------------------------------

    def _run_results(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._consumer.poll(_POLL_S)
                if first is None:
                    continue
                self._on_message(first)
                # Whatever else is already fetched, without waiting.
                for message in self._consumer.consume(_DRAIN_MAX, 0):
                    self._on_message(message)
            except Exception:  # the client must outlive any one bad message or broker hiccup
                log.exception("ledger client: error reading results; continuing")

    def _on_message(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            log.warning("ledger client: results consumer error: %s", error)
            return
        value = message.value()
        try:
            if value is None:
                raise DecodeError("empty message")
            result = decode_result_batch(value)
        except DecodeError as exc:
            log.warning(
                "ledger client: skipping undecodable result at %s[%s]@%s: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc,
            )
            return
        if result.submitter != self.submitter:
            return  # another client sharing this results partition
        with self._lock:
            handle = self._pending.pop(result.request_id, None)
        if handle is None:
            # Timed out already, or a request of an earlier client with the same submitter id.
            log.debug("ledger client: result for unknown request %032x", result.request_id)
            return
        if result.rejection is not None:
            handle._fail(RequestRejected(result.request_id, result.rejection))
        else:
            handle._resolve(result)

    def _run_deliveries(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(_POLL_S)  # runs the delivery callbacks
                self._expire(time.monotonic())
            except Exception:
                log.exception("ledger client: error serving deliveries; continuing")

    def _expire(self, now: float) -> None:
        expired: list[RequestHandle] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, request_id = heapq.heappop(self._deadlines)
                handle = self._pending.get(request_id)
                # The same id may have been resolved and reused by a newer request (caller-given
                # ids): only expire the handle whose deadline this is.
                if handle is not None and handle.deadline <= now:
                    del self._pending[request_id]
                    expired.append(handle)
        for handle in expired:
            batch = handle.batch
            handle._fail(
                OutcomeUnknown(
                    batch.request_id,
                    batch.operation,
                    event_ids(batch),
                    "no result arrived within the timeout",
                ),
            )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Deliver what was sent, stop the threads; requests still waiting fail with
        OutcomeUnknown. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._delivery_thread.join()
        # Only now, with its poll thread gone: flush() serves the remaining delivery reports.
        remaining = self._producer.flush(self.timeout_s)
        if remaining:
            log.warning("ledger client: %d requests not confirmed by Kafka at close", remaining)
        self._result_thread.join()
        self._consumer.close()
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        for handle in left:
            batch = handle.batch
            handle._fail(
                OutcomeUnknown(
                    batch.request_id,
                    batch.operation,
                    event_ids(batch),
                    "the client was closed before the result arrived",
                ),
            )


def _fresh_request_id() -> int:
    # Never 0: 0 means "let the client choose" in submit().
    return secrets.randbits(128) or 1


def _log_kafka_error(error: KafkaError) -> None:
    # librdkafka reports transient broker trouble here and retries on its own.
    if error.fatal():
        log.error("ledger client: fatal Kafka error: %s", error)
    else:
        log.warning("ledger client: Kafka error: %s", error)
