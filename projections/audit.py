"""The audit (SPEC §6): read the whole log and prove the books, naming every violation.

Two layers, so the checks are testable without Kafka:

- pure checks over decoded messages: `EventAuditor` folds the ledger's events in their global
  order (timestamp, then the order a decision emitted them) and checks every invariant at every
  event; `order_events` turns the per-partition logs into that order, counting each event once
  (an event sits in the events partition of every owner of a key it writes, `event_owners`) and
  checking the copies; `check_results` matches commands with results;
- `audit_log(bootstrap, topics, partitions)` reads the topics (committed data only) and runs
  them, returning an `AuditReport`.

What is checked, each violation naming the account, transfer or request and the log position
(topic, partition, offset) of the event or message that shows it:

- `balance_transition`: a side's balances after a transfer event differ from its balances
  before plus the event's effect (single-phase, pending, post, void, expire);
- `unbalanced_ledger`: per ledger, Σ debits_posted ≠ Σ credits_posted or Σ debits_pending ≠
  Σ credits_pending after an event (and at the end);
- `limit_exceeded`: an account's net balance beyond the limits in force (min_balance /
  max_balance, the TigerBeetle flags as min 0 / max 0): `credits_posted - debits_posted -
  debits_pending < min` or `credits_posted + credits_pending - debits_posted > max`;
- `version_gap`: an account created at a version other than 1, created twice, or changed to a
  version other than the previous + 1; `unknown_account`: an event about an account never
  created;
- `transfer_outcome_twice`: a transfer id created (or burnt by a transient failure) twice;
- `pending_resolved_twice`: a post, void or expiry of a pending transfer already resolved (or
  never pending: `unknown_pending`);
- `unjustified_settlement`: a settlement request whose account has no threshold, whose net
  posted balance is not the one the event names or is below the threshold, whose amount is not
  balance - settle_to, whose transfer is not a pending debit of that amount, or while another
  settlement of the account is in flight;
- `duplicate_event`, `event_missing_from_owner`, `event_in_foreign_partition`,
  `event_copies_differ`: the per-partition logs disagree about an event;
- `missing_result`, `duplicate_result`, `orphan_result`, `duplicate_request`,
  `result_count_mismatch` (a result batch without one entry per event of its request),
  `undecodable_request_not_dead_lettered`: a request on the commands topic (no `kind` header,
  or `kind: request`) without exactly one result on the results topic (matched by submitter and
  request id; a rejection is a result). Dead-lettered requests are counted apart: their result
  is the rejection the processor sends when the headers name the submitter, else none.

Memory: the audit keeps the accounts, the pending transfers and the log's event identities in
Python dicts, so it is sized for audits of test and staging ledgers (millions of events), not for
ten million accounts.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import Message

from processors.ledger import event_owners
from processors.service import KIND_HEADER, KIND_REQUEST, message_headers
from processors.setup import read_committed
from schemas import (
    Account,
    AccountChanged,
    AccountCreated,
    Balances,
    Event,
    SettlementRequested,
    TransferApplied,
    TransferFailed,
    TransferKind,
)
from schemas.codec import decode_command_batch, decode_event_batch, decode_result_batch
from schemas.topics import Topics

__all__ = [
    "AuditReport",
    "CommandRecord",
    "EventAuditor",
    "LogPosition",
    "OrderedEvent",
    "ResultRecord",
    "Violation",
    "audit_log",
    "check_results",
    "order_events",
    "read_event_logs",
]


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # e.g. "limit_exceeded" (the module docstring lists them)
    subject: str  # "account 17", "transfer 5", "ledger 1", "request alice/42"
    position: LogPosition | None  # where the log shows it (None: the log as a whole)
    detail: str

    def __str__(self) -> str:
        where = str(self.position) if self.position is not None else "end of log"
        return f"{self.kind}: {self.subject} at {where}: {self.detail}"


@dataclass
class AuditReport:
    violations: list[Violation] = field(default_factory=list)
    events: int = 0  # distinct ledger events
    log_events: int = 0  # events in the events topic, copies included
    commands: int = 0  # requests on the commands topic
    results: int = 0  # result batches on the results topic
    dead_letters: int = 0  # dead-lettered messages (counted apart)
    accounts: int = 0
    transfers: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        return {
            "events": self.events,
            "log_events": self.log_events,
            "commands": self.commands,
            "results": self.results,
            "dead_letters": self.dead_letters,
            "accounts": self.accounts,
            "transfers": self.transfers,
            "violations": len(self.violations),
        }


# ---------------------------------------------------------------------------------------------
# Events: their global order, each counted once


@dataclass(frozen=True, slots=True)
class OrderedEvent:
    event: Event
    position: LogPosition  # of the copy audited (the first in the global order)


def _identity(event: Event) -> tuple[object, ...]:
    """What makes an event the same event in every owner's log."""
    if type(event) is TransferApplied:
        return ("transfer", event.timestamp, int(event.kind), event.transfer.id)
    if type(event) is AccountCreated or type(event) is AccountChanged:
        return ("account", event.timestamp, event.account.id, event.account.version)
    if type(event) is SettlementRequested:
        return ("settlement", event.timestamp, event.account_id, event.transfer_id)
    assert type(event) is TransferFailed
    return ("failed", event.timestamp, event.transfer_id)


