"""The LedgerState contract, run against every backend; RocksDB state against the reference.

One suite, parametrized over the backends: `MemoryState`, `RocksLedgerState` (a RocksDB in
tmp_path), `Scope` over a `MemoryState` (writes merged into the parent at each commit), and
`Scope` over `RocksLedgerState` (how the rules run a linked chain in a processor). Then the
public scenarios and random programs run on RocksDB with a commit (and a reopen) after every
operation and must give exactly what the in-memory reference gives.

Run as a script for the figures in the report (codec and state µs, RSS with 1M accounts):
    .venv/bin/python -m tests.core.test_state_contract [accounts]
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ledger import Ledger, LedgerState, MemoryState, ReferenceLedger, Scope
from processors.ledger.state import TIMESTAMP_ACCOUNT, TIMESTAMP_TRANSFER
from processors.store import (
    PartitionStore,
    RocksLedgerState,
    decode_account,
    decode_transfer,
    encode_account,
    encode_transfer,
)
from schemas import U128_MAX, Account, Balances, PendingStatus, Policy, Transfer
from tests.core.drivers import ReferenceDriver
from tests.core.test_properties import OPS, SEED, Op, run
from tests.scenario_runner import load_scenarios, run_scenario

SECOND = 1_000_000_000
U64_MAX = (1 << 64) - 1
SIGNED_MAX = U128_MAX  # limits are signed and reach ±(2^128 - 1)


# Backends -------------------------------------------------------------------------------------


class Backend:
    """A state under test plus what its kind supports: commit, discard, reopen from disk."""

    buffered = False  # discard() drops uncommitted writes
    persistent = False  # reopen() reads the committed state back from disk

    @property
    def state(self) -> LedgerState:
        raise NotImplementedError

    def commit(self) -> None:
        """Make the writes so far permanent (a no-op where every write already is)."""

    def discard(self) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release files (RocksDB backends)."""


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self._state = MemoryState()

    @property
    def state(self) -> LedgerState:
        return self._state


class ScopeBackend(Backend):
    """A Scope over a MemoryState; commit merges into the parent and opens a fresh Scope, so
    reads are tested both through the Scope's buffer and through the merged parent."""

    buffered = True

    def __init__(self) -> None:
        self.parent = MemoryState()
        self.scope = Scope(self.parent)

    @property
    def state(self) -> LedgerState:
        return self.scope

    def commit(self) -> None:
        self.scope.merge()
        self.scope = Scope(self.parent)

    def discard(self) -> None:
        self.scope = Scope(self.parent)


class RocksBackend(Backend):
    buffered = True
    persistent = True

    def __init__(self, path: Path, **cache: int) -> None:
        self.path = path
        self.cache = cache
        self.store = PartitionStore(path, sync=False)
        self.rocks = RocksLedgerState(self.store, **cache)

    @property
    def state(self) -> LedgerState:
        return self.rocks

    def commit(self) -> None:
        self.rocks.commit({})

    def discard(self) -> None:
        self.rocks.discard()

    def reopen(self) -> None:
        """A crash: whatever is buffered is lost; the database is opened again from disk."""
        self.store.close()
        self.store = PartitionStore(self.path, sync=False)
        self.rocks = RocksLedgerState(self.store, **self.cache)

    def close(self) -> None:
        self.store.close()


class SealedRocksBackend(RocksBackend):
    """RocksDB as a pipelined processor drives it: a commit seals the buffer and writes the
    previous sealed one, so reads go through an open buffer, a sealed one, the cache and
    RocksDB at once. What is sealed counts as committed (its transaction is in Kafka), so a
    discard or a reopen writes it first."""

    def commit(self) -> None:
        self._write_sealed()
        self.rocks.seal()

    def _write_sealed(self) -> None:
        if self.rocks.sealed:
            self.rocks.write_sealed({})

    def discard(self) -> None:
        self._write_sealed()
        self.rocks.discard()

    def reopen(self) -> None:
        self._write_sealed()
        super().reopen()


class ScopeOverRocksBackend(RocksBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.scope = Scope(self.rocks)

    @property
    def state(self) -> LedgerState:
        return self.scope

    def commit(self) -> None:
        self.scope.merge()
        self.rocks.commit({})
        self.scope = Scope(self.rocks)

    def discard(self) -> None:
        self.rocks.discard()
        self.scope = Scope(self.rocks)

    def reopen(self) -> None:
        super().reopen()
        self.scope = Scope(self.rocks)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda _path: MemoryBackend(),
    "scope": lambda _path: ScopeBackend(),
    "rocks": RocksBackend,
    "rocks-sealed": SealedRocksBackend,
    "scope-over-rocks": ScopeOverRocksBackend,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path / "partition-0")
    yield made
    made.close()


@pytest.fixture
def rocks(tmp_path: Path) -> Iterator[RocksBackend]:
    made = RocksBackend(tmp_path / "partition-0")
    yield made
    made.close()


