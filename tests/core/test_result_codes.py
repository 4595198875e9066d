"""One focused case for every result code the ledger can return (and a check that none is
missing), so each check of the precedence is exercised on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from processors.ledger import ReferenceLedger
from schemas import (
    AMOUNT_MAX,
    ID_MAX,
    TIMESTAMP_MAX,
    Account,
    AccountCommandStatus,
    AccountFlags,
    CreateAccountStatus,
    CreateTransferStatus,
    Policy,
    Transfer,
    TransferFlags,
    UpdateSettings,
)

T = CreateTransferStatus
A = CreateAccountStatus
C = AccountCommandStatus
PEN = int(TransferFlags.PENDING)
POS = int(TransferFlags.POST_PENDING_TRANSFER)
VOI = int(TransferFlags.VOID_PENDING_TRANSFER)
LNK = 1
IMP = int(TransferFlags.IMPORTED)
SECOND = 1_000_000_000


def ledger_with_accounts(*extra: Account) -> ReferenceLedger:
    """Accounts 1, 2 (ledger 1), 3 (ledger 2), 9 (a funding source); 1 holds 100."""
    ledger = ReferenceLedger()
    base = [
        Account(1, ledger=1, code=1),
        Account(2, ledger=1, code=1),
        Account(3, ledger=2, code=1),
        Account(9, ledger=1, code=1),
        *extra,
    ]
    assert all(r.status == A.CREATED for r in ledger.create_accounts(base))
    fund = Transfer(900, debit_account_id=9, credit_account_id=1, amount=100, ledger=1, code=1)
    assert ledger.create_transfers([fund])[0].status == T.CREATED
    return ledger


def transfer(tid: int = 10, dr: int = 1, cr: int = 2, amount: int = 10, **kw: int) -> Transfer:
    kw.setdefault("ledger", 1)
    kw.setdefault("code", 1)
    return Transfer(tid, debit_account_id=dr, credit_account_id=cr, amount=amount, **kw)


def one(ledger: ReferenceLedger, t: Transfer) -> int:
    return ledger.create_transfers([t])[0].status


def account_status(account: Account, ledger: ReferenceLedger | None = None) -> int:
    ledger = ledger or ReferenceLedger()
    return ledger.create_accounts([account])[0].status


def pending_then(second: Transfer, first: Transfer | None = None) -> int:
    ledger = ledger_with_accounts()
    assert one(ledger, first or transfer(5, flags=PEN, timeout=1)) == T.CREATED
    return one(ledger, second)


def with_closed_account() -> ReferenceLedger:
    """Account 4 is created closed."""
    return ledger_with_accounts(Account(4, ledger=1, code=1, flags=int(AccountFlags.CLOSED)))


def frozen(account_id: int) -> ReferenceLedger:
    ledger = ledger_with_accounts()
    assert ledger.freeze(account_id).status == C.OK
    return ledger


def imported(t: Transfer) -> int:
    ledger = ledger_with_accounts()
    ledger.advance(1000 * SECOND)
    t.flags |= IMP
    return one(ledger, t)


TRANSFER_CASES: dict[CreateTransferStatus, Callable[[], int]] = {
    T.CREATED: lambda: one(ledger_with_accounts(), transfer()),
    T.LINKED_EVENT_FAILED: lambda: (
        ledger_with_accounts()
        .create_transfers([transfer(10, flags=LNK), transfer(11, cr=77)])[0]
        .status
    ),
    T.LINKED_EVENT_CHAIN_OPEN: lambda: one(ledger_with_accounts(), transfer(flags=LNK)),
    T.IMPORTED_EVENT_EXPECTED: lambda: (
        ledger_with_accounts()
        .create_transfers([transfer(10, flags=IMP, timestamp=5), transfer(11)])[1]
        .status
    ),
    T.IMPORTED_EVENT_NOT_EXPECTED: lambda: (
        ledger_with_accounts()
        .create_transfers([transfer(10), transfer(11, flags=IMP, timestamp=5)])[1]
        .status
    ),
    T.TIMESTAMP_MUST_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(timestamp=1)),
    T.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: lambda: imported(
        transfer(timestamp=TIMESTAMP_MAX + 1)
    ),
    T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: lambda: imported(
        transfer(timestamp=2000 * SECOND)
    ),
    T.RESERVED_FLAG: lambda: one(ledger_with_accounts(), transfer(flags=1 << 9)),
    T.ID_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(0)),
    T.ID_MUST_NOT_BE_INT_MAX: lambda: one(ledger_with_accounts(), transfer(ID_MAX)),
    T.EXISTS_WITH_DIFFERENT_FLAGS: lambda: pending_then(transfer(5, flags=0)),
    T.EXISTS_WITH_DIFFERENT_PENDING_ID: lambda: _exists_different_pending_id(),
    T.EXISTS_WITH_DIFFERENT_TIMEOUT: lambda: pending_then(transfer(5, flags=PEN, timeout=2)),
    T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID: lambda: pending_then(
        transfer(5, dr=9, flags=PEN, timeout=1)
    ),
    T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID: lambda: pending_then(
        transfer(5, cr=9, flags=PEN, timeout=1)
    ),
    T.EXISTS_WITH_DIFFERENT_AMOUNT: lambda: pending_then(
        transfer(5, amount=11, flags=PEN, timeout=1)
    ),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_128: lambda: pending_then(
        transfer(5, flags=PEN, timeout=1, user_data_128=1)
    ),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_64: lambda: pending_then(
        transfer(5, flags=PEN, timeout=1, user_data_64=1)
    ),
    T.EXISTS_WITH_DIFFERENT_USER_DATA_32: lambda: pending_then(
        transfer(5, flags=PEN, timeout=1, user_data_32=1)
    ),
    T.EXISTS_WITH_DIFFERENT_LEDGER: lambda: pending_then(
        transfer(5, flags=PEN, timeout=1, ledger=2)
    ),
    T.EXISTS_WITH_DIFFERENT_CODE: lambda: pending_then(transfer(5, flags=PEN, timeout=1, code=2)),
    T.EXISTS: lambda: pending_then(transfer(5, flags=PEN, timeout=1)),
    T.ID_ALREADY_FAILED: lambda: _burnt(),
    T.FLAGS_ARE_MUTUALLY_EXCLUSIVE: lambda: pending_then(
        transfer(6, flags=POS | VOI, pending_id=5)
    ),
    T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(dr=0)),
    T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX: lambda: one(
        ledger_with_accounts(), transfer(dr=ID_MAX)
    ),
    T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(cr=0)),
    T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX: lambda: one(
        ledger_with_accounts(), transfer(cr=ID_MAX)
    ),
    T.ACCOUNTS_MUST_BE_DIFFERENT: lambda: one(ledger_with_accounts(), transfer(cr=1)),
    T.PENDING_ID_MUST_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(pending_id=3)),
    T.PENDING_ID_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(flags=POS)),
    T.PENDING_ID_MUST_NOT_BE_INT_MAX: lambda: one(
        ledger_with_accounts(), transfer(flags=POS, pending_id=ID_MAX)
    ),
    T.PENDING_ID_MUST_BE_DIFFERENT: lambda: one(
        ledger_with_accounts(), transfer(10, flags=POS, pending_id=10)
    ),
    T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER: lambda: one(
        ledger_with_accounts(), transfer(timeout=1)
    ),
    T.CLOSING_TRANSFER_MUST_BE_PENDING: lambda: one(
        ledger_with_accounts(), transfer(flags=int(TransferFlags.CLOSING_DEBIT))
    ),
    T.LEDGER_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(ledger=0)),
    T.CODE_MUST_NOT_BE_ZERO: lambda: one(ledger_with_accounts(), transfer(code=0)),
    T.DEBIT_ACCOUNT_NOT_FOUND: lambda: one(ledger_with_accounts(), transfer(dr=77)),
    T.CREDIT_ACCOUNT_NOT_FOUND: lambda: one(ledger_with_accounts(), transfer(cr=77)),
    T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER: lambda: one(ledger_with_accounts(), transfer(cr=3)),
    T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS: lambda: one(
        ledger_with_accounts(), transfer(ledger=2)
    ),
    T.PENDING_TRANSFER_NOT_FOUND: lambda: one(
        ledger_with_accounts(), transfer(flags=POS, pending_id=55)
    ),
    T.PENDING_TRANSFER_NOT_PENDING: lambda: one(
        ledger_with_accounts(), transfer(flags=POS, pending_id=900)
    ),
    T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID: lambda: pending_then(
        transfer(6, dr=9, cr=0, flags=POS, pending_id=5)
    ),
    T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID: lambda: pending_then(
        transfer(6, dr=0, cr=9, flags=POS, pending_id=5)
    ),
    T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER: lambda: pending_then(
        transfer(6, dr=0, cr=0, ledger=2, flags=POS, pending_id=5)
    ),
    T.PENDING_TRANSFER_HAS_DIFFERENT_CODE: lambda: pending_then(
        transfer(6, dr=0, cr=0, code=2, flags=POS, pending_id=5)
    ),
    T.EXCEEDS_PENDING_TRANSFER_AMOUNT: lambda: pending_then(
        transfer(6, amount=11, flags=POS, pending_id=5)
    ),
    T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT: lambda: pending_then(
        transfer(6, amount=9, flags=VOI, pending_id=5)
    ),
    T.PENDING_TRANSFER_ALREADY_POSTED: lambda: _resolved_twice(POS),
    T.PENDING_TRANSFER_ALREADY_VOIDED: lambda: _resolved_twice(VOI),
    T.PENDING_TRANSFER_EXPIRED: lambda: _expired(),
    T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS: lambda: imported(transfer(timestamp=3)),
    T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT: lambda: _import_before_account(
        debit=True
    ),
    T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT: lambda: _import_before_account(
        debit=False
    ),
    T.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO: lambda: imported(
        transfer(flags=PEN, timeout=1, timestamp=500 * SECOND)
    ),
    T.DEBIT_ACCOUNT_ALREADY_CLOSED: lambda: one(with_closed_account(), transfer(dr=4)),
    T.CREDIT_ACCOUNT_ALREADY_CLOSED: lambda: one(with_closed_account(), transfer(cr=4)),
    T.OVERFLOWS_DEBITS_PENDING: lambda: _overflow(PEN, dr_side=True, field="pending"),
    T.OVERFLOWS_CREDITS_PENDING: lambda: _overflow(PEN, dr_side=False, field="pending"),
    T.OVERFLOWS_DEBITS_POSTED: lambda: _overflow(0, dr_side=True, field="posted"),
    T.OVERFLOWS_CREDITS_POSTED: lambda: _overflow(0, dr_side=False, field="posted"),
    T.OVERFLOWS_DEBITS: lambda: _overflow(0, dr_side=True, field="total"),
    T.OVERFLOWS_CREDITS: lambda: _overflow(0, dr_side=False, field="total"),
    T.OVERFLOWS_TIMEOUT: lambda: _timeout_overflow(),
    T.EXCEEDS_CREDITS: lambda: one(
        ledger_with_accounts(Account(5, ledger=1, code=1, policy=Policy.NO_OVERDRAFT)),
        transfer(dr=5, amount=1),
    ),
    T.EXCEEDS_DEBITS: lambda: one(
        ledger_with_accounts(Account(5, ledger=1, code=1, max_balance=5)),
        transfer(cr=5, amount=6),
    ),
    T.DEBIT_ACCOUNT_VERSION_MISMATCH: lambda: one(
        ledger_with_accounts(), transfer(debit_account_version=2)
    ),
    T.CREDIT_ACCOUNT_VERSION_MISMATCH: lambda: one(
        ledger_with_accounts(), transfer(credit_account_version=2)
    ),
    T.DEBIT_ACCOUNT_FROZEN: lambda: one(frozen(1), transfer()),
    T.CREDIT_ACCOUNT_FROZEN: lambda: one(frozen(2), transfer()),
}


def _exists_different_pending_id() -> int:
    ledger = ledger_with_accounts()
    ledger.create_transfers([transfer(4, flags=PEN), transfer(5, flags=PEN)])
    assert one(ledger, transfer(6, dr=0, cr=0, flags=POS, pending_id=5, amount=AMOUNT_MAX)) == (
        T.CREATED
    )
    return one(ledger, transfer(6, dr=0, cr=0, flags=POS, pending_id=4, amount=AMOUNT_MAX))


def _burnt() -> int:
    ledger = ledger_with_accounts()
    assert one(ledger, transfer(dr=77)) == T.DEBIT_ACCOUNT_NOT_FOUND
    return one(ledger, transfer())


def _resolved_twice(flag: int) -> int:
    ledger = ledger_with_accounts()
    assert one(ledger, transfer(5, flags=PEN)) == T.CREATED
    assert one(ledger, transfer(6, dr=0, cr=0, flags=flag, pending_id=5)) == T.CREATED
    return one(ledger, transfer(7, dr=0, cr=0, flags=POS, pending_id=5))


def _expired() -> int:
    ledger = ledger_with_accounts()
    assert one(ledger, transfer(5, flags=PEN, timeout=1)) == T.CREATED
    ledger.advance(2 * SECOND)
    return one(ledger, transfer(6, dr=0, cr=0, flags=POS, pending_id=5))


def _import_before_account(debit: bool) -> int:
    ledger = ReferenceLedger()
    ledger.advance(1000 * SECOND)
    accounts = [
        Account(1, ledger=1, code=1, flags=int(AccountFlags.IMPORTED), timestamp=100),
        Account(2, ledger=1, code=1, flags=int(AccountFlags.IMPORTED), timestamp=200),
    ]
    assert all(r.status == A.CREATED for r in ledger.create_accounts(accounts))
    # Between the two accounts: after the debit account (1) but not the credit account (2).
    dr, cr = (2, 1) if debit else (1, 2)
    return one(ledger, transfer(dr=dr, cr=cr, amount=0, flags=IMP, timestamp=150))


def _overflow(flags: int, dr_side: bool, field: str) -> int:
    """Preload one side so one more unit of the balance under test passes 2^128 - 1."""
    ledger = ReferenceLedger()
    ledger.create_accounts([Account(i, ledger=1, code=1) for i in (1, 2, 3)])
    debit, credit = (1, 3) if dr_side else (3, 2)
    # "pending" and "total" preload a pending amount, "posted" a posted one.
    preload_flags = 0 if field == "posted" else PEN
    preload = transfer(50, dr=debit, cr=credit, amount=AMOUNT_MAX - 10, flags=preload_flags)
    assert one(ledger, preload) == T.CREATED
    return one(ledger, transfer(60, dr=1, cr=2, amount=11, flags=flags))


def _timeout_overflow() -> int:
    ledger = ledger_with_accounts()
    ledger.advance(TIMESTAMP_MAX - 10 * SECOND)
    return one(ledger, transfer(flags=PEN, timeout=100))


ACCOUNT_CASES: dict[CreateAccountStatus, Callable[[], int]] = {
    A.CREATED: lambda: account_status(Account(1, ledger=1, code=1)),
    A.LINKED_EVENT_FAILED: lambda: (
        ReferenceLedger()
        .create_accounts([Account(1, ledger=1, code=1, flags=LNK), Account(2, ledger=0, code=1)])[0]
        .status
    ),
    A.LINKED_EVENT_CHAIN_OPEN: lambda: account_status(Account(1, ledger=1, code=1, flags=LNK)),
    A.IMPORTED_EVENT_EXPECTED: lambda: _import_accounts([True, False])[1],
    A.IMPORTED_EVENT_NOT_EXPECTED: lambda: _import_accounts([False, True])[1],
    A.TIMESTAMP_MUST_BE_ZERO: lambda: account_status(Account(1, ledger=1, code=1, timestamp=5)),
    A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: lambda: _import_accounts([True], timestamp=0)[0],
    A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: lambda: _import_accounts(
        [True], timestamp=5000 * SECOND
    )[0],
    A.RESERVED_FIELD: lambda: account_status(Account(1, ledger=1, code=1, reserved=1)),
    A.RESERVED_FLAG: lambda: account_status(Account(1, ledger=1, code=1, flags=1 << 6)),
    A.ID_MUST_NOT_BE_ZERO: lambda: account_status(Account(0, ledger=1, code=1)),
    A.ID_MUST_NOT_BE_INT_MAX: lambda: account_status(Account(ID_MAX, ledger=1, code=1)),
    A.EXISTS_WITH_DIFFERENT_FLAGS: lambda: _again(Account(1, ledger=1, code=1, flags=8)),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_128: lambda: _again(
        Account(1, ledger=1, code=1, user_data_128=1)
    ),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_64: lambda: _again(
        Account(1, ledger=1, code=1, user_data_64=1)
    ),
    A.EXISTS_WITH_DIFFERENT_USER_DATA_32: lambda: _again(
        Account(1, ledger=1, code=1, user_data_32=1)
    ),
    A.EXISTS_WITH_DIFFERENT_LEDGER: lambda: _again(Account(1, ledger=2, code=1)),
    A.EXISTS_WITH_DIFFERENT_CODE: lambda: _again(Account(1, ledger=1, code=2)),
    A.EXISTS_WITH_DIFFERENT_SETTINGS: lambda: _again(
        Account(1, ledger=1, code=1, metadata={"a": "b"})
    ),
    A.EXISTS: lambda: _again(Account(1, ledger=1, code=1)),
    A.FLAGS_ARE_MUTUALLY_EXCLUSIVE: lambda: account_status(Account(1, ledger=1, code=1, flags=6)),
    A.DEBITS_PENDING_MUST_BE_ZERO: lambda: account_status(
        Account(1, ledger=1, code=1, debits_pending=1)
    ),
    A.DEBITS_POSTED_MUST_BE_ZERO: lambda: account_status(
        Account(1, ledger=1, code=1, debits_posted=1)
    ),
    A.CREDITS_PENDING_MUST_BE_ZERO: lambda: account_status(
        Account(1, ledger=1, code=1, credits_pending=1)
    ),
    A.CREDITS_POSTED_MUST_BE_ZERO: lambda: account_status(
        Account(1, ledger=1, code=1, credits_posted=1)
    ),
    A.LEDGER_MUST_NOT_BE_ZERO: lambda: account_status(Account(1, ledger=0, code=1)),
    A.CODE_MUST_NOT_BE_ZERO: lambda: account_status(Account(1, ledger=1, code=0)),
    A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS: lambda: _import_accounts(
        [True, True], timestamps=[200, 100]
    )[1],
    A.INVALID_POLICY: lambda: account_status(
        Account(1, ledger=1, code=1, flags=2, policy=Policy.SYSTEM)
    ),
    A.INVALID_MIN_BALANCE: lambda: account_status(
        Account(1, ledger=1, code=1, policy=Policy.CAPPED_OVERDRAFT)
    ),
    A.INVALID_MAX_BALANCE: lambda: account_status(
        Account(1, ledger=1, code=1, min_balance=-5, max_balance=-10)
    ),
    A.INVALID_SETTLE_THRESHOLD: lambda: account_status(Account(1, ledger=1, code=1, settle_to=5)),
    A.INVALID_SETTLE_TO: lambda: account_status(
        Account(1, ledger=1, code=1, settle_threshold=10, settle_to=11)
    ),
    A.INVALID_LINK_TYPE: lambda: account_status(Account(1, ledger=1, code=1, link_type="a b")),
    A.INVALID_METADATA: lambda: account_status(
        Account(1, ledger=1, code=1, metadata={"": "empty key"})
    ),
}


def _again(retry: Account) -> int:
    ledger = ReferenceLedger()
    assert account_status(Account(1, ledger=1, code=1), ledger) == A.CREATED
    return account_status(retry, ledger)


def _import_accounts(
    flags: list[bool], timestamp: int = 100, timestamps: list[int] | None = None
) -> list[int]:
    ledger = ReferenceLedger()
    ledger.advance(1000 * SECOND)
    stamps = timestamps or [timestamp + i for i in range(len(flags))]
    batch = [
        Account(i + 1, ledger=1, code=1, flags=int(AccountFlags.IMPORTED) if imp else 0,
                timestamp=stamp if imp else 0)
        for i, (imp, stamp) in enumerate(zip(flags, stamps, strict=True))
    ]  # fmt: skip
    return [r.status for r in ledger.create_accounts(batch)]


def _command(action: Callable[[ReferenceLedger], int], setup: Account | None = None) -> int:
    ledger = ledger_with_accounts(*([setup] if setup else []))
    return action(ledger)


COMMAND_CASES: dict[AccountCommandStatus, Callable[[], int]] = {
    C.OK: lambda: _command(lambda lg: lg.freeze(2).status),
    C.ACCOUNT_NOT_FOUND: lambda: _command(lambda lg: lg.freeze(77).status),
    C.ACCOUNT_VERSION_MISMATCH: lambda: _command(
        lambda lg: lg.freeze(2, expected_version=3).status
    ),
    C.ACCOUNT_ALREADY_CLOSED: lambda: _command(
        lambda lg: lg.freeze(4).status, Account(4, ledger=1, code=1, flags=int(AccountFlags.CLOSED))
    ),
    C.ACCOUNT_ALREADY_FROZEN: lambda: _command(lambda lg: (lg.freeze(2), lg.freeze(2))[1].status),
    C.ACCOUNT_NOT_FROZEN: lambda: _command(lambda lg: lg.unfreeze(2).status),
    C.ACCOUNT_NOT_EMPTY: lambda: _command(lambda lg: lg.close(1).status),
    C.SETTINGS_WOULD_VIOLATE_LIMITS: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(max_balance=50)).status
    ),
    C.INVALID_POLICY: lambda: _command(
        lambda lg: lg.update_settings(4, UpdateSettings(policy=Policy.SYSTEM)).status,
        Account(4, ledger=1, code=1, flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)),
    ),
    C.INVALID_MIN_BALANCE: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(policy=Policy.CAPPED_OVERDRAFT)).status
    ),
    C.INVALID_MAX_BALANCE: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(min_balance=0, max_balance=-1)).status
    ),
    C.INVALID_SETTLE_THRESHOLD: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(settle_to=1)).status
    ),
    C.INVALID_SETTLE_TO: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(settle_threshold=1)).status
    ),
    C.INVALID_LINK_TYPE: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(link_type="")).status
    ),
    C.INVALID_METADATA: lambda: _command(
        lambda lg: lg.update_settings(1, UpdateSettings(metadata={"k": "v" * 2000})).status
    ),
}


@pytest.mark.parametrize("status", list(TRANSFER_CASES), ids=lambda s: s.name.lower())
def test_transfer_status(status: CreateTransferStatus) -> None:
    assert TRANSFER_CASES[status]() == status


@pytest.mark.parametrize("status", list(ACCOUNT_CASES), ids=lambda s: s.name.lower())
def test_account_status(status: CreateAccountStatus) -> None:
    assert ACCOUNT_CASES[status]() == status


@pytest.mark.parametrize("status", list(COMMAND_CASES), ids=lambda s: s.name.lower())
def test_account_command_status(status: AccountCommandStatus) -> None:
    assert COMMAND_CASES[status]() == status


def test_every_status_has_a_focused_case() -> None:
    assert set(TRANSFER_CASES) == set(CreateTransferStatus)
    assert set(ACCOUNT_CASES) == set(CreateAccountStatus)
    assert set(COMMAND_CASES) == set(AccountCommandStatus)
