"""What the owner of one commands partition decides: the protocol of docs/PIPELINE.md, without
Kafka. Inputs are method calls (a request arrived, a sequence entry was read, facts or an apply
arrived, time passed); outputs accumulate in an `Outbox` the Kafka service writes in one
transaction. Deterministic given its inputs, so it runs the same in the service, in recovery and
in the in-memory protocol simulation the tests drive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from processors.ledger import (
    BatchTooLarge,
    Ledger,
    LedgerConfig,
    PartitionOwnership,
    Scope,
    apply_event,
    event_owners,
)
from processors.ledger.state import LedgerState
from processors.views import (
    ACCOUNT,
    LEDGER_WIDE,
    TRANSFER,
    FactsView,
    Key,
    LocalStates,
    LockedKey,
    MissingKey,
)
from schemas import (
    BATCH_EVENTS_MAX,
    AccountFlags,
    Event,
    PendingStatus,
    TransferFlags,
)
from schemas.messages import (
    AccountCommandKind,
    Apply,
    Checkpoint,
    CommandBatch,
    DecisionRef,
    EntryRef,
    ExpireRequest,
    Facts,
    Operation,
    ResultBatch,
    ResultEntry,
    SequencedEntry,
)
from schemas.partitioning import partition_of

__all__ = [
    "COMMANDS",
    "LANE_MASK",
    "MAX_PARTITIONS",
    "SEQUENCE",
    "TIMESTAMP_STEP",
    "MessageKey",
    "Outbox",
    "PartitionMachine",
    "Payload",
    "Peer",
    "align_to_lane",
    "checkpoint_messages",
    "request_keys",
    "request_problem",
]

# The low 6 bits of a timestamp name the partition that assigned it, so timestamps are unique
# across the ledger while each partition's own stay strictly increasing.
TIMESTAMP_STEP = 64
LANE_MASK = TIMESTAMP_STEP - 1
MAX_PARTITIONS = TIMESTAMP_STEP

# The messages the protocol state holds on to stay in Kafka; a checkpoint names them by where
# they are: (SEQUENCE, offset in the sequence topic) or (COMMANDS, offset in commands[p]).
SEQUENCE = "s"
COMMANDS = "c"
MessageKey = tuple[str, int]
Payload = SequencedEntry | Apply | Facts | CommandBatch
Peer = tuple["PartitionMachine", "Outbox"]
T = TypeVar("T")


def align_to_lane(timestamp: int, lane: int) -> int:
    """The smallest timestamp >= `timestamp` in `lane`."""
    return timestamp + ((lane - timestamp) & LANE_MASK)


@dataclass(slots=True)
class Outbox:
    """Everything one step produced; the service commits it in one Kafka transaction."""

    events: list[Event] = field(default_factory=list)  # folded here, in order: events[p]
    results: list[ResultBatch] = field(default_factory=list)
    messages: list[tuple[int, Facts | Apply]] = field(default_factory=list)  # to commands[q]
    sequence: list[SequencedEntry] = field(default_factory=list)
    # The last sequence offset this partition folded in this step (-1: none): its events
    # message says so, and read-your-writes waits for it (ResultBatch.sequence).
    applied_sequence: int = -1

    # A peer's decision moved this partition's clock (Lamport) without events here: the
    # checkpoint must still be written.
    touched: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.events
            or self.results
            or self.messages
            or self.sequence
            or self.applied_sequence >= 0
            or self.touched
        )

    def clear(self) -> None:
        """Empty it once its transaction committed (peers hold on to this object)."""
        self.events = []
        self.results = []
        self.messages = []
        self.sequence = []
        self.applied_sequence = -1
        self.touched = False


def request_keys(batch: CommandBatch) -> tuple[set[int], set[int], bool]:
    """(account ids, transfer ids, ledger-wide) a request is known to read before deciding."""
    accounts: set[int] = set()
    transfers: set[int] = set()
    ledger_wide = False
    if batch.operation is Operation.CREATE_ACCOUNTS:
        for account in batch.accounts:
            accounts.add(account.id)
            ledger_wide |= bool(account.flags & AccountFlags.IMPORTED)
    elif batch.operation is Operation.CREATE_TRANSFERS:
        for transfer in batch.transfers:
            transfers.add(transfer.id)
            if transfer.debit_account_id:
                accounts.add(transfer.debit_account_id)
            if transfer.credit_account_id:
                accounts.add(transfer.credit_account_id)
            if transfer.pending_id:
                transfers.add(transfer.pending_id)
            ledger_wide |= bool(transfer.flags & TransferFlags.IMPORTED)
    elif batch.account_command is not None:
        accounts.add(batch.account_command.account_id)
    return accounts, transfers, ledger_wide


def request_problem(batch: CommandBatch) -> str | None:
    """Why a decoded request cannot be executed at all, or None."""
    operation = batch.operation
    count = len(batch.accounts) + len(batch.transfers)
    if count > BATCH_EVENTS_MAX:
        return f"batch has {count} events; at most {BATCH_EVENTS_MAX} are allowed"
    if operation is Operation.CREATE_ACCOUNTS and (batch.transfers or batch.account_command):
        return "operation: create_accounts carries only accounts"
    if operation is Operation.CREATE_TRANSFERS and (batch.accounts or batch.account_command):
        return "operation: create_transfers carries only transfers"
    if operation is Operation.ACCOUNT_COMMAND:
        if batch.accounts or batch.transfers:
            return "operation: account_command carries no accounts or transfers"
        if batch.account_command is None:
            return "account_command: missing"
        command = batch.account_command
        if command.kind is AccountCommandKind.UPDATE_SETTINGS and command.settings is None:
            return "account_command.settings: missing for update_settings"
    return None


@dataclass(slots=True)
class _Entry:
    """A sequenced entry this partition takes part in."""

    entry: SequencedEntry
    keys: set[Key]  # the keys of the entry this partition owns
    admitted: bool = False  # its keys are locked and its facts are sent
    apply: Apply | None = None  # the decider's answer, waiting for earlier entries
    apply_offset: int = -1  # where the answer is in commands[p]


@dataclass(slots=True)
class _Decision:
    """At the home: an entry waiting for its participants' facts."""

    entry: SequencedEntry | None = None  # None until the home has read it from the sequence
    participants: set[int] = field(default_factory=set)
    facts: dict[int, Facts] = field(default_factory=dict)
    facts_offsets: dict[int, int] = field(default_factory=dict)  # where, in commands[home]


