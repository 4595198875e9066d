"""Which worker answers what: the worker registry and the `Reads` the HTTP API reads through.

Registry. Every worker announces `{worker, url, partitions}` to the compacted one-partition
topic `<prefix>projection-workers` (key = worker name) whenever its assignment changes, and a
tombstone when it stops; every worker reads the whole topic, so each knows who owns which
events partition. During a rebalance two announcements may claim one partition for a moment
(the old owner has not re-announced yet): the later one in the topic wins. A dead worker's
claim stays until the group gives its partitions to someone who announces them (the later
claim); a read sent to it meanwhile fails to connect and is retried until the deadline.

Routing (`RoutedReads`). A read about an account or a transfer goes to the owner of
`partition_of(id, partitions)`: answered here when this worker owns it, else forwarded to the
owner's internal endpoint `POST /internal/projections/{op}`, which answers only from its own
partitions (never forwards: no loops) and says 409 `not_owner` if the partition moved; the
sender then waits for the registry to change and asks again. Lookups of many ids are grouped
by owner; the ledger-wide queries go to every owner and are merged (`projections.merge`).

Read-your-writes. Whoever answers from a partition first takes the partition's end offset
(`ProjectionWorker.end_offsets`, one ListOffsets request for all the partitions of the read)
and waits until it has folded that far; after `read_timeout_s` the read fails with
`ReadUnavailable` naming the partition (HTTP 503). A forwarded read takes the offsets when the
owner receives it: later than the read's start, so it sees at least as much.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

import aiohttp
from aiohttp import web
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # defined (and typed) here; admin re-exports it

from processors.setup import partition_count
from processors.store import decode_account, decode_transfer, encode_account, encode_transfer
from projections.filters import AccountFilter, BalanceEntry, BalancesAtOffset, QueryFilter
from projections.merge import in_request_order, merge_query_accounts, merge_query_transfers
from projections.model import PartitionProjection
from projections.worker import NotOwned, PartitionBehind, ProjectionWorker, WorkerFailed
from schemas import Account, Balances, PendingStatus, SettlementRequested, Transfer
from schemas.partitioning import partition_of
from schemas.topics import Topics

__all__ = [
    "INTERNAL_PREFIX",
    "Owner",
    "ReadUnavailable",
    "Registry",
    "RoutedReads",
    "add_internal_routes",
    "ensure_registry_topic",
    "registry_topic",
]

log = logging.getLogger("ledger.projections")

INTERNAL_PREFIX: Final = "/internal/projections"
_RETRY_PAUSE_S: Final = 0.05
T = TypeVar("T")


def registry_topic(topics: Topics) -> str:
    return f"{topics.prefix}projection-workers"


def ensure_registry_topic(bootstrap: str, topics: Topics, timeout_s: float = 30.0) -> str:
    """Create the registry topic (compacted, one partition) unless it exists."""
    name = registry_topic(topics)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if partition_count(admin, name) is None:
        config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=1, replication_factor=1, config=config)],
            operation_timeout=timeout_s,
        )
        try:
            futures[name].result(timeout=timeout_s)
        except Exception as exc:  # another worker may have created it meanwhile
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    deadline = time.monotonic() + timeout_s
    while partition_count(admin, name) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} did not appear within {timeout_s:.0f} s")
        time.sleep(0.1)
    return name


class ReadUnavailable(Exception):
    """A read cannot be answered now (HTTP 503): the message names the partition."""

    def __init__(self, partition: int, reason: str) -> None:
        super().__init__(f"partition {partition}: {reason}")
        self.partition = partition


@dataclass(frozen=True, slots=True)
class Owner:
    worker: str
    url: str


# ---------------------------------------------------------------------------------------------
# The registry


def _log_undelivered(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        log.warning("registry: an announcement was not delivered: %s", error)


class Registry:
    """Announces this worker's partitions and follows everyone's (see the module docstring)."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topic = registry_topic(topics)
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        # worker -> (registry offset of its latest announcement, url, partitions)
        self._entries: dict[str, tuple[int, str, frozenset[int]]] = {}
        self._owners: dict[int, Owner] = {}
        self.version = 0  # bumped on every record read: "has anything changed?"
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 0,
                "client.id": "ledger-projections-registry",
            }
        )

    def start(self) -> Registry:
        self._thread = threading.Thread(target=self._run, name="projections-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._producer.flush(10)

    def announce(self, worker: str, url: str, partitions: Iterable[int]) -> None:
        value = json.dumps({"worker": worker, "url": url, "partitions": sorted(partitions)})
        self._producer.produce(
            self.topic, value.encode(), worker.encode(), on_delivery=_log_undelivered
        )
        self._producer.poll(0)

    def retire(self, worker: str, timeout_s: float = 10.0) -> None:
        """A tombstone: this worker answers nothing any more."""
        self._producer.produce(self.topic, None, worker.encode())
        self._producer.flush(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self._caught_up.wait(timeout_s)

    def owner(self, partition: int) -> Owner | None:
        return self._owners.get(partition)

    def owners(self) -> dict[int, Owner]:
        with self._lock:
            return dict(self._owners)

    def claims(self, worker: str) -> frozenset[int] | None:
        with self._lock:
            entry = self._entries.get(worker)
        return None if entry is None else entry[2]

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"{self.topic}-reader",  # never commits: assign() only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 20,
            }
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                message = consumer.poll(0.1)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._caught_up.set()
                    else:
                        log.warning("registry consumer: %s", error)
                    continue
                self._record(message.offset() or 0, message.key(), message.value())
        finally:
            consumer.close()

    def _record(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        worker = key.decode()
        with self._lock:
            if value is None:
                self._entries.pop(worker, None)
            else:
                try:
                    entry = json.loads(value)
                    self._entries[worker] = (
                        offset, str(entry["url"]), frozenset(int(p) for p in entry["partitions"])
                    )  # fmt: skip
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("registry: ignoring a bad entry of %s: %s", worker, exc)
            # The latest claim of each partition wins.
            owners: dict[int, tuple[int, Owner]] = {}
            for name, (at, url, partitions) in self._entries.items():
                for p in partitions:
                    if p not in owners or owners[p][0] < at:
                        owners[p] = (at, Owner(name, url))
            self._owners = {p: owner for p, (_at, owner) in owners.items()}
            self.version += 1


# ---------------------------------------------------------------------------------------------
# The wire format of the internal endpoint: exact (records as the stores encode them).


def _account_out(account: Account) -> str:
    return encode_account(account).hex()


def _account_in(data: Any) -> Account:
    return decode_account(bytes.fromhex(data))


def _transfer_out(transfer: Transfer) -> str:
    return encode_transfer(transfer).hex()


def _transfer_in(data: Any) -> Transfer:
    return decode_transfer(bytes.fromhex(data))


class _NotOwnedHere(Exception):
    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = sorted(set(partitions))
        super().__init__(f"partitions {self.partitions} are not owned here")


# ---------------------------------------------------------------------------------------------
# Reads


class RoutedReads:
    """`projections.reads.Reads` over the workers of the ledger (see the module docstring)."""

    def __init__(
        self,
        worker: ProjectionWorker,
        registry: Registry,
        *,
        read_timeout_s: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        self.worker = worker
        self.registry = registry
        self.name = worker.config.worker
        self.partitions = worker.config.partitions
        self.read_timeout_s = read_timeout_s
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.read_timeout_s + 5),
                json_serialize=json.dumps,
            )
        return self._session

    # The Reads protocol -------------------------------------------------------------------------

    async def lookup_accounts(self, ids: list[int]) -> list[Account]:
        found = await self._by_ids("lookup_accounts", ids, self._parse_accounts)
        return in_request_order(ids, found)

    async def lookup_transfers(self, ids: list[int]) -> list[tuple[Transfer, PendingStatus]]:
        found = await self._by_ids("lookup_transfers", ids, self._parse_transfers)
        return in_request_order(ids, found)

    async def account_transfers(self, account_filter: AccountFilter) -> list[Transfer]:
        answer = await self._one(
            "account_transfers", account_filter.account_id, {"filter": asdict(account_filter)}
        )
        return [_transfer_in(t) for t in answer]

    async def account_balances(self, account_filter: AccountFilter) -> list[BalanceEntry]:
        answer = await self._one(
            "account_balances", account_filter.account_id, {"filter": asdict(account_filter)}
        )
        return [BalanceEntry(*entry) for entry in answer]

    async def account_versions(self, account_id: int) -> list[Account]:
        answer = await self._one("account_versions", account_id, {"account_id": account_id})
        return [_account_in(a) for a in answer]

    async def settlements(self, account_id: int) -> list[SettlementRequested]:
        answer = await self._one("settlements", account_id, {"account_id": account_id})
        return [SettlementRequested(*s) for s in answer]

    async def balances_at(self, account_id: int, timestamp: int) -> Balances | None:
        answer = await self._one(
            "balances_at", account_id, {"account_id": account_id, "timestamp": timestamp}
        )
        return None if answer is None else Balances(*answer)

    async def balances_at_offset(self, account_id: int, offset: int) -> BalancesAtOffset | None:
        answer = await self._one(
            "balances_at_offset", account_id, {"account_id": account_id, "offset": offset}
        )
        if answer is None:
            return None
        balances, timestamp, partition, at = answer
        return BalancesAtOffset(Balances(*balances), timestamp, partition, at)

    async def query_accounts(self, query_filter: QueryFilter) -> list[Account]:
        answers = await self._everywhere("query_accounts", {"filter": asdict(query_filter)})
        return merge_query_accounts(
            ([_account_in(a) for a in answer] for answer in answers), query_filter
        )

    async def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]:
        answers = await self._everywhere("query_transfers", {"filter": asdict(query_filter)})
        return merge_query_transfers(
            ([_transfer_in(t) for t in answer] for answer in answers), query_filter
        )

    async def wait_for_sequence(self, partitions: list[int], sequence: int) -> None:
        """Poll the owners of `partitions` (each catching up with its end offset first) until
        each has folded the decision at `sequence`; ReadUnavailable at the read deadline."""
        deadline = time.monotonic() + self.read_timeout_s
        remaining = sorted(set(partitions))
        while remaining:
            folded: dict[int, int] = {}
            for answer in await self._route("applied_sequence", {}, remaining, lambda _ps: {}):
                folded.update({int(p): int(s) for p, s in answer.items()})
            remaining = [p for p in remaining if folded.get(p, -1) < sequence]
            if remaining:
                if time.monotonic() >= deadline:
                    raise ReadUnavailable(
                        remaining[0], f"it has not folded sequence {sequence} in time"
                    )
                await asyncio.sleep(_SEQUENCE_POLL_S)

    # Answering from this worker's partitions (also what the internal endpoint runs) ---------

    async def answer_locally(self, op: str, args: dict[str, Any], partitions: list[int]) -> Any:
        """Answer `op` from `partitions`, all of them owned here, after catching up with their
        end offsets now. Raises _NotOwnedHere, or ReadUnavailable."""
        owned = self.worker.owned()
        if not set(partitions) <= owned:
            raise _NotOwnedHere(set(partitions) - owned)
        try:
            targets = await self.worker.end_offsets(partitions)
        except Exception as exc:  # the broker did not answer ListOffsets
            raise ReadUnavailable(partitions[0], f"cannot read its end offset: {exc}") from exc
        try:
            await self.worker.wait_positions(targets, self.read_timeout_s)
            return await asyncio.to_thread(self._query, op, args, partitions)
        except NotOwned as exc:
            raise _NotOwnedHere([exc.partition]) from exc
        except PartitionBehind as exc:
            raise ReadUnavailable(exc.partition, str(exc)) from exc
        except WorkerFailed as exc:
            raise ReadUnavailable(partitions[0], str(exc)) from exc

    def _query(self, op: str, args: dict[str, Any], partitions: list[int]) -> Any:
        handler: Callable[[PartitionProjection, dict[str, Any]], Any] = _OPS[op]
        if op in _MERGED_OPS:  # one answer per partition, merged by the caller
            answers = []
            for p in partitions:
                with self.worker.borrow(p) as projection:
                    answers.append(handler(projection, args))
            return _merge_local(op, answers, args)
        if op in _PER_PARTITION_OPS:  # one value per partition, by partition
            per_partition: dict[str, Any] = {}
            for p in partitions:
                with self.worker.borrow(p) as projection:
                    per_partition[str(p)] = handler(projection, args)
            return per_partition
        if op in _ID_OPS:  # ids of several partitions: one dict per partition, joined
            joined: dict[str, Any] = {}
            by_partition = _group(args["ids"], lambda i: partition_of(i, self.partitions))
            for p, ids in by_partition.items():
                with self.worker.borrow(p) as projection:
                    joined.update(handler(projection, {"ids": ids}))
            return joined
        (p,) = partitions
        with self.worker.borrow(p) as projection:
            return handler(projection, args)

    # Routing --------------------------------------------------------------------------------

    async def _one(self, op: str, key: int, args: dict[str, Any]) -> Any:
        partition = partition_of(key, self.partitions) if 0 <= key < 1 << 128 else 0
        (answer,) = await self._route(op, args, [partition], lambda _p: args)
        return answer

    async def _by_ids(
        self, op: str, ids: list[int], parse: Callable[[Any], dict[int, T]]
    ) -> dict[int, T]:
        valid = sorted({i for i in ids if 0 <= i < 1 << 128})
        if not valid:
            return {}
        by_partition = _group(valid, lambda i: partition_of(i, self.partitions))

        def args_for(partitions: list[int]) -> dict[str, Any]:
            return {"ids": [i for p in partitions for i in by_partition[p]]}

        found: dict[int, T] = {}
        for answer in await self._route(op, {}, sorted(by_partition), args_for):
            found.update(parse(answer))
        return found

    async def _everywhere(self, op: str, args: dict[str, Any]) -> list[Any]:
        return await self._route(op, args, list(range(self.partitions)), lambda _p: args)

    async def _route(
        self,
        op: str,
        args: dict[str, Any],
        partitions: list[int],
        args_for: Callable[[list[int]], dict[str, Any]],
    ) -> list[Any]:
        """One answer per owner of `partitions`, each over that owner's share, retried on
        ownership changes until the read's deadline."""
        deadline = time.monotonic() + self.read_timeout_s
        answers: list[Any] = []
        remaining = list(partitions)
        while remaining:
            groups = await self._owners_of(remaining, deadline)
            calls = [self._ask(owner, op, args_for(ps), ps) for owner, ps in groups.items()]
            results = await asyncio.gather(*calls, return_exceptions=True)
            retry: list[int] = []
            version = self.registry.version
            for (_owner, ps), result in zip(groups.items(), results, strict=True):
                if isinstance(result, _NotOwnedHere | aiohttp.ClientConnectionError):
                    retry.extend(ps)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    answers.append(result)
            if retry:
                if time.monotonic() >= deadline:
                    raise ReadUnavailable(retry[0], "its owner kept moving or did not answer")
                await self._registry_changed(version, deadline)
            remaining = retry
        return answers

    async def _ask(self, owner: Owner | None, op: str, args: dict[str, Any], ps: list[int]) -> Any:
        if owner is None:  # this worker
            return await self.answer_locally(op, args, ps)
        body = {"args": args, "partitions": ps}
        async with self._http().post(
            f"{owner.url}{INTERNAL_PREFIX}/{op}", json=body, headers=self._headers
        ) as response:
            payload = await response.json(loads=json.loads)
            if response.status == 200:
                return payload["result"]
            if response.status == 409:
                raise _NotOwnedHere(payload.get("partitions", ps))
            if response.status == 503:
                raise ReadUnavailable(int(payload.get("partition", ps[0])), payload["error"])
            raise RuntimeError(f"worker {owner.worker} answered {response.status}: {payload}")

    async def _owners_of(
        self, partitions: list[int], deadline: float
    ) -> dict[Owner | None, list[int]]:
        """Partitions grouped by owner (None: this worker), waiting for unknown owners."""
        while True:
            owned = self.worker.owned()
            groups: dict[Owner | None, list[int]] = {}
            missing = None
            for p in partitions:
                if p in owned:
                    groups.setdefault(None, []).append(p)
                    continue
                owner = self.registry.owner(p)
                if owner is None or owner.worker == self.name:  # unknown, or our stale claim
                    missing = p
                    break
                groups.setdefault(owner, []).append(p)
            if missing is None:
                return groups
            if time.monotonic() >= deadline:
                raise ReadUnavailable(missing, "no projection worker owns it")
            await asyncio.sleep(_RETRY_PAUSE_S)

    async def _registry_changed(self, version: int, deadline: float) -> None:
        # A moved partition shows up as a new announcement; a short pause either way.
        while self.registry.version == version and time.monotonic() < deadline:
            await asyncio.sleep(_RETRY_PAUSE_S)

    @staticmethod
    def _parse_accounts(answer: Any) -> dict[int, Account]:
        return {int(i): _account_in(a) for i, a in answer.items()}

    @staticmethod
    def _parse_transfers(answer: Any) -> dict[int, tuple[Transfer, PendingStatus]]:
        return {int(i): (_transfer_in(t), PendingStatus(s)) for i, (t, s) in answer.items()}


