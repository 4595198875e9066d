"""The ``ledger`` command line.

Each command group lives in a ``register_*`` function that adds its sub-parser(s) and sets
``handler`` (a ``Callable[[argparse.Namespace], int]`` returning the exit code) on them. To add
a command, write such a function (here or in another module) and append it to ``REGISTRARS``.
Expected failures are raised as :class:`CliError` (or :class:`BrokerError`) and printed as one
line on stderr with a non-zero exit code, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from processors.kafka_broker import (
    ENV_BOOTSTRAP,
    BrokerError,
    BrokerInfo,
    LocalBroker,
    ensure_broker,
)
from processors.settings import LedgerEnvironment

__all__ = ["REGISTRARS", "CliError", "Registrar", "build_parser", "main"]

# A registrar adds its sub-parser(s) to the `ledger` parser's subcommands.
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class CliError(Exception):
    """A user-facing failure: printed as ``ledger: error: <message>``, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------
# ledger kafka start | stop | status


def _broker_from_args(args: argparse.Namespace) -> LocalBroker:
    return LocalBroker(
        data_dir=args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        start_timeout_s=args.timeout,
    )


def _warn_if_external() -> None:
    external = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if external:
        print(
            f"note: {ENV_BOOTSTRAP}={external} is set, so the ledger uses that broker, "
            "not this local one",
            file=sys.stderr,
        )


def _print_started(info: BrokerInfo) -> None:
    if info.reused:
        print(f"Kafka broker already running (pid {info.pid}) at {info.bootstrap}; reusing it")
    else:
        print(
            f"Kafka broker started (pid {info.pid}) at {info.bootstrap} in {info.startup_s:.1f} s"
        )
    print(f"  data: {info.data_dir}/kafka")
    print(f"  log:  {info.log_file}")


def _kafka_start(args: argparse.Namespace) -> int:
    _warn_if_external()
    _print_started(_broker_from_args(args).start())
    return 0


def _kafka_stop(args: argparse.Namespace) -> int:
    broker = _broker_from_args(args)
    if broker.stop():
        print(f"Kafka broker stopped (data kept in {broker.kafka_dir})")
    else:
        print(f"no Kafka broker running for {broker.data_dir}")
    return 0


def _kafka_status(args: argparse.Namespace) -> int:
    _warn_if_external()
    status = _broker_from_args(args).status()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    elif not status.has_state:
        print(f"not running (no broker state in {status.state_file})")
    elif not status.pid_alive:
        print(f"not running (stale state: pid {status.pid} is gone; `ledger kafka start` fixes it)")
    else:
        verdict = "running" if status.answers else "NOT ANSWERING"
        uptime = ""
        if status.started_at is not None:
            uptime = f", up {time.time() - status.started_at:.0f} s"
        print(f"{verdict}: pid {status.pid}{uptime}, Kafka {status.kafka_version}")
        print(f"  bootstrap:       {status.bootstrap}")
        print(f"  controller port: {status.controller_port}")
        print(f"  data:            {status.data_dir}/kafka")
        print(f"  log:             {status.log_file}")
    return 0 if status.running else 3  # 3: "not running", as LSB init scripts report it


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (default: $LEDGER_DATA_DIR or ~/.local/share/ledger)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="client port (default: $LEDGER_KAFKA_PORT or 19092)"
    )
    parser.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: $LEDGER_KAFKA_CONTROLLER_PORT or 19093)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the broker to answer (default: 120)",
    )


def register_kafka(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser(
        "kafka",
        help="manage the local single-node Kafka broker",
        description="Manage the local single-node Kafka broker (KRaft, jars from Maven Central).",
    )
    actions = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the broker, or reuse the running one")
    start.set_defaults(handler=_kafka_start)
    stop = actions.add_parser("stop", help="stop the broker (SIGTERM, then SIGKILL)")
    stop.set_defaults(handler=_kafka_stop)
    status = actions.add_parser("status", help="show the broker; exit 3 when it is not running")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_kafka_status)
    for parser in (start, stop, status):
        _add_broker_options(parser)


# --------------------------------------------------------------------------------------------
# ledger up


def _up(args: argparse.Namespace) -> int:
    from processors.setup import TopicsError
    from processors.supervisor import SupervisorError
    from processors.up import start_stack, wait_for_signal

    try:
        environment = LedgerEnvironment.from_env()
        stack = start_stack(environment)
    except (ValueError, SupervisorError, TopicsError) as exc:
        raise CliError(str(exc)) from exc
    print(
        f"ledger ready: {stack.url} (Kafka {stack.bootstrap}, topics "
        f"{environment.topics.prefix}*, {environment.partitions} partitions, data in "
        f"{environment.data_dir}); Ctrl-C stops it",
        flush=True,
    )
    return wait_for_signal(stack)


