"""Every public scenario through the reference ledger."""

from __future__ import annotations

from typing import Any

import pytest

from processors.ledger import PartitionedLedger
from tests.core.drivers import ReferenceDriver
from tests.scenario_runner import load_scenarios, run_scenario

SCENARIOS = load_scenarios()


def test_all_scenarios_are_loaded() -> None:
    assert len(SCENARIOS) >= 20


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any]) -> None:
    assert run_scenario(ReferenceDriver(), scenario) == len(scenario["steps"])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
@pytest.mark.parametrize("partitions", [2, 5])
def test_scenario_partitioned(scenario: dict[str, Any], partitions: int) -> None:
    """The same scenarios with accounts and transfer ids spread over several owners."""
    assert run_scenario(ReferenceDriver(PartitionedLedger(partitions)), scenario) == len(
        scenario["steps"]
    )


def test_a_wrong_expectation_is_reported() -> None:
    """The runner really compares: flip one expected status and it must fail."""
    from tests.scenario_runner import ScenarioFailure

    scenario = next(s for s in SCENARIOS if s["id"] == "U-09")
    broken = {**scenario, "steps": [list(step) for step in scenario["steps"]]}
    kind, data = broken["steps"][1]
    assert kind == "transfers"
    broken["steps"][1] = [kind, [[data[0][0], "exceeds_credits"], *data[1:]]]
    with pytest.raises(ScenarioFailure, match="expected exceeds_credits, got created"):
        run_scenario(ReferenceDriver(), broken)
