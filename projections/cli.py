"""Running a projection worker with the HTTP API, and measuring it.

    python -m projections --worker <name> [--http-port <port>] [--data-dir <dir>]
    python -m projections bench [--events 200000] [--partitions 8] [--reads 2000]
    python -m projections bench-replay [--events 200000] [--partitions 8]

Environment: LEDGER_KAFKA_BOOTSTRAP (else the local broker is started or reused),
LEDGER_TOPIC_PREFIX, LEDGER_PARTITIONS, LEDGER_DATA_DIR, LEDGER_HTTP_PORT (default 8080),
LEDGER_API_KEYS (comma-separated; empty: no authentication) and LEDGER_ALLOW_CLOCK_CONTROL=1
(serves POST /admin/clock, which advances every processor's clock; tests only).

The worker prints one line containing `ready` and its URL once it serves HTTP and has folded
its partitions up to their end; SIGINT or SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer

from processors.service import (
    ENV_ALLOW_CLOCK_CONTROL,
    KIND_CLOCK,
    KIND_CLOCK_TO,
    KIND_HEADER,
    message_headers,
)
from processors.settings import LedgerEnvironment, ledger_config_from_env
from processors.setup import ensure_topics
from producers import AsyncLedgerClient
from projections.routing import (
    ReadUnavailable,
    Registry,
    RoutedReads,
    add_internal_routes,
    ensure_registry_topic,
)
from projections.worker import EndOffsets, NotOwned, ProjectionWorker, WorkerConfig
from schemas.topics import CHECKPOINT_HEADER, Topics

__all__ = [
    "ENV_API_KEYS",
    "ClockControl",
    "WorkerNode",
    "api_keys_from_env",
    "main",
    "run_worker",
]

ENV_API_KEYS = "LEDGER_API_KEYS"
CLOCK_SETTLE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 600.0  # catching up replays the partitions: generous


def api_keys_from_env() -> frozenset[str]:
    raw = os.environ.get(ENV_API_KEYS, "")
    return frozenset(key.strip() for key in raw.split(",") if key.strip())


class ClockControl:
    """`clock_control(value_ns, absolute)`: a `kind: clock` (advance) or `kind: clock-to` (set)
    message to every commands partition (each processor honours it only with
    LEDGER_ALLOW_CLOCK_CONTROL=1). Returns once the processors have settled what it caused:
    each has committed past its message, and every sequenced entry up to then (the expiries it
    sequenced) is folded by its participants, so reads after it see the expiries (TigerBeetle's
    tables expect that of a tick)."""

    def __init__(self, bootstrap: str, topics: Topics, partitions: int) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._topic = topics.commands
        self._partitions = partitions
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
        )
        self._lock = threading.Lock()  # one advance at a time: deliveries are counted per call

    async def __call__(self, value_ns: int, absolute: bool = False) -> None:
        """Advance every processor's clock by `value_ns`, or set it to `value_ns` (absolute)."""
        if not -(1 << 63) <= value_ns < 1 << 63:
            raise ValueError("must fit a signed 64-bit integer")
        await asyncio.to_thread(self._send, value_ns, KIND_CLOCK_TO if absolute else KIND_CLOCK)

    def _send(self, value_ns: int, kind: bytes) -> None:
        value = value_ns.to_bytes(8, "big", signed=True)
        failures: list[KafkaError] = []
        offsets: dict[int, int] = {}

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                offsets[partition] = offset

        with self._lock:
            for partition in range(self._partitions):
                self._producer.produce(
                    self._topic,
                    value,
                    partition=partition,
                    headers=[(KIND_HEADER, kind)],
                    on_delivery=delivered,
                )
            left = self._producer.flush(30)
            if left or failures:
                raise RuntimeError(f"clock change not delivered: {failures or f'{left} pending'}")
            self._settle(offsets, time.monotonic() + CLOCK_SETTLE_TIMEOUT_S)

    def _settle(self, clock_offsets: dict[int, int], deadline: float) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from schemas.codec import decode_checkpoint

        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": self._topics.processor_group,  # read its commits, never commit
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            # 1. Every processor committed past its clock message (with what it sequenced).
            wanted = [TopicPartition(self._topic, p) for p in clock_offsets]
            while True:
                committed = consumer.committed(wanted, timeout=10)
                if all((tp.offset or -1) > clock_offsets[tp.partition] for tp in committed):
                    break
                self._wait(deadline, "processors to take the clock change")
            # 2. Every entry sequenced until now is folded by its participants.
            last_entry = self._last_message(consumer, self._topics.sequence, 0)
            end = -1 if last_entry is None else (last_entry.offset() or 0)
            while True:
                checkpoints = [
                    self._last_checkpoint(consumer, partition)
                    for partition in range(self._partitions)
                ]
                settled = True
                for data in checkpoints:
                    if data is None:
                        continue
                    checkpoint = decode_checkpoint(data)
                    if (
                        checkpoint.sequence_next <= end
                        or any(e.offset <= end for e in checkpoint.entries)
                        or any(d.offset <= end for d in checkpoint.decisions)
                    ):
                        settled = False
                if settled:
                    return
                self._wait(deadline, "the processors to fold what the clock change caused")
        finally:
            consumer.close()

    def _last_checkpoint(self, consumer: Any, partition: int) -> bytes | None:
        """The partition's latest checkpoint: on its last events message (or, written by an
        earlier version, the last in processor-log)."""
        message = self._last_message(consumer, self._topics.events, partition)
        carried = None if message is None else message_headers(message).get(CHECKPOINT_HEADER)
        if carried is not None:
            return carried
        logged = self._last_message(consumer, self._topics.processor_log, partition)
        return None if logged is None else bytes(logged.value() or b"")

    @staticmethod
    def _last_message(consumer: Any, topic: str, partition: int) -> Any:
        """The last committed data message of a partition (transaction markers take offsets,
        so the watermark is not it), or None."""
        from confluent_kafka import TopicPartition

        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, partition, max(low, high - 64))])
        last = None
        while True:
            batch = consumer.consume(1000, 0.5)
            for message in batch:
                if message.error() is None:
                    last = message
            if not batch or (last is not None and (last.offset() or 0) >= high - 2):
                return last

    @staticmethod
    def _wait(deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)

    def close(self) -> None:
        self._producer.flush(10)


