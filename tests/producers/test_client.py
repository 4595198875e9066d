"""LedgerClient against a real broker: what it puts on `commands`, and how it correlates the
results a (fake, transactional) processor writes to `results`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import pytest

from producers import (
    AccountCommandResult,
    ClientClosed,
    CreateResult,
    DeliveryFailed,
    LedgerClient,
    LedgerUnavailable,
    OutcomeUnknown,
    RequestHandle,
    RequestRejected,
)
from schemas.codec import decode_command_batch
from schemas.codes import (
    BATCH_EVENTS_MAX,
    AccountCommandStatus,
    CreateAccountStatus,
    CreateTransferStatus,
)
from schemas.messages import AccountCommand, AccountCommandKind, CommandBatch, Operation
from schemas.records import Account, Transfer, UpdateSettings
from schemas.topics import home_key, home_partition, results_partition
from tests.kafka.helpers import read_topic
from tests.producers.conftest import Ledger
from tests.producers.fake_processor import (
    FakeProcessor,
    Reply,
    Responder,
    answer_created,
    reply,
    result_for,
)

pytestmark = pytest.mark.kafka

StartProcessor = Callable[[Responder], FakeProcessor]


def client_for(ledger: Ledger, *, timeout_s: float = 20.0, **kwargs: str) -> LedgerClient:
    return LedgerClient(ledger.bootstrap, ledger.topics.prefix, timeout_s=timeout_s, **kwargs)


def accounts(*ids: int) -> list[Account]:
    return [Account(i, ledger=1, code=1) for i in ids]


def transfers(*ids: int) -> list[Transfer]:
    return [Transfer(i, debit_account_id=i + 1, credit_account_id=i + 2, amount=5, ledger=1,
                     code=1) for i in ids]  # fmt: skip


def other_submitter_on(partition: int, partitions: int, mine: str) -> str:
    """Another submitter id that shares `partition` of the results topic."""
    for i in range(100_000):
        candidate = f"other-{i}"
        if candidate != mine and results_partition(candidate, partitions) == partition:
            return candidate
    raise AssertionError("no submitter found")


# -- the request on the wire -------------------------------------------------------------------


def test_requests_land_on_their_home_partition_with_key_and_decode_back(ledger: Ledger) -> None:
    rng = random.Random(7)
    batches = [
        CommandBatch(0, "", Operation.CREATE_ACCOUNTS, accounts=accounts(rng.getrandbits(128)))
        for _ in range(12)
    ]
    batches.append(CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=transfers(1, 5, 9)))
    command = AccountCommand(AccountCommandKind.UPDATE_SETTINGS, 77, 3, UpdateSettings(settle_to=5))
    batches.append(CommandBatch(0, "", Operation.ACCOUNT_COMMAND, account_command=command))
    before = time.time_ns()

    client = client_for(ledger, timeout_s=30)
    try:
        handles = [client.submit(b) for b in batches]
    finally:
        client.close()  # flushes: every request is on the broker

    records = read_topic(
        ledger.bootstrap, ledger.topics.commands, partitions=ledger.command_partitions
    )
    assert len(records) == len(batches)
    by_request = {decode_command_batch(r.value or b"").request_id: r for r in records}
    assert len({home_partition(b, ledger.command_partitions) for b in batches}) > 1
    for original, handle in zip(batches, handles, strict=True):
        sent = handle.batch
        assert sent.request_id != 0 and sent.submitter == client.submitter
        assert before <= sent.submitted_at_ns <= time.time_ns()
        assert original.request_id == 0 and original.submitter == ""  # caller's batch untouched
        record = by_request[sent.request_id]
        assert decode_command_batch(record.value or b"") == sent
        assert record.partition == handle.partition == home_partition(sent, 4)
        assert record.key == home_key(sent).to_bytes(16, "big")
        assert record.offset == handle.offset
        # Closing without results: every waiting request reports an unknown outcome.
        with pytest.raises(OutcomeUnknown, match="closed"):
            handle.result(timeout=1)


def test_default_submitters_are_unique_and_choose_the_results_partition(ledger: Ledger) -> None:
    with client_for(ledger) as a, client_for(ledger) as b:
        assert a.submitter != b.submitter
        assert a._core.results_partition == results_partition(a.submitter, 3)
        assert a._core.command_partitions == 4 and a._core.result_partitions == 3


def test_missing_topics_name_the_topic(kafka_bootstrap: str) -> None:
    with pytest.raises(LedgerUnavailable, match=r"topic no-such-ledger\.commands does not exist; "
                       r"is the ledger up\?"):  # fmt: skip
        LedgerClient(kafka_bootstrap, "no-such-ledger.")


# -- no processor: timeouts and delivery failures ------------------------------------------------


def test_no_result_within_timeout_raises_outcome_unknown_naming_the_events(
    ledger: Ledger,
) -> None:
    ids = [101, 102, 103]
    with client_for(ledger, timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown) as raised:
            client.create_transfers(transfers(*ids))
        elapsed = time.monotonic() - started
        assert client.in_flight == 0
    assert 1.0 <= elapsed < 3.0
    exc = raised.value
    (record,) = read_topic(ledger.bootstrap, ledger.topics.commands, partitions=4)
    assert exc.request_id == decode_command_batch(record.value or b"").request_id
    assert exc.event_ids == tuple(ids)
    assert exc.operation is Operation.CREATE_TRANSFERS
    message = str(exc)
    assert f"{exc.request_id:032x}" in message
    assert "101, 102, 103" in message
    assert "resubmitting the same events is safe" in message and "exists" in message


def test_account_command_timeout_explains_retry_needs_expected_version(ledger: Ledger) -> None:
    with client_for(ledger, timeout_s=0.5) as client, pytest.raises(OutcomeUnknown) as raised:
        client.freeze(55)
    assert raised.value.event_ids == (55,)
    assert "expected_version" in str(raised.value)


def test_delivery_failure_reaches_the_caller(
    kafka_bootstrap: str, create_topic: Callable[..., str], topic_prefix: str
) -> None:
    # A commands topic that refuses anything above 1 kB: the broker rejects the request.
    create_topic("commands", partitions=2, config={"max.message.bytes": "1000"})
    create_topic("results", partitions=1)
    with LedgerClient(kafka_bootstrap, topic_prefix, timeout_s=20) as client:
        with pytest.raises(DeliveryFailed) as raised:
            client.create_accounts(accounts(*range(1, 101)))
        assert isinstance(raised.value, OutcomeUnknown)
        assert raised.value.event_ids == tuple(range(1, 101))
        assert "delivery" in str(raised.value)


# -- local refusals --------------------------------------------------------------------------


def test_batch_size_limit_is_enforced_locally(ledger: Ledger) -> None:
    with client_for(ledger) as client:
        with pytest.raises(ValueError, match=f"at most {BATCH_EVENTS_MAX} events.*has 8190"):
            client.create_accounts(accounts(*range(1, BATCH_EVENTS_MAX + 2)))
        with pytest.raises(ValueError, match="8190"):
            client.create_transfers(transfers(*range(1, BATCH_EVENTS_MAX + 2)))
        with pytest.raises(ValueError, match="another client"):
            client.submit(CommandBatch(0, "someone-else", Operation.CREATE_ACCOUNTS))
        assert client.create_accounts([]) == []
        assert client.in_flight == 0
    with pytest.raises(ClientClosed):
        client.create_accounts(accounts(1))
    # Nothing was sent.
    assert read_topic(ledger.bootstrap, ledger.topics.commands, partitions=4) == []


# -- results from a (fake) processor ---------------------------------------------------------------


def test_one_result_per_event_in_order(ledger: Ledger, start_processor: StartProcessor) -> None:
    account_statuses = [
        CreateAccountStatus.CREATED,
        CreateAccountStatus.EXISTS,
        CreateAccountStatus.LEDGER_MUST_NOT_BE_ZERO,
    ]
    transfer_statuses = [CreateTransferStatus.EXCEEDS_CREDITS, CreateTransferStatus.CREATED]

    def respond(batch: CommandBatch) -> list[Reply]:
        if batch.operation is Operation.CREATE_ACCOUNTS:
            return [reply(result_for(batch, [int(s) for s in account_statuses]))]
        if batch.operation is Operation.CREATE_TRANSFERS:
            return [reply(result_for(batch, [int(s) for s in transfer_statuses]))]
        assert batch.account_command is not None
        status = (
            AccountCommandStatus.ACCOUNT_NOT_FOUND
            if batch.account_command.account_id == 404
            else AccountCommandStatus.OK
        )
        return [reply(result_for(batch, [int(status)], version=batch.account_command.kind + 10))]

    processor = start_processor(respond)
    with client_for(ledger) as client:
        assert client.create_accounts(accounts(1, 2, 3)) == [
            CreateResult(i, s, 1_000_000 + i) for i, s in enumerate(account_statuses)
        ]
        results = client.create_transfers(transfers(10, 11))
        assert results == [
            CreateResult(i, s, 1_000_000 + i) for i, s in enumerate(transfer_statuses)
        ]
        assert [r.ok for r in results] == [False, True]
        assert client.freeze(1) == AccountCommandResult(AccountCommandStatus.OK, 11)
        assert client.unfreeze(1, expected_version=2) == AccountCommandResult(
            AccountCommandStatus.OK, 12
        )
        assert client.close_account(404) == AccountCommandResult(
            AccountCommandStatus.ACCOUNT_NOT_FOUND, 13
        )
        settings = UpdateSettings(min_balance=-5, metadata={"k": "v"})
        assert client.update_settings(1, settings, expected_version=4).ok
    commands = [b.account_command for b in processor.received if b.account_command is not None]
    assert [(c.kind, c.account_id, c.expected_version) for c in commands] == [
        (AccountCommandKind.FREEZE, 1, 0),
        (AccountCommandKind.UNFREEZE, 1, 2),
        (AccountCommandKind.CLOSE, 404, 0),
        (AccountCommandKind.UPDATE_SETTINGS, 1, 4),
    ]
    assert commands[-1].settings == settings


def test_ignores_other_submitters_aborted_results_and_garbage(
    ledger: Ledger, start_processor: StartProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(ledger)
    mine = client.submitter
    other = other_submitter_on(client._core.results_partition, ledger.result_partitions, mine)
    wrong = [int(CreateAccountStatus.EXISTS_WITH_DIFFERENT_CODE)] * 2

    def respond(batch: CommandBatch) -> list[Reply]:
        return [
            # Same request id, another submitter on the same partition: not ours.
            reply(result_for(batch, wrong, submitter=other), route_as=other),
            # Ours, but its transaction aborts: read_committed never shows it.
            reply(result_for(batch, wrong, timestamp_base=5), abort=True),
            Reply(b"\x00 definitely not avro", route_as=mine),
            reply(result_for(batch)),
        ]

    start_processor(respond)
    with caplog.at_level(logging.WARNING, logger="producers"), client:
        assert client.create_accounts(accounts(1, 2)) == [
            CreateResult(0, CreateAccountStatus.CREATED, 1_000_000),
            CreateResult(1, CreateAccountStatus.CREATED, 1_000_001),
        ]
        # The client survives the garbage and keeps answering.
        assert len(client.create_accounts(accounts(3, 4))) == 2
    assert any("undecodable" in r.getMessage() for r in caplog.records)
    # The aborted and foreign messages really were on our partition.
    raw = read_topic(
        ledger.bootstrap, ledger.topics.results, partitions=3, isolation="read_uncommitted"
    )
    assert sum(r.partition == client._core.results_partition for r in raw) >= 8


def test_rejected_request_raises_request_rejected(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    def respond(batch: CommandBatch) -> list[Reply]:
        result = result_for(batch, [])
        result.rejection = "transfers: too many events"
        return [reply(result)]

    start_processor(respond)
    with client_for(ledger) as client, pytest.raises(RequestRejected) as raised:
        client.create_transfers(transfers(1))
    assert raised.value.reason == "transfers: too many events"
    assert "too many events" in str(raised.value)


def test_200_concurrent_submits_resolve_to_their_own_results(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    statuses = [
        CreateTransferStatus.CREATED,
        CreateTransferStatus.EXISTS,
        CreateTransferStatus.EXCEEDS_CREDITS,
    ]

    def status_of(transfer_id: int) -> CreateTransferStatus:
        return statuses[transfer_id % 3]

    def respond(batch: CommandBatch) -> list[Reply]:
        codes = [int(status_of(t.id)) for t in batch.transfers]
        return [reply(result_for(batch, codes, timestamp_base=batch.transfers[0].id))]

    start_processor(respond)
    rng = random.Random(3)
    with client_for(ledger) as client:
        requests = [transfers(*(rng.getrandbits(64) for _ in range(rng.randint(1, 3))))
                    for _ in range(200)]  # fmt: skip
        handles: list[RequestHandle] = [
            client.submit(CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=ts))
            for ts in requests
        ]
        for ts, handle in zip(requests, handles, strict=True):
            result = handle.result(timeout=30)
            assert result.request_id == handle.request_id
            assert [e.status for e in result.results] == [int(status_of(t.id)) for t in ts]
            assert [e.timestamp for e in result.results] == [ts[0].id + i for i in range(len(ts))]
            assert handle.latency_s is not None and handle.latency_s > 0
        assert client.in_flight == 0


def test_a_full_batch_of_8189_transfers_round_trips(
    ledger: Ledger, start_processor: StartProcessor
) -> None:
    processor = start_processor(answer_created)
    rng = random.Random(5)
    big = [
        Transfer(rng.getrandbits(128), rng.getrandbits(128), rng.getrandbits(128),
                 rng.getrandbits(128), 0, rng.getrandbits(128), rng.getrandbits(64),
                 rng.getrandbits(32), 0, rng.getrandbits(32), rng.getrandbits(16))
        for _ in range(BATCH_EVENTS_MAX)
    ]  # fmt: skip
    with client_for(ledger) as client:
        results = client.create_transfers(big)
    assert len(results) == BATCH_EVENTS_MAX
    assert all(r.status is CreateTransferStatus.CREATED for r in results)
    assert processor.received[0].transfers == big
