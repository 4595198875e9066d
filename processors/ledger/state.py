"""The state the ledger rules read, and the writes that folding events makes to it.

`LedgerState` is the whole interface between the rules and storage. `MemoryState` keeps it in
dicts (the reference ledger, tests, the core benchmark); the processors implement it over
RocksDB. `Scope` overlays another state and buffers writes, so a linked chain (or a whole batch
whose Kafka transaction may abort) can be discarded or merged into its parent.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

from schemas import Account, Balances, PendingStatus, Transfer

__all__ = [
    "TIMESTAMP_ACCOUNT",
    "TIMESTAMP_TRANSFER",
    "LedgerState",
    "MemoryState",
    "ReadOnlyState",
    "Scope",
]

# What kind of object holds a timestamp (imported events must not reuse another kind's).
TIMESTAMP_ACCOUNT = 1
TIMESTAMP_TRANSFER = 2


class LedgerState(Protocol):
    # Reads. Returned objects belong to the state: callers must not mutate them.
    def get_account(self, account_id: int) -> Account | None: ...
    def get_transfer(self, transfer_id: int) -> Transfer | None: ...
    def get_pending_status(self, transfer_id: int) -> PendingStatus: ...
    def get_failed(self, transfer_id: int) -> int: ...
    def get_settlement(self, account_id: int) -> int: ...
    def timestamp_kind(self, timestamp: int) -> int: ...
    def max_account_timestamp(self) -> int: ...
    def max_transfer_timestamp(self) -> int: ...
    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        """(expires_at, timestamp, transfer_id) of pending transfers due at `now`, in order."""
        ...

    # Writes, made only by folding events.
    def put_account(self, account: Account) -> None: ...
    def set_balances(self, balances: Balances) -> None: ...
    def put_transfer(self, transfer: Transfer) -> None: ...
    def set_pending_status(self, transfer_id: int, status: PendingStatus) -> None: ...
    def add_expiry(self, expires_at: int, timestamp: int, transfer_id: int) -> None: ...
    def remove_expiry(self, transfer_id: int) -> None: ...
    def put_failed(self, transfer_id: int, status: int) -> None: ...
    def set_settlement(self, account_id: int, transfer_id: int) -> None: ...


class ReadOnlyState:
    """Base of the views decisions read through: they write into a Scope above the view, and
    owners change only by folding events, so every write method refuses."""

    def _read_only(self, *_: object) -> None:
        raise TypeError("decisions write into a Scope, never into a view")

    put_account = set_balances = put_transfer = set_pending_status = _read_only
    add_expiry = remove_expiry = put_failed = set_settlement = _read_only


class MemoryState:
    """LedgerState in Python dicts: for the reference ledger, tests and the core benchmark."""

    def __init__(self) -> None:
        self.accounts: dict[int, Account] = {}
        self.transfers: dict[int, Transfer] = {}
        self.pending: dict[int, PendingStatus] = {}
        self.failed: dict[int, int] = {}
        self.settlements: dict[int, int] = {}
        self.timestamps: dict[int, int] = {}
        self._max_account_ts = 0
        self._max_transfer_ts = 0
        # Lazy-deletion heap: entries whose id left `_expiry_live` are skipped.
        self._expiry_heap: list[tuple[int, int, int]] = []
        self._expiry_live: dict[int, tuple[int, int]] = {}

    def get_account(self, account_id: int) -> Account | None:
        return self.accounts.get(account_id)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        return self.transfers.get(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        return self.pending.get(transfer_id, PendingStatus.NONE)

    def get_failed(self, transfer_id: int) -> int:
        return self.failed.get(transfer_id, 0)

    def get_settlement(self, account_id: int) -> int:
        return self.settlements.get(account_id, 0)

    def timestamp_kind(self, timestamp: int) -> int:
        return self.timestamps.get(timestamp, 0)

    def max_account_timestamp(self) -> int:
        return self._max_account_ts

    def max_transfer_timestamp(self) -> int:
        return self._max_transfer_ts

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        heap = self._expiry_heap
        due: list[tuple[int, int, int]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._expiry_live.get(entry[2]) == (entry[0], entry[1]):
                due.append(entry)
        # Reading must not consume: the entries stay until remove_expiry() kills them.
        for entry in due:
            heapq.heappush(heap, entry)
        return iter(due)

    def put_account(self, account: Account) -> None:
        self.accounts[account.id] = account
        self.timestamps[account.timestamp] = TIMESTAMP_ACCOUNT
        if account.timestamp > self._max_account_ts:
            self._max_account_ts = account.timestamp

    def set_balances(self, balances: Balances) -> None:
        account = self.accounts[balances.account_id]
        account.debits_pending = balances.debits_pending
        account.debits_posted = balances.debits_posted
        account.credits_pending = balances.credits_pending
        account.credits_posted = balances.credits_posted

    def put_transfer(self, transfer: Transfer) -> None:
        self.transfers[transfer.id] = transfer
        self.timestamps[transfer.timestamp] = TIMESTAMP_TRANSFER
        if transfer.timestamp > self._max_transfer_ts:
            self._max_transfer_ts = transfer.timestamp

    def set_pending_status(self, transfer_id: int, status: PendingStatus) -> None:
        self.pending[transfer_id] = status

    def add_expiry(self, expires_at: int, timestamp: int, transfer_id: int) -> None:
        self._expiry_live[transfer_id] = (expires_at, timestamp)
        heapq.heappush(self._expiry_heap, (expires_at, timestamp, transfer_id))

    def remove_expiry(self, transfer_id: int) -> None:
        self._expiry_live.pop(transfer_id, None)

    def put_failed(self, transfer_id: int, status: int) -> None:
        self.failed[transfer_id] = status

    def set_settlement(self, account_id: int, transfer_id: int) -> None:
        if transfer_id:
            self.settlements[account_id] = transfer_id
        else:
            self.settlements.pop(account_id, None)


class Scope:
    """Buffers writes over a parent state; `merge()` hands them down, dropping it discards them.

    Accounts are copied on first write so the parent's objects are never touched.
    """

    def __init__(self, parent: LedgerState) -> None:
        self.parent = parent
        self.accounts: dict[int, Account] = {}
        self.transfers: dict[int, Transfer] = {}
        self.pending: dict[int, PendingStatus] = {}
        self.failed: dict[int, int] = {}
        self.settlements: dict[int, int] = {}
        self.timestamps: dict[int, int] = {}
        self.expiry_added: dict[int, tuple[int, int]] = {}
        self.expiry_removed: set[int] = set()
        self._max_account_ts = 0
        self._max_transfer_ts = 0
        # Accounts written as a whole (put_account) versus only re-balanced (set_balances).
        self._replaced: set[int] = set()

    def get_account(self, account_id: int) -> Account | None:
        account = self.accounts.get(account_id)
        if account is not None:
            return account
        return self.parent.get_account(account_id)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        transfer = self.transfers.get(transfer_id)
        if transfer is not None:
            return transfer
        return self.parent.get_transfer(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        status = self.pending.get(transfer_id)
        if status is not None:
            return status
        return self.parent.get_pending_status(transfer_id)

    def get_failed(self, transfer_id: int) -> int:
        status = self.failed.get(transfer_id)
        if status is not None:
            return status
        return self.parent.get_failed(transfer_id)

    def get_settlement(self, account_id: int) -> int:
        transfer_id = self.settlements.get(account_id)
        if transfer_id is not None:
            return transfer_id
        return self.parent.get_settlement(account_id)

    def timestamp_kind(self, timestamp: int) -> int:
        return self.timestamps.get(timestamp) or self.parent.timestamp_kind(timestamp)

    def max_account_timestamp(self) -> int:
        return max(self._max_account_ts, self.parent.max_account_timestamp())

    def max_transfer_timestamp(self) -> int:
        return max(self._max_transfer_ts, self.parent.max_transfer_timestamp())

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        due = [
            entry
            for entry in self.parent.expiring(now)
            if entry[2] not in self.expiry_removed and entry[2] not in self.expiry_added
        ]
        due.extend(
            (expires_at, timestamp, transfer_id)
            for transfer_id, (expires_at, timestamp) in self.expiry_added.items()
            if expires_at <= now
        )
        due.sort()
        return iter(due)

    def put_account(self, account: Account) -> None:
        self.accounts[account.id] = account
        self._replaced.add(account.id)
        self.timestamps[account.timestamp] = TIMESTAMP_ACCOUNT
        if account.timestamp > self._max_account_ts:
            self._max_account_ts = account.timestamp

    def set_balances(self, balances: Balances) -> None:
        account = self.accounts.get(balances.account_id)
        if account is None:
            parent_account = self.parent.get_account(balances.account_id)
            assert parent_account is not None, balances.account_id
            account = parent_account.copy()
            self.accounts[account.id] = account
        account.debits_pending = balances.debits_pending
        account.debits_posted = balances.debits_posted
        account.credits_pending = balances.credits_pending
        account.credits_posted = balances.credits_posted

    def put_transfer(self, transfer: Transfer) -> None:
        self.transfers[transfer.id] = transfer
        self.timestamps[transfer.timestamp] = TIMESTAMP_TRANSFER
        if transfer.timestamp > self._max_transfer_ts:
            self._max_transfer_ts = transfer.timestamp

    def set_pending_status(self, transfer_id: int, status: PendingStatus) -> None:
        self.pending[transfer_id] = status

    def add_expiry(self, expires_at: int, timestamp: int, transfer_id: int) -> None:
        self.expiry_added[transfer_id] = (expires_at, timestamp)
        self.expiry_removed.discard(transfer_id)

    def remove_expiry(self, transfer_id: int) -> None:
        self.expiry_added.pop(transfer_id, None)
        self.expiry_removed.add(transfer_id)

    def put_failed(self, transfer_id: int, status: int) -> None:
        self.failed[transfer_id] = status

    def set_settlement(self, account_id: int, transfer_id: int) -> None:
        self.settlements[account_id] = transfer_id

    def merge(self, target: LedgerState | None = None) -> None:
        """Write everything buffered here into the parent (the chain or batch commits), or into
        `target` when the parent is a read-only view of it."""
        parent = target if target is not None else self.parent
        for account_id, account in self.accounts.items():
            if account_id in self._replaced:
                parent.put_account(account)
            else:
                parent.set_balances(account.balances())
        for transfer in self.transfers.values():
            parent.put_transfer(transfer)
        for transfer_id, status in self.pending.items():
            parent.set_pending_status(transfer_id, status)
        for transfer_id in self.expiry_removed:
            parent.remove_expiry(transfer_id)
        for transfer_id, (expires_at, timestamp) in self.expiry_added.items():
            parent.add_expiry(expires_at, timestamp, transfer_id)
        for transfer_id, failure in self.failed.items():
            parent.put_failed(transfer_id, failure)
        for account_id, transfer_id in self.settlements.items():
            parent.set_settlement(account_id, transfer_id)