def _create_app(
    reads: RoutedReads,
    client: AsyncLedgerClient,
    api_keys: frozenset[str],
    clock_control: Callable[[int, bool], Awaitable[None]] | None,
) -> web.Application:
    # Imported late: the API module is developed alongside; without it the worker still serves
    # its internal endpoint.
    try:
        api: Any = importlib.import_module("projections.api")
    except ImportError:
        print("projections.api is not available: serving the internal reads only", flush=True)
        return web.Application()
    app: web.Application = api.create_app(
        reads, client, ledger_config_from_env(), api_keys=api_keys, clock_control=clock_control
    )
    return app


@dataclass
class WorkerNode:
    """One worker with its registry, reads and HTTP server (what the CLI runs; tests too)."""

    worker_name: str
    http_port: int
    bootstrap: str
    topics: Topics
    partitions: int
    data_dir: Path
    api_keys: frozenset[str] = frozenset()
    allow_clock_control: bool = False
    host: str = "127.0.0.1"
    read_timeout_s: float = 10.0
    worker: ProjectionWorker | None = None
    registry: Registry | None = None
    reads: RoutedReads | None = None
    url: str = ""
    _runner: web.AppRunner | None = None
    _client: AsyncLedgerClient | None = None
    _clock: ClockControl | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    async def start(self) -> str:
        """Serve, then fold; returns the URL once caught up (the `ready` moment)."""
        ensure_topics(self.bootstrap, self.topics, self.partitions)
        ensure_registry_topic(self.bootstrap, self.topics)
        registry = self.registry = Registry(self.bootstrap, self.topics).start()

        def announce(owned: frozenset[int]) -> None:
            if self.url:
                registry.announce(self.worker_name, self.url, owned)

        worker = self.worker = ProjectionWorker(
            WorkerConfig(
                bootstrap=self.bootstrap,
                data_dir=self.data_dir,
                worker=self.worker_name,
                partitions=self.partitions,
                topics=self.topics,
            ),
            on_assignment=announce,
        )
        api_key = min(self.api_keys) if self.api_keys else None
        reads = self.reads = RoutedReads(
            worker, registry, read_timeout_s=self.read_timeout_s, api_key=api_key
        )
        self._client = AsyncLedgerClient(self.bootstrap, self.topics.prefix)
        if self.allow_clock_control:
            self._clock = ClockControl(self.bootstrap, self.topics, self.partitions)
        app = _create_app(reads, self._client, self.api_keys, self._clock)
        add_internal_routes(app, reads)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.http_port)
        await site.start()
        port = self._runner.addresses[0][1]  # the real one when asked for port 0
        self.url = f"http://{self.host}:{port}"
        worker.start()  # announces (with the URL) on every assignment change
        await self._catch_up()
        return self.url

    async def _catch_up(self) -> None:
        worker, registry = self.worker, self.registry
        assert worker is not None and registry is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        if not await asyncio.to_thread(worker.wait_assigned, READY_TIMEOUT_S):
            raise TimeoutError("the projections group gave this worker no assignment")
        await asyncio.to_thread(registry.wait_caught_up, 30.0)
        while True:  # the assignment may change while catching up: again then
            owned = sorted(worker.owned())
            try:
                targets = await worker.end_offsets(owned)
                await worker.wait_positions(targets, deadline - time.monotonic())
                break
            except NotOwned:
                continue
        # Announced from the apply thread; seen here once the registry has read it back.
        while registry.claims(self.worker_name) != worker.owned():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.registry is not None:
            self.registry.retire(self.worker_name)  # others stop routing here first
        if self._runner is not None:
            await self._runner.cleanup()
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)
        if self.registry is not None:
            await asyncio.to_thread(self.registry.stop)
        if self.reads is not None:
            await self.reads.close()
        if self._client is not None:
            await self._client.close()
        if self._clock is not None:
            self._clock.close()