def register_up(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up",
        help="run the whole ledger locally: broker, processors, projections, HTTP API",
        description=(
            f"Run the ledger until Ctrl-C or SIGTERM. Uses {ENV_BOOTSTRAP} when set, otherwise "
            "starts (or reuses) the local Kafka broker. Honours LEDGER_TOPIC_PREFIX, "
            "LEDGER_DATA_DIR, LEDGER_HTTP_PORT (default 8080) and LEDGER_PARTITIONS (default "
            "8); data survives restarts."
        ),
    )
    up.set_defaults(handler=_up)


# --------------------------------------------------------------------------------------------
# ledger demo


def _demo(args: argparse.Namespace) -> int:
    from processors.demo import run_demo
    from processors.supervisor import SupervisorError

    try:
        return run_demo()
    except SupervisorError as exc:
        raise CliError(str(exc)) from exc


def register_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="bring the ledger up, run a small realistic workload, print the balances",
        description=(
            "Start the ledger (as `ledger up` does), create accounts with policies and limits, "
            "fund them, run card payments, a two-phase payment, a linked chain and a rejected "
            "overdraft, print the balances, and stop. Idempotent: run it twice."
        ),
    )
    demo.set_defaults(handler=_demo)


# --------------------------------------------------------------------------------------------
# ledger submit | show


def _environment() -> tuple[LedgerEnvironment, str]:
    """The ledger's settings from the environment (a bad one is a CliError naming it) and the
    broker to use (the local one, started if need be, when none is configured)."""
    try:
        environment = LedgerEnvironment.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return environment, ensure_broker()


