"""Avro wire codec of the Kafka messages.

Messages: CommandBatch, EventBatch, ResultBatch, and the cross-partition protocol's
SequencedEntry, Facts, Apply and the processor's Checkpoint (schemas.messages).

Wire format (docs/SCHEMAS.md): ``0x4C`` + the 8-byte CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form (little-endian, as Avro's single-object encoding) + the
schemaless Avro payload. Writers use the newest ``ledger.<Message>.v<N>.avsc`` shipped in
``schemas/avro``; readers look the fingerprint up among *all* shipped versions and resolve the
writer schema against the newest one, so old messages stay readable after a schema change.

Integer encodings: u128 as ``fixed(16)`` big-endian; u64 as the ``long`` holding the same 64 bits
(two's complement); u32 as ``long`` and u16 as ``int``, range-checked both ways; the signed
limits as ``bytes`` (two's complement, big-endian, minimal length, |v| <= 2^128-1).

Bad input: ``decode_*`` raises only ``DecodeError`` (naming the field where it can), and
``encode_*`` raises ``EncodeError`` for values the schema cannot carry. fastavro is imported
nowhere else in the schemas package. EventBatch and Apply messages of TransferApplied events are
written by a hand-written encoder, byte for byte what fastavro writes, and read back by a
hand-written decoder that gives way to fastavro on anything it does not take as is
(``AvroCodec(fast=False)`` turns both off).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.codes import BATCH_EVENTS_MAX, U128_MAX, Policy
from schemas.events import (
    AccountChanged,
    AccountCreated,
    Event,
    SettlementRequested,
    TransferApplied,
    TransferFailed,
    TransferKind,
)
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
    ResultBatch,
    ResultEntry,
    SequencedEntry,
)
from schemas.records import UNSET, Account, Balances, Transfer, UpdateSettings

__all__ = [
    "EVENT_BATCH_EVENTS_MAX",
    "LIST_MAX",
    "MAGIC",
    "MESSAGES",
    "SCHEMA_DIR",
    "SUBMITTER_MAX",
    "AvroCodec",
    "DecodeError",
    "EncodeError",
    "EncodedEvents",
    "decode_apply",
    "decode_checkpoint",
    "decode_command_batch",
    "decode_event_batch",
    "decode_facts",
    "decode_result_batch",
    "decode_sequenced_entry",
    "encode_apply",
    "encode_checkpoint",
    "encode_command_batch",
    "encode_event_batch",
    "encode_facts",
    "encode_result_batch",
    "encode_sequenced_entry",
]

MAGIC: Final = 0x4C  # "L"
_HEADER_LEN: Final = 9
SCHEMA_DIR: Final = Path(__file__).with_name("avro")
# The events of an EventBatch or an Apply: one transaction's events for one partition, which a
# decision over a full request can make more than BATCH_EVENTS_MAX (transfers plus settlements).
EVENT_BATCH_EVENTS_MAX: Final = 1_000_000
# Every other list or dict of the protocol messages (keys, facts; a Checkpoint's references).
LIST_MAX: Final = 1_000_000
# A request's submitter, in characters: its results are keyed and stamped with it, so a huge one
# would make a result too big for the results topic (and wedge the processor answering it).
SUBMITTER_MAX: Final = 256
# Every message type; a codec directory must hold a schema for each.
MESSAGES: Final = (
    "CommandBatch", "EventBatch", "ResultBatch", "SequencedEntry", "Facts", "Apply", "Checkpoint",
)  # fmt: skip

_U64_MASK: Final = (1 << 64) - 1
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_FILE_RE: Final = re.compile(r"^ledger\.(?P<message>\w+)\.v(?P<version>\d+)\.avsc$")


class DecodeError(ValueError):
    """Undecodable or out-of-contract bytes; ``field`` is the path, e.g. ``transfers[3].ledger``."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def within(self, prefix: str) -> DecodeError:
        return DecodeError(self.reason, _join(prefix, self.field))


