"""`ledger audit` against the real broker: clean after a real pipeline run, and each injected
violation (crafted event batches, encoded with the project's codec, in a fresh topic prefix)
makes it exit non-zero naming the culprit and its log position."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from processors.setup import ensure_topics
from projections.audit import audit_log, read_event_logs
from schemas import (
    Account,
    AccountChanged,
    Event,
    Policy,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFlags,
    TransferKind,
    UpdateSettings,
)
from schemas.codec import encode_command_batch, encode_event_batch
from schemas.messages import CommandBatch, EventBatch, Operation
from schemas.topics import Topics
from tests.pipeline.harness import (
    PARTITIONS,
    Pipeline,
    pipeline_env,
    run_submitters,
    setup_accounts,
)
from tests.pipeline.test_pipeline import pipeline  # noqa: F401 (the fixture)
from tests.projections.test_audit_checks import balances_after, history, split, transfer_event

pytestmark = pytest.mark.kafka


def run_audit(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processors.cli", "audit", *extra],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_real_pipeline_run_audits_clean(pipeline: Pipeline) -> None:  # noqa: F811
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=2, requests=30, seed=7)
    report = audit_log(pipeline.bootstrap, pipeline.topics, PARTITIONS)
    assert report.ok, "\n".join(map(str, report.violations))
    assert report.commands == len(submitted) + 2  # the accounts and the funding requests
    assert report.results == report.commands
    assert report.events > 0 and report.log_events >= report.events
    assert report.accounts == 41
    done = run_audit(pipeline.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean" in done.stdout


def test_settlements_and_account_changes_audit_clean(pipeline: Pipeline) -> None:  # noqa: F811
    """Settlement requests (the settlement account on its own partition), settings changes,
    freezes and a closing pending transfer voided: the audit justifies every one."""
    pipeline.processor("a")
    with pipeline.client() as client:
        created = client.create_accounts(
            [
                Account(1, ledger=1, code=1, policy=Policy.EXTERNAL),
                *(Account(a, ledger=1, code=1, settle_threshold=100, settle_to=20)
                  for a in range(2, 8)),
                Account(8, ledger=1, code=1, max_balance=1_000),
            ]
        )  # fmt: skip
        assert {r.status.name for r in created} == {"CREATED"}
        transfer_id = 100
        for round_ in range(4):
            batch = []
            for account_id in range(2, 9):
                transfer_id += 1
                batch.append(Transfer(transfer_id, 1, account_id, 70, ledger=1, code=1))
            client.create_transfers(batch)
            client.update_settings(8, UpdateSettings(max_balance=1_000 + round_))
        client.freeze(8)
        client.unfreeze(8)
        closing = int(TransferFlags.PENDING | TransferFlags.CLOSING_DEBIT)
        client.create_transfers([Transfer(900, 8, 1, 1, ledger=1, code=1, flags=closing)])
        void = int(TransferFlags.VOID_PENDING_TRANSFER)
        client.create_transfers([Transfer(901, pending_id=900, flags=void)])
        # A settlement engine pays one (post) and fails another (void); more credits follow.
        requested = settlements_of(pipeline)
        by_account = {s.account_id: s for s in requested}
        post, void_ = int(TransferFlags.POST_PENDING_TRANSFER), void
        client.create_transfers(
            [
                Transfer(950, pending_id=by_account[2].transfer_id, flags=post),
                Transfer(951, pending_id=by_account[3].transfer_id, flags=void_),
            ]
        )
        client.create_transfers([Transfer(960 + a, 1, a, 90, ledger=1, code=1) for a in (2, 3)])
    report = audit_log(pipeline.bootstrap, pipeline.topics, PARTITIONS)
    assert report.ok, "\n".join(map(str, report.violations))
    again = [s for s in settlements_of(pipeline) if s not in requested]
    assert {s.account_id for s in again} == {2, 3}  # no longer in flight: requested anew
    assert report.results == report.commands


def settlements_of(run: Pipeline) -> list[SettlementRequested]:
    return [
        e
        for _position, events in read_event_logs(run.bootstrap, run.topics, PARTITIONS)
        for e in events
        if type(e) is SettlementRequested
    ]


# Injected violations: (tamper with the reference history, or add messages) -> what the audit
# must name: (kind, subject, the event's index in the tampered log).


def unbalanced(log: list[Event]) -> tuple[str, str, Event]:
    event = transfer_event(log, 14)
    assert event.credit is not None
    event.credit.credits_posted += 5
    return "unbalanced_ledger", "transfer 14", event


def limit_breach(log: list[Event]) -> tuple[str, str, Event]:
    # Account 3 (max_balance 1,000 by then) credited 2,000 at the very end, consistently.
    last = log[-1].timestamp + 1
    debit, credit = balances_after(log, 1), balances_after(log, 3)
    debit.debits_posted += 2_000
    credit.credits_posted += 2_000
    breach = TransferApplied(
        TransferKind.SINGLE_PHASE, Transfer(90, 1, 3, 2_000, ledger=1, code=1, timestamp=last),
        0, debit, credit, last,
    )  # fmt: skip
    log.append(breach)
    return "limit_exceeded", "account 3", breach


def version_gap(log: list[Event]) -> tuple[str, str, Event]:
    event = next(e for e in log if type(e) is AccountChanged)
    event.account.version = 5
    return "version_gap", f"account {event.account.id}", event


def resolved_twice(log: list[Event]) -> tuple[str, str, Event]:
    post = transfer_event(log, 15)
    again = TransferApplied(
        TransferKind.POST,
        Transfer(98, 2, 3, 0, pending_id=11, ledger=1, code=1, timestamp=post.timestamp + 1),
        0, post.debit, post.credit, post.timestamp + 1,
    )  # fmt: skip
    log.insert(log.index(post) + 1, again)
    return "pending_resolved_twice", "transfer 11", again


def unjustified_settlement(log: list[Event]) -> tuple[str, str, Event]:
    settlement = next(e for e in log if type(e) is SettlementRequested)
    settlement.balance -= 1
    return "unjustified_settlement", "account 4", settlement


TAMPERINGS: dict[str, Callable[[list[Event]], tuple[str, str, Event]]] = {
    "unbalanced": unbalanced,
    "limit_breach": limit_breach,
    "version_gap": version_gap,
    "resolved_twice": resolved_twice,
    "unjustified_settlement": unjustified_settlement,
}
CRAFTED_PARTITIONS = 3


def produce_log(bootstrap: str, topics: Topics, log: list[Event]) -> dict[int, str]:
    """The log as processors would write it (each event to each owner); returns where each
    event's first copy lands, by id(event)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    where: dict[int, str] = {}
    for position, events in split(log, CRAFTED_PARTITIONS):
        value = encode_event_batch(EventBatch(position.partition, events))
        producer.produce(topics.events, value, partition=position.partition)
        where.setdefault(id(events[0]), f"{topics.events}[{position.partition}]@{position.offset}")
    assert producer.flush(30) == 0
    return where


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_an_injected_violation_fails_the_audit_naming_it(
    tampering: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, CRAFTED_PARTITIONS)
    log = history().log
    kind, subject, culprit = TAMPERINGS[tampering](log)
    where = produce_log(kafka_bootstrap, topics, log)
    report = audit_log(kafka_bootstrap, topics, CRAFTED_PARTITIONS)
    found = [v for v in report.violations if v.kind == kind]
    assert found, report.violations
    assert (found[0].subject, str(found[0].position)) == (subject, where[id(culprit)])
    env = pipeline_env(kafka_bootstrap, topic_prefix, CRAFTED_PARTITIONS, tmp_path)
    done = run_audit(env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{kind}: {subject} at {where[id(culprit)]}" in done.stdout, done.stdout


def test_a_request_without_a_result_fails_the_audit(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, CRAFTED_PARTITIONS)
    produce_log(kafka_bootstrap, topics, history().log)  # clean events
    request = CommandBatch(0xABC, "auditor-test", Operation.CREATE_TRANSFERS, [], [])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    producer.produce(
        topics.commands, encode_command_batch(request), partition=1,
        headers=[("submitter", b"auditor-test"), ("request-id", str(0xABC).encode())],
    )  # fmt: skip
    assert producer.flush(30) == 0
    env = pipeline_env(kafka_bootstrap, topic_prefix, CRAFTED_PARTITIONS, tmp_path)
    done = run_audit(env, "--settle-timeout", "1")  # read again for a second: still missing
    assert done.returncode == 1, done.stdout + done.stderr
    expected = f"missing_result: request auditor-test/{0xABC:032x} at {topics.commands}[1]@0"
    assert expected in done.stdout, done.stdout
    assert '"commands": 1' in done.stdout.splitlines()[-1]
