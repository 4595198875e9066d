"""The ledger's rules as a pure core: (state, command, timestamp) -> results, events, new state.

No Kafka, RocksDB, clock or randomness in here. The processors run this code over RocksDB
state; replay and audit fold its events with `apply_event`; the reference ledger applies it
sequentially in memory and is the oracle the pipeline is tested against.
"""

from processors.ledger.config import DEFAULT_ASSET, SETTLEMENT_ACCOUNT_BASE, Asset, LedgerConfig
from processors.ledger.engine import (
    AccountCommandResult,
    BatchResult,
    BatchTooLarge,
    Ledger,
    Result,
)
from processors.ledger.fold import Ownership, apply_event, apply_events
from processors.ledger.partitioned import PartitionedLedger, PartitionOwnership, event_owners
from processors.ledger.reference import ReferenceLedger
from processors.ledger.state import LedgerState, MemoryState, Scope

__all__ = [
    "DEFAULT_ASSET",
    "SETTLEMENT_ACCOUNT_BASE",
    "AccountCommandResult",
    "Asset",
    "BatchResult",
    "BatchTooLarge",
    "Ledger",
    "LedgerConfig",
    "LedgerState",
    "MemoryState",
    "Ownership",
    "PartitionOwnership",
    "PartitionedLedger",
    "ReferenceLedger",
    "Result",
    "Scope",
    "apply_event",
    "apply_events",
    "event_owners",
]
