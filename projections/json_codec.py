"""The HTTP API's JSON codec (SPEC §5): request bodies parsed and validated into records and
filters, records rendered into JSON-ready values. Pure: no IO, no aiohttp.

Requests: u128/u64/u32/u16 fields take a JSON integer or a decimal string; the signed limits
(`min_balance`, `max_balance`, `settle_threshold`, `settle_to`) take an integer or a string
within ±(2^128-1); `flags` takes the integer bitfield or a list of flag names; `policy` takes a
policy name. Missing numeric fields are 0, as in TigerBeetle; unknown fields are refused.
Whatever is malformed raises `CodecError`, naming the field by its path in the body
(`[3].amount`, `ids[0]`, `metadata.region`) or the query parameter.

Validation stops at what the wire must carry (types and widths): the ledger's own rules
(`id_must_not_be_zero`, `reserved_flag`, `invalid_link_type`, ...) answer the rest per event.

Responses: u64/u128 values (and the signed balances and limits) are decimal strings; u32, u16
and u8 values are JSON numbers; `flags` is the integer, `flag_names` its names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, Final, Protocol

from processors.ledger.config import Asset
from projections.filters import AccountFilter, BalanceEntry, QueryFilter
from schemas import (
    BATCH_EVENTS_MAX,
    U128_MAX,
    Account,
    AccountFlags,
    Balances,
    PendingStatus,
    Policy,
    SettlementRequested,
    Transfer,
    TransferFlags,
    UpdateSettings,
)

__all__ = [
    "ACCOUNT_FILTER_PARAMS",
    "ACCOUNT_FLAG_NAMES",
    "ACCOUNT_REQUEST_FIELDS",
    "POLICY_NAMES",
    "QUERY_FILTER_FIELDS",
    "SETTINGS_FIELDS",
    "TRANSFER_FLAG_NAMES",
    "TRANSFER_REQUEST_FIELDS",
    "CodecError",
    "CommandResultLike",
    "CreateResultLike",
    "PointInTime",
    "dumps",
    "flag_names",
    "loads",
    "parse_account",
    "parse_account_filter",
    "parse_accounts",
    "parse_as_of",
    "parse_clock",
    "parse_command",
    "parse_id",
    "parse_ids",
    "parse_no_params",
    "parse_query_filter",
    "parse_settings_patch",
    "parse_transfer",
    "parse_transfers",
    "render_account",
    "render_balance_entry",
    "render_balances_at",
    "render_command_result",
    "render_create_results",
    "render_settlement",
    "render_transfer",
]

_DECIMAL: Final = re.compile(r"[0-9]{1,40}")
_SIGNED_DECIMAL: Final = re.compile(r"-?[0-9]{1,40}")
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}


class CodecError(ValueError):
    """A malformed request: `field` is the path of the offending value ("" for the body)."""

    def __init__(self, field: str, message: str, *, status: int = 400) -> None:
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}" if field else message)

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field or None}


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


# JSON text ---------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse a request body; None for an empty one. Invalid JSON raises CodecError."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError("", f"invalid JSON: not UTF-8 ({exc.reason})") from None
    if not data.strip():
        return None
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise CodecError("", "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, too many digits
        raise CodecError("", f"invalid JSON: {exc}") from None


def dumps(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an error naming a request's key): escape it
        return json.dumps(value, separators=(",", ":"))
    return text


# Scalars -----------------------------------------------------------------------------------------


def _unsigned(value: Any, bits: int, field: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    if number is None or not 0 <= number < (1 << bits):
        raise CodecError(field, f"must be a non-negative integer below 2^{bits}")
    return number


def _signed(value: Any, field: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _SIGNED_DECIMAL.fullmatch(value):
        number = int(value)
    if number is None or not -U128_MAX <= number <= U128_MAX:
        raise CodecError(field, "must be an integer between -(2^128-1) and 2^128-1")
    return number


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise CodecError(field, "must be true or false")
    return value


def _names(flags: type[IntFlag]) -> dict[str, int]:
    return {
        name.lower(): int(member)
        for name, member in flags.__members__.items()
        if member.value and member.value & (member.value - 1) == 0
    }


ACCOUNT_FLAG_NAMES: Final = _names(AccountFlags)
TRANSFER_FLAG_NAMES: Final = _names(TransferFlags)
POLICY_NAMES: Final = {policy.name.lower(): policy for policy in Policy}


def _flags(value: Any, names: Mapping[str, int], field: str) -> int:
    if isinstance(value, list):
        bits = 0
        for i, name in enumerate(value):
            if not isinstance(name, str) or name not in names:
                raise CodecError(
                    _index(field, i),
                    f"unknown flag {json.dumps(name)}; known: {', '.join(names)}",
                )
            bits |= names[name]
        return bits
    if isinstance(value, int | str):
        return _unsigned(value, 16, field)
    raise CodecError(field, "must be an integer bitfield or a list of flag names")


def flag_names(flags: int, names: Mapping[str, int]) -> list[str]:
    """The names of the known flags set in `flags`, in bit order."""
    return [name for name, bit in names.items() if flags & bit]


def _object(value: Any, field: str, what: str = "a JSON object") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(field, f"must be {what}")
    return value


def _refuse_unknown(obj: Mapping[str, Any], known: Iterable[str], path: str) -> None:
    allowed = set(known)
    for key in obj:
        if key not in allowed:
            raise CodecError(_at(path, key), "unknown field")


def _policy(value: Any, field: str) -> Policy | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in POLICY_NAMES:
        raise CodecError(
            field, f"unknown policy {json.dumps(value)}; one of {', '.join(POLICY_NAMES)}"
        )
    return POLICY_NAMES[value]


def _optional_signed(value: Any, field: str) -> int | None:
    return None if value is None else _signed(value, field)


def _unicode(text: str, field: str) -> str:
    """JSON escapes may spell lone surrogates, which no UTF-8 (nor Avro string) carries."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CodecError(field, "must be valid Unicode (a lone surrogate is not)") from None
    return text


