"""`ledger bench core`: the rules alone, in memory, on one core.

Random single-phase transfers among N accounts, applied in batches through `Ledger` over a
`MemoryState`, with the expiry pass a processor runs before each batch. Building the transfer
objects is outside the timed section (a processor gets them from the decoder). The last line
printed is one JSON object with the figures and the parameters.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass

from processors.ledger import Ledger, MemoryState
from schemas import BATCH_EVENTS_MAX, Account, CreateTransferStatus, Transfer

__all__ = ["CoreBenchParams", "add_arguments", "run", "run_core_bench"]


@dataclass(frozen=True)
class CoreBenchParams:
    accounts: int = 100_000
    transfers: int = 1_000_000
    batch_size: int = BATCH_EVENTS_MAX
    seed: int = 1
    pause_gc: bool = True


def _batches(params: CoreBenchParams, rng: random.Random) -> list[list[Transfer]]:
    batches: list[list[Transfer]] = []
    next_id = 1
    accounts = params.accounts
    for start in range(0, params.transfers, params.batch_size):
        size = min(params.batch_size, params.transfers - start)
        batch = []
        for _ in range(size):
            debit = rng.randrange(1, accounts + 1)
            credit = rng.randrange(1, accounts)
            credit += credit >= debit  # any account but the debit one
            batch.append(Transfer(next_id, debit, credit, rng.randrange(1, 1000), ledger=1, code=1))
            next_id += 1
        batches.append(batch)
    return batches


def run_core_bench(params: CoreBenchParams) -> dict[str, object]:
    rng = random.Random(params.seed)
    rules = Ledger()
    state = MemoryState()
    now = 1
    for start in range(1, params.accounts + 1, BATCH_EVENTS_MAX):
        stop = min(start + BATCH_EVENTS_MAX, params.accounts + 1)
        outcome = rules.create_accounts(
            state, [Account(i, ledger=1, code=1) for i in range(start, stop)], now
        )
        now = outcome.next_timestamp
    batches = _batches(params, rng)

    created = 0
    # The ledger's objects never form reference cycles, so the cycle collector only burns time
    # walking the (here: in-memory) state; processors run with it paused the same way.
    if params.pause_gc:
        gc.collect()
        gc.freeze()
        gc.disable()
    started = time.perf_counter()
    try:
        for batch in batches:
            now = rules.expire_pending(state, now, now).next_timestamp
            outcome = rules.create_transfers(state, batch, now)
            now = outcome.next_timestamp
            created += sum(1 for r in outcome.results if r.status == CreateTransferStatus.CREATED)
        elapsed_s = time.perf_counter() - started
    finally:
        if params.pause_gc:
            gc.enable()
            gc.unfreeze()

    return {
        "benchmark": "core",
        "transfers_per_s": round(params.transfers / elapsed_s),
        "elapsed_s": round(elapsed_s, 3),
        "created": created,
        **asdict(params),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=CoreBenchParams.accounts)
    parser.add_argument("--transfers", type=int, default=CoreBenchParams.transfers)
    parser.add_argument("--batch-size", type=int, default=CoreBenchParams.batch_size)
    parser.add_argument("--seed", type=int, default=CoreBenchParams.seed)
    parser.add_argument(
        "--gc", action="store_true", help="keep Python's cycle collector running while timed"
    )


def run(args: argparse.Namespace) -> int:
    params = CoreBenchParams(
        args.accounts, args.transfers, args.batch_size, args.seed, pause_gc=not args.gc
    )
    if params.accounts < 2 or not 1 <= params.batch_size <= BATCH_EVENTS_MAX:
        raise ValueError("need --accounts >= 2 and 1 <= --batch-size <= 8189")
    print(json.dumps(run_core_bench(params)), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="python -m processors.bench_core", description=__doc__)
    add_arguments(cli)
    raise SystemExit(run(cli.parse_args()))
