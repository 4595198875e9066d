"""The benchmarks the figures in docs/BENCHMARKS.md come from still run, small, against the
real broker: each gives its figures and takes its topics away (a broker that keeps every
run's topics grows slower, and the next run's figures with it). Not timed: the figures are
not asserted, only that they were measured."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient

from processors.bench_broker import BrokerBenchParams, run_broker_bench
from processors.bench_pipeline import PipelineBenchParams, run_pipeline_bench

pytestmark = pytest.mark.kafka


def topics_left(admin: AdminClient, prefix: str, timeout_s: float = 10.0) -> list[str]:
    """The topics named `prefix*` once the deletions have reached the metadata (or the
    timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def test_the_pipeline_bench_measures_and_cleans_up(
    kafka_bootstrap: str, kafka_admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP", kafka_bootstrap)
    params = PipelineBenchParams(
        accounts=500, batch_size=50, in_flight=4, duration_s=1.0, rate_per_s=100,
        latency_duration_s=1.0, warmup_s=1.5,
    )  # fmt: skip
    figures = run_pipeline_bench(params)
    assert figures["throughput_created"] == figures["throughput_transfers"]
    assert int(str(figures["throughput_transfers"])) > 0
    assert figures["latency_requests"] == 100
    assert 0 < float(str(figures["p50_ms"])) <= float(str(figures["p99_ms"]))
    for unit in ("transfer", "request"):
        assert float(str(figures[f"processor_cpu_us_per_{unit}"])) > 0
        assert float(str(figures[f"client_cpu_us_per_{unit}"])) > 0
    assert topics_left(kafka_admin, str(figures["topic_prefix"])) == []


def test_the_broker_bench_measures_and_cleans_up(
    kafka_bootstrap: str, kafka_admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_KAFKA_BOOTSTRAP", kafka_bootstrap)
    figures = run_broker_bench(BrokerBenchParams(rate_per_s=200, duration_s=0.5))
    assert figures["produce_messages"] == 100
    assert figures["fetch_gathered_read"] == figures["fetch_at_once_read"] == 100
    assert int(figures["transactions"]) > 0
    assert 0 < figures["transaction_ms_p50"] <= figures["transaction_ms_p99"]
    assert topics_left(kafka_admin, "bench-broker-") == []
