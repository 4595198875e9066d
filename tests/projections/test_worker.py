"""Projection workers on the real pipeline: real broker, real processor processes, real RocksDB.

The reads a worker answers (`RoutedReads`, the `Reads` the HTTP API reads through) must equal
the ledger: the reference ledger's balances and the event log replayed; folding twice or
restarting changes nothing; with two workers, either answers for every account (routing); and
a read issued right after a write returned reflects it (read-your-writes).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from processors.ledger import MemoryState
from processors.setup import ensure_topics
from processors.store import PartitionStore
from producers import LedgerClient
from projections.cli import WorkerNode
from projections.filters import AccountFilter, QueryFilter
from projections.model import PartitionProjection
from projections.routing import RoutedReads
from schemas import Account, PendingStatus, Transfer
from schemas.codec import decode_event_batch
from schemas.partitioning import partition_of
from schemas.topics import Topics
from tests.pipeline import workload
from tests.pipeline.harness import (
    ProcessorProcess,
    decision_time,
    pipeline_env,
    read_partition,
    reference_with_accounts,
    replay_events,
    setup_accounts,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
ALL_ACCOUNTS = [workload.SOURCE, *workload.ACCOUNTS]


@dataclass
class Ledger:
    bootstrap: str
    topics: Topics
    directory: Path
    runner: asyncio.Runner
    processes: list[ProcessorProcess] = field(default_factory=list)
    nodes: list[WorkerNode] = field(default_factory=list)

    def client(self) -> LedgerClient:
        return LedgerClient(self.bootstrap, self.topics.prefix, timeout_s=120)

    def node(self, name: str) -> WorkerNode:
        node = WorkerNode(
            worker_name=name,
            http_port=0,
            bootstrap=self.bootstrap,
            topics=self.topics,
            partitions=PARTITIONS,
            data_dir=self.directory / "data",
        )
        self.nodes.append(node)
        self.runner.run(asyncio.wait_for(node.start(), 120))
        return node

    def stop_node(self, node: WorkerNode) -> None:
        self.runner.run(node.stop())
        self.nodes.remove(node)

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(asyncio.wait_for(coroutine, 60))


@pytest.fixture
def ledger(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Ledger]:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    env = pipeline_env(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path / "data")
    with asyncio.Runner() as runner:
        built = Ledger(kafka_bootstrap, topics, tmp_path, runner)
        processor = ProcessorProcess("a", env, tmp_path / "processor-a.log")
        built.processes.append(processor.start())
        try:
            yield built
        finally:
            for node in list(built.nodes):
                built.stop_node(node)
            for process in built.processes:
                process.stop()


Submitted = tuple[list[Transfer], list[tuple[int, int]]]


def run_workload(ledger: Ledger, requests: int, seed: int) -> list[Submitted]:
    submitted: list[Submitted] = []
    with ledger.client() as client:
        setup_accounts(client)
        for batch in workload.Workload(seed, 0).batches(requests):
            results = client.create_transfers(batch)
            submitted.append((batch, [(int(r.status), r.timestamp) for r in results]))
    return submitted


def transfer_ids(submitted: list[Submitted]) -> list[int]:
    ids = [10_000 + a for a in workload.ACCOUNTS]  # the funding transfers
    ids += [t.id for batch, _ in submitted for t in batch]
    return sorted(set(ids))


def assert_reads_match_the_ledger(
    ledger: Ledger, reads: RoutedReads, submitted: list[Submitted]
) -> None:
    reference = reference_with_accounts()
    for batch, _results in sorted(submitted, key=lambda item: decision_time(item[1])):
        reference.create_transfers([t.copy() for t in batch])
    assert isinstance(reference.state, MemoryState)
    replayed = replay_events(ledger.bootstrap, ledger.topics, PARTITIONS)

    accounts = ledger.run(reads.lookup_accounts(ALL_ACCOUNTS))
    assert [a.id for a in accounts] == ALL_ACCOUNTS
    for account in accounts:
        assert account.balances() == reference.state.accounts[account.id].balances(), account.id
        assert account == replayed.accounts[account.id], account.id
        versions = ledger.run(reads.account_versions(account.id))
        assert [v.version for v in versions] == list(range(1, account.version + 1))

    ids = transfer_ids(submitted)
    found = ledger.run(reads.lookup_transfers(ids))
    assert {t.id for t, _ in found} == set(replayed.transfers)
    for transfer, status in found:
        assert transfer == replayed.transfers[transfer.id], transfer.id
        assert status == replayed.pending.get(transfer.id, PendingStatus.NONE), transfer.id

    # Per-account history: every transfer touching the account, from both sides' owners.
    for account_id in ALL_ACCOUNTS:
        history = ledger.run(reads.account_transfers(AccountFilter(account_id)))
        expected = sorted(
            (
                t
                for t in replayed.transfers.values()
                if account_id in (t.debit_account_id, t.credit_account_id)
            ),
            key=lambda t: t.timestamp,
        )
        assert [t.id for t in history] == [t.id for t in expected], account_id

    # Ledger-wide: every partition's answer, merged in timestamp order.
    everyone = ledger.run(reads.query_accounts(QueryFilter()))
    assert [a.id for a in everyone] == [
        a.id for a in sorted(replayed.accounts.values(), key=lambda a: a.timestamp)
    ]
    all_transfers = ledger.run(reads.query_transfers(QueryFilter(limit=10_000)))
    assert [t.id for t in all_transfers] == [
        t.id for t in sorted(replayed.transfers.values(), key=lambda t: t.timestamp)
    ]


def store_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with PartitionStore(path, sync=False) as store:
        for key, value in store.scan(b""):
            digest.update(len(key).to_bytes(4, "big") + key + value)
    return digest.hexdigest()


def test_reads_equal_the_reference_ledger(ledger: Ledger) -> None:
    submitted = run_workload(ledger, requests=50, seed=11)
    node = ledger.node("w1")
    assert node.reads is not None and node.worker is not None
    assert node.worker.owned() == frozenset(range(PARTITIONS))
    assert_reads_match_the_ledger(ledger, node.reads, submitted)
    # A missing id is left out, in request order otherwise.
    missing = 999_999_999
    found = ledger.run(node.reads.lookup_accounts([workload.ACCOUNTS[3], missing, 1]))
    assert [a.id for a in found] == [workload.ACCOUNTS[3], 1]


def test_folding_twice_and_restarting_change_nothing(ledger: Ledger) -> None:
    submitted = run_workload(ledger, requests=30, seed=12)
    node = ledger.node("w1")
    assert node.reads is not None
    before: list[Account] = ledger.run(node.reads.lookup_accounts(ALL_ACCOUNTS))
    ledger.stop_node(node)
    state_dir = ledger.directory / "data" / "projections" / "w1"
    digests = {p: store_digest(state_dir / f"partition-{p}") for p in range(PARTITIONS)}

    # Every message of the log applied again, to the stores as they are: all refused.
    for p in range(PARTITIONS):
        with PartitionStore(state_dir / f"partition-{p}", sync=False) as store:
            projection = PartitionProjection(store, p, PARTITIONS)
            applied = projection.applied_offset()
            assert applied >= 0
            values = list(read_partition(ledger.bootstrap, ledger.topics.events, p))
            for offset, value in enumerate(values):
                # Offsets of the log may skip markers; every one is at or below `applied`.
                assert not projection.apply(min(offset, applied), decode_event_batch(value).events)
    assert digests == {p: store_digest(state_dir / f"partition-{p}") for p in range(PARTITIONS)}

    # A restart resumes after the stored offsets: same stores, same answers.
    node = ledger.node("w1")
    assert node.reads is not None
    assert ledger.run(node.reads.lookup_accounts(ALL_ACCOUNTS)) == before
    ledger.stop_node(node)
    assert digests == {p: store_digest(state_dir / f"partition-{p}") for p in range(PARTITIONS)}

    # A fresh worker folding the whole log from the start builds the same stores.
    fresh = ledger.node("w2")
    assert fresh.reads is not None
    assert_reads_match_the_ledger(ledger, fresh.reads, submitted)
    ledger.stop_node(fresh)
    fresh_dir = ledger.directory / "data" / "projections" / "w2"
    assert digests == {p: store_digest(fresh_dir / f"partition-{p}") for p in range(PARTITIONS)}


def wait_split(ledger: Ledger, nodes: list[WorkerNode], timeout_s: float = 60.0) -> None:
    """Until the group has split the partitions among `nodes` and the registry says so."""

    async def split() -> None:
        while True:
            owned = [n.worker.owned() for n in nodes if n.worker is not None]
            registry = nodes[0].registry
            assert registry is not None
            claims = [registry.claims(n.worker_name) for n in nodes]
            if (
                all(owned)
                and sum(len(o) for o in owned) == PARTITIONS
                and frozenset().union(*owned) == frozenset(range(PARTITIONS))
                and claims == owned
            ):
                return
            await asyncio.sleep(0.1)

    ledger.runner.run(asyncio.wait_for(split(), timeout_s))


def test_two_workers_route_every_read_to_the_owner(ledger: Ledger) -> None:
    submitted = run_workload(ledger, requests=30, seed=13)
    a = ledger.node("a")
    b = ledger.node("b")
    wait_split(ledger, [a, b])
    assert a.worker is not None and b.worker is not None
    assert a.worker.owned() and b.worker.owned()
    for node in (a, b):
        assert node.reads is not None
        assert_reads_match_the_ledger(ledger, node.reads, submitted)

    # Through the HTTP API of either worker, too.
    async def over_http() -> list[list[str]]:
        answers = []
        async with aiohttp.ClientSession() as session:
            for node in (a, b):
                balances = []
                for account_id in ALL_ACCOUNTS:
                    async with session.get(f"{node.url}/accounts/{account_id}") as response:
                        assert response.status == 200, await response.text()
                        body = await response.json()
                        balances.append(f"{body['debits_posted']}/{body['credits_posted']}")
                answers.append(balances)
        return answers

    via_a, via_b = ledger.run(over_http())
    assert via_a == via_b
    assert a.reads is not None
    accounts = ledger.run(a.reads.lookup_accounts(ALL_ACCOUNTS))
    assert via_a == [f"{x.debits_posted}/{x.credits_posted}" for x in accounts]

    # One worker leaves: the other takes its partitions and answers everything.
    ledger.stop_node(b)
    assert ledger.run(a.reads.lookup_accounts(ALL_ACCOUNTS)) == accounts
    assert a.worker.owned() == frozenset(range(PARTITIONS))


def same_partition_transfers(count: int) -> list[Transfer]:
    """Transfers whose accounts and id share a partition: the direct path."""
    by_partition: dict[int, list[int]] = {}
    for account_id in workload.ACCOUNTS:
        by_partition.setdefault(partition_of(account_id, PARTITIONS), []).append(account_id)
    made: list[Transfer] = []
    next_id = 5_000_000
    while len(made) < count:
        next_id += 1
        mine = by_partition[partition_of(next_id, PARTITIONS)]
        n = len(made)
        debit, credit = mine[n % len(mine)], mine[(n + 1) % len(mine)]
        made.append(Transfer(next_id, debit, credit, 1, ledger=workload.LEDGER, code=1))
    return made


def cross_partition_transfers(count: int) -> list[Transfer]:
    made: list[Transfer] = []
    next_id = 6_000_000
    for n in range(10_000):
        debit, credit = workload.ACCOUNTS[n % 7], workload.ACCOUNTS[-1 - n % 11]
        if partition_of(debit, PARTITIONS) != partition_of(credit, PARTITIONS):
            next_id += 1
            made.append(Transfer(next_id, debit, credit, 1, ledger=workload.LEDGER, code=1))
        if len(made) == count:
            break
    return made


def write_then_read(ledger: Ledger, transfers: list[Transfer]) -> None:
    """Each transfer written, then read at once through one of two workers (alternately, so
    some reads are answered locally and some forwarded): the read must reflect the write."""
    with ledger.client() as client:
        setup_accounts(client)
    a = ledger.node("a")
    b = ledger.node("b")
    wait_split(ledger, [a, b])
    assert a.reads is not None and b.reads is not None
    accounts = ledger.run(a.reads.lookup_accounts(workload.ACCOUNTS))
    posted = {x.id: (x.debits_posted, x.credits_posted) for x in accounts}
    with ledger.client() as client:
        for n, transfer in enumerate(transfers):
            debit, credit = transfer.debit_account_id, transfer.credit_account_id
            (result,) = client.create_transfers([transfer])
            assert result.status.name == "CREATED"
            reads = (a.reads, b.reads)[n % 2]
            if result.sequence >= 0:  # cross-partition: what the HTTP API's write path does
                ledger.run(reads.wait_for_sequence(list(result.participants), result.sequence))
            posted[debit] = (posted[debit][0] + 1, posted[debit][1])
            posted[credit] = (posted[credit][0], posted[credit][1] + 1)
            seen = ledger.run(reads.lookup_accounts([debit, credit]))
            assert [(x.debits_posted, x.credits_posted) for x in seen] == [
                posted[debit],
                posted[credit],
            ], (n, transfer)
            (found,) = ledger.run(reads.lookup_transfers([transfer.id]))
            assert found[0].amount == 1


def test_a_read_right_after_a_write_reflects_it(ledger: Ledger) -> None:
    write_then_read(ledger, same_partition_transfers(60))


def test_a_read_right_after_a_cross_partition_write_reflects_it(ledger: Ledger) -> None:
    write_then_read(ledger, cross_partition_transfers(30))


def test_a_store_of_an_older_layout_is_rebuilt_from_the_log(ledger: Ledger) -> None:
    """Projection stores are derived data: a worker finding one of an older key layout (a data
    directory from before an upgrade) rebuilds it from the events topic instead of failing."""
    submitted = run_workload(ledger, requests=10, seed=14)
    node = ledger.node("w1")
    ledger.stop_node(node)
    state_dir = ledger.directory / "data" / "projections" / "w1"
    digests = {p: store_digest(state_dir / f"partition-{p}") for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        with PartitionStore(state_dir / f"partition-{p}", sync=False) as store:
            store.write({b"\x09layout": None})  # what a store of layout 1 lacks
            store.write({b"\x01stale": b"from the old layout"})
    node = ledger.node("w1")
    assert node.reads is not None
    assert_reads_match_the_ledger(ledger, node.reads, submitted)
    ledger.stop_node(node)
    assert digests == {p: store_digest(state_dir / f"partition-{p}") for p in range(PARTITIONS)}