async def run_worker(
    worker_name: str,
    http_port: int | None = None,
    data_dir: Path | None = None,
    stop: asyncio.Event | None = None,
    host: str = "127.0.0.1",
) -> None:
    """What `python -m projections --worker NAME` runs, until SIGINT/SIGTERM (or `stop`)."""
    from processors.kafka_broker import ensure_broker

    environment = LedgerEnvironment.from_env()
    bootstrap = await asyncio.to_thread(ensure_broker)
    node = WorkerNode(
        worker_name=worker_name,
        http_port=environment.http_port if http_port is None else http_port,
        bootstrap=bootstrap,
        topics=environment.topics,
        partitions=environment.partitions,
        data_dir=data_dir or environment.data_dir,
        api_keys=api_keys_from_env(),
        allow_clock_control=os.environ.get(ENV_ALLOW_CLOCK_CONTROL) == "1",
        host=host,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        url = await node.start()
        assert node.worker is not None
        print(
            f"projections worker {worker_name} ready: {url} (partitions "
            f"{sorted(node.worker.owned())} of {environment.partitions}, "
            f"topics {environment.topics.prefix}*)",
            flush=True,
        )
        await stop.wait()
    finally:
        await node.stop()


# ---------------------------------------------------------------------------------------------
# bench: the worker's fold speed over a prepared events topic, and the read-your-writes cost


def _produce_bench_events(bootstrap: str, topics: Topics, args: argparse.Namespace) -> int:
    """Fill a fresh events topic with `args.events` random transfers among `args.accounts`
    accounts, each event in every owner's partition as processors write them; returns the
    number of events in the log (copies included)."""
    from processors.ledger import event_owners
    from projections.bench_fold import transfer_messages
    from schemas.codec import encode_event_batch
    from schemas.messages import EventBatch

    ensure_topics(bootstrap, topics, args.partitions)
    per_message = args.events_per_message
    messages = transfer_messages(args.accounts, args.events // per_message, per_message, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    log_events = 0
    for events in messages:
        for p in range(args.partitions):
            mine = [e for e in events if p in event_owners(e, args.partitions)]
            for start in range(0, len(mine), per_message):
                value = encode_event_batch(EventBatch(p, mine[start : start + per_message]))
                producer.produce(topics.events, value, partition=p)
                producer.poll(0)
                log_events += len(mine[start : start + per_message])
    producer.flush(60)
    transfers = sum(len(m) for m in messages[1:])
    print(f"topic {topics.events}: {log_events} events ({transfers} transfers) produced")
    return log_events


def _bench(args: argparse.Namespace) -> int:
    from processors.kafka_broker import ensure_broker

    bootstrap = ensure_broker()
    topics = Topics(f"bench-projections-{uuid.uuid4().hex[:8]}.")
    log_events = _produce_bench_events(bootstrap, topics, args)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_bench_worker(bootstrap, topics, args, Path(tmp), log_events))
    _delete_topics(bootstrap, topics)
    return result


def _bench_replay(args: argparse.Namespace) -> int:
    """`ledger replay`'s fold over a prepared events topic (no live workers): events/s."""
    import json

    from processors.kafka_broker import ensure_broker
    from projections.replay import replay_events

    bootstrap = ensure_broker()
    topics = Topics(f"bench-replay-{uuid.uuid4().hex[:8]}.")
    _produce_bench_events(bootstrap, topics, args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = replay_events(bootstrap, topics, args.partitions, Path(tmp))
    finally:
        if args.keep_topics:
            print(f"topics kept: LEDGER_TOPIC_PREFIX={topics.prefix}")
        else:
            _delete_topics(bootstrap, topics)
    print(
        f"replay: {result.events} events in {result.messages} messages in "
        f"{result.seconds:.3f} s = {result.events_per_s:,.0f} events/s"
    )
    print(json.dumps({**result.summary(), "accounts": args.accounts}))
    return 0


async def _bench_worker(
    bootstrap: str, topics: Topics, args: argparse.Namespace, data_dir: Path, log_events: int
) -> int:
    config = WorkerConfig(bootstrap, data_dir, "bench", args.partitions, topics)
    worker = ProjectionWorker(config)
    started = time.perf_counter()
    worker.start()
    await asyncio.to_thread(worker.wait_assigned, 60)
    assigned = time.perf_counter()
    targets = await worker.end_offsets(sorted(worker.owned()))
    await worker.wait_positions(targets, 600)
    done = time.perf_counter()
    print(
        f"worker fold: {worker.events_applied} events in {worker.messages_applied} messages "
        f"in {done - assigned:.3f} s after assignment = "
        f"{worker.events_applied / (done - assigned):,.0f} events/s "
        f"({done - started:.3f} s from start, incl. joining the group)"
    )
    registry = Registry(bootstrap, topics)
    reads = RoutedReads(worker, registry)
    account_ids = list(range(1, 1 + min(args.accounts, args.reads)))
    modes: tuple[EndOffsets, ...] = ("high_watermark", "stable")
    for mode in modes:
        worker.end_offsets_mode = mode
        t0 = time.perf_counter()
        for account_id in account_ids:
            await reads.lookup_accounts([account_id])
        per_read = (time.perf_counter() - t0) / len(account_ids)
        print(f"lookup_accounts([id]) with read-your-writes ({mode}): {per_read * 1e3:.3f} ms")
    t0 = time.perf_counter()
    for account_id in account_ids:
        await worker.end_offsets([account_id % args.partitions])
    per_offsets = (time.perf_counter() - t0) / len(account_ids)
    print(f"  of which ListOffsets (one partition): {per_offsets * 1e3:.3f} ms")
    t0 = time.perf_counter()
    for account_id in account_ids:
        await asyncio.to_thread(reads._query, "lookup_accounts", {"ids": [account_id]}, [])
    per_query = (time.perf_counter() - t0) / len(account_ids)
    print(f"  the same lookup without the offset check: {per_query * 1e3:.3f} ms")
    t0 = time.perf_counter()
    for _ in range(200):
        await worker.end_offsets(list(range(args.partitions)))
    print(
        f"  ListOffsets for all {args.partitions} partitions (a ledger-wide query): "
        f"{(time.perf_counter() - t0) / 200 * 1e3:.3f} ms"
    )
    await asyncio.to_thread(worker.stop)
    return 0


def _delete_topics(bootstrap: str, topics: Topics) -> None:
    from processors.setup import delete_topics_with_prefix

    for failure in delete_topics_with_prefix(bootstrap, topics.prefix):
        print(f"(could not delete a bench topic: {failure})", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m projections", description="Run a projection worker with the HTTP API."
    )
    parser.add_argument("--worker", default="0", help="stable worker name (its state dir)")
    parser.add_argument("--http-port", type=int, default=None, help="default $LEDGER_HTTP_PORT")
    parser.add_argument("--data-dir", type=Path, default=None, help="default $LEDGER_DATA_DIR")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (0.0.0.0 in a container)"
    )
    return parser


def build_bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m projections bench",
        description="Fold a prepared events topic through one worker; time reads.",
    )
    parser.add_argument("--events", type=int, default=200_000, help="transfers to fold")
    parser.add_argument("--events-per-message", type=int, default=2_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument(
        "--keep-topics", action="store_true", help="bench-replay: keep the filled topics"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(build_bench_parser().parse_args(argv[1:]))
    if argv[:1] == ["bench-replay"]:
        return _bench_replay(build_bench_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(run_worker(args.worker, args.http_port, args.data_dir, host=args.host))
    except ValueError as exc:  # bad environment
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReadUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
