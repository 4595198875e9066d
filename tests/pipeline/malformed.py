"""Malformed commands for the fuzz tests (SPEC §7): hypothesis strategies of commands-topic
messages that no processor may execute, and of well-formed requests whose contents are invalid
(those get ordinary result codes, never dead letters).

A malformed message starts from a valid request encoded by the project's codec
(`schemas.codec.encode_command_batch`), or from the same bytes written field by field here (the
Avro binary encoding of `ledger.CommandBatch.v1`, so that one field at a time can be given a
wrong type, an out-of-range integer, an unknown enum or union index, ...), and is then
corrupted. `tests/pipeline/test_malformed_generator.py` proves the field-by-field writer gives
the codec's bytes for valid requests, and that every malformed message is refused by the
codec's decoder, the processors' own test of "malformed".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from processors.partition import request_problem
from processors.setup import MESSAGE_BYTES_MAX
from schemas import (
    BATCH_EVENTS_MAX,
    U128_MAX,
    UNSET,
    Account,
    AccountFlags,
    Policy,
    Transfer,
    TransferFlags,
    UpdateSettings,
)
from schemas.codec import (
    SUBMITTER_MAX,
    DecodeError,
    decode_command_batch,
    encode_checkpoint,
    encode_command_batch,
    encode_event_batch,
    encode_result_batch,
)
from schemas.messages import (
    AccountCommand,
    AccountCommandKind,
    Checkpoint,
    CommandBatch,
    EventBatch,
    Operation,
    ResultBatch,
)

__all__ = [
    "Malformed",
    "account_commands",
    "avro_string",
    "content_invalid_requests",
    "edge_cases",
    "encode_fields",
    "is_malformed",
    "malformed_messages",
    "valid_requests",
]

_MAGIC = b"L"
_HEADER = encode_command_batch(CommandBatch(0, "", Operation.CREATE_ACCOUNTS))[:9]
_OPERATIONS = len(Operation)
_KINDS = len(AccountCommandKind)
_POLICIES = len(Policy)


@dataclass(frozen=True)
class Malformed:
    """One commands-topic message value that must be dead-lettered, and how it was made.

    `refused` holds a well-formed request no ledger can execute (an operation with the wrong
    contents): the sender stamps its own submitter and request id on it and encodes it, and
    its rejection is addressed by the body, whatever the headers say."""

    value: bytes
    how: str  # "<kind>: <detail>", e.g. "field: transfer_u32 at transfers[0].ledger"
    refused: CommandBatch | None = None

    @property
    def kind(self) -> str:
        return self.how.split(":")[0]


def is_malformed(value: bytes) -> bool:
    """Refused by the codec, or (decoded) refused whole by the processors."""
    try:
        batch = decode_command_batch(value)
    except DecodeError:
        return True
    return request_problem(batch) is not None


# ---------------------------------------------------------------------------------------------
# Avro binary, written by hand (the specification's encoding, nothing from fastavro).


def zigzag(n: int) -> bytes:
    """An Avro int/long varint of any Python int (beyond 64 bits too: a corruption)."""
    u = ((-n) << 1) - 1 if n < 0 else n << 1
    out = bytearray()
    while True:
        byte = u & 0x7F
        u >>= 7
        if u:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _u64(n: int) -> bytes:
    return zigzag(n - ((n >> 63) << 64))


def _fixed(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _bytes(raw: bytes) -> bytes:
    return zigzag(len(raw)) + raw


def avro_string(text: str) -> bytes:
    return _bytes(text.encode())


def _signed(value: int) -> bytes:
    length = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return value.to_bytes(length, "big", signed=True)


def _optional(encoded: bytes | None) -> bytes:
    return b"\x00" if encoded is None else b"\x02" + encoded


def _map(items: dict[str, str]) -> bytes:
    if not items:
        return b"\x00"
    body = b"".join(avro_string(k) + avro_string(v) for k, v in items.items())
    return zigzag(len(items)) + body + b"\x00"


def _array(items: list[bytes]) -> bytes:
    return (zigzag(len(items)) + b"".join(items) + b"\x00") if items else b"\x00"


# A record is a list of (field name, bytes): one field can be swapped for a corrupt encoding.
Fields = list[tuple[str, bytes]]


def _transfer_fields(t: Transfer) -> Fields:
    return [
        ("id", _fixed(t.id)), ("debit_account_id", _fixed(t.debit_account_id)),
        ("credit_account_id", _fixed(t.credit_account_id)), ("amount", _fixed(t.amount)),
        ("pending_id", _fixed(t.pending_id)), ("user_data_128", _fixed(t.user_data_128)),
        ("user_data_64", _u64(t.user_data_64)), ("user_data_32", zigzag(t.user_data_32)),
        ("timeout", zigzag(t.timeout)), ("ledger", zigzag(t.ledger)), ("code", zigzag(t.code)),
        ("flags", zigzag(t.flags)), ("timestamp", _u64(t.timestamp)),
        ("debit_account_version", _u64(t.debit_account_version)),
        ("credit_account_version", _u64(t.credit_account_version)),
    ]  # fmt: skip


def _limit(value: int | None) -> bytes:
    return _optional(None if value is None else _bytes(_signed(value)))


def _account_fields(a: Account) -> Fields:
    policy = None if a.policy is None else zigzag(list(Policy).index(a.policy))
    return [
        ("id", _fixed(a.id)), ("ledger", zigzag(a.ledger)), ("code", zigzag(a.code)),
        ("flags", zigzag(a.flags)), ("debits_pending", _fixed(a.debits_pending)),
        ("debits_posted", _fixed(a.debits_posted)),
        ("credits_pending", _fixed(a.credits_pending)),
        ("credits_posted", _fixed(a.credits_posted)), ("user_data_128", _fixed(a.user_data_128)),
        ("user_data_64", _u64(a.user_data_64)), ("user_data_32", zigzag(a.user_data_32)),
        ("reserved", zigzag(a.reserved)), ("timestamp", _u64(a.timestamp)),
        ("policy", _optional(policy)), ("min_balance", _limit(a.min_balance)),
        ("max_balance", _limit(a.max_balance)), ("settle_threshold", _limit(a.settle_threshold)),
        ("settle_to", _limit(a.settle_to)),
        ("link_type", _optional(None if a.link_type is None else avro_string(a.link_type))),
        ("metadata", _map(a.metadata)), ("version", _u64(a.version)),
        ("frozen", b"\x01" if a.frozen else b"\x00"),
    ]  # fmt: skip


def _settings(s: UpdateSettings) -> bytes:
    def present(value: object, encode: Callable[[object], bytes]) -> bytes:
        if value is UNSET:
            return b"\x00"
        return b"\x02" + _optional(None if value is None else encode(value))

    def policy(value: object) -> bytes:
        assert isinstance(value, Policy)
        return zigzag(list(Policy).index(value))

    def signed(value: object) -> bytes:
        assert isinstance(value, int)
        return _bytes(_signed(value))

    def string(value: object) -> bytes:
        assert isinstance(value, str)
        return avro_string(value)

    def metadata(value: object) -> bytes:
        assert isinstance(value, dict)
        return _map(value)

    return b"".join(
        [
            present(s.policy, policy),
            *(present(getattr(s, n), signed) for n in _SIGNED_NAMES),
            present(s.link_type, string),
            present(s.metadata, metadata),
        ]
    )


_SIGNED_NAMES = ("min_balance", "max_balance", "settle_threshold", "settle_to")


def _command_fields(c: AccountCommand) -> Fields:
    settings = None if c.settings is None else _settings(c.settings)
    return [
        ("kind", zigzag(list(AccountCommandKind).index(c.kind))),
        ("account_id", _fixed(c.account_id)),
        ("expected_version", _u64(c.expected_version)),
        ("settings", _optional(settings)),
    ]


@dataclass
class BatchFields:
    """A CommandBatch as the Avro fields it is written as, each replaceable."""

    top: Fields
    accounts: list[Fields]
    transfers: list[Fields]
    command: Fields | None

    def encode(self) -> bytes:
        parts = {name: raw for name, raw in self.top}
        accounts = _array([b"".join(raw for _, raw in a) for a in self.accounts])
        transfers = _array([b"".join(raw for _, raw in t) for t in self.transfers])
        command = None if self.command is None else b"".join(raw for _, raw in self.command)
        return _HEADER + b"".join(
            [
                parts["request_id"], parts["submitter"], parts["operation"], accounts, transfers,
                _optional(command), parts["submitted_at_ns"],
            ]
        )  # fmt: skip


def encode_fields(batch: CommandBatch) -> BatchFields:
    top = [
        ("request_id", _fixed(batch.request_id)),
        ("submitter", avro_string(batch.submitter)),
        ("operation", zigzag(list(Operation).index(batch.operation))),
        ("submitted_at_ns", _u64(batch.submitted_at_ns)),
    ]
    command = None if batch.account_command is None else _command_fields(batch.account_command)
    return BatchFields(
        top,
        [_account_fields(a) for a in batch.accounts],
        [_transfer_fields(t) for t in batch.transfers],
        command,
    )


def _replace(fields: Fields, name: str, raw: bytes) -> Fields:
    return [(n, raw if n == name else old) for n, old in fields]


# ---------------------------------------------------------------------------------------------
# Valid requests (the bases to corrupt) and requests with invalid contents.

_U128_EDGES = (0, 1, U128_MAX - 1, U128_MAX)


def _uint(bits: int) -> st.SearchStrategy[int]:
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from((0, 1, top - 1, top)), st.integers(0, top))


def _signed_limit() -> st.SearchStrategy[int | None]:
    return st.one_of(
        st.none(), st.sampled_from((0, -1, U128_MAX, -U128_MAX)), st.integers(-500, 500)
    )


_small_ids = st.integers(1, 50)
_ids = st.one_of(_small_ids, _uint(128))
_metadata = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
_link_type = st.one_of(st.none(), st.sampled_from(("http", "udp", "", "carrier pigeon")))


@st.composite
def _accounts(draw: st.DrawFn) -> Account:
    """Any Account the wire carries: ids at the edges, any flags, balances set, limits."""
    flags = draw(_uint(16))
    timestamp = draw(st.one_of(st.just(0), _uint(64)))
    if flags & AccountFlags.IMPORTED:
        timestamp = 0  # imported past events depend on the wall clock: keep them refused
    return Account(
        draw(_ids), ledger=draw(st.one_of(st.sampled_from((0, 1, 2)), _uint(32))),
        code=draw(st.one_of(st.sampled_from((0, 1)), _uint(16))), flags=flags,
        debits_pending=draw(st.one_of(st.just(0), _uint(128))),
        credits_posted=draw(st.one_of(st.just(0), _uint(128))),
        user_data_128=draw(_uint(128)), user_data_64=draw(_uint(64)),
        user_data_32=draw(_uint(32)), reserved=draw(st.one_of(st.just(0), _uint(32))),
        timestamp=timestamp, policy=draw(st.one_of(st.none(), st.sampled_from(list(Policy)))),
        min_balance=draw(_signed_limit()), max_balance=draw(_signed_limit()),
        settle_threshold=draw(_signed_limit()), settle_to=draw(_signed_limit()),
        link_type=draw(_link_type), metadata=draw(_metadata),
    )  # fmt: skip


# Timeouts that cannot expire during a run: the reference ledger's clock is not the wall clock.
_timeouts = st.one_of(st.just(0), st.integers(10**7, (1 << 32) - 1))


@st.composite
def _transfers(draw: st.DrawFn) -> Transfer:
    flags = draw(_uint(16))
    timestamp = draw(st.one_of(st.just(0), _uint(64)))
    if flags & TransferFlags.IMPORTED:
        timestamp = 0
    return Transfer(
        draw(_ids), draw(_ids), draw(_ids), draw(st.one_of(st.integers(0, 300), _uint(128))),
        pending_id=draw(st.one_of(st.just(0), _ids)), user_data_128=draw(_uint(128)),
        user_data_64=draw(_uint(64)), user_data_32=draw(_uint(32)), timeout=draw(_timeouts),
        ledger=draw(st.one_of(st.sampled_from((0, 1, 2)), _uint(32))),
        code=draw(st.one_of(st.sampled_from((0, 1)), _uint(16))), flags=flags,
        timestamp=timestamp, debit_account_version=draw(st.one_of(st.just(0), _uint(64))),
        credit_account_version=draw(st.one_of(st.just(0), _uint(64))),
    )  # fmt: skip


_UNSET_OR = st.just(UNSET)


@st.composite
def _settings_patch(draw: st.DrawFn) -> UpdateSettings:
    patch = UpdateSettings()
    patch.policy = draw(st.one_of(_UNSET_OR, st.none(), st.sampled_from(list(Policy))))
    for name in _SIGNED_NAMES:
        setattr(patch, name, draw(st.one_of(_UNSET_OR, _signed_limit())))
    patch.link_type = draw(st.one_of(_UNSET_OR, _link_type))
    patch.metadata = draw(st.one_of(_UNSET_OR, st.none(), _metadata))
    return patch


@st.composite
def account_commands(draw: st.DrawFn) -> AccountCommand:
    kind = draw(st.sampled_from(list(AccountCommandKind)))
    settings = draw(_settings_patch()) if kind is AccountCommandKind.UPDATE_SETTINGS else None
    expected = draw(st.one_of(st.just(0), st.integers(1, 4), _uint(64)))
    return AccountCommand(kind, draw(_ids), expected, settings)


@st.composite
def content_invalid_requests(draw: st.DrawFn) -> CommandBatch:
    """Well-formed requests, mostly with invalid contents (ids 0 and 2^128-1, ledger and code
    0, reserved flags, unknown accounts, limits that contradict each other, ...): the ledger
    answers each event with a result code. Submitter and request id are the client's."""
    operation = draw(st.sampled_from(list(Operation)))
    if operation is Operation.CREATE_ACCOUNTS:
        accounts = draw(st.lists(_accounts(), min_size=1, max_size=6))
        return CommandBatch(0, "", operation, accounts=accounts)
    if operation is Operation.CREATE_TRANSFERS:
        transfers = draw(st.lists(_transfers(), min_size=1, max_size=6))
        return CommandBatch(0, "", operation, transfers=transfers)
    return CommandBatch(0, "", operation, account_command=draw(account_commands()))