# Within one timestamp, the order a decision emits its events in: a closing transfer before the
# account change it causes, a settlement transfer before its request.
_RANK: Final = {
    AccountCreated: 0,
    TransferFailed: 1,
    TransferApplied: 2,
    AccountChanged: 3,
    SettlementRequested: 4,
}


def _subject(event: Event) -> str:
    if type(event) is TransferApplied:
        return f"transfer {event.transfer.id}"
    if type(event) is AccountCreated or type(event) is AccountChanged:
        return f"account {event.account.id}"
    if type(event) is SettlementRequested:
        return f"account {event.account_id}"
    assert type(event) is TransferFailed
    return f"transfer {event.transfer_id}"


def order_events(
    logs: Iterable[tuple[LogPosition, list[Event]]], partitions: int
) -> tuple[list[OrderedEvent], list[Violation], int]:
    """The distinct events of the messages (position, events) of every events partition, in
    their global order; with the violations of the copies and the number of log events."""
    violations: list[Violation] = []
    keyed: list[tuple[tuple[int, int, int, int, int], Event, LogPosition]] = []
    for position, events in logs:
        for index, event in enumerate(events):
            rank = _RANK[type(event)]
            key = (event.timestamp, rank, position.partition, position.offset, index)
            keyed.append((key, event, position))
    keyed.sort(key=lambda item: item[0])
    first: dict[tuple[object, ...], tuple[Event, LogPosition, set[int]]] = {}
    ordered: list[OrderedEvent] = []
    for _key, event, position in keyed:
        identity = _identity(event)
        owners = event_owners(event, partitions)
        if position.partition not in owners:
            violations.append(
                Violation(
                    "event_in_foreign_partition", _subject(event), position,
                    f"partition {position.partition} owns no key of it (owners {sorted(owners)})",
                )
            )  # fmt: skip
        seen = first.get(identity)
        if seen is None:
            first[identity] = (event, position, {position.partition})
            ordered.append(OrderedEvent(event, position))
            continue
        original, original_position, found_in = seen
        if position.partition in found_in:
            violations.append(
                Violation(
                    "duplicate_event", _subject(event), position,
                    f"the same event is already at {original_position}",
                )
            )  # fmt: skip
        elif event != original:
            violations.append(
                Violation(
                    "event_copies_differ", _subject(event), position,
                    f"differs from its copy at {original_position}",
                )
            )  # fmt: skip
        found_in.add(position.partition)
    for event, position, found_in in first.values():
        missing = event_owners(event, partitions) - found_in
        if missing:
            violations.append(
                Violation(
                    "event_missing_from_owner", _subject(event), position,
                    f"not in the events of its owner partition(s) {sorted(missing)}",
                )
            )  # fmt: skip
    return ordered, violations, len(keyed)


# ---------------------------------------------------------------------------------------------
# Events: the ledger's invariants at every event


_ZERO: Final = (0, 0, 0, 0)


