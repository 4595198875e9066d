"""The Avro codec of the cross-partition protocol (SequencedEntry, Facts, Apply) and the
processor Checkpoint (references to the partition's inbox), and the hand-written fast path of
TransferApplied event lists."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    AvroCodec,
    DecodeError,
    EncodeError,
    decode_apply,
    decode_checkpoint,
    decode_facts,
    decode_sequenced_entry,
    encode_apply,
    encode_checkpoint,
    encode_command_batch,
    encode_event_batch,
    encode_facts,
    encode_result_batch,
    encode_sequenced_entry,
)
from schemas.codes import BATCH_EVENTS_MAX, U32_MAX, U64_MAX, U128_MAX, Policy
from schemas.events import Event, SettlementRequested, TransferApplied, TransferFailed, TransferKind
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    Apply,
    Checkpoint,
    CommandBatch,
    DecisionRef,
    EntryRef,
    EventBatch,
    ExpireRequest,
    Facts,
    Operation,
    SequencedEntry,
)
from schemas.records import Account, Balances, Transfer, UpdateSettings
from tests.schemas.test_codec import (
    accounts,
    all_events,
    balances,
    command_batch,
    command_batches,
    events,
    expect_decode_error,
    full_account,
    full_transfer,
    make_v2_dir,
    named_types,
    raw_decode,
    raw_encode,
    transfers,
    u32,
    u64,
    u128,
)

I32_MAX = (1 << 31) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

# ---------------------------------------------------------------------------------------------
# Fixtures


def requests() -> list[CommandBatch]:
    """A CommandBatch of each operation (and each account command), with edge values."""
    settings_all = UpdateSettings(Policy.SYSTEM, -U128_MAX, None, 0, 5, "http", {"é": "✓"})
    return [
        command_batch(operation=Operation.CREATE_ACCOUNTS, transfers=[]),
        command_batch(operation=Operation.CREATE_TRANSFERS, accounts=[]),
        *(
            command_batch(
                operation=Operation.ACCOUNT_COMMAND,
                accounts=[],
                transfers=[],
                account_command=AccountCommand(
                    kind,
                    U128_MAX,
                    U64_MAX,
                    settings_all if kind is AccountCommandKind.UPDATE_SETTINGS else None,
                ),
            )
            for kind in AccountCommandKind
        ),
    ]


def sequenced(**overrides: Any) -> SequencedEntry:
    entry = SequencedEntry(
        home=I32_MAX, attempt=U32_MAX, account_ids=[0, 1, U128_MAX],
        transfer_ids=[U128_MAX, 7], all_partitions=True, request=command_batch(),
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(entry, name, value)
    return entry


def full_facts(**overrides: Any) -> Facts:
    facts = Facts(
        sequence=I64_MAX, sender=I32_MAX,
        accounts={U128_MAX: full_account(), 0: None, 5: Account(id=5)},
        settlements={U128_MAX: U128_MAX, 1: 0},
        transfers={3: None, U128_MAX: full_transfer(), 4: Transfer(id=4)},
        pending={U128_MAX: 1, 0: 4}, failed={9: U32_MAX, 10: 0},
        expiries={U128_MAX: (U64_MAX, U64_MAX), 1: (0, 0), 2: (1 << 63, 1)},
        max_account_timestamp=U64_MAX, max_transfer_timestamp=1 << 63,
        timestamp_kinds={U64_MAX: U32_MAX, 0: 1, 1 << 63: 2}, last_timestamp=U64_MAX,
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(facts, name, value)
    return facts


def full_checkpoint() -> Checkpoint:
    return Checkpoint(
        partition=I32_MAX, commands_offset=I64_MAX, events_offset=-1, last_timestamp=U64_MAX,
        now=U64_MAX, sequence_next=0,
        entries=[
            EntryRef(0, False),  # no Apply yet: apply_offset -1
            EntryRef(I64_MAX, True, I64_MAX),
            EntryRef(I64_MIN, True, I64_MIN),
            EntryRef(-1, False, 0),
        ],
        decisions=[
            DecisionRef(5, False),
            DecisionRef(I64_MAX, True, [0, I32_MAX, -(1 << 31), 7], [0, I64_MAX, I64_MIN, -1]),
            DecisionRef(I64_MIN, False, [3], [42]),
        ],
        deferred=[I64_MAX, 0, -1, I64_MIN],
        expiring=[U128_MAX, 0, 1],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("request_", [None, *requests()])
def test_sequenced_entry_round_trip_with_each_request(request_: CommandBatch | None) -> None:
    entry = sequenced(request=request_)
    assert decode_sequenced_entry(encode_sequenced_entry(entry)) == entry


@pytest.mark.parametrize("expire", [ExpireRequest([U128_MAX, 0, 1], U64_MAX), ExpireRequest([], 0)])
def test_sequenced_entry_round_trip_with_an_expire_request(expire: ExpireRequest) -> None:
    entry = SequencedEntry(-1, 0, [], [], False, expire=expire)
    decoded = decode_sequenced_entry(encode_sequenced_entry(entry))
    assert decoded == entry and decoded.request is None


def test_facts_round_trip_with_edge_values() -> None:
    facts = full_facts()
    decoded = decode_facts(encode_facts(facts))
    assert decoded == facts
    assert decoded.accounts[0] is None and decoded.transfers[3] is None  # "does not exist"
    assert list(decoded.accounts) == list(facts.accounts)  # the dict's order survives
    assert isinstance(decoded.expiries[1], tuple)


def test_facts_empty_dicts_round_trip() -> None:
    facts = Facts(-1, 0)
    assert decode_facts(encode_facts(facts)) == facts


def test_facts_travel_as_arrays_of_id_value_records() -> None:
    data = encode_facts(full_facts(pending={U128_MAX: 1}, timestamp_kinds={U64_MAX: 2}))
    raw = raw_decode("Facts", data)
    assert raw["pending"] == [{"id": b"\xff" * 16, "value": 1}]
    assert raw["timestamp_kinds"] == [{"id": -1, "value": 2}]  # u64 keys as two's complement
    assert raw["expiries"][0] == {"id": b"\xff" * 16, "value": {"expires_at": -1, "timestamp": -1}}
    assert raw["accounts"][1] == {"id": bytes(16), "value": None}


@pytest.mark.parametrize("sequence", [0, -1, I64_MAX, I64_MIN])
def test_apply_round_trip(sequence: int) -> None:
    for apply in (Apply(sequence), Apply(sequence, all_events())):
        assert decode_apply(encode_apply(apply)) == apply


def test_apply_carries_more_events_than_a_request_batch() -> None:
    # A decision over a full batch emits an event per transfer plus settlements.
    applied = TransferApplied(TransferKind.POST, full_transfer(), 1, None, None, 2)
    settlement = SettlementRequested(1, 2, 3, -4, 5)
    many: list[Event] = [applied] * BATCH_EVENTS_MAX
    many += [settlement] * 10
    apply = Apply(1, many)
    assert decode_apply(encode_apply(apply)) == apply
    with pytest.raises(EncodeError, match=r"^events: 1000001 entries exceed the maximum"):
        encode_apply(Apply(1, [settlement] * (codec.EVENT_BATCH_EVENTS_MAX + 1)))


def test_checkpoint_round_trip_with_edge_values() -> None:
    checkpoint = full_checkpoint()
    decoded = decode_checkpoint(encode_checkpoint(checkpoint))
    assert decoded == checkpoint
    assert decoded.entries[0].apply_offset == -1 and decoded.entries[3].apply_offset == 0
    assert decoded.entries[1].admitted is True and decoded.entries[0].admitted is False
    assert decoded.decisions[0].senders == [] and decoded.decisions[0].facts_offsets == []
    assert decoded.decisions[1].facts_offsets == [0, I64_MAX, I64_MIN, -1]
    assert decoded.deferred == [I64_MAX, 0, -1, I64_MIN]  # commands offsets, in order


@pytest.mark.parametrize("offset", [0, -1, 1, I64_MAX, I64_MIN])
def test_checkpoint_offsets_round_trip(offset: int) -> None:
    checkpoint = Checkpoint(
        0, offset, offset, 0, 0, offset,
        entries=[EntryRef(offset, True, offset)],
        decisions=[DecisionRef(offset, True, [1], [offset])],
        deferred=[offset],
    )  # fmt: skip
    assert decode_checkpoint(encode_checkpoint(checkpoint)) == checkpoint


def test_checkpoint_names_payloads_by_reference_only() -> None:
    # The payloads live in the partition's inbox: the schema holds no payload type, and the
    # checkpoint's size does not depend on how big the requests in flight are.
    schema = json.loads((codec.SCHEMA_DIR / "ledger.Checkpoint.v1.avsc").read_text())
    names = set(named_types(schema, {}))
    assert names == {"ledger.Checkpoint", "ledger.EntryRef", "ledger.DecisionRef", "ledger.u128"}
    raw = raw_decode("Checkpoint", encode_checkpoint(full_checkpoint()))
    assert raw["entries"][0] == {"offset": 0, "admitted": False, "apply_offset": -1}
    assert raw["entries"][1] == {"offset": I64_MAX, "admitted": True, "apply_offset": I64_MAX}
    assert raw["decisions"][1] == {
        "offset": I64_MAX, "has_entry": True, "senders": [0, I32_MAX, -(1 << 31), 7],
        "facts_offsets": [0, I64_MAX, I64_MIN, -1],
    }  # fmt: skip
    assert raw["deferred"] == [I64_MAX, 0, -1, I64_MIN]  # commands offsets as Avro longs
    assert raw["expiring"][0] == b"\xff" * 16  # transfer ids as ledger.u128
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert fields["deferred"] == {"type": "array", "items": "long"}
    entry_ref = {f["name"]: f["type"] for f in fields["entries"]["items"]["fields"]}
    assert entry_ref == {"offset": "long", "admitted": "boolean", "apply_offset": "long"}
    decision_ref = {f["name"]: f["type"] for f in fields["decisions"]["items"]["fields"]}
    assert decision_ref["facts_offsets"] == {"type": "array", "items": "long"}
    many = Checkpoint(
        0, 0, -1, 0, 0, 0,
        entries=[EntryRef(i, True, 1 << 40) for i in range(1000)],
        decisions=[DecisionRef(i, True, [0, 1], [1 << 40, 1 << 41]) for i in range(1000)],
        deferred=[(1 << 40) + i for i in range(1000)],
    )  # fmt: skip
    assert len(encode_checkpoint(many)) < 40_000  # varints of the offsets only, no payloads


def test_empty_checkpoint_round_trip() -> None:
    checkpoint = Checkpoint(0, 0, -1, 0, 0, 0)
    assert decode_checkpoint(encode_checkpoint(checkpoint)) == checkpoint
    checkpoint = Checkpoint(0, 0, -1, 0, 0, 0, decisions=[DecisionRef(0, True, [], [])])
    decoded = decode_checkpoint(encode_checkpoint(checkpoint))
    assert decoded == checkpoint and decoded.decisions[0].facts_offsets == []


# Hypothesis

i32 = st.integers(-(1 << 31), I32_MAX)
i64 = st.integers(I64_MIN, I64_MAX)
ids = st.lists(u128, max_size=4)
expire_requests = st.builds(ExpireRequest, ids, u64)
sequenced_entries = st.builds(
    SequencedEntry, i32, u32, ids, ids, st.booleans(),
    st.none() | command_batches, st.none() | expire_requests,
)  # fmt: skip
facts_st = st.builds(
    Facts, i64, i32,
    st.dictionaries(u128, st.none() | accounts, max_size=3),
    st.dictionaries(u128, u128, max_size=3),
    st.dictionaries(u128, st.none() | transfers, max_size=3),
    st.dictionaries(u128, u32, max_size=3),
    st.dictionaries(u128, u32, max_size=3),
    st.dictionaries(u128, st.tuples(u64, u64), max_size=3),
    u64, u64,
    st.dictionaries(u64, u32, max_size=3),
    u64,
)  # fmt: skip
applies = st.builds(Apply, i64, st.lists(events, max_size=5))
# senders and facts_offsets are parallel lists: one Facts offset per sender.
decision_refs = st.builds(
    lambda offset, has_entry, facts: DecisionRef(
        offset, has_entry, [s for s, _ in facts], [o for _, o in facts]
    ),
    i64, st.booleans(), st.lists(st.tuples(i32, i64), max_size=4),
)  # fmt: skip
checkpoints = st.builds(
    Checkpoint, i32, i64, i64, u64, u64, i64,
    st.lists(st.builds(EntryRef, i64, st.booleans(), st.just(-1) | i64), max_size=5),
    st.lists(decision_refs, max_size=5),
    st.lists(i64, max_size=4),
    ids,
)  # fmt: skip


@given(sequenced_entries)
def test_property_sequenced_entry_round_trip(entry: SequencedEntry) -> None:
    assert decode_sequenced_entry(encode_sequenced_entry(entry)) == entry


@given(facts_st)
def test_property_facts_round_trip(facts: Facts) -> None:
    assert decode_facts(encode_facts(facts)) == facts


@given(applies)
def test_property_apply_round_trip(apply: Apply) -> None:
    assert decode_apply(encode_apply(apply)) == apply


@given(checkpoints)
def test_property_checkpoint_round_trip(checkpoint: Checkpoint) -> None:
    assert decode_checkpoint(encode_checkpoint(checkpoint)) == checkpoint


# ---------------------------------------------------------------------------------------------
# Encoding refuses what the wire cannot carry, naming the field


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        (sequenced(home=1 << 31), "home", "not a signed 32-bit integer"),
        (sequenced(attempt=-1), "attempt", "negative"),
        (sequenced(all_partitions=1), "all_partitions", "not a bool"),
        (sequenced(account_ids=[1, -2]), "account_ids[1]", "negative"),
        (sequenced(transfer_ids=(1,)), "transfer_ids", "not a list"),
        (sequenced(request=command_batch(transfers=[Transfer(id=1, ledger=1 << 32)])),
         "request.transfers[0].ledger", "exceeds u32"),
        (sequenced(request="x"), "request", "is not a CommandBatch"),
        (sequenced(expire=ExpireRequest([1, U128_MAX + 1], 0)), "expire.transfer_ids[1]",
         "exceeds u128"),
        (sequenced(expire=ExpireRequest([], 1 << 64)), "expire.now", "exceeds u64"),
        (full_facts(sender=None), "sender", "not a signed 32-bit"),
        (full_facts(accounts={1: None, 2: Account(id=2, code=1 << 16)}),
         "accounts[1].value.code", "exceeds u16"),
        (full_facts(accounts={-1: None}), "accounts[0].id", "negative"),
        (full_facts(accounts={1: Transfer(id=1)}), "accounts[0].value", "is not an Account"),
        (full_facts(transfers={1: full_transfer(timeout=-1)}), "transfers[0].value.timeout",
         "negative"),
        (full_facts(settlements={1: U128_MAX + 1}), "settlements[0].value", "exceeds u128"),
        (full_facts(pending={1: 1 << 32}), "pending[0].value", "exceeds u32"),
        (full_facts(failed=[]), "failed", "not a dict"),
        (full_facts(expiries={1: (1, 2, 3)}), "expiries[0].value", "not an (expires_at"),
        (full_facts(expiries={1: (1, -2)}), "expiries[0].value.timestamp", "negative"),
        (full_facts(timestamp_kinds={1 << 64: 1}), "timestamp_kinds[0].id", "exceeds u64"),
        (full_facts(last_timestamp=-1), "last_timestamp", "negative"),
        (Apply(1 << 63), "sequence", "not a signed 64-bit"),
        (Apply(0, [TransferFailed(1, 2, 3), TransferFailed(1, 1 << 32, 3)]), "events[1].status",
         "exceeds u32"),
        (Apply(0, [TransferApplied(TransferKind.POST, Transfer(id=1), 0, None, None, -1)]),
         "events[0].timestamp", "negative"),
        (Apply(0, [TransferApplied(TransferKind.POST, Transfer(id=1), 0,
                                   Balances(1, 2, 3, 4, 1 << 128), None, 0)]),
         "events[0].debit.credits_posted", "exceeds u128"),
        (Apply(0, ["event"]), "events[0]", "not an event"),  # type: ignore[list-item]
        ("not a message", None, "str is not an Apply"),
    ],
)  # fmt: skip
def test_protocol_encode_errors_name_the_field(value: Any, field: str | None, reason: str) -> None:
    encode: Any = {
        SequencedEntry: encode_sequenced_entry, Facts: encode_facts, Apply: encode_apply,
    }.get(type(value), encode_apply)  # fmt: skip
    with pytest.raises(EncodeError) as info:
        encode(value)
    assert info.value.field == field, str(info.value)
    assert reason in info.value.reason, str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda c: setattr(c, "events_offset", 1 << 63), "events_offset", "signed 64-bit"),
        (lambda c: setattr(c, "partition", -(1 << 31) - 1), "partition", "signed 32-bit"),
        (lambda c: setattr(c, "now", U64_MAX + 1), "now", "exceeds u64"),
        (lambda c: setattr(c, "last_timestamp", -1), "last_timestamp", "negative"),
        (lambda c: setattr(c.entries[2], "offset", I64_MIN - 1), "entries[2].offset",
         "signed 64-bit"),
        (lambda c: setattr(c.entries[1], "admitted", None), "entries[1].admitted", "not a bool"),
        (lambda c: setattr(c.entries[0], "apply_offset", I64_MAX + 1), "entries[0].apply_offset",
         "signed 64-bit"),
        (lambda c: setattr(c.entries[2], "apply_offset", I64_MIN - 1), "entries[2].apply_offset",
         "signed 64-bit"),
        (lambda c: setattr(c.entries[3], "apply_offset", None), "entries[3].apply_offset",
         "None is not a signed 64-bit"),
        (lambda c: setattr(c.entries[1], "apply_offset", 1.0), "entries[1].apply_offset",
         "signed 64-bit"),
        (lambda c: c.entries.append(DecisionRef(1, True)), "entries[4]", "is not an EntryRef"),
        (lambda c: setattr(c, "entries", ()), "entries", "not a list"),
        (lambda c: setattr(c.decisions[0], "offset", "5"), "decisions[0].offset",
         "signed 64-bit"),
        (lambda c: setattr(c.decisions[2], "has_entry", None), "decisions[2].has_entry",
         "not a bool"),
        (lambda c: c.decisions[1].senders.append(1 << 31), "decisions[1].senders[4]",
         "signed 32-bit"),
        (lambda c: setattr(c.decisions[2], "senders", {3}), "decisions[2].senders", "not a list"),
        (lambda c: c.decisions[1].facts_offsets.__setitem__(0, I64_MAX + 1),
         "decisions[1].facts_offsets[0]", "signed 64-bit"),
        (lambda c: c.decisions[1].facts_offsets.append(I64_MIN - 1),
         "decisions[1].facts_offsets[4]", "signed 64-bit"),
        (lambda c: c.decisions[2].facts_offsets.__setitem__(0, "42"),
         "decisions[2].facts_offsets[0]", "'42' is not a signed 64-bit"),
        (lambda c: setattr(c.decisions[2], "facts_offsets", (42,)), "decisions[2].facts_offsets",
         "tuple is not a list"),
        (lambda c: c.decisions.append(3), "decisions[3]", "is not a DecisionRef"),
        (lambda c: c.decisions.append(EntryRef(1, True)), "decisions[3]", "is not a DecisionRef"),
        (lambda c: c.deferred.insert(0, I64_MAX + 1), "deferred[0]", "signed 64-bit"),
        (lambda c: c.deferred.append(I64_MIN - 1), "deferred[4]", "signed 64-bit"),
        (lambda c: c.deferred.insert(0, U128_MAX), "deferred[0]", "signed 64-bit"),  # a request id
        (lambda c: c.deferred.append(command_batch()), "deferred[4]", "not a signed 64-bit"),
        (lambda c: setattr(c, "deferred", {1}), "deferred", "set is not a list"),
        (lambda c: c.expiring.append(1.5), "expiring[3]", "not an integer"),
    ],
)  # fmt: skip
def test_checkpoint_encode_errors_name_the_field(mutate: Any, field: str, reason: str) -> None:
    checkpoint = full_checkpoint()
    mutate(checkpoint)
    with pytest.raises(EncodeError) as info:
        encode_checkpoint(checkpoint)
    assert info.value.field == field, str(info.value)
    assert reason in info.value.reason, str(info.value)


# ---------------------------------------------------------------------------------------------
# Decoding bad input: DecodeError only, naming the field

VALID: dict[str, bytes] = {
    "SequencedEntry": encode_sequenced_entry(sequenced(expire=ExpireRequest([1], 2))),
    "Facts": encode_facts(full_facts()),
    "Apply": encode_apply(Apply(7, all_events())),
    "Checkpoint": encode_checkpoint(full_checkpoint()),
}
DECODERS = {
    message: getattr(codec._CODEC, f"decode_{name}")
    for message, name in [
        ("CommandBatch", "command_batch"), ("EventBatch", "event_batch"),
        ("ResultBatch", "result_batch"), ("SequencedEntry", "sequenced_entry"),
        ("Facts", "facts"), ("Apply", "apply"), ("Checkpoint", "checkpoint"),
    ]
}  # fmt: skip


@pytest.mark.parametrize("message", list(VALID))
def test_every_truncation_is_a_decode_error(message: str) -> None:
    data = VALID[message]
    step = max(1, len(data) // 400)  # at most a few hundred cut points
    for cut in [*range(0, len(data), step), len(data) - 1]:
        with pytest.raises(DecodeError):
            DECODERS[message](data[:cut])


@pytest.mark.parametrize("message", list(VALID))
def test_wrong_message_type_is_a_decode_error(message: str) -> None:
    for other, decode in DECODERS.items():
        if other != message:
            with pytest.raises(DecodeError, match=f"a {message} message, not a {other}"):
                decode(VALID[message])


def test_decode_framing_errors_of_protocol_messages() -> None:
    good = VALID["Facts"]
    expect_decode_error(good + b"\x00", None, "1 trailing bytes", "Facts")
    expect_decode_error(b"\x00" + good[1:], None, "wrong magic byte", "Facts")
    expect_decode_error(good[:5], None, "shorter than the 9-byte header", "Facts")
    expect_decode_error(b"L" + bytes(8) + good[9:], None, "unknown schema", "Facts")


def facts_dict(**overrides: Any) -> dict[str, Any]:
    d = raw_decode("Facts", encode_facts(Facts(1, 2)))
    d.update(overrides)
    return d


def test_decode_facts_rejects_duplicate_keys() -> None:
    entry = {"id": bytes(16), "value": 1}
    data = raw_encode("Facts", facts_dict(pending=[entry, {**entry, "id": b"\x01" * 16}, entry]))
    expect_decode_error(data, "pending[2].id", "duplicate key 0", "Facts")
    data = raw_encode("Facts", facts_dict(timestamp_kinds=[{"id": -1, "value": 0}] * 2))
    expect_decode_error(data, "timestamp_kinds[1].id", f"duplicate key {U64_MAX}", "Facts")


def test_decode_out_of_range_values_in_protocol_messages() -> None:
    data = raw_encode("Facts", facts_dict(failed=[{"id": bytes(16), "value": 1 << 32}]))
    expect_decode_error(data, "failed[0].value", "exceeds u32", "Facts")
    data = raw_encode("Facts", facts_dict(timestamp_kinds=[{"id": 5, "value": -1}]))
    expect_decode_error(data, "timestamp_kinds[0].value", "negative", "Facts")
    account = raw_decode("CommandBatch", encode_command_batch(command_batch()))["accounts"][1]
    data = raw_encode(
        "Facts", facts_dict(accounts=[{"id": bytes(16), "value": {**account, "code": -1}}])
    )
    expect_decode_error(data, "accounts[0].value.code", "negative", "Facts")
    entry = raw_decode("SequencedEntry", encode_sequenced_entry(sequenced(request=None)))
    data = raw_encode("SequencedEntry", {**entry, "attempt": 1 << 32})
    expect_decode_error(data, "attempt", "exceeds u32", "SequencedEntry")
    # fastavro reads an Avro int of any varint length: the codec checks the 32-bit range.
    raw = raw_decode("Checkpoint", VALID["Checkpoint"])
    raw["decisions"][1]["senders"][2] = -(1 << 31) - 1
    data = raw_encode("Checkpoint", raw)
    expect_decode_error(data, "decisions[1].senders[2]", "not a signed 32-bit", "Checkpoint")
    data = raw_encode("Checkpoint", {**raw_decode("Checkpoint", VALID["Checkpoint"]),
                                     "partition": 1 << 40})  # fmt: skip
    expect_decode_error(data, "partition", "not a signed 32-bit", "Checkpoint")


def test_decode_truncated_checkpoint_names_the_field() -> None:
    checkpoint = Checkpoint(0, 0, -1, 0, 0, 0, decisions=[DecisionRef(0, True, [1 << 30], [0])])
    data = encode_checkpoint(checkpoint)
    # ... senders: block count 1, the varint of 2^30 (5 bytes), end of block; facts_offsets:
    # count 1, varint 0, end of block; then 2 empty lists. Cut 2 bytes into the varint.
    expect_decode_error(data[:-8], "decisions[0].senders[0]", "truncated payload", "Checkpoint")
    data = encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0, deferred=[I64_MAX]))
    # ... deferred: block count 1, the 10-byte varint of I64_MAX, end of block; expiring empty.
    expect_decode_error(data[:-3], "deferred[0]", "truncated payload", "Checkpoint")
    checkpoint = Checkpoint(0, 0, -1, 0, 0, 0, decisions=[DecisionRef(0, True, [1], [I64_MIN])])
    data = encode_checkpoint(checkpoint)
    # ... facts_offsets: block count 1, the 10-byte varint of I64_MIN, end of block; 2 empty lists.
    expect_decode_error(
        data[:-4], "decisions[0].facts_offsets[0]", "truncated payload", "Checkpoint"
    )
    data = encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0, entries=[EntryRef(0, True, I64_MAX)]))
    # ... entries: count 1, offset, admitted, the 10-byte apply_offset, end; 3 empty lists.
    expect_decode_error(data[:-5], "entries[0].apply_offset", "truncated payload", "Checkpoint")


def test_decode_lists_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "LIST_MAX", 2)
    monkeypatch.setattr(codec, "EVENT_BATCH_EVENTS_MAX", 2)
    data = raw_encode("Facts", facts_dict(settlements=[{"id": bytes(16), "value": bytes(16)}] * 3))
    expect_decode_error(data, "settlements", "3 entries exceed the maximum 2", "Facts")
    data = encode_apply(Apply(0, [TransferFailed(1, 2, 3)] * 2))
    assert len(decode_apply(data).events) == 2
    raw = raw_decode("Apply", data)
    data = raw_encode("Apply", {**raw, "events": raw["events"] * 2})
    expect_decode_error(data, "events", "4 entries exceed the maximum 2", "Apply")
    data = raw_encode("SequencedEntry", {
        **raw_decode("SequencedEntry", VALID["SequencedEntry"]), "account_ids": [bytes(16)] * 3,
    })  # fmt: skip
    expect_decode_error(data, "account_ids", "exceed the maximum 2", "SequencedEntry")
    checkpoint = raw_decode("Checkpoint", encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0)))
    for name, items in [
        ("entries", [{"offset": 0, "admitted": True, "apply_offset": -1}] * 3),
        ("decisions", [{"offset": 0, "has_entry": True, "senders": [], "facts_offsets": []}] * 3),
        ("deferred", [0, 1, 2]),
        ("expiring", [bytes(16)] * 3),
    ]:
        data = raw_encode("Checkpoint", {**checkpoint, name: items})
        expect_decode_error(data, name, "3 entries exceed the maximum 2", "Checkpoint")
    two = {"offset": 0, "has_entry": True, "senders": [1, 2], "facts_offsets": [5, 6]}
    data = raw_encode("Checkpoint", {**checkpoint, "decisions": [two] * 2})
    decoded = decode_checkpoint(data).decisions[1]
    assert decoded.senders == [1, 2] and decoded.facts_offsets == [5, 6]
    for name in ("senders", "facts_offsets"):
        data = raw_encode("Checkpoint", {**checkpoint, "decisions": [{**two, name: [1, 2, 3]}]})
        expect_decode_error(data, f"decisions[0].{name}", "3 entries exceed", "Checkpoint")


def test_encode_checkpoint_lists_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "LIST_MAX", 2)
    checkpoint = Checkpoint(
        0, 0, -1, 0, 0, 0, decisions=[DecisionRef(1, True, [1, 2], [3, 4])], deferred=[5, 6]
    )
    assert decode_checkpoint(encode_checkpoint(checkpoint)) == checkpoint
    too_many: list[tuple[str, list[Any]]] = [
        ("entries", [EntryRef(0, True)] * 3),
        ("decisions", [DecisionRef(0, True)] * 3),
        ("deferred", [1, 2, 3]),
        ("expiring", [1, 2, 3]),
    ]
    for name, items in too_many:
        with pytest.raises(EncodeError, match=f"^{name}: 3 entries exceed the maximum 2$"):
            encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0, **{name: items}))
    with pytest.raises(EncodeError, match=r"^decisions\[0\]\.senders: 3 entries exceed"):
        encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0, decisions=[DecisionRef(0, True, [1] * 3)]))
    decision = DecisionRef(0, True, [1, 2], [7] * 3)
    with pytest.raises(EncodeError, match=r"^decisions\[0\]\.facts_offsets: 3 entries exceed"):
        encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0, decisions=[decision]))


def test_decode_bad_union_index_in_facts() -> None:
    data = bytearray(encode_facts(Facts(0, 0, accounts={0: None})))
    # sequence 0, sender 0, accounts block count 1, id (16 bytes), then the value's union index.
    at = 9 + 1 + 1 + 1 + 16
    assert data[at] == 0
    data[at] = 2 * 5
    expect_decode_error(bytes(data), "accounts[0].value", "union index 5 out of range", "Facts")


def decode_all_ways(data: bytes) -> None:
    for decode in DECODERS.values():
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(list(VALID)))
def test_fuzz_garbage_after_a_protocol_header(payload: bytes, message: str) -> None:
    decode_all_ways(codec._CODEC.current[message].header + payload)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(VALID.values())),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 3),
    st.integers(0, 1 << 20),
)
def test_fuzz_mutated_protocol_messages_raise_only_decode_error(
    valid: bytes, flips: list[tuple[int, int]], mode: int, cut: int
) -> None:
    data = bytearray(valid)
    for position, value in flips:
        data[9 + position % (len(data) - 9)] = value
    if mode == 1:
        del data[9 + cut % (len(data) - 9) :]
    elif mode == 2:
        data[9 + cut % (len(data) - 9) : 9 + cut % (len(data) - 9)] = bytes([cut & 0xFF])
    decode_all_ways(bytes(data))


# ---------------------------------------------------------------------------------------------
# The fast path: hand-written bytes of TransferApplied lists equal fastavro's

FASTAVRO_ONLY = AvroCodec(fast=False)


def test_fast_path_is_on_for_the_shipped_schemas() -> None:
    # If this fails, a new EventBatch/Apply version shipped: update the hand-written encoder and
    # its pinned fingerprint in schemas/codec.py (until then fastavro writes those messages).
    assert set(codec._CODEC._fast) == {"EventBatch", "Apply"}
    assert not FASTAVRO_ONLY._fast


applied_events = st.builds(
    TransferApplied, st.sampled_from(TransferKind), transfers, u128,
    st.none() | balances, st.none() | balances, u64,
)  # fmt: skip


@settings(max_examples=300)
@given(i32, st.lists(applied_events, max_size=6), i64)
def test_property_fast_path_bytes_equal_fastavro(
    partition: int, applied: list[Event], offset: int
) -> None:
    batch = EventBatch(partition, applied, offset)
    data = encode_event_batch(batch)
    assert data == FASTAVRO_ONLY.encode_event_batch(batch)
    assert codec._fast_write(codec._CODEC.current["EventBatch"].header,
                             codec._FAST_LAYOUTS["EventBatch"], batch) == data  # fmt: skip
    apply = Apply(offset, applied)
    assert encode_apply(apply) == FASTAVRO_ONLY.encode_apply(apply)
    assert decode_apply(encode_apply(apply)) == apply


def test_fast_path_edge_values_equal_fastavro() -> None:
    t = full_transfer()
    applied: list[Event] = [
        TransferApplied(kind, t, U128_MAX, Balances(U128_MAX, 0, 1, 1 << 127, U128_MAX), None,
                        U64_MAX)
        for kind in TransferKind
    ]  # fmt: skip
    applied.append(TransferApplied(TransferKind.SINGLE_PHASE, Transfer(id=0), 0, None, None, 0))
    for partition, offset in ((I32_MAX, I64_MAX), (-(1 << 31), I64_MIN), (0, -1)):
        batch = EventBatch(partition, applied, offset)
        assert encode_event_batch(batch) == FASTAVRO_ONLY.encode_event_batch(batch)
    many = Apply(1, applied * 2000)  # block counts of several varint bytes
    assert encode_apply(many) == FASTAVRO_ONLY.encode_apply(many)


def test_events_shared_by_batches_are_encoded_once_and_alike() -> None:
    shared: list[Event] = [
        TransferApplied(TransferKind.POST, full_transfer(id=n + 1), 1, None, None, n + 2)
        for n in range(3)
    ]
    memo: codec.EncodedEvents = {}
    first = encode_event_batch(EventBatch(0, shared, -1), memo)
    assert len(memo) == 3
    second = encode_event_batch(EventBatch(5, shared[1:], 7), memo)
    assert len(memo) == 3  # nothing encoded again
    assert first == FASTAVRO_ONLY.encode_event_batch(EventBatch(0, shared, -1))
    assert second == FASTAVRO_ONLY.encode_event_batch(EventBatch(5, shared[1:], 7))


def test_mixed_or_bad_events_leave_the_fast_path() -> None:
    applied = TransferApplied(TransferKind.POST, full_transfer(), 1, None, None, 2)
    mixed = Apply(1, [applied, TransferFailed(1, 2, 3), applied])
    assert encode_apply(mixed) == FASTAVRO_ONLY.encode_apply(mixed)
    header = codec._CODEC.current["Apply"].header
    assert codec._fast_write(header, codec._FAST_LAYOUTS["Apply"], mixed) is None
    for bad in (
        Apply(True, [applied]),  # a bool is not taken for an int
        Apply(1, [TransferApplied(TransferKind.POST, Transfer(id=-1), 0, None, None, 0)]),
        Apply(1, [TransferApplied(9, Transfer(id=1), 0, None, None, 0)]),  # type: ignore[arg-type]
        Apply(1, (applied,)),  # type: ignore[arg-type]
    ):
        assert codec._fast_write(header, codec._FAST_LAYOUTS["Apply"], bad) is None
    with pytest.raises(EncodeError) as info:
        encode_apply(Apply(1, [applied, applied, TransferApplied(
            TransferKind.POST, full_transfer(code=-1), 0, None, None, 0)]))  # fmt: skip
    assert info.value.field == "events[2].transfer.code"


def test_fast_path_is_off_for_a_schema_it_was_not_written_for(tmp_path: Path) -> None:
    v2_codec = AvroCodec(make_v2_dir(tmp_path))  # TransferApplied gains a field in EventBatch v2
    assert set(v2_codec._fast) == {"Apply"}
    applied = TransferApplied(TransferKind.POST, full_transfer(), 1, None, None, 2)
    batch = EventBatch(0, [applied], 0)
    data = v2_codec.encode_event_batch(batch)
    assert data != encode_event_batch(batch) and v2_codec.decode_event_batch(data) == batch


# ---------------------------------------------------------------------------------------------
# The refactored existing messages still refuse a wrong top-level type


@pytest.mark.parametrize(
    ("encode", "name"),
    [(encode_command_batch, "a CommandBatch"), (encode_event_batch, "an EventBatch"),
     (encode_result_batch, "a ResultBatch"), (encode_checkpoint, "a Checkpoint")],
)  # fmt: skip
def test_encode_refuses_another_type(encode: Any, name: str) -> None:
    with pytest.raises(EncodeError, match=f"^Facts is not {name}$"):
        encode(Facts(0, 0))
