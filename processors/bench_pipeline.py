"""`ledger bench`: random transfers among N accounts through the real pipeline (SPEC §8).

Starts its own processors on fresh topics (prefix `bench-<id>.`) on the configured broker (the
local one when none is), creates the accounts, then measures (after warming the broker up
with two unmeasured runs, `--warmup` seconds in all, on topics and processors of their own: a
broker just started runs its first minute at about half its rate, and the run after the first
one to end is slow too):

- throughput: requests of `--batch-size` transfers, `--in-flight` requests outstanding, for
  `--duration` seconds: completed transfers per second, exactly once;
- latency: single-transfer requests offered at `--rate` per second (open loop) for
  `--latency-duration` seconds: submit-to-result p50 and p99;
- processor memory: the largest RSS of the processor processes;
- CPU: what the processors, the (local) broker and the client spent per transfer and per
  request in each phase.

The topics go at the end unless `--keep-topics`. The last line printed is one JSON object with
the figures and the parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from processors.kafka_broker import bootstrap_pid, ensure_broker
from processors.setup import broker_setting, delete_topics_with_prefix, ensure_topics
from processors.supervisor import Supervisor
from producers import LedgerClient, RequestHandle
from schemas import BATCH_EVENTS_MAX, Account, CreateTransferStatus, Transfer
from schemas.messages import CommandBatch, Operation, ResultBatch
from schemas.topics import Topics

__all__ = ["PipelineBenchParams", "add_arguments", "cpu_seconds", "run", "run_pipeline_bench"]


@dataclass(frozen=True)
class PipelineBenchParams:
    accounts: int = 100_000
    partitions: int = 8
    processors: int = 1
    batch_size: int = 500
    in_flight: int = 16
    duration_s: float = 30.0
    rate_per_s: int = 2_000
    latency_duration_s: float = 15.0
    seed: int = 1
    # Runs before, unmeasured, on their own topics (each 2/3 at the throughput load, 1/3 at the
    # latency rate): warm the broker up.
    warmup_s: float = 45.0
    # The topics (and the processors' data) go at the end unless kept for a look: a broker
    # that keeps every run's topics grows slower, and so would the next run's figures.
    keep_topics: bool = False


_WARMUP_ACCOUNTS = 10_000
_WARMUP_RUNS = 2


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU seconds (user + system) the processes have used so far (those gone: none more)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class _Meter:
    """The largest RSS seen across the processor processes, sampled in the background."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for process in self.processes:
                with contextlib.suppress(psutil.Error):  # gone: nothing more to measure
                    self.peak_rss_bytes = max(self.peak_rss_bytes, process.memory_info().rss)

    def cpu_s(self) -> float:
        return cpu_seconds(self.processes)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _CpuSplit:
    """CPU seconds used from now on by the processors, the broker (when it runs here) and this
    process (the client)."""

    def __init__(self, processors: _Meter, broker: _Meter | None) -> None:
        self.processors, self.broker = processors, broker
        self.started = self._now()

    def _now(self) -> dict[str, float]:
        own = psutil.Process().cpu_times()
        return {
            "processor": self.processors.cpu_s(),
            "broker": self.broker.cpu_s() if self.broker is not None else 0.0,
            "client": own.user + own.system,
        }

    def per_unit(self, unit: str, count: int) -> dict[str, float]:
        """`<who>_cpu_us_per_<unit>` for each of them (the broker's only when it runs here)."""
        now = self._now()
        return {
            f"{who}_cpu_us_per_{unit}": round(
                (now[who] - self.started[who]) * 1e6 / max(1, count), 1
            )
            for who in now
            if who != "broker" or self.broker is not None
        }


def _create_accounts(client: LedgerClient, count: int) -> None:
    handles = []
    for start in range(1, count + 1, BATCH_EVENTS_MAX):
        ids = range(start, min(start + BATCH_EVENTS_MAX, count + 1))
        batch = [Account(i, ledger=1, code=1) for i in ids]
        handles.append(client.submit(CommandBatch(0, client.submitter, Operation.CREATE_ACCOUNTS,
                                                  accounts=batch)))  # fmt: skip
    for handle in handles:
        result = handle.result()
        assert all(r.status == 0xFFFFFFFF for r in result.results), "account creation failed"


