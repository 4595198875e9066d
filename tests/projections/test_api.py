"""The HTTP API (projections.api) served by aiohttp's test server over real pieces.

Writes: `ReferenceWriter` stands in for the Kafka round trip (the pipeline is tested
elsewhere): it gives the AsyncLedgerClient calls the API makes to the core's ReferenceLedger and
returns exactly its results. Reads: `ProjectionReads` folds the ledger's event log into
PartitionProjections (three partitions: routing and merging are exercised) after every write,
and answers the `Reads` protocol from them. The read-side answers are checked against the
independent oracle of tests/projections/workload.py, and the public scenarios run through
HTTP with `HttpScenarioDriver`.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from processors.ledger import Asset, LedgerConfig, ReferenceLedger
from processors.store import PartitionStore
from producers import (
    AccountCommandResult,
    CreateResult,
    OutcomeUnknown,
    RequestRejected,
)
from projections.api import BODY_MAX_BYTES, create_app
from projections.filters import AccountFilter, BalanceEntry, BalancesAtOffset, QueryFilter
from projections.json_codec import render_account, render_balance_entry, render_transfer
from projections.merge import in_request_order, merge_query_accounts, merge_query_transfers
from projections.model import PartitionProjection
from schemas import (
    BATCH_EVENTS_MAX,
    U128_MAX,
    Account,
    AccountCommandStatus,
    Balances,
    CreateAccountStatus,
    CreateTransferStatus,
    PendingStatus,
    SettlementRequested,
    Transfer,
    UpdateSettings,
)
from schemas.messages import Operation
from schemas.partitioning import partition_of
from tests.projections.http_driver import HttpScenarioDriver, UrllibSession
from tests.projections.workload import (
    SECOND_NS,
    Oracle,
    random_account_filters,
    random_ledger,
    random_query_filters,
)
from tests.scenario_runner import load_scenarios, run_scenario

PARTITIONS = 3
CONFIG = LedgerConfig(assets={1: Asset("USD", 2), 2: Asset("EUR", 2)})
KEY = "k3y-for-tests"
Client = TestClient[web.Request, web.Application]


# The harness --------------------------------------------------------------------------------------


class ProjectionReads:
    """`Reads` over PartitionProjections: point reads go to the owner, queries are merged."""

    def __init__(self, projections: Sequence[PartitionProjection]) -> None:
        self.projections = list(projections)

    def _owner(self, key: int) -> PartitionProjection:
        return self.projections[partition_of(key, len(self.projections))]

    async def lookup_accounts(self, ids: list[int]) -> list[Account]:
        found = {i: a for i in ids if (a := self._owner(i).account(i)) is not None}
        return in_request_order(ids, found)

    async def lookup_transfers(self, ids: list[int]) -> list[tuple[Transfer, PendingStatus]]:
        found = {i: t for i in ids if (t := self._owner(i).transfer(i)) is not None}
        return in_request_order(ids, found)

    async def account_transfers(self, account_filter: AccountFilter) -> list[Transfer]:
        return self._owner(account_filter.account_id).account_transfers(account_filter)

    async def account_balances(self, account_filter: AccountFilter) -> list[BalanceEntry]:
        return self._owner(account_filter.account_id).account_balances(account_filter)

    async def account_versions(self, account_id: int) -> list[Account]:
        return self._owner(account_id).account_versions(account_id)

    async def settlements(self, account_id: int) -> list[SettlementRequested]:
        return self._owner(account_id).settlements(account_id)

    async def balances_at(self, account_id: int, timestamp: int) -> Balances | None:
        return self._owner(account_id).balances_at(account_id, timestamp)

    async def balances_at_offset(self, account_id: int, offset: int) -> BalancesAtOffset | None:
        return self._owner(account_id).balances_at_offset(account_id, offset)

    async def query_accounts(self, query_filter: QueryFilter) -> list[Account]:
        answers = [p.query_accounts(query_filter) for p in self.projections]
        return merge_query_accounts(answers, query_filter)

    async def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]:
        answers = [p.query_transfers(query_filter) for p in self.projections]
        return merge_query_transfers(answers, query_filter)

    async def wait_for_sequence(self, partitions: list[int], sequence: int) -> None:
        # The reference writer folds every write before it returns: nothing to wait for.
        assert all(
            p.applied_sequence() >= sequence for p in self.projections if p.partition in partitions
        )


class ReferenceWriter:
    """The ledger client's calls over a ReferenceLedger, returning exactly its results; after
    each call the ledger's new events are folded into the projections (one message), so a
    read after a write's response sees it."""

    def __init__(self, ledger: ReferenceLedger, projections: Sequence[PartitionProjection]):
        self.ledger = ledger
        self.projections = list(projections)
        self.offset = -1
        self.folded = 0
        self.calls = 0
        self.publish()

    def publish(self) -> None:
        events = self.ledger.log[self.folded :]
        self.folded = len(self.ledger.log)
        self.offset += 1
        for projection in self.projections:
            assert projection.apply(self.offset, events)

    async def create_accounts(self, accounts: Sequence[Account]) -> list[CreateResult]:
        self.calls += 1
        results = self.ledger.create_accounts(accounts)
        self.publish()
        return [
            CreateResult(i, CreateAccountStatus(r.status), r.timestamp)
            for i, r in enumerate(results)
        ]

    async def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateResult]:
        self.calls += 1
        results = self.ledger.create_transfers(transfers)
        self.publish()
        return [
            CreateResult(i, CreateTransferStatus(r.status), r.timestamp)
            for i, r in enumerate(results)
        ]

    def _command(self, outcome: Any) -> AccountCommandResult:
        self.calls += 1
        self.publish()
        return AccountCommandResult(AccountCommandStatus(outcome.status), outcome.version)

    async def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return self._command(self.ledger.freeze(account_id, expected_version))

    async def unfreeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return self._command(self.ledger.unfreeze(account_id, expected_version))

    async def close_account(
        self, account_id: int, expected_version: int = 0
    ) -> AccountCommandResult:
        return self._command(self.ledger.close(account_id, expected_version))

    async def update_settings(
        self, account_id: int, settings: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult:
        return self._command(self.ledger.update_settings(account_id, settings, expected_version))

    async def advance(self, nanoseconds: int, absolute: bool = False) -> None:
        self.ledger.advance(nanoseconds - self.ledger.now if absolute else nanoseconds)
        self.publish()


class Harness:
    def __init__(self, root: Path, ledger: ReferenceLedger | None = None) -> None:
        self.ledger = ledger if ledger is not None else ReferenceLedger(CONFIG)
        self.stores = [PartitionStore(root / f"p{p}", sync=False) for p in range(PARTITIONS)]
        self.projections = [
            PartitionProjection(self.stores[p], p, PARTITIONS) for p in range(PARTITIONS)
        ]
        self.writer = ReferenceWriter(self.ledger, self.projections)
        self.reads = ProjectionReads(self.projections)

    def app(self, *, api_keys: frozenset[str] = frozenset(), clock: bool = True) -> web.Application:
        return create_app(
            self.reads,
            self.writer,
            CONFIG,
            api_keys=api_keys,
            clock_control=self.writer.advance if clock else None,
        )

    def run(
        self,
        test: Callable[[Client], Awaitable[None]],
        app: web.Application | None = None,
    ) -> None:
        async def main() -> None:
            async with TestClient(TestServer(app or self.app())) as client:
                await test(client)

        asyncio.run(main())

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


async def call(
    client: Client, method: str, path: str, body: Any = None, *, status: int = 200, **kw: Any
) -> Any:
    data = body if isinstance(body, bytes | str) else None if body is None else json.dumps(body)
    response = await client.request(method, path, data=data, **kw)
    text = await response.text()
    assert response.status == status, f"{method} {path}: {response.status} {text}"
    if response.content_type == "application/json":
        return json.loads(text)
    return text


async def post(client: Client, path: str, body: Any = None, **kw: Any) -> Any:
    return await call(client, "POST", path, body, **kw)


async def get(client: Client, path: str, **kw: Any) -> Any:
    return await call(client, "GET", path, **kw)


def created(results: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in results]


# Writes -------------------------------------------------------------------------------------------


def test_health_and_docs(harness: Harness) -> None:
    async def go(client: Client) -> None:
        assert await get(client, "/health") == {"status": "ok"}
        page = await get(client, "/docs")
        assert 'href="openapi.json"' in page

    harness.run(go)


def test_create_accounts_numbers_strings_and_flag_names(harness: Harness) -> None:
    big = U128_MAX - 1

    async def go(client: Client) -> None:
        assert await post(client, "/accounts", []) == []
        results = await post(
            client,
            "/accounts",
            [
                {"id": 1, "ledger": 1, "code": 10, "flags": ["history"]},
                {"id": str(big), "ledger": "1", "code": "10", "user_data_128": str(big),
                 "user_data_64": "18446744073709551615", "user_data_32": 4294967295,
                 "flags": ["debits_must_not_exceed_credits", "history"]},
                {"id": 3, "ledger": 2, "code": 1, "flags": 2},
                {"id": 1, "ledger": 1, "code": 10, "flags": 8},  # the same: exists
                {"id": 4, "ledger": 1, "code": 1, "flags": 6},  # D<C and C<D
                {"ledger": 1, "code": 1},  # id defaults to 0
                {"id": 5, "code": 1},  # ledger defaults to 0
            ],
        )  # fmt: skip
        assert created(results) == [
            "created", "created", "created", "exists", "flags_are_mutually_exclusive",
            "id_must_not_be_zero", "ledger_must_not_be_zero",
        ]  # fmt: skip
        assert [r["index"] for r in results] == list(range(7))
        assert all(isinstance(r["timestamp"], str) and int(r["timestamp"]) > 0 for r in results)
        assert results[3]["timestamp"] == results[0]["timestamp"]  # exists: the original's

        account = await get(client, f"/accounts/{big}")
        assert account["id"] == str(big)
        assert account["user_data_128"] == str(big)
        assert account["user_data_64"] == "18446744073709551615"
        assert account["user_data_32"] == 4294967295
        assert account["flags"] == 10
        assert account["flag_names"] == ["debits_must_not_exceed_credits", "history"]
        assert (account["asset_code"], account["asset_scale"]) == ("USD", 2)
        eur = await get(client, "/accounts/3")
        assert (eur["asset_code"], eur["asset_scale"]) == ("EUR", 2)

    harness.run(go)


def test_account_response_shape_and_extension_fields(harness: Harness) -> None:
    async def go(client: Client) -> None:
        results = await post(
            client,
            "/accounts",
            [
                {"id": 7, "ledger": 1, "code": 1, "policy": "capped_overdraft",
                 "min_balance": "-500", "max_balance": 10**30, "settle_threshold": "100",
                 "settle_to": -20, "link_type": "http", "metadata": {"peer": "alice"}},
                {"id": 8, "ledger": 1, "code": 1, "policy": "external"},
                {"id": 9, "ledger": 1, "code": 1, "policy": "no_overdraft"},
                {"id": 10, "ledger": 1, "code": 1, "link_type": "has space"},
                {"id": 11, "ledger": 1, "code": 1, "settle_to": 5},
            ],
        )  # fmt: skip
        assert created(results) == [
            "created", "created", "created", "invalid_link_type", "invalid_settle_threshold",
        ]  # fmt: skip
        await post(
            client,
            "/transfers",
            [{"id": 70, "debit_account_id": 7, "credit_account_id": 8, "amount": 30,
              "ledger": 1, "code": 1},
             {"id": 71, "debit_account_id": 8, "credit_account_id": 7, "amount": 5,
              "ledger": 1, "code": 1, "flags": ["pending"]},
             {"id": 72, "debit_account_id": 7, "credit_account_id": 8, "amount": 4,
              "ledger": 1, "code": 1, "flags": ["pending"]}],
        )  # fmt: skip
        account = await get(client, "/accounts/7")
        assert account == {
            "id": "7",
            "debits_pending": "4", "debits_posted": "30",
            "credits_pending": "5", "credits_posted": "0",
            "user_data_128": "0", "user_data_64": "0", "user_data_32": 0, "reserved": 0,
            "ledger": 1, "code": 1, "flags": 0, "flag_names": [],
            "timestamp": account["timestamp"],
            "ledger_balance": "-30", "available_balance": "-34",
            "version": "1", "frozen": False, "closed": False,
            "policy": "capped_overdraft", "min_balance": "-500", "max_balance": str(10**30),
            "asset_code": "USD", "asset_scale": 2,
            "settle_threshold": "100", "settle_to": "-20",
            "link_type": "http", "metadata": {"peer": "alice"},
        }  # fmt: skip
        no_overdraft = await get(client, "/accounts/9")
        assert (no_overdraft["policy"], no_overdraft["min_balance"]) == ("no_overdraft", "0")
        external = await get(client, "/accounts/8")
        assert (external["policy"], external["min_balance"]) == ("external", None)

    harness.run(go)


def test_create_transfers_and_lookup_in_request_order(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        results = await post(
            client,
            "/transfers",
            [
                {"id": "100", "debit_account_id": "1", "credit_account_id": 2,
                 "amount": str(1 << 100), "ledger": 1, "code": 1,
                 "flags": ["pending"], "timeout": 0},
                {"id": 101, "debit_account_id": 1, "credit_account_id": 2, "amount": 3,
                 "ledger": 1, "code": 1, "user_data_64": "9007199254740993"},
                {"id": 102, "pending_id": 100, "amount": 7,
                 "flags": ["post_pending_transfer"]},
                {"id": 103, "debit_account_id": 1, "credit_account_id": 9, "amount": 1,
                 "ledger": 1, "code": 1},
                {"id": 104, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                 "ledger": 1, "code": 1, "flags": 1 << 12},
            ],
        )  # fmt: skip
        assert created(results) == [
            "created", "created", "created", "credit_account_not_found", "reserved_flag",
        ]  # fmt: skip
        found = await post(client, "/transfers/lookup", {"ids": [102, "103", 100, 101, 1, 100]})
        assert [t["id"] for t in found] == ["102", "100", "101", "100"]
        pending = found[1]
        assert pending["amount"] == str(1 << 100)
        assert pending["flags"] == 2 and pending["flag_names"] == ["pending"]
        assert pending["pending_status"] == "posted"
        post_ = found[0]
        assert [post_[k] for k in ("amount", "pending_id", "pending_status")] == [
            "7",
            "100",
            "none",
        ]
        assert post_["debit_account_id"] == "1"  # inherited from the pending transfer
        assert found[2]["user_data_64"] == "9007199254740993"
        assert set(pending) == {
            "id", "debit_account_id", "credit_account_id", "amount", "pending_id",
            "user_data_128", "user_data_64", "user_data_32", "timeout", "ledger", "code",
            "flags", "flag_names", "timestamp", "debit_account_version",
            "credit_account_version", "pending_status",
        }  # fmt: skip
        accounts = await post(client, "/accounts/lookup", {"ids": ["2", 3, 1, 2]})
        assert [a["id"] for a in accounts] == ["2", "1", "2"]
        assert accounts[1]["debits_posted"] == "10"
        assert await post(client, "/accounts/lookup", {"ids": []}) == []

    harness.run(go)


def test_version_pinned_transfers(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        await post(client, "/accounts/1/freeze", {})
        await post(client, "/accounts/1/unfreeze", {})
        move = {"debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1,
                "code": 1}  # fmt: skip
        results = await post(
            client,
            "/transfers",
            [
                {"id": 1, **move, "debit_account_version": 2},
                {"id": 2, **move, "debit_account_version": "3", "credit_account_version": 1},
                {"id": 3, **move, "credit_account_version": 2},
            ],
        )
        assert created(results) == [
            "debit_account_version_mismatch", "created", "credit_account_version_mismatch",
        ]  # fmt: skip
        (transfer,) = await post(client, "/transfers/lookup", {"ids": [2]})
        assert (transfer["debit_account_version"], transfer["credit_account_version"]) == (
            "3", "1",
        )  # fmt: skip

    harness.run(go)


def test_batch_limit(harness: Harness) -> None:
    async def go(client: Client) -> None:
        too_many = [{"id": i + 1, "ledger": 1, "code": 1} for i in range(BATCH_EVENTS_MAX + 1)]
        for path in ("/accounts", "/transfers"):
            error = await post(client, path, too_many, status=413)
            assert "8189" in error["error"]
        error = await post(client, "/accounts/lookup", {"ids": list(range(8190))}, status=413)
        assert "8189" in error["error"] and error["field"] == "ids"
        assert harness.writer.calls == 0
        at_limit = too_many[:BATCH_EVENTS_MAX]
        results = await post(client, "/accounts", at_limit)
        assert len(results) == BATCH_EVENTS_MAX
        assert set(created(results)) == {"created"}

    harness.run(go)


# Account lifecycle --------------------------------------------------------------------------------


def test_freeze_unfreeze_close_settings_and_versions(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        assert await post(client, "/accounts/1/freeze") == {"status": "ok", "version": "2"}
        assert await post(client, "/accounts/1/freeze") == {
            "status": "account_already_frozen", "version": "2",
        }  # fmt: skip
        assert (await get(client, "/accounts/1"))["frozen"] is True
        results = await post(
            client,
            "/transfers",
            [{"id": 5, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
              "ledger": 1, "code": 1}],
        )  # fmt: skip
        assert created(results) == ["debit_account_frozen"]
        mismatch = await post(client, "/accounts/1/unfreeze", {"expected_version": 1})
        assert mismatch == {"status": "account_version_mismatch", "version": "2"}
        assert await post(client, "/accounts/1/unfreeze", {"expected_version": "2"}) == {
            "status": "ok", "version": "3",
        }  # fmt: skip
        assert await post(client, "/accounts/1/unfreeze") == {
            "status": "account_not_frozen", "version": "3",
        }  # fmt: skip

        patch = {"policy": "capped_overdraft", "min_balance": "-100", "max_balance": 1000,
                 "link_type": "websocket", "metadata": {"a": "1", "b": "2"},
                 "expected_version": 3}  # fmt: skip
        result = await call(client, "PATCH", "/accounts/1/settings", patch)
        assert result == {"status": "ok", "version": "4"}
        account = await get(client, "/accounts/1")
        assert (account["policy"], account["min_balance"], account["max_balance"]) == (
            "capped_overdraft", "-100", "1000",
        )  # fmt: skip
        assert account["metadata"] == {"a": "1", "b": "2"}
        # Present fields replace, null clears, metadata is replaced whole, absent stay.
        result = await call(
            client, "PATCH", "/accounts/1/settings", {"max_balance": None, "metadata": {"c": "3"}}
        )
        assert result == {"status": "ok", "version": "5"}
        account = await get(client, "/accounts/1")
        assert (account["min_balance"], account["max_balance"]) == ("-100", None)
        assert account["metadata"] == {"c": "3"} and account["link_type"] == "websocket"
        result = await call(client, "PATCH", "/accounts/1/settings", {"metadata": None})
        assert result == {"status": "ok", "version": "6"}
        assert (await get(client, "/accounts/1"))["metadata"] == {}
        bad = await call(client, "PATCH", "/accounts/1/settings", {"settle_to": 5})
        assert bad == {"status": "invalid_settle_threshold", "version": "6"}
        unknown = await call(client, "PATCH", "/accounts/99/settings", {})
        assert unknown == {"status": "account_not_found", "version": "0"}

        assert await post(client, "/accounts/1/close", {}) == {"status": "ok", "version": "7"}
        closed = await get(client, "/accounts/1")
        assert closed["closed"] is True and closed["flag_names"] == ["closed"]
        assert await post(client, "/accounts/1/freeze") == {
            "status": "account_already_closed", "version": "7",
        }  # fmt: skip

        versions = await get(client, "/accounts/1/versions")
        assert [v["version"] for v in versions] == [str(n) for n in range(1, 8)]
        assert [v["frozen"] for v in versions] == [False, True, False, False, False, False, False]
        assert [v["metadata"] for v in versions[3:6]] == [{"a": "1", "b": "2"}, {"c": "3"}, {}]
        assert versions[-1]["closed"] is True
        await get(client, "/accounts/99/versions", status=404)

    harness.run(go)


def test_close_needs_an_empty_account(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        await post(
            client,
            "/transfers",
            [{"id": 5, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
              "ledger": 1, "code": 1}],
        )  # fmt: skip
        assert await post(client, "/accounts/1/close") == {
            "status": "account_not_empty", "version": "1",
        }  # fmt: skip
        assert await post(client, "/accounts/77/close") == {
            "status": "account_not_found", "version": "0",
        }  # fmt: skip

    harness.run(go)


# Reads --------------------------------------------------------------------------------------------


def test_account_not_found_and_as_of(harness: Harness) -> None:
    async def go(client: Client) -> None:
        error = await get(client, "/accounts/5", status=404)
        assert error["field"] == "id"
        (result,) = await post(client, "/accounts", [{"id": 5, "ledger": 1, "code": 1}])
        created_at = int(result["timestamp"])
        await post(client, "/accounts", [{"id": 6, "ledger": 1, "code": 1}])
        stamps = []
        for n in range(3):
            (r,) = await post(
                client,
                "/transfers",
                [{"id": 50 + n, "debit_account_id": 6, "credit_account_id": 5,
                  "amount": 10, "ledger": 1, "code": 1}],
            )  # fmt: skip
            stamps.append(int(r["timestamp"]))
        await get(client, f"/accounts/5?as_of={created_at - 1}", status=404)
        at_creation = await get(client, f"/accounts/5?as_of={created_at}")
        assert at_creation["credits_posted"] == "0" and at_creation["as_of"] == str(created_at)
        after_two = await get(client, f"/accounts/5?as_of={stamps[1]}")
        assert after_two["credits_posted"] == "20" and after_two["ledger_balance"] == "20"
        assert after_two["asset_code"] == "USD"
        now = await get(client, f"/accounts/5?as_of={stamps[2] + 1000}")
        assert now["credits_posted"] == "30"

    harness.run(go)


def _params(f: AccountFilter) -> dict[str, str]:
    params = {
        "debits": "true" if f.debits else "false",
        "credits": "1" if f.credits else "0",
        "reversed": "true" if f.reversed else "false",
    }
    for name in ("user_data_128", "user_data_64", "user_data_32", "code"):
        if getattr(f, name):
            params[name] = str(getattr(f, name))
    for name in ("timestamp_min", "timestamp_max"):
        params[name] = str(getattr(f, name))
    params["limit"] = str(f.limit)
    return params


@pytest.mark.parametrize("seed", [1, 2])
def test_reads_equal_the_oracle(tmp_path: Path, seed: int) -> None:
    """Random filters, as query parameters and bodies, give what the oracle computes."""
    ledger = random_ledger(seed, operations=80)
    harness = Harness(tmp_path, ledger)
    oracle = Oracle(ledger)
    rng = random.Random(seed)
    account_ids = sorted(oracle.state.accounts)
    timestamps = oracle.timestamps()

    def account(a: Account) -> dict[str, Any]:
        return render_account(a, CONFIG.asset(a.ledger))

    async def go(client: Client) -> None:
        for f in random_account_filters(rng, account_ids, timestamps, 100):
            in_range = 0 <= f.account_id <= U128_MAX and all(
                0 <= getattr(f, n) < (1 << 64) for n in ("timestamp_min", "timestamp_max")
            )
            if not in_range or not 0 <= f.limit <= BATCH_EVENTS_MAX:
                if 0 <= f.account_id <= U128_MAX:
                    query = urlencode(_params(f))
                    await get(client, f"/accounts/{f.account_id}/transfers?{query}", status=400)
                continue
            query = urlencode(_params(f))
            transfers = await get(client, f"/accounts/{f.account_id}/transfers?{query}")
            assert transfers == [render_transfer(t) for t in oracle.account_transfers(f)]
            balances = await get(client, f"/accounts/{f.account_id}/balances?{query}")
            assert balances == [render_balance_entry(e) for e in oracle.account_balances(f)]
        for q in random_query_filters(rng, timestamps, 40):
            body: dict[str, Any] = {
                "user_data_128": q.user_data_128, "user_data_64": str(q.user_data_64),
                "user_data_32": q.user_data_32, "ledger": q.ledger, "code": q.code,
                "timestamp_min": q.timestamp_min, "timestamp_max": str(q.timestamp_max),
                "limit": q.limit,
            }  # fmt: skip
            if rng.random() < 0.5:
                body["reversed"] = q.reversed
            else:
                body["flags"] = ["reversed"] if q.reversed else 0
            valid = (
                all(0 <= getattr(q, n) < (1 << 64) for n in ("timestamp_min", "timestamp_max"))
                and q.limit <= BATCH_EVENTS_MAX
            )
            if not valid:
                await post(client, "/accounts/query", body, status=400)
                continue
            found = await post(client, "/accounts/query", body)
            assert found == [account(a) for a in oracle.query_accounts(q)]
            found = await post(client, "/transfers/query", body)
            assert found == [render_transfer(t) for t in oracle.query_transfers(q)]
        for account_id in account_ids:
            versions = await get(client, f"/accounts/{account_id}/versions")
            assert versions == [account(a) for a in oracle.versions[account_id]]
            settlements = await get(client, f"/accounts/{account_id}/settlements")
            assert [(s["transfer_id"], s["amount"], s["balance"], s["timestamp"])
                    for s in settlements] == [
                (str(s.transfer_id), str(s.amount), str(s.balance), str(s.timestamp))
                for s in oracle.settlement_requests[account_id]
            ]  # fmt: skip
            current = await get(client, f"/accounts/{account_id}")
            state = oracle.state.get_account(account_id)
            assert state is not None and current == account(state)
            for ts in rng.sample(timestamps, 5):
                expected = oracle.balances_at(account_id, ts)
                if expected is None:
                    await get(client, f"/accounts/{account_id}?as_of={ts}", status=404)
                else:
                    got = await get(client, f"/accounts/{account_id}?as_of={ts}")
                    assert [got[k] for k in ("debits_pending", "debits_posted",
                                             "credits_pending", "credits_posted")] == [
                        str(expected.debits_pending), str(expected.debits_posted),
                        str(expected.credits_pending), str(expected.credits_posted),
                    ]  # fmt: skip

    try:
        harness.run(go)
    finally:
        harness.close()


def test_account_filter_defaults_and_flags(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(
            client,
            "/accounts",
            [{"id": 1, "ledger": 1, "code": 1, "flags": ["history"]},
             {"id": 2, "ledger": 1, "code": 1}],
        )  # fmt: skip
        transfers = [
            {"id": 10 + n, "debit_account_id": 1 + n % 2, "credit_account_id": 2 - n % 2,
             "amount": n + 1, "ledger": 1, "code": 1 + n % 3, "user_data_32": n % 2}
            for n in range(6)
        ]  # fmt: skip
        await post(client, "/transfers", transfers)

        def ids(found: list[dict[str, Any]]) -> list[int]:
            return [int(t["id"]) for t in found]

        assert ids(await get(client, "/accounts/1/transfers")) == [10, 11, 12, 13, 14, 15]
        assert ids(await get(client, "/accounts/1/transfers?debits=false")) == [11, 13, 15]
        assert ids(await get(client, "/accounts/1/transfers?credits=FALSE")) == [10, 12, 14]
        assert await get(client, "/accounts/1/transfers?credits=0&debits=0") == []
        assert ids(await get(client, "/accounts/1/transfers?reversed=true&limit=2")) == [15, 14]
        assert ids(await get(client, "/accounts/1/transfers?code=2")) == [11, 14]
        assert ids(await get(client, "/accounts/1/transfers?user_data_32=1")) == [11, 13, 15]
        assert await get(client, "/accounts/1/transfers?limit=0") == []
        assert await get(client, "/accounts/404/transfers") == []
        balances = await get(client, "/accounts/1/balances?debits=false")
        assert [b["credits_posted"] for b in balances] == ["2", "6", "12"]
        assert await get(client, "/accounts/2/balances") == []  # no history flag

    harness.run(go)


def test_settlements(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(
            client,
            "/accounts",
            [{"id": 1, "ledger": 1, "code": 1, "settle_threshold": 100, "settle_to": "10"},
             {"id": 2, "ledger": 1, "code": 1}],
        )  # fmt: skip
        assert await get(client, "/accounts/1/settlements") == []
        (r,) = await post(
            client,
            "/transfers",
            [{"id": 9, "debit_account_id": 2, "credit_account_id": 1, "amount": 130,
              "ledger": 1, "code": 1}],
        )  # fmt: skip
        (s,) = await get(client, "/accounts/1/settlements")
        assert (s["account_id"], s["amount"], s["balance"]) == ("1", "120", "130")
        assert int(s["timestamp"]) >= int(r["timestamp"])
        (settlement,) = await post(client, "/transfers/lookup", {"ids": [s["transfer_id"]]})
        assert settlement["pending_status"] == "pending" and settlement["amount"] == "120"
        assert (await get(client, "/accounts/1"))["available_balance"] == "10"

    harness.run(go)


def test_admin_clock_expires_pending_transfers(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        await post(
            client,
            "/transfers",
            [{"id": 9, "debit_account_id": 1, "credit_account_id": 2, "amount": 5,
              "ledger": 1, "code": 1, "timeout": 1, "flags": ["pending"]}],
        )  # fmt: skip
        assert (await get(client, "/accounts/1"))["debits_pending"] == "5"
        assert await post(client, "/admin/clock", {"advance_ns": SECOND_NS}) == {
            "status": "ok", "advanced_ns": str(SECOND_NS),
        }  # fmt: skip
        assert (await get(client, "/accounts/1"))["debits_pending"] == "0"
        (t,) = await post(client, "/transfers/lookup", {"ids": [9]})
        assert t["pending_status"] == "expired"
        error = await post(client, "/admin/clock", {"advance_ns": 0}, status=400)
        assert error["field"] == "advance_ns"
        await post(client, "/admin/clock", {}, status=400)

    harness.run(go)


def test_admin_clock_absent_without_clock_control(harness: Harness) -> None:
    async def go(client: Client) -> None:
        error = await post(client, "/admin/clock", {"advance_ns": 1}, status=404)
        assert error["error"] == "not found"

    harness.run(go, harness.app(clock=False))


# Malformed requests -------------------------------------------------------------------------------

_ACCOUNT = {"id": 1, "ledger": 1, "code": 1}
_TRANSFER = {"id": 1, "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1,
             "code": 1}  # fmt: skip

# fmt: off
MALFORMED: list[tuple[str, str, Any, int, str | None, str]] = [
    # method, path, body, status, field, a part of the message
    ("POST", "/accounts", b"{not json", 400, None, "invalid JSON"),
    ("POST", "/accounts", b"[NaN]", 400, None, "invalid JSON"),
    ("POST", "/accounts", b"\xff\xfe", 400, None, "UTF-8"),
    ("POST", "/accounts", {"id": 1}, 400, None, "JSON array"),
    ("POST", "/accounts", [_ACCOUNT, 5], 400, "[1]", "object"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": -1}], 400, "[0].id", "below 2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": 1 << 128}], 400, "[0].id", "below 2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": str(1 << 128)}], 400, "[0].id", "2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": "0x10"}], 400, "[0].id", "2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": 1.5}], 400, "[0].id", "2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "id": True}], 400, "[0].id", "2^128"),
    ("POST", "/accounts", [{**_ACCOUNT, "ledger": 1 << 32}], 400, "[0].ledger", "2^32"),
    ("POST", "/accounts", [{**_ACCOUNT, "code": 65536}], 400, "[0].code", "2^16"),
    ("POST", "/accounts", [{**_ACCOUNT, "user_data_64": str(1 << 64)}], 400,
     "[0].user_data_64", "2^64"),
    ("POST", "/accounts", [{**_ACCOUNT, "timestamp": -5}], 400, "[0].timestamp", "2^64"),
    ("POST", "/accounts", [{**_ACCOUNT, "flags": ["history", "pending"]}], 400,
     "[0].flags[1]", "unknown flag"),
    ("POST", "/accounts", [{**_ACCOUNT, "flags": 1 << 16}], 400, "[0].flags", "2^16"),
    ("POST", "/accounts", [{**_ACCOUNT, "flags": {"history": True}}], 400, "[0].flags",
     "list of flag names"),
    ("POST", "/accounts", [{**_ACCOUNT, "policy": "overdraft"}], 400, "[0].policy",
     "unknown policy"),
    ("POST", "/accounts", [{**_ACCOUNT, "policy": 1}], 400, "[0].policy", "unknown policy"),
    ("POST", "/accounts", [{**_ACCOUNT, "metadata": {"a": 1}}], 400, "[0].metadata.a",
     "string"),
    ("POST", "/accounts", [{**_ACCOUNT, "metadata": ["a"]}], 400, "[0].metadata", "object"),
    ("POST", "/accounts", [{**_ACCOUNT, "link_type": 5}], 400, "[0].link_type", "string"),
    ("POST", "/accounts", [{**_ACCOUNT, "min_balance": "1e3"}], 400, "[0].min_balance",
     "2^128-1"),
    ("POST", "/accounts", [{**_ACCOUNT, "max_balance": -(1 << 128)}], 400,
     "[0].max_balance", "2^128-1"),
    ("POST", "/accounts", [_ACCOUNT, {**_ACCOUNT, "colour": "red"}], 400, "[1].colour",
     "unknown field"),
    ("POST", "/accounts", [{**_ACCOUNT, "version": 1}], 400, "[0].version", "unknown field"),
    ("POST", "/transfers", [_TRANSFER, _TRANSFER, _TRANSFER, {**_TRANSFER, "amount": -1}], 400,
     "[3].amount", "[3].amount: must be a non-negative integer below 2^128"),
    ("POST", "/transfers", [{**_TRANSFER, "timeout": 1 << 32}], 400, "[0].timeout", "2^32"),
    ("POST", "/transfers", [{**_TRANSFER, "flags": ["history"]}], 400, "[0].flags[0]",
     "unknown flag"),
    ("POST", "/transfers", [{**_TRANSFER, "debit_account_version": "x"}], 400,
     "[0].debit_account_version", "2^64"),
    ("POST", "/transfers", [{**_TRANSFER, "policy": "system"}], 400, "[0].policy",
     "unknown field"),
    ("POST", "/transfers", None, 400, None, "JSON array"),
    ("POST", "/accounts/lookup", [1, 2], 400, None, "object"),
    ("POST", "/accounts/lookup", {"ids": 1}, 400, "ids", "array"),
    ("POST", "/accounts/lookup", {"id": [1]}, 400, "id", "unknown field"),
    ("POST", "/transfers/lookup", {"ids": [1, "two"]}, 400, "ids[1]", "2^128"),
    ("GET", "/accounts/abc", None, 400, "id", "2^128"),
    ("GET", "/accounts/-1", None, 400, "id", "2^128"),
    ("GET", f"/accounts/{1 << 128}", None, 400, "id", "2^128"),
    ("GET", "/accounts/1?as_of=yesterday", None, 400, "as_of", "2^64"),
    ("GET", "/accounts/1?asof=1", None, 400, "asof", "unknown query parameter"),
    ("GET", "/accounts/1/transfers?debits=maybe", None, 400, "debits", "true or false"),
    ("GET", "/accounts/1/transfers?limit=8190", None, 400, "limit", "8189"),
    ("GET", "/accounts/1/transfers?limit=-1", None, 400, "limit", "2^32"),
    ("GET", "/accounts/1/balances?code=70000", None, 400, "code", "2^16"),
    ("GET", "/accounts/1/balances?timestamp_min=1&timestamp_min=2", None, 400,
     "timestamp_min", "more than once"),
    ("GET", "/accounts/1/transfers?ledger=1", None, 400, "ledger", "unknown query parameter"),
    ("GET", "/accounts/1/versions?limit=1", None, 400, "limit", "unknown query parameter"),
    ("POST", "/accounts/x/freeze", None, 400, "id", "2^128"),
    ("POST", "/accounts/1/freeze", {"expected_version": -1}, 400, "expected_version", "2^64"),
    ("POST", "/accounts/1/close", {"version": 1}, 400, "version", "unknown field"),
    ("POST", "/accounts/1/unfreeze", [1], 400, None, "object"),
    ("PATCH", "/accounts/1/settings", {"policy": "lenient"}, 400, "policy", "unknown policy"),
    ("PATCH", "/accounts/1/settings", {"metadata": {"k": None}}, 400, "metadata.k", "string"),
    ("PATCH", "/accounts/1/settings", {"min_balance": 0.5}, 400, "min_balance", "2^128-1"),
    ("PATCH", "/accounts/1/settings", {"ledger": 2}, 400, "ledger", "unknown field"),
    ("POST", "/accounts/query", {"limit": 10_000}, 400, "limit", "8189"),
    ("POST", "/accounts/query", {"reversed": "yes"}, 400, "reversed", "true or false"),
    ("POST", "/transfers/query", {"flags": 2}, 400, "flags", "bit 0"),
    ("POST", "/transfers/query", {"flags": ["debits"]}, 400, "flags[0]", "unknown flag"),
    ("POST", "/transfers/query", {"ledger": "one"}, 400, "ledger", "2^32"),
    ("POST", "/transfers/query", {"account_id": 1}, 400, "account_id", "unknown field"),
    ("POST", "/admin/clock", {"advance_ns": "soon"}, 400, "advance_ns", "2^64"),
    ("GET", "/nowhere", None, 404, None, "not found"),
    ("DELETE", "/accounts/1", None, 405, None, "method not allowed"),
]
# fmt: on


def test_malformed_requests_name_the_field(harness: Harness) -> None:
    async def go(client: Client) -> None:
        await post(client, "/accounts", [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)])
        calls = harness.writer.calls
        log = len(harness.ledger.log)
        for method, path, body, status, field, message in MALFORMED:
            error = await call(client, method, path, body, status=status)
            where = f"{method} {path} {body!r}"
            assert isinstance(error, dict), where
            assert error["field"] == field, f"{where}: {error}"
            assert message in error["error"], f"{where}: {error}"
            if field:
                assert error["error"].startswith(f"{field}: "), f"{where}: {error}"
        assert harness.writer.calls == calls
        assert len(harness.ledger.log) == log

    harness.run(go)


def test_body_too_large(harness: Harness) -> None:
    async def go(client: Client) -> None:
        body = io.BytesIO(b"[" + b" " * BODY_MAX_BYTES + b"]")
        response = await client.post("/transfers", data=body)
        assert response.status == 413
        error = await response.json()
        assert str(BODY_MAX_BYTES) in error["error"] and error["field"] is None
        assert harness.writer.calls == 0

    harness.run(go)


class FailingWriter(ReferenceWriter):
    """The harness's writer, but transfers and freezes fail with `error`."""

    def __init__(self, inner: ReferenceWriter, error: Exception) -> None:  # no super(): shares
        self.ledger = inner.ledger
        self.projections = inner.projections
        self.offset = inner.offset
        self.folded = inner.folded
        self.calls = 0
        self.error = error

    async def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateResult]:
        raise self.error

    async def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (RequestRejected(7, "undecodable command"), 400, "undecodable command"),
        (OutcomeUnknown(7, Operation.CREATE_TRANSFERS, [1], "timed out"), 504,
         "resubmitting the same events is safe"),
        (ValueError("a value the schema cannot carry"), 400, "cannot carry"),
    ],
)  # fmt: skip
def test_client_errors(harness: Harness, error: Exception, status: int, message: str) -> None:
    writer = FailingWriter(harness.writer, error)
    app = create_app(harness.reads, writer, CONFIG)

    async def go(client: Client) -> None:
        body: Any = await post(client, "/transfers", [_TRANSFER], status=status)
        assert message in body["error"]
        body = await post(client, "/accounts/1/freeze", status=status)
        assert body["error"]

    harness.run(go, app)


# Authentication -----------------------------------------------------------------------------------


GUARDED: list[tuple[str, str, Any]] = [
    ("POST", "/accounts", [_ACCOUNT]),
    ("POST", "/transfers", [_TRANSFER]),
    ("POST", "/accounts/1/freeze", None),
    ("PATCH", "/accounts/1/settings", {"metadata": {}}),
    ("POST", "/admin/clock", {"advance_ns": SECOND_NS}),
    ("GET", "/accounts/1", None),
    ("GET", "/openapi.json", None),
    ("GET", "/nowhere", None),
    ("POST", "/accounts", b"{broken"),
]


def test_authentication(harness: Harness) -> None:
    app = harness.app(api_keys=frozenset({KEY, "other-key"}))

    async def go(client: Client) -> None:
        assert await get(client, "/health") == {"status": "ok"}
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {KEY}"},
            {"X-API-Key": KEY + "x"},
            {"X-API-Key": ""},
            {"Authorization": "Bearer é"},
        ):
            for method, path, body in GUARDED:
                error = await call(client, method, path, body, status=401, headers=headers)
                assert error == {"error": "unauthorized"}
        for route in app.router.routes():  # every route but /health is guarded
            assert route.resource is not None
            if route.method == "HEAD" or route.resource.canonical == "/health":
                continue
            path = route.resource.canonical.replace("{id}", "1")
            error = await call(client, route.method, path, status=401)
            assert error == {"error": "unauthorized"}
        assert harness.writer.calls == 0
        assert harness.ledger.log == [] and harness.ledger.now == 0

        results = await post(client, "/accounts", [_ACCOUNT], headers={"X-API-Key": KEY})
        assert created(results) == ["created"]
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert (await get(client, "/accounts/1", headers=bearer))["id"] == "1"
        other = {"Authorization": "bearer other-key"}
        assert (await get(client, "/accounts/1", headers=other))["id"] == "1"

    harness.run(go, app)


# The OpenAPI document -----------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


@pytest.mark.parametrize("clock", [True, False])
def test_openapi_lists_every_route(harness: Harness, clock: bool) -> None:
    app = harness.app(clock=clock)

    async def go(client: Client) -> None:
        response = await client.get("/openapi.json")
        assert response.status == 200
        document = json.loads(await response.text())
        assert document["openapi"].startswith("3.1")
        routes = {
            (route.resource.canonical, route.method.lower())
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
        listed = {(path, method) for path, item in document["paths"].items() for method in item}
        assert routes == listed
        assert (("/admin/clock", "post") in routes) is clock
        schemas = document["components"]["schemas"]
        for ref in _refs(document):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
        for path, item in document["paths"].items():
            for method, operation in item.items():
                assert "200" in operation["responses"], (path, method)
                if method in ("post", "patch") and path not in ("/accounts/{id}/freeze",):
                    assert "requestBody" in operation or path.endswith(("/unfreeze", "/close"))
        assert set(schemas["AccountRequest"]["properties"]) >= {
            "id", "debits_pending", "debits_posted", "credits_pending", "credits_posted",
            "user_data_128", "user_data_64", "user_data_32", "reserved", "ledger", "code",
            "flags", "timestamp", "policy", "min_balance", "max_balance", "settle_threshold",
            "settle_to", "link_type", "metadata",
        }  # fmt: skip

    harness.run(go, app)


# The public scenarios through HTTP ----------------------------------------------------------------


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Serve `app` on a loopback port from a thread of its own; yields the base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(runner.addresses[0][1])
        ready.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="api-test-server", daemon=True)
    thread.start()
    assert ready.wait(30), "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario_over_http(tmp_path: Path, scenario: dict[str, Any]) -> None:
    harness = Harness(tmp_path, ReferenceLedger())
    try:
        with serve(harness.app(api_keys=frozenset({KEY}))) as base_url:
            driver = HttpScenarioDriver(base_url, UrllibSession(), api_key=KEY)
            assert run_scenario(driver, scenario) == len(scenario["steps"])
    finally:
        harness.close()