def settle(backend: Backend) -> None:
    """Commit, and where the backend persists, read everything back from disk."""
    backend.commit()
    if backend.persistent:
        backend.reopen()


# Records ----------------------------------------------------------------------------------------


def account(account_id: int, timestamp: int, **fields: Any) -> Account:
    fields.setdefault("version", 1)
    return Account(account_id, ledger=1, code=1, timestamp=timestamp, **fields)


def transfer(transfer_id: int, timestamp: int, **fields: Any) -> Transfer:
    return Transfer(transfer_id, 1, 2, 10, ledger=1, code=1, timestamp=timestamp, **fields)


EXTREME_ACCOUNTS = [
    account(1, 1),
    Account(
        id=U128_MAX - 1,
        ledger=(1 << 32) - 1,
        code=0xFFFF,
        flags=0x3F,
        debits_pending=U128_MAX,
        debits_posted=U128_MAX - 1,
        credits_pending=U128_MAX - 2,
        credits_posted=7,
        user_data_128=U128_MAX,
        user_data_64=U64_MAX,
        user_data_32=(1 << 32) - 1,
        reserved=(1 << 32) - 1,
        timestamp=(1 << 63) - 1,
        policy=Policy.CAPPED_OVERDRAFT,
        min_balance=-SIGNED_MAX,
        max_balance=SIGNED_MAX,
        settle_threshold=SIGNED_MAX - 1,
        settle_to=-SIGNED_MAX + 1,
        link_type="websocket",
        metadata={"owner": "alice", "ключ": "значение ✓", "": ""},
        version=U64_MAX,
        frozen=True,
    ),
    account(2**64, 5, policy=Policy.NO_OVERDRAFT, min_balance=0, frozen=True),
    account(3, 6, max_balance=0, settle_threshold=0, settle_to=0, link_type=""),
    account(4, 7, metadata={"k": "v" * 1024}, version=9),
]

EXTREME_TRANSFERS = [
    transfer(1, 1),
    Transfer(
        id=U128_MAX - 1,
        debit_account_id=U128_MAX - 2,
        credit_account_id=U128_MAX - 3,
        amount=U128_MAX,
        pending_id=U128_MAX - 4,
        user_data_128=U128_MAX,
        user_data_64=U64_MAX,
        user_data_32=(1 << 32) - 1,
        timeout=(1 << 32) - 1,
        ledger=(1 << 32) - 1,
        code=0xFFFF,
        flags=0x1FF,
        timestamp=(1 << 63) - 1,
        debit_account_version=U64_MAX,
        credit_account_version=1,
    ),
    transfer(2**64 + 1, 3, pending_id=2**64, timeout=5, flags=2, debit_account_version=4),
]


# The contract -------------------------------------------------------------------------------


def test_missing_keys_read_as_defaults(backend: Backend) -> None:
    s = backend.state
    assert s.get_account(1) is None
    assert s.get_transfer(1) is None
    assert s.get_pending_status(1) is PendingStatus.NONE
    assert s.get_failed(1) == 0
    assert s.get_settlement(1) == 0
    assert s.timestamp_kind(1) == 0
    assert s.max_account_timestamp() == 0
    assert s.max_transfer_timestamp() == 0
    assert list(s.expiring(U64_MAX)) == []


@pytest.mark.parametrize("original", EXTREME_ACCOUNTS, ids=lambda a: f"account-{a.id}")
def test_account_round_trip(backend: Backend, original: Account) -> None:
    backend.state.put_account(original.copy())
    assert backend.state.get_account(original.id) == original  # before commit
    settle(backend)
    found = backend.state.get_account(original.id)
    assert found == original
    assert found is not None and type(found.policy) is type(original.policy)


@pytest.mark.parametrize("original", EXTREME_TRANSFERS, ids=lambda t: f"transfer-{t.id}")
def test_transfer_round_trip(backend: Backend, original: Transfer) -> None:
    backend.state.put_transfer(original.copy())
    assert backend.state.get_transfer(original.id) == original
    settle(backend)
    assert backend.state.get_transfer(original.id) == original


def test_put_account_replaces_the_whole_record(backend: Backend) -> None:
    backend.state.put_account(account(7, 1, metadata={"a": "b"}, link_type="http"))
    settle(backend)
    replacement = account(7, 1, version=2, frozen=True)
    backend.state.put_account(replacement.copy())
    assert backend.state.get_account(7) == replacement
    settle(backend)
    assert backend.state.get_account(7) == replacement


def test_set_balances_changes_only_the_balances(backend: Backend) -> None:
    original = account(7, 1, policy=Policy.SYSTEM, metadata={"a": "b"}, version=3)
    backend.state.put_account(original.copy())
    settle(backend)
    backend.state.set_balances(Balances(7, 1, 2, 3, U128_MAX))
    backend.state.set_balances(Balances(7, 4, 5, 6, 7))  # a second write to the same account
    expected = original.copy()
    expected.debits_pending, expected.debits_posted = 4, 5
    expected.credits_pending, expected.credits_posted = 6, 7
    assert backend.state.get_account(7) == expected
    settle(backend)
    assert backend.state.get_account(7) == expected


