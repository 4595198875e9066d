"""Checks of the SPEC §3-§4 invariants over a ledger's state and event log (test helpers)."""

from __future__ import annotations

from collections import Counter, defaultdict

from processors.ledger import MemoryState, apply_events
from schemas import (
    AccountChanged,
    AccountCreated,
    Event,
    SettlementRequested,
    TransferApplied,
    TransferKind,
)


def assert_balanced(state: MemoryState) -> None:
    """Per ledger: Σ debits_posted = Σ credits_posted and Σ debits_pending = Σ credits_pending."""
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account in state.accounts.values():
        total = sums[account.ledger]
        total[0] += account.debits_pending
        total[1] += account.debits_posted
        total[2] += account.credits_pending
        total[3] += account.credits_posted
    for ledger, (dp, dpo, cp, cpo) in sums.items():
        assert dpo == cpo, f"ledger {ledger}: debits_posted {dpo} != credits_posted {cpo}"
        assert dp == cp, f"ledger {ledger}: debits_pending {dp} != credits_pending {cp}"


def assert_within_limits(state: MemoryState) -> None:
    for account in state.accounts.values():
        floor = account.min_limit
        if floor is not None:
            available = account.credits_posted - account.debits_posted - account.debits_pending
            assert available >= floor, f"account {account.id}: {available} below {floor}"
        ceiling = account.max_limit
        if ceiling is not None:
            high = account.credits_posted + account.credits_pending - account.debits_posted
            assert high <= ceiling, f"account {account.id}: {high} above {ceiling}"
        assert (
            min(
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            )
            >= 0
        ), account


def assert_log_consistent(log: list[Event], state: MemoryState) -> None:
    """Versions contiguous from 1; each pending transfer resolved at most once; settlements
    justified and never two in flight per account."""
    versions: dict[int, int] = {}
    for event in log:
        if isinstance(event, AccountCreated):
            assert event.account.version == 1
            versions[event.account.id] = 1
        elif isinstance(event, AccountChanged):
            assert event.account.version == versions[event.account.id] + 1, event
            versions[event.account.id] = event.account.version
    for account_id, version in versions.items():
        assert state.accounts[account_id].version == version

    resolutions = Counter(
        event.transfer.id if event.kind is TransferKind.EXPIRE else event.transfer.pending_id
        for event in log
        if isinstance(event, TransferApplied)
        and event.kind in (TransferKind.POST, TransferKind.VOID, TransferKind.EXPIRE)
    )
    assert not resolutions or max(resolutions.values()) == 1, resolutions.most_common(3)

    # Fold the log step by step: each settlement request must match the state it came from.
    folded = MemoryState()
    for event in log:
        if isinstance(event, SettlementRequested):
            assert folded.get_settlement(event.account_id) == 0, "two settlements in flight"
        apply_events(folded, [event])
        if isinstance(event, SettlementRequested):
            account = folded.accounts[event.account_id]
            assert account.settle_threshold is not None and account.settle_to is not None
            net = account.credits_posted - account.debits_posted
            assert event.balance == net, (event, net)
            assert net >= account.settle_threshold, (event, account.settle_threshold)
            assert event.amount == net - account.settle_to, event
            held = folded.transfers[event.transfer_id]
            assert held.amount == event.amount and held.debit_account_id == event.account_id


def replay(log: list[Event]) -> MemoryState:
    state = MemoryState()
    apply_events(state, log)
    return state


def assert_same_state(actual: MemoryState, expected: MemoryState) -> None:
    assert actual.accounts == expected.accounts
    assert actual.transfers == expected.transfers
    assert actual.pending == expected.pending
    assert actual.failed == expected.failed
    assert actual.settlements == expected.settlements
    assert actual._expiry_live == expected._expiry_live
