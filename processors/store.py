"""Processor state in RocksDB (SPEC §2 "State"): one database per partition, bounded memory.

This is the only module that imports rocksdict. `PartitionStore` opens one RocksDB (raw bytes
mode) per partition directory; `RocksLedgerState` implements `LedgerState` over it.

Writes made by folding events are buffered in Python until `commit(meta)`, which writes all of
them together with the caller's meta entries (input offsets, clock) in one WriteBatch: the
state on disk always reflects exactly the input up to the offset stored beside it. What a
crash interrupts before `commit` is simply not there after reopening. Python memory is the
write buffer (one batch's worth) plus a bounded LRU of decoded records; nothing grows with the
number of accounts or transfers.

Key layout: one prefix byte per kind, then fixed-width big-endian integers, so RocksDB's
bytewise order is numeric order (ids iterate in id order, expiry in deadline order):

    0x01 account        id:u128                               -> encoded Account
    0x02 transfer       id:u128                               -> encoded Transfer
    0x03 pending status transfer id:u128                      -> status:u8
    0x04 failed id      transfer id:u128                      -> status:u32
    0x05 settlement     account id:u128                       -> transfer id:u128 (absent = 0)
    0x06 expiry         expires_at:u64 timestamp:u64 id:u128  -> b""
    0x07 expiry by id   transfer id:u128                      -> expires_at:u64 timestamp:u64
    0x08 timestamp      timestamp:u64                         -> kind:u8
    0x09 internal       name                                  -> value (max timestamps)
    0x0A meta           name (utf-8)                          -> caller's bytes

Timestamps are u64 (TigerBeetle's width; the rules cap them at 2^63-1), and expires_at =
timestamp + timeout(u32 seconds) * 10^9 < 2^63 + 2^62 still fits in a u64.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Generic, TypeVar, cast

from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from processors.ledger.state import TIMESTAMP_ACCOUNT, TIMESTAMP_TRANSFER
from schemas import Account, Balances, PendingStatus, Policy, Transfer

__all__ = [
    "MemoryBudget",
    "PartitionStore",
    "RocksLedgerState",
    "decode_account",
    "decode_transfer",
    "encode_account",
    "encode_transfer",
]

MIB: Final = 1 << 20
U64_MAX: Final = (1 << 64) - 1
_LOW64: Final = U64_MAX

# Key prefixes (one byte each; see the module docstring).
_ACCOUNT: Final = b"\x01"
_TRANSFER: Final = b"\x02"
_PENDING: Final = b"\x03"
_FAILED: Final = b"\x04"
_SETTLEMENT: Final = b"\x05"
_EXPIRY: Final = b"\x06"
_EXPIRY_BY_ID: Final = b"\x07"
_TIMESTAMP: Final = b"\x08"
_INTERNAL: Final = b"\x09"
_META: Final = b"\x0a"

_MAX_ACCOUNT_TS_KEY: Final = _INTERNAL + b"max_account_timestamp"
_MAX_TRANSFER_TS_KEY: Final = _INTERNAL + b"max_transfer_timestamp"
_KIND_BYTES: Final = {TIMESTAMP_ACCOUNT: b"\x01", TIMESTAMP_TRANSFER: b"\x02"}
_PENDING_STATUSES: Final = tuple(PendingStatus)  # indexed by value: 0..4
_POLICIES: Final = {int(p): p for p in Policy}

_MISSING: Final = object()  # "no buffered write for this key" (None means a buffered delete)

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Record encoding: a version byte, the fixed fields in one struct (u128 as two u64 halves:
# struct has no 16-byte integer, and hi/lo pairs measured as fast as int.to_bytes), then a
# small variable part only for the optional extension fields. Fixed width keeps the code
# simple and fast; RocksDB's LZ4 squeezes the zero high halves out on disk.

_FORMAT_V1: Final = 1

# version, id, debits_pending, debits_posted, credits_pending, credits_posted, user_data_128
# (u128 pairs), user_data_64, timestamp, version (u64), ledger, user_data_32, reserved (u32),
# code, flags (u16), extension mask (u8).
_ACCOUNT_FIXED: Final = struct.Struct(">B12Q3Q3I2HB")
# version, id, debit_account_id, credit_account_id, amount, pending_id, user_data_128
# (u128 pairs), user_data_64, timestamp, debit/credit_account_version (u64), timeout, ledger,
# user_data_32 (u32), code, flags (u16).
_TRANSFER_FIXED: Final = struct.Struct(">B12Q4Q3I2H")

# Extension mask bits of an account.
_EXT_POLICY: Final = 1 << 0
_EXT_MIN: Final = 1 << 1
_EXT_MAX: Final = 1 << 2
_EXT_THRESHOLD: Final = 1 << 3
_EXT_SETTLE_TO: Final = 1 << 4
_EXT_LINK: Final = 1 << 5
_EXT_METADATA: Final = 1 << 6
_EXT_FROZEN: Final = 1 << 7  # a flag, no payload

# Limits are signed and reach ±(2^128 - 1): 17 bytes two's complement.
_SIGNED_WIDTH: Final = 17
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_EXPIRY_KEY: Final = struct.Struct(">QQQQ")  # expires_at, timestamp, id hi, id lo
_EXPIRY_VALUE: Final = struct.Struct(">QQ")


def encode_account(a: Account) -> bytes:
    i = a.id
    dp = a.debits_pending
    dpo = a.debits_posted
    cp = a.credits_pending
    cpo = a.credits_posted
    u = a.user_data_128
    mask = 0
    extension: list[bytes] = []
    if a.policy is not None:
        mask |= _EXT_POLICY
        extension.append(_U8.pack(a.policy))
    if a.min_balance is not None:
        mask |= _EXT_MIN
        extension.append(a.min_balance.to_bytes(_SIGNED_WIDTH, "big", signed=True))
    if a.max_balance is not None:
        mask |= _EXT_MAX
        extension.append(a.max_balance.to_bytes(_SIGNED_WIDTH, "big", signed=True))
    if a.settle_threshold is not None:
        mask |= _EXT_THRESHOLD
        extension.append(a.settle_threshold.to_bytes(_SIGNED_WIDTH, "big", signed=True))
    if a.settle_to is not None:
        mask |= _EXT_SETTLE_TO
        extension.append(a.settle_to.to_bytes(_SIGNED_WIDTH, "big", signed=True))
    if a.link_type is not None:
        mask |= _EXT_LINK
        extension.append(_text(a.link_type))
    if a.metadata:
        mask |= _EXT_METADATA
        extension.append(_U16.pack(len(a.metadata)))
        for key, value in a.metadata.items():
            extension.append(_text(key))
            extension.append(_text(value))
    if a.frozen:
        mask |= _EXT_FROZEN
    fixed = _ACCOUNT_FIXED.pack(
        _FORMAT_V1,
        i >> 64, i & _LOW64, dp >> 64, dp & _LOW64, dpo >> 64, dpo & _LOW64,
        cp >> 64, cp & _LOW64, cpo >> 64, cpo & _LOW64, u >> 64, u & _LOW64,
        a.user_data_64, a.timestamp, a.version,
        a.ledger, a.user_data_32, a.reserved,
        a.code, a.flags, mask,
    )  # fmt: skip
    if extension:
        return fixed + b"".join(extension)
    return fixed


def decode_account(data: bytes) -> Account:
    (
        fmt, ih, il, dph, dpl, dpoh, dpol, cph, cpl, cpoh, cpol, uh, ul,
        user_data_64, timestamp, version, ledger, user_data_32, reserved, code, flags, mask,
    ) = _ACCOUNT_FIXED.unpack_from(data)  # fmt: skip
    if fmt != _FORMAT_V1:
        raise ValueError(f"unknown account encoding {fmt}")
    account = Account(
        ih << 64 | il, ledger, code, flags,
        dph << 64 | dpl, dpoh << 64 | dpol, cph << 64 | cpl, cpoh << 64 | cpol,
        uh << 64 | ul, user_data_64, user_data_32, reserved, timestamp,
    )  # fmt: skip
    account.version = version
    if mask:
        _decode_account_extension(account, data, mask)
    return account


def _decode_account_extension(account: Account, data: bytes, mask: int) -> None:
    at = _ACCOUNT_FIXED.size
    if mask & _EXT_POLICY:
        account.policy = _POLICIES[data[at]]
        at += 1
    if mask & _EXT_MIN:
        account.min_balance = _signed(data, at)
        at += _SIGNED_WIDTH
    if mask & _EXT_MAX:
        account.max_balance = _signed(data, at)
        at += _SIGNED_WIDTH
    if mask & _EXT_THRESHOLD:
        account.settle_threshold = _signed(data, at)
        at += _SIGNED_WIDTH
    if mask & _EXT_SETTLE_TO:
        account.settle_to = _signed(data, at)
        at += _SIGNED_WIDTH
    if mask & _EXT_LINK:
        account.link_type, at = _read_text(data, at)
    if mask & _EXT_METADATA:
        (count,) = _U16.unpack_from(data, at)
        at += 2
        metadata: dict[str, str] = {}
        for _ in range(count):
            key, at = _read_text(data, at)
            metadata[key], at = _read_text(data, at)
        account.metadata = metadata
    account.frozen = bool(mask & _EXT_FROZEN)


def encode_transfer(t: Transfer) -> bytes:
    i = t.id
    dr = t.debit_account_id
    cr = t.credit_account_id
    amount = t.amount
    pending_id = t.pending_id
    u = t.user_data_128
    return _TRANSFER_FIXED.pack(
        _FORMAT_V1,
        i >> 64, i & _LOW64, dr >> 64, dr & _LOW64, cr >> 64, cr & _LOW64,
        amount >> 64, amount & _LOW64, pending_id >> 64, pending_id & _LOW64,
        u >> 64, u & _LOW64,
        t.user_data_64, t.timestamp, t.debit_account_version, t.credit_account_version,
        t.timeout, t.ledger, t.user_data_32,
        t.code, t.flags,
    )  # fmt: skip


def decode_transfer(data: bytes) -> Transfer:
    (
        fmt, ih, il, drh, drl, crh, crl, ah, al, ph, pl, uh, ul,
        user_data_64, timestamp, debit_version, credit_version,
        timeout, ledger, user_data_32, code, flags,
    ) = _TRANSFER_FIXED.unpack_from(data)  # fmt: skip
    if fmt != _FORMAT_V1:
        raise ValueError(f"unknown transfer encoding {fmt}")
    return Transfer(
        ih << 64 | il, drh << 64 | drl, crh << 64 | crl, ah << 64 | al, ph << 64 | pl,
        uh << 64 | ul, user_data_64, user_data_32, timeout, ledger, code, flags, timestamp,
        debit_version, credit_version,
    )  # fmt: skip


def _signed(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + _SIGNED_WIDTH], "big", signed=True)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _U32.pack(len(raw)) + raw


def _read_text(data: bytes, at: int) -> tuple[str, int]:
    (length,) = _U32.unpack_from(data, at)
    start = at + 4
    return data[start : start + length].decode(), start + length


def _u128(value: int) -> bytes:
    return value.to_bytes(16, "big")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


# ---------------------------------------------------------------------------------------------
# The database.


class MemoryBudget:
    """The block cache and memtable budget of every PartitionStore that shares it.

    By default all stores of a process share one (`MemoryBudget.shared()`), so a processor
    owning 8 partitions still has one 64 MiB cache, not 8. Memtable memory is charged to the
    same cache, so block cache plus memtables stay near `block_cache_size_bytes`.
    """

    _shared: MemoryBudget | None = None

    def __init__(
        self, block_cache_size_bytes: int = 64 * MIB, write_buffer_size_bytes: int = 32 * MIB
    ) -> None:
        self.block_cache_size_bytes = block_cache_size_bytes
        self.write_buffer_size_bytes = write_buffer_size_bytes
        self._cache = Cache(block_cache_size_bytes)
        self._write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            write_buffer_size_bytes, False, self._cache
        )

    @classmethod
    def shared(cls) -> MemoryBudget:
        """The process-wide default budget (64 MiB cache, 32 MiB of it for memtables)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def block_cache_usage_bytes(self) -> int:
        return self._cache.get_usage()