def _submit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from processors.files import FileProblem, submit_file
    from producers import LedgerClient, LedgerClientError

    console = Console()
    environment, bootstrap = _environment()
    try:
        with LedgerClient(bootstrap, environment.topics.prefix) as client:
            statuses = submit_file(client, args.file, args.kind, args.batch_size, console)
    except (FileProblem, LedgerClientError, OSError) as exc:
        raise CliError(str(exc)) from exc
    summary = ", ".join(f"{count} {status}" for status, count in statuses.most_common())
    console.print(f"{sum(statuses.values())} {args.kind}: {summary or 'none'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import urllib.error

    from rich.console import Console

    from processors.files import show_account

    url = args.url or f"http://127.0.0.1:{LedgerEnvironment.from_env().http_port}"
    try:
        found = show_account(
            url.rstrip("/"), args.account_id, Console(), args.limit, args.as_of, args.as_of_offset
        )
    except urllib.error.HTTPError as exc:  # the API refused the request: say why
        answer = exc.read().decode(errors="replace")
        raise CliError(f"the HTTP API answered {exc.code}: {answer}") from None
    except OSError as exc:
        raise CliError(f"cannot reach the HTTP API at {url}: {exc}; is the ledger up?") from exc
    if not found:
        when = ""
        if args.as_of is not None:
            when = f" at timestamp {args.as_of}"
        elif args.as_of_offset is not None:
            when = f" at offset {args.as_of_offset} of its events partition"
        raise CliError(f"account {args.account_id} does not exist{when}")
    return 0


def register_files(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="submit accounts or transfers from a JSON-lines file (one object per line)",
        description=(
            "Submit a JSON-lines file of accounts or transfers (the HTTP API's field names; "
            "numbers or decimal strings; flags as a number or a list of names), in batches, "
            "with a progress bar and a summary of the results."
        ),
    )
    submit.add_argument("kind", choices=["accounts", "transfers"])
    submit.add_argument("file", type=Path)
    submit.add_argument("--batch-size", type=int, default=1000, help="events per request")
    submit.set_defaults(handler=_submit)
    show = subparsers.add_parser(
        "show", help="show an account's balances, latest transfers and versions"
    )
    show.add_argument("account_id", type=int)
    show.add_argument("--limit", type=int, default=20, help="transfers to show")
    show.add_argument("--url", default=None, help="HTTP API (default 127.0.0.1:$LEDGER_HTTP_PORT)")
    point = show.add_mutually_exclusive_group()
    point.add_argument(
        "--as-of", type=int, default=None, metavar="TIMESTAMP",
        help="only the balances as of this timestamp (nanoseconds)",
    )  # fmt: skip
    point.add_argument(
        "--as-of-offset", type=int, default=None, metavar="OFFSET",
        help="only the balances as of this offset of the events partition owning the account",
    )  # fmt: skip
    show.set_defaults(handler=_show)


# --------------------------------------------------------------------------------------------
# ledger audit | replay


def _audit(args: argparse.Namespace) -> int:
    from projections.audit import audit_log

    environment, bootstrap = _environment()
    started_s = time.perf_counter()
    report = audit_log(bootstrap, environment.topics, environment.partitions, args.settle_timeout)
    elapsed_s = time.perf_counter() - started_s
    for violation in report.violations[: args.limit]:
        print(f"VIOLATION {violation}")
    if len(report.violations) > args.limit:
        print(f"... and {len(report.violations) - args.limit} more violations")
    counts = report.counts()
    verdict = "clean" if report.ok else f"{len(report.violations)} VIOLATIONS"
    print(
        f"audit of {environment.topics.prefix}* ({environment.partitions} partitions): "
        f"{verdict}; {counts['events']} events ({counts['log_events']} in the log), "
        f"{counts['accounts']} accounts, {counts['transfers']} transfers, "
        f"{counts['commands']} requests, {counts['results']} results, "
        f"{counts['dead_letters']} dead letters, in {elapsed_s:.1f} s"
    )
    print(json.dumps({"ok": report.ok, **counts, "seconds": round(elapsed_s, 3)}))
    return 0 if report.ok else 1


def _replay(args: argparse.Namespace) -> int:
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from projections.cli import api_keys_from_env
    from projections.replay import replay, total_offsets

    environment, bootstrap = _environment()
    topics, partitions = environment.topics, environment.partitions
    keys = api_keys_from_env()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ledger-replay-") as scratch:
        into = args.into if args.into is not None else Path(scratch)
        if into.exists() and any(into.iterdir()):
            raise CliError(f"--into {into}: not empty; a replay needs a fresh directory")
        columns = (
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[events]}"),
            TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(
                "replaying", total=total_offsets(bootstrap, topics, partitions), events="0 events"
            )

            def advance(offsets_done: int, events: int) -> None:
                progress.update(task, completed=offsets_done, events=f"{events:,} events")

            try:
                result = replay(
                    bootstrap, topics, partitions, into, compare=not args.no_compare,
                    api_key=min(keys) if keys else None, on_progress=advance,
                )  # fmt: skip
            except ConnectionError as exc:
                raise CliError(str(exc)) from exc
            progress.update(task, completed=progress.tasks[0].total)
    for p in range(partitions):
        line = f"partition {p}: offset {result.offsets[p]} hash {result.hashes[p][:16]}"
        live = result.live.get(p)
        if live is None:
            line += " (no live projection to compare)"
        elif p in result.mismatches():
            line += (
                f" MISMATCH: worker {live.worker} has offset {live.offset} hash "
                f"{live.content_hash[:16]}"
            )
        else:
            line += f" = worker {live.worker}"
        print(line)
    print(
        f"replayed {result.events:,} events ({result.messages:,} messages) in "
        f"{result.seconds:.2f} s = {result.events_per_s:,.0f} events/s"
    )
    print(json.dumps(result.summary()))
    return 1 if result.mismatches() else 0


def register_audit(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="read the whole log and verify every invariant; exit 1 on any violation",
        description=(
            "Read the events, commands, results and dead-letter topics from the beginning "
            "(committed data only) and check: balanced ledgers at every event, limits, "
            "contiguous account versions, pending transfers resolved at most once, justified "
            "settlement requests, one result per request (docs/AUDIT.md). Each violation names "
            "the account, transfer or request and its log position. Honours "
            "LEDGER_KAFKA_BOOTSTRAP, LEDGER_TOPIC_PREFIX and LEDGER_PARTITIONS."
        ),
    )
    audit.add_argument("--limit", type=int, default=50, help="violations to print")
    audit.add_argument(
        "--settle-timeout", type=float, default=10.0, metavar="SECONDS",
        help="when only work in flight shows (a result or an event copy not written yet), "
        "read the log again for this long (default 10)",
    )  # fmt: skip
    audit.set_defaults(handler=_audit)
    replay = subparsers.add_parser(
        "replay",
        help="rebuild every projection from offset 0 and compare it with the live ones",
        description=(
            "Ask each live projection worker for its partitions' applied offset and content "
            "hash (from one snapshot), replay each events partition from offset 0 exactly up to "
            "that offset into a fresh store (partitions without a live worker: up to their end), "
            "and compare the hashes; exit 1 naming any partition that differs. The last line is "
            "one JSON object (events, seconds, events_per_s, partitions, matches)."
        ),
    )
    replay.add_argument(
        "--into", type=Path, default=None, help="build the stores here (default: a temporary dir)"
    )
    replay.add_argument(
        "--no-compare", action="store_true", help="only rebuild and hash, ask no live worker"
    )
    replay.set_defaults(handler=_replay)


# --------------------------------------------------------------------------------------------
# ledger processor


def _processor(args: argparse.Namespace) -> int:
    import signal
    import threading

    from processors.service import ENV_ALLOW_CLOCK_CONTROL, ProcessorService, ServiceConfig
    from processors.setup import TopicsError, ensure_topics

    environment, bootstrap = _environment()
    try:
        ensure_topics(bootstrap, environment.topics, environment.partitions)
    except TopicsError as exc:
        raise CliError(str(exc)) from exc
    data_dir = (args.data_dir or environment.data_dir) / "processors" / f"instance-{args.instance}"
    service = ProcessorService(
        ServiceConfig(
            bootstrap=bootstrap,
            data_dir=data_dir,
            partitions=environment.partitions,
            topics=environment.topics,
            instance=args.instance,
            allow_clock_control=os.environ.get(ENV_ALLOW_CLOCK_CONTROL) == "1",
            # Unset options keep ServiceConfig's defaults.
            **{
                name: value
                for name in ("session_timeout_ms", "transaction_timeout_ms", "step_bytes_max")
                if (value := getattr(args, name)) is not None
            },
        )
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"processor {args.instance} running: {bootstrap}, topics {environment.topics.prefix}*, "
        f"{environment.partitions} partitions, state in {data_dir}",
        flush=True,
    )
    service.run(stop)
    return 0


def register_processor(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    processor = subparsers.add_parser(
        "processor",
        help="run one processor instance (owns the commands partitions its group assigns it)",
        description=(
            "Run one single-writer processor instance until SIGINT/SIGTERM. Instances with "
            "different --instance names share the partitions through the consumer group."
        ),
    )
    processor.add_argument(
        "--instance", default="0", help="stable instance name (names its transactional id)"
    )
    processor.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $LEDGER_DATA_DIR)"
    )
    processor.add_argument(
        "--step-bytes-max",
        type=int,
        default=None,
        help="commands (bytes) one transaction takes at most (default 4 MiB); the rest waits",
    )
    processor.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="consumer group session: a frozen instance loses its partitions after this long "
        "(default 10000; the broker's group.min.session.timeout.ms, 6000, is the floor)",
    )
    processor.add_argument(
        "--transaction-timeout-ms",
        type=int,
        default=None,
        help="the coordinator aborts a transaction left open this long, e.g. a dead "
        "instance's (default 10000)",
    )
    processor.set_defaults(handler=_processor)


