"""A ScenarioDriver over the in-memory ledgers (sequential reference or partitioned)."""

from __future__ import annotations

from typing import Any, cast

from processors.ledger import PartitionedLedger, ReferenceLedger
from schemas import Account, Transfer
from tests.scenario_runner import Balances5


class ReferenceDriver:
    def __init__(self, ledger: ReferenceLedger | PartitionedLedger | None = None) -> None:
        self.ledger = ledger or ReferenceLedger()

    def create_accounts(self, accounts: list[dict[str, int]]) -> list[str]:
        batch = [Account(**cast(dict[str, Any], a)) for a in accounts]
        results = self.ledger.create_accounts(batch)
        return [r.status.name.lower() for r in results]  # type: ignore[attr-defined]

    def create_transfers(self, transfers: list[dict[str, int]]) -> list[str]:
        results = self.ledger.create_transfers([Transfer(**t) for t in transfers])
        return [r.status.name.lower() for r in results]  # type: ignore[attr-defined]

    def advance(self, nanoseconds: int) -> None:
        self.ledger.advance(nanoseconds)

    def advance_to(self, timestamp: int) -> None:
        self.ledger.advance(timestamp - self.ledger.now)

    def account_balances(self, account_id: int) -> Balances5 | None:
        found = self.ledger.lookup_accounts([account_id])
        if not found:
            return None
        a = found[0]
        return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.closed)

    def transfer_amount(self, transfer_id: int) -> int | None:
        found = self.ledger.lookup_transfers([transfer_id])
        return found[0].amount if found else None

    def account_flags(self, account_id: int) -> int:
        return self.ledger.lookup_accounts([account_id])[0].flags

    def account_ledger(self, account_id: int) -> int:
        return self.ledger.lookup_accounts([account_id])[0].ledger
