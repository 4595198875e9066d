"""The ledger with its state split among owners, each read served only by the key's owner.

This is how the core runs when the debit and credit accounts of a transfer (or the transfer id)
belong to different processors (SPEC §2). A decision has three steps:

1. gather: the coordinator reads what the rules need, and each read goes to the owner of its key
   (an account's owner serves the account and its settlement state; a transfer id's owner serves
   the transfer, its pending status and whether the id is burnt);
2. decide: the unchanged rules run over those reads, writing into a scratch `Scope`;
3. apply: every event goes to the owners of the keys it names, and each folds only the writes
   whose key it owns (`apply_event(..., owner)`). The scratch scope is thrown away: owners'
   states come from the events alone.

So the result code is the one the precedence gives with the whole picture (a closed debit
account with a missing credit account is `credit_account_not_found`), balancing amounts use both
sides' balances, and linked chains stay all-or-nothing across owners. The property tests check
that this equals the sequential reference ledger, event for event.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Sequence

from processors.ledger.config import LedgerConfig
from processors.ledger.fold import apply_event
from processors.ledger.reference import SequentialLedger
from processors.ledger.state import LedgerState, MemoryState, ReadOnlyState, Scope
from schemas import (
    Account,
    AccountChanged,
    AccountCreated,
    Event,
    PendingStatus,
    SettlementRequested,
    Transfer,
    TransferFailed,
)
from schemas.partitioning import partition_of

__all__ = ["OwnerRoutedView", "PartitionOwnership", "PartitionedLedger", "event_owners"]


class PartitionOwnership:
    """What partition `index` of `partitions` owns."""

    __slots__ = ("index", "partitions")

    def __init__(self, index: int, partitions: int) -> None:
        self.index = index
        self.partitions = partitions

    def owns_account(self, account_id: int) -> bool:
        return partition_of(account_id, self.partitions) == self.index

    def owns_transfer(self, transfer_id: int) -> bool:
        return partition_of(transfer_id, self.partitions) == self.index


class OwnerRoutedView(ReadOnlyState):
    """Read-only LedgerState whose every read is answered by the owner of the key."""

    def __init__(self, owners: Sequence[MemoryState]) -> None:
        self.owners = owners
        self.partitions = len(owners)
        self.reads: Counter[int] = Counter()  # reads served, per owner

    def _owner(self, key: int) -> MemoryState:
        index = partition_of(key, self.partitions)
        self.reads[index] += 1
        return self.owners[index]

    def get_account(self, account_id: int) -> Account | None:
        return self._owner(account_id).get_account(account_id)

    def get_settlement(self, account_id: int) -> int:
        return self._owner(account_id).get_settlement(account_id)

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        return self._owner(transfer_id).get_transfer(transfer_id)

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        return self._owner(transfer_id).get_pending_status(transfer_id)

    def get_failed(self, transfer_id: int) -> int:
        return self._owner(transfer_id).get_failed(transfer_id)

    # Ledger-wide facts (imported events only): every owner contributes its part.
    def timestamp_kind(self, timestamp: int) -> int:
        return max(owner.timestamp_kind(timestamp) for owner in self.owners)

    def max_account_timestamp(self) -> int:
        return max(owner.max_account_timestamp() for owner in self.owners)

    def max_transfer_timestamp(self) -> int:
        return max(owner.max_transfer_timestamp() for owner in self.owners)

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        # Each owner knows the deadlines of the pending transfers it owns.
        return heapq.merge(*(owner.expiring(now) for owner in self.owners))


class PartitionedLedger(SequentialLedger):
    """The reference ledger's interface over `partitions` owners (see the module docstring)."""

    def __init__(self, partitions: int, config: LedgerConfig | None = None, now: int = 0) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        super().__init__(config, now)
        self.owners = [MemoryState() for _ in range(partitions)]
        self.ownership = [PartitionOwnership(i, partitions) for i in range(partitions)]
        self.view = OwnerRoutedView(self.owners)
        # Events that touched more than one owner: the cross-partition path was exercised.
        self.cross_partition_events = 0

    def _decision_state(self) -> LedgerState:
        # A scratch scope: owners change only by folding the decision's events.
        return Scope(self.view)

    def _read_state(self) -> LedgerState:
        return self.view

    def _commit(self, events: list[Event]) -> None:
        partitions = len(self.owners)
        for event in events:
            receivers = event_owners(event, partitions)
            for index in receivers:
                apply_event(self.owners[index], event, self.ownership[index])
            self.cross_partition_events += len(receivers) > 1


def event_owners(event: Event, partitions: int) -> set[int]:
    """The partitions that must fold `event`: the owners of the keys it writes."""
    if isinstance(event, AccountCreated | AccountChanged):
        return {partition_of(event.account.id, partitions)}
    if isinstance(event, SettlementRequested):
        return {partition_of(event.account_id, partitions)}
    if isinstance(event, TransferFailed):
        return {partition_of(event.transfer_id, partitions)}
    transfer = event.transfer
    owners = {partition_of(transfer.id, partitions)}
    if transfer.pending_id:
        owners.add(partition_of(transfer.pending_id, partitions))
    if event.debit is not None:
        owners.add(partition_of(event.debit.account_id, partitions))
    if event.credit is not None:
        owners.add(partition_of(event.credit.account_id, partitions))
    return owners