def _throughput(
    client: LedgerClient, params: PipelineBenchParams, rng: random.Random, ids: Iterator[int]
) -> dict[str, float]:
    outstanding: deque[RequestHandle] = deque()
    completed = created = 0
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + params.duration_s
    while time.monotonic() < deadline or outstanding:
        while time.monotonic() < deadline and len(outstanding) < params.in_flight:
            batch = []
            for _ in range(params.batch_size):
                debit = rng.randrange(1, params.accounts + 1)
                credit = rng.randrange(1, params.accounts)
                credit += credit >= debit
                batch.append(Transfer(next(ids), debit, credit, rng.randrange(1, 100), ledger=1,
                                      code=1))  # fmt: skip
            request = CommandBatch(0, client.submitter, Operation.CREATE_TRANSFERS, transfers=batch)
            outstanding.append(client.submit(request))
        handle = outstanding.popleft()
        result = handle.result()
        completed += len(result.results)
        created += sum(1 for r in result.results if r.status == CreateTransferStatus.CREATED)
        if handle.latency_s is not None:
            latencies.append(handle.latency_s)
    elapsed_s = time.monotonic() - started
    return {
        "transfers_per_s": round(completed / elapsed_s),
        "throughput_transfers": completed,
        "throughput_created": created,
        "throughput_elapsed_s": round(elapsed_s, 2),
        "batch_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
    }


class _Latencies:
    """Each request's submit-to-result time, taken as its result arrives. The handles are not
    kept: 30,000 futures alive made the client's own cycle collections (walking them all)
    stall its results thread, and those stalls showed in the p99."""

    def __init__(self, expected: int) -> None:
        self.latencies_ms: list[float] = []
        self.failures: list[BaseException] = []
        self._left = expected
        self._lock = threading.Lock()
        self._all_done = threading.Event()
        if expected == 0:
            self._all_done.set()

    def on_done(self, handle: Future[ResultBatch]) -> None:
        outcome: float | BaseException
        try:
            handle.result()
            assert isinstance(handle, RequestHandle) and handle.latency_s is not None
            outcome = handle.latency_s * 1000
        except BaseException as exc:  # counted all the same: the future would only log it
            outcome = exc
        with self._lock:
            if isinstance(outcome, BaseException):
                self.failures.append(outcome)
            else:
                self.latencies_ms.append(outcome)
            self._left -= 1
            if self._left == 0:
                self._all_done.set()

    def sorted_ms(self, timeout_s: float) -> list[float]:
        """Once every request has its outcome: the latencies, sorted (raises the first
        failure, as waiting on each handle would)."""
        if not self._all_done.wait(timeout_s):
            raise TimeoutError(f"requests without an outcome after {timeout_s:.0f} s")
        if self.failures:
            raise self.failures[0]
        return sorted(self.latencies_ms)


