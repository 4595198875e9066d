"""The contract between the HTTP API and whatever answers its reads.

`Reads` answers every read of SPEC §5-§6 for the whole ledger: the projection workers implement
it by answering from the partitions they own and asking the owner of the others; tests may
implement it over one process's projections. Every call sees every write whose response had
returned before the call began (read-your-writes).
"""

from __future__ import annotations

from typing import Protocol

from projections.filters import AccountFilter, BalanceEntry, BalancesAtOffset, QueryFilter
from schemas import Account, Balances, PendingStatus, SettlementRequested, Transfer

__all__ = ["Reads"]


class Reads(Protocol):
    async def lookup_accounts(self, ids: list[int]) -> list[Account]:
        """The accounts that exist, in request order (missing ids are left out)."""
        ...

    async def lookup_transfers(self, ids: list[int]) -> list[tuple[Transfer, PendingStatus]]:
        """The transfers that exist, in request order, with their pending status (NONE for
        transfers that are not pending ones)."""
        ...

    async def account_transfers(self, account_filter: AccountFilter) -> list[Transfer]: ...

    async def account_balances(self, account_filter: AccountFilter) -> list[BalanceEntry]: ...

    async def account_versions(self, account_id: int) -> list[Account]:
        """Every version of the account, oldest first (empty if it does not exist)."""
        ...

    async def settlements(self, account_id: int) -> list[SettlementRequested]: ...

    async def balances_at(self, account_id: int, timestamp: int) -> Balances | None:
        """The account's balances as of `timestamp` (None: it did not exist then)."""
        ...

    async def balances_at_offset(self, account_id: int, offset: int) -> BalancesAtOffset | None:
        """The account's balances after the messages up to `offset` of the events partition
        that owns it (None: it did not exist then)."""
        ...

    async def query_accounts(self, query_filter: QueryFilter) -> list[Account]: ...

    async def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]: ...

    async def wait_for_sequence(self, partitions: list[int], sequence: int) -> None:
        """Return once the projections of `partitions` have folded the cross-partition
        decision at `sequence` (what a write response waits for: read-your-writes)."""
        ...
