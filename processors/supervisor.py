"""Starting and stopping the ledger's processes (`ledger up`, `ledger demo`, `ledger bench`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Supervisor", "SupervisorError"]


class SupervisorError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    command: list[str]
    log_path: Path
    ready_marker: str
    process: subprocess.Popen[bytes] | None = None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class Supervisor:
    """Child processes sharing one environment; each logs to its own file."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], ready_marker: str, timeout_s: float = 120.0
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(
            name, [sys.executable, "-m", *args], self.log_dir / f"{name}.log", ready_marker
        )
        with child.log_path.open("ab") as log:
            # The log is kept across restarts: only what this start writes may say it is ready.
            started_at = log.tell()
            child.process = subprocess.Popen(
                child.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C in the terminal reaches the supervisor, which
                # then stops the children in order.
                start_new_session=True,
            )
        self.children.append(child)
        deadline = time.monotonic() + timeout_s
        while ready_marker not in self._output_since(child, started_at):
            if child.process.poll() is not None:
                raise SupervisorError(f"{name} exited during start-up:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise SupervisorError(f"{name} not ready within {timeout_s:.0f} s:\n{child.tail()}")
            time.sleep(0.05)
        return child

    @staticmethod
    def _output_since(child: Child, offset: int) -> str:
        with child.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def failed(self) -> Child | None:
        """The first child that exited on its own, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child (newest first: the API before what feeds it), then wait."""
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            process = child.process
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.children.clear()
