"""`ledger submit` (JSON-lines files of accounts or transfers) and `ledger show` (an account)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from producers import LedgerClient, RequestHandle
from projections.json_codec import CodecError, parse_account, parse_transfer
from schemas import BATCH_EVENTS_MAX, Account, CreateAccountStatus, CreateTransferStatus, Transfer
from schemas.messages import CommandBatch, Operation

__all__ = ["FileProblem", "read_events", "show_account", "submit_file"]

IN_FLIGHT_MAX = 8  # requests outstanding at once while submitting a file


class FileProblem(ValueError):
    """A line of the file is not an account or transfer; names the line and the field."""


def read_events(path: Path, kind: str) -> Iterator[Account | Transfer]:
    parse = parse_account if kind == "accounts" else parse_transfer
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield parse(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FileProblem(f"{path}:{number}: not JSON: {exc.msg}") from None
            except CodecError as exc:
                raise FileProblem(f"{path}:{number}: {exc}") from None


def _batches(events: Iterator[Account | Transfer], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def submit_file(
    client: LedgerClient, path: Path, kind: str, batch_size: int, console: Console
) -> Counter[str]:
    """Submit the file's events in batches (a batch's linked chains stay whole: keep chains
    within `batch_size`); returns how many events got each status."""
    if not 1 <= batch_size <= BATCH_EVENTS_MAX:
        raise FileProblem(f"--batch-size must be within 1..{BATCH_EVENTS_MAX}")
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    operation = Operation.CREATE_ACCOUNTS if kind == "accounts" else Operation.CREATE_TRANSFERS
    enum = CreateAccountStatus if kind == "accounts" else CreateTransferStatus
    statuses: Counter[str] = Counter()
    outstanding: list[RequestHandle] = []

    def settle(handle: RequestHandle) -> None:
        for result in handle.result().results:
            statuses[enum(result.status).name.lower()] += 1

    with Progress(console=console) as progress:
        task = progress.add_task(f"{kind} from {path.name}", total=total)
        for batch in _batches(read_events(path, kind), batch_size):
            request = CommandBatch(0, client.submitter, operation)
            if kind == "accounts":
                request.accounts = batch
            else:
                request.transfers = batch
            outstanding.append(client.submit(request))
            if len(outstanding) >= IN_FLIGHT_MAX:
                first = outstanding.pop(0)
                settle(first)
                progress.update(task, advance=len(first.batch.accounts or first.batch.transfers))
        for handle in outstanding:
            settle(handle)
            progress.update(task, advance=len(handle.batch.accounts or handle.batch.transfers))
    return statuses


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def show_account(
    base_url: str,
    account_id: int,
    console: Console,
    limit: int = 20,
    as_of: int | None = None,
    as_of_offset: int | None = None,
) -> bool:
    """Print an account's balances, latest transfers and versions; or with `as_of` (a
    timestamp) or `as_of_offset` (an offset of the events partition owning the account) its
    balances at that point. False if it does not exist (then)."""
    if as_of is not None or as_of_offset is not None:
        query = f"as_of={as_of}" if as_of is not None else f"as_of_offset={as_of_offset}"
        found = _get(f"{base_url}/accounts/{account_id}?{query}")
        if found is None:
            return False
        table = Table(title=f"account {account_id} as of {query.replace('=', ' ')}")
        table.show_header = False
        for name, value in found.items():
            table.add_row(name, str(value))
        console.print(table)
        return True
    account = _get(f"{base_url}/accounts/{account_id}")
    if account is None:
        return False
    summary = Table(title=f"account {account_id}", show_header=False)
    for name in (
        "ledger", "code", "asset_code", "asset_scale", "policy", "min_balance", "max_balance",
        "debits_pending", "debits_posted", "credits_pending", "credits_posted",
        "ledger_balance", "available_balance", "version", "frozen", "closed",
        "settle_threshold", "settle_to", "link_type", "metadata",
    ):  # fmt: skip
        summary.add_row(name, str(account.get(name)))
    console.print(summary)
    transfers = _get(f"{base_url}/accounts/{account_id}/transfers?limit={limit}&reversed=true")
    table = Table(title=f"latest {limit} transfers")
    for column in ("id", "debit", "credit", "amount", "flags", "timestamp"):
        table.add_column(column)
    for t in transfers or []:
        table.add_row(
            t["id"], t["debit_account_id"], t["credit_account_id"], t["amount"],
            ",".join(t.get("flag_names") or []) or "-", t["timestamp"],
        )  # fmt: skip
    console.print(table)
    versions = _get(f"{base_url}/accounts/{account_id}/versions") or []
    history = Table(title="versions")
    for column in ("version", "frozen", "closed", "policy", "min_balance", "max_balance"):
        history.add_column(column)
    for v in versions:
        history.add_row(
            str(v["version"]), str(v["frozen"]), str(v["closed"]), str(v.get("policy")),
            str(v.get("min_balance")), str(v.get("max_balance")),
        )  # fmt: skip
    console.print(history)
    return True
