"""The fault suite (docs/FAULTS.md). The quick part runs with every `pytest`; the long one
(`LEDGER_FAULTS_LONG=1 pytest tests/faults -k long`, or `python -m tests.faults.run`) applies
at least 20 processor kills and every other fault repeatedly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.kafka_broker import BrokerError
from tests.conftest import no_broker
from tests.faults.broker import PrivateBroker, private_broker
from tests.faults.chaos import PROCESSOR_ARGS, ChaosPlan, ChaosReport, ChaosRun, Fault
from tests.pipeline.harness import Pipeline

pytestmark = pytest.mark.kafka

LONG = os.environ.get("LEDGER_FAULTS_LONG", "") == "1"


def run_plan(
    pipeline: Pipeline, plan: ChaosPlan, broker: PrivateBroker | None = None
) -> ChaosReport:
    try:
        report = ChaosRun(pipeline, plan, broker).run()
    finally:
        pipeline.stop()
    print(report.summary())
    assert report.ok, f"{report.summary()}\n{pipeline.logs()}"
    return report


@pytest.fixture
def pipeline(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Pipeline]:
    built = Pipeline.open(kafka_bootstrap, topic_prefix, tmp_path, processor_args=PROCESSOR_ARGS)
    yield built
    built.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker of this test's own: the broker-restart fault must not touch anyone else's."""
    try:
        with private_broker(tmp_path / "broker") as started:
            yield started
    except BrokerError as exc:  # no Java or no jars: as for the session's broker (SPEC §2)
        no_broker(f"the private broker could not start: {exc}")


def test_kills_rebalances_and_a_projection_kill(pipeline: Pipeline) -> None:
    plan = ChaosPlan(
        seed=11,
        submitters=3,
        requests=20,
        faults={
            Fault.KILL_PROCESSOR: 3,
            Fault.ADD_PROCESSOR: 1,
            Fault.REMOVE_PROCESSOR: 1,
            Fault.KILL_PROJECTION: 1,
        },
    )
    report = run_plan(pipeline, plan)
    assert report.applied[Fault.KILL_PROCESSOR] == 3


def test_a_zombie_frozen_past_its_session_is_fenced(pipeline: Pipeline) -> None:
    plan = ChaosPlan(seed=12, submitters=3, requests=25, faults={Fault.FREEZE_PROCESSOR: 1})
    report = run_plan(pipeline, plan)
    # It did try to write (else nothing was tested), and the checks above found no trace of it.
    assert report.fenced_attempts > 0


def test_broker_restart_mid_run(broker: PrivateBroker, topic_prefix: str, tmp_path: Path) -> None:
    pipeline = Pipeline.open(
        broker.bootstrap, topic_prefix, tmp_path, processor_args=PROCESSOR_ARGS
    )
    plan = ChaosPlan(
        seed=13, submitters=2, requests=25, faults={Fault.RESTART_BROKER: 1}, processors=1
    )
    report = run_plan(pipeline, plan, broker)
    assert broker.restarts == 1 and report.applied[Fault.RESTART_BROKER] == 1


@pytest.mark.skipif(not LONG, reason="the long fault run: LEDGER_FAULTS_LONG=1")
def test_long_run(broker: PrivateBroker, topic_prefix: str, tmp_path: Path) -> None:
    from tests.faults.run import long_plan

    pipeline = Pipeline.open(
        broker.bootstrap, topic_prefix, tmp_path, processor_args=PROCESSOR_ARGS
    )
    report = run_plan(
        pipeline, long_plan(seed=int(os.environ.get("LEDGER_FAULTS_SEED", "7"))), broker
    )
    assert report.applied[Fault.KILL_PROCESSOR] >= 20
