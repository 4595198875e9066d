"""Replay (SPEC §6): rebuild every projection from offset 0 of the events topic into a fresh
store and prove it equals the live projections by content hash, at the same log position.

1. Ask the live projection workers (`live_hashes`): the registry (`projections.routing`) names
   the owner of each events partition, and the owner's internal endpoint `content_hash`
   answers, once caught up with the partition's end, the partition's applied offset and
   content hash read from one RocksDB snapshot (`PartitionProjection.content_hash`).
2. Replay each partition from offset 0 exactly up to that offset (partitions without a live
   owner: up to their end as of the start) into `PartitionProjection`s in a fresh directory.
3. Hash the rebuilt stores the same way and compare; a mismatch names the partition.

The replay is the worker's fold on a bulk path (docs/AUDIT.md): one process per core over
disjoint partitions, each with one consumer and large fetches; each partition's messages of one
fetch folded in one RocksDB write batch with the offset of the last
(`PartitionProjection.apply_many`: a fresh store needs no per-message idempotency check, and
the stored result is the same as message by message); stores without a WAL (an interrupted
replay starts again in a fresh directory) and with larger memtables; the cycle collector paused.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from processors.setup import partition_count
from processors.store import MemoryBudget, PartitionStore
from projections.model import PartitionProjection
from projections.routing import INTERNAL_PREFIX, Owner, Registry, registry_topic
from schemas.codec import decode_event_batch
from schemas.topics import Topics

__all__ = [
    "LivePartition",
    "ReplayResult",
    "live_hashes",
    "replay",
    "replay_events",
    "total_offsets",
]

_CONSUME_MESSAGES: Final = 100  # per fetch: bounds the decoded events held at once
_REGISTRY_WAIT_S: Final = 10.0
_RETRY_PAUSE_S: Final = 0.2
_MIB: Final = 1024 * 1024
_CACHE_BYTES: Final = 32 * _MIB  # per replay process
_MEMTABLE_BUDGET_BYTES: Final = 128 * _MIB  # per replay process, charged to the cache
_MEMTABLE_BYTES: Final = 64 * _MIB  # per store


@dataclass(frozen=True, slots=True)
class LivePartition:
    """What the live owner of a partition reported: taken together from one snapshot."""

    worker: str
    offset: int  # the last message folded; -1 if none
    content_hash: str


@dataclass
class ReplayResult:
    partitions: int
    events: int = 0
    messages: int = 0
    seconds: float = 0.0
    offsets: dict[int, int] = field(default_factory=dict)  # last message replayed, -1 if none
    hashes: dict[int, str] = field(default_factory=dict)
    live: dict[int, LivePartition] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def mismatches(self) -> list[int]:
        """The partitions whose replay differs from the live projection."""
        return [
            p
            for p, live in sorted(self.live.items())
            if (live.offset, live.content_hash) != (self.offsets.get(p), self.hashes.get(p))
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s),
            "partitions": self.partitions,
            "compared": len(self.live),
            "matches": len(self.live) - len(self.mismatches()),
            "mismatched": self.mismatches(),
        }


# ---------------------------------------------------------------------------------------------
# The live side


def live_hashes(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> dict[int, LivePartition]:
    """(offset, content hash) of every partition a live worker owns; {} when none runs.
    A partition whose owner is moving (409 not_owner) or gone (no answer) is asked again, of
    its owner per the registry then, until `timeout_s`; then ConnectionError names it."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if partition_count(admin, registry_topic(topics)) is None:
        return {}
    registry = Registry(bootstrap, topics).start()
    deadline = time.monotonic() + timeout_s
    found: dict[int, LivePartition] = {}
    try:
        registry.wait_caught_up(_REGISTRY_WAIT_S)
        while True:
            failures = []
            by_owner: dict[Owner, list[int]] = {}
            for p, owner in registry.owners().items():
                if p < partitions and p not in found:
                    by_owner.setdefault(owner, []).append(p)
            for owner, owned in by_owner.items():
                try:
                    answer = _ask_content_hash(owner, owned, api_key, timeout_s)
                except (urllib.error.URLError, OSError) as exc:  # moved, or a stale claim
                    failures.append(
                        f"projection worker {owner.worker} at {owner.url} (partitions "
                        f"{sorted(owned)}) did not answer: {exc}"
                    )
                    continue
                for partition, (offset, digest) in answer.items():
                    found[int(partition)] = LivePartition(owner.worker, int(offset), str(digest))
            if not failures:
                return found
            if time.monotonic() > deadline:
                raise ConnectionError("; ".join(failures))
            time.sleep(_RETRY_PAUSE_S)
    finally:
        registry.stop()


