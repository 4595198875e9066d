"""The HTTP API's JSON codec, pure: parsing with validation, and rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.ledger import Asset
from producers import AccountCommandResult, CreateResult
from projections import json_codec as codec
from projections.filters import AccountFilter, BalanceEntry, QueryFilter
from schemas import (
    BATCH_EVENTS_MAX,
    U128_MAX,
    UNSET,
    Account,
    AccountCommandStatus,
    AccountFlags,
    Balances,
    CreateTransferStatus,
    PendingStatus,
    Policy,
    SettlementRequested,
    Transfer,
    TransferFlags,
)


def error_of(call: Any, *args: Any) -> codec.CodecError:
    with pytest.raises(codec.CodecError) as info:
        call(*args)
    return info.value


def test_loads() -> None:
    assert codec.loads(b"") is None
    assert codec.loads(b"  \n") is None
    assert codec.loads('{"a": [1, "2"]}') == {"a": [1, "2"]}
    assert codec.loads(str(U128_MAX)) == U128_MAX  # JSON integers are exact
    for bad in (b"{", b"[1,]", b"NaN", b"[Infinity]", b"\xff", b"[" * 100_000):
        error = error_of(codec.loads, bad)
        assert error.status == 400 and error.field == ""
        assert error.body()["field"] is None
        assert "invalid JSON" in str(error)


@pytest.mark.parametrize(
    ("value", "bits", "ok"),
    [
        (0, 128, True), (U128_MAX, 128, True), (U128_MAX + 1, 128, False),
        (str(U128_MAX), 128, True), (str(U128_MAX + 1), 128, False),
        ("007", 16, True), (-1, 64, False), ("-1", 64, False), ("", 64, False),
        (" 1", 64, False), ("1 ", 64, False), ("+1", 64, False), ("1e3", 64, False),
        (1.0, 64, False), (True, 64, False), ([1], 64, False),
        ((1 << 64) - 1, 64, True), (1 << 64, 64, False), ((1 << 32) - 1, 32, True),
        (1 << 32, 32, False), (65535, 16, True), (65536, 16, False), ("٣", 16, False),
        ("1" * 41, 128, False),
    ],
)  # fmt: skip
def test_unsigned_widths(value: Any, bits: int, ok: bool) -> None:
    field = {128: "id", 64: "timestamp", 32: "ledger", 16: "code"}[bits]
    obj = {field: value}
    if ok:
        assert getattr(codec.parse_account(obj), field) == int(value)
    else:
        error = error_of(codec.parse_account, obj)
        assert error.field == field
        assert str(error) == f"{field}: must be a non-negative integer below 2^{bits}"


@given(st.integers(min_value=0, max_value=U128_MAX), st.booleans())
def test_u128_number_or_string(value: int, as_string: bool) -> None:
    raw = str(value) if as_string else value
    transfer = codec.parse_transfer({"amount": raw, "pending_id": raw})
    assert transfer.amount == transfer.pending_id == value
    assert codec.render_transfer(transfer)["amount"] == str(value)


@given(st.integers(min_value=-U128_MAX, max_value=U128_MAX), st.booleans())
def test_signed_limits_round_trip(value: int, as_string: bool) -> None:
    account = codec.parse_account({"min_balance": str(value) if as_string else value})
    assert account.min_balance == value
    assert codec.render_account(account, Asset("X", 0))["min_balance"] == str(value)


@pytest.mark.parametrize("value", [U128_MAX + 1, -U128_MAX - 1, "1.5", "--1", 2.0, True, "x"])
def test_signed_limits_refused(value: Any) -> None:
    error = error_of(codec.parse_account, {"settle_to": value})
    assert error.field == "settle_to"


def test_account_defaults_and_every_field() -> None:
    assert codec.parse_account({}) == Account(0)
    assert codec.parse_account({"id": None, "ledger": None}) == Account(0)  # null: absent
    account = codec.parse_account(
        {
            "id": "1",
            "debits_pending": 2,
            "debits_posted": 3,
            "credits_pending": 4,
            "credits_posted": 5,
            "user_data_128": 6,
            "user_data_64": 7,
            "user_data_32": 8,
            "reserved": 9,
            "ledger": 10,
            "code": 11,
            "flags": ["linked", "closed"],
            "timestamp": 12,
            "policy": "system",
            "min_balance": None,
            "max_balance": "-3",
            "settle_threshold": None,
            "settle_to": None,
            "link_type": "udp",
            "metadata": {"k": "v"},
        }
    )
    assert account == Account(
        1, 10, 11, int(AccountFlags.LINKED | AccountFlags.CLOSED), 2, 3, 4, 5, 6, 7, 8, 9, 12,
        policy=Policy.SYSTEM, max_balance=-3, link_type="udp", metadata={"k": "v"},
    )  # fmt: skip
    assert set(codec.ACCOUNT_REQUEST_FIELDS) == {
        "id", "debits_pending", "debits_posted", "credits_pending", "credits_posted",
        "user_data_128", "user_data_64", "user_data_32", "reserved", "ledger", "code", "flags",
        "timestamp", "policy", "min_balance", "max_balance", "settle_threshold", "settle_to",
        "link_type", "metadata",
    }  # fmt: skip


def test_transfer_every_field() -> None:
    assert codec.parse_transfer({}) == Transfer(0)
    transfer = codec.parse_transfer(
        {
            "id": 1,
            "debit_account_id": 2,
            "credit_account_id": 3,
            "amount": "4",
            "pending_id": 5,
            "user_data_128": 6,
            "user_data_64": 7,
            "user_data_32": 8,
            "timeout": 9,
            "ledger": 10,
            "code": 11,
            "flags": 2,
            "timestamp": 12,
            "debit_account_version": 13,
            "credit_account_version": "14",
        }
    )
    assert transfer == Transfer(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 2, 12, 13, 14)


def test_flag_names() -> None:
    assert list(codec.ACCOUNT_FLAG_NAMES) == [
        "linked", "debits_must_not_exceed_credits", "credits_must_not_exceed_debits",
        "history", "imported", "closed",
    ]  # fmt: skip
    assert list(codec.TRANSFER_FLAG_NAMES) == [
        "linked", "pending", "post_pending_transfer", "void_pending_transfer",
        "balancing_debit", "balancing_credit", "closing_debit", "closing_credit", "imported",
    ]  # fmt: skip
    every = list(codec.TRANSFER_FLAG_NAMES)
    assert codec.parse_transfer({"flags": every}).flags == (1 << 9) - 1
    assert codec.parse_transfer({"flags": ["pending", "pending"]}).flags == 2
    assert codec.parse_transfer({"flags": []}).flags == 0
    assert codec.parse_transfer({"flags": "3"}).flags == 3
    assert codec.parse_transfer({"flags": 1 << 15}).flags == 1 << 15  # reserved: the ledger's
    assert codec.flag_names((1 << 15) | 2, codec.TRANSFER_FLAG_NAMES) == ["pending"]
    error = error_of(codec.parse_transfer, {"flags": ["pending", "Linked"]})
    assert error.field == "flags[1]" and '"Linked"' in str(error)
    error = error_of(codec.parse_account, {"flags": [1]})
    assert error.field == "flags[0]"
    error = error_of(codec.parse_account, {"flags": "history"})
    assert error.field == "flags"


def test_policies_metadata_link_type() -> None:
    for name, policy in codec.POLICY_NAMES.items():
        assert codec.parse_account({"policy": name}).policy is policy
    assert set(codec.POLICY_NAMES) == {
        "no_overdraft", "capped_overdraft", "uncapped_overdraft", "system", "external",
    }  # fmt: skip
    assert error_of(codec.parse_account, {"policy": "NO_OVERDRAFT"}).field == "policy"
    assert codec.parse_account({"metadata": None}).metadata == {}
    assert error_of(codec.parse_account, {"metadata": {"a": "1", "b": 2}}).field == "metadata.b"
    assert error_of(codec.parse_account, {"metadata": "a=1"}).field == "metadata"
    assert error_of(codec.parse_account, {"link_type": ["http"]}).field == "link_type"
    # Content rules (lengths, characters) are the ledger's: it answers invalid_link_type.
    assert codec.parse_account({"link_type": ""}).link_type == ""


def test_batches() -> None:
    assert codec.parse_accounts([]) == []
    batch = codec.parse_transfers([{"id": 1}, {"id": "2"}])
    assert [t.id for t in batch] == [1, 2]
    error = error_of(codec.parse_transfers, [{"id": 1}, {"id": 2, "amout": 3}])
    assert (error.field, error.message) == ("[1].amout", "unknown field")
    error = error_of(codec.parse_transfers, [{}, {}, {}, {"amount": -1}])
    assert str(error) == "[3].amount: must be a non-negative integer below 2^128"
    assert error_of(codec.parse_accounts, [{}, None]).field == "[1]"
    assert error_of(codec.parse_accounts, {"id": 1}).field == ""
    error = error_of(codec.parse_accounts, [{}] * (BATCH_EVENTS_MAX + 1))
    assert error.status == 413 and str(BATCH_EVENTS_MAX) in str(error)
    assert len(codec.parse_accounts([{}] * BATCH_EVENTS_MAX)) == BATCH_EVENTS_MAX


def test_ids() -> None:
    assert codec.parse_ids({"ids": [1, "2", str(U128_MAX)]}) == [1, 2, U128_MAX]
    assert error_of(codec.parse_ids, {"ids": [1, -2]}).field == "ids[1]"
    assert error_of(codec.parse_ids, {}).field == "ids"
    assert error_of(codec.parse_ids, {"ids": [], "x": 1}).field == "x"
    assert error_of(codec.parse_ids, None).field == ""
    assert error_of(codec.parse_ids, {"ids": [1] * 8190}).status == 413
    assert codec.parse_id("12") == 12
    assert error_of(codec.parse_id, "1e2").field == "id"


def test_commands_and_settings_patch() -> None:
    assert codec.parse_command(None) == 0
    assert codec.parse_command({}) == 0
    assert codec.parse_command({"expected_version": "4"}) == 4
    assert codec.parse_command({"expected_version": None}) == 0
    assert error_of(codec.parse_command, {"expected_version": 1 << 64}).field == (
        "expected_version"
    )
    version, patch = codec.parse_settings_patch(None)
    assert version == 0
    assert all(getattr(patch, name) is UNSET for name in codec.SETTINGS_FIELDS)
    version, patch = codec.parse_settings_patch(
        {"expected_version": 3, "policy": None, "min_balance": "-5", "max_balance": None,
         "link_type": None, "metadata": None}
    )  # fmt: skip
    assert version == 3
    assert (patch.policy, patch.min_balance, patch.max_balance) == (None, -5, None)
    assert (patch.link_type, patch.metadata) == (None, None)
    assert patch.settle_threshold is UNSET and patch.settle_to is UNSET
    _, patch = codec.parse_settings_patch({"policy": "no_overdraft", "metadata": {"a": "b"}})
    assert patch.policy is Policy.NO_OVERDRAFT and patch.metadata == {"a": "b"}
    assert error_of(codec.parse_settings_patch, {"id": 1}).field == "id"


def test_query_filter() -> None:
    assert codec.parse_query_filter(None) == QueryFilter()
    assert codec.parse_query_filter({}) == QueryFilter(limit=BATCH_EVENTS_MAX)
    parsed = codec.parse_query_filter(
        {"user_data_128": "1", "user_data_64": 2, "user_data_32": 3, "ledger": 4, "code": 5,
         "timestamp_min": 6, "timestamp_max": "7", "limit": 8, "reversed": True}
    )  # fmt: skip
    assert parsed == QueryFilter(1, 2, 3, 4, 5, 6, 7, 8, True)
    assert codec.parse_query_filter({"flags": 1}).reversed
    assert codec.parse_query_filter({"flags": ["reversed"]}).reversed
    assert not codec.parse_query_filter({"flags": [], "reversed": False}).reversed
    assert codec.parse_query_filter({"limit": 0}).limit == 0  # valid input; selects nothing
    assert error_of(codec.parse_query_filter, {"limit": 8190}).field == "limit"
    assert error_of(codec.parse_query_filter, {"flags": 4}).field == "flags"
    assert error_of(codec.parse_query_filter, {"reversed": 1}).field == "reversed"


def test_account_filter_params() -> None:
    assert codec.parse_account_filter(5, []) == AccountFilter(5)
    parsed = codec.parse_account_filter(
        5,
        [("debits", "false"), ("credits", "TRUE"), ("limit", "3"), ("reversed", "1"),
         ("timestamp_min", "10"), ("timestamp_max", "20"), ("user_data_128", "1"),
         ("user_data_64", "2"), ("user_data_32", "3"), ("code", "4")],
    )  # fmt: skip
    assert parsed == AccountFilter(5, 1, 2, 3, 4, 10, 20, 3, False, True, True)
    assert error_of(codec.parse_account_filter, 5, [("limit", "1"), ("limit", "2")]).field == (
        "limit"
    )
    assert error_of(codec.parse_account_filter, 5, [("ledger", "1")]).field == "ledger"
    assert error_of(codec.parse_account_filter, 5, [("reversed", "yes")]).field == "reversed"
    assert error_of(codec.parse_account_filter, 5, [("user_data_32", str(1 << 32))]).field == (
        "user_data_32"
    )
    assert codec.parse_as_of([]) is None
    assert codec.parse_as_of([("as_of", "17")]) == codec.PointInTime(timestamp=17)
    assert codec.parse_as_of([("as_of_offset", "5")]) == codec.PointInTime(offset=5)
    both = [("as_of", "1"), ("as_of_offset", "5")]
    assert error_of(codec.parse_as_of, both).field == "as_of_offset"
    assert error_of(codec.parse_as_of, [("as_of_offset", "-1")]).field == "as_of_offset"
    assert error_of(codec.parse_as_of, [("at", "17")]).field == "at"


def test_clock() -> None:
    assert codec.parse_clock({"advance_ns": "1000"}) == (1000, False)
    assert codec.parse_clock({"to_ns": 5}) == (5, True)
    assert error_of(codec.parse_clock, {"to_ns": 2**63}).field == "to_ns"
    assert error_of(codec.parse_clock, {"to_ns": 5, "advance_ns": 1}).field == "to_ns"
    assert error_of(codec.parse_clock, {"advance_ns": 0}).field == "advance_ns"
    assert error_of(codec.parse_clock, {}).field == "advance_ns"
    assert error_of(codec.parse_clock, None).field == ""


def test_render_account_and_transfer() -> None:
    account = Account(
        U128_MAX - 1, 1, 2, int(AccountFlags.HISTORY | AccountFlags.CLOSED), 1, 10, 2, 3,
        user_data_64=(1 << 64) - 1, timestamp=99, policy=Policy.CAPPED_OVERDRAFT,
        min_balance=-50, metadata={"a": "b"}, version=3,
    )  # fmt: skip
    rendered = codec.render_account(account, Asset("JPY", 0))
    assert rendered["id"] == str(U128_MAX - 1)
    assert (rendered["flags"], rendered["flag_names"]) == (40, ["history", "closed"])
    assert (rendered["ledger_balance"], rendered["available_balance"]) == ("-7", "-8")
    assert (rendered["closed"], rendered["frozen"], rendered["version"]) == (True, False, "3")
    assert (rendered["policy"], rendered["min_balance"], rendered["max_balance"]) == (
        "capped_overdraft", "-50", None,
    )  # fmt: skip
    assert (rendered["asset_code"], rendered["asset_scale"]) == ("JPY", 0)
    assert rendered["user_data_64"] == str((1 << 64) - 1)
    assert json.loads(codec.dumps(rendered)) == rendered
    transfer = Transfer(1, 2, 3, U128_MAX, flags=int(TransferFlags.PENDING), timeout=5)
    out = codec.render_transfer(transfer, PendingStatus.EXPIRED)
    assert out["amount"] == str(U128_MAX) and out["timeout"] == 5
    assert out["pending_status"] == "expired" and out["flag_names"] == ["pending"]
    assert "pending_status" not in codec.render_transfer(transfer)
    # Every u64/u128 is a string: nothing above 2^53 travels as a JSON number.
    for value in (*rendered.values(), *out.values()):
        assert not (isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 53)


def test_render_results_and_reads() -> None:
    results = [
        CreateResult(0, CreateTransferStatus.CREATED, 10),
        CreateResult(1, CreateTransferStatus.EXCEEDS_CREDITS, 11),
    ]
    assert codec.render_create_results(results) == [
        {"index": 0, "status": "created", "timestamp": "10"},
        {"index": 1, "status": "exceeds_credits", "timestamp": "11"},
    ]
    assert codec.render_command_result(
        AccountCommandResult(AccountCommandStatus.ACCOUNT_VERSION_MISMATCH, 4)
    ) == {"status": "account_version_mismatch", "version": "4"}
    assert codec.render_balance_entry(BalanceEntry(5, 1, 2, 3, 4)) == {
        "timestamp": "5", "debits_pending": "1", "debits_posted": "2",
        "credits_pending": "3", "credits_posted": "4",
    }  # fmt: skip
    assert codec.render_settlement(SettlementRequested(1, 2, 3, -4, 5)) == {
        "account_id": "1", "transfer_id": "2", "amount": "3", "balance": "-4", "timestamp": "5",
    }  # fmt: skip
    at = codec.render_balances_at(Balances(7, 1, 2, 3, 10), 99, Asset("USD", 2))
    assert (at["id"], at["as_of"], at["ledger_balance"], at["available_balance"]) == (
        "7", "99", "8", "7",
    )  # fmt: skip


def test_public_names() -> None:
    for name in codec.__all__:
        assert hasattr(codec, name), name


# Found by the HTTP fuzzer (tests/pipeline/test_fuzz_http.py).


def test_lone_surrogates_in_strings_are_refused_naming_the_field() -> None:
    # Was: accepted, then the Avro encoder failed on them: a 400 naming no field.
    cases = [
        ({"id": 1, "metadata": {"k": "\ud800"}}, "metadata.k"),
        ({"id": 1, "metadata": {"\udc00": "v"}}, "metadata"),
        ({"id": 1, "link_type": "a\udfff"}, "link_type"),
    ]
    for body, field in cases:
        with pytest.raises(codec.CodecError) as refused:
            codec.parse_account(body)
        assert refused.value.field == field
    with pytest.raises(codec.CodecError) as refused:
        codec.parse_settings_patch({"link_type": "\ud800"})
    assert refused.value.field == "link_type"


def test_an_answer_repeating_a_lone_surrogate_is_still_utf8() -> None:
    # Was: the error naming an unknown key "\ud800" could not be encoded: a 500.
    with pytest.raises(codec.CodecError) as refused:
        codec.parse_account({"id": 1, "\ud800": 1})
    text = codec.dumps(refused.value.body())
    text.encode("utf-8")
    assert json.loads(text)["field"] == "\ud800"
    assert codec.dumps({"name": "é"}) == '{"name":"é"}'  # otherwise unescaped, as before