def _effect(event: TransferApplied, debit_side: bool) -> tuple[int, int, int, int]:
    """(Δdebits_pending, Δdebits_posted, Δcredits_pending, Δcredits_posted) of one side."""
    amount = event.transfer.amount
    released = event.released
    kind = event.kind
    if kind is TransferKind.SINGLE_PHASE:
        return (0, amount, 0, 0) if debit_side else (0, 0, 0, amount)
    if kind is TransferKind.PENDING:
        return (amount, 0, 0, 0) if debit_side else (0, 0, amount, 0)
    if kind is TransferKind.POST:
        return (-released, amount, 0, 0) if debit_side else (0, 0, -released, amount)
    # void, expire: the reservation is released
    return (-released, 0, 0, 0) if debit_side else (0, 0, -released, 0)


class EventAuditor:
    """Folds events in their global order and checks the invariants at each one (pure)."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.accounts: dict[int, Account] = {}  # the record in force, balances current
        # Per ledger: [Σ debits_pending, Σ debits_posted, Σ credits_pending, Σ credits_posted]
        self.totals: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.pending: dict[int, bool] = {}  # pending transfer id -> still pending
        self.pending_amounts: dict[int, tuple[int, int]] = {}  # id -> (debit account, amount)
        self.in_flight: dict[int, int] = {}  # account -> its settlement's pending transfer
        self.outcomes: dict[int, LogPosition] = {}  # transfer id -> where it got its outcome
        self.transfers = 0
        self.events = 0

    def _violation(self, kind: str, subject: str, position: LogPosition, detail: str) -> None:
        self.violations.append(Violation(kind, subject, position, detail))

    def check(self, event: Event, position: LogPosition) -> None:
        self.events += 1
        kind = type(event)
        if kind is TransferApplied:
            self._transfer(event, position)  # type: ignore[arg-type]
        elif kind is AccountCreated:
            self._created(event, position)  # type: ignore[arg-type]
        elif kind is AccountChanged:
            self._changed(event, position)  # type: ignore[arg-type]
        elif kind is SettlementRequested:
            self._settlement(event, position)  # type: ignore[arg-type]
        elif kind is TransferFailed:  # burns the id: nothing to balance, but it is an outcome
            self._outcome(event.transfer_id, position)  # type: ignore[union-attr]

    def _outcome(self, transfer_id: int, position: LogPosition) -> None:
        first = self.outcomes.get(transfer_id)
        if first is not None:
            self._violation(
                "transfer_outcome_twice", f"transfer {transfer_id}", position,
                f"the id already had its outcome at {first}",
            )  # fmt: skip
        else:
            self.outcomes[transfer_id] = position

    def check_all(self, ordered: Iterable[OrderedEvent]) -> None:
        for item in ordered:
            self.check(item.event, item.position)

    # Accounts ---------------------------------------------------------------------------------

    def _created(self, event: AccountCreated, position: LogPosition) -> None:
        account = event.account
        subject = f"account {account.id}"
        if account.id in self.accounts:
            self._violation("version_gap", subject, position, "created a second time")
            return
        if account.version != 1:
            self._violation(
                "version_gap", subject, position, f"created at version {account.version}, not 1"
            )
        self.accounts[account.id] = account.copy()
        self._add_totals(account.ledger, account.balances(), 1)
        self._check_limits(self.accounts[account.id], position)

    def _changed(self, event: AccountChanged, position: LogPosition) -> None:
        account = event.account
        subject = f"account {account.id}"
        before = self.accounts.get(account.id)
        if before is None:
            self._violation("unknown_account", subject, position, f"{event.reason} before creation")
            return
        if account.version != before.version + 1:
            self._violation(
                "version_gap", subject, position,
                f"version {before.version} followed by {account.version} ({event.reason})",
            )  # fmt: skip
        # The record carries its balances as of the change: they must be the current ones.
        if account.balances() != before.balances():
            self._violation(
                "balance_transition", subject, position,
                f"{event.reason} changed the balances {_show(before.balances())} to "
                f"{_show(account.balances())}",
            )  # fmt: skip
            self._add_totals(before.ledger, before.balances(), -1)
            self._add_totals(account.ledger, account.balances(), 1)
        self.accounts[account.id] = account.copy()
        self._check_limits(self.accounts[account.id], position)

    # Transfers --------------------------------------------------------------------------------

    def _transfer(self, event: TransferApplied, position: LogPosition) -> None:
        transfer = event.transfer
        kind = event.kind
        subject = f"transfer {transfer.id}"
        if kind is not TransferKind.EXPIRE:  # expiry creates no transfer: no new id
            self.transfers += 1
            self._outcome(transfer.id, position)
        if kind is TransferKind.PENDING:
            self.pending[transfer.id] = True
            self.pending_amounts[transfer.id] = (transfer.debit_account_id, transfer.amount)
        elif kind is not TransferKind.SINGLE_PHASE:
            pending_id = transfer.id if kind is TransferKind.EXPIRE else transfer.pending_id
            still = self.pending.get(pending_id)
            if still is None:
                self._violation(
                    "unknown_pending", f"transfer {pending_id}", position,
                    f"{kind.name.lower()} of a transfer that was never pending",
                )  # fmt: skip
            elif not still:
                self._violation(
                    "pending_resolved_twice", f"transfer {pending_id}", position,
                    f"{kind.name.lower()} of a pending transfer already resolved",
                )  # fmt: skip
            self.pending[pending_id] = False
            # A settlement stops being in flight once its transfer is resolved either way.
            debit_account = transfer.debit_account_id
            if self.in_flight.get(debit_account) == pending_id:
                del self.in_flight[debit_account]
        ledgers = set()
        for side, debit_side in ((event.debit, True), (event.credit, False)):
            if side is None:
                continue
            account = self.accounts.get(side.account_id)
            if account is None:
                self._violation(
                    "unknown_account", f"account {side.account_id}", position,
                    f"{subject} moves the balances of an account never created",
                )  # fmt: skip
                continue
            before = account.balances()
            effect = _effect(event, debit_side)
            expected = Balances(
                side.account_id,
                *(value + delta for value, delta in zip(_values(before), effect, strict=True)),
            )
            if side != expected:
                self._violation(
                    "balance_transition", f"account {side.account_id}", position,
                    f"{subject} ({kind.name.lower()}) left {_show(side)}, expected "
                    f"{_show(expected)}",
                )  # fmt: skip
            self._add_totals(account.ledger, before, -1)
            self._add_totals(account.ledger, side, 1)
            (
                account.debits_pending, account.debits_posted,
                account.credits_pending, account.credits_posted,
            ) = _values(side)  # fmt: skip
            self._check_limits(account, position)
            ledgers.add(account.ledger)
        for ledger in sorted(ledgers):
            self._check_totals(ledger, subject, position)

    # Settlement -------------------------------------------------------------------------------

    def _settlement(self, event: SettlementRequested, position: LogPosition) -> None:
        subject = f"account {event.account_id}"
        account = self.accounts.get(event.account_id)
        if account is None:
            self._violation("unknown_account", subject, position, "settlement before creation")
            return
        problems = []
        balance = account.credits_posted - account.debits_posted
        threshold, settle_to = account.settle_threshold, account.settle_to
        if threshold is None or settle_to is None:
            problems.append("the account has no settle_threshold")
        else:
            if event.balance != balance:
                problems.append(f"names balance {event.balance}, the account's is {balance}")
            if balance < threshold:
                problems.append(f"balance {balance} is below the threshold {threshold}")
            if event.amount != balance - settle_to or event.amount <= 0:
                problems.append(
                    f"amount {event.amount} is not balance {balance} - settle_to {settle_to}"
                )
        pending = self.pending_amounts.get(event.transfer_id)
        if pending != (event.account_id, event.amount) or not self.pending.get(event.transfer_id):
            problems.append(
                f"transfer {event.transfer_id} is not a pending debit of {event.amount} "
                "from the account"
            )
        other = self.in_flight.get(event.account_id)
        if other is not None and other != event.transfer_id:
            problems.append(f"settlement transfer {other} is still in flight")
        if problems:
            self._violation("unjustified_settlement", subject, position, "; ".join(problems))
        self.in_flight[event.account_id] = event.transfer_id

    # Invariants -------------------------------------------------------------------------------

    def _add_totals(self, ledger: int, b: Balances, sign: int) -> None:
        totals = self.totals[ledger]
        totals[0] += sign * b.debits_pending
        totals[1] += sign * b.debits_posted
        totals[2] += sign * b.credits_pending
        totals[3] += sign * b.credits_posted

    def _check_totals(self, ledger: int, subject: str, position: LogPosition | None) -> bool:
        dp, dpo, cp, cpo = self.totals[ledger]
        if dp == cp and dpo == cpo:
            return True
        self.violations.append(
            Violation(
                "unbalanced_ledger", subject, position,
                f"ledger {ledger}: debits_posted {dpo} vs credits_posted {cpo}, "
                f"debits_pending {dp} vs credits_pending {cp}",
            )
        )  # fmt: skip
        return False

    def _check_limits(self, account: Account, position: LogPosition) -> None:
        floor, ceiling = account.min_limit, account.max_limit
        available = account.credits_posted - account.debits_posted - account.debits_pending
        upper = account.credits_posted + account.credits_pending - account.debits_posted
        if floor is not None and available < floor:
            self._violation(
                "limit_exceeded", f"account {account.id}", position,
                f"credits_posted - debits_posted - debits_pending = {available} < min {floor}",
            )  # fmt: skip
        if ceiling is not None and upper > ceiling:
            self._violation(
                "limit_exceeded", f"account {account.id}", position,
                f"credits_posted + credits_pending - debits_posted = {upper} > max {ceiling}",
            )  # fmt: skip

    def finish(self) -> list[Violation]:
        """The end-of-log checks (the per-ledger sums); returns every violation found."""
        for ledger in sorted(self.totals):
            self._check_totals(ledger, f"ledger {ledger}", None)
        return self.violations


def _values(b: Balances) -> tuple[int, int, int, int]:
    return b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted


def _show(b: Balances) -> str:
    dp, dpo, cp, cpo = _values(b)
    return f"(dp {dp}, dpo {dpo}, cp {cp}, cpo {cpo})"


# ---------------------------------------------------------------------------------------------
# Commands and results


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A request on the commands topic: its key, or None if undecodable (dead-lettered)."""

    position: LogPosition
    key: tuple[str, int] | None  # (submitter, request_id)
    header_key: tuple[str, int] | None  # the same from its headers, if they name it
    events: int = 0  # accounts, transfers, or 1 for an account command: results expected