def test_balances_on_an_account_buffered_in_the_same_commit(backend: Backend) -> None:
    backend.state.put_account(account(7, 1))
    backend.state.set_balances(Balances(7, 0, 9, 0, 0))
    settle(backend)
    found = backend.state.get_account(7)
    assert found is not None and found.debits_posted == 9


def test_pending_status(backend: Backend) -> None:
    backend.state.set_pending_status(5, PendingStatus.PENDING)
    assert backend.state.get_pending_status(5) is PendingStatus.PENDING
    settle(backend)
    assert backend.state.get_pending_status(5) is PendingStatus.PENDING
    backend.state.set_pending_status(5, PendingStatus.EXPIRED)
    assert backend.state.get_pending_status(5) is PendingStatus.EXPIRED
    settle(backend)
    assert backend.state.get_pending_status(5) is PendingStatus.EXPIRED
    assert backend.state.get_pending_status(6) is PendingStatus.NONE


def test_failed_ids(backend: Backend) -> None:
    backend.state.put_failed(5, 68)
    backend.state.put_failed(2**100, 0xFFFFFFFE)
    settle(backend)
    assert backend.state.get_failed(5) == 68
    assert backend.state.get_failed(2**100) == 0xFFFFFFFE
    assert backend.state.get_failed(6) == 0


def test_settlement_set_and_cleared_with_zero(backend: Backend) -> None:
    backend.state.set_settlement(1, 2**127)
    backend.state.set_settlement(2, 9)
    assert backend.state.get_settlement(1) == 2**127
    settle(backend)
    assert backend.state.get_settlement(1) == 2**127
    backend.state.set_settlement(1, 0)
    assert backend.state.get_settlement(1) == 0  # cleared before commit
    backend.state.set_settlement(2, 0)
    backend.state.set_settlement(2, 10)  # set again in the same commit
    settle(backend)
    assert backend.state.get_settlement(1) == 0
    assert backend.state.get_settlement(2) == 10


def test_timestamp_kinds(backend: Backend) -> None:
    backend.state.put_account(account(1, 10))
    backend.state.put_transfer(transfer(1, 11))
    assert backend.state.timestamp_kind(10) == TIMESTAMP_ACCOUNT
    settle(backend)
    assert backend.state.timestamp_kind(10) == TIMESTAMP_ACCOUNT
    assert backend.state.timestamp_kind(11) == TIMESTAMP_TRANSFER
    assert backend.state.timestamp_kind(12) == 0


def test_max_timestamps_are_the_maximum_per_kind(backend: Backend) -> None:
    backend.state.put_account(account(1, 50))
    backend.state.put_account(account(2, 30))  # an imported, older account
    backend.state.put_transfer(transfer(1, 90))
    backend.state.put_transfer(transfer(2, 70))
    assert backend.state.max_account_timestamp() == 50
    assert backend.state.max_transfer_timestamp() == 90
    settle(backend)
    assert backend.state.max_account_timestamp() == 50
    assert backend.state.max_transfer_timestamp() == 90
    backend.state.put_account(account(3, 60))
    settle(backend)
    assert backend.state.max_account_timestamp() == 60
    assert backend.state.max_transfer_timestamp() == 90


# (expires_at, timestamp, id): ties on expires_at are ordered by timestamp, then id.
EXPIRY = [
    (5 * SECOND, 3, 40),
    (2 * SECOND, 9, 2**100),
    (2 * SECOND, 9, 7),
    (2 * SECOND, 4, 8),
    (U64_MAX >> 1, 2, 3),
    (7 * SECOND, 1, 2**64),
]


def test_expiring_is_ordered_inclusive_and_does_not_consume(backend: Backend) -> None:
    entries = EXPIRY[:]
    random.Random(7).shuffle(entries)
    for index, (expires_at, timestamp, transfer_id) in enumerate(entries):
        backend.state.add_expiry(expires_at, timestamp, transfer_id)
        if index == 2:
            backend.commit()  # committed and buffered entries mixed
    for now in (0, 2 * SECOND - 1, 2 * SECOND, 5 * SECOND, 7 * SECOND, U64_MAX):
        expected = sorted(e for e in EXPIRY if e[0] <= now)
        assert list(backend.state.expiring(now)) == expected, now
        assert list(backend.state.expiring(now)) == expected, now  # reading consumed nothing
    settle(backend)
    assert list(backend.state.expiring(U64_MAX)) == sorted(EXPIRY)


