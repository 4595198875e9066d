"""The ledger's HTTP API (SPEC §5) as an aiohttp application.

    app = create_app(reads, client, config, api_keys=frozenset({"secret"}))
    web.run_app(app)

Writes go through the ledger client (`AsyncLedgerClient`, or anything with its methods:
`LedgerWriter`), reads through `Reads`; JSON parsing and rendering live in
`projections.json_codec`, the OpenAPI document in `projections.openapi`.

Errors are JSON `{"error": "...", "field": "<path>" | null}`: 400 for malformed requests (the
field named), 413 for more than 8,189 events or ids (or a body over `BODY_MAX_BYTES`), 401
without a valid key when keys are configured, 404 for an unknown account (or route), 400 for a
request the processors rejected whole, 504 when the outcome of a write is unknown (resubmitting
the same events is safe: ids are idempotency keys), 503 when the ledger cannot be reached.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from processors.ledger.config import LedgerConfig
from producers import (
    AccountCommandResult,
    CreateResult,
    LedgerClientError,
    OutcomeUnknown,
    ProtocolError,
    RequestRejected,
)
from projections import json_codec as codec
from projections.openapi import openapi_document
from projections.reads import Reads
from schemas import Account, Transfer, UpdateSettings

__all__ = ["BODY_MAX_BYTES", "LedgerWriter", "create_app"]

log = logging.getLogger(__name__)

# 8,189 transfers with every field as a long decimal string fit well within this.
BODY_MAX_BYTES = 16 * 1024 * 1024
_UNAUTHENTICATED = frozenset({"/health"})


class LedgerWriter(Protocol):
    """The ledger client calls the API makes (AsyncLedgerClient has them all)."""

    async def create_accounts(self, accounts: Sequence[Account]) -> list[CreateResult]: ...
    async def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateResult]: ...
    async def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult: ...
    async def unfreeze(
        self, account_id: int, expected_version: int = 0
    ) -> AccountCommandResult: ...
    async def close_account(
        self, account_id: int, expected_version: int = 0
    ) -> AccountCommandResult: ...
    async def update_settings(
        self, account_id: int, settings: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult: ...


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=codec.dumps)


def _error(status: int, message: str, field: str | None = None, **extra: Any) -> web.Response:
    return _json({"error": message, "field": field, **extra}, status)


def _presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key")


def _key_matches(presented: str, keys: frozenset[str]) -> bool:
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:  # every key is compared, in constant time each
        matched |= hmac.compare_digest(given, key.encode("utf-8", "surrogateescape"))
    return matched


def _auth_middleware(keys: frozenset[str]) -> Any:
    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in _UNAUTHENTICATED:
            presented = _presented_key(request)
            if presented is None or not _key_matches(presented, keys):
                return _json({"error": "unauthorized"}, 401)
        return await handler(request)

    return authenticate


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except codec.CodecError as exc:
        return _json(exc.body(), exc.status)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"the request body is larger than {BODY_MAX_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        response = _error(exc.status, exc.reason.lower())
        response.headers.update(headers)
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error")


async def _ledger_call(call: Awaitable[Any]) -> Any:
    """Await a ledger client call, mapping its errors onto HTTP answers."""
    try:
        return await call
    except RequestRejected as exc:
        raise _Answer(_error(400, f"the ledger rejected the request: {exc.reason}")) from None
    except OutcomeUnknown as exc:
        raise _Answer(_error(504, str(exc), outcome="unknown")) from None
    except ProtocolError as exc:
        raise _Answer(_error(502, str(exc))) from None
    except LedgerClientError as exc:  # unavailable, closed, could not queue
        raise _Answer(_error(503, f"the ledger is unavailable: {exc}")) from None
    except ValueError as exc:  # a value the command schema cannot carry (names the field)
        raise _Answer(_error(400, str(exc), getattr(exc, "field", None))) from None


class _Answer(Exception):
    """A finished error response raised through a handler."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@web.middleware
async def _answers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Answer as answer:
        return answer.response


async def _body(request: web.Request) -> Any:
    return codec.loads(await request.read())


