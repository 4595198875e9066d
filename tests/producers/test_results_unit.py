"""Reading results and describing failures: the parts of the client that need no broker."""

from __future__ import annotations

import pytest

from producers import AccountCommandResult, CreateResult, OutcomeUnknown, ProtocolError
from producers._requests import (
    account_command_request,
    account_command_result,
    accounts_request,
    create_results,
    transfers_request,
)
from schemas.codes import AccountCommandStatus, CreateAccountStatus, CreateTransferStatus
from schemas.messages import AccountCommandKind, Operation, ResultBatch, ResultEntry
from schemas.records import Account, Transfer


def test_create_results_map_statuses_in_order() -> None:
    sent = accounts_request([Account(1), Account(2)])
    result = ResultBatch(
        0,
        "",
        Operation.CREATE_ACCOUNTS,
        [ResultEntry(int(CreateAccountStatus.CREATED), 10), ResultEntry(21, 0)],
    )
    assert create_results(sent, result) == [
        CreateResult(0, CreateAccountStatus.CREATED, 10),
        CreateResult(1, CreateAccountStatus.EXISTS, 0),
    ]


@pytest.mark.parametrize(
    ("operation", "entries", "problem"),
    [
        (Operation.CREATE_TRANSFERS, [ResultEntry(0xFFFFFFFF, 1)] * 2, "1 events but 2 results"),
        (Operation.CREATE_ACCOUNTS, [ResultEntry(0xFFFFFFFF, 1)], "CREATE_TRANSFERS but its"),
        (Operation.CREATE_TRANSFERS, [ResultEntry(9999, 1)], "9999"),
    ],
)
def test_results_outside_the_contract_raise_protocol_error(
    operation: Operation, entries: list[ResultEntry], problem: str
) -> None:
    sent = transfers_request([Transfer(1)])
    with pytest.raises(ProtocolError, match=problem):
        create_results(sent, ResultBatch(0, "", operation, entries))


def test_account_command_result() -> None:
    sent = account_command_request(AccountCommandKind.CLOSE, 5, 2)
    result = ResultBatch(0, "", Operation.ACCOUNT_COMMAND, [ResultEntry(6, 0, 2)])
    assert account_command_result(sent, result) == AccountCommandResult(
        AccountCommandStatus.ACCOUNT_NOT_EMPTY, 2
    )
    assert not account_command_result(sent, result).ok
    with pytest.raises(ProtocolError, match="0 results"):
        account_command_result(sent, ResultBatch(0, "", Operation.ACCOUNT_COMMAND, []))


def test_outcome_unknown_lists_a_few_ids_and_keeps_all() -> None:
    exc = OutcomeUnknown(0xAB, Operation.CREATE_TRANSFERS, range(1, 26), "no result")
    assert exc.event_ids == tuple(range(1, 26))
    text = str(exc)
    assert f"{0xAB:032x}" in text and "25 transfers" in text
    assert "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... and 15 more" in text
    assert "no result" in text and "safe" in text


def test_create_result_ok() -> None:
    assert CreateResult(0, CreateTransferStatus.CREATED, 1).ok
    assert not CreateResult(0, CreateTransferStatus.EXISTS, 1).ok
