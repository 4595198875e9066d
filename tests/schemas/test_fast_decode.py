"""The hand-written decoder of EventBatch and Apply messages of TransferApplied events: it returns
exactly what the fastavro path returns, and gives way to it (None) on anything else, so errors
stay fastavro's DecodeErrors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import AvroCodec, DecodeError
from schemas.codes import U64_MAX, U128_MAX
from schemas.events import Event, TransferApplied, TransferFailed, TransferKind
from schemas.messages import Apply, EventBatch
from schemas.records import Balances, Transfer
from tests.schemas.test_codec import (
    all_events,
    balances,
    events,
    full_transfer,
    raw_decode,
    raw_encode,
    transfers,
    u64,
    u128,
)

FASTAVRO_ONLY = AvroCodec(fast=False)
I32 = st.integers(-(1 << 31), (1 << 31) - 1)
I64 = st.integers(-(1 << 63), (1 << 63) - 1)
MESSAGES = ("EventBatch", "Apply")

applied_events = st.builds(
    TransferApplied, st.sampled_from(TransferKind), transfers, u128,
    st.none() | balances, st.none() | balances, u64,
)  # fmt: skip


def same_timestamps(e: TransferApplied) -> TransferApplied:
    """The usual event: timed as its transfer (the decoder's shortcut for equal bytes)."""
    return TransferApplied(e.kind, e.transfer, e.released, e.debit, e.credit, e.transfer.timestamp)


applied_lists = st.lists(applied_events | applied_events.map(same_timestamps), max_size=6)


def fast(message: str, data: bytes) -> Any:
    """The hand-written decoder alone (None: it gave way)."""
    return codec._fast_read(message, codec._FAST_LAYOUTS[message], data)


def slow(message: str, data: bytes) -> Any:
    return getattr(
        FASTAVRO_ONLY, "decode_event_batch" if message == "EventBatch" else "decode_apply"
    )(data)


def shipped(message: str, data: bytes) -> Any:
    return getattr(
        codec._CODEC, "decode_event_batch" if message == "EventBatch" else "decode_apply"
    )(data)


def outcome(decode: Any, message: str, data: bytes) -> tuple[str, str]:
    """The repr of what decoding returns (types included: TransferKind, not int) or raises."""
    try:
        return "ok", repr(decode(message, data))
    except DecodeError as exc:
        return "DecodeError", f"{exc.field!r} {exc.reason}"


def encode(message: str, head: int, applied: list[Event], tail: int) -> bytes:
    if message == "EventBatch":
        return codec.encode_event_batch(EventBatch(head, applied, tail))
    return codec.encode_apply(Apply(head, applied, tail))


def test_fast_decoder_is_on_for_the_shipped_schemas() -> None:
    # The decoder shares the encoder's pinned fingerprints (_FAST_LAYOUTS).
    assert set(codec._CODEC._fast) == set(MESSAGES)
    for message in MESSAGES:
        assert codec._FAST_CLASSES[message].__name__ == message


@settings(max_examples=300)
@given(I32, applied_lists, I64)
def test_property_fast_decode_equals_fastavro(
    partition: int, applied: list[Event], offset: int
) -> None:
    for message, data in (
        ("EventBatch", codec.encode_event_batch(EventBatch(partition, applied, offset))),
        ("Apply", codec.encode_apply(Apply(offset, applied, partition))),
    ):
        decoded = fast(message, data)
        assert decoded is not None, "valid messages take the fast path"
        assert repr(decoded) == repr(slow(message, data))
        assert repr(shipped(message, data)) == repr(decoded)


def test_fast_decode_edge_values() -> None:
    t = full_transfer()
    applied: list[Event] = [
        TransferApplied(kind, t, U128_MAX, Balances(U128_MAX, 0, 1, 1 << 127, U128_MAX), None, ts)
        for kind in TransferKind
        for ts in (0, 1, 127, 128, U64_MAX, 1 << 63, t.timestamp)
    ]
    applied.append(TransferApplied(TransferKind.SINGLE_PHASE, Transfer(id=0), 0, None, None, 0))
    applied.append(
        TransferApplied(
            TransferKind.VOID, Transfer(id=1, timestamp=5), 0, None, Balances(0, 0, 0, 0, 0), 5
        )
    )
    for head, tail in ((2**31 - 1, 2**63 - 1), (-(2**31), -(2**63)), (0, -1), (63, 64), (-64, -65)):
        for message in MESSAGES:
            for events_ in (applied, applied * 300, []):  # block counts of 1 to 3 varint bytes
                data = encode(message, head, events_, tail)
                decoded = fast(message, data)
                assert decoded is not None
                assert repr(decoded) == repr(slow(message, data))


def test_fast_decode_reads_several_blocks() -> None:
    # fastavro writes one block; another writer may split the array: still the fast path.
    applied: list[Event] = [
        TransferApplied(TransferKind.POST, full_transfer(timestamp=i), i, None, None, i)
        for i in range(5)
    ]
    data = codec.encode_apply(Apply(3, applied, 4))
    one_event = (len(data) - 9 - 3) // 5  # sequence, timestamp, count varints; the 0 at the end
    body = data[12:-1]
    split = data[:11] + b"\x04" + body[: 2 * one_event] + b"\x06" + body[2 * one_event :] + b"\x00"
    decoded = fast("Apply", split)
    assert decoded is not None and repr(decoded) == repr(slow("Apply", split))
    assert decoded == Apply(3, applied, 4)


def test_other_events_give_way_to_fastavro() -> None:
    applied = TransferApplied(TransferKind.POST, full_transfer(), 1, None, None, 2)
    mixed: list[Event] = [applied, TransferFailed(1, 2, 3), applied]
    for events_ in (mixed, all_events()):
        for message in MESSAGES:
            data = encode(message, 1, events_, 2)
            assert fast(message, data) is None
            assert repr(shipped(message, data)) == repr(slow(message, data))


def test_not_fastavro_shaped_bytes_give_way() -> None:
    """Varints that are not minimal or hold more than 64 bits, a negative block count (with its
    byte size), an int out of 32-bit range: fastavro's reading of them decides."""
    applied: list[Event] = [
        TransferApplied(TransferKind.POST, Transfer(id=1, ledger=5), 0, None, None, 7)
    ]
    data = codec.encode_apply(Apply(0, applied, 0))
    raw = raw_decode("Apply", data)
    assert data[9:12] == b"\x00\x00\x02"  # sequence 0, timestamp 0, one event
    cases = [
        data[:9] + b"\x80\x00" + data[10:],  # sequence 0 in two bytes
        data[:9] + b"\x80" * 9 + b"\x02" + data[10:],  # 10 bytes, 65 bits
        data[:9] + b"\xff" * 10 + b"\x01" + data[10:],  # 11 bytes
        data[:11] + b"\x01" + bytes([len(data) - 13]) + data[12:],  # count -1 with a byte size
        data[:11] + b"\x82\x00" + data[12:],  # count 1 in two bytes
    ]
    batch = codec.encode_event_batch(EventBatch(0, applied, 0))
    cases += [
        batch[:9] + b"\x80\x80\x80\x80\x10" + batch[10:],  # partition 2^31 (an Avro int)
        raw_encode(
            "Apply",
            {
                **raw,
                "events": [("ledger.TransferApplied", {**raw["events"][0][1], "kind": "EXPIRE"})],
            },
        ),
    ]
    for message, case in [("Apply", c) for c in cases[:5]] + [
        ("EventBatch", cases[5]),
        ("Apply", cases[6]),
    ]:
        if case is cases[6]:
            assert fast(message, case) is not None  # the control: a valid message
        else:
            assert fast(message, case) is None, case.hex()
        assert outcome(shipped, message, case) == outcome(slow, message, case)


def test_bytearray_and_memoryview_decode_alike() -> None:
    data = codec.encode_apply(
        Apply(1, [TransferApplied(TransferKind.POST, full_transfer(), 1, None, None, 2)])
    )
    expected = repr(slow("Apply", data))
    for view in (bytearray(data), memoryview(data)):
        assert repr(codec.decode_apply(view)) == expected  # type: ignore[arg-type]


def test_event_limit_gives_way(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[Event] = [
        TransferApplied(TransferKind.POST, Transfer(id=1), 0, None, None, 0)
    ] * 3
    data = codec.encode_apply(Apply(0, applied))
    assert fast("Apply", data) is not None
    monkeypatch.setattr(codec, "EVENT_BATCH_EVENTS_MAX", 2)
    assert fast("Apply", data) is None
    with pytest.raises(DecodeError, match=r"^events: 3 entries exceed the maximum 2$"):
        codec.decode_apply(data)


# Random damage: the shipped decoder returns exactly what fastavro's path returns, or raises the
# same DecodeError; and whenever the hand-written decoder answers, fastavro agrees.

APPLY_EVENTS: list[Event] = [
    TransferApplied(kind, full_transfer(), U128_MAX, Balances(1, 2, 3, 4, U128_MAX), None, 1)
    for kind in TransferKind
]
APPLY_EVENTS.append(
    TransferApplied(
        TransferKind.VOID, Transfer(id=5, timestamp=9), 0, None, Balances(0, 0, 0, 0, 0), 9
    )
)
BATCH_EVENTS: list[Event] = [
    TransferApplied(
        TransferKind.POST, Transfer(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1 << 60, 0, 200), 0,
        Balances(1, 1, 1, 1, 1), Balances(2, 2, 2, 2, 2), 1 << 60,
    ),
    TransferApplied(TransferKind.SINGLE_PHASE, Transfer(id=3), 0, None, None, 0),
]  # fmt: skip
VALID: list[tuple[str, bytes]] = [
    ("Apply", codec.encode_apply(Apply(7, APPLY_EVENTS, -1))),
    ("EventBatch", codec.encode_event_batch(EventBatch(3, BATCH_EVENTS, 42))),
]
BYTES = st.sampled_from(
    [0x00, 0x01, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x7F, 0x80, 0x81, 0xFE, 0xFF]
) | st.integers(0, 255)


def check_agrees(message: str, data: bytes) -> None:
    answer = fast(message, data) if data[:9] == codec._CODEC.current[message].header else None
    expected = outcome(slow, message, data)
    if answer is not None:
        assert expected == ("ok", repr(answer)), data.hex()
    assert outcome(shipped, message, data) == expected, data.hex()


def mutate(good: bytes, flips: list[tuple[int, int]], mode: int, cut: int) -> bytes:
    """`good` past its 9-byte header with bytes set at `flips`, then cut short (mode 1), a byte
    inserted (2) or removed (3) at `cut`."""
    data = bytearray(good)
    for position, value in flips:
        data[9 + position % (len(data) - 9)] = value
    at = 9 + cut % (len(data) - 9)
    if mode == 1:
        del data[at:]
    elif mode == 2:
        data[at:at] = bytes([cut & 0xFF])
    elif mode == 3:
        del data[at]
    return bytes(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 1 << 20), BYTES), min_size=1, max_size=4),
    st.integers(0, 3),
    st.integers(0, 1 << 20),
)
@example(VALID[0], [(0, 0x00)], 1, 5)
def test_fuzz_mutated_messages_decode_as_fastavro_does(
    valid: tuple[str, bytes], flips: list[tuple[int, int]], mode: int, cut: int
) -> None:
    message, good = valid
    check_agrees(message, mutate(good, flips, mode, cut))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MESSAGES), st.lists(events, max_size=4), st.integers(0, 1 << 20), BYTES)
def test_fuzz_mutated_random_batches(
    message: str, events_: list[Event], position: int, value: int
) -> None:
    data = bytearray(encode(message, 0, events_, 0))
    data[9 + position % (len(data) - 9)] = value
    check_agrees(message, bytes(data))
    for cut in range(9, len(data), max(1, len(data) // 20)):
        check_agrees(message, bytes(data[:cut]))


@given(st.sampled_from(MESSAGES), st.binary(max_size=400))
def test_fuzz_garbage_after_the_header(message: str, payload: bytes) -> None:
    check_agrees(message, codec._CODEC.current[message].header + payload)
