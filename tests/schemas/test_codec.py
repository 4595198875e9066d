"""The Avro wire codec: round trips, bad input, schema evolution (SPEC §2 "Schemas", §7)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    SCHEMA_DIR,
    AvroCodec,
    DecodeError,
    EncodeError,
    decode_command_batch,
    decode_event_batch,
    decode_result_batch,
    encode_command_batch,
    encode_event_batch,
    encode_result_batch,
)
from schemas.codes import BATCH_EVENTS_MAX, U16_MAX, U32_MAX, U64_MAX, U128_MAX, Policy
from schemas.events import (
    AccountChanged,
    AccountCreated,
    ChangeReason,
    Event,
    SettlementRequested,
    TransferApplied,
    TransferFailed,
    TransferKind,
)
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    CommandBatch,
    EventBatch,
    Operation,
    ResultBatch,
    ResultEntry,
)
from schemas.records import UNSET, Account, Balances, Transfer, UpdateSettings

# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


def full_transfer(**overrides: Any) -> Transfer:
    t = Transfer(
        id=U128_MAX, debit_account_id=1, credit_account_id=U128_MAX - 1, amount=U128_MAX,
        pending_id=0, user_data_128=1 << 127, user_data_64=U64_MAX, user_data_32=U32_MAX,
        timeout=U32_MAX, ledger=U32_MAX, code=U16_MAX, flags=U16_MAX, timestamp=U64_MAX,
        debit_account_version=1 << 63, credit_account_version=0,
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(t, name, value)
    return t


def full_account(**overrides: Any) -> Account:
    a = Account(
        id=U128_MAX - 1, ledger=U32_MAX, code=U16_MAX, flags=0b111111,
        debits_pending=U128_MAX, debits_posted=0, credits_pending=1, credits_posted=U128_MAX,
        user_data_128=U128_MAX, user_data_64=U64_MAX, user_data_32=U32_MAX, reserved=U32_MAX,
        timestamp=U64_MAX, policy=Policy.CAPPED_OVERDRAFT, min_balance=-U128_MAX,
        max_balance=U128_MAX, settle_threshold=-1, settle_to=-128, link_type="websocket",
        metadata={"ключ": "значение ✓", "": "", "emoji": "💸"}, version=U64_MAX, frozen=True,
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(a, name, value)
    return a


def all_events() -> list[Event]:
    t = full_transfer()
    return [
        AccountCreated(full_account()),
        AccountCreated(Account(id=1)),  # every optional field at its default
        AccountChanged(ChangeReason.SETTINGS, full_account(policy=None, link_type=None), 7),
        *(
            AccountChanged(reason, Account(id=2, version=3), U64_MAX)
            for reason in (
                ChangeReason.FROZEN,
                ChangeReason.UNFROZEN,
                ChangeReason.CLOSED,
                ChangeReason.CLOSED_BY_TRANSFER,
                ChangeReason.REOPENED,
            )
        ),
        *(
            TransferApplied(kind, t, U128_MAX, Balances(1, 2, 3, 4, U128_MAX), None, 1)
            for kind in TransferKind
        ),
        TransferApplied(TransferKind.VOID, Transfer(id=5), 0, None, Balances(0, 0, 0, 0, 0), 0),
        TransferApplied(
            TransferKind.POST, t, 1, Balances(1, 1, 1, 1, 1), Balances(2, 2, 2, 2, 2), 3
        ),
        TransferFailed(U128_MAX, U32_MAX, U64_MAX),
        TransferFailed(0, 0, 0),
        SettlementRequested(1, 2, U128_MAX, -U128_MAX, U64_MAX),
        SettlementRequested(1, 2, 3, U128_MAX, 0),
        SettlementRequested(1, 2, 3, 0, 0),
    ]


def header(message: str, the_codec: AvroCodec = codec._CODEC) -> bytes:
    return the_codec.current[message].header


def raw_encode(message: str, datum: dict[str, Any]) -> bytes:
    """Bytes a foreign (or buggy) writer could produce: any Avro-valid datum."""
    v = codec._CODEC.current[message]
    buf = io.BytesIO()
    buf.write(v.header)
    fastavro.schemaless_writer(buf, v.schema, datum)
    return buf.getvalue()


def raw_decode(message: str, data: bytes) -> dict[str, Any]:
    v = codec._CODEC.current[message]
    out = fastavro.schemaless_reader(
        io.BytesIO(data[9:]), v.schema, None, return_record_name=True,
        return_record_name_override=True,
    )  # fmt: skip
    assert isinstance(out, dict)
    return out


def command_batch(**overrides: Any) -> CommandBatch:
    batch = CommandBatch(
        request_id=U128_MAX, submitter="svc-✓", operation=Operation.CREATE_TRANSFERS,
        accounts=[full_account(), Account(id=1)],
        transfers=[full_transfer(), Transfer(id=1), full_transfer(id=2)],
        account_command=None, submitted_at_ns=U64_MAX,
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(batch, name, value)
    return batch


# ---------------------------------------------------------------------------------------------
# Round trips


def test_command_batch_round_trip_with_edge_values() -> None:
    batch = command_batch()
    data = encode_command_batch(batch)
    assert data[0] == 0x4C and data[1:9] == header("CommandBatch")[1:]
    assert decode_command_batch(data) == batch


def test_zero_values_round_trip() -> None:
    batch = CommandBatch(0, "", Operation.CREATE_ACCOUNTS, [Account(id=0)], [Transfer(id=0)])
    assert decode_command_batch(encode_command_batch(batch)) == batch


@pytest.mark.parametrize("kind", list(AccountCommandKind))
def test_account_commands_round_trip(kind: AccountCommandKind) -> None:
    command = AccountCommand(kind, U128_MAX, U64_MAX, None)
    batch = command_batch(
        operation=Operation.ACCOUNT_COMMAND, accounts=[], transfers=[], account_command=command
    )
    assert decode_command_batch(encode_command_batch(batch)) == batch


@pytest.mark.parametrize(
    "settings",
    [
        UpdateSettings(),  # nothing present
        UpdateSettings(None, None, None, None, None, None, None),  # everything cleared
        UpdateSettings(
            Policy.NO_OVERDRAFT, -U128_MAX, U128_MAX, 0, -1, "udp", {"a": "b", "ü": "✓"}
        ),
        UpdateSettings(min_balance=0),
        UpdateSettings(policy=None, metadata={}),
        UpdateSettings(link_type=None, settle_to=127),
        UpdateSettings(settle_threshold=-128, max_balance=128),
    ],
)
def test_update_settings_keeps_unset_apart_from_none(settings: UpdateSettings) -> None:
    command = AccountCommand(AccountCommandKind.UPDATE_SETTINGS, 7, 3, settings)
    batch = command_batch(operation=Operation.ACCOUNT_COMMAND, account_command=command)
    decoded = decode_command_batch(encode_command_batch(batch)).account_command
    assert decoded is not None and decoded.settings is not None
    for name in ("policy", "min_balance", "max_balance", "settle_threshold", "settle_to",
                 "link_type", "metadata"):  # fmt: skip
        sent, got = getattr(settings, name), getattr(decoded.settings, name)
        assert (sent is UNSET) == (got is UNSET), name
        assert (sent is None) == (got is None), name
        assert sent == got or sent is got, name


def test_event_batch_round_trip_every_event_type() -> None:
    batch = EventBatch(partition=7, events=all_events(), source_offset=(1 << 63) - 1)
    decoded = decode_event_batch(encode_event_batch(batch))
    assert decoded == batch
    assert [type(e) for e in decoded.events] == [type(e) for e in batch.events]
    kinds = [e.kind for e in decoded.events if isinstance(e, TransferApplied)]
    assert all(isinstance(k, TransferKind) for k in kinds)


def test_event_batch_empty_and_negative_offset() -> None:
    batch = EventBatch(partition=0, events=[], source_offset=-1)
    assert decode_event_batch(encode_event_batch(batch)) == batch


def test_result_batch_round_trip() -> None:
    results = [ResultEntry(0xFFFFFFFF, U64_MAX, U64_MAX), ResultEntry(0, 0, 0), ResultEntry(54, 1)]
    for rejection in (None, "transfers[3].ledger: 4294967296 exceeds u32", ""):
        batch = ResultBatch(U128_MAX, "svc", Operation.CREATE_TRANSFERS, results, rejection)
        assert decode_result_batch(encode_result_batch(batch)) == batch


def test_u64_travels_as_twos_complement_long() -> None:
    data = encode_command_batch(command_batch(transfers=[Transfer(id=1, user_data_64=U64_MAX)]))
    assert raw_decode("CommandBatch", data)["transfers"][0]["user_data_64"] == -1


def test_signed_limits_are_minimal_twos_complement() -> None:
    cases = {0: b"\x00", -1: b"\xff", 127: b"\x7f", 128: b"\x00\x80", -128: b"\x80",
             -129: b"\xff\x7f", U128_MAX: b"\x00" + b"\xff" * 16}  # fmt: skip
    for value, wire in cases.items():
        data = encode_command_batch(command_batch(accounts=[Account(id=1, min_balance=value)]))
        assert raw_decode("CommandBatch", data)["accounts"][0]["min_balance"] == wire


# Hypothesis: any in-range record survives the trip.

u128 = st.integers(0, U128_MAX)
u64 = st.integers(0, U64_MAX)
u32 = st.integers(0, U32_MAX)
u16 = st.integers(0, U16_MAX)
limit = st.none() | st.integers(-U128_MAX, U128_MAX)
text = st.text(max_size=12)

transfers = st.builds(
    Transfer, u128, u128, u128, u128, u128, u128, u64, u32, u32, u32, u16, u16, u64, u64, u64
)
accounts = st.builds(
    Account, u128, u32, u16, u16, u128, u128, u128, u128, u128, u64, u32, u32, u64,
    st.none() | st.sampled_from(Policy), limit, limit, limit, limit, st.none() | text,
    st.dictionaries(text, text, max_size=4), u64, st.booleans(),
)  # fmt: skip
balances = st.builds(Balances, u128, u128, u128, u128, u128)
events = st.one_of(
    st.builds(AccountCreated, accounts),
    st.builds(AccountChanged, st.sampled_from(["frozen", "settings", "reopened"]), accounts, u64),
    st.builds(
        TransferApplied,
        st.sampled_from(TransferKind),
        transfers,
        u128,
        st.none() | balances,
        st.none() | balances,
        u64,
    ),
    st.builds(TransferFailed, u128, u32, u64),
    st.builds(SettlementRequested, u128, u128, u128, st.integers(-U128_MAX, U128_MAX), u64),
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | st.none() | strategy


update_settings = st.builds(
    UpdateSettings, maybe(st.sampled_from(Policy)), maybe(st.integers(-U128_MAX, U128_MAX)),
    maybe(st.integers(-U128_MAX, U128_MAX)), maybe(st.integers(-U128_MAX, U128_MAX)),
    maybe(st.integers(-U128_MAX, U128_MAX)), maybe(text),
    maybe(st.dictionaries(text, text, max_size=3)),
)  # fmt: skip
account_commands = st.builds(
    AccountCommand, st.sampled_from(AccountCommandKind), u128, u64, st.none() | update_settings
)
command_batches = st.builds(
    CommandBatch, u128, text, st.sampled_from(Operation), st.lists(accounts, max_size=3),
    st.lists(transfers, max_size=5), st.none() | account_commands, u64,
)  # fmt: skip
event_batches = st.builds(
    EventBatch, st.integers(-(1 << 31), (1 << 31) - 1), st.lists(events, max_size=6),
    st.integers(-(1 << 63), (1 << 63) - 1),
)  # fmt: skip
result_batches = st.builds(
    ResultBatch, u128, text, st.sampled_from(Operation),
    st.lists(st.builds(ResultEntry, u32, u64, u64), max_size=5), st.none() | text,
)  # fmt: skip


@given(command_batches)
def test_property_command_batch_round_trip(batch: CommandBatch) -> None:
    assert decode_command_batch(encode_command_batch(batch)) == batch


@given(event_batches)
def test_property_event_batch_round_trip(batch: EventBatch) -> None:
    assert decode_event_batch(encode_event_batch(batch)) == batch


@given(result_batches)
def test_property_result_batch_round_trip(batch: ResultBatch) -> None:
    assert decode_result_batch(encode_result_batch(batch)) == batch


# ---------------------------------------------------------------------------------------------
# Encoding refuses what the wire cannot carry, naming the field


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda b: setattr(b.transfers[2], "id", U128_MAX + 1), "transfers[2].id", "exceeds u128"),
        (lambda b: setattr(b.transfers[0], "amount", -1), "transfers[0].amount", "negative"),
        (lambda b: setattr(b.transfers[1], "ledger", 1 << 32), "transfers[1].ledger",
         "4294967296 exceeds u32"),
        (lambda b: setattr(b.transfers[1], "code", 1 << 16), "transfers[1].code", "exceeds u16"),
        (lambda b: setattr(b.transfers[1], "timestamp", 1 << 64), "transfers[1].timestamp",
         "exceeds u64"),
        (lambda b: setattr(b.transfers[0], "user_data_64", None), "transfers[0].user_data_64",
         "not an integer"),
        (lambda b: setattr(b.transfers[0], "pending_id", 1.5), "transfers[0].pending_id",
         "not an integer"),
        (lambda b: setattr(b.accounts[1], "min_balance", -(1 << 128)), "accounts[1].min_balance",
         "outside"),
        (lambda b: setattr(b.accounts[0], "policy", 9), "accounts[0].policy", "not one of"),
        (lambda b: setattr(b.accounts[0], "metadata", {"k": 1}), "accounts[0].metadata['k']",
         "not a string"),
        (lambda b: setattr(b.accounts[0], "link_type", 5), "accounts[0].link_type",
         "not a string"),
        (lambda b: setattr(b, "request_id", -5), "request_id", "negative"),
        (lambda b: setattr(b, "submitter", None), "submitter", "not a string"),
        (lambda b: setattr(b, "operation", 99), "operation", "not one of"),
        (lambda b: b.transfers.append("x"), "transfers[3]", "not a Transfer"),
        (lambda b: setattr(b, "transfers", [Transfer(id=i) for i in range(BATCH_EVENTS_MAX + 1)]),
         "transfers", "exceed the batch maximum"),
        (lambda b: setattr(b, "account_command", AccountCommand(
            AccountCommandKind.UPDATE_SETTINGS, 1, 0, UpdateSettings(settle_to="1"))),
         "account_command.settings.settle_to", "not an integer"),
        (lambda b: setattr(b, "account_command", AccountCommand(
            AccountCommandKind.CLOSE, 1, -1)), "account_command.expected_version", "negative"),
    ],
)  # fmt: skip
def test_encode_errors_name_the_field(mutate: Any, field: str, reason: str) -> None:
    batch = command_batch()
    mutate(batch)
    with pytest.raises(EncodeError) as info:
        encode_command_batch(batch)
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (TransferApplied(TransferKind.POST, Transfer(id=1, flags=1 << 16), 0, None, None, 0),
         "events[0].transfer.flags"),
        (TransferApplied(7, Transfer(id=1), 0, None, None, 0), "events[0].kind"),  # type: ignore[arg-type]
        (TransferApplied(TransferKind.POST, Transfer(id=1), 0, Balances(1, -1, 0, 0, 0), None, 0),
         "events[0].debit.debits_pending"),
        (TransferApplied(TransferKind.POST, Transfer(id=1), 0, None, None, -1),
         "events[0].timestamp"),
        (TransferFailed(1, 1 << 32, 0), "events[0].status"),
        (SettlementRequested(1, 2, 3, 1 << 128, 0), "events[0].balance"),
        (AccountChanged("melted", Account(id=1), 0), "events[0].reason"),
        (AccountCreated(Account(id=1, ledger=-1)), "events[0].account.ledger"),
        ("not an event", "events[0]"),
    ],
)  # fmt: skip
def test_encode_event_errors_name_the_field(event: Any, field: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode_event_batch(EventBatch(0, [event]))
    assert info.value.field == field


def test_encode_result_errors_name_the_field() -> None:
    batch = ResultBatch(1, "s", Operation.CREATE_ACCOUNTS, [ResultEntry(0, 0), ResultEntry(-1, 0)])
    with pytest.raises(EncodeError, match=r"^results\[1\]\.status: -1 is negative"):
        encode_result_batch(batch)


# ---------------------------------------------------------------------------------------------
# Decoding bad input: DecodeError only, naming the field


def transfer_dict(**overrides: Any) -> dict[str, Any]:
    z = bytes(16)
    d: dict[str, Any] = {
        "id": z, "debit_account_id": z, "credit_account_id": z, "amount": z, "pending_id": z,
        "user_data_128": z, "user_data_64": 0, "user_data_32": 0, "timeout": 0, "ledger": 1,
        "code": 1, "flags": 0, "timestamp": 0, "debit_account_version": 0,
        "credit_account_version": 0,
    }  # fmt: skip
    d.update(overrides)
    return d


def command_dict(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "request_id": bytes(16), "submitter": "s", "operation": "CREATE_TRANSFERS",
        "accounts": [], "transfers": [transfer_dict()] * 4, "account_command": None,
        "submitted_at_ns": 0,
    }  # fmt: skip
    d.update(overrides)
    return d


def account_dict(**overrides: Any) -> dict[str, Any]:
    d = raw_decode("CommandBatch", encode_command_batch(command_batch()))["accounts"][1]
    d.update(overrides)
    return dict(d)


def expect_decode_error(data: bytes, field: str | None, reason: str, message: str = "") -> None:
    decoder = getattr(codec._CODEC, f"decode_{snake(message or 'CommandBatch')}")
    with pytest.raises(DecodeError) as info:
        decoder(data)
    assert info.value.field == field, str(info.value)
    assert reason in info.value.reason, str(info.value)


def snake(message: str) -> str:
    """CommandBatch -> command_batch (the codec's method names)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in message).lstrip("_")


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError) and issubclass(EncodeError, ValueError)
    err = DecodeError("4294967296 exceeds u32", "transfers[3].ledger")
    assert str(err) == "transfers[3].ledger: 4294967296 exceeds u32"


