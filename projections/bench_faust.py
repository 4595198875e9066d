"""Fold speed of a faust-streaming agent versus the project's confluent-kafka + rocksdict loop.

    .venv/bin/python -m projections.bench_faust [--events N] [--partitions N] [--accounts N]
                                                [--batch N] [--sync] [--timeout S]

The evidence behind docs/FAUST.md (SPEC §2: where faust-streaming cannot meet a requirement,
keep the benchmark that shows it). One fresh topic of `--events` small JSON events (~100 B,
key = the 16-byte account id, partition = `schemas.partitioning.partition_of`, written in
committed transactions of 10,000 as the processors do) over `--partitions` partitions is
folded twice, each fold counting events per account:

- faust: one faust worker (a subprocess running a minimal app with faust's defaults, a RocksDB
  table on faust's rocksdict store, web server off) whose agent does `json.loads` and
  `counts[key] += 1`: one table get and put plus one changelog record per event;
- plain: one confluent-kafka consumer (read_committed, batches of `--batch` messages) doing
  the same `json.loads` and count, writing each batch into one `processors.store.PartitionStore`
  per partition with one atomic write holding the changed counts and the partition's offset
  (the way projections/worker.py commits), without fsync unless `--sync`.

The figure for each is events over the time from its first to its last event (start-up not
included; faust's start-up time is reported beside it). Both check that the counts add up to
the number of events. The broker is LEDGER_KAFKA_BOOTSTRAP when set, else the local one
(`processors.kafka_broker.ensure_broker`). Topics and state are removed afterwards. The last
line printed is one JSON object with the figures and the parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # defined (and typed) here; admin re-exports it

from processors.kafka_broker import ENV_BOOTSTRAP, KAFKA_VERSION, ensure_broker
from processors.setup import delete_topics_with_prefix
from processors.store import PartitionStore
from schemas.partitioning import partition_of

TXN_EVENTS = 10_000
TXN_TIMEOUT_S = 60.0
COUNT_PREFIX = b"c"
OFFSET_KEY = b"o"

# The faust app: faust's defaults plus what a worker needs here. Configured by environment
# variables; the agent folds into a RocksDB table, a timer writes progress as JSON.
FAUST_APP = textwrap.dedent(
    """
    import json
    import os
    import time

    import faust

    PARTITIONS = int(os.environ["BENCH_PARTITIONS"])
    TARGET = int(os.environ["BENCH_EVENTS"])
    PROGRESS = os.environ["BENCH_PROGRESS"]

    app = faust.App(
        os.environ["BENCH_APP_ID"],
        broker=json.loads(os.environ["BENCH_BROKERS"]),
        datadir=os.environ["BENCH_DATADIR"],
        store="rocksdb://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
    )
    events = app.topic(
        os.environ["BENCH_TOPIC"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=PARTITIONS,
    )
    counts = app.Table(
        "counts", default=int, partitions=PARTITIONS, key_type=bytes, value_type=int
    )
    state = {"n": 0, "first": None, "last": None, "sum": None, "keys": None}


    def dump():
        tmp = PROGRESS + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, PROGRESS)


    @app.agent(events)
    async def fold(stream):
        async for event in stream.events():
            if state["first"] is None:
                state["first"] = time.time()
            json.loads(event.message.value)
            counts[event.key] += 1
            state["n"] += 1
            state["last"] = time.time()


    @app.timer(interval=0.5)
    async def progress():
        if state["n"] >= TARGET and state["sum"] is None:
            # Outside an event, the RocksDB store iterates every partition held here.
            values = list(counts.values())
            state["sum"], state["keys"] = sum(values), len(values)
        dump()


    if __name__ == "__main__":
        app.main()
    """
)


@dataclass(frozen=True)
class Params:
    events: int = 200_000
    partitions: int = 8
    accounts: int = 10_000
    batch: int = 1_000
    sync: bool = False
    timeout_s: float = 0.0  # 0: 120 s + 2 ms per event for the faust fold


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Topic and events


def create_topic(admin: AdminClient, name: str, partitions: int) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        metadata: Any = admin.list_topics(topic=name, timeout=10)
        topic = metadata.topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() >= deadline:
            raise BenchError(f"topic {name} has no leaders after 30 s")
        time.sleep(0.1)


def produce_events(bootstrap: str, topic: str, params: Params) -> float:
    """`params.events` events in committed transactions; returns the seconds it took."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"bench-faust-{uuid.uuid4()}",
            "transaction.timeout.ms": 60_000,
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    producer.init_transactions(TXN_TIMEOUT_S)
    started = time.perf_counter()
    producer.begin_transaction()
    for seq in range(params.events):
        account = 1 + seq % params.accounts
        value = json.dumps(
            {
                "seq": seq,
                "acct": account,
                "amount": 100 + seq % 997,
                "kind": "posting",
                "pad": "x" * 30,
            }
        ).encode()
        while True:
            try:
                producer.produce(
                    topic,
                    key=account.to_bytes(16, "big"),
                    value=value,
                    partition=partition_of(account, params.partitions),
                )
                break
            except BufferError:
                producer.poll(0.05)
        if (seq + 1) % TXN_EVENTS == 0 and seq + 1 < params.events:
            producer.commit_transaction(TXN_TIMEOUT_S)
            producer.begin_transaction()
    producer.commit_transaction(TXN_TIMEOUT_S)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# (a) faust


