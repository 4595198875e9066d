"""The read model's replay and point-in-time parts, pure over real RocksDB stores: folding
messages in batches (`apply_many`) builds the same store as one by one (equal content hash);
the hash sees every change but the offset it is taken at; balances as of a log position equal
a store that folded the log up to there."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.store import PartitionStore
from projections.model import PartitionProjection
from schemas import Account, AccountCreated, Event
from tests.projections.test_audit_checks import history, split

PARTITIONS = 3


def partition_messages(partition: int) -> list[tuple[int, list[Event], int]]:
    return [
        (position.offset, events, -1)
        for position, events in split(history().log, PARTITIONS)
        if position.partition == partition
    ]


def fold(path: Path, partition: int, messages: list[tuple[int, list[Event], int]]) -> str:
    with PartitionStore(path, sync=False) as store:
        projection = PartitionProjection(store, partition, PARTITIONS)
        for offset, events, sequence in messages:
            projection.apply(offset, events, sequence)
        offset, digest = projection.content_hash()
    return f"{offset}:{digest}"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1_000), partition=st.integers(0, PARTITIONS - 1))
def test_batched_folding_builds_the_same_store(
    seed: int, partition: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    messages = partition_messages(partition)
    one_by_one = fold(tmp_path_factory.mktemp("one"), partition, messages)
    rng = random.Random(seed)
    with PartitionStore(tmp_path_factory.mktemp("batched"), sync=False) as store:
        projection = PartitionProjection(store, partition, PARTITIONS)
        start = 0
        while start < len(messages):
            size = rng.randint(1, 6)
            chunk = messages[start : start + size]
            assert projection.apply_many(chunk) == len(chunk)
            assert projection.apply_many(chunk) == 0  # already applied: nothing
            start += size
        offset, digest = projection.content_hash()
    assert f"{offset}:{digest}" == one_by_one


def test_the_hash_sees_content_not_the_offset(tmp_path: Path) -> None:
    messages = partition_messages(0)
    base = fold(tmp_path / "a", 0, messages)
    offset, digest = base.split(":")
    # The same messages at later offsets: the same content, another position.
    shifted = [(o + 10, events, s) for o, events, s in messages]
    other_offset, other_digest = fold(tmp_path / "b", 0, shifted).split(":")
    assert int(other_offset) == int(offset) + 10
    assert other_digest != digest  # entries name the message offset that wrote them
    # One more account changes the hash.
    created: list[Event] = [AccountCreated(_account_of(0))]
    extra = [*messages, (int(offset) + 1, created, -1)]
    assert fold(tmp_path / "c", 0, extra).split(":")[1] != digest


def _account_of(partition: int) -> Account:
    from schemas.partitioning import partition_of

    account_id = next(i for i in range(10_000, 20_000) if partition_of(i, PARTITIONS) == partition)
    return Account(account_id, ledger=1, code=1, timestamp=1 << 60, version=1)


@pytest.mark.parametrize("partition", range(PARTITIONS))
def test_balances_as_of_an_offset_equal_the_log_folded_up_to_it(
    partition: int, tmp_path: Path
) -> None:
    messages = partition_messages(partition)
    accounts = {
        e.account.id for _o, events, _s in messages for e in events if type(e) is AccountCreated
    }
    accounts |= {99_999}  # never created
    with PartitionStore(tmp_path / "all", sync=False) as store:
        projection = PartitionProjection(store, partition, PARTITIONS)
        projection.apply_many(messages)
        for cut in range(len(messages)):
            with PartitionStore(tmp_path / f"upto-{cut}", sync=False) as prefix_store:
                upto = PartitionProjection(prefix_store, partition, PARTITIONS)
                upto.apply_many(messages[: cut + 1])
                for account_id in sorted(accounts):
                    expected = upto.account(account_id)
                    found = projection.balances_at_offset(account_id, messages[cut][0])
                    if expected is None:
                        assert found is None, (account_id, cut)
                        continue
                    assert found is not None, (account_id, cut)
                    assert found.balances == expected.balances(), (account_id, cut)
        # Past the last message: as of now.
        last = messages[-1][0]
        for account_id in sorted(accounts - {99_999}):
            now = projection.account(account_id)
            later = projection.balances_at_offset(account_id, last + 100)
            assert now is not None and later is not None and later.balances == now.balances()


def test_a_store_of_the_older_layout_is_refused(tmp_path: Path) -> None:
    fold(tmp_path, 0, partition_messages(0))
    with PartitionStore(tmp_path, sync=False) as store:
        store.write({b"\x09layout": None})
        with pytest.raises(ValueError, match="older key layout"):
            PartitionProjection(store, 0, PARTITIONS)
