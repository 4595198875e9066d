"""AsyncLedgerClient: the same contract as LedgerClient, awaited (same core underneath)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from producers import (
    AccountCommandResult,
    AsyncLedgerClient,
    CreateResult,
    OutcomeUnknown,
    RequestRejected,
)
from schemas.codes import (
    BATCH_EVENTS_MAX,
    AccountCommandStatus,
    CreateAccountStatus,
    CreateTransferStatus,
)
from schemas.messages import CommandBatch, Operation
from schemas.records import UpdateSettings
from tests.producers.conftest import Ledger
from tests.producers.fake_processor import (
    FakeProcessor,
    Reply,
    Responder,
    answer_created,
    reply,
    result_for,
)
from tests.producers.test_client import accounts, other_submitter_on, transfers

pytestmark = pytest.mark.kafka

StartProcessor = Callable[[Responder], FakeProcessor]


def async_client_for(ledger: Ledger, *, timeout_s: float = 20.0) -> AsyncLedgerClient:
    return AsyncLedgerClient(ledger.bootstrap, ledger.topics.prefix, timeout_s=timeout_s)


def test_async_create_and_lifecycle(ledger: Ledger, start_processor: StartProcessor) -> None:
    start_processor(answer_created)

    async def main() -> None:
        async with async_client_for(ledger) as client:
            assert await client.create_accounts(accounts(1, 2)) == [
                CreateResult(0, CreateAccountStatus.CREATED, 1_000_000),
                CreateResult(1, CreateAccountStatus.CREATED, 1_000_001),
            ]
            assert await client.create_transfers(transfers(5)) == [
                CreateResult(0, CreateTransferStatus.CREATED, 1_000_000)
            ]
            ok = AccountCommandResult(AccountCommandStatus.OK, 7)
            assert await client.freeze(1) == ok
            assert await client.unfreeze(1, 3) == ok
            assert await client.close_account(2) == ok
            assert await client.update_settings(1, UpdateSettings(settle_to=1)) == ok
            assert await client.create_accounts([]) == []

    asyncio.run(main())


def test_async_200_concurrent_requests_and_other_submitter_ignored(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    async def main() -> None:
        async with async_client_for(ledger) as client:
            other = other_submitter_on(
                client._core.results_partition, ledger.result_partitions, client.submitter
            )

            def respond(batch: CommandBatch) -> list[Reply]:
                ids = [t.id for t in batch.transfers]
                codes = [int(CreateTransferStatus.EXISTS)] * len(ids)
                return [
                    reply(result_for(batch, codes, submitter=other), route_as=other),
                    reply(result_for(batch, codes), abort=True),
                    reply(result_for(batch, timestamp_base=ids[0])),
                ]

            start_processor(respond)
            rng = random.Random(11)
            requests = [transfers(*(rng.getrandbits(64) for _ in range(rng.randint(1, 4))))
                        for _ in range(200)]  # fmt: skip
            answers = await asyncio.gather(*(client.create_transfers(ts) for ts in requests))
            for ts, results in zip(requests, answers, strict=True):
                assert results == [
                    CreateResult(i, CreateTransferStatus.CREATED, ts[0].id + i)
                    for i in range(len(ts))
                ]
            # The raw submit() is an awaitable of the ResultBatch.
            raw = await client.submit(
                CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=transfers(9))
            )
            assert raw.submitter == client.submitter and len(raw.results) == 1
            assert client.in_flight == 0

    asyncio.run(main())


def test_async_rejection_timeout_and_size_limit(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    def respond(batch: CommandBatch) -> list[Reply]:
        if batch.transfers[0].id == 1:  # refused whole
            result = result_for(batch, [])
            result.rejection = "transfers[0].amount: out of range"
            return [reply(result)]
        return []  # never answered: the outcome stays unknown

    start_processor(respond)

    async def main() -> None:
        async with async_client_for(ledger) as client:
            with pytest.raises(RequestRejected, match="out of range"):
                await client.create_transfers(transfers(1))
        # A short timeout only where no answer comes: a cold broker may take over a second.
        async with async_client_for(ledger, timeout_s=1.0) as client:
            started = time.monotonic()
            with pytest.raises(OutcomeUnknown) as raised:
                await client.create_transfers(transfers(2, 3))
            assert time.monotonic() - started >= 1.0
            assert raised.value.event_ids == (2, 3)
            with pytest.raises(ValueError, match=str(BATCH_EVENTS_MAX + 1)):
                await client.create_accounts(accounts(*range(1, BATCH_EVENTS_MAX + 2)))

    asyncio.run(main())


def test_async_cancelled_wait_does_not_break_the_client(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    start_processor(answer_created)

    async def main() -> None:
        async with async_client_for(ledger) as client:
            task = asyncio.ensure_future(client.create_accounts(accounts(1)))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Its result still arrives (and is dropped); later requests are unaffected.
            assert len(await client.create_accounts(accounts(2, 3))) == 2

    asyncio.run(main())