def _ask_content_hash(
    owner: Owner, partitions: list[int], api_key: str | None, timeout_s: float
) -> dict[str, list[Any]]:
    body = json.dumps({"args": {}, "partitions": sorted(partitions)}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    request = urllib.request.Request(
        f"{owner.url}{INTERNAL_PREFIX}/content_hash", data=body, headers=headers
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer: dict[str, list[Any]] = json.loads(response.read())["result"]
    return answer


# ---------------------------------------------------------------------------------------------
# The replay


def replay_events(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    into: Path,
    until: dict[int, int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    processes: int | None = None,
) -> ReplayResult:
    """Fold every events partition from offset 0 into a fresh store under `into`
    (`partition-<p>`): partition p up to and including offset `until[p]` when given, else up
    to its end as of the start. The partitions are shared among `processes` (default: one per
    core, at most one per partition). `on_progress(offsets_done, events)` about every 0.2 s."""
    ends = _ends(bootstrap, topics, partitions, until or {})
    count = max(1, min(processes or os.cpu_count() or 1, partitions))
    groups = [list(range(partitions))[i::count] for i in range(count)]
    result = ReplayResult(partitions)
    if count == 1:
        done = [_replay_group(bootstrap, topics, partitions, groups[0], ends, into, on_progress)]
    else:
        done = _in_processes(bootstrap, topics, partitions, groups, ends, into, on_progress)
    for group in done:
        result.events += group.events
        result.messages += group.messages
        result.offsets.update(group.offsets)
        result.hashes.update(group.hashes)
    # From the first process's first fetch to the last one's last fold (start-up excluded).
    result.seconds = max(g.finished for g in done) - min(g.started for g in done)
    return result


def _ends(bootstrap: str, topics: Topics, partitions: int, until: dict[int, int]) -> dict[int, int]:
    """The exclusive end of each partition's replay: after `until[p]`, or its end now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topics.prefix}replay"})
    try:
        ends = {}
        for p in range(partitions):
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topics.events, p), timeout=30
            )
            ends[p] = until[p] + 1 if p in until else high
        return ends
    finally:
        consumer.close()


@dataclass
class _GroupResult:
    offsets: dict[int, int]
    hashes: dict[int, str]
    events: int
    messages: int
    started: float  # time.monotonic(): one clock for every process of the machine
    finished: float


def _replay_group(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    group: list[int],
    ends: dict[int, int],
    into: Path,
    on_progress: Callable[[int, int], None] | None,
) -> _GroupResult:
    """Replay the partitions of `group` with one consumer (see `replay_events`)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topics.prefix}replay",  # assign() only: nothing is ever committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # committed data only (SPEC §2)
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "fetch.wait.max.ms": 10,
        }
    )
    # No WAL: a replay interrupted is started again in a fresh directory anyway. Larger
    # memtables: fewer flushes and compactions competing with the fold for the cores.
    budget = MemoryBudget(_CACHE_BYTES, _MEMTABLE_BUDGET_BYTES)
    stores = {
        p: PartitionStore(
            into / f"partition-{p}", sync=False, wal=False, budget=budget,
            write_buffer_size_bytes=_MEMTABLE_BYTES,
        )
        for p in group
    }  # fmt: skip
    events_total = messages_total = 0
    # The decoded events form no reference cycles, but the collector would walk every one of
    # them in each generation-2 pass (as the processors do, docs/BENCHMARKS.md).
    collecting = gc.isenabled()
    gc.disable()
    try:
        projections = {p: PartitionProjection(stores[p], p, partitions) for p in group}
        positions = dict.fromkeys(group, 0)
        remaining = {p for p in group if ends[p] > 0}
        consumer.assign(
            [TopicPartition(topics.events, p, OFFSET_BEGINNING) for p in sorted(remaining)]
        )
        started = time.monotonic()
        while remaining:
            fetched: dict[int, list[tuple[int, list[Any], int]]] = {}
            for message in consumer.consume(_CONSUME_MESSAGES, 1.0):
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                partition, offset = message.partition(), message.offset()
                if partition is None or partition not in remaining or offset is None:
                    continue
                p = partition
                if error is not None:  # end of the partition: past any trailing markers
                    positions[p] = max(positions[p], offset)
                elif offset >= ends[p]:
                    positions[p] = ends[p]
                else:
                    batch = decode_event_batch(message.value() or b"")
                    fetched.setdefault(p, []).append((offset, batch.events, batch.source_offset))
                    positions[p] = offset + 1
            for p, messages in fetched.items():
                projections[p].apply_many(messages)
                messages_total += len(messages)
                events_total += sum(len(events) for _o, events, _s in messages)
            done = {p for p in remaining if positions[p] >= ends[p]}
            if done:
                remaining -= done
                consumer.incremental_unassign([TopicPartition(topics.events, p) for p in done])
            if on_progress is not None:
                on_progress(sum(min(positions[p], ends[p]) for p in positions), events_total)
        finished = time.monotonic()
        hashed = {p: projection.content_hash() for p, projection in projections.items()}
    finally:
        if collecting:
            gc.enable()
        consumer.close()
        for store in stores.values():
            store.close()
    return _GroupResult(
        {p: offset for p, (offset, _h) in hashed.items()},
        {p: digest for p, (_o, digest) in hashed.items()},
        events_total, messages_total, started, finished,
    )  # fmt: skip