def _group(ids: Iterable[int], key: Callable[[int], int]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for i in ids:
        grouped.setdefault(key(i), []).append(i)
    return grouped


# The queries, over one partition, with their answers in wire form.


def _lookup_accounts(projection: PartitionProjection, args: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for i in args["ids"]:
        account = projection.account(i)
        if account is not None:
            found[str(i)] = _account_out(account)
    return found


def _lookup_transfers(projection: PartitionProjection, args: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for i in args["ids"]:
        hit = projection.transfer(i)
        if hit is not None:
            found[str(i)] = (_transfer_out(hit[0]), int(hit[1]))
    return found


def _account_transfers(projection: PartitionProjection, args: dict[str, Any]) -> list[str]:
    return [_transfer_out(t) for t in projection.account_transfers(AccountFilter(**args["filter"]))]


def _account_balances(projection: PartitionProjection, args: dict[str, Any]) -> list[Any]:
    entries = projection.account_balances(AccountFilter(**args["filter"]))
    return [
        [e.timestamp, e.debits_pending, e.debits_posted, e.credits_pending, e.credits_posted]
        for e in entries
    ]


def _account_versions(projection: PartitionProjection, args: dict[str, Any]) -> list[str]:
    return [_account_out(a) for a in projection.account_versions(args["account_id"])]


def _settlements(projection: PartitionProjection, args: dict[str, Any]) -> list[Any]:
    return [
        [s.account_id, s.transfer_id, s.amount, s.balance, s.timestamp]
        for s in projection.settlements(args["account_id"])
    ]


def _balances_at(projection: PartitionProjection, args: dict[str, Any]) -> Any:
    b = projection.balances_at(args["account_id"], args["timestamp"])
    if b is None:
        return None
    return [b.account_id, b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted]


def _balances_at_offset(projection: PartitionProjection, args: dict[str, Any]) -> Any:
    found = projection.balances_at_offset(args["account_id"], args["offset"])
    if found is None:
        return None
    b = found.balances
    balances = [
        b.account_id,
        b.debits_pending,
        b.debits_posted,
        b.credits_pending,
        b.credits_posted,
    ]
    return [balances, found.timestamp, found.partition, found.offset]


def _query_accounts(projection: PartitionProjection, args: dict[str, Any]) -> list[Account]:
    return projection.query_accounts(QueryFilter(**args["filter"]))


def _query_transfers(projection: PartitionProjection, args: dict[str, Any]) -> list[Transfer]:
    return projection.query_transfers(QueryFilter(**args["filter"]))


def _merge_local(op: str, answers: list[Any], args: dict[str, Any]) -> list[str]:
    # An owner merges its partitions' answers (sorted and cut at the limit, so merging the
    # owners' merged answers again gives the ledger's answer).
    f = QueryFilter(**args["filter"])
    if op == "query_accounts":
        return [_account_out(a) for a in merge_query_accounts(answers, f)]
    return [_transfer_out(t) for t in merge_query_transfers(answers, f)]


_OPS: Final[dict[str, Callable[[PartitionProjection, dict[str, Any]], Any]]] = {
    "lookup_accounts": _lookup_accounts,
    "lookup_transfers": _lookup_transfers,
    "account_transfers": _account_transfers,
    "account_balances": _account_balances,
    "account_versions": _account_versions,
    "settlements": _settlements,
    "balances_at": _balances_at,
    "balances_at_offset": _balances_at_offset,
    "query_accounts": _query_accounts,
    "query_transfers": _query_transfers,
    "applied_sequence": lambda projection, _args: projection.applied_sequence(),
    # [applied offset, content hash] from one snapshot: what `ledger replay` compares with.
    "content_hash": lambda projection, _args: list(projection.content_hash()),
}
_MERGED_OPS: Final = frozenset({"query_accounts", "query_transfers"})
_PER_PARTITION_OPS: Final = frozenset({"applied_sequence", "content_hash"})
_SEQUENCE_POLL_S: Final = 0.002
_ID_OPS: Final = frozenset({"lookup_accounts", "lookup_transfers"})


# ---------------------------------------------------------------------------------------------
# The internal endpoint and the 503 mapping, added to the API's application.


def _bad_internal_read(exc: BaseException) -> web.Response:
    reason = f"{type(exc).__name__}: {exc}"[:500]
    return web.json_response({"error": f"bad internal read: {reason}", "field": None}, status=400)


def add_internal_routes(app: web.Application, reads: RoutedReads) -> None:
    """Serve `POST /internal/projections/{op}` (answers from this worker's partitions only)
    and turn ReadUnavailable from any handler into 503 naming the partition."""

    async def internal(request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in _OPS:
            return web.json_response({"error": f"unknown read {op!r}"}, status=404)
        try:
            body = json.loads(await request.read())
            args = body["args"]
            partitions = [int(p) for p in body["partitions"]]
            if not isinstance(args, dict) or not partitions:
                raise ValueError("args must be an object and partitions a non-empty list")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return _bad_internal_read(exc)
        try:
            result = await reads.answer_locally(op, args, partitions)
        except _NotOwnedHere as exc:
            return web.json_response(
                {"error": "not_owner", "partitions": exc.partitions}, status=409
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Arguments of the wrong shape (peers send the right one; this port is public).
            return _bad_internal_read(exc)
        return web.json_response({"result": result}, dumps=json.dumps)

    @web.middleware
    async def unavailable(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ReadUnavailable as exc:
            return web.json_response(
                {"error": str(exc), "field": None, "partition": exc.partition}, status=503
            )

    # Innermost: it sees ReadUnavailable before the API's catch-all turns it into a 500.
    app.middlewares.append(unavailable)
    app.router.add_post(INTERNAL_PREFIX + "/{op}", internal)
