"""`ledger up` as a user runs it, with API keys: the real broker, processors, projection worker
and HTTP API as real processes. Requests without a valid key get 401 and change nothing; keys
never appear in any log; SIGTERM stops everything cleanly; a restart keeps the data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from processors.setup import ensure_topics
from schemas.topics import Topics
from tests.pipeline.harness import free_port, pipeline_env

pytestmark = pytest.mark.kafka

KEYS = ("k3y-Alpha-6c1f0e7d", "k3y-Bravo-9a52b8e4")
WRONG_KEY = "k3y-Wrong-3b7e21aa"
READY_TIMEOUT_S = 120.0


def call(
    url: str, method: str = "GET", body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class LedgerUp:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "-v", "up"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ledger ready:" not in log_path.read_text(errors="replace"):
            assert self.process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.log.close()
        return code


def test_ledger_up_with_api_keys(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = pipeline_env(kafka_bootstrap, topic_prefix, 4, data_dir)
    env.update(LEDGER_HTTP_PORT=str(port), LEDGER_API_KEYS=",".join(KEYS))
    ensure_topics(kafka_bootstrap, Topics(topic_prefix), 4)
    base = f"http://127.0.0.1:{port}"
    account = {"id": 1, "ledger": 1, "code": 1}

    up = LedgerUp(env, tmp_path / "up.log")
    try:
        assert call(f"{base}/health") == (200, {"status": "ok"})
        for key in (None, WRONG_KEY, KEYS[0] + "x", ""):
            assert call(f"{base}/accounts", "POST", [account], key=key)[0] == 401
            assert call(f"{base}/accounts/1", key=key)[0] == 401
            assert call(f"{base}/accounts/1/freeze", "POST", {}, key=key)[0] == 401
        # Nothing the refused requests carried reached the ledger.
        assert call(f"{base}/accounts/1", key=KEYS[0])[0] == 404
        status, results = call(f"{base}/accounts", "POST", [account], key=KEYS[1])
        assert (status, [r["status"] for r in results]) == (200, ["created"])
        status, found = call(f"{base}/accounts/1", key=KEYS[0])
        assert (status, found["version"]) == (200, "1")
        assert call(f"{base}/accounts/1/freeze", "POST", {}, key=WRONG_KEY)[0] == 401
        assert call(f"{base}/accounts/1", key=KEYS[1])[1]["frozen"] is False
    finally:
        assert up.stop() == 0, up.log_path.read_text(errors="replace")[-3000:]

    # A restart keeps the data.
    again = LedgerUp(env, tmp_path / "up-again.log")
    try:
        status, found = call(f"{base}/accounts/1", key=KEYS[0])
        assert (status, found["id"]) == (200, "1")
    finally:
        assert again.stop() == 0

    logs = [tmp_path / "up.log", tmp_path / "up-again.log", *sorted(data_dir.rglob("*.log"))]
    assert len(logs) > 2, "the processes' own logs are there too"
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in (*KEYS, WRONG_KEY):
            assert secret not in text, f"{secret} in {path}"
