"""Reference-ledger workloads for the projection tests, and an independent oracle of the reads.

The workloads run the core's `ReferenceLedger`; its `log` is what the events topic holds. The
oracle answers every read the projections answer from the ledger's state and from re-folding
its log into fresh `MemoryState`s, without any of the projections' code.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from processors.ledger import MemoryState, ReferenceLedger, apply_event
from processors.store import PartitionStore
from projections.filters import AccountFilter, BalanceEntry, QueryFilter
from projections.model import PartitionProjection
from schemas import (
    BATCH_EVENTS_MAX,
    TIMESTAMP_MAX,
    U128_MAX,
    Account,
    AccountChanged,
    AccountCreated,
    AccountFlags,
    Balances,
    Event,
    PendingStatus,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFlags,
    TransferKind,
    UpdateSettings,
)

SECOND_NS = 1_000_000_000
SMALL = (0, 0, 1, 2)  # user data values: 0 (none) is the most common
SPARSE = (0, 0, 0, 0, 0, 0, 1, 2)  # filter values: mostly "any", so that many filters select
CODES = (1, 1, 2, 3)


# Workloads ------------------------------------------------------------------------------------


def _account(rng: random.Random, account_id: int) -> Account:
    flags = rng.choice(
        [
            0,
            AccountFlags.HISTORY,
            AccountFlags.HISTORY,
            AccountFlags.HISTORY | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
            AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
        ]
    )
    settle = rng.choice([(None, None), (None, None), (None, None), (40, 5)])
    return Account(
        account_id,
        ledger=1 if account_id % 5 else 2,
        code=rng.choice(CODES),
        flags=int(flags),
        user_data_128=rng.choice(SMALL),
        user_data_64=rng.choice(SMALL),
        user_data_32=rng.choice(SMALL),
        settle_threshold=settle[0],
        settle_to=settle[1],
    )


def random_ledger(seed: int, operations: int = 60, accounts: int = 12) -> ReferenceLedger:
    """A ledger after a random program: accounts (some with history or settlement), single,
    pending (some expiring, some closing), post, void, balancing and linked transfers, time
    passing, freeze/unfreeze/close and settings changes."""
    rng = random.Random(seed)
    ledger = ReferenceLedger()
    ledger.create_accounts([_account(rng, i) for i in range(1, accounts // 2 + 1)])
    created = accounts // 2
    next_transfer_id = 1000
    pending_ids: list[int] = []
    for _ in range(operations):
        roll = rng.random()
        if roll < 0.06 and created < accounts:
            created += 1
            ledger.create_accounts([_account(rng, created)])
        elif roll < 0.14:
            ledger.advance(rng.choice([1, SECOND_NS // 2, SECOND_NS, 2 * SECOND_NS]))
        elif roll < 0.2:
            account_id = rng.randint(1, created)
            action = rng.choice(["freeze", "unfreeze", "unfreeze", "close", "settings"])
            if action == "freeze":
                ledger.freeze(account_id)
            elif action == "unfreeze":
                ledger.unfreeze(account_id)
            elif action == "close":
                ledger.close(account_id)
            else:
                ledger.update_settings(
                    account_id, UpdateSettings(metadata={"n": str(rng.randint(0, 9))})
                )
        else:
            batch = []
            for _ in range(rng.randint(1, 5)):
                next_transfer_id += 1
                batch.append(_transfer(rng, next_transfer_id, created, pending_ids))
            ledger.create_transfers(batch)
    ledger.advance(3 * SECOND_NS)  # whatever is due expires
    return ledger


def _transfer(rng: random.Random, transfer_id: int, accounts: int, pending: list[int]) -> Transfer:
    user_data = {
        "user_data_128": rng.choice(SMALL),
        "user_data_64": rng.choice(SMALL),
        "user_data_32": rng.choice(SMALL),
    }
    linked = int(TransferFlags.LINKED) if rng.random() < 0.1 else 0
    if pending and rng.random() < 0.3:
        flag = rng.choice(
            [TransferFlags.POST_PENDING_TRANSFER, TransferFlags.VOID_PENDING_TRANSFER]
        )
        return Transfer(
            transfer_id,
            amount=rng.choice([0, 1, 5, U128_MAX]),
            pending_id=rng.choice(pending),
            flags=int(flag) | linked,
            **user_data,
        )
    same_ledger = [i for i in range(1, accounts + 1) if (i % 5 == 0) == rng.random() < 0.2]
    if len(same_ledger) < 2:
        same_ledger = [i for i in range(1, accounts + 1) if i % 5]
    debit, credit = rng.sample(same_ledger, 2)
    flags = linked
    timeout = 0
    if rng.random() < 0.35:
        flags |= TransferFlags.PENDING
        timeout = rng.choice([0, 1, 2])
        if rng.random() < 0.05:
            flags |= rng.choice([TransferFlags.CLOSING_DEBIT, TransferFlags.CLOSING_CREDIT])
        pending.append(transfer_id)
    if rng.random() < 0.1:
        flags |= rng.choice([TransferFlags.BALANCING_DEBIT, TransferFlags.BALANCING_CREDIT])
    return Transfer(
        transfer_id,
        debit,
        credit,
        amount=rng.randint(0, 60),
        timeout=timeout,
        ledger=1 if debit % 5 else 2,
        code=rng.choice(CODES),
        flags=int(flags),
        **user_data,
    )


def split_log(log: list[Event], rng: random.Random, max_events: int = 12) -> list[list[Event]]:
    """The log cut into messages of 1..max_events events (an empty one now and then)."""
    messages: list[list[Event]] = []
    at = 0
    while at < len(log):
        size = rng.randint(0, max_events)
        messages.append(log[at : at + size])
        at += size
    return messages


def fold_all(
    root: Path, messages: list[list[Event]], partitions: int
) -> tuple[list[PartitionStore], list[PartitionProjection]]:
    """One store and projection per partition, each folding every message (offset = index)
    with its ownership: what partition p's events topic gives it."""
    stores = [PartitionStore(root / f"p{p}", sync=False) for p in range(partitions)]
    projections = [PartitionProjection(stores[p], p, partitions) for p in range(partitions)]
    for offset, message in enumerate(messages):
        for projection in projections:
            assert projection.apply(offset, message)
    return stores, projections