def _link_type(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CodecError(field, "must be a string or null")
    return None if value is None else _unicode(value, field)


def _metadata(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    obj = _object(value, field, "an object of strings")
    for key, item in obj.items():
        if not isinstance(item, str):
            raise CodecError(_at(field, key), "must be a string")
        _unicode(key, field)
        _unicode(item, _at(field, key))
    return dict(obj)


# Request bodies ----------------------------------------------------------------------------------

# Unsigned fields and their widths, in TigerBeetle's field order.
_ACCOUNT_INTS: Final = (
    ("id", 128), ("debits_pending", 128), ("debits_posted", 128), ("credits_pending", 128),
    ("credits_posted", 128), ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32),
    ("reserved", 32), ("ledger", 32), ("code", 16), ("timestamp", 64),
)  # fmt: skip
_TRANSFER_INTS: Final = (
    ("id", 128), ("debit_account_id", 128), ("credit_account_id", 128), ("amount", 128),
    ("pending_id", 128), ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32),
    ("timeout", 32), ("ledger", 32), ("code", 16), ("timestamp", 64),
    ("debit_account_version", 64), ("credit_account_version", 64),
)  # fmt: skip
_SIGNED_SETTINGS: Final = ("min_balance", "max_balance", "settle_threshold", "settle_to")
SETTINGS_FIELDS: Final = ("policy", *_SIGNED_SETTINGS, "link_type", "metadata")
ACCOUNT_REQUEST_FIELDS: Final = (*(name for name, _ in _ACCOUNT_INTS), "flags", *SETTINGS_FIELDS)
TRANSFER_REQUEST_FIELDS: Final = (*(name for name, _ in _TRANSFER_INTS), "flags")
QUERY_FILTER_FIELDS: Final = (
    "user_data_128", "user_data_64", "user_data_32", "ledger", "code",
    "timestamp_min", "timestamp_max", "limit", "reversed", "flags",
)  # fmt: skip
_QUERY_INTS: Final = (
    ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32), ("ledger", 32),
    ("code", 16), ("timestamp_min", 64), ("timestamp_max", 64),
)  # fmt: skip
_QUERY_FLAG_NAMES: Final = {"reversed": 1}  # TigerBeetle's QueryFilterFlags


