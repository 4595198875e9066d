"""The single-partition reference ledger: the core applied to batches one after another.

It is the oracle the Kafka pipeline is tested against, and the model the property tests run.
Time is a counter it owns (`now`, nanoseconds), advanced by every event and by `advance()`;
pending transfers that are due expire before each operation, as a processor does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from processors.ledger.config import LedgerConfig
from processors.ledger.engine import AccountCommandResult, Ledger, Result
from processors.ledger.state import LedgerState, MemoryState
from schemas import Account, Event, Transfer, UpdateSettings

__all__ = ["ReferenceLedger", "SequentialLedger"]


class SequentialLedger(ABC):
    """Operations applied one after another with a clock the ledger owns (`now`, the last
    timestamp used). Subclasses say which state a decision reads and writes, and what becomes
    of its events."""

    def __init__(self, config: LedgerConfig | None, now: int) -> None:
        self.rules = Ledger(config)
        self.now = now
        self.log: list[Event] = []  # every event, in order: what a replay folds

    @abstractmethod
    def _decision_state(self) -> LedgerState: ...

    @abstractmethod
    def _commit(self, events: list[Event]) -> None: ...

    @abstractmethod
    def _read_state(self) -> LedgerState: ...

    # Writes ---------------------------------------------------------------------------------

    def create_accounts(self, batch: Sequence[Account]) -> list[Result]:
        self._expire()
        outcome = self.rules.create_accounts(self._decision_state(), batch, self.now + 1)
        self._record(outcome.events, outcome.next_timestamp)
        return outcome.results

    def create_transfers(self, batch: Sequence[Transfer]) -> list[Result]:
        self._expire()
        outcome = self.rules.create_transfers(self._decision_state(), batch, self.now + 1)
        self._record(outcome.events, outcome.next_timestamp)
        return outcome.results

    def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._command(
            self.rules.freeze(self._decision_state(), account_id, self.now + 1, expected_version)
        )

    def unfreeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._command(
            self.rules.unfreeze(self._decision_state(), account_id, self.now + 1, expected_version)
        )

    def close(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        self._expire()
        return self._command(
            self.rules.close(self._decision_state(), account_id, self.now + 1, expected_version)
        )

    def update_settings(
        self, account_id: int, patch: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult:
        self._expire()
        return self._command(
            self.rules.update_settings(
                self._decision_state(), account_id, patch, self.now + 1, expected_version
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
        state = self._read_state()
        found = (state.get_account(account_id) for account_id in ids)
        return [account.copy() for account in found if account is not None]

    def lookup_transfers(self, ids: Iterable[int]) -> list[Transfer]:
        state = self._read_state()
        found = (state.get_transfer(transfer_id) for transfer_id in ids)
        return [transfer.copy() for transfer in found if transfer is not None]

    # ----------------------------------------------------------------------------------------

    def _expire(self) -> None:
        outcome = self.rules.expire_pending(self._decision_state(), self.now, self.now + 1)
        self._record(outcome.events, outcome.next_timestamp)

    def _record(self, events: list[Event], next_timestamp: int) -> None:
        self._commit(events)
        self.log.extend(events)
        self.now = max(self.now, next_timestamp - 1)

    def _command(self, outcome: AccountCommandResult) -> AccountCommandResult:
        self._record(outcome.events, outcome.next_timestamp)
        return outcome


class ReferenceLedger(SequentialLedger):
    """One state, decided and written in place."""

    def __init__(
        self,
        config: LedgerConfig | None = None,
        now: int = 0,
        state: LedgerState | None = None,
    ) -> None:
        super().__init__(config, now)
        self.state: LedgerState = state if state is not None else MemoryState()

    def _decision_state(self) -> LedgerState:
        return self.state

    def _read_state(self) -> LedgerState:
        return self.state

    def _commit(self, events: list[Event]) -> None:
        pass  # the rules folded the events into self.state already
