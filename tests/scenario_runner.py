"""Runs ../shared/reference/scenarios-public.json against any ledger front end.

A `ScenarioDriver` adapts one front end (the reference ledger here; the HTTP API in the
pipeline tests), so the same scenarios prove every backend.

Step kinds: `accounts` / `transfers` (objects with their expected status), `setup` (give an
account balances by funding transfers from a dedicated funding account), `tick` (advance time;
a negative value n means "to n before the end of time", as TigerBeetle's test tables do),
`balances`, `transfer_amounts`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas import TIMESTAMP_MAX, AccountFlags, TransferFlags

__all__ = [
    "SCENARIOS_PATH",
    "Balances5",
    "ScenarioDriver",
    "ScenarioFailure",
    "load_scenarios",
    "run_scenario",
]


def _scenarios_path() -> Path:
    """The shared reference copy when the checkout sits beside shared/ (as in CI), else ours."""
    configured = os.environ.get("LEDGER_SCENARIOS")
    if configured:
        return Path(configured)
    shared = Path(__file__).resolve().parents[2] / "shared/reference/scenarios-public.json"
    return shared if shared.is_file() else Path(__file__).parent / "data/scenarios-public.json"


SCENARIOS_PATH = _scenarios_path()

# Funding accounts and transfers use ids no scenario uses.
_FUNDING_ID_BASE = 1 << 127

# (debits_pending, debits_posted, credits_pending, credits_posted, closed)
Balances5 = tuple[int, int, int, int, bool]


class ScenarioDriver(Protocol):
    def create_accounts(self, accounts: list[dict[str, int]]) -> list[str]: ...
    def create_transfers(self, transfers: list[dict[str, int]]) -> list[str]: ...
    def advance(self, nanoseconds: int) -> None: ...
    def advance_to(self, timestamp: int) -> None: ...
    def account_balances(self, account_id: int) -> Balances5 | None: ...
    def transfer_amount(self, transfer_id: int) -> int | None: ...
    def account_flags(self, account_id: int) -> int: ...
    def account_ledger(self, account_id: int) -> int: ...


class ScenarioFailure(AssertionError):
    pass


def load_scenarios(path: Path = SCENARIOS_PATH) -> list[dict[str, Any]]:
    scenarios: list[dict[str, Any]] = json.loads(path.read_text())
    return scenarios


def _int(value: Any) -> int:
    return int(value)  # integers above 2^53 arrive as decimal strings


def _object(raw: dict[str, Any]) -> dict[str, int]:
    return {key: _int(value) for key, value in raw.items()}


@dataclass
class _Funding:
    next_id: int = _FUNDING_ID_BASE
    accounts: dict[int, int] = field(default_factory=dict)  # account -> its funding account

    def take(self) -> int:
        self.next_id += 1
        return self.next_id


def _setup(driver: ScenarioDriver, funding: _Funding, step: list[Any], where: str) -> None:
    account_id, dp, dpo, cp, cpo = (_int(v) for v in step)
    ledger = driver.account_ledger(account_id)
    flags = driver.account_flags(account_id)
    funder = funding.take()
    status = driver.create_accounts([{"id": funder, "ledger": ledger, "code": 1}])
    if status != ["created"]:
        raise ScenarioFailure(f"{where}: funding account: {status}")

    def move(debit: int, credit: int, amount: int, pending: bool) -> dict[str, int]:
        return {
            "id": funding.take(),
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            "ledger": ledger,
            "code": 1,
            "flags": int(TransferFlags.PENDING) if pending else 0,
        }

    credits_posted = move(funder, account_id, cpo, False)
    credits_pending = move(funder, account_id, cp, True)
    debits_posted = move(account_id, funder, dpo, False)
    debits_pending = move(account_id, funder, dp, True)
    # Order the funding so the account's own limit flag never rejects it.
    if flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
        moves = [debits_posted, debits_pending, credits_posted, credits_pending]
    else:
        moves = [credits_posted, credits_pending, debits_posted, debits_pending]
    moves = [m for m in moves if m["amount"]]
    statuses = driver.create_transfers(moves)
    if any(s != "created" for s in statuses):
        raise ScenarioFailure(f"{where}: funding transfers: {statuses}")
    actual = driver.account_balances(account_id)
    if actual is None or actual[:4] != (dp, dpo, cp, cpo):
        raise ScenarioFailure(f"{where}: setup left balances {actual}")


def run_scenario(driver: ScenarioDriver, scenario: dict[str, Any]) -> int:
    """Run every step, raising ScenarioFailure at the first mismatch; returns steps checked."""
    funding = _Funding()
    checked = 0
    for number, (kind, data) in enumerate(scenario["steps"]):
        where = f"{scenario['id']} step {number} ({kind})"
        if kind in ("accounts", "transfers"):
            objects = [_object(obj) for obj, _ in data]
            expected = [status for _, status in data]
            create = driver.create_accounts if kind == "accounts" else driver.create_transfers
            actual = create(objects)
            if actual != expected:
                mismatches = [
                    f"#{i}: expected {e}, got {a} for {objects[i]}"
                    for i, (e, a) in enumerate(zip(expected, actual, strict=False))
                    if e != a
                ]
                if len(actual) != len(expected):
                    mismatches.append(f"expected {len(expected)} results, got {len(actual)}")
                raise ScenarioFailure(f"{where}:\n  " + "\n  ".join(mismatches))
        elif kind == "setup":
            _setup(driver, funding, data, where)
        elif kind == "tick":
            ((unit, value),) = data.items()
            scale = {"seconds": 1_000_000_000, "nanoseconds": 1}[unit]
            interval = abs(_int(value)) * scale
            if _int(value) > 0:
                driver.advance(interval)
            else:  # as TigerBeetle's tables mean it: to that long before the end of time
                driver.advance_to(TIMESTAMP_MAX - interval)
        elif kind == "balances":
            for account_id, want in data.items():
                got = driver.account_balances(_int(account_id))
                if want is None:
                    if got is not None:
                        raise ScenarioFailure(f"{where}: account {account_id} exists: {got}")
                    continue
                expected_balances = (*(_int(v) for v in want[:4]), bool(want[4]))
                if got != expected_balances:
                    raise ScenarioFailure(
                        f"{where}: account {account_id}: expected {expected_balances}, got {got}"
                    )
        elif kind == "transfer_amounts":
            for transfer_id, want in data.items():
                got_amount = driver.transfer_amount(_int(transfer_id))
                if want is None or want is False:
                    ok = got_amount is None
                elif want is True:
                    ok = got_amount is not None
                else:
                    ok = got_amount == _int(want)
                if not ok:
                    raise ScenarioFailure(
                        f"{where}: transfer {transfer_id}: expected {want}, got {got_amount}"
                    )
        else:
            raise ScenarioFailure(f"{where}: unknown step kind {kind!r}")
        checked += 1
    return checked