def _ints(obj: Mapping[str, Any], spec: Iterable[tuple[str, int]], path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, bits in spec:
        value = obj.get(name)
        out[name] = 0 if value is None else _unsigned(value, bits, _at(path, name))
    return out


def parse_account(value: Any, path: str = "") -> Account:
    obj = _object(value, path)
    _refuse_unknown(obj, ACCOUNT_REQUEST_FIELDS, path)
    account = Account(0)
    for name, number in _ints(obj, _ACCOUNT_INTS, path).items():
        setattr(account, name, number)
    flags = obj.get("flags")
    if flags is not None:
        account.flags = _flags(flags, ACCOUNT_FLAG_NAMES, _at(path, "flags"))
    account.policy = _policy(obj.get("policy"), _at(path, "policy"))
    for name in _SIGNED_SETTINGS:
        setattr(account, name, _optional_signed(obj.get(name), _at(path, name)))
    account.link_type = _link_type(obj.get("link_type"), _at(path, "link_type"))
    account.metadata = _metadata(obj.get("metadata"), _at(path, "metadata"))
    return account


def parse_transfer(value: Any, path: str = "") -> Transfer:
    obj = _object(value, path)
    _refuse_unknown(obj, TRANSFER_REQUEST_FIELDS, path)
    flags = obj.get("flags")
    return Transfer(
        **_ints(obj, _TRANSFER_INTS, path),
        flags=0 if flags is None else _flags(flags, TRANSFER_FLAG_NAMES, _at(path, "flags")),
    )


def _batch(body: Any, what: str) -> list[Any]:
    if not isinstance(body, list):
        raise CodecError("", f"the body must be a JSON array of {what}")
    if len(body) > BATCH_EVENTS_MAX:
        raise CodecError(
            "",
            f"at most {BATCH_EVENTS_MAX} {what} per request, got {len(body)}",
            status=413,
        )
    return body


def parse_accounts(body: Any) -> list[Account]:
    """POST /accounts: a JSON array of accounts (at most BATCH_EVENTS_MAX)."""
    return [parse_account(item, f"[{i}]") for i, item in enumerate(_batch(body, "accounts"))]


def parse_transfers(body: Any) -> list[Transfer]:
    """POST /transfers: a JSON array of transfers (at most BATCH_EVENTS_MAX)."""
    return [parse_transfer(item, f"[{i}]") for i, item in enumerate(_batch(body, "transfers"))]


def parse_ids(body: Any) -> list[int]:
    """POST /accounts/lookup, /transfers/lookup: `{"ids": [...]}`."""
    obj = _object(body, "", "a JSON object")
    _refuse_unknown(obj, ("ids",), "")
    ids = obj.get("ids")
    if not isinstance(ids, list):
        raise CodecError("ids", "must be an array of ids")
    if len(ids) > BATCH_EVENTS_MAX:
        raise CodecError(
            "ids", f"at most {BATCH_EVENTS_MAX} ids per request, got {len(ids)}", status=413
        )
    return [_unsigned(item, 128, f"ids[{i}]") for i, item in enumerate(ids)]


def _expected_version(obj: Mapping[str, Any]) -> int:
    value = obj.get("expected_version")
    return 0 if value is None else _unsigned(value, 64, "expected_version")


def parse_command(body: Any) -> int:
    """freeze / unfreeze / close: an optional `{"expected_version": n}`; the version (0 = any)."""
    if body is None:
        return 0
    obj = _object(body, "", "a JSON object")
    _refuse_unknown(obj, ("expected_version",), "")
    return _expected_version(obj)


def parse_settings_patch(body: Any) -> tuple[int, UpdateSettings]:
    """PATCH /accounts/{id}/settings: fields present replace, null clears, metadata whole."""
    obj = {} if body is None else _object(body, "", "a JSON object")
    _refuse_unknown(obj, ("expected_version", *SETTINGS_FIELDS), "")
    patch = UpdateSettings()
    if "policy" in obj:
        patch.policy = _policy(obj["policy"], "policy")
    for name in _SIGNED_SETTINGS:
        if name in obj:
            setattr(patch, name, _optional_signed(obj[name], name))
    if "link_type" in obj:
        patch.link_type = _link_type(obj["link_type"], "link_type")
    if "metadata" in obj:
        patch.metadata = None if obj["metadata"] is None else _metadata(obj["metadata"], "metadata")
    return _expected_version(obj), patch


def _limit(value: Any, field: str) -> int:
    limit = _unsigned(value, 32, field)
    if limit > BATCH_EVENTS_MAX:
        raise CodecError(field, f"must be at most {BATCH_EVENTS_MAX} (one batch)")
    return limit


def parse_query_filter(body: Any) -> QueryFilter:
    """POST /accounts/query, /transfers/query: TigerBeetle's QueryFilter (absent fields 0,
    `limit` 8189; `reversed` as a boolean or `flags` bit 0 / `["reversed"]`)."""
    obj = {} if body is None else _object(body, "", "a JSON object")
    _refuse_unknown(obj, QUERY_FILTER_FIELDS, "")
    ints = _ints(obj, _QUERY_INTS, "")
    reversed_ = obj.get("reversed")
    flags = obj.get("flags")
    flag_bits = 0 if flags is None else _flags(flags, _QUERY_FLAG_NAMES, "flags")
    if flag_bits & ~1:
        raise CodecError("flags", "only bit 0 (reversed) is defined")
    limit = obj.get("limit")
    return QueryFilter(
        **ints,
        limit=BATCH_EVENTS_MAX if limit is None else _limit(limit, "limit"),
        reversed=(reversed_ is not None and _bool(reversed_, "reversed")) or bool(flag_bits),
    )


def _params(items: Iterable[tuple[str, str]], allowed: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            raise CodecError(name, "unknown query parameter")
        if name in params:
            raise CodecError(name, "given more than once")
        params[name] = value
    return params


def _param_bool(value: str, field: str) -> bool:
    found = _BOOLEANS.get(value.lower())
    if found is None:
        raise CodecError(field, "must be true or false")
    return found


_ACCOUNT_FILTER_INTS: Final = (
    ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32), ("code", 16),
    ("timestamp_min", 64), ("timestamp_max", 64),
)  # fmt: skip
ACCOUNT_FILTER_PARAMS: Final = (
    "debits", "credits", "limit", "reversed", *(name for name, _ in _ACCOUNT_FILTER_INTS),
)  # fmt: skip


def parse_account_filter(account_id: int, items: Iterable[tuple[str, str]]) -> AccountFilter:
    """GET /accounts/{id}/transfers|balances query parameters: TigerBeetle's AccountFilter
    (absent: debits and credits true, limit 8189, reversed false, the rest 0)."""
    params = _params(items, ACCOUNT_FILTER_PARAMS)
    ints = _ints(params, _ACCOUNT_FILTER_INTS, "")
    return AccountFilter(
        account_id,
        **ints,
        limit=_limit(params["limit"], "limit") if "limit" in params else BATCH_EVENTS_MAX,
        debits=_param_bool(params["debits"], "debits") if "debits" in params else True,
        credits=_param_bool(params["credits"], "credits") if "credits" in params else True,
        reversed=_param_bool(params["reversed"], "reversed") if "reversed" in params else False,
    )


@dataclass(frozen=True, slots=True)
class PointInTime:
    """GET /accounts/{id}?as_of= | ?as_of_offset=: one of the two is set."""

    timestamp: int | None = None  # as_of: a timestamp (nanoseconds)
    offset: int | None = None  # as_of_offset: an offset of the events partition owning it


def parse_as_of(items: Iterable[tuple[str, str]]) -> PointInTime | None:
    """GET /accounts/{id}: the optional `as_of` timestamp or `as_of_offset` log position
    (the offset in the events partition that owns the account), not both."""
    params = _params(items, ("as_of", "as_of_offset"))
    if "as_of" in params and "as_of_offset" in params:
        raise CodecError("as_of_offset", "give either as_of or as_of_offset, not both")
    if "as_of" in params:
        return PointInTime(timestamp=_unsigned(params["as_of"], 64, "as_of"))
    if "as_of_offset" in params:
        return PointInTime(offset=_unsigned(params["as_of_offset"], 63, "as_of_offset"))
    return None


def parse_no_params(items: Iterable[tuple[str, str]]) -> None:
    _params(items, ())


def parse_id(text: str, field: str = "id") -> int:
    """An id in the URL path."""
    return _unsigned(text, 128, field)


def parse_clock(body: Any) -> tuple[int, bool]:
    """POST /admin/clock: `{"advance_ns": n}` (n > 0) moves every processor's clock forward;
    `{"to_ns": t}` sets it to t (TigerBeetle's tables jump to the end of time). Returns
    (n or t, whether it is absolute)."""
    obj = _object(body, "", "a JSON object")
    _refuse_unknown(obj, ("advance_ns", "to_ns"), "")
    if "to_ns" in obj:
        if "advance_ns" in obj:
            raise CodecError("to_ns", "give either advance_ns or to_ns")
        return _unsigned(obj["to_ns"], 63, "to_ns"), True
    if "advance_ns" not in obj:
        raise CodecError("advance_ns", "is required")
    advance = _unsigned(obj["advance_ns"], 64, "advance_ns")
    if advance == 0:
        raise CodecError("advance_ns", "must be positive")
    return advance, False


# Responses ---------------------------------------------------------------------------------------


def _optional_str(value: int | None) -> str | None:
    return None if value is None else str(value)


def render_account(a: Account, asset: Asset) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "debits_pending": str(a.debits_pending),
        "debits_posted": str(a.debits_posted),
        "credits_pending": str(a.credits_pending),
        "credits_posted": str(a.credits_posted),
        "user_data_128": str(a.user_data_128),
        "user_data_64": str(a.user_data_64),
        "user_data_32": a.user_data_32,
        "reserved": a.reserved,
        "ledger": a.ledger,
        "code": a.code,
        "flags": a.flags,
        "flag_names": flag_names(a.flags, ACCOUNT_FLAG_NAMES),
        "timestamp": str(a.timestamp),
        "ledger_balance": str(a.ledger_balance),
        "available_balance": str(a.available_balance),
        "version": str(a.version),
        "frozen": a.frozen,
        "closed": a.closed,
        "policy": None if a.policy is None else a.policy.name.lower(),
        "min_balance": _optional_str(a.min_balance),
        "max_balance": _optional_str(a.max_balance),
        "asset_code": asset.code,
        "asset_scale": asset.scale,
        "settle_threshold": _optional_str(a.settle_threshold),
        "settle_to": _optional_str(a.settle_to),
        "link_type": a.link_type,
        "metadata": dict(a.metadata),
    }


