"""The ledger on Kafka, end to end: real broker, real processor processes, real RocksDB.

Every test compares with the core's reference ledger: the same requests applied one after
another in the order the pipeline serialized them (their decision timestamps) must give the
same results, and the event log replayed must give the same balances.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.harness import (
    Pipeline,
    assert_matches_reference,
    results_per_request,
    run_submitters,
    setup_accounts,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def pipeline(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Pipeline]:
    built = Pipeline.open(kafka_bootstrap, topic_prefix, tmp_path)
    yield built
    built.stop()


def test_one_submitter_matches_the_reference(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=1, requests=60, seed=1)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_concurrent_submitters_match_the_reference(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=4, requests=40, seed=2)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_steps_bounded_to_one_request_match_the_reference(pipeline: Pipeline) -> None:
    """With a one-byte step budget every transaction takes one request and hands the rest of
    what it fetched back to the next step: nothing is lost, skipped or taken twice."""
    pipeline.processor("a", "--step-bytes-max", "1")
    with pipeline.client() as client:
        setup_accounts(client)
    submitted = run_submitters(pipeline, submitters=3, requests=25, seed=5)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_processor_killed_mid_run_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    processor = pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)

    def kill_and_restart(n: int) -> None:
        if n in (10, 25):
            processor.kill()
            time.sleep(0.5)
            processor.start()

    submitted = run_submitters(pipeline, submitters=3, requests=40, seed=3, during=kill_and_restart)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}


def test_two_instances_with_a_rebalance_mid_run(pipeline: Pipeline) -> None:
    pipeline.processor("a")
    with pipeline.client() as client:
        setup_accounts(client)

    def rebalance(n: int) -> None:
        if n == 8:
            pipeline.processor("b")  # takes over half of the partitions
        if n == 25:
            pipeline.processes[0].stop()  # b takes everything

    submitted = run_submitters(pipeline, submitters=3, requests=40, seed=4, during=rebalance)
    assert_matches_reference(pipeline, submitted)
    assert set(results_per_request(pipeline).values()) == {1}