def test_remove_expiry_and_replace_deadline(backend: Backend) -> None:
    for entry in EXPIRY:
        backend.state.add_expiry(*entry)
    settle(backend)
    backend.state.remove_expiry(7)  # committed
    backend.state.add_expiry(1 * SECOND, 5, 99)
    backend.state.remove_expiry(99)  # buffered
    backend.state.remove_expiry(12345)  # unknown: nothing happens
    backend.state.add_expiry(1 * SECOND, 1, 40)  # a new deadline replaces the old one
    expected = sorted([e for e in EXPIRY if e[2] not in (7, 40)] + [(1 * SECOND, 1, 40)])
    assert list(backend.state.expiring(U64_MAX)) == expected
    settle(backend)
    assert list(backend.state.expiring(U64_MAX)) == expected
    backend.state.remove_expiry(40)
    backend.state.add_expiry(3 * SECOND, 1, 7)  # re-added after removal
    expected = sorted([e for e in expected if e[2] != 40] + [(3 * SECOND, 1, 7)])
    settle(backend)
    assert list(backend.state.expiring(U64_MAX)) == expected


def test_expiring_answers_as_of_the_call_while_the_caller_writes(backend: Backend) -> None:
    """The rules remove each entry while iterating (expire_pending): nothing is skipped."""
    for entry in EXPIRY[:3]:
        backend.state.add_expiry(*entry)
    backend.commit()
    for entry in EXPIRY[3:]:
        backend.state.add_expiry(*entry)
    seen = []
    for expires_at, timestamp, transfer_id in backend.state.expiring(U64_MAX):
        seen.append((expires_at, timestamp, transfer_id))
        backend.state.remove_expiry(transfer_id)
        backend.state.add_expiry(1, 1, 10**6 + transfer_id % 1000)  # added mid-iteration
    assert seen == sorted(EXPIRY)
    assert [e[2] for e in backend.state.expiring(U64_MAX)] == sorted(
        10**6 + e[2] % 1000 for e in EXPIRY
    )


def test_expiring_skips_no_entry_however_the_entries_change(backend: Backend) -> None:
    """RocksDB state skips the scan while nothing can be due (a floor under every entry):
    entries added earlier than what it saw, entries read but not removed, and entries a
    discard brings back must all still come out."""
    s = backend.state
    assert list(s.expiring(100)) == []  # nothing at all
    s.add_expiry(50, 1, 7)
    assert list(s.expiring(49)) == []
    assert list(s.expiring(50)) == [(50, 1, 7)]
    assert list(s.expiring(60)) == [(50, 1, 7)]  # read, not removed: still due
    backend.commit()
    s = backend.state
    s.add_expiry(200, 2, 8)
    assert list(s.expiring(60)) == [(50, 1, 7)]
    s.remove_expiry(7)
    assert list(s.expiring(199)) == []
    s.add_expiry(150, 3, 9)  # earlier than the entry the last scan saw
    assert list(s.expiring(199)) == [(150, 3, 9)]
    if backend.buffered:
        backend.discard()  # 7 is back, 8 and 9 are gone
        s = backend.state
        assert list(s.expiring(60)) == [(50, 1, 7)]
        assert list(s.expiring(49)) == []
        assert list(s.expiring(U64_MAX)) == [(50, 1, 7)]


def test_discard_drops_every_buffered_write(backend: Backend) -> None:
    if not backend.buffered:
        pytest.skip("MemoryState writes through")
    backend.state.put_account(account(1, 10))
    backend.state.put_transfer(transfer(1, 20))
    backend.state.add_expiry(SECOND, 20, 1)
    backend.state.set_settlement(1, 1)
    backend.commit()
    assert backend.state.get_account(1) is not None  # now cached, and about to be re-balanced
    backend.state.put_account(account(2, 30))
    backend.state.set_balances(Balances(1, 1, 2, 3, 4))
    backend.state.put_transfer(transfer(2, 40))
    backend.state.set_pending_status(2, PendingStatus.PENDING)
    backend.state.add_expiry(SECOND, 40, 2)
    backend.state.remove_expiry(1)
    backend.state.put_failed(3, 5)
    backend.state.set_settlement(1, 0)
    backend.discard()
    s = backend.state
    assert s.get_account(2) is None
    assert s.get_account(1) == account(1, 10)
    assert s.get_transfer(2) is None
    assert s.get_pending_status(2) is PendingStatus.NONE
    assert list(s.expiring(U64_MAX)) == [(SECOND, 20, 1)]
    assert s.get_failed(3) == 0
    assert s.get_settlement(1) == 1
    assert s.timestamp_kind(30) == 0
    assert (s.max_account_timestamp(), s.max_transfer_timestamp()) == (10, 20)


# RocksDB: atomic commit with meta, crash, iteration, cache -------------------------------------


