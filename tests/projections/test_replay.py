"""`ledger replay` on the real pipeline: real broker, processor process, two projection workers
with real RocksDB and HTTP. The replay asks the live workers for (offset, content hash) through
their internal endpoint, replays to exactly those offsets while writes go on, and matches; a
tampered live store is named by partition; with no live worker it rebuilds and hashes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from processors.store import PartitionStore
from projections.model import PartitionProjection
from projections.replay import live_hashes, replay
from tests.pipeline import workload
from tests.pipeline.harness import pipeline_env
from tests.projections.test_worker import (  # noqa: F401 (the fixture)
    PARTITIONS,
    Ledger,
    ledger,
    run_workload,
    wait_split,
)

pytestmark = pytest.mark.kafka


def run_replay(ledger: Ledger, *extra: str) -> tuple[int, str, dict[str, object]]:  # noqa: F811
    env = pipeline_env(ledger.bootstrap, ledger.topics.prefix, PARTITIONS, ledger.directory)
    # The workers serve HTTP on the test's event loop: it runs while the command does.
    done = ledger.runner.run(
        asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "processors.cli", "replay", *extra],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, done.stdout, json.loads(done.stdout.splitlines()[-1])


def test_replay_equals_the_live_projections(ledger: Ledger, tmp_path: Path) -> None:  # noqa: F811
    run_workload(ledger, requests=30, seed=21)
    first, second = ledger.node("w1"), ledger.node("w2")
    wait_split(ledger, [first, second])  # each owns some partitions
    assert first.worker is not None and second.worker is not None

    # Writes keep landing while the replay runs: it compares at the workers' offsets.
    stop = threading.Event()

    def keep_writing() -> None:
        with ledger.client() as client:
            for batch in workload.Workload(22, 1).batches(200):
                if stop.is_set():
                    return
                client.create_transfers(batch)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        code, out, summary = run_replay(ledger, "--into", str(tmp_path / "rebuilt"))
    finally:
        stop.set()
        writer.join(120)
    assert code == 0, out
    assert summary["partitions"] == summary["compared"] == summary["matches"] == PARTITIONS
    assert summary["mismatched"] == []
    assert isinstance(summary["events"], int) and summary["events"] > 0
    assert (tmp_path / "rebuilt" / "partition-0").is_dir()

    # A live store that differs (one key more) is named by its partition.
    tampered = min(second.worker.owned())
    with second.worker.borrow(tampered) as projection:
        projection.store.write({b"\x09tampered": b"1"})
    code, out, summary = run_replay(ledger)
    assert code == 1, out
    assert summary["mismatched"] == [tampered]
    assert f"partition {tampered}: " in out and "MISMATCH: worker w2" in out


def test_replay_without_live_workers_rebuilds_and_hashes(ledger: Ledger, tmp_path: Path) -> None:  # noqa: F811
    run_workload(ledger, requests=20, seed=23)
    node = ledger.node("w1")
    live = ledger.runner.run(
        asyncio.to_thread(live_hashes, ledger.bootstrap, ledger.topics, PARTITIONS)
    )
    assert sorted(live) == list(range(PARTITIONS))
    ledger.stop_node(node)  # retires from the registry: nobody live any more
    assert live_hashes(ledger.bootstrap, ledger.topics, PARTITIONS) == {}
    code, out, summary = run_replay(ledger)
    assert code == 0, out
    assert summary["compared"] == 0 and summary["matches"] == 0
    assert "no live projection to compare" in out
    # Rebuilt to the end: the same stores the worker had built.
    result = replay(ledger.bootstrap, ledger.topics, PARTITIONS, tmp_path, compare=False)
    assert {p: (result.offsets[p], result.hashes[p]) for p in range(PARTITIONS)} == {
        p: (live[p].offset, live[p].content_hash) for p in range(PARTITIONS)
    }
    # The stores, written without a WAL, hold all of it once closed.
    for p in range(PARTITIONS):
        with PartitionStore(tmp_path / f"partition-{p}", sync=False) as store:
            reopened = PartitionProjection(store, p, PARTITIONS).content_hash()
        assert reopened == (live[p].offset, live[p].content_hash)