def run_faust(
    bootstrap: str, topic: str, app_id: str, work: Path, params: Params
) -> dict[str, Any]:
    script = work / "bench_faust_app.py"
    script.write_text(FAUST_APP)
    progress = work / "faust-progress.json"
    log_path = work / "faust-worker.log"
    env = dict(
        os.environ,
        BENCH_APP_ID=app_id,
        BENCH_BROKERS=json.dumps([f"kafka://{h}" for h in bootstrap.split(",")]),
        BENCH_DATADIR=str(work / "faust-data"),
        BENCH_TOPIC=topic,
        BENCH_PARTITIONS=str(params.partitions),
        BENCH_EVENTS=str(params.events),
        BENCH_PROGRESS=str(progress),
        PYTHONUNBUFFERED="1",
    )
    timeout_s = params.timeout_s or 120.0 + params.events * 0.002
    started = time.time()
    with log_path.open("wb") as log:
        # --without-web: the worker command's flag overrides the app's web_enabled setting.
        proc = subprocess.Popen(
            [sys.executable, str(script), "worker", "--without-web", "-l", "warn"],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        state: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(progress.read_text())
            if state.get("sum") is not None:
                break
            if proc.poll() is not None:
                raise BenchError(f"faust worker exited ({proc.returncode}):\n{_tail(log_path)}")
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"faust folded {state.get('n', 0)} of {params.events} events in "
                    f"{timeout_s:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
    finally:
        _stop(proc)
    elapsed = state["last"] - state["first"]
    if state["sum"] != params.events:
        raise BenchError(f"faust counts add up to {state['sum']}, not {params.events}")
    return {
        "faust_events_per_s": round(state["n"] / elapsed),
        "faust_fold_s": round(elapsed, 2),
        "faust_start_to_last_s": round(state["last"] - started, 2),
        "faust_startup_s": round(state["first"] - started, 2),
        "faust_accounts": state["keys"],
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# (b) confluent-kafka + PartitionStore


def run_plain(bootstrap: str, topic: str, work: Path, params: Params) -> dict[str, Any]:
    stores = {
        p: PartitionStore(work / "plain" / f"p{p}", sync=params.sync)
        for p in range(params.partitions)
    }
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-faust-plain-{uuid.uuid4().hex[:8]}",  # never joined: assign()
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": 65_536,
        }
    )
    try:
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(params.partitions)]
        )
        n = 0
        first: float | None = None
        started = time.perf_counter()
        deadline = time.monotonic() + (params.timeout_s or 120.0 + params.events * 0.002)
        while n < params.events:
            if time.monotonic() >= deadline:
                raise BenchError(f"plain fold got {n} of {params.events} events")
            messages: list[Any] = consumer.consume(num_messages=params.batch, timeout=1.0)
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
            counts: dict[int, dict[bytes, int]] = {}
            offsets: dict[int, int] = {}
            for message in messages:
                error = message.error()
                if error is not None:
                    raise KafkaException(error)
                partition = message.partition()
                json.loads(message.value())
                key = COUNT_PREFIX + message.key()
                changed = counts.setdefault(partition, {})
                current = changed.get(key)
                if current is None:
                    stored = stores[partition].get(key)
                    current = int.from_bytes(stored, "big") if stored is not None else 0
                changed[key] = current + 1
                offsets[partition] = message.offset()
                n += 1
            for partition, changed in counts.items():
                writes: dict[bytes, bytes | None] = {
                    k: v.to_bytes(8, "big") for k, v in changed.items()
                }
                # The position is written with the changes it covers, in the same batch.
                writes[OFFSET_KEY] = (offsets[partition] + 1).to_bytes(8, "big")
                stores[partition].write(writes)
        last = time.perf_counter()
        assert first is not None
        total = 0
        keys = 0
        for store in stores.values():
            for _key, value in store.scan(COUNT_PREFIX):
                total += int.from_bytes(value, "big")
                keys += 1
    finally:
        consumer.close()
        for store in stores.values():
            store.close()
    if total != params.events:
        raise BenchError(f"plain counts add up to {total}, not {params.events}")
    return {
        "plain_events_per_s": round(n / (last - first)),
        "plain_fold_s": round(last - first, 2),
        "plain_start_to_last_s": round(last - started, 2),
        "plain_accounts": keys,
    }


# ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("faust-streaming", "aiokafka", "confluent-kafka", "rocksdict"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    import confluent_kafka

    out["librdkafka"] = str(confluent_kafka.libversion()[0])
    return out


def run_bench(params: Params) -> dict[str, Any]:
    external = bool(os.environ.get(ENV_BOOTSTRAP, "").strip())
    bootstrap = ensure_broker()
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-faust-{run_id}.events"
    app_id = f"bench-faust-{run_id}.faust"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-faust-"))
    try:
        create_topic(admin, topic, params.partitions)
        produce_s = produce_events(bootstrap, topic, params)
        print(f"produced {params.events} events in {produce_s:.1f} s", file=sys.stderr)
        plain = run_plain(bootstrap, topic, work, params)
        print(f"plain: {plain}", file=sys.stderr)
        faust = run_faust(bootstrap, topic, app_id, work, params)
        print(f"faust: {faust}", file=sys.stderr)
    finally:
        delete_topics_with_prefix(bootstrap, f"bench-faust-{run_id}.")
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "faust_vs_plain_fold",
        "faust_events_per_s": faust["faust_events_per_s"],
        "plain_events_per_s": plain["plain_events_per_s"],
        "plain_over_faust": round(plain["plain_events_per_s"] / faust["faust_events_per_s"], 1),
        **faust,
        **plain,
        **asdict(params),
        "produce_s": round(produce_s, 2),
        "bootstrap": bootstrap,
        "broker": "external" if external else f"local Kafka {KAFKA_VERSION}",
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Params()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--accounts", type=int, default=defaults.accounts)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="plain consume batch")
    parser.add_argument("--sync", action="store_true", help="fsync every plain store write")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds")
    args = parser.parse_args(argv)
    if args.events < 1 or args.partitions < 1 or args.accounts < 1 or args.batch < 1:
        parser.error("--events, --partitions, --accounts and --batch must be positive")
    params = Params(
        args.events, args.partitions, args.accounts, args.batch, args.sync, args.timeout
    )
    print(json.dumps(run_bench(params)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