class EncodeError(ValueError):
    """A value the wire schema cannot carry; ``field`` is its path, e.g. ``transfers[0].id``."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def within(self, prefix: str) -> EncodeError:
        return EncodeError(self.reason, _join(prefix, self.field))


def _join(prefix: str, field: str | None) -> str:
    if not field:
        return prefix
    if not prefix:
        return field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


# ---------------------------------------------------------------------------------------------
# Field kinds: the single description of each record's integer widths, used to name the field
# when a fast-path check fails (the fast path only tests "is anything out of range").

_WIDTH: Final = {"u128": 128, "u64": 64, "u32": 32, "u16": 16}

_TRANSFER_SPEC: Final = (
    ("id", "u128"), ("debit_account_id", "u128"), ("credit_account_id", "u128"),
    ("amount", "u128"), ("pending_id", "u128"), ("user_data_128", "u128"),
    ("user_data_64", "u64"), ("user_data_32", "u32"), ("timeout", "u32"), ("ledger", "u32"),
    ("code", "u16"), ("flags", "u16"), ("timestamp", "u64"),
    ("debit_account_version", "u64"), ("credit_account_version", "u64"),
)  # fmt: skip
_ACCOUNT_SPEC: Final = (
    ("id", "u128"), ("ledger", "u32"), ("code", "u16"), ("flags", "u16"),
    ("debits_pending", "u128"), ("debits_posted", "u128"), ("credits_pending", "u128"),
    ("credits_posted", "u128"), ("user_data_128", "u128"), ("user_data_64", "u64"),
    ("user_data_32", "u32"), ("reserved", "u32"), ("timestamp", "u64"), ("policy", "policy"),
    ("min_balance", "limit"), ("max_balance", "limit"), ("settle_threshold", "limit"),
    ("settle_to", "limit"), ("link_type", "optstr"), ("metadata", "metadata"),
    ("version", "u64"), ("frozen", "bool"),
)  # fmt: skip
_BALANCES_SPEC: Final = (
    ("account_id", "u128"), ("debits_pending", "u128"), ("debits_posted", "u128"),
    ("credits_pending", "u128"), ("credits_posted", "u128"),
)  # fmt: skip


def _value_problem(value: Any, kind: str) -> str | None:
    """Why `value` cannot be encoded as `kind` (None if it can)."""
    if kind in _WIDTH:
        if not isinstance(value, int):
            return f"{type(value).__name__} is not an integer"
        if value < 0:
            return f"{value} is negative ({kind})"
        if value >> _WIDTH[kind]:
            return f"{value} exceeds {kind}"
        return None
    if kind == "limit" or kind == "signed":
        if value is None and kind == "limit":
            return None
        if not isinstance(value, int):
            return f"{type(value).__name__} is not an integer"
        return None if -U128_MAX <= value <= U128_MAX else f"{value} is outside ±(2^128-1)"
    if kind == "i64":
        ok = isinstance(value, int) and _I64_MIN <= value <= _I64_MAX
        return None if ok else f"{value!r} is not a signed 64-bit integer"
    if kind == "i32":
        ok = isinstance(value, int) and -(1 << 31) <= value < (1 << 31)
        return None if ok else f"{value!r} is not a signed 32-bit integer"
    if kind == "policy":
        return None if value is None or value in _POLICY_SYMBOL else f"{value!r} is not a Policy"
    if kind == "str" or kind == "optstr":
        if value is None and kind == "optstr":
            return None
        return None if isinstance(value, str) else f"{type(value).__name__} is not a string"
    if kind == "metadata":
        if not isinstance(value, dict):
            return f"{type(value).__name__} is not a dict of strings"
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                return f"entry {key!r}: {item!r} is not a string to string"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"{type(value).__name__} is not a bool"
    raise AssertionError(kind)


def _explain_encode(obj: Any, spec: Iterable[tuple[str, str]]) -> None:
    for name, kind in spec:
        problem = _value_problem(getattr(obj, name, None), kind)
        if problem is not None:
            raise EncodeError(problem, name)


def _explain_decode(d: dict[str, Any], spec: Iterable[tuple[str, str]]) -> NoReturn:
    for name, kind in spec:
        if kind in ("u32", "u16"):  # u128/u64 cannot be out of range on the wire
            problem = _value_problem(d[name], kind)
            if problem is not None:
                raise DecodeError(problem, name)
    raise AssertionError("no field out of range")  # the caller saw one


# ---------------------------------------------------------------------------------------------
# Enums: Avro symbols are the Python member names (ChangeReason: its string values).

_POLICY_SYMBOL: Final = {p: p.name for p in Policy}
_POLICY_BY_SYMBOL: Final = {p.name: p for p in Policy}
_KIND_SYMBOL: Final = {k: k.name for k in TransferKind}
_KIND_BY_SYMBOL: Final = {k.name: k for k in TransferKind}
_OPERATION_SYMBOL: Final = {o: o.name for o in Operation}
_OPERATION_BY_SYMBOL: Final = {o.name: o for o in Operation}
_ACMD_SYMBOL: Final = {k: k.name for k in AccountCommandKind}
_ACMD_BY_SYMBOL: Final = {k.name: k for k in AccountCommandKind}


def _enum_symbol(table: dict[Any, str], value: Any, field: str) -> str:
    try:
        return table[value]
    except (KeyError, TypeError):
        raise EncodeError(f"{value!r} is not one of {sorted(table.values())}", field) from None


def _enum_value(table: dict[str, Any], symbol: str, field: str) -> Any:
    try:
        return table[symbol]
    except KeyError:  # a reader-schema symbol this code does not know yet
        raise DecodeError(f"unknown enum value {symbol!r}", field) from None


# ---------------------------------------------------------------------------------------------
# Signed limits: two's complement, big-endian, minimal length.


def _signed_len(value: int) -> int:
    return ((value if value >= 0 else ~value).bit_length() + 8) // 8


def _enc_signed(value: int) -> bytes:
    if not -U128_MAX <= value <= U128_MAX:
        raise OverflowError(value)
    return value.to_bytes(_signed_len(value), "big", signed=True)


def _enc_limit(value: int | None) -> bytes | None:
    return None if value is None else _enc_signed(value)


def _dec_signed(raw: bytes, field: str) -> int:
    value = int.from_bytes(raw, "big", signed=True)
    if not -U128_MAX <= value <= U128_MAX:
        raise DecodeError(f"{value} is outside ±(2^128-1)", field)
    if len(raw) != _signed_len(value):  # one value, one encoding (content hashes stay stable)
        raise DecodeError("signed integer is not minimally encoded", field)
    return value


def _dec_limit(raw: bytes | None, field: str) -> int | None:
    return None if raw is None else _dec_signed(raw, field)


# ---------------------------------------------------------------------------------------------
# Records <-> Avro dicts (the hot path: no per-field checks unless a combined test fails).


def _u64_to_long(v: int) -> int:
    return v - ((v >> 63) << 64)  # caller checked 0 <= v < 2^64


def _enc_transfer(t: Transfer) -> dict[str, Any]:
    ud64, ts = t.user_data_64, t.timestamp
    dav, cav = t.debit_account_version, t.credit_account_version
    if (
        (ud64 | ts | dav | cav) >> 64
        or (t.user_data_32 | t.timeout | t.ledger) >> 32
        or (t.code | t.flags) >> 16
    ):
        raise OverflowError("out of range")  # the list's explainer names the field
    return {
        "id": t.id.to_bytes(16, "big"),
        "debit_account_id": t.debit_account_id.to_bytes(16, "big"),
        "credit_account_id": t.credit_account_id.to_bytes(16, "big"),
        "amount": t.amount.to_bytes(16, "big"),
        "pending_id": t.pending_id.to_bytes(16, "big"),
        "user_data_128": t.user_data_128.to_bytes(16, "big"),
        "user_data_64": ud64 - ((ud64 >> 63) << 64),
        "user_data_32": t.user_data_32,
        "timeout": t.timeout,
        "ledger": t.ledger,
        "code": t.code,
        "flags": t.flags,
        "timestamp": ts - ((ts >> 63) << 64),
        "debit_account_version": dav - ((dav >> 63) << 64),
        "credit_account_version": cav - ((cav >> 63) << 64),
    }


def _dec_transfer(d: dict[str, Any]) -> Transfer:
    ud32, timeout, ledger, code, flags = (
        d["user_data_32"], d["timeout"], d["ledger"], d["code"], d["flags"]
    )  # fmt: skip
    if (ud32 | timeout | ledger) >> 32 or (code | flags) >> 16:
        _explain_decode(d, _TRANSFER_SPEC)
    fb = int.from_bytes
    return Transfer(
        fb(d["id"], "big"), fb(d["debit_account_id"], "big"), fb(d["credit_account_id"], "big"),
        fb(d["amount"], "big"), fb(d["pending_id"], "big"), fb(d["user_data_128"], "big"),
        d["user_data_64"] & _U64_MASK, ud32, timeout, ledger, code, flags,
        d["timestamp"] & _U64_MASK, d["debit_account_version"] & _U64_MASK,
        d["credit_account_version"] & _U64_MASK,
    )  # fmt: skip


def _enc_balances(b: Balances) -> tuple[str, dict[str, Any]]:
    # Tuple notation picks the union branch without fastavro validating the dict against it.
    return (
        "ledger.Balances",
        {
            "account_id": b.account_id.to_bytes(16, "big"),
            "debits_pending": b.debits_pending.to_bytes(16, "big"),
            "debits_posted": b.debits_posted.to_bytes(16, "big"),
            "credits_pending": b.credits_pending.to_bytes(16, "big"),
            "credits_posted": b.credits_posted.to_bytes(16, "big"),
        },
    )


def _dec_balances(d: dict[str, Any]) -> Balances:
    fb = int.from_bytes
    return Balances(
        fb(d["account_id"], "big"), fb(d["debits_pending"], "big"), fb(d["debits_posted"], "big"),
        fb(d["credits_pending"], "big"), fb(d["credits_posted"], "big"),
    )  # fmt: skip


def _enc_account(a: Account) -> dict[str, Any]:
    ud64, ts, version = a.user_data_64, a.timestamp, a.version
    if (
        (ud64 | ts | version) >> 64
        or (a.ledger | a.user_data_32 | a.reserved) >> 32
        or (a.code | a.flags) >> 16
        or type(a.frozen) is not bool
    ):
        raise OverflowError("out of range")  # the list's explainer names the field
    policy = a.policy
    return {
        "id": a.id.to_bytes(16, "big"),
        "ledger": a.ledger,
        "code": a.code,
        "flags": a.flags,
        "debits_pending": a.debits_pending.to_bytes(16, "big"),
        "debits_posted": a.debits_posted.to_bytes(16, "big"),
        "credits_pending": a.credits_pending.to_bytes(16, "big"),
        "credits_posted": a.credits_posted.to_bytes(16, "big"),
        "user_data_128": a.user_data_128.to_bytes(16, "big"),
        "user_data_64": ud64 - ((ud64 >> 63) << 64),
        "user_data_32": a.user_data_32,
        "reserved": a.reserved,
        "timestamp": ts - ((ts >> 63) << 64),
        "policy": None if policy is None else _enum_symbol(_POLICY_SYMBOL, policy, "policy"),
        "min_balance": _enc_limit(a.min_balance),
        "max_balance": _enc_limit(a.max_balance),
        "settle_threshold": _enc_limit(a.settle_threshold),
        "settle_to": _enc_limit(a.settle_to),
        "link_type": a.link_type,
        "metadata": a.metadata,
        "version": version - ((version >> 63) << 64),
        "frozen": a.frozen,
    }


def _dec_account(d: dict[str, Any]) -> Account:
    ledger, code, flags, ud32, reserved = (
        d["ledger"], d["code"], d["flags"], d["user_data_32"], d["reserved"]
    )  # fmt: skip
    if (ledger | ud32 | reserved) >> 32 or (code | flags) >> 16:
        _explain_decode(d, _ACCOUNT_SPEC)
    policy = d["policy"]
    fb = int.from_bytes
    return Account(
        fb(d["id"], "big"), ledger, code, flags,
        fb(d["debits_pending"], "big"), fb(d["debits_posted"], "big"),
        fb(d["credits_pending"], "big"), fb(d["credits_posted"], "big"),
        fb(d["user_data_128"], "big"), d["user_data_64"] & _U64_MASK, ud32, reserved,
        d["timestamp"] & _U64_MASK,
        None if policy is None else _enum_value(_POLICY_BY_SYMBOL, policy, "policy"),
        _dec_limit(d["min_balance"], "min_balance"),
        _dec_limit(d["max_balance"], "max_balance"),
        _dec_limit(d["settle_threshold"], "settle_threshold"),
        _dec_limit(d["settle_to"], "settle_to"),
        d["link_type"], d["metadata"], d["version"] & _U64_MASK, d["frozen"],
    )  # fmt: skip


# UpdateSettings: each field is null (absent, UNSET) or a Set* record whose `value` may be null
# (clear the stored value).
_SETTINGS_FIELDS: Final = (
    ("policy", "ledger.SetPolicy", "policy"),
    ("min_balance", "ledger.SetSigned", "limit"),
    ("max_balance", "ledger.SetSigned", "limit"),
    ("settle_threshold", "ledger.SetSigned", "limit"),
    ("settle_to", "ledger.SetSigned", "limit"),
    ("link_type", "ledger.SetString", "optstr"),
    ("metadata", "ledger.SetMetadata", "metadata"),
)


def _enc_setting(value: Any, kind: str, field: str) -> Any:
    if value is None:
        return None
    problem = _value_problem(value, kind)
    if problem is not None:
        raise EncodeError(problem, field)
    if kind == "policy":
        return _POLICY_SYMBOL[value]
    if kind == "limit":
        return _enc_signed(value)
    return value


def _enc_settings(s: UpdateSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, branch, kind in _SETTINGS_FIELDS:
        value = getattr(s, name)
        out[name] = None if value is UNSET else (branch, {"value": _enc_setting(value, kind, name)})
    return out


def _dec_settings(d: dict[str, Any]) -> UpdateSettings:
    s = UpdateSettings()
    for name, _branch, kind in _SETTINGS_FIELDS:
        wrapped = d[name]
        if wrapped is None:
            continue  # absent: stays UNSET
        value = wrapped["value"]
        if value is not None:
            if kind == "policy":
                value = _enum_value(_POLICY_BY_SYMBOL, value, name)
            elif kind == "limit":
                value = _dec_signed(value, name)
        setattr(s, name, value)
    return s


def _enc_account_command(c: AccountCommand) -> dict[str, Any]:
    problem = _value_problem(c.expected_version, "u64") or _value_problem(c.account_id, "u128")
    if problem is not None:
        _explain_encode(c, (("account_id", "u128"), ("expected_version", "u64")))
    settings = c.settings
    if settings is not None and not isinstance(settings, UpdateSettings):
        raise EncodeError(f"{type(settings).__name__} is not UpdateSettings", "settings")
    try:
        encoded_settings = None if settings is None else _enc_settings(settings)
    except EncodeError as exc:
        raise exc.within("settings") from None
    return {
        "kind": _enum_symbol(_ACMD_SYMBOL, c.kind, "kind"),
        "account_id": c.account_id.to_bytes(16, "big"),
        "expected_version": _u64_to_long(c.expected_version),
        "settings": encoded_settings,
    }


def _dec_account_command(d: dict[str, Any]) -> AccountCommand:
    return AccountCommand(
        _enum_value(_ACMD_BY_SYMBOL, d["kind"], "kind"),
        int.from_bytes(d["account_id"], "big"),
        d["expected_version"] & _U64_MASK,
        _dec_optional(d["settings"], _dec_settings, "settings"),
    )


# Events: the union branch is named by the record's full name.


def _enc_created(e: AccountCreated) -> tuple[str, dict[str, Any]]:
    try:
        return ("ledger.AccountCreated", {"account": _enc_account(e.account)})
    except EncodeError as exc:
        raise exc.within("account") from None


def _enc_changed(e: AccountChanged) -> tuple[str, dict[str, Any]]:
    problem = _value_problem(e.timestamp, "u64")
    if problem is not None:
        raise EncodeError(problem, "timestamp")
    try:
        account = _enc_account(e.account)
    except EncodeError as exc:
        raise exc.within("account") from None
    return (
        "ledger.AccountChanged",
        {"reason": e.reason, "account": account, "timestamp": _u64_to_long(e.timestamp)},
    )


def _enc_applied(e: TransferApplied) -> tuple[str, dict[str, Any]]:
    ts, debit, credit = e.timestamp, e.debit, e.credit
    if ts >> 64:
        raise OverflowError(ts)  # named by _explain_event
    return (
        "ledger.TransferApplied",
        {
            "kind": _KIND_SYMBOL[e.kind],
            "transfer": _enc_transfer(e.transfer),
            "released": e.released.to_bytes(16, "big"),
            "debit": None if debit is None else _enc_balances(debit),
            "credit": None if credit is None else _enc_balances(credit),
            "timestamp": ts - ((ts >> 63) << 64),
        },
    )


def _enc_failed(e: TransferFailed) -> tuple[str, dict[str, Any]]:
    if e.status >> 32 or e.timestamp >> 64:
        raise OverflowError(e.status)  # named by _explain_event
    return (
        "ledger.TransferFailed",
        {
            "transfer_id": e.transfer_id.to_bytes(16, "big"),
            "status": e.status,
            "timestamp": _u64_to_long(e.timestamp),
        },
    )


def _enc_settlement(e: SettlementRequested) -> tuple[str, dict[str, Any]]:
    if e.timestamp >> 64:
        raise OverflowError(e.timestamp)  # named by _explain_event
    return (
        "ledger.SettlementRequested",
        {
            "account_id": e.account_id.to_bytes(16, "big"),
            "transfer_id": e.transfer_id.to_bytes(16, "big"),
            "amount": e.amount.to_bytes(16, "big"),
            "balance": _enc_signed(e.balance),
            "timestamp": _u64_to_long(e.timestamp),
        },
    )


def _dec_created(d: dict[str, Any]) -> AccountCreated:
    return AccountCreated(_dec_within("account", _dec_account, d["account"]))


def _dec_changed(d: dict[str, Any]) -> AccountChanged:
    account = _dec_within("account", _dec_account, d["account"])
    return AccountChanged(d["reason"], account, d["timestamp"] & _U64_MASK)


def _dec_applied(d: dict[str, Any]) -> TransferApplied:
    debit, credit = d["debit"], d["credit"]
    return TransferApplied(
        _enum_value(_KIND_BY_SYMBOL, d["kind"], "kind"),
        _dec_within("transfer", _dec_transfer, d["transfer"]),
        int.from_bytes(d["released"], "big"),
        None if debit is None else _dec_balances(debit),
        None if credit is None else _dec_balances(credit),
        d["timestamp"] & _U64_MASK,
    )


def _dec_failed(d: dict[str, Any]) -> TransferFailed:
    status = d["status"]
    if status >> 32:
        raise DecodeError(f"{status} {'is negative' if status < 0 else 'exceeds u32'}", "status")
    return TransferFailed(
        int.from_bytes(d["transfer_id"], "big"), status, d["timestamp"] & _U64_MASK
    )


def _dec_settlement(d: dict[str, Any]) -> SettlementRequested:
    fb = int.from_bytes
    return SettlementRequested(
        fb(d["account_id"], "big"), fb(d["transfer_id"], "big"), fb(d["amount"], "big"),
        _dec_signed(d["balance"], "balance"), d["timestamp"] & _U64_MASK,
    )  # fmt: skip


_EVENT_ENCODERS: Final[dict[type, Callable[[Any], tuple[str, dict[str, Any]]]]] = {
    TransferApplied: _enc_applied,
    TransferFailed: _enc_failed,
    AccountCreated: _enc_created,
    AccountChanged: _enc_changed,
    SettlementRequested: _enc_settlement,
}
_EVENT_DECODERS: Final[dict[str, Callable[[dict[str, Any]], Event]]] = {
    "ledger.TransferApplied": _dec_applied,
    "ledger.TransferFailed": _dec_failed,
    "ledger.AccountCreated": _dec_created,
    "ledger.AccountChanged": _dec_changed,
    "ledger.SettlementRequested": _dec_settlement,
}


def _enc_event(e: Event) -> tuple[str, dict[str, Any]]:
    return _EVENT_ENCODERS[type(e)](e)


def _dec_event(item: Any) -> Event:
    name, d = item
    try:
        decoder = _EVENT_DECODERS[name]
    except KeyError:  # a newer union branch this code does not know
        raise DecodeError(f"unknown event type {name!r}") from None
    return decoder(d)


_RESULT_SPEC: Final = (("status", "u32"), ("timestamp", "u64"), ("version", "u64"))


def _enc_result(r: ResultEntry) -> dict[str, Any]:
    ts, version, status = r.timestamp, r.version, r.status
    if (ts | version) >> 64 or status >> 32:
        raise OverflowError("out of range")  # the list's explainer names the field
    return {
        "status": status,
        "timestamp": ts - ((ts >> 63) << 64),
        "version": version - ((version >> 63) << 64),
    }


def _dec_result(d: dict[str, Any]) -> ResultEntry:
    status = d["status"]
    if status >> 32:
        raise DecodeError(f"{status} {'is negative' if status < 0 else 'exceeds u32'}", "status")
    return ResultEntry(status, d["timestamp"] & _U64_MASK, d["version"] & _U64_MASK)


# ---------------------------------------------------------------------------------------------
# Lists: a comprehension on the hot path; on failure, find the element to name it.

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# What a converter may raise on a value of the wrong type or range (TypeError: `|` on None;
# AttributeError: .to_bytes on a float; OverflowError: .to_bytes of a negative or too big int).
_ENCODE_FAULTS: Final = (TypeError, AttributeError, OverflowError, KeyError, ValueError)


def _too_many(count: int, limit: int) -> str | None:
    if count <= limit:
        return None
    if limit == BATCH_EVENTS_MAX:  # a request's batch: the wording submitters see
        return f"{count} events exceed the batch maximum {limit}"
    return f"{count} entries exceed the maximum {limit}"


def _enc_one(convert: Callable[[_In], _Out], explain: Callable[[_In], None], item: _In) -> _Out:
    """`convert(item)`, turning a fault into an EncodeError named by `explain` where it can."""
    try:
        return convert(item)
    except EncodeError:
        raise
    except _ENCODE_FAULTS as exc:
        explain(item)  # raises the EncodeError naming the field, if it finds one
        raise EncodeError(_describe(exc)) from None


def _enc_list(
    convert: Callable[[_In], _Out],
    items: list[_In],
    name: str,
    explain: Callable[[_In], None],
    limit: int = BATCH_EVENTS_MAX,
) -> list[_Out]:
    if not isinstance(items, list):
        raise EncodeError(f"{type(items).__name__} is not a list", name)
    problem = _too_many(len(items), limit)
    if problem is not None:
        raise EncodeError(problem, name)
    try:
        return [convert(item) for item in items]
    except _ENCODE_FAULTS:  # EncodeError included: find the element to name it
        pass
    for i, item in enumerate(items):
        try:
            _enc_one(convert, explain, item)
        except EncodeError as exc:
            raise exc.within(f"{name}[{i}]") from None
    raise AssertionError("unreachable: the conversion failed once")


def _explain_transfer(t: Any) -> None:
    if not isinstance(t, Transfer):
        raise EncodeError(f"{type(t).__name__} is not a Transfer")
    _explain_encode(t, _TRANSFER_SPEC)


def _explain_account(a: Any) -> None:
    if not isinstance(a, Account):
        raise EncodeError(f"{type(a).__name__} is not an Account")
    _explain_encode(a, _ACCOUNT_SPEC)


def _explain_result(r: Any) -> None:
    if not isinstance(r, ResultEntry):
        raise EncodeError(f"{type(r).__name__} is not a ResultEntry")
    _explain_encode(r, _RESULT_SPEC)


def _explain_balances(b: Any, field: str) -> None:
    if b is None:
        return
    if not isinstance(b, Balances):
        raise EncodeError(f"{type(b).__name__} is not Balances", field)
    try:
        _explain_encode(b, _BALANCES_SPEC)
    except EncodeError as exc:
        raise exc.within(field) from None


def _explain_event(e: Any) -> None:
    """Names the field of an event that made its conversion fail."""
    if type(e) not in _EVENT_ENCODERS:
        raise EncodeError(f"{type(e).__name__} is not an event")
    if isinstance(e, TransferApplied):
        if e.kind not in _KIND_SYMBOL:
            raise EncodeError(f"{e.kind!r} is not a TransferKind", "kind")
        try:
            _explain_transfer(e.transfer)
        except EncodeError as exc:
            raise exc.within("transfer") from None
        _explain_encode(e, (("released", "u128"), ("timestamp", "u64")))
        _explain_balances(e.debit, "debit")
        _explain_balances(e.credit, "credit")
    elif isinstance(e, (AccountCreated, AccountChanged)):
        try:
            _explain_account(e.account)
        except EncodeError as exc:
            raise exc.within("account") from None
    elif isinstance(e, TransferFailed):
        _explain_encode(e, (("transfer_id", "u128"), ("status", "u32"), ("timestamp", "u64")))
    elif isinstance(e, SettlementRequested):
        _explain_encode(
            e,
            (
                ("account_id", "u128"), ("transfer_id", "u128"), ("amount", "u128"),
                ("balance", "signed"), ("timestamp", "u64"),
            ),
        )  # fmt: skip


def _dec_list(
    convert: Callable[[Any], _Out], items: list[Any], name: str, limit: int = BATCH_EVENTS_MAX
) -> list[_Out]:
    problem = _too_many(len(items), limit)
    if problem is not None:
        raise DecodeError(problem, name)
    try:
        return [convert(item) for item in items]
    except DecodeError:
        pass
    for i, item in enumerate(items):
        try:
            convert(item)
        except DecodeError as exc:
            raise exc.within(f"{name}[{i}]") from None
    raise AssertionError("unreachable: the conversion failed once")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Whole messages and the cross-partition protocol. Not the hot path: values are checked field by
# field (`_enc_value`), each record's scalar fields described once by a spec.


def _enc_value(value: Any, kind: str, field: str) -> Any:
    """The Avro datum of one checked scalar (`kind` as in `_value_problem`)."""
    problem = _value_problem(value, kind)
    if problem is not None:
        raise EncodeError(problem, field)
    if kind == "u128":
        return value.to_bytes(16, "big")
    if kind == "u64":
        return _u64_to_long(value)
    return value


def _dec_value(value: Any, kind: str, field: str) -> Any:
    if kind == "u128":
        return int.from_bytes(value, "big")
    if kind == "u64":
        return value & _U64_MASK
    if kind in ("u32", "u16", "i32"):  # fastavro reads an Avro int of any varint length
        problem = _value_problem(value, kind)
        if problem is not None:
            raise DecodeError(problem, field)
    return value


def _enc_fields(obj: Any, spec: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {name: _enc_value(getattr(obj, name), kind, name) for name, kind in spec}


def _dec_fields(d: dict[str, Any], spec: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {name: _dec_value(d[name], kind, name) for name, kind in spec}


def _enc_within(field: str, convert: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return convert(value)
    except EncodeError as exc:
        raise exc.within(field) from None
    except _ENCODE_FAULTS as exc:
        raise EncodeError(_describe(exc), field or None) from None


def _dec_within(field: str, convert: Callable[[Any], _Out], value: Any) -> _Out:
    try:
        return convert(value)
    except DecodeError as exc:
        raise exc.within(field) from None


def _enc_record(value: Any, cls: type, convert: Callable[[Any], _Out], field: str) -> _Out:
    if not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise EncodeError(f"{type(value).__name__} is not {article} {cls.__name__}", field or None)
    return _enc_within(field, convert, value)


def _enc_optional(value: Any, cls: type, convert: Callable[[Any], _Out], field: str) -> _Out | None:
    return None if value is None else _enc_record(value, cls, convert, field)


def _dec_optional(value: Any, convert: Callable[[Any], _Out], field: str) -> _Out | None:
    return None if value is None else _dec_within(field, convert, value)


def _enc_records(
    items: list[Any], cls: type, convert: Callable[[Any], _Out], name: str
) -> list[_Out]:
    return _enc_list(
        lambda item: _enc_record(item, cls, convert, ""), items, name, _no_explanation, LIST_MAX
    )


def _no_explanation(item: Any) -> None:
    """The converter named the field itself."""


def _enc_ids(ids: list[int], name: str) -> list[bytes]:
    return _enc_list(lambda v: _enc_value(v, "u128", ""), ids, name, _no_explanation, LIST_MAX)


def _dec_ids(raw: list[Any], name: str) -> list[int]:
    return _dec_list(_u128_from_bytes, raw, name, LIST_MAX)


def _u128_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


# CommandBatch (also nested in SequencedEntry).

_COMMAND_BATCH_SPEC: Final = (
    ("request_id", "u128"),
    ("submitter", "str"),
    ("submitted_at_ns", "u64"),
)


def _submitter_problem(submitter: str) -> str | None:
    if len(submitter) > SUBMITTER_MAX:
        return f"{len(submitter)} characters exceed the maximum {SUBMITTER_MAX}"
    return None


def _enc_command_batch(batch: CommandBatch) -> dict[str, Any]:
    datum = _enc_fields(batch, _COMMAND_BATCH_SPEC)
    problem = _submitter_problem(batch.submitter)
    if problem is not None:
        raise EncodeError(problem, "submitter")
    datum["operation"] = _enum_symbol(_OPERATION_SYMBOL, batch.operation, "operation")
    datum["accounts"] = _enc_list(_enc_account, batch.accounts, "accounts", _explain_account)
    datum["transfers"] = _enc_list(_enc_transfer, batch.transfers, "transfers", _explain_transfer)
    datum["account_command"] = _enc_optional(
        batch.account_command, AccountCommand, _enc_account_command, "account_command"
    )
    return datum


def _dec_command_batch(d: dict[str, Any]) -> CommandBatch:
    problem = _submitter_problem(d["submitter"])
    if problem is not None:
        raise DecodeError(problem, "submitter")
    return CommandBatch(
        **_dec_fields(d, _COMMAND_BATCH_SPEC),
        operation=_enum_value(_OPERATION_BY_SYMBOL, d["operation"], "operation"),
        accounts=_dec_list(_dec_account, d["accounts"], "accounts"),
        transfers=_dec_list(_dec_transfer, d["transfers"], "transfers"),
        account_command=_dec_optional(
            d["account_command"], _dec_account_command, "account_command"
        ),
    )


# SequencedEntry and its ExpireRequest.


def _enc_expire(e: ExpireRequest) -> dict[str, Any]:
    return {
        "transfer_ids": _enc_ids(e.transfer_ids, "transfer_ids"),
        "now": _enc_value(e.now, "u64", "now"),
    }


def _dec_expire(d: dict[str, Any]) -> ExpireRequest:
    return ExpireRequest(_dec_ids(d["transfer_ids"], "transfer_ids"), d["now"] & _U64_MASK)


_SEQUENCED_SPEC: Final = (("home", "i32"), ("attempt", "u32"), ("all_partitions", "bool"))


def _enc_sequenced(s: SequencedEntry) -> dict[str, Any]:
    datum = _enc_fields(s, _SEQUENCED_SPEC)
    datum["account_ids"] = _enc_ids(s.account_ids, "account_ids")
    datum["transfer_ids"] = _enc_ids(s.transfer_ids, "transfer_ids")
    datum["request"] = _enc_optional(s.request, CommandBatch, _enc_command_batch, "request")
    datum["batched"] = _enc_records(s.batched, CommandBatch, _enc_command_batch, "batched")
    datum["expire"] = _enc_optional(s.expire, ExpireRequest, _enc_expire, "expire")
    return datum


def _dec_sequenced(d: dict[str, Any]) -> SequencedEntry:
    return SequencedEntry(
        **_dec_fields(d, _SEQUENCED_SPEC),
        account_ids=_dec_ids(d["account_ids"], "account_ids"),
        transfer_ids=_dec_ids(d["transfer_ids"], "transfer_ids"),
        request=_dec_optional(d["request"], _dec_command_batch, "request"),
        batched=_dec_list(_dec_command_batch, d["batched"], "batched", LIST_MAX),
        expire=_dec_optional(d["expire"], _dec_expire, "expire"),
    )


# Facts: each dict is an array of {id, value} records, in the dict's order; a key may appear once.
# Value kinds beyond the scalars: "account?" / "transfer?" (null: does not exist), "expiry" (an
# (expires_at, timestamp) pair of u64).

_FACTS_SPEC: Final = (
    ("sequence", "i64"), ("sender", "i32"), ("max_account_timestamp", "u64"),
    ("max_transfer_timestamp", "u64"), ("last_timestamp", "u64"),
)  # fmt: skip
_FACTS_MAPS: Final = (
    ("accounts", "u128", "account?"), ("settlements", "u128", "u128"),
    ("transfers", "u128", "transfer?"), ("pending", "u128", "u32"), ("failed", "u128", "u32"),
    ("expiries", "u128", "expiry"), ("timestamp_kinds", "u64", "u32"),
)  # fmt: skip


def _enc_fact(value: Any, kind: str, field: str) -> Any:
    if kind == "account?":
        return _enc_optional(
            value, Account, partial(_enc_one, _enc_account, _explain_account), field
        )
    if kind == "transfer?":
        return _enc_optional(
            value, Transfer, partial(_enc_one, _enc_transfer, _explain_transfer), field
        )
    if kind == "expiry":
        if not (isinstance(value, tuple) and len(value) == 2):
            raise EncodeError(f"{value!r} is not an (expires_at, timestamp) pair", field)
        return {
            "expires_at": _enc_value(value[0], "u64", f"{field}.expires_at"),
            "timestamp": _enc_value(value[1], "u64", f"{field}.timestamp"),
        }
    return _enc_value(value, kind, field)


def _dec_fact(value: Any, kind: str, field: str) -> Any:
    if kind == "account?":
        return _dec_optional(value, _dec_account, field)
    if kind == "transfer?":
        return _dec_optional(value, _dec_transfer, field)
    if kind == "expiry":
        return (value["expires_at"] & _U64_MASK, value["timestamp"] & _U64_MASK)
    return _dec_value(value, kind, field)


def _enc_map(items: dict[Any, Any], name: str, key_kind: str, value_kind: str) -> list[Any]:
    if not isinstance(items, dict):
        raise EncodeError(f"{type(items).__name__} is not a dict", name)
    problem = _too_many(len(items), LIST_MAX)
    if problem is not None:
        raise EncodeError(problem, name)
    return [
        {
            "id": _enc_value(key, key_kind, f"{name}[{i}].id"),
            "value": _enc_fact(value, value_kind, f"{name}[{i}].value"),
        }
        for i, (key, value) in enumerate(items.items())
    ]


def _dec_map(entries: list[Any], name: str, key_kind: str, value_kind: str) -> dict[Any, Any]:
    problem = _too_many(len(entries), LIST_MAX)
    if problem is not None:
        raise DecodeError(problem, name)
    out: dict[Any, Any] = {}
    for i, entry in enumerate(entries):
        key = _dec_value(entry["id"], key_kind, f"{name}[{i}].id")
        if key in out:  # one dict, one encoding
            raise DecodeError(f"duplicate key {key}", f"{name}[{i}].id")
        out[key] = _dec_fact(entry["value"], value_kind, f"{name}[{i}].value")
    return out


def _enc_facts(f: Facts) -> dict[str, Any]:
    datum = _enc_fields(f, _FACTS_SPEC)
    for name, key_kind, value_kind in _FACTS_MAPS:
        datum[name] = _enc_map(getattr(f, name), name, key_kind, value_kind)
    return datum


def _dec_facts(d: dict[str, Any]) -> Facts:
    maps: dict[str, Any] = {name: _dec_map(d[name], name, kk, vk) for name, kk, vk in _FACTS_MAPS}
    return Facts(**_dec_fields(d, _FACTS_SPEC), **maps)


# Apply, and the events of Apply and EventBatch.


def _enc_events(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return _enc_list(_enc_event, events, "events", _explain_event, EVENT_BATCH_EVENTS_MAX)


def _dec_events(items: list[Any]) -> list[Event]:
    return _dec_list(_dec_event, items, "events", EVENT_BATCH_EVENTS_MAX)


def _enc_apply(a: Apply) -> dict[str, Any]:
    return {
        "sequence": _enc_value(a.sequence, "i64", "sequence"),
        "timestamp": _enc_value(a.timestamp, "i64", "timestamp"),
        "events": _enc_events(a.events),
    }


def _dec_apply(d: dict[str, Any]) -> Apply:
    return Apply(d["sequence"], _dec_events(d["events"]), d["timestamp"])


# Checkpoint: payloads stay in the partition's inbox; entries and decisions name them by offset.

_ENTRY_REF_SPEC: Final = (("offset", "i64"), ("admitted", "bool"), ("apply_offset", "i64"))
_DECISION_REF_SPEC: Final = (("offset", "i64"), ("has_entry", "bool"))


def _enc_entry_ref(e: EntryRef) -> dict[str, Any]:
    return _enc_fields(e, _ENTRY_REF_SPEC)


def _dec_entry_ref(d: dict[str, Any]) -> EntryRef:
    return EntryRef(**_dec_fields(d, _ENTRY_REF_SPEC))


def _enc_decision_ref(r: DecisionRef) -> dict[str, Any]:
    datum = _enc_fields(r, _DECISION_REF_SPEC)
    datum["senders"] = _enc_list(
        lambda v: _enc_value(v, "i32", ""), r.senders, "senders", _no_explanation, LIST_MAX
    )
    datum["facts_offsets"] = _enc_offsets(r.facts_offsets, "facts_offsets")
    # Parallel lists: each sender's Facts is at the same position of facts_offsets.
    if len(datum["senders"]) != len(datum["facts_offsets"]):
        raise EncodeError(
            f"{len(r.facts_offsets)} offsets for {len(r.senders)} senders", "facts_offsets"
        )
    return datum


def _dec_decision_ref(d: dict[str, Any]) -> DecisionRef:
    decoded = DecisionRef(
        **_dec_fields(d, _DECISION_REF_SPEC),
        senders=_dec_list(_dec_partition, d["senders"], "senders", LIST_MAX),
        facts_offsets=_dec_offsets(d["facts_offsets"], "facts_offsets"),
    )
    if len(decoded.senders) != len(decoded.facts_offsets):
        raise DecodeError(
            f"{len(decoded.facts_offsets)} offsets for {len(decoded.senders)} senders",
            "facts_offsets",
        )
    return decoded


def _enc_offsets(offsets: list[int], field: str) -> list[Any]:
    return _enc_list(lambda v: _enc_value(v, "i64", ""), offsets, field, _no_explanation, LIST_MAX)


def _dec_offsets(raw: Any, field: str) -> list[int]:
    return _dec_list(_dec_offset, raw, field, LIST_MAX)


def _dec_offset(value: Any) -> int:
    offset: int = _dec_value(value, "i64", "")
    return offset


def _dec_partition(value: Any) -> int:
    partition: int = _dec_value(value, "i32", "")
    return partition


_CHECKPOINT_SPEC: Final = (
    ("partition", "i32"), ("commands_offset", "i64"), ("events_offset", "i64"),
    ("last_timestamp", "u64"), ("now", "u64"), ("sequence_next", "i64"),
)  # fmt: skip


def _enc_checkpoint(c: Checkpoint) -> dict[str, Any]:
    datum = _enc_fields(c, _CHECKPOINT_SPEC)
    datum["entries"] = _enc_records(c.entries, EntryRef, _enc_entry_ref, "entries")
    datum["decisions"] = _enc_records(c.decisions, DecisionRef, _enc_decision_ref, "decisions")
    datum["deferred"] = _enc_offsets(c.deferred, "deferred")
    datum["expiring"] = _enc_ids(c.expiring, "expiring")
    return datum


def _dec_checkpoint(d: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        **_dec_fields(d, _CHECKPOINT_SPEC),
        entries=_dec_list(_dec_entry_ref, d["entries"], "entries", LIST_MAX),
        decisions=_dec_list(_dec_decision_ref, d["decisions"], "decisions", LIST_MAX),
        deferred=_dec_offsets(d["deferred"], "deferred"),
        expiring=_dec_ids(d["expiring"], "expiring"),
    )


def _enc_result_batch(batch: ResultBatch) -> dict[str, Any]:
    datum = _enc_fields(
        batch, (("request_id", "u128"), ("submitter", "str"), ("rejection", "optstr"))
    )
    datum["operation"] = _enum_symbol(_OPERATION_SYMBOL, batch.operation, "operation")
    datum["results"] = _enc_list(_enc_result, batch.results, "results", _explain_result)
    datum["sequence"] = _enc_value(batch.sequence, "i64", "sequence")
    datum["participants"] = _enc_list(
        lambda v: _enc_value(v, "i32", ""),
        batch.participants,
        "participants",
        _no_explanation,
        LIST_MAX,
    )
    return datum


def _dec_result_batch(d: dict[str, Any]) -> ResultBatch:
    return ResultBatch(
        int.from_bytes(d["request_id"], "big"),
        d["submitter"],
        _enum_value(_OPERATION_BY_SYMBOL, d["operation"], "operation"),
        _dec_list(_dec_result, d["results"], "results"),
        d["rejection"],
        d["sequence"],
        _dec_list(_dec_partition, d["participants"], "participants", LIST_MAX),
    )


_EVENT_BATCH_SPEC: Final = (("partition", "i32"), ("source_offset", "i64"))


def _enc_event_batch(batch: EventBatch) -> dict[str, Any]:
    datum = _enc_fields(batch, _EVENT_BATCH_SPEC)
    datum["events"] = _enc_events(batch.events)
    return datum


def _dec_event_batch(d: dict[str, Any]) -> EventBatch:
    return EventBatch(d["partition"], _dec_events(d["events"]), d["source_offset"])


# ---------------------------------------------------------------------------------------------
# Fast path: EventBatch and Apply messages whose events are all TransferApplied (what decisions
# emit) are written by hand, byte for byte what fastavro writes for the schema whose fingerprint
# is pinned below (tests/schemas compare the bytes). Anything else, including any value the fast
# path does not accept as is, goes through fastavro, which also names the faulty field.

# message: (fingerprint of the schema the bytes follow, int fields before the events, after).
_FAST_LAYOUTS: Final = {
    "EventBatch": ("d03e4462ff2d85bc", (("partition", "i32"),), (("source_offset", "i64"),)),
    "Apply": ("0c4d82901ebe9c02", (("sequence", "i64"), ("timestamp", "i64")), ()),
}
_VARINT_1: Final = [bytes((n,)) for n in range(128)]
_ZIGZAG_U64_FLIP: Final = (1 << 65) - 1
# Union branch 2 (TransferApplied) and the TransferKind enum index, zigzag-encoded.
_APPLIED_PREFIX: Final = {k: bytes((2 << 1, i << 1)) for i, k in enumerate(TransferKind)}
_I32_RANGE: Final = range(-(1 << 31), 1 << 31)
_I64_RANGE: Final = range(_I64_MIN, _I64_MAX + 1)


# Encoded events by id() of the event object, shared by the batches of one transaction.
EncodedEvents = dict[int, bytes]


class _NotFast(Exception):
    """The value is for the general path."""


# Varints 14 bits at a time (timestamps take 9 bytes; a byte at a time was a tenth of encoding
# an event): the last group's bytes, and a group's bytes when more follow.
_VARINT_14: Final = [
    bytes(((v & 127) | 128, v >> 7)) if v > 127 else bytes((v,)) for v in range(1 << 14)
]
_VARINT_14_MORE: Final = [bytes(((v & 127) | 128, (v >> 7) | 128)) for v in range(1 << 14)]


def _varint(n: int) -> bytes:
    """Avro varint of an already zigzag-encoded `n` >= 0."""
    if n < 16384:
        return _VARINT_14[n]
    parts = []
    while n >= 16384:
        parts.append(_VARINT_14_MORE[n & 16383])
        n >>= 14
    parts.append(_VARINT_14[n])
    return b"".join(parts)


def _varint_u64(v: int) -> bytes:
    """The varint of the long holding u64 `v` (zigzag of its two's complement)."""
    if v < 64:
        return _VARINT_1[v << 1]  # (negative v is refused before this is called)
    return _varint((v << 1) ^ _ZIGZAG_U64_FLIP if v >> 63 else v << 1)


def _fast_signed(value: Any, kind: str) -> bytes:
    if type(value) is not int or value not in (_I32_RANGE if kind == "i32" else _I64_RANGE):
        raise _NotFast
    return _varint((value << 1) ^ (value >> 63))


def _fast_balances(b: Balances | None) -> bytes:
    if b is None:
        return b"\x00"
    return b"".join((
        b"\x02", b.account_id.to_bytes(16, "big"), b.debits_pending.to_bytes(16, "big"),
        b.debits_posted.to_bytes(16, "big"), b.credits_pending.to_bytes(16, "big"),
        b.credits_posted.to_bytes(16, "big"),
    ))  # fmt: skip


def _fast_transfer(t: Any) -> bytes:
    """A ledger.Transfer record."""
    if type(t) is not Transfer:
        raise _NotFast
    ud64, ts, dav, cav = (
        t.user_data_64,
        t.timestamp,
        t.debit_account_version,
        t.credit_account_version,
    )
    ud32, timeout, ledger, code, flags = t.user_data_32, t.timeout, t.ledger, t.code, t.flags
    if (ud64 | ts | dav | cav) >> 64 or (ud32 | timeout | ledger) >> 32 or (code | flags) >> 16:
        raise _NotFast  # negative values too
    v, one = _varint, _VARINT_1  # most of these are small: one byte, no call
    return b"".join((
        t.id.to_bytes(16, "big"), t.debit_account_id.to_bytes(16, "big"),
        t.credit_account_id.to_bytes(16, "big"), t.amount.to_bytes(16, "big"),
        t.pending_id.to_bytes(16, "big"), t.user_data_128.to_bytes(16, "big"),
        _varint_u64(ud64), one[ud32 << 1] if ud32 < 64 else v(ud32 << 1),
        one[timeout << 1] if timeout < 64 else v(timeout << 1),
        one[ledger << 1] if ledger < 64 else v(ledger << 1),
        one[code << 1] if code < 64 else v(code << 1),
        one[flags << 1] if flags < 64 else v(flags << 1),
        _varint_u64(ts), _varint_u64(dav), _varint_u64(cav),
    ))  # fmt: skip


def _fast_applied(e: Any) -> bytes:
    if type(e) is not TransferApplied:
        raise _NotFast
    ets = e.timestamp
    if ets >> 64:
        raise _NotFast
    return b"".join((
        _APPLIED_PREFIX[e.kind], _fast_transfer(e.transfer), e.released.to_bytes(16, "big"),
        _fast_balances(e.debit), _fast_balances(e.credit), _varint_u64(ets),
    ))  # fmt: skip


# CommandBatch of CREATE_TRANSFERS (what submitters send all day), by hand too: request id,
# submitter, the operation's enum index 1, no accounts, the transfers, no account command, and
# submitted_at_ns.
_COMMAND_FINGERPRINT: Final = "5174bc4772e89049"
_CREATE_TRANSFERS_INDEX: Final = 1 << 1  # zigzagged
_EMPTY_ARRAY = _NULL_BRANCH = b"\x00"


# ResultBatch too (one per request, so what single-event requests cost most): request id,
# submitter, operation, the entries, no rejection, sequence, participants.
_RESULT_FINGERPRINT: Final = "1790378b75588d7b"
_OPERATION_INDEX: Final = {operation: _VARINT_1[i << 1] for i, operation in enumerate(Operation)}


def _fast_head(header: bytes, batch: CommandBatch | ResultBatch) -> bytes:
    """What a request and its results start with: request id, submitter, operation."""
    submitter = batch.submitter.encode()
    return b"".join((
        header, batch.request_id.to_bytes(16, "big"), _varint(len(submitter) << 1), submitter,
        _OPERATION_INDEX[batch.operation],
    ))  # fmt: skip


def _fast_result_write(header: bytes, batch: Any) -> bytes | None:
    """The result batch's bytes, or None if it is not for the fast path."""
    try:
        results, participants = batch.results, batch.participants
        if (
            batch.rejection is not None
            or type(results) is not list
            or type(participants) is not list
            or len(participants) > LIST_MAX
            or type(batch.submitter) is not str
            or type(batch.sequence) is not int
            or batch.sequence not in _I64_RANGE
        ):
            return None
        parts: list[bytes | bytearray] = [_fast_head(header, batch)]
        if results:
            parts.append(_varint(len(results) << 1))
            for r in results:
                if type(r) is not ResultEntry:
                    return None
                status, ts, version = r.status, r.timestamp, r.version
                if status >> 32 or (ts | version) >> 64:
                    return None  # negative values too
                parts += (_varint(status << 1), _varint_u64(ts), _varint_u64(version))
        parts += (_EMPTY_ARRAY, _NULL_BRANCH, _fast_signed(batch.sequence, "i64"))
        if participants:
            parts.append(_varint(len(participants) << 1))
            parts += [_fast_signed(p, "i32") for p in participants]
        parts.append(_EMPTY_ARRAY)
        return b"".join(parts)
    except (_NotFast, *_ENCODE_FAULTS):
        return None


def _fast_command_write(header: bytes, batch: Any) -> bytes | None:
    """The request's bytes, or None if it is not for the fast path."""
    try:
        transfers = batch.transfers
        if (
            batch.operation is not Operation.CREATE_TRANSFERS
            or batch.accounts
            or batch.account_command is not None
            or type(transfers) is not list
            or not 0 < len(transfers) <= BATCH_EVENTS_MAX
            or type(batch.submitter) is not str
            or len(batch.submitter) > SUBMITTER_MAX
            or type(batch.submitted_at_ns) is not int
            or batch.submitted_at_ns >> 64
        ):
            return None
        return b"".join((
            _fast_head(header, batch), _EMPTY_ARRAY,
            _varint(len(transfers) << 1), *[_fast_transfer(t) for t in transfers], _EMPTY_ARRAY,
            _NULL_BRANCH, _varint_u64(batch.submitted_at_ns),
        ))  # fmt: skip
    except (_NotFast, *_ENCODE_FAULTS):
        return None


def _fast_write(
    header: bytes, layout: tuple[str, Any, Any], message: Any, memo: EncodedEvents | None = None
) -> bytes | None:
    """The message's bytes, or None if it is not for the fast path."""
    _, before, after = layout
    try:
        events = message.events
        if type(events) is not list or len(events) > EVENT_BATCH_EVENTS_MAX:
            return None
        parts: list[bytes | bytearray] = [header]
        parts += [_fast_signed(getattr(message, name), kind) for name, kind in before]
        if events:
            parts.append(_varint(len(events) << 1))
            if memo is None:
                parts += [_fast_applied(e) for e in events]
            else:
                for e in events:
                    key = id(e)
                    encoded = memo.get(key)
                    if encoded is None:
                        encoded = memo[key] = _fast_applied(e)
                    parts.append(encoded)
        parts.append(b"\x00")
        parts += [_fast_signed(getattr(message, name), kind) for name, kind in after]
        return b"".join(parts)
    except (_NotFast, *_ENCODE_FAULTS):
        return None


# The decoder of the same messages: EventBatch and Apply whose events are all TransferApplied,
# written with the pinned schema (and read with it: the current version). It accepts only what
# fastavro's writer produces — minimal varints holding at most 64 bits, positive block counts,
# in-range values — and anything else (another event type, a value the slow path would refuse or
# might read differently, truncation, trailing bytes) makes it give up: the message is then
# decoded by fastavro, which raises the DecodeError naming the field.

_VARINT_STOPS: Final = int.from_bytes(b"\x80" * 10, "little")  # the continuation bits
_VARINT_DIGITS: Final = int.from_bytes(b"\x7f" * 10, "little")


def _slots(value: int, width: int, count: int) -> int:
    """`value` repeated in `count` slots of `width` bits."""
    return sum(value << (width * i) for i in range(count))


# Gathering the 7-bit groups of up to 10 bytes (little-endian): pairs, quads, octets, all.
_PACK: Final = (
    (1, _slots(0x7F, 16, 5), _slots(0x7F << 7, 16, 5)),
    (2, _slots((1 << 14) - 1, 32, 3), _slots(((1 << 14) - 1) << 14, 32, 3)),
    (4, _slots((1 << 28) - 1, 64, 2), _slots(((1 << 28) - 1) << 28, 64, 2)),
    (8, (1 << 56) - 1, ((1 << 56) - 1) << 56),
)
(_P1, _A1, _B1), (_P2, _A2, _B2), (_P3, _A3, _B3), (_P4, _A4, _B4) = _PACK
_KIND_BY_BYTE: Final = {i << 1: k for i, k in enumerate(TransferKind)}  # the zigzagged index
_APPLIED_BRANCH: Final = 2 << 1  # the event union's TransferApplied branch, zigzagged
_FAST_CLASSES: Final[dict[str, Callable[..., Any]]] = {"EventBatch": EventBatch, "Apply": Apply}


def _read_varint(data: bytes, p: int) -> tuple[int, int]:
    """The zigzagged varint at `p` (>= 2 bytes: the byte at `p` has its continuation bit), and
    the position after it; _NotFast unless minimal and below 2^64."""
    x = int.from_bytes(data[p : p + 10], "little")
    stop = ~x & _VARINT_STOPS
    stop &= -stop  # the bit 7 of the first byte without the continuation bit
    x &= (stop - 1) & _VARINT_DIGITS
    x = (x & _A1) | ((x >> _P1) & _B1)
    x = (x & _A2) | ((x >> _P2) & _B2)
    x = (x & _A3) | ((x >> _P3) & _B3)
    x = (x & _A4) | ((x >> _P4) & _B4)
    size = stop.bit_length() >> 3
    if not stop or x >> 64 or not x >> (7 * size - 7):  # no end, > 64 bits, or not minimal
        raise _NotFast
    return x, p + size


def _read_signed(data: bytes, p: int, kind: str) -> tuple[int, int]:
    n = data[p]
    if n < 128:
        p += 1
    else:
        n, p = _read_varint(data, p)
    value = (n >> 1) ^ -(n & 1)
    if kind == "i32" and value not in _I32_RANGE:
        raise _NotFast  # fastavro reads an int of any length: leave it to the slow path
    return value, p


def _read_transfer(data: bytes, p: int) -> tuple[Transfer, int, int, int]:
    """The ledger.Transfer at `p`: (it, the position after it, and where its timestamp's bytes
    start and end)."""
    fb, read, mask, u64 = int.from_bytes, _read_varint, U128_MAX, _U64_MASK
    # id .. user_data_128: six ledger.u128. A slice cut short by the end of the data leaves
    # p past it: the next read raises IndexError, or the final length check fails.
    x = fb(data[p : p + 96], "big")
    p += 96
    # user_data_64, user_data_32, timeout, ledger, code, flags, timestamp, both versions.
    n0 = data[p]
    if n0 < 128:
        p += 1
    else:
        n0, p = read(data, p)
    n1 = data[p]
    if n1 < 128:
        p += 1
    else:
        n1, p = read(data, p)
    n2 = data[p]
    if n2 < 128:
        p += 1
    else:
        n2, p = read(data, p)
    n3 = data[p]
    if n3 < 128:
        p += 1
    else:
        n3, p = read(data, p)
    n4 = data[p]
    if n4 < 128:
        p += 1
    else:
        n4, p = read(data, p)
    n5 = data[p]
    if n5 < 128:
        p += 1
    else:
        n5, p = read(data, p)
    ts_at = p
    n6 = data[p]
    if n6 < 128:
        p += 1
    else:
        n6, p = read(data, p)
    ts_end = p
    n7 = data[p]
    if n7 < 128:
        p += 1
    else:
        n7, p = read(data, p)
    n8 = data[p]
    if n8 < 128:
        p += 1
    else:
        n8, p = read(data, p)
    u32s, u16s = n1 | n2 | n3, n4 | n5
    if (u32s | u16s) & 1 or u32s >> 33 or u16s >> 17:
        raise _NotFast  # negative or out of range: the slow path names the field
    transfer = Transfer(
        x >> 640, (x >> 512) & mask, (x >> 384) & mask, (x >> 256) & mask,
        (x >> 128) & mask, x & mask, ((n0 >> 1) ^ -(n0 & 1)) & u64, n1 >> 1, n2 >> 1,
        n3 >> 1, n4 >> 1, n5 >> 1, ((n6 >> 1) ^ -(n6 & 1)) & u64,
        ((n7 >> 1) ^ -(n7 & 1)) & u64, ((n8 >> 1) ^ -(n8 & 1)) & u64,
    )  # fmt: skip
    return transfer, p, ts_at, ts_end


def _read_applied(data: bytes, p: int, count: int, out: list[Event]) -> int:
    """Appends `count` TransferApplied read at `p`; returns the position after them."""
    fb, read, mask, u64 = int.from_bytes, _read_varint, U128_MAX, _U64_MASK
    append, kinds = out.append, _KIND_BY_BYTE
    for _ in range(count):
        if data[p] != _APPLIED_BRANCH:
            raise _NotFast
        kind = kinds[data[p + 1]]
        transfer, p, ts_at, ts_end = _read_transfer(data, p + 2)
        released = fb(data[p : p + 16], "big")
        p += 16
        branch = data[p]
        if branch == 2:
            x = fb(data[p + 1 : p + 81], "big")
            debit: Balances | None = Balances(
                x >> 512, (x >> 384) & mask, (x >> 256) & mask, (x >> 128) & mask, x & mask
            )
            p += 81
        elif branch == 0:
            debit = None
            p += 1
        else:
            raise _NotFast
        branch = data[p]
        if branch == 2:
            x = fb(data[p + 1 : p + 81], "big")
            credit: Balances | None = Balances(
                x >> 512, (x >> 384) & mask, (x >> 256) & mask, (x >> 128) & mask, x & mask
            )
            p += 81
        elif branch == 0:
            credit = None
            p += 1
        else:
            raise _NotFast
        # The event's timestamp is usually the transfer's: the same bytes, the same value.
        size = ts_end - ts_at
        if data[p : p + size] == data[ts_at:ts_end]:
            ts = transfer.timestamp
            p += size
        else:
            n = data[p]
            if n < 128:
                p += 1
            else:
                n, p = read(data, p)
            ts = ((n >> 1) ^ -(n & 1)) & u64
        append(TransferApplied(kind, transfer, released, debit, credit, ts))
    return p


def _fast_read(message: str, layout: tuple[str, Any, Any], data: bytes) -> Any:
    """The message read from `data` (header checked by the caller), or None if it is not for
    the fast path."""
    _, before, after = layout
    try:
        fields: dict[str, Any] = {}
        p = _HEADER_LEN
        for name, kind in before:
            fields[name], p = _read_signed(data, p, kind)
        events: list[Event] = []
        while True:
            n = data[p]
            if n < 128:
                p += 1
            else:
                n, p = _read_varint(data, p)
            if not n:
                break
            if n & 1 or len(events) + (n >> 1) > EVENT_BATCH_EVENTS_MAX:
                return None  # a block with its byte size, or too many events
            p = _read_applied(data, p, n >> 1, events)
        for name, kind in after:
            fields[name], p = _read_signed(data, p, kind)
        if p != len(data):
            return None
        return _FAST_CLASSES[message](events=events, **fields)
    except Exception:  # _NotFast, IndexError (truncated), KeyError (enum index): any doubt
        return None


def _fast_command_read(data: bytes) -> CommandBatch | None:
    """A CREATE_TRANSFERS request read from `data` (header checked by the caller), or None if
    it is not for the fast path (anything else, or any doubt: fastavro decides)."""
    try:
        p = _HEADER_LEN
        request_id = int.from_bytes(data[p : p + 16], "big")
        p += 16
        n = data[p]
        if n < 128:
            p += 1
        else:
            n, p = _read_varint(data, p)
        if n & 1:
            return None
        submitter = data[p : p + (n >> 1)].decode()
        if len(submitter) > SUBMITTER_MAX:
            return None  # the slow path names the problem
        p += n >> 1
        if data[p] != _CREATE_TRANSFERS_INDEX or data[p + 1] != 0:  # no accounts
            return None
        p += 2
        transfers: list[Transfer] = []
        append = transfers.append
        while True:
            n = data[p]
            if n < 128:
                p += 1
            else:
                n, p = _read_varint(data, p)
            if not n:
                break
            if n & 1 or len(transfers) + (n >> 1) > BATCH_EVENTS_MAX:
                return None  # a block with its byte size, or too many: the slow path says so
            for _ in range(n >> 1):
                transfer, p, _, _ = _read_transfer(data, p)
                append(transfer)
        if data[p] != 0:  # an account command
            return None
        submitted_at_ns, p = _read_signed(data, p + 1, "i64")
        if p != len(data):
            return None
        return CommandBatch(
            request_id, submitter, Operation.CREATE_TRANSFERS, [], transfers, None,
            submitted_at_ns & _U64_MASK,
        )  # fmt: skip
    except Exception:  # _NotFast, IndexError (truncated), UnicodeDecodeError: any doubt
        return None


# ---------------------------------------------------------------------------------------------
# Diagnostics: when fastavro fails, re-walk the bytes (or the datum) with the schema to name the
# field. Slow, only on bad input.

_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)


