"""The audit's pure checks (projections.audit) over event logs the real rules produced.

A clean ledger history (the reference ledger's log, split among partitions as processors
log it: every event in the events partition of each owner of a key it writes) audits clean;
each kind of tampering is caught, naming the culprit and the log position.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.ledger import ReferenceLedger, event_owners
from projections.audit import (
    CommandRecord,
    EventAuditor,
    LogPosition,
    OrderedEvent,
    ResultRecord,
    Violation,
    check_results,
    order_events,
)
from schemas import (
    Account,
    AccountChanged,
    Balances,
    Event,
    Policy,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFailed,
    TransferFlags,
    TransferKind,
    UpdateSettings,
)

TOPIC = "t.events"
PEN = int(TransferFlags.PENDING)
POS = int(TransferFlags.POST_PENDING_TRANSFER)
VOI = int(TransferFlags.VOID_PENDING_TRANSFER)


def split(log: list[Event], partitions: int) -> list[tuple[LogPosition, list[Event]]]:
    """One message per event in each owner's partition, offsets counted per partition."""
    next_offset = [0] * partitions
    messages = []
    for event in log:
        for p in sorted(event_owners(event, partitions)):
            messages.append((LogPosition(TOPIC, p, next_offset[p]), [event]))
            next_offset[p] += 1
    return messages


def audit(messages: list[tuple[LogPosition, list[Event]]], partitions: int) -> list[Violation]:
    ordered, violations, _log_events = order_events(messages, partitions)
    auditor = EventAuditor()
    auditor.check_all(ordered)
    return [*violations, *auditor.finish()]


def history() -> ReferenceLedger:
    """Accounts with limits, a settlement threshold, pending transfers posted, voided and
    expired, a settings change and a freeze."""
    ledger = ReferenceLedger()
    ledger.create_accounts(
        [
            Account(1, ledger=1, code=1, policy=Policy.EXTERNAL),
            Account(2, ledger=1, code=1, policy=Policy.NO_OVERDRAFT),
            Account(3, ledger=1, code=1, max_balance=500),
            Account(4, ledger=1, code=1, settle_threshold=100, settle_to=10),
            Account(5, ledger=2, code=1),
            Account(6, ledger=2, code=1),
        ]
    )
    ledger.create_transfers(
        [
            Transfer(10, 1, 2, 300, ledger=1, code=1),
            Transfer(11, 2, 3, 100, ledger=1, code=1, flags=PEN),
            Transfer(12, 2, 3, 50, ledger=1, code=1, flags=PEN),
            Transfer(13, 2, 3, 20, ledger=1, code=1, flags=PEN, timeout=1),
            Transfer(14, 5, 6, 7, ledger=2, code=1),
        ]
    )
    ledger.create_transfers(
        [Transfer(15, pending_id=11, amount=60, flags=POS), Transfer(16, pending_id=12, flags=VOI)]
    )
    ledger.advance(2_000_000_000)  # transfer 13 expires
    ledger.create_transfers([Transfer(17, 1, 4, 150, ledger=1, code=1)])  # settlement of 140
    ledger.update_settings(3, UpdateSettings(max_balance=1_000))
    ledger.freeze(6)
    return ledger


def test_a_real_history_audits_clean_with_each_event_counted_once() -> None:
    log = history().log
    assert any(type(e) is SettlementRequested for e in log)
    assert any(type(e) is TransferApplied and e.kind is TransferKind.EXPIRE for e in log)
    for partitions in (1, 3, 8):
        messages = split(log, partitions)
        ordered, violations, log_events = order_events(messages, partitions)
        assert violations == []
        assert len(ordered) == len(log)
        assert log_events == sum(len(events) for _p, events in messages)
        assert audit(messages, partitions) == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), partitions=st.integers(1, 6))