class _Api:
    def __init__(
        self,
        reads: Reads,
        client: LedgerWriter,
        config: LedgerConfig,
        clock_control: Callable[[int, bool], Awaitable[None]] | None,
    ) -> None:
        self.reads = reads
        self.client = client
        self.config = config
        self.clock_control = clock_control

    def _account(self, account: Account) -> dict[str, Any]:
        return codec.render_account(account, self.config.asset(account.ledger))

    @staticmethod
    def _id(request: web.Request) -> int:
        return codec.parse_id(request.match_info["id"])

    # Writes -------------------------------------------------------------------------------------

    async def create_accounts(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        accounts = codec.parse_accounts(await _body(request))
        if not accounts:
            return _json([])
        results = await _ledger_call(self.client.create_accounts(accounts))
        await self._visible(results[0])
        return _json(codec.render_create_results(results))

    async def create_transfers(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        transfers = codec.parse_transfers(await _body(request))
        if not transfers:
            return _json([])
        results = await _ledger_call(self.client.create_transfers(transfers))
        await self._visible(results[0])
        return _json(codec.render_create_results(results))

    async def freeze(self, request: web.Request) -> web.Response:
        return await self._command(request, self.client.freeze)

    async def unfreeze(self, request: web.Request) -> web.Response:
        return await self._command(request, self.client.unfreeze)

    async def close(self, request: web.Request) -> web.Response:
        return await self._command(request, self.client.close_account)

    async def _command(
        self, request: web.Request, command: Callable[[int, int], Awaitable[AccountCommandResult]]
    ) -> web.Response:
        account_id = self._id(request)
        codec.parse_no_params(request.query.items())
        expected_version = codec.parse_command(await _body(request))
        result = await _ledger_call(command(account_id, expected_version))
        await self._visible(result)
        return _json(codec.render_command_result(result))

    async def update_settings(self, request: web.Request) -> web.Response:
        account_id = self._id(request)
        codec.parse_no_params(request.query.items())
        expected_version, patch = codec.parse_settings_patch(await _body(request))
        result = await _ledger_call(
            self.client.update_settings(account_id, patch, expected_version)
        )
        await self._visible(result)
        return _json(codec.render_command_result(result))

    async def _visible(self, result: AccountCommandResult | CreateResult) -> None:
        """Read-your-writes: a cross-partition request's events reach the participants' logs
        after its result, so the response waits until their projections folded it."""
        if result.sequence >= 0:
            await self.reads.wait_for_sequence(list(result.participants), result.sequence)

    async def advance_clock(self, request: web.Request) -> web.Response:
        assert self.clock_control is not None  # the route exists only with a clock
        codec.parse_no_params(request.query.items())
        value, absolute = codec.parse_clock(await _body(request))
        field = "to_ns" if absolute else "advance_ns"
        try:
            await self.clock_control(value, absolute)
        except ValueError as exc:
            return _error(400, f"{field}: {exc}", field)
        if absolute:
            return _json({"status": "ok", "clock_ns": str(value)})
        return _json({"status": "ok", "advanced_ns": str(value)})

    # Reads --------------------------------------------------------------------------------------

    async def lookup_accounts(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        ids = codec.parse_ids(await _body(request))
        found = await self.reads.lookup_accounts(ids) if ids else []
        return _json([self._account(account) for account in found])

    async def lookup_transfers(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        ids = codec.parse_ids(await _body(request))
        found = await self.reads.lookup_transfers(ids) if ids else []
        return _json([codec.render_transfer(t, status) for t, status in found])

    async def get_account(self, request: web.Request) -> web.Response:
        account_id = self._id(request)
        point = codec.parse_as_of(request.query.items())
        found = await self.reads.lookup_accounts([account_id])
        if not found:
            return _error(404, f"account {account_id} not found", "id")
        account = found[0]
        if point is None:
            return _json(self._account(account))
        asset = self.config.asset(account.ledger)
        if point.offset is not None:
            at = await self.reads.balances_at_offset(account_id, point.offset)
            if at is None:
                return _error(
                    404,
                    f"account {account_id} did not exist at offset {point.offset} of its events "
                    "partition",
                    "as_of_offset",
                )
            return _json(
                codec.render_balances_at(
                    at.balances, at.timestamp, asset, (at.partition, at.offset)
                )
            )
        assert point.timestamp is not None
        balances = await self.reads.balances_at(account_id, point.timestamp)
        if balances is None:
            return _error(404, f"account {account_id} did not exist at {point.timestamp}", "as_of")
        return _json(codec.render_balances_at(balances, point.timestamp, asset))

    async def account_transfers(self, request: web.Request) -> web.Response:
        account_filter = codec.parse_account_filter(self._id(request), request.query.items())
        found = await self.reads.account_transfers(account_filter)
        return _json([codec.render_transfer(t) for t in found])

    async def account_balances(self, request: web.Request) -> web.Response:
        account_filter = codec.parse_account_filter(self._id(request), request.query.items())
        found = await self.reads.account_balances(account_filter)
        return _json([codec.render_balance_entry(entry) for entry in found])

    async def account_versions(self, request: web.Request) -> web.Response:
        account_id = self._id(request)
        codec.parse_no_params(request.query.items())
        versions = await self.reads.account_versions(account_id)
        if not versions:
            return _error(404, f"account {account_id} not found", "id")
        return _json([self._account(account) for account in versions])

    async def settlements(self, request: web.Request) -> web.Response:
        account_id = self._id(request)
        codec.parse_no_params(request.query.items())
        found = await self.reads.settlements(account_id)
        return _json([codec.render_settlement(s) for s in found])

    async def query_accounts(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        query_filter = codec.parse_query_filter(await _body(request))
        found = await self.reads.query_accounts(query_filter)
        return _json([self._account(account) for account in found])

    async def query_transfers(self, request: web.Request) -> web.Response:
        codec.parse_no_params(request.query.items())
        query_filter = codec.parse_query_filter(await _body(request))
        found = await self.reads.query_transfers(query_filter)
        return _json([codec.render_transfer(t) for t in found])

    # Service ------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document(clock=self.clock_control is not None))

    async def docs(self, request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_PAGE, content_type="text/html")


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ledger HTTP API</title></head>
<body><h1>Ledger HTTP API</h1>
<p>The OpenAPI 3.1 description of this API is at <a href="openapi.json">/openapi.json</a>.</p>
</body></html>
"""


def create_app(
    reads: Reads,
    client: LedgerWriter,
    config: LedgerConfig,
    *,
    api_keys: frozenset[str] = frozenset(),
    clock_control: Callable[[int, bool], Awaitable[None]] | None = None,
) -> web.Application:
    """The HTTP API over `reads` and `client`. With `api_keys`, every request but /health must
    carry one of them (`Authorization: Bearer <key>` or `X-API-Key: <key>`). `clock_control`
    (tests only) serves POST /admin/clock, advancing the processors' clocks."""
    middlewares = [_errors]
    if api_keys:
        middlewares.append(_auth_middleware(frozenset(api_keys)))
    middlewares.append(_answers)
    app = web.Application(middlewares=middlewares, client_max_size=BODY_MAX_BYTES)
    api = _Api(reads, client, config, clock_control)
    app.add_routes(
        [
            web.get("/health", api.health),
            web.get("/openapi.json", api.openapi),
            web.get("/docs", api.docs),
            web.post("/accounts", api.create_accounts),
            web.post("/transfers", api.create_transfers),
            web.post("/accounts/lookup", api.lookup_accounts),
            web.post("/transfers/lookup", api.lookup_transfers),
            web.post("/accounts/query", api.query_accounts),
            web.post("/transfers/query", api.query_transfers),
            web.get("/accounts/{id}", api.get_account),
            web.get("/accounts/{id}/transfers", api.account_transfers),
            web.get("/accounts/{id}/balances", api.account_balances),
            web.get("/accounts/{id}/versions", api.account_versions),
            web.get("/accounts/{id}/settlements", api.settlements),
            web.post("/accounts/{id}/freeze", api.freeze),
            web.post("/accounts/{id}/unfreeze", api.unfreeze),
            web.post("/accounts/{id}/close", api.close),
            web.patch("/accounts/{id}/settings", api.update_settings),
        ]
    )
    if clock_control is not None:
        app.router.add_post("/admin/clock", api.advance_clock)
    return app
