"""The cross-partition protocol (docs/PIPELINE.md) in simulation: PartitionMachines exchanging
messages in random order, against the sequential reference ledger."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ledger import MemoryState, ReferenceLedger, apply_event
from schemas import (
    Account,
    AccountChanged,
    AccountCommandStatus,
    CreateTransferStatus,
    Transfer,
    TransferApplied,
    TransferFlags,
)
from schemas.messages import AccountCommandKind, CommandBatch, Operation, ResultBatch
from tests.core.invariants import assert_balanced, assert_within_limits
from tests.core.protocol_sim import SimNetwork
from tests.core.test_properties import OPS, SEED, Op
from tests.scenario_runner import Balances5, load_scenarios, run_scenario

SCENARIOS = load_scenarios()
_ADVANCE_MARGIN_NS = 1_000_000  # covers the few microseconds the network takes per step


class SimDriver:
    """A ScenarioDriver over the simulated partitioned pipeline."""

    def __init__(self, partitions: int, seed: int = 0, processes: int = 0) -> None:
        self.sim = SimNetwork(partitions, seed, processes=processes)

    def _names(self, batch: CommandBatch, enum: Any) -> list[str]:
        request_id = self.sim.submit(batch)
        self.sim.run()
        result = self.sim.results[request_id]
        assert result.rejection is None, result.rejection
        return [enum(r.status).name.lower() for r in result.results]

    def create_accounts(self, accounts: list[dict[str, int]]) -> list[str]:
        from schemas import CreateAccountStatus

        batch = self.sim.accounts([Account(**cast(dict[str, Any], a)) for a in accounts])
        return self._names(batch, CreateAccountStatus)

    def create_transfers(self, transfers: list[dict[str, int]]) -> list[str]:
        from schemas import CreateTransferStatus

        return self._names(
            self.sim.transfers([Transfer(**t) for t in transfers]), CreateTransferStatus
        )

    def advance(self, nanoseconds: int) -> None:
        self.sim.advance(nanoseconds)

    def advance_to(self, timestamp: int) -> None:
        self.sim.advance(timestamp - self.sim.now)

    def account_balances(self, account_id: int) -> Balances5 | None:
        a = self.sim.account(account_id)
        if a is None:
            return None
        return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.closed)

    def transfer_amount(self, transfer_id: int) -> int | None:
        t = self.sim.transfer(transfer_id)
        return t.amount if t is not None else None

    def account_flags(self, account_id: int) -> int:
        account = self.sim.account(account_id)
        assert account is not None
        return account.flags

    def account_ledger(self, account_id: int) -> int:
        account = self.sim.account(account_id)
        assert account is not None
        return account.ledger


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
@pytest.mark.parametrize(("partitions", "processes"), [(1, 0), (3, 0), (8, 0), (3, 1), (8, 3)])
def test_scenarios_through_the_protocol(
    scenario: dict[str, Any], partitions: int, processes: int
) -> None:
    """`processes`: how many processes own the partitions (0: one each); partitions owned by
    one process decide together without sequencing (the co-located path)."""
    driver = SimDriver(partitions, seed=partitions, processes=processes)
    assert run_scenario(driver, scenario) == len(scenario["steps"])
    assert driver.sim.quiet()


def _submit(sim: SimNetwork, op: Op) -> CommandBatch | None:
    if op.kind == "accounts":
        return sim.accounts(op.payload)
    if op.kind == "transfers":
        return sim.transfers(op.payload)
    if op.kind == "advance":
        return None
    if op.kind == "settings":
        account_id, version, patch = op.payload
        return sim.command(AccountCommandKind.UPDATE_SETTINGS, account_id, version, patch)
    account_id, version = op.payload
    kind = {
        "freeze": AccountCommandKind.FREEZE,
        "unfreeze": AccountCommandKind.UNFREEZE,
        "close": AccountCommandKind.CLOSE,
    }[op.kind]
    return sim.command(kind, account_id, version)


def _reference(reference: ReferenceLedger, op: Op) -> list[int]:
    if op.kind == "accounts":
        return [r.status for r in reference.create_accounts([a.copy() for a in op.payload])]
    if op.kind == "transfers":
        return [r.status for r in reference.create_transfers([t.copy() for t in op.payload])]
    if op.kind == "advance":
        reference.advance(op.payload * 1_000_000_000)
        return []
    if op.kind == "settings":
        account_id, version, patch = op.payload
        return [reference.update_settings(account_id, patch, version).status]
    account_id, version = op.payload
    command = {"freeze": reference.freeze, "unfreeze": reference.unfreeze, "close": reference.close}
    return [command[op.kind](account_id, version).status]


def _user_visible(account: Account) -> tuple[Any, ...]:
    return (
        account.debits_pending, account.debits_posted, account.credits_pending,
        account.credits_posted, account.flags, account.version, account.frozen,
        account.settings(),
    )  # fmt: skip


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    program=st.lists(OPS, min_size=3, max_size=12),
    partitions=st.integers(2, 5),
    seed=st.integers(0, 2**16),
    processes=st.integers(0, 3),
)
def test_protocol_equals_sequential(
    program: list[Op], partitions: int, seed: int, processes: int
) -> None:
    """Requests one after another through the protocol give the reference ledger's results and
    state, whatever order the network delivers messages in, and however many processes own the
    partitions."""
    reference = ReferenceLedger()
    sim = SimNetwork(partitions, seed, restart_probability=0.05, processes=processes)
    user_transfer_ids: set[int] = set()
    for op in [*SEED, *program]:
        expected = _reference(reference, op)
        batch = _submit(sim, op)
        if batch is None:
            sim.advance(op.payload * 1_000_000_000 + _ADVANCE_MARGIN_NS)
            continue
        if op.kind == "transfers":
            user_transfer_ids.update(t.id for t in op.payload)
        sim.submit(batch)
        sim.run()
        result = sim.results[batch.request_id]
        assert [r.status for r in result.results] == expected, op
    assert sim.quiet()
    assert isinstance(reference.state, MemoryState)
    for account_id, account in reference.state.accounts.items():
        mine = sim.account(account_id)
        if account_id >= 1 << 126:  # settlement accounts: ids are the same, timestamps not
            assert mine is not None
            continue
        assert mine is not None and _user_visible(mine) == _user_visible(account), account_id
    for transfer_id in user_transfer_ids:
        theirs = reference.state.get_transfer(transfer_id)
        mine_t = sim.transfer(transfer_id)
        assert (mine_t is None) == (theirs is None), transfer_id
        if mine_t is not None and theirs is not None:
            mine_t, theirs = mine_t.copy(), theirs.copy()
            mine_t.timestamp = theirs.timestamp = 0
            assert mine_t == theirs


requests_by_id: dict[int, CommandBatch] = {}


def decision_time(result: ResultBatch) -> float:
    """When a request took effect: its newest timestamp (an `exists` names the original's
    time, so a request of nothing but retries goes last: it reads only immutable facts)."""
    fresh = [r.timestamp for r in result.results if r.status != CreateTransferStatus.EXISTS]
    return max(fresh) if fresh else float("inf")


def assert_serializable_in_timestamp_order(sim: SimNetwork, submitted: list[int]) -> None:
    """Replaying the requests one by one in the order of their timestamps gives the same
    results and balances: the pipeline's order is a serial order."""
    reference = ReferenceLedger()
    for op in SEED:
        _reference(reference, op)
    order = sorted(submitted, key=lambda rid: decision_time(sim.results[rid]))
    for request_id in order:
        batch = requests_by_id[request_id]
        if batch.operation is Operation.CREATE_TRANSFERS:
            expected = [r.status for r in reference.create_transfers(batch.transfers)]
        else:
            command = batch.account_command
            assert command is not None
            action = {
                AccountCommandKind.FREEZE: reference.freeze,
                AccountCommandKind.UNFREEZE: reference.unfreeze,
            }[command.kind]
            expected = [action(command.account_id, command.expected_version).status]
        assert [r.status for r in sim.results[request_id].results] == expected, batch
    assert isinstance(reference.state, MemoryState)
    for account_id, account in reference.state.accounts.items():
        mine = sim.account(account_id)
        assert mine is not None
        assert mine.balances() == account.balances(), account_id


