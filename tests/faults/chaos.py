"""The fault runner: a random workload from concurrent submitters (real `LedgerClient`s) while
a seeded chaos schedule kills, freezes, adds and removes processes and restarts the broker;
then the checks of `tests.faults.checks` (docs/FAULTS.md)."""

from __future__ import annotations

import enum
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from producers import LedgerClient
from schemas import Transfer
from schemas.partitioning import partition_of
from tests.faults.broker import PrivateBroker
from tests.faults.checks import (
    Verdict,
    aborted_results,
    assert_audit_clean,
    assert_one_result_per_request,
    assert_projections_match,
    assert_reference,
    verdict,
)
from tests.pipeline import workload
from tests.pipeline.harness import (
    Pipeline,
    ProcessorProcess,
    Submitted,
    replay_events,
    run_submitters,
    setup_accounts,
)

# The broker's group.min.session.timeout.ms (6 s by default) is the shortest session allowed.
SESSION_TIMEOUT_MS = 6_000
# A frozen or killed instance's open transaction is aborted this soon (plus the broker's scan).
TRANSACTION_TIMEOUT_MS = 6_000
PROCESSOR_ARGS = (
    "--session-timeout-ms",
    str(SESSION_TIMEOUT_MS),
    "--transaction-timeout-ms",
    str(TRANSACTION_TIMEOUT_MS),
)
FROZEN_S = SESSION_TIMEOUT_MS / 1000 + 6.0  # past the session: the group moves on without it
BROKER_DOWN_S = 3.0
FREEZE_TRIES = 3
RESUMED_S = 5.0
HEAVY_TRANSFERS = 2_000  # per partition: a few hundred ms of work for every instance
HEAVY_IDS = 900_000_000  # above every submitter lane's ids
# The service's log lines when a commit is refused, or abandoned (its deadline, which runs on
# the wall clock, passed while the process was frozen) and its producers fenced by new ones.
FENCED = re.compile(r"transaction failed|transaction not ended")


class Fault(enum.Enum):
    KILL_PROCESSOR = "kill-processor"  # SIGKILL at a random moment, then start it again
    KILL_PROJECTION = "kill-projection"  # SIGKILL a projection worker, then start it again
    ADD_PROCESSOR = "add-processor"  # a new instance joins: a rebalance
    REMOVE_PROCESSOR = "remove-processor"  # SIGTERM one (never the last): a rebalance
    FREEZE_PROCESSOR = "freeze-processor"  # SIGSTOP past the session timeout, then SIGCONT
    RESTART_BROKER = "restart-broker"  # stop the (private) broker, start it again