def test_commit_is_atomic_with_meta_and_a_crash_loses_only_the_uncommitted(
    rocks: RocksBackend,
) -> None:
    s = rocks.rocks
    assert s.get_meta("offset") is None
    s.put_account(account(1, 10))
    s.put_transfer(transfer(1, 11, flags=2, timeout=1))
    s.set_pending_status(1, PendingStatus.PENDING)
    s.add_expiry(11 + SECOND, 11, 1)
    s.commit({"offset": b"\x00\x07", "clock": b"11"})
    assert s.get_meta("offset") == b"\x00\x07"

    # The next batch is folded but the process dies before commit.
    s.set_balances(Balances(1, 10, 0, 0, 0))
    s.put_account(account(2, 12))
    s.set_pending_status(1, PendingStatus.POSTED)
    s.remove_expiry(1)
    s.put_failed(9, 3)
    assert s.get_meta("offset") == b"\x00\x07"  # meta only moves with a commit
    rocks.reopen()

    s = rocks.rocks
    assert s.get_meta("offset") == b"\x00\x07"
    assert s.get_meta("clock") == b"11"
    assert list(s.iter_accounts()) == [account(1, 10)]
    assert list(s.iter_transfers()) == [transfer(1, 11, flags=2, timeout=1)]
    assert list(s.iter_pending_statuses()) == [(1, PendingStatus.PENDING)]
    assert list(s.iter_failed()) == []
    assert list(s.expiring(U64_MAX)) == [(11 + SECOND, 11, 1)]
    assert s.max_account_timestamp() == 10
    assert s.max_transfer_timestamp() == 11

    s.commit({"offset": b"\x00\x08"})  # meta alone, later value wins
    rocks.reopen()
    assert rocks.rocks.get_meta("offset") == b"\x00\x08"
    assert rocks.rocks.get_meta("clock") == b"11"


def test_a_sealed_buffer_writes_what_it_held_when_sealed(rocks: RocksBackend) -> None:
    """A processor decides its next step over a sealed buffer while Kafka commits it: later
    writes (balances change account objects in place) must not reach the sealed batch."""
    s = rocks.rocks
    s.put_account(account(1, 10))
    s.put_account(account(2, 11))
    s.commit()
    s.set_balances(Balances(1, 0, 5, 0, 0))
    s.put_transfer(transfer(1, 20))
    s.add_expiry(SECOND, 20, 1)
    s.seal()
    with pytest.raises(RuntimeError):
        s.seal()
    # The next step, over the sealed one.
    assert s.get_account(1) == account(1, 10, debits_posted=5)
    s.set_balances(Balances(1, 0, 7, 0, 0))
    s.set_balances(Balances(2, 0, 0, 0, 7))
    s.put_transfer(transfer(2, 21))
    s.remove_expiry(1)
    s.add_expiry(2 * SECOND, 21, 2)
    assert s.get_transfer(1) == transfer(1, 20)
    assert list(s.expiring(U64_MAX)) == [(2 * SECOND, 21, 2)]
    assert s.max_transfer_timestamp() == 21
    s.write_sealed({"offset": b"\x01"})
    with pytest.raises(RuntimeError):
        s.write_sealed()
    assert s.get_account(1) == account(1, 10, debits_posted=7)  # the open buffer still wins
    rocks.reopen()  # a crash now: the sealed step is on disk, the open one is not
    s = rocks.rocks
    assert s.get_meta("offset") == b"\x01"
    assert list(s.iter_accounts()) == [account(1, 10, debits_posted=5), account(2, 11)]
    assert list(s.iter_transfers()) == [transfer(1, 20)]
    assert list(s.expiring(U64_MAX)) == [(SECOND, 20, 1)]
    assert s.max_transfer_timestamp() == 20


def test_discard_drops_the_sealed_buffer_too(rocks: RocksBackend) -> None:
    """A failed transaction: the step sealed for it and the one decided over it both go, and
    no uncommitted balance stays in the record cache."""
    s = rocks.rocks
    s.put_account(account(1, 10))
    s.commit()
    assert s.get_account(1) is not None  # cached
    s.set_balances(Balances(1, 0, 5, 0, 0))
    s.put_failed(7, 3)
    s.seal()
    s.set_balances(Balances(1, 0, 9, 0, 0))
    s.put_account(account(2, 30))
    s.discard()
    assert not s.sealed
    assert s.get_account(1) == account(1, 10)
    assert s.get_account(2) is None
    assert s.get_failed(7) == 0
    assert s.max_account_timestamp() == 10
    assert s.buffered_writes == 0
    s.put_account(account(3, 40))
    s.commit()  # and it goes on committing
    rocks.reopen()
    assert [a.id for a in rocks.rocks.iter_accounts()] == [1, 3]


def test_iteration_is_in_numeric_id_order_and_includes_the_buffer(rocks: RocksBackend) -> None:
    s = rocks.rocks
    ids = [2**100, 3, 2**64, 1, 256, 2**64 - 1]
    for index, account_id in enumerate(ids[:4]):
        s.put_account(account(account_id, index + 1))
        s.put_transfer(transfer(account_id, 100 + index))
    s.commit()
    for index, account_id in enumerate(ids[4:]):
        s.put_account(account(account_id, 10 + index))
    s.set_balances(Balances(3, 0, 1, 0, 0))  # a buffered change to a committed account
    accounts = list(s.iter_accounts())
    assert [a.id for a in accounts] == sorted(ids)
    assert next(a for a in accounts if a.id == 3).debits_posted == 1
    assert [t.id for t in s.iter_transfers()] == sorted(ids[:4])

    s.set_settlement(5, 50)
    s.set_settlement(2**90, 51)
    s.put_failed(2**70, 68)
    s.put_failed(4, 5)
    s.set_pending_status(2**65, PendingStatus.VOIDED)
    s.set_pending_status(1, PendingStatus.PENDING)
    s.commit()
    s.set_settlement(5, 0)
    s.set_settlement(1, 52)
    assert list(s.iter_settlements()) == [(1, 52), (2**90, 51)]
    assert list(s.iter_failed()) == [(4, 5), (2**70, 68)]
    assert list(s.iter_pending_statuses()) == [
        (1, PendingStatus.PENDING),
        (2**65, PendingStatus.VOIDED),
    ]


