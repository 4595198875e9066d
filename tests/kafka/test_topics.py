"""Topics are created with the partition count asked for (SPEC §2: configurable, default 8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_topic_has_requested_partition_count(
    create_topic: Callable[..., str], kafka_admin: AdminClient, partitions: int
) -> None:
    name = create_topic("commands", partitions=partitions)

    metadata: Any = kafka_admin.list_topics(topic=name, timeout=10)
    topic = metadata.topics[name]
    assert topic.error is None
    assert sorted(topic.partitions) == list(range(partitions))
    assert all(p.leader >= 0 for p in topic.partitions.values())


def test_topics_of_a_test_share_its_unique_prefix(
    create_topic: Callable[..., str], topic_prefix: str, kafka_admin: AdminClient
) -> None:
    events = create_topic("events", partitions=2)
    results = create_topic("results", partitions=1, config={"cleanup.policy": "compact"})

    assert events == f"{topic_prefix}events"
    assert results == f"{topic_prefix}results"
    metadata: Any = kafka_admin.list_topics(timeout=10)
    ours = {name for name in metadata.topics if name.startswith(topic_prefix)}
    assert ours == {events, results}
