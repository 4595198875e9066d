"""Posting events: what the ledger decided, in a form that folds back into state without deciding.

Every state change of the ledger is one of these events; `processors.ledger.fold.apply_event`
is the only code that writes ledger state, in the processors and in replay alike.

A transfer event names the balances *after* it for each side it touched, so folding sets values
instead of re-computing them, and an audit can check each transition (after = before + effect).
A side may be absent: on the cross-partition path each owner emits the half about its account.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from schemas.records import Account, Balances, Transfer

__all__ = [
    "AccountChanged",
    "AccountCreated",
    "ChangeReason",
    "Event",
    "SettlementRequested",
    "TransferApplied",
    "TransferFailed",
    "TransferKind",
]


class TransferKind(IntEnum):
    SINGLE_PHASE = 1
    PENDING = 2
    POST = 3
    VOID = 4
    EXPIRE = 5


class ChangeReason:
    """Why an account got a new version (AccountChanged.reason)."""

    FROZEN = "frozen"
    UNFROZEN = "unfrozen"
    CLOSED = "closed"
    SETTINGS = "settings"
    CLOSED_BY_TRANSFER = "closed_by_transfer"
    REOPENED = "reopened"


@dataclass(slots=True)
class AccountCreated:
    account: Account  # the record at version 1

    @property
    def timestamp(self) -> int:
        return self.account.timestamp


@dataclass(slots=True)
class AccountChanged:
    reason: str
    account: Account  # the whole record after the change, with its new version
    timestamp: int  # when the change happened (the account keeps its creation timestamp)


@dataclass(slots=True)
class TransferApplied:
    kind: TransferKind
    # The stored transfer (post/void: the new transfer with inherited fields; expire: the
    # pending transfer that expired, since expiry creates no transfer object).
    transfer: Transfer
    # Pending amount released (post, void, expire); 0 otherwise.
    released: int
    debit: Balances | None
    credit: Balances | None
    timestamp: int


@dataclass(slots=True)
class TransferFailed:
    """A transient failure: the id is burnt, later attempts get id_already_failed."""

    transfer_id: int
    status: int
    timestamp: int


@dataclass(slots=True)
class SettlementRequested:
    account_id: int
    transfer_id: int  # the pending transfer to the settlement account
    amount: int
    balance: int  # the net posted balance that triggered it
    timestamp: int


Event = AccountCreated | AccountChanged | TransferApplied | TransferFailed | SettlementRequested