class _Fault(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ByteWalker:
    """Walks Avro binary by a writer schema; raises _Fault naming the path of the first fault."""

    def __init__(self, data: bytes, pos: int, names: dict[str, Any]) -> None:
        self.data, self.pos, self.names = data, pos, names
        self.path = ""

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= len(self.data):
                raise _Fault("truncated payload")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
            if shift >= 70:
                raise _Fault("malformed varint")

    def take(self, n: int) -> bytes:
        if n < 0:
            raise _Fault(f"negative length {n}")
        if self.pos + n > len(self.data):
            raise _Fault("truncated payload")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def walk(self, schema: Any, path: str) -> None:
        self.path = path
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            schema = self.names[schema]
        if isinstance(schema, list):
            index = self.varint()
            if not 0 <= index < len(schema):
                raise _Fault(f"union index {index} out of range")
            self.walk(schema[index], path)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(kind, (dict, list)):
            self.walk(kind, path)
        elif kind == "record":
            for f in schema["fields"]:
                self.walk(f["type"], _join(path, f["name"]))
        elif kind in ("array", "map"):
            index = 0
            while (count := self.varint()) != 0:
                if count < 0:
                    count = -count
                    self.varint()  # block size in bytes
                for _ in range(count):
                    if kind == "map":
                        key = self.take(self.varint())
                        self.walk(schema["values"], f"{path}[{key!r}]")
                    else:
                        self.walk(schema["items"], f"{path}[{index}]")
                    index += 1
        elif kind == "enum":
            index = self.varint()
            if not 0 <= index < len(schema["symbols"]):
                raise _Fault(f"unknown enum value (index {index})")
        elif kind == "fixed":
            self.take(schema["size"])
        elif kind in ("bytes", "string"):
            raw = self.take(self.varint())
            if kind == "string":
                try:
                    raw.decode()
                except UnicodeDecodeError:
                    raise _Fault("invalid UTF-8 in string") from None
        elif kind in ("int", "long"):
            value = self.varint()
            if kind == "int" and not -(1 << 31) <= value < (1 << 31):
                raise _Fault(f"{value} overflows an Avro int")
        elif kind == "boolean":
            if self.take(1)[0] > 1:
                raise _Fault("invalid boolean")
        elif kind in ("float", "double"):
            self.take(4 if kind == "float" else 8)
        elif kind != "null":
            raise AssertionError(kind)


def _collect_names(schema: Any, names: dict[str, Any]) -> dict[str, Any]:
    """Named types of a fastavro-parsed schema, by full name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, names)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed", "error"):
            names[schema["name"]] = schema
        if kind in ("record", "error"):
            for f in schema["fields"]:
                _collect_names(f["type"], names)
        elif kind == "array":
            _collect_names(schema["items"], names)
        elif kind == "map":
            _collect_names(schema["values"], names)
        elif isinstance(kind, (dict, list)):
            _collect_names(kind, names)
    return names


# ---------------------------------------------------------------------------------------------
# Schemas: every shipped version, by fingerprint; the newest per message writes.


class _Version:
    __slots__ = ("fingerprint", "header", "message", "names", "schema", "version")

    def __init__(self, message: str, version: int, schema: Any) -> None:
        self.message = message
        self.version = version
        self.schema = schema
        self.fingerprint = bytes.fromhex(
            fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
        )
        self.header = bytes([MAGIC]) + self.fingerprint
        self.names = _collect_names(schema, {})


class AvroCodec:
    """The codec over one directory of ``ledger.<Message>.v<N>.avsc`` files.

    The module-level functions use the shipped directory; tests build one over a directory with
    an extra version to prove evolution works through the real lookup.
    """

    def __init__(self, directory: Path = SCHEMA_DIR, *, fast: bool = True) -> None:
        self.by_fingerprint: dict[bytes, _Version] = {}
        self.current: dict[str, _Version] = {}
        for path in sorted(directory.glob("*.avsc")):
            match = _FILE_RE.match(path.name)
            if match is None:
                raise ValueError(f"{path}: not named ledger.<Message>.v<N>.avsc")
            schema = fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
            v = _Version(match["message"], int(match["version"]), schema)
            known = self.by_fingerprint.get(v.fingerprint)
            if known is not None and known.message != v.message:
                raise ValueError(f"{path}: same fingerprint as a {known.message} schema")
            # Equal canonical forms (e.g. only docs changed) decode alike; keep the first.
            self.by_fingerprint.setdefault(v.fingerprint, v)
            latest = self.current.get(v.message)
            if latest is None or v.version > latest.version:
                self.current[v.message] = v
        for message in MESSAGES:
            if message not in self.current:
                raise ValueError(f"{directory}: no ledger.{message}.v<N>.avsc")
        # The hand-written encoder only where the writer schema is the one it was written for.
        self._fast = {
            message: layout
            for message, layout in _FAST_LAYOUTS.items()
            if fast and self.current[message].fingerprint.hex() == layout[0]
        }
        self._fast_commands = (
            fast and self.current["CommandBatch"].fingerprint.hex() == _COMMAND_FINGERPRINT
        )
        self._fast_results = (
            fast and self.current["ResultBatch"].fingerprint.hex() == _RESULT_FINGERPRINT
        )

    # -- framing -------------------------------------------------------------------------------

    def _write(self, message: str, datum: dict[str, Any]) -> bytes:
        v = self.current[message]
        buf = io.BytesIO()
        buf.write(v.header)
        try:
            fastavro.schemaless_writer(buf, v.schema, datum)
        except Exception as exc:  # fastavro raises several types; name the field instead
            raise _datum_fault(datum, v, exc) from None
        return buf.getvalue()

    def _read(self, message: str, data: bytes) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"{type(data).__name__} is not bytes")
        data = bytes(data)
        if len(data) < _HEADER_LEN:
            raise DecodeError(f"{len(data)} bytes is shorter than the {_HEADER_LEN}-byte header")
        if data[0] != MAGIC:
            raise DecodeError(f"wrong magic byte 0x{data[0]:02x} (expected 0x{MAGIC:02x})")
        writer = self.by_fingerprint.get(data[1:_HEADER_LEN])
        if writer is None:
            raise DecodeError(f"unknown schema (fingerprint {data[1:_HEADER_LEN].hex()})")
        if writer.message != message:
            raise DecodeError(f"a {writer.message} message, not a {message}")
        reader = self.current[message]
        buf = io.BytesIO(data)
        buf.seek(_HEADER_LEN)
        try:
            datum = fastavro.schemaless_reader(
                buf,
                writer.schema,
                None if reader is writer else reader.schema,
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception as exc:  # garbage makes fastavro raise many types; all are bad input
            raise _bytes_fault(data, writer, exc) from None
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the payload")
        if not isinstance(datum, dict):
            raise DecodeError("payload is not a record")
        return datum

    # -- messages ------------------------------------------------------------------------------

    def _encode(
        self,
        message: str,
        cls: type,
        convert: Callable[[Any], Any],
        value: Any,
        memo: EncodedEvents | None = None,
    ) -> bytes:
        layout = self._fast.get(message)
        if layout is not None and type(value) is cls:
            data = _fast_write(self.current[message].header, layout, value, memo)
            if data is not None:
                return data
        return self._write(message, _enc_record(value, cls, convert, ""))

    def _decode(self, message: str, convert: Callable[[dict[str, Any]], _Out], data: bytes) -> _Out:
        layout = self._fast.get(message)
        if (
            layout is not None
            and type(data) is bytes
            and data[:_HEADER_LEN] == self.current[message].header
        ):
            decoded: _Out | None = _fast_read(message, layout, data)
            if decoded is not None:
                return decoded
        d = self._read(message, data)
        try:
            return convert(d)
        except DecodeError:
            raise
        except Exception as exc:  # a reader/converter mismatch must still not crash a consumer
            raise DecodeError(f"undecodable: {_describe(exc)}") from None

    def encode_command_batch(self, batch: CommandBatch) -> bytes:
        if self._fast_commands and type(batch) is CommandBatch:
            data = _fast_command_write(self.current["CommandBatch"].header, batch)
            if data is not None:
                return data
        return self._encode("CommandBatch", CommandBatch, _enc_command_batch, batch)

    def decode_command_batch(self, data: bytes) -> CommandBatch:
        if (
            self._fast_commands
            and type(data) is bytes
            and data[:_HEADER_LEN] == self.current["CommandBatch"].header
        ):
            # It takes only the exact bytes fastavro writes (operation index 1, no accounts, a
            # null account command, a submitter within SUBMITTER_MAX): anything else goes on.
            decoded = _fast_command_read(data)
            if decoded is not None:
                return decoded
        batch = self._decode("CommandBatch", _dec_command_batch, data)
        # fastavro reads an enum or union index of -1..-n as a Python list index (the last
        # symbols) and a boolean byte above 1 as true: a request runs only as it was written.
        raw = bytes(data)
        if (
            batch.operation is Operation.CREATE_TRANSFERS
            and not batch.accounts
            and batch.account_command is None
            and raw[1:_HEADER_LEN] == self.current["CommandBatch"].fingerprint
        ):
            _check_operation_index(raw)  # the only enum of a transfers request: O(1)
        else:  # accounts and account commands hold enums, unions and booleans: walk them
            writer = self.by_fingerprint[raw[1:_HEADER_LEN]]
            walker = _ByteWalker(raw, _HEADER_LEN, writer.names)
            try:
                walker.walk(writer.schema, "")
            except _Fault as fault:
                raise DecodeError(fault.reason, walker.path or None) from None
        return batch

    def encode_event_batch(self, batch: EventBatch, memo: EncodedEvents | None = None) -> bytes:
        """With `memo`, each event object is encoded once however many batches list it (an
        event goes to the log of every partition owning a key it writes)."""
        return self._encode("EventBatch", EventBatch, _enc_event_batch, batch, memo)

    def decode_event_batch(self, data: bytes) -> EventBatch:
        return self._decode("EventBatch", _dec_event_batch, data)

    def encode_result_batch(self, batch: ResultBatch) -> bytes:
        if self._fast_results and type(batch) is ResultBatch:
            data = _fast_result_write(self.current["ResultBatch"].header, batch)
            if data is not None:
                return data
        return self._encode("ResultBatch", ResultBatch, _enc_result_batch, batch)

    def decode_result_batch(self, data: bytes) -> ResultBatch:
        return self._decode("ResultBatch", _dec_result_batch, data)

    def encode_sequenced_entry(self, entry: SequencedEntry) -> bytes:
        return self._encode("SequencedEntry", SequencedEntry, _enc_sequenced, entry)

    def decode_sequenced_entry(self, data: bytes) -> SequencedEntry:
        return self._decode("SequencedEntry", _dec_sequenced, data)

    def encode_facts(self, facts: Facts) -> bytes:
        return self._encode("Facts", Facts, _enc_facts, facts)

    def decode_facts(self, data: bytes) -> Facts:
        return self._decode("Facts", _dec_facts, data)

    def encode_apply(self, apply: Apply) -> bytes:
        return self._encode("Apply", Apply, _enc_apply, apply)

    def decode_apply(self, data: bytes) -> Apply:
        return self._decode("Apply", _dec_apply, data)

    def encode_checkpoint(self, checkpoint: Checkpoint) -> bytes:
        return self._encode("Checkpoint", Checkpoint, _enc_checkpoint, checkpoint)

    def decode_checkpoint(self, data: bytes) -> Checkpoint:
        return self._decode("Checkpoint", _dec_checkpoint, data)


def _check_operation_index(data: bytes) -> None:
    """The `operation` of a current-version CommandBatch (after the request id and submitter)
    is a single-byte index 0..2: zigzag 0, 2 or 4 (-1..-3 are 1, 3, 5)."""
    walker = _ByteWalker(data, _HEADER_LEN + 16, {})
    length = walker.varint()  # the submitter's (decoded already: sound)
    walker.pos += length
    index = walker.varint()
    if index < 0:
        raise DecodeError(f"unknown enum value (index {index})", "operation")


def _bytes_fault(data: bytes, writer: _Version, exc: BaseException) -> DecodeError:
    walker = _ByteWalker(data, _HEADER_LEN, writer.names)
    try:
        walker.walk(writer.schema, "")
    except _Fault as fault:
        return DecodeError(fault.reason, walker.path or None)
    except Exception as other:  # the walker is best effort; fastavro's complaint still stands
        return DecodeError(f"undecodable payload: {_describe(other)}", walker.path or None)
    # The bytes follow the writer schema: resolving them to the reader schema failed.
    return DecodeError(f"cannot read as the current schema: {_describe(exc)}")


def _datum_fault(datum: Any, version: _Version, exc: BaseException) -> EncodeError:
    path = _find_bad_datum(datum, version.schema, version.names, "")
    if path is not None:
        return EncodeError(path[1], path[0] or None)
    return EncodeError(_describe(exc))


def _find_bad_datum(
    datum: Any, schema: Any, names: dict[str, Any], path: str
) -> tuple[str, str] | None:
    """(path, reason) of the first value of `datum` that does not fit `schema`, if any."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        schema = names[schema]
    if isinstance(schema, list):
        if isinstance(datum, tuple):
            name, datum = datum
            branch = next(
                (b for b in schema if isinstance(b, dict) and b.get("name") == name), None
            )
            if branch is None:
                return path, f"no union branch {name!r}"
            return _find_bad_datum(datum, branch, names, path)
        faults = [_find_bad_datum(datum, b, names, path) for b in schema]
        if any(f is None for f in faults):
            return None
        return next((f for f in faults if f is not None and f[0] != path), faults[-1])
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, (dict, list)):
        return _find_bad_datum(datum, kind, names, path)
    if kind == "null":
        return None if datum is None else (path, f"{datum!r} is not null")
    if kind == "string":
        return None if isinstance(datum, str) else (path, f"{type(datum).__name__} is not a string")
    if kind == "boolean":
        return None if isinstance(datum, bool) else (path, f"{datum!r} is not a bool")
    if kind == "long":
        ok = isinstance(datum, int) and _I64_MIN <= datum <= _I64_MAX
        return None if ok else (path, f"{datum!r} is not a 64-bit integer")
    if kind == "int":
        ok = isinstance(datum, int) and -(1 << 31) <= datum < (1 << 31)
        return None if ok else (path, f"{datum!r} is not a 32-bit integer")
    if kind == "bytes":
        return None if isinstance(datum, bytes) else (path, f"{datum!r} is not bytes")
    if kind == "fixed":
        ok = isinstance(datum, bytes) and len(datum) == schema["size"]
        return None if ok else (path, f"{datum!r} is not {schema['size']} bytes")
    if kind == "enum":
        ok = datum in schema["symbols"]
        return None if ok else (path, f"{datum!r} is not one of {schema['symbols']}")
    if kind == "array":
        if not isinstance(datum, list):
            return path, f"{type(datum).__name__} is not a list"
        for i, item in enumerate(datum):
            fault = _find_bad_datum(item, schema["items"], names, f"{path}[{i}]")
            if fault is not None:
                return fault
        return None
    if kind == "map":
        if not isinstance(datum, dict):
            return path, f"{type(datum).__name__} is not a map"
        for key, item in datum.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]", "map key is not a string"
            fault = _find_bad_datum(item, schema["values"], names, f"{path}[{key!r}]")
            if fault is not None:
                return fault
        return None
    if kind == "record":
        if not isinstance(datum, dict):
            return path, f"{type(datum).__name__} is not a record"
        for f in schema["fields"]:
            fault = _find_bad_datum(datum.get(f["name"]), f["type"], names, _join(path, f["name"]))
            if fault is not None:
                return fault
        return None
    return None