@dataclass(frozen=True, slots=True)
class ResultRecord:
    position: LogPosition
    key: tuple[str, int]
    entries: int | None = None  # results in the batch; None for a rejection of the whole


def check_results(
    commands: Sequence[CommandRecord],
    results: Sequence[ResultRecord],
    dead_lettered: Iterable[str],
) -> list[Violation]:
    """Exactly one result per request (pure). `dead_lettered`: the `source` of every dead
    letter (`topic[partition]@offset`, as processors.service writes it)."""
    violations: list[Violation] = []
    dead = set(dead_lettered)
    found: dict[tuple[str, int], list[ResultRecord]] = defaultdict(list)
    for result in results:
        found[result.key].append(result)
    expected: dict[tuple[str, int], CommandRecord] = {}
    for command in commands:
        key = command.key
        if key is None:
            if str(command.position) not in dead:
                violations.append(
                    Violation(
                        "undecodable_request_not_dead_lettered", "request ?", command.position,
                        "an undecodable request is not in the dead-letter topic",
                    )
                )  # fmt: skip
            key = command.header_key  # its rejection, when the headers name the submitter
            if key is None:
                continue
        if key in expected:
            violations.append(
                Violation(
                    "duplicate_request", _request(key), command.position,
                    f"the same request is already at {expected[key].position}",
                )
            )  # fmt: skip
            continue
        expected[key] = command
    for key, command in expected.items():
        got = found.get(key, [])
        if not got:
            violations.append(
                Violation("missing_result", _request(key), command.position, "no result")
            )
        elif len(got) > 1:
            where = ", ".join(str(r.position) for r in got)
            violations.append(
                Violation(
                    "duplicate_result", _request(key), command.position,
                    f"{len(got)} results: {where}",
                )
            )  # fmt: skip
        elif command.key is not None and got[0].entries not in (None, command.events):
            violations.append(
                Violation(
                    "result_count_mismatch", _request(key), got[0].position,
                    f"{got[0].entries} results for {command.events} events",
                )
            )  # fmt: skip
    for key, got in found.items():
        if key not in expected:
            violations.append(
                Violation("orphan_result", _request(key), got[0].position, "no such request")
            )
    return violations


