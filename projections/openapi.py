"""The OpenAPI 3.1 description of the HTTP API (`GET /openapi.json`), built from the codec's
field lists so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from projections.json_codec import ACCOUNT_FLAG_NAMES, POLICY_NAMES, TRANSFER_FLAG_NAMES
from schemas import BATCH_EVENTS_MAX

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _uint_in(bits: int) -> dict[str, Any]:
    digits = len(str((1 << bits) - 1))
    return {
        "description": f"unsigned {bits}-bit integer: a JSON integer or a decimal string",
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": (1 << bits) - 1},
            {"type": "string", "pattern": f"^[0-9]{{1,{digits}}}$"},
        ],
    }


_UINT_OUT = {"type": "string", "pattern": "^[0-9]+$", "description": "decimal string"}
_INT_OUT = {"type": "string", "pattern": "^-?[0-9]+$", "description": "signed decimal string"}
_SIGNED_IN = {
    "description": "signed integer within ±(2^128-1): a JSON integer or a decimal string",
    "oneOf": [
        {"type": "integer"},
        {"type": "string", "pattern": "^-?[0-9]{1,39}$"},
        {"type": "null"},
    ],
}
_NULLABLE_INT_OUT = {"oneOf": [_INT_OUT, {"type": "null"}]}


def _flags_in(names: dict[str, int]) -> dict[str, Any]:
    return {
        "description": "the integer bitfield, or a list of flag names",
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 65535},
            {"type": "string", "pattern": "^[0-9]{1,5}$"},
            {"type": "array", "items": {"type": "string", "enum": list(names)}},
        ],
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


_U = {128: _ref("U128"), 64: _ref("U64"), 32: _ref("U32"), 16: _ref("U16")}
_POLICY_IN = {"oneOf": [{"type": "string", "enum": list(POLICY_NAMES)}, {"type": "null"}]}
_METADATA_IN = {
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "null"},
    ]
}
_SETTINGS_IN = {
    "policy": _POLICY_IN,
    "min_balance": _ref("SignedLimit"),
    "max_balance": _ref("SignedLimit"),
    "settle_threshold": _ref("SignedLimit"),
    "settle_to": _ref("SignedLimit"),
    "link_type": {"type": ["string", "null"]},
    "metadata": _METADATA_IN,
}


def _schemas() -> dict[str, Any]:
    account_request = _object(
        {
            "id": _U[128],
            "debits_pending": _U[128],
            "debits_posted": _U[128],
            "credits_pending": _U[128],
            "credits_posted": _U[128],
            "user_data_128": _U[128],
            "user_data_64": _U[64],
            "user_data_32": _U[32],
            "reserved": _U[32],
            "ledger": _U[32],
            "code": _U[16],
            "flags": _ref("AccountFlagsIn"),
            "timestamp": _U[64],
            **_SETTINGS_IN,
        }
    )
    transfer_request = _object(
        {
            "id": _U[128],
            "debit_account_id": _U[128],
            "credit_account_id": _U[128],
            "amount": _U[128],
            "pending_id": _U[128],
            "user_data_128": _U[128],
            "user_data_64": _U[64],
            "user_data_32": _U[32],
            "timeout": _U[32],
            "ledger": _U[32],
            "code": _U[16],
            "flags": _ref("TransferFlagsIn"),
            "timestamp": _U[64],
            "debit_account_version": _U[64],
            "credit_account_version": _U[64],
        }
    )
    account = _object(
        {
            "id": _UINT_OUT,
            "debits_pending": _UINT_OUT,
            "debits_posted": _UINT_OUT,
            "credits_pending": _UINT_OUT,
            "credits_posted": _UINT_OUT,
            "user_data_128": _UINT_OUT,
            "user_data_64": _UINT_OUT,
            "user_data_32": {"type": "integer"},
            "reserved": {"type": "integer"},
            "ledger": {"type": "integer"},
            "code": {"type": "integer"},
            "flags": {"type": "integer"},
            "flag_names": {"type": "array", "items": {"enum": list(ACCOUNT_FLAG_NAMES)}},
            "timestamp": _UINT_OUT,
            "ledger_balance": _INT_OUT,
            "available_balance": _INT_OUT,
            "version": _UINT_OUT,
            "frozen": {"type": "boolean"},
            "closed": {"type": "boolean"},
            "policy": {"enum": [*POLICY_NAMES, None]},
            "min_balance": _NULLABLE_INT_OUT,
            "max_balance": _NULLABLE_INT_OUT,
            "asset_code": {"type": "string"},
            "asset_scale": {"type": "integer"},
            "settle_threshold": _NULLABLE_INT_OUT,
            "settle_to": _NULLABLE_INT_OUT,
            "link_type": {"type": ["string", "null"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    )
    account["required"] = list(account["properties"])
    transfer = _object(
        {
            "id": _UINT_OUT,
            "debit_account_id": _UINT_OUT,
            "credit_account_id": _UINT_OUT,
            "amount": _UINT_OUT,
            "pending_id": _UINT_OUT,
            "user_data_128": _UINT_OUT,
            "user_data_64": _UINT_OUT,
            "user_data_32": {"type": "integer"},
            "timeout": {"type": "integer"},
            "ledger": {"type": "integer"},
            "code": {"type": "integer"},
            "flags": {"type": "integer"},
            "flag_names": {"type": "array", "items": {"enum": list(TRANSFER_FLAG_NAMES)}},
            "timestamp": _UINT_OUT,
            "debit_account_version": _UINT_OUT,
            "credit_account_version": _UINT_OUT,
            "pending_status": {
                "description": "lookups only: the pending transfer's state (none otherwise)",
                "enum": ["none", "pending", "posted", "voided", "expired"],
            },
        }
    )
    transfer["required"] = [name for name in transfer["properties"] if name != "pending_status"]
    balances = {
        "debits_pending": _UINT_OUT,
        "debits_posted": _UINT_OUT,
        "credits_pending": _UINT_OUT,
        "credits_posted": _UINT_OUT,
    }
    return {
        "U128": _uint_in(128),
        "U64": _uint_in(64),
        "U32": _uint_in(32),
        "U16": _uint_in(16),
        "SignedLimit": _SIGNED_IN,
        "AccountFlagsIn": _flags_in(ACCOUNT_FLAG_NAMES),
        "TransferFlagsIn": _flags_in(TRANSFER_FLAG_NAMES),
        "AccountRequest": account_request,
        "TransferRequest": transfer_request,
        "Account": account,
        "Transfer": transfer,
        "CreateResult": _object(
            {
                "index": {"type": "integer"},
                "status": {
                    "type": "string",
                    "description": "`created`, or the result code's lowercase name",
                },
                "timestamp": _UINT_OUT,
            },
            ["index", "status", "timestamp"],
        ),
        "Ids": _object(
            {"ids": {"type": "array", "items": _U[128], "maxItems": BATCH_EVENTS_MAX}}, ["ids"]
        ),
        "CommandRequest": _object({"expected_version": _U[64]}),
        "SettingsPatch": _object({"expected_version": _U[64], **_SETTINGS_IN}),
        "CommandResult": _object(
            {
                "status": {"type": "string", "description": "`ok` or the code's name"},
                "version": _UINT_OUT,
            },
            ["status", "version"],
        ),
        "QueryFilter": _object(
            {
                "user_data_128": _U[128],
                "user_data_64": _U[64],
                "user_data_32": _U[32],
                "ledger": _U[32],
                "code": _U[16],
                "timestamp_min": _U[64],
                "timestamp_max": _U[64],
                "limit": {**_uint_in(32), "description": f"at most {BATCH_EVENTS_MAX}"},
                "reversed": {"type": "boolean"},
                "flags": {
                    "description": "TigerBeetle's QueryFilterFlags: bit 0 reversed",
                    "oneOf": [
                        {"type": "integer", "minimum": 0, "maximum": 1},
                        {"type": "array", "items": {"enum": ["reversed"]}},
                    ],
                },
            }
        ),
        "BalanceEntry": _object({"timestamp": _UINT_OUT, **balances}),
        "BalancesAt": _object(
            {
                "id": _UINT_OUT,
                "partition": {
                    "type": "integer",
                    "description": "with as_of_offset: the events partition owning the account",
                },
                "as_of_offset": {**_UINT_OUT, "description": "with as_of_offset: the offset"},
                "as_of": {
                    **_UINT_OUT,
                    "description": "the timestamp; with as_of_offset, that of the last "
                    "transfer event the balances reflect (0: none yet)",
                },
                **balances,
                "ledger_balance": _INT_OUT,
                "available_balance": _INT_OUT,
                "asset_code": {"type": "string"},
                "asset_scale": {"type": "integer"},
            }
        ),
        "Settlement": _object(
            {
                "account_id": _UINT_OUT,
                "transfer_id": _UINT_OUT,
                "amount": _UINT_OUT,
                "balance": _INT_OUT,
                "timestamp": _UINT_OUT,
            }
        ),
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "field": {
                    "type": ["string", "null"],
                    "description": "the path of the offending value, e.g. `[3].amount`",
                },
            },
            "required": ["error"],
        },
        "ClockRequest": _object({"advance_ns": _U[64]}, ["advance_ns"]),
    }


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


_ERROR = {"description": "error", "content": _json_content(_ref("Error"))}
_ERRORS = {
    "400": {**_ERROR, "description": "malformed request (the field is named)"},
    "401": {**_ERROR, "description": "no valid API key (when keys are configured)"},
}
_WRITE_ERRORS = {
    **_ERRORS,
    "413": {**_ERROR, "description": f"more than {BATCH_EVENTS_MAX} events"},
    "503": {**_ERROR, "description": "the ledger cannot be reached"},
    "504": {**_ERROR, "description": "outcome unknown: resubmitting the same events is safe"},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": _UINT_OUT}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_BOOL_PARAM = {"type": "string", "enum": ["true", "false", "1", "0"]}
_FILTER_PARAMS = [
    _ID,
    _query("debits", _BOOL_PARAM, "include transfers debiting the account (default true)"),
    _query("credits", _BOOL_PARAM, "include transfers crediting the account (default true)"),
    _query("limit", _UINT_OUT, f"at most this many (default and maximum {BATCH_EVENTS_MAX})"),
    _query("reversed", _BOOL_PARAM, "newest first (default false)"),
    _query("timestamp_min", _UINT_OUT, "inclusive; 0 = unbounded"),
    _query("timestamp_max", _UINT_OUT, "inclusive; 0 = unbounded"),
    _query("user_data_128", _UINT_OUT, "0 = any"),
    _query("user_data_64", _UINT_OUT, "0 = any"),
    _query("user_data_32", _UINT_OUT, "0 = any"),
    _query("code", _UINT_OUT, "0 = any"),
]


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json_content(schema)}


def _command(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_ID],
            "requestBody": _body(_ref("CommandRequest"), required=False),
            "responses": {"200": _ok("the result", _ref("CommandResult")), **_WRITE_ERRORS},
        }
    }


def _paths(clock: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness (never needs a key)",
                "security": [],
                "responses": {"200": _ok("alive", _object({"status": {"const": "ok"}}))},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/docs": {
            "get": {
                "summary": "A page linking this document",
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}
                },
            }
        },
        "/accounts": {
            "post": {
                "summary": "create_accounts: a batch applied in order",
                "requestBody": _body({**_array("AccountRequest"), "maxItems": BATCH_EVENTS_MAX}),
                "responses": {
                    "200": _ok("one result per event, in order", _array("CreateResult")),
                    **_WRITE_ERRORS,
                },
            }
        },
        "/transfers": {
            "post": {
                "summary": "create_transfers: a batch applied in order",
                "requestBody": _body({**_array("TransferRequest"), "maxItems": BATCH_EVENTS_MAX}),
                "responses": {
                    "200": _ok("one result per event, in order", _array("CreateResult")),
                    **_WRITE_ERRORS,
                },
            }
        },
        "/accounts/lookup": {
            "post": {
                "summary": "lookup_accounts: those that exist, in request order",
                "requestBody": _body(_ref("Ids")),
                "responses": {"200": _ok("accounts", _array("Account")), **_ERRORS},
            }
        },
        "/transfers/lookup": {
            "post": {
                "summary": "lookup_transfers: those that exist, in request order",
                "requestBody": _body(_ref("Ids")),
                "responses": {"200": _ok("transfers", _array("Transfer")), **_ERRORS},
            }
        },
        "/accounts/query": {
            "post": {
                "summary": "query_accounts (an invalid filter selects nothing)",
                "requestBody": _body(_ref("QueryFilter"), required=False),
                "responses": {"200": _ok("accounts", _array("Account")), **_ERRORS},
            }
        },
        "/transfers/query": {
            "post": {
                "summary": "query_transfers (an invalid filter selects nothing)",
                "requestBody": _body(_ref("QueryFilter"), required=False),
                "responses": {"200": _ok("transfers", _array("Transfer")), **_ERRORS},
            }
        },
        "/accounts/{id}": {
            "get": {
                "summary": ("The account; with as_of or as_of_offset, its balances at that point"),
                "parameters": [
                    _ID,
                    _query("as_of", _UINT_OUT, "a timestamp (nanoseconds)"),
                    _query(
                        "as_of_offset",
                        _UINT_OUT,
                        "a log position: the offset in the events partition that owns the "
                        "account (partition_of(id)); the balances after the messages up to it "
                        "(past the end: now). Not with as_of.",
                    ),
                ],
                "responses": {
                    "200": _ok(
                        "the account (BalancesAt with as_of)",
                        {"oneOf": [_ref("Account"), _ref("BalancesAt")]},
                    ),
                    "404": {**_ERROR, "description": "no such account (at that point)"},
                    **_ERRORS,
                },
            }
        },
        "/accounts/{id}/transfers": {
            "get": {
                "summary": "get_account_transfers (an invalid filter selects nothing)",
                "parameters": _FILTER_PARAMS,
                "responses": {"200": _ok("transfers", _array("Transfer")), **_ERRORS},
            }
        },
        "/accounts/{id}/balances": {
            "get": {
                "summary": "get_account_balances (accounts with the history flag)",
                "parameters": _FILTER_PARAMS,
                "responses": {"200": _ok("balances", _array("BalanceEntry")), **_ERRORS},
            }
        },
        "/accounts/{id}/versions": {
            "get": {
                "summary": "Every version of the account, oldest first",
                "parameters": [_ID],
                "responses": {
                    "200": _ok("versions", _array("Account")),
                    "404": {**_ERROR, "description": "no such account"},
                    **_ERRORS,
                },
            }
        },
        "/accounts/{id}/settlements": {
            "get": {
                "summary": "Settlement requests emitted for the account, oldest first",
                "parameters": [_ID],
                "responses": {"200": _ok("settlements", _array("Settlement")), **_ERRORS},
            }
        },
        "/accounts/{id}/freeze": _command("Freeze the account"),
        "/accounts/{id}/unfreeze": _command("Unfreeze the account"),
        "/accounts/{id}/close": _command("Close the account (permanent)"),
        "/accounts/{id}/settings": {
            "patch": {
                "summary": "Change settings: present fields replace, null clears",
                "parameters": [_ID],
                "requestBody": _body(_ref("SettingsPatch"), required=False),
                "responses": {"200": _ok("the result", _ref("CommandResult")), **_WRITE_ERRORS},
            }
        },
    }
    if clock:
        paths["/admin/clock"] = {
            "post": {
                "summary": "Tests only: advance the processors' clocks",
                "requestBody": _body(_ref("ClockRequest")),
                "responses": {
                    "200": _ok("advanced", _object({"status": {}, "advanced_ns": _UINT_OUT})),
                    **_ERRORS,
                },
            }
        }
    return paths


def openapi_document(*, clock: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document (`clock`: the test-only /admin/clock route is served)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ledger HTTP API",
            "version": "1",
            "description": (
                "An event-sourced double-entry ledger with TigerBeetle semantics (SPEC §5). "
                "u64/u128 values are decimal strings in responses; requests accept numbers or "
                'strings. Errors are `{"error", "field"}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "paths": _paths(clock),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