# ---------------------------------------------------------------------------------------------
# The shipped codec.

_CODEC: Final = AvroCodec()


def encode_command_batch(batch: CommandBatch) -> bytes:
    return _CODEC.encode_command_batch(batch)


def decode_command_batch(data: bytes) -> CommandBatch:
    return _CODEC.decode_command_batch(data)


def encode_event_batch(batch: EventBatch, memo: EncodedEvents | None = None) -> bytes:
    """`memo`: see AvroCodec.encode_event_batch (keyed by id(): the caller keeps the events
    alive while it uses it)."""
    return _CODEC.encode_event_batch(batch, memo)


def decode_event_batch(data: bytes) -> EventBatch:
    return _CODEC.decode_event_batch(data)


def encode_result_batch(batch: ResultBatch) -> bytes:
    return _CODEC.encode_result_batch(batch)


def decode_result_batch(data: bytes) -> ResultBatch:
    return _CODEC.decode_result_batch(data)


def encode_sequenced_entry(entry: SequencedEntry) -> bytes:
    return _CODEC.encode_sequenced_entry(entry)


def decode_sequenced_entry(data: bytes) -> SequencedEntry:
    return _CODEC.decode_sequenced_entry(data)


def encode_facts(facts: Facts) -> bytes:
    return _CODEC.encode_facts(facts)


