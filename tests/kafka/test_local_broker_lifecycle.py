"""The real local JVM broker: start, reuse, status, stop, restart on existing data.

Runs its own broker on free ports and a private data dir (next to the session's broker), so it
needs Java; the jars come from the shared cache (LEDGER_HOME), fetched once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # defined (and typed) here; admin re-exports it

from processors.kafka_broker import LocalBroker
from tests.conftest import in_ci

pytestmark = pytest.mark.kafka


@pytest.fixture
def own_broker(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[LocalBroker]:
    if shutil.which("java") is None and not in_ci():
        pytest.skip("needs Java 17+ for the local JVM broker")
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    broker = LocalBroker(data_dir=tmp_path / "data", port=port, controller_port=controller_port)
    try:
        yield broker
    finally:
        broker.stop()  # whatever happened above, no JVM outlives the test


def topic_names(bootstrap: str) -> set[str]:
    metadata: Any = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return set(metadata.topics)


def test_start_reuse_stop_restart(own_broker: LocalBroker) -> None:
    first = own_broker.start()
    assert not first.reused
    assert first.bootstrap == f"127.0.0.1:{own_broker.port}"
    assert (
        Path(first.log_file).is_file()
        and "Kafka Server started" in Path(first.log_file).read_text()
    )
    status = own_broker.status()
    assert status.running and status.pid == first.pid and status.bootstrap == first.bootstrap

    admin = AdminClient({"bootstrap.servers": first.bootstrap})  # must outlive its futures
    futures = admin.create_topics(
        [NewTopic("kept-across-restart", num_partitions=2, replication_factor=1)]
    )
    futures["kept-across-restart"].result(timeout=30)

    again = own_broker.start()
    assert again.reused and again.pid == first.pid

    assert own_broker.stop() is True
    assert not own_broker.state_file.exists()
    assert not psutil.pid_exists(first.pid)
    assert not own_broker.status().running
    assert own_broker.stop() is False

    restarted = own_broker.start()  # existing data: no format, same cluster
    assert not restarted.reused and restarted.pid != first.pid
    assert "kept-across-restart" in topic_names(restarted.bootstrap)
    assert own_broker.stop() is True
