"""The two front ends of the client: blocking (LedgerClient) and asyncio (AsyncLedgerClient).

Both delegate to one ClientCore; they differ only in how they wait for a RequestHandle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from types import TracebackType

from producers._core import WAIT_GRACE_S, ClientCore, RequestHandle, event_ids
from producers._errors import OutcomeUnknown
from producers._requests import (
    AccountCommandResult,
    CreateResult,
    account_command_request,
    account_command_result,
    accounts_request,
    create_results,
    transfers_request,
)
from schemas.messages import AccountCommandKind, CommandBatch, ResultBatch
from schemas.records import Account, Transfer, UpdateSettings

__all__ = ["AsyncLedgerClient", "LedgerClient"]


class _Base:
    def __init__(
        self,
        bootstrap: str | None = None,
        topic_prefix: str | None = None,
        *,
        timeout_s: float = 30.0,
        submitter: str | None = None,
    ) -> None:
        # Connects: reads topic metadata and the results partition's end (blocks briefly).
        self._core = ClientCore(bootstrap, topic_prefix, timeout_s=timeout_s, submitter=submitter)

    @property
    def submitter(self) -> str:
        return self._core.submitter

    @property
    def bootstrap(self) -> str:
        return self._core.bootstrap

    @property
    def timeout_s(self) -> float:
        return self._core.timeout_s

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet resolved."""
        return self._core.in_flight

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(bootstrap={self.bootstrap!r}, "
            f"topic_prefix={self._core.topics.prefix!r}, submitter={self.submitter!r})"
        )


class LedgerClient(_Base):
    """Blocking client: each call sends one request and waits for its results.

    Thread-safe; for many requests in flight from one thread, use `submit()`.
    Errors: ValueError (more than BATCH_EVENTS_MAX events, or values the schema cannot carry),
    RequestRejected, OutcomeUnknown (incl. DeliveryFailed), ProduceError, ProtocolError,
    ClientClosed; LedgerUnavailable from the constructor.
    """

    def submit(self, batch: CommandBatch, *, timeout_s: float | None = None) -> RequestHandle:
        """Send a raw request without waiting: a Future of its ResultBatch (see RequestHandle)."""
        return self._core.submit(batch, timeout_s=timeout_s)

    def _call(self, batch: CommandBatch) -> tuple[CommandBatch, ResultBatch]:
        handle = self._core.submit(batch)
        try:
            # The core fails the handle at its deadline; the grace only guards against a
            # wedged background thread.
            wait_s = max(0.0, handle.deadline - time.monotonic()) + WAIT_GRACE_S
            return handle.batch, handle.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            sent = handle.batch
            raise OutcomeUnknown(
                sent.request_id, sent.operation, event_ids(sent), "no result within the timeout"
            ) from None

    def create_accounts(self, accounts: Sequence[Account]) -> list[CreateResult]:
        if not accounts:
            return []
        return create_results(*self._call(accounts_request(accounts)))

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateResult]:
        if not transfers:
            return []
        return create_results(*self._call(transfers_request(transfers)))

    def _command(
        self,
        kind: AccountCommandKind,
        account_id: int,
        expected_version: int,
        settings: UpdateSettings | None = None,
    ) -> AccountCommandResult:
        request = account_command_request(kind, account_id, expected_version, settings)
        return account_command_result(*self._call(request))

    def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return self._command(AccountCommandKind.FREEZE, account_id, expected_version)

    def unfreeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return self._command(AccountCommandKind.UNFREEZE, account_id, expected_version)

    def close_account(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return self._command(AccountCommandKind.CLOSE, account_id, expected_version)

    def update_settings(
        self, account_id: int, settings: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult:
        return self._command(
            AccountCommandKind.UPDATE_SETTINGS, account_id, expected_version, settings
        )

    def close(self) -> None:
        """Flush what was sent and stop; requests still waiting fail with OutcomeUnknown."""
        self._core.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncLedgerClient(_Base):
    """The asyncio client: the same calls as LedgerClient, as coroutines.

    Construction connects synchronously (a metadata read); `close()` is a coroutine. Cancelling
    an await only stops waiting: a request already sent is still applied by the ledger.
    """

    def submit(
        self, batch: CommandBatch, *, timeout_s: float | None = None
    ) -> asyncio.Future[ResultBatch]:
        """Send a raw request now; the returned asyncio future resolves to its ResultBatch."""
        return asyncio.wrap_future(self._core.submit(batch, timeout_s=timeout_s))

    async def _call(self, batch: CommandBatch) -> tuple[CommandBatch, ResultBatch]:
        handle = self._core.submit(batch)
        # The core fails the handle at its deadline (OutcomeUnknown), so no asyncio timeout.
        return handle.batch, await asyncio.wrap_future(handle)

    async def create_accounts(self, accounts: Sequence[Account]) -> list[CreateResult]:
        if not accounts:
            return []
        return create_results(*await self._call(accounts_request(accounts)))

    async def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateResult]:
        if not transfers:
            return []
        return create_results(*await self._call(transfers_request(transfers)))

    async def _command(
        self,
        kind: AccountCommandKind,
        account_id: int,
        expected_version: int,
        settings: UpdateSettings | None = None,
    ) -> AccountCommandResult:
        request = account_command_request(kind, account_id, expected_version, settings)
        return account_command_result(*await self._call(request))

    async def freeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return await self._command(AccountCommandKind.FREEZE, account_id, expected_version)

    async def unfreeze(self, account_id: int, expected_version: int = 0) -> AccountCommandResult:
        return await self._command(AccountCommandKind.UNFREEZE, account_id, expected_version)

    async def close_account(
        self, account_id: int, expected_version: int = 0
    ) -> AccountCommandResult:
        return await self._command(AccountCommandKind.CLOSE, account_id, expected_version)

    async def update_settings(
        self, account_id: int, settings: UpdateSettings, expected_version: int = 0
    ) -> AccountCommandResult:
        return await self._command(
            AccountCommandKind.UPDATE_SETTINGS, account_id, expected_version, settings
        )

    async def close(self) -> None:
        # close() flushes the producer and joins threads: keep the event loop free meanwhile.
        await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
