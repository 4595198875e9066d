"""Focused tests of the SPEC §3-§4 extensions and of precedence corner cases."""

from __future__ import annotations

import pytest

from processors.ledger import (
    SETTLEMENT_ACCOUNT_BASE,
    Asset,
    BatchTooLarge,
    LedgerConfig,
    MemoryState,
    ReferenceLedger,
    apply_events,
)
from schemas import (
    BATCH_EVENTS_MAX,
    Account,
    AccountChanged,
    AccountCommandStatus,
    AccountFlags,
    CreateTransferStatus,
    PendingStatus,
    Policy,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFlags,
    TransferKind,
    UpdateSettings,
)
from tests.core.invariants import assert_same_state

T = CreateTransferStatus
C = AccountCommandStatus
PEN = int(TransferFlags.PENDING)
POS = int(TransferFlags.POST_PENDING_TRANSFER)
VOI = int(TransferFlags.VOID_PENDING_TRANSFER)
SECOND = 1_000_000_000
_ids = iter(range(1000, 10**9))


def setup(*accounts: Account, config: LedgerConfig | None = None) -> ReferenceLedger:
    """A ledger with an external source account 99 (ledger 1) and the given accounts."""
    ledger = ReferenceLedger(config)
    batch = [Account(99, ledger=1, code=1, policy=Policy.EXTERNAL), *accounts]
    assert {r.status.name for r in ledger.create_accounts(batch)} == {"CREATED"}  # type: ignore[attr-defined]
    return ledger


def move(
    ledger: ReferenceLedger, dr: int, cr: int, amount: int, flags: int = 0, **kw: int
) -> CreateTransferStatus:
    resolving = flags & (POS | VOI)
    kw.setdefault("ledger", 0 if resolving else 1)  # post/void inherit ledger and code
    kw.setdefault("code", 0 if resolving else 1)
    t = Transfer(
        kw.pop("id", next(_ids)), debit_account_id=dr, credit_account_id=cr, amount=amount,
        flags=flags, **kw,
    )  # fmt: skip
    return ledger.create_transfers([t])[0].status  # type: ignore[return-value]


def account(ledger: ReferenceLedger, account_id: int) -> Account:
    return ledger.lookup_accounts([account_id])[0]


# --- Limits and policies -------------------------------------------------------------------


def test_no_overdraft_keeps_the_balance_at_or_above_zero() -> None:
    ledger = setup(Account(1, ledger=1, code=1, policy=Policy.NO_OVERDRAFT))
    assert account(ledger, 1).min_balance == 0  # the preset
    assert move(ledger, 99, 1, 10) == T.CREATED
    assert move(ledger, 1, 99, 11) == T.EXCEEDS_CREDITS
    assert move(ledger, 1, 99, 10) == T.CREATED
    assert account(ledger, 1).ledger_balance == 0


def test_capped_overdraft_stops_at_the_floor() -> None:
    ledger = setup(Account(1, ledger=1, code=1, policy=Policy.CAPPED_OVERDRAFT, min_balance=-50))
    assert move(ledger, 1, 99, 50) == T.CREATED
    assert move(ledger, 1, 99, 1) == T.EXCEEDS_CREDITS
    assert account(ledger, 1).ledger_balance == -50


@pytest.mark.parametrize(
    "policy", [Policy.UNCAPPED_OVERDRAFT, Policy.SYSTEM, Policy.EXTERNAL, None]
)
def test_unbounded_policies_go_negative(policy: Policy | None) -> None:
    ledger = setup(Account(1, ledger=1, code=1, policy=policy))
    assert move(ledger, 1, 99, 10**30) == T.CREATED
    assert account(ledger, 1).ledger_balance == -(10**30)


def test_pending_debits_count_against_the_floor_pending_credits_do_not_help() -> None:
    ledger = setup(Account(1, ledger=1, code=1, min_balance=-10))
    assert move(ledger, 99, 1, 5, PEN) == T.CREATED  # a pending credit: not available
    assert move(ledger, 1, 99, 8, PEN) == T.CREATED  # reserves 8 of the 10 of overdraft
    assert move(ledger, 1, 99, 3) == T.EXCEEDS_CREDITS
    assert move(ledger, 1, 99, 2) == T.CREATED
    a = account(ledger, 1)
    assert (a.ledger_balance, a.available_balance) == (-2, -10)