def render_transfer(t: Transfer, pending_status: PendingStatus | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(t.id),
        "debit_account_id": str(t.debit_account_id),
        "credit_account_id": str(t.credit_account_id),
        "amount": str(t.amount),
        "pending_id": str(t.pending_id),
        "user_data_128": str(t.user_data_128),
        "user_data_64": str(t.user_data_64),
        "user_data_32": t.user_data_32,
        "timeout": t.timeout,
        "ledger": t.ledger,
        "code": t.code,
        "flags": t.flags,
        "flag_names": flag_names(t.flags, TRANSFER_FLAG_NAMES),
        "timestamp": str(t.timestamp),
        "debit_account_version": str(t.debit_account_version),
        "credit_account_version": str(t.credit_account_version),
    }
    if pending_status is not None:
        out["pending_status"] = pending_status.name.lower()
    return out


def render_balance_entry(e: BalanceEntry) -> dict[str, Any]:
    return {
        "timestamp": str(e.timestamp),
        "debits_pending": str(e.debits_pending),
        "debits_posted": str(e.debits_posted),
        "credits_pending": str(e.credits_pending),
        "credits_posted": str(e.credits_posted),
    }


def render_balances_at(
    b: Balances, as_of: int, asset: Asset, at_offset: tuple[int, int] | None = None
) -> dict[str, Any]:
    """GET /accounts/{id}?as_of=: the account's balances as of a timestamp; with `at_offset`
    (partition, offset), ?as_of_offset=: as of that log position, `as_of` then being the
    timestamp of the last transfer event they reflect (0: none)."""
    position = (
        {} if at_offset is None else {"partition": at_offset[0], "as_of_offset": str(at_offset[1])}
    )
    return {
        "id": str(b.account_id),
        **position,
        "as_of": str(as_of),
        "debits_pending": str(b.debits_pending),
        "debits_posted": str(b.debits_posted),
        "credits_pending": str(b.credits_pending),
        "credits_posted": str(b.credits_posted),
        "ledger_balance": str(b.credits_posted - b.debits_posted),
        "available_balance": str(b.credits_posted - b.debits_posted - b.debits_pending),
        "asset_code": asset.code,
        "asset_scale": asset.scale,
    }


def render_settlement(s: SettlementRequested) -> dict[str, Any]:
    return {
        "account_id": str(s.account_id),
        "transfer_id": str(s.transfer_id),
        "amount": str(s.amount),
        "balance": str(s.balance),
        "timestamp": str(s.timestamp),
    }


class CreateResultLike(Protocol):
    """producers.CreateResult's shape."""

    @property
    def index(self) -> int: ...
    @property
    def status(self) -> IntEnum: ...
    @property
    def timestamp(self) -> int: ...


class CommandResultLike(Protocol):
    """producers.AccountCommandResult's shape."""

    @property
    def status(self) -> IntEnum: ...
    @property
    def version(self) -> int: ...


def render_create_results(results: Iterable[CreateResultLike]) -> list[dict[str, Any]]:
    """One `{"index", "status", "timestamp"}` per event, in order."""
    return [
        {"index": r.index, "status": r.status.name.lower(), "timestamp": str(r.timestamp)}
        for r in results
    ]


def render_command_result(result: CommandResultLike) -> dict[str, Any]:
    """An account command's result (`status` an enum, `version`)."""
    return {"status": result.status.name.lower(), "version": str(result.version)}
