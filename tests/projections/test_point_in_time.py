"""Balances as of a log position (SPEC §6), through real HTTP on the real pipeline: for every
message of an account's events partition, `GET /accounts/{id}?as_of_offset=<offset>` equals the
partition's log folded (by its owner, as a processor does) up to that offset; and the CLI shows
the same."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from processors.ledger import MemoryState, PartitionOwnership, apply_event
from processors.setup import read_committed
from schemas.codec import decode_event_batch
from schemas.partitioning import partition_of
from tests.pipeline import workload
from tests.pipeline.harness import pipeline_env
from tests.projections.test_worker import (  # noqa: F401 (the fixture)
    PARTITIONS,
    Ledger,
    ledger,
    run_workload,
)

pytestmark = pytest.mark.kafka


def test_balances_as_of_each_log_position(ledger: Ledger) -> None:  # noqa: F811
    run_workload(ledger, requests=25, seed=31)
    node = ledger.node("w1")
    accounts = [workload.ACCOUNTS[0], workload.ACCOUNTS[5], workload.SOURCE]

    async def get(session: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
        async with session.get(f"{node.url}{path}") as response:
            assert response.status == status, await response.text()
            return await response.json()

    async def check() -> int:
        checked = 0
        async with aiohttp.ClientSession() as session:
            for account_id in accounts:
                partition = partition_of(account_id, PARTITIONS)
                owner = PartitionOwnership(partition, PARTITIONS)
                state = MemoryState()
                messages = read_committed(ledger.bootstrap, ledger.topics.events, partition, 0)
                for message in messages:
                    for event in decode_event_batch(message.value() or b"").events:
                        apply_event(state, event, owner)
                    offset = message.offset()
                    path = f"/accounts/{account_id}?as_of_offset={offset}"
                    expected = state.get_account(account_id)
                    if expected is None:
                        error = await get(session, path, status=404)
                        assert error["field"] == "as_of_offset"
                        continue
                    found = await get(session, path)
                    assert (found["partition"], found["as_of_offset"]) == (partition, str(offset))
                    assert [
                        int(found[name])
                        for name in (
                            "debits_pending", "debits_posted", "credits_pending", "credits_posted"
                        )
                    ] == [
                        expected.debits_pending, expected.debits_posted,
                        expected.credits_pending, expected.credits_posted,
                    ], (account_id, offset)  # fmt: skip
                    checked += 1
            # Bad input names the field; both ways of asking at once are refused.
            error = await get(session, f"/accounts/{accounts[0]}?as_of_offset=-1", status=400)
            assert error["field"] == "as_of_offset"
            error = await get(session, f"/accounts/{accounts[0]}?as_of=1&as_of_offset=1", 400)
            assert error["field"] == "as_of_offset"
        return checked

    assert ledger.runner.run(asyncio.wait_for(check(), 120)) > 10

    # The CLI, over the same HTTP API (the worker serves on the test's loop meanwhile).
    account_id = workload.ACCOUNTS[0]
    env = pipeline_env(ledger.bootstrap, ledger.topics.prefix, PARTITIONS, ledger.directory)
    shown = ledger.runner.run(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "processors.cli", "show", str(account_id),
             "--as-of-offset", "1000000", "--url", node.url],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "as_of_offset" in shown.stdout and "1000000" in shown.stdout
    missing = ledger.runner.run(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "processors.cli", "show", "987654321",
             "--as-of-offset", "0", "--url", node.url],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    )  # fmt: skip
    assert missing.returncode == 1
    assert "does not exist at offset 0" in missing.stderr
    refused = ledger.runner.run(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "processors.cli", "show", str(account_id),
             "--as-of-offset=-5", "--url", node.url],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    )  # fmt: skip
    assert refused.returncode == 1
    assert "answered 400" in refused.stderr and "as_of_offset" in refused.stderr
