"""A private Kafka broker for the faults that stop the broker itself: its own data directory
and ports, never the shared one (19092/19093) nor the test session's (29092/29093)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from processors.kafka_broker import DEFAULT_CONTROLLER_PORT, DEFAULT_PORT, LocalBroker

# Ports other brokers on this machine use: the shared one and the test session's default.
RESERVED_PORTS = frozenset({DEFAULT_PORT, DEFAULT_CONTROLLER_PORT, 29092, 29093})


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS and port not in taken:
            return port


class PrivateBroker:
    """A `LocalBroker` on free ports and a data directory of its own, that can be stopped and
    started again with its data (the broker-restart fault)."""

    def __init__(self, data_dir: Path) -> None:
        port = _free_port(set())
        self.broker = LocalBroker(data_dir=data_dir, port=port, controller_port=_free_port({port}))
        assert {self.broker.port, self.broker.controller_port}.isdisjoint(RESERVED_PORTS)
        self.bootstrap = self.broker.bootstrap
        self.restarts = 0

    def start(self) -> None:
        self.broker.start()

    def stop(self) -> None:
        self.broker.stop()

    def restart(self, down_s: float) -> None:
        """Stop (SIGTERM, as an operator would), stay down `down_s`, start on the same data."""
        self.broker.stop()
        time.sleep(down_s)
        self.broker.start()
        self.restarts += 1


@contextmanager
def private_broker(data_dir: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(data_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
