"""The processor service: PartitionMachines over Kafka, exactly once (docs/PIPELINE.md).

One instance owns the commands partitions the consumer group assigns it. Each loop it reads
what arrived (commands, facts and applies on its partitions; the sequence topic, which every
instance reads whole), lets the machines decide, and writes everything that came out (events,
results, messages to other partitions, sequence entries, one checkpoint per partition) in one
Kafka transaction with the input offsets. The transaction ends on a thread of its own while the
loop decides the next step over the sealed buffers (RocksLedgerState.seal); the next
transaction begins only once that one has committed, and the sealed buffers are then written
to RocksDB. After a crash a partition catches up from its changelog: the events topic, whose
last message of each transaction carries the partition's checkpoint.
"""

from __future__ import annotations

import gc
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from processors.ledger import LedgerConfig, PartitionOwnership, apply_event
from processors.partition import (
    COMMANDS,
    SEQUENCE,
    MessageKey,
    Outbox,
    PartitionMachine,
    Payload,
    checkpoint_messages,
    request_problem,
)
from processors.setup import MESSAGE_BYTES_MAX, last_committed, read_committed
from processors.store import PartitionStore, RocksLedgerState
from schemas.codec import (
    SUBMITTER_MAX,
    DecodeError,
    EncodedEvents,
    decode_apply,
    decode_checkpoint,
    decode_command_batch,
    decode_event_batch,
    decode_facts,
    decode_sequenced_entry,
    encode_apply,
    encode_checkpoint,
    encode_event_batch,
    encode_facts,
    encode_result_batch,
    encode_sequenced_entry,
)
from schemas.codes import U128_MAX
from schemas.messages import Apply, EventBatch, Facts, Operation, ResultBatch
from schemas.topics import CHECKPOINT_HEADER, Topics, results_partition

__all__ = [
    "COMMANDS_FETCH_WAIT_MS",
    "ENV_ALLOW_CLOCK_CONTROL",
    "KIND_APPLY",
    "KIND_CLOCK",
    "KIND_CLOCK_TO",
    "KIND_FACTS",
    "KIND_HEADER",
    "KIND_REQUEST",
    "TRANSACTION_PRODUCERS",
    "ProcessorService",
    "ServiceConfig",
    "message_headers",
]

log = logging.getLogger("ledger.processor")

KIND_HEADER = "kind"  # on commands messages: absent or KIND_REQUEST from submitters
KIND_REQUEST = b"request"
KIND_FACTS = b"facts"
KIND_APPLY = b"apply"
KIND_CLOCK = b"clock"  # tests: advance this partition's clock (8-byte signed ns)
KIND_CLOCK_TO = b"clock-to"  # tests: set it (8-byte signed ns since the epoch)
ENV_ALLOW_CLOCK_CONTROL = "LEDGER_ALLOW_CLOCK_CONTROL"
EVENTS_PER_MESSAGE = 2000  # keeps an events message well under the topic's size limit
TRANSACTION_PRODUCERS = 3
# A committed transaction's buffers are written to RocksDB after the next transaction is
# produced (off the path between two commits, ~0.65 ms at 2,000 requests/s) unless it decided
# more commands than this: a large one is written as soon as it has committed, so that its
# buffers are not held while the next step is decided and produced (held, the processor
# peaked at 304 MB with a million accounts instead of 285), and its write is small next to
# its step anyway.
WRITE_AFTER_BYTES_MAX = 256 * 1024
# The broker gathers commands this long per fetch (never the 1 MiB asked for at 2,000/s): a
# fetch answered at every produce cost it ~170 µs per command, gathered ~35. At 3 ms rather
# than 5 the p50 at 2,000 requests/s is ~1 ms lower, for ~15 µs of broker CPU per request.
COMMANDS_FETCH_WAIT_MS = 3
STATS_INTERVAL_S = 30.0  # how often the loop logs what it did
# How often the processor collects reference cycles (see run()). Each collection walks what
# survived since the last one: every 30 s, that was up to 157 ms of stopped loop after a burst
# (a p99 of its own); every second it is a few ms.
GC_INTERVAL_S = 1.0
_META_EVENTS_OFFSET = "events_offset"
_META_CHECKPOINT = "checkpoint"
DeadLetter = tuple[bytes, bytes | None, list[tuple[str, str | bytes | None]]]  # value, key, headers