def test_decode_framing_errors() -> None:
    good = encode_command_batch(command_batch())
    expect_decode_error(b"", None, "shorter than the 9-byte header")
    expect_decode_error(good[:8], None, "shorter than the 9-byte header")
    expect_decode_error(b"\x00" + good[1:], None, "wrong magic byte 0x00")
    expect_decode_error(b"L" + b"\x01" * 8 + good[9:], None, "unknown schema")
    expect_decode_error(good + b"\x00", None, "1 trailing bytes")
    expect_decode_error(good[:9], "request_id", "truncated")
    expect_decode_error(good, None, "a CommandBatch message, not a EventBatch", "EventBatch")
    with pytest.raises(DecodeError, match="not bytes"):
        decode_command_batch("text")  # type: ignore[arg-type]


def test_decode_truncated_payload_names_the_field() -> None:
    good = encode_command_batch(command_batch(accounts=[], account_command=None))
    # Cut inside the third transfer's amount: 9 header + 16 id + 1+5 submitter + 1 op + 1 + 1...
    with pytest.raises(DecodeError) as info:
        decode_command_batch(good[: len(good) // 2])
    assert info.value.field is not None and info.value.field.startswith("transfers[")
    assert "truncated" in info.value.reason


@pytest.mark.parametrize(
    ("index", "field", "value", "reason"),
    [
        (3, "ledger", 1 << 32, "4294967296 exceeds u32"),
        (0, "user_data_32", -1, "-1 is negative"),
        (1, "timeout", 1 << 40, "exceeds u32"),
        (2, "code", 1 << 16, "65536 exceeds u16"),
        (3, "flags", -2, "negative"),
    ],
)
def test_decode_out_of_range_integers(index: int, field: str, value: int, reason: str) -> None:
    transfers = [transfer_dict() for _ in range(4)]
    transfers[index][field] = value
    data = raw_encode("CommandBatch", command_dict(transfers=transfers))
    expect_decode_error(data, f"transfers[{index}].{field}", reason)


def test_decode_out_of_range_in_accounts_results_and_events() -> None:
    data = raw_encode("CommandBatch", command_dict(accounts=[account_dict(reserved=1 << 32)]))
    expect_decode_error(data, "accounts[0].reserved", "exceeds u32")
    data = raw_encode("ResultBatch", {
        "request_id": bytes(16), "submitter": "s", "operation": "CREATE_ACCOUNTS",
        "results": [{"status": 0, "timestamp": 0, "version": 0},
                    {"status": 1 << 32, "timestamp": 0, "version": 0}],
        "rejection": None,
    })  # fmt: skip
    expect_decode_error(data, "results[1].status", "exceeds u32", "ResultBatch")
    applied = {"kind": "POST", "transfer": transfer_dict(code=70000), "released": bytes(16),
               "debit": None, "credit": None, "timestamp": 0}  # fmt: skip
    data = raw_encode("EventBatch", {
        "partition": 0, "source_offset": 0,
        "events": [("ledger.TransferFailed", {"transfer_id": bytes(16), "status": 1,
                                              "timestamp": 0}),
                   ("ledger.TransferApplied", applied)],
    })  # fmt: skip
    expect_decode_error(data, "events[1].transfer.code", "70000 exceeds u16", "EventBatch")


def test_decode_signed_limits_out_of_range_or_not_minimal() -> None:
    too_big = b"\x01" + bytes(16)  # 2^128
    data = raw_encode("CommandBatch", command_dict(accounts=[account_dict(min_balance=too_big)]))
    expect_decode_error(data, "accounts[0].min_balance", "outside ±(2^128-1)")
    data = raw_encode("CommandBatch", command_dict(accounts=[account_dict(settle_to=b"\x00\x05")]))
    expect_decode_error(data, "accounts[0].settle_to", "not minimally encoded")
    data = raw_encode("CommandBatch", command_dict(accounts=[account_dict(max_balance=b"")]))
    expect_decode_error(data, "accounts[0].max_balance", "not minimally encoded")


def test_decode_unknown_enum_values() -> None:
    good = encode_command_batch(CommandBatch(1, "ab", Operation.CREATE_TRANSFERS))
    operation_at = 9 + 16 + 1 + 2  # header, request_id, len("ab") varint, "ab"
    assert good[operation_at] == 2  # zigzag(1) = CREATE_TRANSFERS
    # (fastavro reads a negative index -1 as the last symbol, Python-list style: not caught.)
    for index_byte in (2 * 3, 2 * 100, 2 * 63):  # zigzag of indices 3, 100, 63
        bad = bytearray(good)
        bad[operation_at] = index_byte
        expect_decode_error(bytes(bad), "operation", "unknown enum value")


def test_decode_batches_over_the_limit() -> None:
    data = raw_encode(
        "CommandBatch", command_dict(transfers=[transfer_dict()] * (BATCH_EVENTS_MAX + 1))
    )
    expect_decode_error(data, "transfers", "8190 events exceed the batch maximum 8189")
    entry = {"status": 0, "timestamp": 0, "version": 0}
    data = raw_encode("ResultBatch", {
        "request_id": bytes(16), "submitter": "s", "operation": "CREATE_ACCOUNTS",
        "results": [entry] * (BATCH_EVENTS_MAX + 1), "rejection": None,
    })  # fmt: skip
    expect_decode_error(data, "results", "exceed the batch maximum", "ResultBatch")
    ok = raw_encode("CommandBatch", command_dict(transfers=[transfer_dict()] * BATCH_EVENTS_MAX))
    assert len(decode_command_batch(ok).transfers) == BATCH_EVENTS_MAX


def test_event_batches_carry_more_than_a_request_batch() -> None:
    # One transaction's events for one partition: a decision over a full request emits more.
    assert codec.EVENT_BATCH_EVENTS_MAX == 1_000_000 > BATCH_EVENTS_MAX
    failed = TransferFailed(U128_MAX, 1, U64_MAX)
    batch = EventBatch(0, [failed] * (2 * BATCH_EVENTS_MAX + 1), 0)
    assert decode_event_batch(encode_event_batch(batch)) == batch
    too_many = EventBatch(0, [failed] * (codec.EVENT_BATCH_EVENTS_MAX + 1), 0)
    with pytest.raises(EncodeError, match=r"^events: 1000001 entries exceed the maximum 1000000"):
        encode_event_batch(too_many)


def test_decode_event_batch_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "EVENT_BATCH_EVENTS_MAX", 3)  # a million events is slow to build
    failed = ("ledger.TransferFailed", {"transfer_id": bytes(16), "status": 1, "timestamp": 0})
    data = raw_encode("EventBatch", {"partition": 0, "source_offset": 0, "events": [failed] * 4})
    expect_decode_error(data, "events", "4 entries exceed the maximum 3", "EventBatch")


def test_decode_invalid_utf8_in_link_type_and_metadata() -> None:
    marker = "Zq9xZq9x"
    for account in (Account(id=1, link_type=marker), Account(id=1, metadata={"k": marker})):
        good = encode_command_batch(command_batch(accounts=[account], transfers=[]))
        bad = good.replace(marker.encode(), b"\xff" * len(marker))
        with pytest.raises(DecodeError) as info:
            decode_command_batch(bad)
        assert info.value.field is not None and info.value.field.startswith("accounts[0].")
        assert "UTF-8" in info.value.reason


def test_decode_bad_union_index_names_the_field() -> None:
    good = encode_event_batch(EventBatch(0, [TransferFailed(1, 2, 3)], 0))
    # partition 0 (1 byte), block count 1 (1 byte), then the union index of events[0].
    bad = bytearray(good)
    assert bad[11] == 2 * 3  # TransferFailed is the 4th branch
    bad[11] = 2 * 9
    expect_decode_error(bytes(bad), "events[0]", "union index 9 out of range", "EventBatch")


# Fuzz: nothing but DecodeError, whatever the bytes.

DECODERS = (decode_command_batch, decode_event_batch, decode_result_batch)
VALID = (
    encode_command_batch(command_batch()),
    encode_command_batch(
        command_batch(
            operation=Operation.ACCOUNT_COMMAND,
            account_command=AccountCommand(
                AccountCommandKind.UPDATE_SETTINGS,
                1,
                2,
                UpdateSettings(Policy.SYSTEM, -3, None, 5, 4, "http", {"a": "é"}),
            ),
        )
    ),
    encode_event_batch(EventBatch(1, all_events(), 5)),
    encode_result_batch(ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [ResultEntry(1, 2, 3)])),
)