def assert_causal_time(sim: SimNetwork) -> None:
    """Each account's changes carry increasing timestamps in its owner's log: a decision that
    follows another on the same account is timed after it, whatever the clocks say. (Another
    partition's log may list them in another order: it folds only its own keys of them.)"""
    for partition, log in enumerate(sim.logs):
        ownership = sim.ownership(partition)
        last: dict[int, int] = {}
        for event in log:
            if isinstance(event, TransferApplied):
                sides = [b.account_id for b in (event.debit, event.credit) if b is not None]
            elif isinstance(event, AccountChanged):
                sides = [event.account.id]
            else:
                continue
            for account_id in sides:
                if not ownership.owns_account(account_id):
                    continue
                assert event.timestamp > last.get(account_id, 0), (account_id, event)
                last[account_id] = event.timestamp


def _replayed(sim: SimNetwork, partition: int) -> MemoryState:
    state = MemoryState()
    for event in sim.logs[partition]:
        apply_event(state, event, sim.ownership(partition))
    return state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    partitions=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    requests=st.integers(10, 60),
    processes=st.integers(0, 3),
    transfers_max=st.sampled_from([1, 2, 5]),
)
def test_concurrent_requests_settle_consistently(
    partitions: int, seed: int, requests: int, processes: int, transfers_max: int
) -> None:
    """Many requests in flight at once, on every home: each gets exactly one answer, the books
    balance, limits hold, nothing stays locked, and every partition's log replays to its state."""
    import random

    rng = random.Random(seed)
    sim = SimNetwork(
        partitions,
        seed,
        restart_probability=0.05,
        processes=processes,
        clock_skew_max_ns=500_000,
    )
    for op in SEED:
        batch = _submit(sim, op)
        assert batch is not None
        sim.submit(batch)
        sim.run()
    submitted = []
    requests_by_id.clear()
    for n in range(requests):
        transfers = []
        for i in range(rng.randrange(1, transfers_max + 1)):
            debit, credit = rng.sample([1, 2, 3, 4, 5, 6, 9, 100], 2)
            flags = rng.choice([0, 0, int(TransferFlags.PENDING), int(TransferFlags.LINKED)])
            transfers.append(
                Transfer(10_000 + n * 10 + i, debit_account_id=debit, credit_account_id=credit,
                         amount=rng.randrange(1, 30), ledger=1, code=1, flags=flags)
            )  # fmt: skip
        if rng.random() < 0.2:
            batch = sim.command(rng.choice(list(AccountCommandKind)[:2]), rng.randrange(1, 7))
        else:
            batch = sim.transfers(transfers)
        submitted.append(sim.submit(batch))
        requests_by_id[batch.request_id] = batch
    sim.run()
    assert sorted(sim.answered) == sorted(set(sim.answered))
    assert set(submitted) <= set(sim.results)
    assert sim.quiet()
    assert_serializable_in_timestamp_order(sim, submitted)
    merged = MemoryState()
    for state in sim.states:
        merged.accounts.update(state.accounts)
    assert_balanced(merged)
    assert_within_limits(merged)
    assert_causal_time(sim)
    for partition in range(partitions):
        replayed = _replayed(sim, partition)
        ownership = sim.ownership(partition)
        owned = {
            k: v for k, v in sim.states[partition].accounts.items() if ownership.owns_account(k)
        }
        assert replayed.accounts == owned