def test_random_histories_audit_clean(seed: int, partitions: int) -> None:
    rng = random.Random(seed)
    ledger = ReferenceLedger()
    ledger.create_accounts(
        [Account(1, ledger=1, code=1, policy=Policy.EXTERNAL)]
        + [Account(a, ledger=1, code=1, policy=Policy.NO_OVERDRAFT) for a in range(2, 8)]
        + [Account(8, ledger=1, code=1, settle_threshold=50, settle_to=0)]
    )
    pending: list[int] = []
    for transfer_id in range(100, 160):
        debit, credit = rng.sample(range(1, 9), 2)
        roll = rng.random()
        if roll < 0.2 and pending:
            flags = rng.choice([POS, VOI])
            batch = [Transfer(transfer_id, pending_id=rng.choice(pending), flags=flags)]
        elif roll < 0.45:
            pending.append(transfer_id)
            batch = [
                Transfer(transfer_id, debit, credit, rng.randrange(1, 90), ledger=1, code=1,
                         flags=PEN, timeout=rng.choice([0, 1]))
            ]  # fmt: skip
        else:
            batch = [Transfer(transfer_id, debit, credit, rng.randrange(1, 90), ledger=1, code=1)]
        ledger.create_transfers(batch)
        if rng.random() < 0.1:
            ledger.advance(1_500_000_000)
    assert audit(split(ledger.log, partitions), partitions) == []


def only(violations: list[Violation], kind: str) -> Violation:
    found = [v for v in violations if v.kind == kind]
    assert found, violations
    return found[0]


def transfer_event(log: list[Event], transfer_id: int) -> TransferApplied:
    for event in log:
        if type(event) is TransferApplied and event.transfer.id == transfer_id:
            return event
    raise AssertionError(transfer_id)


def test_an_unbalanced_transfer_names_the_transfer_and_position() -> None:
    log = history().log
    event = transfer_event(log, 14)
    assert event.credit is not None
    event.credit.credits_posted += 1  # value created from nothing
    violations = audit(split(log, 1), 1)
    unbalanced = only(violations, "unbalanced_ledger")
    assert unbalanced.subject == "transfer 14"
    assert unbalanced.position == LogPosition(TOPIC, 0, log.index(event))
    assert only(violations, "balance_transition").subject == "account 6"


def balances_after(log: list[Event], account_id: int) -> Balances:
    """An account's balances after the whole log."""
    auditor = EventAuditor()
    auditor.check_all(OrderedEvent(event, LogPosition(TOPIC, 0, 0)) for event in log)
    return auditor.accounts[account_id].balances()


def test_a_limit_breach_names_the_account() -> None:
    log = history().log
    timestamp = log[-1].timestamp + 1
    debit, credit = balances_after(log, 2), balances_after(log, 1)
    # 2 (no_overdraft) pays 400 it does not have: balances consistent, the limit broken.
    debit.debits_posted += 400
    credit.credits_posted += 400
    breach = Transfer(90, 2, 1, 400, ledger=1, code=1, timestamp=timestamp)
    log.append(TransferApplied(TransferKind.SINGLE_PHASE, breach, 0, debit, credit, timestamp))
    violations = audit(split(log, 1), 1)
    assert [v.kind for v in violations] == ["limit_exceeded"]
    assert violations[0].subject == "account 2"
    assert violations[0].position == LogPosition(TOPIC, 0, len(log) - 1)
    assert "< min 0" in violations[0].detail


def test_limits_in_force_are_the_latest_version() -> None:
    ledger = ReferenceLedger()
    ledger.create_accounts(
        [Account(1, ledger=1, code=1), Account(2, ledger=1, code=1, max_balance=100)]
    )
    ledger.create_transfers([Transfer(10, 1, 2, 100, ledger=1, code=1)])
    log = ledger.log
    # A forged settings change lowering the ceiling below the balance.
    account = ledger.lookup_accounts([2])[0]
    account.max_balance, account.version = 50, 2
    log.append(AccountChanged("settings", account, ledger.now + 1))
    violations = audit(split(log, 1), 1)
    assert [(v.kind, v.subject) for v in violations] == [("limit_exceeded", "account 2")]


def test_a_version_gap_names_the_account() -> None:
    log = history().log
    changed = next(e for e in log if type(e) is AccountChanged)
    changed.account.version += 1
    violation = only(audit(split(log, 2), 2), "version_gap")
    assert violation.subject == f"account {changed.account.id}"
    assert "followed by" in violation.detail