class PartitionMachine:
    def __init__(
        self,
        partition: int,
        partitions: int,
        state: LedgerState,
        config: LedgerConfig | None = None,
    ) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be within 1..{MAX_PARTITIONS}, got {partitions}")
        self.partition = partition
        self.partitions = partitions
        self.state = state
        self.ownership = PartitionOwnership(partition, partitions)
        self.rules = Ledger(
            replace(config or LedgerConfig(), timestamp_step=TIMESTAMP_STEP, partitions=partitions)
        )
        # Protocol state (persisted by the service with every transaction).
        self.last_timestamp = 0  # the highest timestamp this partition assigned or folded
        self.now = 0  # the latest wall-clock time the service reported
        self.sequence_next = 0  # the next sequence offset to read
        self.entries: dict[int, _Entry] = {}  # by sequence offset, in order
        self.locks: dict[Key, int] = {}
        self.decisions: dict[int, _Decision] = {}
        # Requests to sequence, gathered during a step and sent as one entry by end_step().
        self._outgoing: list[tuple[CommandBatch, set[Key], bool]] = []
        # Requests waiting for locked keys, with their commands offsets.
        self.deferred: deque[tuple[int, CommandBatch]] = deque()
        self.expiring: set[int] = set()  # pending ids whose expiry is sequenced
        # The machines of the partitions the same process owns (this one included), each with
        # the outbox its current step writes: a request whose keys they all own is decided at
        # once over their states, with no sequencing (`join`). Empty: this partition alone.
        self.peers: Mapping[int, Peer] = {}

    def join(self, peers: Mapping[int, Peer]) -> None:
        """Decide together with the machines of the same process, whose outboxes are committed
        in the same transaction as this one's."""
        assert self.partition in peers
        self.peers = peers

    def _owners(self) -> dict[int, tuple[LedgerState, Collection[Key]]]:
        """What a decision here may read: each peer's state and the keys it holds locked."""
        if not self.peers:
            return {self.partition: (self.state, self.locks)}
        return {index: (machine.state, machine.locks) for index, (machine, _) in self.peers.items()}

    # ------------------------------------------------------------------------------------------
    # Persistence of the protocol state (the ledger state persists through its LedgerState)

    def checkpoint(self, commands_offset: int, events_offset: int) -> Checkpoint:
        """The protocol state, naming the messages it holds by their place in Kafka."""
        decisions = []
        for offset, d in self.decisions.items():
            senders = sorted(d.facts)
            offsets = [d.facts_offsets[sender] for sender in senders]
            decisions.append(DecisionRef(offset, d.entry is not None, senders, offsets))
        return Checkpoint(
            self.partition,
            commands_offset,
            events_offset,
            self.last_timestamp,
            self.now,
            self.sequence_next,
            entries=[
                EntryRef(offset, e.admitted, e.apply_offset) for offset, e in self.entries.items()
            ],
            decisions=decisions,
            deferred=[offset for offset, _ in self.deferred],
            expiring=sorted(self.expiring),
        )

    def restore(self, checkpoint: Checkpoint, messages: Mapping[MessageKey, Payload]) -> None:
        """Take up the protocol state a checkpoint recorded (over the matching ledger state),
        given the messages it names (`checkpoint_messages`)."""
        assert checkpoint.partition == self.partition

        def message(key: MessageKey, kind: type[T]) -> T:
            found = messages.get(key)
            if not isinstance(found, kind):
                raise LookupError(f"partition {self.partition}: no {kind.__name__} at {key}")
            return found

        self.last_timestamp = checkpoint.last_timestamp
        self.now = checkpoint.now
        self.sequence_next = checkpoint.sequence_next
        self.entries = {}
        self.locks = {}
        for ref in checkpoint.entries:
            sequenced = message((SEQUENCE, ref.offset), SequencedEntry)
            entry = _Entry(sequenced, self._owned_keys(sequenced), ref.admitted)
            if ref.apply_offset >= 0:
                entry.apply = message((COMMANDS, ref.apply_offset), Apply)
                entry.apply_offset = ref.apply_offset
            self.entries[ref.offset] = entry
            if entry.admitted:
                for key in entry.keys:
                    self.locks[key] = ref.offset
        self.decisions = {}
        for decision_ref in checkpoint.decisions:
            pairs = zip(decision_ref.senders, decision_ref.facts_offsets, strict=True)
            decision = _Decision(facts_offsets=dict(pairs))
            decision.facts = {
                sender: message((COMMANDS, offset), Facts)
                for sender, offset in decision.facts_offsets.items()
            }
            if decision_ref.has_entry:
                decision.entry = message((SEQUENCE, decision_ref.offset), SequencedEntry)
                decision.participants = self._participants(decision.entry)
            self.decisions[decision_ref.offset] = decision
        self.deferred = deque(
            (offset, message((COMMANDS, offset), CommandBatch)) for offset in checkpoint.deferred
        )
        self.expiring = set(checkpoint.expiring)

    # ------------------------------------------------------------------------------------------
    # Inputs

    def on_request(self, batch: CommandBatch, now: int, out: Outbox, offset: int = -1) -> None:
        """A request arrived on this partition's commands topic, at `offset`."""
        problem = request_problem(batch)
        if problem is not None:
            out.results.append(_rejection(batch, problem))
            return
        if not self._try_request(batch, now, out):
            self.deferred.append((offset, batch))

    def on_sequenced(self, offset: int, entry: SequencedEntry, out: Outbox) -> None:
        """The next entry of the sequence topic (every processor reads every entry)."""
        if offset < self.sequence_next:
            return  # already read before a restart
        self.sequence_next = offset + 1
        participants = self._participants(entry)
        if self.partition not in participants:
            return
        self.entries[offset] = _Entry(entry, self._owned_keys(entry))
        if entry.home == self.partition:
            decision = self.decisions.setdefault(offset, _Decision())
            decision.entry, decision.participants = entry, participants
        self._admit(out)

    def on_facts(self, facts: Facts, out: Outbox, offset: int = -1) -> None:
        """A participant's facts arrived on this (home) partition's commands, at `offset`."""
        decision = self.decisions.setdefault(facts.sequence, _Decision())
        decision.facts[facts.sender] = facts
        decision.facts_offsets[facts.sender] = offset
        self._try_decide(facts.sequence, out)

    def on_apply(self, apply: Apply, out: Outbox, offset: int = -1) -> None:
        """The decider's answer arrived on this partition's commands, at `offset`."""
        entry = self.entries.get(apply.sequence)
        if entry is None or entry.apply is not None:
            return  # not ours, or a duplicate after a restart
        entry.apply = apply
        entry.apply_offset = offset
        self._apply_in_order(out)

    def on_tick(self, now: int, out: Outbox) -> None:
        """Time passed: expire what is due, and retry what waited."""
        self.now = max(self.now, now)
        self._expire(now, out)
        self._retry_deferred(now, out)

    # ------------------------------------------------------------------------------------------
    # Requests decided here alone, or sequenced

    def _try_request(self, batch: CommandBatch, now: int, out: Outbox) -> bool:
        """Decide or sequence the request; False if it must wait for locked keys.

        Decided here when this process owns every key it reads: over this partition's state
        alone (the direct path), or over the states of the peers it reads (the co-located
        path: the events are folded at, and logged to, each owner; one transaction commits
        them all). Otherwise it is sequenced."""
        accounts, transfers, ledger_wide = request_keys(batch)
        keys = {(ACCOUNT, a) for a in accounts} | {(TRANSFER, t) for t in transfers}
        owners = self._owners()
        partitions = self.partitions
        key_owners = [partition_of(key[1], partitions) for key in keys]
        if (ledger_wide and partitions > 1) or not all(index in owners for index in key_owners):
            self._sequence(batch, keys, ledger_wide, now, out)
            return True
        if any(key in owners[index][1] for key, index in zip(keys, key_owners, strict=True)):
            return False
        self.now = max(self.now, now)
        # After everything any peer assigned or folded: whatever it reads is timed after it.
        base = self._next_base(
            after=max(m.last_timestamp for m, _ in self.peers.values()) if self.peers else 0
        )
        view = LocalStates(owners, partitions)
        scope = Scope(view)
        try:
            results, events, next_timestamp = self._run(batch, scope, base)
        except LockedKey:
            return False
        except MissingKey as missing:
            known = view.read | keys | {missing.key}
            self._sequence(batch, known, ledger_wide or missing.key[0] == LEDGER_WIDE, now, out)
            return True
        decided = next_timestamp - TIMESTAMP_STEP
        scope.merge()  # each write to its key's owner
        if view.partitions_read <= {self.partition}:
            out.events.extend(events)
        else:
            self._log_at_peers(events, view.partitions_read, decided)
        out.results.append(_answer(batch, results))
        self.last_timestamp = max(self.last_timestamp, decided)
        return True

    def _log_at_peers(self, events: list[Event], read: set[int], decided: int) -> None:
        """A co-located decision (its writes are merged into the owners' states): each event
        logged to the peers owning the keys it writes, whose fold of it on recovery gives
        those writes; every peer it read or wrote is past its time (Lamport)."""
        peers = self.peers
        touched = set(read)
        for event in events:
            for index in event_owners(event, self.partitions):
                peers[index][1].events.append(event)  # it writes only keys it read: owned here
                touched.add(index)
        for index in touched:
            machine, out = peers[index]
            machine.last_timestamp = max(machine.last_timestamp, decided)
            out.touched = True

    def _run(
        self, batch: CommandBatch, state: LedgerState, base: int
    ) -> tuple[list[ResultEntry], list[Event], int]:
        rules = self.rules
        if batch.operation is Operation.CREATE_ACCOUNTS:
            outcome = rules.create_accounts(state, batch.accounts, base)
        elif batch.operation is Operation.CREATE_TRANSFERS:
            outcome = rules.create_transfers(state, batch.transfers, base)
        else:
            command = batch.account_command
            assert command is not None
            kind = command.kind
            if kind is AccountCommandKind.FREEZE:
                done = rules.freeze(state, command.account_id, base, command.expected_version)
            elif kind is AccountCommandKind.UNFREEZE:
                done = rules.unfreeze(state, command.account_id, base, command.expected_version)
            elif kind is AccountCommandKind.CLOSE:
                done = rules.close(state, command.account_id, base, command.expected_version)
            else:
                assert command.settings is not None
                done = rules.update_settings(
                    state, command.account_id, command.settings, base, command.expected_version
                )
            entry = ResultEntry(int(done.status), base, done.version)
            return [entry], done.events, max(done.next_timestamp, base + TIMESTAMP_STEP)
        results = [ResultEntry(int(r.status), r.timestamp) for r in outcome.results]
        return results, outcome.events, outcome.next_timestamp

    def _sequence(
        self, batch: CommandBatch, keys: Iterable[Key], ledger_wide: bool, now: int, out: Outbox
    ) -> None:
        self._outgoing.append((batch, set(keys), ledger_wide))

    def end_step(self, out: Outbox) -> None:
        """Sequence the requests this step gathered, coalesced: one entry (one round of facts
        and applies) for many requests, up to a batch's worth of events per entry."""
        pending, self._outgoing = self._outgoing, []
        while pending:
            requests: list[CommandBatch] = []
            keys: set[Key] = set()
            ledger_wide = False
            events = 0
            while pending:
                batch, batch_keys, wide = pending[0]
                size = len(batch.accounts) + len(batch.transfers) or 1
                if requests and events + size > BATCH_EVENTS_MAX:
                    break
                pending.pop(0)
                requests.append(batch)
                keys |= batch_keys
                ledger_wide |= wide
                events += size
            entry = self._entry(keys, ledger_wide, request=requests[0])
            entry.batched = requests[1:]
            out.sequence.append(entry)

    def _entry(
        self,
        keys: Iterable[Key],
        ledger_wide: bool,
        request: CommandBatch | None = None,
        expire: ExpireRequest | None = None,
    ) -> SequencedEntry:
        accounts = sorted(k[1] for k in keys if k[0] == ACCOUNT)
        transfers = sorted(k[1] for k in keys if k[0] == TRANSFER)
        return SequencedEntry(
            self.partition, 0, accounts, transfers, ledger_wide, request=request, expire=expire
        )

    def _next_base(self, after: int = 0) -> int:
        """The first timestamp of a decision here: in our lane, after everything we assigned or
        folded and after `after` (what the decision read), and not before the wall clock."""
        floor = max(self.last_timestamp, after) + 1
        return align_to_lane(max(floor, self.now), self.partition)

    def _retry_deferred(self, now: int, out: Outbox) -> None:
        for _ in range(len(self.deferred)):
            offset, batch = self.deferred.popleft()
            if not self._try_request(batch, now, out):
                self.deferred.append((offset, batch))

    # ------------------------------------------------------------------------------------------
    # Sequenced entries: admission (locks + facts), decision at the home, apply in order

    def _participants(self, entry: SequencedEntry) -> set[int]:
        if entry.all_partitions:
            return set(range(self.partitions))
        owners = {partition_of(a, self.partitions) for a in entry.account_ids}
        owners.update(partition_of(t, self.partitions) for t in entry.transfer_ids)
        owners.add(entry.home)
        return owners

    def _owns(self, key: Key) -> bool:
        return partition_of(key[1], self.partitions) == self.partition

    def _owned_keys(self, entry: SequencedEntry) -> set[Key]:
        keys = {(ACCOUNT, a) for a in entry.account_ids} | {
            (TRANSFER, t) for t in entry.transfer_ids
        }
        return {key for key in keys if self._owns(key)}

    def _admit(self, out: Outbox) -> None:
        """Lock and read entries in sequence order; an entry waits behind earlier ones that hold
        or wait for any of its keys (so there is never a deadlock)."""
        reserved: set[Key] = set()
        for offset, entry in self.entries.items():
            if entry.admitted:
                continue
            if any(key in self.locks or key in reserved for key in entry.keys):
                reserved |= entry.keys
                continue
            for key in entry.keys:
                self.locks[key] = offset
            entry.admitted = True
            # Even to ourselves through Kafka: a message the state holds on to must be there.
            out.messages.append((entry.entry.home, self._read_facts(offset, entry)))

    def _read_facts(self, offset: int, entry: _Entry) -> Facts:
        state = self.state
        facts = Facts(offset, self.partition, last_timestamp=self.last_timestamp)
        for kind, key_id in entry.keys:
            if kind == ACCOUNT:
                account = state.get_account(key_id)
                facts.accounts[key_id] = account.copy() if account is not None else None
                settlement = state.get_settlement(key_id)
                if settlement:
                    facts.settlements[key_id] = settlement
            else:
                transfer = state.get_transfer(key_id)
                facts.transfers[key_id] = transfer.copy() if transfer is not None else None
                status = state.get_pending_status(key_id)
                if status:
                    facts.pending[key_id] = int(status)
                    if (
                        transfer is not None
                        and transfer.timeout
                        and status is PendingStatus.PENDING
                    ):
                        facts.expiries[key_id] = (transfer.expires_at, transfer.timestamp)
                failed = state.get_failed(key_id)
                if failed:
                    facts.failed[key_id] = failed
        sequenced = entry.entry
        if sequenced.all_partitions:
            facts.max_account_timestamp = state.max_account_timestamp()
            facts.max_transfer_timestamp = state.max_transfer_timestamp()
            for timestamp in _imported_timestamps(sequenced):
                kind_here = state.timestamp_kind(timestamp)
                if kind_here:
                    facts.timestamp_kinds[timestamp] = kind_here
        return facts

    def _try_decide(self, offset: int, out: Outbox) -> None:
        decision = self.decisions[offset]
        entry = decision.entry
        if entry is None or not decision.participants <= decision.facts.keys():
            return
        del self.decisions[offset]
        facts = list(decision.facts.values())
        base = self._next_base(after=max(f.last_timestamp for f in facts))
        expire_ids = entry.expire.transfer_ids if entry.expire is not None else ()
        view = FactsView(facts, expire_ids)
        view.ledger_wide = entry.all_partitions
        scope = Scope(view)
        try:
            if entry.expire is not None:
                outcome = self.rules.expire_pending(scope, entry.expire.now, base)
                next_timestamp = outcome.next_timestamp
                events = outcome.events
            else:
                # The entry's requests in order, each seeing the ones before it.
                answers: list[tuple[CommandBatch, list[ResultEntry]]] = []
                events = []
                next_timestamp = base
                for request in entry.requests:
                    results, decided, next_timestamp = self._run(request, scope, next_timestamp)
                    answers.append((request, results))
                    events.extend(decided)
        except MissingKey as missing:
            kind, key_id = missing.key
            retry = replace(
                entry,
                attempt=entry.attempt + 1,
                account_ids=sorted({*entry.account_ids, key_id})
                if kind == ACCOUNT
                else entry.account_ids,
                transfer_ids=sorted({*entry.transfer_ids, key_id})
                if kind == TRANSFER
                else entry.transfer_ids,
                all_partitions=entry.all_partitions or kind == LEDGER_WIDE,
            )
            self._release_and_retry(offset, decision, retry, out)
            return
        except BatchTooLarge as too_large:  # refused on arrival already; kept for safety
            for request in entry.requests:
                out.results.append(_rejection(request, str(too_large)))
            events = []
        else:
            self.last_timestamp = max(self.last_timestamp, next_timestamp - TIMESTAMP_STEP)
            if entry.expire is None:
                participants = sorted(decision.participants)
                for request, results in answers:
                    answer = _answer(request, results)
                    answer.sequence = offset
                    answer.participants = participants
                    out.results.append(answer)
        if entry.expire is not None:
            self.expiring.difference_update(entry.expire.transfer_ids)
        decided_at = self.last_timestamp
        for participant in sorted(decision.participants):
            mine = [e for e in events if participant in event_owners(e, self.partitions)]
            self._send_apply(participant, Apply(offset, mine, decided_at), out)

    def _release_and_retry(
        self, offset: int, decision: _Decision, retry: SequencedEntry, out: Outbox
    ) -> None:
        for participant in sorted(decision.participants):
            self._send_apply(participant, Apply(offset), out)
        out.sequence.append(retry)

    def _send_apply(self, participant: int, apply: Apply, out: Outbox) -> None:
        out.messages.append((participant, apply))  # to ourselves too, as facts are

    def _apply_in_order(self, out: Outbox) -> None:
        """Fold decided entries in sequence order, so the events log stays time-ordered."""
        applied = False
        while self.entries:
            offset = next(iter(self.entries))
            entry = self.entries[offset]
            if entry.apply is None:
                break
            del self.entries[offset]
            for event in entry.apply.events:
                apply_event(self.state, event, self.ownership)
                out.events.append(event)
            # Past the decision's time even when it only read here (Lamport), so whatever
            # touches these keys next is timed after it.
            self.last_timestamp = max(self.last_timestamp, entry.apply.timestamp)
            out.applied_sequence = max(out.applied_sequence, offset)
            for key in entry.keys:
                if self.locks.get(key) == offset:
                    del self.locks[key]
            applied = True
        if applied:
            self._admit(out)
            # Keys were unlocked: requests waiting for them, here or at a peer, may go now.
            self._retry_deferred(self.now, out)
            for index, (machine, peer_out) in self.peers.items():
                if index != self.partition:
                    machine._retry_deferred(machine.now, peer_out)

    # ------------------------------------------------------------------------------------------
    # Expiry

    def _expire(self, now: int, out: Outbox) -> None:
        local: set[int] = set()
        remote: list[int] = []
        keys: set[Key] = set()
        for _expires_at, _timestamp, transfer_id in self.state.expiring(now):
            if transfer_id in self.expiring or (TRANSFER, transfer_id) in self.locks:
                continue
            pending = self.state.get_transfer(transfer_id)
            assert pending is not None
            accounts = {(ACCOUNT, pending.debit_account_id), (ACCOUNT, pending.credit_account_id)}
            if all(self._owns(key) for key in accounts):
                if not any(key in self.locks for key in accounts):
                    local.add(transfer_id)
            else:
                remote.append(transfer_id)
                keys |= accounts | {(TRANSFER, transfer_id)}
        if local:
            self.now = max(self.now, now)
            view = LocalStates(
                {self.partition: (self.state, self.locks)}, self.partitions, expiring_ids=local
            )
            scope = Scope(view)
            outcome = self.rules.expire_pending(scope, now, self._next_base())
            scope.merge()
            out.events.extend(outcome.events)
            self.last_timestamp = max(self.last_timestamp, outcome.next_timestamp - TIMESTAMP_STEP)
        if remote:
            self.expiring.update(remote)
            out.sequence.append(self._entry(keys, False, expire=ExpireRequest(remote, now)))