@dataclass(frozen=True)
class Step:
    at_result: int  # applied once the submitters have had this many results
    fault: Fault
    jitter_s: float  # then after this much more: a random moment, not a result boundary

    def __str__(self) -> str:
        return f"after result {self.at_result} (+{self.jitter_s * 1e3:.0f} ms): {self.fault.value}"


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    submitters: int
    requests: int  # per submitter
    faults: dict[Fault, int]  # how many of each
    processors: int = 2  # instances at the start
    projection_workers: int = 1

    def schedule(self) -> list[Step]:
        """The faults at random points of the run's middle, reproducible from the seed."""
        rng = random.Random(self.seed)
        total = self.submitters * self.requests
        kinds = [fault for fault, count in self.faults.items() for _ in range(count)]
        rng.shuffle(kinds)
        points = sorted(rng.randrange(total // 20, total * 17 // 20) for _ in kinds)
        return [
            Step(at, fault, rng.uniform(0.0, 0.3)) for at, fault in zip(points, kinds, strict=True)
        ]


@dataclass
class ChaosReport:
    plan: ChaosPlan
    schedule: list[Step]
    applied: Counter[Fault] = field(default_factory=Counter)
    processor_starts: int = 0  # restarts after kills, and added instances
    partition_takeovers: int = 0  # "partition N ready" in the processors' logs: recoveries
    freezes: int = 0  # SIGSTOPs (a freeze fault is retried until the zombie tries a write)
    fenced_attempts: int = 0  # commits a resumed zombie tried, and Kafka refused
    unexpected_deaths: list[str] = field(default_factory=list)
    requests: int = 0
    results: int = 0
    aborted_results: int = 0  # results written inside transactions that never committed
    elapsed_s: float = 0.0
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def summary(self) -> str:
        applied = ", ".join(f"{fault.value} {self.applied[fault]}" for fault in Fault)
        lines = [
            f"seed {self.plan.seed}: {self.plan.submitters} submitters x "
            f"{self.plan.requests} requests, {self.elapsed_s:.0f} s",
            f"faults applied: {applied}",
            f"processor kills {self.applied[Fault.KILL_PROCESSOR]}, processor starts "
            f"(restarts and additions) {self.processor_starts}, removals "
            f"{self.applied[Fault.REMOVE_PROCESSOR]}, "
            f"freeze faults {self.applied[Fault.FREEZE_PROCESSOR]} (SIGSTOPs {self.freezes}, "
            f"refused zombie commits {self.fenced_attempts}), projection kills "
            f"{self.applied[Fault.KILL_PROJECTION]}, broker restarts "
            f"{self.applied[Fault.RESTART_BROKER]}",
            f"partition takeovers (recoveries after rebalances) {self.partition_takeovers}",
            f"requests {self.requests}, results {self.results}, aborted results in the log "
            f"{self.aborted_results}, processes that died on their own "
            f"{len(self.unexpected_deaths)}",
            *(str(v) for v in self.verdicts),
            f"verdict: {'CLEAN' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)


class ChaosRun:
    """Runs one plan over `pipeline` (whose processors must run with PROCESSOR_ARGS); `broker`
    is required by RESTART_BROKER, and must be the broker the pipeline uses."""

    def __init__(
        self, pipeline: Pipeline, plan: ChaosPlan, broker: PrivateBroker | None = None
    ) -> None:
        assert Fault.RESTART_BROKER not in plan.faults or broker is not None
        self.pipeline = pipeline
        self.plan = plan
        self.broker = broker
        self.rng = random.Random(plan.seed + 1)
        self.report = ChaosReport(plan, plan.schedule())
        self._results = 0
        self._progress = threading.Condition()
        self._done = threading.Event()  # the submitters are done
        self._chaos_done = threading.Event()  # the schedule is done
        self._next_instance = 0
        self._client: LedgerClient | None = None  # the chaos's own requests (freezes)
        self._extra: list[Submitted] = []
        self._extra_lock = threading.Lock()
        self._heavy_id = HEAVY_IDS
        self.chaos_error: BaseException | None = None

    # The run ---------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        started = time.monotonic()
        print(f"chaos schedule (seed {self.plan.seed}):", flush=True)
        for step in self.report.schedule:
            print(f"  {step}", flush=True)
        for _ in range(self.plan.processors):
            self._add_processor()
        for index in range(self.plan.projection_workers):
            self.pipeline.projection(f"w{index}")
        self._client = self.pipeline.client()
        setup_accounts(self._client)
        chaos = threading.Thread(target=self._chaos, name="chaos")
        chaos.start()
        try:
            submitted = run_submitters(
                self.pipeline,
                self.plan.submitters,
                self.plan.requests,
                self.plan.seed,
                on_result=self._on_result,
                # Every scheduled fault happens under load, however long the faults take.
                keep_going=lambda: not self._chaos_done.is_set(),
            )
        finally:
            self._done.set()
            with self._progress:
                self._progress.notify_all()
            chaos.join()
            self._client.close()
        if self.chaos_error is not None:
            raise AssertionError(f"the chaos failed:\n{self.pipeline.logs()}") from self.chaos_error
        self._check(submitted + self._extra)
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    def _on_result(self) -> None:
        with self._progress:
            self._results += 1
            self._progress.notify_all()

    def _chaos(self) -> None:
        try:
            self._follow_schedule()
        except BaseException as exc:  # surfaced by run()
            self.chaos_error = exc
        finally:
            self._chaos_done.set()

    def _follow_schedule(self) -> None:
        for step in self.report.schedule:
            with self._progress:
                while self._results < step.at_result and not self._done.is_set():
                    self._progress.wait(1.0)
            if self._done.is_set():
                return  # the submitters failed: run() reports why
            time.sleep(step.jitter_s)
            print(f"chaos: {step}", flush=True)
            self._apply(step.fault)
            self.report.applied[step.fault] += 1
            self._revive_the_dead()

    def _apply(self, fault: Fault) -> None:
        live = [p for p in self.pipeline.processes if p.alive]
        if fault is Fault.KILL_PROCESSOR:
            victim = self.rng.choice(live)
            victim.kill()
            time.sleep(self.rng.uniform(0.0, 1.0))
            victim.start()
            self.report.processor_starts += 1
        elif fault is Fault.KILL_PROJECTION:
            worker = self.rng.choice(self.pipeline.projections)
            worker.kill()
            worker.start()  # ready once it has folded up to the end again
        elif fault is Fault.ADD_PROCESSOR:
            self._add_processor()
        elif fault is Fault.REMOVE_PROCESSOR:
            if len(live) > 1:
                self.rng.choice(live).stop()
        elif fault is Fault.FREEZE_PROCESSOR:
            self._freeze(live)
        elif fault is Fault.RESTART_BROKER:
            assert self.broker is not None
            self.broker.restart(BROKER_DOWN_S)

    def _add_processor(self) -> None:
        self.pipeline.processor(f"p{self._next_instance}")
        self._next_instance += 1
        self.report.processor_starts += 1

    def _freeze(self, live: list[ProcessorProcess]) -> None:
        """SIGSTOP one instance past its session timeout while another lives to take over its
        partitions; then SIGCONT it: whatever it then tries to commit must be refused. To
        catch it with a transaction in flight, big requests reach every partition just before
        the freeze; a zombie caught between transactions has nothing to try, and is frozen
        again (at most FREEZE_TRIES times): the fencing must be exercised, not assumed."""
        if len(live) < 2:
            self._add_processor()
            live = [p for p in self.pipeline.processes if p.alive]
        zombie = self.rng.choice(live)
        for _ in range(FREEZE_TRIES):
            heavy = self._heavy_requests()
            time.sleep(self.rng.uniform(0.05, 0.3))  # they are being decided and written now
            zombie.freeze()
            time.sleep(FROZEN_S)
            resumed_at = len(zombie.log_path.read_bytes())
            zombie.resume()
            attempts = self._fenced_attempts(zombie, resumed_at)
            for thread in heavy:
                thread.join()  # answered by the instance that took over, or the zombie later
            self.report.freezes += 1
            self.report.fenced_attempts += attempts
            if attempts:
                return

    @staticmethod
    def _fenced_attempts(zombie: ProcessorProcess, resumed_at: int) -> int:
        """The commits the zombie's log shows refused or abandoned since it was resumed, once
        it has had RESUMED_S to try (it finds its session gone, or its commit refused)."""
        deadline = time.monotonic() + RESUMED_S
        while True:
            after = zombie.log_path.read_bytes()[resumed_at:].decode(errors="replace")
            attempts = len(FENCED.findall(after))
            if attempts or time.monotonic() > deadline:
                return attempts
            time.sleep(0.1)

    def _heavy_requests(self) -> list[threading.Thread]:
        """One big request per partition, each between two accounts of that partition (the
        direct path), sent from threads of their own; their results join the submitted."""
        threads = []
        for partition in range(self.pipeline.partitions):
            pair = [
                a
                for a in workload.ACCOUNTS
                if partition_of(a, self.pipeline.partitions) == partition
            ][:2]
            batch = []
            for _ in range(HEAVY_TRANSFERS):
                self._heavy_id += 1
                batch.append(
                    Transfer(self._heavy_id, pair[0], pair[1], 1, ledger=workload.LEDGER, code=1)
                )
            thread = threading.Thread(target=self._submit_heavy, args=(batch,))
            thread.start()
            threads.append(thread)
        return threads

    def _submit_heavy(self, batch: list[Transfer]) -> None:
        try:
            assert self._client is not None
            results = self._client.create_transfers(batch)
            assert len(results) == len(batch)
            with self._extra_lock:
                self._extra.append((batch, [(int(r.status), r.timestamp) for r in results]))
        except BaseException as exc:  # surfaced by run()
            self.chaos_error = exc

    def _revive_the_dead(self) -> None:
        """A process that exited by itself is a finding: recorded, then started again so the
        run can finish and the checks can say what it cost."""
        for process in [*self.pipeline.processes, *self.pipeline.projections]:
            wanted = process.process is not None and process.process.returncode not in (
                -9,  # killed by the chaos, restarted already, or removed
                -15,
                0,
            )
            if wanted and not process.alive:
                self.report.unexpected_deaths.append(f"{process.name}:\n{process.tail(20)}")
                process.start()

    # The checks ------------------------------------------------------------------------------

    def _check(self, submitted: list[Submitted]) -> None:
        pipeline, report = self.pipeline, self.report
        report.requests = len(submitted)
        report.results = sum(len(results) for _, results in submitted)
        report.partition_takeovers = sum(
            len(re.findall(r"partition \d+ ready", p.log_path.read_text(errors="replace")))
            for p in pipeline.processes
        )
        report.aborted_results = sum(
            aborted_results(pipeline.bootstrap, pipeline.topics, pipeline.partitions).values()
        )
        verdicts = report.verdicts
        verdicts.append(
            verdict(
                "the client saw one result per request",
                lambda: f"{report.requests} requests, one result per event each",
            )
        )
        verdicts.append(
            verdict(
                "one result per request in the results topic",
                lambda: assert_one_result_per_request(pipeline, submitted),
            )
        )
        verdicts.append(
            verdict(
                "results and balances equal the reference ledger",
                lambda: assert_reference(pipeline, submitted),
            )
        )
        replayed = replay_events(pipeline.bootstrap, pipeline.topics, pipeline.partitions)
        for worker in pipeline.projections:
            if not worker.alive:
                worker.start()
            verdicts.append(
                verdict(
                    f"projection {worker.worker} equals the event log",
                    lambda url=worker.url: assert_projections_match(url, replayed),  # type: ignore[misc]
                )
            )
        verdicts.append(
            verdict(
                "audit clean",
                lambda: assert_audit_clean(
                    pipeline.bootstrap, pipeline.topics, pipeline.partitions
                ),
            )
        )
        verdicts.append(
            verdict(
                "no process died on its own",
                lambda: _none_died(report.unexpected_deaths),
            )
        )
        if report.applied[Fault.FREEZE_PROCESSOR]:
            verdicts.append(
                verdict("a resumed zombie tried to commit and was fenced", lambda: _fenced(report))
            )


def _none_died(deaths: list[str]) -> str:
    assert not deaths, "\n\n".join(deaths)
    return "none"


def _fenced(report: ChaosReport) -> str:
    # Without an attempt the fencing would be untested: the zombie had nothing in flight.
    assert report.fenced_attempts > 0, "no resumed zombie tried to commit"
    return f"{report.fenced_attempts} refused commits after SIGCONT"