@st.composite
def valid_requests(draw: st.DrawFn) -> CommandBatch:
    """Any request the codec encodes, with its own request id and submitter."""
    batch = draw(content_invalid_requests())
    batch.request_id = draw(_uint(128))
    batch.submitter = draw(st.one_of(st.text(max_size=12), st.just("s" * SUBMITTER_MAX)))
    batch.submitted_at_ns = draw(_uint(64))
    return batch


# ---------------------------------------------------------------------------------------------
# Corruptions


def _other_fingerprint(raw: bytes) -> bool:
    return raw != _HEADER[1:]


_bad_u32 = st.one_of(
    st.sampled_from((1 << 32, (1 << 32) + 1, (1 << 63) - 1, -1, -(1 << 63))),
    st.integers(1 << 32, (1 << 63) - 1),
    st.integers(-(1 << 63), -1),
)
_bad_u16 = st.one_of(
    st.sampled_from((1 << 16, (1 << 31) - 1, -1, -(1 << 31), 1 << 40, -(1 << 40))),
    st.integers(1 << 16, 1 << 62),
    st.integers(-(1 << 62), -1),
)
_U32_FIELDS = {
    "transfer": ("user_data_32", "timeout", "ledger"),
    "account": ("ledger", "user_data_32", "reserved"),
}
_U16_FIELDS = ("code", "flags")


