"""The messages on the Kafka topics: command batches in, event batches and results out.

A Kafka message carries many ledger events (SPEC §8: batches per message). These envelopes are
what `schemas.codec` encodes with Avro.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from schemas.events import Event
from schemas.records import Account, Transfer, UpdateSettings

__all__ = [
    "AccountCommand",
    "AccountCommandKind",
    "Apply",
    "Checkpoint",
    "CommandBatch",
    "DecisionRef",
    "EntryRef",
    "EventBatch",
    "ExpireRequest",
    "Facts",
    "Operation",
    "ResultBatch",
    "ResultEntry",
    "SequencedEntry",
]


class Operation(IntEnum):
    CREATE_ACCOUNTS = 1
    CREATE_TRANSFERS = 2
    ACCOUNT_COMMAND = 3  # freeze / unfreeze / close / update_settings of one account


class AccountCommandKind(IntEnum):
    FREEZE = 1
    UNFREEZE = 2
    CLOSE = 3
    UPDATE_SETTINGS = 4


@dataclass(slots=True)
class AccountCommand:
    kind: AccountCommandKind
    account_id: int
    expected_version: int = 0  # 0 = any version
    settings: UpdateSettings | None = None  # only for UPDATE_SETTINGS


@dataclass(slots=True)
class CommandBatch:
    """One request of one submitter: the unit whose results come back together."""

    request_id: int  # u128, unique per request; correlates the results
    submitter: str  # who waits for the results (names its results partition)
    operation: Operation
    accounts: list[Account] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    account_command: AccountCommand | None = None
    submitted_at_ns: int = 0  # submitter's wall clock, for latency measurement only


@dataclass(slots=True)
class ResultEntry:
    status: int  # CreateAccountStatus / CreateTransferStatus / AccountCommandStatus value
    timestamp: int
    version: int = 0  # account commands: the account's version after the command


@dataclass(slots=True)
class ResultBatch:
    request_id: int
    submitter: str
    operation: Operation
    results: list[ResultEntry]
    # Set when the request could not be decoded or was refused whole (e.g. too many events):
    # `results` is empty and this names the problem (and the field).
    rejection: str | None = None
    # A cross-partition request: the sequence offset it was decided at, and the partitions
    # whose events it changed. Their events follow the result, so read-your-writes waits until
    # those partitions' projections have folded this sequence offset (-1: decided by one
    # partition alone, whose events committed with the result).
    sequence: int = -1
    participants: list[int] = field(default_factory=list)


@dataclass(slots=True)
class EventBatch:
    """The events one processor transaction emitted into one events partition."""

    partition: int
    events: list[Event]
    # The last sequence offset (a cross-partition decision) the partition folded with this
    # batch, -1 if none: projections track it for read-your-writes.
    source_offset: int = -1


# --- Cross-partition protocol (docs/PIPELINE.md, "The sequenced path") ---------------------


@dataclass(slots=True)
class ExpireRequest:
    """Expire these pending transfers (owned by the entry's home) as of `now`."""

    transfer_ids: list[int]
    now: int


@dataclass(slots=True)
class SequencedEntry:
    """A request whose keys span partitions, in the total order of the sequence topic."""

    home: int  # the partition that decides it and answers the submitter
    attempt: int  # 0 first; +1 each time it is re-sequenced with more keys
    account_ids: list[int]  # every account the decision reads
    transfer_ids: list[int]  # every transfer id the decision reads (ids, pending ids)
    all_partitions: bool  # imported events read ledger-wide facts
    request: CommandBatch | None = None
    expire: ExpireRequest | None = None
    # More requests of the same home, decided right after `request`, in order: requests that
    # arrive together share one round of facts and applies.
    batched: list[CommandBatch] = field(default_factory=list)

    @property
    def requests(self) -> list[CommandBatch]:
        return ([self.request] if self.request is not None else []) + self.batched


@dataclass(slots=True)
class Facts:
    """What one participant owns of an entry's keys, read under its locks."""

    sequence: int  # the entry's offset in the sequence topic
    sender: int
    accounts: dict[int, Account | None] = field(default_factory=dict)
    settlements: dict[int, int] = field(default_factory=dict)
    transfers: dict[int, Transfer | None] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    expiries: dict[int, tuple[int, int]] = field(default_factory=dict)
    max_account_timestamp: int = 0
    max_transfer_timestamp: int = 0
    timestamp_kinds: dict[int, int] = field(default_factory=dict)
    # The highest timestamp in the sender's state: the decision is timed after it (Lamport), so
    # every account's history is in timestamp order.
    last_timestamp: int = 0


@dataclass(slots=True)
class Apply:
    """The decider's answer to a participant: the events to fold (none: released, retried)."""

    sequence: int
    events: list[Event] = field(default_factory=list)
    # The last timestamp the decision assigned: every participant's clock moves past it, so a
    # key the decision only read is still ordered before whatever touches it next.
    timestamp: int = 0


@dataclass(slots=True)
class EntryRef:
    """A sequenced entry a partition takes part in and has not folded yet. The entry is at
    `offset` in the sequence topic; the decider's Apply, once it came, at `apply_offset` in the
    partition's commands topic (-1: not yet)."""

    offset: int
    admitted: bool
    apply_offset: int = -1


@dataclass(slots=True)
class DecisionRef:
    """At the home: an entry whose participants' facts are still arriving. Each sender's Facts
    is at the matching offset of `facts_offsets` in the home's commands topic."""

    offset: int
    has_entry: bool  # the home has read the entry from the sequence
    senders: list[int] = field(default_factory=list)
    facts_offsets: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Checkpoint:
    """Carried by the last events[p] message of every transaction of partition p (the
    `checkpoint` header): with the events, the complete changelog of its processor state.
    Messages it still holds on to are named by their offsets in the sequence and commands
    topics (kept forever), so it stays small however much work is in flight."""

    partition: int
    commands_offset: int  # the next commands[p] offset to consume
    events_offset: int  # the last events[p] offset this state reflects (-1: none)
    last_timestamp: int
    now: int
    sequence_next: int
    entries: list[EntryRef] = field(default_factory=list)
    decisions: list[DecisionRef] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # commands offsets of waiting requests
    expiring: list[int] = field(default_factory=list)