def test_co_located_and_sequenced_decisions_interleave() -> None:
    """Two processes of two partitions, single-transfer requests: co-located decisions and
    sequenced ones hit the same accounts, with the processes' clocks apart; everything above
    holds, and each account's changes are timed in causal order (60 fixed seeds: dropping the
    co-located path's clock bump fails about one in fifteen)."""
    for seed in range(60):
        test_concurrent_requests_settle_consistently.hypothesis.inner_test(  # type: ignore[attr-defined]
            partitions=4, seed=seed, requests=60, processes=2, transfers_max=1
        )


def test_account_command_results_carry_the_version() -> None:
    sim = SimNetwork(3)
    sim.submit(sim.accounts([Account(1, ledger=1, code=1)]))
    sim.run()
    request = sim.submit(sim.command(AccountCommandKind.FREEZE, 1, expected_version=1))
    sim.run()
    (entry,) = sim.results[request].results
    assert (entry.status, entry.version) == (AccountCommandStatus.OK, 2)


def test_malformed_requests_are_rejected_with_a_reason() -> None:
    sim = SimNetwork(2)
    batch = sim.request(Operation.CREATE_ACCOUNTS, transfers=[Transfer(1)])
    sim.submit(batch)
    sim.run()
    assert sim.results[batch.request_id].rejection == (
        "operation: create_accounts carries only accounts"
    )