@dataclass(frozen=True)
class ServiceConfig:
    bootstrap: str
    data_dir: Path
    partitions: int
    topics: Topics = field(default_factory=Topics)
    instance: str = "0"  # stable per instance: names its transactional id
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    poll_timeout_s: float = 0.002
    batch_messages_max: int = 2000
    # The commands one step takes, in bytes (about 30,000 transfers): the rest waits for the
    # next step, so a burst (a million accounts at once) never becomes one huge transaction.
    step_bytes_max: int = 4 * 1024 * 1024
    tick_interval_s: float = 0.05
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 10_000
    # Write and fsync RocksDB's WAL per commit (recovery then folds less after a crash).
    sync_writes: bool = False
    allow_clock_control: bool = False  # honour `kind: clock` messages (tests only)


@dataclass
class _Partition:
    index: int
    store: PartitionStore
    state: RocksLedgerState
    machine: PartitionMachine
    commands_next: int  # the next commands offset to consume
    events_offset: int  # the last events offset the state reflects
    out: Outbox = field(default_factory=Outbox)
    touched: bool = False
    # Malformed messages of the current step: (value, key, headers) for the dead-letter topic.
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # With LEDGER_ALLOW_CLOCK_CONTROL=1, the first clock message stops the wall clock for this
    # partition: from then on time moves only by clock messages, as in TigerBeetle's test
    # tables. Not persisted: a restart is back on the wall clock.
    manual_now: int | None = None

    def now(self, wall_ns: int) -> int:
        return wall_ns if self.manual_now is None else self.manual_now


@dataclass(frozen=True)
class _Ending:
    """A transaction whose end (offsets, commit) runs on the finisher's thread."""

    producer: Producer
    ended: Future[None]
    deadline: float  # monotonic: past it, the transaction is taken as wedged
    partitions: list[_Partition]  # those it wrote, whose states are sealed
    checkpoints: dict[int, bytes]  # by partition: the one it logged
    # By partition, the offset of its last events message, filled in by the delivery
    # callbacks (on the thread that ends the transaction).
    events_offsets: dict[int, int]
    command_bytes: int  # of the commands it decided


def _note_delivery(offsets: dict[int, int], error: KafkaError | None, message: Message) -> None:
    if error is None:
        index, offset = _position(message)
        offsets[index] = max(offsets.get(index, -1), offset)


@dataclass
class _Stats:
    """What the loop did since the last report (logged every STATS_INTERVAL_S)."""

    since: float = field(default_factory=time.monotonic)
    steps: int = 0
    messages: int = 0
    busy_s: float = 0.0  # deciding and committing, from the end of the poll
    commit_s: float = 0.0  # waiting for the previous transaction's end (offsets, commit)
    collect_s: float = 0.0  # the timed cycle collections
    longest_s: float = 0.0  # the longest step

    def report(self) -> str:
        elapsed_s = max(time.monotonic() - self.since, 1e-9)
        steps = max(self.steps, 1)
        return (
            f"{self.steps / elapsed_s:.0f} steps/s, {self.messages / steps:.1f} messages/step, "
            f"busy {100 * self.busy_s / elapsed_s:.0f}%, "
            f"{1000 * self.busy_s / steps:.1f} ms/step of which waiting for the previous "
            f"commit {1000 * self.commit_s / steps:.1f} ms, longest "
            f"{1000 * self.longest_s:.0f} ms; cycle collection "
            f"{1000 * self.collect_s:.0f} ms"
        )


class _DaemonCaller:
    """Runs calls on a daemon thread of its own, the caller waiting at most `timeout_s`: a call
    that never returns is abandoned with its thread (which does not hold up the exit)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]]
        self._calls = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="transaction-end", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, future = self._calls.get()
            try:
                call()
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)
            else:
                future.set_result(None)

    def submit(self, call: Callable[[], None]) -> Future[None]:
        """The call's future: its result() raises what the call raised."""
        future: Future[None] = Future()
        self._calls.put((call, future))
        return future


