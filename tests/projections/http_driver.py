"""A ScenarioDriver (tests/scenario_runner.py) over the HTTP API, for any server of it.

    driver = HttpScenarioDriver("http://127.0.0.1:8080", UrllibSession(), api_key="...")
    run_scenario(driver, scenario)

Writes are POST /accounts and POST /transfers, time is POST /admin/clock (the server must have
been started with a clock control), checks are GET /accounts/{id} and POST /transfers/lookup.
The session is requests-like and synchronous (`get(url, headers=...)`, `post(url, json=...,
headers=...)` returning an object with `status_code` and `json()`): a `requests.Session` works,
and `UrllibSession` is one on the standard library. Integers above 2^53 are sent as decimal
strings and flags as lists of names (when every bit has one), as a JavaScript client would.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

from projections.json_codec import ACCOUNT_FLAG_NAMES, TRANSFER_FLAG_NAMES
from tests.scenario_runner import Balances5

__all__ = [
    "HttpError",
    "HttpResponse",
    "HttpScenarioDriver",
    "HttpSession",
    "UrllibResponse",
    "UrllibSession",
]

_JSON_SAFE_MAX = (1 << 53) - 1


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...
    def json(self) -> Any: ...


class HttpSession(Protocol):
    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> HttpResponse: ...
    def post(
        self, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse: ...


class HttpError(AssertionError):
    """The server answered a driver's request with an unexpected status."""


class UrllibResponse:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class UrllibSession:
    """A minimal requests-like session on urllib (no keep-alive)."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    def _send(
        self, method: str, url: str, body: Any, headers: Mapping[str, str] | None
    ) -> UrllibResponse:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return UrllibResponse(response.status, response.read())
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a JSON body
            with exc:
                return UrllibResponse(exc.code, exc.read())

    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> UrllibResponse:
        return self._send("GET", url, None, headers)

    def post(
        self, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> UrllibResponse:
        return self._send("POST", url, json, headers)


def _wire(obj: Mapping[str, int], flag_table: Mapping[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "flags":
            known = 0
            for bit in flag_table.values():
                known |= bit
            if value & ~known:
                out[key] = value  # reserved bits have no names
            else:
                out[key] = [name for name, bit in flag_table.items() if value & bit]
        else:
            out[key] = str(value) if value > _JSON_SAFE_MAX else value
    return out


class HttpScenarioDriver:
    def __init__(self, base_url: str, session: HttpSession, *, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}

    def _post(self, path: str, body: Any) -> Any:
        response = self.session.post(self.base_url + path, json=body, headers=self.headers)
        if response.status_code != 200:
            raise HttpError(f"POST {path}: {response.status_code} {response.json()}")
        return response.json()

    def _account(self, account_id: int) -> dict[str, Any] | None:
        path = f"/accounts/{account_id}"
        response = self.session.get(self.base_url + path, headers=self.headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HttpError(f"GET {path}: {response.status_code} {response.json()}")
        account: dict[str, Any] = response.json()
        return account

    def _create(self, path: str, objects: list[dict[str, Any]]) -> list[str]:
        results = self._post(path, objects)
        if [r["index"] for r in results] != list(range(len(objects))):
            raise HttpError(f"POST {path}: results out of order: {results}")
        return [str(r["status"]) for r in results]

    def create_accounts(self, accounts: list[dict[str, int]]) -> list[str]:
        return self._create("/accounts", [_wire(a, ACCOUNT_FLAG_NAMES) for a in accounts])

    def create_transfers(self, transfers: list[dict[str, int]]) -> list[str]:
        return self._create("/transfers", [_wire(t, TRANSFER_FLAG_NAMES) for t in transfers])

    def advance(self, nanoseconds: int) -> None:
        self._post("/admin/clock", {"advance_ns": str(nanoseconds)})

    def advance_to(self, timestamp: int) -> None:
        self._post("/admin/clock", {"to_ns": str(timestamp)})

    def account_balances(self, account_id: int) -> Balances5 | None:
        a = self._account(account_id)
        if a is None:
            return None
        return (
            int(a["debits_pending"]),
            int(a["debits_posted"]),
            int(a["credits_pending"]),
            int(a["credits_posted"]),
            bool(a["closed"]),
        )

    def transfer_amount(self, transfer_id: int) -> int | None:
        found = self._post("/transfers/lookup", {"ids": [str(transfer_id)]})
        return int(found[0]["amount"]) if found else None

    def account_flags(self, account_id: int) -> int:
        a = self._account(account_id)
        assert a is not None, f"account {account_id} does not exist"
        return int(a["flags"])

    def account_ledger(self, account_id: int) -> int:
        a = self._account(account_id)
        assert a is not None, f"account {account_id} does not exist"
        return int(a["ledger"])