# --------------------------------------------------------------------------------------------
# ledger bench core


def _bench(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A benchmark's handler: its bad parameters (ValueError) are the CLI's usage errors."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as exc:
            raise CliError(str(exc)) from exc

    return handler


def register_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from processors import bench_broker, bench_core, bench_pipeline

    bench = subparsers.add_parser(
        "bench",
        help="benchmarks (the last line printed is one JSON object)",
        description=bench_pipeline.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_pipeline.add_arguments(bench)
    bench.set_defaults(handler=_bench(bench_pipeline.run))
    kinds = bench.add_subparsers(dest="bench_command", metavar="KIND")
    for name, module, summary in (
        ("core", bench_core, "the ledger rules alone, in memory, on one core"),
        ("broker", bench_broker, "what the broker costs per produce request, fetch, transaction"),
    ):
        kind = kinds.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(kind)
        kind.set_defaults(handler=_bench(module.run))


# --------------------------------------------------------------------------------------------
# Entry point

REGISTRARS: list[Registrar] = [
    register_up,
    register_demo,
    register_kafka,
    register_processor,
    register_files,
    register_bench,
    register_audit,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledger", description="Event-sourced double-entry ledger over Apache Kafka."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    # librdkafka's own chatter (connection refused while a broker boots) is not for users.
    logging.getLogger("ledger.kafka.librdkafka").setLevel(logging.CRITICAL)
    handler: Any = args.handler
    try:
        return int(handler(args))
    except (CliError, BrokerError) as exc:
        print(f"ledger: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else 1
    except KeyboardInterrupt:
        print("ledger: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
