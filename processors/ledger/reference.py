"""The single-partition reference ledger: the core applied to batches one after another.

It is the oracle the Kafka pipeline is tested against, and the model the property tests run.
Time is a counter it owns (`now`, nanoseconds), advanced by every event and by `advance()`;
pending transfers that are due expire before each operation, as a processor does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from processors.ledger.config import LedgerConfig
from processors.ledger.engine import AccountCommandResult, BatchResult, Ledger, Result
from processors.ledger.state import LedgerState, MemoryState
from schemas import Account, Event, Transfer, UpdateSettings

__all__ = ["ReferenceLedger"]


class ReferenceLedger:
    def __init__(
        self,
        config: LedgerConfig | None = None,
        now: int = 0,
        state: LedgerState | None = None,
    ) -> None:
        self.rules = Ledger(config)
        self.state: LedgerState = state if state is not None else MemoryState()
        self.now = now  # the last timestamp used
        self.log: list[Event] = []  # every event, in order: what a replay folds

    # Writes ---------------------------------------------------------------------------------

    def create_accounts(self, batch: Sequence[Account]) -> list[Result]:
        self._expire()
        return self._record(self.rules.create_accounts(self.state, batch, self.now + 1)).results

    def create_transfers(self, batch: Sequence[Transfer]) -> list[Result]:
        self._expire()
        return self._record(self.rules.create_transfers(self.state, batch, self.now + 1)).results

    def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._record_command(
            self.rules.freeze(self.state, account_id, self.now + 1, expected_version)
        )

    def unfreeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._record_command(
            self.rules.unfreeze(self.state, account_id, self.now + 1, expected_version)
        )

    def close(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._record_command(
            self.rules.close(self.state, account_id, self.now + 1, expected_version)
        )

    def update_settings(
        self, account_id: int, patch: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult:
        self._expire()
        return self._record_command(
            self.rules.update_settings(
                self.state, account_id, patch, self.now + 1, expected_version
            )
        )

    def advance(self, nanoseconds: int) -> None:
        """Let time pass (nanoseconds > 0); what falls due expires."""
        if nanoseconds <= 0:
            raise ValueError(f"nanoseconds must be positive, got {nanoseconds}")
        self.now += nanoseconds
        self._expire()

    # Reads ----------------------------------------------------------------------------------

    def lookup_accounts(self, ids: Iterable[int]) -> list[Account]:
        found = (self.state.get_account(account_id) for account_id in ids)
        return [account.copy() for account in found if account is not None]

    def lookup_transfers(self, ids: Iterable[int]) -> list[Transfer]:
        found = (self.state.get_transfer(transfer_id) for transfer_id in ids)
        return [transfer.copy() for transfer in found if transfer is not None]

    # ----------------------------------------------------------------------------------------

    def _expire(self) -> None:
        self._record(self.rules.expire_pending(self.state, self.now, self.now + 1))

    def _record(self, outcome: BatchResult) -> BatchResult:
        self.log.extend(outcome.events)
        self.now = max(self.now, outcome.next_timestamp - 1)
        return outcome

    def _record_command(self, outcome: AccountCommandResult) -> AccountCommandResult:
        self.log.extend(outcome.events)
        self.now = max(self.now, outcome.next_timestamp - 1)
        return outcome
