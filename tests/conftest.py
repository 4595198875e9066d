"""Shared fixtures: one Kafka broker per test session and a fresh topic namespace per test.

The broker is chosen as SPEC §2 says:

1. ``LEDGER_KAFKA_BOOTSTRAP`` if set;
2. else a testcontainers Kafka when a Docker engine answers (``docker info``);
3. else the local JVM broker of ``processors.kafka_broker`` on its own data dir and ports
   (29092/29093 by default, ``LEDGER_TEST_KAFKA_PORT`` / ``..._CONTROLLER_PORT`` to change), so
   tests never touch a user's broker. It is stopped at session end if this session started it.

With ``CI=true`` a missing broker fails the run; locally the Kafka tests are skipped instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # defined (and typed) here; admin re-exports it

from processors.kafka_broker import BrokerError, LocalBroker

TEST_KAFKA_PORT = int(os.environ.get("LEDGER_TEST_KAFKA_PORT", "29092"))
TEST_KAFKA_CONTROLLER_PORT = int(os.environ.get("LEDGER_TEST_KAFKA_CONTROLLER_PORT", "29093"))
# The confluent image is what testcontainers' KafkaContainer knows how to drive; 8.x is Kafka 4.
TEST_KAFKA_IMAGE = os.environ.get("LEDGER_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:8.0.0")
TOPIC_CREATE_TIMEOUT_S = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def no_broker(reason: str) -> NoReturn:
    """Under CI a missing broker is a failure (SPEC §2); locally it is a skip."""
    if in_ci():
        pytest.fail(f"no Kafka broker available under CI: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker available: {reason}")


def docker_engine_answers() -> bool:
    # The docker CLI may exist without an engine: only `docker info` tells.
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def wait_for_metadata(bootstrap: str, timeout_s: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if admin.list_topics(timeout=5).brokers:
                return
        except Exception as exc:  # KafkaException while the broker is unreachable
            last = exc
        time.sleep(0.5)
    no_broker(f"the broker at {bootstrap} did not answer within {timeout_s:.0f} s ({last})")


_SESSION_PREFIXES: list[str] = []  # every test's topic prefix, for the session's cleanup


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Bootstrap servers of the session's broker."""
    external = os.environ.get("LEDGER_KAFKA_BOOTSTRAP", "").strip()
    if external:
        wait_for_metadata(external, timeout_s=30)
        yield external
        # A broker that outlives the session (a developer's) would keep every test's topics,
        # and grow slower with them: the session takes its own away.
        from processors.setup import delete_topics_with_prefix

        if _SESSION_PREFIXES:
            delete_topics_with_prefix(external, tuple(_SESSION_PREFIXES))
        return

    if docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer(TEST_KAFKA_IMAGE)
            .with_kraft()
            # Without these, a single broker cannot host the transaction log: init_transactions
            # would hang (testcontainers-java #1816).
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        )
        try:
            container.start()
        except Exception as exc:
            no_broker(f"testcontainers could not start {TEST_KAFKA_IMAGE}: {exc}")
        try:
            bootstrap = str(container.get_bootstrap_server())
            wait_for_metadata(bootstrap, timeout_s=60)
            yield bootstrap
        finally:
            container.stop()
        return

    # A stable data dir (in pytest's cache) lets a broker orphaned by a killed session be found
    # and reused through its state file instead of blocking the test ports.
    cache = request.config.cache
    data_dir = (
        cache.mkdir("ledger-kafka") if cache is not None else tmp_path_factory.mktemp("kafka")
    )
    broker = LocalBroker(
        data_dir=data_dir, port=TEST_KAFKA_PORT, controller_port=TEST_KAFKA_CONTROLLER_PORT
    )
    if not broker.status().pid_alive:
        # Fresh topic data for every session that starts its own broker.
        shutil.rmtree(broker.kafka_dir, ignore_errors=True)
    try:
        info = broker.start()
    except BrokerError as exc:
        no_broker(f"the local JVM broker could not start: {exc}")
    try:
        yield info.bootstrap
    finally:
        if not info.reused:
            broker.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A namespace no other test (or earlier run) uses: ``t-<test name>-<uuid8>-``."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "-", request.node.name).strip("-")[:80]
    prefix = f"t-{name}-{uuid.uuid4().hex[:8]}-"
    _SESSION_PREFIXES.append(prefix)
    return prefix


@dataclass
class TopicFactory:
    """Creates topics under the test's prefix and waits until every partition has a leader."""

    admin: AdminClient
    prefix: str
    created: list[str]

    def __call__(
        self, suffix: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        name = f"{self.prefix}{suffix}"
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=TOPIC_CREATE_TIMEOUT_S,
        )
        futures[name].result(timeout=TOPIC_CREATE_TIMEOUT_S)
        self.created.append(name)
        self._wait_leaders(name, partitions)
        return name

    def _wait_leaders(self, name: str, partitions: int) -> None:
        deadline = time.monotonic() + TOPIC_CREATE_TIMEOUT_S
        while True:
            metadata: Any = self.admin.list_topics(topic=name, timeout=10)
            topic = metadata.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {name} not ready after {TOPIC_CREATE_TIMEOUT_S} s")
            time.sleep(0.1)


@pytest.fixture
def create_topic(kafka_admin: AdminClient, topic_prefix: str) -> Iterator[Callable[..., str]]:
    """``create_topic(suffix, partitions=1, config=None) -> full topic name``."""
    factory = TopicFactory(kafka_admin, topic_prefix, [])
    yield factory
    if factory.created:
        # Best effort: keeps a long-lived external broker tidy; failures do not fail the test.
        for future in kafka_admin.delete_topics(factory.created, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a currently free loopback TCP port."""
    from tests.pipeline.harness import free_port as pick

    return pick