def _latency(
    client: LedgerClient, params: PipelineBenchParams, rng: random.Random, ids: Iterator[int]
) -> dict[str, float]:
    interval_s = 1.0 / params.rate_per_s
    started = time.monotonic()
    count = int(params.latency_duration_s * params.rate_per_s)
    outcomes = _Latencies(count)
    for n in range(count):
        # Open loop: each request leaves at its scheduled time, whatever the answers do.
        delay_s = started + n * interval_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        debit = rng.randrange(1, params.accounts + 1)
        credit = rng.randrange(1, params.accounts)
        credit += credit >= debit
        transfer = Transfer(next(ids), debit, credit, 1, ledger=1, code=1)
        request = CommandBatch(
            0, client.submitter, Operation.CREATE_TRANSFERS, transfers=[transfer]
        )
        client.submit(request).add_done_callback(outcomes.on_done)
    offered_s = time.monotonic() - started
    # Every handle ends by the client's timeout (OutcomeUnknown at the latest).
    latencies_ms = outcomes.sorted_ms(client.timeout_s + 60)
    return {
        "p50_ms": round(latencies_ms[len(latencies_ms) // 2], 1),
        "p99_ms": round(latencies_ms[int(len(latencies_ms) * 0.99)], 1),
        "latency_requests": len(latencies_ms),
        "offered_per_s": round(count / offered_s),
    }


def run_pipeline_bench(params: PipelineBenchParams) -> dict[str, object]:
    bootstrap = ensure_broker()
    if params.warmup_s > 0:
        # A broker just started runs its first minute under load at about half its rate (its
        # JIT is cold), and the run after the first one to end (its topics deleted, its
        # processor and clients gone) at twice the broker CPU per transfer, however long that
        # first one was (docs/BENCHMARKS.md). So the warm-up is two runs, on topics and
        # processors of their own: the measured run starts from the same empty ledger.
        warm = replace(
            params,
            accounts=min(params.accounts, _WARMUP_ACCOUNTS),
            duration_s=params.warmup_s / _WARMUP_RUNS * 2 / 3,
            latency_duration_s=params.warmup_s / _WARMUP_RUNS / 3,
            keep_topics=False,
        )
        for run in range(_WARMUP_RUNS):
            _run(bootstrap, warm, f"warm-up {run + 1}/{_WARMUP_RUNS} ")
    figures = _run(bootstrap, params, "")
    # Each of the processor's transactions waits on it, partition after partition: the latency
    # depends on it (processors/kafka_broker.py).
    figures["broker_transaction_verification"] = broker_setting(
        bootstrap, "transaction.partition.verification.enable"
    )
    return figures


def _run(bootstrap: str, params: PipelineBenchParams, phase: str) -> dict[str, object]:
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}.")
    ensure_topics(bootstrap, topics, params.partitions)
    work_dir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    env = dict(os.environ)
    env.update(
        LEDGER_KAFKA_BOOTSTRAP=bootstrap,
        LEDGER_TOPIC_PREFIX=topics.prefix,
        LEDGER_PARTITIONS=str(params.partitions),
        LEDGER_DATA_DIR=str(work_dir / "data"),
    )
    supervisor = Supervisor(env, work_dir / "logs")
    rng = random.Random(params.seed)
    try:
        pids = []
        for index in range(params.processors):
            child = supervisor.start(
                f"processor-{index}",
                ["processors.cli", "processor", "--instance", f"bench-{index}"],
                "running:",
            )
            assert child.pid is not None
            pids.append(child.pid)
        meter = _Meter(pids)
        # The broker's CPU too, when it runs here (the local one does): where the time goes.
        broker_pid = bootstrap_pid(bootstrap)
        broker = _Meter([broker_pid]) if broker_pid is not None else None
        with LedgerClient(bootstrap, topics.prefix, timeout_s=300) as client:
            started = time.monotonic()
            _create_accounts(client, params.accounts)
            setup_s = time.monotonic() - started
            print(f"{phase}created {params.accounts} accounts in {setup_s:.1f} s", file=sys.stderr)
            ids = itertools.count(1 << 64)  # every transfer of the run its own id
            # CPU per transfer and per request: what the processors, the broker and the client
            # cost, whatever else runs on the machine (the figures depend on that too).
            cpu = _CpuSplit(meter, broker)
            throughput = _throughput(client, params, rng, ids)
            throughput.update(cpu.per_unit("transfer", int(throughput["throughput_transfers"])))
            print(f"{phase}throughput: {throughput}", file=sys.stderr)
            cpu = _CpuSplit(meter, broker)
            latency = _latency(client, params, rng, ids)
            latency.update(cpu.per_unit("request", int(latency["latency_requests"])))
            print(f"{phase}latency: {latency}", file=sys.stderr)
        meter.stop()
        if broker is not None:
            broker.stop()
        return {
            "benchmark": "pipeline",
            **throughput,
            **latency,
            "processor_rss_mb": round(meter.peak_rss_bytes / 2**20, 1),
            "accounts_setup_s": round(setup_s, 1),
            **asdict(params),
            "topic_prefix": topics.prefix,
            "logs": str(work_dir / "logs"),
        }
    finally:
        supervisor.stop()
        if not params.keep_topics:
            for failure in delete_topics_with_prefix(bootstrap, topics.prefix):
                print(f"(could not delete a bench topic: {failure})", file=sys.stderr)
            shutil.rmtree(work_dir / "data", ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PipelineBenchParams()
    parser.add_argument("--accounts", type=int, default=defaults.accounts)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--processors", type=int, default=defaults.processors)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--in-flight", type=int, default=defaults.in_flight)
    parser.add_argument("--duration", type=float, default=defaults.duration_s)
    parser.add_argument("--rate", type=int, default=defaults.rate_per_s)
    parser.add_argument("--latency-duration", type=float, default=defaults.latency_duration_s)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--warmup", type=float, default=defaults.warmup_s,
        help="seconds of unmeasured load first (a cold broker runs at half the rate)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the run's topics and processor data"
    )


def run(args: argparse.Namespace) -> int:
    params = PipelineBenchParams(
        args.accounts, args.partitions, args.processors, args.batch_size, args.in_flight,
        args.duration, args.rate, args.latency_duration, args.seed, args.warmup,
        args.keep_topics,
    )  # fmt: skip
    if not 1 <= params.batch_size <= BATCH_EVENTS_MAX:
        raise ValueError(f"--batch-size must be within 1..{BATCH_EVENTS_MAX}")
    print(json.dumps(run_pipeline_bench(params)), flush=True)
    return 0