# The oracle -----------------------------------------------------------------------------------


class Oracle:
    """Every read the projections answer, computed from the ledger and its log directly."""

    def __init__(self, ledger: ReferenceLedger) -> None:
        assert isinstance(ledger.state, MemoryState)
        self.state = ledger.state
        self.log = ledger.log
        timestamps = [_event_timestamp(event) for event in self.log]
        assert timestamps == sorted(timestamps), "the log is in timestamp order"
        # Each account's balances right after each transfer that touched it (from a re-fold).
        self.after: dict[tuple[int, int], Balances] = {}
        self.versions: dict[int, list[Account]] = defaultdict(list)
        self.settlement_requests: dict[int, list[SettlementRequested]] = defaultdict(list)
        replayed = MemoryState()
        for event in self.log:
            apply_event(replayed, event)
            if isinstance(event, AccountCreated | AccountChanged):
                self.versions[event.account.id].append(event.account.copy())
            elif isinstance(event, SettlementRequested):
                self.settlement_requests[event.account_id].append(event)
            elif isinstance(event, TransferApplied) and event.kind is not TransferKind.EXPIRE:
                transfer = event.transfer
                for account_id in (transfer.debit_account_id, transfer.credit_account_id):
                    account = replayed.get_account(account_id)
                    assert account is not None
                    self.after[account_id, transfer.timestamp] = account.balances()

    def timestamps(self) -> list[int]:
        return [_event_timestamp(event) for event in self.log]

    def account_transfers(self, f: AccountFilter) -> list[Transfer]:
        if not _account_filter_valid(f):
            return []
        selected = [
            t
            for t in self.state.transfers.values()
            if (
                (f.debits and t.debit_account_id == f.account_id)
                or (f.credits and t.credit_account_id == f.account_id)
            )
            and (not f.user_data_128 or t.user_data_128 == f.user_data_128)
            and (not f.user_data_64 or t.user_data_64 == f.user_data_64)
            and (not f.user_data_32 or t.user_data_32 == f.user_data_32)
            and (not f.code or t.code == f.code)
            and (f.timestamp_min <= t.timestamp)
            and (not f.timestamp_max or t.timestamp <= f.timestamp_max)
        ]
        selected.sort(key=lambda t: t.timestamp, reverse=f.reversed)
        return selected[: min(f.limit, BATCH_EVENTS_MAX)]

    def account_balances(self, f: AccountFilter) -> list[BalanceEntry]:
        account = self.state.get_account(f.account_id)
        if account is None or not account.flags & AccountFlags.HISTORY:
            return []
        entries = []
        for t in self.account_transfers(f):
            b = self.after[f.account_id, t.timestamp]
            entries.append(
                BalanceEntry(
                    t.timestamp,
                    b.debits_pending,
                    b.debits_posted,
                    b.credits_pending,
                    b.credits_posted,
                )
            )
        return entries

    def query_accounts(self, f: QueryFilter) -> list[Account]:
        if not _query_filter_valid(f):
            return []
        found = [a for a in self.state.accounts.values() if _query_matches(a, f)]
        found.sort(key=lambda a: a.timestamp, reverse=f.reversed)
        return found[: min(f.limit, BATCH_EVENTS_MAX)]

    def query_transfers(self, f: QueryFilter) -> list[Transfer]:
        if not _query_filter_valid(f):
            return []
        found = [t for t in self.state.transfers.values() if _query_matches(t, f)]
        found.sort(key=lambda t: t.timestamp, reverse=f.reversed)
        return found[: min(f.limit, BATCH_EVENTS_MAX)]

    def pending_status(self, transfer_id: int) -> PendingStatus:
        return self.state.pending.get(transfer_id, PendingStatus.NONE)

    def balances_at(self, account_id: int, timestamp: int) -> Balances | None:
        """Fold every event up to `timestamp` into a fresh state and read the account."""
        state = MemoryState()
        for event in self.log:
            if _event_timestamp(event) > timestamp:
                break
            apply_event(state, event)
        account = state.get_account(account_id)
        return None if account is None else account.balances()


