"""What must hold after every fault run (docs/FAULTS.md, "Checks")."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processors.ledger import MemoryState
from projections.audit import audit_log
from schemas.codec import decode_result_batch
from schemas.topics import Topics
from tests.pipeline.harness import (
    SETUP_REQUESTS,
    Pipeline,
    Submitted,
    assert_matches_reference,
    read_partition,
    results_per_request,
)

HTTP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Verdict:
    check: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.check}: {self.detail}"


def verdict(check: str, run: Callable[[], str]) -> Verdict:
    """Runs one check; a failed assertion is a FAIL verdict (the others still run)."""
    try:
        return Verdict(check, True, run())
    except Exception as failure:  # an assertion, or the check could not even get an answer
        return Verdict(check, False, f"{type(failure).__name__}: {failure}"[:3000])


# ------------------------------------------------------------------------------------------
# The audit


def assert_audit_clean(bootstrap: str, topics: Topics, partitions: int) -> str:
    """The audit (`ledger audit`'s checks, projections.audit) over the whole log."""
    report = audit_log(bootstrap, topics, partitions)
    assert report.ok, f"audit violations: {report.violations[:20]}"
    return (
        f"audit clean: {report.events} events, {report.commands} commands, "
        f"{report.results} results, {report.accounts} accounts, {report.transfers} transfers"
    )


# ------------------------------------------------------------------------------------------
# Results, reference, projections


def assert_one_result_per_request(pipeline: Pipeline, submitted: list[Submitted]) -> str:
    """The results topic (read_committed) holds exactly one result for every request."""
    seen = results_per_request(pipeline)
    repeated = {request: count for request, count in seen.items() if count != 1}
    assert not repeated, f"requests with more than one result: {list(repeated.items())[:5]}"
    expected = len(submitted) + SETUP_REQUESTS
    assert len(seen) == expected, f"{len(seen)} requests have a result, {expected} were sent"
    return f"{len(seen)} requests, {sum(seen.values())} results"


def assert_reference(pipeline: Pipeline, submitted: list[Submitted]) -> str:
    replayed = assert_matches_reference(pipeline, submitted)
    return f"{len(submitted)} requests as the reference ledger, {len(replayed.accounts)} accounts"


def assert_projections_match(url: str, replayed: MemoryState) -> str:
    """A projection worker's HTTP API (which waits until it has folded everything written
    before the read) answers the balances the event log replays to."""
    ids = sorted(replayed.accounts)
    body = json.dumps({"ids": [str(account_id) for account_id in ids]}).encode()
    request = urllib.request.Request(
        f"{url}/accounts/lookup", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            answered = {int(account["id"]): account for account in json.load(response)}
    except urllib.error.HTTPError as refused:
        raise AssertionError(f"{url}: HTTP {refused.code}: {refused.read()!r}") from refused
    assert sorted(answered) == ids, f"the API knows {len(answered)} of {len(ids)} accounts"
    fields = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    for account_id, account in replayed.accounts.items():
        shown = tuple(int(answered[account_id][name]) for name in fields)
        expected = tuple(getattr(account, name) for name in fields)
        assert shown == expected, f"account {account_id}: API {shown}, log {expected}"
    return f"{len(ids)} accounts equal through {url}"


def aborted_results(bootstrap: str, topics: Topics, partitions: int) -> Counter[int]:
    """Results that reached the log but never committed, per request id: the results topic
    read uncommitted, less what read_committed shows. A fenced zombie's writes end up here."""
    everything: Counter[int] = Counter()
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ledger-faults-reader",  # assign() only: nothing is committed
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "enable.partition.eof": True,
        }
    )
    try:
        for partition in range(partitions):
            reader.assign([TopicPartition(topics.results, partition, 0)])
            done = False
            while not done:
                for message in reader.consume(10_000, 0.05):
                    error = message.error()
                    if error is None:
                        everything[decode_result_batch(message.value() or b"").request_id] += 1
                    elif error.code() == KafkaError._PARTITION_EOF:
                        done = True
                    else:
                        raise KafkaException(error)
    finally:
        reader.close()
    committed: Counter[int] = Counter()
    for partition in range(partitions):
        for value in read_partition(bootstrap, topics.results, partition):
            committed[decode_result_batch(value).request_id] += 1
    return everything - committed