def test_max_balance_limits_credits_including_pending_ones() -> None:
    ledger = setup(Account(1, ledger=1, code=1, max_balance=100))
    assert move(ledger, 99, 1, 60, PEN) == T.CREATED
    assert move(ledger, 99, 1, 41) == T.EXCEEDS_DEBITS
    assert move(ledger, 99, 1, 40) == T.CREATED


def test_ledger_and_available_balances() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    move(ledger, 99, 1, 100)
    move(ledger, 1, 99, 30, PEN)
    move(ledger, 99, 1, 7, PEN)
    a = account(ledger, 1)
    assert a.ledger_balance == 100  # includes the value reserved by the in-flight debit
    assert a.available_balance == 70  # excludes it; the pending credit is in neither


def test_asset_per_ledger_from_configuration() -> None:
    config = LedgerConfig(assets={1: Asset("USD", 2)})
    assert config.asset(1) == Asset("USD", 2)
    assert config.asset(7) == Asset("XXX", 0)  # ISO 4217 "no currency" until configured


# --- Settlement ----------------------------------------------------------------------------


def settling() -> ReferenceLedger:
    return setup(Account(1, ledger=1, code=1, settle_threshold=100, settle_to=20))


def requests(ledger: ReferenceLedger) -> list[SettlementRequested]:
    return [e for e in ledger.log if isinstance(e, SettlementRequested)]


def test_settlement_requested_at_threshold_for_net_minus_settle_to() -> None:
    ledger = settling()
    assert move(ledger, 99, 1, 99) == T.CREATED
    assert requests(ledger) == []
    assert move(ledger, 99, 1, 31) == T.CREATED
    (request,) = requests(ledger)
    assert (request.account_id, request.amount, request.balance) == (1, 110, 130)
    settlement_id = SETTLEMENT_ACCOUNT_BASE + 1
    held = ledger.lookup_transfers([request.transfer_id])[0]
    assert (held.debit_account_id, held.credit_account_id, held.amount) == (1, settlement_id, 110)
    assert held.flags & PEN
    settlement_account = account(ledger, settlement_id)
    assert settlement_account.policy is Policy.SYSTEM
    assert account(ledger, 1).available_balance == 20


def test_never_two_settlements_in_flight_and_post_completes_it() -> None:
    ledger = settling()
    move(ledger, 99, 1, 150)
    move(ledger, 99, 1, 150)
    (request,) = requests(ledger)
    assert move(ledger, 0, 0, request.amount, POS, pending_id=request.transfer_id) == T.CREATED
    assert account(ledger, 1).ledger_balance == 20 + 150
    move(ledger, 99, 1, 1)  # the next credit above threshold starts the next settlement
    assert len(requests(ledger)) == 2
    assert requests(ledger)[1].amount == 151


def test_a_failed_settlement_is_voided_and_refunded() -> None:
    ledger = settling()
    move(ledger, 99, 1, 120)
    (request,) = requests(ledger)
    assert move(ledger, 0, 0, 0, VOI, pending_id=request.transfer_id) == T.CREATED
    a = account(ledger, 1)
    assert (a.ledger_balance, a.available_balance, a.debits_pending) == (120, 120, 0)
    assert ledger.state.get_settlement(1) == 0


def test_pending_credits_do_not_trigger_settlement() -> None:
    ledger = settling()
    move(ledger, 99, 1, 500, PEN)
    assert requests(ledger) == []


def test_settlement_inside_a_failed_chain_is_rolled_back() -> None:
    ledger = settling()
    chain = [
        Transfer(1, debit_account_id=99, credit_account_id=1, amount=200, ledger=1, code=1,
                 flags=1),
        Transfer(2, debit_account_id=99, credit_account_id=77, amount=1, ledger=1, code=1),
    ]  # fmt: skip
    statuses = [r.status for r in ledger.create_transfers(chain)]
    assert statuses == [T.LINKED_EVENT_FAILED, T.CREDIT_ACCOUNT_NOT_FOUND]
    assert requests(ledger) == []
    assert ledger.lookup_accounts([SETTLEMENT_ACCOUNT_BASE + 1]) == []