def test_the_record_cache_stays_bounded(tmp_path: Path) -> None:
    backend = RocksBackend(tmp_path / "p", account_cache_entries=10, transfer_cache_entries=5)
    try:
        s = backend.rocks
        for account_id in range(1, 101):
            s.put_account(account(account_id, account_id))
            s.put_transfer(transfer(account_id, 1000 + account_id))
        s.commit()
        for account_id in range(1, 101):
            assert s.get_account(account_id) == account(account_id, account_id)
            assert s.get_transfer(account_id) == transfer(account_id, 1000 + account_id)
        assert 0 < len(s._accounts) <= 10
        assert 0 < len(s._transfers) <= 5
    finally:
        backend.close()


def test_an_empty_commit_writes_nothing_and_keeps_working(rocks: RocksBackend) -> None:
    rocks.rocks.commit()
    rocks.rocks.commit({})
    assert rocks.rocks.buffered_writes == 0
    rocks.rocks.put_account(account(1, 1))
    assert rocks.rocks.buffered_writes == 2  # the record and its timestamp
    rocks.rocks.commit()
    assert rocks.rocks.buffered_writes == 0


# Codec ------------------------------------------------------------------------------------------

U128 = st.integers(0, U128_MAX)
U64 = st.integers(0, U64_MAX)
U32 = st.integers(0, (1 << 32) - 1)
U16 = st.integers(0, 0xFFFF)
SIGNED = st.none() | st.integers(-SIGNED_MAX, SIGNED_MAX)
TEXT = st.text(max_size=20)

ACCOUNTS = st.builds(
    Account,
    id=U128,
    ledger=U32,
    code=U16,
    flags=U16,
    debits_pending=U128,
    debits_posted=U128,
    credits_pending=U128,
    credits_posted=U128,
    user_data_128=U128,
    user_data_64=U64,
    user_data_32=U32,
    reserved=U32,
    timestamp=U64,
    policy=st.none() | st.sampled_from(Policy),
    min_balance=SIGNED,
    max_balance=SIGNED,
    settle_threshold=SIGNED,
    settle_to=SIGNED,
    link_type=st.none() | TEXT,
    metadata=st.dictionaries(TEXT, TEXT, max_size=4),
    version=U64,
    frozen=st.booleans(),
)

TRANSFERS = st.builds(
    Transfer,
    id=U128,
    debit_account_id=U128,
    credit_account_id=U128,
    amount=U128,
    pending_id=U128,
    user_data_128=U128,
    user_data_64=U64,
    user_data_32=U32,
    timeout=U32,
    ledger=U32,
    code=U16,
    flags=U16,
    timestamp=U64,
    debit_account_version=U64,
    credit_account_version=U64,
)


@settings(max_examples=200, deadline=None)
@given(account=ACCOUNTS)
def test_account_codec_round_trip(account: Account) -> None:
    assert decode_account(encode_account(account)) == account


@settings(max_examples=200, deadline=None)
@given(transfer=TRANSFERS)
def test_transfer_codec_round_trip(transfer: Transfer) -> None:
    assert decode_transfer(encode_transfer(transfer)) == transfer


# The reference on RocksDB -------------------------------------------------------------------


class RocksLedger(ReferenceLedger):
    """The reference ledger over RocksDB, committing after every operation as a processor
    commits after every batch; `reopen_every_op` also restarts from disk each time."""

    def __init__(self, path: Path, reopen_every_op: bool = False, pipelined: bool = False) -> None:
        self.path = path
        self.reopen_every_op = reopen_every_op
        self.pipelined = pipelined  # seal each operation, write it after the next one
        self.sealed_now = 0
        self.store = PartitionStore(path, sync=False)
        self.rocks = RocksLedgerState(self.store)
        super().__init__(state=self.rocks)

    def checkpoint(self) -> None:
        if self.pipelined:
            if self.rocks.sealed:
                self.rocks.write_sealed({"now": str(self.sealed_now).encode()})
            self.rocks.seal()
            self.sealed_now = self.now
            if self.reopen_every_op:
                self.rocks.write_sealed({"now": str(self.now).encode()})
        else:
            self.rocks.commit({"now": str(self.now).encode()})
        if self.reopen_every_op:
            self.store.close()
            self.store = PartitionStore(self.path, sync=False)
            self.rocks = RocksLedgerState(self.store)
            self.state = self.rocks
            assert self.rocks.get_meta("now") == str(self.now).encode()

    def shutdown(self) -> None:  # not close(): that is the ledger's close-account command
        self.store.close()


