"""Every public scenario through the HTTP API of the real pipeline: processor and projection
worker processes on the real broker, time advanced through the API's clock control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projections.audit import audit_log
from schemas.topics import Topics
from tests.pipeline.harness import free_port, http_stack
from tests.projections.http_driver import HttpScenarioDriver, UrllibSession
from tests.scenario_runner import load_scenarios, run_scenario

pytestmark = pytest.mark.kafka

PARTITIONS = 4
SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def free_port_module() -> int:
    return free_port()


@pytest.fixture
def scenario_api(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, free_port_module: int
) -> Iterator[str]:
    """A fresh pipeline (own topics and state) serving the HTTP API, for one scenario."""
    with http_stack(kafka_bootstrap, topic_prefix, PARTITIONS, tmp_path, free_port_module, "s"):
        yield f"http://127.0.0.1:{free_port_module}"


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