def decode_facts(data: bytes) -> Facts:
    return _CODEC.decode_facts(data)


def encode_apply(apply: Apply) -> bytes:
    return _CODEC.encode_apply(apply)


def decode_apply(data: bytes) -> Apply:
    return _CODEC.decode_apply(data)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return _CODEC.encode_checkpoint(checkpoint)


def decode_checkpoint(data: bytes) -> Checkpoint:
    return _CODEC.decode_checkpoint(data)


def _benchmark(events: int = 1000, rounds: int = 30) -> None:
    """``python -m schemas.codec``: best-of-N µs per event, both ways, for the hot messages."""
    import random
    import time

    rng = random.Random(1)
    ts0 = 1_750_000_000_000_000_000
    transfers = [
        Transfer(
            rng.getrandbits(128),
            rng.getrandbits(128),
            rng.getrandbits(128),
            rng.getrandbits(64),
            0,
            rng.getrandbits(128),
            rng.getrandbits(64),
            rng.getrandbits(32),
            0,
            1,
            1,
            0,
            ts0 + i,
        )
        for i in range(events)
    ]
    commands = CommandBatch(
        rng.getrandbits(128), "bench", Operation.CREATE_TRANSFERS, transfers=transfers
    )
    applied: list[Event] = [
        TransferApplied(
            TransferKind.SINGLE_PHASE,
            t,
            0,
            Balances(t.debit_account_id, 0, rng.getrandbits(70), 0, rng.getrandbits(70)),
            Balances(t.credit_account_id, 0, rng.getrandbits(70), 0, rng.getrandbits(70)),
            t.timestamp,
        )
        for t in transfers
    ]
    fastavro_only = AvroCodec(fast=False)
    cases: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Any]] = [
        ("CommandBatch x transfers", encode_command_batch, decode_command_batch, commands),
        ("EventBatch x TransferApplied", encode_event_batch, decode_event_batch,
         EventBatch(0, applied, 0)),
        ("Apply x TransferApplied", encode_apply, decode_apply, Apply(0, applied)),
        ("Apply x TransferApplied (fastavro only)", fastavro_only.encode_apply,
         fastavro_only.decode_apply, Apply(0, applied)),
    ]  # fmt: skip
    for label, encode, decode, batch in cases:
        data = encode(batch)
        assert decode(data) == batch
        best_encode = best_decode = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            encode(batch)
            best_encode = min(best_encode, time.perf_counter() - start)
            start = time.perf_counter()
            decode(data)
            best_decode = min(best_decode, time.perf_counter() - start)
        print(
            f"{label.replace('x', str(events))}: {len(data) / events:.0f} B/event, "
            f"encode {best_encode / events * 1e6:.2f} µs/event, "
            f"decode {best_decode / events * 1e6:.2f} µs/event"
        )


if __name__ == "__main__":
    _benchmark()
