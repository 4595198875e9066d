"""The ledger on Kafka, end to end: real broker, real processor processes, real RocksDB.

Every test compares with the core's reference ledger: the same requests applied one after
another in the order the pipeline serialized them (their decision timestamps) must give the
same results, and the event log replayed must give the same balances.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from processors.ledger import MemoryState, ReferenceLedger
from processors.setup import ensure_topics
from producers import LedgerClient
from schemas import CreateTransferStatus, Transfer
from schemas.codec import decode_result_batch
from schemas.messages import ResultBatch
from schemas.topics import Topics
from tests.pipeline import workload
from tests.pipeline.harness import ProcessorProcess, pipeline_env, read_partition, replay_events

pytestmark = pytest.mark.kafka

PARTITIONS = 4
RESULT_TIMEOUT_S = 120.0


@dataclass
class Pipeline:
    bootstrap: str
    topics: Topics
    env: dict[str, str]
    directory: Path
    processes: list[ProcessorProcess] = field(default_factory=list)

    def processor(self, instance: str, *args: str) -> ProcessorProcess:
        log_path = self.directory / f"processor-{instance}.log"
        process = ProcessorProcess(instance, self.env, log_path, args)
        self.processes.append(process)
        return process.start()

    def client(self) -> LedgerClient:
        return LedgerClient(self.bootstrap, self.topics.prefix, timeout_s=RESULT_TIMEOUT_S)

    def logs(self) -> str:
        return "\n\n".join(f"--- {p.instance}\n{p.tail(40)}" for p in self.processes)


@pytest.fixture
def pipeline(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Pipeline]:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    env = pipeline_env(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path / "data")
    built = Pipeline(kafka_bootstrap, topics, env, tmp_path)
    yield built
    for process in built.processes:
        process.stop()


def setup_accounts(client: LedgerClient) -> None:
    created = client.create_accounts(workload.accounts())
    assert {r.status.name for r in created} == {"CREATED"}
    funded = client.create_transfers(workload.funding())
    assert {r.status.name for r in funded} == {"CREATED"}


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


def assert_matches_reference(pipeline: Pipeline, submitted: list[Submitted]) -> None:
    reference = reference_with_accounts()
    for batch, results in sorted(submitted, key=lambda item: decision_time(item[1])):
        expected = [r.status for r in reference.create_transfers([t.copy() for t in batch])]
        assert [status for status, _ in results] == expected, batch
    replayed = replay_events(pipeline.bootstrap, pipeline.topics, PARTITIONS)
    assert isinstance(reference.state, MemoryState)
    for account_id, account in reference.state.accounts.items():
        assert replayed.accounts[account_id].balances() == account.balances(), account_id


def results_per_request(pipeline: Pipeline) -> Counter[int]:
    """How many results the results topic holds for each request id."""
    seen: Counter[int] = Counter()
    for partition in range(PARTITIONS):
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
) -> list[Submitted]:
    """`submitters` threads, each with its own client, each sending `requests` batches one at
    a time; `during(n)` is called by the first submitter before its n-th request."""
    submitted: list[Submitted] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(lane: int) -> None:
        try:
            with pipeline.client() as client:
                for n, batch in enumerate(workload.Workload(seed, lane).batches(requests)):
                    if during is not None and lane == 0:
                        during(n)
                    results = client.create_transfers(batch)
                    with lock:
                        submitted.append((batch, [(int(r.status), r.timestamp) for r in results]))
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


def test_one_submitter_matches_the_reference(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=1, requests=60, seed=1)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_concurrent_submitters_match_the_reference(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=4, requests=40, seed=2)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_steps_bounded_to_one_request_match_the_reference(pipeline: Pipeline) -> None:
    """With a one-byte step budget every transaction takes one request and hands the rest of
    what it fetched back to the next step: nothing is lost, skipped or taken twice."""
    pipeline.processor("a", "--step-bytes-max", "1")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=3, requests=25, seed=5)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_processor_killed_mid_run_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    processor = pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)

    def kill_and_restart(n: int) -> None:
        if n in (10, 25):
            processor.kill()
            time.sleep(0.5)
            processor.start()

    submitted = run_submitters(pipeline, submitters=3, requests=40, seed=3, during=kill_and_restart)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_two_instances_with_a_rebalance_mid_run(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)

    def rebalance(n: int) -> None:
        if n == 8:
            pipeline.processor("b")  # takes over half of the partitions
        if n == 25:
            pipeline.processes[0].stop()  # b takes everything

    submitted = run_submitters(pipeline, submitters=3, requests=40, seed=4, during=rebalance)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}
