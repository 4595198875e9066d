"""`ledger demo`: bring the ledger up, run a small realistic workload, print the balances.

The workload is fixed (same ids every run), so running the demo twice shows idempotency: the
second run's events come back `exists` and the balances do not change.
"""

from __future__ import annotations

import json
import os
import random
import urllib.request
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from processors.settings import ENV_ASSETS
from processors.up import Stack, start_stack
from producers import LedgerClient
from schemas import Account, Policy, Transfer, TransferFlags

__all__ = ["run_demo"]

USD = 1  # ledger 1: US dollars in cents (LEDGER_ASSETS=1:USD:2)
BANK, ALICE, BOB, MERCHANT, FEES = 1, 2, 3, 4, 5
NAMES = {BANK: "bank", ALICE: "alice", BOB: "bob", MERCHANT: "merchant", FEES: "fees"}
PEN = int(TransferFlags.PENDING)
POS = int(TransferFlags.POST_PENDING_TRANSFER)
LNK = int(TransferFlags.LINKED)


def _accounts() -> list[Account]:
    return [
        Account(BANK, ledger=USD, code=10, policy=Policy.EXTERNAL),
        Account(ALICE, ledger=USD, code=20, policy=Policy.NO_OVERDRAFT, metadata={"name": "Alice"}),
        Account(BOB, ledger=USD, code=20, policy=Policy.CAPPED_OVERDRAFT, min_balance=-5_000,
                metadata={"name": "Bob"}),
        Account(MERCHANT, ledger=USD, code=30, settle_threshold=8_000, settle_to=2_000,
                link_type="http", flags=8),  # history
        Account(FEES, ledger=USD, code=40, policy=Policy.SYSTEM),
    ]  # fmt: skip


def _transfer(transfer_id: int, debit: int, credit: int, amount: int, **fields: int) -> Transfer:
    return Transfer(transfer_id, debit, credit, amount, ledger=USD, code=1, **fields)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def run_demo(console: Console | None = None) -> int:
    console = console or Console()
    os.environ.setdefault(ENV_ASSETS, "1:USD:2")  # the demo's ledger 1 is US dollars
    console.print("[bold]Starting the ledger[/bold] (broker, processors, projections, HTTP API)")
    stack: Stack = start_stack()
    try:
        console.print(f"ledger ready: {stack.url}")
        outcomes: Counter[str] = Counter()
        rng = random.Random(7)
        with (
            LedgerClient(stack.bootstrap, stack.environment.topics.prefix) as client,
            Progress(console=console) as progress,
        ):
            step = progress.add_task("accounts", total=1)
            outcomes.update(r.status.name.lower() for r in client.create_accounts(_accounts()))
            progress.update(step, advance=1)

            step = progress.add_task("funding", total=1)
            funding = [_transfer(100, BANK, ALICE, 100_00), _transfer(101, BANK, BOB, 50_00)]
            outcomes.update(r.status.name.lower() for r in client.create_transfers(funding))
            progress.update(step, advance=1)

            payments = 200
            step = progress.add_task("card payments", total=payments)
            for start in range(0, payments, 20):
                batch = [
                    _transfer(1_000 + n, rng.choice([ALICE, BOB]), MERCHANT, rng.randrange(10, 60))
                    for n in range(start, start + 20)
                ]
                outcomes.update(r.status.name.lower() for r in client.create_transfers(batch))
                progress.update(step, advance=len(batch))

            step = progress.add_task("two-phase, chain, overdraft", total=4)
            hold = _transfer(2_000, BOB, MERCHANT, 25_00, flags=PEN, timeout=3_600)
            outcomes.update(r.status.name.lower() for r in client.create_transfers([hold]))
            progress.update(step, advance=1)
            capture = Transfer(2_001, amount=20_00, pending_id=2_000, flags=POS)  # partial post
            outcomes.update(r.status.name.lower() for r in client.create_transfers([capture]))
            progress.update(step, advance=1)
            chain = [
                _transfer(2_002, ALICE, MERCHANT, 10_00, flags=LNK),
                _transfer(2_003, ALICE, FEES, 30),
            ]
            outcomes.update(r.status.name.lower() for r in client.create_transfers(chain))
            progress.update(step, advance=1)
            overdraft = client.create_transfers([_transfer(2_004, ALICE, MERCHANT, 1_000_000)])
            outcomes.update(r.status.name.lower() for r in overdraft)
            progress.update(step, advance=1)

        table = Table(title="Balances (USD, in cents)")
        for column in ("account", "policy", "ledger balance", "available", "version"):
            table.add_column(column, justify="right" if column != "account" else "left")
        for account_id, name in NAMES.items():
            account = _get(f"{stack.url}/accounts/{account_id}")
            table.add_row(
                f"{account_id} {name}",
                str(account.get("policy") or "-"),
                str(account["ledger_balance"]),
                str(account["available_balance"]),
                str(account["version"]),
            )
        settlements = _get(f"{stack.url}/accounts/{MERCHANT}/settlements")
        console.print(table)
        console.print(
            "results: " + ", ".join(f"{count} {status}" for status, count in outcomes.items())
        )
        console.print(
            f"overdraft attempt: {overdraft[0].status.name.lower()}; merchant settlements "
            f"requested: {len(settlements)}"
        )
        return 0
    finally:
        stack.stop()
