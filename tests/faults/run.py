"""The long fault run, as a command (docs/FAULTS.md):

    .venv/bin/python -m tests.faults.run --kills 25 --seed 7

starts a private broker (its own ports and data directory, removed afterwards), runs the
ledger's processes on it under a chaos schedule of at least `--kills` processor SIGKILLs plus
every other fault repeatedly, prints the schedule, then the summary and the checks' verdicts;
exits 1 unless every check passed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.faults.broker import private_broker
from tests.faults.chaos import PROCESSOR_ARGS, ChaosPlan, ChaosRun, Fault
from tests.pipeline.harness import Pipeline


def long_plan(seed: int, kills: int = 25, submitters: int = 4, requests: int = 500) -> ChaosPlan:
    return ChaosPlan(
        seed=seed,
        submitters=submitters,
        requests=requests,
        faults={
            Fault.KILL_PROCESSOR: kills,
            Fault.KILL_PROJECTION: 3,
            Fault.ADD_PROCESSOR: 3,
            Fault.REMOVE_PROCESSOR: 3,
            Fault.FREEZE_PROCESSOR: 3,
            Fault.RESTART_BROKER: 2,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kills", type=int, default=25, help="processor SIGKILLs (>= 20)")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500, help="per submitter")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = parser.parse_args(argv)
    plan = long_plan(args.seed, args.kills, args.submitters, args.requests)
    directory = Path(tempfile.mkdtemp(prefix="ledger-faults-"))
    print(f"logs and data in {directory}", flush=True)
    with private_broker(directory / "broker") as broker:
        pipeline = Pipeline.open(
            broker.bootstrap,
            f"faults-{uuid.uuid4().hex[:8]}-",
            directory,
            processor_args=PROCESSOR_ARGS,
        )
        try:
            report = ChaosRun(pipeline, plan, broker).run()
        finally:
            pipeline.stop()
    print(report.summary(), flush=True)
    if not args.keep and report.ok:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
