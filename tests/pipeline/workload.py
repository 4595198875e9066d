"""Random but reproducible requests of every transfer kind, for the pipeline tests."""

from __future__ import annotations

import random
from collections.abc import Iterator

from schemas import AMOUNT_MAX, Account, Policy, Transfer, TransferFlags

LEDGER = 1
SOURCE = 1_000  # an external account that funds the others
ACCOUNTS = list(range(1, 41))

PEN = int(TransferFlags.PENDING)
POS = int(TransferFlags.POST_PENDING_TRANSFER)
VOI = int(TransferFlags.VOID_PENDING_TRANSFER)
LNK = int(TransferFlags.LINKED)
BDR = int(TransferFlags.BALANCING_DEBIT)
BCR = int(TransferFlags.BALANCING_CREDIT)


def accounts() -> list[Account]:
    made = [Account(SOURCE, ledger=LEDGER, code=1, policy=Policy.EXTERNAL)]
    for account_id in ACCOUNTS:
        if account_id % 4 == 0:
            made.append(Account(account_id, ledger=LEDGER, code=1, policy=Policy.NO_OVERDRAFT))
        elif account_id % 4 == 1:
            made.append(Account(account_id, ledger=LEDGER, code=1, max_balance=500))
        else:
            made.append(Account(account_id, ledger=LEDGER, code=2))
    return made


def funding() -> list[Transfer]:
    return [Transfer(10_000 + a, SOURCE, a, 200, ledger=LEDGER, code=1) for a in ACCOUNTS]


class Workload:
    """Batches of transfers; ids are disjoint per submitter (`lane`)."""

    def __init__(self, seed: int, lane: int) -> None:
        self.rng = random.Random(seed * 1_000 + lane)
        self.next_id = (lane + 1) * 1_000_000
        self.pending: list[int] = []

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def transfer(self) -> Transfer:
        rng = self.rng
        kind = rng.choice(["single", "single", "single", "pending", "resolve", "balancing"])
        if kind == "resolve" and self.pending:
            pending_id = rng.choice(self.pending)
            flags = rng.choice([POS, POS, VOI])
            amount = rng.choice([0, AMOUNT_MAX, rng.randrange(1, 20)]) if flags == POS else 0
            return Transfer(self._id(), pending_id=pending_id, amount=amount, flags=flags)
        debit, credit = rng.sample([*ACCOUNTS, SOURCE], 2)
        amount = rng.randrange(1, 120)
        if kind == "pending":
            transfer_id = self._id()
            self.pending.append(transfer_id)
            return Transfer(transfer_id, debit, credit, amount, ledger=LEDGER, code=1, flags=PEN)
        if kind == "balancing":
            flags = rng.choice([BDR, BCR, BDR | BCR])
            return Transfer(self._id(), debit, credit, amount, ledger=LEDGER, code=1, flags=flags)
        return Transfer(self._id(), debit, credit, amount, ledger=LEDGER, code=1)

    def batch(self) -> list[Transfer]:
        batch = [self.transfer() for _ in range(self.rng.randrange(1, 8))]
        # Now and then a linked chain, and now and then a retry of an earlier id.
        if len(batch) > 1 and self.rng.random() < 0.3:
            for transfer in batch[: self.rng.randrange(1, len(batch))]:
                transfer.flags |= LNK
        if self.rng.random() < 0.1:
            batch.append(batch[0].copy())
        return batch

    def batches(self, count: int) -> Iterator[list[Transfer]]:
        for _ in range(count):
            yield self.batch()
