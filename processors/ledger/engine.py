"""The ledger rules: a deterministic function of (state, command, timestamp).

Modelled on TigerBeetle's `state_machine.zig`: each operation is a flat sequence of checks
returning the first failing status in the documented precedence
(../shared/reference/tigerbeetle-semantics.md §3, SPEC §3-§4 for the extensions); on success
it builds the events and folds them into the state it was given. No IO, clock or randomness:
time comes in as `timestamp`, the first nanosecond timestamp the batch may use; every event of
the batch, and every object it creates (settlement transfers too), takes the next one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.ledger.config import LedgerConfig
from processors.ledger.fold import apply_event
from processors.ledger.settings import preset_min_balance, validate_settings
from processors.ledger.state import TIMESTAMP_TRANSFER, LedgerState, Scope
from schemas import (
    ACCOUNT_FLAGS_KNOWN,
    AMOUNT_MAX,
    BATCH_EVENTS_MAX,
    ID_MAX,
    TIMESTAMP_MAX,
    TRANSFER_FLAGS_KNOWN,
    TRANSIENT_TRANSFER_STATUSES,
    UNSET,
    Account,
    AccountChanged,
    AccountCommandStatus,
    AccountCreated,
    AccountFlags,
    AccountSettings,
    Balances,
    ChangeReason,
    CreateAccountStatus,
    CreateTransferStatus,
    Event,
    PendingStatus,
    Policy,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFailed,
    TransferFlags,
    TransferKind,
    UpdateSettings,
)
from schemas.partitioning import partition_of

__all__ = ["AccountCommandResult", "BatchResult", "BatchTooLarge", "Ledger", "Result"]

A = CreateAccountStatus
T = CreateTransferStatus

_LINKED = 1  # bit 0 in both account and transfer flags
_IMPORTED_ACCOUNT = int(AccountFlags.IMPORTED)
_IMPORTED_TRANSFER = int(TransferFlags.IMPORTED)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
_POST_OR_VOID = _POST | _VOID
_BALANCING_DEBIT = int(TransferFlags.BALANCING_DEBIT)
_BALANCING_CREDIT = int(TransferFlags.BALANCING_CREDIT)
_CLOSING_DEBIT = int(TransferFlags.CLOSING_DEBIT)
_CLOSING_CREDIT = int(TransferFlags.CLOSING_CREDIT)
_CLOSING = _CLOSING_DEBIT | _CLOSING_CREDIT
_NOT_WITH_POST_OR_VOID = _PENDING | _BALANCING_DEBIT | _BALANCING_CREDIT | _CLOSING
_CLOSED = int(AccountFlags.CLOSED)
_D_LE_C = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_C_LE_D = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_NS_PER_S = 1_000_000_000
_CREATED = T.CREATED
_TRANSIENT = frozenset(int(s) for s in TRANSIENT_TRANSFER_STATUSES)
_ACCOUNT_IMPORT_CODES = (
    A.IMPORTED_EVENT_EXPECTED,
    A.IMPORTED_EVENT_NOT_EXPECTED,
    A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
    A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
)
_TRANSFER_IMPORT_CODES = (
    T.IMPORTED_EVENT_EXPECTED,
    T.IMPORTED_EVENT_NOT_EXPECTED,
    T.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
    T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
)


class BatchTooLarge(ValueError):
    def __init__(self, count: int) -> None:
        super().__init__(f"batch has {count} events; at most {BATCH_EVENTS_MAX} are allowed")
        self.count = count


@dataclass(slots=True)
class Result:
    """The outcome of one event of a batch: its status and the timestamp TigerBeetle reports
    (the assigned one for `created`, the original object's for `exists`, else the event's)."""

    status: int
    timestamp: int


@dataclass(slots=True)
class BatchResult:
    results: list[Result]
    events: list[Event]
    next_timestamp: int  # the first timestamp the next batch may use


@dataclass(slots=True)
class AccountCommandResult:
    status: AccountCommandStatus
    version: int  # the account's version after the command (0 if it does not exist)
    events: list[Event] = field(default_factory=list)
    next_timestamp: int = 0


def _import_status(
    event: _BatchEvent,
    batch_imported: bool,
    imported_flag: int,
    commit_timestamp: int,
    codes: tuple[int, int, int, int],
) -> int:
    """Batch-level checks on imported events (rows 3-7 of both precedence tables); 0 = pass."""
    expected, not_expected, out_of_range, must_not_advance = codes
    event_imported = event.flags & imported_flag
    if batch_imported and not event_imported:
        return expected
    if not batch_imported and event_imported:
        return not_expected
    if not event_imported:
        return T.TIMESTAMP_MUST_BE_ZERO  # the same value for accounts
    if not 1 <= event.timestamp <= TIMESTAMP_MAX:
        return out_of_range
    if event.timestamp >= commit_timestamp:
        return must_not_advance
    return 0


class _BatchEvent(Protocol):
    id: int
    flags: int
    timestamp: int


_Create = Callable[[LedgerState, Any, int, list[Event], "_Clock"], tuple[int, int]]


class _Clock:
    __slots__ = ("next", "step")

    def __init__(self, first: int, step: int) -> None:
        self.next = first
        self.step = step

    def take(self) -> int:
        value = self.next
        self.next = value + self.step
        return value


def _settlement_transfer_id(account_id: int, timestamp: int, partitions: int) -> int:
    """A deterministic id for the settlement transfer a posting at `timestamp` triggers, owned
    by the same partition as the account (so no other owner takes part)."""
    home = partition_of(account_id, partitions)
    seed = b"ledger-settlement" + account_id.to_bytes(16, "big") + timestamp.to_bytes(8, "big")
    for salt in range(1 << 16):
        digest = hashlib.blake2b(seed + salt.to_bytes(4, "big"), digest_size=16).digest()
        value = int.from_bytes(digest, "big")
        if 0 < value < ID_MAX and partition_of(value, partitions) == home:
            return value
    raise AssertionError("no settlement id found in the account's partition")  # pragma: no cover


class Ledger:
    """The ledger's rules, bound to a configuration. Stateless: state is passed in."""

    def __init__(self, config: LedgerConfig | None = None) -> None:
        self.config = config or LedgerConfig()

    # ---------------------------------------------------------------------------------------
    # Batches and linked chains (TigerBeetle `execute_create`).

    def create_accounts(
        self, state: LedgerState, batch: Sequence[Account], timestamp: int
    ) -> BatchResult:
        return self._execute(state, batch, timestamp, self._create_account, accounts=True)

    def create_transfers(
        self, state: LedgerState, batch: Sequence[Transfer], timestamp: int
    ) -> BatchResult:
        return self._execute(state, batch, timestamp, self._create_transfer, accounts=False)

    def _execute(
        self,
        state: LedgerState,
        batch: Sequence[_BatchEvent],
        timestamp: int,
        create: _Create,
        accounts: bool,
    ) -> BatchResult:
        count = len(batch)
        if count > BATCH_EVENTS_MAX:
            raise BatchTooLarge(count)
        imported_flag = _IMPORTED_ACCOUNT if accounts else _IMPORTED_TRANSFER
        batch_imported = count > 0 and bool(batch[0].flags & imported_flag)
        # The request's commit timestamp: what the last event gets when nothing else is created.
        commit_timestamp = timestamp + (count - 1) * self.config.timestamp_step
        import_codes = _ACCOUNT_IMPORT_CODES if accounts else _TRANSFER_IMPORT_CODES

        clock = _Clock(timestamp, self.config.timestamp_step)
        results: list[Result] = []
        events: list[Event] = []
        chain_start = -1  # index of the first event of the open chain, -1 if none
        chain_broken = False
        chain_scope: Scope | None = None
        chain_events: list[Event] = []

        for index, event in enumerate(batch):
            event_timestamp = clock.next
            clock.next = event_timestamp + clock.step
            linked = event.flags & _LINKED
            status: int
            result_timestamp = event_timestamp
            if linked and chain_start < 0:
                chain_start = index
                chain_scope = Scope(state)
                chain_events = []
            if linked and index == count - 1:
                status = T.LINKED_EVENT_CHAIN_OPEN  # same value for accounts
            elif chain_broken:
                status = T.LINKED_EVENT_FAILED
            else:
                status = 0
                if batch_imported or event.timestamp or event.flags & imported_flag:
                    status = _import_status(
                        event, batch_imported, imported_flag, commit_timestamp, import_codes
                    )
                    if not status:
                        event_timestamp = event.timestamp  # an imported event keeps its own
                if not status:
                    if chain_scope is not None:
                        status, result_timestamp = create(
                            chain_scope, event, event_timestamp, chain_events, clock
                        )
                    else:
                        status, result_timestamp = create(
                            state, event, event_timestamp, events, clock
                        )
            if status == _CREATED:
                result_timestamp = event_timestamp
            results.append(Result(status, result_timestamp))

            if status != _CREATED:
                if chain_start >= 0 and not chain_broken:
                    chain_broken = True
                    chain_scope = None
                    chain_events = []
                    for earlier in results[chain_start:index]:
                        earlier.status = T.LINKED_EVENT_FAILED
                # A transient failure burns the id, even inside a rolled-back chain.
                if not accounts and status in _TRANSIENT:
                    burnt = TransferFailed(event.id, status, event_timestamp)
                    apply_event(state, burnt)
                    events.append(burnt)
            if chain_start >= 0 and (not linked or status == T.LINKED_EVENT_CHAIN_OPEN):
                if not chain_broken and chain_scope is not None:
                    chain_scope.merge()
                    events.extend(chain_events)
                chain_start = -1
                chain_broken = False
                chain_scope = None
                chain_events = []

        if accounts:
            # Batch-level statuses above are spelled with T; account codes share their values.
            for result in results:
                if type(result.status) is not A:
                    result.status = A(result.status)
        return BatchResult(results, events, clock.next)

    # ---------------------------------------------------------------------------------------
    # create_accounts (tigerbeetle-semantics.md §3.1, then the SPEC §3 settings).

    def _create_account(
        self,
        state: LedgerState,
        a: Account,
        timestamp: int,
        events: list[Event],
        clock: _Clock,
    ) -> tuple[int, int]:
        if a.reserved != 0:
            return A.RESERVED_FIELD, timestamp
        if a.flags & ~ACCOUNT_FLAGS_KNOWN:
            return A.RESERVED_FLAG, timestamp
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO, timestamp
        if a.id == ID_MAX:
            return A.ID_MUST_NOT_BE_INT_MAX, timestamp

        settings = AccountSettings(
            a.policy,
            a.min_balance if a.min_balance is not None else preset_min_balance(a.policy, None),
            a.max_balance,
            a.settle_threshold,
            a.settle_to,
            a.link_type,
            a.metadata,
        )
        existing = state.get_account(a.id)
        if existing is not None:
            if a.flags != existing.flags:
                return A.EXISTS_WITH_DIFFERENT_FLAGS, timestamp
            if a.user_data_128 != existing.user_data_128:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_128, timestamp
            if a.user_data_64 != existing.user_data_64:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_64, timestamp
            if a.user_data_32 != existing.user_data_32:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_32, timestamp
            if a.ledger != existing.ledger:
                return A.EXISTS_WITH_DIFFERENT_LEDGER, timestamp
            if a.code != existing.code:
                return A.EXISTS_WITH_DIFFERENT_CODE, timestamp
            if settings != existing.settings():
                return A.EXISTS_WITH_DIFFERENT_SETTINGS, timestamp
            return A.EXISTS, existing.timestamp

        if a.flags & _D_LE_C and a.flags & _C_LE_D:
            return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE, timestamp
        if a.debits_pending != 0:
            return A.DEBITS_PENDING_MUST_BE_ZERO, timestamp
        if a.debits_posted != 0:
            return A.DEBITS_POSTED_MUST_BE_ZERO, timestamp
        if a.credits_pending != 0:
            return A.CREDITS_PENDING_MUST_BE_ZERO, timestamp
        if a.credits_posted != 0:
            return A.CREDITS_POSTED_MUST_BE_ZERO, timestamp
        if a.ledger == 0:
            return A.LEDGER_MUST_NOT_BE_ZERO, timestamp
        if a.code == 0:
            return A.CODE_MUST_NOT_BE_ZERO, timestamp
        if a.flags & _IMPORTED_ACCOUNT and (
            timestamp <= state.max_account_timestamp()
            or state.timestamp_kind(timestamp) == TIMESTAMP_TRANSFER
        ):
            return A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS, timestamp
        invalid = validate_settings(settings, a.flags)
        if invalid:
            return A(invalid), timestamp
        # A new account's balance is 0: limits that exclude 0 would be violated from birth.
        if settings.min_balance is not None and settings.min_balance > 0:
            return A.INVALID_MIN_BALANCE, timestamp
        if settings.max_balance is not None and settings.max_balance < 0:
            return A.INVALID_MAX_BALANCE, timestamp

        account = Account(
            a.id, a.ledger, a.code, a.flags, 0, 0, 0, 0,
            a.user_data_128, a.user_data_64, a.user_data_32, 0, timestamp,
            settings.policy, settings.min_balance, settings.max_balance,
            settings.settle_threshold, settings.settle_to, settings.link_type,
            dict(settings.metadata), 1, False,
        )  # fmt: skip
        created = AccountCreated(account)
        apply_event(state, created)
        events.append(created)
        return A.CREATED, timestamp

    # ---------------------------------------------------------------------------------------
    # create_transfers (tigerbeetle-semantics.md §3.2; SPEC §3-§4 extensions).

    def _create_transfer(
        self,
        state: LedgerState,
        t: Transfer,
        timestamp: int,
        events: list[Event],
        clock: _Clock,
    ) -> tuple[int, int]:
        flags = t.flags
        if flags & ~TRANSFER_FLAGS_KNOWN:
            return T.RESERVED_FLAG, timestamp
        transfer_id = t.id
        if transfer_id == 0:
            return T.ID_MUST_NOT_BE_ZERO, timestamp
        if transfer_id == ID_MAX:
            return T.ID_MUST_NOT_BE_INT_MAX, timestamp
        existing = state.get_transfer(transfer_id)
        if existing is not None:
            status = self._transfer_exists(state, t, existing)
            return status, existing.timestamp if status == T.EXISTS else timestamp
        if state.get_failed(transfer_id):
            return T.ID_ALREADY_FAILED, timestamp
        if flags & _POST_OR_VOID:
            return self._post_or_void(state, t, timestamp, events, clock), timestamp
        return self._single_or_pending(state, t, timestamp, events, clock), timestamp

    def _single_or_pending(
        self,
        state: LedgerState,
        t: Transfer,
        timestamp: int,
        events: list[Event],
        clock: _Clock,
    ) -> int:
        """Path R, after the id checks: a single-phase or pending transfer."""
        flags = t.flags
        debit_id = t.debit_account_id
        credit_id = t.credit_account_id
        if debit_id == 0:
            return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if debit_id == ID_MAX:
            return T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if credit_id == 0:
            return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if credit_id == ID_MAX:
            return T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if debit_id == credit_id:
            return T.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id != 0:
            return T.PENDING_ID_MUST_BE_ZERO
        pending = flags & _PENDING
        if not pending:
            if t.timeout != 0:
                return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
            if flags & _CLOSING:
                return T.CLOSING_TRANSFER_MUST_BE_PENDING
        if t.ledger == 0:
            return T.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return T.CODE_MUST_NOT_BE_ZERO
        dr = state.get_account(debit_id)
        if dr is None:
            return T.DEBIT_ACCOUNT_NOT_FOUND
        cr = state.get_account(credit_id)
        if cr is None:
            return T.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if t.debit_account_version and t.debit_account_version != dr.version:
            return T.DEBIT_ACCOUNT_VERSION_MISMATCH
        if t.credit_account_version and t.credit_account_version != cr.version:
            return T.CREDIT_ACCOUNT_VERSION_MISMATCH
        if flags & _IMPORTED_TRANSFER:
            if (
                timestamp <= state.max_transfer_timestamp()
                or state.timestamp_kind(timestamp) == 1  # an account holds it
            ):
                return T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
            if timestamp <= dr.timestamp:
                return T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
            if timestamp <= cr.timestamp:
                return T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
            if t.timeout != 0:
                return T.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
        if dr.flags & _CLOSED:
            return T.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & _CLOSED:
            return T.CREDIT_ACCOUNT_ALREADY_CLOSED
        if dr.frozen:
            return T.DEBIT_ACCOUNT_FROZEN
        if cr.frozen:
            return T.CREDIT_ACCOUNT_FROZEN

        dr_dp = dr.debits_pending
        dr_dpo = dr.debits_posted
        dr_cpo = dr.credits_posted
        cr_cp = cr.credits_pending
        cr_cpo = cr.credits_posted
        cr_dpo = cr.debits_posted
        amount = t.amount
        if flags & _BALANCING_DEBIT:
            room = dr_cpo - dr_dpo - dr_dp
            amount = min(amount, room if room > 0 else 0)
        if flags & _BALANCING_CREDIT:
            room = cr_dpo - cr_cpo - cr_cp
            amount = min(amount, room if room > 0 else 0)

        if pending:
            if amount + dr_dp > AMOUNT_MAX:
                return T.OVERFLOWS_DEBITS_PENDING
            if amount + cr_cp > AMOUNT_MAX:
                return T.OVERFLOWS_CREDITS_PENDING
        if amount + dr_dpo > AMOUNT_MAX:
            return T.OVERFLOWS_DEBITS_POSTED
        if amount + cr_cpo > AMOUNT_MAX:
            return T.OVERFLOWS_CREDITS_POSTED
        if amount + dr_dp + dr_dpo > AMOUNT_MAX:
            return T.OVERFLOWS_DEBITS
        if amount + cr_cp + cr_cpo > AMOUNT_MAX:
            return T.OVERFLOWS_CREDITS
        if t.timeout and timestamp + t.timeout * _NS_PER_S > TIMESTAMP_MAX:
            return T.OVERFLOWS_TIMEOUT
        floor = 0 if dr.flags & _D_LE_C else dr.min_balance
        if floor is not None and dr_cpo - (dr_dpo + dr_dp + amount) < floor:
            return T.EXCEEDS_CREDITS
        ceiling = 0 if cr.flags & _C_LE_D else cr.max_balance
        if ceiling is not None and cr_cpo + cr_cp + amount - cr_dpo > ceiling:
            return T.EXCEEDS_DEBITS

        stored = Transfer(
            t.id, debit_id, credit_id, amount, 0,
            t.user_data_128, t.user_data_64, t.user_data_32, t.timeout,
            t.ledger, t.code, flags, timestamp,
            t.debit_account_version, t.credit_account_version,
        )  # fmt: skip
        if pending:
            applied = TransferApplied(
                TransferKind.PENDING,
                stored,
                0,
                Balances(debit_id, dr_dp + amount, dr_dpo, dr.credits_pending, dr_cpo),
                Balances(credit_id, cr.debits_pending, cr_dpo, cr_cp + amount, cr_cpo),
                timestamp,
            )
        else:
            applied = TransferApplied(
                TransferKind.SINGLE_PHASE,
                stored,
                0,
                Balances(debit_id, dr_dp, dr_dpo + amount, dr.credits_pending, dr_cpo),
                Balances(credit_id, cr.debits_pending, cr_dpo, cr_cp, cr_cpo + amount),
                timestamp,
            )
        apply_event(state, applied)
        events.append(applied)
        if pending:
            if flags & _CLOSING_DEBIT:
                self._change_closed(state, debit_id, True, timestamp, events)
            if flags & _CLOSING_CREDIT:
                self._change_closed(state, credit_id, True, timestamp, events)
        elif amount and cr.settle_threshold is not None and not flags & _IMPORTED_TRANSFER:
            self._maybe_request_settlement(state, credit_id, timestamp, events, clock)
        return _CREATED

    def _transfer_exists(self, state: LedgerState, t: Transfer, e: Transfer) -> int:
        if t.flags != e.flags:
            return T.EXISTS_WITH_DIFFERENT_FLAGS
        if e.flags & _POST_OR_VOID:
            return self._post_or_void_exists(state, t, e)
        if t.pending_id != e.pending_id:
            return T.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e.timeout:
            return T.EXISTS_WITH_DIFFERENT_TIMEOUT
        if t.debit_account_id != e.debit_account_id:
            return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != e.credit_account_id:
            return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.flags & (_BALANCING_DEBIT | _BALANCING_CREDIT):
            # The stored amount may have been reduced; asking for more is the same request.
            if t.amount < e.amount:
                return T.EXISTS_WITH_DIFFERENT_AMOUNT
        elif t.amount != e.amount:
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
        if t.user_data_128 != e.user_data_128:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if t.user_data_64 != e.user_data_64:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if t.user_data_32 != e.user_data_32:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger != e.ledger:
            return T.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code != e.code:
            return T.EXISTS_WITH_DIFFERENT_CODE
        return T.EXISTS

    def _post_or_void_exists(self, state: LedgerState, t: Transfer, e: Transfer) -> int:
        p = state.get_transfer(e.pending_id)
        assert p is not None, "a stored post/void always references its pending transfer"
        if t.pending_id != e.pending_id:
            return T.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e.timeout:
            return T.EXISTS_WITH_DIFFERENT_TIMEOUT
        if t.debit_account_id and t.debit_account_id != e.debit_account_id:
            return T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != e.credit_account_id:
            return T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if e.flags & _VOID:
            amount = p.amount if t.amount == 0 else t.amount
        else:
            amount = p.amount if t.amount == AMOUNT_MAX else t.amount
        if amount != e.amount:
            return T.EXISTS_WITH_DIFFERENT_AMOUNT
        # A zero user_data inherited the pending transfer's value: it matches if e did too.
        if (t.user_data_128 or p.user_data_128) != e.user_data_128:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if (t.user_data_64 or p.user_data_64) != e.user_data_64:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if (t.user_data_32 or p.user_data_32) != e.user_data_32:
            return T.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger and t.ledger != e.ledger:
            return T.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code and t.code != e.code:
            return T.EXISTS_WITH_DIFFERENT_CODE
        return T.EXISTS

    def _post_or_void(
        self,
        state: LedgerState,
        t: Transfer,
        timestamp: int,
        events: list[Event],
        clock: _Clock,
    ) -> int:
        flags = t.flags
        post = flags & _POST
        if (post and flags & _VOID) or flags & _NOT_WITH_POST_OR_VOID:
            return T.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        pending_id = t.pending_id
        if pending_id == 0:
            return T.PENDING_ID_MUST_NOT_BE_ZERO
        if pending_id == ID_MAX:
            return T.PENDING_ID_MUST_NOT_BE_INT_MAX
        if pending_id == t.id:
            return T.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout != 0:
            return T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        p = state.get_transfer(pending_id)
        if p is None:
            return T.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & _PENDING:
            return T.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id and t.debit_account_id != p.debit_account_id:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != p.credit_account_id:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger and t.ledger != p.ledger:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code and t.code != p.code:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        dr = state.get_account(p.debit_account_id)
        cr = state.get_account(p.credit_account_id)
        assert dr is not None and cr is not None, "accounts are never deleted"
        # Extension: version pins hold on this path too, at the point the accounts are known.
        if t.debit_account_version and t.debit_account_version != dr.version:
            return T.DEBIT_ACCOUNT_VERSION_MISMATCH
        if t.credit_account_version and t.credit_account_version != cr.version:
            return T.CREDIT_ACCOUNT_VERSION_MISMATCH
        if post:
            amount = p.amount if t.amount == AMOUNT_MAX else t.amount
        else:
            amount = p.amount if t.amount == 0 else t.amount
        if amount > p.amount:
            return T.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if not post and amount < p.amount:
            return T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        status = state.get_pending_status(pending_id)
        if status == PendingStatus.POSTED:
            return T.PENDING_TRANSFER_ALREADY_POSTED
        if status == PendingStatus.VOIDED:
            return T.PENDING_TRANSFER_ALREADY_VOIDED
        if status == PendingStatus.EXPIRED or (p.timeout and p.expires_at <= timestamp):
            return T.PENDING_TRANSFER_EXPIRED
        if flags & _IMPORTED_TRANSFER and (
            timestamp <= state.max_transfer_timestamp() or state.timestamp_kind(timestamp) == 1
        ):
            return T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
        if post:
            if dr.flags & _CLOSED:
                return T.DEBIT_ACCOUNT_ALREADY_CLOSED
            if cr.flags & _CLOSED:
                return T.CREDIT_ACCOUNT_ALREADY_CLOSED
            if dr.frozen:
                return T.DEBIT_ACCOUNT_FROZEN
            if cr.frozen:
                return T.CREDIT_ACCOUNT_FROZEN

        stored = Transfer(
            t.id, p.debit_account_id, p.credit_account_id, amount, pending_id,
            t.user_data_128 or p.user_data_128, t.user_data_64 or p.user_data_64,
            t.user_data_32 or p.user_data_32, 0, p.ledger, p.code, flags, timestamp,
            t.debit_account_version, t.credit_account_version,
        )  # fmt: skip
        posted = amount if post else 0
        applied = TransferApplied(
            TransferKind.POST if post else TransferKind.VOID,
            stored,
            p.amount,
            Balances(
                dr.id, dr.debits_pending - p.amount, dr.debits_posted + posted,
                dr.credits_pending, dr.credits_posted,
            ),
            Balances(
                cr.id, cr.debits_pending, cr.debits_posted,
                cr.credits_pending - p.amount, cr.credits_posted + posted,
            ),
            timestamp,
        )  # fmt: skip
        apply_event(state, applied)
        events.append(applied)
        if not post:
            self._reopen_after(state, p, timestamp, events)
        elif posted and cr.settle_threshold is not None and not flags & _IMPORTED_TRANSFER:
            self._maybe_request_settlement(state, cr.id, timestamp, events, clock)
        return _CREATED

    # ---------------------------------------------------------------------------------------
    # Expiry of pending transfers (decided here, recorded as events: replay never reads a clock).

    def expire_pending(
        self, state: LedgerState, now: int, timestamp: int, limit: int = BATCH_EVENTS_MAX
    ) -> BatchResult:
        """Expire the pending transfers due at `now` (at most `limit`, oldest first)."""
        clock = _Clock(timestamp, self.config.timestamp_step)
        events: list[Event] = []
        for count, (_expires_at, _created, transfer_id) in enumerate(state.expiring(now)):
            if count == limit:
                break
            p = state.get_transfer(transfer_id)
            assert p is not None
            if state.get_pending_status(transfer_id) != PendingStatus.PENDING:
                continue
            dr = state.get_account(p.debit_account_id)
            cr = state.get_account(p.credit_account_id)
            assert dr is not None and cr is not None
            expiry_timestamp = clock.take()
            expired = TransferApplied(
                TransferKind.EXPIRE,
                p,
                p.amount,
                Balances(
                    dr.id, dr.debits_pending - p.amount, dr.debits_posted,
                    dr.credits_pending, dr.credits_posted,
                ),
                Balances(
                    cr.id, cr.debits_pending, cr.debits_posted,
                    cr.credits_pending - p.amount, cr.credits_posted,
                ),
                expiry_timestamp,
            )  # fmt: skip
            apply_event(state, expired)
            events.append(expired)
            self._reopen_after(state, p, expiry_timestamp, events)
        return BatchResult([], events, clock.next)

    # ---------------------------------------------------------------------------------------
    # Closing and settlement follow-ups.

    def _reopen_after(
        self, state: LedgerState, p: Transfer, timestamp: int, events: list[Event]
    ) -> None:
        """Voiding or expiring a closing transfer re-opens the account(s) it closed."""
        if p.flags & _CLOSING_DEBIT:
            self._change_closed(state, p.debit_account_id, False, timestamp, events)
        if p.flags & _CLOSING_CREDIT:
            self._change_closed(state, p.credit_account_id, False, timestamp, events)

    def _change_closed(
        self,
        state: LedgerState,
        account_id: int,
        closed: bool,
        timestamp: int,
        events: list[Event],
    ) -> None:
        current = state.get_account(account_id)
        assert current is not None
        if bool(current.flags & _CLOSED) == closed:
            return
        account = current.copy()
        account.flags = account.flags | _CLOSED if closed else account.flags & ~_CLOSED
        account.version += 1
        reason = ChangeReason.CLOSED_BY_TRANSFER if closed else ChangeReason.REOPENED
        changed = AccountChanged(reason, account, timestamp)
        apply_event(state, changed)
        events.append(changed)

    def _maybe_request_settlement(
        self,
        state: LedgerState,
        account_id: int,
        trigger_timestamp: int,
        events: list[Event],
        clock: _Clock,
    ) -> None:
        """Interledger's pre-emptive settlement, made safe: a pending transfer to the ledger's
        settlement account that a settlement engine posts (paid) or voids (failed: refunded)."""
        account = state.get_account(account_id)
        assert account is not None and account.settle_threshold is not None
        assert account.settle_to is not None
        balance = account.credits_posted - account.debits_posted
        if balance < account.settle_threshold or state.get_settlement(account_id):
            return
        amount = balance - account.settle_to
        if amount <= 0:
            return
        ledger = account.ledger
        settlement_id = self.config.settlement_account(ledger)
        settlement_account = state.get_account(settlement_id)
        if settlement_account is None:
            created = AccountCreated(
                Account(
                    settlement_id, ledger, self.config.settlement_account_code,
                    timestamp=clock.take(), policy=Policy.SYSTEM, version=1,
                )
            )  # fmt: skip
            apply_event(state, created)
            events.append(created)
        elif settlement_account.ledger != ledger:
            return  # misconfigured: the id belongs to another ledger's account
        transfer_id = _settlement_transfer_id(account_id, trigger_timestamp, self.config.partitions)
        request = Transfer(
            transfer_id,
            account_id,
            settlement_id,
            amount,
            ledger=ledger,
            code=self.config.settlement_transfer_code,
            flags=_PENDING,
        )
        # Generated ids are 128-bit hashes of a ledger-unique timestamp: no lookup by id (the
        # owner of that id is nobody this decision involves), as with UUIDs.
        timestamp = clock.take()
        status = self._single_or_pending(state, request, timestamp, events, clock)
        # A settlement that cannot be reserved now (pending debits hold the funds) is simply
        # not requested: the next credit that leaves the balance above threshold tries again.
        if status == _CREATED:
            requested = SettlementRequested(account_id, transfer_id, amount, balance, timestamp)
            apply_event(state, requested)
            events.append(requested)

    # ---------------------------------------------------------------------------------------
    # Account lifecycle commands (SPEC §3). Precedence: account_not_found,
    # account_version_mismatch, account_already_closed, then the command's own.

    def _lifecycle_precheck(
        self, state: LedgerState, account_id: int, expected_version: int
    ) -> tuple[AccountCommandStatus, Account | None]:
        account = state.get_account(account_id)
        if account is None:
            return AccountCommandStatus.ACCOUNT_NOT_FOUND, None
        if expected_version and expected_version != account.version:
            return AccountCommandStatus.ACCOUNT_VERSION_MISMATCH, account
        if account.flags & _CLOSED:
            return AccountCommandStatus.ACCOUNT_ALREADY_CLOSED, account
        return AccountCommandStatus.OK, account

    def _commit_change(
        self, state: LedgerState, account: Account, reason: str, timestamp: int
    ) -> AccountCommandResult:
        account.version += 1
        changed = AccountChanged(reason, account, timestamp)
        apply_event(state, changed)
        return AccountCommandResult(
            AccountCommandStatus.OK,
            account.version,
            [changed],
            timestamp + self.config.timestamp_step,
        )

    def _rejected(
        self, status: AccountCommandStatus, account: Account | None, timestamp: int
    ) -> AccountCommandResult:
        return AccountCommandResult(status, account.version if account else 0, [], timestamp)

    def freeze(
        self, state: LedgerState, account_id: int, timestamp: int, expected_version: int = 0
    ) -> AccountCommandResult:
        status, account = self._lifecycle_precheck(state, account_id, expected_version)
        if status or account is None:
            return self._rejected(status, account, timestamp)
        if account.frozen:
            return self._rejected(AccountCommandStatus.ACCOUNT_ALREADY_FROZEN, account, timestamp)
        changed = account.copy()
        changed.frozen = True
        return self._commit_change(state, changed, ChangeReason.FROZEN, timestamp)

    def unfreeze(
        self, state: LedgerState, account_id: int, timestamp: int, expected_version: int = 0
    ) -> AccountCommandResult:
        status, account = self._lifecycle_precheck(state, account_id, expected_version)
        if status or account is None:
            return self._rejected(status, account, timestamp)
        if not account.frozen:
            return self._rejected(AccountCommandStatus.ACCOUNT_NOT_FROZEN, account, timestamp)
        changed = account.copy()
        changed.frozen = False
        return self._commit_change(state, changed, ChangeReason.UNFROZEN, timestamp)

    def close(
        self, state: LedgerState, account_id: int, timestamp: int, expected_version: int = 0
    ) -> AccountCommandResult:
        status, account = self._lifecycle_precheck(state, account_id, expected_version)
        if status or account is None:
            return self._rejected(status, account, timestamp)
        if (
            account.credits_posted != account.debits_posted
            or account.debits_pending
            or account.credits_pending
        ):
            return self._rejected(AccountCommandStatus.ACCOUNT_NOT_EMPTY, account, timestamp)
        changed = account.copy()
        changed.flags |= _CLOSED
        changed.frozen = False
        return self._commit_change(state, changed, ChangeReason.CLOSED, timestamp)

    def update_settings(
        self,
        state: LedgerState,
        account_id: int,
        patch: UpdateSettings,
        timestamp: int,
        expected_version: int = 0,
    ) -> AccountCommandResult:
        status, account = self._lifecycle_precheck(state, account_id, expected_version)
        if status or account is None:
            return self._rejected(status, account, timestamp)
        settings = account.settings()
        if patch.policy is not UNSET:
            settings.policy = patch.policy
            if patch.min_balance is UNSET:
                # Setting the policy alone applies its preset minimum (capped keeps its floor).
                settings.min_balance = preset_min_balance(patch.policy, settings.min_balance)
        for name in ("min_balance", "max_balance", "settle_threshold", "settle_to", "link_type"):
            value = getattr(patch, name)
            if value is not UNSET:
                setattr(settings, name, value)
        if patch.metadata is not UNSET:
            settings.metadata = dict(patch.metadata) if patch.metadata is not None else {}
        invalid = validate_settings(settings, account.flags)
        if invalid:
            return self._rejected(AccountCommandStatus(invalid), account, timestamp)
        floor = 0 if account.flags & _D_LE_C else settings.min_balance
        ceiling = 0 if account.flags & _C_LE_D else settings.max_balance
        if (
            floor is not None
            and account.credits_posted - account.debits_posted - account.debits_pending < floor
        ) or (
            ceiling is not None
            and account.credits_posted + account.credits_pending - account.debits_posted > ceiling
        ):
            return self._rejected(
                AccountCommandStatus.SETTINGS_WOULD_VIOLATE_LIMITS, account, timestamp
            )
        changed = account.copy()
        changed.policy = settings.policy
        changed.min_balance = settings.min_balance
        changed.max_balance = settings.max_balance
        changed.settle_threshold = settings.settle_threshold
        changed.settle_to = settings.settle_to
        changed.link_type = settings.link_type
        changed.metadata = settings.metadata
        return self._commit_change(state, changed, ChangeReason.SETTINGS, timestamp)