def test_a_pending_transfer_resolved_twice() -> None:
    log = history().log
    post = transfer_event(log, 15)
    again = TransferApplied(
        TransferKind.VOID, Transfer(99, 2, 3, 0, pending_id=11, ledger=1, code=1,
                                    timestamp=post.timestamp + 1),
        0, post.debit, post.credit, post.timestamp + 1,
    )  # fmt: skip
    log.insert(log.index(post) + 1, again)
    violation = only(audit(split(log, 1), 1), "pending_resolved_twice")
    assert violation.subject == "transfer 11"
    assert violation.position == LogPosition(TOPIC, 0, log.index(again))


def test_a_transfer_id_with_two_outcomes() -> None:
    log = history().log
    first = transfer_event(log, 14)
    assert first.debit is not None and first.credit is not None
    # The same id burnt later by a transient failure: a second outcome.
    log.append(TransferFailed(14, 1, log[-1].timestamp + 1))
    violation = only(audit(split(log, 1), 1), "transfer_outcome_twice")
    assert violation.subject == "transfer 14"
    assert violation.position == LogPosition(TOPIC, 0, len(log) - 1)
    assert f"{TOPIC}[0]@{log.index(first)}" in violation.detail


def test_an_unjustified_settlement() -> None:
    log = history().log
    settlement = next(e for e in log if type(e) is SettlementRequested)
    settlement.amount += 1
    violation = only(audit(split(log, 1), 1), "unjustified_settlement")
    assert violation.subject == "account 4"
    assert "settle_to" in violation.detail
    # And a second request while the first is in flight.
    log = history().log
    settlement = next(e for e in log if type(e) is SettlementRequested)
    log.append(
        SettlementRequested(4, 12345, settlement.amount, settlement.balance, log[-1].timestamp + 1)
    )
    violation = only(audit(split(log, 1), 1), "unjustified_settlement")
    assert "still in flight" in violation.detail


def test_copies_of_events_across_partitions() -> None:
    log = history().log
    partitions = 4
    messages = split(log, partitions)
    cross = next(
        (i, m) for i, m in enumerate(messages) if len(event_owners(m[1][0], partitions)) > 1
    )
    index, (position, events) = cross
    del messages[index]  # lost from one owner
    assert only(audit(messages, partitions), "event_missing_from_owner").subject
    messages = split(log, partitions)
    messages.append((LogPosition(TOPIC, position.partition, 999), events))  # applied twice
    duplicate = only(audit(messages, partitions), "duplicate_event")
    assert duplicate.position == LogPosition(TOPIC, position.partition, 999)


def test_one_result_per_request() -> None:
    def at(topic: str, offset: int) -> LogPosition:
        return LogPosition(topic, 0, offset)

    commands = [
        CommandRecord(at("c", 0), ("alice", 1), ("alice", 1)),
        CommandRecord(at("c", 1), ("alice", 2), ("alice", 2)),
        CommandRecord(at("c", 2), None, ("bob", 3)),  # dead-lettered, rejected
        CommandRecord(at("c", 3), None, None),  # dead-lettered, nobody to tell
        CommandRecord(at("c", 4), ("bob", 4), None),
    ]
    results = [
        ResultRecord(at("r", 0), ("alice", 1)),
        ResultRecord(at("r", 1), ("alice", 2)),
        ResultRecord(at("r", 2), ("bob", 3)),
        ResultRecord(at("r", 3), ("bob", 4)),
    ]
    dead = ["c[0]@2", "c[0]@3"]
    assert check_results(commands, results, dead) == []
    # Two events, one result entry: the result count must equal the event count.
    counted = [CommandRecord(at("c", 0), ("alice", 1), None, 2)]
    (short,) = check_results(counted, [ResultRecord(at("r", 0), ("alice", 1), 1)], [])
    assert (short.kind, short.position) == ("result_count_mismatch", at("r", 0))
    rejected = [ResultRecord(at("r", 0), ("alice", 1), None)]  # refused whole: no entries
    assert check_results(counted, rejected, []) == []
    violations = check_results(commands, [*results[1:], results[3]], dead[:1])
    assert {(v.kind, v.subject, str(v.position)) for v in violations} == {
        ("missing_result", f"request alice/{1:032x}", "c[0]@0"),
        ("duplicate_result", f"request bob/{4:032x}", "c[0]@4"),
        ("undecodable_request_not_dead_lettered", "request ?", "c[0]@3"),
    }
