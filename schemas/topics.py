"""Topic names and routing rules shared by submitters, processors and projections
(docs/PIPELINE.md, "Topics")."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from schemas.messages import CommandBatch, Operation
from schemas.partitioning import partition_of

__all__ = [
    "CHECKPOINT_HEADER",
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC_PREFIX",
    "ENV_PARTITIONS",
    "ENV_TOPIC_PREFIX",
    "Topics",
    "home_key",
    "home_partition",
    "results_partition",
]

ENV_TOPIC_PREFIX = "LEDGER_TOPIC_PREFIX"
ENV_PARTITIONS = "LEDGER_PARTITIONS"
DEFAULT_TOPIC_PREFIX = "ledger."
DEFAULT_PARTITIONS = 8
# On the last events[p] message of every transaction that touched p: partition p's encoded
# Checkpoint as of that transaction (docs/PIPELINE.md). Earlier versions wrote it to
# processor-log[p] instead.
CHECKPOINT_HEADER = "checkpoint"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = DEFAULT_TOPIC_PREFIX

    @classmethod
    def from_env(cls) -> Topics:
        return cls(os.environ.get(ENV_TOPIC_PREFIX, DEFAULT_TOPIC_PREFIX))

    @property
    def commands(self) -> str:
        return f"{self.prefix}commands"

    @property
    def sequence(self) -> str:
        return f"{self.prefix}sequence"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def processor_log(self) -> str:
        return f"{self.prefix}processor-log"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    @property
    def processor_group(self) -> str:
        return f"{self.prefix}processors"


def home_key(batch: CommandBatch) -> int:
    """The id whose owner partition receives the request: the first event's account (the debit
    account of a transfer; for a post or void that omits it, the pending transfer's id)."""
    if batch.operation is Operation.CREATE_ACCOUNTS and batch.accounts:
        return batch.accounts[0].id
    if batch.operation is Operation.CREATE_TRANSFERS and batch.transfers:
        first = batch.transfers[0]
        return first.debit_account_id or first.pending_id or first.id
    if batch.account_command is not None:
        return batch.account_command.account_id
    return 0


def results_partition(submitter: str, partitions: int) -> int:
    """The results partition a submitter reads (stable across processes and Python runs)."""
    return zlib.crc32(submitter.encode()) % partitions


def home_partition(batch: CommandBatch, partitions: int) -> int:
    return partition_of(home_key(batch), partitions)