def decode_all_ways(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["", "CommandBatch", "EventBatch", "ResultBatch"]))
def test_fuzz_random_bytes_raise_only_decode_error(payload: bytes, message: str) -> None:
    decode_all_ways((header(message) if message else b"") + payload)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 3),
    st.integers(0, 1 << 20),
)
def test_fuzz_mutated_messages_raise_only_decode_error(
    valid: bytes, flips: list[tuple[int, int]], mode: int, cut: int
) -> None:
    data = bytearray(valid)
    for position, value in flips:
        data[9 + position % (len(data) - 9)] = value  # keep the header: reach the payload
    if mode == 1:
        del data[9 + cut % (len(data) - 9) :]
    elif mode == 2:
        data[9 + cut % (len(data) - 9) : 9 + cut % (len(data) - 9)] = bytes([cut & 0xFF])
    decode_all_ways(bytes(data))


# ---------------------------------------------------------------------------------------------
# The shipped schema files


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.avsc"))


def test_shipped_schema_files() -> None:
    names = {p.name for p in schema_files()}
    assert {f"ledger.{message}.v1.avsc" for message in codec.MESSAGES} <= names
    the_codec = AvroCodec()
    assert len(the_codec.by_fingerprint) == len(names)  # every version distinct


def named_types(node: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, list):
        for item in node:
            named_types(item, out)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            out[f"{node.get('namespace', 'ledger')}.{node['name']}"] = node
        for value in node.values():
            named_types(value, out)
    return out


