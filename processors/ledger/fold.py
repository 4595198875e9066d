"""Folding events into state: the only code that writes ledger state.

The processors fold the events they just decided; replay folds the log. Nothing here decides:
balances are set to the values the event carries, statuses to what the event says.

Every write is keyed by an account id or a transfer id. When the state is split among owners
(partitions), each owner folds the same event with its `Ownership` and performs only the writes
whose key it owns; without one, every write happens (a single partition).
"""

from __future__ import annotations

from typing import Protocol

from processors.ledger.state import LedgerState
from schemas import (
    AccountChanged,
    AccountCreated,
    Event,
    PendingStatus,
    SettlementRequested,
    TransferApplied,
    TransferFailed,
    TransferKind,
)

__all__ = ["Ownership", "apply_event", "apply_events"]


class Ownership(Protocol):
    def owns_account(self, account_id: int) -> bool: ...
    def owns_transfer(self, transfer_id: int) -> bool: ...


_RESOLVED_STATUS = {
    TransferKind.POST: PendingStatus.POSTED,
    TransferKind.VOID: PendingStatus.VOIDED,
    TransferKind.EXPIRE: PendingStatus.EXPIRED,
}


def apply_event(state: LedgerState, event: Event, owner: Ownership | None = None) -> None:
    if type(event) is TransferApplied:
        _apply_transfer(state, event, owner)
    elif type(event) is AccountCreated or type(event) is AccountChanged:
        if owner is None or owner.owns_account(event.account.id):
            # Copy: the event must stay as it was when later events change the stored account.
            state.put_account(event.account.copy())
    elif type(event) is TransferFailed:
        if owner is None or owner.owns_transfer(event.transfer_id):
            state.put_failed(event.transfer_id, event.status)
    elif type(event) is SettlementRequested:
        if owner is None or owner.owns_account(event.account_id):
            state.set_settlement(event.account_id, event.transfer_id)
    else:  # pragma: no cover - exhaustive over Event
        raise TypeError(f"not a ledger event: {event!r}")


def apply_events(state: LedgerState, events: list[Event], owner: Ownership | None = None) -> None:
    for event in events:
        apply_event(state, event, owner)


def _apply_transfer(state: LedgerState, event: TransferApplied, owner: Ownership | None) -> None:
    transfer = event.transfer
    kind = event.kind
    if kind is TransferKind.EXPIRE:
        _resolve(state, transfer.id, transfer.debit_account_id, PendingStatus.EXPIRED, owner)
    else:
        if owner is None or owner.owns_transfer(transfer.id):
            state.put_transfer(transfer)
            if kind is TransferKind.PENDING:
                state.set_pending_status(transfer.id, PendingStatus.PENDING)
                if transfer.timeout:
                    state.add_expiry(transfer.expires_at, transfer.timestamp, transfer.id)
        if kind is TransferKind.POST or kind is TransferKind.VOID:
            _resolve(
                state, transfer.pending_id, transfer.debit_account_id, _RESOLVED_STATUS[kind], owner
            )
    debit = event.debit
    if debit is not None and (owner is None or owner.owns_account(debit.account_id)):
        state.set_balances(debit)
    credit = event.credit
    if credit is not None and (owner is None or owner.owns_account(credit.account_id)):
        state.set_balances(credit)


def _resolve(
    state: LedgerState,
    pending_id: int,
    debit_account_id: int,
    status: PendingStatus,
    owner: Ownership | None,
) -> None:
    if owner is None or owner.owns_transfer(pending_id):
        state.set_pending_status(pending_id, status)
        state.remove_expiry(pending_id)
    # A settlement stops being in flight once its pending transfer is resolved either way.
    if (owner is None or owner.owns_account(debit_account_id)) and state.get_settlement(
        debit_account_id
    ) == pending_id:
        state.set_settlement(debit_account_id, 0)