def test_settlement_account_is_configurable() -> None:
    ledger = setup(
        Account(1, ledger=1, code=1, settle_threshold=10, settle_to=0),
        Account(5, ledger=1, code=9, policy=Policy.SYSTEM),
        config=LedgerConfig(settlement_accounts={1: 5}),
    )
    move(ledger, 99, 1, 10)
    (request,) = requests(ledger)
    assert ledger.lookup_transfers([request.transfer_id])[0].credit_account_id == 5


# --- Versions and lifecycle ----------------------------------------------------------------


def test_versions_count_record_changes_not_balance_moves() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    move(ledger, 99, 1, 5)
    assert account(ledger, 1).version == 1
    assert ledger.freeze(1).version == 2
    assert ledger.unfreeze(1, expected_version=2).version == 3
    assert ledger.update_settings(1, UpdateSettings(link_type="http")).version == 4
    move(ledger, 1, 99, 5)
    assert ledger.close(1, expected_version=4).version == 5
    history = [e.account.version for e in ledger.log
               if isinstance(e, AccountChanged) and e.account.id == 1]  # fmt: skip
    assert history == [2, 3, 4, 5]


def test_version_mismatch_changes_nothing() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    before = list(ledger.log)
    result = ledger.freeze(1, expected_version=7)
    assert (result.status, result.version) == (C.ACCOUNT_VERSION_MISMATCH, 1)
    assert ledger.log == before and not account(ledger, 1).frozen


def test_closing_transfer_bumps_version_and_void_reopens() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    assert move(ledger, 1, 99, 0, PEN | int(TransferFlags.CLOSING_DEBIT), id=7) == T.CREATED
    a = account(ledger, 1)
    assert (a.closed, a.version) == (True, 2)
    assert move(ledger, 1, 99, 1) == T.DEBIT_ACCOUNT_ALREADY_CLOSED
    assert move(ledger, 0, 0, 0, POS, pending_id=7) == T.DEBIT_ACCOUNT_ALREADY_CLOSED
    assert move(ledger, 0, 0, 0, VOI, pending_id=7) == T.CREATED
    a = account(ledger, 1)
    assert (a.closed, a.version) == (False, 3)


def test_expiry_of_a_closing_transfer_reopens() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    flags = PEN | int(TransferFlags.CLOSING_CREDIT)
    assert move(ledger, 99, 1, 5, flags, id=7, timeout=1) == T.CREATED
    assert account(ledger, 1).closed
    ledger.advance(2 * SECOND)
    assert not account(ledger, 1).closed
    assert ledger.state.get_pending_status(7) is PendingStatus.EXPIRED
    expiry = [e for e in ledger.log if isinstance(e, TransferApplied)][-1]
    assert expiry.kind is TransferKind.EXPIRE and expiry.timestamp > 2 * SECOND


def test_close_requires_an_empty_account_and_is_permanent() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    move(ledger, 99, 1, 5, PEN, id=3)
    assert ledger.close(1).status == C.ACCOUNT_NOT_EMPTY  # a pending credit
    move(ledger, 0, 0, 0, VOI, pending_id=3)
    assert ledger.freeze(1).status == C.OK
    assert ledger.close(1).status == C.OK
    a = account(ledger, 1)
    assert a.closed and not a.frozen
    assert move(ledger, 99, 1, 1) == T.CREDIT_ACCOUNT_ALREADY_CLOSED
    assert ledger.unfreeze(1).status == C.ACCOUNT_ALREADY_CLOSED


def test_update_settings_replace_clear_and_preset() -> None:
    ledger = setup(Account(1, ledger=1, code=1, link_type="http", metadata={"a": "1", "b": "2"}))
    move(ledger, 99, 1, 50)
    assert ledger.update_settings(1, UpdateSettings(metadata={"c": "3"})).status == C.OK
    assert account(ledger, 1).metadata == {"c": "3"}  # replaced whole
    assert ledger.update_settings(1, UpdateSettings(link_type=None)).status == C.OK
    assert account(ledger, 1).link_type is None  # null clears
    assert ledger.update_settings(1, UpdateSettings(policy=Policy.NO_OVERDRAFT)).status == C.OK
    assert account(ledger, 1).min_balance == 0  # policy alone applies its preset
    assert move(ledger, 1, 99, 51) == T.EXCEEDS_CREDITS
    assert ledger.update_settings(1, UpdateSettings(max_balance=49)).status == (
        C.SETTINGS_WOULD_VIOLATE_LIMITS
    )
    assert account(ledger, 1).max_balance is None  # rejected: nothing changed