def by_reference(node: Any, top: bool = True) -> Any:
    """The definition with nested named types replaced by their names (inlined only once)."""
    if isinstance(node, list):
        return [by_reference(item, False) for item in node]
    if isinstance(node, dict):
        if not top and node.get("type") in ("record", "enum", "fixed"):
            return f"{node.get('namespace', 'ledger')}.{node['name']}"
        return {key: by_reference(value, False) for key, value in node.items()}
    return node


def newest_schema_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """The newest version of each message (older versions keep the types they shipped with)."""
    the_codec = AvroCodec(directory)
    return [directory / f"ledger.{m}.v{v.version}.avsc" for m, v in the_codec.current.items()]


def test_shared_named_types_are_identical_across_files() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for path in newest_schema_files():
        for name, definition in named_types(json.loads(path.read_text()), {}).items():
            text = json.dumps(by_reference(definition), sort_keys=True)
            if name in seen:
                assert seen[name][1] == text, f"{name} differs in {path.name} and {seen[name][0]}"
            seen[name] = (path.name, text)
    assert {"ledger.Account", "ledger.Transfer", "ledger.u128", "ledger.Policy"} <= seen.keys()


# ---------------------------------------------------------------------------------------------
# Schema evolution: a v2 EventBatch next to v1, through the real fingerprint lookup