def _bad_enum(symbols: int) -> st.SearchStrategy[int]:
    """Indexes no symbol has; -1..-symbols too (fastavro alone reads those as list indexes)."""
    return st.one_of(
        st.integers(-symbols, -1), st.integers(symbols, 1 << 40), st.integers(-(1 << 40), -1)
    )


_bad_union = st.one_of(
    st.sampled_from((-1, -2)), st.integers(2, 1 << 20), st.integers(-(1 << 20), -1)
)


def _bad_signed() -> st.SearchStrategy[bytes]:
    """A signed limit the codec refuses: beyond ±(2^128-1), or not minimally encoded."""
    too_big = st.integers(U128_MAX + 1, 1 << 200).map(_signed)
    too_small = st.integers(-(1 << 200), -U128_MAX - 1).map(_signed)
    padded = st.integers(-1000, 1000).map(lambda v: (b"\xff" if v < 0 else b"\x00") + _signed(v))
    return st.one_of(too_big, too_small, padded)


_bad_utf8 = st.sampled_from(
    (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80", b"\xf8\x88\x80\x80\x80")
)


@st.composite
def _field_corruption(draw: st.DrawFn) -> Malformed:
    """A valid request with one field written wrong: an integer beyond its width, an unknown
    enum or union index, invalid UTF-8, a bad signed limit, or a value of another Avro type."""
    batch = draw(valid_requests())
    fields = encode_fields(batch)
    choices: list[str] = ["operation", "submitter", "request_id", "wrong_type"]
    if fields.transfers:
        choices += ["transfer_u32", "transfer_u16"]
    if fields.accounts:
        choices += ["account_u32", "account_u16", "account_policy", "account_limit",
                    "account_union", "account_link_type", "account_bool"]  # fmt: skip
    if fields.command is not None:
        choices += ["command_kind", "command_union"]
    choice = draw(st.sampled_from(choices))
    how = choice
    if choice == "operation":
        fields.top = _replace(fields.top, "operation", zigzag(draw(_bad_enum(_OPERATIONS))))
    elif choice == "submitter":
        fields.top = _replace(fields.top, "submitter", _bytes(draw(_bad_utf8)))
    elif choice == "request_id":  # a u128 beyond 2^128-1 does not fit the fixed(16)
        raw = draw(st.integers(U128_MAX + 1, 1 << 200)).to_bytes(32, "big").lstrip(b"\x00")
        fields.top = _replace(fields.top, "request_id", raw)
    elif choice == "wrong_type":  # e.g. a string where the request id's 16 bytes belong
        name = draw(st.sampled_from([n for n, _ in fields.top]))
        raw = draw(st.sampled_from((avro_string("not a number"), zigzag(-5), b"", b"\x01" * 3)))
        fields.top = _replace(fields.top, name, raw)
        how = f"wrong type at {name}"
    elif choice.startswith("transfer_") or choice.startswith("account_"):
        records = fields.transfers if choice.startswith("transfer_") else fields.accounts
        index = draw(st.integers(0, len(records) - 1))
        record_kind = "transfer" if choice.startswith("transfer_") else "account"
        if choice.endswith("_u32"):
            name = draw(st.sampled_from(_U32_FIELDS[record_kind]))
            raw = zigzag(draw(_bad_u32))
        elif choice.endswith("_u16"):
            name = draw(st.sampled_from(_U16_FIELDS))
            raw = zigzag(draw(_bad_u16))
        elif choice == "account_policy":
            name, raw = "policy", b"\x02" + zigzag(draw(_bad_enum(_POLICIES)))
        elif choice == "account_limit":
            name = draw(st.sampled_from(_SIGNED_NAMES))
            raw = b"\x02" + _bytes(draw(_bad_signed()))
        elif choice == "account_bool":  # a boolean byte other than 0 or 1
            name, raw = "frozen", bytes([draw(st.integers(2, 255))])
        elif choice == "account_union":
            name = draw(st.sampled_from(("policy", *_SIGNED_NAMES, "link_type")))
            raw = zigzag(draw(_bad_union))
        else:
            name, raw = "link_type", b"\x02" + _bytes(draw(_bad_utf8))
        records[index] = _replace(records[index], name, raw)
        how = f"{choice} at {record_kind}s[{index}].{name}"
    elif choice == "command_kind":
        assert fields.command is not None
        fields.command = _replace(fields.command, "kind", zigzag(draw(_bad_enum(_KINDS))))
    else:
        assert fields.command is not None
        raw = zigzag(draw(_bad_union))
        fields.command = _replace(fields.command, "settings", raw)
    return Malformed(fields.encode(), f"field: {how}")


def _encoded(batch: CommandBatch) -> bytes:
    return encode_command_batch(batch)


@st.composite
def _framing_corruption(draw: st.DrawFn) -> Malformed:
    """Valid bytes of the codec, then cut, extended, re-framed or bit-flipped."""
    valid = _encoded(draw(valid_requests()))
    how = draw(
        st.sampled_from(("truncated", "extended", "wrong magic", "unknown schema", "flipped"))
    )
    if how == "truncated":
        value = valid[: draw(st.integers(0, len(valid) - 1))]
    elif how == "extended":
        value = valid + draw(st.binary(min_size=1, max_size=64))
    elif how == "wrong magic":
        value = bytes([draw(st.integers(0, 255).filter(lambda b: b != _MAGIC[0]))]) + valid[1:]
    elif how == "unknown schema":
        fingerprint = draw(st.binary(min_size=8, max_size=8).filter(_other_fingerprint))
        value = _MAGIC + fingerprint + valid[9:]
    else:  # a few random bytes changed: kept only when the codec refuses the result
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(9, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
        value = bytes(data)
    return Malformed(value, f"framing: {how}")


def _other_messages() -> st.SearchStrategy[Malformed]:
    """Valid messages of the other types, sent as commands."""
    others = [
        encode_result_batch(ResultBatch(1, "x", Operation.CREATE_TRANSFERS, [])),
        encode_event_batch(EventBatch(0, [])),
        encode_checkpoint(Checkpoint(0, 0, -1, 0, 0, 0)),
    ]
    return st.sampled_from(others).map(lambda v: Malformed(v, "other type: not a CommandBatch"))


@st.composite
def _oversized(draw: st.DrawFn) -> Malformed:
    """A batch claiming more events than it holds, or than a batch may hold (cheap to build:
    the claim is a count; the events that follow, if any, repeat one transfer)."""
    transfer = b"".join(raw for _, raw in _transfer_fields(draw(_transfers())))
    count = draw(st.one_of(st.integers(BATCH_EVENTS_MAX + 1, 1 << 40), st.integers(2, 100)))
    held = draw(st.integers(0, 3))
    fields = encode_fields(CommandBatch(1, "s", Operation.CREATE_TRANSFERS))
    body = zigzag(count) + transfer * held  # truncated: the rest of the claimed items is missing
    parts = dict(fields.top)
    value = _HEADER + parts["request_id"] + parts["submitter"] + parts["operation"] + b"\x00" + body
    return Malformed(value, f"oversized: claims {count} transfers, holds {held}")


@st.composite
def _refused_whole(draw: st.DrawFn) -> Malformed:
    """A well-formed request whose operation does not match its contents."""
    batch = draw(valid_requests())
    extra = draw(st.sampled_from(("accounts", "transfers", "command", "no command", "no settings")))
    if extra == "accounts":
        batch.accounts.append(Account(1, ledger=1, code=1))
        if batch.operation is Operation.CREATE_ACCOUNTS:
            batch.transfers.append(Transfer(1))
    elif extra == "transfers":
        batch.transfers.append(Transfer(1))
        if batch.operation is Operation.CREATE_TRANSFERS:
            batch.accounts.append(Account(1))
    elif extra == "command":
        batch.account_command = AccountCommand(AccountCommandKind.FREEZE, 1)
        if batch.operation is Operation.ACCOUNT_COMMAND:
            batch.transfers.append(Transfer(1))
    elif extra == "no command":
        batch = CommandBatch(batch.request_id, batch.submitter, Operation.ACCOUNT_COMMAND)
    else:
        command = AccountCommand(AccountCommandKind.UPDATE_SETTINGS, 1, 0, None)
        batch = CommandBatch(
            batch.request_id, batch.submitter, Operation.ACCOUNT_COMMAND, account_command=command
        )
    return Malformed(encode_command_batch(batch), f"refused whole: {extra}", refused=batch)


def malformed_messages() -> st.SearchStrategy[Malformed]:
    """Every kind of malformed command value, each refused by the codec."""
    garbage = st.binary(max_size=256).map(lambda v: Malformed(v, "garbage: random bytes"))
    headed = st.binary(max_size=256).map(
        lambda v: Malformed(_HEADER + v, "garbage: after a header")
    )
    # The corruptions of valid requests are listed twice: hypothesis favours cheap branches.
    return st.one_of(
        garbage, headed, _framing_corruption(), _field_corruption(), _framing_corruption(),
        _field_corruption(), _other_messages(), _oversized(), _refused_whole(),
    ).filter(lambda m: is_malformed(m.value))  # fmt: skip


def edge_cases() -> list[Malformed]:
    """Fixed cases the random mix would rarely reach, or that are too big to send often:
    full-size batches of 8,190 and more events, and a message just under the topic's size
    limit (its dead letter must still fit)."""
    transfer = Transfer(1, 2, 3, 4, ledger=1, code=1)
    cases = []
    for count in (BATCH_EVENTS_MAX + 1, BATCH_EVENTS_MAX + 100):
        fields = encode_fields(CommandBatch(7, "edge", Operation.CREATE_TRANSFERS))
        fields.transfers = [_transfer_fields(transfer)] * count
        cases.append(Malformed(fields.encode(), f"edge: {count} transfers"))
    # As large as the commands topic takes with two short headers (the record's framing is
    # ~120 bytes): a dead letter of it, with its reason added, would not fit as it is.
    near_limit = MESSAGE_BYTES_MAX - 160
    cases.append(Malformed(b"\x00" * near_limit, "edge: zeros at the size limit"))
    fields = encode_fields(CommandBatch(8, "edge", Operation.CREATE_ACCOUNTS))
    fields.top = _replace(fields.top, "submitter", avro_string("s" * (near_limit - 64)))
    cases.append(Malformed(fields.encode() + b"\x00", "edge: at the size limit, trailing byte"))
    # Well-formed but for its submitter: its result (keyed by the name) could not be sent.
    cases.append(Malformed(fields.encode(), "edge: a submitter at the size limit"))
    fields.top = _replace(fields.top, "submitter", avro_string("s" * (SUBMITTER_MAX + 1)))
    cases.append(Malformed(fields.encode(), "edge: a submitter one character too long"))
    for edge in cases:
        assert is_malformed(edge.value), edge.how
    return cases
