"""The projection worker: folds its share of the events topic into per-partition read models.

A `ProjectionWorker` is one member of the consumer group `<prefix>projections` on the events
topic (SPEC §2 "Projections", built on confluent-kafka + rocksdict directly: faust-streaming
reads aborted transactions by default and folds only 3-5k events/s per worker, see
docs/FAUST.md). For every partition the group assigns it, it opens a
`PartitionStore` under `<data_dir>/projections/<worker>/partition-<p>` and folds the partition
into a `PartitionProjection`. The applied offset lives in each store, written atomically with
the message's changes, so nothing is committed to Kafka: on assignment the worker resumes at
`applied_offset() + 1`, and a message applied twice changes nothing.

Read-your-writes (SPEC §5): each partition keeps `position`, the next offset the worker will
fold; every offset below it is folded, or is a transaction marker or aborted data. A read takes
the partition's end offset when it starts (`end_offsets`) and waits until `position` reaches
it (`wait_positions`).

Threads: one apply thread owns the Kafka consumer (rebalance callbacks run in it too); the
queries run on other threads against the same RocksDB (which is thread-safe), and a partition's
store is closed only once no query holds it (`borrow`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # where it is defined (and typed)

from processors.store import MemoryBudget, PartitionStore
from projections.model import OlderLayout, PartitionProjection
from schemas.codec import decode_event_batch
from schemas.topics import Topics

__all__ = [
    "EndOffsets",
    "NotOwned",
    "PartitionBehind",
    "ProjectionWorker",
    "WorkerConfig",
    "WorkerFailed",
]

log = logging.getLogger("ledger.projections")

# What a read waits for. "high_watermark" (the default): every record appended before the read
# started, once its transaction is decided. "stable": the last stable offset only. Kafka
# answers EndTxn before it writes the markers, so a result can become visible (its partition's
# marker written) a moment before the events partition's marker is: the last stable offset
# taken then would miss the write that just returned. The high watermark cannot miss it; the
# price is waiting for a transaction in flight on the partition to be decided (milliseconds;
# a dead processor's open transaction at most its transaction timeout).
EndOffsets = Literal["high_watermark", "stable"]

_ASSIGNMENT_STRATEGY: Final = "cooperative-sticky"
_STALE_LEADER_ERRORS: Final = frozenset(
    {
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)  # partitions that stay keep serving


class NotOwned(Exception):
    """This worker does not (or no longer) own the partition: ask the registry again."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"partition {partition} is not owned by this worker")
        self.partition = partition


class PartitionBehind(Exception):
    """The partition did not catch up with the read's start in time (HTTP 503)."""

    def __init__(self, partition: int, position: int, target: int, waited_s: float) -> None:
        super().__init__(
            f"projection partition {partition} is behind: folded up to offset {position}, "
            f"the read needs {target} (waited {waited_s:.1f} s)"
        )
        self.partition = partition
        self.position = position
        self.target = target


class WorkerFailed(Exception):
    """The apply thread stopped on an error: this worker answers nothing any more."""


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    data_dir: Path  # the ledger's data directory (LEDGER_DATA_DIR)
    worker: str  # stable name: names its state directory and its registry entry
    partitions: int
    topics: Topics = field(default_factory=Topics)
    batch_messages: int = 1000  # messages per consume() call
    poll_timeout_s: float = 0.1
    session_timeout_ms: int = 10_000
    sync_writes: bool = False  # a projection is rebuilt from the log: no fsync per message
    end_offsets: EndOffsets = "high_watermark"

    @property
    def group(self) -> str:
        return f"{self.topics.prefix}projections"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "projections" / self.worker


class _Owned:
    """One assigned partition: its store, its projection and how far it has folded."""

    def __init__(self, projection: PartitionProjection) -> None:
        self.projection = projection
        self.position = projection.applied_offset() + 1
        self.readers = 0
        self.closing = False