def _event_timestamp(event: Event) -> int:
    return event.timestamp


def _timestamps_valid(timestamp_min: int, timestamp_max: int) -> bool:
    for value in (timestamp_min, timestamp_max):
        if value != 0 and not 1 <= value <= TIMESTAMP_MAX:
            return False
    return timestamp_max == 0 or timestamp_min <= timestamp_max


def _account_filter_valid(f: AccountFilter) -> bool:
    return (
        f.account_id not in (0, U128_MAX)
        and f.limit > 0
        and (f.debits or f.credits)
        and _timestamps_valid(f.timestamp_min, f.timestamp_max)
    )


def _query_filter_valid(f: QueryFilter) -> bool:
    return f.limit > 0 and _timestamps_valid(f.timestamp_min, f.timestamp_max)


def _query_matches(o: Account | Transfer, f: QueryFilter) -> bool:
    return (
        (not f.user_data_128 or o.user_data_128 == f.user_data_128)
        and (not f.user_data_64 or o.user_data_64 == f.user_data_64)
        and (not f.user_data_32 or o.user_data_32 == f.user_data_32)
        and (not f.ledger or o.ledger == f.ledger)
        and (not f.code or o.code == f.code)
        and f.timestamp_min <= o.timestamp
        and (not f.timestamp_max or o.timestamp <= f.timestamp_max)
    )


# Filters --------------------------------------------------------------------------------------


def _timestamp_bounds(rng: random.Random, timestamps: list[int]) -> tuple[int, int]:
    def pick() -> int:
        roll = rng.random()
        if roll < 0.45:
            return 0
        if roll < 0.5:
            return rng.choice([TIMESTAMP_MAX + 1, U128_MAX, -1])  # invalid
        return rng.choice(timestamps) + rng.choice([-1, 0, 0, 1])

    low, high = pick(), pick()
    if rng.random() < 0.85 and low and high and low > high:
        low, high = high, low  # mostly valid ranges, some empty-by-rule ones
    return low, high


def random_account_filters(
    rng: random.Random, account_ids: list[int], timestamps: list[int], count: int
) -> list[AccountFilter]:
    filters = []
    for _ in range(count):
        low, high = _timestamp_bounds(rng, timestamps)
        debits, credits = rng.choice([(True, True), (True, True), (True, False), (False, True)])
        if rng.random() < 0.05:
            debits = credits = False
        filters.append(
            AccountFilter(
                account_id=rng.choice([*account_ids, 0, U128_MAX, 999_999]),
                user_data_128=rng.choice(SPARSE),
                user_data_64=rng.choice(SPARSE),
                user_data_32=rng.choice(SPARSE),
                code=rng.choice(SPARSE),
                timestamp_min=low,
                timestamp_max=high,
                limit=rng.choice([0, 1, 2, 3, 5, 8189, 10_000, -1]),
                debits=debits,
                credits=credits,
                reversed=rng.random() < 0.5,
            )
        )
    return filters


def random_query_filters(
    rng: random.Random, timestamps: list[int], count: int
) -> list[QueryFilter]:
    filters = []
    for _ in range(count):
        low, high = _timestamp_bounds(rng, timestamps)
        filters.append(
            QueryFilter(
                user_data_128=rng.choice(SPARSE),
                user_data_64=rng.choice(SPARSE),
                user_data_32=rng.choice(SPARSE),
                ledger=rng.choice((0, 0, 1, 2)),
                code=rng.choice(SPARSE),
                timestamp_min=low,
                timestamp_max=high,
                limit=rng.choice([0, 1, 2, 3, 7, 8189, 10_000]),
                reversed=rng.random() < 0.5,
            )
        )
    return filters
