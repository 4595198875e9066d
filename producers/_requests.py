"""What both front ends share above the transport: building requests and reading results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from producers._errors import ProtocolError
from schemas.codes import AccountCommandStatus, CreateAccountStatus, CreateTransferStatus
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    CommandBatch,
    Operation,
    ResultBatch,
)
from schemas.records import Account, Transfer, UpdateSettings

__all__ = [
    "AccountCommandResult",
    "CreateResult",
    "account_command_request",
    "account_command_result",
    "accounts_request",
    "create_results",
    "transfers_request",
]


@dataclass(frozen=True, slots=True)
class CreateResult:
    """The result of one event of create_accounts / create_transfers."""

    index: int  # the event's position in the request
    status: CreateAccountStatus | CreateTransferStatus
    timestamp: int  # the ledger's timestamp of the event (0 when it was not applied)
    # Where a cross-partition request was decided, and the partitions it changed: what a reader
    # waits for to see it (ResultBatch.sequence; -1: it is visible with its result already).
    sequence: int = -1
    participants: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status.name == "CREATED"


@dataclass(frozen=True, slots=True)
class AccountCommandResult:
    """The result of freeze / unfreeze / close_account / update_settings."""

    status: AccountCommandStatus
    version: int  # the account's version after the command
    sequence: int = -1  # as CreateResult.sequence
    participants: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is AccountCommandStatus.OK


# request_id 0 and an empty submitter: the core stamps both when it sends.
def accounts_request(accounts: Sequence[Account]) -> CommandBatch:
    return CommandBatch(0, "", Operation.CREATE_ACCOUNTS, accounts=list(accounts))


def transfers_request(transfers: Sequence[Transfer]) -> CommandBatch:
    return CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=list(transfers))


def account_command_request(
    kind: AccountCommandKind,
    account_id: int,
    expected_version: int = 0,
    settings: UpdateSettings | None = None,
) -> CommandBatch:
    command = AccountCommand(kind, account_id, expected_version, settings)
    return CommandBatch(0, "", Operation.ACCOUNT_COMMAND, account_command=command)


def _check_operation(sent: CommandBatch, result: ResultBatch) -> None:
    if result.operation is not sent.operation:
        raise ProtocolError(
            f"request {sent.request_id:032x} was {sent.operation.name} but its result is "
            f"{result.operation.name}"
        )


def create_results(sent: CommandBatch, result: ResultBatch) -> list[CreateResult]:
    """One CreateResult per event of `sent`, in order."""
    _check_operation(sent, result)
    status_type: type[CreateAccountStatus] | type[CreateTransferStatus]
    if sent.operation is Operation.CREATE_ACCOUNTS:
        expected, status_type = len(sent.accounts), CreateAccountStatus
    else:
        expected, status_type = len(sent.transfers), CreateTransferStatus
    if len(result.results) != expected:
        raise ProtocolError(
            f"request {sent.request_id:032x} had {expected} events but "
            f"{len(result.results)} results came back"
        )
    participants = tuple(result.participants)
    try:
        return [
            CreateResult(
                i, status_type(entry.status), entry.timestamp, result.sequence, participants
            )
            for i, entry in enumerate(result.results)
        ]
    except ValueError as exc:  # a status code this client does not know
        raise ProtocolError(f"request {sent.request_id:032x}: {exc}") from None


def account_command_result(sent: CommandBatch, result: ResultBatch) -> AccountCommandResult:
    _check_operation(sent, result)
    if len(result.results) != 1:
        raise ProtocolError(
            f"request {sent.request_id:032x} was one account command but "
            f"{len(result.results)} results came back"
        )
    entry = result.results[0]
    try:
        status = AccountCommandStatus(entry.status)
    except ValueError as exc:
        raise ProtocolError(f"request {sent.request_id:032x}: {exc}") from None
    return AccountCommandResult(status, entry.version, result.sequence, tuple(result.participants))