def _request(key: tuple[str, int]) -> str:
    return f"request {key[0]}/{key[1]:032x}"


# ---------------------------------------------------------------------------------------------
# Reading the log


def _positioned(message: Message) -> LogPosition:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return LogPosition(topic, partition, offset)


def read_event_logs(
    bootstrap: str, topics: Topics, partitions: int
) -> Iterator[tuple[LogPosition, list[Event]]]:
    """(position, events) of every committed message of every events partition."""
    for partition in range(partitions):
        for message in read_committed(bootstrap, topics.events, partition, 0):
            yield _positioned(message), decode_event_batch(message.value() or b"").events


def _read_commands(bootstrap: str, topics: Topics, partitions: int) -> list[CommandRecord]:
    records = []
    for partition in range(partitions):
        for message in read_committed(bootstrap, topics.commands, partition, 0):
            headers = message_headers(message)
            if headers.get(KIND_HEADER, KIND_REQUEST) != KIND_REQUEST:
                continue  # facts, applies, clock control: the processors' own messages
            header_key = None
            with contextlib.suppress(KeyError, ValueError, UnicodeDecodeError):
                header_key = (headers["submitter"].decode(), int(headers["request-id"].decode()))
            try:
                batch = decode_command_batch(message.value() or b"")
            except ValueError:  # DecodeError: what the processor dead-letters
                records.append(CommandRecord(_positioned(message), None, header_key))
                continue
            events = (
                len(batch.accounts) + len(batch.transfers) + (batch.account_command is not None)
            )
            key = (batch.submitter, batch.request_id)
            records.append(CommandRecord(_positioned(message), key, header_key, events))
    return records


