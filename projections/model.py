"""The projections' read model: one partition's events folded into a PartitionStore.

Pure over the store (no Kafka): the worker that consumes the events topic calls
`PartitionProjection.apply(offset, events)` once per message, and the HTTP layer asks the
queries. Each projection keeps only what its partition owns (accounts by
`partition_of(account_id)`, transfers by `partition_of(transfer_id)`, as `PartitionOwnership`
does), so a router sends an account's or a transfer's query to its owner and merges the
per-partition answers of the ledger-wide queries (`projections.merge`).

Key layout: one prefix byte per kind, then fixed-width big-endian integers, so RocksDB's
bytewise order is numeric order:

    0x01 account         id:u128                    -> changed_at:u64 Account (the record as
                                                       of its last change)
    0x02 account version id:u128 version:u64        -> Account (the record at that version)
    0x03 transfer        id:u128                    -> Transfer
    0x04 pending status  id:u128                    -> status:u8 (pending transfers only)
    0x05 account entry   account:u128 ~timestamp:u64 -> side:u8 dp dpo cp cpo offset:u64
                                                       [Transfer]
    0x06 settlement      account:u128 timestamp:u64 -> transfer id:u128 amount:u128 balance:i136
    0x07 account by ts   timestamp:u64              -> id:u128 user_data_128:u128
                                                       user_data_64:u64 user_data_32:u32
                                                       ledger:u32 code:u16 offset:u64
    0x08 transfer by ts  timestamp:u64              -> Transfer
    0x09 meta            name                       -> value (the applied offset: u64; the
                                                       last sequence offset folded: i64; the
                                                       layout version: u8)

`offset` is the events offset of the message that wrote the entry (or created the account):
what the balances as of a log position are read by (`balances_at_offset`).

Records use the processors' encoders (`processors.store`); balances are u128 as hi/lo u64
pairs, as there. `~timestamp` is 2^64-1-timestamp: an account's entries iterate newest first.

An account entry exists for every TransferApplied touching an owned account: the account's
balances after it, keyed by the event's timestamp. Entries of transfers carry the transfer
(what get_account_transfers returns and filters on, whoever owns the transfer id); expiry
entries (side bit 0x04) carry none, since expiry creates no transfer: get_account_transfers
and get_account_balances skip them, balances_at uses them.

Why newest first: the account's current balances are those of its newest entry (or of its
record, when that changed later: `changed_at`), so a transfer's fold is blind writes only: the
event carries each side's balances after it, and nothing is read, decoded or re-encoded per
event (reading the account record per side cost two thirds of the fold's time; a separate
current-balances key cost a third more RocksDB puts). Reads can only scan forward from a
prefix (`PartitionStore.scan`), so the newest entries come first and cheapest: current
balances, `reversed` account queries and recent `balances_at` stop early, while oldest-first
answers keep a window of `limit` over the scan down to `timestamp_min`.

A message's writes and its offset go to RocksDB in one atomic batch, so the store always
reflects exactly the messages up to the stored offset, and a message at an offset not above it
is ignored: applying an event twice changes nothing, across restarts too.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final, TypeVar

from processors.store import (
    PartitionStore,
    decode_account,
    decode_transfer,
    encode_account,
    encode_transfer,
)
from projections.filters import (
    AccountFilter,
    BalanceEntry,
    BalancesAtOffset,
    QueryFilter,
    effective_limit,
)
from schemas import (
    U128_MAX,
    Account,
    AccountChanged,
    AccountCreated,
    AccountFlags,
    Balances,
    Event,
    PendingStatus,
    SettlementRequested,
    Transfer,
    TransferApplied,
    TransferFailed,
    TransferKind,
)
from schemas.partitioning import owned_by

__all__ = [
    "AccountFilter",
    "BalanceEntry",
    "OlderLayout",
    "PartitionProjection",
    "QueryFilter",
]


class OlderLayout(ValueError):
    """A store written with an older key layout: it must be rebuilt from the events topic."""


# Key prefixes (see the module docstring).
_ACCOUNT: Final = b"\x01"
_VERSION: Final = b"\x02"
_TRANSFER: Final = b"\x03"
_PENDING: Final = b"\x04"
_ENTRY: Final = b"\x05"
_SETTLEMENT: Final = b"\x06"
_ACCOUNT_BY_TS: Final = b"\x07"
_TRANSFER_BY_TS: Final = b"\x08"
_META: Final = b"\x09"

_OFFSET_KEY: Final = _META + b"offset"
_SEQUENCE_KEY: Final = _META + b"sequence"  # the last sequence offset folded (signed i64)
_LAYOUT_KEY: Final = _META + b"layout"
_LAYOUT: Final = b"\x02"  # 2: entries and the account index carry the message offset

# Account entry side bits.
_DEBIT: Final = 0x01
_CREDIT: Final = 0x02
_EXPIRY: Final = 0x04
_SIDE_BYTES: Final = tuple(bytes([side]) for side in range(8))

_U64_MAX: Final = (1 << 64) - 1
_LOW64: Final = _U64_MAX
_BALANCES: Final = struct.Struct(">8Q")
_ENTRY_OFFSET_AT: Final = 1 + _BALANCES.size  # side, balances, offset; then the transfer
_ENTRY_HEAD_SIZE: Final = _ENTRY_OFFSET_AT + 8
_ID_KEY_TS_AT: Final = 1 + 16  # where the timestamp starts in an (id, timestamp) key
_ACCOUNT_INDEX: Final = struct.Struct(">QQQQQIIHQ")  # ... and the creating message's offset
_SETTLEMENT_VALUE: Final = struct.Struct(">QQQQ")  # transfer id, amount; then a signed balance
_SIGNED_WIDTH: Final = 17  # a net balance reaches ±(2^128 - 1)
_HASH_LENGTHS: Final = struct.Struct(">I")

_PENDING_STATUSES: Final = tuple(PendingStatus)  # indexed by value
_PENDING_NOW: Final = bytes([PendingStatus.PENDING])
_EXPIRED: Final = bytes([PendingStatus.EXPIRED])
_RESOLVED: Final = {
    TransferKind.POST: bytes([PendingStatus.POSTED]),
    TransferKind.VOID: bytes([PendingStatus.VOIDED]),
}

T = TypeVar("T")


class PartitionProjection:
    """The read model of partition `partition` of `partitions`, over its own store."""

    def __init__(self, store: PartitionStore, partition: int, partitions: int) -> None:
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} out of range for {partitions} partitions")
        self.store = store
        self.partition = partition
        self.partitions = partitions
        self._owns = owned_by(partition, partitions)
        stored = store.get(_OFFSET_KEY)
        self._offset = -1 if stored is None else int.from_bytes(stored, "big")
        stored = store.get(_SEQUENCE_KEY)
        self._sequence = -1 if stored is None else int.from_bytes(stored, "big", signed=True)
        if self._offset >= 0 and store.get(_LAYOUT_KEY) != _LAYOUT:
            raise OlderLayout(
                f"the projection store {store.path} has an older key layout: delete it, the "
                "worker rebuilds it from the events topic"
            )

    def applied_offset(self) -> int:
        """The offset of the last message applied; -1 if none."""
        return self._offset

    def applied_sequence(self) -> int:
        """The last sequence offset (a cross-partition decision) this partition's processor
        had folded by the last message applied; -1 if none."""
        return self._sequence

    # Folding ----------------------------------------------------------------------------------

    def apply(self, offset: int, events: list[Event], sequence: int = -1) -> bool:
        """Fold the events of the message at `offset` (which names the last `sequence` offset
        its processor folded, -1 if none); False (and nothing) if already applied."""
        return self.apply_many([(offset, events, sequence)]) == 1

    def apply_many(self, messages: Iterable[tuple[int, list[Event], int]]) -> int:
        """Fold several messages (offset, events, sequence), in offset order, in one atomic
        batch with the offset of the last: the store ends exactly as after applying them one
        by one (a later write of a key wins), for one RocksDB write (replay's bulk path).
        Messages at offsets already applied are skipped; returns how many were applied."""
        changes: dict[bytes, bytes | None] = {}
        fold_transfer = self._fold_transfer
        offset = self._offset
        sequence = self._sequence
        applied = 0
        for message_offset, events, message_sequence in messages:
            if message_offset <= offset:
                continue
            at = message_offset.to_bytes(8, "big")
            for event in events:
                kind = type(event)
                if kind is TransferApplied:
                    fold_transfer(event, at, changes)  # type: ignore[arg-type]
                elif kind is AccountCreated or kind is AccountChanged:
                    self._fold_account(event, at, changes)  # type: ignore[arg-type]
                elif kind is SettlementRequested:
                    self._fold_settlement(event, changes)  # type: ignore[arg-type]
                elif kind is not TransferFailed:  # a burnt id shows in no read model
                    raise TypeError(f"not a ledger event: {event!r}")
            offset = message_offset
            sequence = max(sequence, message_sequence)
            applied += 1
        if not applied:
            return 0
        changes[_OFFSET_KEY] = offset.to_bytes(8, "big")
        if self._offset < 0:
            changes[_LAYOUT_KEY] = _LAYOUT
        if sequence > self._sequence:
            changes[_SEQUENCE_KEY] = sequence.to_bytes(8, "big", signed=True)
        self.store.write(changes)
        self._offset = offset
        self._sequence = sequence
        return applied

    def content_hash(self) -> tuple[int, str]:
        """(applied offset, content hash) of the store, both read from one RocksDB snapshot,
        so they belong together even while the worker folds.

        The hash is SHA-256 over every (key, value) pair in key order, each as
        `len(key):u32 key len(value):u32 value`, except the applied offset key: that is the
        position the hash was taken at (returned beside it), not content. Two stores that
        folded the same messages hash equal however they were batched (`apply_many`); the
        last sequence offset folded (meta `sequence`) is content and is hashed."""
        digest = hashlib.sha256()
        offset = -1
        parts: list[bytes] = []
        extend, lengths = parts.extend, _HASH_LENGTHS.pack
        for key, value in self.store.snapshot_items():
            if key == _OFFSET_KEY:
                offset = int.from_bytes(value, "big")
                continue
            extend((lengths(len(key)), key, lengths(len(value)), value))
            if len(parts) >= 40_000:  # one update per many pairs: the same digest, faster
                digest.update(b"".join(parts))
                parts.clear()
        digest.update(b"".join(parts))
        return offset, digest.hexdigest()

    def _fold_account(
        self,
        event: AccountCreated | AccountChanged,
        at: bytes,
        changes: dict[bytes, bytes | None],
    ) -> None:
        account = event.account
        account_id = account.id
        if not self._owns(account_id):
            return
        id_bytes = account_id.to_bytes(16, "big")
        record = encode_account(account)
        changes[_ACCOUNT + id_bytes] = event.timestamp.to_bytes(8, "big") + record
        changes[_VERSION + id_bytes + account.version.to_bytes(8, "big")] = record
        if type(event) is AccountCreated:
            u = account.user_data_128
            changes[_ACCOUNT_BY_TS + account.timestamp.to_bytes(8, "big")] = _ACCOUNT_INDEX.pack(
                account_id >> 64, account_id & _LOW64, u >> 64, u & _LOW64,
                account.user_data_64, account.user_data_32, account.ledger, account.code,
                int.from_bytes(at, "big"),
            )  # fmt: skip

    def _fold_transfer(
        self, event: TransferApplied, at: bytes, changes: dict[bytes, bytes | None]
    ) -> None:
        transfer = event.transfer
        kind = event.kind
        owns = self._owns
        if kind is TransferKind.EXPIRE:
            # Expiry creates no transfer: only the pending one's status and the balances move.
            if owns(transfer.id):
                changes[_PENDING + transfer.id.to_bytes(16, "big")] = _EXPIRED
            payload = b""
            side_extra = _EXPIRY
        else:
            payload = encode_transfer(transfer)  # once, for every key that holds it
            side_extra = 0
            if owns(transfer.id):
                id_bytes = transfer.id.to_bytes(16, "big")
                changes[_TRANSFER + id_bytes] = payload
                changes[_TRANSFER_BY_TS + transfer.timestamp.to_bytes(8, "big")] = payload
                if kind is TransferKind.PENDING:
                    changes[_PENDING + id_bytes] = _PENDING_NOW
            resolved = _RESOLVED.get(kind)
            if resolved is not None and owns(transfer.pending_id):
                changes[_PENDING + transfer.pending_id.to_bytes(16, "big")] = resolved
        inverted_ts = (_U64_MAX - event.timestamp).to_bytes(8, "big")
        # Blind writes: the event carries each side's balances after it; nothing is read.
        debit = event.debit
        if debit is not None and owns(debit.account_id):
            changes[_ENTRY + debit.account_id.to_bytes(16, "big") + inverted_ts] = (
                _SIDE_BYTES[_DEBIT | side_extra] + _pack_balances(debit) + at + payload
            )
        credit = event.credit
        if credit is not None and owns(credit.account_id):
            changes[_ENTRY + credit.account_id.to_bytes(16, "big") + inverted_ts] = (
                _SIDE_BYTES[_CREDIT | side_extra] + _pack_balances(credit) + at + payload
            )

    def _fold_settlement(
        self, event: SettlementRequested, changes: dict[bytes, bytes | None]
    ) -> None:
        account_id = event.account_id
        if not self._owns(account_id):
            return
        key = _SETTLEMENT + account_id.to_bytes(16, "big") + event.timestamp.to_bytes(8, "big")
        transfer_id = event.transfer_id
        amount = event.amount
        changes[key] = _SETTLEMENT_VALUE.pack(
            transfer_id >> 64, transfer_id & _LOW64, amount >> 64, amount & _LOW64
        ) + event.balance.to_bytes(_SIGNED_WIDTH, "big", signed=True)

    # Point queries ----------------------------------------------------------------------------

    def account(self, account_id: int) -> Account | None:
        """The current record of an owned account (balances, version, frozen, settings)."""
        if not 0 <= account_id <= U128_MAX:
            return None
        id_bytes = account_id.to_bytes(16, "big")
        data = self.store.get(_ACCOUNT + id_bytes)
        if data is None:
            return None
        changed_at = int.from_bytes(data[:8], "big")
        account = decode_account(data[8:])
        for key, value in self.store.scan(_ENTRY + id_bytes):  # the newest entry only
            if _entry_timestamp(key) > changed_at:
                (
                    account.debits_pending, account.debits_posted,
                    account.credits_pending, account.credits_posted,
                ) = _unpack_balances(value)  # fmt: skip
            break
        return account

    def transfer(self, transfer_id: int) -> tuple[Transfer, PendingStatus] | None:
        """An owned transfer and its pending status (NONE unless it is a pending transfer)."""
        if not 0 <= transfer_id <= U128_MAX:
            return None
        id_bytes = transfer_id.to_bytes(16, "big")
        data = self.store.get(_TRANSFER + id_bytes)
        if data is None:
            return None
        status = self.store.get(_PENDING + id_bytes)
        pending = PendingStatus.NONE if status is None else _PENDING_STATUSES[status[0]]
        return decode_transfer(data), pending

    def account_versions(self, account_id: int) -> list[Account]:
        """Every version of an owned account, oldest first."""
        if not 0 <= account_id <= U128_MAX:
            return []
        prefix = _VERSION + account_id.to_bytes(16, "big")
        return [decode_account(value) for _key, value in self.store.scan(prefix)]

    def settlements(self, account_id: int) -> list[SettlementRequested]:
        """The settlement requests emitted for an owned account, oldest first."""
        if not 0 <= account_id <= U128_MAX:
            return []
        found = []
        for key, value in self.store.scan(_SETTLEMENT + account_id.to_bytes(16, "big")):
            th, tl, ah, al = _SETTLEMENT_VALUE.unpack_from(value)
            balance = int.from_bytes(value[_SETTLEMENT_VALUE.size :], "big", signed=True)
            timestamp = int.from_bytes(key[_ID_KEY_TS_AT:], "big")
            found.append(
                SettlementRequested(account_id, th << 64 | tl, ah << 64 | al, balance, timestamp)
            )
        return found

    def balances_at(self, account_id: int, timestamp: int) -> Balances | None:
        """An owned account's balances after the last transfer event (expiries included) at or
        before `timestamp`; zeros if none yet; None if the account did not exist then."""
        if not 0 <= account_id <= U128_MAX:
            return None
        id_bytes = account_id.to_bytes(16, "big")
        data = self.store.get(_ACCOUNT + id_bytes)
        # The creation timestamp never changes: any version of the record tells it.
        if data is None or decode_account(data[8:]).timestamp > timestamp:
            return None
        for key, value in self.store.scan(_ENTRY + id_bytes):  # newest first
            if _entry_timestamp(key) <= timestamp:
                return Balances(account_id, *_unpack_balances(value))
        return Balances(account_id, 0, 0, 0, 0)

    def balances_at_offset(self, account_id: int, offset: int) -> BalancesAtOffset | None:
        """An owned account's balances after the messages of this events partition up to
        `offset` (an offset past the last message folded means now), with the timestamp of the
        last transfer event they reflect (0 if none yet); None if the account did not exist
        then. Exact: each entry names the message that wrote it."""
        if not 0 <= account_id <= U128_MAX or offset < 0:
            return None
        id_bytes = account_id.to_bytes(16, "big")
        data = self.store.get(_ACCOUNT + id_bytes)
        if data is None:
            return None
        created = decode_account(data[8:]).timestamp
        index = self.store.get(_ACCOUNT_BY_TS + created.to_bytes(8, "big"))
        assert index is not None, account_id  # indexed when created, never deleted
        if _ACCOUNT_INDEX.unpack(index)[-1] > offset:
            return None
        # Newest first; an account's entries are in log order too (its history is serial).
        for key, value in self.store.scan(_ENTRY + id_bytes):
            if int.from_bytes(value[_ENTRY_OFFSET_AT:_ENTRY_HEAD_SIZE], "big") <= offset:
                balances = Balances(account_id, *_unpack_balances(value))
                return BalancesAtOffset(balances, _entry_timestamp(key), self.partition, offset)
        return BalancesAtOffset(Balances(account_id, 0, 0, 0, 0), 0, self.partition, offset)

    # get_account_transfers / get_account_balances --------------------------------------------

    def account_transfers(self, f: AccountFilter) -> list[Transfer]:
        """TigerBeetle's get_account_transfers over an owned account."""
        if not f.valid():
            return []
        selected = (transfer for _ts, _value, transfer in self._account_entries(f, True))
        return _take_newest_first(selected, effective_limit(f.limit), f.reversed)

    def account_balances(self, f: AccountFilter) -> list[BalanceEntry]:
        """TigerBeetle's get_account_balances: only for accounts with the history flag."""
        if not f.valid():
            return []
        data = self.store.get(_ACCOUNT + f.account_id.to_bytes(16, "big"))
        # The history flag is immutable (only `closed` ever changes): any version tells it.
        if data is None or not decode_account(data[8:]).flags & AccountFlags.HISTORY:
            return []
        selected = (
            BalanceEntry(timestamp, *_unpack_balances(value))
            for timestamp, value, _transfer in self._account_entries(f, False)
        )
        return _take_newest_first(selected, effective_limit(f.limit), f.reversed)

    def _account_entries(
        self, f: AccountFilter, decode: bool
    ) -> Iterator[tuple[int, bytes, Transfer]]:
        """(timestamp, entry, transfer) of the transfer entries matching `f`, newest first.
        The transfer is decoded only if `decode` or the filter needs it (else a placeholder)."""
        sides = (_DEBIT if f.debits else 0) | (_CREDIT if f.credits else 0)
        timestamp_min = f.timestamp_min
        timestamp_max = f.timestamp_max
        filters_fields = bool(f.user_data_128 or f.user_data_64 or f.user_data_32 or f.code)
        placeholder = Transfer(0)
        for key, value in self.store.scan(_ENTRY + f.account_id.to_bytes(16, "big")):
            timestamp = _entry_timestamp(key)
            if timestamp_max and timestamp > timestamp_max:
                continue
            if timestamp < timestamp_min:
                return
            side = value[0]
            if side & _EXPIRY or not side & sides:
                continue
            if decode or filters_fields:
                transfer = decode_transfer(value[_ENTRY_HEAD_SIZE:])
                if filters_fields and not _transfer_matches(transfer, f):
                    continue
                yield timestamp, value, transfer
            else:
                yield timestamp, value, placeholder

    # query_accounts / query_transfers ---------------------------------------------------------

    def query_accounts(self, f: QueryFilter) -> list[Account]:
        """TigerBeetle's query_accounts over this partition's accounts, by creation timestamp."""
        if not f.valid():
            return []
        ids = _take_oldest_first(self._matching_account_ids(f), effective_limit(f.limit), f)
        found = []
        for account_id in ids:
            account = self.account(account_id)
            assert account is not None, account_id  # indexed at creation, never deleted
            found.append(account)
        return found

    def _matching_account_ids(self, f: QueryFilter) -> Iterator[int]:
        for _key, value in self._timestamp_range(_ACCOUNT_BY_TS, f):
            ih, il, uh, ul, user_data_64, user_data_32, ledger, code, _at = _ACCOUNT_INDEX.unpack(
                value
            )
            if (
                (f.user_data_128 and f.user_data_128 != uh << 64 | ul)
                or (f.user_data_64 and f.user_data_64 != user_data_64)
                or (f.user_data_32 and f.user_data_32 != user_data_32)
                or (f.ledger and f.ledger != ledger)
                or (f.code and f.code != code)
            ):
                continue
            yield ih << 64 | il

    def query_transfers(self, f: QueryFilter) -> list[Transfer]:
        """TigerBeetle's query_transfers over this partition's transfers, by timestamp."""
        if not f.valid():
            return []
        selected = (
            transfer
            for transfer in (
                decode_transfer(value) for _key, value in self._timestamp_range(_TRANSFER_BY_TS, f)
            )
            if not (
                (f.user_data_128 and f.user_data_128 != transfer.user_data_128)
                or (f.user_data_64 and f.user_data_64 != transfer.user_data_64)
                or (f.user_data_32 and f.user_data_32 != transfer.user_data_32)
                or (f.ledger and f.ledger != transfer.ledger)
                or (f.code and f.code != transfer.code)
            )
        )
        return _take_oldest_first(selected, effective_limit(f.limit), f)

    def _timestamp_range(self, prefix: bytes, f: QueryFilter) -> Iterator[tuple[bytes, bytes]]:
        """Index entries under `prefix` (timestamp:u64 keys, oldest first) within the range."""
        timestamp_min = f.timestamp_min
        timestamp_max = f.timestamp_max
        for key, value in self.store.scan(prefix):
            timestamp = int.from_bytes(key[1:], "big")
            if timestamp < timestamp_min:
                continue
            if timestamp_max and timestamp > timestamp_max:
                return
            yield key, value


def _entry_timestamp(key: bytes) -> int:
    return _U64_MAX - int.from_bytes(key[_ID_KEY_TS_AT:], "big")


def _transfer_matches(transfer: Transfer, f: AccountFilter) -> bool:
    return not (
        (f.user_data_128 and f.user_data_128 != transfer.user_data_128)
        or (f.user_data_64 and f.user_data_64 != transfer.user_data_64)
        or (f.user_data_32 and f.user_data_32 != transfer.user_data_32)
        or (f.code and f.code != transfer.code)
    )


def _pack_balances(b: Balances) -> bytes:
    dp = b.debits_pending
    dpo = b.debits_posted
    cp = b.credits_pending
    cpo = b.credits_posted
    return _BALANCES.pack(
        dp >> 64, dp & _LOW64, dpo >> 64, dpo & _LOW64,
        cp >> 64, cp & _LOW64, cpo >> 64, cpo & _LOW64,
    )  # fmt: skip


def _unpack_balances(entry: bytes) -> tuple[int, int, int, int]:
    """The balances of an account entry (after its side byte)."""
    dph, dpl, dpoh, dpol, cph, cpl, cpoh, cpol = _BALANCES.unpack_from(entry, 1)
    return dph << 64 | dpl, dpoh << 64 | dpol, cph << 64 | cpl, cpoh << 64 | cpol


def _take_newest_first(items: Iterable[T], limit: int, newest_first: bool) -> list[T]:
    """From items newest first: the first `limit`, or (oldest first) the last `limit` of
    them in reverse, keeping only a window of `limit`."""
    if newest_first:
        return list(islice(items, limit))
    window = deque(items, maxlen=limit)
    window.reverse()
    return list(window)


def _take_oldest_first(items: Iterable[T], limit: int, f: QueryFilter) -> list[T]:
    """From items oldest first: the first `limit`, or with `f.reversed` the last `limit`
    newest first, keeping only a window of `limit`."""
    if not f.reversed:
        return list(islice(items, limit))
    window = deque(items, maxlen=limit)
    window.reverse()
    return list(window)
