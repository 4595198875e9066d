"""Fixtures of the client tests: the ledger's topics under the test's prefix, and a fake
processor (tests/producers/fake_processor.py) when a test needs answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from schemas.topics import Topics
from tests.producers.fake_processor import FakeProcessor, Responder

COMMAND_PARTITIONS = 4
RESULT_PARTITIONS = 3


@dataclass(frozen=True)
class Ledger:
    bootstrap: str
    topics: Topics
    command_partitions: int = COMMAND_PARTITIONS
    result_partitions: int = RESULT_PARTITIONS


@pytest.fixture
def ledger(kafka_bootstrap: str, create_topic: Callable[..., str], topic_prefix: str) -> Ledger:
    topics = Topics(topic_prefix)
    assert create_topic("commands", partitions=COMMAND_PARTITIONS) == topics.commands
    assert create_topic("results", partitions=RESULT_PARTITIONS) == topics.results
    return Ledger(kafka_bootstrap, topics)


@pytest.fixture
def start_processor(ledger: Ledger) -> Iterator[Callable[[Responder], FakeProcessor]]:
    started: list[FakeProcessor] = []

    def start(respond: Responder) -> FakeProcessor:
        processor = FakeProcessor(
            ledger.bootstrap,
            ledger.topics,
            ledger.command_partitions,
            ledger.result_partitions,
            respond,
        ).start()
        started.append(processor)
        return processor

    yield start
    for processor in started:
        processor.stop()