class CommittingDriver(ReferenceDriver):
    def __init__(self, ledger: RocksLedger) -> None:
        super().__init__(ledger)
        self.rocks_ledger = ledger

    def create_accounts(self, accounts: list[dict[str, int]]) -> list[str]:
        statuses = super().create_accounts(accounts)
        self.rocks_ledger.checkpoint()
        return statuses

    def create_transfers(self, transfers: list[dict[str, int]]) -> list[str]:
        statuses = super().create_transfers(transfers)
        self.rocks_ledger.checkpoint()
        return statuses

    def advance(self, nanoseconds: int) -> None:
        super().advance(nanoseconds)
        self.rocks_ledger.checkpoint()


SCENARIOS = load_scenarios()


@pytest.mark.parametrize("reopen", [False, True], ids=["commit", "commit-reopen"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario_on_rocksdb(scenario: dict[str, Any], reopen: bool, tmp_path: Path) -> None:
    ledger = RocksLedger(tmp_path / "partition-0", reopen_every_op=reopen)
    try:
        assert run_scenario(CommittingDriver(ledger), scenario) == len(scenario["steps"])
    finally:
        ledger.shutdown()


def run_rocks_op(ledger: RocksLedger, op: Op) -> Any:
    result = run(ledger, op)
    ledger.checkpoint()
    return result


def assert_same_as_memory(rocks: RocksLedgerState, memory: MemoryState) -> None:
    assert list(rocks.iter_accounts()) == [memory.accounts[k] for k in sorted(memory.accounts)]
    assert list(rocks.iter_transfers()) == [memory.transfers[k] for k in sorted(memory.transfers)]
    assert dict(rocks.iter_pending_statuses()) == memory.pending
    assert dict(rocks.iter_failed()) == memory.failed
    assert dict(rocks.iter_settlements()) == memory.settlements
    assert rocks.max_account_timestamp() == memory.max_account_timestamp()
    assert rocks.max_transfer_timestamp() == memory.max_transfer_timestamp()
    assert list(rocks.expiring(U64_MAX)) == list(memory.expiring(U64_MAX))
    for timestamp in memory.timestamps:
        assert rocks.timestamp_kind(timestamp) == memory.timestamp_kind(timestamp)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    program=st.lists(OPS, min_size=3, max_size=14), reopen=st.booleans(), pipelined=st.booleans()
)
def test_random_programs_on_rocksdb_match_memory(
    program: list[Op], reopen: bool, pipelined: bool
) -> None:
    memory = ReferenceLedger()
    with tempfile.TemporaryDirectory() as directory:
        rocks = RocksLedger(
            Path(directory) / "partition-0", reopen_every_op=reopen, pipelined=pipelined
        )
        try:
            for op in [*SEED, *program]:
                assert run_rocks_op(rocks, op) == run(memory, op), op
            assert rocks.log == memory.log
            assert isinstance(memory.state, MemoryState)
            assert_same_as_memory(rocks.rocks, memory.state)
            rocks.reopen_every_op = True
            rocks.checkpoint()  # and once more from disk
            assert_same_as_memory(rocks.rocks, memory.state)
        finally:
            rocks.shutdown()


# Memory with a million accounts (SPEC §2, §8) ---------------------------------------------------

RSS_LIMIT_BYTES = 300 * 1024 * 1024


def create_accounts_on_rocksdb(path: Path, count: int, batch_size: int = 8000) -> dict[str, float]:
    """Create `count` accounts through the core in batches, committing each with its offset."""
    import psutil

    process = psutil.Process()
    rules = Ledger()
    peak_rss_bytes = 0
    started = time.perf_counter()
    with PartitionStore(path, sync=False) as store:
        state = RocksLedgerState(store)
        timestamp = 1
        for offset, first in enumerate(range(1, count + 1, batch_size)):
            batch = [
                Account(account_id, ledger=1, code=1, user_data_64=account_id)
                for account_id in range(first, min(first + batch_size, count + 1))
            ]
            outcome = rules.create_accounts(state, batch, timestamp)
            timestamp = outcome.next_timestamp
            state.commit({"offset": offset.to_bytes(8, "big")})
            peak_rss_bytes = max(peak_rss_bytes, process.memory_info().rss)
        elapsed_s = time.perf_counter() - started
        assert state.get_account(count) is not None
        assert state.get_account(count + 1) is None
    return {
        "accounts": count,
        "seconds": elapsed_s,
        "us_per_account": elapsed_s / count * 1e6,
        "peak_rss_mib": peak_rss_bytes / 2**20,
        "final_rss_mib": process.memory_info().rss / 2**20,
    }


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LEDGER_SLOW_TESTS"), reason="about 20 s; set LEDGER_SLOW_TESTS=1"
)
def test_a_million_accounts_fit_in_bounded_memory(tmp_path: Path) -> None:
    figures = create_accounts_on_rocksdb(tmp_path / "partition-0", 1_000_000)
    print(figures)
    assert figures["peak_rss_mib"] * 2**20 <= RSS_LIMIT_BYTES, figures