def message_headers(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw  # consumed messages carry a list
    return {
        name: value if isinstance(value, bytes) else value.encode()
        for name, value in pairs
        if value is not None
    }


# The dead letter's own headers: a sender's headers of these names are not copied over them.
_DEAD_LETTER_HEADERS = ("reason", "source", "truncated")
# A dead letter is the message plus a reason and source: room left for those under the topic's
# size limit (a message at the limit is kept cut, its length in the `truncated` header).
_DEAD_LETTER_ROOM = 64 * 1024
REASON_CHARS_MAX = 1000
_REQUEST_ID = re.compile(rb"[0-9]{1,39}")


def _dead_letter_record(
    value: bytes, key: bytes | None, headers: dict[str, bytes], reason: str, source: str
) -> DeadLetter:
    """(value, key, headers) of the dead letter of a message, within the topic's size limit."""
    kept: list[tuple[str, str | bytes | None]] = [("reason", reason.encode()), ("source", source)]
    copied = [(name, v) for name, v in headers.items() if name not in _DEAD_LETTER_HEADERS]
    budget = MESSAGE_BYTES_MAX - _DEAD_LETTER_ROOM
    around = len(key or b"") + sum(len(name) + len(v) for name, v in copied)
    if around > budget // 2:  # headers or key as big as a message: the value matters more
        copied, key, around = [], None, 0
        kept.append(("headers-dropped", b"1"))
    if len(value) + around > budget:
        kept.append(("truncated", str(len(value)).encode()))
        value = value[: budget - around]
    return value, key, [*kept, *copied]


def _addressed_rejection(headers: dict[str, bytes], reason: str) -> ResultBatch | None:
    """The rejection for the submitter the headers name, if they name one the results topic
    can carry (a request id of up to 39 decimal digits within u128, a short UTF-8 name)."""
    submitter, request_id = headers.get("submitter"), headers.get("request-id")
    if not submitter or len(submitter) > 4 * SUBMITTER_MAX or request_id is None:
        return None  # (4 * SUBMITTER_MAX: the UTF-8 bytes of the longest name)
    if _REQUEST_ID.fullmatch(request_id) is None or int(request_id) > U128_MAX:
        return None
    try:
        name = submitter.decode()
    except UnicodeDecodeError:
        return None
    if len(name) > SUBMITTER_MAX:
        return None
    return ResultBatch(
        int(request_id),
        name,
        Operation.CREATE_TRANSFERS,
        [],
        rejection=f"malformed request: {reason}",
    )


def _position(message: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message (both set on every delivered message)."""
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None
    return partition, offset


class ProcessorService:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.topics = config.topics
        self.partitions: dict[int, _Partition] = {}
        self._ending: _Ending | None = None  # the transaction ending meanwhile, if any
        # The last one committed, while its sealed buffers wait to be written to RocksDB (a
        # small one's, until the next transaction is produced: off the path to it). Written by
        # the end of the loop that settled it, so rebalance callbacks never find one.
        self._committed: _Ending | None = None
        # Command bytes decided since the last transaction was produced (the step budget).
        self._decided_bytes = 0
        self._membership: Any = None  # consumer_group_metadata(), read once per generation
        self._last_tick = 0.0
        self.stats = _Stats()
        common = {"bootstrap.servers": config.bootstrap}
        self.consumer = Consumer(
            {
                **common,
                "group.id": self.topics.processor_group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": config.session_timeout_ms,
                "heartbeat.interval.ms": max(500, config.session_timeout_ms // 5),
                "max.poll.interval.ms": 300_000,
                "fetch.wait.max.ms": COMMANDS_FETCH_WAIT_MS,
                "fetch.min.bytes": 1 << 20,
                "partition.assignment.strategy": "range",
                # librdkafka prefetches up to 64 MiB by default: bounded memory matters more.
                "queued.max.messages.kbytes": 16 * 1024,
                "client.id": f"ledger-processor-{config.instance}",
            }
        )
        self.sequence_consumer = Consumer(
            {
                **common,
                # Never commits: each partition keeps its own sequence cursor in its checkpoint.
                "group.id": f"{self.topics.prefix}sequence-reader-{config.instance}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
            }
        )
        self._sequence_position: int | None = None
        # Transactions rotate over a few producers: right after a commit the coordinator is
        # still writing its markers, and the same producer's next transaction would be refused
        # (CONCURRENT_TRANSACTIONS) and retried by librdkafka 20 ms later (KIP-890 cures this
        # in the protocol, which librdkafka does not speak yet).
        self.producers = [self._new_producer(k) for k in range(TRANSACTION_PRODUCERS)]
        self._next_producer = 0
        # Ends transactions under a deadline of our own: after a broker restart librdkafka
        # (2.16) can keep the group coordinator of a broker handle it has since dropped, and
        # send_offsets_to_transaction then waits past its timeout, forever (librdkafka #5456,
        # #5511), and the instance with it. A call that outlives twice the transaction timeout
        # is given up on: the producers are replaced (which fences them) and the partitions are
        # rebuilt from Kafka, as after any failed transaction.
        self._finisher = _DaemonCaller()
        self._wedged_after_s = 2 * config.transaction_timeout_ms / 1000

    def _new_producer(self, index: int) -> Producer:
        producer = Producer(
            {
                "bootstrap.servers": self.config.bootstrap,
                "transactional.id": (
                    f"{self.topics.prefix}processor-{self.config.instance}-{index}"
                ),
                "transaction.timeout.ms": self.config.transaction_timeout_ms,
                "enable.idempotence": True,
                "linger.ms": 1,
                # Events are mostly zero bytes (u128 fields of small values): lz4 shrinks them
                # several times for a little CPU, and the broker handles that much less.
                "compression.type": "lz4",
                "message.max.bytes": MESSAGE_BYTES_MAX,
                "queue.buffering.max.messages": 1_000_000,
                "client.id": f"ledger-processor-{self.config.instance}",
            }
        )
        producer.init_transactions(30)
        return producer

    # ------------------------------------------------------------------------------------------
    # Running

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(
            [self.topics.commands],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        # The ledger's objects form no cycles, so the cycle collector would only walk the
        # record caches (hundreds of thousands of objects), and it did, from allocations deep in
        # the rules: a fifth of the processor's time. It runs on a timer instead, and what
        # survives it is frozen out of later walks (acyclic objects are still freed by refcount).
        gc.disable()
        next_collection = 0.0
        try:
            while not stop.is_set():
                self.step()
                self._write_committed()  # what the step settled and left for after its produce
                if time.monotonic() >= next_collection:
                    collecting = time.monotonic()
                    gc.collect()
                    gc.freeze()
                    next_collection = time.monotonic() + GC_INTERVAL_S
                    self.stats.collect_s += next_collection - GC_INTERVAL_S - collecting
        finally:
            self.close()
            gc.enable()

    def close(self) -> None:
        self._write_committed()
        ending, self._ending = self._ending, None
        if ending is not None:  # what commits reaches RocksDB (else recovery folds it)
            try:
                ending.ended.result(max(0.0, ending.deadline - time.monotonic()))
                self._write_sealed(ending)
            except (KafkaException, FutureTimeout) as exc:
                log.warning("the last transaction did not commit (%r)", exc)
        for partition in list(self.partitions.values()):
            partition.store.close()
        self.partitions.clear()
        self.consumer.close()
        self.sequence_consumer.close()
        for producer in self.producers:
            producer.flush(10)

    def step(self) -> None:
        """One loop: read and decide; produce what was decided once the previous transaction
        has committed. Until it has, each loop decides what arrived meanwhile into the same
        next transaction (group commit): a command waits for the commit under way, not for a
        whole loop after it."""
        ending = self._ending
        if ending is not None and self._holding():
            # Wake as soon as the transaction ends; take whatever arrived meanwhile.
            wait_futures([ending.ended], timeout=self.config.poll_timeout_s)
            messages = self.consumer.consume(self.config.batch_messages_max, 0)
        else:
            # The first message as soon as it comes, then whatever else is already fetched
            # (consume() alone would wait out its timeout for a batch that is not coming).
            first = self.consumer.poll(self.config.poll_timeout_s)
            messages = [] if first is None else [first]
            if first is not None:
                messages += self.consumer.consume(self.config.batch_messages_max - 1, 0)
        if not self._settle(wait=False, write=False):
            return  # the previous transaction failed: the partitions were rebuilt
        sequenced = self._read_sequence()
        now = time.time_ns()
        tick = time.monotonic() - self._last_tick >= self.config.tick_interval_s
        if not messages and not sequenced and not tick:
            if self._holding():
                self._commit()  # when the previous transaction has ended; else next loop
            else:
                # Nothing to decide meanwhile: wait for the transaction ending instead of
                # polling on. (Polling through a broker outage while a transaction hung left
                # the consumer reading nothing after it: tests/faults,
                # test_broker_restart_mid_run.)
                self._settle(wait=True)
            return
        polled = time.monotonic()
        for index, message in enumerate(messages):
            if self._decided_bytes >= self.config.step_bytes_max:
                self._put_back(messages[index:])
                break
            self._on_command(message, now)
            self._decided_bytes += len(message.value() or b"")
        for offset, entry in sequenced:
            for partition in self.partitions.values():
                partition.machine.on_sequenced(offset, entry, partition.out)
                partition.touched = True
        if tick:
            self._last_tick = time.monotonic()
            for partition in self.partitions.values():
                partition.machine.on_tick(partition.now(now), partition.out)
        for partition in self.partitions.values():
            partition.machine.end_step(partition.out)  # sequence what the step gathered
            partition.touched |= bool(partition.out)
        self._commit()
        stats = self.stats
        stats.steps += 1
        stats.messages += len(messages)
        busy_s = time.monotonic() - polled
        stats.busy_s += busy_s
        stats.longest_s = max(stats.longest_s, busy_s)
        if time.monotonic() - stats.since >= STATS_INTERVAL_S:
            log.info("loop: %s", stats.report())
            self.stats = _Stats()

    def _on_command(self, message: Message, now: int) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("commands consumer: %s", error)
            return
        index, offset = _position(message)
        partition = self.partitions.get(index)
        if partition is None or offset < partition.commands_next:
            return  # not ours (any more), or already reflected by the state
        partition.commands_next = offset + 1
        partition.touched = True
        machine, out = partition.machine, partition.out
        value = message.value() or b""
        kind = message_headers(message).get(KIND_HEADER, KIND_REQUEST)
        try:
            if kind == KIND_FACTS:
                machine.on_facts(decode_facts(value), out, offset)
            elif kind == KIND_APPLY:
                machine.on_apply(decode_apply(value), out, offset)
            elif kind in (KIND_CLOCK, KIND_CLOCK_TO):
                if not self.config.allow_clock_control or len(value) != 8:
                    raise DecodeError(f"clock control is off, or not 8 bytes ({len(value)})")
                value_ns = int.from_bytes(value, "big", signed=True)
                if kind == KIND_CLOCK:
                    partition.manual_now = partition.now(now) + value_ns
                else:
                    partition.manual_now = value_ns
                machine.on_tick(partition.now(now), out)
            else:
                request = decode_command_batch(value)
                problem = request_problem(request)
                if problem is not None:  # refused whole: the machine answers, the log keeps it
                    self._keep_dead_letter(partition, message, problem)
                machine.on_request(request, partition.now(now), out, offset)
        except DecodeError as problem:
            self._dead_letter(partition, message, str(problem))

    def _put_back(self, messages: list[Message]) -> None:
        """Leave these for the next step: one transaction (and the memory it holds until it
        commits) stays bounded however much is waiting."""
        indexes = {message.partition() for message in messages if message.error() is None}
        for index in indexes:
            partition = self.partitions.get(index) if index is not None else None
            if partition is not None:
                self.consumer.seek(
                    TopicPartition(self.topics.commands, partition.index, partition.commands_next)
                )

    def _dead_letter(self, partition: _Partition, message: Message, reason: str) -> None:
        """A malformed message is kept with its reason, and the submitter hears of it when its
        headers name it: both in this step's transaction, with the offset that skips it."""
        reason = self._keep_dead_letter(partition, message, reason)
        rejection = _addressed_rejection(message_headers(message), reason)
        if rejection is not None:
            partition.out.results.append(rejection)

    def _keep_dead_letter(self, partition: _Partition, message: Message, reason: str) -> str:
        """Queue the message's dead letter for this step's transaction; returns the reason as
        kept (cut to REASON_CHARS_MAX)."""
        log.warning(
            "dead letter %s[%d]@%d: %s",
            message.topic(), message.partition(), message.offset(), reason,
        )  # fmt: skip
        reason = reason[:REASON_CHARS_MAX]
        source = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        partition.dead_letters.append(
            _dead_letter_record(
                message.value() or b"", message.key(), message_headers(message), reason, source
            )
        )
        return reason

    def _read_sequence(self) -> list[tuple[int, Any]]:
        if not self.partitions:
            return []
        wanted = min(p.machine.sequence_next for p in self.partitions.values())
        if self._sequence_position is None or wanted < self._sequence_position:
            self.sequence_consumer.assign([TopicPartition(self.topics.sequence, 0, wanted)])
            self._sequence_position = wanted
        entries = []
        for message in self.sequence_consumer.consume(self.config.batch_messages_max, 0):
            if message.error() is not None:
                continue
            _, offset = _position(message)
            self._sequence_position = offset + 1
            try:
                entries.append((offset, decode_sequenced_entry(message.value() or b"")))
            except DecodeError as problem:
                # Written by processors only: a bad one is a bug; keep it, skip it, say so.
                log.error("undecodable sequence entry at %d: %s", offset, problem)
        return entries

    # ------------------------------------------------------------------------------------------
    # The transaction

    def _commit(self) -> None:
        """Produce what was decided once the previous transaction has committed, and leave
        its end to the finisher: the next one is decided meanwhile. While the previous one is
        still ending, what was decided waits (and grows) unless it reached the step budget."""
        ending = self._ending
        if (
            ending is not None
            and not ending.ended.done()
            and self._decided_bytes < self.config.step_bytes_max
        ):
            return
        touched = [p for p in self.partitions.values() if p.touched]
        command_bytes, self._decided_bytes = self._decided_bytes, 0
        if not touched:
            return
        if not self._settle(wait=True, write=False):
            return  # the previous one failed; this step, decided over it, is gone with it
        producer = self.producers[self._next_producer]
        self._next_producer = (self._next_producer + 1) % len(self.producers)
        encoded: EncodedEvents = {}  # an event logged to several partitions is encoded once
        checkpoints: dict[int, bytes] = {}
        events_offsets: dict[int, int] = {}
        delivered = partial(_note_delivery, events_offsets)
        try:
            producer.begin_transaction()
            for partition in touched:
                checkpoints[partition.index] = self._produce_outbox(
                    producer, partition, encoded, delivered
                )
            offsets = [
                TopicPartition(self.topics.commands, p.index, p.commands_next)
                for p in self.partitions.values()
            ]
            metadata = self._group_metadata()
        except KafkaException as exc:
            self._write_committed()
            self._transaction_failed(producer, exc)
            return
        ended = self._finisher.submit(lambda: self._end_transaction(producer, offsets, metadata))
        self._write_committed()  # the previous one's, before this one's buffers are sealed
        for partition in touched:
            partition.state.seal()
            partition.out.clear()  # the peers' machines hold on to this outbox
            partition.dead_letters = []
            partition.touched = False
        self._ending = _Ending(
            producer,
            ended,
            time.monotonic() + self._wedged_after_s,
            touched,
            checkpoints,
            events_offsets,
            command_bytes,
        )

    def _settle(self, *, wait: bool, rebuild: bool = True, write: bool = True) -> bool:
        """Once the transaction ending meanwhile has committed (at once if `wait`), write its
        partitions' sealed buffers to RocksDB (unless not `write` and the transaction is small:
        then the caller does, with _write_committed, once it has produced the next one).
        False if it failed: the partitions were then rebuilt from Kafka (closed if not
        `rebuild`: inside a rebalance callback, which recovers what it assigns), and whatever
        was decided since is gone."""
        ending = self._ending
        if ending is None or not (wait or ending.ended.done()):
            return True
        self._ending = None
        waited = time.monotonic()
        try:
            ending.ended.result(max(0.0, ending.deadline - waited))
        except KafkaException as exc:
            self._transaction_failed(ending.producer, exc, rebuild)
            return False
        except FutureTimeout:
            self._transaction_wedged(rebuild)
            return False
        self.stats.commit_s += time.monotonic() - waited
        self._committed = ending
        if write or ending.command_bytes > WRITE_AFTER_BYTES_MAX:
            self._write_committed()
        return True

    def _write_committed(self) -> None:
        ending, self._committed = self._committed, None
        if ending is not None:
            self._write_sealed(ending)

    @staticmethod
    def _write_sealed(ending: _Ending) -> None:
        """The transaction committed: its partitions' states reflect it in RocksDB too."""
        for partition in ending.partitions:
            partition.events_offset = ending.events_offsets.get(
                partition.index, partition.events_offset
            )
            partition.state.write_sealed(
                {
                    _META_EVENTS_OFFSET: str(partition.events_offset).encode(),
                    _META_CHECKPOINT: ending.checkpoints[partition.index],
                }
            )

    def _produce_outbox(
        self,
        producer: Producer,
        partition: _Partition,
        encoded: EncodedEvents,
        on_events_delivered: Callable[[KafkaError | None, Message], None],
    ) -> bytes:
        """Produce what the partition's step gave; returns the checkpoint it logged."""
        out = partition.out
        topics = self.topics
        produce = producer.produce
        # The events offset is known only after delivery; recovery reads it from RocksDB's meta
        # and folds whatever events follow it.
        checkpoint = encode_checkpoint(partition.machine.checkpoint(partition.commands_next, -1))
        events = out.events
        # At least one message, even without events: the last one carries the checkpoint (and
        # the projections learn an applied entry was folded).
        starts = list(range(0, len(events), EVENTS_PER_MESSAGE)) or [0]
        for start in starts:
            chunk = events[start : start + EVENTS_PER_MESSAGE]
            last = start == starts[-1]
            # The last message names the sequence offset folded with it (read-your-writes).
            marker = out.applied_sequence if last else -1
            produce(
                topics.events,
                value=encode_event_batch(EventBatch(partition.index, chunk, marker), encoded),
                partition=partition.index,
                headers=[(CHECKPOINT_HEADER, checkpoint)] if last else None,
                on_delivery=on_events_delivered,
            )
        for value, key, headers in partition.dead_letters:
            produce(topics.dead_letters, value=value, key=key, headers=headers)
        for result in out.results:
            produce(
                topics.results,
                value=encode_result_batch(result),
                key=result.submitter.encode(),
                partition=results_partition(result.submitter, self.config.partitions),
            )
        for target, message in out.messages:
            if isinstance(message, Facts):
                value, kind = encode_facts(message), KIND_FACTS
            else:
                assert isinstance(message, Apply)
                value, kind = encode_apply(message), KIND_APPLY
            produce(topics.commands, value=value, partition=target, headers=[(KIND_HEADER, kind)])
        for entry in out.sequence:
            produce(topics.sequence, value=encode_sequenced_entry(entry), partition=0)
        return checkpoint

    def _holding(self) -> bool:
        """Something decided is waiting for its transaction."""
        return any(p.touched for p in self.partitions.values())

    def _group_metadata(self) -> Any:
        """The consumer's group membership, which the offsets are committed under (a zombie's
        is refused). It changes only in a rebalance, so it is read once after each one: read
        on every transaction it cost ~0.15 ms of the loop under load."""
        if self._membership is None:
            self._membership = self.consumer.consumer_group_metadata()
        return self._membership

    @staticmethod
    def _end_transaction(producer: Producer, offsets: list[TopicPartition], metadata: Any) -> None:
        producer.send_offsets_to_transaction(offsets, metadata, 30)
        producer.commit_transaction(30)

    def _transaction_wedged(self, rebuild: bool = True) -> None:
        log.warning(
            "transaction not ended within %.0f s: new producers; rebuilding partitions from "
            "their changelog", self._wedged_after_s,
        )  # fmt: skip
        # The blocked call keeps its (daemon) thread and its producer; both are abandoned. All
        # the producers lived through what wedged this one, so all are replaced; each new one's
        # init_transactions fences its predecessor: their open transactions never land.
        self._finisher = _DaemonCaller()
        self.producers = [self._new_producer(k) for k in range(TRANSACTION_PRODUCERS)]
        self._rebuild_partitions(rebuild)

    def _transaction_failed(
        self, producer: Producer, exc: KafkaException, rebuild: bool = True
    ) -> None:
        error = exc.args[0]
        log.warning(
            "transaction failed (%s); new producer, rebuilding partitions from their changelog",
            error,
        )
        # Never abort_transaction(): a produce request of this transaction may still be on its
        # way (one that timed out here), and landing after an abort marker of the same epoch
        # it would open a transaction nobody ends, holding every read_committed reader of its
        # partition (the hanging transaction of KIP-890). The new producer's init_transactions
        # bumps the epoch instead: the coordinator aborts the transaction under the new epoch,
        # and the partitions then refuse anything the old one still sends. This is what keeps
        # the broker's own check (transaction.partition.verification.enable) unnecessary for
        # the processor: docs/PIPELINE.md.
        index = self.producers.index(producer)
        self.producers[index] = self._new_producer(index)
        self._rebuild_partitions(rebuild)

    def _rebuild_partitions(self, rebuild: bool = True) -> None:
        # Whatever became of the transaction, drop the buffers, recover what Kafka committed,
        # and read the commands again from where the states stand. Inside a rebalance callback
        # the partitions are only closed: seeking there fails, and the assignment that follows
        # recovers them.
        indexes = list(self.partitions)
        self._close_partitions(indexes)
        self._decided_bytes = 0
        if not rebuild:
            return
        self._recover(indexes)
        for partition in self.partitions.values():
            self.consumer.seek(
                TopicPartition(self.topics.commands, partition.index, partition.commands_next)
            )

    # ------------------------------------------------------------------------------------------
    # Ownership changes and recovery

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), between loops: no transaction is being produced,
        # but the previous one may still be ending; ownership changes only once it has. (What
        # was decided and not yet produced went with the revocation that came first.)
        self._settle(wait=True, rebuild=False)
        self._membership = None  # a new generation
        indexes = [tp.partition for tp in assigned]
        self._recover(indexes)
        # Resume each partition's commands where its state stands.
        consumer.assign(
            [
                TopicPartition(self.topics.commands, index, self.partitions[index].commands_next)
                for index in indexes
            ]
        )

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._settle(wait=True, rebuild=False)
        self._membership = None
        indexes = [tp.partition for tp in revoked]
        if self._holding():
            # Decided but not produced (group commit): a decision may span partitions, so none
            # of it may go out half. All of it is dropped, with every partition (the eager
            # protocol revokes them all anyway); the next owners read those commands again.
            indexes = list(self.partitions)
            self._decided_bytes = 0
        self._close_partitions(indexes)

    def _close_partitions(self, indexes: list[int]) -> None:
        for index in indexes:
            partition = self.partitions.pop(index, None)
            if partition is not None:
                partition.state.discard()
                partition.store.close()
        self._sequence_position = None
        self._join_peers()

    def _recover(self, indexes: list[int]) -> None:
        for index in indexes:
            if index not in self.partitions:
                self.partitions[index] = self._recover_partition(index)
        self._join_peers()

    def _join_peers(self) -> None:
        """The partitions owned here decide together what touches only them: one transaction
        commits all their outboxes (the co-located path of docs/PIPELINE.md)."""
        peers = {index: (p.machine, p.out) for index, p in self.partitions.items()}
        for partition in self.partitions.values():
            partition.machine.join(peers)

    def _recover_partition(self, index: int) -> _Partition:
        started = time.monotonic()
        # No RocksDB WAL unless asked for: the events topic is this store's changelog, and
        # recovery folds what it lacks past the offset it records (a WAL write per commit was
        # a tenth of the processor's time).
        store = PartitionStore(
            self.config.data_dir / f"partition-{index}",
            sync=self.config.sync_writes,
            wal=self.config.sync_writes,
        )
        state = RocksLedgerState(store)
        ownership = PartitionOwnership(index, self.config.partitions)
        raw_offset = state.get_meta(_META_EVENTS_OFFSET)
        events_offset = int(raw_offset.decode()) if raw_offset else -1
        folded = messages = 0
        carried: bytes | None = None  # the last checkpoint the folded messages carried
        for message in read_committed(
            self.config.bootstrap, self.topics.events, index, events_offset + 1
        ):
            for event in decode_event_batch(message.value() or b"").events:
                apply_event(state, event, ownership)
                folded += 1
            _, events_offset = _position(message)
            messages += 1
            carried = message_headers(message).get(CHECKPOINT_HEADER, carried)
        # The latest checkpoint: the last one the log carries past RocksDB's, else RocksDB's.
        latest = carried
        if latest is None and not messages:
            latest = state.get_meta(_META_CHECKPOINT)
        if latest is None:
            # Events without checkpoints (or none and no state): written by a version that
            # logged checkpoints to processor-log[p], whose last one is then the latest.
            logged = last_committed(self.config.bootstrap, self.topics.processor_log, index)
            latest = None if logged is None else logged.value()
        machine = PartitionMachine(index, self.config.partitions, state, self.config.ledger)
        commands_next = 0
        if latest:
            checkpoint = decode_checkpoint(latest)
            machine.restore(checkpoint, self._held_messages(index, checkpoint_messages(checkpoint)))
            commands_next = checkpoint.commands_offset
        state.commit(
            {
                _META_EVENTS_OFFSET: str(events_offset).encode(),
                _META_CHECKPOINT: encode_checkpoint(
                    machine.checkpoint(commands_next, events_offset)
                ),
            }
        )
        log.info(
            "partition %d ready in %.2f s (folded %d events, commands at %d)",
            index, time.monotonic() - started, folded, commands_next,
        )  # fmt: skip
        return _Partition(index, store, state, machine, commands_next, events_offset)

    def _held_messages(self, index: int, keys: list[MessageKey]) -> dict[MessageKey, Payload]:
        """The messages a checkpoint names, read back from the sequence and commands topics."""
        found: dict[MessageKey, Payload] = {}
        for kind, topic, partition in (
            (SEQUENCE, self.topics.sequence, 0),
            (COMMANDS, self.topics.commands, index),
        ):
            wanted = {offset for key_kind, offset in keys if key_kind == kind}
            if not wanted:
                continue
            for message in read_committed(self.config.bootstrap, topic, partition, min(wanted)):
                _, offset = _position(message)
                if offset in wanted:
                    found[(kind, offset)] = self._decode_held(kind, message)
                if offset >= max(wanted):
                    break
        return found

    @staticmethod
    def _decode_held(kind: str, message: Message) -> Payload:
        value = message.value() or b""
        if kind == SEQUENCE:
            return decode_sequenced_entry(value)
        header = message_headers(message).get(KIND_HEADER, KIND_REQUEST)
        if header == KIND_FACTS:
            return decode_facts(value)
        if header == KIND_APPLY:
            return decode_apply(value)
        return decode_command_batch(value)
