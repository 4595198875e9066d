"""Running the real pipeline in tests: processor and projection processes, concurrent
submitters, the event log read back, and the reference ledger replayed in the pipeline's
serialization order."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processors.ledger import MemoryState, PartitionOwnership, ReferenceLedger, apply_event
from processors.setup import ensure_topics, read_committed
from processors.supervisor import Supervisor
from producers import LedgerClient
from schemas import CreateTransferStatus, Transfer
from schemas.codec import decode_event_batch, decode_result_batch
from schemas.messages import ResultBatch
from schemas.topics import Topics
from tests.pipeline import workload

READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 120.0
PARTITIONS = 4


@dataclass
class _ServiceProcess:
    """A ledger process started from the command line, its output in a log file; `start`
    returns once the output (of this start, not an earlier one) has a line matching `ready`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready: str
    process: subprocess.Popen[bytes] | None = None
    ready_line: str = ""
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Self:
        if self._log is not None:
            self._log.close()
        self._log = handle = self.log_path.open("ab")
        started_at = handle.tell()
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with self.log_path.open("rb") as log:
                log.seek(started_at)
                found = re.search(self.ready, log.read().decode(errors="replace"), re.MULTILINE)
            if found is not None:
                self.ready_line = found.group(0)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} died:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready:\n{self.tail()}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def freeze(self) -> None:
        """SIGSTOP: every thread stops, heartbeats too; the process does not know."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class ProcessorProcess(_ServiceProcess):
    """One `ledger processor` instance as a real process."""

    def __init__(
        self, instance: str, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()
    ) -> None:
        # -X faulthandler: SIGABRT prints every thread's stack (a hung process explains itself).
        command = [sys.executable, "-X", "faulthandler", "-m", "processors.cli", "-v", "processor"]
        super().__init__(
            f"processor {instance}",
            [*command, "--instance", instance, *args],
            env,
            log_path,
            ready=r"running:",
        )
        self.instance = instance


class ProjectionProcess(_ServiceProcess):
    """One projection worker (`python -m projections`) with its HTTP API on a free port."""

    def __init__(self, worker: str, env: dict[str, str], log_path: Path) -> None:
        command = [sys.executable, "-X", "faulthandler", "-m", "projections", "--worker", worker]
        command += ["--http-port", "0"]
        super().__init__(
            f"projection worker {worker}", command, env, log_path, ready=r"ready: (http://\S+)"
        )
        self.worker = worker

    @property
    def url(self) -> str:
        found = re.search(r"http://\S+", self.ready_line)
        assert found is not None, self.ready_line
        return found.group(0)


def free_port() -> int:
    """A loopback TCP port free at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def http_stack(
    bootstrap: str, prefix: str, partitions: int, directory: Path, port: int, instance: str
) -> Iterator[Supervisor]:
    """A processor and a projection worker (clock control on) on fresh topics, serving the
    HTTP API on `port`; stopped on exit."""
    ensure_topics(bootstrap, Topics(prefix), partitions)
    env = pipeline_env(bootstrap, prefix, partitions, directory / "data")
    env["LEDGER_ALLOW_CLOCK_CONTROL"] = "1"
    env["LEDGER_HTTP_PORT"] = str(port)
    supervisor = Supervisor(env, directory / "logs")
    try:
        processor = ["processors.cli", "processor", "--instance", instance]
        supervisor.start("processor", processor, "running:")
        supervisor.start("projections", ["projections", "--worker", instance], "ready")
        yield supervisor
    finally:
        supervisor.stop()


def pipeline_env(bootstrap: str, prefix: str, partitions: int, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEDGER_KAFKA_BOOTSTRAP=bootstrap,
        LEDGER_TOPIC_PREFIX=prefix,
        LEDGER_PARTITIONS=str(partitions),
        LEDGER_DATA_DIR=str(data_dir),
    )
    return env


@dataclass
class Pipeline:
    """The ledger's processes over one topic namespace; `processor_args` go to every
    `ledger processor` started (e.g. a short session timeout)."""

    bootstrap: str
    topics: Topics
    env: dict[str, str]
    directory: Path
    partitions: int = PARTITIONS
    processor_args: tuple[str, ...] = ()
    processes: list[ProcessorProcess] = field(default_factory=list)
    projections: list[ProjectionProcess] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        bootstrap: str,
        prefix: str,
        directory: Path,
        partitions: int = PARTITIONS,
        processor_args: tuple[str, ...] = (),
    ) -> Pipeline:
        topics = Topics(prefix)
        ensure_topics(bootstrap, topics, partitions)
        env = pipeline_env(bootstrap, prefix, partitions, directory / "data")
        return cls(bootstrap, topics, env, directory, partitions, processor_args)

    def processor(self, instance: str, *args: str) -> ProcessorProcess:
        """Start an instance with the pipeline's processor options, and `args` too."""
        log_path = self.directory / f"processor-{instance}.log"
        process = ProcessorProcess(instance, self.env, log_path, (*self.processor_args, *args))
        self.processes.append(process)
        process.start()
        return process

    def projection(self, worker: str) -> ProjectionProcess:
        log_path = self.directory / f"projection-{worker}.log"
        process = ProjectionProcess(worker, self.env, log_path)
        self.projections.append(process)
        process.start()
        return process

    def client(self) -> LedgerClient:
        return LedgerClient(self.bootstrap, self.topics.prefix, timeout_s=RESULT_TIMEOUT_S)

    def logs(self) -> str:
        every: list[_ServiceProcess] = [*self.processes, *self.projections]
        return "\n\n".join(f"--- {p.name}\n{p.tail(40)}" for p in every)

    def stop(self) -> None:
        for process in [*self.processes, *self.projections]:
            process.stop()


