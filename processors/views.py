"""Read-only views the processors decide over (docs/PIPELINE.md).

`LocalStates` is the state of the partitions one process owns, refusing keys owned elsewhere (the
request must be sequenced) or that an open sequenced entry holds locked (the request must wait).
`FactsView` is the union of the facts the participants of a sequenced entry sent; a read outside
them means the entry needs more keys. Either refusal is an exception that aborts the decision
before anything is written, and records which key was wanted.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping

from processors.ledger.state import LedgerState, ReadOnlyState
from schemas import Account, Balances, PendingStatus, Transfer
from schemas.messages import Facts
from schemas.partitioning import partition_of

__all__ = [
    "ACCOUNT",
    "LEDGER_WIDE",
    "TRANSFER",
    "FactsView",
    "Key",
    "LocalStates",
    "LockedKey",
    "MissingKey",
]

ACCOUNT = "a"
TRANSFER = "t"
LEDGER_WIDE = "*"  # ledger-wide facts (imported events): every partition must take part

Key = tuple[str, int]


class MissingKey(Exception):
    def __init__(self, key: Key) -> None:
        super().__init__(f"{key[0]}:{key[1]}")
        self.key = key


class LockedKey(Exception):
    def __init__(self, key: Key) -> None:
        super().__init__(f"{key[0]}:{key[1]}")
        self.key = key


class LocalStates:
    """The states of the partitions this process owns, as far as it may decide without the
    sequence: a read of a key owned by a partition of another process raises MissingKey (the
    request must be sequenced), of a key an open sequenced entry holds locked LockedKey (it must
    wait). A decision writes into a Scope above this; the Scope's `merge()` then hands each
    write to the owner of its key, as folding the decision's events at each owner would."""

    def __init__(
        self,
        owners: Mapping[int, tuple[LedgerState, Collection[Key]]],
        partitions: int,
        expiring_ids: Collection[int] | None = None,
    ) -> None:
        self.owners = owners  # partition -> (its state, its locked keys)
        self.partitions = partitions
        self.expiring_ids = expiring_ids
        self.read: set[Key] = set()  # keys read, for sequencing the request if it must be
        self.partitions_read: set[int] = set()
        # The rules read each key several times: the owner found the first time, answered
        # from here after (locks do not change during a decision).
        self._found: dict[Key, LedgerState] = {}

    def _owner(self, key: Key) -> LedgerState:
        state = self._found.get(key)
        if state is not None:
            return state
        self.read.add(key)
        index = partition_of(key[1], self.partitions)
        owner = self.owners.get(index)
        if owner is None:
            raise MissingKey(key)
        state, locked = owner
        if key in locked:
            raise LockedKey(key)
        self.partitions_read.add(index)
        self._found[key] = state
        return state

    def _writer(self, key: Key) -> LedgerState:
        # Decisions write only keys they read, so the owner is here (and usually found).
        state = self._found.get(key)
        if state is None:
            state = self.owners[partition_of(key[1], self.partitions)][0]
        return state

    def _ledger_wide(self) -> None:
        if self.partitions > 1:
            raise MissingKey((LEDGER_WIDE, 0))

    def get_account(self, account_id: int) -> Account | None:
        return self._owner((ACCOUNT, account_id)).get_account(account_id)

    def get_settlement(self, account_id: int) -> int:
        return self._owner((ACCOUNT, account_id)).get_settlement(account_id)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        return self._owner((TRANSFER, transfer_id)).get_transfer(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        return self._owner((TRANSFER, transfer_id)).get_pending_status(transfer_id)

    def get_failed(self, transfer_id: int) -> int:
        return self._owner((TRANSFER, transfer_id)).get_failed(transfer_id)

    def timestamp_kind(self, timestamp: int) -> int:
        self._ledger_wide()
        return max(state.timestamp_kind(timestamp) for state, _ in self.owners.values())

    def max_account_timestamp(self) -> int:
        self._ledger_wide()
        return max(state.max_account_timestamp() for state, _ in self.owners.values())

    def max_transfer_timestamp(self) -> int:
        self._ledger_wide()
        return max(state.max_transfer_timestamp() for state, _ in self.owners.values())

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        due = heapq.merge(*(state.expiring(now) for state, _ in self.owners.values()))
        if self.expiring_ids is None:
            return due
        chosen = self.expiring_ids
        return (entry for entry in due if entry[2] in chosen)

    def put_account(self, account: Account) -> None:
        self._writer((ACCOUNT, account.id)).put_account(account)

    def set_balances(self, balances: Balances) -> None:
        self._writer((ACCOUNT, balances.account_id)).set_balances(balances)

    def put_transfer(self, transfer: Transfer) -> None:
        self._writer((TRANSFER, transfer.id)).put_transfer(transfer)

    def set_pending_status(self, transfer_id: int, status: PendingStatus) -> None:
        self._writer((TRANSFER, transfer_id)).set_pending_status(transfer_id, status)

    def add_expiry(self, expires_at: int, timestamp: int, transfer_id: int) -> None:
        self._writer((TRANSFER, transfer_id)).add_expiry(expires_at, timestamp, transfer_id)

    def remove_expiry(self, transfer_id: int) -> None:
        self._writer((TRANSFER, transfer_id)).remove_expiry(transfer_id)

    def put_failed(self, transfer_id: int, status: int) -> None:
        self._writer((TRANSFER, transfer_id)).put_failed(transfer_id, status)

    def set_settlement(self, account_id: int, transfer_id: int) -> None:
        self._writer((ACCOUNT, account_id)).set_settlement(account_id, transfer_id)


class FactsView(ReadOnlyState):
    """The facts of every participant of one sequenced entry, merged."""

    def __init__(self, facts: Iterable[Facts], expire_ids: Collection[int] = ()) -> None:
        self.accounts: dict[int, Account | None] = {}
        self.settlements: dict[int, int] = {}
        self.transfers: dict[int, Transfer | None] = {}
        self.pending: dict[int, int] = {}
        self.failed: dict[int, int] = {}
        self.expiries: dict[int, tuple[int, int]] = {}
        self.timestamp_kinds: dict[int, int] = {}
        self._max_account_timestamp = 0
        self._max_transfer_timestamp = 0
        for part in facts:
            self.accounts.update(part.accounts)
            self.settlements.update(part.settlements)
            self.transfers.update(part.transfers)
            self.pending.update(part.pending)
            self.failed.update(part.failed)
            self.expiries.update(part.expiries)
            for timestamp, kind in part.timestamp_kinds.items():
                self.timestamp_kinds[timestamp] = max(kind, self.timestamp_kinds.get(timestamp, 0))
            self._max_account_timestamp = max(
                self._max_account_timestamp, part.max_account_timestamp
            )
            self._max_transfer_timestamp = max(
                self._max_transfer_timestamp, part.max_transfer_timestamp
            )
        self.expire_ids = expire_ids
        self.ledger_wide = False  # set by the decider when every partition sent facts

    def get_account(self, account_id: int) -> Account | None:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise MissingKey((ACCOUNT, account_id)) from None

    def get_settlement(self, account_id: int) -> int:
        if account_id not in self.accounts:
            raise MissingKey((ACCOUNT, account_id))
        return self.settlements.get(account_id, 0)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        try:
            return self.transfers[transfer_id]
        except KeyError:
            raise MissingKey((TRANSFER, transfer_id)) from None

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        if transfer_id not in self.transfers:
            raise MissingKey((TRANSFER, transfer_id))
        return PendingStatus(self.pending.get(transfer_id, 0))

    def get_failed(self, transfer_id: int) -> int:
        if transfer_id not in self.transfers:
            raise MissingKey((TRANSFER, transfer_id))
        return self.failed.get(transfer_id, 0)

    def _ledger_wide(self) -> None:
        if not self.ledger_wide:
            raise MissingKey((LEDGER_WIDE, 0))

    def timestamp_kind(self, timestamp: int) -> int:
        self._ledger_wide()
        return self.timestamp_kinds.get(timestamp, 0)

    def max_account_timestamp(self) -> int:
        self._ledger_wide()
        return self._max_account_timestamp

    def max_transfer_timestamp(self) -> int:
        self._ledger_wide()
        return self._max_transfer_timestamp

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        due = sorted(
            (expires_at, timestamp, transfer_id)
            for transfer_id, (expires_at, timestamp) in self.expiries.items()
            if transfer_id in self.expire_ids and expires_at <= now
        )
        return iter(due)