# --- Frozen accounts and version pins ------------------------------------------------------


def test_frozen_rejects_new_transfers_and_posts_but_allows_voids_and_expiry() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    move(ledger, 99, 1, 50)
    move(ledger, 1, 99, 10, PEN, id=5)
    move(ledger, 1, 99, 10, PEN, id=6, timeout=1)
    move(ledger, 1, 99, 10, PEN, id=8)
    ledger.freeze(1)
    assert move(ledger, 1, 99, 1) == T.DEBIT_ACCOUNT_FROZEN
    assert move(ledger, 99, 1, 1, PEN) == T.CREDIT_ACCOUNT_FROZEN
    assert move(ledger, 0, 0, 10, POS, pending_id=5) == T.DEBIT_ACCOUNT_FROZEN
    assert move(ledger, 0, 0, 0, VOI, pending_id=8) == T.CREATED
    ledger.advance(2 * SECOND)
    assert account(ledger, 1).debits_pending == 10  # only 5 is left, 6 expired
    ledger.unfreeze(1)
    assert move(ledger, 0, 0, 10, POS, pending_id=5) == T.CREATED


def test_frozen_and_pins_burn_the_id() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    ledger.freeze(1)
    assert move(ledger, 99, 1, 1, id=40) == T.CREDIT_ACCOUNT_FROZEN
    ledger.unfreeze(1)
    assert move(ledger, 99, 1, 1, id=40) == T.ID_ALREADY_FAILED
    assert move(ledger, 99, 1, 1, id=41, credit_account_version=1) == (
        T.CREDIT_ACCOUNT_VERSION_MISMATCH
    )
    assert move(ledger, 99, 1, 1, id=41) == T.ID_ALREADY_FAILED
    assert move(ledger, 99, 1, 1, id=42, credit_account_version=3) == T.CREATED


# --- Precedence across both sides ----------------------------------------------------------


def test_closed_debit_with_missing_credit_is_credit_account_not_found() -> None:
    ledger = setup(Account(1, ledger=1, code=1, flags=int(AccountFlags.CLOSED)))
    assert move(ledger, 1, 77, 1) == T.CREDIT_ACCOUNT_NOT_FOUND


def test_closed_outranks_frozen_and_pins_outrank_closed() -> None:
    ledger = setup(Account(1, ledger=1, code=1), Account(2, ledger=1, code=1))
    ledger.freeze(2)
    move(ledger, 1, 99, 0, PEN | int(TransferFlags.CLOSING_DEBIT))
    assert move(ledger, 1, 2, 1) == T.DEBIT_ACCOUNT_ALREADY_CLOSED
    assert move(ledger, 1, 2, 1, debit_account_version=1) == T.DEBIT_ACCOUNT_VERSION_MISMATCH


def test_balancing_uses_both_sides() -> None:
    ledger = setup(
        Account(1, ledger=1, code=1),
        Account(2, ledger=1, code=1, flags=int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)),
    )
    move(ledger, 99, 1, 30)
    move(ledger, 2, 99, 12)
    both = PEN | int(TransferFlags.BALANCING_DEBIT | TransferFlags.BALANCING_CREDIT)
    assert move(ledger, 1, 2, 1000, both, id=70) == T.CREATED
    assert ledger.lookup_transfers([70])[0].amount == 12


# --- Batches and replay --------------------------------------------------------------------


def test_batches_above_the_limit_are_refused_whole() -> None:
    ledger = setup()
    too_many = [Transfer(i + 1, debit_account_id=99, credit_account_id=98, amount=1, ledger=1,
                         code=1) for i in range(BATCH_EVENTS_MAX + 1)]  # fmt: skip
    with pytest.raises(BatchTooLarge, match="8190 events"):
        ledger.create_transfers(too_many)
    assert ledger.lookup_transfers([1]) == []


def test_replay_reproduces_expiry_without_a_clock() -> None:
    ledger = setup(Account(1, ledger=1, code=1))
    move(ledger, 99, 1, 5, PEN, timeout=1)
    ledger.advance(5 * SECOND)
    rebuilt = MemoryState()
    apply_events(rebuilt, ledger.log)
    assert isinstance(ledger.state, MemoryState)
    assert_same_state(rebuilt, ledger.state)