def _imported_timestamps(entry: SequencedEntry) -> list[int]:
    stamps: list[int] = []
    for request in entry.requests:
        accounts = request.operation is Operation.CREATE_ACCOUNTS
        items = request.accounts if accounts else request.transfers
        stamps.extend(item.timestamp for item in items if item.timestamp)
    return stamps


def _answer(batch: CommandBatch, results: list[ResultEntry]) -> ResultBatch:
    return ResultBatch(batch.request_id, batch.submitter, batch.operation, results)


def _rejection(batch: CommandBatch, reason: str) -> ResultBatch:
    return ResultBatch(batch.request_id, batch.submitter, batch.operation, [], rejection=reason)


def checkpoint_messages(checkpoint: Checkpoint) -> list[MessageKey]:
    """Where the messages a checkpoint holds on to are."""
    keys: list[MessageKey] = []
    for entry in checkpoint.entries:
        keys.append((SEQUENCE, entry.offset))
        if entry.apply_offset >= 0:
            keys.append((COMMANDS, entry.apply_offset))
    for decision in checkpoint.decisions:
        if decision.has_entry:
            keys.append((SEQUENCE, decision.offset))
        keys.extend((COMMANDS, offset) for offset in decision.facts_offsets)
    keys.extend((COMMANDS, offset) for offset in checkpoint.deferred)
    return keys
