"""Running the real pipeline in tests: processor processes, the event log read back, and the
reference ledger replayed in the pipeline's serialization order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processors.ledger import MemoryState, PartitionOwnership, apply_event
from processors.setup import read_committed
from schemas.codec import decode_event_batch
from schemas.topics import Topics

READY_TIMEOUT_S = 60.0


@dataclass
class ProcessorProcess:
    """One `ledger processor` instance as a real process."""

    instance: str
    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()  # more `ledger processor` options
    process: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    def start(self) -> ProcessorProcess:
        handle = self.log_path.open("ab")
        self._log = handle
        command = [sys.executable, "-m", "processors.cli", "-v", "processor"]
        self.process = subprocess.Popen(
            [*command, "--instance", self.instance, *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "running:" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(f"processor {self.instance} died:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"processor {self.instance} not running:\n{self.tail()}")
            time.sleep(0.05)
        return self

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def pipeline_env(bootstrap: str, prefix: str, partitions: int, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEDGER_KAFKA_BOOTSTRAP=bootstrap,
        LEDGER_TOPIC_PREFIX=prefix,
        LEDGER_PARTITIONS=str(partitions),
        LEDGER_DATA_DIR=str(data_dir),
    )
    return env


def read_partition(bootstrap: str, topic: str, partition: int) -> Iterator[bytes]:
    """Every committed message value of one partition, from the start to its current end."""
    for message in read_committed(bootstrap, topic, partition, 0):
        yield message.value() or b""


def replay_events(bootstrap: str, topics: Topics, partitions: int) -> MemoryState:
    """The ledger as its event log tells it: each partition's events folded by their owner."""
    state = MemoryState()
    for partition in range(partitions):
        ownership = PartitionOwnership(partition, partitions)
        for value in read_partition(bootstrap, topics.events, partition):
            for event in decode_event_batch(value).events:
                apply_event(state, event, ownership)
    return state


def headers_of(message: Message) -> list[tuple[str, bytes]]:
    """A consumed message's headers, in order (a header without a value as b"")."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    ]


class Tail:
    """Follows one partition from offset 0 (committed messages only), keeping what it read."""

    def __init__(self, bootstrap: str, topic: str, partition: int) -> None:
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "ledger-test-tail",  # assign() only: nothing is committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.message.max.bytes": 64 * 1024 * 1024,
            }
        )
        self._consumer.assign([TopicPartition(topic, partition, 0)])

    def read(self, until: Callable[[], bool], timeout_s: float) -> bool:
        """Read until `until()` holds (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > deadline:
                return False
            for message in self._consumer.consume(1000, 0.01):
                error = message.error()
                if error is None:
                    self.messages.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
        return True

    def close(self) -> None:
        self._consumer.close()