# Each replay process reports its progress in its two slots of a shared array.
_progress: Any = None


def _init_process(progress: Any) -> None:
    global _progress
    _progress = progress


def _replay_in_process(
    slot: int,
    bootstrap: str,
    topics: Topics,
    partitions: int,
    group: list[int],
    ends: dict[int, int],
    into: Path,
) -> _GroupResult:
    def report(offsets_done: int, events: int) -> None:
        _progress[2 * slot], _progress[2 * slot + 1] = offsets_done, events

    return _replay_group(bootstrap, topics, partitions, group, ends, into, report)


def _in_processes(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    groups: list[list[int]],
    ends: dict[int, int],
    into: Path,
    on_progress: Callable[[int, int], None] | None,
) -> list[_GroupResult]:
    # spawn: the parent may hold librdkafka threads, which fork would copy half-alive.
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", 2 * len(groups), lock=False)
    with ProcessPoolExecutor(
        len(groups), mp_context=context, initializer=_init_process, initargs=(progress,)
    ) as pool:
        futures = [
            pool.submit(_replay_in_process, i, bootstrap, topics, partitions, g, ends, into)
            for i, g in enumerate(groups)
        ]
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in futures):
                break
            if on_progress is not None:
                on_progress(sum(progress[0::2]), sum(progress[1::2]))
        return [f.result() for f in futures]


def replay(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    into: Path,
    compare: bool = True,
    api_key: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Ask the live workers (when `compare`), replay up to their positions, compare."""
    live = live_hashes(bootstrap, topics, partitions, api_key) if compare else {}
    until = {p: partition.offset for p, partition in live.items()}
    result = replay_events(bootstrap, topics, partitions, into, until, on_progress)
    result.live = live
    return result


def total_offsets(bootstrap: str, topics: Topics, partitions: int) -> int:
    """The events partitions' high watermarks summed: a progress bar's total."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topics.prefix}replay"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topics.events, p), timeout=30)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()