def make_v2_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "avro"
    shutil.copytree(SCHEMA_DIR, directory)
    v1 = json.loads((SCHEMA_DIR / "ledger.EventBatch.v1.avsc").read_text())
    v2 = copy.deepcopy(v1)
    applied = next(b for b in v2["fields"][1]["type"]["items"] if b["name"] == "TransferApplied")
    # The compatible changes: a new field with a default, and a new optional field.
    applied["fields"].append({"name": "batch_index", "type": "long", "default": -1})
    v2["fields"].append({"name": "producer", "type": ["null", "string"], "default": None})
    (directory / "ledger.EventBatch.v2.avsc").write_text(json.dumps(v2))
    return directory


def test_schema_evolution_old_events_decode_under_the_new_reader(tmp_path: Path) -> None:
    v2_codec = AvroCodec(make_v2_dir(tmp_path))
    v1 = codec._CODEC.current["EventBatch"]
    v2 = v2_codec.current["EventBatch"]
    assert (v2.version, v1.version) == (2, 1) and v2.fingerprint != v1.fingerprint
    assert v2_codec.by_fingerprint[v1.fingerprint].version == 1  # old versions stay known

    batch = EventBatch(3, all_events(), 99)
    old_bytes = encode_event_batch(batch)  # written by the shipped (v1) codec
    assert old_bytes[1:9] == v1.fingerprint
    # The v2 reader finds the v1 writer schema by fingerprint and resolves it to v2.
    assert v2_codec.decode_event_batch(old_bytes) == batch
    raw = fastavro.schemaless_reader(
        io.BytesIO(old_bytes[9:]), v1.schema, v2.schema, return_record_name=True,
        return_record_name_override=True,
    )  # fmt: skip
    assert isinstance(raw, dict) and raw["producer"] is None
    applied = next(d for name, d in raw["events"] if name == "ledger.TransferApplied")
    assert applied["batch_index"] == -1

    # New messages are written with v2 (defaults filled) and read back by the v2 codec...
    new_bytes = v2_codec.encode_event_batch(batch)
    assert new_bytes[1:9] == v2.fingerprint
    assert v2_codec.decode_event_batch(new_bytes) == batch
    # ...while an old reader that never saw v2 refuses them cleanly.
    expect_decode_error(new_bytes, None, "unknown schema", "EventBatch")


