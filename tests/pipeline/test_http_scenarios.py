"""Every public scenario through the HTTP API of the real pipeline: processor and projection
worker processes on the real broker, time advanced through the API's clock control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.setup import ensure_topics
from processors.supervisor import Supervisor
from projections.audit import audit_log
from schemas.topics import Topics
from tests.pipeline.harness import pipeline_env
from tests.projections.http_driver import HttpScenarioDriver, UrllibSession
from tests.scenario_runner import load_scenarios, run_scenario

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def free_port_module() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scenario_api(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, free_port_module: int
) -> Iterator[str]:
    """A fresh pipeline (own topics and state) serving the HTTP API, for one scenario."""
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    env = pipeline_env(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path / "data")
    env["LEDGER_ALLOW_CLOCK_CONTROL"] = "1"
    env["LEDGER_HTTP_PORT"] = str(free_port_module)
    supervisor = Supervisor(env, tmp_path / "logs")
    try:
        supervisor.start(
            "processor", ["processors.cli", "processor", "--instance", "s"], "running:"
        )
        supervisor.start("projections", ["projections", "--worker", "s"], "ready")
        yield f"http://127.0.0.1:{free_port_module}"
    finally:
        supervisor.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario_over_http(
    scenario: dict[str, Any], scenario_api: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    driver = HttpScenarioDriver(scenario_api, UrllibSession(timeout_s=60))
    assert run_scenario(driver, scenario) == len(scenario["steps"])
    # And the log it left audits clean (SPEC §6), results included.
    report = audit_log(kafka_bootstrap, Topics(topic_prefix), PARTITIONS)
    assert report.ok, "\n".join(map(str, report.violations))
    assert report.results == report.commands
