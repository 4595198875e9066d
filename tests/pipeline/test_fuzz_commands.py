"""Fuzzing the commands topic (SPEC §7, issue 5): thousands of malformed messages, with and
without `submitter`/`request-id` headers (and with garbled ones), interleaved with requests of a
real `LedgerClient`, against a real processor process on the real broker.

Each hypothesis example is one round: its malformed messages go to random partitions, then one
request goes through the client and its results are compared with the reference ledger's. The
round then checks that every malformed message has exactly one dead letter (matched by its
`source` position) with a reason, that every addressed one got its rejection, and that the
processor is alive. At the end the events topic replayed must equal the reference ledger fed
the client's requests alone: the malformed messages changed nothing.

Size: `LEDGER_FUZZ_ROUNDS` rounds (default 150) of 10 to `LEDGER_FUZZ_PER_ROUND` (default 40)
malformed messages: about 2,500 plus the fixed edge cases in CI, in about a minute. The long run
(docs/BAD_INPUT.md): LEDGER_FUZZ_ROUNDS=3000, about 50,000 messages.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from processors.ledger import MemoryState, ReferenceLedger
from processors.setup import MESSAGE_BYTES_MAX
from producers import LedgerClient
from schemas import Account, Transfer
from schemas.codec import decode_result_batch, encode_command_batch
from schemas.messages import AccountCommandKind, CommandBatch, Operation, ResultBatch
from schemas.topics import Topics, results_partition
from tests.pipeline import workload
from tests.pipeline.harness import (
    Pipeline,
    ProcessorProcess,
    Tail,
    headers_of,
    replay_events,
)
from tests.pipeline.malformed import (
    Malformed,
    content_invalid_requests,
    edge_cases,
    malformed_messages,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
ROUNDS = int(os.environ.get("LEDGER_FUZZ_ROUNDS", "150"))
PER_ROUND = int(os.environ.get("LEDGER_FUZZ_PER_ROUND", "40"))
SUBMITTER = "fuzz-submitter"  # the name addressed malformed messages carry
WAIT_S = 30.0

Headers = list[tuple[str, str | bytes | None]]

# Headers as a careless or hostile producer sets them: names the processor reads or writes
# (`reason` and `source` are the dead letter's own), values that are no request id.
_header_names = st.sampled_from(("submitter", "request-id", "reason", "source", "kind", "x"))
_header_values = st.one_of(
    st.sampled_from(
        (b"", b"-5", b" 12 ", b"1_000", b"\xff\xfe", b"9" * 60, b"facts", b"apply", b"clock")
    ),
    st.binary(max_size=24),
    st.integers(-(1 << 200), 1 << 200).map(lambda n: str(n).encode()),
)
_garbled_headers = st.lists(st.tuples(_header_names, _header_values), min_size=1, max_size=4)


@dataclass
class Sent:
    malformed: Malformed
    value: bytes  # as sent (a refused request stamped with SUBMITTER and its request id)
    position: tuple[int, int]  # (partition, offset)
    request_id: int | None  # set when addressed: a rejection is due


@dataclass
class Fuzz:
    bootstrap: str
    topics: Topics
    processor: ProcessorProcess
    client: LedgerClient
    reference: ReferenceLedger = field(default_factory=ReferenceLedger)
    sent: list[Sent] = field(default_factory=list)
    next_request_id: int = 1
    producer: Producer = field(init=False)
    dead_letters: Tail = field(init=False)
    rejections: Tail = field(init=False)
    letters: dict[str, list[Message]] = field(default_factory=dict)
    results: dict[int, list[ResultBatch]] = field(default_factory=dict)
    _letters_read: int = 0
    _results_read: int = 0

    def __post_init__(self) -> None:
        self.producer = Producer(
            {"bootstrap.servers": self.bootstrap, "message.max.bytes": MESSAGE_BYTES_MAX}
        )
        self.dead_letters = Tail(self.bootstrap, self.topics.dead_letters, 0)
        partition = results_partition(SUBMITTER, PARTITIONS)
        self.rejections = Tail(self.bootstrap, self.topics.results, partition)

    def send(self, messages: list[tuple[Malformed, Headers | None, int]]) -> list[Sent]:
        """Produce malformed messages; None headers: addressed to SUBMITTER with a fresh id."""
        delivered: dict[int, tuple[int, int]] = {}
        failures: list[KafkaError] = []
        batch: list[Sent] = []
        for number, (malformed, headers, partition) in enumerate(messages):
            request_id = None
            value = malformed.value
            if headers is None or malformed.refused is not None:
                request_id = self.next_request_id
                self.next_request_id += 1
            if headers is None:
                headers = [
                    ("submitter", SUBMITTER.encode()),
                    ("request-id", str(request_id).encode()),
                ]
            if malformed.refused is not None:  # addressed by its body, whatever the headers
                assert request_id is not None
                # ... as a request: a `kind` header would have it read as a protocol message
                headers = [(name, v) for name, v in headers if name != "kind"]
                stamped = replace(malformed.refused, submitter=SUBMITTER, request_id=request_id)
                value = encode_command_batch(stamped)

            def on_delivery(error: KafkaError | None, message: Message, n: int = number) -> None:
                if error is not None:
                    failures.append(error)
                else:
                    position = (message.partition(), message.offset())
                    assert position[0] is not None and position[1] is not None
                    delivered[n] = (position[0], position[1])

            self.producer.produce(
                self.topics.commands,
                value=value,
                partition=partition,
                headers=headers,
                on_delivery=on_delivery,
            )
            batch.append(Sent(malformed, value, (partition, -1), request_id))
        assert self.producer.flush(60) == 0 and not failures, failures
        for n, sent in enumerate(batch):
            sent.position = delivered[n]
        self.sent.extend(batch)
        return batch

    def source(self, position: tuple[int, int]) -> str:
        return f"{self.topics.commands}[{position[0]}]@{position[1]}"

    def _letters(self) -> dict[str, list[Message]]:
        """The dead letters read so far, by their `source` header."""
        messages = self.dead_letters.messages
        for message in messages[self._letters_read :]:
            for name, value in headers_of(message):
                if name == "source":
                    self.letters.setdefault(value.decode(), []).append(message)
        self._letters_read = len(messages)
        return self.letters

    def _rejected(self) -> dict[int, list[ResultBatch]]:
        """The results read so far for SUBMITTER, by request id."""
        messages = self.rejections.messages
        for message in messages[self._results_read :]:
            result = decode_result_batch(message.value() or b"")
            if result.submitter == SUBMITTER:
                self.results.setdefault(result.request_id, []).append(result)
        self._results_read = len(messages)
        return self.results

    def check_dead_letters(self, batch: list[Sent]) -> None:
        """Each message of `batch` has one dead letter, naming its source and a reason."""
        wanted = {self.source(s.position): s for s in batch}
        arrived = self.dead_letters.read(lambda: wanted.keys() <= self._letters().keys(), WAIT_S)
        found = self._letters()
        missing = [(src, wanted[src].malformed.how) for src in wanted if src not in found]
        assert arrived, f"no dead letter for {missing[:5]}\n{self.processor.tail()}"
        for src, sent in wanted.items():
            (letter,) = found[src]  # exactly one
            headers = headers_of(letter)
            names = Counter(name for name, _ in headers)
            assert names["reason"] == 1 and names["source"] == 1, (sent.malformed.how, headers)
            reason = dict(headers)["reason"]
            assert reason, sent.malformed.how
            value = letter.value() or b""
            # Kept whole, or (a message at the size limit) its beginning.
            assert sent.value.startswith(value), sent.malformed.how
            assert len(value) == len(sent.value) or len(value) > MESSAGE_BYTES_MAX // 2

    def check_rejections(self, batch: list[Sent]) -> None:
        """Each addressed message got one rejection naming the problem."""
        wanted = {s.request_id: s for s in batch if s.request_id is not None}
        arrived = self.rejections.read(lambda: wanted.keys() <= self._rejected().keys(), WAIT_S)
        rejected = self._rejected()
        assert arrived, f"no rejection for {sorted(wanted.keys() - rejected.keys())[:5]}"
        for request_id, sent in wanted.items():
            (result,) = rejected[request_id]  # exactly one
            assert result.results == []
            assert result.rejection, sent.malformed.how
            if sent.malformed.refused is None:
                assert result.rejection.startswith("malformed request: "), result.rejection

    def request(self, batch: CommandBatch) -> None:
        """One request through the client and the reference ledger: the same results."""
        client, reference = self.client, self.reference
        if batch.operation is Operation.CREATE_ACCOUNTS:
            got = [r.status for r in client.create_accounts(batch.accounts)]
            want = [r.status for r in reference.create_accounts([a.copy() for a in batch.accounts])]
            assert got == want, batch
        elif batch.operation is Operation.CREATE_TRANSFERS:
            got = [r.status for r in client.create_transfers(batch.transfers)]
            copies = [t.copy() for t in batch.transfers]
            want = [r.status for r in reference.create_transfers(copies)]
            assert got == want, batch
        else:
            command = batch.account_command
            assert command is not None
            result, expected = self._command(command.kind, command.account_id, batch)
            assert (result.status, result.version) == (expected.status, expected.version), batch

    def _command(self, kind: AccountCommandKind, account_id: int, batch: CommandBatch) -> tuple:  # type: ignore[type-arg]
        command = batch.account_command
        assert command is not None
        version = command.expected_version
        if kind is AccountCommandKind.FREEZE:
            return self.client.freeze(account_id, version), self.reference.freeze(
                account_id, version
            )
        if kind is AccountCommandKind.UNFREEZE:
            return (
                self.client.unfreeze(account_id, version),
                self.reference.unfreeze(account_id, version),
            )
        if kind is AccountCommandKind.CLOSE:
            return (
                self.client.close_account(account_id, version),
                self.reference.close(account_id, version),
            )
        assert command.settings is not None
        return (
            self.client.update_settings(account_id, command.settings, version),
            self.reference.update_settings(account_id, command.settings, version),
        )

    def close(self) -> None:
        self.dead_letters.close()
        self.rejections.close()
        self.client.close()


@pytest.fixture
def fuzz(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Fuzz]:
    pipeline = Pipeline.open(kafka_bootstrap, topic_prefix, tmp_path, PARTITIONS)
    processor = pipeline.processor("fuzz")
    client = LedgerClient(kafka_bootstrap, topic_prefix, timeout_s=WAIT_S)
    state = Fuzz(kafka_bootstrap, pipeline.topics, processor, client)
    try:
        yield state
    finally:
        state.close()
        pipeline.stop()


def _without_timestamps(state: MemoryState) -> tuple[dict[int, Account], dict[int, Transfer]]:
    """The ledger's contents; timestamps differ (wall clock vs the reference's counter)."""
    accounts = {account_id: account.copy() for account_id, account in state.accounts.items()}
    for account in accounts.values():
        account.timestamp = 0
    transfers = {transfer_id: t.copy() for transfer_id, t in state.transfers.items()}
    for transfer in transfers.values():
        transfer.timestamp = 0
    return accounts, transfers


def test_malformed_commands_never_stop_the_processor_nor_change_the_ledger(fuzz: Fuzz) -> None:
    fuzz.request(CommandBatch(0, "", Operation.CREATE_ACCOUNTS, accounts=workload.accounts()))
    fuzz.request(CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=workload.funding()))
    valid = workload.Workload(seed=5, lane=0)

    # The fixed edge cases once: full-size and oversized batches, the size limit.
    edges = fuzz.send([(case, None, n % PARTITIONS) for n, case in enumerate(edge_cases())])
    fuzz.check_dead_letters(edges)
    fuzz.check_rejections(edges)

    messages = st.lists(
        st.tuples(
            malformed_messages(),
            st.one_of(st.none(), st.just([]), _garbled_headers),
            st.integers(0, PARTITIONS - 1),
        ),
        min_size=PER_ROUND // 4,  # hypothesis keeps lists short unless told
        max_size=PER_ROUND,
    )
    requests = st.one_of(st.just(None), content_invalid_requests())

    @settings(
        max_examples=ROUNDS,
        deadline=None,
        database=None,
        # A failing round waits WAIT_S for what never comes: report it as found, unshrunk.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(messages, requests)
    def round_(
        batch: list[tuple[Malformed, Headers | None, int]], request: CommandBatch | None
    ) -> None:
        sent = fuzz.send(batch)
        if request is None:  # an ordinary workload request
            request = CommandBatch(0, "", Operation.CREATE_TRANSFERS, transfers=valid.batch())
        fuzz.request(request)
        fuzz.check_dead_letters(sent)
        fuzz.check_rejections(sent)
        assert fuzz.processor.process is not None
        assert fuzz.processor.process.poll() is None, fuzz.processor.tail()

    round_()

    # Nothing but the malformed messages was dead-lettered, each once.
    total = len(fuzz.sent)
    kinds = Counter(sent.malformed.kind for sent in fuzz.sent)
    print(f"{total} malformed messages: {dict(kinds.most_common())}")
    fuzz.dead_letters.read(lambda: len(fuzz.dead_letters.messages) >= total, 5)
    assert len(fuzz.dead_letters.messages) == total
    replayed = replay_events(fuzz.bootstrap, fuzz.topics, PARTITIONS)
    assert isinstance(fuzz.reference.state, MemoryState)
    assert _without_timestamps(replayed) == _without_timestamps(fuzz.reference.state)
    assert replayed.pending == fuzz.reference.state.pending
    assert replayed.failed == fuzz.reference.state.failed