def _read_results(bootstrap: str, topics: Topics, partitions: int) -> list[ResultRecord]:
    records = []
    for partition in range(partitions):
        for message in read_committed(bootstrap, topics.results, partition, 0):
            batch = decode_result_batch(message.value() or b"")
            entries = None if batch.rejection is not None else len(batch.results)
            key = (batch.submitter, batch.request_id)
            records.append(ResultRecord(_positioned(message), key, entries))
    return records


def _read_dead_letters(bootstrap: str, topics: Topics) -> list[str]:
    return [
        message_headers(message).get("source", b"").decode(errors="replace")
        for message in read_committed(bootstrap, topics.dead_letters, 0, 0)
    ]


def audit_log(
    bootstrap: str, topics: Topics, partitions: int, settle_timeout_s: float = 10.0
) -> AuditReport:
    """Read the whole log of the ledger under `topics` and check every invariant.

    Work in flight looks like two violations: a request whose result is not written yet
    (`missing_result`), and a cross-partition event not yet in every owner's log
    (`event_missing_from_owner`: participants fold a decision in later transactions). When
    those are all the audit finds, it reads the log again, until `settle_timeout_s`; what
    remains then is reported."""
    deadline = time.monotonic() + settle_timeout_s
    while True:
        report = _audit_once(bootstrap, topics, partitions)
        in_flight_only = all(v.kind in _IN_FLIGHT_KINDS for v in report.violations)
        if report.ok or not in_flight_only or time.monotonic() >= deadline:
            return report
        time.sleep(_SETTLE_PAUSE_S)


_IN_FLIGHT_KINDS: Final = frozenset({"missing_result", "event_missing_from_owner"})
_SETTLE_PAUSE_S: Final = 0.5


def _audit_once(bootstrap: str, topics: Topics, partitions: int) -> AuditReport:
    ordered, violations, log_events = order_events(
        read_event_logs(bootstrap, topics, partitions), partitions
    )
    auditor = EventAuditor()
    auditor.check_all(ordered)
    commands = _read_commands(bootstrap, topics, partitions)
    results = _read_results(bootstrap, topics, partitions)
    dead_letters = _read_dead_letters(bootstrap, topics)
    report = AuditReport(
        violations=[
            *violations,
            *auditor.finish(),
            *check_results(commands, results, dead_letters),
        ],
        events=auditor.events,
        log_events=log_events,
        commands=len(commands),
        results=len(results),
        dead_letters=len(dead_letters),
        accounts=len(auditor.accounts),
        transfers=auditor.transfers,
    )
    return report
