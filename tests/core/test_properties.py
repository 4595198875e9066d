"""Property tests: random programs of batches against the reference and partitioned ledgers.

After every operation the SPEC §4 invariants hold; the partitioned ledger (state split among
owners, decided stepwise) gives exactly the sequential results and events; folding the event
log from nothing rebuilds the state exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ledger import PartitionedLedger, PartitionOwnership, ReferenceLedger
from processors.ledger.state import MemoryState
from schemas import (
    AMOUNT_MAX,
    Account,
    AccountFlags,
    Policy,
    Transfer,
    TransferFlags,
    UpdateSettings,
)
from tests.core.invariants import (
    assert_balanced,
    assert_log_consistent,
    assert_same_state,
    assert_within_limits,
    replay,
)

ACCOUNT_IDS = st.integers(1, 12)
# Accounts by ledger: 1-8 are created by the seed, 9-12 by the programs, 100/200 are sources.
LEDGER_ACCOUNTS = {1: [1, 2, 3, 4, 5, 6, 9, 10, 100], 2: [7, 8, 11, 12, 200]}
PENDING_IDS = st.integers(1, 12)  # pending transfers take these ids, posts and voids name them
TRANSFER_IDS = st.integers(13, 60)
SMALL = st.integers(0, 60)


def ledger_of(account_id: int) -> int:
    return 1 if account_id in LEDGER_ACCOUNTS[1] else 2


@st.composite
def accounts(draw: Any) -> Account:
    flags = draw(
        st.sampled_from(
            [
                0,
                0,
                0,
                AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
                AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
                AccountFlags.HISTORY,
                AccountFlags.LINKED,
            ]
        )
    )
    policy, min_balance = draw(
        st.sampled_from(
            [
                (None, None),
                (None, None),
                (Policy.NO_OVERDRAFT, None),
                (Policy.CAPPED_OVERDRAFT, -20),
                (Policy.UNCAPPED_OVERDRAFT, None),
                (Policy.SYSTEM, None),
                (None, -10),
            ]
        )
    )
    max_balance = draw(st.sampled_from([None, None, None, 80]))
    settle = draw(st.sampled_from([(None, None), (None, None), (40, 5), (30, 0)]))
    account_id = draw(ACCOUNT_IDS)
    return Account(
        account_id,
        ledger=draw(st.sampled_from([ledger_of(account_id)] * 5 + [3 - ledger_of(account_id)])),
        code=1,
        flags=int(flags),
        policy=policy,
        min_balance=min_balance,
        max_balance=max_balance,
        settle_threshold=settle[0],
        settle_to=settle[1],
        link_type=draw(st.sampled_from([None, "http"])),
        metadata=draw(st.sampled_from([{}, {"owner": "alice"}])),
    )


@st.composite
def transfers(draw: Any) -> Transfer:
    kind = draw(st.sampled_from(["single", "single", "pending", "post", "void"]))
    linked = draw(st.sampled_from([0, 0, 0, TransferFlags.LINKED]))
    pins = draw(st.sampled_from([(0, 0)] * 8 + [(1, 0), (0, 2), (2, 1)]))
    if kind in ("post", "void"):
        flag = TransferFlags.POST_PENDING_TRANSFER if kind == "post" else 0
        flag = flag or TransferFlags.VOID_PENDING_TRANSFER
        amount = draw(st.sampled_from([0, 1, 5, 10, AMOUNT_MAX]))
        return Transfer(
            draw(TRANSFER_IDS),
            debit_account_id=draw(st.sampled_from([0, 0, 0, 1])),
            amount=amount,
            pending_id=draw(PENDING_IDS),
            flags=int(flag | linked),
            debit_account_version=pins[0],
            credit_account_version=pins[1],
        )
    flags = int(linked)
    timeout = 0
    if kind == "pending":
        flags |= TransferFlags.PENDING
        timeout = draw(st.sampled_from([0, 0, 1, 2]))
        flags |= draw(
            st.sampled_from([0, 0, 0, TransferFlags.CLOSING_DEBIT, TransferFlags.CLOSING_CREDIT])
        )
    balancing = draw(
        st.sampled_from([0, 0, 0, 0, TransferFlags.BALANCING_DEBIT, TransferFlags.BALANCING_CREDIT])
    )
    flags |= balancing
    ledger = draw(st.sampled_from([1, 1, 1, 2]))
    debit, credit = draw(st.permutations(LEDGER_ACCOUNTS[ledger]))[:2]
    if draw(st.integers(0, 15)) == 0:  # now and then a cross-ledger or self transfer
        credit = draw(ACCOUNT_IDS)
    amount = draw(st.one_of(SMALL, st.just(AMOUNT_MAX))) if balancing else draw(SMALL)
    return Transfer(
        draw(PENDING_IDS if kind == "pending" else TRANSFER_IDS),
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        timeout=timeout,
        ledger=draw(st.sampled_from([ledger] * 12 + [3 - ledger])),
        code=1,
        flags=int(flags),
        debit_account_version=pins[0],
        credit_account_version=pins[1],
    )


@dataclass
class Op:
    kind: str
    payload: Any


OPS = st.one_of(
    st.builds(Op, st.just("accounts"), st.lists(accounts(), max_size=4)),
    st.builds(Op, st.just("transfers"), st.lists(transfers(), min_size=1, max_size=12)),
    st.builds(Op, st.just("transfers"), st.lists(transfers(), min_size=1, max_size=12)),
    st.builds(Op, st.just("transfers"), st.lists(transfers(), min_size=1, max_size=12)),
    st.builds(Op, st.just("transfers"), st.lists(transfers(), min_size=1, max_size=12)),
    st.builds(
        Op,
        st.sampled_from(["freeze", "unfreeze", "close"]),
        st.tuples(ACCOUNT_IDS, st.sampled_from([0, 0, 1, 2, 3])),
    ),
    st.builds(
        Op,
        st.just("settings"),
        st.tuples(
            ACCOUNT_IDS,
            st.sampled_from([0, 0, 1, 2]),
            st.sampled_from(
                [
                    UpdateSettings(min_balance=-30),
                    UpdateSettings(policy=Policy.NO_OVERDRAFT),
                    UpdateSettings(policy=None, min_balance=None),
                    UpdateSettings(max_balance=50),
                    UpdateSettings(settle_threshold=25, settle_to=0),
                    UpdateSettings(metadata={"k": "v"}),
                    UpdateSettings(link_type=None, metadata=None),
                ]
            ),
        ),
    ),
    st.builds(Op, st.just("advance"), st.integers(1, 3)),
)

# A funded start so limits, balancing, two-phase and settlement have something to work with.
SEED = [
    Op(
        "accounts",
        [
            Account(100, ledger=1, code=1, policy=Policy.EXTERNAL),
            Account(200, ledger=2, code=1, policy=Policy.EXTERNAL),
            Account(9, ledger=1, code=1, settle_threshold=40, settle_to=10),
            Account(11, ledger=2, code=1, policy=Policy.CAPPED_OVERDRAFT, min_balance=-20),
        ],
    ),
    Op(
        "accounts",
        [
            Account(i, ledger=1 if i < 7 else 2, code=1, flags=int(AccountFlags.HISTORY))
            for i in range(1, 9)
        ],
    ),
    Op(
        "transfers",
        [
            Transfer(
                1000 + i,
                debit_account_id=100 if i < 7 else 200,
                credit_account_id=i,
                amount=50,
                ledger=1 if i < 7 else 2,
                code=1,
            )
            for i in range(1, 9)
        ]
        + [
            Transfer(
                i,
                debit_account_id=i,
                credit_account_id=9 if i % 2 else 100,
                amount=5 + i,
                timeout=i % 3,
                ledger=1,
                code=1,
                flags=int(TransferFlags.PENDING),
            )
            for i in range(1, 7)
        ],
    ),
]


def run(ledger: ReferenceLedger | PartitionedLedger, op: Op) -> Any:
    if op.kind == "accounts":
        return ledger.create_accounts([a.copy() for a in op.payload])
    if op.kind == "transfers":
        return ledger.create_transfers([t.copy() for t in op.payload])
    if op.kind == "advance":
        ledger.advance(op.payload * 1_000_000_000)
        return None
    if op.kind == "settings":
        account_id, version, patch = op.payload
        return ledger.update_settings(account_id, patch, version)
    account_id, version = op.payload
    command = {"freeze": ledger.freeze, "unfreeze": ledger.unfreeze, "close": ledger.close}
    return command[op.kind](account_id, version)


def owned_slice(state: MemoryState, ownership: PartitionOwnership) -> dict[str, Any]:
    return {
        "accounts": {k: v for k, v in state.accounts.items() if ownership.owns_account(k)},
        "transfers": {k: v for k, v in state.transfers.items() if ownership.owns_transfer(k)},
        "pending": {k: v for k, v in state.pending.items() if ownership.owns_transfer(k)},
        "failed": {k: v for k, v in state.failed.items() if ownership.owns_transfer(k)},
        "settlements": {
            k: v for k, v in state.settlements.items() if ownership.owns_account(k) and v
        },
    }


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=st.lists(OPS, min_size=3, max_size=14), partitions=st.integers(2, 4))
def test_invariants_stepwise_and_replay(program: list[Op], partitions: int) -> None:
    reference = ReferenceLedger()
    partitioned = PartitionedLedger(partitions)
    for op in [*SEED, *program]:
        expected = run(reference, op)
        actual = run(partitioned, op)
        assert actual == expected, op
        assert isinstance(reference.state, MemoryState)
        assert_balanced(reference.state)
        assert_within_limits(reference.state)
    assert partitioned.log == reference.log
    assert isinstance(reference.state, MemoryState)
    assert_log_consistent(reference.log, reference.state)
    assert_same_state(replay(reference.log), reference.state)
    for owner, ownership in zip(partitioned.owners, partitioned.ownership, strict=True):
        assert owned_slice(owner, ownership) == owned_slice(reference.state, ownership)


def test_seed_program_moves_money_across_partitions() -> None:
    """The property test's partitioned runs really take the cross-partition path."""
    partitioned = PartitionedLedger(4)
    for op in SEED:
        run(partitioned, op)
    assert partitioned.cross_partition_events > 0
    assert all(owner.accounts for owner in partitioned.owners)