def test_memory_check_runs_small(tmp_path: Path) -> None:
    """The measurement itself works (the full million is the slow test above)."""
    figures = create_accounts_on_rocksdb(tmp_path / "partition-0", 20_000)
    assert figures["accounts"] == 20_000


# Figures for the report -----------------------------------------------------------------------


def _per_call_us(function: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e6


def _report(what: str, us: float) -> None:
    print(f"{what:<52} {us:8.2f} us")


def measure_codec(calls: int = 200_000) -> None:  # pragma: no cover - a report script
    plain = Account(2**100 + 5, 1, 1, 0, 10, 2000, 0, 50_000, timestamp=1_700_000_000 * SECOND)
    rich = plain.copy()
    rich.policy, rich.min_balance = Policy.CAPPED_OVERDRAFT, -500
    rich.settle_threshold, rich.settle_to = 1000, 0
    rich.link_type, rich.metadata = "http", {"owner": "alice", "region": "eu"}
    for name, record in (("account", plain), ("account with extensions", rich)):
        data = encode_account(record)
        _report(
            f"encode {name} ({len(data)} bytes)",
            _per_call_us(partial(encode_account, record), calls),
        )
        _report(f"decode {name}", _per_call_us(partial(decode_account, data), calls))
    moved = Transfer(2**90, 2**100 + 5, 7, 1234, ledger=1, code=1, timestamp=1_700_000_000)
    data = encode_transfer(moved)
    _report(
        f"encode transfer ({len(data)} bytes)", _per_call_us(lambda: encode_transfer(moved), calls)
    )
    _report("decode transfer", _per_call_us(lambda: decode_transfer(data), calls))


def measure_state(accounts: int = 100_000, calls: int = 200_000) -> None:  # pragma: no cover
    with (
        tempfile.TemporaryDirectory() as directory,
        PartitionStore(Path(directory) / "bench", sync=False) as store,
    ):
        state = RocksLedgerState(store)
        started = time.perf_counter()
        for account_id in range(1, accounts + 1):
            state.put_account(Account(account_id, 1, 1, timestamp=account_id, version=1))
            if account_id % 10_000 == 0:
                state.commit()
        _report("put_account (commit every 10k)", (time.perf_counter() - started) / accounts * 1e6)
        ids = [random.randrange(1, accounts + 1) for _ in range(calls)]
        chosen = iter(ids)
        _report(
            f"get_account, random of {accounts} (20k cached)",
            _per_call_us(lambda: state.get_account(next(chosen)), calls),
        )
        _report("get_account, cached", _per_call_us(lambda: state.get_account(17), calls))
        absent = iter(range(10**9, 10**9 + calls))
        _report("get_account, absent", _per_call_us(lambda: state.get_account(next(absent)), calls))
        started = time.perf_counter()
        for index, account_id in enumerate(ids):
            state.set_balances(Balances(account_id, 0, index, 0, index))
            if index % 10_000 == 9_999:
                state.commit()
        state.commit()
        _report(
            "set_balances, random account (commit every 10k)",
            (time.perf_counter() - started) / calls * 1e6,
        )


if __name__ == "__main__":  # pragma: no cover
    measure_codec()
    measure_state()
    with tempfile.TemporaryDirectory() as directory:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        print(create_accounts_on_rocksdb(Path(directory) / "partition-0", count))


_CRASHING_WRITER = """
import os, sys
from processors.store import PartitionStore
store = PartitionStore(sys.argv[1], sync=False, wal=False, write_buffer_size_bytes=64 * 1024)
for n in range(1, 4001):
    # One commit: a record, and the offset it reflects, in one batch.
    store.write({b"r" + n.to_bytes(4, "big"): os.urandom(200), b"offset": n.to_bytes(4, "big")})
os._exit(0)  # no close: whatever was not flushed is gone, as after SIGKILL
"""


def test_a_store_without_wal_comes_back_as_a_prefix_of_its_commits(tmp_path: Path) -> None:
    """The processors write RocksDB without a WAL (their changelog is in Kafka): a crash must
    leave exactly the commits up to the recorded offset, never a torn one."""
    path = tmp_path / "db"
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path)], check=True, timeout=120)
    store = PartitionStore(path, wal=False)
    try:
        raw = store.get(b"offset")
        offset = int.from_bytes(raw, "big") if raw else 0
        records = [key for key, _ in store.scan(b"r")]
        assert records == [b"r" + n.to_bytes(4, "big") for n in range(1, offset + 1)]
        assert 0 < offset < 4000  # memtables were flushed, and the last ones were lost
    finally:
        store.close()
