"""The hand-written encoder and decoder of CREATE_TRANSFERS requests: the encoder writes exactly
fastavro's bytes, the decoder returns exactly what the fastavro path returns, and both give way
to fastavro on anything else, so errors stay the DecodeErrors naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import AvroCodec, DecodeError, EncodeError
from schemas.codes import U64_MAX, U128_MAX
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    CommandBatch,
    Operation,
    ResultBatch,
    ResultEntry,
)
from schemas.records import Account, Transfer
from tests.schemas.test_codec import full_transfer, transfers, u64, u128
from tests.schemas.test_fast_decode import mutate

FASTAVRO_ONLY = AvroCodec(fast=False)


def request(transfers_: list[Transfer], submitter: str = "svc-1", **fields: Any) -> CommandBatch:
    return CommandBatch(
        fields.pop("request_id", 7), submitter, Operation.CREATE_TRANSFERS, transfers=transfers_,
        **fields,
    )  # fmt: skip


def outcome(decode: Any, data: bytes) -> tuple[str, str]:
    try:
        return "ok", repr(decode(data))
    except DecodeError as exc:
        return "DecodeError", f"{exc.field!r} {exc.reason}"


def test_fast_commands_are_on_for_the_shipped_schema() -> None:
    assert codec._CODEC._fast_commands
    assert not FASTAVRO_ONLY._fast_commands


@settings(max_examples=300)
@given(u128, st.text(max_size=30), st.lists(transfers, min_size=1, max_size=5), u64)
def test_property_fast_bytes_and_reading_equal_fastavro(
    request_id: int, submitter: str, transfers_: list[Transfer], submitted_at_ns: int
) -> None:
    batch = request(transfers_, submitter, request_id=request_id, submitted_at_ns=submitted_at_ns)
    header = codec._CODEC.current["CommandBatch"].header
    data = codec._fast_command_write(header, batch)
    assert data is not None, "valid requests take the fast path"
    assert data == FASTAVRO_ONLY.encode_command_batch(batch)
    decoded = codec._fast_command_read(data)
    assert decoded is not None
    assert repr(decoded) == repr(FASTAVRO_ONLY.decode_command_batch(data))
    assert decoded == batch


def test_edge_values_and_large_batches() -> None:
    t = full_transfer()
    for batch in (
        request([t] * 8189, "é" * 70, request_id=U128_MAX, submitted_at_ns=U64_MAX),
        request([Transfer(id=0)] * 64, "", request_id=0),  # block counts of 1 and 2 bytes
    ):
        data = codec.encode_command_batch(batch)
        assert data == FASTAVRO_ONLY.encode_command_batch(batch)
        assert codec._fast_command_read(data) == batch


def test_other_requests_give_way() -> None:
    header = codec._CODEC.current["CommandBatch"].header
    others = [
        CommandBatch(1, "s", Operation.CREATE_ACCOUNTS, accounts=[Account(1, ledger=1, code=1)]),
        CommandBatch(1, "s", Operation.ACCOUNT_COMMAND,
                     account_command=AccountCommand(AccountCommandKind.FREEZE, 5)),
        request([]),  # no transfers: fastavro writes it, the rules refuse it
        request([full_transfer(code=1 << 16)]),  # out of range: fastavro names the field
        request([full_transfer()] * 8190),  # too many
        CommandBatch(1, "s", Operation.CREATE_TRANSFERS, transfers=(full_transfer(),)),  # type: ignore[arg-type]
    ]  # fmt: skip
    for batch in others:
        assert codec._fast_command_write(header, batch) is None
    for batch in others[:2]:
        data = FASTAVRO_ONLY.encode_command_batch(batch)
        assert codec._fast_command_read(data) is None
        assert codec.decode_command_batch(data) == batch
    empty = FASTAVRO_ONLY.encode_command_batch(others[2])
    assert codec._fast_command_read(empty) == others[2]  # read alike either way


BYTES = st.integers(0, 255)
VALID = codec.encode_command_batch(request([full_transfer(), Transfer(id=3, amount=9)] * 3))


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1 << 20), BYTES), min_size=1, max_size=4),
       st.integers(0, 3), st.integers(0, 1 << 20))  # fmt: skip
def test_fuzz_mutated_requests_decode_as_fastavro_does(
    flips: list[tuple[int, int]], mode: int, cut: int
) -> None:
    mutated = mutate(VALID, flips, mode, cut)
    expected = outcome(FASTAVRO_ONLY.decode_command_batch, mutated)
    answer = codec._fast_command_read(mutated)
    if answer is not None:
        assert expected == ("ok", repr(answer)), mutated.hex()
    assert outcome(codec.decode_command_batch, mutated) == expected, mutated.hex()


result_entries = st.builds(ResultEntry, st.integers(0, (1 << 32) - 1), u64, u64)


@settings(max_examples=300)
@given(
    u128,
    st.text(max_size=30),
    st.sampled_from(Operation),
    st.lists(result_entries, max_size=5),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=4),
)
def test_property_fast_result_bytes_equal_fastavro(
    request_id: int,
    submitter: str,
    operation: Operation,
    results: list[ResultEntry],
    sequence: int,
    participants: list[int],
) -> None:
    batch = ResultBatch(request_id, submitter, operation, results, None, sequence, participants)
    header = codec._CODEC.current["ResultBatch"].header
    data = codec._fast_result_write(header, batch)
    assert data is not None, "results without a rejection take the fast path"
    assert data == FASTAVRO_ONLY.encode_result_batch(batch)
    assert codec.decode_result_batch(data) == batch


def test_results_the_fast_path_leaves_alone() -> None:
    header = codec._CODEC.current["ResultBatch"].header
    for batch in (
        ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [], rejection="malformed"),
        ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [ResultEntry(1 << 32, 0)]),
        ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [ResultEntry(1, -1)]),
        ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [], sequence=1 << 63),
        ResultBatch(1, "s", Operation.CREATE_TRANSFERS, [], participants=[1 << 31]),
    ):
        assert codec._fast_result_write(header, batch) is None
    assert codec._CODEC._fast_results and not FASTAVRO_ONLY._fast_results


def test_a_submitter_over_the_maximum_leaves_the_fast_paths() -> None:
    header = codec._CODEC.current["CommandBatch"].header
    at_most = request([full_transfer()], "s" * codec.SUBMITTER_MAX)
    assert codec._fast_command_write(header, at_most) is not None
    too_long = request([full_transfer()], "s" * (codec.SUBMITTER_MAX + 1))
    assert codec._fast_command_write(header, too_long) is None
    with pytest.raises(EncodeError) as info:
        codec.encode_command_batch(too_long)
    assert info.value.field == "submitter"
    # The same bytes with one more character in the submitter: read by neither fast path.
    data = codec.encode_command_batch(at_most)
    length = codec._varint(codec.SUBMITTER_MAX << 1)  # after the header and the request id
    assert data[25 : 25 + len(length)] == length
    rest = data[25 + len(length) + codec.SUBMITTER_MAX :]
    grown = data[:25] + codec._varint((codec.SUBMITTER_MAX + 1) << 1) + b"s" * 257 + rest
    assert codec._fast_command_read(grown) is None
    with pytest.raises(DecodeError) as decoding:
        codec.decode_command_batch(grown)
    assert decoding.value.field == "submitter"
