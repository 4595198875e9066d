"""The fuzz generator itself (tests/pipeline/malformed.py), without Kafka: its field-by-field
writer is the codec's encoding, its malformed messages are refused by the codec, and its
requests with invalid contents are well-formed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import decode_command_batch, encode_command_batch
from schemas.messages import CommandBatch
from tests.pipeline.malformed import (
    Malformed,
    content_invalid_requests,
    edge_cases,
    encode_fields,
    is_malformed,
    malformed_messages,
    valid_requests,
    zigzag,
)


@given(valid_requests())
def test_the_field_writer_is_the_codec_encoding(batch: CommandBatch) -> None:
    assert encode_fields(batch).encode() == encode_command_batch(batch)


@given(st.integers(-(1 << 70), 1 << 70))
def test_zigzag_is_the_avro_varint(n: int) -> None:
    # The zigzag of the specification: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    expected = 2 * n if n >= 0 else -2 * n - 1
    raw = zigzag(n)
    value = sum((b & 0x7F) << (7 * i) for i, b in enumerate(raw))
    assert value == expected
    assert all(b & 0x80 for b in raw[:-1]) and not raw[-1] & 0x80


@settings(
    max_examples=400, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)
@given(malformed_messages())
def test_every_malformed_message_is_refused_by_the_codec(message: Malformed) -> None:
    assert is_malformed(message.value), message.how


@given(content_invalid_requests())
def test_requests_with_invalid_contents_are_well_formed(batch: CommandBatch) -> None:
    assert decode_command_batch(encode_command_batch(batch)) == batch


def test_edge_cases_are_malformed() -> None:
    cases = edge_cases()
    assert len(cases) >= 4
    assert all(is_malformed(case.value) for case in cases)
