"""The projections' read model against an independent oracle (pure: no Kafka).

A ReferenceLedger runs a workload; its log, cut into messages, is folded into N
PartitionProjections (each folds every message with its ownership, as partition p's events
topic gives it); every query, routed to the owner or merged across partitions, must equal
what the oracle computes from the ledger's state and log.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.ledger import ReferenceLedger
from processors.store import PartitionStore
from projections.filters import AccountFilter, BalanceEntry, QueryFilter
from projections.merge import (
    in_request_order,
    merge_by_timestamp,
    merge_query_accounts,
    merge_query_transfers,
)
from projections.model import PartitionProjection
from schemas import (
    TIMESTAMP_MAX,
    U128_MAX,
    Account,
    AccountFlags,
    Balances,
    PendingStatus,
    Transfer,
    TransferApplied,
    TransferFlags,
    TransferKind,
)
from schemas.partitioning import partition_of
from tests.projections.workload import (
    SECOND_NS,
    Oracle,
    fold_all,
    random_account_filters,
    random_ledger,
    random_query_filters,
    split_log,
)


def store_contents(stores: list[PartitionStore]) -> list[list[tuple[bytes, bytes]]]:
    return [list(store.scan(b"")) for store in stores]


def check_against_oracle(
    ledger: ReferenceLedger,
    projections: list[PartitionProjection],
    rng: random.Random,
    filters: int = 150,
) -> None:
    oracle = Oracle(ledger)
    partitions = len(projections)

    def owner(key: int) -> PartitionProjection:
        return projections[partition_of(key, partitions)]

    account_ids = sorted(oracle.state.accounts)
    for account_id, expected in oracle.state.accounts.items():
        assert owner(account_id).account(account_id) == expected
        assert owner(account_id).account_versions(account_id) == oracle.versions[account_id]
        versions = [a.version for a in oracle.versions[account_id]]
        assert versions == list(range(1, len(versions) + 1))
        assert owner(account_id).settlements(account_id) == oracle.settlement_requests.get(
            account_id, []
        )
        for other in projections:
            if other is not owner(account_id):
                assert other.account(account_id) is None
                assert other.account_versions(account_id) == []
    for transfer_id, transfer in oracle.state.transfers.items():
        found = owner(transfer_id).transfer(transfer_id)
        assert found == (transfer, oracle.pending_status(transfer_id))
        for other in projections:
            if other is not owner(transfer_id):
                assert other.transfer(transfer_id) is None
    for missing in (0, 999_999, U128_MAX, -1, 1 << 130):
        assert all(p.account(missing) is None for p in projections)
        assert all(p.transfer(missing) is None for p in projections)

    # Lookups through the router helper: request order, missing omitted, repeats repeated.
    ids = [*account_ids[:3], 999_999, *account_ids[:1]]
    by_id = {i: a for i in ids if (a := owner(i).account(i)) is not None}
    assert in_request_order(ids, by_id) == ledger.lookup_accounts(ids)

    timestamps = oracle.timestamps()
    for f in random_account_filters(rng, account_ids, timestamps, filters):
        home = owner(f.account_id) if 0 <= f.account_id <= U128_MAX else projections[0]
        assert home.account_transfers(f) == oracle.account_transfers(f), f
        assert home.account_balances(f) == oracle.account_balances(f), f
    for q in random_query_filters(rng, timestamps, filters):
        accounts = merge_query_accounts([p.query_accounts(q) for p in projections], q)
        assert accounts == oracle.query_accounts(q), q
        transfers = merge_query_transfers([p.query_transfers(q) for p in projections], q)
        assert transfers == oracle.query_transfers(q), q

    probes = sorted({0, 1, *rng.sample(timestamps, min(25, len(timestamps))), timestamps[-1] + 1})
    probes += [t - 1 for t in probes if t > 1]
    for account_id in account_ids:
        for timestamp in probes:
            expected_at = oracle.balances_at(account_id, timestamp)
            assert owner(account_id).balances_at(account_id, timestamp) == expected_at, (
                account_id,
                timestamp,
            )


@pytest.mark.parametrize("partitions", [1, 3, 8])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workload_matches_oracle(tmp_path: Path, seed: int, partitions: int) -> None:
    ledger = random_ledger(seed, operations=120)
    rng = random.Random(seed)
    messages = split_log(ledger.log, rng)
    stores, projections = fold_all(tmp_path, messages, partitions)
    try:
        check_against_oracle(ledger, projections, rng)
        assert all(p.applied_offset() == len(messages) - 1 for p in projections)
    finally:
        for store in stores:
            store.close()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    partitions=st.sampled_from([1, 2, 5]),
    max_events=st.integers(1, 30),
)
def test_any_workload_and_slicing_matches_oracle(
    seed: int, partitions: int, max_events: int
) -> None:
    ledger = random_ledger(seed, operations=50, accounts=8)
    rng = random.Random(seed)
    messages = split_log(ledger.log, rng, max_events)
    with tempfile.TemporaryDirectory() as tmp:
        stores, projections = fold_all(Path(tmp), messages, partitions)
        try:
            check_against_oracle(ledger, projections, rng, filters=40)
        finally:
            for store in stores:
                store.close()


def test_workload_exercises_everything() -> None:
    """The random programs reach what the oracle checks: expiries, posts, voids, closing,
    settlements, versions beyond 1, history accounts."""
    kinds: set[TransferKind] = set()
    settlements = versions = 0
    for seed in (1, 2, 3):
        oracle = Oracle(random_ledger(seed, operations=120))
        kinds |= {e.kind for e in oracle.log if isinstance(e, TransferApplied)}
        settlements += sum(len(s) for s in oracle.settlement_requests.values())
        versions = max(versions, *(len(v) for v in oracle.versions.values()))
    assert kinds == set(TransferKind)
    assert settlements > 0
    assert versions > 1


def test_applying_twice_changes_nothing_also_after_reopening(tmp_path: Path) -> None:
    ledger = random_ledger(7, operations=100)
    rng = random.Random(7)
    messages = split_log(ledger.log, rng)
    stores, projections = fold_all(tmp_path, messages, 3)
    before = store_contents(stores)
    for offset, message in enumerate(messages):
        for projection in projections:
            assert not projection.apply(offset, message)
    assert store_contents(stores) == before
    for store in stores:
        store.close()

    reopened = [PartitionStore(tmp_path / f"p{p}", sync=False) for p in range(3)]
    again = [PartitionProjection(reopened[p], p, 3) for p in range(3)]
    try:
        assert [p.applied_offset() for p in again] == [len(messages) - 1] * 3
        for offset, message in enumerate(messages):
            for projection in again:
                assert not projection.apply(offset, message)
        assert store_contents(reopened) == before
        check_against_oracle(ledger, again, rng, filters=30)
    finally:
        for store in reopened:
            store.close()


def test_resuming_after_a_stop_equals_one_fold(tmp_path: Path) -> None:
    """A worker that stops after some messages, restarts and is handed everything from the
    beginning again (at-least-once delivery) ends as a worker that folded once."""
    ledger = random_ledger(11, operations=100)
    messages = split_log(ledger.log, random.Random(11))
    once, _ = fold_all(tmp_path / "once", messages, 2)
    expected = store_contents(once)
    for store in once:
        store.close()

    stopped = [PartitionStore(tmp_path / "twice" / f"p{p}", sync=False) for p in range(2)]
    for p, store in enumerate(stopped):
        projection = PartitionProjection(store, p, 2)
        for offset, message in enumerate(messages[: len(messages) // 2]):
            projection.apply(offset, message)
        store.close()
    resumed = [PartitionStore(tmp_path / "twice" / f"p{p}", sync=False) for p in range(2)]
    try:
        for p, store in enumerate(resumed):
            projection = PartitionProjection(store, p, 2)
            applied = [projection.apply(o, m) for o, m in enumerate(messages)]
            assert applied == [o >= len(messages) // 2 for o in range(len(messages))]
        assert store_contents(resumed) == expected
    finally:
        for store in resumed:
            store.close()


# Focused cases ----------------------------------------------------------------------------------


@pytest.fixture
def projection(tmp_path: Path) -> Iterator[PartitionProjection]:
    store = PartitionStore(tmp_path / "p0", sync=False)
    yield PartitionProjection(store, 0, 1)
    store.close()


def fold(projection: PartitionProjection, ledger: ReferenceLedger) -> None:
    """Fold the whole log as the next message (the tests fold once, on an empty store)."""
    assert projection.applied_offset() == -1
    assert projection.apply(0, ledger.log)


def test_expiry_moves_balances_but_is_no_transfer_and_no_balance_entry(
    projection: PartitionProjection,
) -> None:
    ledger = ReferenceLedger()
    history = int(AccountFlags.HISTORY)
    ledger.create_accounts([Account(1, 1, 1, history), Account(2, 1, 1, history)])
    ledger.create_transfers([Transfer(10, 1, 2, 7, ledger=1, code=1)])
    ledger.create_transfers(
        [Transfer(11, 1, 2, 5, timeout=1, ledger=1, code=1, flags=TransferFlags.PENDING)]
    )
    pending_at = ledger.now
    ledger.advance(2 * SECOND_NS)
    expired_at = ledger.now
    fold(projection, ledger)

    assert projection.transfer(11) is not None
    assert projection.transfer(11)[1] is PendingStatus.EXPIRED  # type: ignore[index]
    assert [t.id for t in projection.account_transfers(AccountFilter(1))] == [10, 11]
    entries = projection.account_balances(AccountFilter(1))
    assert entries == [
        BalanceEntry(entries[0].timestamp, 0, 7, 0, 0),
        BalanceEntry(pending_at, 5, 7, 0, 0),
    ]
    assert projection.balances_at(1, pending_at) == Balances(1, 5, 7, 0, 0)
    assert projection.balances_at(1, expired_at) == Balances(1, 0, 7, 0, 0)
    account = projection.account(1)
    assert account is not None
    assert (account.debits_pending, account.debits_posted) == (0, 7)


def test_balances_need_the_history_flag_and_balances_at_needs_the_account(
    projection: PartitionProjection,
) -> None:
    ledger = ReferenceLedger(now=100)
    ledger.create_accounts([Account(1, 1, 1), Account(2, 1, 1, int(AccountFlags.HISTORY))])
    created_at = ledger.now
    ledger.advance(10)
    ledger.create_transfers([Transfer(10, 1, 2, 7, ledger=1, code=1)])
    fold(projection, ledger)

    assert projection.account_balances(AccountFilter(1)) == []
    assert len(projection.account_balances(AccountFilter(2))) == 1
    assert projection.account_balances(AccountFilter(3)) == []
    assert projection.balances_at(1, 100) is None  # before it was created
    assert projection.balances_at(1, created_at) == Balances(1, 0, 0, 0, 0)
    assert projection.balances_at(1, ledger.now) == Balances(1, 0, 7, 0, 0)
    assert projection.balances_at(3, ledger.now) is None


@pytest.mark.parametrize(
    "invalid",
    [
        AccountFilter(0),
        AccountFilter(U128_MAX),
        AccountFilter(1, limit=0),
        AccountFilter(1, debits=False, credits=False),
        AccountFilter(1, timestamp_min=5, timestamp_max=4),
        AccountFilter(1, timestamp_min=TIMESTAMP_MAX + 1),
        AccountFilter(1, timestamp_max=TIMESTAMP_MAX + 1),
    ],
)
def test_invalid_account_filters_select_nothing(
    projection: PartitionProjection, invalid: AccountFilter
) -> None:
    ledger = ReferenceLedger()
    history = int(AccountFlags.HISTORY)
    ledger.create_accounts([Account(1, 1, 1, history), Account(2, 1, 1, history)])
    ledger.create_transfers([Transfer(10, 1, 2, 7, ledger=1, code=1)])
    fold(projection, ledger)
    assert projection.account_transfers(AccountFilter(1)) != []
    assert projection.account_transfers(invalid) == []
    assert projection.account_balances(invalid) == []


def test_half_events_of_the_cross_partition_path(tmp_path: Path) -> None:
    """An event naming only one side's balances folds only that side."""
    ledger = ReferenceLedger()
    ledger.create_accounts([Account(1, 1, 1), Account(2, 1, 1)])
    ledger.create_transfers([Transfer(10, 1, 2, 7, ledger=1, code=1)])
    created, applied = ledger.log[:2], ledger.log[2]
    assert isinstance(applied, TransferApplied)
    halves = [
        TransferApplied(applied.kind, applied.transfer, 0, applied.debit, None, applied.timestamp),
        TransferApplied(applied.kind, applied.transfer, 0, None, applied.credit, applied.timestamp),
    ]
    with PartitionStore(tmp_path / "p", sync=False) as store:
        projection = PartitionProjection(store, 0, 1)
        projection.apply(0, created)
        projection.apply(1, [halves[0]])
        credit = projection.account(2)
        assert credit is not None and credit.credits_posted == 0
        assert projection.account_transfers(AccountFilter(2)) == []
        projection.apply(2, [halves[1]])
        assert projection.account(1) == ledger.lookup_accounts([1])[0]
        assert projection.account(2) == ledger.lookup_accounts([2])[0]
        assert projection.account_transfers(AccountFilter(2)) == [applied.transfer]


def test_merge_by_timestamp_honours_reversed_and_limit() -> None:
    answers = [[1, 4, 9], [2, 3], [], [5, 10]]
    assert merge_by_timestamp(answers, int, reverse=False, limit=4) == [1, 2, 3, 4]
    backwards = [sorted(a, reverse=True) for a in answers]
    assert merge_by_timestamp(backwards, int, reverse=True, limit=3) == [10, 9, 5]
    assert merge_by_timestamp(answers, int, reverse=False, limit=0) == []
    assert merge_query_transfers([[Transfer(1, timestamp=1)]], QueryFilter(limit=0)) == []