@dataclass(eq=False)
class _Waiter:
    target: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    # Runs on the waiter's loop; the waiter may have timed out and gone meanwhile.
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class ProjectionWorker:
    """Folds the events partitions assigned to it; see the module docstring."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        budget: MemoryBudget | None = None,
        on_assignment: Callable[[frozenset[int]], None] | None = None,
    ) -> None:
        self.config = config
        self._budget = budget if budget is not None else MemoryBudget.shared()
        self._on_assignment = on_assignment
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # a reader gave a partition back
        self._owned: dict[int, _Owned] = {}
        self._waiters: dict[int, list[_Waiter]] = {}
        self._stop = threading.Event()
        self._assigned_once = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._admin = AdminClient({"bootstrap.servers": config.bootstrap})
        self.failure: BaseException | None = None
        self.end_offsets_mode: EndOffsets = config.end_offsets
        self.events_applied = 0
        self.messages_applied = 0

    # Life cycle -------------------------------------------------------------------------------

    def start(self) -> ProjectionWorker:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap,
                "group.id": self.config.group,
                "client.id": f"ledger-projections-{self.config.worker}",
                # Every consumer of the events reads committed data only (SPEC §2).
                "isolation.level": "read_committed",
                # The offset lives in each partition's store, written with its changes.
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # EOF carries the position past trailing transaction markers (read-your-writes).
                "enable.partition.eof": True,
                "partition.assignment.strategy": _ASSIGNMENT_STRATEGY,
                "session.timeout.ms": self.config.session_timeout_ms,
                "heartbeat.interval.ms": max(500, self.config.session_timeout_ms // 5),
                "max.poll.interval.ms": 300_000,
                "fetch.wait.max.ms": 50,
            }
        )
        self._consumer.subscribe(
            [self.config.topics.events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"projections-{self.config.worker}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Leave the group and close every store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_assigned(self, timeout_s: float) -> bool:
        """Whether the group has given this worker its first assignment (maybe empty)."""
        return self._assigned_once.wait(timeout_s)

    def owned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(p for p, o in self._owned.items() if not o.closing)

    def position(self, partition: int) -> int | None:
        owned = self._owned.get(partition)
        return None if owned is None else owned.position

    # Reads ------------------------------------------------------------------------------------

    @contextmanager
    def borrow(self, partition: int) -> Iterator[PartitionProjection]:
        """The partition's projection, kept open until the block ends (raises NotOwned)."""
        self._check_alive()
        with self._lock:
            owned = self._owned.get(partition)
            if owned is None or owned.closing:
                raise NotOwned(partition)
            owned.readers += 1
        try:
            yield owned.projection
        finally:
            with self._lock:
                owned.readers -= 1
                if owned.readers == 0:
                    self._released.notify_all()

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The events partitions' end offsets now (one ListOffsets request for all of them)."""
        if not partitions:
            return {}
        isolation = (
            IsolationLevel.READ_COMMITTED
            if self.end_offsets_mode == "stable"
            else IsolationLevel.READ_UNCOMMITTED
        )
        topic = self.config.topics.events
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        requests = {TopicPartition(topic, p): latest for p in partitions}
        try:
            return await self._list_offsets(requests, isolation)
        except KafkaException as exc:
            if exc.args[0].code() not in _STALE_LEADER_ERRORS:
                raise
            # After a broker restart librdkafka's admin client can keep sending the leader
            # epochs it knew before, and the broker refuses them every time
            # (FENCED_LEADER_EPOCH): a new client learns the current ones.
            log.warning("ListOffsets: %s; asking again with a new admin client", exc.args[0])
            self._admin = AdminClient({"bootstrap.servers": self.config.bootstrap})
            return await self._list_offsets(requests, isolation)

    async def _list_offsets(
        self, requests: dict[TopicPartition, Any], isolation: IsolationLevel
    ) -> dict[int, int]:
        futures = self._admin.list_offsets(
            requests, isolation_level=isolation, request_timeout=10.0
        )
        found: dict[int, int] = {}
        for tp, future in futures.items():
            info = await asyncio.wrap_future(future)
            found[tp.partition] = int(info.offset)
        return found

    async def wait_positions(self, targets: dict[int, int], timeout_s: float) -> None:
        """Wait until each partition's position reaches its target; PartitionBehind after
        `timeout_s`, NotOwned if a partition is (or gets) revoked."""
        started = time.monotonic()
        for partition, target in targets.items():
            remaining = timeout_s - (time.monotonic() - started)
            await self._wait_position(partition, target, remaining, started)

    async def _wait_position(
        self, partition: int, target: int, timeout_s: float, started: float
    ) -> None:
        self._check_alive()
        loop = asyncio.get_running_loop()
        with self._lock:
            owned = self._owned.get(partition)
            if owned is None or owned.closing:
                raise NotOwned(partition)
            if owned.position >= target:
                return
            waiter = _Waiter(target, loop, loop.create_future())
            self._waiters.setdefault(partition, []).append(waiter)
        try:
            await asyncio.wait_for(waiter.future, max(timeout_s, 0.0))
        except TimeoutError:
            position = self.position(partition)
            raise PartitionBehind(
                partition, -1 if position is None else position, target,
                time.monotonic() - started,
            ) from None  # fmt: skip
        finally:
            with self._lock:
                waiting = self._waiters.get(partition)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)

    def _check_alive(self) -> None:
        if self.failure is not None:
            raise WorkerFailed(f"projection worker stopped: {self.failure}") from self.failure

    # The apply thread -------------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                messages = consumer.consume(self.config.batch_messages, self.config.poll_timeout_s)
                if messages:
                    self._apply(messages)
        except BaseException as exc:  # reads must learn that nothing advances any more
            log.exception("projection worker %s failed", self.config.worker)
            self.failure = exc
            self._fail_waiters(exc)
        finally:
            try:
                consumer.close()  # leaves the group (on_revoke closes the stores)
            except Exception as exc:
                log.warning("closing the events consumer: %s", exc)
            self._close_all()

    def _apply(self, messages: list[Any]) -> None:
        owned_map = self._owned
        touched: set[int] = set()
        events = 0
        applied = 0
        for message in messages:
            error = message.error()
            partition = message.partition()
            owned = owned_map.get(partition)
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # Past markers and aborted data at the end: everything below is decided.
                    if owned is not None and message.offset() > owned.position:
                        owned.position = message.offset()
                        touched.add(partition)
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    log.warning("events consumer: %s", error)
                continue
            if owned is None:  # revoked meanwhile
                continue
            offset = message.offset()
            batch = decode_event_batch(message.value() or b"")
            owned.projection.apply(offset, batch.events, batch.source_offset)
            owned.position = offset + 1
            events += len(batch.events)
            applied += 1
            touched.add(partition)
        self.events_applied += events
        self.messages_applied += applied
        if touched and self._waiters:
            self._wake(touched)

    def _wake(self, partitions: set[int]) -> None:
        ready: list[_Waiter] = []
        with self._lock:
            for partition in partitions:
                waiting = self._waiters.get(partition)
                owned = self._owned.get(partition)
                if not waiting or owned is None:
                    continue
                keep = [w for w in waiting if w.target > owned.position]
                ready.extend(w for w in waiting if w.target <= owned.position)
                self._waiters[partition] = keep
        for waiter in ready:
            waiter.loop.call_soon_threadsafe(_settle, waiter.future, None)

    def _fail_waiters(self, error: BaseException, partitions: set[int] | None = None) -> None:
        with self._lock:
            failing = [
                (p, w)
                for p, waiting in self._waiters.items()
                if partitions is None or p in partitions
                for w in waiting
            ]
            for p, _waiter in failing:
                self._waiters.pop(p, None)
        for p, waiter in failing:
            failure = NotOwned(p) if isinstance(error, NotOwned) else error
            waiter.loop.call_soon_threadsafe(_settle, waiter.future, failure)

    # Rebalance callbacks (run in the apply thread, inside consume) ----------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        starts = []
        for tp in partitions:
            p = tp.partition
            projection = self._open(p)
            applied = projection.applied_offset()
            with self._lock:
                self._owned[p] = _Owned(projection)
            # Resume after what the store reflects (the offset lives in RocksDB, not Kafka).
            starts.append(
                TopicPartition(tp.topic, p, applied + 1 if applied >= 0 else OFFSET_BEGINNING)
            )
        consumer.incremental_assign(starts)
        log.info("worker %s assigned %s", self.config.worker, sorted(tp.partition for tp in starts))
        self._assigned_once.set()
        self._announce()

    def _open(self, partition: int) -> PartitionProjection:
        path = self.config.state_dir / f"partition-{partition}"
        store = PartitionStore(path, sync=self.config.sync_writes, budget=self._budget)
        try:
            return PartitionProjection(store, partition, self.config.partitions)
        except OlderLayout as exc:
            # Derived data only: rebuilt from the log, as a new owner without a store would.
            log.warning("%s; rebuilding it", exc)
            store.close()
            shutil.rmtree(path)
            store = PartitionStore(path, sync=self.config.sync_writes, budget=self._budget)
            return PartitionProjection(store, partition, self.config.partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._release(consumer, partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._release(consumer, partitions)

    def _release(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        self._close(revoked)
        self._fail_waiters(NotOwned(-1), revoked)
        consumer.incremental_unassign(partitions)
        log.info("worker %s released %s", self.config.worker, sorted(revoked))
        self._announce()

    def _announce(self) -> None:
        if self._on_assignment is not None:
            try:
                self._on_assignment(self.owned())
            except Exception:  # the registry must not stop the folding
                log.exception("announcing the assignment of worker %s", self.config.worker)

    def _close(self, partitions: set[int]) -> None:
        closing: list[_Owned] = []
        with self._lock:
            for p in partitions:
                owned = self._owned.get(p)
                if owned is not None:
                    owned.closing = True  # new reads get NotOwned from now on
                    closing.append(owned)
            # Queries in progress finish on the open store first.
            while any(o.readers for o in closing):
                self._released.wait(1.0)
            for p in partitions:
                self._owned.pop(p, None)
        for owned in closing:
            owned.projection.store.close()

    def _close_all(self) -> None:
        with self._lock:
            partitions = set(self._owned)
        self._close(partitions)
        self._fail_waiters(NotOwned(-1), partitions)