def test_schema_evolution_incompatible_change_is_a_decode_error(tmp_path: Path) -> None:
    directory = make_v2_dir(tmp_path)
    v3 = json.loads((directory / "ledger.EventBatch.v2.avsc").read_text())
    v3["fields"].append({"name": "required_without_default", "type": "string"})
    (directory / "ledger.EventBatch.v3.avsc").write_text(json.dumps(v3))
    v3_codec = AvroCodec(directory)
    with pytest.raises(DecodeError, match="cannot read as the current schema"):
        v3_codec.decode_event_batch(encode_event_batch(EventBatch(0, [], 0)))


def test_codec_directory_must_be_well_formed(tmp_path: Path) -> None:
    (tmp_path / "stray.avsc").write_text("{}")
    with pytest.raises(ValueError, match="not named"):
        AvroCodec(tmp_path)


def test_a_submitter_longer_than_the_maximum_is_refused_both_ways() -> None:
    # Found by the commands fuzzer: results are keyed and stamped with the submitter, so a
    # request with a 16 MiB one made a result too big to send, and wedged its processor.
    longest = CommandBatch(1, "s" * codec.SUBMITTER_MAX, Operation.CREATE_TRANSFERS)
    assert codec.decode_command_batch(codec.encode_command_batch(longest)) == longest
    too_long = CommandBatch(1, "s" * (codec.SUBMITTER_MAX + 1), Operation.CREATE_TRANSFERS)
    with pytest.raises(codec.EncodeError) as refused:
        codec.encode_command_batch(too_long)
    assert refused.value.field == "submitter"
    # The bytes a careless writer would send: the longest name's encoding, one character more.
    data = codec.encode_command_batch(longest)
    name = ("s" * codec.SUBMITTER_MAX).encode()
    start = data.index(name)
    forged = data[: start - 2] + b"\x82\x04" + name + b"s" + data[start + len(name) :]
    with pytest.raises(codec.DecodeError) as undecodable:
        codec.decode_command_batch(forged)
    assert undecodable.value.field == "submitter"


