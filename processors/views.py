"""Read-only views the processors decide over (docs/PIPELINE.md).

`LocalView` is a partition's own state, refusing keys the partition does not own (the request
must be sequenced) or that an open sequenced entry holds locked (the request must wait).
`FactsView` is the union of the facts the participants of a sequenced entry sent; a read outside
them means the entry needs more keys. Either refusal is an exception that aborts the decision
before anything is written, and records which key was wanted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from processors.ledger import PartitionOwnership
from processors.ledger.state import LedgerState, ReadOnlyState
from schemas import Account, PendingStatus, Transfer
from schemas.messages import Facts

__all__ = [
    "ACCOUNT",
    "LEDGER_WIDE",
    "TRANSFER",
    "FactsView",
    "Key",
    "LocalView",
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


class LocalView(ReadOnlyState):
    """A partition's own state, as far as it may decide alone."""

    def __init__(
        self,
        state: LedgerState,
        ownership: PartitionOwnership,
        locked: Collection[Key],
        expiring_ids: Collection[int] | None = None,
    ) -> None:
        self.state = state
        self.ownership = ownership
        self.locked = locked
        self.expiring_ids = expiring_ids
        self.read: set[Key] = set()  # keys read, for sequencing the request if it must be

    def _account(self, account_id: int) -> None:
        key = (ACCOUNT, account_id)
        self.read.add(key)
        if not self.ownership.owns_account(account_id):
            raise MissingKey(key)
        if key in self.locked:
            raise LockedKey(key)

    def _transfer(self, transfer_id: int) -> None:
        key = (TRANSFER, transfer_id)
        self.read.add(key)
        if not self.ownership.owns_transfer(transfer_id):
            raise MissingKey(key)
        if key in self.locked:
            raise LockedKey(key)

    def _ledger_wide(self) -> None:
        if self.ownership.partitions > 1:
            raise MissingKey((LEDGER_WIDE, 0))

    def get_account(self, account_id: int) -> Account | None:
        self._account(account_id)
        return self.state.get_account(account_id)

    def get_settlement(self, account_id: int) -> int:
        self._account(account_id)
        return self.state.get_settlement(account_id)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        self._transfer(transfer_id)
        return self.state.get_transfer(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        self._transfer(transfer_id)
        return self.state.get_pending_status(transfer_id)

    def get_failed(self, transfer_id: int) -> int:
        self._transfer(transfer_id)
        return self.state.get_failed(transfer_id)

    def timestamp_kind(self, timestamp: int) -> int:
        self._ledger_wide()
        return self.state.timestamp_kind(timestamp)

    def max_account_timestamp(self) -> int:
        self._ledger_wide()
        return self.state.max_account_timestamp()

    def max_transfer_timestamp(self) -> int:
        self._ledger_wide()
        return self.state.max_transfer_timestamp()

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        due = self.state.expiring(now)
        if self.expiring_ids is None:
            return due
        chosen = self.expiring_ids
        return (entry for entry in due if entry[2] in chosen)


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
