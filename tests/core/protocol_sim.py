"""An in-memory network of PartitionMachines: the Kafka topics as queues, delivery order chosen
by a seeded random generator. The protocol of docs/PIPELINE.md runs here exactly as in the
service, minus Kafka (test helper)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import count

from processors.ledger import MemoryState, PartitionOwnership
from processors.partition import (
    SEQUENCE,
    MessageKey,
    Outbox,
    PartitionMachine,
    Payload,
    checkpoint_messages,
)
from schemas import Account, Event, Transfer, UpdateSettings
from schemas.codec import decode_checkpoint, encode_checkpoint
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    Apply,
    CommandBatch,
    Facts,
    Operation,
    ResultBatch,
    SequencedEntry,
)
from schemas.topics import home_partition

_request_ids = count(1)


@dataclass
class SimNetwork:
    partitions: int
    seed: int = 0
    now: int = 1
    machines: list[PartitionMachine] = field(init=False)
    states: list[MemoryState] = field(init=False)
    # Each partition's commands topic: every message ever sent, and how far its owner has read.
    commands: list[list[CommandBatch | Facts | Apply]] = field(init=False)
    commands_read: list[int] = field(init=False)
    sequence: list[SequencedEntry] = field(default_factory=list)
    read: list[int] = field(init=False)
    logs: list[list[Event]] = field(init=False)
    results: dict[int, ResultBatch] = field(default_factory=dict)
    answered: list[int] = field(default_factory=list)
    steps: int = 0
    # After each step, a machine restarts from its checkpoint with this probability (its ledger
    # state survives, as RocksDB does; only the in-memory protocol state is rebuilt).
    restart_probability: float = 0.0
    restarts: int = 0
    # Partition p runs in process p % processes, with the others of its process as peers (a
    # step commits all their outboxes); 0: one process per partition.
    processes: int = 0
    # Each process's clock runs ahead by its own amount, up to this, as clocks of different
    # machines do: timestamps must follow causality (Lamport), not clocks.
    clock_skew_max_ns: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.states = [MemoryState() for _ in range(self.partitions)]
        self.machines = [
            PartitionMachine(p, self.partitions, self.states[p]) for p in range(self.partitions)
        ]
        self.commands = [[] for _ in range(self.partitions)]
        self.commands_read = [0] * self.partitions
        self.read = [0] * self.partitions
        self.logs = [[] for _ in range(self.partitions)]
        self.outboxes = [Outbox() for _ in range(self.partitions)]
        skews = [self.rng.randrange(0, self.clock_skew_max_ns + 1) for _ in range(self.partitions)]
        self.skews = [skews[self._process(p)[0]] for p in range(self.partitions)]
        for machine in self.machines:
            self._join(machine)

    def _process(self, partition: int) -> list[int]:
        if not self.processes:
            return [partition]
        return [
            p for p in range(self.partitions) if p % self.processes == partition % self.processes
        ]

    def _join(self, machine: PartitionMachine) -> None:
        """(Re)build the peers of `machine`'s process, each with its persistent outbox."""
        members = self._process(machine.partition)
        peers = {p: (self.machines[p], self.outboxes[p]) for p in members}
        for p in members:
            self.machines[p].join(peers)

    # Submitting -----------------------------------------------------------------------------

    def submit(self, batch: CommandBatch) -> int:
        self.commands[home_partition(batch, self.partitions)].append(batch)
        return batch.request_id

    def request(self, operation: Operation, **parts: object) -> CommandBatch:
        return CommandBatch(next(_request_ids), "sim", operation, **parts)  # type: ignore[arg-type]

    def accounts(self, accounts: list[Account]) -> CommandBatch:
        return self.request(Operation.CREATE_ACCOUNTS, accounts=[a.copy() for a in accounts])

    def transfers(self, transfers: list[Transfer]) -> CommandBatch:
        return self.request(Operation.CREATE_TRANSFERS, transfers=[t.copy() for t in transfers])

    def command(
        self,
        kind: AccountCommandKind,
        account_id: int,
        expected_version: int = 0,
        settings: UpdateSettings | None = None,
    ) -> CommandBatch:
        command = AccountCommand(kind, account_id, expected_version, settings)
        return self.request(Operation.ACCOUNT_COMMAND, account_command=command)

    # Running --------------------------------------------------------------------------------

    def _pending(self, partition: int) -> bool:
        return self.commands_read[partition] < len(self.commands[partition])

    def _deliver(self, partition: int, out: Outbox) -> bool:
        machine = self.machines[partition]
        can_read = self.read[partition] < len(self.sequence)
        pending = self._pending(partition)
        if not can_read and not pending:
            return False
        if can_read and (not pending or self.rng.random() < 0.5):
            offset = self.read[partition]
            self.read[partition] += 1
            machine.on_sequenced(offset, self.sequence[offset], out)
        else:
            offset = self.commands_read[partition]
            self.commands_read[partition] += 1
            message = self.commands[partition][offset]
            if isinstance(message, CommandBatch):
                machine.on_request(message, self.now + self.skews[partition], out, offset)
            elif isinstance(message, Facts):
                machine.on_facts(message, out, offset)
            else:
                machine.on_apply(message, out, offset)
        return True

    def _collect(self, partition: int, out: Outbox) -> None:
        self.logs[partition].extend(out.events)
        for result in out.results:
            assert result.request_id not in self.results, "a request answered twice"
            self.results[result.request_id] = result
            self.answered.append(result.request_id)
        for target, message in out.messages:
            self.commands[target].append(message)
        self.sequence.extend(out.sequence)

    def _end_step(self, partition: int) -> bool:
        """End the step of `partition`'s process: commit every member's outbox (True if any
        had something)."""
        wrote = False
        for p in self._process(partition):
            out = self.outboxes[p]
            self.machines[p].end_step(out)
            wrote |= bool(out)
            self._collect(p, out)
            out.clear()
        return wrote

    def run(self, max_steps: int = 1_000_000) -> None:
        """Deliver everything, in random order, until nothing moves."""
        while True:
            progressed = False
            while True:
                ready = [
                    p
                    for p in range(self.partitions)
                    if self._pending(p) or self.read[p] < len(self.sequence)
                ]
                if not ready:
                    break
                partition = self.rng.choice(ready)
                out = self.outboxes[partition]
                # Like a service poll: a few messages, then the step ends (requests that must be
                # sequenced are coalesced into one entry).
                for _ in range(self.rng.choice((1, 1, 2, 4))):
                    if not self._deliver(partition, out):
                        break
                self._end_step(partition)
                if self.restart_probability and self.rng.random() < self.restart_probability:
                    self.restart(partition)
                self.now += self.rng.randrange(100, 5_000)
                self.steps += 1
                progressed = True
                assert self.steps < max_steps, "the network does not settle"
            for partition, machine in enumerate(self.machines):
                machine.on_tick(self.now, self.outboxes[partition])
                progressed |= self._end_step(partition)
            if not progressed:
                return

    def restart(self, partition: int) -> None:
        # Through the codec, as the service persists it; the messages it names come back from
        # the topics, as recovery reads them.
        checkpoint = decode_checkpoint(
            encode_checkpoint(self.machines[partition].checkpoint(0, -1))
        )
        messages: dict[MessageKey, Payload] = {}
        for kind, offset in checkpoint_messages(checkpoint):
            log = self.sequence if kind == SEQUENCE else self.commands[partition]
            messages[(kind, offset)] = log[offset]
        machine = PartitionMachine(partition, self.partitions, self.states[partition])
        machine.restore(checkpoint, messages)
        self.machines[partition] = machine
        self._join(machine)
        self.restarts += 1

    def advance(self, nanoseconds: int) -> None:
        self.now += nanoseconds
        self.run()

    # Inspecting -----------------------------------------------------------------------------

    def ownership(self, partition: int) -> PartitionOwnership:
        return PartitionOwnership(partition, self.partitions)

    def account(self, account_id: int) -> Account | None:
        from schemas.partitioning import partition_of

        return self.states[partition_of(account_id, self.partitions)].get_account(account_id)

    def transfer(self, transfer_id: int) -> Transfer | None:
        from schemas.partitioning import partition_of

        return self.states[partition_of(transfer_id, self.partitions)].get_transfer(transfer_id)

    def quiet(self) -> bool:
        """No locks, open entries, decisions or deferred requests left anywhere."""
        return all(
            not m.locks and not m.entries and not m.decisions and not m.deferred
            for m in self.machines
        )