def test_negative_enum_and_union_indexes_and_odd_booleans_are_refused() -> None:
    # Found by the commands fuzzer: fastavro read an index of -1..-n as a Python list index, so
    # an `operation` of -1 ran as ACCOUNT_COMMAND and a `kind` of -2 closed the account; a
    # boolean byte of 2 read as true.
    from tests.pipeline.malformed import encode_fields, zigzag

    def corrupt(batch: CommandBatch, where: str, name: str, raw: bytes) -> bytes:
        fields = encode_fields(batch)
        if where == "top":
            fields.top = [(n, raw if n == name else v) for n, v in fields.top]
        elif where == "account":
            fields.accounts[0] = [(n, raw if n == name else v) for n, v in fields.accounts[0]]
        else:
            assert fields.command is not None
            fields.command = [(n, raw if n == name else v) for n, v in fields.command]
        return fields.encode()

    transfers = CommandBatch(1, "s", Operation.CREATE_TRANSFERS, transfers=[Transfer(1)])
    accounts = CommandBatch(1, "s", Operation.CREATE_ACCOUNTS, accounts=[Account(1)])
    command = CommandBatch(
        1,
        "s",
        Operation.ACCOUNT_COMMAND,
        account_command=AccountCommand(AccountCommandKind.FREEZE, 1),
    )
    cases = [
        (corrupt(transfers, "top", "operation", zigzag(-1)), "operation"),
        (corrupt(accounts, "top", "operation", zigzag(-3)), "operation"),
        (corrupt(command, "command", "kind", zigzag(-2)), "account_command.kind"),
        (corrupt(accounts, "account", "policy", zigzag(-1)), "accounts[0].policy"),
        (corrupt(accounts, "account", "policy", b"\x02" + zigzag(-1)), "accounts[0].policy"),
        (corrupt(accounts, "account", "frozen", b"\x02"), "accounts[0].frozen"),
    ]
    for data, field in cases:
        with pytest.raises(codec.DecodeError) as refused:
            codec.decode_command_batch(data)
        assert refused.value.field == field, refused.value
    for batch in (transfers, accounts, command):  # as written, they decode
        assert codec.decode_command_batch(encode_fields(batch).encode()) == batch
