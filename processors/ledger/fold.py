"""Folding events into state: the only code that writes ledger state.

The processors fold the events they just decided; replay folds the log. Nothing here decides:
balances are set to the values the event carries, statuses to what the event says.
"""

from __future__ import annotations

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

__all__ = ["apply_event", "apply_events"]

_RESOLVED_STATUS = {
    TransferKind.POST: PendingStatus.POSTED,
    TransferKind.VOID: PendingStatus.VOIDED,
    TransferKind.EXPIRE: PendingStatus.EXPIRED,
}


def apply_event(state: LedgerState, event: Event) -> None:
    if type(event) is TransferApplied:
        _apply_transfer(state, event)
    elif type(event) is AccountCreated or type(event) is AccountChanged:
        # Copy: the event must stay as it was when later events change the stored account.
        state.put_account(event.account.copy())
    elif type(event) is TransferFailed:
        state.put_failed(event.transfer_id, event.status)
    elif type(event) is SettlementRequested:
        state.set_settlement(event.account_id, event.transfer_id)
    else:  # pragma: no cover - exhaustive over Event
        raise TypeError(f"not a ledger event: {event!r}")


def apply_events(state: LedgerState, events: list[Event]) -> None:
    for event in events:
        apply_event(state, event)


def _apply_transfer(state: LedgerState, event: TransferApplied) -> None:
    transfer = event.transfer
    kind = event.kind
    if kind is TransferKind.EXPIRE:
        _resolve(state, transfer.id, transfer.debit_account_id, PendingStatus.EXPIRED)
    else:
        state.put_transfer(transfer)
        if kind is TransferKind.PENDING:
            state.set_pending_status(transfer.id, PendingStatus.PENDING)
            if transfer.timeout:
                state.add_expiry(transfer.expires_at, transfer.timestamp, transfer.id)
        elif kind is not TransferKind.SINGLE_PHASE:
            _resolve(state, transfer.pending_id, transfer.debit_account_id, _RESOLVED_STATUS[kind])
    if event.debit is not None:
        state.set_balances(event.debit)
    if event.credit is not None:
        state.set_balances(event.credit)


def _resolve(
    state: LedgerState, pending_id: int, debit_account_id: int, status: PendingStatus
) -> None:
    state.set_pending_status(pending_id, status)
    state.remove_expiry(pending_id)
    # A settlement stops being in flight once its pending transfer is resolved either way.
    if state.get_settlement(debit_account_id) == pending_id:
        state.set_settlement(debit_account_id, 0)
