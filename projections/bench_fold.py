"""Fold speed of the read model: events/s applying messages of TransferApplied events.

    .venv/bin/python -m projections.bench_fold [--accounts N] [--messages N] [--events N]
                                               [--partitions N]

The events come from the reference ledger (random single-phase transfers among `--accounts`
accounts, one batch of `--events` per message); the accounts are folded first, then the
transfer messages are timed, one `apply` (one RocksDB batch) each, into a fresh store in a
temporary directory with partitions=1 (the projection owns everything: the most work per event).
SPEC §8 asks ≥ 100,000 events/s for a replay.

With `--partitions N` it also folds, one partition after another on this one core, what each
partition's events topic would hold (the events whose keys it owns, `event_owners`), and
reports the log's events over the total time: a cross-partition transfer is folded twice,
half by each owner.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from processors.ledger import ReferenceLedger, event_owners
from processors.store import PartitionStore
from projections.model import PartitionProjection
from schemas import Account, Event, Transfer


def transfer_messages(accounts: int, messages: int, events: int, seed: int) -> list[list[Event]]:
    """Message 0 creates the accounts; each later one holds `events` TransferApplied events."""
    rng = random.Random(seed)
    ledger = ReferenceLedger()
    out: list[list[Event]] = []
    for start in range(1, accounts + 1, 8189):
        ledger.create_accounts(
            [Account(i, ledger=1, code=1) for i in range(start, min(start + 8189, accounts + 1))]
        )
    out.append(list(ledger.log))
    next_id = 1
    for _ in range(messages):
        before = len(ledger.log)
        batch = []
        for _ in range(events):
            debit, credit = rng.sample(range(1, accounts + 1), 2)
            batch.append(Transfer(next_id, debit, credit, rng.randint(1, 1000), ledger=1, code=1))
            next_id += 1
        ledger.create_transfers(batch)
        out.append(ledger.log[before:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sync", action="store_true", help="fsync the WAL on every message")
    parser.add_argument("--partitions", type=int, default=0, help="also fold N partitions")
    args = parser.parse_args()
    messages = transfer_messages(args.accounts, args.messages, args.events, args.seed)
    with tempfile.TemporaryDirectory() as tmp, PartitionStore(Path(tmp), sync=args.sync) as store:
        projection = PartitionProjection(store, 0, 1)
        projection.apply(0, messages[0])
        folded = 0
        started_s = time.perf_counter()
        for offset, events in enumerate(messages[1:], start=1):
            projection.apply(offset, events)
            folded += len(events)
        elapsed_s = time.perf_counter() - started_s
        # The same message again at new offsets: the hot path without growing the store.
        repeated = messages[1]
        again_started_s = time.perf_counter()
        for offset in range(len(messages), len(messages) + args.messages):
            projection.apply(offset, repeated)
        again_elapsed_s = time.perf_counter() - again_started_s
    print(
        f"distinct messages: {folded} events in {elapsed_s:.3f} s"
        f" = {folded / elapsed_s:,.0f} events/s"
    )
    repeated_events = len(repeated) * args.messages
    print(
        f"one message repeated: {repeated_events} events in {again_elapsed_s:.3f} s"
        f" = {repeated_events / again_elapsed_s:,.0f} events/s"
    )
    if args.partitions:
        fold_partitioned(messages, args.partitions, args.sync)


def fold_partitioned(messages: list[list[Event]], partitions: int, sync: bool) -> None:
    owned = [
        [[e for e in events if p in event_owners(e, partitions)] for events in messages]
        for p in range(partitions)
    ]
    elapsed_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(partitions):
            with PartitionStore(Path(tmp) / str(p), sync=sync) as store:
                projection = PartitionProjection(store, p, partitions)
                projection.apply(0, owned[p][0])
                started_s = time.perf_counter()
                for offset, events in enumerate(owned[p][1:], start=1):
                    projection.apply(offset, events)
                elapsed_s += time.perf_counter() - started_s
    log_events = sum(len(events) for events in messages[1:])
    folded = sum(len(events) for mine in owned for events in mine[1:])
    print(
        f"{partitions} partitions, one core: {log_events} log events ({folded} folds) in"
        f" {elapsed_s:.3f} s = {log_events / elapsed_s:,.0f} log events/s"
    )


if __name__ == "__main__":
    main()
