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
    "CommandBatch",
    "EventBatch",
    "Operation",
    "ResultBatch",
    "ResultEntry",
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


@dataclass(slots=True)
class EventBatch:
    """The events one processor transaction emitted into one events partition."""

    partition: int
    events: list[Event]
    # The commands-topic offset this batch's state reflects (recovery of processor state).
    source_offset: int = -1