class PartitionStore:
    """One RocksDB database (raw bytes keys and values) in one partition's directory."""

    def __init__(
        self,
        path: Path,
        *,
        sync: bool = True,
        wal: bool = True,
        write_buffer_size_bytes: int = 16 * MIB,
        budget: MemoryBudget | None = None,
    ) -> None:
        """`sync=True` fsyncs the WAL on every commit (durable across power loss); with False a
        commit survives a process crash but not a machine crash. `wal=False` writes no WAL at
        all: after a crash the database is as of its last flushed memtable, which is still a
        prefix of the commits (each commit is one batch, memtables flush whole), so only for a
        store whose writer catches up from a changelog past the offset it records, or a bulk
        build thrown away on a crash (a replay); `close` flushes. `budget` defaults to the
        process-wide shared one."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        budget = budget if budget is not None else MemoryBudget.shared()
        # raw_mode here and in every WriteBatch: a mismatch would pickle-wrap values.
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # A 2-core machine: two background threads for flush and compaction.
        options.increase_parallelism(2)
        options.set_max_background_jobs(2)
        options.set_compression_type(DBCompressionType.lz4())
        options.set_bottommost_compression_type(DBCompressionType.lz4())
        options.set_write_buffer_size(write_buffer_size_bytes)
        options.set_max_write_buffer_number(2)
        options.set_write_buffer_manager(budget._write_buffers)
        options.set_max_total_wal_size(4 * write_buffer_size_bytes)
        options.set_keep_log_file_num(2)
        # Most point reads of new ids miss: a bloom filter per memtable answers them too.
        options.set_memtable_prefix_bloom_ratio(0.02)
        options.set_memtable_whole_key_filtering(True)
        table = BlockBasedOptions()
        table.set_block_cache(budget._cache)
        # Most point reads of new ids miss: a bloom filter answers them without a disk read.
        table.set_bloom_filter(10, False)
        # Index and filter blocks live in the (bounded) cache, not beside it: with ten million
        # accounts they would otherwise grow with the data. Partitioned, so a lookup loads a
        # 4 KiB partition instead of a whole file's multi-MB filter (which thrashed the cache:
        # creating accounts slowed 8x past ~800k accounts without this).
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        self._db = Rdict(str(self.path), options)
        self._write_options = WriteOptions()
        self._write_options.sync = sync and wal
        # A property in rocksdict, though its stubs declare a method.
        self._write_options.disable_wal = not wal  # type: ignore[method-assign,assignment]
        self._wal = wal
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed (key, value) pairs whose key starts with `prefix`, in key order."""
        # Created now, so it reads the database as of this call.
        items = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=prefix))
        return _take_prefix(items, prefix)

    def snapshot_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every committed (key, value) pair in key order, all as of one instant (a RocksDB
        snapshot: writes committed meanwhile are not seen)."""
        return cast(Iterator[tuple[bytes, bytes]], self._db.snapshot().items())

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Apply puts (bytes) and deletes (None) atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._write(batch)

    def _write(self, batch: WriteBatch) -> None:
        self._db.write(batch, self._write_options)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._wal:
                self._db.flush(True)  # the memtables hold what no WAL does
            self._db.close()

    def __enter__(self) -> PartitionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _take_prefix(
    items: Iterator[tuple[bytes, bytes]], prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    for key, value in items:
        if not key.startswith(prefix):
            return
        yield key, value


class _Cache(Generic[T]):
    """Decoded committed records by id, at most `limit` of them, recently used ones kept.

    Two generations instead of a true LRU (an OrderedDict's bookkeeping per hit was a tenth
    of a processor's time): records go into the young dict; when it holds half the limit it
    becomes the old one and the previous old one is dropped; a hit in the old one moves the
    record back to the young one.
    """

    __slots__ = ("half", "old", "young")

    def __init__(self, limit: int) -> None:
        self.half = limit // 2
        self.young: dict[int, T] = {}
        self.old: dict[int, T] = {}

    def lookup(self, key: int) -> T | None:
        value = self.young.get(key)
        if value is None:
            value = self.old.pop(key, None)
            if value is not None:
                self.remember(key, value)
        return value

    def remember(self, key: int, value: T) -> None:
        if self.half <= 0:
            return
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.old, self.young = young, {}

    def forget(self, key: int) -> None:
        self.young.pop(key, None)
        self.old.pop(key, None)

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


class RocksLedgerState:
    """`LedgerState` over a `PartitionStore`, with writes buffered until `commit`.

    Reads see the buffered writes first, then the sealed ones (below), then the cache of
    committed records, then RocksDB. `commit` is `seal` then `write_sealed`; a processor calls
    them apart so it can decide its next step while Kafka commits the sealed one: `seal`
    encodes the buffer into a WriteBatch (so later writes cannot change what it will write)
    and keeps it readable beneath a new, empty buffer; `write_sealed` writes it once its
    transaction has committed. One sealed buffer at a time.
    Object ownership, as in `MemoryState`: objects returned by reads belong to the state and
    must not be mutated by callers; `set_balances` updates the account object in place (the
    cached one, if cached), so a caller holding an account read before a write sees it updated
    (the rules re-read after writing, and decisions read through a `Scope`, which copies on
    write). `discard()` evicts the accounts of the cycle from the cache, so no uncommitted
    balance survives it. Stored transfers and accounts passed to `put_*` are kept as given
    (the fold hands over its own copies).
    """

    def __init__(
        self,
        store: PartitionStore,
        *,
        account_cache_entries: int = 20_000,
        transfer_cache_entries: int = 5_000,
    ) -> None:
        # Per partition, so modest: a decoded account costs ~450 bytes and every cached object is
        # traversed by each full garbage collection (100k of them made account creation 1.5x
        # slower); RocksDB's shared block cache serves the rest.
        self.store = store
        self._get = store._db.get
        self._accounts: _Cache[Account] = _Cache(account_cache_entries)
        self._transfers: _Cache[Transfer] = _Cache(transfer_cache_entries)
        # The write buffer: records by id (encoded at commit, once however often written),
        # and every other key's new value (None deletes).
        self._dirty_accounts: dict[int, Account] = {}
        self._dirty_transfers: dict[int, Transfer] = {}
        self._pending: dict[bytes, bytes | None] = {}
        self._expiry_touched: set[bytes] = set()  # buffered expiry keys, for expiring()
        self._committed_max_account_ts = _read_u64(store.get(_MAX_ACCOUNT_TS_KEY))
        self._committed_max_transfer_ts = _read_u64(store.get(_MAX_TRANSFER_TS_KEY))
        self._max_account_ts = self._committed_max_account_ts
        self._max_transfer_ts = self._committed_max_transfer_ts
        self._sealed: _Sealed | None = None
        # Every expiry entry (committed or buffered) is due at or after this, None if unknown:
        # a tick with nothing due then opens no RocksDB iterator (each one cost ~0.2 ms, and
        # every partition ticks 20 times a second).
        self._expiry_floor: int | None = None
        self._expiry_adds = 0  # add_expiry calls: a scan ended meanwhile sets no floor
        # The sealed buffer's dicts, read beneath the open ones (empty when nothing is sealed).
        self._sealed_accounts: dict[int, Account] = {}
        self._sealed_transfers: dict[int, Transfer] = {}
        self._sealed_pending: dict[bytes, bytes | None] = {}

    # Reads ------------------------------------------------------------------------------------

    def get_account(self, account_id: int) -> Account | None:
        account = self._dirty_accounts.get(account_id) or self._sealed_accounts.get(account_id)
        if account is not None:
            return account
        account = self._accounts.lookup(account_id)
        if account is not None:
            return account
        data = self._get(_ACCOUNT + account_id.to_bytes(16, "big"))
        if data is None:
            return None
        account = decode_account(data)
        self._accounts.remember(account_id, account)
        return account

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        transfer = self._dirty_transfers.get(transfer_id) or self._sealed_transfers.get(transfer_id)
        if transfer is not None:
            return transfer
        transfer = self._transfers.lookup(transfer_id)
        if transfer is not None:
            return transfer
        data = self._get(_TRANSFER + transfer_id.to_bytes(16, "big"))
        if data is None:
            return None
        transfer = decode_transfer(data)
        self._transfers.remember(transfer_id, transfer)
        return transfer

    def get_pending_status(self, transfer_id: int) -> PendingStatus:
        data = self._read(_PENDING + transfer_id.to_bytes(16, "big"))
        return PendingStatus.NONE if data is None else _PENDING_STATUSES[data[0]]

    def get_failed(self, transfer_id: int) -> int:
        data = self._read(_FAILED + transfer_id.to_bytes(16, "big"))
        return 0 if data is None else int.from_bytes(data, "big")

    def get_settlement(self, account_id: int) -> int:
        data = self._read(_SETTLEMENT + account_id.to_bytes(16, "big"))
        return 0 if data is None else int.from_bytes(data, "big")

    def timestamp_kind(self, timestamp: int) -> int:
        if not 0 <= timestamp <= U64_MAX:
            return 0
        data = self._read(_TIMESTAMP + timestamp.to_bytes(8, "big"))
        return 0 if data is None else data[0]

    def max_account_timestamp(self) -> int:
        return self._max_account_ts

    def max_transfer_timestamp(self) -> int:
        return self._max_transfer_ts

    def expiring(self, now: int) -> Iterator[tuple[int, int, int]]:
        """Due entries in (expires_at, timestamp, id) order; reading consumes nothing.

        Like MemoryState, the answer is the state at the call: the buffered expiry writes are
        snapshotted and the RocksDB iterator is opened now; entries are then produced lazily,
        so a caller that stops early (the rules stop at a batch's worth) reads no further.
        """
        if now < 0 or (self._expiry_floor is not None and now < self._expiry_floor):
            return iter(())
        upper = _EXPIRY + (now + 1).to_bytes(8, "big") if now < U64_MAX else b"\x07"
        buffered = {}
        if self._sealed is not None:
            buffered = {key: self._sealed_pending[key] for key in self._sealed.expiry_touched}
        buffered.update((key, self._pending[key]) for key in self._expiry_touched)
        live = [key for key, value in buffered.items() if value is not None]
        added = sorted(key for key in live if key < upper)
        later = min((key for key in live if key >= upper), default=None)
        return self._due(self.store.scan(_EXPIRY), upper, buffered, added, later)

    def _due(
        self,
        committed: Iterator[tuple[bytes, bytes]],
        upper: bytes,
        buffered: dict[bytes, bytes | None],
        added: list[bytes],
        later: bytes | None,
    ) -> Iterator[tuple[int, int, int]]:
        adds = self._expiry_adds
        beyond = [later] if later is not None else []

        def committed_due() -> Iterator[bytes]:
            for key, _value in committed:
                if key >= upper:
                    beyond.append(key)  # the first committed entry not due (maybe deleted)
                    return
                if key not in buffered:  # deleted, or re-added (then it comes from `added`)
                    yield key

        first: bytes | None = None
        for key in heapq.merge(committed_due(), added):
            first = first or key
            expires_at, timestamp, high, low = _EXPIRY_KEY.unpack_from(key, 1)
            yield expires_at, timestamp, high << 64 | low
        # Read to the end: nothing is due before the first entry seen (due ones stay until
        # removed), or else before the first entry beyond `now`.
        if adds == self._expiry_adds:
            bound = first or min(beyond, default=None)
            self._expiry_floor = _EXPIRY_VALUE.unpack_from(bound, 1)[0] if bound else 1 << 64

    def get_meta(self, name: str) -> bytes | None:
        """A committed meta entry (input offsets, clock); None if never committed."""
        return self.store.get(_META + name.encode())

    # Writes (buffered) --------------------------------------------------------------------------

    def put_account(self, account: Account) -> None:
        self._dirty_accounts[account.id] = account
        self._pending[_TIMESTAMP + account.timestamp.to_bytes(8, "big")] = b"\x01"
        if account.timestamp > self._max_account_ts:
            self._max_account_ts = account.timestamp

    def set_balances(self, balances: Balances) -> None:
        account_id = balances.account_id
        account = self._dirty_accounts.get(account_id)
        if account is None:
            # Updated in place, cached or not: a copy per write was a tenth of a processor's
            # time. `discard()` evicts what this cycle touched, so the cache never keeps an
            # uncommitted balance.
            account = self.get_account(account_id)
            assert account is not None, account_id
            self._dirty_accounts[account_id] = account
        account.debits_pending = balances.debits_pending
        account.debits_posted = balances.debits_posted
        account.credits_pending = balances.credits_pending
        account.credits_posted = balances.credits_posted

    def put_transfer(self, transfer: Transfer) -> None:
        self._dirty_transfers[transfer.id] = transfer
        self._pending[_TIMESTAMP + transfer.timestamp.to_bytes(8, "big")] = b"\x02"
        if transfer.timestamp > self._max_transfer_ts:
            self._max_transfer_ts = transfer.timestamp

    def set_pending_status(self, transfer_id: int, status: PendingStatus) -> None:
        self._pending[_PENDING + transfer_id.to_bytes(16, "big")] = _U8.pack(status)

    def add_expiry(self, expires_at: int, timestamp: int, transfer_id: int) -> None:
        id_bytes = transfer_id.to_bytes(16, "big")
        by_id = _EXPIRY_BY_ID + id_bytes
        deadline = _EXPIRY_VALUE.pack(expires_at, timestamp)
        self._expiry_adds += 1
        if self._expiry_floor is not None and expires_at < self._expiry_floor:
            self._expiry_floor = expires_at
        # One live entry per id, as in MemoryState: a new deadline replaces the old one.
        old = self._read(by_id)
        if old is not None and old != deadline:
            self._set_expiry_key(_EXPIRY + old + id_bytes, None)
        self._set_expiry_key(_EXPIRY + deadline + id_bytes, b"")
        self._pending[by_id] = deadline

    def remove_expiry(self, transfer_id: int) -> None:
        id_bytes = transfer_id.to_bytes(16, "big")
        by_id = _EXPIRY_BY_ID + id_bytes
        old = self._read(by_id)
        if old is None:
            return
        self._set_expiry_key(_EXPIRY + old + id_bytes, None)
        self._pending[by_id] = None

    def put_failed(self, transfer_id: int, status: int) -> None:
        self._pending[_FAILED + transfer_id.to_bytes(16, "big")] = _U32.pack(status)

    def set_settlement(self, account_id: int, transfer_id: int) -> None:
        key = _SETTLEMENT + account_id.to_bytes(16, "big")
        # 0 means "none in flight": delete rather than store a zero.
        self._pending[key] = transfer_id.to_bytes(16, "big") if transfer_id else None

    # Commit ---------------------------------------------------------------------------------

    def commit(self, meta: Mapping[str, bytes] | None = None) -> None:
        """Write every buffered write plus `meta` in one atomic WriteBatch, then clear the
        buffer. If the write raises, nothing was written and the buffer stays sealed."""
        self.seal()
        self.write_sealed(meta)

    def seal(self) -> None:
        """Encode the buffer into the WriteBatch `write_sealed` will write, keep it readable
        beneath a new empty buffer. Raises if one is sealed already."""
        if self._sealed is not None:
            raise RuntimeError("a sealed buffer is not written yet")
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        # Encoded now: the next buffer updates these account objects in place.
        for account_id, account in self._dirty_accounts.items():
            put(_ACCOUNT + account_id.to_bytes(16, "big"), encode_account(account))
        for transfer_id, transfer in self._dirty_transfers.items():
            put(_TRANSFER + transfer_id.to_bytes(16, "big"), encode_transfer(transfer))
        for key, value in self._pending.items():
            if value is None:
                batch.delete(key)
            else:
                put(key, value)
        if self._max_account_ts != self._committed_max_account_ts:
            put(_MAX_ACCOUNT_TS_KEY, _u64(self._max_account_ts))
        if self._max_transfer_ts != self._committed_max_transfer_ts:
            put(_MAX_TRANSFER_TS_KEY, _u64(self._max_transfer_ts))
        self._sealed = _Sealed(
            batch, self._expiry_touched, self._max_account_ts, self._max_transfer_ts
        )
        self._sealed_accounts = self._dirty_accounts
        self._sealed_transfers = self._dirty_transfers
        self._sealed_pending = self._pending
        self._clear_buffer()

    def write_sealed(self, meta: Mapping[str, bytes] | None = None) -> None:
        """Write the sealed buffer plus `meta` in one atomic WriteBatch. If the write raises,
        nothing was written and the buffer stays sealed."""
        sealed = self._sealed
        if sealed is None:
            raise RuntimeError("nothing is sealed")
        batch = sealed.batch
        if meta:
            for name, value in meta.items():
                batch.put(_META + name.encode(), value)
        if not batch.is_empty():
            self.store._write(batch)
        # Committed: the sealed objects are now the committed records.
        for account_id, account in self._sealed_accounts.items():
            self._accounts.remember(account_id, account)
        for transfer_id, transfer in self._sealed_transfers.items():
            self._transfers.remember(transfer_id, transfer)
        self._committed_max_account_ts = sealed.max_account_ts
        self._committed_max_transfer_ts = sealed.max_transfer_ts
        self._sealed = None
        self._sealed_accounts, self._sealed_transfers, self._sealed_pending = {}, {}, {}

    @property
    def sealed(self) -> bool:
        return self._sealed is not None

    def discard(self) -> None:
        """Drop every buffered write, sealed ones too: the state is again what was last
        written."""
        self._max_account_ts = self._committed_max_account_ts
        self._max_transfer_ts = self._committed_max_transfer_ts
        for accounts in (self._dirty_accounts, self._sealed_accounts):
            for account_id in accounts:
                self._accounts.forget(account_id)  # it may hold an uncommitted balance
        self._clear_buffer()
        self._sealed = None
        self._sealed_accounts, self._sealed_transfers, self._sealed_pending = {}, {}, {}
        self._expiry_floor = None  # the removals dropped may bring back earlier entries
        self._expiry_adds += 1

    @property
    def buffered_writes(self) -> int:
        """How many records and keys wait for `commit` (for metrics and batch sizing)."""
        open_writes = len(self._dirty_accounts) + len(self._dirty_transfers) + len(self._pending)
        sealed_writes = (
            len(self._sealed_accounts) + len(self._sealed_transfers) + len(self._sealed_pending)
        )
        return open_writes + sealed_writes

    # Iteration (replay, audit, tests): the state as reads see it, buffer included ------------

    def iter_accounts(self) -> Iterator[Account]:
        """Every account in id order."""
        buffered = {
            _ACCOUNT + _u128(k): v
            for layer in (self._sealed_accounts, self._dirty_accounts)
            for k, v in layer.items()
        }
        for _key, account in self._merged(_ACCOUNT, buffered, decode_account):
            yield account

    def iter_transfers(self) -> Iterator[Transfer]:
        """Every transfer in id order."""
        buffered = {
            _TRANSFER + _u128(k): v
            for layer in (self._sealed_transfers, self._dirty_transfers)
            for k, v in layer.items()
        }
        for _key, transfer in self._merged(_TRANSFER, buffered, decode_transfer):
            yield transfer

    def iter_pending_statuses(self) -> Iterator[tuple[int, PendingStatus]]:
        """(transfer id, status) of every transfer that has one, in id order."""
        for key, value in self._merged_raw(_PENDING):
            yield int.from_bytes(key[1:], "big"), _PENDING_STATUSES[value[0]]

    def iter_failed(self) -> Iterator[tuple[int, int]]:
        """(transfer id, status) of every burnt id, in id order."""
        for key, value in self._merged_raw(_FAILED):
            yield int.from_bytes(key[1:], "big"), int.from_bytes(value, "big")

    def iter_settlements(self) -> Iterator[tuple[int, int]]:
        """(account id, transfer id) of every settlement in flight, in account id order."""
        for key, value in self._merged_raw(_SETTLEMENT):
            yield int.from_bytes(key[1:], "big"), int.from_bytes(value, "big")

    # ----------------------------------------------------------------------------------------

    def _read(self, key: bytes) -> bytes | None:
        value = self._pending.get(key, _MISSING)
        if value is _MISSING:
            value = self._sealed_pending.get(key, _MISSING)
            if value is _MISSING:
                committed: bytes | None = self._get(key)
                return committed
        return value  # type: ignore[return-value]  # bytes or None, never _MISSING here

    def _set_expiry_key(self, key: bytes, value: bytes | None) -> None:
        self._pending[key] = value
        self._expiry_touched.add(key)

    def _clear_buffer(self) -> None:
        self._dirty_accounts = {}
        self._dirty_transfers = {}
        self._pending = {}
        self._expiry_touched = set()

    def _merged_raw(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        buffered = {
            k: v
            for layer in (self._sealed_pending, self._pending)
            for k, v in layer.items()
            if k.startswith(prefix)
        }
        return self._merged(prefix, buffered, bytes)

    def _merged(
        self, prefix: bytes, buffered: Mapping[bytes, T | None], decode: Callable[[bytes], T]
    ) -> Iterator[tuple[bytes, T]]:
        """Committed entries under `prefix` overlaid with buffered ones (None deletes)."""
        overlay = sorted(buffered.items())
        position = 0
        for key, data in self.store.scan(prefix):
            while position < len(overlay) and overlay[position][0] < key:
                new_key, new_value = overlay[position]
                position += 1
                if new_value is not None:
                    yield new_key, new_value
            if position < len(overlay) and overlay[position][0] == key:
                new_value = overlay[position][1]
                position += 1
                if new_value is not None:
                    yield key, new_value
                continue
            yield key, decode(data)
        for new_key, new_value in overlay[position:]:
            if new_value is not None:
                yield new_key, new_value


@dataclass(frozen=True)
class _Sealed:
    """A sealed buffer: its writes, encoded, and what `write_sealed` makes committed."""

    batch: WriteBatch
    expiry_touched: set[bytes]
    max_account_ts: int
    max_transfer_ts: int


def _read_u64(data: bytes | None) -> int:
    return 0 if data is None else int.from_bytes(data, "big")