def read_partition(bootstrap: str, topic: str, partition: int) -> Iterator[bytes]:
    """Every committed message value of one partition, from the start to its current end."""
    for message in read_committed(bootstrap, topic, partition, 0):
        yield message.value() or b""


def replay_events(bootstrap: str, topics: Topics, partitions: int) -> MemoryState:
    """The ledger as its event log tells it: each partition's events folded by their owner."""
    state = MemoryState()
    for partition in range(partitions):
        ownership = PartitionOwnership(partition, partitions)
        for value in read_partition(bootstrap, topics.events, partition):
            for event in decode_event_batch(value).events:
                apply_event(state, event, ownership)
    return state


# ------------------------------------------------------------------------------------------
# The workload through real clients, and the reference ledger it must match


def setup_accounts(client: LedgerClient) -> None:
    created = client.create_accounts(workload.accounts())
    assert {r.status.name for r in created} == {"CREATED"}
    funded = client.create_transfers(workload.funding())
    assert {r.status.name for r in funded} == {"CREATED"}


SETUP_REQUESTS = 2  # the accounts, the funding


def reference_with_accounts() -> ReferenceLedger:
    reference = ReferenceLedger()
    reference.create_accounts(workload.accounts())
    reference.create_transfers(workload.funding())
    return reference


def decision_time(statuses: list[tuple[int, int]]) -> float:
    """When a request took effect: its newest timestamp; `exists` carries the original's, so
    a request of nothing but retries (immutable facts only) goes last."""
    fresh = [ts for status, ts in statuses if status != CreateTransferStatus.EXISTS]
    return max(fresh) if fresh else float("inf")


Submitted = tuple[list[Transfer], list[tuple[int, int]]]  # the batch, its (status, timestamp)s


def assert_matches_reference(pipeline: Pipeline, submitted: list[Submitted]) -> MemoryState:
    """The results equal the reference ledger's over the requests in decision order, and the
    event log replays to its balances; returns the replayed state."""
    reference = reference_with_accounts()
    for batch, results in sorted(submitted, key=lambda item: decision_time(item[1])):
        expected = [r.status for r in reference.create_transfers([t.copy() for t in batch])]
        assert [status for status, _ in results] == expected, batch
    replayed = replay_events(pipeline.bootstrap, pipeline.topics, pipeline.partitions)
    assert isinstance(reference.state, MemoryState)
    for account_id, account in reference.state.accounts.items():
        assert replayed.accounts[account_id].balances() == account.balances(), account_id
    return replayed


def results_per_request(pipeline: Pipeline) -> Counter[int]:
    """How many results the results topic holds for each request id."""
    seen: Counter[int] = Counter()
    for partition in range(pipeline.partitions):
        for value in read_partition(pipeline.bootstrap, pipeline.topics.results, partition):
            batch: ResultBatch = decode_result_batch(value)
            seen[batch.request_id] += 1
    return seen


def run_submitters(
    pipeline: Pipeline,
    submitters: int,
    requests: int,
    seed: int,
    during: Callable[[int], None] | None = None,
    on_result: Callable[[], None] | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> list[Submitted]:
    """`submitters` threads, each with its own client, each sending `requests` batches one at
    a time (and more while `keep_going()`); `during(n)` is called by the first submitter
    before its n-th request, `on_result` by every submitter after each result."""
    submitted: list[Submitted] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(lane: int) -> None:
        try:
            with pipeline.client() as client:
                lane_workload = workload.Workload(seed, lane)
                n = 0
                while n < requests or (keep_going is not None and keep_going()):
                    batch = lane_workload.batch()
                    if during is not None and lane == 0:
                        during(n)
                    results = client.create_transfers(batch)
                    assert len(results) == len(batch), (batch, results)
                    with lock:
                        submitted.append((batch, [(int(r.status), r.timestamp) for r in results]))
                    if on_result is not None:
                        on_result()
                    n += 1
        except BaseException as exc:  # surfaced in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(lane,)) for lane in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"a submitter failed:\n{pipeline.logs()}") from errors[0]
    return submitted


def headers_of(message: Message) -> list[tuple[str, bytes]]:
    """A consumed message's headers, in order (a header without a value as b"")."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    ]


class Tail:
    """Follows one partition from offset 0 (committed messages only), keeping what it read."""

    def __init__(self, bootstrap: str, topic: str, partition: int) -> None:
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "ledger-test-tail",  # assign() only: nothing is committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.message.max.bytes": 64 * 1024 * 1024,
            }
        )
        self._consumer.assign([TopicPartition(topic, partition, 0)])

    def read(self, until: Callable[[], bool], timeout_s: float) -> bool:
        """Read until `until()` holds (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > deadline:
                return False
            for message in self._consumer.consume(1000, 0.01):
                error = message.error()
                if error is None:
                    self.messages.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
        return True

    def close(self) -> None:
        self._consumer.close()
