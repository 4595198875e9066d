"""`ledger up` and the stack `ledger demo` runs: broker, processors, projections, HTTP API."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from processors.kafka_broker import ENV_BOOTSTRAP, ensure_broker
from processors.settings import ENV_DATA_DIR, ENV_HTTP_PORT, LedgerEnvironment
from processors.setup import ensure_topics
from processors.supervisor import Supervisor
from schemas.topics import ENV_PARTITIONS, ENV_TOPIC_PREFIX

__all__ = ["Stack", "start_stack", "wait_for_signal"]


@dataclass
class Stack:
    bootstrap: str
    environment: LedgerEnvironment
    supervisor: Supervisor

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.environment.http_port}"

    def stop(self) -> None:
        self.supervisor.stop()


def start_stack(environment: LedgerEnvironment | None = None) -> Stack:
    """Start (or reuse) the broker, create the topics, and start one processor and one
    projection worker serving the HTTP API. Everything keeps its data under LEDGER_DATA_DIR,
    so a restart picks up where the last run stopped."""
    environment = environment or LedgerEnvironment.from_env()
    bootstrap = ensure_broker()
    ensure_topics(bootstrap, environment.topics, environment.partitions)
    env = dict(os.environ)
    env.update(
        {
            ENV_BOOTSTRAP: bootstrap,
            ENV_TOPIC_PREFIX: environment.topics.prefix,
            ENV_PARTITIONS: str(environment.partitions),
            ENV_DATA_DIR: str(environment.data_dir),
            ENV_HTTP_PORT: str(environment.http_port),
        }
    )
    supervisor = Supervisor(env, Path(environment.data_dir) / "logs")
    try:
        supervisor.start(
            "processor", ["processors.cli", "processor", "--instance", "up-0"], "running:"
        )
        supervisor.start(
            "projections",
            ["projections", "--worker", "up-0", "--http-port", str(environment.http_port)],
            "ready",
        )
    except BaseException:
        supervisor.stop()
        raise
    return Stack(bootstrap, environment, supervisor)


def wait_for_signal(stack: Stack) -> int:
    """Serve until Ctrl-C or SIGTERM (exit 0), or until a process dies (exit 1)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        failed = stack.supervisor.failed()
        if failed is not None:
            print(f"ledger: {failed.name} exited:\n{failed.tail()}", flush=True)
            stack.stop()
            return 1
    print("stopping...", flush=True)
    stack.stop()
    print("stopped", flush=True)
    return 0
